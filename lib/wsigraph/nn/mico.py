r"""MiCo's layers: Cluster Route, Cluster Reducer and the MiCo bag module.

MiCo (Li, Kuang, Liu, Yue, He & Wang, "MiCo: Multiple Instance Learning with Context-Aware
Clustering for Whole Slide Image Analysis", MICCAI 2025, arXiv:2506.18028; official code
``junjianli106/MiCo``, ``models/MiCo.py``) clusters the instances of a slide, uses the
cluster centroids as *semantic anchors* :math:`S = \{s_k\}_{k=1}^K`, and alternates

* **Cluster Route** (:class:`ClusterRoute`): every instance :math:`h_m` is routed to the
  anchors by feature similarity and takes their weighted mean as context, which links
  instances of the same tissue type wherever they lie on the slide (the anchors are hubs);
* **Cluster Reducer** (:class:`ClusterReducer`): the :math:`K_l` anchors are consolidated into
  :math:`K_{l+1} = K_l / 2` new ones, each a learned mixture of all the old ones, so redundant
  anchors merge and distinct semantic groups exchange information;

then pools instances and the last anchors with gated attention and classifies. The paper's
text available to us is the abstract and the official README; the equations below are the
official code's, written per slide, and the numbers (Eq. 1-4) are ours.

Bag modules follow the protocol of :mod:`wsigraph.nn.mil`: ``x [N, F]``, ``batch [N]``,
``num_bags``; :meth:`MiCoMIL.outputs` returns a dict with ``"logits"`` ``[B, C]``. No padded
``[B, max_bag, F]`` instance tensor is built; the anchors are few (``K`` per slide) and *are* kept
as a padded ``[B, K, D]`` tensor with a mask. Routing computes the instances' scores against all
``B K`` anchors of the batch at once and keeps their own slide's block (memory ``O(N B K)``; one
slide per step costs ``O(N K)``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter, softmax

from wsigraph.nn.mil import _MIL, bag_kmeans

ANCHORS = ("slide", "learned")
SIMILARITIES = ("l2", "dot")


class _Mlp(nn.Sequential):
    """``Linear -> act -> Dropout -> Linear -> Dropout`` (the official ``Mlp``)."""

    def __init__(self, dim: int, hidden: int, out: int, dropout: float = 0.0):
        super().__init__(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out),
            nn.Dropout(dropout),
        )  # fmt: skip


class ClusterRoute(nn.Module):
    r"""Cluster Route (MiCo; the official ``context_enhancers`` step): instances read their
    slide's anchors by similarity.

    With instance embeddings :math:`h_m` and the slide's anchors :math:`c_k` (both
    :math:`D`-dimensional),

    .. math::
        a_{mk} = \mathrm{softmax}_k\big(\mathrm{sim}(h_m, c_k) / \tau\big),
        \qquad \mathrm{sim}(h, c) = -\lVert h - c \rVert_2 \;\text{(or } h^\top c\text{)}
        \quad (1)

    .. math::
        h_m' = \mathrm{LN}\Big(h_m + \sum_k a_{mk} c_k\Big), \qquad
        h_m'' = h_m' + \mathrm{MLP}(h_m') \quad (2)

    the softmax running over the anchors of the instance's own slide (masked anchors, e.g. the
    empty clusters of a slide with fewer instances than clusters, get weight 0).

    Choices: :math:`\tau` is a learnable scalar initialised to 1 (the official
    ``similarity_scale``, shared there by all layers, here one per layer), clamped to at least
    ``1e-2`` so the softmax stays finite; the distance is computed as
    :math:`\sqrt{\max(\lVert h\rVert^2 + \lVert c\rVert^2 - 2h^\top c, 10^{-12})}` so its gradient
    is finite when an instance sits on an anchor; ``hard=True`` is the official straight-through
    one-hot assignment (forward: nearest anchor; backward: the soft weights).

    Args:
        dim (int): Embedding size :math:`D`.
        dropout (float): Dropout inside the MLP. (default: ``0.0``)
        similarity (str): ``"l2"`` (negative Euclidean distance, the official default) or
            ``"dot"``. (default: ``"l2"``)
        hard (bool): Straight-through hard assignment. (default: ``False``)

    Shapes:
        - **input:** instances :math:`(N, D)`, bag index :math:`(N)`, anchors :math:`(B, K, D)`,
          anchor mask :math:`(B, K)` (bool, at least one ``True`` in every non-empty bag)
        - **output:** instances :math:`(N, D)`; with ``return_assignment=True`` also the
          assignment :math:`(N, K)` (rows sum to 1)
    """

    def __init__(self, dim: int, dropout: float = 0.0, similarity: str = "l2", hard: bool = False):
        super().__init__()
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
        self.dim, self.dropout, self.similarity, self.hard = dim, dropout, similarity, hard
        self.tau = nn.Parameter(torch.ones(1))
        self.norm = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, dim, dim, dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.tau)
        self.norm.reset_parameters()
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                m.reset_parameters()

    def forward(
        self,
        h: Tensor,
        batch: Tensor,
        anchors: Tensor,
        mask: Tensor,
        return_assignment: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        num_bags, k, dim = anchors.shape
        flat = anchors.reshape(num_bags * k, dim)  # [B K, D]
        own = (batch * k).unsqueeze(-1) + torch.arange(k, device=h.device)  # [N, K] own block
        dot = torch.gather(h @ flat.t(), 1, own)  # [N, K]: h_m . c_k of the instance's slide
        if self.similarity == "dot":
            s = dot
        else:
            sq = h.square().sum(-1, keepdim=True) + flat.square().sum(-1)[own] - 2.0 * dot
            s = -sq.clamp(min=1e-12).sqrt()
        s = s / self.tau.clamp(min=1e-2)
        a = torch.softmax(s.masked_fill(~mask[batch], -math.inf), dim=-1)  # [N, K], Eq. 1
        if self.hard:
            a = F.one_hot(a.argmax(-1), k).to(a.dtype) - a.detach() + a
        routed = h.new_zeros(h.size(0), num_bags * k).scatter(1, own, a)  # [N, B K]
        context = routed @ flat  # [N, D]
        assignment = a
        h = self.norm(h + context)  # Eq. 2
        h = h + self.mlp(h)
        return (h, assignment) if return_assignment else h

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.dim}, similarity={self.similarity!r}, hard={self.hard})"


class ClusterReducer(nn.Module):
    r"""Cluster Reducer (MiCo; the official ``cluster_reducers``): :math:`K_{in}` anchors become
    :math:`K_{out}` (the official schedule halves them each layer, 64 -> 32 -> 16 -> 8).

    ``mode="learned"`` (the official layer, for anchors shared by every slide, in a fixed
    order): an MLP over the *anchor axis*,

    .. math::
        C' = \big(W_2\, \mathrm{ReLU}(W_1 C^\top)\big)^\top, \qquad
        W_1 \in \mathbb{R}^{K_{in} \times K_{in}},\; W_2 \in \mathbb{R}^{K_{out} \times K_{in}}
        \quad (3)

    so each new anchor is a learned non-linear mixture of all old anchors.

    ``mode="slide"`` (our layer for per-slide k-means anchors, which have no fixed order across
    slides, so a weight per anchor *index* would mean nothing, and whose count varies): the
    mixture weights come from the anchors' content through :math:`K_{out}` learned queries,

    .. math::
        \alpha_{jk} = \mathrm{softmax}_k\big(q_j^\top W c_k / \sqrt{D}\big), \qquad
        \bar c_j = \sum_k \alpha_{jk} c_k, \qquad c_j' = \bar c_j + \mathrm{MLP}(\bar c_j)
        \quad (4)

    (the softmax over the slide's valid anchors). Redundant anchors that look alike fall into
    the same new anchor (consolidation); each new anchor mixes several groups (exchange). It is
    invariant to the order of the anchors and defined for any number :math:`\geq 1` of them;
    a slide with no anchor keeps none.

    Args:
        dim (int): Anchor size :math:`D`.
        k_in (int): Anchors in :math:`K_{in}` (the padded count in ``"slide"`` mode).
        k_out (int): Anchors out :math:`K_{out}`.
        mode (str): ``"slide"`` or ``"learned"``. (default: ``"slide"``)
        dropout (float): Dropout in the MLP. (default: ``0.0``, the official reducer's)

    Shapes:
        - **input:** anchors :math:`(B, K_{in}, D)`, mask :math:`(B, K_{in})`
        - **output:** anchors :math:`(B, K_{out}, D)`, mask :math:`(B, K_{out})` (all ``True``
          for bags with at least one valid input anchor)
    """

    def __init__(self, dim: int, k_in: int, k_out: int, mode: str = "slide", dropout: float = 0.0):
        super().__init__()
        if mode not in ANCHORS:
            raise ValueError(f"mode must be one of {ANCHORS}, got {mode!r}")
        if k_in < 1 or k_out < 1:
            raise ValueError(f"need k_in >= 1 and k_out >= 1, got {k_in}, {k_out}")
        self.dim, self.k_in, self.k_out, self.mode, self.dropout = dim, k_in, k_out, mode, dropout
        if mode == "learned":
            self.mlp = _Mlp(k_in, k_in, k_out, dropout)
        else:
            self.queries = nn.Parameter(torch.empty(k_out, dim))
            self.key = nn.Linear(dim, dim, bias=False)
            self.mlp = _Mlp(dim, dim, dim, dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                m.reset_parameters()
        if self.mode == "slide":
            nn.init.normal_(self.queries, std=self.dim**-0.5)
            self.key.reset_parameters()

    def forward(self, anchors: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if self.mode == "learned":
            out = self.mlp(anchors.transpose(1, 2)).transpose(1, 2)  # [B, K_out, D], Eq. 3
            return out, mask.any(-1, keepdim=True).expand(-1, self.k_out)
        score = self.queries @ self.key(anchors).transpose(1, 2) / math.sqrt(self.dim)
        score = score.masked_fill(~mask.unsqueeze(1), -math.inf)  # [B, K_out, K_in]
        alive = mask.any(-1)  # [B]
        alpha = torch.softmax(score.masked_fill(~alive[:, None, None], 0.0), dim=-1)
        mixed = alpha @ anchors  # [B, K_out, D]
        out = (mixed + self.mlp(mixed)) * alive[:, None, None]  # Eq. 4
        return out, alive.unsqueeze(-1).expand(-1, self.k_out)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.dim}, {self.k_in} -> {self.k_out}, mode={self.mode!r})"


def cluster_centroids(
    x: Tensor, batch: Tensor, cluster: Tensor, num_bags: int, k: int
) -> tuple[Tensor, Tensor]:
    """Per-bag cluster means ``[B, K, F]`` of ``x`` by ``cluster`` (``0 .. k - 1``) and the mask
    ``[B, K]`` of non-empty clusters (empty ones are zero)."""
    if cluster.numel() and (int(cluster.min()) < 0 or int(cluster.max()) >= k):
        raise ValueError(
            f"cluster labels must lie in [0, {k}) (n_clusters={k}), got "
            f"[{int(cluster.min())}, {int(cluster.max())}]; re-cluster with this n_clusters"
        )
    segment = batch * k + cluster  # [N]
    mean = scatter(x, segment, dim=0, dim_size=num_bags * k, reduce="mean")  # [B K, F]
    filled = torch.bincount(segment, minlength=num_bags * k) > 0
    return mean.view(num_bags, k, -1), filled.view(num_bags, k)


class MiCoMIL(_MIL):
    r"""MiCo (Li et al., MICCAI 2025): context-aware clustering MIL.

    1. **Anchors.** ``anchors="slide"``: the instances of each slide are clustered (k-means,
       :math:`K_b = \min(K, n_b)` clusters) and the centroids :math:`s_k` of the *input*
       features are the slide's semantic anchors; cluster labels come from ``cluster`` (e.g. a
       per-slide cache, :mod:`wsigraph.data.clusters`) or, if it is ``None``, from
       :func:`wsigraph.nn.mil.bag_kmeans` (deterministic farthest-first init, ``kmeans_iters``
       Lloyd rounds, no gradient). ``anchors="learned"``: the official code's anchors, one
       learnable ``[K, F]`` matrix shared by all slides (random normal, or ``anchor_init``, e.g.
       the k-means centres of :func:`wsigraph.data.clusters.dataset_centroids` as the official
       ``run_clustering.py`` computes them).
    2. **Embedding.** :math:`h_m = \mathrm{LeakyReLU}(W_p x_m)`,
       :math:`c_k = \mathrm{LeakyReLU}(W_c s_k)` (separate projections, as the official code).
    3. **Layers** :math:`l = 1 \dots L`: Cluster Route (Eq. 1-2) then Cluster Reducer (Eq. 3
       or 4), :math:`K_l = \max(1, \lfloor K / 2^l \rfloor)`.
    4. **Readout.** The slide's instances and its :math:`K_L` last anchors are one token set;
       :math:`t = \mathrm{LN}(\mathrm{Dropout}(\mathrm{ReLU}(W_f t)))`, gated attention
       :math:`a = \mathrm{softmax}(w^\top(\tanh(V t) \odot \mathrm{sigm}(U t)))` over the
       slide's tokens, :math:`z = \sum a\, t`, logits :math:`= W_o\,\mathrm{Dropout}(\mathrm{ReLU}(W_z z))`.

    For survival, the ``n_classes`` logits are the ``n_bins`` discrete-time hazard logits
    (hazards :math:`= \sigma(\mathrm{logits})`, :math:`S = \prod (1 - \text{hazards})`), as the
    official survival head; the loss lives in :mod:`wsigraph.train.survival`.

    Choices (the text leaves them open or the official code differs):
        * The official ``run_clustering.py`` runs k-means once per *dataset* (pooled features of
          the first 20 slides) to initialise learnable anchors; the abstract says instances are
          clustered and the centroids serve as anchors. ``"slide"`` (default) follows the text:
          anchors are each slide's own cluster centroids; ``"learned"`` is the official code.
        * In ``"slide"`` mode the reducer is content-based (Eq. 4, order-invariant); the
          official index-based MLP (Eq. 3) is used in ``"learned"`` mode only.
        * The official survival code routes each slide of a *patient* separately and pools all
          their tokens; routing is per instance, so a patient bag (all its slides' instances,
          :func:`wsigraph.train.mico.patient_bags`) with the last anchors appended once per
          slide (``copies``) is the same computation.
        * Dropout default 0.05 (the official configs' ``drop``); the official attention MLP
          also drops after its tanh/sigmoid branches, kept here.

    Args:
        in_dim (int): Instance feature size :math:`F`.
        n_classes (int): Classes (or survival bins). (default: ``2``)
        dim (int): Embedding size :math:`D` (official: 512). (default: ``512``)
        n_clusters (int): Anchors :math:`K` per slide (official: 64). (default: ``64``)
        n_layers (int): Route/Reducer layers :math:`L` (official ``num_enhancers``: 3).
            (default: ``3``)
        dropout (float): Dropout. (default: ``0.05``)
        anchors (str): ``"slide"`` or ``"learned"``. (default: ``"slide"``)
        similarity (str): ``"l2"`` or ``"dot"`` (Eq. 1). (default: ``"l2"``)
        hard (bool): Straight-through hard routing. (default: ``False``)
        kmeans_iters (int): Lloyd rounds of the in-model k-means. (default: ``10``)
        anchor_init (Tensor, optional): ``[K, F]`` initial learned anchors. (default: ``None``)

    Shapes:
        - **input:** instances :math:`(N, F)`, bag index :math:`(N)`, ``num_bags`` :math:`B`,
          optional cluster labels :math:`(N)` in ``0 .. K-1``
        - **output:** logits :math:`(B, C)`
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int = 2,
        dim: int = 512,
        n_clusters: int = 64,
        n_layers: int = 3,
        dropout: float = 0.05,
        anchors: str = "slide",
        similarity: str = "l2",
        hard: bool = False,
        kmeans_iters: int = 10,
        anchor_init: Tensor | None = None,
    ):
        super().__init__()
        if anchors not in ANCHORS:
            raise ValueError(f"anchors must be one of {ANCHORS}, got {anchors!r}")
        if n_clusters < 1 or n_layers < 0 or dim < 1:
            raise ValueError(
                f"need n_clusters >= 1, n_layers >= 0, dim >= 1; got {n_clusters}, {n_layers}, {dim}"
            )
        self.in_dim, self.n_classes, self.hidden, self.dropout = in_dim, n_classes, (dim,), dropout
        self.dim, self.n_clusters, self.n_layers, self.anchors = dim, n_clusters, n_layers, anchors
        self.similarity, self.hard, self.kmeans_iters = similarity, hard, kmeans_iters
        self.schedule = tuple(max(1, n_clusters // 2**i) for i in range(n_layers + 1))
        self.anchor_weight = None
        if anchors == "learned":
            init = torch.randn(n_clusters, in_dim) if anchor_init is None else anchor_init
            if tuple(init.shape) != (n_clusters, in_dim):
                raise ValueError(
                    f"anchor_init must be [{n_clusters}, {in_dim}], got {tuple(init.shape)}"
                )
            self.anchor_weight = nn.Parameter(init.detach().clone().float())
        self.patch_proj = nn.Sequential(nn.Linear(in_dim, dim), nn.LeakyReLU())
        self.anchor_proj = nn.Sequential(nn.Linear(in_dim, dim), nn.LeakyReLU())
        self.routes = nn.ModuleList(
            ClusterRoute(dim, dropout, similarity, hard) for _ in range(n_layers)
        )
        self.reducers = nn.ModuleList(
            ClusterReducer(dim, self.schedule[i], self.schedule[i + 1], anchors)
            for i in range(n_layers)
        )
        self.token_proj = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout))
        self.token_norm = nn.LayerNorm(dim)
        self.attention_V = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Dropout(dropout))
        self.attention_U = nn.Sequential(nn.Linear(dim, dim), nn.Sigmoid(), nn.Dropout(dropout))
        self.attention_w = nn.Linear(dim, 1)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout))
        self.classifier = nn.Linear(dim, n_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for m in (*self.routes, *self.reducers, self.token_norm):
            m.reset_parameters()

    def slide_anchors(
        self, x: Tensor, batch: Tensor, num_bags: int, cluster: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Anchors in input space ``[B, K, F]``, their mask ``[B, K]`` and the cluster ``[N]``."""
        k = self.n_clusters
        if self.anchors == "learned":
            s = self.anchor_weight.unsqueeze(0).expand(num_bags, -1, -1)
            mask = torch.ones(num_bags, k, dtype=torch.bool, device=x.device)
            return s, mask, torch.full_like(batch, -1)
        if cluster is None:
            cluster = bag_kmeans(x, batch, num_bags, k, self.kmeans_iters)  # [N]
        s, mask = cluster_centroids(x, batch, cluster.long(), num_bags, k)
        return s, mask, cluster

    def outputs(
        self,
        x: Tensor,
        batch: Tensor,
        num_bags: int,
        cluster: Tensor | None = None,
        copies: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """``logits [B, C]``; ``attention`` over the tokens ``[N + B K_L]`` (instances first,
        then each bag's last anchors), ``token_batch``, the instance ``cluster [N]`` (-1 with
        learned anchors) and the first layer's ``assignment [N, K]`` (if ``n_layers > 0``).

        ``copies [B]`` (optional, default 1): how many times each bag's last anchors join its
        tokens -- the official survival forward runs every slide of a patient separately and
        appends the (shared) anchors once per slide."""
        s, mask, cluster = self.slide_anchors(x, batch, num_bags, cluster)
        h = self.patch_proj(x)  # [N, D]
        c = self.anchor_proj(s)  # [B, K, D]
        out: dict[str, Tensor] = {"cluster": cluster}
        for i, (route, reduce) in enumerate(zip(self.routes, self.reducers, strict=True)):
            h, a = route(h, batch, c, mask, return_assignment=True)  # [N, D], [N, K_l]
            if i == 0:
                out["assignment"] = a
            c, mask = reduce(c, mask)  # [B, K_{l+1}, D]
        k_last = c.size(1)
        anchor_batch = torch.arange(num_bags, device=x.device).repeat_interleave(k_last)
        keep = mask.flatten()
        c_tok, c_batch = c.flatten(0, 1)[keep], anchor_batch[keep]
        if copies is not None:
            rep = copies.to(x.device).long().view(-1)[c_batch]
            c_tok, c_batch = c_tok.repeat_interleave(rep, 0), c_batch.repeat_interleave(rep)
        tokens = torch.cat([h, c_tok])  # [T, D]
        token_batch = torch.cat([batch, c_batch])  # [T]
        t = self.token_norm(self.token_proj(tokens))
        score = self.attention_w(self.attention_V(t) * self.attention_U(t)).squeeze(-1)  # [T]
        a = softmax(score, token_batch, num_nodes=num_bags)
        z = scatter(a.unsqueeze(-1) * t, token_batch, dim=0, dim_size=num_bags, reduce="sum")
        out.update(
            logits=self.classifier(self.head(z)),  # [B, C]
            attention=a,
            token_batch=token_batch,
        )
        return out

    def forward(
        self, x: Tensor, batch: Tensor, num_bags: int, cluster: Tensor | None = None
    ) -> Tensor:
        return self.outputs(x, batch, num_bags, cluster)["logits"]

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_dim}, n_classes={self.n_classes}, dim={self.dim}, "
            f"clusters={'->'.join(map(str, self.schedule))}, anchors={self.anchors!r})"
        )
