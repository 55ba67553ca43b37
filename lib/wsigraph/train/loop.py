"""Training and evaluation of one (repeat, fold): the papers' loop, selected on validation.

:func:`train_fold` trains a model built by name (:func:`wsigraph.models.build_model`) with Adam
and cross-entropy on logits (or the model's own ``training_loss``, see :func:`training_loss`),
evaluates on the validation split after every epoch and keeps the
best checkpoint, then evaluates that checkpoint once on the test fold.

Checkpoint selection (:class:`BestCheckpoint`)
    By default (``select="auc"``) the kept state is the one with the highest validation ROC AUC;
    an epoch with the *same* AUC replaces it only if its validation loss (mean cross-entropy,
    unweighted) is strictly lower. A ``NaN`` AUC (a validation split holding one class) ranks
    below every number, so then the loss decides. With ``select="loss"`` the kept state is the
    one with the lowest validation loss (ties: the earlier epoch). AUC does not depend on the
    decision threshold, so on a small validation split where it saturates at 1.0 it cannot tell
    a well-calibrated epoch from one whose threshold has drifted; the loss can, which matters
    when the reported metric is accuracy. The first epoch always sets a checkpoint; epochs are
    numbered from 1.

Early stopping
    Training stops once ``patience`` consecutive epochs have not improved the checkpoint by the
    rule above (i.e. after epoch ``best_epoch + patience``), or after ``epochs`` epochs.
    ``patience=None`` or ``0`` disables early stopping.

Seeds
    Everything (Python, NumPy, torch, CUDA, the shuffling of the training loader) is seeded
    from ``cfg.seed + 1000 * repeat + fold`` (:func:`wsigraph.train.cv.fold_seed`), so a fold
    gives the same numbers whichever process or machine runs it (on the same device kind).
"""

from __future__ import annotations

import copy
import math
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric import seed_everything
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from wsigraph.models import build_model
from wsigraph.progress import progress_bar
from wsigraph.train.cv import Split, fold_seed
from wsigraph.train.metrics import classification_metrics

SELECTIONS = ("auc", "loss")  # checkpoint rules of BestCheckpoint (module docstring)


def _checked_select(select: str) -> str:
    if select not in SELECTIONS:
        raise ValueError(f"select must be one of {SELECTIONS}, got {select!r}")
    return select


@dataclass
class TrainConfig:
    """Everything that determines a training run (stored in run records and hashed for resume).

    Args:
        model: a registered model name, e.g. ``"h2mil"`` or ``"mean-mlp"``.
        model_config: keyword settings of that model.
        lr: Adam learning rate (default ``5e-4``; H2-MIL searches {5e-4, 1e-4, 5e-5}).
        weight_decay: Adam weight decay (default ``5e-4``, both official codes'; the papers do
            not state one).
        epochs: epochs (default ``50``, the papers').
        batch_size: slides per step (default ``1``).
        patience: epochs without validation improvement before stopping (default ``None``: no
            early stopping, as in both papers, which train a fixed number of epochs and keep
            the best validation checkpoint; ``0`` also disables it).
        seed: base seed (default ``0``).
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        standardize: z-score node features with the mean/std of the training split's nodes
            (default ``True``).
        class_weights: weight the training loss by inverse class frequency of the training
            split, ``n / (C * n_c)`` (default ``False``).
        select: the checkpoint rule, ``"auc"`` (default) or ``"loss"`` (module docstring).
    """

    model: str
    model_config: dict = field(default_factory=dict)
    lr: float = 5e-4
    weight_decay: float = 5e-4
    epochs: int = 50
    batch_size: int = 1
    patience: int | None = None
    seed: int = 0
    device: str = "auto"
    standardize: bool = True
    class_weights: bool = False
    select: str = "auc"

    def __post_init__(self):
        _checked_select(self.select)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FoldResult:
    """What one (repeat, fold) produced. Plain Python values only (JSON- and pickle-friendly).

    ``peak_memory_bytes`` is ``torch.cuda.max_memory_allocated`` during the fold when
    ``peak_memory_kind == "cuda_max_allocated"``, else the peak resident set size of the whole
    process so far (``resource.getrusage``, ``"process_max_rss"``); the latter includes what
    was loaded before the fold and never decreases within a process. ``train_seconds`` covers
    the epoch loop (training and validation), not the final test evaluation. ``history`` has
    one entry per epoch: ``epoch, train_loss, train_auc, val_loss, val_auc`` (``train_auc`` from
    the training passes themselves, see :class:`_TrainOutputs`; NaN for models whose own loss
    bypasses ``forward``).
    """

    repeat: int
    fold: int
    seed: int
    metrics: dict[str, float]
    best_epoch: int
    epochs_run: int
    train_seconds: float
    peak_memory_bytes: int
    peak_memory_kind: str
    device: str
    val_metrics: dict[str, float]
    test_slide_ids: list[str]
    test_labels: list[int]
    test_probs: list[list[float]]
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FoldResult:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def feature_stats(graphs: Sequence[Data], index: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Mean and std ``[F]`` of the node features of ``graphs[i]`` for ``i`` in ``index``.

    Every node counts once (a slide with more patches weighs more). A (near-)constant
    feature gets std ``1`` so standardising leaves it centred instead of dividing by zero.
    """
    x = torch.cat([graphs[int(i)].x for i in index]).double()  # [sum N, F]
    mean, std = x.mean(dim=0), x.std(dim=0, correction=0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    dtype = graphs[int(index[0])].x.dtype
    return mean.to(dtype), std.to(dtype)


def prepare(
    graphs: Sequence[Data],
    labels: np.ndarray,
    mean: Tensor | None = None,
    std: Tensor | None = None,
) -> list[Data]:
    """Shallow copies of ``graphs`` with ``y = [label]`` and, if given, ``x = (x - mean) / std``.

    The input graphs are never modified (only the copies' ``x`` and ``y`` are new tensors).
    """
    out = []
    for g, label in zip(graphs, labels, strict=True):
        h = copy.copy(g)
        if mean is not None:
            h.x = (g.x - mean) / std
        h.y = torch.tensor([int(label)], dtype=torch.long)
        out.append(h)
    return out


class BestCheckpoint:
    """Keeps the state dict of the best validation epoch (rule in the module docstring)."""

    def __init__(self, patience: int | None = None, select: str = "auc"):
        self.patience, self.select = patience, _checked_select(select)
        self.best_epoch = 0
        self.best_auc = -math.inf
        self.best_loss = math.inf
        self.state: dict[str, Tensor] | None = None

    def is_better(self, auc: float, loss: float) -> bool:
        if self.select == "loss":
            return loss < self.best_loss
        auc = -math.inf if math.isnan(auc) else auc
        return auc > self.best_auc or (auc == self.best_auc and loss < self.best_loss)

    def update(self, epoch: int, auc: float, loss: float, model: nn.Module) -> bool:
        """Record epoch ``epoch``; returns whether it became the kept checkpoint."""
        if self.state is not None and not self.is_better(auc, loss):
            return False
        self.best_epoch = epoch
        self.best_auc = -math.inf if math.isnan(auc) else auc
        self.best_loss = loss
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return True

    def should_stop(self, epoch: int) -> bool:
        return bool(self.patience) and epoch - self.best_epoch >= self.patience

    def restore(self, model: nn.Module) -> nn.Module:
        if self.state is None:
            raise RuntimeError("no checkpoint recorded yet")
        model.load_state_dict(self.state)
        return model


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[Tensor, Tensor]:
    """Logits ``[N, C]`` (float32, CPU) and labels ``[N]`` of every slide of ``loader``."""
    model.eval()
    logits, ys = [], []
    for batch in loader:
        batch = batch.to(device)
        logits.append(model(batch).float().cpu())
        ys.append(batch.y.cpu())
    return torch.cat(logits), torch.cat(ys)


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> dict:
    """``loss`` (mean cross-entropy), ``prob [N, C]``, ``y [N]`` and the metrics of a split."""
    logits, y = predict(model, loader, device)
    prob = torch.softmax(logits, dim=1).numpy()
    return {
        "loss": float(F.cross_entropy(logits, y)),
        "prob": prob,
        "y": y.numpy(),
        **classification_metrics(y.numpy(), prob),
    }


def _peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "process_max_rss"


def training_loss(model: nn.Module, batch, weight: Tensor | None = None) -> Tensor:
    """The model's own ``training_loss(batch, weight)`` when it has one (methods with auxiliary
    terms: DS-MIL's two streams, CLAM's instance clustering, MS-DA-MIL's domain adversary...),
    else cross-entropy on its logits (no softmax before it)."""
    if hasattr(model, "training_loss"):
        return model.training_loss(batch, weight)
    return F.cross_entropy(model(batch), batch.y, weight=weight)


class _TrainOutputs:
    """The logits of the training passes of one epoch, read by a forward hook on the model, for
    the epoch's training AUC: no extra forward pass, so it scores each batch as the model was
    when it saw it (dropout on, weights changing within the epoch). Models whose own
    ``training_loss`` never calls ``forward`` (DS-MIL's two streams, CLAM...) give ``NaN``."""

    def __init__(self, model: nn.Module):
        self.logits: list[Tensor] = []
        self.labels: list[Tensor] = []
        self._pending: Tensor | None = None
        self._hook = model.register_forward_hook(self._record)

    def _record(self, module, inputs, output) -> None:
        if module.training and torch.is_tensor(output) and output.dim() == 2:
            self._pending = output.detach().float().cpu()

    def label(self, y: Tensor) -> None:
        """Pair the last training output with the batch's labels (once per batch)."""
        if self._pending is not None and len(self._pending) == len(y):
            self.logits.append(self._pending)
            self.labels.append(y.detach().cpu())
        self._pending = None

    def auc(self, n_classes: int) -> float:
        if not self.logits:
            return math.nan
        prob = torch.softmax(torch.cat(self.logits), dim=1).numpy()
        if prob.shape[1] != n_classes:
            return math.nan
        return classification_metrics(torch.cat(self.labels).numpy(), prob)["auc"]

    def clear(self) -> None:
        self.logits, self.labels, self._pending = [], [], None

    def close(self) -> None:
        self._hook.remove()


def setup_fold(
    graphs: Sequence[Data],
    labels: np.ndarray,
    split: Split,
    seed: int,
    device: str,
    standardize: bool,
) -> tuple[int, torch.device, dict[str, list[Data]]]:
    """The start of every fold: seed everything with the fold's seed, resolve the device (and
    reset its CUDA peak-memory counter), and prepare each part of the split (standardised with
    the training part's node statistics when ``standardize``).

    Returns:
        ``(fold seed, device, part -> prepared graphs)`` for the parts ``train``, ``val``, ``test``.
    """
    seed = fold_seed(seed, split.repeat, split.fold)
    seed_everything(seed)
    device = resolve_device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    mean = std = None
    if standardize:
        mean, std = feature_stats(graphs, split.train)
    data = {
        part: prepare([graphs[int(i)] for i in idx], labels[idx], mean, std)
        for part, idx in split.parts().items()
    }
    return seed, device, data


def train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    weight: Tensor | None = None,
    seen: _TrainOutputs | None = None,
) -> float:
    """One pass over ``loader`` with the model in training mode; returns the mean loss per
    graph (``seen``, when given, collects the pass's outputs for a training AUC)."""
    model.train()
    total, n = 0.0, 0
    if seen is not None:
        seen.clear()
    for batch in loader:
        batch = batch.to(device)
        optimizer.zero_grad()
        loss = training_loss(model, batch, weight)
        if seen is not None:
            seen.label(batch.y)
        loss.backward()
        optimizer.step()
        total += loss.item() * batch.num_graphs
        n += batch.num_graphs
    return total / n


def class_weight(labels: np.ndarray, n_classes: int, device: torch.device) -> Tensor:
    """Inverse-frequency class weights of ``labels`` (``N / (classes x count)``)."""
    counts = np.bincount(labels, minlength=n_classes).clip(min=1)
    return torch.tensor(len(labels) / (n_classes * counts), dtype=torch.float32, device=device)


def refit(
    graphs: Sequence[Data],
    labels: np.ndarray,
    cfg: TrainConfig,
    epochs: int,
    n_classes: int = 2,
) -> tuple[nn.Module, Tensor | None, Tensor | None]:
    """One model trained on *every* labelled slide for ``epochs`` epochs, with no validation
    part and no model selection (choose ``epochs`` from cross-validation, e.g. the folds' median
    best epoch, as :func:`wsigraph.train.run.run_experiment` does). Seeded with ``cfg.seed``.

    Its numbers cannot be measured (no slide is held out): report the cross-validation's, and
    use this model to score new slides.

    Returns:
        ``(model, feature mean, feature std)``: the trained model, on the CPU and in eval mode,
        and the statistics its inputs were standardised with (``None`` without
        ``cfg.standardize``).
    """
    labels = np.asarray(labels).astype(np.int64)
    if len(labels) != len(graphs):
        raise ValueError(f"{len(graphs)} graphs but {len(labels)} labels")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    every = np.arange(len(graphs))
    mean = std = None
    if cfg.standardize:
        mean, std = feature_stats(graphs, every)
    data = prepare(list(graphs), labels, mean, std)
    loader = DataLoader(
        data,
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    model = build_model(cfg.model, graphs[0].x.shape[1], n_classes, **cfg.model_config).to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True
    )
    weight = class_weight(labels, n_classes, device) if cfg.class_weights else None
    for _ in range(epochs):
        train_epoch(model, loader, optimizer, device, weight)
    return model.eval().cpu(), mean, std


def train_fold(
    graphs: Sequence[Data],
    labels: np.ndarray,
    split: Split,
    cfg: TrainConfig,
    n_classes: int = 2,
    progress: bool = False,
    return_model: bool = False,
) -> FoldResult | tuple[FoldResult, nn.Module, list[Data]]:
    """Train on ``split.train``, select on ``split.val``, report on ``split.test``.

    With ``return_model=True`` also returns the restored best model and the test graphs as the
    model saw them (standardised), e.g. to draw H2-MIL Fig. 3 on held-out slides.

    Args:
        graphs: one graph per labelled slide (``x [N, F]``; anything the model reads).
        labels: the class of each graph ``[len(graphs)]``.
        split: the (repeat, fold) to run; its index arrays point into ``graphs``.
        cfg: the training settings.
        n_classes: number of classes (default ``2``).
        progress: show a per-epoch tqdm bar (default ``False``, as in worker processes).
    """
    labels = np.asarray(labels).astype(np.int64)
    if len(labels) != len(graphs):
        raise ValueError(f"{len(graphs)} graphs but {len(labels)} labels")
    if cfg.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {cfg.epochs}")
    seed, device, data = setup_fold(graphs, labels, split, cfg.seed, cfg.device, cfg.standardize)
    loaders = {
        "train": DataLoader(
            data["train"],
            batch_size=cfg.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
        ),
        "val": DataLoader(data["val"], batch_size=cfg.batch_size),
        "test": DataLoader(data["test"], batch_size=cfg.batch_size),
    }
    model = build_model(cfg.model, graphs[0].x.shape[1], n_classes, **cfg.model_config).to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True
    )
    weight = class_weight(labels[split.train], n_classes, device) if cfg.class_weights else None

    best = BestCheckpoint(cfg.patience, cfg.select)
    history = []
    start = time.perf_counter()
    bar = progress_bar(
        range(1, cfg.epochs + 1),
        desc=f"repeat {split.repeat} fold {split.fold}",
        unit="epoch",
        disable=not progress,
    )
    seen = _TrainOutputs(model)
    for epoch in bar:
        train_loss = train_epoch(model, loaders["train"], optimizer, device, weight, seen)
        val = evaluate(model, loaders["val"], device)
        best.update(epoch, val["auc"], val["loss"], model)
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "train_auc": seen.auc(n_classes),
                "val_loss": val["loss"],
                "val_auc": val["auc"],
            }
        )
        bar.set_postfix(val_auc=f"{val['auc']:.3f}", best=best.best_epoch)
        if best.should_stop(epoch):
            break
    train_seconds = time.perf_counter() - start
    bar.close()
    seen.close()

    best.restore(model)
    test = evaluate(model, loaders["test"], device)
    result = fold_result(split, seed, best, history, test, graphs, labels, device, train_seconds)
    return (result, model, data["test"]) if return_model else result


def fold_result(
    split: Split,
    seed: int,
    best: BestCheckpoint,
    history: list[dict],
    test: dict,
    graphs: Sequence[Data],
    labels: np.ndarray,
    device: torch.device,
    train_seconds: float,
) -> FoldResult:
    """The :class:`FoldResult` of a finished fold: ``test`` is :func:`evaluate` of the restored
    best model on the test split; ``history`` has ``val_auc`` and ``val_loss`` per epoch."""
    peak, kind = _peak_memory(device)
    chosen = history[best.best_epoch - 1]
    return FoldResult(
        repeat=split.repeat,
        fold=split.fold,
        seed=seed,
        metrics={k: test[k] for k in ("acc", "auc", "f1")},
        best_epoch=best.best_epoch,
        epochs_run=len(history),
        train_seconds=train_seconds,
        peak_memory_bytes=peak,
        peak_memory_kind=kind,
        device=str(device),
        val_metrics={"auc": chosen["val_auc"], "loss": chosen["val_loss"]},
        test_slide_ids=[str(getattr(graphs[int(i)], "slide_id", i)) for i in split.test],
        test_labels=labels[split.test].tolist(),
        test_probs=test["prob"].astype(float).tolist(),
        history=history,
    )
