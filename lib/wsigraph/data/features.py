"""Patch features for every slide: tissue mask -> pyramid tiles -> encoder -> one file per slide.

For each slide, :func:`extract_features` plans the pyramid (:func:`wsigraph.data.tiling.plan_tiles`
on the tissue mask), reads every patch once through a batched ``DataLoader`` with worker
processes, records its RGB variance, encodes it (:mod:`wsigraph.data.encoders`), drops the
background patches by H2-MIL's variance threshold, and writes ``<slide_id>.pt``:

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
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from wsigraph.data.encoders import Encoder, get_encoder
from wsigraph.data.slides import Slide, SlideError
from wsigraph.data.tiling import THUMBNAIL, TileSet, background_keep, plan_tiles
from wsigraph.data.tissue import EmptyTissueError, rgb_variance, tissue_mask
from wsigraph.io import DigestMismatchError, atomic_path, check_digest, content_digest
from wsigraph.progress import progress_bar


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
) -> pd.DataFrame:
    """Tile and encode every slide of ``slides`` (columns ``slide_id``, ``path``).

    Returns:
        One row per slide: ``slide_id, status`` (``done``, ``skipped`` = already there,
        ``failed``), ``n_patches`` and per-level counts, and ``error`` for failures.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    enc = (
        encoder
        if isinstance(encoder, Encoder)
        else get_encoder(encoder, weights_path, _device(device))
    )
    # a slide without magnification metadata: the cohort columns objective_power / mpp
    none = [None] * len(slides)
    powers = slides["objective_power"] if "objective_power" in slides else none
    mpps = slides["mpp"] if "mpp" in slides else none

    summary: dict[str, dict] = {}
    notes: dict[str, str] = {}  # slide -> why its existing file is rebuilt
    jobs, ids = [], []
    rows = zip(slides["slide_id"], slides["path"], powers, mpps, strict=True)
    for slide_id, path, power, mpp in progress_bar(
        list(rows), desc="tissue masks and tiles", unit="slide", disable=not progress
    ):
        try:
            with Slide(path, _none_if_nan(power), _none_if_nan(mpp)) as slide:
                stamp = slide.properties.get("openslide.quickhash-1", "")
                finished, why = _finished(feature_path(out_dir, slide_id), enc, settings, stamp)
                if why:
                    notes[slide_id] = why
                    _say(f"features: {why}")
                if finished is not None:
                    counts = {"n_patches": len(finished)} | finished.counts()
                    summary[slide_id] = {"status": "skipped"} | counts
                    continue
                tiles, _, _ = plan_slide(slide, settings)
                jobs.append((Path(path), tiles, slide.base_magnification, stamp))
                ids.append(slide_id)
        except (SlideError, EmptyTissueError, ValueError) as e:
            summary[slide_id] = {"status": "failed", "error": str(e)}

    dataset = PatchDataset(jobs)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        shuffle=False,
        persistent_workers=False,
    )
    bar = progress_bar(total=len(dataset), desc="features", unit="patch", disable=not progress)
    buffers: list[list] = [[] for _ in jobs]  # per slide: (features, var, error) batches
    done_upto = 0  # slides [0, done_upto) have been written
    seen = 0
    for batch in loader:
        n = len(batch["var"])
        feats = enc.encode(batch["patch"]).cpu()
        slide_idx = dataset.slide_of[seen : seen + n]
        for s in np.unique(slide_idx):
            sel = slide_idx == s
            buffers[s].append(
                (
                    feats[sel],
                    batch["var"][sel],
                    [e for e, k in zip(batch["error"], sel, strict=True) if k],
                )
            )
        seen += n
        bar.update(n)
        # Slides whose last patch has gone through are complete: write them now.
        while done_upto < len(jobs) and (
            seen >= len(dataset) or dataset.slide_of[seen] > done_upto
        ):
            summary[ids[done_upto]] = _finish_slide(
                ids[done_upto], jobs[done_upto], buffers[done_upto], enc, settings, out_dir
            )
            buffers[done_upto] = []
            done_upto += 1
    bar.close()
    for sid, why in notes.items():
        summary[sid]["note"] = why
    for sid, row in summary.items():
        if row["status"] == "failed":
            _say(f"features: slide {sid} failed: {row.get('error', '')}")
    rows = [{"slide_id": sid} | summary[sid] for sid in slides["slide_id"]]
    return pd.DataFrame(rows)


def _say(message: str) -> None:
    """One line on the terminal (stderr), outside the progress bars, for what a summary table
    alone would hide: a failed slide, a damaged cache file rebuilt."""
    tqdm.write(message, file=sys.stderr)


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
    with atomic_path(feature_path(out_dir, slide_id)) as tmp:
        torch.save(record, tmp)
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


def _device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _none_if_nan(value):
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value
