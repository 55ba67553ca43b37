"""Slide figures: thumbnails, tissue masks, the tiles kept at each magnification, pyramid graphs."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection, PatchCollection
from matplotlib.patches import Rectangle
from torch_geometric.data import Data

from wsigraph.data.tiling import TileSet
from wsigraph.graphs.pyramid import SCALING, SPATIAL

LEVEL_COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"]  # thumbnail, 5x, 10x, ...


def thumbnail_grid(
    items: list[tuple[np.ndarray, str]], ncols: int = 4, width: float = 3.2
) -> plt.Figure:
    """Thumbnails side by side with a title each."""
    nrows = -(-len(items) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width * ncols, width * 0.8 * nrows), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, (img, title) in zip(axes.flat, items, strict=False):
        ax.imshow(img)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def draw_tiles(
    ax: plt.Axes, thumb: np.ndarray, tiles: TileSet, mask: np.ndarray | None = None
) -> None:
    """The thumbnail with the tissue-mask outline and one outlined square per kept patch."""
    scale = thumb.shape[1] / tiles.slide_size[0]
    ax.imshow(thumb)
    if mask is not None:
        ax.contour(mask, levels=[0.5], colors="k", linewidths=0.8)
    for lv in range(1, len(tiles.magnifications) + 1):
        sel = tiles.level == lv
        boxes = [
            Rectangle((x * scale, y * scale), s * scale, s * scale)
            for x, y, s in zip(tiles.x[sel], tiles.y[sel], tiles.size0[sel], strict=True)
        ]
        ax.add_collection(
            PatchCollection(
                boxes,
                facecolor="none",
                edgecolor=LEVEL_COLOURS[lv],
                linewidth=0.6 + 0.6 * (lv == 1),
                label=f"{tiles.magnifications[lv - 1]:g}x ({sel.sum()})",
            )
        )
    ax.legend(
        handles=[
            plt.Line2D(
                [],
                [],
                color=LEVEL_COLOURS[lv],
                label=f"{m:g}x: {(tiles.level == lv).sum()} patches",
            )
            for lv, m in enumerate(tiles.magnifications, start=1)
        ],
        loc="lower right",
        fontsize=7,
    )
    ax.axis("off")


def draw_pyramid_graph(
    ax: plt.Axes,
    thumb: np.ndarray,
    graph: Data,
    slide_size: tuple[int, int],
    level_names: list[str] | None = None,
) -> None:
    """A pyramid graph over its slide's thumbnail.

    Nodes sit at their patch centres, coloured by level (the thumbnail node is the star at the
    slide centre); spatial edges are drawn in their level's colour, scaling edges as thin grey
    lines from each patch to its parent.
    """
    scale = thumb.shape[1] / slide_size[0]
    pos = graph.pos.numpy() * scale
    level = graph.level.numpy()
    top = int(level.max())
    names = level_names or ["thumbnail"] + [f"level {lv}" for lv in range(1, top + 1)]
    src, dst = graph.edge_index.numpy()
    etype = graph.edge_type.numpy()
    ax.imshow(thumb, alpha=0.6)
    up = (etype == SCALING) & (level[src] > level[dst])  # child -> parent, drawn once
    ax.add_collection(
        LineCollection(
            np.stack([pos[src[up]], pos[dst[up]]], axis=1),
            colors="0.3",
            linewidths=0.3,
            alpha=0.45,
            zorder=1,
        )
    )
    for lv in range(1, top + 1):
        sel = (etype == SPATIAL) & (level[src] == lv) & (src < dst)
        width = 1.2 if lv == 1 else 0.6
        ax.add_collection(
            LineCollection(
                np.stack([pos[src[sel]], pos[dst[sel]]], axis=1),
                colors=LEVEL_COLOURS[lv],
                linewidths=width,
                alpha=0.55 if lv == 1 else 0.8,
                zorder=1 + lv,
            )
        )
    for lv in range(top + 1):
        sel = level == lv
        label = f"{names[lv]} node" if lv == 0 else f"{names[lv]}: {sel.sum()} nodes"
        ax.scatter(
            *pos[sel].T,
            s=160 if lv == 0 else 22 / lv,
            c=LEVEL_COLOURS[lv],
            marker="*" if lv == 0 else "o",
            edgecolors="k" if lv == 0 else "none",
            linewidths=0.6,
            zorder=10 + lv,
            label=label,
        )
    ax.plot([], [], color="0.3", lw=0.8, label="scaling edges (patch to parent)")
    ax.legend(loc="lower right", fontsize=7, framealpha=0.9)
    ax.set_xlim(0, thumb.shape[1])
    ax.set_ylim(thumb.shape[0], 0)
    ax.axis("off")
