"""Multi-resolution tiling: H2-MIL's WSI pyramid as a table of patches.

The pyramid (H2-MIL, Heterogeneous Graph Construction) has one *thumbnail* node -- the whole
slide as one patch -- and a grid of ``patch_size`` patches at each magnification (the papers:
512 px at 5x and 10x). Levels are numbered 0 (thumbnail), 1, 2, ... by increasing
magnification. Grids are aligned: the patch at ``(row, col)`` of level ``l + 1`` lies inside the
patch ``(row // k, col // k)`` of level ``l``, ``k`` being the magnification ratio (an integer;
2 for 5x -> 10x), which is its *parent*. Level-1 patches all hang under the thumbnail.

Filtering keeps the pyramid connected: a patch is kept when it passes the filter *or* when a
finer patch inside it is kept, so every kept patch's chain of parents reaches the thumbnail.
Everything is vectorised over patches (numpy; no Python loop per patch).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from wsigraph.data.tissue import EmptyTissueError

THUMBNAIL = 0

_ARRAYS = ("level", "row", "col", "x", "y", "size0", "parent", "tissue")


@dataclass
class TileSet:
    """The patches of one slide's pyramid. Arrays are ``[N]``; index 0 is the thumbnail.

    Attributes:
        level: 0 = thumbnail, then 1, 2, ... by increasing magnification.
        row, col: grid position within the level (0, 0 for the thumbnail).
        x, y: level-0 top-left corner; size0: side in level-0 pixels.
        parent: index of the containing patch one level coarser (-1 for the thumbnail).
        tissue: fraction of the patch covered by the tissue mask.
        magnifications: magnification of levels 1.. (level 0 is the thumbnail).
        patch_size: side in pixels of every patch as read (the thumbnail is letterboxed).
        slide_size: level-0 (width, height).
    """

    level: np.ndarray
    row: np.ndarray
    col: np.ndarray
    x: np.ndarray
    y: np.ndarray
    size0: np.ndarray
    parent: np.ndarray
    tissue: np.ndarray
    magnifications: tuple[float, ...]
    patch_size: int
    slide_size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.level)

    def counts(self) -> dict[str, int]:
        """Number of patches per level, keyed ``"thumbnail"``, ``"5x"``, ``"10x"``, ..."""
        n = np.bincount(self.level, minlength=len(self.magnifications) + 1)
        return {"thumbnail": int(n[0])} | {
            f"{m:g}x": int(c) for m, c in zip(self.magnifications, n[1:], strict=True)
        }

    def magnification_of(self, index: np.ndarray | int) -> np.ndarray:
        """Magnification of each patch (``nan`` for the thumbnail)."""
        mags = np.array((np.nan, *self.magnifications))
        return mags[self.level[index]]

    def closure(self, keep: np.ndarray) -> np.ndarray:
        """``keep`` plus the thumbnail and every ancestor of a kept patch (boolean ``[N]``)."""
        keep = np.asarray(keep, dtype=bool).copy()
        keep[self.level == THUMBNAIL] = True
        for lv in range(int(self.level.max()), 0, -1):  # finest to coarsest: close upwards
            keep[self.parent[keep & (self.level == lv)]] = True
        return keep

    def select(self, keep: np.ndarray) -> TileSet:
        """Keep the patches where ``keep`` is true, plus every ancestor of a kept patch.

        The thumbnail is always kept. Parents are re-indexed. The rows kept are
        ``np.flatnonzero(tiles.closure(keep))``.
        """
        keep = self.closure(keep)
        new_index = np.cumsum(keep) - 1
        parent = np.where(self.parent[keep] >= 0, new_index[self.parent[keep]], -1)
        arrays = {name: getattr(self, name)[keep] for name in _ARRAYS}
        arrays["parent"] = parent
        return TileSet(**arrays, **self._meta())

    def to_dict(self) -> dict:
        """Plain arrays and numbers, loadable with ``torch.load(weights_only=True)``."""
        import torch

        out = {
            name: torch.from_numpy(np.ascontiguousarray(getattr(self, name))) for name in _ARRAYS
        }
        out["magnifications"] = list(self.magnifications)
        out["patch_size"] = self.patch_size
        out["slide_size"] = list(self.slide_size)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> TileSet:
        arrays = {name: np.asarray(d[name]) for name in _ARRAYS}
        return cls(
            **arrays,
            magnifications=tuple(float(m) for m in d["magnifications"]),
            patch_size=int(d["patch_size"]),
            slide_size=tuple(int(s) for s in d["slide_size"]),
        )

    def _meta(self) -> dict:
        names = {f.name for f in fields(self)} - set(_ARRAYS)
        return {name: getattr(self, name) for name in names}


def plan_tiles(
    slide_size: tuple[int, int],
    base_magnification: float,
    magnifications: tuple[float, ...],
    patch_size: int,
    mask: np.ndarray,
    min_tissue: float = 0.5,
    name: str = "slide",
) -> TileSet:
    """Lay the pyramid's grids over a slide and keep the patches on tissue.

    Args:
        slide_size: level-0 ``(width, height)``.
        base_magnification: objective power of level 0.
        magnifications: the grids' magnifications, e.g. ``(5, 10)``; consecutive ratios must be
            integers and none may exceed ``base_magnification``.
        patch_size: patch side in pixels at its own magnification (512 in the papers).
        mask: boolean tissue mask of the whole slide at any resolution (aspect preserved).
        min_tissue: a patch is kept when at least this fraction of it is tissue (or when a
            finer patch inside it is kept). (default: ``0.5``)
        name: used in error messages.

    Raises:
        ValueError: for inconsistent magnifications.
        EmptyTissueError: when no patch at any magnification has enough tissue.
    """
    mags = _check_magnifications(base_magnification, magnifications)
    width, height = slide_size
    sides = [patch_size * base_magnification / m for m in mags]
    # Grid extents: the coarsest grid holds whole patches only; finer grids stay inside it.
    n_rows, n_cols = [int(height // sides[0])], [int(width // sides[0])]
    for lv in range(1, len(mags)):
        k = round(mags[lv] / mags[lv - 1])
        n_rows.append(n_rows[-1] * k)
        n_cols.append(n_cols[-1] * k)
    if n_rows[0] == 0 or n_cols[0] == 0:
        raise ValueError(
            f"{name}: slide of {width}x{height} px is smaller than one {patch_size} px patch at "
            f"{mags[0]:g}x ({sides[0]:.0f} level-0 px)"
        )

    level, row, col = [np.zeros(1, np.int64)], [np.zeros(1, np.int64)], [np.zeros(1, np.int64)]
    for lv, (nr, nc) in enumerate(zip(n_rows, n_cols, strict=True), start=1):
        r, c = np.divmod(np.arange(nr * nc, dtype=np.int64), nc)
        level.append(np.full(nr * nc, lv, np.int64))
        row.append(r)
        col.append(c)
    level, row, col = np.concatenate(level), np.concatenate(row), np.concatenate(col)

    side = np.array([max(width, height), *sides])[level]
    x, y = col * side, row * side
    x[0] = y[0] = 0.0
    tissue = _tissue_fraction(mask, slide_size, x, y, side)
    tissue[0] = mask.mean()
    parent = _parent_index(level, row, col, mags)

    tiles = TileSet(level, row, col, x, y, side, parent, tissue, mags, patch_size, (width, height))
    passing = tiles.tissue >= min_tissue
    passing[0] = False
    if not passing.any():
        raise EmptyTissueError(
            f"{name}: no patch has >= {min_tissue:.0%} tissue at {', '.join(f'{m:g}x' for m in mags)} "
            f"(best: {tiles.tissue[1:].max():.0%}); lower min_tissue or check the tissue mask"
        )
    return tiles.select(passing)


def background_keep(tiles: TileSet, rgb_var: np.ndarray, threshold: float) -> np.ndarray:
    """H2-MIL's background filter: which patches to keep (boolean ``[N]``).

    A patch whose RGB variance is below ``threshold`` is dropped unless a finer kept patch lies
    inside it (see :meth:`TileSet.closure`); the thumbnail always stays.
    """
    rgb_var = np.asarray(rgb_var)
    if rgb_var.shape != (len(tiles),):
        raise ValueError(f"rgb_var has shape {rgb_var.shape}, expected ({len(tiles)},)")
    return tiles.closure(rgb_var >= threshold)


def _check_magnifications(base: float, magnifications: tuple[float, ...]) -> tuple[float, ...]:
    mags = tuple(sorted(float(m) for m in magnifications))
    if not mags:
        raise ValueError("at least one magnification is needed, e.g. (5, 10)")
    if len(set(mags)) != len(mags) or mags[0] <= 0:
        raise ValueError(f"magnifications must be distinct and positive, got {magnifications}")
    if mags[-1] > base * 1.001:
        raise ValueError(f"{mags[-1]:g}x requested but level 0 of the slide is {base:g}x")
    for lo, hi in zip(mags, mags[1:], strict=False):
        if abs(hi / lo - round(hi / lo)) > 1e-6:
            raise ValueError(
                f"magnification ratio {hi:g}/{lo:g} is not an integer; grids cannot nest"
            )
    return mags


def _tissue_fraction(
    mask: np.ndarray,
    slide_size: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    side: np.ndarray,
    samples: int = 8,
) -> np.ndarray:
    """Fraction of tissue in each square, from ``samples`` x ``samples`` points per square."""
    mask = np.asarray(mask, dtype=bool)
    sy, sx = mask.shape[0] / slide_size[1], mask.shape[1] / slide_size[0]
    offsets = (np.arange(samples) + 0.5) / samples  # [S]
    px = (x[:, None] + offsets[None, :] * side[:, None]) * sx  # [N, S]
    py = (y[:, None] + offsets[None, :] * side[:, None]) * sy  # [N, S]
    px = np.clip(px.astype(np.int64), 0, mask.shape[1] - 1)
    py = np.clip(py.astype(np.int64), 0, mask.shape[0] - 1)
    hits = mask[py[:, :, None], px[:, None, :]]  # [N, S, S]
    return hits.mean(axis=(1, 2))


def _parent_index(
    level: np.ndarray, row: np.ndarray, col: np.ndarray, mags: tuple[float, ...]
) -> np.ndarray:
    """Index of each patch's parent (thumbnail for level 1, -1 for the thumbnail)."""
    parent = np.full(len(level), -1, np.int64)
    parent[level == 1] = 0
    big = int(col.max()) + 1
    key = (level * (int(row.max()) + 1) + row) * big + col  # unique per (level, row, col)
    order = np.argsort(key)
    for lv in range(2, len(mags) + 1):
        k = round(mags[lv - 1] / mags[lv - 2])
        child = np.flatnonzero(level == lv)
        want = ((lv - 1) * (int(row.max()) + 1) + row[child] // k) * big + col[child] // k
        parent[child] = order[np.searchsorted(key, want, sorter=order)]
    return parent
