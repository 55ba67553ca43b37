"""Figures of the toy-pyramid walkthrough (:mod:`wsigraph.walkthrough`, notebook 03)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection
from torch_geometric.data import Data

from wsigraph.viz.slides import LEVEL_COLOURS


def toy_layout(graph: Data) -> np.ndarray:
    """``[N, 2]`` drawing positions: one band per level (thumbnail on top), nodes spread by
    grid column, rows of a level slightly offset so children sit under their parent."""
    level = graph.level.numpy()
    row, col = graph.grid.numpy().T
    xy = np.zeros((len(level), 2))
    for lv in np.unique(level):
        sel = level == lv
        ncol = col[sel].max() + 1
        xy[sel, 0] = (col[sel] + 0.5) / ncol + 0.07 * row[sel]
        xy[sel, 1] = -lv - 0.55 * row[sel]
    return xy


def draw_attention(ax: plt.Axes, graph: Data, edges: pd.DataFrame, target: int, value: str) -> None:
    """The toy pyramid with the edges into ``target`` drawn by width and colour from
    ``edges[value]`` (a frame of :func:`wsigraph.walkthrough.raconv_attention` or
    :func:`~wsigraph.walkthrough.raconv_plus_attention`), each labelled with its value."""
    xy = toy_layout(graph)
    _background_edges(ax, graph, xy)
    into = edges[(edges["target"] == target) & (edges["source"] != target)]
    top = max(float(edges.loc[edges["target"] == target, value].max()), 1e-9)
    for e in into.itertuples():
        w = getattr(e, value)
        ax.plot(*np.stack([xy[e.source], xy[target]]).T, color=plt.cm.viridis(w / top),
                lw=0.5 + 4 * w / top, zorder=2)  # fmt: skip
        mid = 0.6 * xy[e.source] + 0.4 * xy[target]
        ax.text(*mid, f"{w:.2f}", fontsize=7, ha="center", va="center",
                bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})  # fmt: skip
    self_w = edges.loc[(edges["target"] == target) & (edges["source"] == target), value]
    _nodes(ax, graph, xy, highlight=target)
    ax.set_title(f"{value} into node {target} (self loop {float(self_w.iloc[0]):.2f})", fontsize=9)


def draw_clusters(ax: plt.Axes, graph: Data, nodes: pd.DataFrame) -> None:
    """The toy pyramid with each node coloured by the IHPool cluster it joins, its fitness
    written beside it and each cluster's centre ringed (a frame of
    :func:`wsigraph.walkthrough.ihpool_steps`)."""
    xy = toy_layout(graph)
    _background_edges(ax, graph, xy)
    colours = plt.cm.tab10(nodes["cluster"].to_numpy() % 10)
    ax.scatter(*xy.T, s=260, c=colours, edgecolors="k", linewidths=0.5, zorder=3)
    centre = nodes["centre"].to_numpy()
    ax.scatter(*xy[centre].T, s=520, facecolors="none", edgecolors="k", linewidths=1.6, zorder=2)
    for n in nodes.itertuples():
        ax.text(*xy[n.node], str(n.node), fontsize=7, ha="center", va="center", zorder=4)
        ax.text(xy[n.node, 0] + 0.045, xy[n.node, 1] + 0.08, f"φ {n.fitness:+.2f}",
                fontsize=6.5, ha="left", va="bottom")  # fmt: skip
    _frame(ax, graph)
    ax.set_title("IHPool: clusters (colour), centres (ringed), fitness φ", fontsize=9)


def _background_edges(ax, graph, xy):
    """Every edge of the toy pyramid, light grey, under what a panel highlights."""
    src, dst = graph.edge_index.numpy()
    ax.add_collection(
        LineCollection(np.stack([xy[src], xy[dst]], 1), colors="0.85", linewidths=0.6, zorder=1)
    )


def _nodes(ax, graph, xy, highlight=None):
    level = graph.level.numpy()
    ax.scatter(*xy.T, s=220, c=[LEVEL_COLOURS[lv] for lv in level], edgecolors="k",
               linewidths=[2.0 if i == highlight else 0.5 for i in range(len(level))], zorder=3)  # fmt: skip
    for i, p in enumerate(xy):
        ax.text(*p, str(i), fontsize=7, ha="center", va="center", color="white", zorder=4)
    _frame(ax, graph)


def _frame(ax, graph):
    names = ("thumbnail", "5x", "10x")
    for lv in range(int(graph.level.max()) + 1):
        ax.text(-0.08, -lv - 0.27 * (lv == 2), names[lv] if lv < 3 else f"level {lv}",
                ha="right", va="center", fontsize=8)  # fmt: skip
    ax.set_xlim(-0.3, 1.2)
    ax.set_ylim(-2.85, 0.35)
    ax.axis("off")
