"""Figures of the paper tables: our numbers beside the published ones."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from wsigraph.tables import CONTROL_AUC_BOUND, DATASETS, METRICS, TASKS, cell_values, get_table


def ours_vs_paper(
    ax: plt.Axes,
    table_id: str,
    records: dict,
    dataset: str,
    task: str,
    metric: str = "auc",
    label: str = "ours (demo)",
    groups: tuple[str, ...] | None = None,
    xlim: tuple[float, float] = (20.0, 110.0),
) -> None:
    """One table cell as a dot plot: a row per method, our mean ± std (filled, with a bar;
    control rows in red) and the paper's (open diamond, with its printed std), in percent. Rows
    not run yet show only the paper's value and are marked so in their label; with a demo
    label, rows we did not run are left out and the controls' bound is drawn as a dashed line.
    Every panel gets the same x range ``xlim`` unless a value's bar would be cut off there.
    """
    demo = "demo" in label
    rows = [
        (row, ours, paper)
        for row, ours, paper in cell_values(table_id, records, dataset, task, metric)
        if (groups is None or row.group in groups) and not (demo and ours is None)
    ]
    y = np.arange(len(rows))[::-1]
    seen: set[str] = set()
    for yi, (row, ours, paper) in zip(y, rows, strict=True):
        if paper is not None:
            ax.errorbar(
                paper.mean,
                yi + 0.15,
                xerr=paper.std,
                fmt="D",
                mfc="white",
                color="tab:gray",
                ms=5,
                capsize=2,
                label=_once(seen, "paper"),
            )
        if ours is not None:
            control = row.group == "Control"
            ax.errorbar(
                ours[0],
                yi - 0.15,
                xerr=ours[1],
                fmt="o",
                color="tab:red" if control else "tab:blue",
                ms=5,
                capsize=2,
                label=_once(seen, label + (" (control)" if control else "")),
            )
    if demo and metric == "auc":
        ax.axvline(100 * CONTROL_AUC_BOUND, color="tab:red", ls="--", lw=0.8, label="control bound")
    names = [row.name + ("" if ours is not None else " (not run)") for row, ours, _ in rows]
    ax.set_yticks(y, names, fontsize=9)
    ax.set_xlim(*_xlim(rows, xlim))
    ax.axvline(50, color="0.85", lw=0.8, zorder=0)
    table = get_table(table_id)
    ax.set_xlabel(f"{METRICS[metric]} (%)", fontsize=10)
    ax.tick_params(axis="x", labelsize=9)
    ax.set_title(
        f"{table.paper} Table {table.number}: {DATASETS[dataset]} {TASKS[task]}", fontsize=11
    )
    ax.legend(fontsize=8, loc="lower left")


def _xlim(rows, xlim: tuple[float, float]) -> tuple[float, float]:
    """``xlim``, widened where a mean ± std would fall outside it (so no bar is cut off)."""
    lo, hi = xlim
    for _, ours, paper in rows:
        for value in ([] if ours is None else [ours]) + ([] if paper is None else [paper]):
            mean, std = (
                (value[0], value[1]) if isinstance(value, tuple) else (value.mean, value.std)
            )
            std = std or 0.0
            lo, hi = min(lo, mean - std - 2), max(hi, mean + std + 2)
    return lo, hi


def _once(seen: set, label: str) -> str | None:
    """``label`` the first time (for the legend), ``None`` after."""
    if label in seen:
        return None
    seen.add(label)
    return label


def cost_scatter(
    ax: plt.Axes,
    points: list[tuple[str, float, float | None]],
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    controls: tuple[str, ...] = (),
) -> dict[str, object]:
    """HIGT Fig. 2 style: one dot per method at (cost, AUC), identified by colour and marker in
    a legend rather than by text beside it (labels of nearby dots overlap). Methods in
    ``controls`` are drawn as red triangles. Methods without an AUC (not run) are listed in the
    lower right instead of being placed.

    Returns:
        ``{method: handle}`` for a legend shared by several panels (``fig.legend``); the
        colours follow the order of ``points``, so panels drawn from the same list agree.
    """
    missing = [name for name, _, auc in points if auc is None]
    handles, colours, triangles = {}, iter(plt.cm.tab10.colors), iter("v^<>")
    for name, cost, auc in points:
        control = name in controls
        colour, marker = ("tab:red", next(triangles, "v")) if control else (next(colours), "o")
        if auc is None:
            continue
        handles[name] = ax.scatter(cost, auc, s=40, color=colour, marker=marker, label=name,
                                   edgecolors="k", linewidths=0.4, zorder=3)  # fmt: skip
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    if missing:
        ax.text(
            0.98,
            0.02,
            "not run: " + ", ".join(missing),
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=7,
            color="0.4",
        )
    return handles
