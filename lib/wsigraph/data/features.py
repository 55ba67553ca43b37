"""Patch features for every slide: tissue mask -> pyramid tiles -> encoder -> one file per slide.

For each slide, :func:`feature_task` plans the pyramid (:func:`wsigraph.data.tiling.plan_tiles`
on the tissue mask), reads every patch once through a batched ``DataLoader``, records its RGB
variance, encodes it (:mod:`wsigraph.data.encoders`), drops the background patches by H2-MIL's
variance threshold, and writes ``<slide_id>.pt``:

``features``  float32 ``[N, D]`` (row 0 is the thumbnail node)
``tiles``     the :class:`~wsigraph.data.tiling.TileSet` as plain arrays (level, row, col, x, y,
              size0, parent, tissue, ...)
``rgb_var``   float32 ``[N]``;  ``encoder``, ``slide_id``, ``objective_power``: provenance
``digest``    :func:`wsigraph.io.content_digest` of all the above, checked on load

Files are written atomically (temp file, then rename) and loaded with
``torch.load(weights_only=True)``. A slide whose file exists, passes its digest check and
matches the settings is skipped, so an interrupted run resumes; a file that is unreadable,
fails its digest check (bytes flipped on disk) or has no digest (written by an older version)
is rebuilt, and the summary's ``note`` and stderr say so, naming it. A failed slide is named on
stderr as well as in the summary. A slide that cannot be read, or has no tissue, is
reported in the returned summary and the others go on.

:func:`extract_features` runs one task per slide on any executor of :mod:`wsigraph.stages`
(this process, local worker processes, a Dask cluster; one worker per GPU with
``devices="all"``); every executor writes the same bytes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from wsigraph.data.encoders import Encoder, get_encoder
from wsigraph.data.slides import Slide, SlideError
from wsigraph.data.tiling import THUMBNAIL, TileSet, background_keep, plan_tiles
from wsigraph.data.tissue import EmptyTissueError, rgb_variance, tissue_mask
from wsigraph.io import DigestMismatchError, check_digest, content_digest, save_torch
from wsigraph.progress import progress_bar
from wsigraph.stages import (
    SlideJob,
    local_device,
    plan_workers,
    remove_stale_tmp,
    run_slide_stage,
    slide_jobs,
)
from wsigraph.train.executor import worker_setup


@dataclass(frozen=True)
class TilingSettings:
    """How a slide is tiled; a profile provides them (see :mod:`wsigraph.profiles`)."""

    magnifications: tuple[float, ...] = (5.0, 10.0)
    patch_size: int = 512
    thumbnail_side: int = 1024
    min_tissue: float = 0.5
    rgb_var_threshold: float = 100.0

    def __post_init__(self):
        problems = []
        if not self.magnifications or any(m <= 0 for m in self.magnifications):
            problems.append(f"magnifications must be positive, got {self.magnifications}")
        if not 16 <= self.patch_size <= 4096:
            problems.append(f"patch_size must lie in 16..4096 px, got {self.patch_size}")
        if self.thumbnail_side < 64:
            problems.append(f"thumbnail_side must be >= 64 px, got {self.thumbnail_side}")
        if not 0.0 <= self.min_tissue <= 1.0:
            problems.append(f"min_tissue must lie in [0, 1], got {self.min_tissue}")
        if self.rgb_var_threshold < 0:
            problems.append(f"rgb_var_threshold must be >= 0, got {self.rgb_var_threshold}")
        if problems:
            raise ValueError("bad tiling settings: " + "; ".join(problems))

    @classmethod
    def from_profile(cls, profile) -> TilingSettings:
        return cls(
            tuple(profile.magnifications),
            profile.patch_size,
            profile.thumbnail_side,
            profile.min_tissue,
            profile.rgb_var_threshold,
        )


def feature_settings(profile, encoder: str | None = None) -> dict:
    """How a profile makes a slide's features, as plain values: ``profile``, ``encoder`` and
    the :class:`TilingSettings` fields. Run records and checkpoints keep it, so a new slide is
    tiled and encoded as the model's training slides were (``wsigraph predict``)."""
    settings = dataclasses.asdict(TilingSettings.from_profile(profile))
    settings["magnifications"] = list(settings["magnifications"])
    return {"profile": profile.name, "encoder": encoder or profile.encoder} | settings


def plan_slide(slide: Slide, settings: TilingSettings) -> tuple[TileSet, np.ndarray, np.ndarray]:
    """Tissue mask and candidate pyramid tiles of one slide.

    Returns:
        ``(tiles, thumbnail, mask)``: the tiles before the variance filter, the RGB thumbnail
        and its boolean tissue mask.
    """
    thumb = slide.thumbnail(settings.thumbnail_side)
    mask = tissue_mask(thumb, name=slide.path.name)
    tiles = plan_tiles(
        slide.dimensions,
        slide.base_magnification,
        settings.magnifications,
        settings.patch_size,
        mask,
        settings.min_tissue,
        name=slide.path.name,
    )
    return tiles, thumb, mask


def read_patch(slide: Slide, tiles: TileSet, i: int) -> np.ndarray:
    """Patch ``i`` as ``uint8 [P, P, 3]``; the thumbnail node is the whole slide letterboxed."""
    p = tiles.patch_size
    if tiles.level[i] == THUMBNAIL:
        thumb = slide.thumbnail(p)
        out = np.full((p, p, 3), 255, np.uint8)
        out[: thumb.shape[0], : thumb.shape[1]] = thumb
        return out
    mag = tiles.magnifications[tiles.level[i] - 1]
    return slide.read_region_at(tiles.x[i], tiles.y[i], p, mag)


class PatchDataset(Dataset):
    """All patches of several slides, in slide order. Each worker opens slides lazily.

    Items are dicts ``{"patch": uint8 [P, P, 3], "var": float, "error": str}``; a read failure
    gives ``error`` (and a blank patch) instead of raising, so one corrupt slide cannot stop the
    others.
    """

    def __init__(self, jobs: list[tuple[Path, TileSet, float]]):
        self.jobs = jobs  # (path, tiles, objective power, slide hash)
        sizes = np.array([len(job[1]) for job in jobs], np.int64)
        self.slide_of = np.repeat(np.arange(len(jobs)), sizes)
        self.tile_of = (
            np.concatenate([np.arange(n) for n in sizes]) if len(sizes) else np.zeros(0, np.int64)
        )
        self._open: dict[int, Slide] = {}

    def __len__(self) -> int:
        return len(self.slide_of)

    def __getitem__(self, idx: int) -> dict:
        s, i = int(self.slide_of[idx]), int(self.tile_of[idx])
        path, tiles, power, _ = self.jobs[s]
        try:
            patch = read_patch(self._slide(s, path, power), tiles, i)
            return {
                "patch": torch.from_numpy(patch),
                "var": float(rgb_variance(patch)),
                "error": "",
            }
        except SlideError as e:
            p = tiles.patch_size
            return {"patch": torch.zeros((p, p, 3), dtype=torch.uint8), "var": 0.0, "error": str(e)}

    def _slide(self, s: int, path: Path, power: float) -> Slide:
        if s not in self._open:
            for old in list(self._open):  # keep one slide open per worker
                self._open.pop(old).close()
            self._open[s] = Slide(path, objective_power=power)
        return self._open[s]


def feature_path(out_dir: str | Path, slide_id: str) -> Path:
    return Path(out_dir) / f"{slide_id}.pt"


def load_features(path: str | Path, require_digest: bool = False) -> dict:
    """Load a feature file; ``tiles`` comes back as a :class:`TileSet`.

    The file's content digest (``digest``, :func:`wsigraph.io.content_digest`) is checked: a
    file whose bytes changed on disk raises :class:`wsigraph.io.DigestMismatchError` (a
    ``ValueError``) naming it. Files from before digests were stored load unless
    ``require_digest``.
    """
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means an unusable file
        raise ValueError(f"{path}: not a readable feature file ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: not a feature file (a {type(d).__name__}, not a dict)")
    check_digest(d, path, required=require_digest)
    try:
        d["tiles"] = TileSet.from_dict(d["tiles"])
    except Exception as e:  # noqa: BLE001 - any failure means an unusable file
        raise ValueError(f"{path}: not a readable feature file ({e})") from None
    return d


@dataclass(frozen=True)
class FeatureStage:
    """What every slide task of :func:`extract_features` shares (sent once per worker)."""

    out_dir: Path
    settings: TilingSettings
    encoder: str | Encoder  # a name, or (serial runs only) a built encoder
    weights_path: str | None
    batch_size: int
    loader_workers: int
    device: str
    patch_bars: bool = False

    def target(self, job: SlideJob) -> Path:
        return feature_path(self.out_dir, job.slide_id)


_WORKER_ENCODERS: dict[tuple, Encoder] = {}  # a worker's encoders, built once per process


def _stage_encoder(stage: FeatureStage) -> Encoder:
    if isinstance(stage.encoder, Encoder):
        return stage.encoder
    device = local_device(worker_setup().device or stage.device)
    key = (stage.encoder, stage.weights_path, device)
    if key not in _WORKER_ENCODERS:
        _WORKER_ENCODERS.clear()  # one encoder per worker
        _WORKER_ENCODERS[key] = get_encoder(stage.encoder, stage.weights_path, device)
    return _WORKER_ENCODERS[key]


def feature_task(job: SlideJob, stage: FeatureStage) -> dict:
    """Tissue mask, tiles and features of one slide, written to ``stage.target(job)``.

    Returns:
        The slide's summary row: ``status`` (``done``, ``skipped`` = its file is there, sound
        and made with the same settings, ``failed``), ``n_patches`` and per-level counts,
        ``error`` for a failure, ``note`` when a damaged file was rebuilt.
    """
    enc = _stage_encoder(stage)
    settings, out = stage.settings, stage.target(job)
    remove_stale_tmp(out)  # left by a worker killed while writing this slide
    note = ""
    try:
        with Slide(job.path, job.objective_power, job.mpp) as slide:
            stamp = slide.properties.get("openslide.quickhash-1", "")
            finished, note = _finished(out, enc, settings, stamp)
            if finished is not None:
                return {"status": "skipped", "n_patches": len(finished)} | finished.counts()
            tiles, _, _ = plan_slide(slide, settings)
            power = slide.base_magnification
    except (SlideError, EmptyTissueError, ValueError) as e:
        return {"status": "failed", "error": str(e)} | ({"note": note} if note else {})
    dataset = PatchDataset([(Path(job.path), tiles, power, stamp)])
    loader = DataLoader(
        dataset, batch_size=stage.batch_size, num_workers=stage.loader_workers, shuffle=False
    )
    bar = progress_bar(
        total=len(dataset), desc=job.slide_id, unit="patch", leave=False,
        disable=not stage.patch_bars,
    )  # fmt: skip
    parts = []
    for batch in loader:
        parts.append((enc.encode(batch["patch"]).cpu(), batch["var"], list(batch["error"])))
        bar.update(len(batch["var"]))
    bar.close()
    row = _finish_slide(job.slide_id, dataset.jobs[0], parts, enc, settings, stage.out_dir)
    return row | ({"note": note} if note else {})


def extract_features(
    slides: pd.DataFrame,
    out_dir: str | Path,
    settings: TilingSettings,
    encoder: str | Encoder = "demo",
    weights_path: str | Path | None = None,
    batch_size: int = 64,
    num_workers: int = 2,
    device: str = "auto",
    progress: bool = True,
    *,
    executor: str = "serial",
    workers: int | None = None,
    scheduler: str | None = None,
    devices=None,
) -> pd.DataFrame:
    """Tile and encode every slide of ``slides`` (columns ``slide_id``, ``path``; optional
    ``objective_power``, ``mpp``), one task per slide (:func:`feature_task`).

    Args:
        executor, workers, scheduler, devices: where the slides run
            (:func:`wsigraph.stages.plan_workers`): ``"serial"`` (default) in this process,
            ``"local"`` worker processes, ``"dask"`` a LocalCluster or the cluster at
            ``scheduler``; ``devices="all"`` puts one worker on every visible GPU.
        num_workers: patch-reading processes of a serial run.

    Returns:
        One row per slide: ``slide_id, status`` (``done``, ``skipped`` = already there,
        ``failed``), ``n_patches`` and per-level counts, ``error`` for failures and ``note``
        for a damaged file that was rebuilt. Every executor writes the same bytes.

    Raises:
        ValueError: a bad executor or device choice, or a built encoder (not a name) for an
            executor other than ``"serial"``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_workers(
        executor, len(slides), workers, devices, device, num_workers, scheduler=scheduler
    )
    if isinstance(encoder, Encoder):
        if executor != "serial":
            raise ValueError(
                f"executor {executor!r} builds the encoder in each worker: pass its name "
                f"({encoder.name!r}) and weights_path, not a built encoder"
            )
        enc: str | Encoder = encoder
    elif executor == "serial":
        enc = get_encoder(encoder, weights_path, local_device(plan.device))
    else:
        get_encoder(encoder, weights_path, "cpu")  # a missing or wrong weights file: say so now
        enc = encoder
    stage = FeatureStage(
        out_dir,
        settings,
        enc,
        None if weights_path is None else str(weights_path),
        batch_size,
        plan.loader_workers,
        plan.device,
        patch_bars=progress and executor == "serial",
    )
    rows = run_slide_stage(feature_task, slide_jobs(slides), stage, plan, "features", progress)
    return pd.DataFrame(rows)


def _finish_slide(
    slide_id, job, parts, enc: Encoder, settings: TilingSettings, out_dir: Path
) -> dict:
    path, tiles, power, stamp = job
    errors = [e for _, _, errs in parts for e in errs if e]
    if errors:
        return {"status": "failed", "error": errors[0]}
    feats = torch.cat([f for f, _, _ in parts])
    var = torch.cat([v for _, v, _ in parts]).numpy()
    keep = background_keep(tiles, var, settings.rgb_var_threshold)
    kept, keep_idx = tiles.select(keep), np.flatnonzero(keep)
    record = {
        "slide_id": slide_id,
        "features": feats[keep_idx].float().contiguous(),
        "rgb_var": torch.from_numpy(var[keep_idx].astype(np.float32)),
        "tiles": kept.to_dict(),
        "encoder": enc.name,
        "objective_power": float(power),
        "settings": _settings_key(enc, settings),
        "slide_hash": stamp,
    }
    record["digest"] = content_digest(record)
    save_torch(record, feature_path(out_dir, slide_id))
    return {"status": "done", "n_patches": len(kept)} | kept.counts()


def _settings_key(enc: Encoder, settings: TilingSettings) -> str:
    return f"{enc.name}|{settings}"


def _finished(
    path: Path, enc: Encoder, settings: TilingSettings, stamp: str
) -> tuple[TileSet | None, str]:
    """``(tiles, why)``: the tiles of an existing, verified feature file made from the same
    slide (OpenSlide's content quickhash) with the same settings, else ``None``; ``why`` says
    why an existing file is rebuilt when it is damaged (unreadable, digest mismatch, no
    digest), else ``""``."""
    if not path.exists():
        return None, ""
    try:
        record = load_features(path, require_digest=True)
    except DigestMismatchError as e:
        return None, f"rebuilding {path}: {str(e).removeprefix(f'{path}: ')}"
    except ValueError as e:
        return None, f"rebuilding {path}: unreadable ({str(e).removeprefix(f'{path}: ')})"
    same = (
        record.get("settings") == _settings_key(enc, settings) and record.get("slide_hash") == stamp
    )
    return (record["tiles"] if same else None), ""
