r"""Global scale of the ABiG-Net *orientation variant*: a learned, sparse, symmetric graph over
the patches of an image. This is our design, written before the official code
(``Paul1086/ABiG_Net``) was found; the official generator (a dense pair MLP with a
Gumbel-sigmoid) is :class:`wsigraph.nn.dense_gcn.AdjacencyGenerator`, the row "ABiG-Net".

ABiG-Net (arXiv 2510.13188, abstract): "we learn an image-level graph that captures sparse,
biologically meaningful connections between patches through a first-order approximate bilevel
optimization strategy." The paper's equations could not be read here (only the abstract and
third-party summaries were reachable), so the parametrisation below is **ours**, written down in
full:

Inductive structure
    The images of a cohort are separate graphs with different patch counts, and test images
    are unseen, so the structure cannot be one free :math:`N \times N` matrix as in transductive
    bilevel graph learning (LDS, Franceschi et al., ICML 2019). It is a *generator* with
    parameters :math:`\phi` (the outer variables of the bilevel problem): every image's edges
    are a function of its patches' features and positions.

Edge score (symmetric by construction)

    .. math::
        s_{ij} = \frac{1}{H} \sum_{h=1}^{H}
                 \frac{\langle W_h x_i, W_h x_j \rangle}{\lVert W_h x_i \rVert\,\lVert W_h x_j \rVert}
                 \;-\; \operatorname{softplus}(\gamma)\,\frac{\lVert p_i - p_j \rVert}{\ell},

    a multi-head cosine similarity of learned projections of the patch features (IDGL-style,
    Chen et al., NeurIPS 2020) minus a learned penalty on the distance between the patch grid
    positions :math:`p` (``distance=False`` drops it; :math:`\ell` = ``distance_scale``).

Sparsity (explicit, three parts)
    1. *Budget*: each node keeps the ``k`` highest-scoring other nodes of its own image
       (selected without gradient, in row blocks against the block's own images, so no
       :math:`N \times N` tensor is kept for backward); the union with the reverse edges makes the edge set symmetric, so a node has
       between ``k`` and ``N - 1`` neighbours and :math:`E \le 2kN`.
    2. *Gate*: :math:`w_{ij} = \sigma((s_{ij} - b) / \tau)` with a learned threshold :math:`b`
       and a fixed temperature :math:`\tau`; edges with :math:`w_{ij} <` ``min_weight`` are
       dropped.
    3. *Penalty*: the bilevel trainer adds :math:`\lambda \cdot \operatorname{mean}(w)` (an
       :math:`\ell_1` norm of the adjacency, normalised per edge) to the outer loss
       (:mod:`wsigraph.train.bilevel`), so edges that do not lower the validation loss fade.

    :math:`s_{ij} = s_{ji}`, so :math:`w_{ij} = w_{ji}`: the adjacency is symmetric.

Edge order
    Like :mod:`wsigraph.graphs.spatial`: ``edge_index[0]`` source, ``edge_index[1]``
    destination, both directions stored, no self loops, sorted by ``(dst, src)``.

:func:`knn_adjacency` builds the fixed graph of the ablation "ABiG-Net, fixed k-NN graph"
with the same budget rule (``k`` nearest, symmetrised, weight 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _ptr(batch: Tensor | None, num_nodes: int) -> Tensor:
    """CSR pointer ``[B + 1]`` of a sorted PyG ``batch`` vector (``None``: one graph)."""
    if batch is None:
        return torch.tensor([0, num_nodes])
    if batch.numel() and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("'batch' must be sorted (PyG batches are)")
    counts = torch.bincount(batch.cpu(), minlength=int(batch.max()) + 1 if batch.numel() else 0)
    return torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])


@torch.no_grad()
def topk_pairs(score_rows, ptr: Tensor, k: int, device: torch.device, chunk: int = 1024) -> Tensor:
    r"""The symmetric ``k``-best edge set of every graph of a batch.

    Rows are processed in blocks of ``chunk`` nodes across the whole batch; a block is scored
    against the nodes of the graphs it touches only (the batch is sorted, so they are
    contiguous), and pairs across graphs and self pairs are masked. Memory is
    :math:`O(\text{chunk} \cdot n_{\max})`, never :math:`O(N^2)` for the batch.

    Args:
        score_rows: ``score_rows(rows, cols) -> [len(rows), len(cols)]`` pairwise scores
            (higher = more similar) for global node indices.
        ptr (torch.Tensor): ``[B + 1]`` node offsets of the graphs.
        k (int): Best other nodes kept per node, ``>= 1`` (all others when a graph has
            ``<= k + 1`` nodes).
        device (torch.device): Where the indices live.
        chunk (int): Rows per block. (default: :obj:`1024`)

    Returns:
        torch.Tensor: ``edge_index`` ``[2, E]`` long, both directions, no self loops, each
        pair once per direction, sorted by ``(dst, src)``.
    """
    if k < 1:
        raise ValueError(f"'k' must be >= 1, got {k}")
    ptr = ptr.cpu()
    num_nodes = int(ptr[-1])
    gid = torch.repeat_interleave(torch.arange(len(ptr) - 1), ptr.diff())  # [N], CPU
    gid_dev = gid.to(device)
    src_all, dst_all = [], []
    for start in range(0, num_nodes, chunk):
        stop = min(start + chunk, num_nodes)
        c0, c1 = int(ptr[gid[start]]), int(ptr[gid[stop - 1] + 1])
        kk = min(k, c1 - c0 - 1)
        if kk < 1:
            continue
        rows = torch.arange(start, stop, device=device)
        cols = torch.arange(c0, c1, device=device)
        score = score_rows(rows, cols).clone()  # [r, c]
        other = gid_dev[rows][:, None] != gid_dev[cols][None, :]
        score = score.masked_fill(other | (rows[:, None] == cols[None, :]), -math.inf)
        val, idx = score.topk(kk, dim=1)  # [r, kk]
        ok = torch.isfinite(val)  # graphs with fewer than kk + 1 nodes: -inf picks
        src_all.append(cols[idx][ok])
        dst_all.append(rows[:, None].expand_as(idx)[ok])
    if not src_all:
        return torch.empty(2, 0, dtype=torch.long, device=device)
    src, dst = torch.cat(src_all), torch.cat(dst_all)
    both = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])  # [2, 2E], symmetrised
    key = torch.unique(both[1] * num_nodes + both[0])  # sorted by (dst, src), duplicates gone
    return torch.stack([key % num_nodes, key // num_nodes])


def knn_adjacency(
    x: Tensor, pos: Tensor, batch: Tensor | None = None, k: int = 8, on: str = "position"
) -> tuple[Tensor, Tensor]:
    r"""The fixed graph of the ablation: each node joined to its ``k`` nearest nodes of its own
    image, symmetrised, weight 1.

    Args:
        x (torch.Tensor): Node features ``[N, F]`` (used when ``on="features"``).
        pos (torch.Tensor): Node positions ``[N, D]`` (used when ``on="position"``).
        batch (torch.Tensor, optional): Graph of each node ``[N]``, sorted. (default: one graph)
        k (int): Neighbours per node. (default: :obj:`8`, the 8-neighbourhood on a grid)
        on (str): ``"position"`` (Euclidean distance of ``pos``) or ``"features"`` (cosine
            similarity of ``x``, C2P-GCN's image-level graph). (default: :obj:`"position"`)

    Returns:
        (torch.Tensor, torch.Tensor): ``edge_index`` ``[2, E]`` and ``edge_weight`` ``[E]`` (ones).
    """
    if on == "position":
        p = pos.to(torch.float64)

        def score(r, c):
            return -torch.cdist(p[r], p[c])

    elif on == "features":
        z = F.normalize(x.detach().to(torch.float64), dim=-1)

        def score(r, c):
            return z[r] @ z[c].T

    else:
        raise ValueError(f"'on' must be 'position' or 'features', got {on!r}")
    edge_index = topk_pairs(score, _ptr(batch, x.size(0)), k, x.device)
    return edge_index, x.new_ones(edge_index.size(1))


class GraphLearner(nn.Module):
    r"""The learned sparse symmetric adjacency of ABiG-Net's image-level graph (module docstring;
    ABiG-Net, abstract: "sparse, biologically meaningful connections between patches").

    .. math::
        w_{ij} = \sigma\!\Bigl(\tfrac{1}{\tau}\Bigl(\tfrac{1}{H}\textstyle\sum_h
        \cos(W_h x_i, W_h x_j) - \operatorname{softplus}(\gamma)
        \tfrac{\lVert p_i - p_j \rVert}{\ell} - b\Bigr)\Bigr)
        \quad\text{for } (i, j) \in \operatorname{sym}(\operatorname{top}_k(s)),
        \; w_{ij} \ge w_{\min}.

    Its parameters :math:`\phi = (W, \gamma, b)` are the outer variables of the bilevel problem.

    Args:
        in_channels (int): Node feature size :math:`F`.
        hidden (int): Size of each head's projection. (default: :obj:`32`)
        heads (int): Number of projections :math:`H`. (default: :obj:`4`)
        k (int): Edge budget per node. (default: :obj:`8`)
        tau (float): Gate temperature :math:`\tau > 0`. (default: :obj:`0.1`)
        min_weight (float): Edges with a smaller weight are dropped, in :math:`[0, 1)`.
            (default: :obj:`0.01`)
        distance (bool): Include the learned distance penalty. (default: :obj:`True`)
        distance_scale (float): :math:`\ell`, in the units of ``pos``. (default: :obj:`1.0`,
            one patch on the grid)
        chunk (int): Rows per block of the top-k search. (default: :obj:`1024`)

    Shapes:
        - **input:** node features :math:`(N, F)`, positions :math:`(N, D)`, batch vector
          :math:`(N)` (optional)
        - **output:** ``edge_index`` :math:`(2, E)`, edge weights :math:`(E)` with
          :math:`E \le 2kN`
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int = 32,
        heads: int = 4,
        k: int = 8,
        tau: float = 0.1,
        min_weight: float = 0.01,
        distance: bool = True,
        distance_scale: float = 1.0,
        chunk: int = 1024,
    ):
        super().__init__()
        if k < 1 or heads < 1 or hidden < 1:
            raise ValueError(f"need k, heads, hidden >= 1, got {k}, {heads}, {hidden}")
        if not tau > 0:
            raise ValueError(f"'tau' must be > 0, got {tau}")
        if not 0.0 <= min_weight < 1.0:
            raise ValueError(f"'min_weight' must lie in [0, 1), got {min_weight}")
        if not distance_scale > 0:
            raise ValueError(f"'distance_scale' must be > 0, got {distance_scale}")
        self.in_channels, self.hidden, self.heads, self.k = in_channels, hidden, heads, k
        self.tau, self.min_weight = tau, min_weight
        self.distance, self.distance_scale, self.chunk = distance, distance_scale, chunk
        self.proj = nn.Linear(in_channels, heads * hidden, bias=False)
        self.gamma = nn.Parameter(torch.empty(1)) if distance else None
        self.threshold = nn.Parameter(torch.empty(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.proj.weight)
        if self.gamma is not None:
            nn.init.constant_(self.gamma, math.log(math.expm1(0.1)))  # softplus = 0.1
        nn.init.zeros_(self.threshold)

    def _embed(self, x: Tensor) -> Tensor:
        z = self.proj(x).view(-1, self.heads, self.hidden)  # [N, H, C]
        return F.normalize(z, dim=-1).flatten(1) / math.sqrt(self.heads)  # [N, H*C]

    def _penalty(self, d: Tensor) -> Tensor:
        return F.softplus(self.gamma) * d / self.distance_scale

    def score(self, x: Tensor, pos: Tensor, edge_index: Tensor) -> Tensor:
        """The score :math:`s_{ij}` of the given edges ``[E]`` (differentiable)."""
        z = self._embed(x)
        src, dst = edge_index
        s = (z[src] * z[dst]).sum(-1)  # [E], mean over heads of the cosines
        if self.gamma is not None:
            s = s - self._penalty((pos[src] - pos[dst]).norm(dim=-1).to(s.dtype))
        return s

    def forward(self, x: Tensor, pos: Tensor, batch: Tensor | None = None) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            z = self._embed(x)
            p = pos.to(z.dtype)

            def rows_score(r, c):
                s = z[r] @ z[c].T  # [r, n]
                return s - self._penalty(torch.cdist(p[r], p[c])) if self.gamma is not None else s

            edge_index = topk_pairs(
                rows_score, _ptr(batch, x.size(0)), self.k, x.device, self.chunk
            )
        weight = torch.sigmoid((self.score(x, pos, edge_index) - self.threshold) / self.tau)
        if self.min_weight > 0:
            keep = weight >= self.min_weight
            edge_index, weight = edge_index[:, keep], weight[keep]
        return edge_index, weight  # [2, E], [E]

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, hidden={self.hidden}, "
            f"heads={self.heads}, k={self.k}, tau={self.tau}, distance={self.distance})"
        )
