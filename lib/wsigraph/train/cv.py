"""The papers' protocol: repeated stratified k-fold CV with a validation split per fold.

H2-MIL and HIGT: 5 repeats of 5-fold cross-validation; 25 % of each training split is held
out as validation and chooses the checkpoint. The test fold is never looked at before the
final evaluation. Of the official code, HIGT's ``train.py`` keeps the epoch with the best
*test* ACC + micro-AUC (a leak we do not copy); H2-MIL's ``main.py`` selects on validation
AUC, counting an epoch only once the training AUC exceeds 0.8 (or in the last 10 epochs),
and evaluates the test fold every epoch without using it.

For repeat ``r`` and fold ``f``, the test fold is the ``f``-th fold of scikit-learn's
``RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)``; the
validation slides are a stratified ``val_fraction`` of the remaining slides
(``train_test_split(..., stratify=..., random_state=seed + 1000 * r + f)``) and the rest is
the training split. All indices point into the array of labelled slides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import RepeatedStratifiedKFold, train_test_split

from wsigraph.io import atomic_path

PARTS = ("train", "val", "test")


def fold_seed(seed: int, repeat: int, fold: int) -> int:
    """The per-fold seed ``seed + 1000 * repeat + fold`` (splits and training use the same rule)."""
    return int(seed) + 1000 * int(repeat) + int(fold)


@dataclass(eq=False)
class Split:
    """One (repeat, fold) of the protocol: sorted index arrays into the labelled slides.

    ``seed`` is :func:`fold_seed` of the ``make_splits`` seed; it drew the validation
    hold-out. :func:`wsigraph.train.loop.train_fold` derives its training seed by the same
    rule from ``TrainConfig.seed``, so the two coincide when both seeds are equal (as in
    :func:`wsigraph.train.run.run_experiment`).
    """

    repeat: int
    fold: int
    seed: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def parts(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "val": self.val, "test": self.test}


def make_splits(
    labels: Sequence[int] | np.ndarray,
    folds: int = 5,
    repeats: int = 5,
    val_fraction: float = 0.25,
    seed: int = 0,
) -> list[Split]:
    """Repeated stratified k-fold splits with a stratified validation hold-out.

    Args:
        labels: the class of each labelled slide ``[N]``.
        folds: folds per repeat (default ``5``).
        repeats: repeats with different shuffles (default ``5``).
        val_fraction: share of each training split held out as validation (default ``0.25``).
        seed: makes the splits deterministic (default ``0``).

    Returns:
        ``repeats * folds`` splits ordered by (repeat, fold). Within a repeat every slide is
        in exactly one test fold; train, val and test of a split are disjoint.

    Raises:
        ValueError: a class has fewer slides than ``folds`` (or too few for a stratified
            validation split); the message says how many and what to change (lower folds, or
            with folds=2 the slides per class the cohort needs, :func:`min_slides_per_class`).
    """
    y = np.asarray(labels).astype(np.int64).ravel()
    if folds < 2 or repeats < 1:
        raise ValueError(f"need folds >= 2 and repeats >= 1, got folds={folds}, repeats={repeats}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"need at least two classes to split, got {classes.tolist()}")
    small = {int(c): int(n) for c, n in zip(classes, counts, strict=True) if n < folds}
    if small:
        most = min(folds - 1, *small.values())
        hint = _fewer_folds_hint(y, most, val_fraction, "or add slides of that class")
        raise ValueError(
            f"class(es) {small} (class: slides) have fewer slides than folds={folds}; {hint}"
        )
    try:
        return _split(y, folds, repeats, val_fraction, seed)
    except _ValSplitError as e:
        raise ValueError(
            f"repeat {e.repeat} fold {e.fold}: cannot hold out a stratified validation split of "
            f"{val_fraction:.0%} from {len(e.train_val)} training slides with class counts "
            f"{np.bincount(y[e.train_val]).tolist()} ({e.err}); "
            f"{_fewer_folds_hint(y, folds - 1, val_fraction, 'or raise val_fraction')}"
        ) from None


def _fewer_folds_hint(y: np.ndarray, most: int, val_fraction: float, alternative: str) -> str:
    """``lower folds to at most k ...`` for the largest ``k <= most`` whose splits work, or,
    when not even 2 folds work, the slides per class the cohort needs."""
    for k in range(most, 1, -1):
        try:
            _split(y, k, 1, val_fraction, 0)  # fold sizes do not depend on the shuffle
        except _ValSplitError:
            continue
        return f"lower folds to at most {k} {alternative}".rstrip()
    need = min_slides_per_class(len(np.unique(y)), val_fraction)
    return (
        "cross-validation needs folds >= 2, and with folds=2 and "
        f"val_fraction={val_fraction} the cohort needs at least {need} slides per class"
    )


class _ValSplitError(Exception):
    def __init__(self, repeat: int, fold: int, train_val: np.ndarray, err: ValueError):
        self.repeat, self.fold, self.train_val, self.err = repeat, fold, train_val, err


def _split(y: np.ndarray, folds: int, repeats: int, val_fraction: float, seed: int) -> list[Split]:
    """The splits of :func:`make_splits` (arguments checked); :class:`_ValSplitError` when a
    stratified validation hold-out is impossible."""
    rskf = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    splits = []
    for k, (train_val, test) in enumerate(rskf.split(np.zeros(len(y)), y)):
        repeat, fold = divmod(k, folds)
        s = fold_seed(seed, repeat, fold)
        try:
            train, val = train_test_split(
                train_val, test_size=val_fraction, stratify=y[train_val], random_state=s
            )
        except ValueError as err:
            raise _ValSplitError(repeat, fold, train_val, err) from None
        splits.append(Split(repeat, fold, s, np.sort(train), np.sort(val), np.sort(test)))
    return splits


def min_slides_per_class(n_classes: int, val_fraction: float = 0.25) -> int:
    """The fewest slides per class (all classes alike) with which :func:`make_splits` can run
    2-fold CV with a stratified ``val_fraction`` hold-out; quoted by its error messages.

    Each training split must keep 2 slides of every class and its validation and training
    parts at least one slide per class, so the answer grows as ``val_fraction`` shrinks. Found
    by trying the same splits from a lower bound up."""
    if n_classes < 2 or not 0.0 < val_fraction < 1.0:
        raise ValueError(
            f"need n_classes >= 2 and 0 < val_fraction < 1, got {n_classes}, {val_fraction}"
        )
    # A test fold of 2-fold CV holds at least floor(n / 2) of each class, so the training part
    # has at most n_classes * (n + 1) / 2 slides, of which val_fraction must cover n_classes.
    n = max(2, int(2 * (n_classes - 1) / (val_fraction * n_classes)) - 1)
    while n < 1_000_000:
        labels = np.repeat(np.arange(n_classes), n)
        try:
            _split(labels, 2, 1, val_fraction, 0)
        except _ValSplitError:
            n += 1
        else:
            return n
    return n


def split_table(
    splits: Sequence[Split], labels, slide_ids: Sequence[str] | None = None
) -> pd.DataFrame:
    """Membership of every split in long format: ``repeat, fold, seed, part, index, slide_id, label``."""
    y = np.asarray(labels)
    ids = np.asarray(slide_ids if slide_ids is not None else [str(i) for i in range(len(y))])
    frames = []
    for s in splits:
        for part, idx in s.parts().items():
            frames.append(
                pd.DataFrame(
                    {
                        "repeat": s.repeat,
                        "fold": s.fold,
                        "seed": s.seed,
                        "part": part,
                        "index": idx,
                        "slide_id": ids[idx],
                        "label": y[idx],
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def split_counts(splits: Sequence[Split], labels) -> pd.DataFrame:
    """Class counts per split (CLAM's ``splits_k_descriptor.csv``): one row per (repeat, fold, part)."""
    y = np.asarray(labels).astype(np.int64)
    n_classes = int(y.max()) + 1
    rows = []
    for s in splits:
        for part, idx in s.parts().items():
            counts = np.bincount(y[idx], minlength=n_classes)
            rows.append(
                {"repeat": s.repeat, "fold": s.fold, "part": part}
                | {f"class_{c}": int(n) for c, n in enumerate(counts)}
                | {"total": int(len(idx))}
            )
    return pd.DataFrame(rows)


def write_splits(
    splits: Sequence[Split], labels, path: str | Path, slide_ids: Sequence[str] | None = None
) -> tuple[Path, Path]:
    """Write the splits as CSV, as CLAM commits them, atomically.

    ``path`` gets the membership (:func:`split_table`) and ``<stem>_counts.csv`` beside it the
    class counts per split (:func:`split_counts`). Returns both paths.
    """
    path = Path(path)
    counts_path = path.with_name(f"{path.stem}_counts.csv")
    with atomic_path(path) as tmp:
        split_table(splits, labels, slide_ids).to_csv(tmp, index=False)
    with atomic_path(counts_path) as tmp:
        split_counts(splits, labels).to_csv(tmp, index=False)
    return path, counts_path
