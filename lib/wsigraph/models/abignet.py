"""ABiG-Net (Paul et al., arXiv 2510.13188): a GCN over an image's patches on a learned graph.

Abstract: node embeddings and the image-level graph are learned jointly for image
classification; the graph is sparse and optimised by a first-order approximate bilevel scheme
(:mod:`wsigraph.train.bilevel`); the node features are the local-structure features of
:mod:`wsigraph.graphs.orientation`.

The paper's architecture could not be read (only its abstract was reachable); ours, in
:class:`ABiGNetConfig`:

* encoder: linear -> ReLU -> dropout, from the patch features to ``hidden``;
* ``layers`` GCN layers (Kipf & Welling 2017; PyG ``GCNConv``, self loops and symmetric
  normalisation) on the weighted adjacency, each ReLU -> dropout with a residual connection;
* readout: mean and max over the image's nodes, concatenated; classifier: linear.

The adjacency is ``graph="learned"`` (:class:`wsigraph.nn.graph_learner.GraphLearner` on the
*input* features and patch positions, so its parameters, the outer variables, are disjoint
from the GCN's, the inner variables) or ``graph="knn"`` (the ablation "ABiG-Net, fixed k-NN
graph": :func:`wsigraph.nn.graph_learner.knn_adjacency`, the ``k`` nearest patches on the grid,
weight 1). Everything else is the same in both.

Inputs: a PyG batch with ``x [N, F]`` (patch features), ``pos [N, 2]`` (patch grid
coordinates, in patches) and ``batch [N]``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GCNConv, global_max_pool, global_mean_pool

from wsigraph.models import register
from wsigraph.nn.graph_learner import GraphLearner, knn_adjacency

GRAPHS = ("learned", "knn")


@dataclass
class ABiGNetConfig:
    graph: str = "learned"  # learned | knn (the fixed k-NN ablation)
    hidden: int = 64  # node embedding size
    layers: int = 2  # GCN layers
    dropout: float = 0.2
    k: int = 8  # edge budget per node (learned) / neighbours (knn); 8 = grid 8-neighbourhood
    knn_on: str = "position"  # knn only: position | features
    learner_hidden: int = 32  # learned only: projection size per head
    learner_heads: int = 4
    tau: float = 0.1  # gate temperature
    min_weight: float = 0.01  # learned edges below this weight are dropped
    distance: bool = True  # learned distance penalty in the edge score
    distance_scale: float = 1.0  # in grid units (patches)

    def __post_init__(self):
        if self.graph not in GRAPHS:
            raise ValueError(f"graph must be one of {GRAPHS}, got {self.graph!r}")
        if self.layers < 1 or self.hidden < 1 or self.k < 1:
            raise ValueError("layers, hidden and k must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")


@register("abignet")
class ABiGNet(nn.Module):
    """ABiG-Net's image classifier: patch features -> GCN on the (learned) graph -> logits.

    Parameter groups for the bilevel trainer: :meth:`structure_parameters` (the graph
    learner's, outer) and :meth:`weight_parameters` (everything else, inner).
    """

    def __init__(self, in_dim: int, n_classes: int, **config):
        super().__init__()
        self.config = ABiGNetConfig(**config)
        c = self.config
        self.encoder = nn.Linear(in_dim, c.hidden)
        self.convs = nn.ModuleList(GCNConv(c.hidden, c.hidden) for _ in range(c.layers))
        self.classifier = nn.Linear(2 * c.hidden, n_classes)
        self.learner = None
        if c.graph == "learned":
            self.learner = GraphLearner(
                in_dim,
                c.learner_hidden,
                c.learner_heads,
                c.k,
                c.tau,
                c.min_weight,
                c.distance,
                c.distance_scale,
            )

    def structure_parameters(self) -> list[nn.Parameter]:
        """The outer variables (empty for the fixed k-NN graph)."""
        return [] if self.learner is None else list(self.learner.parameters())

    def weight_parameters(self) -> list[nn.Parameter]:
        """The inner variables: encoder, GCN layers and classifier."""
        structure = {id(p) for p in self.structure_parameters()}
        return [p for p in self.parameters() if id(p) not in structure]

    def graph(self, batch) -> tuple[Tensor, Tensor]:
        """``edge_index [2, E]`` and ``edge_weight [E]`` of the batch's image-level graphs."""
        pos = batch.pos.to(batch.x.dtype)
        b = getattr(batch, "batch", None)
        if self.learner is not None:
            return self.learner(batch.x, pos, b)
        return knn_adjacency(batch.x, pos, b, self.config.k, self.config.knn_on)

    def embed(self, batch, graph: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Node embeddings ``[N, hidden]``."""
        edge_index, weight = self.graph(batch) if graph is None else graph
        p = self.config.dropout
        h = F.dropout(F.relu(self.encoder(batch.x)), p, self.training)  # [N, hidden]
        for conv in self.convs:
            h = h + F.dropout(F.relu(conv(h, edge_index, weight)), p, self.training)
        return h

    def forward(self, batch, graph: tuple[Tensor, Tensor] | None = None) -> Tensor:
        h = self.embed(batch, graph)
        b = getattr(batch, "batch", None)
        if b is None:
            b = torch.zeros(h.size(0), dtype=torch.long, device=h.device)
        size = int(b.max()) + 1 if b.numel() else 1
        pooled = torch.cat([global_mean_pool(h, b, size), global_max_pool(h, b, size)], -1)
        return self.classifier(pooled)  # [B, C]

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())
