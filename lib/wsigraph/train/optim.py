r"""Lookahead over RAdam, MiCo's optimiser (official ``opt: lookahead_radam``).

The official code (``junjianli106/MiCo``, ``MyOptimizer/optim_factory.py``, a copy of timm's
factory) builds ``Lookahead(RAdam(groups, lr, weight_decay=0))`` where ``groups`` puts every
1-D parameter and every ``*.bias`` in a group without weight decay and the rest in a group
with it (``add_weight_decay``). Its RAdam (``MyOptimizer/radam.py``) decays decoupled,
:math:`\theta \leftarrow \theta - \eta\lambda\theta`, which is ``torch.optim.RAdam`` with
``decoupled_weight_decay=True``.

Lookahead (Zhang et al., NeurIPS 2019; official ``MyOptimizer/lookahead.py``, ``alpha=0.5``,
``k=6``): every ``k``-th step of the inner optimiser,

.. math::
    \phi \leftarrow \phi + \alpha(\theta - \phi), \qquad \theta \leftarrow \phi

for the slow weights :math:`\phi` of each parameter that has a gradient. As in the official
code, :math:`\phi` is created lazily as a copy of :math:`\theta` at the first synchronisation
(so the first one, after ``k`` steps, leaves :math:`\theta` unchanged), and a parameter without
a gradient at a synchronisation is skipped.
"""

from __future__ import annotations

import torch
from torch import nn

LOOKAHEAD_K = 6
LOOKAHEAD_ALPHA = 0.5


class Lookahead:
    """Lookahead around any ``torch.optim`` optimiser (update in the module docstring).

    Args:
        base: the inner ("fast") optimiser.
        alpha: slow step size (default ``0.5``, official).
        k: inner steps between synchronisations (default ``6``, official).
    """

    def __init__(
        self, base: torch.optim.Optimizer, alpha: float = LOOKAHEAD_ALPHA, k: int = LOOKAHEAD_K
    ):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.base, self.alpha, self.k = base, alpha, k
        self.steps = 0
        self.slow: dict[nn.Parameter, torch.Tensor] = {}

    @property
    def param_groups(self) -> list[dict]:
        return self.base.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def sync(self) -> None:
        """Move the slow weights towards the fast ones and reset the fast ones to them."""
        for group in self.base.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p not in self.slow:
                    self.slow[p] = p.detach().clone()
                slow = self.slow[p]
                slow.add_(p - slow, alpha=self.alpha)
                p.copy_(slow)

    def step(self) -> None:
        self.base.step()
        self.steps += 1
        if self.steps % self.k == 0:
            self.sync()

    def __repr__(self) -> str:
        return f"Lookahead({type(self.base).__name__}, alpha={self.alpha}, k={self.k})"


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The official ``add_weight_decay``: no decay for 1-D parameters and biases."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]


def lookahead_radam(
    model: nn.Module, lr: float = 2e-4, weight_decay: float = 1e-5, alpha: float = LOOKAHEAD_ALPHA,
    k: int = LOOKAHEAD_K,
) -> Lookahead:  # fmt: skip
    """MiCo's optimiser: ``Lookahead(RAdam)`` with the official groups and settings
    (lr ``2e-4``, weight decay ``1e-5``, ``alpha=0.5``, ``k=6``)."""
    base = torch.optim.RAdam(
        decay_groups(model, weight_decay), lr=lr, weight_decay=weight_decay,
        decoupled_weight_decay=True,
    )  # fmt: skip
    return Lookahead(base, alpha, k)
