r"""Leave-one-organ-out evaluation of nuclei segmenters on annotated MoNuSeg tiles.

The nuclei-graph GCN is meant for tissue the segmenter never saw, so its segmenter is scored
on organs it was not trained on: for each organ, every method is *fitted* on the tiles of the
other organs and scored on that organ's tiles (Dice, AJI, F1 at IoU 0.5, count error; see
:mod:`wsigraph.data.nuclei_seg`). The method whose mean held-out AJI over organs is highest is
the one a profile uses.

A *method* is a function ``fit(train_tiles, fold) -> segment`` where ``train_tiles`` maps tile
names to ``(image, instances)`` of the training organs only and ``segment(image)`` returns an
instance map. :func:`unet_method` trains a UNet (weights cached per fold);
:func:`classical_method` picks the classical fallback's seeds / speck size from a small grid by
training-tile AJI. Each fold's scores are written atomically to ``<cache>/<organ>.json`` as
soon as it finishes, and reused when the stage runs again (so a long run resumes per organ).

Organs of the MoNuSeg tiles are read from the collection's ``MANIFEST.md`` (the TCGA project
of each slide) and listed in :data:`MONUSEG_ORGANS`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from wsigraph.data.nuclei_seg import (
    aji,
    classical_nuclei,
    count_error,
    dice,
    f1_at_iou,
    instances_from_probabilities,
    load_unet,
    predict_at_scale,
    rescale_tile,
    save_unet,
    train_unet,
)
from wsigraph.io import atomic_path, content_digest, write_text
from wsigraph.models.unet import UNetConfig

#: Organ of each annotated MoNuSeg 2018 test tile (TCGA project of the slide, as in the
#: shared collection's ``MANIFEST.md``).
MONUSEG_ORGANS: dict[str, str] = {
    "TCGA-HC-7209-01A-01-TS1": "prostate",
    "TCGA-EJ-A46H-01A-03-TSC": "prostate",
    "TCGA-HT-8564-01Z-00-DX1": "brain",
    "TCGA-FG-A4MU-01B-01-TS1": "brain",
    "TCGA-2Z-A9J9-01A-01-TS1": "kidney",
    "TCGA-GL-6846-01A-01-BS1": "kidney",
    "TCGA-IZ-8196-01A-01-BS1": "kidney",
    "TCGA-44-2665-01B-06-BS6": "lung",
    "TCGA-69-7764-01A-01-TS1": "lung",
    "TCGA-A6-6782-01A-01-BS1": "colon",
    "TCGA-AC-A2FO-01A-01-TS1": "breast",
    "TCGA-CU-A0YN-01A-02-BSB": "bladder",
    "TCGA-ZF-A9R5-01A-01-TS1": "bladder",
}

Tiles = Mapping[str, tuple[np.ndarray, np.ndarray]]
Segment = Callable[[np.ndarray], np.ndarray]
Method = Callable[[Tiles, str], Segment]


def organs_of(names: Sequence[str], organs: Mapping[str, str] | None = None) -> dict[str, str]:
    """Organ of each tile name (from ``organs``, default :data:`MONUSEG_ORGANS`).

    Raises:
        KeyError: a tile whose organ is unknown (named in the message).
    """
    organs = MONUSEG_ORGANS if organs is None else organs
    missing = [n for n in names if n not in organs]
    if missing:
        raise KeyError(f"no organ known for tile(s) {missing}; pass organs={{name: organ}}")
    return {n: organs[n] for n in names}


def instance_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Every score of one predicted instance map against the truth: ``nuclei_true``,
    ``nuclei_found``, ``dice``, ``aji``, ``f1`` (at IoU 0.5) and ``count_error``."""
    return {
        "nuclei_true": int(len(np.unique(truth[truth > 0]))),
        "nuclei_found": int(len(np.unique(pred[pred > 0]))),
        "dice": dice(pred, truth),
        "aji": aji(pred, truth),
        "f1": f1_at_iou(pred, truth, 0.5),
        "count_error": count_error(pred, truth),
    }


def leave_one_organ_out(
    tiles: Tiles,
    organs: Mapping[str, str],
    methods: Mapping[str, Method],
    cache_dir: str | os.PathLike,
    folds: Sequence[str] | None = None,
    score_train: bool | int = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Fit every method without one organ and score it on that organ, for each organ.

    Args:
        tiles: ``name -> (image [H, W, 3] uint8, instances [H, W])``.
        organs: ``name -> organ`` for every tile.
        methods: ``method name -> fit`` (see the module docstring).
        cache_dir: fold results are cached here as ``<organ>.json`` (scores) and
            ``<organ>_held_out.npz`` (held-out instance maps, key ``"<method>|<tile>"``;
            read them with :func:`held_out_predictions`). Delete it, or use a new folder,
            after changing a method.
        folds: the held-out organs to run (default: every organ, sorted).
        score_train: also score each fold's segmenter on its training tiles (rows with
            ``split == "train"``): ``True`` all of them, an int ``k`` that many (evenly
            spaced in name order), ``False`` / ``0`` none (default ``False``).
        progress: print one line per fold (default ``True``).

    Returns:
        One row per (fold, method, tile, split): ``fold`` (held-out organ), ``method``,
        ``organ``, ``tile``, ``split`` (``"held out"`` / ``"train"``), ``fit_seconds``,
        ``settings`` (JSON of the fitted segmenter's ``settings`` attribute, if any) and the
        :func:`instance_scores`.

    Raises:
        ValueError: fewer than two organs, or a fold naming an organ without tiles.
        KeyError: a tile without an organ.
    """
    names = sorted(tiles)
    missing = [n for n in names if n not in organs]
    if missing:
        raise KeyError(f"no organ given for tile(s) {missing}")
    all_organs = sorted({organs[n] for n in names})
    if len(all_organs) < 2:
        raise ValueError(f"leave-one-organ-out needs two organs or more, got {all_organs}")
    folds = list(all_organs if folds is None else folds)
    unknown = [f for f in folds if f not in all_organs]
    if unknown:
        raise ValueError(f"fold organ(s) {unknown} have no tiles; organs: {all_organs}")
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for organ in folds:
        path = cache / f"{organ}.json"
        if path.is_file():
            fold_rows = json.loads(path.read_text())
        else:
            train = {n: tiles[n] for n in names if organs[n] != organ}
            test = [n for n in names if organs[n] == organ]
            fold_rows, held_out = [], {}
            for method, fit in methods.items():
                start = time.perf_counter()
                seg = fit(train, organ)
                # a cached model's own training time, else the time fit took
                seconds = getattr(seg, "train_seconds", time.perf_counter() - start)
                scored = [(n, "held out") for n in test]
                scored += [(n, "train") for n in _train_subset(sorted(train), score_train)]
                for n, split in scored:
                    image, truth = tiles[n]
                    pred = seg(image)
                    if split == "held out":
                        held_out[f"{method}|{n}"] = pred.astype(np.int32)
                    fold_rows.append(
                        {
                            "fold": organ, "method": method, "organ": organs[n], "tile": n,
                            "split": split, "fit_seconds": seconds,
                            "settings": json.dumps(getattr(seg, "settings", None)),
                            **instance_scores(pred, np.asarray(truth)),
                        }
                    )  # fmt: skip
            with atomic_path(cache / f"{organ}_held_out.npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez_compressed(fh, **held_out)
            write_text(path, json.dumps(fold_rows, indent=1) + "\n")  # last: marks it done
        if progress:
            held = [r for r in fold_rows if r["split"] == "held out"]
            summary = ", ".join(
                f"{m} AJI {np.mean([r['aji'] for r in held if r['method'] == m]):.3f}"
                for m in dict.fromkeys(r["method"] for r in held)
            )
            print(f"held out {organ}: {summary}")
        rows += fold_rows
    return pd.DataFrame(rows)


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (method, organ, split) means of the tile scores, plus a ``"mean over organs"`` row
    per (method, split) averaging the organ rows (each organ counts once).

    Columns: ``method, organ, split, tiles, nuclei_true, nuclei_found, dice, aji, f1,
    count_error``; nucleus counts are sums over the tiles (per organ; mean of organ sums for
    the mean row), the scores means of tile scores.
    """
    scores = ["dice", "aji", "f1", "count_error"]
    by = ["method", "organ", "split"]
    organ = rows.groupby(by, sort=False).agg(
        tiles=("tile", "nunique"),
        nuclei_true=("nuclei_true", "sum"),
        nuclei_found=("nuclei_found", "sum"),
        **{s: (s, "mean") for s in scores},
    )
    organ = organ.reset_index()
    mean = organ.groupby(["method", "split"], sort=False)[
        ["tiles", "nuclei_true", "nuclei_found", *scores]
    ].mean()
    mean = mean.reset_index().assign(organ="mean over organs")
    return pd.concat([organ, mean[organ.columns]], ignore_index=True)


def choose_by_held_out_aji(summary: pd.DataFrame) -> str:
    """The method with the highest mean held-out AJI over organs (:func:`summarise`'s
    ``"mean over organs"`` rows; ties go to the first method listed)."""
    mean = summary[(summary["organ"] == "mean over organs") & (summary["split"] == "held out")]
    if mean.empty:
        raise ValueError("no held-out 'mean over organs' rows to choose from")
    return str(mean.loc[mean["aji"].idxmax(), "method"])


# -------------------------------------------------------------------------------------------
# The two methods
# -------------------------------------------------------------------------------------------

#: The classical fallback's grid: seeds at distance-transform peaks (``h=None``) or at
#: h-maxima of depth 1 / 2 px, and the speck size removed.
CLASSICAL_GRID: tuple[dict, ...] = tuple(
    {"h": h, "min_size": m} for h in (None, 1.0, 2.0) for m in (10, 40, 80)
)


def classical_method(grid: Sequence[dict] = CLASSICAL_GRID, cache: dict | None = None) -> Method:
    """The classical fallback (:func:`classical_nuclei`) with its settings chosen per fold:
    the grid point with the best mean AJI on the fold's *training* tiles.

    Args:
        grid: keyword sets for :func:`classical_nuclei` (default :data:`CLASSICAL_GRID`;
            one entry means no choice).
        cache: optional dict reused across folds, ``(tile, grid index) -> AJI``, so each tile
            is segmented once per grid point.
    """
    grid = list(grid)
    memo = {} if cache is None else cache

    def fit(train: Tiles, fold: str) -> Segment:
        if len(grid) == 1:
            best = grid[0]
        else:
            means = []
            for k, kwargs in enumerate(grid):
                scores = []
                for name, (image, truth) in train.items():
                    if (name, k) not in memo:
                        memo[name, k] = aji(classical_nuclei(image, **kwargs), truth)
                    scores.append(memo[name, k])
                means.append(np.mean(scores))
            best = grid[int(np.argmax(means))]
        segment_fn = _classical(best)
        segment_fn.settings = best
        return segment_fn

    return fit


def _classical(kwargs: dict) -> Segment:
    def run(image: np.ndarray) -> np.ndarray:
        return classical_nuclei(image, **kwargs)

    return run


#: The UNet's post-processing grid: distance level of the watershed markers and the speck
#: size removed (chosen per fold on the training tiles, like the classical fallback's).
UNET_POST_GRID: tuple[dict, ...] = tuple(
    {"marker_threshold": t, "min_size": m} for t in (0.4, 0.55, 0.7) for m in (10, 40, 80)
)


def unet_method(
    cache_dir: str | os.PathLike,
    cfg: UNetConfig,
    steps: int,
    lr: float = 2e-3,
    patch: int = 192,
    batch_size: int = 4,
    seed: int = 0,
    device: str = "auto",
    scale: float = 1.0,
    post_grid: Sequence[dict] = UNET_POST_GRID,
) -> Method:
    """A UNet trained with :func:`train_unet` (augmentation on, square-root class weights,
    cosine learning rate, ``steps`` steps as 10 epochs of ``steps // 10``), its weights
    cached per fold as ``<cache_dir>/unet_<fold>.pt``, and its post-processing chosen from
    ``post_grid`` on the training tiles.

    Args:
        cache_dir: where the fold weights live (use one folder per setting).
        cfg: the :class:`UNetConfig` (``out_channels=4`` for the distance output).
        steps: optimiser steps.
        lr, patch, batch_size, seed, device: as in :func:`train_unet`.
        post_grid: keyword sets (``marker_threshold``, ``min_size``) for
            :func:`instances_from_probabilities`; the one with the best mean AJI on the
            fold's *training* tiles is used (default :data:`UNET_POST_GRID`; one entry
            means no choice).
        scale: the UNet trains and predicts on tiles resized by ``scale`` (``0.5``: 40x
            tiles seen at 20x, a quarter of the pixels; instances are still cut at full
            resolution, see :func:`segment`) (default ``1.0``).
    """
    cache = Path(cache_dir)
    epochs = 10 if steps >= 10 else 1
    grid = list(post_grid)

    def fit(train: Tiles, fold: str) -> Segment:
        path = cache / f"unet_{fold}.pt"
        if path.is_file():
            model = load_unet(path, device=device)
        else:
            pairs = [
                rescale_tile(*train[n], scale) if scale != 1 else train[n] for n in sorted(train)
            ]
            model = train_unet(
                [p[0] for p in pairs], [p[1] for p in pairs], cfg,
                epochs=epochs, steps_per_epoch=max(1, steps // epochs), lr=lr, patch=patch,
                batch_size=batch_size, seed=seed, device=device, progress=False,
                augment=True, class_weights="sqrt", schedule="cosine",
            )  # fmt: skip
            save_unet(model, path)

        def outputs(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            prob = predict_at_scale(model, image, scale)
            return prob[:3], (prob[3] if len(prob) == 4 else None)

        best = grid[0]
        if len(grid) > 1:
            means = np.zeros(len(grid))
            for name in sorted(train):
                image, truth = train[name]
                prob, distance = outputs(image)
                for k, kwargs in enumerate(grid):
                    pred = instances_from_probabilities(prob, distance=distance, **kwargs)
                    means[k] += aji(pred, truth) / len(train)
            best = grid[int(np.argmax(means))]

        def run(image: np.ndarray) -> np.ndarray:
            prob, distance = outputs(image)
            return instances_from_probabilities(prob, distance=distance, **best)

        run.model = model
        run.settings = {"weights": path.name, **best}
        run.train_seconds = float(getattr(model, "train_seconds", float("nan")))
        return run

    return fit


def _train_subset(names: list[str], score_train: bool | int) -> list[str]:
    if score_train is True:
        return names
    k = int(score_train)
    if k <= 0:
        return []
    return names[:: max(1, len(names) // k)][:k]


def held_out_predictions(
    cache_dir: str | os.PathLike, folds: Sequence[str]
) -> dict[str, dict[str, np.ndarray]]:
    """The held-out instance maps :func:`leave_one_organ_out` cached for ``folds``:
    ``method -> tile -> [H, W] int32``."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for organ in folds:
        with np.load(Path(cache_dir) / f"{organ}_held_out.npz") as z:
            for key in z.files:
                method, tile = key.split("|", 1)
                out.setdefault(method, {})[tile] = z[key]
    return out


# -------------------------------------------------------------------------------------------
# The notebook stage
# -------------------------------------------------------------------------------------------


def annotated_monuseg_tiles(
    use_shared: bool = True,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    """Every annotated MoNuSeg tile at hand: the repository's ``data/nuclei/monuseg`` (2
    tiles) and, when ``use_shared`` and present, the shared collection's ``nuclei/monuseg``
    and ``nuclei/monuseg_more`` (``WSIGRAPH_SHARED_DATA``; 13 tiles in all). A tile found in
    several places is read from the first (the repository's copies are pixel-identical).

    Returns:
        ``(name -> (image, instances int32), a sentence saying where they came from)``.
    """
    from wsigraph.data.nuclei_seg import read_monuseg
    from wsigraph.profiles import DATA_DIR, shared_data_dir

    folders = [("the repository's data/nuclei/monuseg", DATA_DIR / "nuclei" / "monuseg")]
    if use_shared:
        folders += [
            (f"the shared nuclei/{d}", shared_data_dir() / "nuclei" / d)
            for d in ("monuseg", "monuseg_more")
        ]
    tiles, used = {}, []
    for label, folder in folders:
        if not folder.is_dir():
            continue
        found = read_monuseg(folder)
        new = {k: v for k, v in found.items() if k not in tiles}
        if new:
            used.append(f"{len(new)} from {label}")
        tiles |= new
    organs = sorted({MONUSEG_ORGANS.get(n, "?") for n in tiles})
    shared = "" if len(used) > 1 else " (no shared data found: the repository's tiles only)"
    return tiles, (
        f"{len(tiles)} annotated tiles, {'; '.join(used)}{shared}; "
        f"{len(organs)} organs: {', '.join(organs)}"
    )


def segmentation_stage(
    tiles: Tiles,
    organs: Mapping[str, str],
    work_dir: str | os.PathLike,
    unet_cfg: UNetConfig,
    steps: int,
    folds: Sequence[str] | None = None,
    classical_grid: Sequence[dict] = CLASSICAL_GRID,
    unet_post_grid: Sequence[dict] = UNET_POST_GRID,
    score_train: bool | int = True,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    **unet_kwargs,
) -> tuple[pd.DataFrame, pd.DataFrame, str, Path]:
    """Leave-one-organ-out of the UNet (:func:`unet_method`) and the classical fallback
    (:func:`classical_method`), cached under ``work_dir/loo_<key>`` where the key digests
    every setting and the tile names (so a change starts a fresh cache, and an interrupted
    run resumes per organ).

    Returns:
        ``(rows, summary, chosen method, cache folder)``: :func:`leave_one_organ_out`'s rows,
        :func:`summarise`'s table with a ``chosen`` column (``True`` on every row of the
        method with the best mean held-out AJI), and that method's name.
    """
    from dataclasses import asdict

    settings = {
        "unet": asdict(unet_cfg), "steps": steps, "seed": seed, "unet_kwargs": unet_kwargs,
        "classical_grid": [dict(g) for g in classical_grid], "tiles": sorted(tiles),
        "unet_post_grid": [dict(g) for g in unet_post_grid], "version": 2,
        "organs": [organs[n] for n in sorted(tiles)], "score_train": score_train,
    }  # fmt: skip
    cache = Path(work_dir) / f"loo_{content_digest(settings)}"
    cache.mkdir(parents=True, exist_ok=True)
    write_text(cache / "settings.json", json.dumps(settings, indent=1, default=str) + "\n")
    methods = {
        "UNet": unet_method(
            cache,
            unet_cfg,
            steps,
            seed=seed,
            device=device,
            post_grid=unet_post_grid,
            **unet_kwargs,
        ),
        "classical fallback": classical_method(classical_grid),
    }
    rows = leave_one_organ_out(tiles, organs, methods, cache, folds, score_train, progress)
    summary = summarise(rows)
    chosen = choose_by_held_out_aji(summary)
    summary["chosen"] = summary["method"] == chosen
    return rows, summary, chosen, cache


def deployed_classical_settings(rows: pd.DataFrame) -> dict:
    """The classical fallback's settings to use on new tissue: the grid point its folds chose
    most often (ties: the one chosen first)."""
    chosen = rows.loc[rows["method"] == "classical fallback"].drop_duplicates("fold")["settings"]
    if chosen.empty:
        raise ValueError("no classical fallback folds in these rows")
    counts = chosen.value_counts(sort=False)
    return json.loads(counts.index[int(np.argmax(counts.to_numpy()))])
