r"""Resolution-aware attention convolutions on the pyramid graph: RAConv (H2-MIL) and HGAT.

Both are dual-level attentions over a heterogeneous graph whose node *types* are pyramid
levels (resolutions). They differ in how the two levels combine:

* :class:`RAConv` (H2-MIL Eq. 2-4): the node-level softmax runs *within* each resolution's
  neighbours, then the resolution-level attention re-weights the resolutions, so a resolution
  with few neighbours (e.g. the single thumbnail node) is not drowned by one with many.
* :class:`HGATConv` (Hu et al., EMNLP 2019, "HGAT"; the H2-MIL ablation): the type-level
  attention scales the node-level scores, and the softmax runs over *all* neighbours at once.

Both run on :func:`wsigraph.nn.attention.segment_attention` (O(E) memory, a fused Triton kernel
on CUDA), never on an E x N matrix as the official code does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter, softmax

from wsigraph.nn.attention import segment_attention


def _glorot(t: Tensor) -> None:
    bound = math.sqrt(6.0 / (t.size(-2) + t.size(-1)))
    nn.init.uniform_(t, -bound, bound)


def _score(x: Tensor, weight: Tensor, att: Tensor) -> Tensor:
    """Per-head :math:`a^\top W x`, ``[N, H]``, as ``x @ (a^T W)``: no ``[N, H, C]`` temporary."""
    H = att.size(1)
    return x @ torch.einsum("hcf,hc->fh", weight.view(H, -1, weight.size(1)), att[0])


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
        self, x: Tensor, weight: Tensor, src: Tensor, group: Tensor, num_nodes: int
    ) -> Tensor:
        """log alpha_r ``[N, R, H]`` from the input ``x`` [N, F] and the layer's ``W`` [H*C, F].

        ``group`` = dst * R + level[src] per edge. As the prototype is a mean of ``z = W x`` and
        the score is linear in it, :math:`U_r^\top h_r` is the mean over the neighbours of
        :math:`U_r^\top z_{v'}`: scalars per edge and head, so no prototype vector (and no
        ``[N, R, H, C]`` tensor) is ever formed.
        """
        R, H = self.num_levels, self.att_self.size(1)
        W = weight.view(H, -1, weight.size(1))  # [H, C, F]
        w_self = torch.einsum("hcf,rhc->frh", W, self.att_self).reshape(x.size(1), R * H)
        w_proto = torch.einsum("hcf,rhc->frh", W, self.att_proto).reshape(x.size(1), R * H)
        s_self = (x @ w_self).view(num_nodes, R, H)  # U_r^T z_v, for every r
        s_nbr = (x @ w_proto).view(num_nodes, R, H)  # U_r^T z_v', for every r
        level_src = group % R
        s_proto = scatter(
            s_nbr[src, level_src], group, dim=0, dim_size=num_nodes * R, reduce="mean"
        )
        present = torch.bincount(group, minlength=num_nodes * R).view(num_nodes, R, 1) > 0
        score = s_self + s_proto.view(num_nodes, R, H)  # [N, R, H]
        score = F.leaky_relu(score, self.negative_slope).masked_fill(~present, float("-inf"))
        log_alpha = torch.log_softmax(score, dim=1)  # absent resolutions: -inf
        return torch.nan_to_num(log_alpha, nan=float("-inf"))  # nodes without neighbours

    @staticmethod
    def dropout(log_alpha: Tensor, p: float, training: bool) -> Tensor:
        """Dropout of the attention weights in log space (a dropped weight becomes -inf)."""
        if not training or p == 0.0:
            return log_alpha
        keep = torch.rand_like(log_alpha) >= p
        return log_alpha.masked_fill(~keep, float("-inf")) - math.log(1.0 - p)


class _DualAttentionConv(nn.Module):
    """Parameters shared by :class:`RAConv` and :class:`HGATConv` (arguments as RAConv's)."""

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
    ):
        super().__init__()
        self.in_channels, self.out_channels, self.num_levels = in_channels, out_channels, num_levels
        self.heads, self.concat, self.negative_slope = heads, concat, negative_slope
        self.dropout, self.add_self_loops = dropout, add_self_loops
        self.lin = nn.Linear(in_channels, heads * out_channels, bias=False)
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_channels))
        self.att_src = nn.Parameter(torch.empty(1, heads, out_channels))
        self.resolution = _ResolutionAttention(num_levels, heads, out_channels, negative_slope)
        self.bias = (
            nn.Parameter(torch.empty(heads * out_channels if concat else out_channels))
            if bias
            else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _glorot(self.lin.weight)
        _glorot(self.att_dst)
        _glorot(self.att_src)
        self.resolution.reset_parameters()
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def __repr__(self) -> str:
        name, heads, levels = self.__class__.__name__, self.heads, self.num_levels
        return f"{name}({self.in_channels}, {self.out_channels}, heads={heads}, levels={levels})"


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

    Shapes:
        - **input:** node features :math:`(N, F_{in})`, edge indices :math:`(2, E)`, node
          levels :math:`(N)` in ``0 .. num_levels - 1``
        - **output:** :math:`(N, H \cdot F_{out})` if ``concat`` else :math:`(N, F_{out})`
    """

    def forward(
        self, x: Tensor, edge_index: Tensor, level: Tensor, return_attention_weights: bool = False
    ) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
        N, H, C, R = x.size(0), self.heads, self.out_channels, self.num_levels
        if self.add_self_loops:
            edge_index = _with_self_loops(edge_index, N)
        z = self.lin(x).view(N, H, C)  # [N, H, C]
        src, dst = edge_index
        group = dst * R + level[src]  # segment of each edge: (destination, source resolution)
        order = torch.argsort(group, stable=True)
        src, dst, group = src[order], dst[order], group[order]

        log_alpha = self.resolution(x, self.lin.weight, src, group, N)  # [N, R, H]
        log_alpha = self.resolution.dropout(log_alpha, self.dropout, self.training)
        score = F.leaky_relu(
            _score(x, self.lin.weight, self.att_dst)[dst]
            + _score(x, self.lin.weight, self.att_src)[src],
            self.negative_slope,
        )  # [E, H]
        # alpha_vv' = alpha_r * softmax_{N_r(v)}(score) is itself a softmax over all of v's edges
        # of log(alpha_r) + score - logsumexp_{N_r(v)}(score): one O(E) attention over
        # destinations, with no [N * R, H, C] tensor of per-resolution outputs.
        lse = _segment_logsumexp(score, group, N * R)  # [N*R, H]
        log_w = log_alpha.reshape(N * R, H)[group].clamp(min=-1e30) + score - lse[group]
        out = segment_attention(log_w, z, src, dst, N)  # [N, H, C]
        out = out * log_alpha.exp().sum(1).unsqueeze(-1)  # total weight: 1 without dropout
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
        z = self.lin(x).view(N, H, C)
        group = edge_index[1] * R + level[edge_index[0]]
        order = torch.argsort(group, stable=True)  # sorted by group is sorted by destination too
        src, dst, group = edge_index[0][order], edge_index[1][order], group[order]
        log_alpha = self.resolution.dropout(
            self.resolution(x, self.lin.weight, src, group, N), self.dropout, self.training
        )
        alpha_t = log_alpha.exp()  # [N, R, H]
        raw = (
            _score(x, self.lin.weight, self.att_dst)[dst]
            + _score(x, self.lin.weight, self.att_src)[src]
        )
        score = F.leaky_relu(alpha_t.view(N * R, H)[group] * raw, self.negative_slope)
        out = segment_attention(score, z, src, dst, N)  # [N, H, C]
        out = out.reshape(N, H * C) if self.concat else out.mean(1)
        return out + self.bias if self.bias is not None else out
