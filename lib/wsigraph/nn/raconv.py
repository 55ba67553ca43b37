r"""Resolution-aware attention convolutions on the pyramid graph: RAConv (H2-MIL), HGAT and
RAConv+ (HIGT).

All are dual-level attentions over a heterogeneous graph whose node *types* are pyramid
levels (resolutions). They differ in how the two levels combine:

* :class:`RAConv` (H2-MIL Eq. 2-4): the node-level softmax runs *within* each resolution's
  neighbours, then the resolution-level attention re-weights the resolutions, so a resolution
  with few neighbours (e.g. the single thumbnail node) is not drowned by one with many.
* :class:`HGATConv` (Hu et al., EMNLP 2019, "HGAT"; the H2-MIL ablation): the type-level
  attention scales the node-level scores, and the softmax runs over *all* neighbours at once.
* :class:`RAConvPlus` (HIGT Eq. 2-3): the resolution-level and node-level weights are *added*
  (not multiplied), with the LeakyReLU inside the attention vectors' argument; rows of the
  attention matrix are not normalised.

All run on :func:`wsigraph.nn.attention.segment_attention` (O(E) memory, a fused Triton kernel
on CUDA), never on an E x N matrix as the official code does.

Precision: every layer computes its projections (``W x``; RAConv+ also ``U x`` and ``V x``) in
float32 by default, as the papers do. ``precision="tf32"`` lets CUDA's matrix products use TF32
for them, ``"bfloat16"`` / ``"float16"`` run them under :func:`torch.autocast`; the attention
itself (scores, softmaxes, weighted sums) always runs in float32, and the projections come back
in float32. :func:`set_projection_precision` switches every layer of a model.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter, softmax

from wsigraph.nn.attention import segment_attention


def _glorot(t: Tensor) -> None:
    bound = math.sqrt(6.0 / (t.size(-2) + t.size(-1)))
    nn.init.uniform_(t, -bound, bound)


def _segment_logsumexp(score: Tensor, seg: Tensor, num_segments: int) -> Tensor:
    """``log(sum(exp(score)))`` per segment, ``[S, H]`` (``-inf`` for empty segments)."""
    H = score.size(1)
    top = torch.full((num_segments, H), float("-inf"), device=score.device, dtype=score.dtype)
    top = top.scatter_reduce(0, seg.unsqueeze(-1).expand(-1, H), score.detach(), "amax")
    shifted = torch.exp(score - top[seg])
    total = torch.zeros(num_segments, H, device=score.device, dtype=score.dtype).index_add_(
        0, seg, shifted
    )
    return top + torch.log(total)


PRECISIONS = ("float32", "tf32", "bfloat16", "float16")


def _check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


@contextmanager
def _tf32_matmul():
    """CUDA matrix products in TF32 inside the block (the previous setting restored after)."""
    matmul = torch.backends.cuda.matmul
    # torch >= 2.9 names the setting fp32_precision; older torch has allow_tf32
    name, tf32 = (
        ("fp32_precision", "tf32") if hasattr(matmul, "fp32_precision") else ("allow_tf32", True)
    )
    before = getattr(matmul, name)
    setattr(matmul, name, tf32)
    try:
        yield
    finally:
        setattr(matmul, name, before)


def project(lin: nn.Linear, x: Tensor, precision: str = "float32") -> Tensor:
    """``lin(x)`` at ``precision`` (:data:`PRECISIONS`), returned in ``x``'s dtype.

    ``"tf32"`` changes only CUDA products (on the CPU it is float32); ``"bfloat16"`` and
    ``"float16"`` run the product under :func:`torch.autocast` on ``x``'s device. The weights
    stay float32, and their gradients too."""
    if precision == "float32" or (precision == "tf32" and not x.is_cuda):
        return lin(x)
    if precision == "tf32":
        with _tf32_matmul():
            return lin(x)
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float16
    with torch.autocast(x.device.type, dtype=dtype):
        out = lin(x)
    return out.to(x.dtype)


def set_projection_precision(model: nn.Module, precision: str) -> int:
    """Set the projection ``precision`` (:data:`PRECISIONS`) of every RAConv, HGAT and RAConv+
    layer in ``model``; returns how many layers it set (0: the model has none)."""
    _check_precision(precision)
    layers = [m for m in model.modules() if isinstance(m, _PyramidConv)]
    for m in layers:
        m.precision = precision
    return len(layers)


def _with_self_loops(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Drop existing self loops, add one per node."""
    keep = edge_index[0] != edge_index[1]
    loops = torch.arange(num_nodes, device=edge_index.device).repeat(2, 1)
    return torch.cat([edge_index[:, keep], loops], dim=1)


class _ResolutionAttention(nn.Module):
    r"""Resolution-level attention of H2-MIL Eq. 2 (shared by RAConv and HGAT).

    For node :math:`v` and resolution :math:`r` with neighbours :math:`\mathcal{N}_r(v)`, the
    prototype :math:`h_r` is the mean of the neighbours' transformed features and

    .. math::
        \alpha_r = \mathrm{softmax}_{r' \in R_v}\big(\beta(U_r^\top [h_v \,\|\, h_r])\big),

    with :math:`R_v` the resolutions present among :math:`v`'s neighbours (an absent resolution
    has no prototype and gets weight 0), :math:`U_r` one attention vector per resolution and
    head, and :math:`\beta` a LeakyReLU.
    """

    def __init__(self, num_levels: int, heads: int, channels: int, negative_slope: float):
        super().__init__()
        self.num_levels, self.negative_slope = num_levels, negative_slope
        self.att_self = nn.Parameter(torch.empty(num_levels, heads, channels))
        self.att_proto = nn.Parameter(torch.empty(num_levels, heads, channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _glorot(self.att_self)
        _glorot(self.att_proto)

    def forward(
        self,
        x: Tensor,
        weight: Tensor,
        src: Tensor,
        group: Tensor,
        num_nodes: int,
        extra: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """log alpha_r ``[N, R, H]`` from the input ``x`` [N, F] and the layer's ``W`` [H*C, F].

        ``group`` = dst * R + level[src] per edge. As the prototype is a mean of ``z = W x`` and
        the score is linear in it, :math:`U_r^\top h_r` is the mean over the neighbours of
        :math:`U_r^\top z_{v'}`: scalars per edge and head, so no prototype vector (and no
        ``[N, R, H, C]`` tensor) is ever formed.

        ``extra`` (``[K, H, C]``, the layer's node-level attention vectors) also returns
        :math:`a_k^\top z_v` for each, ``[N, K, H]``: every score of the layer comes from one
        product ``x @ (a^T W)``, so the backward pass forms one ``W``-sized gradient, not one
        per attention vector.
        """
        R, H = self.num_levels, self.att_self.size(1)
        W = weight.view(H, -1, weight.size(1))  # [H, C, F]
        att = [self.att_self, self.att_proto] + ([] if extra is None else [extra])
        w_all = torch.einsum("hcf,khc->fkh", W, torch.cat(att))  # [F, K', H]
        s_all = (x @ w_all.reshape(x.size(1), -1)).view(num_nodes, w_all.size(1), H)  # [N,K',H]
        s_self, s_nbr = s_all[:, :R], s_all[:, R : 2 * R]  # U_r^T z_v and U_r^T z_v', every r
        level_src = group % R
        s_proto = scatter(
            s_nbr[src, level_src], group, dim=0, dim_size=num_nodes * R, reduce="mean"
        )
        present = torch.bincount(group, minlength=num_nodes * R).view(num_nodes, R, 1) > 0
        score = s_self + s_proto.view(num_nodes, R, H)  # [N, R, H]
        score = F.leaky_relu(score, self.negative_slope).masked_fill(~present, float("-inf"))
        log_alpha = torch.log_softmax(score, dim=1)  # absent resolutions: -inf
        log_alpha = torch.nan_to_num(log_alpha, nan=float("-inf"))  # nodes without neighbours
        return log_alpha if extra is None else (log_alpha, s_all[:, 2 * R :])

    @staticmethod
    def dropout(log_alpha: Tensor, p: float, training: bool) -> Tensor:
        """Dropout of the attention weights in log space (a dropped weight becomes -inf)."""
        if not training or p == 0.0:
            return log_alpha
        keep = torch.rand_like(log_alpha) >= p
        return log_alpha.masked_fill(~keep, float("-inf")) - math.log(1.0 - p)


class _PyramidConv(nn.Module):
    """Hyper-parameters, the linear map :math:`W`, the bias and the repr shared by the
    convolutions of this module (arguments as :class:`RAConv`'s)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_levels: int = 3,
        heads: int = 1,
        concat: bool = False,
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        add_self_loops: bool = True,
        bias: bool = True,
        precision: str = "float32",
    ):
        super().__init__()
        self.precision = _check_precision(precision)
        self.in_channels, self.out_channels, self.num_levels = in_channels, out_channels, num_levels
        self.heads, self.concat, self.negative_slope = heads, concat, negative_slope
        self.dropout, self.add_self_loops = dropout, add_self_loops
        self.lin = nn.Linear(in_channels, heads * out_channels, bias=False)  # W
        self.bias = (
            nn.Parameter(torch.empty(heads * out_channels if concat else out_channels))
            if bias
            else None
        )

    def __repr__(self) -> str:
        name, heads, levels = self.__class__.__name__, self.heads, self.num_levels
        return f"{name}({self.in_channels}, {self.out_channels}, heads={heads}, levels={levels})"


class _DualAttentionConv(_PyramidConv):
    """Parameters shared by :class:`RAConv` and :class:`HGATConv` (arguments as RAConv's)."""

    def __init__(
        self, in_channels: int, out_channels: int, num_levels: int = 3, heads: int = 1, **kw
    ):
        super().__init__(in_channels, out_channels, num_levels, heads, **kw)
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_channels))
        self.att_src = nn.Parameter(torch.empty(1, heads, out_channels))
        self.resolution = _ResolutionAttention(num_levels, heads, out_channels, self.negative_slope)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _glorot(self.lin.weight)
        _glorot(self.att_dst)
        _glorot(self.att_src)
        self.resolution.reset_parameters()
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class RAConv(_DualAttentionConv):
    r"""The resolution-aware attention convolution of H2-MIL (Hou et al., AAAI 2022).

    With :math:`z = W h` (per head), resolution-level attention :math:`\alpha_r` (Eq. 2, see
    :class:`_ResolutionAttention`) and node-level attention within each resolution (Eq. 3)

    .. math::
        \alpha_{v'} = \mathrm{softmax}_{v'' \in \mathcal{N}_r(v)}
            \big(\beta(V^\top [z_v \,\|\, z_{v''}])\big)_{v'},

    the attention of :math:`v` to :math:`v' \in \mathcal{N}_r(v)` is
    :math:`\alpha_{vv'} = \alpha_r \cdot \alpha_{v'}` (Eq. 4) and the layer computes
    :math:`h'_v = \sum_{v'} \alpha_{vv'} z_{v'} + b` (Eq. 5; the activation is applied by the model).

    Choices where the paper is silent: prototypes are means of the *transformed* neighbours;
    :math:`\beta` is LeakyReLU(0.2); self loops are added (Eq. 1's :math:`\tilde{A}` includes
    them), a node's own loop counting among the neighbours of its resolution; attention
    dropout is applied to :math:`\alpha_r` (the fused edge softmax has no per-edge dropout).

    Args:
        in_channels (int): Size of each input feature.
        out_channels (int): Size of each output feature per head.
        num_levels (int): Number of resolutions (node types), e.g. 3. (default: ``3``)
        heads (int): Number of attention heads. (default: ``1``)
        concat (bool): Concatenate the heads (else average them). (default: ``False``)
        negative_slope (float): LeakyReLU slope of :math:`\beta`. (default: ``0.2``)
        dropout (float): Dropout on the resolution-level attention. (default: ``0.0``)
        add_self_loops (bool): Add a self loop to every node. (default: ``True``)
        bias (bool): Learn an additive bias. (default: ``True``)
        precision (str): Precision of the projection ``W x`` (module docstring): ``"float32"``,
            ``"tf32"``, ``"bfloat16"`` or ``"float16"``. (default: ``"float32"``)

    Shapes:
        - **input:** node features :math:`(N, F_{in})`, edge indices :math:`(2, E)`, node
          levels :math:`(N)` in ``0 .. num_levels - 1``
        - **output:** :math:`(N, H \cdot F_{out})` if ``concat`` else :math:`(N, F_{out})`
    """

    def forward(
        self, x: Tensor, edge_index: Tensor, level: Tensor, return_attention_weights: bool = False
    ) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
        z = project(self.lin, x, self.precision).view(x.size(0), self.heads, self.out_channels)
        return self.attend(x, z, edge_index, level, return_attention_weights)

    def attend(
        self,
        x: Tensor,
        z: Tensor,
        edge_index: Tensor,
        level: Tensor,
        return_attention_weights: bool = False,
    ) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
        """The layer after its shared projection ``z = W x`` ``[N, H, C]``: the two attentions
        and the weighted sum (the attention scores read ``x`` through :math:`a^\top W`, so no
        per-head score vector is formed). :meth:`forward` is ``attend(x, lin(x), ...)``; the
        benchmark times this part alone."""
        N, H, C, R = x.size(0), self.heads, self.out_channels, self.num_levels
        if self.add_self_loops:
            edge_index = _with_self_loops(edge_index, N)
        src, dst = edge_index
        group = dst * R + level[src]  # segment of each edge: (destination, source resolution)
        order = torch.argsort(group, stable=True)
        src, dst, group = src[order], dst[order], group[order]

        extra = torch.cat([self.att_dst, self.att_src])  # node level: a_dst^T z_v, a_src^T z_v'
        log_alpha, s = self.resolution(x, self.lin.weight, src, group, N, extra)  # [N, R, H]
        log_alpha = self.resolution.dropout(log_alpha, self.dropout, self.training)
        score = F.leaky_relu(s[:, 0][dst] + s[:, 1][src], self.negative_slope)  # [E, H]
        # alpha_vv' = alpha_r * softmax_{N_r(v)}(score) is itself a softmax over all of v's edges
        # of log(alpha_r) + score - logsumexp_{N_r(v)}(score): one O(E) attention over
        # destinations, with no [N * R, H, C] tensor of per-resolution outputs.
        lse = _segment_logsumexp(score, group, N * R)  # [N*R, H]
        log_w = log_alpha.reshape(N * R, H)[group].clamp(min=-1e30) + score - lse[group]
        # Without dropout the resolution weights of a node sum to 1 (or to 0 for a node without
        # neighbours, whose output is 0 anyway): nothing to rescale, and the mean over heads can
        # be taken inside the attention (no [N, H, C] output on the CPU path).
        rescale = self.training and self.dropout > 0
        if not (self.concat or rescale):
            out = segment_attention(log_w, z, src, dst, N, mean_heads=True)  # [N, C]
        else:
            out = segment_attention(log_w, z, src, dst, N)  # [N, H, C]
            if rescale:  # the total weight left after dropout
                out = out * log_alpha.exp().sum(1).unsqueeze(-1)
            out = out.reshape(N, H * C) if self.concat else out.mean(1)
        if self.bias is not None:
            out = out + self.bias
        if return_attention_weights:
            node_alpha = softmax(score, group, num_nodes=N * R)  # [E, H]
            weights = node_alpha * log_alpha.exp().view(N * R, H)[group]
            return out, (torch.stack([src, dst]), weights)
        return out


class HGATConv(_DualAttentionConv):
    r"""Heterogeneous graph attention (Hu et al., EMNLP 2019), the H2-MIL ablation "HGAT".

    Type-level attention :math:`\alpha_\tau` is computed as in RAConv (Eq. 2) with node types =
    pyramid levels; the node-level attention then uses it inside the score and normalises over
    *all* neighbours:

    .. math::
        \beta_{vv'} = \mathrm{softmax}_{v'' \in \mathcal{N}(v)}
            \big(\mathrm{LeakyReLU}(\alpha_{\tau(v'')} \, \nu^\top [z_v \,\|\, z_{v''}])\big)_{v'},
        \qquad h'_v = \sum_{v'} \beta_{vv'} z_{v'} + b.

    This is the behaviour H2-MIL contrasts RAConv with: one softmax over all neighbours lets the
    most numerous resolution dominate. Arguments and shapes as :class:`RAConv`.
    """

    @property
    def types(self) -> _ResolutionAttention:
        """The type-level attention (HGAT's name for RAConv's resolution-level attention)."""
        return self.resolution

    def forward(self, x: Tensor, edge_index: Tensor, level: Tensor) -> Tensor:
        N, H, C, R = x.size(0), self.heads, self.out_channels, self.num_levels
        if self.add_self_loops:
            edge_index = _with_self_loops(edge_index, N)
        z = project(self.lin, x, self.precision).view(N, H, C)
        group = edge_index[1] * R + level[edge_index[0]]
        order = torch.argsort(group, stable=True)  # sorted by group is sorted by destination too
        src, dst, group = edge_index[0][order], edge_index[1][order], group[order]
        extra = torch.cat([self.att_dst, self.att_src])
        log_alpha, s = self.resolution(x, self.lin.weight, src, group, N, extra)
        log_alpha = self.resolution.dropout(log_alpha, self.dropout, self.training)
        alpha_t = log_alpha.exp()  # [N, R, H]
        raw = s[:, 0][dst] + s[:, 1][src]
        score = F.leaky_relu(alpha_t.view(N * R, H)[group] * raw, self.negative_slope)
        out = segment_attention(score, z, src, dst, N)  # [N, H, C]
        out = out.reshape(N, H * C) if self.concat else out.mean(1)
        return out + self.bias if self.bias is not None else out


class RAConvPlus(_PyramidConv):
    r"""RAConv+, the hierarchical graph convolution of HIGT (Guo et al., MICCAI 2023, Sec. 2.2).

    For node :math:`j` with neighbours :math:`\mathcal{N}_k` at resolution :math:`k` (the level
    of the neighbour) and prototype :math:`h_k = \mathrm{mean}_{j' \in \mathcal{N}_k} h_{j'}`,
    HIGT Eq. 2 defines, per head,

    .. math::
        \alpha_k = \mathrm{softmax}_{k \in K_j}
            \big(a^\top \mathrm{LeakyReLU}([U h_j \,\|\, U h_k])\big), \qquad
        \alpha_{j'} = \mathrm{softmax}_{j' \in \mathcal{N}_k}
            \big(b^\top \mathrm{LeakyReLU}([V h_j \,\|\, V h_{j'}])\big),

    .. math::
        A_{jj'} = \alpha_k + \alpha_{j'} \quad (j' \in \mathcal{N}_k),

    with :math:`K_j` the resolutions present among :math:`j`'s neighbours, and Eq. 3 computes
    :math:`H' = A H W` (plus a bias; the activation :math:`\sigma` is applied by the model).
    Unlike H2-MIL's :class:`RAConv` (Eq. 4: :math:`\alpha_r \cdot \alpha_{v'}`), the two levels
    are *added*, and the LeakyReLU sits between :math:`a` and :math:`U`, :math:`b` and
    :math:`V` ("the main difference from H2-MIL").

    What the formula implies, and how it is computed:

    * The LeakyReLU acts elementwise on the concatenation, so with :math:`a = [a_1 \| a_2]`,
      :math:`a^\top \mathrm{LReLU}([u \| v]) = a_1^\top \mathrm{LReLU}(u) + a_2^\top
      \mathrm{LReLU}(v)`. In :math:`\alpha_k` the :math:`a_1` term is the same for every
      resolution of node :math:`j` and cancels in the softmax; in :math:`\alpha_{j'}` the
      :math:`b_1` term is the same for every :math:`j'` of the segment :math:`(j, k)` and
      cancels too. Hence :math:`\alpha_k = \mathrm{softmax}_k(a_2^\top \mathrm{LReLU}(U h_k))`
      depends on :math:`j` only through its prototypes, and :math:`\alpha_{j'} =
      \mathrm{softmax}_{\mathcal{N}_k}(b_2^\top \mathrm{LReLU}(V h_{j'}))` depends only on the
      neighbour :math:`j'` (normalised within :math:`j`'s segment). The layer therefore holds
      only :math:`a_2` (``att_a``) and :math:`b_2` (``att_b``): :math:`a_1, b_1` and
      :math:`U h_j, V h_j` are exactly irrelevant (the tests compare with the full formula for
      arbitrary :math:`a_1, b_1`).
    * :math:`U h_k` is a *vector* mean per (node, resolution) taken before the LeakyReLU, so it
      cannot be reduced to per-edge scalars as in RAConv. It is computed as
      :func:`~wsigraph.nn.attention.segment_attention` with all-zero scores over the segments
      ``dst * R + level[src]`` (a uniform softmax is a mean): an ``[N * R, H, C]`` tensor, no
      ``[E, H, C]`` one.
    * :math:`h'_j = \sum_{j'} A_{jj'} z_{j'}` with :math:`z = W h` is one
      :func:`~wsigraph.nn.attention.segment_attention` over destinations with log-weights
      :math:`\log A_{jj'}` (``logaddexp`` of :math:`\log \alpha_k` and :math:`s_{j'} -
      \mathrm{logsumexp}_{\mathcal{N}_k} s`), rescaled by the row sum :math:`\sum_{j'}
      A_{jj'}`. No :math:`E \times N` tensor is built.
    * The rows of :math:`A` are *not* normalised: the row sum is :math:`\sum_k \alpha_k
      |\mathcal{N}_k| + |K_j|`, so a node with many neighbours at one resolution (e.g. the
      thumbnail, linked to every mid-level patch) gets a large output. That is the paper's
      formula; the model normalises after the convolution.

    Choices where the paper is silent (as :class:`RAConv`): :math:`U, V, W` are separate
    per-head linear maps to ``out_channels``; LeakyReLU slope 0.2; self loops are added, a
    node's own loop counting among the neighbours of its own resolution; attention dropout
    drops :math:`\alpha_k` (the fused edge softmax has no per-edge dropout).

    Differences from the official code (``HKU-MedAI/HIGT``, ``modules/RAConv.py``): it applies
    the LeakyReLU *after* summing the two scalar scores (GAT style, :math:`\mathrm{LReLU}(a_1^\top
    U h_j + a_2^\top U h_k)`), so nothing cancels, i.e. not the paper's stated difference from
    H2-MIL; it uses :math:`W` as :math:`V`; it takes prototypes as means of the raw input
    features and applies :math:`U` afterwards (equal to our mean of :math:`U h` by linearity);
    and it looks up :math:`\alpha_k` per edge through an :math:`E \times N` boolean matrix. We
    follow the paper.

    Args:
        in_channels (int): Size of each input feature.
        out_channels (int): Size of each output feature per head.
        num_levels (int): Number of resolutions (node types), e.g. 3. (default: ``3``)
        heads (int): Number of attention heads. (default: ``1``)
        concat (bool): Concatenate the heads (else average them). (default: ``False``)
        negative_slope (float): LeakyReLU slope. (default: ``0.2``)
        dropout (float): Dropout on the resolution-level attention. (default: ``0.0``)
        add_self_loops (bool): Add a self loop to every node. (default: ``True``)
        bias (bool): Learn an additive bias. (default: ``True``)

    Shapes:
        - **input:** node features :math:`(N, F_{in})`, edge indices :math:`(2, E)`, node
          levels :math:`(N)` in ``0 .. num_levels - 1``
        - **output:** :math:`(N, H \cdot F_{out})` if ``concat`` else :math:`(N, F_{out})`;
          with ``return_attention_weights`` also ``(edge_index, A)``, the edges used (self
          loops included, sorted by destination) and :math:`A_{jj'}` per edge :math:`(E, H)`
    """

    def __init__(
        self, in_channels: int, out_channels: int, num_levels: int = 3, heads: int = 1, **kw
    ):
        super().__init__(in_channels, out_channels, num_levels, heads, **kw)
        self.lin_u = nn.Linear(in_channels, heads * out_channels, bias=False)  # U
        self.lin_v = nn.Linear(in_channels, heads * out_channels, bias=False)  # V
        self.att_a = nn.Parameter(torch.empty(1, heads, out_channels))  # a_2 of a = [a_1 || a_2]
        self.att_b = nn.Parameter(torch.empty(1, heads, out_channels))  # b_2 of b = [b_1 || b_2]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for t in (self.lin.weight, self.lin_u.weight, self.lin_v.weight, self.att_a, self.att_b):
            _glorot(t)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(
        self, x: Tensor, edge_index: Tensor, level: Tensor, return_attention_weights: bool = False
    ) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
        N, H, C, R = x.size(0), self.heads, self.out_channels, self.num_levels
        if self.add_self_loops:
            edge_index = _with_self_loops(edge_index, N)
        group = edge_index[1] * R + level[edge_index[0]]  # segment: (destination, resolution)
        order = torch.argsort(group, stable=True)  # sorted by group is sorted by destination too
        src, dst, group = edge_index[0][order], edge_index[1][order], group[order]

        # Resolution level (Eq. 2, alpha_k): a_2^T LReLU(U h_k), U h_k the mean of U h over N_k.
        u = project(self.lin_u, x, self.precision).view(N, H, C)  # [N, H, C]
        uniform = u.new_zeros(src.numel(), H)
        proto = segment_attention(uniform, u, src, group, N * R, assume_sorted=True)  # [N*R,H,C]
        s_res = (F.leaky_relu(proto, self.negative_slope) * self.att_a).sum(-1)  # [N*R, H]
        present = torch.bincount(group, minlength=N * R).view(N, R, 1) > 0
        s_res = s_res.view(N, R, H).masked_fill(~present, float("-inf"))
        log_alpha_k = torch.log_softmax(s_res, dim=1)  # [N, R, H]; absent resolutions: -inf
        log_alpha_k = torch.nan_to_num(log_alpha_k, nan=float("-inf"))  # nodes w/o neighbours
        log_alpha_k = _ResolutionAttention.dropout(log_alpha_k, self.dropout, self.training)
        log_alpha_k = log_alpha_k.reshape(N * R, H)[group].clamp(min=-1e30)  # [E, H]

        # Node level (Eq. 2, alpha_j'): b_2^T LReLU(V h_j'), softmax within the segment (j, k).
        v = F.leaky_relu(project(self.lin_v, x, self.precision).view(N, H, C), self.negative_slope)
        s_node = (v * self.att_b).sum(-1)[src]  # [E, H]
        log_alpha_n = s_node - _segment_logsumexp(s_node, group, N * R)[group]  # [E, H]

        # Eq. 3: h'_j = sum_j' A_jj' z_j' = (sum_j' A_jj') * softmax-weighted sum with log A.
        log_a = torch.logaddexp(log_alpha_k, log_alpha_n)  # [E, H], log(alpha_k + alpha_j')
        z = project(self.lin, x, self.precision).view(N, H, C)  # [N, H, C]
        out = segment_attention(log_a, z, src, dst, N, assume_sorted=True)  # [N, H, C]
        row_sum = torch.zeros(N, H, dtype=x.dtype, device=x.device).index_add_(0, dst, log_a.exp())
        out = out * row_sum.unsqueeze(-1)
        out = out.reshape(N, H * C) if self.concat else out.mean(1)
        if self.bias is not None:
            out = out + self.bias
        if return_attention_weights:
            return out, (torch.stack([src, dst]), log_a.exp())
        return out
