"""H2-MIL (Hou et al., AAAI 2022): L blocks of RAConv + IHPool on the pyramid graph.

Fig. 2 and Eq. 6 of the paper: each block is a convolution, an activation and a pooling; every
block's pooled graph is read out and the read-outs are summed; a classifier maps the sum to
class logits. The ablations of Tables 1-2 swap the convolution (GCN, GAT, HGAT) or the pooling
(GAP = none plus global mean, TopK, SAGPool); Table 3 keeps a subset of the pyramid levels and
Table 4 varies L -- all through :class:`H2MILConfig`.

Where the paper is silent, the defaults are the official code's (``lin-lcx/H2-MIL``,
``code/main.py``)::

    x -> LayerNorm -> [ RAConv -> ReLU -> LayerNorm -> Dropout(0.3) -> IHPool -> mean ] x L
      -> sum of the L read-outs -> Linear(h, h/2) -> ReLU -> LayerNorm -> Dropout -> Linear

with hidden width 256 (the paper tunes the read-out width in {128, 256, 512}), the first
IHPool keeping a ratio 0.1 of each level and the second a *count* of 4 regions (``ratio =
(0.1, 4)``; a third block reuses the last value, as the official ``pool3_ratio = 4``), and the
dropout only on features (the paper: "the dropout ratio of linear layers"), none on the
attention (``attention_dropout = 0``).

Differences from the official code, all deliberate:

* The LayerNorms are PyG's graph-wise ``LayerNorm`` (mean and variance over all the nodes and
  channels of each graph, as the PyG version of 2021 computed it), one per place: the
  published code applies a single ``LayerNorm(1024)`` at every place, including on 256-d
  features, so it cannot run as published; its authors must have run something close to this.
  ``norm=False`` drops them (this project's earlier design).
* The loss is cross-entropy on the logits: Eq. 6's softmax is applied only for probabilities
  (the official code applies a softmax before ``CrossEntropyLoss``, i.e. twice), and the
  classifier has ``n_classes`` outputs (the official one has 4 for every task).
* IHPool is deterministic in training and evaluation and its ``S`` is a fitness softmax within
  each cluster (see :mod:`wsigraph.nn.ihpool`; ``official_compat=True`` gives the plain mean).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import (
    GATConv,
    GCNConv,
    SAGPooling,
    TopKPooling,
    global_max_pool,
    global_mean_pool,
)
from torch_geometric.nn import LayerNorm as GraphLayerNorm

from wsigraph.graphs.pyramid import SCALING, SPATIAL
from wsigraph.models import register
from wsigraph.nn.ihpool import (
    GRID_SCALES,
    IHPool,
    PoolInfo,
    Pyramid,
    block_ratio,
    block_ratios,
    from_batch,
    keep_levels,
    scale_grid,
)
from wsigraph.nn.raconv import HGATConv, RAConv

CONVS = ("raconv", "gcn", "gat", "hgat")
POOLS = ("ihpool", "gap", "topk", "sag")


@dataclass
class H2MILConfig:
    conv: str = "raconv"  # raconv | gcn | gat | hgat  (Tables 1-2 ablation)
    pool: str = "ihpool"  # ihpool | gap | topk | sag (Tables 1-2 ablation)
    levels: tuple[int, ...] = (0, 1, 2)  # pyramid levels kept (Table 3): 0 thumb, 1 mid, 2 bottom
    layers: int = 2  # L (Table 4)
    hidden: int = 256  # read-out width: {128, 256, 512} in the paper, 256 in the official code
    heads: int = 1
    # Pooling per block: a float ratio in (0, 1] or an int count; a number applies to every
    # block, a tuple gives block 1, 2, ... (the last repeats). Official: 0.1, then 4 regions.
    ratio: float | int | tuple = (0.1, 4)
    dropout: float = 0.3  # features: {0 ... 0.4} in the paper ("linear layers"), 0.3 official
    attention_dropout: float = 0.0  # on RAConv / HGAT / GAT attention (not in the paper)
    norm: bool = True  # the official input / per-block / classifier LayerNorms
    readout: str = "mean"  # mean | max
    official_compat: bool = False  # IHPool's plain-mean S, as the official code
    grid: str = "normalised"  # IHPool distance: normalised ([-1, 1] per slide and level) | patches
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.levels = tuple(sorted(self.levels))
        for name, value, allowed in (
            ("conv", self.conv, CONVS),
            ("pool", self.pool, POOLS),
            ("readout", self.readout, ("mean", "max")),
            ("grid", self.grid, GRID_SCALES),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")
        if self.layers < 1:
            raise ValueError(f"layers (L) must be >= 1, got {self.layers}")
        if 0 not in self.levels:
            raise ValueError(f"levels must include 0 (the thumbnail), got {self.levels}")
        self.ratio = block_ratios(self.ratio)


@register("h2mil")
class H2MIL(nn.Module):
    """H2-MIL and its ablations. ``forward(batch)`` -> logits ``[B, n_classes]``."""

    def __init__(self, in_dim: int, n_classes: int, **config):
        super().__init__()
        self.config = c = H2MILConfig(**config)
        R = len(c.levels)
        self.convs = nn.ModuleList(
            _conv(c, in_dim if i == 0 else c.hidden, R) for i in range(c.layers)
        )
        self.pools = nn.ModuleList(_pool(c, R, block_ratio(c.ratio, i)) for i in range(c.layers))
        self.input_norm = GraphLayerNorm(in_dim, mode="graph") if c.norm else None
        self.norms = nn.ModuleList(
            GraphLayerNorm(c.hidden, mode="graph") if c.norm else nn.Identity()
            for _ in range(c.layers)
        )
        half = max(1, c.hidden // 2)
        self.classifier = nn.Sequential(
            nn.Linear(c.hidden, half),
            nn.ReLU(),
            nn.LayerNorm(half) if c.norm else nn.Identity(),
            nn.Dropout(c.dropout),
            nn.Linear(half, n_classes),
        )

    def forward(
        self, data, return_info: bool = False
    ) -> Tensor | tuple[Tensor, list[PoolInfo | None]]:
        p = from_batch(data)
        if self.config.levels != tuple(range(int(p.level.max()) + 1)):
            p = keep_levels(p, self.config.levels)
        p = scale_grid(p, self.config.grid)  # once: pooled positions are means in these units
        if self.input_norm is not None:
            p = p.replace(x=self.input_norm(p.x, p.batch, batch_size=p.num_graphs))
        readout = 0
        infos: list[PoolInfo | None] = []
        for conv, norm, pool in zip(self.convs, self.norms, self.pools, strict=True):
            x = F.relu(_apply_conv(conv, p))  # [N, hidden]
            if isinstance(norm, GraphLayerNorm):
                x = norm(x, p.batch, batch_size=p.num_graphs)
            x = F.dropout(x, self.config.dropout, self.training)
            p, info = _apply_pool(pool, p.replace(x=x))
            infos.append(info)
            read = global_mean_pool if self.config.readout == "mean" else global_max_pool
            readout = readout + read(p.x, p.batch, size=p.num_graphs)  # [B, hidden], summed (Eq. 6)
        logits = self.classifier(readout)  # [B, n_classes]
        return (logits, infos) if return_info else logits

    def settings(self) -> dict:
        return asdict(self.config)


def _conv(c: H2MILConfig, in_dim: int, num_levels: int) -> nn.Module:
    drop = c.attention_dropout
    if c.conv == "raconv":
        return RAConv(in_dim, c.hidden, num_levels=num_levels, heads=c.heads, dropout=drop)
    if c.conv == "hgat":
        return HGATConv(in_dim, c.hidden, num_levels=num_levels, heads=c.heads, dropout=drop)
    if c.conv == "gat":
        return GATConv(in_dim, c.hidden, heads=c.heads, concat=False, dropout=drop)
    return GCNConv(in_dim, c.hidden)


def _apply_conv(conv: nn.Module, p: Pyramid) -> Tensor:
    if isinstance(conv, RAConv | HGATConv):
        return conv(p.x, p.edge_index, p.level)
    return conv(p.x, p.edge_index)


def _pool(c: H2MILConfig, num_levels: int, ratio: float | int) -> nn.Module | None:
    if c.pool == "ihpool":
        return IHPool(
            c.hidden, ratio=ratio, num_levels=num_levels, official_compat=c.official_compat
        )
    if c.pool == "topk":  # PyG reads an int ratio as a count of nodes, as IHPool does
        return TopKPooling(c.hidden, ratio=ratio)
    if c.pool == "sag":
        return SAGPooling(c.hidden, ratio=ratio)
    return None  # gap: no hierarchical pooling, only the global mean read-out


def _apply_pool(pool: nn.Module | None, p: Pyramid) -> tuple[Pyramid, PoolInfo | None]:
    if pool is None:
        return p, None
    if isinstance(pool, IHPool):
        return pool(p)
    # PyG TopK / SAG pooling keep a subset of nodes; carry their level and position along.
    x, edge_index, _, batch, perm, _ = pool(p.x, p.edge_index, batch=p.batch)
    level = p.level[perm]
    edge_type = torch.where(level[edge_index[0]] == level[edge_index[1]], SPATIAL, SCALING)
    parent = torch.full_like(perm, -1)  # the pyramid's parent links do not survive top-k selection
    return Pyramid(x, edge_index, edge_type, level, p.grid[perm], parent, batch, p.num_graphs), None
