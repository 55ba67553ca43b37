r"""Layers of the nuclei-graph GCN (Sureka et al., IEEE BIBE 2020, "Visualization for
histopathology images using graph convolutional neural networks"; ``002_*.txt``, Sec. III.C-E).

The nodes are nuclei, the edges link nuclei closer than 100 px at the paper's scale (42 µm;
see :mod:`wsigraph.graphs.nuclei`) with weight :math:`1 - d/r` (Eq. 1). A graph is batched PyG-style: ``x`` :math:`(N, F)`, ``edge_index``
:math:`(2, E)` (both directions), ``edge_attr`` :math:`(E, L)` with :math:`L` edge features
(:math:`L = 1` for Eq. 1), ``batch`` :math:`(N)`.

* :class:`RSFConv` (Eq. 2): robust spatial filtering (Such et al., IEEE JSTSP 2017),
  :math:`V_{out} = V W_0 + \sum_j (A_j V) W_j + b`, the :math:`A_j V` computed over the edges.
* :class:`RSFEdgeConv` (Eq. 4, "RSF+Edge", Gadiya et al.): new edge features from the edge
  and the two end nodes.
* :class:`NodeAttention` (Sec. III.E, "RSF+Attention"): a per-graph softmax over the nuclei
  that re-weights them before the first pooling; its scores are the visualisation.
* :class:`SoftmaxAssignmentPool` (Eq. 3): soft assignment of the :math:`N` nodes of each graph
  to :math:`N'` clusters, :math:`V_{out} = S^\top V`, :math:`A_{out} = S^\top A S`, with the
  softmax over the vertices of each graph (``axis="vertices"``, the RSF reference code
  ``fps7806/Graph-CNN``: each pooled node is a weighted mean of vertices) or over the clusters
  (``axis="clusters"``: each vertex spreads over the clusters). Its output is dense
  (``[B, N', ...]``): later levels use :class:`DenseRSFConv` and
  :class:`DenseSoftmaxAssignmentPool`, so a model stacks conv -> pool -> dense conv -> dense
  pool -> readout.

Adjacency convention (all layers): the edge ``(src, dst)`` with features ``a`` is the entry
``A[dst, src] = a``, so :math:`(A V)_i = \sum_{(k, i) \in E} a_{ki} v_k` (a node aggregates its
incoming edges); dense adjacency is ``adj[b, i, k, l]`` = feature ``l`` of the edge
:math:`k \to i`. Eq. 1 graphs are symmetric, where the distinction vanishes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch_geometric.utils import scatter, softmax, to_dense_batch


def _edge_features(edge_attr: Tensor | None, num_edges: int, edge_dim: int, like: Tensor) -> Tensor:
    """``edge_attr`` as ``[E, L]``; ``None`` means a binary adjacency (``edge_dim`` must be 1)."""
    if edge_attr is None:
        if edge_dim != 1:
            raise ValueError(f"edge_attr is required when edge_dim = {edge_dim} > 1")
        return like.new_ones(num_edges, 1)
    edge_attr = edge_attr.view(-1, 1) if edge_attr.dim() == 1 else edge_attr
    if edge_attr.size(1) != edge_dim:
        raise ValueError(f"edge_attr has {edge_attr.size(1)} features, expected {edge_dim}")
    return edge_attr.to(like.dtype)


def _propagate(x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
    """:math:`A_j X` for every edge feature ``j``, ``[N, L, F]``, by a scatter over the edges."""
    src, dst = edge_index
    msg = edge_attr.unsqueeze(-1) * x[src].unsqueeze(1)  # [E, L, F]
    return scatter(msg, dst, dim=0, dim_size=x.size(0), reduce="sum")


class _RSFBase(nn.Module):
    """Parameters of Eq. 2 shared by :class:`RSFConv` and :class:`DenseRSFConv` (so one's
    ``state_dict`` loads into the other): ``weight[0]`` = :math:`W_0` (the :math:`h_{i0} I`
    term), ``weight[j]`` = :math:`W_j` (the :math:`h_{ij} A_j` terms), and the bias."""

    def __init__(self, in_channels: int, out_channels: int, edge_dim: int = 1, bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.edge_dim = edge_dim
        self.weight = nn.Parameter(torch.empty(edge_dim + 1, in_channels, out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Glorot over the stacked [(L + 1) F, F'] map: the output sums L + 1 terms.
        fan_in = (self.edge_dim + 1) * self.in_channels
        bound = math.sqrt(6.0 / (fan_in + self.out_channels))
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _combine(self, x: Tensor, ax: Tensor) -> Tensor:
        """:math:`X W_0 + \\sum_j (A_j X) W_j + b` from ``x [..., F]`` and ``ax [..., L, F]``."""
        LF = self.edge_dim * self.in_channels
        w_edges = self.weight[1:].reshape(LF, self.out_channels)  # [W_1; ...; W_L]
        out = x @ self.weight[0] + ax.reshape(*ax.shape[:-2], LF) @ w_edges
        return out + self.bias if self.bias is not None else out

    def __repr__(self) -> str:
        name = self.__class__.__name__
        return f"{name}({self.in_channels}, {self.out_channels}, edge_dim={self.edge_dim})"


class RSFConv(_RSFBase):
    r"""Robust spatial filtering convolution (Such et al., IEEE JSTSP 2017), the nuclei-graph
    GCN's Eq. 2.

    With :math:`A_j` the :math:`N \times N` adjacency of edge feature :math:`j` and one filter
    per output feature :math:`f`,

    .. math::
        V_{conv}^{f} = \sum_{i=1}^{F} H_i^{f} V_{in}^{i} + b^{f}, \qquad
        H_i^{f} = h_{i0}^{f} I + \sum_{j=1}^{L} h_{ij}^{f} A_j,

    which, collecting :math:`h_{ij}^{f}` into matrices :math:`W_j \in \mathbb{R}^{F \times F'}`,
    is

    .. math::
        V_{conv} = V_{in} W_0 + \sum_{j=1}^{L} (A_j V_{in}) W_j + b.

    :math:`A_j V_{in}` is a scatter over the edges (an ``[E, L, F]`` temporary, never an
    :math:`N \times N` matrix). Choices where the paper is silent: no self loops are added (the
    :math:`h_{i0} I` term is the self connection) and :math:`A` is not normalised (Eq. 1 weights
    lie in :math:`[0, 1)`; normalise ``edge_attr`` beforehand for degree-independent scales);
    ``edge_attr=None`` means a binary adjacency. The activation is applied by the model.

    Args:
        in_channels (int): Size of each input node feature :math:`F`.
        out_channels (int): Size of each output node feature :math:`F'`.
        edge_dim (int): Number of edge features :math:`L`. (default: ``1``)
        bias (bool): Learn an additive bias :math:`b`. (default: ``True``)

    Shapes:
        - **input:** node features :math:`(N, F)`, edge indices :math:`(2, E)`, edge features
          :math:`(E, L)` or :math:`(E)` (optional when :math:`L = 1`)
        - **output:** node features :math:`(N, F')`
    """

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None) -> Tensor:
        edge_attr = _edge_features(edge_attr, edge_index.size(1), self.edge_dim, x)  # [E, L]
        return self._combine(x, _propagate(x, edge_index, edge_attr))  # [N, F']


class DenseRSFConv(_RSFBase):
    r"""Eq. 2 (see :class:`RSFConv`) on a dense batch of small graphs, e.g. after
    :class:`SoftmaxAssignmentPool`:

    .. math::
        V_{conv} = V_{in} W_0 + \sum_{j=1}^{L} (A_j V_{in}) W_j + b,

    with ``adj[b, i, k, j]`` the entry :math:`(A_j)_{ik}` of graph ``b``. Parameters are laid out
    as :class:`RSFConv`'s, so ``DenseRSFConv.load_state_dict(rsf.state_dict())`` works.

    Args:
        in_channels (int): Size of each input node feature :math:`F`.
        out_channels (int): Size of each output node feature :math:`F'`.
        edge_dim (int): Number of edge features :math:`L`. (default: ``1``)
        bias (bool): Learn an additive bias :math:`b`. (default: ``True``)

    Shapes:
        - **input:** node features :math:`(B, N, F)`, adjacency :math:`(B, N, N, L)` (or
          :math:`(B, N, N)` when :math:`L = 1`), optional node mask :math:`(B, N)`
        - **output:** node features :math:`(B, N, F')`, zero on masked-out nodes
    """

    def forward(self, x: Tensor, adj: Tensor, mask: Tensor | None = None) -> Tensor:
        adj = adj.unsqueeze(-1) if adj.dim() == 3 else adj  # [B, N, N, L]
        ax = torch.einsum("bikl,bkf->bilf", adj.to(x.dtype), x)  # [B, N, L, F]
        out = self._combine(x, ax)  # [B, N, F']
        return out * mask.unsqueeze(-1).to(out.dtype) if mask is not None else out


class RSFEdgeConv(nn.Module):
    r"""Edge convolution of "RSF+Edge" (Gadiya et al.), the nuclei-graph GCN's Eq. 4.

    New edge features from a learnt map of the edge's features concatenated with those of its
    two end nodes:

    .. math::
        A_{out} = \phi(W X), \qquad
        X_{ik} = \big[\, v_i + v_k \,\|\, |v_i - v_k| \,\|\, a_{ik} \,\big],

    per edge :math:`(i, k)`, with :math:`\phi` a monotonic non-linearity and a bias in
    :math:`W X`. Choice where the paper is silent: the end nodes enter through the symmetric
    functions :math:`v_i + v_k` and :math:`|v_i - v_k|` rather than as :math:`[v_i \| v_k]`, so
    the edges :math:`(i, k)` and :math:`(k, i)` of an undirected graph get the same features and
    :math:`A_{out}` stays symmetric when :math:`A` is (with the raw concatenation it would not).

    Args:
        node_channels (int): Size of each node feature :math:`F`.
        edge_channels (int): Size of each input edge feature :math:`L`.
        out_edge_channels (int): Size of each output edge feature :math:`L'`.
        act (callable, optional): :math:`\phi`; ``None`` for the identity.
            (default: :func:`torch.relu`)
        bias (bool): Learn an additive bias. (default: ``True``)

    Shapes:
        - **input:** node features :math:`(N, F)`, edge indices :math:`(2, E)`, edge features
          :math:`(E, L)` (or :math:`(E)` when :math:`L = 1`)
        - **output:** edge features :math:`(E, L')`
    """

    def __init__(
        self,
        node_channels: int,
        edge_channels: int,
        out_edge_channels: int,
        act: Callable[[Tensor], Tensor] | None = torch.relu,
        bias: bool = True,
    ):
        super().__init__()
        self.node_channels, self.edge_channels = node_channels, edge_channels
        self.out_edge_channels, self.act = out_edge_channels, act
        self.lin = nn.Linear(2 * node_channels + edge_channels, out_edge_channels, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.lin.weight)
        if self.lin.bias is not None:
            nn.init.zeros_(self.lin.bias)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        edge_attr = _edge_features(edge_attr, edge_index.size(1), self.edge_channels, x)
        x_i, x_k = x[edge_index[1]], x[edge_index[0]]  # [E, F] each
        feats = torch.cat([x_i + x_k, (x_i - x_k).abs(), edge_attr], dim=-1)  # [E, 2F + L]
        out = self.lin(feats)  # [E, L']
        return self.act(out) if self.act is not None else out

    def __repr__(self) -> str:
        name, act = self.__class__.__name__, getattr(self.act, "__name__", repr(self.act))
        return (
            f"{name}({self.node_channels}, {self.edge_channels}, {self.out_edge_channels}, "
            f"act={act})"
        )


class DenseRSFEdgeConv(RSFEdgeConv):
    r"""Eq. 4 (see :class:`RSFEdgeConv`) on a dense batch of small graphs, for the edge
    convolutions after the first pooling ("Edge Conv 2" and "3" of the paper's Table I):

    .. math::
        (A_{out})_{ik} = \phi\big(W [\, v_i + v_k \,\|\, |v_i - v_k| \,\|\, a_{ik} \,]\big)

    for every pair :math:`(i, k)` with an edge, i.e. a non-zero :math:`a_{ik}` (after softmax
    assignment pooling almost every pair has one). Absent edges and masked-out nodes stay zero.
    Parameters are laid out as :class:`RSFEdgeConv`'s. By linearity, with
    :math:`W = [W_+ \| W_- \| W_a]`, the map is computed as
    :math:`W_+ v_i + W_+ v_k + W_- |v_i - v_k| + W_a a_{ik}`: only the absolute difference is
    formed per pair, never the :math:`2F + L`-wide concatenation: it halves the largest
    intermediate, and on CPU makes the layer 1.5-1.6x faster at 32 pooled nodes (slightly
    slower at 8, where the pair tensor is tiny) and RSF + Edge's training step 1.4x
    (``benchmarks/rsf_edge.py``).

    Shapes:
        - **input:** node features :math:`(B, N, F)`, adjacency :math:`(B, N, N, L)` (or
          :math:`(B, N, N)` when :math:`L = 1`), optional node mask :math:`(B, N)`
        - **output:** adjacency :math:`(B, N, N, L')`
    """

    def forward(self, x: Tensor, adj: Tensor, mask: Tensor | None = None) -> Tensor:
        adj = (adj.unsqueeze(-1) if adj.dim() == 3 else adj).to(x.dtype)  # [B, N, N, L]
        if adj.size(-1) != self.edge_channels:
            raise ValueError(f"adj has {adj.size(-1)} features, expected {self.edge_channels}")
        f, w = self.node_channels, self.lin.weight  # w: [L', 2F + L] = [W+ | W- | Wa]
        s = x @ w[:, :f].t()  # [B, N, L']: W+ v
        diff = (x.unsqueeze(2) - x.unsqueeze(1)).abs()  # [B, N, N, F]
        out = F.linear(diff, w[:, f : 2 * f], self.lin.bias)  # [B, N, N, L']
        out = out + s.unsqueeze(2) + s.unsqueeze(1) + adj @ w[:, 2 * f :].t()
        out = self.act(out) if self.act is not None else out
        keep = (adj != 0).any(dim=-1, keepdim=True)  # [B, N, N, 1]
        if mask is not None:
            keep = keep & (mask.unsqueeze(2) & mask.unsqueeze(1)).unsqueeze(-1)
        return out * keep.to(out.dtype)


class NodeAttention(nn.Module):
    r"""Node attention of "RSF+Attention" (nuclei-graph GCN, Sec. III.E), placed "before the
    first pooling operation at the input to highlight important nuclei"; its scores are the
    paper's visualisation (Sec. III.F).

    For node :math:`v` of graph :math:`G` with :math:`n_G` nodes,

    .. math::
        s_v = \mathrm{softmax}_{u \in G}\big(w^\top \tanh(V x_u)\big)_v, \qquad
        x'_v = n_G \, s_v \, x_v .

    The paper gives no formula; this is the attention of attention-based MIL (Ilse et al.,
    ICML 2018, its ref. [20]) applied per graph. Choice: the scores are multiplied by
    :math:`n_G` (``rescale=True``) so that uniform attention leaves the features unchanged and
    their scale does not shrink with the number of nuclei (plain :math:`s_v x_v` with
    ``rescale=False``).

    Args:
        in_channels (int): Size of each node feature :math:`F`.
        hidden_channels (int, optional): Rows of :math:`V`; ``None`` for ``in_channels``.
            (default: ``None``)
        rescale (bool): Multiply the scores by the graph's number of nodes. (default: ``True``)

    Shapes:
        - **input:** node features :math:`(N, F)`, optional batch vector :math:`(N)`
        - **output:** node features :math:`(N, F)` and scores :math:`s` :math:`(N)` (summing
          to 1 over each graph's nodes)
    """

    def __init__(self, in_channels: int, hidden_channels: int | None = None, rescale: bool = True):
        super().__init__()
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels or in_channels
        self.rescale = rescale
        self.lin = nn.Linear(in_channels, self.hidden_channels)  # V
        self.att = nn.Linear(self.hidden_channels, 1, bias=False)  # w
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.lin.weight)
        nn.init.zeros_(self.lin.bias)
        nn.init.xavier_uniform_(self.att.weight)

    def forward(self, x: Tensor, batch: Tensor | None = None) -> tuple[Tensor, Tensor]:
        N = x.size(0)
        if batch is None:
            batch = x.new_zeros(N, dtype=torch.long)
        logit = self.att(torch.tanh(self.lin(x))).squeeze(-1)  # [N]
        score = softmax(logit, batch, num_nodes=N)  # [N], sums to 1 per graph
        weight = score
        if self.rescale:
            weight = score * torch.bincount(batch).to(x.dtype)[batch]  # n_G s_v
        return x * weight.unsqueeze(-1), score

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, rescale={self.rescale})"


POOL_AXES = ("vertices", "clusters")


class _AssignmentPool(nn.Module):
    """Hyper-parameters, the assignment convolution and the repr of the two pooling layers."""

    _conv_cls: type[_RSFBase]

    def __init__(self, in_channels: int, clusters: int, edge_dim: int = 1, axis: str = "vertices"):
        super().__init__()
        if axis not in POOL_AXES:
            raise ValueError(f"axis must be one of {POOL_AXES}, got {axis!r}")
        self.in_channels, self.clusters, self.edge_dim = in_channels, clusters, edge_dim
        self.axis = axis
        self.conv = self._conv_cls(in_channels, clusters, edge_dim)  # RSF to N' assignment logits
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()

    def __repr__(self) -> str:
        name = self.__class__.__name__
        return (
            f"{name}({self.in_channels}, clusters={self.clusters}, edge_dim={self.edge_dim}, "
            f"axis={self.axis!r})"
        )


def _pool(s: Tensor, x: Tensor, a_s: Tensor) -> tuple[Tensor, Tensor]:
    """Eq. 3 on dense batches: :math:`S^\\top X` ``[B, C, F]`` and :math:`S^\\top (A S)`
    ``[B, C, C, L]`` from ``s [B, n, C]``, ``x [B, n, F]`` and ``a_s = A S [B, n, L, C]``."""
    x_out = s.transpose(1, 2) @ x  # [B, C, F]
    adj_out = torch.einsum("bic,bild->bcdl", s, a_s)  # [B, C, C, L]
    return x_out, adj_out


class SoftmaxAssignmentPool(_AssignmentPool):
    r"""Softmax assignment pooling, the nuclei-graph GCN's Eq. 3, on a sparse batch.

    The assignment logits come from an RSF convolution (Eq. 2, :class:`RSFConv`) to :math:`N'`
    features; a softmax turns them into the assignment :math:`S = V_{emb}`, which coarsens each
    graph to :math:`N'` nodes:

    .. math::
        Z = \mathrm{RSF}(V_{in}, A) \in \mathbb{R}^{N \times N'}, \qquad
        V_{out} = S^\top V_{in}, \qquad A_{out} = S^\top A_{in} S,

    the last for each edge feature :math:`j`, :math:`A_{out} \in \mathbb{R}^{N' \times N'
    \times L}` (the paper's ":math:`N' \times N' \times F`" is a typo for :math:`L`). The paper
    writes :math:`V_{emb} = \mathrm{Softmax}(V)` without an axis; ``axis`` chooses it:

    * ``"vertices"`` (default; the RSF reference code ``fps7806/Graph-CNN``,
      ``layers.make_graph_embed_pooling``, softmax over axis 1 of ``[B, N, N']``): for each
      cluster :math:`c` a softmax over the vertices :math:`i` of its own graph,
      :math:`S_{ic} = e^{Z_{ic}} / \sum_{k \in G} e^{Z_{kc}}`. Each column sums to 1, so each
      pooled node is a weighted mean of vertices and :math:`(A_{out})_{cd} =
      \sum_{i,k} S_{ic} A_{ik} S_{kd}` a weighted mean of edge weights. Padded rows (vertices
      of other graphs) get weight 0.
    * ``"clusters"``: for each vertex a softmax over the :math:`N'` clusters; each row sums
      to 1, so pooled nodes are weighted *sums* whose scale grows with the graph's size.

    Each graph of the batch gets its own :math:`N'` clusters. :math:`A S` is a scatter over the
    edges; only the :math:`N' \times N'` products are dense (per graph, through
    :func:`~torch_geometric.utils.to_dense_batch`; padding rows are zero). The output is a dense
    batch for :class:`DenseRSFConv` and :class:`DenseSoftmaxAssignmentPool`. Batch norm and the
    activation after pooling are the model's.

    Args:
        in_channels (int): Size of each node feature :math:`F`.
        clusters (int): Number of clusters per graph :math:`N'`.
        edge_dim (int): Number of edge features :math:`L`. (default: ``1``)
        axis (str): The softmax's axis, ``"vertices"`` or ``"clusters"``.
            (default: ``"vertices"``)

    Shapes:
        - **input:** node features :math:`(N, F)`, edge indices :math:`(2, E)`, edge features
          :math:`(E, L)` or :math:`(E)` (optional when :math:`L = 1`), optional batch vector
          :math:`(N)`, optional number of graphs :math:`B`
        - **output:** pooled features :math:`(B, N', F)`, pooled adjacency
          :math:`(B, N', N', L)`, assignment :math:`S` :math:`(N, N')` (each graph's columns
          sum to 1 for ``"vertices"``, rows sum to 1 for ``"clusters"``)
    """

    _conv_cls = RSFConv

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor | None = None,
        batch: Tensor | None = None,
        batch_size: int | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        N = x.size(0)
        if batch is None:
            batch = x.new_zeros(N, dtype=torch.long)
        if batch_size is None:
            batch_size = int(batch.max()) + 1 if N > 0 else 1
        edge_attr = _edge_features(edge_attr, edge_index.size(1), self.edge_dim, x)  # [E, L]
        logits = self.conv(x, edge_index, edge_attr)  # [N, N']
        if self.axis == "vertices":
            s = softmax(logits, batch, num_nodes=N, dim=0)  # over each graph's vertices
        else:
            s = torch.softmax(logits, dim=-1)  # over the clusters
        a_s = _propagate(s, edge_index, edge_attr)  # A S, [N, L, N']
        s_d, _ = to_dense_batch(s, batch, batch_size=batch_size)  # [B, n, N'], padding 0
        x_d, _ = to_dense_batch(x, batch, batch_size=batch_size)  # [B, n, F]
        a_s_d, _ = to_dense_batch(a_s, batch, batch_size=batch_size)  # [B, n, L, N']
        x_out, adj_out = _pool(s_d, x_d, a_s_d)
        return x_out, adj_out, s


class DenseSoftmaxAssignmentPool(_AssignmentPool):
    r"""Eq. 3 (see :class:`SoftmaxAssignmentPool`) on a dense batch, for the levels after the
    first pooling; the assignment logits come from a :class:`DenseRSFConv`:

    .. math::
        Z = \mathrm{RSF}(V_{in}, A), \qquad
        V_{out} = S^\top V_{in}, \qquad A_{out} = S^\top A_{in} S,

    with :math:`S` the softmax of :math:`Z` over the (unmasked) vertices of each graph
    (``axis="vertices"``, the reference code; masked-out vertices get weight exactly 0 and
    their edges are dropped, as if they were absent) or over the clusters
    (``axis="clusters"``; masked-out rows are zeroed).

    Args:
        in_channels (int): Size of each node feature :math:`F`.
        clusters (int): Number of clusters per graph :math:`N'`.
        edge_dim (int): Number of edge features :math:`L`. (default: ``1``)
        axis (str): The softmax's axis, ``"vertices"`` or ``"clusters"``.
            (default: ``"vertices"``)

    Shapes:
        - **input:** node features :math:`(B, N, F)`, adjacency :math:`(B, N, N, L)` (or
          :math:`(B, N, N)` when :math:`L = 1`), optional node mask :math:`(B, N)`
        - **output:** pooled features :math:`(B, N', F)`, pooled adjacency
          :math:`(B, N', N', L)`, assignment :math:`(B, N, N')` (zero on masked-out vertices;
          columns sum to 1 over the unmasked vertices for ``"vertices"``, rows to 1 for
          ``"clusters"``)
    """

    _conv_cls = DenseRSFConv

    def forward(
        self, x: Tensor, adj: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        adj = (adj.unsqueeze(-1) if adj.dim() == 3 else adj).to(x.dtype)  # [B, n, n, L]
        if mask is not None:  # no edge to or from an absent vertex
            pair = mask.unsqueeze(2) & mask.unsqueeze(1)  # [B, n, n]
            adj = adj * pair.unsqueeze(-1).to(adj.dtype)
        logits = self.conv(x, adj)  # [B, n, N']
        if self.axis == "vertices":
            if mask is not None:  # absent vertices: logit -> lowest float, weight exactly 0
                low = torch.finfo(logits.dtype).min
                logits = logits.masked_fill(~mask.bool().unsqueeze(-1), low)
            s = torch.softmax(logits, dim=1)  # over the vertices
        else:
            s = torch.softmax(logits, dim=-1)  # over the clusters
        if mask is not None:  # also zeroes a graph without any vertex
            s = s * mask.unsqueeze(-1).to(s.dtype)
        a_s = torch.einsum("bikl,bkd->bild", adj, s)  # A S, [B, n, L, N']
        x_out, adj_out = _pool(s, x, a_s)
        return x_out, adj_out, s
