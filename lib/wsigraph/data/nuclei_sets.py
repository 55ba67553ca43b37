"""The image sets of the nuclei-graph paper's Table II: synthetic demo tiles or the real datasets.

:func:`table2_tiles` gives one :class:`TileSet` per dataset of Table II -- ``"bach"`` (in situ vs
invasive) and ``"gleason"`` (Gleason 3+3 vs 4+4 / 4+5) -- either the synthetic demo tiles of
:func:`wsigraph.data.synthetic_nuclei.arrangement_tiles` (``root=None``) or the real images read
by :mod:`wsigraph.data.roi_datasets` from the dataset's own layout. Real images are loaded one at
a time when iterated, so a 2048 x 1536 BACH set never sits in memory at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from wsigraph.data import roi_datasets
from wsigraph.data.synthetic_nuclei import arrangement_tiles

DATASETS = ("bach", "gleason")


@dataclass
class TileSet:
    """Tiles of one Table II dataset.

    Attributes:
        ids: tile ids (file-name safe), one per tile.
        labels: ``[n]`` class index.
        class_names: name of each class index.
        source: ``"synthetic"`` or ``"real"``.
        images: the pixels of synthetic sets; real sets read ``paths`` on demand.
        paths: the image files of real sets.
    """

    ids: list[str]
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str
    images: np.ndarray | None = None
    paths: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def image(self, i: int) -> np.ndarray:
        """Tile ``i`` as ``[H, W, 3]`` uint8."""
        if self.images is not None:
            return self.images[i]
        return roi_datasets.load_image(self.paths[i])

    def tiles(self) -> Iterator[tuple[str, np.ndarray, int]]:
        """``(tile_id, image, label)`` for every tile (the input of ``build_nuclei_graphs``)."""
        for i, tile_id in enumerate(self.ids):
            yield tile_id, self.image(i), int(self.labels[i])


def _real(dataset: str, root: str | os.PathLike, limit: int | None, seed: int) -> TileSet:
    if dataset == "bach":
        df = roi_datasets.read_bach(root)
        names = ("in situ", "invasive")
    else:
        df = roi_datasets.read_gleason2019(root)
        names = ("Gleason 3+3", "Gleason 4+4 / 4+5")
    if df.empty:
        raise ValueError(f"no labelled {dataset} images under {root}")
    if limit is not None and len(df) > limit:  # stratified subsample, reproducible
        parts = [
            g.sample(min(len(g), -(-limit * len(g) // len(df))), random_state=seed)
            for _, g in df.groupby("label")
        ]
        df = pd.concat(parts).sort_index()
    ids = [f"{dataset}_{Path(p).stem}" for p in df["path"]]
    return TileSet(ids, df["label"].to_numpy(np.int64), names, "real", paths=list(df["path"]))


def table2_tiles(
    dataset: str,
    root: str | os.PathLike | None = None,
    n_per_class: int = 20,
    size: int = 384,
    seed: int = 0,
    limit: int | None = None,
) -> TileSet:
    """The tiles of one Table II dataset.

    Args:
        dataset: ``"bach"`` or ``"gleason"``.
        root: the real dataset's folder (see :func:`~wsigraph.data.roi_datasets.read_bach` and
            :func:`~wsigraph.data.roi_datasets.read_gleason2019`); ``None`` for synthetic tiles.
        n_per_class: synthetic tiles per class (default ``20``).
        size: synthetic tile side in px (default ``384``).
        seed: synthetic generator seed; also the subsampling seed of real sets (default ``0``).
        limit: at most this many real images, class ratio kept (default ``None``: all).

    Raises:
        ValueError: unknown dataset, a bad size, or a real folder without labelled images
            (a wrong layout raises the reader's ``FileNotFoundError``).
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; Table II has {', '.join(DATASETS)}")
    if root is not None:
        return _real(dataset, root, limit, seed)
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    s = arrangement_tiles(dataset, n_per_class, size=size, seed=seed)
    ids = [f"{dataset}_{seed}_{size}_{i:04d}" for i in range(len(s.labels))]
    return TileSet(ids, s.labels.astype(np.int64), tuple(s.class_names), "synthetic", s.images)


def describe(sets: dict[str, TileSet], graphs: dict[str, list]) -> pd.DataFrame:
    """One row per dataset: source, classes, tiles per class, mean nuclei and edges per graph."""
    return pd.DataFrame(
        [
            {
                "dataset": d,
                "source": s.source,
                "classes": " / ".join(s.class_names),
                "tiles": len(s),
                "per class": np.bincount(s.labels, minlength=len(s.class_names)).tolist(),
                "mean nuclei": np.mean([g.num_nodes for g in graphs[d]]),
                "mean edges": np.mean([g.num_edges for g in graphs[d]]) / 2,
            }
            for d, s in sets.items()
        ]
    ).round(1)
