r"""Multi-resolution MIL baselines on :class:`~wsigraph.nn.ihpool.Pyramid` batches.

Every module takes a :class:`~wsigraph.nn.ihpool.Pyramid` (level 0 = one thumbnail node per
slide, level 1 = 5x patches, level 2 = 10x patches, ``parent`` = the containing patch one
level coarser) and follows the training protocol of :mod:`wsigraph.nn.mil`: ``outputs(p)``
returns a dict with ``"logits"`` ``[B, C]`` and the method's auxiliary streams,
``loss(outputs, y, weight=None)`` is the method's training loss and ``forward(p)`` returns the
logits.

* :class:`MSDAMIL`: multi-scale domain-adversarial MIL (Hashimoto et al., CVPR 2020).
* :class:`PTreeNet`: pathologist-tree network (Chen et al., AAAI 2021).
* :class:`HIPT`: hierarchical image pyramid transformer (Chen et al., CVPR 2022).
* :func:`multiscale_concat`: DS-MIL's multi-scale feature concatenation (Li et al., CVPR 2021),
  to feed :class:`~wsigraph.nn.mil.DSMIL` or any flat-bag module.

We run every method on frozen pre-computed patch features: we use the same patch feature
extractor for all methods, so where an original trains a CNN end to end, an MLP on the features
takes its place. Per-slide reductions are ``scatter`` / :func:`torch_geometric.utils.softmax`
over the nodes (memory O(N)); only :class:`HIPT` pads, for its transformers. The invariances
(node order, batching) hold in ``eval()`` mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter, softmax, to_dense_batch

from wsigraph.nn.ihpool import Pyramid
from wsigraph.nn.mil import _MIL, Hidden, _mlp


def multiscale_concat(p: Pyramid, level: int) -> tuple[Tensor, Tensor]:
    r"""Each node of ``level`` with its ancestors' features appended, thumbnail excluded.

    DS-MIL's multi-scale input (Li, Li & Eliceiri, CVPR 2021): each 20x patch's feature vector
    is concatenated with that of the 5x patch containing it, so a flat-bag MIL model sees both
    magnifications. On a pyramid, the node :math:`v` of level :math:`\ell \ge 1` becomes

    .. math::
        [x_v \,\|\, x_{\pi(v)} \,\|\, \dots \,\|\, x_{\pi^{\ell-1}(v)}] \in \mathbb{R}^{\ell F},

    :math:`\pi` being the parent, from the node itself (finest) to its level-1 ancestor
    (coarsest); the thumbnail (level 0) is left out. ``level=1`` returns the level-1 features
    unchanged. Use it as ``DSMIL(2 * F)(*multiscale_concat(p, 2), p.num_graphs)``.

    Args:
        p (Pyramid): The pyramids.
        level (int): The level whose nodes become the instances, at least ``1``.

    Returns:
        (Tensor, Tensor): the instances ``[N_level, level * F]`` (in node-index order) and
        their slide index ``[N_level]``.
    """
    if level < 1:
        raise ValueError(f"level must be >= 1 (level 0 is the thumbnail), got {level}")
    nodes = torch.nonzero(p.level == level).view(-1)  # [M]
    parts, ancestor = [p.x[nodes]], nodes
    for _ in range(level - 1):
        ancestor = p.parent[ancestor]
        parts.append(p.x[ancestor])
    return torch.cat(parts, dim=-1), p.batch[nodes]  # [M, level * F], [M]


class _GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient is multiplied by ``-lambda_`` on the way back."""

    @staticmethod
    def forward(ctx, x: Tensor, lambda_: float) -> Tensor:
        ctx.lambda_ = lambda_
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.lambda_ * grad, None


def grad_reverse(x: Tensor, lambda_: float = 1.0) -> Tensor:
    r"""The gradient reversal layer :math:`R_\lambda` of Ganin & Lempitsky (ICML 2015):
    :math:`R_\lambda(x) = x` forward, :math:`\partial R_\lambda / \partial x = -\lambda I`
    backward."""
    return _GradientReversal.apply(x, lambda_)


class MSDAMIL(_MIL):
    r"""Multi-scale domain-adversarial MIL, MS-DA-MIL (Hashimoto et al., "Multi-scale
    Domain-adversarial Multiple-instance CNN for Cancer Subtype Classification with Unannotated
    Histopathological Images", CVPR 2020).

    Each scale :math:`s` (pyramid level :math:`1 \dots S`) has its own feature extractor
    :math:`f_s` and attention MIL pooling (Ilse et al.) over the bag's patches of that scale:

    .. math::
        h_k = f_s(x_k), \qquad
        a_k = \mathrm{softmax}_{k \in \mathcal{B}_s}\big(w_s^\top \tanh(V_s h_k)\big), \qquad
        z_s = \sum_{k \in \mathcal{B}_s} a_k h_k .

    The multi-scale attention weighs the scale embeddings and a linear classifier reads the bag:

    .. math::
        \beta_s = \mathrm{softmax}_s\big(u^\top \tanh(U z_s)\big), \qquad
        z = \sum_s \beta_s z_s, \qquad \mathrm{logits} = W z + b .

    A domain classifier :math:`g_s` per scale reads every instance embedding through a gradient
    reversal layer :math:`R_\lambda` (:func:`grad_reverse`), and the training loss is

    .. math::
        \mathcal{L} = \mathrm{CE}(\mathrm{logits}, y)
        + \gamma\, \mathrm{CE}\big(g_s(R_\lambda(h_k)), d_k\big),

    the second term averaged over all instances of all scales: the domain head learns to tell
    the domains apart while the reversed gradient drives the feature extractors to make them
    indistinguishable.

    Choices: MS-DA-MIL treats staining differences among WSIs (and hospitals); we define each
    WSI as its own domain, made batch-local: the domain label :math:`d_k` of an instance is the
    index of its bag within the current mini-batch, modulo ``max_domains`` (the head has
    ``max_domains`` output units). With a single bag in the batch the domain term is constant,
    so :meth:`loss` skips it. The original trains a CNN per magnification end to end on
    patches; we use the same patch feature extractor for all methods, and :math:`f_s` is an MLP
    on the frozen features. The paper trains the single-scale networks first and the
    multi-scale attention afterwards; we train all parts jointly in one stage. A bag with no
    patch at some scale leaves that scale out of the multi-scale softmax (a thumbnail-only slide
    has a zero embedding); the thumbnail itself is not used, nor levels deeper than ``S``. The
    domain head is an MLP with one hidden ReLU layer; :math:`\lambda = 0.1` by default (fixed;
    DANN's schedule ramps it from 0 to 1).

    Args:
        in_dim (int): Patch feature size :math:`F`.
        n_classes (int): Number of bag classes. (default: ``2``)
        hidden (tuple[int, ...]): Widths of each scale's ReLU MLP :math:`f_s`.
            (default: ``(256, 128)``)
        dropout (float): Dropout after each MLP layer. (default: ``0.0``)
        attention_dim (int): Rows of :math:`V_s` and :math:`U`. (default: ``64``)
        num_levels (int): Number of scales :math:`S`, pyramid levels ``1 .. S``. (default: ``2``)
        max_domains (int): Output units of the domain classifier. (default: ``16``)
        domain_weight (float): Weight :math:`\gamma` of the domain loss. (default: ``1.0``)
        grl_lambda (float): Gradient reversal factor :math:`\lambda`. (default: ``0.1``)
        domain_hidden (int): Hidden width of the domain classifier. (default: ``64``)

    Shapes:
        - **input:** a :class:`~wsigraph.nn.ihpool.Pyramid` of :math:`B` slides, :math:`N` nodes
        - **output:** bag logits :math:`(B, C)`
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int = 2,
        hidden: Hidden = (256, 128),
        dropout: float = 0.0,
        attention_dim: int = 64,
        num_levels: int = 2,
        max_domains: int = 16,
        domain_weight: float = 1.0,
        grl_lambda: float = 0.1,
        domain_hidden: int = 64,
    ):
        super().__init__()
        self.in_dim, self.n_classes, self.hidden, self.dropout = in_dim, n_classes, hidden, dropout
        self.attention_dim, self.num_levels = attention_dim, num_levels
        self.max_domains, self.domain_hidden = max_domains, domain_hidden
        self.domain_weight, self.grl_lambda = domain_weight, grl_lambda
        dim = hidden[-1] if hidden else in_dim
        S = range(num_levels)
        self.embed = nn.ModuleList(_mlp(in_dim, hidden, dropout) for _ in S)
        self.attention_V = nn.ModuleList(nn.Linear(dim, attention_dim) for _ in S)
        self.attention_w = nn.ModuleList(nn.Linear(attention_dim, 1, bias=False) for _ in S)
        self.scale_U = nn.Linear(dim, attention_dim)
        self.scale_u = nn.Linear(attention_dim, 1, bias=False)
        self.classifier = nn.Linear(dim, n_classes)
        self.domain = nn.ModuleList(
            nn.Sequential(
                nn.Linear(dim, domain_hidden), nn.ReLU(), nn.Linear(domain_hidden, max_domains)
            )
            for _ in S
        )
        self.reset_parameters()

    def outputs(self, p: Pyramid) -> dict[str, Tensor]:
        """``logits`` ``[B, C]``; ``scale_attention`` ``[B, S]`` (sums to 1 per bag);
        ``attention`` ``[N]`` (each instance's weight within its bag and scale, 0 for the
        thumbnail and unused levels); ``domain_logits`` ``[M, max_domains]`` and
        ``domain_labels`` ``[M]`` for the ``M`` instances of levels ``1 .. S``."""
        B = p.num_graphs
        attention = p.x.new_zeros(p.num_nodes)  # [N]
        scales, present, domain_logits, domain_labels = [], [], [], []
        for s in range(self.num_levels):
            nodes = torch.nonzero(p.level == s + 1).view(-1)  # [N_s]
            bag = p.batch[nodes]
            h = self.embed[s](p.x[nodes])  # [N_s, D]
            e = self.attention_w[s](torch.tanh(self.attention_V[s](h))).squeeze(-1)  # [N_s]
            a = softmax(e, bag, num_nodes=B)
            scales.append(scatter(a.unsqueeze(-1) * h, bag, dim=0, dim_size=B, reduce="sum"))
            present.append(torch.bincount(bag, minlength=B) > 0)
            attention = attention.index_copy(0, nodes, a)
            domain_logits.append(self.domain[s](grad_reverse(h, self.grl_lambda)))
            domain_labels.append(bag % self.max_domains)
        z = torch.stack(scales, dim=1)  # [B, S, D]
        has = torch.stack(present, dim=1)  # [B, S]
        e = self.scale_u(torch.tanh(self.scale_U(z))).squeeze(-1)  # [B, S]
        # A missing scale is left out; a bag missing all scales keeps them all (its z is 0).
        e = e.masked_fill(~has & has.any(dim=1, keepdim=True), float("-inf"))
        beta = torch.softmax(e, dim=1)  # [B, S]
        logits = self.classifier((beta.unsqueeze(-1) * z).sum(1))  # [B, C]
        return dict(
            logits=logits,
            scale_attention=beta,
            attention=attention,
            domain_logits=torch.cat(domain_logits),
            domain_labels=torch.cat(domain_labels),
        )

    def forward(self, p: Pyramid) -> Tensor:
        return self.outputs(p)["logits"]

    def loss(self, outputs: dict[str, Tensor], y: Tensor, weight: Tensor | None = None) -> Tensor:
        """``CE(logits, y) + domain_weight * CE(domain_logits, domain_labels)``; the domain term
        only with two bags or more (``weight`` applies to the class term)."""
        loss = F.cross_entropy(outputs["logits"], y, weight=weight)
        labels = outputs["domain_labels"]
        if outputs["logits"].size(0) > 1 and labels.numel() and self.domain_weight:
            loss = loss + self.domain_weight * F.cross_entropy(outputs["domain_logits"], labels)
        return loss

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", num_levels={self.num_levels})"


def _top_k_per_group(score: Tensor, group: Tensor, num_groups: int, k: int) -> Tensor:
    """Positions of the ``k`` largest scores of each group (all of a smaller group), grouped in
    group order, descending within; ties go to the lower position."""
    order = torch.argsort(score, descending=True, stable=True)
    order = order[torch.argsort(group[order], stable=True)]  # by group, then score descending
    count = torch.bincount(group, minlength=num_groups)
    start = torch.cumsum(count, 0) - count
    rank = torch.arange(order.numel(), device=score.device) - start[group[order]]
    return order[rank < k]


class PTreeNet(_MIL):
    r"""Pathologist-tree network, PTree-Net (Chen et al., "Diagnose Like a Pathologist:
    Weakly-Supervised Pathologist-Tree Network for Slide-Level Immunohistochemical Scoring",
    AAAI 2021).

    A focal-aware step picks diagnosis-related level-1 patches from an attention conditioned on
    the thumbnail :math:`t`, then the selected patches and everything under them form a tree
    that a relevance-enhanced graph network reads bottom-up. With node embeddings
    :math:`h_v = f(x_v)` (an MLP), each level-1 patch :math:`i` of a slide scores

    .. math::
        s_i = w^\top \tanh\big(V [h_i \,\|\, h_t]\big),

    the top ``n_select`` patches per slide are selected (all of them if the slide has fewer;
    ranks on detached scores, ties to the lower node index) and get the selection weights
    :math:`\alpha_i = \mathrm{softmax}_{i \in \mathrm{sel}}(s_i)`. The tree of a slide is its
    thumbnail (root), the selected level-1 patches and all their descendants at deeper levels.
    Then :math:`R` synchronous rounds of relevance-enhanced message passing, child
    :math:`u` to parent :math:`v`, update every tree node:

    .. math::
        \rho_u^{(r)} = \sigma\big(a_r^\top [g_u^{(r)} \,\|\, g_v^{(r)}] + c_r\big), \qquad
        g_v^{(r+1)} = \mathrm{ReLU}\Big(W_r g_v^{(r)}
            + \sum_{u \in \mathcal{C}(v)} \omega_u\, \rho_u^{(r)}\, M_r g_u^{(r)}\Big),

    from :math:`g^{(0)} = h`, with :math:`\omega_u = \alpha_u` for the children of the root (the
    selected patches) and :math:`\omega_u = 1 / |\mathcal{C}(v)|` below (a mean over the
    children). The slide is read out at the root: :math:`\mathrm{logits} = W g_t^{(R)} + b`.

    Choices: the original's focal-aware module trains a CNN on the thumbnail image to find the
    diagnosis-related regions and its tree is built from image patches through CNNs; we use the
    same patch feature extractor for all methods, with one shared MLP :math:`f` on the frozen
    features of every level, and the thumbnail-conditioned attention above as the focal-aware
    score. The hard top-k selection has no gradient; the selector learns through
    :math:`\alpha`, which weighs the selected subtrees in the root's aggregation. Messages flow
    one level per round, so ``rounds`` (default 2) should be at least the depth below the
    thumbnail (2 for a 5x/10x pyramid) for the finest patches to reach the root. Each round has
    its own weights; dropout follows every round.

    Args:
        in_dim (int): Patch feature size :math:`F`.
        n_classes (int): Number of slide classes. (default: ``2``)
        hidden (tuple[int, ...]): Widths of the shared ReLU MLP :math:`f`.
            (default: ``(256, 128)``)
        dropout (float): Dropout after each MLP layer and each round. (default: ``0.0``)
        attention_dim (int): Rows of :math:`V`. (default: ``64``)
        n_select (int): Level-1 patches selected per slide. (default: ``8``)
        rounds (int): Message-passing rounds :math:`R`. (default: ``2``)

    Shapes:
        - **input:** a :class:`~wsigraph.nn.ihpool.Pyramid` of :math:`B` slides, :math:`N` nodes
        - **output:** slide logits :math:`(B, C)`
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int = 2,
        hidden: Hidden = (256, 128),
        dropout: float = 0.0,
        attention_dim: int = 64,
        n_select: int = 8,
        rounds: int = 2,
    ):
        super().__init__()
        if n_select < 1:
            raise ValueError(f"n_select must be >= 1, got {n_select}")
        self.in_dim, self.n_classes, self.hidden, self.dropout = in_dim, n_classes, hidden, dropout
        self.attention_dim, self.n_select, self.rounds = attention_dim, n_select, rounds
        dim = hidden[-1] if hidden else in_dim
        self.embed = _mlp(in_dim, hidden, dropout)
        self.focal_V = nn.Linear(2 * dim, attention_dim)
        self.focal_w = nn.Linear(attention_dim, 1, bias=False)
        self.relevance = nn.ModuleList(nn.Linear(2 * dim, 1) for _ in range(rounds))
        self.message = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(rounds))
        self.update = nn.ModuleList(nn.Linear(dim, dim) for _ in range(rounds))
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(dim, n_classes)
        self.reset_parameters()

    def outputs(self, p: Pyramid) -> dict[str, Tensor]:
        """``logits`` ``[B, C]``; ``selected`` ``[K]`` (node indices of the selected level-1
        patches, by slide then descending score) with their ``selection_weight`` ``[K]`` (sums
        to 1 per slide) and ``score`` ``[K]``; ``tree`` ``[T]`` (node indices of all tree nodes,
        ascending) and the last round's ``relevance`` ``[T]`` (0 at the roots)."""
        B, N, device = p.num_graphs, p.num_nodes, p.x.device
        h = self.embed(p.x)  # [N, D]
        patch = torch.nonzero(p.level == 1).view(-1)  # [N1]
        pair = torch.cat([h[patch], h[p.parent[patch]]], dim=-1)  # [N1, 2D], parent = thumbnail
        score = self.focal_w(torch.tanh(self.focal_V(pair))).squeeze(-1)  # [N1]
        pos = _top_k_per_group(score.detach(), p.batch[patch], B, self.n_select)
        selected = patch[pos]  # [K]
        alpha = softmax(score[pos], p.batch[selected], num_nodes=B)  # [K]

        in_tree = p.level == 0
        in_tree[selected] = True
        for lv in range(2, int(p.level.max()) + 1 if N else 0):
            nodes = torch.nonzero(p.level == lv).view(-1)
            in_tree[nodes] = in_tree[p.parent[nodes]]
        tree = torch.nonzero(in_tree).view(-1)  # [T]
        T = tree.numel()
        local = torch.full((N,), -1, dtype=torch.long, device=device)
        local[tree] = torch.arange(T, device=device)
        child = torch.nonzero(p.parent[tree] >= 0).view(-1)  # [E], tree positions
        par = local[p.parent[tree[child]]]  # [E]
        n_children = torch.bincount(par, minlength=T).clamp(min=1)
        omega = torch.zeros(T, device=device, dtype=h.dtype)
        omega = omega.index_copy(0, child, 1.0 / n_children[par].to(h.dtype))
        omega = omega.index_copy(0, local[selected], alpha)[child].unsqueeze(-1)  # [E, 1]

        g = h[tree]  # [T, D]
        rho = g.new_zeros(T)
        for r in range(self.rounds):
            rel = torch.sigmoid(self.relevance[r](torch.cat([g[child], g[par]], dim=-1)))  # [E, 1]
            msg = omega * rel * self.message[r](g[child])  # [E, D]
            agg = scatter(msg, par, dim=0, dim_size=T, reduce="sum")  # [T, D]
            g = self.drop(torch.relu(self.update[r](g) + agg))
            rho = rho.index_copy(0, child, rel.squeeze(-1).detach())
        root = torch.nonzero(p.level[tree] == 0).view(-1)
        z = scatter(g[root], p.batch[tree[root]], dim=0, dim_size=B, reduce="sum")  # [B, D]
        return dict(
            logits=self.classifier(z),
            selected=selected,
            selection_weight=alpha,
            score=score[pos],
            tree=tree,
            relevance=rho,
        )

    def forward(self, p: Pyramid) -> Tensor:
        return self.outputs(p)["logits"]

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", n_select={self.n_select}, rounds={self.rounds})"


class _Block(nn.Module):
    """Pre-norm transformer layer whose attention is
    :func:`torch.nn.functional.scaled_dot_product_attention`, so memory stays linear in the
    sequence length on CPU too (``nn.TransformerEncoderLayer``'s inference fast path builds the
    ``[L, L]`` attention matrix)."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, ff_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        B, L, D = x.shape  # mask: [B, L], True for real tokens
        q, k, v = self.qkv(self.norm1(x)).view(B, L, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None, None, :]  # [B, 1, 1, L]
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # [B, H, L, D / H]
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, L, D)))
        return x + self.drop(self.ff(self.norm2(x)))


class HIPT(_MIL):
    r"""Hierarchical image pyramid transformer, HIPT (Chen et al., "Scaling Vision Transformers
    to Gigapixel Images via Hierarchical Self-Supervised Learning", CVPR 2022), on the pyramid.

    HIPT aggregates bottom-up: ViT-256 turns 16-pixel cells into a 256-pixel patch token,
    ViT-4K turns the 256-pixel tokens of a 4096-pixel region into a region token, and ViT-WSI
    with global attention pooling turns the region tokens into the slide. Here a region is a
    level-1 patch :math:`r` and its tokens are its level-2 children :math:`c_1 \dots c_m`:

    .. math::
        u_r = \mathrm{LN}\Big(\mathrm{T}_\mathrm{region}\big([\,c_\mathrm{cls},\;
            W_1 x_r,\; W_2 x_{c_1}, \dots, W_2 x_{c_m}]\big)\Big)_0 ,

    the output at the learnable CLS token. The slide transformer runs over its regions,
    :math:`[v_r] = \mathrm{LN}(\mathrm{T}_\mathrm{slide}([\mathrm{ReLU}(W_\phi u_r)]_r))`, gated
    attention pooling (Ilse et al. Eq. 10) reads the slide,

    .. math::
        a_r = \mathrm{softmax}_r\big(w^\top(\tanh(V v_r) \odot \sigma(U v_r))\big), \qquad
        z = \sum_r a_r v_r, \qquad
        \mathrm{logits} = W_c\, \mathrm{ReLU}(W_\rho z + b_\rho) + b_c .

    Choices: the tokens are our patch features (we use the same patch feature extractor for all
    methods), in place of HIPT's DINO-pretrained ViT-256 / ViT-4K, and the region transformer is
    trained with the slide model rather than pre-trained. The region's own level-1 feature
    enters as a second token (its projection :math:`W_1` differs from the children's
    :math:`W_2`), so a region without level-2 children still has an embedding (CLS + own
    feature); levels deeper than 2 and the thumbnail are not used, and a slide without level-1
    patches has a zero embedding :math:`z`. Neither transformer has positional embeddings (HIPT's
    slide transformer has none; children sets are small and their layout varies between
    pyramid settings). Both transformers are pre-norm with a final LayerNorm, feed-forward width
    ``ff_dim`` (HIPT's slide transformer uses ``d_model``); the region transformer is
    ``nn.TransformerEncoderLayer`` over regions padded with ``to_dense_batch``, the slide
    transformer calls ``scaled_dot_product_attention`` directly so a 12,500-region slide fits
    in CPU memory (no mask is passed for one slide). HIPT's dropout is 0.25; the default here
    is 0 like the other modules.

    Args:
        in_dim (int): Patch feature size :math:`F`.
        n_classes (int): Number of slide classes. (default: ``2``)
        dim (int): Token width (HIPT's ViT-4K / ViT-WSI width). (default: ``192``)
        heads (int): Attention heads of both transformers. (default: ``3``)
        region_layers (int): Layers of the region transformer. (default: ``2``)
        slide_layers (int): Layers of the slide transformer. (default: ``2``)
        dropout (float): Dropout in the transformers and the heads. (default: ``0.0``)
        ff_dim (int, optional): Feed-forward width; ``None`` means ``dim``. (default: ``None``)

    Shapes:
        - **input:** a :class:`~wsigraph.nn.ihpool.Pyramid` of :math:`B` slides, :math:`N` nodes
        - **output:** slide logits :math:`(B, C)`
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int = 2,
        dim: int = 192,
        heads: int = 3,
        region_layers: int = 2,
        slide_layers: int = 2,
        dropout: float = 0.0,
        ff_dim: int | None = None,
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be a multiple of heads ({heads})")
        self.in_dim, self.n_classes, self.dim, self.heads = in_dim, n_classes, dim, heads
        self.region_layers, self.slide_layers, self.dropout = region_layers, slide_layers, dropout
        self.ff_dim = ff = ff_dim or dim
        self.cls_token = nn.Parameter(torch.empty(dim))
        self.region_proj = nn.Linear(in_dim, dim)  # W_1, the region's own 5x feature
        self.child_proj = nn.Linear(in_dim, dim)  # W_2, its 10x children
        self.region_transformer = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, ff, dropout, batch_first=True, norm_first=True)
            for _ in range(region_layers)
        )
        self.region_norm = nn.LayerNorm(dim)
        self.phi = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout))
        self.slide_transformer = nn.ModuleList(
            _Block(dim, heads, ff, dropout) for _ in range(slide_layers)
        )
        self.slide_norm = nn.LayerNorm(dim)
        self.attention_V = nn.Linear(dim, dim)
        self.attention_U = nn.Linear(dim, dim)
        self.attention_w = nn.Linear(dim, 1, bias=False)
        self.rho = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout))
        self.classifier = nn.Linear(dim, n_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for module in self.modules():
            if isinstance(module, nn.LayerNorm):
                module.reset_parameters()
            elif isinstance(module, nn.MultiheadAttention):
                module._reset_parameters()
        nn.init.normal_(self.cls_token, std=0.02)

    def _regions(self, p: Pyramid, region: Tensor) -> Tensor:
        """Region embeddings :math:`u_r` ``[R, D]`` of the level-1 nodes ``region``."""
        R, device = region.numel(), p.x.device
        local = torch.full((p.num_nodes,), -1, dtype=torch.long, device=device)
        local[region] = torch.arange(R, device=device)
        child = torch.nonzero(p.level == 2).view(-1)
        owner = local[p.parent[child]]  # [M], region of each child
        order = torch.argsort(owner, stable=True)  # to_dense_batch wants sorted groups
        child, owner = child[order], owner[order]
        own = self.region_proj(p.x[region])  # [R, D]
        seq = torch.stack([self.cls_token.expand(R, -1), own], dim=1)  # [R, 2, D]
        pad = torch.zeros(R, 2, dtype=torch.bool, device=device)  # True = padding
        if child.numel():
            kids, real = to_dense_batch(self.child_proj(p.x[child]), owner, batch_size=R)
            seq = torch.cat([seq, kids], dim=1)  # [R, 2 + max_m, D]
            pad = torch.cat([pad, ~real], dim=1)
        mask = pad if pad.any() else None
        for layer in self.region_transformer:
            seq = layer(seq, src_key_padding_mask=mask)
        return self.region_norm(seq[:, 0])  # [R, D]

    def outputs(self, p: Pyramid) -> dict[str, Tensor]:
        """``logits`` ``[B, C]``; ``regions`` ``[R]`` (node indices of the level-1 patches, by
        slide) and their ``attention`` ``[R]`` (sums to 1 per slide with regions)."""
        B = p.num_graphs
        region = torch.nonzero(p.level == 1).view(-1)
        region = region[torch.argsort(p.batch[region], stable=True)]  # [R], by slide
        graph = p.batch[region]
        if region.numel() == 0:
            z = p.x.new_zeros(B, self.dim)
            a = p.x.new_zeros(0)
        else:
            u = self.phi(self._regions(p, region))  # [R, D]
            # Only slides with regions enter the dense batch: an all-padding row would be NaN.
            _, slot = torch.unique_consecutive(graph, return_inverse=True)
            v, real = to_dense_batch(u, slot)  # [B', L, D]
            mask = None if real.all() else real
            for block in self.slide_transformer:
                v = block(v, mask)
            v = self.slide_norm(v[real])  # [R, D]
            gate = torch.tanh(self.attention_V(v)) * torch.sigmoid(self.attention_U(v))
            a = softmax(self.attention_w(gate).squeeze(-1), graph, num_nodes=B)  # [R]
            z = scatter(a.unsqueeze(-1) * v, graph, dim=0, dim_size=B, reduce="sum")  # [B, D]
        return dict(logits=self.classifier(self.rho(z)), regions=region, attention=a)

    def forward(self, p: Pyramid) -> Tensor:
        return self.outputs(p)["logits"]

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_dim}, n_classes={self.n_classes}, "
            f"dim={self.dim}, heads={self.heads}, region_layers={self.region_layers}, "
            f"slide_layers={self.slide_layers})"
        )
