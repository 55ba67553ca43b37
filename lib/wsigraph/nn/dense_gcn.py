r"""ABiG-Net's official building blocks: the pair-MLP adjacency generator and the dense GCN.

A port of ``abignet_model.py`` of the official code (``Paul1086/ABiG_Net``), written from its
equations. One image is one graph of ``n`` patches with features ``x [n, F]`` (69 in the
official code, :mod:`wsigraph.graphs.abignet_features`); every module here works on one image.

Generator (:class:`AdjacencyGenerator`)
    Edge logit of every ordered pair, :math:`\ell_{ij} = \mathrm{MLP}([x_i \,\|\, x_j])` with the
    MLP ``2F -> 32 -> 16 -> 1`` (ReLU between). A *binary Gumbel-sigmoid* sample

    .. math::
        a_{ij} = \sigma\bigl((\ell_{ij} + g_{ij}) / \tau\bigr), \qquad
        g_{ij} = -\log(-\log(u_{ij} + 10^{-10}) + 10^{-10}),\; u_{ij} \sim U(0, 1),

    (one Gumbel draw per entry, as the official ``sample_binary_gumbel_sigmoid``; not the
    logistic noise of the binary Concrete, which is the difference of two Gumbels), then
    :math:`A = (a + a^\top)/2` with diagonal 1 (:func:`symmetrise`). The temperature
    :math:`\tau` is a buffer set by the trainer (:func:`wsigraph.train.bilevel.temperatures`);
    it is part of the state dict, so a restored checkpoint evaluates at its own temperature.

    Evaluation. The official code samples at evaluation too (``sample=True``, noisy
    predictions). Ours by default is deterministic: the **expected adjacency**
    :math:`\bar A = \mathrm{symmetrise}\bigl(\mathbb{E}_u[\sigma((\ell + g(u))/\tau)]\bigr)`, the
    expectation of exactly the official sample over its noise, computed by the midpoint rule
    at ``quadrature`` fixed quantiles :math:`u_k = (k + 1/2)/M` (:func:`expected_gumbel_sigmoid`;
    symmetrising and the unit diagonal commute with the expectation).

Dense GCN (:class:`DenseGCN`)
    Three layers :math:`H_{l} = \mathrm{dropout}(\mathrm{ReLU}(\mathrm{LN}(\hat A H_{l-1} W_l +
    b_l)))`, :math:`\hat A = D^{-1/2} A D^{-1/2}`, :math:`D = \mathrm{diag}(\max(A\mathbf 1,
    10^{-8}))` (no self loops added: the generator's diagonal is already 1), widths
    ``F -> 64 -> 512 -> 1024``, :math:`W_l \sim 0.01\,\mathcal N(0, 1)`, :math:`b_l = 0`,
    dropout 0.2. Read-out: the node means of the three layers' outputs concatenated
    (``64 + 512 + 1024 = 1600``; the means are taken after dropout, as in the official
    code), then ``Linear 1600 -> 256, ReLU, dropout, Linear 256 -> 32, ReLU, dropout,
    Linear 32 -> classes`` (PyTorch's default ``Linear`` init).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EPS = 1e-10  # the official noise's guard inside both logs
DEGREE_FLOOR = 1e-8  # the official degree clamp


def gumbel_noise(u: Tensor) -> Tensor:
    """The official Gumbel draw ``-log(-log(u + 1e-10) + 1e-10)`` of uniforms ``u``."""
    return -torch.log(-torch.log(u + EPS) + EPS)


def gumbel_sigmoid(logits: Tensor, tau: float, u: Tensor | None = None) -> Tensor:
    """One binary Gumbel-sigmoid sample ``sigmoid((logits + g) / tau)`` (soft, ``hard=False``
    as in the official code); ``u`` the uniforms (default: fresh ``torch.rand_like``)."""
    if u is None:
        u = torch.rand_like(logits)
    return torch.sigmoid((logits + gumbel_noise(u)) / tau)


def expected_gumbel_sigmoid(logits: Tensor, tau: float, quadrature: int = 64) -> Tensor:
    """``E_u[sigmoid((logits + g(u)) / tau)]`` by the midpoint rule at ``quadrature`` fixed
    quantiles of ``u``: deterministic, no random numbers drawn."""
    if quadrature < 1:
        raise ValueError(f"quadrature must be >= 1, got {quadrature}")
    u = (torch.arange(quadrature, dtype=logits.dtype, device=logits.device) + 0.5) / quadrature
    g = gumbel_noise(u)  # [M]
    return torch.sigmoid((logits.unsqueeze(-1) + g) / tau).mean(-1)


def symmetrise(a: Tensor) -> Tensor:
    """``(a + a^T) / 2`` with the diagonal set to 1 (out of place, so gradients flow)."""
    eye = torch.eye(a.size(0), dtype=a.dtype, device=a.device)
    return (a + a.T) / 2 * (1 - eye) + eye


def normalise_adjacency(a: Tensor) -> Tensor:
    """``D^-1/2 A D^-1/2`` with the row sums of ``A`` as degrees, floored at 1e-8."""
    d = a.sum(dim=1).clamp(min=DEGREE_FLOOR).pow(-0.5)
    return d[:, None] * a * d[None, :]


class AdjacencyGenerator(nn.Module):
    """The official ``AdjacencyGenerator``: pair MLP, Gumbel-sigmoid, symmetrised (see module).

    Args:
        in_dim: patch feature size ``F``.
        hidden: the pair MLP's hidden widths (official ``(32, 16)``).
        tau: initial temperature (the trainer sets it every iteration).
        quadrature: quantiles of the deterministic expected adjacency.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (32, 16),
        tau: float = 1.0,
        quadrature: int = 64,
    ):
        super().__init__()
        widths = [2 * in_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(widths[-1], 1))
        self.quadrature = quadrature
        self.register_buffer("tau", torch.tensor(float(tau)))

    def set_tau(self, tau: float) -> None:
        self.tau.fill_(float(tau))

    def logits(self, x: Tensor) -> Tensor:
        """Edge logits ``[n, n]``: entry ``(i, j)`` is the MLP on ``[x_i || x_j]``."""
        # The first Linear on [x_i || x_j] is W_a x_i + W_b x_j + b: computed per patch, then
        # summed per pair (the same numbers as on the concatenated [n * n, 2F] pairs, without
        # building them).
        first = self.mlp[0]
        f = x.size(-1)
        u = F.linear(x, first.weight[:, :f], first.bias)  # [n, h]
        v = F.linear(x, first.weight[:, f:])  # [n, h]
        h = u.unsqueeze(1) + v.unsqueeze(0)  # [n, n, h]
        return self.mlp[1:](h).squeeze(-1)

    def forward(self, x: Tensor, sample: bool = True) -> Tensor:
        """The adjacency ``[n, n]``: a Gumbel-sigmoid sample (``sample``) or its expectation."""
        logits = self.logits(x)
        tau = float(self.tau)
        a = (
            gumbel_sigmoid(logits, tau)
            if sample
            else expected_gumbel_sigmoid(logits, tau, self.quadrature)
        )
        return symmetrise(a)


class DenseGCNLayer(nn.Module):
    """``D^-1/2 A D^-1/2 (x W) + b`` with ``W ~ 0.01 N(0, 1)``, ``b = 0`` (official init)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_dim, out_dim) * 0.01)
        self.bias = nn.Parameter(torch.zeros(out_dim))

    def forward(self, x: Tensor, a: Tensor) -> Tensor:
        return normalise_adjacency(a) @ (x @ self.weight) + self.bias


class DenseGCN(nn.Module):
    """The official ``DenseGCN``: 3 dense GCN layers with LayerNorm, 3 mean-pools, MLP head.

    Args:
        in_dim: patch feature size ``F``.
        n_classes: output size.
        widths: GCN widths (official ``(64, 512, 1024)``).
        head: hidden widths of the classifier MLP (official ``(256, 32)``).
        dropout: after every GCN layer and hidden head layer (official ``0.2``).
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        widths: Sequence[int] = (64, 512, 1024),
        head: Sequence[int] = (256, 32),
        dropout: float = 0.2,
    ):
        super().__init__()
        self.dropout = dropout
        dims = [in_dim, *widths]
        self.convs = nn.ModuleList(
            DenseGCNLayer(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(b) for b in widths)
        hd = [sum(widths), *head]
        self.head = nn.ModuleList(nn.Linear(a, b) for a, b in zip(hd[:-1], hd[1:], strict=True))
        self.out = nn.Linear(hd[-1], n_classes)

    def forward(self, x: Tensor, a: Tensor) -> Tensor:
        """Logits ``[1, n_classes]`` of one graph (``x [n, F]``, ``a [n, n]``)."""
        pools = []
        h = x
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = F.dropout(F.relu(norm(conv(h, a))), self.dropout, self.training)
            pools.append(h.mean(dim=0, keepdim=True))
        z = torch.cat(pools, dim=1)  # [1, sum(widths)]
        for lin in self.head:
            z = F.dropout(F.relu(lin(z)), self.dropout, self.training)
        return self.out(z)
