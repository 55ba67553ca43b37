"""Where is the class signal? A linear probe on per-level pooled patch features.

For each dataset, task and pyramid level, every slide becomes one vector -- the mean and the
standard deviation of its patch features at that level -- and a standardised logistic
regression is scored by stratified k-fold cross-validated ROC AUC (scikit-learn). This is a
check of the *data* (does a level carry the label at all, without any graph?), not one of the
papers' methods; the demo cohort documents which level should carry which label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def pooled_level_features(
    features: np.ndarray, level: np.ndarray, n_levels: int
) -> dict[int, np.ndarray]:
    """Mean and std of the patch features of each level: ``{level: [2 * D]}``."""
    out = {}
    for lv in range(n_levels):
        sel = features[level == lv]
        if len(sel) == 0:
            sel = np.zeros((1, features.shape[1]), features.dtype)
        out[lv] = np.concatenate([sel.mean(axis=0), sel.std(axis=0)])
    return out


def linear_probe(
    manifest: pd.DataFrame,
    pooled: dict[str, dict[int, np.ndarray]],
    level_names: list[str],
    tasks: tuple[str, ...] = ("typing", "staging"),
    folds: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """Cross-validated AUC of a logistic regression per (dataset, task, level).

    Args:
        manifest: slides with ``slide_id, dataset`` and the task columns (missing labels skipped).
        pooled: ``slide_id -> {level: vector}`` from :func:`pooled_level_features`.
        level_names: display name of each level, e.g. ``["thumbnail", "5x", "10x"]``.
    """
    rows = []
    for dataset, sub in manifest.groupby("dataset", sort=True):
        for task in (t for t in tasks if t in sub.columns):  # a cohort may label only some
            lab = sub[sub[task].notna() & sub["slide_id"].isin(pooled)]
            if lab.empty or lab[task].nunique() < 2:
                continue
            y = lab[task].astype(int).to_numpy()
            k = min(folds, int(np.bincount(y).min()))
            if k < 2:
                continue
            cv = StratifiedKFold(k, shuffle=True, random_state=seed)
            for lv, name in enumerate(level_names):
                x = np.stack([pooled[s][lv] for s in lab["slide_id"]])
                model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
                p = cross_val_predict(model, x, y, cv=cv, method="predict_proba")[:, 1]
                rows.append(
                    {
                        "dataset": dataset,
                        "task": task,
                        "level": name,
                        "slides": len(y),
                        "probe AUC": roc_auc_score(y, p),
                    }
                )
    return pd.DataFrame(rows)


def with_concatenated_levels(
    pooled: dict[str, dict[int, np.ndarray]], n_levels: int
) -> dict[str, dict[int, np.ndarray]]:
    """``pooled`` plus, under key ``n_levels``, the vectors of levels ``0..n_levels-1``
    concatenated: the slide-level control of issue 17 (a logistic regression on every level's
    slide mean and std at once), scored by :func:`linear_probe` like one more level."""
    return {
        sid: levels | {n_levels: np.concatenate([levels[lv] for lv in range(n_levels)])}
        for sid, levels in pooled.items()
    }


def chance_auc_std(n_pos: int, n_neg: int) -> float:
    """Standard deviation of the ROC AUC of a score unrelated to the label: the Mann-Whitney
    statistic's null std, ``sqrt((n_pos + n_neg + 1) / (12 n_pos n_neg))``. How far above 0.5 a
    control's AUC may land by chance on a cohort of this size."""
    if n_pos < 1 or n_neg < 1:
        raise ValueError(f"need at least one slide of each class, got {n_pos} and {n_neg}")
    return float(np.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg)))


@dataclass
class ProbeFold:
    """One fold of :func:`mean_std_lr` (the attributes :func:`wsigraph.train.bilevel.fold_table`
    reads): ``metrics`` holds the test ``acc`` and ``auc``."""

    repeat: int
    fold: int
    seed: int
    metrics: dict


def mean_std_lr(graphs, labels, splits, seed: int = 0) -> list[ProbeFold]:
    """The ABiG-Net demo's control: a standardised logistic regression on the per-image mean and
    std of the node features ``x`` (:func:`wsigraph.data.synthetic_rois.roi_mean_std`), trained
    on each split's training and validation images (it has nothing to select) and scored once on
    its test images. Accuracy and ROC AUC (one-vs-rest macro for more than two classes)."""
    from wsigraph.data.synthetic_rois import roi_mean_std

    x = roi_mean_std([g.x for g in graphs])
    y = np.asarray(labels).astype(np.int64)
    classes = np.unique(y)
    out = []
    for s in splits:
        fit = np.concatenate([s.train, s.val])
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
        model.fit(x[fit], y[fit])
        prob = model.predict_proba(x[s.test])
        acc = float((model.classes_[prob.argmax(1)] == y[s.test]).mean())
        if len(np.unique(y[s.test])) < 2:
            auc = float("nan")
        elif len(classes) == 2:
            auc = float(roc_auc_score(y[s.test], prob[:, 1]))
        else:
            auc = float(roc_auc_score(y[s.test], prob, multi_class="ovr", labels=model.classes_))
        out.append(ProbeFold(s.repeat, s.fold, seed, {"acc": acc, "auc": auc}))
    return out
