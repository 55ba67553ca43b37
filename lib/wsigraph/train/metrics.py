"""Slide-level classification metrics (the papers' ACC, AUC, macro F1) and their summary.

H2-MIL and HIGT report ACC, AUC and F1 as mean ± std over 5 repeats of 5-fold
cross-validation (25 test folds). Every value here comes from scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score, roc_curve

METRICS = ("acc", "auc", "f1")


def classification_metrics(y_true, prob) -> dict[str, float]:
    """ACC, AUC and macro F1 of class probabilities.

    Args:
        y_true: integer labels ``[N]``.
        prob: class probabilities ``[N, C]`` (rows sum to 1), or ``[N]`` holding the
            probability of class 1 of a binary task.

    Returns:
        ``{"acc", "auc", "f1"}`` as floats. The predicted class is ``argmax(prob)``.
        ``auc`` is the ROC AUC of the class-1 probability for two classes and the macro
        one-vs-rest ROC AUC for more; it is ``NaN`` (not an error) when ``y_true`` lacks a
        class, since AUC is undefined then. ``f1`` is macro F1 over the classes present in
        ``y_true`` or in the predictions (scikit-learn's default), ``0`` for a class never
        predicted.
    """
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(prob, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)  # [N, 2]
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"prob must be [N] or [N, C] with N = {len(y)}, got shape {p.shape}")
    n_classes = p.shape[1]
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got {sorted(set(y.tolist()))}")
    pred = p.argmax(axis=1)
    if len(np.unique(y)) < n_classes:
        auc = math.nan
    elif n_classes == 2:
        auc = float(roc_auc_score(y, p[:, 1]))
    else:
        p = p / p.sum(axis=1, keepdims=True)  # scikit-learn checks that rows sum to 1
        auc = float(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    return {
        "acc": float(accuracy_score(y, pred)),
        "auc": auc,
        "f1": float(f1_score(y, pred, average="macro", zero_division=0)),
    }


def summarise(values: Iterable[float]) -> tuple[float, float]:
    """Mean and standard deviation of fold values, ignoring ``NaN`` (and ``None``).

    The std is the *sample* standard deviation (``ddof=1``), the spread of the fold estimates
    and what ``pandas.Series.std`` gives, so tables aggregated from the long-format records
    with pandas agree with this. With fewer than two finite values the std is ``NaN``; with
    none, both are ``NaN``.
    """
    v = np.array([math.nan if x is None else float(x) for x in values], dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan
    std = float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
    return float(np.mean(v)), std


def h2mil_threshold_metrics(y_true, prob1) -> dict[str, float]:
    """ACC and "F1" as the official H2-MIL code reports them (``main.py``, lines 386-414).

    On the predictions of *all* test folds of one repeat pooled together, every threshold of
    scikit-learn's ROC curve except the one at the highest probability is tried; a threshold
    whose sensitivity or specificity is 0 is skipped. The one maximising ACC + F1 is kept (a
    later threshold wins ties), where this "F1" is the harmonic mean of sensitivity and
    specificity, not of precision and recall. Binary tasks only.

    Args:
        y_true: labels ``[N]`` in {0, 1}.
        prob1: probability of class 1 ``[N]``.

    Returns:
        ``{"acc_thr", "f1_sens_spec", "threshold"}``; all ``NaN`` when no threshold qualifies
        (e.g. a single class).
    """
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(prob1, dtype=np.float64).ravel()
    if len(p) != len(y):
        raise ValueError(f"prob1 has {len(p)} values for {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() > 1):
        raise ValueError(f"h2mil_threshold_metrics is binary; got labels {sorted(set(y))}")
    best = {"acc_thr": math.nan, "f1_sens_spec": math.nan, "threshold": math.nan}
    if len(np.unique(y)) < 2:
        return best
    top, score = p.max(), -math.inf
    for t in roc_curve(y, p)[2]:
        if t == top:
            continue
        pred = p >= t
        sens = float((pred & (y == 1)).sum() / (y == 1).sum())
        spec = float((~pred & (y == 0)).sum() / (y == 0).sum())
        if sens == 0 or spec == 0:
            continue
        acc, f1 = float((pred == y).mean()), 2 * sens * spec / (sens + spec)
        if acc + f1 >= score:
            score = acc + f1
            best = {"acc_thr": acc, "f1_sens_spec": f1, "threshold": float(t)}
    return best


def micro_auc(y_true, prob) -> float:
    """The micro-averaged one-vs-rest ROC AUC HIGT's official code reports (``train.py``,
    ``return_auc``): one ROC over every (slide, class) pair of the one-hot labels against the
    class probabilities. ``NaN`` when ``y_true`` lacks a class."""
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(prob, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if len(np.unique(y)) < p.shape[1]:
        return math.nan
    onehot = np.eye(p.shape[1])[y]  # [N, C]
    return float(roc_auc_score(onehot, p, average="micro"))


#: The official codes' variants, reported beside ours: HIGT's micro-AUC (per fold) and H2-MIL's
#: threshold-chosen ACC and sensitivity/specificity "F1" (per repeat, on pooled predictions).
OFFICIAL_METRICS = ("auc_micro", "acc_thr", "f1_sens_spec")


def repeat_std(values_by_repeat: dict[int, list[float]]) -> float:
    """The sample std of the per-repeat means (``NaN`` with fewer than two repeats): the spread
    the papers' "mean ± std of 5 repeated 5-fold CV" may also mean, beside the std over folds."""
    means = [summarise(v)[0] for v in values_by_repeat.values()]
    return summarise(means)[1]


def official_metrics(predictions: list[dict]) -> tuple[list[dict], list[dict]]:
    """The official variants of a run's test predictions.

    Args:
        predictions: one entry per (repeat, fold) with ``repeat``, ``fold``, ``label [n]`` and
            ``prob [n, C]`` (as in a run record).

    Returns:
        ``(per_fold, per_repeat)``: ``[{repeat, fold, auc_micro}]`` and
        ``[{repeat, acc_thr, f1_sens_spec, threshold}]``, the latter on the predictions of all
        the repeat's folds pooled (``NaN`` for more than two classes).
    """
    per_fold = [
        {"repeat": p["repeat"], "fold": p["fold"], "auc_micro": micro_auc(p["label"], p["prob"])}
        for p in predictions
    ]
    per_repeat = []
    for r in sorted({p["repeat"] for p in predictions}):
        labels = np.concatenate([np.asarray(p["label"]) for p in predictions if p["repeat"] == r])
        prob = np.concatenate([np.asarray(p["prob"]) for p in predictions if p["repeat"] == r])
        if prob.ndim == 2 and prob.shape[1] == 2:
            out = h2mil_threshold_metrics(labels, prob[:, 1])
        else:
            out = {"acc_thr": math.nan, "f1_sens_spec": math.nan, "threshold": math.nan}
        per_repeat.append({"repeat": r, **out})
    return per_fold, per_repeat
