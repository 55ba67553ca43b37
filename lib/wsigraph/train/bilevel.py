r"""First-order approximate bilevel training of ABiG-Net (graph structure vs GNN weights).

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
from tqdm.auto import tqdm

from wsigraph.models.abignet import ABiGNet
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


def cross_validate(
    graphs: Sequence[Data],
    labels: np.ndarray,
    splits: Sequence[Split],
    cfg: BilevelConfig,
    n_classes: int = 2,
    progress: bool = False,
) -> list[FoldResult]:
    """:func:`train_fold_bilevel` on every split (e.g. from :func:`wsigraph.train.cv.make_splits`),
    in order; ``progress`` shows a bar over the folds."""
    folds = tqdm(splits, desc="folds", unit="fold", disable=not progress)
    return [train_fold_bilevel(graphs, labels, s, cfg, n_classes) for s in folds]


def fold_table(results: Sequence[FoldResult], **keys) -> pd.DataFrame:
    """Per-fold test metrics in the project's long format: the ``keys`` columns (e.g. ``table``,
    ``row``, ``dataset``, ``task``), then ``repeat, fold, seed, metric, value``."""
    rows = [
        {**keys, "repeat": r.repeat, "fold": r.fold, "seed": r.seed, "metric": m, "value": v}
        for r in results
        for m, v in r.metrics.items()
    ]
    return pd.DataFrame(rows)
