"""Interpretation figures: H2-MIL Fig. 3 (IHPool fitness heatmaps and structures) and ROC curves.

H2-MIL Fig. 3: "the representative structures are extracted by the last IHPool layer and ordered
by the fitness score ... The heatmap is obtained by normalizing and weighting the fitness of
patch and their corresponding structure during the forward propagation." We compute, for every
original patch ``u``, the product over IHPool layers of the min-max-normalised fitness of the
node that ``u`` belongs to at that layer (the patch itself at layer 1, its cluster at layer 2,
...); a *structure* is a cluster of the last IHPool layer, drawn as the set of original patches
it gathers, ordered by its centre's fitness.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.collections import PatchCollection
from matplotlib.patches import Rectangle
from sklearn.metrics import roc_auc_score, roc_curve

from wsigraph.nn.ihpool import PoolInfo
from wsigraph.viz.slides import scale_bar


def fitness_map(infos: list[PoolInfo | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per original node: heat (product of normalised fitness over layers), last-layer cluster,
    and the fitness of each last-layer cluster's centre (for ordering structures).

    The model's input must be a single graph with all levels kept (no level selection).
    """
    infos = [i for i in infos if i is not None]
    if not infos:
        raise ValueError("the model has no IHPool layer to interpret (pool must be 'ihpool')")
    n = infos[0].assignment.numel()
    node = torch.arange(n)  # index of each original node at the current layer
    heat = torch.ones(n)
    last_fitness = None
    for info in infos:
        f = info.fitness.detach().cpu()
        lo, hi = f.min(), f.max()
        heat = heat * ((f - lo) / (hi - lo + 1e-12))[node]
        last_fitness = f[info.centre.cpu()]
        node = info.assignment.cpu()[node]
    return heat.numpy(), node.numpy(), last_fitness.numpy()


def heat_on_signal(heat: np.ndarray, signal: np.ndarray) -> dict[str, float]:
    """Where a slide's heat lies against the patches known to carry the signal (``signal``,
    boolean per patch; e.g. :func:`wsigraph.data.synthetic.signal_cells` on a demo slide).

    Returns:
        ``patch_share`` (the share of patches that carry the signal), ``heat_share`` (their
        share of the total heat; equal to ``patch_share`` when the heat ignores the signal) and
        ``auc`` (the ROC AUC of the heat for telling signal patches from the rest; 0.5 by
        chance, NaN when all or none carry it).
    """
    heat, signal = np.asarray(heat, np.float64), np.asarray(signal, bool)
    if heat.shape != signal.shape:
        raise ValueError(f"heat {heat.shape} and signal {signal.shape} differ in shape")
    total = heat.sum()
    return {
        "patch_share": float(signal.mean()) if len(signal) else math.nan,
        "heat_share": float(heat[signal].sum() / total) if total > 0 else math.nan,
        "auc": float(roc_auc_score(signal, heat)) if 0 < signal.sum() < len(signal) else math.nan,
    }


def draw_fitness(
    ax: plt.Axes,
    thumb: np.ndarray,
    graph,
    heat: np.ndarray,
    cluster: np.ndarray,
    centre_fitness: np.ndarray,
    slide_size: tuple[int, int],
    level: int,
    top: int = 3,
    mpp: float | None = None,
    colorbar: bool = True,
    alpha: float = 0.75,
) -> plt.cm.ScalarMappable:
    """Heat of the patches of ``level`` over the thumbnail, with the ``top`` structures outlined.

    The heat is on a fixed 0-1 scale (a product of min-max-normalised fitness values), so
    panels side by side share one colour scale: draw the colour bar once
    (``colorbar=False`` here, then ``fig.colorbar`` on the returned scale). A patch's opacity
    grows with its heat, up to ``alpha``, so the tissue stays visible under cool patches; with
    the slide's level-0 ``mpp`` (µm/px) a scale bar is drawn.

    Returns:
        The heat's colour scale, a :class:`~matplotlib.cm.ScalarMappable` on 0-1 (for a shared
        colour bar).
    """
    scale = thumb.shape[1] / slide_size[0]
    sel = graph.level.numpy() == level
    pos = graph.pos.numpy()[sel]
    side = _side(pos) * scale
    ax.imshow(thumb)
    boxes = [
        Rectangle(((x * scale) - side / 2, (y * scale) - side / 2), side, side) for x, y in pos
    ]
    # Low heat is nearly transparent, so the tissue stays visible where nothing lights up.
    scalar = plt.cm.ScalarMappable(norm=plt.Normalize(0, 1), cmap="inferno")
    colours = scalar.to_rgba(np.clip(heat[sel], 0, 1))
    colours[:, 3] = alpha * (0.15 + 0.85 * np.clip(heat[sel], 0, 1))
    coll = PatchCollection(boxes, facecolors=colours, linewidth=0)
    ax.add_collection(coll)
    order = [c for c in np.argsort(-centre_fitness) if (cluster[sel] == c).any()][:top]
    colours = ["#00e5ff", "#76ff03", "#ffea00", "#ff4081"]
    for rank, c in enumerate(order):
        members = pos[cluster[sel] == c]
        edge = [
            Rectangle(((x * scale) - side / 2, (y * scale) - side / 2), side, side)
            for x, y in members
        ]
        ax.add_collection(
            PatchCollection(edge, facecolor="none", edgecolor=colours[rank % 4], linewidth=1.4)
        )
        ax.plot(
            [],
            [],
            color=colours[rank % 4],
            lw=2,
            label=f"structure {rank + 1} ({len(members)} patches)",
        )
    ax.legend(loc="lower right", fontsize=7)
    scale_bar(ax, None if mpp is None else mpp / scale, thumb.shape[1])
    ax.axis("off")
    if colorbar:
        plt.colorbar(scalar, ax=ax, fraction=0.03, pad=0.01, label=FITNESS_LABEL)
    return scalar


FITNESS_LABEL = "normalised fitness (product over IHPool layers)"


def _side(pos: np.ndarray) -> float:
    """Patch side from the spacing of patch centres (level-0 px)."""
    if len(pos) < 2:
        return 64.0
    d = np.diff(np.unique(pos[:, 0]))
    return float(d[d > 0].min()) if (d > 0).any() else 64.0


def roc_panel(
    ax: plt.Axes,
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    title: str,
    fold_auc: dict[str, tuple[float, float | None]] | None = None,
) -> None:
    """ROC curves, one per label: ``{label: (y_true, prob_of_class_1)}``, each the test
    predictions of every fold *pooled*. The legend gives that pooled curve's AUC and, where
    ``fold_auc`` has the label, the tables' mean ± std of the per-fold AUCs (the two differ:
    pooling also scores how well the folds' scores line up with each other)."""
    for label, (y, p) in curves.items():
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, p)
        text = f"{label}: pooled AUC {roc_auc_score(y, p):.3f}"
        if fold_auc and label in fold_auc:
            mean, std = fold_auc[label]
            text += f", per fold {mean:.3f}" + ("" if std is None else f" ± {std:.3f}")
        ax.plot(fpr, tpr, lw=1.4, label=text)
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=title,
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right", fontsize=7)


def draw_curves(
    ax_loss: plt.Axes, ax_auc: plt.Axes, label: str, record: dict, colour: str | None = None
) -> bool:
    """The training curves of one run record (``fold_details[*].history``): per epoch, the mean
    over its folds of the training loss (dashed) and the validation loss (solid) on ``ax_loss``,
    of the training AUC (dashed; from the training passes) and validation AUC (solid) on
    ``ax_auc``, with the folds' range shaded for the validation curves. Returns ``False`` (and
    draws nothing) when the record holds no history (written before curves were recorded)."""
    histories = [f.get("history") for f in record.get("fold_details", [])]
    histories = [h for h in histories if h]
    if not histories:
        return False
    frame = (
        pd.concat([pd.DataFrame(h).assign(fold=i) for i, h in enumerate(histories)])
        .apply(pd.to_numeric, errors="coerce")
        .groupby("epoch")
    )
    mean, lo, hi = frame.mean(), frame.min(), frame.max()
    epochs = mean.index.to_numpy()
    line = ax_loss.plot(epochs, mean["val_loss"], color=colour, lw=1.5, label=f"{label} val")[0]
    colour = line.get_color()
    ax_loss.plot(epochs, mean["train_loss"], color=colour, lw=1.2, ls="--", label=f"{label} train")
    ax_loss.fill_between(epochs, lo["val_loss"], hi["val_loss"], color=colour, alpha=0.12, lw=0)
    ax_auc.plot(epochs, mean["val_auc"], color=colour, lw=1.5, label=f"{label} val")
    if "train_auc" in mean and mean["train_auc"].notna().any():
        ax_auc.plot(epochs, mean["train_auc"], color=colour, lw=1.2, ls="--",
                    label=f"{label} train")  # fmt: skip
    ax_auc.fill_between(epochs, lo["val_auc"], hi["val_auc"], color=colour, alpha=0.12, lw=0)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy")
    ax_auc.set(xlabel="epoch", ylabel="AUC", ylim=(0.3, 1.02))
    return True
