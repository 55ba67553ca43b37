"""HIGT (Guo et al., MICCAI 2023): hierarchical GNN + hierarchical interaction ViT + fusion.

Fig. 1 of the paper, in order:

1. **Hierarchical GNN** (Sec. 2.2): ``gnn_layers`` blocks of RAConv+ (Eq. 2-3) and IHPool on
   the H2-MIL pyramid graph (thumbnail, 5x regions, 10x patches).
2. **HIViT** (Sec. 2.3, Eq. 4-7): on the pooled pyramid, the region tokens (level 1) and the
   patch tokens (level 2, each belonging to its parent region) go through ``vit_depth``
   HIViT blocks: patch-level block, bidirectional interaction, region-level block.
3. **Fusion** (Sec. 2.4): patch tokens of the GNN part plus the thumbnail, concatenated with
   the HIViT patch tokens, a 1x1 convolution; the mean over the slide's patches; a linear
   classifier.

The ablations of Table 3 are settings of :class:`HIGTConfig`: ``conv="raconv"`` ("H2-MIL +
HIViT": the original RAConv), ``attention="mhsa"`` ("w/o SSA": canonical softmax attention),
``bidirectional=False`` ("w/o BI": region -> patch only), ``fusion=False`` ("w/o Fusion": the
mean of the HIViT patch tokens goes straight to the classifier).

Choices where the paper is silent (the official code differs from the paper in several places;
we follow the paper):

* After each RAConv+ comes LayerNorm, ReLU (the :math:`\\sigma` of Eq. 3) and dropout, then
  IHPool. RAConv+'s attention rows are not normalised (Eq. 2 adds two softmaxes), so the norm
  keeps a hub node such as the thumbnail on the scale of the others; the official code also
  normalises after every convolution.
* IHPool keeps a fraction ``ratio = 0.5`` of each level's nodes in every block. The official
  code (``pool_ratio_list = [0.5, 5]``) keeps a *count* of 5 regions in its second pool, and
  its IHPool samples 4 random 10x centres per region in every pool; ``ratio=(0.5, 5),
  fine_count=4`` reproduces that, deterministically (4 centres spread over each region's
  fitness ranks instead of 4 random ones). Its fixed 20-token squeeze-excitation then needs
  exactly 5 regions of 4 patches, which is why it crashes on small slides; ours takes any
  count.
* The hidden width is one ``hidden`` for the GNN, HIViT and the fusion, 128 by default. The
  paper's node and token embeddings are :math:`1 \times C` (:math:`C = 1{,}024`) and the
  official ``gcn_channel_list`` is 1,024 throughout (``hidden=None`` takes the input width);
  but our HIViT attends over node tokens of that width, which at 1,024 holds 40 M parameters
  where the official one holds 0.3 M (it reshapes the tokens into a 64-channel image), so 128
  keeps the model near the official size (2.8 MB), which HIGT Fig. 2 compares.
* A slide with no patch tokens after pooling (e.g. no 10x patches at all) gets a zero
  embedding before the classifier.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter

from wsigraph.models import register
from wsigraph.nn.ihpool import (
    GRID_SCALES,
    IHPool,
    PoolInfo,
    Pyramid,
    block_ratio,
    block_ratios,
    from_batch,
    scale_grid,
)
from wsigraph.nn.raconv import RAConv, RAConvPlus
from wsigraph.nn.vit import Fusion, HIViT

CONVS = ("raconv+", "raconv")
ATTENTIONS = ("ssa", "mhsa")


@dataclass
class HIGTConfig:
    conv: str = "raconv+"  # raconv+ | raconv ("H2-MIL + HIViT", Table 3)
    attention: str = "ssa"  # ssa | mhsa ("w/o SSA", Table 3)
    bidirectional: bool = True  # False: "w/o BI" (Table 3)
    fusion: bool = True  # False: "w/o Fusion" (Table 3)
    gnn_layers: int = 2  # RAConv+ / IHPool blocks (the official code: 2)
    vit_depth: int = 3  # HIViT blocks (the official code: 3)
    hidden: int | None = 128  # None: the input width C (the paper's 1 x C tokens; official 1,024)
    heads: int = 1  # RAConv+ heads
    vit_heads: int = 4  # heads of the "w/o SSA" softmax attention
    # IHPool per block: a float ratio in (0, 1] or an int count of regions; a tuple gives block
    # 1, 2, ... (the last repeats). Official: (0.5, 5) with fine_count=4.
    ratio: float | int | tuple = 0.5
    fine_count: int | None = None  # 10x centres per region (official: 4, drawn at random)
    dropout: float = 0.2
    grid: str = "normalised"  # IHPool distance: normalised ([-1, 1] per slide and level) | patches

    def __post_init__(self):
        for name, value, allowed in (
            ("conv", self.conv, CONVS),
            ("attention", self.attention, ATTENTIONS),
            ("grid", self.grid, GRID_SCALES),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")
        if self.gnn_layers < 1 or self.vit_depth < 1:
            raise ValueError(
                f"gnn_layers and vit_depth must be >= 1, got {self.gnn_layers}, {self.vit_depth}"
            )
        self.ratio = block_ratios(self.ratio)


@register("higt")
class HIGT(nn.Module):
    """HIGT and its Table 3 ablations. ``forward(batch)`` -> logits ``[B, n_classes]``."""

    def __init__(self, in_dim: int, n_classes: int, **config):
        super().__init__()
        self.config = c = HIGTConfig(**config)
        if c.hidden is None:
            c.hidden = in_dim
        conv = RAConvPlus if c.conv == "raconv+" else RAConv
        self.convs = nn.ModuleList(
            conv(in_dim if i == 0 else c.hidden, c.hidden, num_levels=3, heads=c.heads)
            for i in range(c.gnn_layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(c.hidden) for _ in range(c.gnn_layers))
        self.pools = nn.ModuleList(
            IHPool(c.hidden, ratio=block_ratio(c.ratio, i), num_levels=3, fine_count=c.fine_count)
            for i in range(c.gnn_layers)
        )
        self.vit = HIViT(
            c.hidden,
            depth=c.vit_depth,
            return_regions=False,  # the fusion reads the patch tokens only
            attention=c.attention,
            bidirectional=c.bidirectional,
            heads=c.vit_heads,
            dropout=c.dropout,
        )
        self.fusion = Fusion(c.hidden) if c.fusion else None
        self.classifier = nn.Linear(c.hidden, n_classes)

    def forward(self, data, return_info: bool = False) -> Tensor | tuple[Tensor, list[PoolInfo]]:
        p = from_batch(data)
        if p.num_nodes and int(p.level.max()) > 2:
            raise ValueError("HIGT reads a 3-level pyramid (thumbnail, 5x, 10x)")
        p = scale_grid(p, self.config.grid)  # once: pooled positions are means in these units
        infos = []
        for conv, norm, pool in zip(self.convs, self.norms, self.pools, strict=True):
            x = conv(p.x, p.edge_index, p.level)  # [N, hidden]
            x = F.dropout(F.relu(norm(x)), self.config.dropout, self.training)
            p, info = pool(p.replace(x=x))
            infos.append(info)
        logits = self.classifier(self._slide_embedding(p))  # [B, C]
        return (logits, infos) if return_info else logits

    def _slide_embedding(self, p: Pyramid) -> Tensor:
        B = p.num_graphs
        thumb = scatter(p.x[p.level == 0], p.batch[p.level == 0], dim=0, dim_size=B)  # [B, D]
        is_region, is_patch = p.level == 1, p.level == 2
        region_row = torch.cumsum(is_region, 0) - 1  # row of each region among the regions
        regions, patches = p.x[is_region], p.x[is_patch]  # [R, D], [P, D]
        patch_region = region_row[p.parent[is_patch]]  # [P]
        patch_batch = p.batch[is_patch]
        _, patch_vit = self.vit(regions, p.batch[is_region], patches, patch_region, B)
        if self.fusion is not None:
            tokens = self.fusion(thumb, patches, patch_vit, patch_batch)  # [P, D]
        else:
            tokens = patch_vit
        return scatter(tokens, patch_batch, dim=0, dim_size=B, reduce="mean")  # [B, D]

    def settings(self) -> dict:
        return asdict(self.config)
