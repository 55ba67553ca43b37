"""Slide figures: thumbnails, tissue masks, the tiles kept at each magnification, pyramid graphs."""

from __future__ import annotations

import matplotlib.font_manager as fm
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection, PatchCollection
from matplotlib.patches import Rectangle
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar
from torch_geometric.data import Data

from wsigraph.data.tiling import TileSet
from wsigraph.graphs.pyramid import SCALING, SPATIAL

LEVEL_COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"]  # thumbnail, 5x, 10x, ...
_NICE_UM = (10, 20, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000)


def scale_bar(
    ax: plt.Axes, um_per_px: float | None, width_px: float, loc: str = "lower left"
) -> AnchoredSizeBar | None:
    """A µm scale bar on an image axis, about a fifth of its width, at a round length.

    Args:
        ax: the axis showing the image.
        um_per_px: µm per *displayed* pixel (the slide's level-0 µm/px times its downsample);
            ``None`` or non-finite (a slide without a resolution) draws nothing.
        width_px: the image's displayed width in pixels.
        loc: where the bar goes (a matplotlib legend location).

    Returns:
        The bar, or ``None`` when ``um_per_px`` is unknown.
    """
    if um_per_px is None or not np.isfinite(um_per_px) or um_per_px <= 0 or width_px <= 0:
        return None
    target = width_px * um_per_px / 5
    length = max([u for u in _NICE_UM if u <= target], default=_NICE_UM[0])
    label = f"{length / 1000:g} mm" if length >= 1000 else f"{length:g} µm"
    bar = AnchoredSizeBar(
        ax.transData,
        length / um_per_px,
        label,
        loc,
        pad=0.4,
        sep=3,
        color="black",
        frameon=True,
        size_vertical=max(1.0, width_px / 150),
        fontproperties=fm.FontProperties(size=7),
    )
    bar.patch.set_alpha(0.75)
    ax.add_artist(bar)
    return bar


def level_counts(tiles: TileSet) -> str:
    """``"1 thumbnail, 16 patches at 5x, 64 at 10x"``: what a :class:`TileSet` holds, for a title."""
    parts = [f"{int((tiles.level == 0).sum())} thumbnail"]
    for lv, m in enumerate(tiles.magnifications, start=1):
        n = int((tiles.level == lv).sum())
        parts.append(f"{n} patches at {m:g}x" if lv == 1 else f"{n} at {m:g}x")
    return ", ".join(parts)


def thumbnail_grid(
    items: list[tuple[np.ndarray, str]],
    ncols: int = 4,
    width: float = 3.2,
    um_per_px: list[float | None] | None = None,
) -> plt.Figure:
    """Thumbnails side by side with a title each, and a µm scale bar where ``um_per_px`` (one
    value per item: µm per thumbnail pixel) is known."""
    nrows = -(-len(items) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width * ncols, width * 0.8 * nrows), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    scales = um_per_px or [None] * len(items)
    for ax, (img, title), um in zip(axes.flat, items, scales, strict=False):
        ax.imshow(img)
        ax.set_title(title, fontsize=9)
        scale_bar(ax, um, img.shape[1])
    fig.tight_layout()
    return fig


def draw_tiles(
    ax: plt.Axes,
    thumb: np.ndarray,
    tiles: TileSet,
    mask: np.ndarray | None = None,
    mpp: float | None = None,
) -> None:
    """The thumbnail with the tissue-mask outline and one outlined square per kept patch;
    with the slide's level-0 ``mpp`` (µm/px), a scale bar."""
    scale = thumb.shape[1] / tiles.slide_size[0]
    scale_bar(ax, None if mpp is None else mpp / scale, thumb.shape[1])
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
    mpp: float | None = None,
) -> None:
    """A pyramid graph over its slide's thumbnail.

    Nodes sit at their patch centres, coloured by level (the thumbnail node is the star at the
    slide centre); spatial edges are drawn in their level's colour, scaling edges as thin grey
    lines from each patch to its parent. The legend sits below the image, off the nodes; with
    the slide's level-0 ``mpp`` (µm/px), a scale bar.
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
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=7, frameon=False)
    ax.set_xlim(0, thumb.shape[1])
    ax.set_ylim(thumb.shape[0], 0)
    scale_bar(ax, None if mpp is None else mpp / scale, thumb.shape[1])
    ax.axis("off")
