"""The image sets of the two nuclei papers: synthetic demo images or the real datasets.

:func:`table2_tiles` gives one :class:`TileSet` per dataset of the nuclei-graph paper's Table II
-- ``"bach"`` (in situ vs invasive) and ``"gleason"`` (Gleason 3+3 vs 4+4 / 4+5) -- and
:func:`abignet_rois` one per column of ABiG-Net's table -- ``"crc3"``, ``"crc2"`` (Extended CRC)
and ``"melanoma"``. Each is either synthetic (``root=None``:
:func:`~wsigraph.data.synthetic_nuclei.arrangement_tiles` /
:func:`~wsigraph.data.synthetic_rois.relation_rois`) or the real images read by
:mod:`wsigraph.data.roi_datasets` from the dataset's own layout. Real images are loaded one at a
time when used, so a set of 2048 x 1536 BACH photos or multi-megapixel CRC images never sits in
memory at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from wsigraph.data import roi_datasets
from wsigraph.data.synthetic_nuclei import arrangement_tiles, kind_homophily
from wsigraph.data.synthetic_rois import relation_rois

DATASETS = ("bach", "gleason")
# µm per px of the synthetic Table II tiles: their nuclei (median equivalent diameter 8.7 px)
# then measure 5.5 µm, the median of the annotated MoNuSeg nuclei (5.4 and 5.8 µm on the two
# tiles of data/nuclei/monuseg at 0.25 µm/px).
SYNTHETIC_MPP = 0.63
# BACH microscopy images: 0.42 µm pixels (the challenge's description, Aresta et al. 2019).
BACH_MPP = 0.42
ROI_TASKS = ("crc3", "crc2", "melanoma")


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
        instances: the ground-truth nuclei of synthetic sets (``[n, H, W]``), else ``None``.
        mpp: µm per pixel of the images (the nuclei graph's radius is in µm), ``None`` when
            unknown: :data:`SYNTHETIC_MPP` for synthetic tiles, the image metadata
            (:func:`~wsigraph.graphs.nuclei.read_mpp`) or the dataset's documented scale for
            real ones.
        truth: ground truth of synthetic sets beyond the labels (the ABiG-Net demo's per-patch
            ``groups``, ``styles``, ``marks`` and its ``patch_size``), else ``None``.
    """

    ids: list[str]
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str
    images: np.ndarray | None = None
    paths: list[str] = field(default_factory=list)
    instances: np.ndarray | None = None
    mpp: float | None = None
    truth: dict | None = None
    oracle: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def image(self, i: int) -> np.ndarray:
        """Tile ``i`` as ``[H, W, 3]`` uint8."""
        if self.images is not None:
            return self.images[i]
        return roi_datasets.load_image(self.paths[i])

    def image_sequence(self) -> Sequence[np.ndarray]:
        """Every image as a sequence (the arrays, or a view that reads each file when indexed)."""
        return self.images if self.images is not None else _LazyImages(self.paths)

    def tiles(self) -> Iterator[tuple[str, np.ndarray, int]]:
        """``(tile_id, image, label)`` for every tile (the input of ``build_nuclei_graphs``)."""
        for i, tile_id in enumerate(self.ids):
            yield tile_id, self.image(i), int(self.labels[i])


class _LazyImages(Sequence):
    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        return roi_datasets.load_image(self.paths[i])


def _subsample(df: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """At most ``limit`` rows, class ratio kept, reproducibly (``None``: all)."""
    if limit is None or len(df) <= limit:
        return df
    parts = [
        g.sample(min(len(g), -(-limit * len(g) // len(df))), random_state=seed)
        for _, g in df.groupby("label")
    ]
    return pd.concat(parts).sort_index()


def _from_frame(df: pd.DataFrame, prefix: str, names) -> TileSet:
    ids = [f"{prefix}_{Path(p).stem}" for p in df["path"]]
    if len(set(ids)) != len(ids):  # e.g. the same file name in two folds: prefix the row
        ids = [f"{i:05d}_{x}" for i, x in enumerate(ids)]
    return TileSet(
        ids, df["label"].to_numpy(np.int64), tuple(names), "real", paths=list(df["path"])
    )


def _real_mpp(dataset: str, paths: list[str]) -> float | None:
    """The first image's metadata scale, else BACH's documented one (``None`` for Gleason)."""
    from wsigraph.graphs.nuclei import read_mpp

    mpp = read_mpp(paths[0]) if paths else None
    return mpp if mpp is not None else (BACH_MPP if dataset == "bach" else None)


def _real(dataset: str, root: str | os.PathLike, limit: int | None, seed: int) -> TileSet:
    if dataset == "bach":
        df = roi_datasets.read_bach(root)
        names = ("in situ", "invasive")
    else:
        df = roi_datasets.read_gleason2019(root)
        names = ("Gleason 3+3", "Gleason 4+4 / 4+5")
    if df.empty:
        raise ValueError(f"no labelled {dataset} images under {root}")
    tiles = _from_frame(_subsample(df, limit, seed), dataset, names)
    tiles.mpp = _real_mpp(dataset, tiles.paths)
    return tiles


def table2_tiles(
    dataset: str,
    root: str | os.PathLike | None = None,
    n_per_class: int = 20,
    size: int = 256,
    seed: int = 0,
    limit: int | None = None,
) -> TileSet:
    """The tiles of one Table II dataset.

    Args:
        dataset: ``"bach"`` or ``"gleason"``.
        root: the real dataset's folder (see :func:`~wsigraph.data.roi_datasets.read_bach` and
            :func:`~wsigraph.data.roi_datasets.read_gleason2019`); ``None`` for synthetic tiles.
        n_per_class: synthetic tiles per class (default ``20``).
        size: synthetic tile side in px (default ``256``).
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
    labels = s.labels.astype(np.int64)
    radius = 42.0 / SYNTHETIC_MPP  # the notebook's graph radius, 42 µm, in px
    oracle = np.array(
        [kind_homophily(e[:, :2], k, radius) for e, k in zip(s.nuclei, s.kinds, strict=True)]
    )
    return TileSet(
        ids, labels, tuple(s.class_names), "synthetic", s.images, mpp=SYNTHETIC_MPP, oracle=oracle
    )


def abignet_rois(
    task: str,
    root: str | os.PathLike | None = None,
    n_per_class: int = 20,
    grid: int = 8,
    patch_size: int = 64,
    seed: int = 0,
    limit: int | None = None,
) -> TileSet:
    """The ROIs of one column of ABiG-Net's table.

    Args:
        task: ``"crc3"`` (Extended CRC normal / low grade / high grade), ``"crc2"`` (normal vs
            cancer) or ``"melanoma"`` (tumour vs lymphocyte-rich).
        root: the real dataset's folder (:func:`~wsigraph.data.roi_datasets.read_extended_crc`,
            :func:`~wsigraph.data.roi_datasets.read_melanoma`); ``None`` for synthetic ROIs
            (:func:`~wsigraph.data.synthetic_rois.relation_rois`).
        n_per_class, grid, patch_size, seed: of the synthetic ROIs (defaults ``20``, ``8``,
            ``64``, ``0``: 512 px ROIs of 64 patches).
        limit: at most this many real images, class ratio kept (default ``None``: all).
    """
    if task not in ROI_TASKS:
        raise ValueError(f"unknown task {task!r}; ABiG-Net's columns are {', '.join(ROI_TASKS)}")
    if root is None:
        s = relation_rois(task, n_per_class, grid=grid, patch_size=patch_size, seed=seed)
        ids = [f"{task}_{seed}_{grid}x{patch_size}_{i:04d}" for i in range(len(s.labels))]
        labels = s.labels.astype(np.int64)
        truth = {"groups": s.groups, "params": s.params, "styles": s.styles,
                 "marks": s.marks, "patch_size": s.patch_size}  # fmt: skip
        return TileSet(
            ids, labels, tuple(s.class_names), "synthetic", s.images, instances=s.instances,
            truth=truth,
        )  # fmt: skip
    if task == "melanoma":
        df = roi_datasets.read_melanoma(root)
    else:
        df = roi_datasets.read_extended_crc(root, task=task)
    if df.empty:
        raise ValueError(f"no labelled {task} images under {root}")
    names = df.drop_duplicates("label").sort_values("label")["class_name"].tolist()
    return _from_frame(_subsample(df, limit, seed), task, names)


def describe(sets: dict[str, TileSet], graphs: dict[str, list]) -> pd.DataFrame:
    """One row per dataset: source, classes, tiles per class, mean nuclei and edges per graph,
    the graph radius (µm and px at the tiles' µm/px) and the mean degree (neighbours per
    nucleus, over all nuclei of the set)."""
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
                "µm/px": getattr(graphs[d][0], "mpp", None) if graphs[d] else None,
                "radius µm": getattr(graphs[d][0], "radius_um", None) if graphs[d] else None,
                "radius px": getattr(graphs[d][0], "radius", None) if graphs[d] else None,
                "mean degree": mean_degree(graphs[d]),
            }
            for d, s in sets.items()
        ]
    ).round({"mean nuclei": 1, "mean edges": 1, "radius px": 1, "mean degree": 1})


def mean_degree(graphs: list) -> float:
    """Neighbours per nucleus over all nuclei of ``graphs`` (edges are stored both ways)."""
    nodes = sum(g.num_nodes for g in graphs)
    return float(sum(g.num_edges for g in graphs) / nodes) if nodes else float("nan")


def annotated_centroids(xml_path: str | os.PathLike) -> np.ndarray:
    """``[K, 2]`` ``(row, col)`` centres of the outlines of an Aperio / MoNuSeg annotation XML
    (the mean of each region's vertices), in pixels of its image."""
    import xml.etree.ElementTree as ET

    rows = []
    for region in ET.parse(xml_path).getroot().iter("Region"):
        vertices = [(float(v.get("Y")), float(v.get("X"))) for v in region.iter("Vertex")]
        if vertices:
            rows.append(np.mean(vertices, axis=0))
    return np.array(rows, dtype=np.float64).reshape(-1, 2)


def degree_at(points: Sequence[np.ndarray], radius_px: float | Sequence[float]) -> float:
    """Mean degree (neighbours per node, over all nodes) of the Eq. 1 graphs of point sets
    ``[K_i, 2]`` at ``radius_px`` (one radius, or one per set)."""
    from wsigraph.graphs.nuclei import nuclei_edges

    radii = [radius_px] * len(points) if np.isscalar(radius_px) else list(radius_px)
    edges = sum(nuclei_edges(p, r)[0].shape[1] for p, r in zip(points, radii, strict=True))
    nodes = sum(len(p) for p in points)
    return float(edges / nodes) if nodes else float("nan")


def count_degree_weight(graphs: Sequence) -> np.ndarray:
    """The control's three numbers per graph: nucleus count, mean degree (neighbours per
    nucleus) and mean Eq. 1 edge weight (0 for a graph without edges), ``[n, 3]`` float64."""
    rows = []
    for g in graphs:
        nodes, edges = int(g.num_nodes), int(g.num_edges)
        weight = float(g.edge_attr.float().mean()) if edges else 0.0
        rows.append((nodes, edges / nodes if nodes else 0.0, weight))
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def control_accuracy(features: np.ndarray, labels: np.ndarray, splits: Sequence) -> list[float]:
    """Accuracy per split of a logistic regression (standardised inputs, sklearn defaults) on
    ``features`` ``[n, k]``: fitted on each split's training and validation tiles (it has no
    checkpoint to choose), scored on its test tiles -- the GCN rows' folds when ``splits`` are
    theirs (:func:`wsigraph.train.cv.make_splits` with the same labels, folds, repeats, seed).

    Raises:
        ValueError: if ``features`` and ``labels`` differ in length.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = np.asarray(features, np.float64), np.asarray(labels).ravel()
    if len(x) != len(y):
        raise ValueError(f"features has {len(x)} rows but labels {len(y)}")
    accuracies = []
    for split in splits:
        fit = np.concatenate([split.train, split.val])
        model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x[fit], y[fit])
        accuracies.append(float(np.mean(model.predict(x[split.test]) == y[split.test])))
    return accuracies
