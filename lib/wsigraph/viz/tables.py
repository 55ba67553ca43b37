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
) -> None:
    """One table cell as a dot plot: a row per method, our mean ± std (filled, with a bar;
    control rows in red) and the paper's (open diamond, with its printed std), in percent. Rows
    not run yet show only the paper's value and are marked so in their label; with a demo
    label, rows we did not run are left out and the controls' bound is drawn as a dashed line.
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
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlim(min(40.0, ax.get_xlim()[0]), 102)
    ax.axvline(50, color="0.85", lw=0.8, zorder=0)
    table = get_table(table_id)
    ax.set_xlabel(f"{METRICS[metric]} (%)")
    ax.set_title(
        f"{table.paper} Table {table.number}: {DATASETS[dataset]} {TASKS[task]}", fontsize=10
    )
    ax.legend(fontsize=7, loc="lower left")


def _once(seen: set, label: str) -> str | None:
    """``label`` the first time (for the legend), ``None`` after."""
    if label in seen:
        return None
    seen.add(label)
    return label


def cost_scatter(
    ax: plt.Axes, points: list[tuple[str, float, float | None]], xlabel: str, ylabel: str
) -> None:
    """HIGT Fig. 2 style: one labelled dot per method at (cost, AUC); methods without an AUC
    (not run yet) are listed in the lower right instead of being placed."""
    missing = [name for name, _, auc in points if auc is None]
    for name, cost, auc in points:
        if auc is None:
            continue
        ax.scatter(cost, auc, s=30)
        ax.annotate(name, (cost, auc), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
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
