r"""Classic multiple-instance learning (MIL) pooling baselines on bags of instance features.

Every module takes the instances of several bags concatenated, PyG-style: ``x [N, F]``, a
``batch [N]`` vector giving each instance's bag (``0 .. num_bags - 1``, any order) and
``num_bags``, and returns bag logits ``[B, n_classes]`` for a softmax cross-entropy (the papers'
binary models end in one sigmoid unit; ``n_classes=2`` logits are the same model family).
Per-bag reductions are ``scatter`` / :func:`torch_geometric.utils.softmax` / sorts over ``N``,
never a padded ``[B, max_bag, F]`` tensor, so memory is O(N) and a bag of 50,000 instances
runs on a CPU.

* :class:`MeanPoolMIL`, :class:`MaxPoolMIL`: embedding MLP, mean / max over the bag,
  classifier (the embedding-level pooling of MI-Net, Wang et al., Pattern Recognit. 2018).
* :class:`ABMIL`: attention and gated-attention pooling (Ilse, Tomczak & Welling, ICML 2018).
* :class:`DSMIL`: dual-stream MIL (Li, Li & Eliceiri, CVPR 2021).
* :class:`MinMaxMIL`: top-R / bottom-R instance scores (Courtiol et al. 2018, "CHOWDER").
* :class:`CLAMSB`: gated attention with instance-level clustering (Lu et al., Nat. Biomed. Eng.
  2021, CLAM-SB).
* :class:`DeepAttnMIL`: attention over per-bag k-means phenotype clusters (Yao et al., Med.
  Image Anal. 2020, DeepAttnMISL); :func:`bag_kmeans` clusters every bag at once.
* :class:`MILRNN`: top-1 MIL instance classifier and an RNN over the top-S instances
  (Campanella et al., Nat. Med. 2019).

Training protocol (shared by every bag module here and in ``nn/spatial_mil.py`` and
``nn/multiscale_mil.py``): ``outputs(...)`` takes the same inputs as ``forward`` and returns a
dict with at least ``"logits"`` ``[B, C]`` (plus whatever auxiliary streams the method
trains); ``loss(outputs, y, weight=None)`` is the method's training loss (cross-entropy on
``"logits"`` unless the method adds terms, e.g. DS-MIL's two streams or CLAM's instance
clustering); ``forward`` returns ``outputs(...)["logits"]``. ``weight`` is an optional ``[C]``
class weight for the cross-entropy terms.

In training mode dropout makes outputs random; the invariances (instance order, batching)
hold in ``eval()`` mode.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import global_max_pool, global_mean_pool
from torch_geometric.utils import cumsum, scatter, softmax

Hidden = tuple[int, ...]


def _mlp(in_dim: int, hidden: Hidden, dropout: float, act: type[nn.Module] = nn.ReLU):
    """``Linear -> act -> Dropout`` per width in ``hidden``; the identity if ``hidden`` is empty."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), act(), nn.Dropout(dropout)]
        in_dim = width
    return nn.Sequential(*layers) if layers else nn.Identity()


class _MIL(nn.Module):
    """Shared ``outputs`` / ``loss`` protocol, ``reset_parameters`` and ``__repr__``."""

    def outputs(self, *inputs, **kwargs) -> dict[str, Tensor]:
        """``{"logits": forward(*inputs)}``; methods with auxiliary streams override it."""
        return {"logits": self(*inputs, **kwargs)}

    def loss(self, outputs: dict[str, Tensor], y: Tensor, weight: Tensor | None = None) -> Tensor:
        """Cross-entropy of ``outputs["logits"]`` (optionally class-weighted)."""
        return F.cross_entropy(outputs["logits"], y, weight=weight)

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and isinstance(module, nn.Linear):
                module.reset_parameters()

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_dim}, n_classes={self.n_classes}, "
            f"hidden={self.hidden})"
        )


class MeanPoolMIL(_MIL):
    r"""Embedding-level mean pooling: :math:`z = \frac{1}{K}\sum_k f(x_k)`, logits :math:`= W z + b`.

    The "embedding + mean" baseline of Ilse et al. (ICML 2018, Sec. 2.3) and the mean-pooling
    variant of MI-Net (Wang et al., "Revisiting multiple instance neural networks", Pattern
    Recognit. 2018), with :math:`f` an MLP. Ilse et al. compare against MI-Net / mi-Net, so these
    are the baselines to read beside their numbers.

    Args:
        in_dim (int): Instance feature size :math:`F`.
        n_classes (int): Number of bag classes. (default: ``2``)
        hidden (tuple[int, ...]): Widths of the ReLU embedding MLP :math:`f` (MI-Net's and Ilse et
            al.'s MUSK network). (default: ``(256, 128, 64)``)
        dropout (float): Dropout after each embedding layer. (default: ``0.0``)

    Shapes:
        - **input:** instances :math:`(N, F)`, bag index :math:`(N)`, ``num_bags`` :math:`B`
        - **output:** bag logits :math:`(B, C)`
    """

    def __init__(
        self, in_dim: int, n_classes: int = 2, hidden: Hidden = (256, 128, 64), dropout: float = 0.0
    ):
        super().__init__()
        self.in_dim, self.n_classes, self.hidden, self.dropout = in_dim, n_classes, hidden, dropout
        self.embed = _mlp(in_dim, hidden, dropout)
        self.classifier = nn.Linear(hidden[-1] if hidden else in_dim, n_classes)
        self.reset_parameters()

    def forward(self, x: Tensor, batch: Tensor, num_bags: int) -> Tensor:
        h = self.embed(x)  # [N, D]
        return self.classifier(global_mean_pool(h, batch, size=num_bags))  # [B, C]


class MaxPoolMIL(MeanPoolMIL):
    r"""Embedding-level max pooling: :math:`z_d = \max_k f(x_k)_d`, logits :math:`= W z + b`.

    MI-Net (Wang et al., Pattern Recognit. 2018) with max pooling, Ilse et al.'s
    "embedding + max" baseline. Arguments and shapes as :class:`MeanPoolMIL`.
    """

    def forward(self, x: Tensor, batch: Tensor, num_bags: int) -> Tensor:
        h = self.embed(x)  # [N, D]
        return self.classifier(global_max_pool(h, batch, size=num_bags))  # [B, C]


class ABMIL(_MIL):
    r"""Attention-based deep MIL (Ilse, Tomczak & Welling, ICML 2018).

    With instance embeddings :math:`h_k = f(x_k)` (an MLP), the bag embedding is
    :math:`z = \sum_k a_k h_k` (Eq. 8) with attention (Eq. 9)

    .. math::
        a_k = \mathrm{softmax}_{k}\big(w^\top \tanh(V h_k)\big)

    or, with ``gated=True`` (Eq. 10),

    .. math::
        a_k = \mathrm{softmax}_{k}\big(w^\top (\tanh(V h_k) \odot \mathrm{sigm}(U h_k))\big),

    the softmax running over the instances of each bag; logits :math:`= W z + b`.

    Choices: the default embedding is the MUSK network of Ilse et al.'s appendix (the MI-Net
    stack fc-256, fc-128, fc-64 with ReLU); :math:`V, U` have biases, :math:`w` does not
    (a constant shift cancels in the softmax); the classifier is one linear layer to
    ``n_classes`` logits instead of one sigmoid unit.

    Args:
        in_dim (int): Instance feature size :math:`F`.
        n_classes (int): Number of bag classes. (default: ``2``)
        hidden (tuple[int, ...]): Widths of the ReLU embedding MLP :math:`f`.
            (default: ``(256, 128, 64)``)
        dropout (float): Dropout after each embedding layer. (default: ``0.0``)
        attention_dim (int): Rows :math:`L` of :math:`V` and :math:`U` (Ilse et al. pick it from
            {64, 128, 256} on validation data). (default: ``64``)
        gated (bool): Use the gated attention of Eq. 10. (default: ``False``)

    Shapes:
        - **input:** instances :math:`(N, F)`, bag index :math:`(N)`, ``num_bags`` :math:`B`
        - **output:** bag logits :math:`(B, C)`; with ``return_attention=True`` also the
          attention :math:`(N)`, summing to 1 over each bag
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int = 2,
        hidden: Hidden = (256, 128, 64),
        dropout: float = 0.0,
        attention_dim: int = 64,
        gated: bool = False,
    ):
        super().__init__()
        self.in_dim, self.n_classes, self.hidden, self.dropout = in_dim, n_classes, hidden, dropout
        self.attention_dim, self.gated = attention_dim, gated
        dim = hidden[-1] if hidden else in_dim
        self.embed = _mlp(in_dim, hidden, dropout)
        self.attention_V = nn.Linear(dim, attention_dim)
        self.attention_U = nn.Linear(dim, attention_dim) if gated else None
        self.attention_w = nn.Linear(attention_dim, 1, bias=False)
        self.classifier = nn.Linear(dim, n_classes)
        self.reset_parameters()

    def forward(
        self, x: Tensor, batch: Tensor, num_bags: int, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        h = self.embed(x)  # [N, D]
        gate = torch.tanh(self.attention_V(h))  # [N, L]
        if self.attention_U is not None:
            gate = gate * torch.sigmoid(self.attention_U(h))
        a = softmax(self.attention_w(gate).squeeze(-1), batch, num_nodes=num_bags)  # [N]
        z = scatter(a.unsqueeze(-1) * h, batch, dim=0, dim_size=num_bags, reduce="sum")  # [B, D]
        logits = self.classifier(z)  # [B, C]
        return (logits, a) if return_attention else logits

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", gated={self.gated})"


def _segment_argmax(src: Tensor, index: Tensor, num_segments: int) -> Tensor:
    """Per segment and column, the row of ``src`` holding the maximum, ``[S, C]`` (ties: the
    lowest row; empty segments: row 0)."""
    top = scatter(src, index, dim=0, dim_size=num_segments, reduce="max")  # [S, C]
    rows = torch.arange(src.size(0), device=src.device).unsqueeze(-1).expand_as(src)
    rows = torch.where(src == top[index], rows, src.size(0))
    first = scatter(rows, index, dim=0, dim_size=num_segments, reduce="min")
    return first.clamp(max=max(src.size(0) - 1, 0))


class DSMIL(_MIL):
    r"""Dual-stream MIL (Li, Li & Eliceiri, CVPR 2021).

    With instance embeddings :math:`h_k = f(x_k)` and instance logits :math:`s_k = W_0 h_k`
    (the first, max-pooling stream), the critical instance of each bag and class is
    :math:`m_c = \arg\max_k s_{k,c}`. The second stream measures every instance against it
    with queries :math:`q_k = \tanh(W_2\,\mathrm{ReLU}(W_1 h_k))`:

    .. math::
        A_{k,c} = \mathrm{softmax}_k\big(\langle q_k, q_{m_c}\rangle / \sqrt{d_q}\big),
        \qquad b_c = \sum_k A_{k,c}\, v_k,
        \qquad c_b = W_b\,[b_1 \| \dots \| b_C] ,

    :math:`W_b` being the official code's ``Conv1d(C, C, kernel_size=D)`` written as a linear
    layer on the flattened :math:`[C, D]` bag embedding. The max-instance logits are
    :math:`c_m = \max_k s_k` (per class). The paper's bag score is the mean of the two streams;
    the official inference averages their (sigmoid) probabilities, and so do we (softmax):

    .. math::
        \mathrm{logits} = \log\big(\tfrac12 \mathrm{softmax}(c_m) + \tfrac12 \mathrm{softmax}(c_b)\big),

    log-probabilities, so ``argmax`` and ``softmax`` of them mean what they do for the other
    modules. Train with :meth:`loss` on :meth:`outputs`:
    :math:`\tfrac12 \mathrm{CE}(c_b, y) + \tfrac12 \mathrm{CE}(c_m, y)` (DS-MIL's loss, with
    softmax cross-entropy in place of its per-class binary cross-entropy).

    Choices: :math:`f` is an MLP (DS-MIL feeds pre-computed features; an empty ``hidden`` does
    the same); the values are the embeddings, :math:`v_k = h_k` (the official default,
    ``passing_v=False``); the query network is the official "non-linear" one; the softmax
    is scaled by :math:`\sqrt{d_q}` as in the official code.

    Args:
        in_dim (int): Instance feature size :math:`F`.
        n_classes (int): Number of bag classes. (default: ``2``)
        hidden (tuple[int, ...]): Widths of the ReLU embedding MLP :math:`f`.
            (default: ``(256, 128, 64)``)
        dropout (float): Dropout after each embedding layer. (default: ``0.0``)
        query_dim (int): Query size :math:`d_q`. (default: ``128``)

    Shapes:
        - **input:** instances :math:`(N, F)`, bag index :math:`(N)`, ``num_bags`` :math:`B`
        - **output:** bag logits :math:`(B, C)`; with ``return_attention=True`` also the
          attention :math:`(N, C)` (one column per class's critical instance), summing to 1 over
          each bag
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int = 2,
        hidden: Hidden = (256, 128, 64),
        dropout: float = 0.0,
        query_dim: int = 128,
    ):
        super().__init__()
        self.in_dim, self.n_classes, self.hidden, self.dropout = in_dim, n_classes, hidden, dropout
        self.query_dim = query_dim
        dim = hidden[-1] if hidden else in_dim
        self.embed = _mlp(in_dim, hidden, dropout)
        self.instance_classifier = nn.Linear(dim, n_classes)
        self.query = nn.Sequential(
            nn.Linear(dim, query_dim), nn.ReLU(), nn.Linear(query_dim, query_dim), nn.Tanh()
        )
        self.bag_classifier = nn.Linear(n_classes * dim, n_classes)
        self.reset_parameters()

    def outputs(self, x: Tensor, batch: Tensor, num_bags: int) -> dict[str, Tensor]:
        """All the streams: ``logits``, ``bag_logits``, ``max_logits`` ``[B, C]``,
        ``instance_logits`` and ``attention`` ``[N, C]``, ``critical`` ``[B, C]`` instance rows."""
        h = self.embed(x)  # [N, D]
        s = self.instance_classifier(h)  # [N, C]
        q = self.query(h)  # [N, Q]
        critical = _segment_argmax(s.detach(), batch, num_bags)  # [B, C]
        score = torch.stack(
            [(q * q[critical[:, c]][batch]).sum(-1) for c in range(self.n_classes)], dim=-1
        )  # [N, C]: <q_k, q_{m_c}> of each instance's own bag
        attention = softmax(score / math.sqrt(self.query_dim), batch, num_nodes=num_bags)
        bag = [
            scatter(attention[:, c : c + 1] * h, batch, dim=0, dim_size=num_bags, reduce="sum")
            for c in range(self.n_classes)
        ]  # C x [B, D]; one class at a time so memory stays O(N D)
        bag_logits = self.bag_classifier(torch.cat(bag, dim=-1))  # [B, C]
        max_logits = scatter(s, batch, dim=0, dim_size=num_bags, reduce="max")  # [B, C]
        both = torch.stack([F.log_softmax(max_logits, -1), F.log_softmax(bag_logits, -1)])
        return dict(
            logits=torch.logsumexp(both, 0) - math.log(2.0),
            bag_logits=bag_logits,
            max_logits=max_logits,
            instance_logits=s,
            attention=attention,
            critical=critical,
        )

    def forward(
        self, x: Tensor, batch: Tensor, num_bags: int, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        out = self.outputs(x, batch, num_bags)
        return (out["logits"], out["attention"]) if return_attention else out["logits"]

    def loss(self, outputs: dict[str, Tensor], y: Tensor, weight: Tensor | None = None) -> Tensor:
        """DS-MIL's training loss, ``0.5 CE(bag_logits, y) + 0.5 CE(max_logits, y)``."""
        return 0.5 * F.cross_entropy(outputs["bag_logits"], y, weight=weight) + 0.5 * (
            F.cross_entropy(outputs["max_logits"], y, weight=weight)
        )


def _top_bottom(score: Tensor, batch: Tensor, num_bags: int, r: int) -> Tensor:
    """Each bag's ``r`` largest scores (descending) then ``r`` smallest (ascending), ``[B, 2r]``.

    A bag of ``n < r`` instances repeats its last available score (its minimum in the top half,
    its maximum in the bottom half); an empty bag gives zeros.
    """
    order = torch.argsort(score, descending=True, stable=True)
    order = order[torch.argsort(batch[order], stable=True)]  # by bag, then score descending
    ranked = score[order]  # [N]
    count = torch.bincount(batch, minlength=num_bags)  # [B]
    start = cumsum(count)[:-1].unsqueeze(-1)  # [B, 1]
    n = count.unsqueeze(-1)
    j = torch.minimum(torch.arange(r, device=score.device), (n - 1).clamp(min=0))  # [B, r]
    index = torch.cat([start + j, start + n - 1 - j], dim=-1).clamp(0, max(score.numel() - 1, 0))
    out = ranked[index] if score.numel() else score.new_zeros(num_bags, 2 * r)
    return out.masked_fill(n == 0, 0.0)


class MinMaxMIL(_MIL):
    r"""Min-max instance-score pooling, "CHOWDER" (Courtiol et al. 2018, arXiv:1802.02212).

    Each instance gets one scalar score :math:`s_k = w^\top g(x_k) + b` (CHOWDER's 1-D
    convolution over the tiles); the :math:`R` largest and :math:`R` smallest scores of the bag,
    sorted, form a :math:`2R` vector (the "MIN-MAX layer") fed to an MLP with sigmoid hidden
    units (200 and 100 in CHOWDER) and dropout.

    Choices: :math:`g` is the identity by default (CHOWDER scores the pre-computed features
    directly); ``embed`` adds a ReLU MLP before the score. A bag with fewer than :math:`R`
    instances repeats its smallest score at the end of the top half and its largest at the end
    of the bottom half, as if its instances were replicated (CHOWDER's slides always have more
    than :math:`R` tiles). CHOWDER's L2 penalty on :math:`w` is left to the optimiser's weight
    decay.

    Args:
        in_dim (int): Instance feature size :math:`F`.
        n_classes (int): Number of bag classes. (default: ``2``)
        hidden (tuple[int, ...]): Widths of the sigmoid MLP on the :math:`2R` scores.
            (default: ``(200, 100)``)
        dropout (float): Dropout after each MLP (and embedding) layer. (default: ``0.0``)
        r (int): Number :math:`R` of top and of bottom instances. (default: ``5``)
        embed (tuple[int, ...]): Widths of an optional ReLU MLP :math:`g` before the score.
            (default: ``()``)

    Shapes:
        - **input:** instances :math:`(N, F)`, bag index :math:`(N)`, ``num_bags`` :math:`B`
        - **output:** bag logits :math:`(B, C)`; with ``return_attention=True`` also the
          instance scores :math:`(N)`
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int = 2,
        hidden: Hidden = (200, 100),
        dropout: float = 0.0,
        r: int = 5,
        embed: Hidden = (),
    ):
        super().__init__()
        self.in_dim, self.n_classes, self.hidden, self.dropout = in_dim, n_classes, hidden, dropout
        self.r, self.embed_widths = r, embed
        self.embed = _mlp(in_dim, embed, dropout)
        self.score = nn.Linear(embed[-1] if embed else in_dim, 1)
        self.mlp = _mlp(2 * r, hidden, dropout, act=nn.Sigmoid)
        self.classifier = nn.Linear(hidden[-1] if hidden else 2 * r, n_classes)
        self.reset_parameters()

    def forward(
        self, x: Tensor, batch: Tensor, num_bags: int, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        s = self.score(self.embed(x)).squeeze(-1)  # [N]
        extremes = _top_bottom(s, batch, num_bags, self.r)  # [B, 2R]
        logits = self.classifier(self.mlp(extremes))  # [B, C]
        return (logits, s) if return_attention else logits

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", r={self.r})"


def _rank_in_bags(
    score: Tensor, batch: Tensor, num_bags: int, descending: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """Instance rows sorted by bag, then by ``score``: ``order [N]``, the ``rank [N]`` of each
    sorted row within its bag (0 = first) and the bag sizes ``count [B]``. Ties keep row order."""
    order = torch.argsort(score, descending=descending, stable=True)
    order = order[torch.argsort(batch[order], stable=True)]  # [N] by bag, then by score
    count = torch.bincount(batch, minlength=num_bags)  # [B]
    start = cumsum(count)[:-1]  # [B]
    rank = torch.arange(score.numel(), device=score.device) - start[batch[order]]  # [N]
    return order, rank, count


class CLAMSB(_MIL):
    r"""Single-branch clustering-constrained attention MIL, CLAM-SB (Lu et al., "Data-efficient
    and weakly supervised computational pathology on whole-slide images", Nat. Biomed. Eng. 2021).

    Instance embeddings :math:`h_k = f(x_k)` (CLAM's first fc layer) are pooled with gated
    attention (Ilse et al.'s Eq. 10) into the bag representation :math:`z = \sum_k a_k h_k`,
    and logits :math:`= W_c z + b`:

    .. math::
        a_k = \mathrm{softmax}_{k}\big(w^\top (\tanh(V h_k) \odot \mathrm{sigm}(U h_k))\big).

    Instance-level clustering (CLAM's "Instance-level clustering" section): per bag, the
    :math:`k` instances of highest attention (:math:`\mathcal{T}^+`) and of lowest attention
    (:math:`\mathcal{T}^-`) go through one 2-way instance classifier :math:`g_c` per class.
    For the bag's class :math:`y`, :math:`\mathcal{T}^+` gets pseudo-label 1 ("in class") and
    :math:`\mathcal{T}^-` pseudo-label 0; with ``subtyping=True`` (mutually exclusive classes)
    :math:`\mathcal{T}^+` also gets pseudo-label 0 under every other class's :math:`g_c`. The
    instance loss averages over the selected instances of a (bag, class) pair, then over the
    classes (``subtyping``) and over the bags; the training loss is

    .. math::
        \mathcal{L} = c_1\,\mathrm{CE}(\mathrm{logits}, y) + (1 - c_1)\,\mathcal{L}_{\mathrm{inst}},
        \qquad c_1 = \texttt{bag\_weight}.

    :meth:`outputs` selects :math:`\mathcal{T}^\pm` and runs the instance classifiers; the
    pseudo-labels need :math:`y`, so :meth:`loss` builds them.

    Choices: CLAM itself trains on frozen (truncated ResNet-50) patch features; we use the
    same patch feature extractor for all methods, and :math:`f` is a ReLU MLP
    (CLAM-SB "small" is fc-512 and attention 256 for 1024-d features; our defaults are
    fc-256 and attention 128). CLAM's default instance loss is the smooth top-1 SVM; we use
    cross-entropy (CLAM's ``--inst_loss ce`` option). :math:`k` is clipped to the bag size, so
    a bag of :math:`n < 2k` instances has some instances in both :math:`\mathcal{T}^+` and
    :math:`\mathcal{T}^-` (CLAM's top-k needs at least :math:`k`). The selection is an index
    (not differentiated); the instance loss trains :math:`f` and :math:`g_c`, not the
    attention. ``weight`` (class weights) applies to the bag term only; the instance
    pseudo-labels are in/out, not bag classes. :math:`w` has no bias (it cancels in the
    softmax); dropout follows the fc layer and both attention branches, as in CLAM.

    Args:
        in_dim (int): Instance feature size :math:`F`.
        n_classes (int): Number of bag classes. (default: ``2``)
        hidden (tuple[int, ...]): Widths of the ReLU embedding MLP :math:`f`.
            (default: ``(256,)``)
        dropout (float): Dropout after each embedding layer and in the attention branches.
            (default: ``0.25``)
        attention_dim (int): Rows of :math:`V` and :math:`U`. (default: ``128``)
        k_sample (int): Instances :math:`k` in each of :math:`\mathcal{T}^+`,
            :math:`\mathcal{T}^-`. (default: ``8``)
        bag_weight (float): Weight :math:`c_1` of the bag loss. (default: ``0.7``)
        subtyping (bool): Also train the other classes' instance classifiers on
            :math:`\mathcal{T}^+` with pseudo-label 0. (default: ``True``)

    Shapes:
        - **input:** instances :math:`(N, F)`, bag index :math:`(N)`, ``num_bags`` :math:`B`
        - **output:** bag logits :math:`(B, C)`; with ``return_attention=True`` also the
          attention :math:`(N)`, summing to 1 over each bag
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int = 2,
        hidden: Hidden = (256,),
        dropout: float = 0.25,
        attention_dim: int = 128,
        k_sample: int = 8,
        bag_weight: float = 0.7,
        subtyping: bool = True,
    ):
        super().__init__()
        self.in_dim, self.n_classes, self.hidden, self.dropout = in_dim, n_classes, hidden, dropout
        self.attention_dim, self.k_sample = attention_dim, k_sample
        self.bag_weight, self.subtyping = bag_weight, subtyping
        dim = hidden[-1] if hidden else in_dim
        self.embed = _mlp(in_dim, hidden, dropout)
        self.attention_V = nn.Linear(dim, attention_dim)
        self.attention_U = nn.Linear(dim, attention_dim)
        self.attention_w = nn.Linear(attention_dim, 1, bias=False)
        self.attention_dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(dim, n_classes)
        self.instance_classifiers = nn.ModuleList(nn.Linear(dim, 2) for _ in range(n_classes))
        self.reset_parameters()

    def select(self, attention: Tensor, batch: Tensor, num_bags: int) -> tuple[Tensor, Tensor]:
        """Rows of each bag's ``min(k, n)`` highest- and lowest-attention instances, ``[T]``
        each, grouped by bag in bag order (so ``top[i]`` and ``bottom[i]`` share a bag)."""
        order, rank, count = _rank_in_bags(attention, batch, num_bags)
        n = count[batch[order]]  # [N] size of each sorted row's bag
        k = n.clamp(max=self.k_sample)
        return order[rank < k], order[rank >= n - k]

    def outputs(self, x: Tensor, batch: Tensor, num_bags: int) -> dict[str, Tensor]:
        """``logits`` ``[B, C]``, ``attention`` ``[N]``, ``embeddings`` ``[N, D]``, ``batch``
        ``[N]``, the selected rows ``top`` and ``bottom`` ``[T]`` and ``instance_logits``
        ``[2T, C, 2]`` (rows ``top`` then ``bottom``, under each class's instance classifier)."""
        h = self.embed(x)  # [N, D]
        gate = self.attention_dropout(torch.tanh(self.attention_V(h)))
        gate = gate * self.attention_dropout(torch.sigmoid(self.attention_U(h)))  # [N, L]
        a = softmax(self.attention_w(gate).squeeze(-1), batch, num_nodes=num_bags)  # [N]
        z = scatter(a.unsqueeze(-1) * h, batch, dim=0, dim_size=num_bags, reduce="sum")  # [B, D]
        top, bottom = self.select(a.detach(), batch, num_bags)  # [T], [T]
        selected = h[torch.cat([top, bottom])]  # [2T, D]
        instance_logits = torch.stack([g(selected) for g in self.instance_classifiers], dim=1)
        return dict(
            logits=self.classifier(z),
            attention=a,
            embeddings=h,
            batch=batch,
            top=top,
            bottom=bottom,
            instance_logits=instance_logits,  # [2T, C, 2]
        )

    def forward(
        self, x: Tensor, batch: Tensor, num_bags: int, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        out = self.outputs(x, batch, num_bags)
        return (out["logits"], out["attention"]) if return_attention else out["logits"]

    def instance_loss(self, outputs: dict[str, Tensor], y: Tensor) -> Tensor:
        """The instance-clustering loss: per bag, the mean cross-entropy of the in-class
        classifier on :math:`\\mathcal{T}^+` (label 1) and :math:`\\mathcal{T}^-` (label 0),
        plus (``subtyping``) each other class's mean on :math:`\\mathcal{T}^+` (label 0),
        divided by the number of classes; averaged over the non-empty bags."""
        top, logits = outputs["top"], outputs["instance_logits"]  # [T], [2T, C, 2]
        t, c = top.numel(), self.n_classes
        if t == 0:
            return logits.sum() * 0.0
        bag = outputs["batch"][top]  # [T]
        in_class = y[bag].unsqueeze(-1) == torch.arange(c, device=y.device)  # [T, C]
        ce_top = F.cross_entropy(
            logits[:t].reshape(-1, 2), in_class.long().flatten(), reduction="none"
        ).view(t, c)
        ce_bottom = F.cross_entropy(
            logits[t:].reshape(-1, 2), torch.zeros_like(top).repeat_interleave(c), reduction="none"
        ).view(t, c)
        out_of_class = ce_top if self.subtyping else torch.zeros_like(ce_top)
        per_row = torch.where(in_class, 0.5 * (ce_top + ce_bottom), out_of_class)  # [T, C]
        k = torch.bincount(bag, minlength=y.numel())  # [B] selected rows per bag
        per_bag = scatter(per_row.sum(-1), bag, dim=0, dim_size=y.numel(), reduce="sum")
        per_bag = per_bag[k > 0] / k[k > 0] / (c if self.subtyping else 1)
        return per_bag.mean()

    def loss(self, outputs: dict[str, Tensor], y: Tensor, weight: Tensor | None = None) -> Tensor:
        """CLAM's ``bag_weight * CE(logits, y) + (1 - bag_weight) * instance_loss``."""
        bag_loss = F.cross_entropy(outputs["logits"], y, weight=weight)
        return self.bag_weight * bag_loss + (1.0 - self.bag_weight) * self.instance_loss(outputs, y)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", k_sample={self.k_sample})"


@torch.no_grad()
def bag_kmeans(x: Tensor, batch: Tensor, num_bags: int, n_clusters: int, iters: int) -> Tensor:
    r"""Lloyd's k-means run separately on each bag, all bags at once; the cluster ``[N]``
    (``0 .. n_clusters - 1``) of each instance.

    A bag of :math:`n` instances gets :math:`K_b = \min(K, n)` clusters. Initialisation is
    farthest-first (the greedy, deterministic form of k-means++): the first centroid is the
    instance nearest to the bag mean, each next one the instance farthest from the centroids
    chosen so far; it depends on the instance set, not on its order (ties aside). Then
    ``iters`` rounds of assignment and mean update; a cluster left empty keeps its centroid.
    Nothing is differentiated (``x`` is detached).
    """
    x = x.detach()
    k = n_clusters
    if x.size(0) == 0:
        return batch.new_zeros(0)

    def sq_dist(centre: Tensor) -> Tensor:  # [B, F] one centre per bag -> [N]
        return (x - centre[batch]).square().sum(-1)

    def farthest(dist: Tensor) -> Tensor:  # [N] -> [B] the row of each bag's largest dist
        return _segment_argmax(dist.unsqueeze(-1), batch, num_bags).squeeze(-1)

    centre = scatter(x, batch, dim=0, dim_size=num_bags, reduce="mean")  # [B, F]
    rows = [farthest(-sq_dist(centre))]  # K x [B]
    nearest = sq_dist(x[rows[0]])  # [N] distance to the nearest chosen centroid
    for _ in range(1, k):
        rows.append(farthest(nearest))
        nearest = torch.minimum(nearest, sq_dist(x[rows[-1]]))
    k_bag = torch.bincount(batch, minlength=num_bags).clamp(max=k)  # [B]
    valid = torch.arange(k, device=x.device) < k_bag.unsqueeze(-1)  # [B, K] clusters in use
    centroids = x[torch.stack(rows, dim=-1)] * valid.unsqueeze(-1)  # [B, K, F]
    invalid = ~valid[batch]  # [N, K]

    def assign() -> Tensor:
        # one cluster at a time: memory O(N F), not O(N K F)
        dist = torch.stack([sq_dist(centroids[:, c]) for c in range(k)], dim=-1)  # [N, K]
        return dist.masked_fill(invalid, math.inf).argmin(-1)  # [N]

    for _ in range(iters):
        segment = batch * k + assign()  # [N] global cluster id
        mean = scatter(x, segment, dim=0, dim_size=num_bags * k, reduce="mean")  # [B K, F]
        filled = torch.bincount(segment, minlength=num_bags * k) > 0  # [B K]
        centroids = torch.where(filled.unsqueeze(-1), mean, centroids.flatten(0, 1))
        centroids = centroids.view(num_bags, k, -1)
    return assign()


class DeepAttnMIL(_MIL):
    r"""Deep attention MIL over phenotype clusters, DeepAttnMISL (Yao et al., "Whole slide
    images based cancer survival prediction using attention guided deep multiple instance
    learning networks", Med. Image Anal. 2020).

    The instances of each bag are grouped into :math:`K` phenotype clusters by k-means on their
    features. A shared ("Siamese") MI-FCN :math:`f` embeds every instance and a local mean
    pooling gives one embedding per cluster, :math:`e_j = \frac{1}{|S_j|}\sum_{k \in S_j} f(x_k)`;
    attention pooling (Ilse et al.) over the bag's non-empty clusters gives

    .. math::
        a_j = \mathrm{softmax}_{j}\big(w^\top (\tanh(V e_j) \odot \mathrm{sigm}(U e_j))\big),
        \qquad z = \sum_j a_j e_j ,

    and logits :math:`= W\,g(z) + b` with :math:`g` the fully connected head.

    Choices: the paper predicts survival with a Cox partial-likelihood loss; here the head
    ends in ``n_classes`` logits trained with cross-entropy. We use the same patch feature
    extractor for all methods; the MI-FCN is a ReLU MLP on the frozen features (the public
    DeepAttnMISL code uses a 1x1 convolution to 64 channels, i.e. a linear layer, and a head
    fc-32, ReLU, dropout 0.5, which are our defaults). Clustering runs inside the module, per
    bag, with :func:`bag_kmeans` (deterministic farthest-first initialisation, ``kmeans_iters``
    Lloyd rounds, no gradient) instead of an offline k-means; a bag of :math:`n < K` instances
    has :math:`n` clusters; empty clusters are left out of the softmax (the public code masks
    them). ``gated=False`` gives the plain
    :math:`\tanh` attention of the public code. With ``return_attention=True`` the attention is
    per instance, :math:`a_{j(k)} / |S_{j(k)}|`, the weight of :math:`f(x_k)` in :math:`z`
    (it sums to 1 over each bag); the cluster attention is in :meth:`outputs`.

    Args:
        in_dim (int): Instance feature size :math:`F`.
        n_classes (int): Number of bag classes. (default: ``2``)
        hidden (tuple[int, ...]): Widths of the ReLU MI-FCN :math:`f`. (default: ``(64,)``)
        dropout (float): Dropout after each layer of the head :math:`g`. (default: ``0.5``)
        attention_dim (int): Rows of :math:`V` and :math:`U`. (default: ``32``)
        gated (bool): Gated attention; ``False`` drops :math:`U`. (default: ``True``)
        head (tuple[int, ...]): Widths of the ReLU head :math:`g`. (default: ``(32,)``)
        n_clusters (int): Phenotype clusters :math:`K` per bag. (default: ``8``)
        kmeans_iters (int): Lloyd iterations. (default: ``10``)

    Shapes:
        - **input:** instances :math:`(N, F)`, bag index :math:`(N)`, ``num_bags`` :math:`B`
        - **output:** bag logits :math:`(B, C)`; with ``return_attention=True`` also the
          per-instance attention :math:`(N)`, summing to 1 over each bag
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int = 2,
        hidden: Hidden = (64,),
        dropout: float = 0.5,
        attention_dim: int = 32,
        gated: bool = True,
        head: Hidden = (32,),
        n_clusters: int = 8,
        kmeans_iters: int = 10,
    ):
        super().__init__()
        self.in_dim, self.n_classes, self.hidden, self.dropout = in_dim, n_classes, hidden, dropout
        self.attention_dim, self.gated, self.head_widths = attention_dim, gated, head
        self.n_clusters, self.kmeans_iters = n_clusters, kmeans_iters
        dim = hidden[-1] if hidden else in_dim
        self.embed = _mlp(in_dim, hidden, 0.0)
        self.attention_V = nn.Linear(dim, attention_dim)
        self.attention_U = nn.Linear(dim, attention_dim) if gated else None
        self.attention_w = nn.Linear(attention_dim, 1, bias=False)
        self.head = _mlp(dim, head, dropout)
        self.classifier = nn.Linear(head[-1] if head else dim, n_classes)
        self.reset_parameters()

    def outputs(self, x: Tensor, batch: Tensor, num_bags: int) -> dict[str, Tensor]:
        """``logits`` ``[B, C]``, per-instance ``attention`` and ``cluster`` ``[N]``,
        ``cluster_attention`` ``[B, K]`` (0 for empty clusters)."""
        k = self.n_clusters
        cluster = bag_kmeans(x, batch, num_bags, k, self.kmeans_iters)  # [N]
        segment = batch * k + cluster  # [N] global cluster id
        size = torch.bincount(segment, minlength=num_bags * k)  # [B K]
        h = self.embed(x)  # [N, D]
        e = scatter(h, segment, dim=0, dim_size=num_bags * k, reduce="mean")  # [B K, D]
        kept = size.nonzero().squeeze(-1)  # [M] non-empty clusters
        e, cluster_bag = e[kept], kept // k  # [M, D], [M]
        gate = torch.tanh(self.attention_V(e))  # [M, L]
        if self.attention_U is not None:
            gate = gate * torch.sigmoid(self.attention_U(e))
        a = softmax(self.attention_w(gate).squeeze(-1), cluster_bag, num_nodes=num_bags)  # [M]
        z = scatter(a.unsqueeze(-1) * e, cluster_bag, dim=0, dim_size=num_bags, reduce="sum")
        cluster_attention = a.new_zeros(num_bags * k).index_copy(0, kept, a)  # [B K]
        return dict(
            logits=self.classifier(self.head(z)),  # [B, C]
            attention=cluster_attention[segment] / size[segment],  # [N]
            cluster=cluster,
            cluster_attention=cluster_attention.view(num_bags, k),
        )

    def forward(
        self, x: Tensor, batch: Tensor, num_bags: int, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        out = self.outputs(x, batch, num_bags)
        return (out["logits"], out["attention"]) if return_attention else out["logits"]

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", n_clusters={self.n_clusters})"


class MILRNN(_MIL):
    r"""MIL with an RNN aggregator, MIL-RNN (Campanella et al., "Clinical-grade computational
    pathology using weakly supervised deep learning on whole slide images", Nat. Med. 2019).

    An instance classifier :math:`s_k = W_s h_k + b_s`, :math:`h_k = f(x_k)`, scores each
    instance by its probability of a non-zero class,
    :math:`p_k = \max_{c \geq 1} \mathrm{softmax}(s_k)_c` (the positive-class probability for
    two classes), and is trained with the MIL top-1 rule: the bag's highest-scoring instance
    :math:`m = \arg\max_k p_k` takes the bag label, :math:`\mathrm{CE}(s_m, y)`. The
    embeddings of the bag's :math:`S` highest-scoring instances, in descending order of
    :math:`p`, are fed to an Elman RNN,

    .. math::
        r_t = \sigma\big(W_i h_{(t)} + W_r r_{t-1} + b\big), \qquad r_0 = 0,

    and logits :math:`= W r_S + b`. Training loss:
    :math:`\mathrm{CE}(\mathrm{logits}, y) + \lambda\,\mathrm{CE}(s_m, y)`.

    Choices: Campanella et al. fine-tune a ResNet-34 with the top-1 rule, then train the RNN on
    its frozen 512-d penultimate embeddings; we use the same patch feature extractor for all
    methods, replace the CNN by an MLP :math:`f` on the frozen features and train both stages
    jointly (:math:`\lambda` = ``instance_weight``; the ranking is an index, not
    differentiated). :math:`\sigma` is a ReLU as in the public MIL-RNN code
    (``nonlinearity="tanh"`` for the classic Elman cell). A bag of :math:`n < S` instances is a
    sequence of length :math:`n` (``pack_padded_sequence`` with the true lengths), so a bag
    gives the same logits alone or batched; an empty bag gets :math:`r = 0`. The sequence is
    always in descending score order (the model is a deterministic function of the set).
    ``weight`` applies to both cross-entropy terms.

    Args:
        in_dim (int): Instance feature size :math:`F`.
        n_classes (int): Number of bag classes. (default: ``2``)
        hidden (tuple[int, ...]): Widths of the ReLU embedding MLP :math:`f` (the CNN's
            512-d embedding). (default: ``(512,)``)
        dropout (float): Dropout after each embedding layer. (default: ``0.0``)
        k (int): Sequence length :math:`S` (Campanella et al.'s :math:`S = 10`).
            (default: ``10``)
        rnn_dim (int): RNN state size. (default: ``128``)
        nonlinearity (str): ``"relu"`` or ``"tanh"``. (default: ``"relu"``)
        instance_weight (float): Weight :math:`\lambda` of the top-1 instance loss.
            (default: ``1.0``)

    Shapes:
        - **input:** instances :math:`(N, F)`, bag index :math:`(N)`, ``num_bags`` :math:`B`
        - **output:** bag logits :math:`(B, C)`; with ``return_attention=True`` also the
          instance scores :math:`p` :math:`(N)`
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int = 2,
        hidden: Hidden = (512,),
        dropout: float = 0.0,
        k: int = 10,
        rnn_dim: int = 128,
        nonlinearity: str = "relu",
        instance_weight: float = 1.0,
    ):
        super().__init__()
        self.in_dim, self.n_classes, self.hidden, self.dropout = in_dim, n_classes, hidden, dropout
        self.k, self.rnn_dim, self.nonlinearity = k, rnn_dim, nonlinearity
        self.instance_weight = instance_weight
        dim = hidden[-1] if hidden else in_dim
        self.embed = _mlp(in_dim, hidden, dropout)
        self.instance_classifier = nn.Linear(dim, n_classes)
        self.rnn = nn.RNN(dim, rnn_dim, nonlinearity=nonlinearity, batch_first=True)
        self.classifier = nn.Linear(rnn_dim, n_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.rnn.reset_parameters()

    def outputs(self, x: Tensor, batch: Tensor, num_bags: int) -> dict[str, Tensor]:
        """``logits`` (RNN) and ``max_logits`` (top-1 instance; 0 for an empty bag) ``[B, C]``,
        ``instance_logits`` ``[N, C]``, ``scores`` ``[N]``, ``top`` ``[B, S]`` (instance rows
        in descending score, ``-1`` past the bag's end) and ``lengths`` ``[B]``."""
        h = self.embed(x)  # [N, D]
        s = self.instance_classifier(h)  # [N, C]
        p = torch.softmax(s, -1)[:, 1:].amax(-1)  # [N]
        order, rank, count = _rank_in_bags(p.detach(), batch, num_bags)
        keep = rank < self.k
        rows, bag, step = order[keep], batch[order[keep]], rank[keep]  # [T] each
        top = torch.full((num_bags, self.k), -1, dtype=torch.long, device=x.device)
        top[bag, step] = rows  # [B, S]
        lengths = count.clamp(max=self.k)  # [B]
        state = h.new_zeros(num_bags, self.rnn_dim)  # [B, H]
        full = (lengths > 0).nonzero().squeeze(-1)  # [B'] non-empty bags
        if full.numel():
            seq = h.new_zeros(num_bags, self.k, h.size(-1)).index_put((bag, step), h[rows])
            packed = nn.utils.rnn.pack_padded_sequence(
                seq[full], lengths[full].cpu(), batch_first=True, enforce_sorted=False
            )
            _, last = self.rnn(packed)  # [1, B', H], the state after each bag's last step
            state = state.index_copy(0, full, last[0])
        max_logits = s.new_zeros(num_bags, self.n_classes).index_copy(0, full, s[top[full, 0]])
        return dict(
            logits=self.classifier(state),  # [B, C]
            max_logits=max_logits,
            instance_logits=s,
            scores=p,
            top=top,
            lengths=lengths,
        )

    def forward(
        self, x: Tensor, batch: Tensor, num_bags: int, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        out = self.outputs(x, batch, num_bags)
        return (out["logits"], out["scores"]) if return_attention else out["logits"]

    def loss(self, outputs: dict[str, Tensor], y: Tensor, weight: Tensor | None = None) -> Tensor:
        """``CE(logits, y) + instance_weight * CE(max_logits, y)``, the top-1 term over the
        non-empty bags."""
        full = outputs["lengths"] > 0
        top1 = outputs["max_logits"].sum() * 0.0  # no non-empty bag: no top-1 term
        if full.any():
            top1 = F.cross_entropy(outputs["max_logits"][full], y[full], weight=weight)
        return F.cross_entropy(outputs["logits"], y, weight=weight) + self.instance_weight * top1

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", k={self.k})"
