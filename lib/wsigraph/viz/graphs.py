"""Image-level patch graphs drawn over their ROI (ABiG-Net's learned graph vs a fixed k-NN graph)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection
from torch import Tensor


def _numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)


def draw_patch_graph(
    ax: plt.Axes,
    image: np.ndarray,
    grid: np.ndarray | Tensor,
    patch_size: int,
    edge_index: np.ndarray | Tensor,
    weight: np.ndarray | Tensor | None = None,
    node_values: np.ndarray | None = None,
    title: str = "",
    cmap: str = "viridis",
) -> None:
    """An ROI with its patch grid, one node per patch centre and the graph's edges.

    Each undirected edge is drawn once, its opacity and width growing with its weight (all
    equal when ``weight`` is ``None``); edges between non-adjacent patches (Chebyshev distance
    > 1 on the grid, i.e. long-range) are drawn in orange, the others in white. Nodes are
    coloured by ``node_values`` (e.g. a patch's orientation coherence) when given.

    Args:
        ax: where to draw.
        image: the ROI ``[H, W, 3]``.
        grid: patch coordinates ``[P, 2]`` ``(row, col)`` in patch units.
        patch_size: patch side in px.
        edge_index: ``[2, E]`` edges between patches (both directions may be present).
        weight: ``[E]`` edge weights in [0, 1] (default: all 1).
        node_values: ``[P]`` values in [0, 1] for the node colours (default: one colour).
        title: panel title.
        cmap: colour map of the nodes.
    """
    grid = _numpy(grid).astype(float)
    src, dst = _numpy(edge_index).astype(int)
    w = np.ones(len(src)) if weight is None else _numpy(weight).astype(float)
    once = src < dst
    src, dst, w = src[once], dst[once], w[once]
    centre = (grid + 0.5) * patch_size  # [P, 2] (row, col) px
    xy = centre[:, ::-1]  # matplotlib: (x = col, y = row)
    ax.imshow(image)
    h, wd = image.shape[:2]
    for r in range(0, h + 1, patch_size):
        ax.axhline(r - 0.5, color="k", lw=0.3, alpha=0.4)
    for c in range(0, wd + 1, patch_size):
        ax.axvline(c - 0.5, color="k", lw=0.3, alpha=0.4)
    far = np.abs(grid[src] - grid[dst]).max(axis=1) > 1  # [E] long-range edges
    wmax = max(float(w.max()), 1e-12) if len(w) else 1.0
    for sel, colour in ((~far, "white"), (far, "tab:orange")):
        if not sel.any():
            continue
        rel = w[sel] / wmax
        colours = np.zeros((int(sel.sum()), 4))
        colours[:] = plt.matplotlib.colors.to_rgba(colour)
        colours[:, 3] = 0.25 + 0.75 * rel
        ax.add_collection(
            LineCollection(
                np.stack([xy[src[sel]], xy[dst[sel]]], axis=1),
                colors=colours,
                linewidths=0.5 + 2.0 * rel,
                zorder=2,
            )
        )
    style = dict(s=40, edgecolors="k", linewidths=0.6, zorder=3)
    if node_values is None:
        ax.scatter(*xy.T, color="tab:blue", **style)
    else:
        ax.scatter(*xy.T, c=node_values, cmap=cmap, vmin=0, vmax=1, **style)
    n_far = int(far.sum())
    ax.set_title(f"{title}\n{len(src)} edges, {n_far} long-range", fontsize=9)
    ax.set_xlim(-0.5, wd - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.axis("off")
