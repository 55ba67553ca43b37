r"""Spatial MIL baselines: bag models that also see where each patch lies on the slide.

Every module takes the patches of several slides concatenated: features ``x [N, F]``, the
``grid [N, 2]`` position of each patch, ``batch [N]`` (the slide of each patch,
``0 .. num_bags - 1``, any order) and ``num_bags``, and returns bag logits ``[B, n_classes]``.
``grid`` holds ``(row, col)`` indices on the patch lattice of the slide's magnification:
non-negative integers, float or long (floats are rounded), one patch per position and slide,
tissue patches only (a sparse subset of the lattice). Both modules follow the training
protocol of :mod:`wsigraph.nn.mil` (``outputs`` / ``loss`` / ``forward``) and are invariant
to the order of the patches (in ``eval()`` mode): what they compute depends on positions, not
on row order in ``x``.

* :class:`NICMIL`: the patch features placed at their positions form a compressed image on
  which a small CNN is trained ("MIL-CNN"; Tellez et al., IEEE TPAMI 2021).
* :class:`LAMIL`: a transformer whose self-attention is restricted to each patch's
  :math:`k` nearest neighbours on the slide (Reisenbüchler et al., MICCAI 2022).
* :func:`local_knn_graph`: the deterministic per-slide :math:`k`-NN graph :class:`LAMIL` uses.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch_geometric.nn import global_mean_pool
from torch_geometric.utils import scatter

from wsigraph.nn.attention import CHUNK_ELEMENTS, segment_attention
from wsigraph.nn.mil import _MIL, Hidden

__all__ = ["LAMIL", "NICMIL", "local_knn_graph"]


def _integer_grid(grid: Tensor) -> Tensor:
    """``grid`` as non-negative ``torch.long`` ``[N, 2]`` (floats rounded)."""
    if grid.dim() != 2 or grid.size(-1) != 2:
        raise ValueError(f"grid must be [N, 2] (row, col), got shape {tuple(grid.shape)}")
    grid = grid.round().long() if grid.is_floating_point() else grid.long()
    if grid.numel() and grid.min() < 0:
        raise ValueError("grid positions must be non-negative")
    return grid


def _reset(root: nn.Module) -> None:
    for module in root.modules():
        if isinstance(module, nn.Linear | nn.Conv2d | nn.LayerNorm):
            module.reset_parameters()


# --------------------------------------------------------------------------------------------
# NIC: the compressed image and a CNN on it
# --------------------------------------------------------------------------------------------


def _extent_mask(size: Tensor, height: int, width: int) -> Tensor:
    """``[B, 1, height, width]`` booleans: pixel inside the slide's own ``size [B, 2]`` extent."""
    rows = torch.arange(height, device=size.device) < size[:, :1]  # [B, H]
    cols = torch.arange(width, device=size.device) < size[:, 1:]  # [B, W]
    return (rows[:, :, None] & cols[:, None, :]).unsqueeze(1)


class NICMIL(_MIL):
    r"""A CNN on the compressed slide image, "MIL-CNN" in H2-MIL's tables (Tellez, Litjens,
    van der Laak & Ciompi, "Neural Image Compression for Gigapixel Histopathology Image
    Analysis", IEEE TPAMI 2021).

    Neural image compression (NIC) encodes every patch of a slide into a feature vector and
    places the vector at the patch's position, giving a compressed image
    :math:`X \in \mathbb{R}^{F \times H \times W}` with zeros where there is no tissue:

    .. math::
        X_{:, r_k - r_0, c_k - c_0} = x_k, \qquad
        r_0 = \min_k r_k, \; c_0 = \min_k c_k,

    :math:`H, W` being the extent of the slide's positions. A CNN :math:`g` trained on
    :math:`X` with the slide label gives the logits

    .. math::
        \mathrm{logits} = W\, \max_{i,j}\, g(X)_{:, i, j} + b ,

    the maximum running over the pixels of :math:`g(X)` (global max pooling, as in Tellez et
    al.'s classifier).

    Choices: we run every method on frozen pre-computed patch features, so :math:`x_k` is
    the given feature (Tellez et al. train their own encoders). :math:`g` is a 1x1
    convolution to ``reduce_dim`` channels followed by one block per width in ``hidden``
    (3x3 convolution, padding 1, stride ``first_stride`` in the first block and 1 after, then
    LeakyReLU and dropout); the 1x1 convolution is followed by LeakyReLU too; a linear layer
    on the max-pooled channels gives the logits. Tellez et al.'s classifier is a deeper stack
    of strided 3x3 convolutions with batch normalisation; we use no normalisation, so that a
    slide's logits do not depend on the other slides of the batch. A batch pads the images
    to the largest :math:`H, W` and, after every layer, zeroes each slide's activations
    outside its own extent (the part a slide alone would not have), and the max pooling reads
    only that extent: batched logits equal each slide's alone. A slide without patches is a
    1x1 zero image. Memory is :math:`O(B H W F)` for the bounding boxes, not :math:`O(N)`:
    a slide of 50,000 patches on a 224 x 224 lattice with :math:`F = 64` is a 13 MB input.

    Args:
        in_dim (int): Patch feature size :math:`F`.
        n_classes (int): Number of bag classes. (default: ``2``)
        hidden (tuple[int, ...]): Channels of the 3x3 convolution blocks. (default:
            ``(128, 128)``)
        dropout (float): Dropout after each convolution block. (default: ``0.0``)
        reduce_dim (int): Channels of the first 1x1 convolution; ``0`` skips it. (default:
            ``128``)
        first_stride (int): Stride of the first 3x3 block. (default: ``2``)

    Shapes:
        - **input:** features :math:`(N, F)`, grid :math:`(N, 2)`, bag index :math:`(N)`,
          ``num_bags`` :math:`B`
        - **output:** bag logits :math:`(B, C)`
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int = 2,
        hidden: Hidden = (128, 128),
        dropout: float = 0.0,
        reduce_dim: int = 128,
        first_stride: int = 2,
    ):
        super().__init__()
        self.in_dim, self.n_classes, self.hidden, self.dropout = in_dim, n_classes, hidden, dropout
        self.reduce_dim, self.first_stride = reduce_dim, first_stride
        self.reduce = (
            nn.Sequential(nn.Conv2d(in_dim, reduce_dim, 1), nn.LeakyReLU()) if reduce_dim else None
        )
        channels = reduce_dim or in_dim
        self.blocks = nn.ModuleList()
        self.strides: list[int] = []
        for i, width in enumerate(hidden):
            stride = first_stride if i == 0 else 1
            self.blocks.append(
                nn.Sequential(
                    nn.Conv2d(channels, width, 3, stride=stride, padding=1),
                    nn.LeakyReLU(),
                    nn.Dropout(dropout),
                )
            )
            self.strides.append(stride)
            channels = width
        self.classifier = nn.Linear(channels, n_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset(self)

    @staticmethod
    def compress(x: Tensor, grid: Tensor, batch: Tensor, num_bags: int) -> tuple[Tensor, Tensor]:
        """The compressed images ``[B, F, H, W]`` (zero-padded to the batch's largest extent)
        and each slide's own extent ``[B, 2]`` (rows, cols; ``1 x 1`` for an empty slide)."""
        grid = _integer_grid(grid)
        origin = scatter(grid, batch, dim=0, dim_size=num_bags, reduce="min")  # [B, 2]
        local = grid - origin[batch]  # [N, 2]
        size = scatter(local + 1, batch, dim=0, dim_size=num_bags, reduce="max").clamp(min=1)
        height, width = size.amax(0).tolist() if num_bags else (1, 1)
        image = x.new_zeros(num_bags, height, width, x.size(-1))  # [B, H, W, F]
        image.index_put_((batch, local[:, 0], local[:, 1]), x, accumulate=True)
        return image.permute(0, 3, 1, 2).contiguous(), size  # [B, F, H, W], [B, 2]

    def forward(self, x: Tensor, grid: Tensor, batch: Tensor, num_bags: int) -> Tensor:
        h, size = self.compress(x, grid, batch, num_bags)  # [B, F, H, W], [B, 2]
        if self.reduce is not None:
            h = self.reduce(h) * _extent_mask(size, *h.shape[-2:])  # [B, R, H, W]
        for block, stride in zip(self.blocks, self.strides, strict=True):
            h = block(h)  # [B, D, H', W']
            size = torch.div(size - 1, stride, rounding_mode="floor") + 1
            h = h * _extent_mask(size, *h.shape[-2:])
        inside = _extent_mask(size, *h.shape[-2:])
        pooled = h.masked_fill(~inside, float("-inf")).amax(dim=(-2, -1))  # [B, D]
        return self.classifier(pooled)  # [B, C]

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_dim}, n_classes={self.n_classes}, "
            f"hidden={self.hidden}, reduce_dim={self.reduce_dim})"
        )


# --------------------------------------------------------------------------------------------
# LA-MIL: the k-NN graph, local multi-head attention, the transformer
# --------------------------------------------------------------------------------------------


def _slide_knn(points: np.ndarray, k: int) -> np.ndarray:
    """``[n, min(k, n)]`` indices of each point's nearest points (itself first), ordered by
    (squared distance, row, col) of the neighbour; exact on integer positions."""
    n = len(points)
    k = min(k, n)
    rank = np.empty(n, dtype=np.int64)  # lexicographic (row, col) rank: the tie-break
    rank[np.lexsort((points[:, 1], points[:, 0]))] = np.arange(n)
    tree = cKDTree(points)
    out = np.empty((n, k), dtype=np.int64)
    todo, q = np.arange(n), min(n, 2 * k)
    while todo.size:
        cand = tree.query(points[todo], k=q)[1].reshape(len(todo), q)  # [t, q]
        d2 = ((points[cand] - points[todo, None]) ** 2).sum(-1)  # [t, q], exact integers
        order = np.argsort(d2 * n + rank[cand], axis=1)[:, :k]
        kth = np.take_along_axis(d2, order[:, -1:], 1)[:, 0]
        # Every point as close as the k-th is a candidate when a farther one was returned too.
        done = (d2.max(1) > kth) if q < n else np.ones(len(todo), dtype=bool)
        out[todo[done]] = np.take_along_axis(cand, order, 1)[done]
        todo, q = todo[~done], min(n, 2 * q)
    return out


def local_knn_graph(grid: Tensor, batch: Tensor, k: int) -> Tensor:
    r"""Edges from each patch's :math:`k` nearest patches of the same slide to the patch.

    Neighbours are ranked by Euclidean distance on the ``grid`` lattice, ties broken by the
    neighbour's ``(row, col)``, so the graph depends on positions only; the patch itself is
    its own first neighbour; a slide of :math:`n < k` patches gives each patch all :math:`n`.
    Computed per slide with :class:`scipy.spatial.cKDTree` on the host.

    Args:
        grid (torch.Tensor): ``(row, col)`` of each patch, non-negative integers.
        batch (torch.Tensor): Slide of each patch.
        k (int): Number of neighbours :math:`k \geq 1`.

    Shapes:
        - **input:** grid :math:`(N, 2)`, batch :math:`(N)`
        - **output:** ``edge_index`` :math:`(2, E)`, rows (source = neighbour, destination),
          sorted by destination and, within one, by (distance, row, col):
          the CSR layout of :func:`wsigraph.nn.attention.segment_attention`
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    points = _integer_grid(grid).cpu().numpy()
    slide = batch.cpu().numpy()
    order = np.argsort(slide, kind="stable")
    bounds = np.flatnonzero(np.diff(slide[order])) + 1
    src, dst = [], []
    for members in np.split(order, bounds) if len(order) else []:
        nbr = _slide_knn(points[members], k)  # [n, k']
        src.append(members[nbr].ravel())
        dst.append(np.repeat(members, nbr.shape[1]))
    if not src:
        return torch.empty(2, 0, dtype=torch.long, device=grid.device)
    src, dst = np.concatenate(src), np.concatenate(dst)
    by_dst = np.argsort(dst, kind="stable")  # keeps each destination's neighbour order
    return torch.from_numpy(np.stack([src[by_dst], dst[by_dst]])).to(grid.device)


class _EdgeDot(torch.autograd.Function):
    """``out[e, h] = <q[dst[e], h], k[src[e], h]>`` without keeping ``[E, H, C]`` gathers:
    chunked in forward, recomputed chunk by chunk in backward."""

    @staticmethod
    def forward(ctx, q, k, dst, src):
        heads, channels = q.shape[1:]
        out = q.new_empty(dst.numel(), heads)  # [E, H]
        step = max(1, CHUNK_ELEMENTS // max(1, heads * channels))
        for a in range(0, dst.numel(), step):
            d, s = dst[a : a + step], src[a : a + step]
            out[a : a + step] = (q.index_select(0, d) * k.index_select(0, s)).sum(-1)
        ctx.save_for_backward(q, k, dst, src)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, dst, src = ctx.saved_tensors
        grad_q, grad_k = torch.zeros_like(q), torch.zeros_like(k)
        step = max(1, CHUNK_ELEMENTS // max(1, q[0].numel()))
        for a in range(0, dst.numel(), step):
            g = grad_out[a : a + step, :, None]  # [chunk, H, 1]
            d, s = dst[a : a + step], src[a : a + step]
            grad_q.index_add_(0, d, g * k.index_select(0, s))
            grad_k.index_add_(0, s, g * q.index_select(0, d))
        return grad_q, grad_k, None, None


class LocalSelfAttention(nn.Module):
    r"""Multi-head self-attention of each node over its graph neighbours (LA-MIL Sec. 2):

    .. math::
        \mathbf{o}_{i,h} = \sum_{j \in \mathcal{N}(i)}
        \mathrm{softmax}_{j \in \mathcal{N}(i)}\!\Big(
        \frac{\mathbf{q}_{i,h}^\top \mathbf{k}_{j,h}}{\sqrt{d}}\Big)\, \mathbf{v}_{j,h},
        \qquad \mathbf{h}'_i = W_o\,[\mathbf{o}_{i,1} \| \dots \| \mathbf{o}_{i,H}] + b_o,

    with :math:`\mathbf{q}, \mathbf{k}, \mathbf{v}` linear projections split into :math:`H`
    heads of :math:`d = D / H` channels, scores per edge and the softmax-weighted sum by
    :func:`wsigraph.nn.attention.segment_attention` (memory :math:`O(E H + N D)`).

    Args:
        dim (int): Token size :math:`D`.
        heads (int): Number of heads :math:`H` (divides :math:`D`). (default: ``8``)

    Shapes:
        - **input:** tokens :math:`(N, D)`, ``edge_index`` :math:`(2, E)` sorted by destination
        - **output:** tokens :math:`(N, D)`
    """

    def __init__(self, dim: int, heads: int = 8):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.dim, self.heads = dim, heads
        self.query, self.key, self.value = (nn.Linear(dim, dim) for _ in range(3))
        self.proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset(self)

    def forward(self, h: Tensor, edge_index: Tensor, ptr: Tensor | None = None) -> Tensor:
        n, heads, c = h.size(0), self.heads, self.dim // self.heads
        q = self.query(h).view(n, heads, c)  # [N, H, C]
        k = self.key(h).view(n, heads, c)
        v = self.value(h).view(n, heads, c)
        src, dst = edge_index
        score = _EdgeDot.apply(q, k, dst, src) / math.sqrt(c)  # [E, H]
        out = segment_attention(score, v, src, dst, n, ptr, assume_sorted=ptr is not None)
        return self.proj(out.reshape(n, self.dim))  # [N, D]


class _Block(nn.Module):
    """Pre-norm transformer block with local attention."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = LocalSelfAttention(dim, heads)
        self.mlp = nn.Sequential(
            nn.Linear(dim, int(mlp_ratio * dim)),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(int(mlp_ratio * dim), dim),
            nn.Dropout(dropout),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, edge_index: Tensor, ptr: Tensor) -> Tensor:
        h = h + self.dropout(self.attention(self.norm1(h), edge_index, ptr))  # [N, D]
        return h + self.mlp(self.norm2(h))


class LAMIL(_MIL):
    r"""Local-attention MIL, "LA-MIL" (Reisenbüchler, Wagner, Boxberg & Peng, "Local Attention
    Graph-based Transformer for Multi-target Genetic Alteration Prediction", MICCAI 2022).

    The patches of a slide are tokens :math:`\mathbf{h}^0_i = \mathrm{ReLU}(W_e x_i + b_e)`;
    each of ``layers`` pre-norm transformer blocks applies

    .. math::
        \mathbf{h}' = \mathbf{h} + \mathrm{LSA}\big(\mathrm{LN}(\mathbf{h}), \mathcal{G}\big),
        \qquad
        \mathbf{h}^{l+1} = \mathbf{h}' + \mathrm{MLP}\big(\mathrm{LN}(\mathbf{h}')\big),

    where the local self-attention :math:`\mathrm{LSA}` (:class:`LocalSelfAttention`) lets
    patch :math:`i` attend only to its :math:`k` nearest patches :math:`\mathcal{N}(i)` on the
    slide (itself included; :func:`local_knn_graph`), LA-MIL's graph-restricted attention.
    The slide embedding is the mean of the final (layer-normalised) tokens and
    :math:`\mathrm{logits} = W \bar{\mathbf{h}} + b`.

    Choices: the features are frozen pre-computed patch features; the first layer is Linear +
    ReLU to ``dim`` (LA-MIL's first fully connected layer); every block uses the same
    :math:`k`-NN graph (LA-MIL allows one graph per layer, :math:`k = 16` first); heads
    default to LA-MIL's 8, width to 128 (theirs is 512); the MLP is GELU with ``mlp_ratio``
    times the width; no dropout on attention weights; mean pooling as LA-MIL's read-out; one
    linear layer to ``n_classes`` softmax logits (LA-MIL predicts several binary targets with
    sigmoids). Neighbour ties are broken by position, so the model does not depend on patch
    order. Memory is :math:`O(N k H + N D)`: a slide of 50,000 patches runs on a CPU.

    Args:
        in_dim (int): Patch feature size :math:`F`.
        n_classes (int): Number of bag classes. (default: ``2``)
        dim (int): Token width :math:`D`. (default: ``128``)
        heads (int): Attention heads :math:`H`, dividing :math:`D`. (default: ``8``)
        layers (int): Transformer blocks. (default: ``2``)
        k (int): Neighbours per patch, itself included. (default: ``16``)
        mlp_ratio (float): MLP hidden width over :math:`D`. (default: ``4.0``)
        dropout (float): Dropout after the embedding, attention and MLP layers.
            (default: ``0.0``)

    Shapes:
        - **input:** features :math:`(N, F)`, grid :math:`(N, 2)`, bag index :math:`(N)`,
          ``num_bags`` :math:`B`
        - **output:** bag logits :math:`(B, C)`
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int = 2,
        dim: int = 128,
        heads: int = 8,
        layers: int = 2,
        k: int = 16,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.in_dim, self.n_classes, self.dim, self.heads = in_dim, n_classes, dim, heads
        self.layers, self.k, self.mlp_ratio, self.dropout = layers, k, mlp_ratio, dropout
        self.embed = nn.Sequential(nn.Linear(in_dim, dim), nn.ReLU(), nn.Dropout(dropout))
        self.blocks = nn.ModuleList(_Block(dim, heads, mlp_ratio, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, n_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset(self)

    def forward(self, x: Tensor, grid: Tensor, batch: Tensor, num_bags: int) -> Tensor:
        edge_index = local_knn_graph(grid, batch, self.k)  # [2, N k]
        ptr = torch.searchsorted(
            edge_index[1].contiguous(), torch.arange(x.size(0) + 1, device=x.device)
        )  # [N + 1]
        h = self.embed(x)  # [N, D]
        for block in self.blocks:
            h = block(h, edge_index, ptr)
        return self.classifier(global_mean_pool(self.norm(h), batch, size=num_bags))  # [B, C]

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_dim}, n_classes={self.n_classes}, "
            f"dim={self.dim}, heads={self.heads}, layers={self.layers}, k={self.k})"
        )
