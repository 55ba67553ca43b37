"""ABiG-Net (Paul et al., arXiv 2510.13188): a GCN over an image's patches on a learned graph.

Two models live here.

:class:`ABiGNetOfficial` (registered ``"abignet_official"``; the row "ABiG-Net" and the
"no-edge control (GCN on isolated patches)") is the official code's model
(``Paul1086/ABiG_Net``, ``abignet_model.py``): the pair-MLP Gumbel-sigmoid
:class:`wsigraph.nn.dense_gcn.AdjacencyGenerator` and the
:class:`wsigraph.nn.dense_gcn.DenseGCN` on 69 per-patch features
(:mod:`wsigraph.graphs.abignet_features`), trained by
:func:`wsigraph.train.bilevel.train_fold_official`. ``graph="generated"`` is the official
model; ``graph="none"`` is our control: the same GCN on the identity adjacency (no edges, so
each patch is embedded alone before the mean-pools); ``graph="given"`` is our reference: the same
GCN on a fixed graph that each image carries as ``edge_index`` (weight 1, symmetrised, unit
diagonal; on the demo the true look-alike graph,
:func:`wsigraph.data.synthetic_rois.lookalike_edges`). Evaluation is deterministic by default
(the expected adjacency, see :mod:`wsigraph.nn.dense_gcn`); ``eval_sample=True`` draws the
Gumbel noise at evaluation as the official code does.

:class:`ABiGNet` (registered ``"abignet"``; the rows "ABiG-Net (orientation variant)" and
"ABiG-Net, fixed k-NN graph") is **our** design, written before the official code was found,
from the abstract only (node features: the local-structure features of
:mod:`wsigraph.graphs.orientation`; training: :func:`wsigraph.train.bilevel.train_fold_bilevel`):

* encoder: linear -> ReLU -> dropout, from the patch features to ``hidden``;
* ``layers`` GCN layers (Kipf & Welling 2017; PyG ``GCNConv``, self loops and symmetric
  normalisation) on the weighted adjacency, each ReLU -> dropout with a residual connection;
* readout: mean and max over the image's nodes, concatenated; classifier: linear.

Its adjacency is ``graph="learned"`` (:class:`wsigraph.nn.graph_learner.GraphLearner` on the
*input* features and patch positions, so its parameters, the outer variables, are disjoint
from the GCN's, the inner variables) or ``graph="knn"`` (the ablation "ABiG-Net, fixed k-NN
graph": :func:`wsigraph.nn.graph_learner.knn_adjacency`, the ``k`` nearest patches on the grid,
weight 1). Everything else is the same in both.

Inputs (both models): a PyG batch with ``x [N, F]`` (patch features), ``batch [N]`` and, for
:class:`ABiGNet`, ``pos [N, 2]`` (patch grid coordinates, in patches).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GCNConv, global_max_pool, global_mean_pool

from wsigraph.models import register
from wsigraph.nn.dense_gcn import AdjacencyGenerator, DenseGCN
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


OFFICIAL_GRAPHS = ("generated", "none", "given")


@dataclass
class ABiGNetOfficialConfig:
    """Settings of :class:`ABiGNetOfficial`; the defaults are the official code's."""

    # generated (official) | none (identity adjacency: our control) | given (each image's
    # edge_index, fixed: our reference)
    graph: str = "generated"
    generator_hidden: tuple = (32, 16)  # pair MLP 2F -> 32 -> 16 -> 1
    widths: tuple = (64, 512, 1024)  # dense GCN layers
    head: tuple = (256, 32)  # classifier MLP 1600 -> 256 -> 32 -> classes
    dropout: float = 0.2
    tau: float = 1.0  # initial temperature (the trainer anneals it)
    eval_sample: bool = False  # True: Gumbel noise at evaluation too (official); False: expected A
    quadrature: int = 64  # quantiles of the deterministic expected adjacency

    def __post_init__(self):
        if self.graph not in OFFICIAL_GRAPHS:
            raise ValueError(f"graph must be one of {OFFICIAL_GRAPHS}, got {self.graph!r}")
        self.generator_hidden, self.widths, self.head = (
            tuple(int(w) for w in v) for v in (self.generator_hidden, self.widths, self.head)
        )
        if not self.widths or min(self.widths + self.generator_hidden + self.head) < 1:
            raise ValueError("generator_hidden, widths and head must be positive widths")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.tau <= 0 or self.quadrature < 1:
            raise ValueError("tau must be > 0 and quadrature >= 1")


def given_adjacency(
    edge_index: Tensor, n: int, dtype: torch.dtype = torch.float32, device=None
) -> Tensor:
    """The dense ``[n, n]`` adjacency of a fixed graph: weight 1 on every edge of ``edge_index``
    (either direction), symmetric, unit diagonal, as the official generator's output is."""
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= n):
        raise ValueError(f"edge_index must index the image's {n} patches")
    a = torch.zeros(n, n, dtype=dtype, device=device)
    a[edge_index[0], edge_index[1]] = 1.0
    a = torch.maximum(a, a.T)
    a.fill_diagonal_(1.0)
    return a


@register("abignet_official")
class ABiGNetOfficial(nn.Module):
    """The official ABiG-Net: generator (outer variables) + dense GCN (inner variables).

    ``forward(batch)`` runs every image of a PyG batch as its own dense graph and returns
    logits ``[B, C]``. The adjacency is sampled in training mode (or with ``sample=True``)
    and, in eval mode, the deterministic expected adjacency unless ``eval_sample`` (the
    official noisy evaluation). ``graph="none"``: the identity adjacency, no generator;
    ``graph="given"``: the image's own ``edge_index`` (:func:`given_adjacency`), no generator.
    """

    def __init__(self, in_dim: int, n_classes: int, **config):
        super().__init__()
        self.config = ABiGNetOfficialConfig(**config)
        c = self.config
        self.gcn = DenseGCN(in_dim, n_classes, c.widths, c.head, c.dropout)
        self.generator = None
        if c.graph == "generated":
            self.generator = AdjacencyGenerator(in_dim, c.generator_hidden, c.tau, c.quadrature)

    def structure_parameters(self) -> list[nn.Parameter]:
        """The outer variables: the generator's (empty for the no-edge control)."""
        return [] if self.generator is None else list(self.generator.parameters())

    def weight_parameters(self) -> list[nn.Parameter]:
        """The inner variables: the dense GCN and its classifier."""
        return list(self.gcn.parameters())

    def set_tau(self, tau: float) -> None:
        if self.generator is not None:
            self.generator.set_tau(tau)

    def adjacency(
        self, x: Tensor, sample: bool | None = None, edge_index: Tensor | None = None
    ) -> Tensor:
        """The dense adjacency ``[n, n]`` of one image (``x [n, F]``; ``edge_index``, its own
        edges, is read by ``graph="given"`` only)."""
        if self.config.graph == "given":
            if edge_index is None:
                raise ValueError(
                    "ABiG-Net graph='given' reads each image's edge_index; it has none"
                )
            return given_adjacency(edge_index, x.size(0), x.dtype, x.device)
        if self.generator is None:
            return torch.eye(x.size(0), dtype=x.dtype, device=x.device)
        if sample is None:
            sample = self.training or self.config.eval_sample
        return self.generator(x, sample)

    def forward(self, batch, sample: bool | None = None) -> Tensor:
        x = batch.x
        edge_index = getattr(batch, "edge_index", None) if self.config.graph == "given" else None
        b = getattr(batch, "batch", None)
        if b is None:
            return self.gcn(x, self.adjacency(x, sample, edge_index))
        sizes = torch.bincount(b, minlength=int(batch.num_graphs)).tolist()
        if 0 in sizes:
            raise ValueError("ABiG-Net: an image with no patches in the batch")
        starts = [0, *torch.cumsum(torch.tensor(sizes), 0).tolist()]
        out = []
        for i, xi in enumerate(torch.split(x, sizes)):
            ei = None
            if edge_index is not None:  # the image's own edges, renumbered from 0
                own = (edge_index[0] >= starts[i]) & (edge_index[0] < starts[i + 1])
                ei = edge_index[:, own] - starts[i]
            out.append(self.gcn(xi, self.adjacency(xi, sample, ei)))
        return torch.cat(out)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())
