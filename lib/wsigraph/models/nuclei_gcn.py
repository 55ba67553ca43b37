"""The nuclei-graph GCN (Sureka et al., IEEE BIBE 2020, ``002_*.txt``): RSF, RSF + Edge and
RSF + Attention, the three architectures of its Table I.

A tile's nuclei graph (:func:`wsigraph.graphs.nuclei.nuclei_graph`: 18 features per nucleus,
edges below 42 µm, the paper's 100 px at its 0.42 µm/px, with weight ``1 - d/r``) goes through
two vertex convolutions, a softmax assignment pooling to ``clusters[0]`` nodes, a third vertex
convolution, a second pooling to ``clusters[1]`` nodes, and three fully connected layers
(Table I):

===================  ===================  ===========================
RSF                  RSF + Edge           RSF + Attention
===================  ===================  ===========================
Vertex Conv 1        Vertex Conv 1        Vertex Conv 1
Vertex Conv 2        Vertex Conv 2        Vertex Conv 2 + Attn
Pooling 1            Pooling 1            Pooling 1
\\                    Edge Conv 1          \\
Vertex Conv 3        Vertex Conv 3        Vertex Conv 3
\\                    Edge Conv 2          \\
Pooling 2            Pooling 2            Pooling 2
\\                    Edge Conv 3          \\
FC 1, FC 2, FC 3     FC 1, FC 2, FC 3     FC 1, FC 2, FC 3
===================  ===================  ===========================

Layers: :mod:`wsigraph.nn.rsf` (Eq. 2 vertex convolution, Eq. 3 pooling, Eq. 4 edge
convolution, the node attention of Sec. III.E).

Choices where the paper is silent (it gives Table I, "nearly 300,000 parameters", Adam,
lr 0.01, ~50 epochs):

* Widths 18 -> 64 -> 64 -> pool to 32 -> 128 -> pool to 8, then FC 256 -> 64 -> classes
  (the reference code's NCI1 network, ``run_nci1.py``, is 64 -> 64 -> pool 32 -> 32 -> pool 8
  -> FC 256 -> classes; Table I has three FC layers). Parameters, batch norm included, with 18
  input features and two classes (``sum(p.numel())``, checked by the tests):

  ==========================================  =========  ==========  ===============
  pooling                                     RSF        RSF + Edge  RSF + Attention
  ==========================================  =========  ==========  ===============
  vertices + batch norm / ReLU (default)      313,194    408,986     317,418
  clusters, no norm after pooling (before)    312,810    408,602     317,034
  ==========================================  =========  ==========  ===============

  the paper's "nearly 300,000". ReLU after every vertex convolution, pooling and hidden FC
  layer; dropout ``dropout`` before FC 1 and FC 2 (default 0).
* Readout: the second pooling leaves exactly ``clusters[1]`` nodes per graph in an order fixed
  by the assignment convolution's output channels, so their features are flattened into FC 1
  (invariant to the order of the nuclei, as the pooling is). With RSF + Edge, Edge Conv 3 (after
  the last pooling, where nothing else would read it) contributes its pooled edge features
  ``[clusters[1], clusters[1], edge_channels]`` flattened beside them.
* Batch normalisation after every vertex convolution (``norm=True``; over the nuclei of the
  batch at the sparse levels, over the clusters after Pooling 1), as the RSF reference code
  (``network.make_graphcnn_layer``, ``with_bn=True``). The paper names none, but its
  unnormalised sums over ~25 neighbours (Eq. 2 with Eq. 1 weights) grow the activations by about
  an order of magnitude per layer: at the paper's lr 0.01 the model without it collapses to a
  constant output on our demo tiles (training loss stuck at ln 2), with it the same model fits.
* Edge convolutions output ``edge_channels`` = 4 features with ReLU (Eq. 4's monotonic
  :math:`\\phi`); the vertex convolutions and pooling after them read all four (Eq. 2 with
  :math:`L = 4`). Edge Conv 1 acts on the pooled adjacency, as Table I places it after Pooling 1.
* Pooling (Eq. 3) as the RSF reference code (``layers.make_graph_embed_pooling`` and
  ``network.make_graph_embed_pooling``): the softmax runs over each graph's *vertices*
  (``pool_axis="vertices"``), so every pooled node is a weighted mean of vertices and
  :math:`S^\\top A S` a weighted mean of Eq. 1 weights; batch norm (over graphs and clusters)
  and ReLU follow each pooling (``pool_norm``). Unlike the reference, whose mask multiplies
  the logits (a padded vertex gets logit 0, hence a non-zero weight), padded vertices get weight
  0. The assignment logits come from an RSF convolution, as the paper's "similar to
  convolution operation given in Equation 2" (the reference uses a per-vertex linear map).
  ``pool_axis="clusters"`` is the earlier design (a softmax over the clusters per vertex); its
  pooled adjacency sums Eq. 1 weights over nuclei and is divided by the graph's number of
  nuclei so that its scale does not grow with tile size.
* The attention of RSF + Attention follows Vertex Conv 2; its scores (one per nucleus, summing to
  one per graph) are stored in ``last_attention`` after each forward for visualisation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from wsigraph.models import register
from wsigraph.nn.rsf import (
    POOL_AXES,
    DenseRSFConv,
    DenseRSFEdgeConv,
    DenseSoftmaxAssignmentPool,
    NodeAttention,
    RSFConv,
    SoftmaxAssignmentPool,
)

VARIANTS = ("rsf", "edge", "attention")


@dataclass
class NucleiGCNConfig:
    """Hyper-parameters of :class:`NucleiGCN` (see the module docstring for the choices).

    Args:
        variant: ``"rsf"``, ``"edge"`` (RSF + Edge) or ``"attention"`` (RSF + Attention).
        hidden: width of Vertex Conv 1 and 2 (default ``64``).
        hidden3: width of Vertex Conv 3 (default ``128``).
        clusters: nodes after Pooling 1 and Pooling 2 (default ``(32, 8)``).
        edge_channels: edge features made by the edge convolutions (default ``4``).
        fc: widths of FC 1 and FC 2; FC 3 maps to the classes (default ``(256, 64)``).
        dropout: before FC 1 and FC 2 (default ``0.0``).
        norm: batch normalisation after each vertex convolution (default ``True``).
        edge_dim: edge features of the input graph (default ``1``, Eq. 1's weight).
        pool_axis: the pooling softmax's axis: ``"vertices"`` (default, the RSF reference
            code: pooled nodes are weighted means of vertices) or ``"clusters"`` (each vertex
            spread over the clusters; pooled nodes are weighted sums).
        pool_norm: batch normalisation and ReLU after each pooling, as the reference code
            (default ``True``). ``pool_axis="clusters", pool_norm=False`` is the model before
            the reference pooling was added.
    """

    variant: str = "rsf"
    hidden: int = 64
    hidden3: int = 128
    clusters: tuple[int, int] = (32, 8)
    edge_channels: int = 4
    fc: tuple[int, int] = (256, 64)
    dropout: float = 0.0
    norm: bool = True
    edge_dim: int = 1
    pool_axis: str = "vertices"
    pool_norm: bool = True

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.pool_axis not in POOL_AXES:
            raise ValueError(f"pool_axis must be one of {POOL_AXES}, got {self.pool_axis!r}")
        self.clusters, self.fc = tuple(self.clusters), tuple(self.fc)
        if len(self.clusters) != 2 or min(self.clusters) < 1:
            raise ValueError(f"clusters must be two positive sizes, got {self.clusters}")
        if len(self.fc) != 2 or min(self.fc) < 1:
            raise ValueError(f"fc must be two positive widths, got {self.fc}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")


@register("nuclei-gcn")
class NucleiGCN(nn.Module):
    """RSF / RSF + Edge / RSF + Attention on a batch of nuclei graphs -> logits ``[B, C]``.

    Args:
        in_dim: node features (18 for :func:`~wsigraph.graphs.nuclei.nucleus_features`).
        n_classes: classes.
        **config: fields of :class:`NucleiGCNConfig`.
    """

    def __init__(self, in_dim: int, n_classes: int, **config):
        super().__init__()
        cfg = self.config = NucleiGCNConfig(**config)
        c1, c2 = cfg.clusters
        L0, h, h3 = cfg.edge_dim, cfg.hidden, cfg.hidden3
        L = cfg.edge_channels if cfg.variant == "edge" else L0  # edges after Pooling 1
        self.conv1 = RSFConv(in_dim, h, L0)
        self.conv2 = RSFConv(h, h, L0)
        norm = nn.BatchNorm1d if cfg.norm else (lambda _: nn.Identity())
        self.norm1, self.norm2, self.norm3 = norm(h), norm(h), norm(h3)
        self.attention = NodeAttention(h) if cfg.variant == "attention" else None
        self.pool1 = SoftmaxAssignmentPool(h, c1, L0, axis=cfg.pool_axis)
        self.conv3 = DenseRSFConv(h, h3, L)
        self.pool2 = DenseSoftmaxAssignmentPool(h3, c2, L, axis=cfg.pool_axis)
        # Batch norm after each pooling (over graphs and clusters), then ReLU in forward.
        pool_norm = nn.BatchNorm1d if cfg.pool_norm else (lambda _: nn.Identity())
        self.pool_norm1, self.pool_norm2 = pool_norm(h), pool_norm(h3)
        self.edge_convs = None
        if cfg.variant == "edge":
            self.edge_convs = nn.ModuleList(
                [
                    DenseRSFEdgeConv(h, L0, L),  # Edge Conv 1, after Pooling 1
                    DenseRSFEdgeConv(h3, L, L),  # Edge Conv 2, after Vertex Conv 3
                    DenseRSFEdgeConv(h3, L, L),  # Edge Conv 3, after Pooling 2
                ]
            )
        readout = c2 * h3 + (c2 * c2 * L if cfg.variant == "edge" else 0)
        self.fc = nn.Sequential(
            nn.Dropout(cfg.dropout),
            nn.Linear(readout, cfg.fc[0]),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.fc[0], cfg.fc[1]),
            nn.ReLU(),
            nn.Linear(cfg.fc[1], n_classes),
        )
        self.last_attention: Tensor | None = None

    def forward(self, batch) -> Tensor:
        x, edge_index, b = batch.x, batch.edge_index, batch.batch
        edge_attr = getattr(batch, "edge_attr", None)
        B = batch.num_graphs
        x = F.relu(self.norm1(self.conv1(x, edge_index, edge_attr)))  # [N, h]
        x = F.relu(self.norm2(self.conv2(x, edge_index, edge_attr)))  # [N, h]
        if self.attention is not None:
            x, self.last_attention = self.attention(x, b)  # scores [N]
        x, adj, _ = self.pool1(x, edge_index, edge_attr, b, B)  # [B, c1, h], [B, c1, c1, L0]
        if self.config.pool_axis == "clusters":  # S^T A S sums over nuclei: per-nucleus scale
            n = torch.bincount(b, minlength=B).clamp(min=1).to(adj.dtype)  # nuclei per graph
            adj = adj / n.view(B, 1, 1, 1)
        x = self._after_pool(self.pool_norm1, x)
        if self.edge_convs is not None:
            adj = self.edge_convs[0](x, adj)  # [B, c1, c1, L]
        x = F.relu(self.norm3(self.conv3(x, adj).transpose(1, 2)).transpose(1, 2))  # [B, c1, h3]
        if self.edge_convs is not None:
            adj = self.edge_convs[1](x, adj)
        x, adj, _ = self.pool2(x, adj)  # [B, c2, h3], [B, c2, c2, L]
        x = self._after_pool(self.pool_norm2, x)
        h = x.flatten(1)  # [B, c2 * h3]
        if self.edge_convs is not None:
            h = torch.cat([h, self.edge_convs[2](x, adj).flatten(1)], dim=1)
        return self.fc(h)  # [B, C]

    def _after_pool(self, norm: nn.Module, x: Tensor) -> Tensor:
        """Batch norm over graphs and clusters, then ReLU (``pool_norm``), on ``[B, C, F]``."""
        if not self.config.pool_norm:
            return x
        return F.relu(norm(x.transpose(1, 2)).transpose(1, 2))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())
