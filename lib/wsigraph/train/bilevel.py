r"""First-order approximate bilevel training of ABiG-Net (graph structure vs GNN weights).

Two trainers. :func:`train_fold_official` is the official code's (``Paul1086/ABiG_Net``,
``abignet_train.py`` / ``run_training.py``) for :class:`wsigraph.models.abignet.ABiGNetOfficial`
(the row "ABiG-Net" and the no-edge control); :func:`train_fold_bilevel`, below, is our
design for :class:`wsigraph.models.abignet.ABiGNet` (the orientation variant and the fixed
k-NN graph), written from the abstract before the official code was found.

Official training (:func:`train_fold_official`)
    ``iterations`` (official 200) iterations; iteration :math:`t = 1, 2, \dots` first sets the
    temperature :math:`\tau_t = \max(\tau_{\min}, 0.98\,\tau_{t-1})`, :math:`\tau_0 = 1`,
    :math:`\tau_{\min} = 0.1` (:func:`temperatures`: the first iteration already runs at 0.98),
    then makes two full passes, one image per optimiser step, images shuffled:

    * training pass (:func:`official_lower_pass`): the dense GCN in train mode (dropout on),
      cross-entropy of each *training* image on a freshly sampled adjacency, one Adam step
      (lr 1e-4) on the GCN only;
    * validation pass (:func:`official_upper_pass`): the GCN in eval mode, cross-entropy of each
      *validation* image plus :math:`10^{-5}\,\mathrm{mean}|A|` (:func:`l1_penalty`, over all
      :math:`n^2` entries, diagonal included), gradient norm of the generator clipped at 1, one
      Adam step (lr 1e-3) on the generator only.

    The first-order approximation is the alternation itself: the generator's gradient is
    taken at the current GCN weights. The no-edge control has no generator, so its validation
    pass is skipped. Checkpoint: the last iteration, as the official code keeps
    (``checkpoint="last"``, the default); ``checkpoint="val"`` keeps the iteration with the
    best validation AUC (ties by loss), evaluated deterministically, instead. Either way the test
    fold is evaluated once, at the end (the official code also evaluates it every iteration,
    for its log). Features are standardised with the training split's node statistics (the
    official ``StandardScaler`` on training nodes).

Our design (:func:`train_fold_bilevel`)

ABiG-Net (arXiv 2510.13188, abstract) learns the image-level graph "through a first-order
approximate bilevel optimization strategy" with the graph "optimized in response to
classification performance". The bilevel problem, with :math:`\phi` the structure parameters
(:meth:`ABiGNet.structure_parameters`) and :math:`w` the GNN and classifier weights
(:meth:`ABiGNet.weight_parameters`):

.. math::
    \min_{\phi}\; \mathcal{L}_{\text{val}}\bigl(w^*(\phi), \phi\bigr)
        + \lambda\, \overline{A_\phi}
    \quad\text{s.t.}\quad
    w^*(\phi) = \arg\min_w \mathcal{L}_{\text{train}}(w, \phi),

:math:`\mathcal{L}` the cross-entropy over a split's images and :math:`\overline{A_\phi}` the
mean weight of the learned edges (the :math:`\ell_1` sparsity penalty,
:mod:`wsigraph.nn.graph_learner`).

First-order approximation (DARTS, Liu et al., ICLR 2019, "first-order"; the paper names no
variant, we take the plain one): the hypergradient
:math:`\nabla_\phi \mathcal{L}_{\text{val}}(w^*(\phi), \phi)` is replaced by
:math:`\nabla_\phi \mathcal{L}_{\text{val}}(w, \phi)` at the *current* weights, i.e. the
implicit term :math:`(\partial w^* / \partial \phi)^\top \nabla_w \mathcal{L}_{\text{val}}` is
dropped (:func:`first_order_hypergradient`). Training alternates, for every training
mini-batch, one outer step (Adam on :math:`\phi`, a validation mini-batch, cycled) and
``inner_steps`` inner steps (Adam on :math:`w`, the training mini-batch); each step moves only
its own variables (:func:`bilevel_step`).

Protocol (our choices)
    The validation split drives the outer problem, as the bilevel formulation requires, and
    also selects the checkpoint (:class:`wsigraph.train.loop.BestCheckpoint`: best validation
    AUC, ties by loss); the test fold is used once, at the end. Features are standardised with
    the training split's statistics. A model without structure parameters (the fixed k-NN
    ablation) runs the same loop with the outer step skipped, so the two rows differ only in
    the graph.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from wsigraph.models.abignet import ABiGNet, ABiGNetOfficial
from wsigraph.train.cv import Split
from wsigraph.train.loop import (
    BestCheckpoint,
    FoldResult,
    evaluate,
    fold_result,
    setup_fold,
)


@dataclass
class BilevelConfig:
    """Settings of one bilevel training run.

    Args:
        model_config: keyword settings of :class:`wsigraph.models.abignet.ABiGNetConfig`.
        lr: Adam learning rate of the inner variables (GNN, classifier) (default ``1e-3``).
        weight_decay: their Adam weight decay (default ``5e-4``).
        outer_lr: Adam learning rate of the structure parameters (default ``1e-3``).
        sparsity: :math:`\\lambda` of the edge-weight penalty in the outer loss
            (default ``1e-2``).
        inner_steps: inner steps per outer step (default ``1``).
        epochs: maximum epochs (default ``50``).
        batch_size: images per mini-batch, training and validation (default ``8``).
        patience: early-stopping patience in epochs, ``None``/``0`` off (default ``15``).
        seed: base seed, per fold :func:`wsigraph.train.cv.fold_seed` (default ``0``).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``... (default ``"auto"``).
        standardize: z-score node features with the training split's statistics
            (default ``True``).
    """

    model_config: dict = field(default_factory=dict)
    lr: float = 1e-3
    weight_decay: float = 5e-4
    outer_lr: float = 1e-3
    sparsity: float = 1e-2
    inner_steps: int = 1
    epochs: int = 50
    batch_size: int = 8
    patience: int | None = 15
    seed: int = 0
    device: str = "auto"
    standardize: bool = True

    def __post_init__(self):
        if self.epochs < 1 or self.inner_steps < 1 or self.batch_size < 1:
            raise ValueError("epochs, inner_steps and batch_size must be >= 1")
        if self.sparsity < 0:
            raise ValueError(f"sparsity must be >= 0, got {self.sparsity}")

    def to_dict(self) -> dict:
        return asdict(self)


def inner_loss(model: nn.Module, batch) -> Tensor:
    r""":math:`\mathcal{L}_{\text{train}}(w, \phi)`: cross-entropy of the batch, the graph held
    fixed (built without gradient: the inner problem does not move :math:`\phi`)."""
    with torch.no_grad():
        graph = model.graph(batch)
    return F.cross_entropy(model(batch, graph), batch.y)


def outer_loss(model: nn.Module, batch, sparsity: float = 0.0) -> Tensor:
    r""":math:`\mathcal{L}_{\text{val}}(w, \phi) + \lambda\,\overline{A_\phi}`: cross-entropy of the
    (validation) batch plus ``sparsity`` times the mean learned edge weight (0 without edges)."""
    edge_index, weight = model.graph(batch)
    loss = F.cross_entropy(model(batch, (edge_index, weight)), batch.y)
    if sparsity and weight.numel() and model.structure_parameters():  # fixed graphs: no term
        loss = loss + sparsity * weight.mean()
    return loss


def first_order_hypergradient(model: nn.Module, val_batch, sparsity: float = 0.0) -> list[Tensor]:
    r"""The first-order hypergradient :math:`\nabla_\phi [\mathcal{L}_{\text{val}}(w, \phi) +
    \lambda \overline{A_\phi}]` at the current :math:`w`, one tensor per structure parameter
    (zeros where a parameter does not reach the loss). Leaves ``.grad`` untouched."""
    params = model.structure_parameters()
    if not params:
        return []
    loss = outer_loss(model, val_batch, sparsity)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def bilevel_step(
    model: nn.Module,
    train_batch,
    val_batch,
    inner_opt: torch.optim.Optimizer,
    outer_opt: torch.optim.Optimizer | None,
    sparsity: float = 0.0,
    inner_steps: int = 1,
) -> tuple[float, float]:
    """One outer step on the structure (``val_batch``), then ``inner_steps`` inner steps on the
    weights (``train_batch``). Returns ``(outer loss before its step, last inner loss)``; the
    outer step's gradient is :func:`first_order_hypergradient`; the outer loss is NaN
    when there is no outer step (no structure parameters, or ``outer_opt`` is ``None``)."""
    outer = float("nan")
    params = model.structure_parameters()
    structure = {id(p) for p in params}
    if any(id(p) in structure for g in inner_opt.param_groups for p in g["params"]):
        raise ValueError(
            "the inner optimiser must hold only weight_parameters(), not the structure"
        )
    if params and outer_opt is not None:
        loss = outer_loss(model, val_batch, sparsity)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        outer_opt.zero_grad(set_to_none=True)
        for p, g in zip(params, grads, strict=True):
            p.grad = None if g is None else g
        outer_opt.step()
        outer = float(loss.detach())
    loss = torch.tensor(float("nan"))
    for _ in range(inner_steps):
        inner_opt.zero_grad(set_to_none=True)
        loss = inner_loss(model, train_batch)
        loss.backward()
        for p in params:  # the structure only moves on the validation loss
            p.grad = None
        inner_opt.step()
    return outer, float(loss.detach())


@torch.no_grad()
def graph_stats(model: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Mean edges per node and mean edge weight of the graphs the model builds for ``loader``."""
    model.eval()
    edges = nodes = 0
    wsum = 0.0
    for batch in loader:
        batch = batch.to(device)
        edge_index, weight = model.graph(batch)
        edges += edge_index.size(1)
        nodes += batch.num_nodes
        wsum += float(weight.sum())
    return {"edges_per_node": edges / max(nodes, 1), "mean_edge_weight": wsum / max(edges, 1)}


def train_fold_bilevel(
    graphs: Sequence[Data],
    labels: np.ndarray,
    split: Split,
    cfg: BilevelConfig,
    n_classes: int = 2,
    return_model: bool = False,
) -> FoldResult | tuple[FoldResult, nn.Module, list[Data]]:
    """Train ABiG-Net on ``split`` (inner: train, outer and selection: val; test once).

    Args:
        graphs: one image-level graph per labelled image (``x [N, F]``, ``pos [N, 2]``).
        labels: the class of each graph ``[len(graphs)]``.
        split: the (repeat, fold); its index arrays point into ``graphs``.
        cfg: the training settings.
        n_classes: number of classes (default ``2``).
        return_model: also return the restored best model and the standardised test graphs.

    Returns:
        A :class:`wsigraph.train.loop.FoldResult` (``history`` adds ``outer_loss``,
        ``edges_per_node`` and ``mean_edge_weight`` of the validation graphs per epoch).
    """
    labels = np.asarray(labels).astype(np.int64)
    if len(labels) != len(graphs):
        raise ValueError(f"{len(graphs)} graphs but {len(labels)} labels")
    if len(split.val) == 0:
        raise ValueError("the bilevel outer problem needs a non-empty validation split")
    seed, device, data = setup_fold(graphs, labels, split, cfg.seed, cfg.device, cfg.standardize)
    gen = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(data["train"], cfg.batch_size, shuffle=True, generator=gen)
    val_cycle = DataLoader(data["val"], cfg.batch_size, shuffle=True, generator=gen)
    val_loader = DataLoader(data["val"], cfg.batch_size)
    test_loader = DataLoader(data["test"], cfg.batch_size)

    model = ABiGNet(graphs[0].x.shape[1], n_classes, **cfg.model_config).to(device)
    inner_opt = torch.optim.Adam(
        model.weight_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    structure = model.structure_parameters()
    outer_opt = torch.optim.Adam(structure, lr=cfg.outer_lr) if structure else None
    val_batches = itertools.cycle(val_cycle)

    best = BestCheckpoint(cfg.patience)
    history = []
    start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        inner_sum = outer_sum = 0.0
        n = 0
        for batch in train_loader:
            batch, vb = batch.to(device), next(val_batches).to(device)
            outer, inner = bilevel_step(
                model, batch, vb, inner_opt, outer_opt, cfg.sparsity, cfg.inner_steps
            )
            inner_sum += inner * batch.num_graphs
            outer_sum += outer * batch.num_graphs
            n += batch.num_graphs
        val = evaluate(model, val_loader, device)
        best.update(epoch, val["auc"], val["loss"], model)
        history.append(
            {
                "epoch": epoch,
                "train_loss": inner_sum / n,
                "outer_loss": outer_sum / n,
                "val_loss": val["loss"],
                "val_auc": val["auc"],
                "val_acc": val["acc"],
                **graph_stats(model, val_loader, device),
            }
        )
        if best.should_stop(epoch):
            break
    train_seconds = time.perf_counter() - start

    best.restore(model)
    test = evaluate(model, test_loader, device)
    result = fold_result(split, seed, best, history, test, graphs, labels, device, train_seconds)
    return (result, model, data["test"]) if return_model else result


def _cv_fold(job: tuple[Split, bool], shared: tuple) -> tuple:
    """Worker entry point of :func:`cross_validate`: one fold, ``(result, *first)``."""
    split, keep = job
    graphs, labels, cfg, n_classes = shared
    train = train_fold_official if isinstance(cfg, OfficialBilevelConfig) else train_fold_bilevel
    if keep:
        return tuple(train(graphs, labels, split, cfg, n_classes, True))
    return (train(graphs, labels, split, cfg, n_classes),)


def cross_validate(
    graphs: Sequence[Data],
    labels: np.ndarray,
    splits: Sequence[Split],
    cfg: BilevelConfig | OfficialBilevelConfig,
    n_classes: int = 2,
    progress: bool = False,
    keep_first: bool = False,
    executor="serial",
    workers: int | None = None,
) -> list[FoldResult] | tuple[list[FoldResult], tuple[nn.Module, list[Data]]]:
    """:func:`train_fold_bilevel` (a :class:`BilevelConfig`) or :func:`train_fold_official`
    (an :class:`OfficialBilevelConfig`) on every split (e.g. from
    :func:`wsigraph.train.cv.make_splits`); ``progress`` shows a bar over the folds.

    ``keep_first`` also returns the first split's trained model and its standardised test
    graphs (``return_model`` of the fold function), so a figure can draw a held-out fold
    without training it again. ``executor`` and ``workers`` are those of
    :func:`wsigraph.train.executor.run_folds` (default ``"serial"``: in this process); a
    :class:`~wsigraph.train.executor.FoldPool` lets several calls share its workers. Each fold
    seeds itself, so the results do not depend on the executor."""
    from wsigraph.train.executor import run_folds

    jobs = [(s, keep_first and i == 0) for i, s in enumerate(splits)]
    out = run_folds(_cv_fold, jobs, executor, workers, shared=(graphs, labels, cfg, n_classes),
                    progress=progress, desc="folds")  # fmt: skip
    results = [o[0] for o in out]
    return (results, tuple(out[0][1:])) if keep_first else results


def fold_table(results: Sequence[FoldResult], **keys) -> pd.DataFrame:
    """Per-fold test metrics in the project's long format: the ``keys`` columns (e.g. ``table``,
    ``row``, ``dataset``, ``task``), then ``repeat, fold, seed, metric, value``."""
    rows = [
        {**keys, "repeat": r.repeat, "fold": r.fold, "seed": r.seed, "metric": m, "value": v}
        for r in results
        for m, v in r.metrics.items()
    ]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# The official training (module docstring)
# ---------------------------------------------------------------------------------------------

CHECKPOINTS = ("val", "last")


@dataclass
class OfficialBilevelConfig:
    """Settings of :func:`train_fold_official`; the defaults are the official code's except
    ``seed`` (official 101, set once, not per fold).

    Args:
        model_config: keyword settings of :class:`wsigraph.models.abignet.ABiGNetOfficialConfig`.
        lr_gcn: Adam learning rate of the dense GCN, training pass (``1e-4``).
        lr_gen: Adam learning rate of the generator, validation pass (``1e-3``).
        clip: gradient-norm clip of the generator (``1.0``).
        l1: weight of ``mean|A|`` in the validation loss (``1e-5``).
        iterations: alternating iterations (``200``).
        tau_init, tau_decay, tau_min: the temperature schedule (``1.0``, ``0.98``, ``0.1``).
        checkpoint: ``"last"`` (the last iteration; official, the default) or ``"val"``
            (best validation AUC, ties by loss; the validation split also trains the
            generator, so it is not an independent check).
        seed: base seed, per fold :func:`wsigraph.train.cv.fold_seed` (``0``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        standardize: z-score features with the training split's node statistics (``True``).
    """

    model_config: dict = field(default_factory=dict)
    lr_gcn: float = 1e-4
    lr_gen: float = 1e-3
    clip: float = 1.0
    l1: float = 1e-5
    iterations: int = 200
    tau_init: float = 1.0
    tau_decay: float = 0.98
    tau_min: float = 0.1
    checkpoint: str = "last"
    seed: int = 0
    device: str = "auto"
    standardize: bool = True

    def __post_init__(self):
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.checkpoint not in CHECKPOINTS:
            raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {self.checkpoint!r}")
        if self.l1 < 0 or self.clip <= 0 or self.tau_min <= 0 or not 0 < self.tau_decay <= 1:
            raise ValueError("need l1 >= 0, clip > 0, tau_min > 0 and 0 < tau_decay <= 1")

    def to_dict(self) -> dict:
        return asdict(self)


def temperatures(
    iterations: int, init: float = 1.0, decay: float = 0.98, floor: float = 0.1
) -> list[float]:
    """The temperature of each iteration: ``tau <- max(floor, tau * decay)`` *before* each one,
    from ``tau = init`` (as the official loop), so the first is ``init * decay``."""
    out, tau = [], init
    for _ in range(iterations):
        tau = max(floor, tau * decay)
        out.append(tau)
    return out


def l1_penalty(a: Tensor, weight: float) -> Tensor:
    """``weight * mean(|A|)`` over all ``n^2`` entries (the official ``sparsity_loss``)."""
    return weight * a.abs().mean()


def official_lower_pass(
    model: ABiGNetOfficial, graphs: Sequence[Data], opt: torch.optim.Optimizer
) -> float:
    """One training pass: per image (in the given order) a sampled adjacency (no gradient to
    the generator), the GCN in train mode, one ``opt`` step on the GCN. Mean loss."""
    model.train()
    total = 0.0
    for g in graphs:
        with torch.no_grad():
            a = model.adjacency(g.x, sample=True, edge_index=g.edge_index)
        loss = F.cross_entropy(model.gcn(g.x, a), g.y.view(1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach())
    return total / max(len(graphs), 1)


def official_upper_pass(
    model: ABiGNetOfficial,
    graphs: Sequence[Data],
    opt: torch.optim.Optimizer,
    l1: float = 1e-5,
    clip: float = 1.0,
) -> float:
    """One validation pass: per image a sampled adjacency, the GCN in eval mode, the loss
    cross-entropy + :func:`l1_penalty`, the generator's gradient clipped to norm ``clip``,
    one ``opt`` step on the generator (the GCN's ``.grad`` is never touched). Mean loss."""
    params = model.structure_parameters()
    model.train()
    model.gcn.eval()
    total = 0.0
    for g in graphs:
        a = model.adjacency(g.x, sample=True, edge_index=g.edge_index)
        loss = F.cross_entropy(model.gcn(g.x, a), g.y.view(1)) + l1_penalty(a, l1)
        grads = torch.autograd.grad(loss, params)
        opt.zero_grad(set_to_none=True)
        for p, gr in zip(params, grads, strict=True):
            p.grad = gr
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        total += float(loss.detach())
    return total / max(len(graphs), 1)


class LastCheckpoint(BestCheckpoint):
    """Keeps the latest iteration (the official code's choice)."""

    def is_better(self, auc: float, loss: float) -> bool:
        return True


@torch.no_grad()
def mean_adjacency(model: ABiGNetOfficial, graphs: Sequence[Data]) -> float:
    """Mean off-diagonal entry of the adjacency the model uses at evaluation (0 without edges)."""
    model.eval()
    values = []
    for g in graphs:
        n = g.num_nodes
        if n > 1:
            a = model.adjacency(g.x, edge_index=g.edge_index)
            values.append(float((a.sum() - a.diagonal().sum()) / (n * n - n)))
    return float(np.mean(values)) if values else 0.0


def train_fold_official(
    graphs: Sequence[Data],
    labels: np.ndarray,
    split: Split,
    cfg: OfficialBilevelConfig,
    n_classes: int = 2,
    return_model: bool = False,
) -> FoldResult | tuple[FoldResult, nn.Module, list[Data]]:
    """Train the official ABiG-Net on ``split`` (GCN: train; generator and checkpoint: val;
    test once, at the end). See the module docstring.

    Args:
        graphs: one graph per image (``x [P, F]``, the patch features).
        labels: the class of each graph ``[len(graphs)]``.
        split: the (repeat, fold); its index arrays point into ``graphs``.
        cfg: the training settings.
        n_classes: number of classes (default ``2``).
        return_model: also return the restored model and the standardised test graphs.

    Returns:
        A :class:`wsigraph.train.loop.FoldResult`; ``history`` has one entry per iteration
        (``epoch`` is the iteration): ``tau``, ``train_loss``, ``outer_loss`` (NaN without a
        generator), ``val_loss``, ``val_auc``, ``val_acc``, ``mean_edge_weight``.
    """
    labels = np.asarray(labels).astype(np.int64)
    if len(labels) != len(graphs):
        raise ValueError(f"{len(graphs)} graphs but {len(labels)} labels")
    if len(split.val) == 0:
        raise ValueError(
            "the official ABiG-Net trains its generator on a non-empty validation split"
        )
    for i in np.concatenate([split.train, split.val, split.test]):
        if graphs[int(i)].num_nodes < 1:
            name = getattr(graphs[int(i)], "slide_id", int(i))
            raise ValueError(f"ABiG-Net: image {name} has no patches")
    seed, device, data = setup_fold(graphs, labels, split, cfg.seed, cfg.device, cfg.standardize)
    gen = torch.Generator().manual_seed(seed)
    train = [g.to(device) for g in data["train"]]
    val = [g.to(device) for g in data["val"]]
    val_loader = DataLoader(data["val"], 16)
    test_loader = DataLoader(data["test"], 16)

    model = ABiGNetOfficial(graphs[0].x.shape[1], n_classes, **cfg.model_config).to(device)
    # foreach: the same Adam update, applied to all tensors at once (faster per-image steps)
    gcn_opt = torch.optim.Adam(model.weight_parameters(), lr=cfg.lr_gcn, foreach=True)
    structure = model.structure_parameters()
    gen_opt = torch.optim.Adam(structure, lr=cfg.lr_gen, foreach=True) if structure else None

    best = BestCheckpoint(None) if cfg.checkpoint == "val" else LastCheckpoint(None)
    history = []
    start = time.perf_counter()
    taus = temperatures(cfg.iterations, cfg.tau_init, cfg.tau_decay, cfg.tau_min)
    for it, tau in enumerate(taus, start=1):
        model.set_tau(tau)
        order = torch.randperm(len(train), generator=gen).tolist()
        train_loss = official_lower_pass(model, [train[i] for i in order], gcn_opt)
        outer = float("nan")
        if gen_opt is not None:
            order = torch.randperm(len(val), generator=gen).tolist()
            outer = official_upper_pass(model, [val[i] for i in order], gen_opt, cfg.l1, cfg.clip)
        v = evaluate(model, val_loader, device)
        best.update(it, v["auc"], v["loss"], model)
        history.append(
            {
                "epoch": it,
                "tau": tau,
                "train_loss": train_loss,
                "outer_loss": outer,
                "val_loss": v["loss"],
                "val_auc": v["auc"],
                "val_acc": v["acc"],
                "mean_edge_weight": mean_adjacency(model, val),
            }
        )
    train_seconds = time.perf_counter() - start

    best.restore(model)
    test = evaluate(model, test_loader, device)
    result = fold_result(split, seed, best, history, test, graphs, labels, device, train_seconds)
    return (result, model, data["test"]) if return_model else result
