"""The official ABiG-Net's image-level node sets: instance masks -> 69 features per patch.

One image becomes one :class:`torch_geometric.data.Data` with ``x [P, 69]``
(:data:`wsigraph.graphs.abignet_features.FEATURE_NAMES`, one row per patch with more than
``min_nuclei`` nuclei), ``pos [P, 2]`` (the patch's (column, row) on the patch grid) and
``n_nuclei [P]``. The official model reads only ``x`` (its graph is generated from the
features); ``pos`` is for drawing.

Instance masks come from the caller: the project's segmenter
(:func:`wsigraph.data.nuclei_seg.classical_nuclei`, :func:`cached_masks`), a synthetic set's
ground truth, or the user's own label maps (StarDist's, as in the official code, or any):
:func:`find_label_map` / :func:`read_label_map` read ``.npy`` / ``.tif`` / ``.tiff`` files named
after the image.

Bad input. An image with fewer than 2 qualifying patches raises
:class:`~wsigraph.graphs.abignet_features.TooFewPatchesError` in
:func:`~wsigraph.graphs.abignet_features.image_patch_features`; :func:`official_graphs`
catches it, returns ``None`` for that image and lists it (with its reason) in its report, so
a caller can show what was left out; it never returns an empty graph. Non-finite features
(a spectral slope with fewer than two eigenvalues in its range) are set to 0, counted in the
report (our choice; the official code would pass the NaN on).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import Data

from wsigraph.graphs.abignet_features import (
    FEATURE_NAMES,
    MIN_COSINE,
    MIN_NUCLEI,
    RADIUS,
    TooFewPatchesError,
    image_patch_features,
)
from wsigraph.io import array_digest, atomic_path
from wsigraph.train.executor import run_folds

LABEL_SUFFIXES = (".npy", ".tif", ".tiff")


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """An instance label map ``[H, W]`` (0 = background) from ``.npy``, ``.tif`` or ``.tiff``.

    Raises:
        ValueError: another suffix, or the file does not hold a 2-D integer array (named).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        labels = np.load(path, allow_pickle=False)
    elif suffix in (".tif", ".tiff"):
        import tifffile

        labels = tifffile.imread(path)
    else:
        raise ValueError(f"{path}: label maps must be {', '.join(LABEL_SUFFIXES)}")
    labels = np.squeeze(np.asarray(labels))
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: expected a 2-D integer instance label map, got shape {labels.shape} "
            f"and dtype {labels.dtype}"
        )
    if labels.min() < 0:
        raise ValueError(f"{path}: negative labels")
    return labels.astype(np.int32)


def find_label_map(
    label_dir: str | os.PathLike, image_id: str, image_path: str | os.PathLike | None = None
) -> Path:
    """The label map of an image in ``label_dir``: ``<stem>`` or ``labels_<stem>`` (the official
    StarDist script's name) with a suffix of :data:`LABEL_SUFFIXES`, ``<stem>`` the image's id
    or its file's stem.

    Raises:
        FileNotFoundError: none found (names the image and the names tried).
    """
    label_dir = Path(label_dir)
    stems = [str(image_id)]
    if image_path is not None and Path(image_path).stem not in stems:
        stems.append(Path(image_path).stem)
    tried = [f"{pre}{s}{suf}" for s in stems for pre in ("", "labels_") for suf in LABEL_SUFFIXES]
    for name in tried:
        if (label_dir / name).is_file():
            return label_dir / name
    raise FileNotFoundError(
        f"image {image_id}: no label map in {label_dir} (tried {', '.join(tried)})"
    )


def _read_mask(path: Path, key: str) -> np.ndarray | None:
    if path.exists():
        try:
            with np.load(path) as z:
                if str(z["key"]) == key:
                    return z["labels"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass
    return None


def _mask_job(job: tuple) -> None:
    path, key, image, segment = job
    labels = np.asarray(segment(image)).astype(np.int32)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, labels=labels, key=np.array(key))


def cached_masks(
    images: Sequence[np.ndarray],
    ids: Sequence[str],
    cache_dir: str | os.PathLike,
    segment: Callable[[np.ndarray], np.ndarray],
    executor: str = "serial",
    workers: int | None = None,
    progress: bool = False,
) -> list[np.ndarray]:
    """``segment(image)`` of every image, cached in ``cache_dir/<id>.npz`` keyed by the pixels'
    digest and the segmenter's name (recomputed when either changes). The missing ones are
    computed by :func:`wsigraph.train.executor.run_folds` (``executor``, ``workers``;
    ``segment`` must then be a module-level function)."""
    name = f"{getattr(segment, '__module__', '')}.{getattr(segment, '__qualname__', segment)}"
    paths = [Path(cache_dir) / f"{i}.npz" for i in ids]
    keys = [json.dumps({"image": array_digest(im), "segmenter": name}) for im in images]
    todo = [i for i, (p, k) in enumerate(zip(paths, keys, strict=True)) if _read_mask(p, k) is None]
    jobs = [(paths[i], keys[i], images[i], segment) for i in todo]
    run_folds(_mask_job, jobs, executor, workers, progress=progress, desc="segment")
    out = [_read_mask(p, k) for p, k in zip(paths, keys, strict=True)]
    missing = [str(i) for i, m in zip(ids, out, strict=True) if m is None]
    if missing:
        raise RuntimeError(f"segmentation cache not written for {', '.join(missing)}")
    return out


def _feature_key(image, labels, settings: dict) -> str:
    return json.dumps(
        {
            "labels": array_digest(labels),
            "image": None if image is None else array_digest(image),
            "features": list(FEATURE_NAMES),
            **settings,
        },
        sort_keys=True,
    )


def _read_features(path: Path, key: str):
    if path.exists():
        try:
            with np.load(path) as z:
                if str(z["key"]) == key:
                    return (z["features"], z["positions"], z["n_nuclei"],
                            [tuple(s) for s in z["skipped"].tolist()], str(z["error"]))  # fmt: skip
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass
    return None


def _feature_job(job: tuple) -> None:
    """Compute one image's features and write them to its cache file."""
    path, key, image, labels, name, settings = job
    error = ""
    try:
        pf = image_patch_features(labels, image, name=name, **settings)
        features, positions, n_nuclei, skipped = pf.features, pf.positions, pf.n_nuclei, pf.skipped
    except TooFewPatchesError as e:  # recorded, so a rerun does not recompute it
        error = str(e)
        features, positions = np.zeros((0, len(FEATURE_NAMES)), np.float32), np.zeros((0, 2))
        n_nuclei, skipped = np.zeros(0, np.int64), []
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, features=features, positions=positions, n_nuclei=n_nuclei,
                 skipped=np.asarray(skipped, np.int64).reshape(-1, 3), error=np.array(error),
                 key=np.array(key))  # fmt: skip


def official_graphs(
    images: Sequence[np.ndarray],
    ids: Sequence[str],
    masks: Sequence[np.ndarray],
    cache_dir: str | os.PathLike,
    patch_size: int,
    min_nuclei: int = MIN_NUCLEI,
    radius: float = RADIUS,
    min_cosine: float = MIN_COSINE,
    executor: str = "serial",
    workers: int | None = None,
    progress: bool = False,
) -> tuple[list[Data | None], pd.DataFrame]:
    """The official node set of every image (features cached in ``cache_dir/<id>.npz``).

    Args:
        images: RGB ``[H, W, 3]`` images (the intensity and texture properties read them).
        ids: one unique, file-name-safe id per image (stored as ``slide_id``).
        masks: the images' instance label maps ``[H, W]``.
        cache_dir: folder of the cached features.
        patch_size, min_nuclei, radius, min_cosine: of
            :func:`~wsigraph.graphs.abignet_features.image_patch_features`.
        executor, workers: how the images not cached yet are computed
            (:func:`wsigraph.train.executor.run_folds`: ``"serial"``, ``"local"`` processes).

    Returns:
        ``(graphs, report)``: ``graphs[i]`` is ``None`` for an image with fewer than 2 patches
        of more than ``min_nuclei`` nuclei; ``report`` has one row per image: ``image``,
        ``patches`` (on the grid), ``used``, ``nuclei_per_patch`` (median of the used ones),
        ``non_finite`` (feature values set to 0) and ``status`` (``"used"`` or the reason).
    """
    if not (len(images) == len(ids) == len(masks)):
        raise ValueError("images, ids and masks must have the same length")
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique")
    settings = {"patch_size": int(patch_size), "min_nuclei": int(min_nuclei),
                "radius": float(radius), "min_cosine": float(min_cosine)}  # fmt: skip
    paths = [Path(cache_dir) / f"{name}.npz" for name in ids]
    keys, todo = [], []
    for i, name in enumerate(ids):
        image, labels = images[i], masks[i]
        if image is not None and np.asarray(image).shape[:2] != np.asarray(labels).shape:
            raise ValueError(
                f"image {name}: label map {np.asarray(labels).shape} does not match the image "
                f"{np.asarray(image).shape[:2]}"
            )
        keys.append(_feature_key(image, labels, settings))
        if _read_features(paths[i], keys[i]) is None:
            todo.append((paths[i], keys[i], image, labels, str(name), settings))
    run_folds(_feature_job, todo, executor, workers, progress=progress, desc="ABiG-Net features")
    graphs, rows = [], []
    for i, name in enumerate(ids):
        cached = _read_features(paths[i], keys[i])
        if cached is None:
            raise RuntimeError(f"image {name}: feature cache {paths[i]} not written")
        feats, pos, n_nuc, skipped, error = cached
        labels = masks[i]
        bad = ~np.isfinite(feats)
        rows.append(
            {
                "image": str(name),
                "patches": len(feats) + len(skipped)
                if not error
                else _grid_cells(labels, patch_size),
                "used": len(feats),
                "nuclei_per_patch": float(np.median(n_nuc)) if len(n_nuc) else 0.0,
                "non_finite": int(bad.sum()),
                "status": "used" if not error else f"skipped: {error}",
            }
        )
        if error:
            graphs.append(None)
            continue
        x = torch.from_numpy(np.where(bad, 0.0, feats).astype(np.float32))
        graphs.append(
            Data(
                x=x,
                pos=torch.as_tensor(pos, dtype=torch.float32),
                n_nuclei=torch.as_tensor(n_nuc, dtype=torch.long),
                slide_id=str(name),
            )
        )
    return graphs, pd.DataFrame(rows)


def _grid_cells(labels: np.ndarray, patch_size: int) -> int:
    h, w = np.asarray(labels).shape[:2]
    return (h // int(patch_size)) * (w // int(patch_size))
