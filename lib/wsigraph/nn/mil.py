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
