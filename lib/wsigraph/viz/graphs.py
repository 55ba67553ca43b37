"""Image-level patch graphs drawn over their ROI (ABiG-Net's learned graph vs a fixed k-NN graph)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.lines import Line2D
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
    node_label: str | None = None,
) -> plt.cm.ScalarMappable | None:
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
        node_label: what the node colour shows, for the legend (e.g. "nuclei per patch").

    Returns:
        The node colour scale (0-1) for a colour bar, or ``None`` without ``node_values``. A
        legend names the two edge colours (and the node colour's meaning).
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
    handles = [
        Line2D([], [], color="white", lw=2, label="edge between grid neighbours"),
        Line2D([], [], color="tab:orange", lw=2, label="long-range edge (not adjacent)"),
        Line2D([], [], color="none", label="width and opacity: edge weight"),
    ]
    if node_values is not None and node_label:
        handles.append(
            Line2D(
                [],
                [],
                marker="o",
                ls="",
                color=plt.get_cmap(cmap)(0.7),
                markeredgecolor="k",
                label=f"node colour: {node_label}",
            )  # fmt: skip
        )
    legend = ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2,
                       fontsize=7, frameon=True, facecolor="0.55")  # fmt: skip
    legend.get_frame().set_alpha(0.9)
    if node_values is None:
        return None
    return plt.cm.ScalarMappable(norm=plt.Normalize(0, 1), cmap=cmap)


def edge_statistics(
    edge_index: np.ndarray | Tensor,
    grid: np.ndarray | Tensor,
    values: np.ndarray | Tensor,
    weight: np.ndarray | Tensor | None = None,
) -> dict[str, float]:
    """What a patch graph connects: its size, how far its edges reach, and how alike the patches
    it joins are in ``values`` (e.g. each patch's orientation coherence).

    Args:
        edge_index: ``[2, E]`` edges (both directions may be present; each pair counts once).
        grid: patch coordinates ``[P, 2]`` in patch units.
        values: one value per patch ``[P]``.
        weight: ``[E]`` edge weights (default: all 1); the gap is weighted by them.

    Returns:
        ``edges`` (undirected), ``long_range`` (fraction of edges between non-adjacent patches),
        ``gap`` (weighted mean ``|v_i - v_j|`` over the edges) and ``gap_all_pairs`` (the same
        over every pair of patches: what a graph blind to ``values`` would show).
    """
    ei, grid, values = _numpy(edge_index), _numpy(grid), _numpy(values).astype(float)
    w = np.ones(ei.shape[1]) if weight is None else _numpy(weight).astype(float)
    once = ei[0] < ei[1]
    src, dst, w = ei[0][once], ei[1][once], w[once]
    far = np.abs(grid[src] - grid[dst]).max(axis=1) > 1
    gap = np.abs(values[src] - values[dst])
    i, j = np.triu_indices(len(values), k=1)
    return {
        "edges": float(once.sum()),
        "long_range": float(far.mean()) if len(far) else float("nan"),
        "gap": float((w * gap).sum() / w.sum()) if w.sum() > 0 else float("nan"),
        "gap_all_pairs": float(np.abs(values[i] - values[j]).mean()) if len(i) else float("nan"),
    }
