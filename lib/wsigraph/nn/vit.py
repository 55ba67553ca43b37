r"""Hierarchical Interaction ViT (HIViT) and the Fusion block of HIGT (Guo et al., "HIGT:
Hierarchical Interaction Graph-Transformer for Whole Slide Image Analysis", MICCAI 2023,
Sec. 2.3-2.4, Eq. 4-7).

After the GNN part, each slide has region tokens (its 5x nodes) and patch tokens (its 10x
nodes), every patch belonging to one region. They are batched over slides PyG-style:
``region [R, D]`` with ``region_batch [R]`` (the slide of each region), ``patch [P, D]`` with
``patch_region [P]`` (the row of ``region`` holding each patch's region) and ``num_slides``.
Counts are arbitrary and ragged: a slide may have a single region, a region may have no
patches, and the rows of a slide need not be contiguous.

* :class:`SeparableSelfAttention`: MobileViTv2's linear-cost attention (the paper's "SSA").
* :class:`MultiHeadSelfAttention`: canonical softmax attention (the "w/o SSA" ablation).
* :class:`TokenBlock`: the patch-level (PL) / region-level (RL) block.
* :class:`SqueezeExcitation`: channel SE over a set of tokens.
* :class:`HIViTBlock`, :class:`HIViT`: Eq. 4-7, one block and a stack of them.
* :class:`Fusion`: the Sec. 2.4 fusion of the thumbnail, GNN and HIViT patch tokens.

Attention runs over all the tokens of one slide (patches with patches, regions with regions);
every per-slide reduction is a ``scatter`` or :func:`torch_geometric.utils.softmax` over the
tokens, so SSA costs O(N) time and memory (only :class:`MultiHeadSelfAttention` pads). No module
depends on the order of the rows or on which other slides share the batch (exactly, with
dropout off: ``eval()`` or ``dropout=0``).

Where we differ from the official code (github.com/HKU-MedAI/HIGT), the paper is the spec: the
official block applies its squeeze-excitation over the *node* axis of a fixed size (a
``Conv2d(region_node_num, ...)``), so it only runs for one region / patch count per slide; it
implements only the region -> patch direction of the bidirectional interaction (Eq. 6 is
missing) and averages instead of adding in Eq. 5 (``(p + SE(r) r) / 2``); its Fusion
concatenates the two patch sets along the node axis instead of the channel axis.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter, softmax, to_dense_batch


def _reset(module: nn.Module) -> None:
    """Re-initialise every ``Linear`` and ``LayerNorm`` below ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.LayerNorm):
            m.reset_parameters()


class SeparableSelfAttention(nn.Module):
    r"""Separable self-attention, SSA (Mehta & Rastegari, "Separable Self-attention for Mobile
    Vision Transformers", TMLR 2023 / arXiv 2206.02680, Sec. 3.2), over the tokens of each
    segment (slide).

    Each token gets one context score, normalised over the tokens :math:`j` of its segment
    :math:`s`; the scores weight the keys into one context vector per segment, which gates the
    ReLU'd values of every token of the segment:

    .. math::
        c_i = \mathrm{softmax}_{j \in s}\big(x_j W_I\big)_i, \qquad
        \mathbf{cv}_s = \sum_{i \in s} c_i\, x_i W_K, \qquad
        y_i = \big(\mathrm{ReLU}(x_i W_V) \odot \mathbf{cv}_{s(i)}\big) W_O ,

    with :math:`W_I \in \mathbb{R}^{D \times 1}`, :math:`W_K, W_V, W_O \in \mathbb{R}^{D \times
    D}` (all with biases; :math:`W_I, W_K, W_V` are one ``Linear(D, 1 + 2D)``, as MobileViTv2's
    fused 1x1 convolution). Cost O(N D^2) time and O(N D) memory: no token pair is formed.
    Dropout (MobileViTv2's ``attn_dropout``) acts on the context scores.

    Args:
        dim (int): Token width :math:`D`.
        dropout (float): Dropout on the context scores :math:`c`. (default: ``0.0``)

    Shapes:
        - **input:** tokens :math:`(N, D)`, segment index :math:`(N)` in
          ``0 .. num_segments - 1``, ``num_segments`` :math:`S`
        - **output:** tokens :math:`(N, D)`
    """

    def __init__(self, dim: int, dropout: float = 0.0):
        super().__init__()
        self.dim, self.dropout = dim, dropout
        self.qkv = nn.Linear(dim, 1 + 2 * dim)  # [W_I | W_K | W_V]
        self.out = nn.Linear(dim, dim)  # W_O
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset(self)

    def forward(self, x: Tensor, batch: Tensor, num_segments: int) -> Tensor:
        query, key, value = self.qkv(x).split([1, self.dim, self.dim], dim=-1)  # [N, 1|D|D]
        c = softmax(query.squeeze(-1), batch, num_nodes=num_segments)  # [N]
        c = F.dropout(c, self.dropout, self.training)
        cv = scatter(c.unsqueeze(-1) * key, batch, dim=0, dim_size=num_segments)  # [S, D]
        return self.out(F.relu(value) * cv[batch])  # [N, D]

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.dim}, dropout={self.dropout})"


class MultiHeadSelfAttention(nn.Module):
    r"""Canonical multi-head softmax self-attention (Vaswani et al., NeurIPS 2017) over the tokens
    of each segment (slide): the "w/o SSA" ablation of HIGT (Table 3, "we replace the Separable
    Self Attention with a canonical transformer block").

    .. math::
        y_i = \Big\Vert_{h=1}^{H} \sum_{j \in s(i)}
            \mathrm{softmax}_{j \in s(i)}\Big(\frac{q^h_i \cdot k^h_j}{\sqrt{D/H}}\Big) v^h_j
            \; W_O , \qquad [q_i \,\|\, k_i \,\|\, v_i] = x_i W_{QKV} .

    The tokens are padded per segment with :func:`~torch_geometric.utils.to_dense_batch` and
    fed to :func:`torch.nn.functional.scaled_dot_product_attention` with a key mask; segments
    without tokens are left out of the dense batch (an all-masked row would be NaN). Memory is
    O(S L^2) for the longest segment :math:`L` on backends that form the score matrix.
    Dropout acts on the attention weights.

    Args:
        dim (int): Token width :math:`D`, a multiple of ``heads``.
        heads (int): Attention heads :math:`H`. (default: ``4``)
        dropout (float): Dropout on the attention weights. (default: ``0.0``)

    Shapes:
        - **input:** tokens :math:`(N, D)`, segment index :math:`(N)`, ``num_segments`` :math:`S`
        - **output:** tokens :math:`(N, D)`
    """

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be a multiple of heads ({heads})")
        self.dim, self.heads, self.dropout = dim, heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset(self)

    def forward(self, x: Tensor, batch: Tensor, num_segments: int) -> Tensor:
        if x.size(0) == 0:
            return self.out(x)
        order = torch.argsort(batch, stable=True)  # to_dense_batch wants sorted segments
        _, slot = torch.unique_consecutive(batch[order], return_inverse=True)  # non-empty only
        qkv, real = to_dense_batch(self.qkv(x[order]), slot)  # [S', L, 3D], [S', L]
        S, L, _ = qkv.shape
        q, k, v = qkv.view(S, L, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # [S', H, L, D/H]
        mask = None if real.all() else real[:, None, None, :]  # [S', 1, 1, L]
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )  # [S', H, L, D/H]
        a = a.transpose(1, 2).reshape(S, L, self.dim)[real]  # [N, D], sorted by segment
        return self.out(torch.empty_like(a).index_copy_(0, order, a))  # [N, D]

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.dim}, heads={self.heads}, dropout={self.dropout})"


class TokenBlock(nn.Module):
    r"""The patch-level (PL, Eq. 4) and region-level (RL, Eq. 7) block of HIGT: "a Separable
    Self Attention (SSA), 1x1 Convolution, and Layer Normalization in sequence".

    We take the precise form from MobileViTv2 (Mehta & Rastegari 2022, its ``LinearAttnFFN``
    layer), where SSA comes from: a pre-norm transformer layer whose feed-forward network is
    two 1x1 convolutions, which on a set of tokens are per-token linear layers,

    .. math::
        x &\leftarrow x + \mathrm{Drop}\big(\mathrm{Attn}(\mathrm{LN}(x))\big) \\
        x &\leftarrow x + \mathrm{Drop}\big(W_2\, \mathrm{Drop}(\mathrm{SiLU}(W_1\,
            \mathrm{LN}(x)))\big) ,

    with :math:`W_1 \in \mathbb{R}^{D \times rD}`, :math:`W_2 \in \mathbb{R}^{rD \times D}`,
    :math:`r` = ``mlp_ratio`` (MobileViTv2's ``ffn_multiplier`` 2) and SiLU (MobileViTv2's
    activation). Why this form: the paper lists the components without their wiring, the
    official HIGT code stacks MobileViTv2 ``LinearAttnFFN`` layers (pre-norm, residual, 1x1-conv
    FFN), and a pre-norm residual block keeps the identity path that lets three HIViT blocks
    train without warm-up. MobileViTv2's norms are over a fixed token grid; ours are per-token
    :class:`~torch.nn.LayerNorm` over the channels, so any token count works.

    Args:
        dim (int): Token width :math:`D`.
        attention (str): ``"ssa"`` (:class:`SeparableSelfAttention`, the paper) or ``"mhsa"``
            (:class:`MultiHeadSelfAttention`, "w/o SSA"). (default: ``"ssa"``)
        heads (int): Heads of ``"mhsa"``; unused by ``"ssa"``. (default: ``4``)
        mlp_ratio (float): Hidden width of the FFN over :math:`D`. (default: ``2.0``)
        dropout (float): Dropout in the attention, the FFN and on both residual branches.
            (default: ``0.0``)

    Shapes:
        - **input:** tokens :math:`(N, D)`, segment index :math:`(N)`, ``num_segments`` :math:`S`
        - **output:** tokens :math:`(N, D)`
    """

    def __init__(
        self,
        dim: int,
        attention: str = "ssa",
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        if attention not in ("ssa", "mhsa"):
            raise ValueError(f"attention must be 'ssa' or 'mhsa', got {attention!r}")
        self.dim, self.attention, self.heads = dim, attention, heads
        self.mlp_ratio, self.dropout = mlp_ratio, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        if attention == "ssa":
            self.attn = SeparableSelfAttention(dim, dropout)
        else:
            self.attn = MultiHeadSelfAttention(dim, heads, dropout)
        hidden = max(1, int(dim * mlp_ratio))
        self.ffn = nn.Sequential(
            nn.Linear(dim, hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )
        self.drop = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset(self)

    def forward(self, x: Tensor, batch: Tensor, num_segments: int) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x), batch, num_segments))  # [N, D]
        return x + self.drop(self.ffn(self.norm2(x)))  # [N, D]

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.dim}, attention={self.attention!r}, "
            f"mlp_ratio={self.mlp_ratio})"
        )


class SqueezeExcitation(nn.Module):
    r"""Squeeze-and-excitation (Hu, Shen & Sun, "Squeeze-and-Excitation Networks", CVPR 2018)
    on sets of tokens: channel gates per segment.

    The squeeze is the mean of the segment's tokens (the set analogue of global average
    pooling), the excitation a bottleneck MLP:

    .. math::
        z_s = \frac{1}{|s|} \sum_{i \in s} x_i , \qquad
        g_s = \sigma\big(W_2\, \mathrm{ReLU}(W_1 z_s + b_1) + b_2\big) \in (0, 1)^D ,

    :math:`W_1 \in \mathbb{R}^{D/r \times D}`, :math:`W_2 \in \mathbb{R}^{D \times D/r}`. The
    module returns each token's segment gates :math:`g_{s(i)}`, so callers write
    ``se(x, segment, S) * x`` for HIGT's :math:`\mathrm{SE}(X) \cdot X`. Gates are over the
    :math:`D` channels and the squeeze is a mean, so any number of tokens per segment works: the
    official HIGT code squeezes over the *node* axis with a ``Conv2d`` sized for a fixed node
    count, which is why it fails for other region / patch counts. Choice: the logistic sigmoid
    of Hu et al. rather than the hard sigmoid of MobileNetV3 used by the official code: gates
    stay strictly in (0, 1) and the gradient never vanishes exactly. A segment without tokens
    gets the gates of a zero squeeze (it has no token to gate).

    Args:
        dim (int): Token width :math:`D`.
        reduction (int): Bottleneck ratio :math:`r`; the hidden width is
            ``max(1, dim // reduction)``. (default: ``4``)

    Shapes:
        - **input:** tokens :math:`(N, D)`, segment index :math:`(N)`, ``num_segments`` :math:`S`
        - **output:** per-token gates :math:`(N, D)` (equal within a segment)
    """

    def __init__(self, dim: int, reduction: int = 4):
        super().__init__()
        self.dim, self.reduction = dim, reduction
        hidden = max(1, dim // reduction)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset(self)

    def forward(self, x: Tensor, segment: Tensor, num_segments: int) -> Tensor:
        z = scatter(x, segment, dim=0, dim_size=num_segments, reduce="mean")  # [S, D]
        g = torch.sigmoid(self.fc2(F.relu(self.fc1(z))))  # [S, D]
        return g[segment]  # [N, D]

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.dim}, reduction={self.reduction})"


class HIViTBlock(nn.Module):
    r"""One Hierarchical Interaction ViT block of HIGT (Guo et al., MICCAI 2023, Sec. 2.3,
    Eq. 4-7): a patch-level block, the bidirectional interaction and a region-level block.

    With :math:`P_i` the patch tokens of region :math:`i` and :math:`R` the region tokens:

    .. math::
        \hat P &= \mathrm{PL}(P) && \text{(Eq. 4)} \\
        R' &= \mathrm{SE}_R(R) \cdot R , \qquad
            p^{l+1}_{i,k} = \hat p_{i,k} + r'_i && \text{(Eq. 5, region} \to \text{patch)} \\
        \bar P_i &= \mathrm{MEAN}(\hat P_i) , \qquad
            \hat R = \mathrm{SE}_P(\bar P) \cdot \bar P + R && \text{(Eq. 6, patch}
            \to \text{region)} \\
        R^{l+1} &= \mathrm{RL}(\hat R) && \text{(Eq. 7)}

    PL and RL are :class:`TokenBlock` s attending over all the patch (resp. region) tokens of
    each slide; :math:`\mathrm{SE}_R, \mathrm{SE}_P` are two :class:`SqueezeExcitation`
    modules whose squeeze runs over the slide's regions (:math:`R`, resp. :math:`\bar P`), so
    the gates are per slide and channel. As the paper writes, Eq. 6 averages :math:`\hat P`,
    the PL output before Eq. 5 adds the region tokens. A region without patches has
    :math:`\bar P_i = 0`, so :math:`\hat r_i = r_i`, and it is left out of the squeeze of
    :math:`\mathrm{SE}_P` (its zero is not a patch mean). With ``bidirectional=False`` (Table 3,
    "w/o BI": "just one direction from region-level to patch-level") Eq. 6 is skipped,
    :math:`\hat R = R`, and :math:`\mathrm{SE}_P` is not built; the regions then never see the
    patches. With ``update_regions=False`` Eq. 6-7 are skipped and the regions are returned
    unchanged: for the last block of a model that reads only the patch tokens (HIGT's fusion),
    whose region path would otherwise hold parameters that never get a gradient.

    Args:
        dim (int): Token width :math:`D`.
        attention (str): ``"ssa"`` or ``"mhsa"`` in PL and RL ("w/o SSA"). (default: ``"ssa"``)
        bidirectional (bool): Include Eq. 6. (default: ``True``)
        heads (int): Heads of ``"mhsa"``. (default: ``4``)
        mlp_ratio (float): FFN width ratio of PL and RL. (default: ``2.0``)
        dropout (float): Dropout in PL and RL. (default: ``0.0``)
        update_regions (bool): Compute Eq. 6-7 (else return the regions as given).
            (default: ``True``)

    Shapes:
        - **input:** region tokens :math:`(R, D)`, their slide :math:`(R)`, patch tokens
          :math:`(P, D)`, their region's row :math:`(P)`, ``num_slides`` :math:`B`
        - **output:** region tokens :math:`(R, D)`, patch tokens :math:`(P, D)`
    """

    def __init__(
        self,
        dim: int,
        attention: str = "ssa",
        bidirectional: bool = True,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        update_regions: bool = True,
    ):
        super().__init__()
        self.dim, self.attention, self.bidirectional = dim, attention, bidirectional
        self.heads, self.mlp_ratio, self.dropout = heads, mlp_ratio, dropout
        self.update_regions = update_regions
        self.pl = TokenBlock(dim, attention, heads, mlp_ratio, dropout)
        self.rl = TokenBlock(dim, attention, heads, mlp_ratio, dropout) if update_regions else None
        self.se_region = SqueezeExcitation(dim)  # Eq. 5
        self.se_patch = (
            SqueezeExcitation(dim) if bidirectional and update_regions else None
        )  # Eq. 6
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset(self)

    def forward(
        self,
        region: Tensor,
        region_batch: Tensor,
        patch: Tensor,
        patch_region: Tensor,
        num_slides: int,
    ) -> tuple[Tensor, Tensor]:
        R = region.size(0)
        patch_hat = self.pl(patch, region_batch[patch_region], num_slides)  # [P, D], Eq. 4
        region_gated = self.se_region(region, region_batch, num_slides) * region  # [R, D]
        patch_next = patch_hat + region_gated[patch_region]  # [P, D], Eq. 5
        if self.rl is None:
            return region, patch_next
        region_hat = region
        if self.se_patch is not None:  # Eq. 6
            patch_mean = scatter(patch_hat, patch_region, dim=0, dim_size=R, reduce="mean")
            filled = torch.bincount(patch_region, minlength=R) > 0  # [R]
            rows = filled.nonzero().squeeze(-1)  # [R'] regions with patches
            gates = self.se_patch(patch_mean[rows], region_batch[rows], num_slides)  # [R', D]
            region_hat = region.index_add(0, rows, gates * patch_mean[rows])  # [R, D]
        return self.rl(region_hat, region_batch, num_slides), patch_next  # Eq. 7

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.dim}, attention={self.attention!r}, "
            f"bidirectional={self.bidirectional})"
        )


class HIViT(nn.Module):
    r"""Hierarchical Interaction ViT of HIGT (Guo et al., MICCAI 2023, Sec. 2.3): ``depth``
    :class:`HIViTBlock` s (Eq. 4-7) in sequence, :math:`l = 1 \dots L`; the official code uses
    :math:`L = 3`.

    Args:
        dim (int): Token width :math:`D`.
        depth (int): Number of blocks :math:`L`. (default: ``3``)
        return_regions (bool): Update the regions in the last block too; ``False`` returns
            the regions the last block received (for models that read only the patch tokens).
            (default: ``True``)
        **block_kwargs: ``attention``, ``bidirectional``, ``heads``, ``mlp_ratio``, ``dropout``
            of every :class:`HIViTBlock` (defaults as there).

    Shapes:
        - **input:** region tokens :math:`(R, D)`, their slide :math:`(R)`, patch tokens
          :math:`(P, D)`, their region's row :math:`(P)`, ``num_slides`` :math:`B`
        - **output:** region tokens :math:`(R, D)`, patch tokens :math:`(P, D)`
    """

    def __init__(self, dim: int, depth: int = 3, return_regions: bool = True, **block_kwargs):
        super().__init__()
        self.dim, self.depth, self.block_kwargs = dim, depth, block_kwargs
        self.return_regions = return_regions
        self.blocks = nn.ModuleList(
            HIViTBlock(dim, **block_kwargs, update_regions=return_regions or i < depth - 1)
            for i in range(depth)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset(self)

    def forward(
        self,
        region: Tensor,
        region_batch: Tensor,
        patch: Tensor,
        patch_region: Tensor,
        num_slides: int,
    ) -> tuple[Tensor, Tensor]:
        for block in self.blocks:
            region, patch = block(region, region_batch, patch, patch_region, num_slides)
        return region, patch

    def __repr__(self) -> str:
        kwargs = "".join(f", {k}={v!r}" for k, v in self.block_kwargs.items())
        return f"{self.__class__.__name__}({self.dim}, depth={self.depth}{kwargs})"


class Fusion(nn.Module):
    r"""The Fusion block of HIGT (Guo et al., MICCAI 2023, Sec. 2.4): "element-wise summation to
    fuse the coarse-grained thumbnail feature and patch-level features from the Hierarchical
    Interaction GNN part, and then further fuse the fine-grained patch-level features from the
    HIViT part with a concatenation operation. Finally, a 1x1 convolution":

    .. math::
        \ell_k = \mathrm{LN}\big(p^{\mathrm{GNN}}_k + t_{b(k)}\big), \qquad
        y_k = \mathrm{ReLU}\Big(\mathrm{LN}\big(W\,[\ell_k \,\|\, p^{\mathrm{ViT}}_k]\big)\Big) ,

    :math:`t_b` the thumbnail token of slide :math:`b`, :math:`W \in \mathbb{R}^{D \times 2D}`
    the 1x1 convolution (a linear layer on each token, no bias as in the official code). The
    mean over the slide's patches and the final linear projection belong to the model.

    Choices: the official ``Fusion_Block`` is Conv1x1 -> BatchNorm -> ReLU; we keep the order
    and replace BatchNorm by a per-token LayerNorm so a slide's output does not depend on the
    other slides of the batch nor on train / eval mode; the first LayerNorm puts the summed
    GNN + thumbnail tokens on the scale of the HIViT tokens before concatenating.

    The official code (``modules/Fusion.py``, ``HiGT.py``) concatenates the two patch sets along
    the *token* axis (``torch.cat(..., dim=0)``, :math:`2P` tokens) and feeds them to a
    ``Conv2d(2P, 4 \cdot 2P, 1)`` as its *channels*, over a ``1 x D`` "image": each output is,
    feature by feature, a learnt mix of the :math:`2P` tokens, so the block mixes tokens per
    feature and never mixes features. That is why it needs a fixed token count
    (:math:`2P = 2 \cdot 5 \cdot 4 = 40`). We mix features per token instead, as the paper's
    wording ("fuse ... with a concatenation", "a 1x1 convolution" over the fused features)
    reads, which works for any number of patches. The output width is :math:`D`.

    Args:
        dim (int): Token width :math:`D`.

    Shapes:
        - **input:** thumbnail tokens :math:`(B, D)`, GNN patch tokens :math:`(P, D)`, HIViT
          patch tokens :math:`(P, D)`, the slide of each patch :math:`(P)`
        - **output:** fused patch tokens :math:`(P, D)`
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.norm_local = nn.LayerNorm(dim)
        self.conv = nn.Linear(2 * dim, dim, bias=False)  # the 1x1 convolution
        self.norm = nn.LayerNorm(dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset(self)

    def forward(
        self, thumbnail: Tensor, patch_gnn: Tensor, patch_vit: Tensor, patch_batch: Tensor
    ) -> Tensor:
        local = self.norm_local(patch_gnn + thumbnail[patch_batch])  # [P, D]
        fused = self.conv(torch.cat([local, patch_vit], dim=-1))  # [P, D]
        return F.relu(self.norm(fused))  # [P, D]

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.dim})"
