"""Kaplan-Meier curves of predicted risk groups, with a log-rank test (lifelines)."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

GROUP_NAMES = ("low risk", "high risk")


def km_risk_groups(
    ax: plt.Axes,
    times,
    censorship,
    high_risk,
    title: str = "",
    time_label: str = "months",
    at_risk: bool = True,
) -> float:
    """Kaplan-Meier curves of the low- and high-risk groups on ``ax``; returns the log-rank p.

    Args:
        ax: where to draw.
        times: follow-up times ``[N]``; ``censorship``: 1 = censored, 0 = event.
        high_risk: group of each case ``[N]`` (0 = low, 1 = high), e.g. from
            :func:`wsigraph.train.survival.pooled_predictions`.
        title: the panel title (the p-value is appended).
        at_risk: add lifelines' at-risk and event counts under the axis (default ``True``).

    Returns:
        The two-sided log-rank p-value (``NaN`` when a group is empty).
    """
    from lifelines import KaplanMeierFitter
    from lifelines.plotting import add_at_risk_counts
    from lifelines.statistics import logrank_test

    t = np.asarray(times, dtype=float)
    e = 1 - np.asarray(censorship, dtype=int)
    g = np.asarray(high_risk, dtype=int)
    if not (len(t) == len(e) == len(g)) or len(t) == 0:
        raise ValueError(f"need equal, non-empty lengths; got {len(t)}, {len(e)}, {len(g)}")
    if not np.isin(g, (0, 1)).all():
        raise ValueError("high_risk must be 0 or 1")
    fitters = []
    for k, (name, color) in enumerate(zip(GROUP_NAMES, ("tab:blue", "tab:red"), strict=True)):
        sel = g == k
        if sel.any():
            kmf = KaplanMeierFitter(label=f"{name} (n={int(sel.sum())})")
            kmf.fit(t[sel], e[sel])
            kmf.plot_survival_function(ax=ax, ci_show=True, color=color, show_censors=True)
            fitters.append(kmf)
    if at_risk and fitters:  # lifelines' table of cases still at risk under the time axis
        add_at_risk_counts(*fitters, ax=ax, rows_to_show=["At risk", "Events"], fontsize=7)
    p = np.nan
    if (g == 0).any() and (g == 1).any():
        p = float(logrank_test(t[g == 0], t[g == 1], e[g == 0], e[g == 1]).p_value)
    ax.set_title(f"{title}\nlog-rank p = {p:.2g}" if title else f"log-rank p = {p:.2g}")
    ax.set_xlabel(time_label)
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.05)
    return p


def km_figure(panels: Mapping[str, pd.DataFrame], ncols: int = 4) -> tuple[plt.Figure, dict]:
    """One :func:`km_risk_groups` panel per entry of ``panels`` (``title -> frame`` with
    ``time, censorship, high_risk``); returns the figure and ``title -> log-rank p``."""
    if not panels:
        raise ValueError("no panels to draw")
    n = len(panels)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 4.4 * nrows), squeeze=False)
    pvalues = {}
    for ax, (title, df) in zip(axes.flat, panels.items(), strict=False):
        pvalues[title] = km_risk_groups(ax, df["time"], df["censorship"], df["high_risk"], title)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig, pvalues
