"""Benchmark: one real-size whole slide through the pipeline -- ours vs a CLAM-style loop.

**The slide.** A synthetic 40,960 x 30,720 px slide (1.26 gigapixels) at 20x (0.5 um/px),
written once as a JPEG-compressed (quality 80), 256 px tiled pyramidal BigTIFF that OpenSlide
opens as an Aperio slide (``AppMag = 20``, ``MPP = 0.5``; levels reduced by 4: 20x, 5x, 1.25x,
...). Tissue is H&E-coloured texture (stroma in eosin/haematoxylin mixtures, dark nuclei) over
about 55 % of the area in smooth blobs, white glass elsewhere. Level 0 is rendered tile by tile
from a generator, so the full image is never in memory; level 1 (a quarter of each side, ~240
MB at full size) is accumulated as exact 4 x 4 box averages of level 0 while it is written.
The slide is kept in ``work/benchmarks/wsi_throughput/slide.tif`` (``WSIGRAPH_WORK`` moves
``work/``) and rewritten only when its spec hash (in the ``ImageDescription``) differs.

**What is timed**, stage by stage, on that slide, in this process's children:

* ``tissue``: the thumbnail (longest side ``thumbnail_side`` = 2048, the ``tcga`` profile's)
  and :func:`wsigraph.data.tissue.tissue_mask` on it;
* ``tiling``: :func:`wsigraph.data.features.plan_slide` (thumbnail, mask and the H2-MIL pyramid
  at 5x and 10x) with the ``tcga`` profile's :class:`TilingSettings` and the encoder's patch
  size: 224 px for the truncated ResNet-50, the ``demo`` profile's 64 px for the demo encoder;
* ``features``, per encoder, on the same patches (every planned 5x and 10x patch, or an evenly
  spaced ``--max-patches`` of them plus their parents; the thumbnail node is left out of the
  timing), the same batch size and ``--num-workers`` DataLoader workers:

  - ``ours``: the library's own reading and batching path, as
    :func:`~wsigraph.data.features.extract_features` runs it: its ``PatchDataset`` (each patch
    read by :meth:`Slide.read_region_at`, its RGB variance computed in the worker, uint8
    batches) in a ``DataLoader``, then ``Encoder.encode`` (resize, normalise, inference);
  - ``clam-style``: CLAM's ``Whole_Slide_Bag_FP`` pattern -- a ``Dataset`` whose
    ``__getitem__`` calls OpenSlide ``read_region`` for one patch at
    ``get_best_level_for_downsample``, resizes it (PIL's default filter) when that level is
    finer than asked, and applies torchvision's ``ToTensor`` + ``Normalize`` in the worker
    (float batches), then the same encoder module;

  patches/s = patches / wall seconds from the first ``next()`` on the loader (worker start-up
  included) to the last batch's features. ``resnet50-trunc`` is CLAM's ResNet-50 truncated
  after layer3 (1024-d); without ``--weights`` it is the same trunk with random weights
  (built from the library's private ``_resnet50_trunk``), which costs the same to run;
* ``graph``: H2-MIL's background filter and :func:`wsigraph.graphs.build.graph_from_features`
  on our features of the graph encoder (``resnet50-trunc`` when run, else the first);
* ``train_step``: one forward + backward + Adam step of H2-MIL and of HIGT (the configs of
  ``h2mil_table1`` / ``higt_table1``, ESCA typing) on that graph, best of ``--repeats``.

With CUDA present, the ``features`` stage is repeated with the encoder on ``cuda``.

**Peak memory per stage.** Each stage runs in its own ``fork``-ed child process, so stages do
not see each other's peaks. ``peak_rss_mib`` is the child's ``ru_maxrss`` (exact; it includes
the pages inherited from this process and touched, ``rss_at_start_mib`` when the stage began);
``peak_worker_rss_mib`` is the largest DataLoader worker's ``ru_maxrss`` (``RUSAGE_CHILDREN``);
``peak_tree_pss_mib`` is the largest sum of PSS (proportional set size, so pages shared after
the fork count once) over the child and its workers, sampled every 50 ms with psutil. Ratios
are ours / clam-style, both methods measured side by side in this run.

**Projection of the full ``tcga`` run** (hours, on the machine that ran the benchmark)::

    P      = 1 + f5 * G5 + f10 * G10          patches of one TCGA slide (512 px at 5x and 10x)
    hours  = N * (t_tissue + t_tiling) / 3600                             preprocessing
           + N * P / v / 3600                                              features
           + N * t_graph * P / n / 3600                                    graphs
           + sum over runs of R * F * E * N_d * t_step(model) * P / n / 3600   training

with ``G5``, ``G10`` the 5x and 10x grid cells of a 50,000 x 40,000 px 20x slide (2,048 and
1,024 level-0 px cells: 24 x 19 and 48 x 38), ``f5``, ``f10`` the fraction of grid cells that
became graph nodes on this slide (tissue, then the variance filter), ``N`` = ESCA + KICA slides
(162 + 374 = 536: the cases of the TCGA-CDR table in ``data/clinical`` that pass the cohort
rule, one slide per case), ``v`` our patches/s of the graph encoder, ``n`` the nodes of the
benchmark graph, runs = :func:`wsigraph.tables.implemented_runs` for the ``tcga`` profile, each
on its dataset's ``N_d`` slides, ``R x F x E`` = the profile's repeats x folds x epochs (5 x 5
x 50), and ``t_step`` the measured HIGT step for ``higt`` rows, 0 for the logistic regressions
on slide means, and the H2-MIL step for every other model. Assumptions, all in the JSON: a
KimiaNet patch (512 px read, resized to 224) costs what a 224 px ResNet-50 trunk patch costs
here; graph and training costs grow linearly with nodes; every slide of a dataset costs one
training step per epoch (validation and test slides, forward only, are counted as steps: an
upper bound); model selection, evaluation and I/O beyond this are ignored.

Writes ``results/benchmarks/wsi_throughput.json``. Run:
``.venv/bin/python benchmarks/wsi_throughput.py`` (``--width 4096 --height 3072
--max-patches 256`` for a quick look).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import multiprocessing as mp
import os
import resource
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import openslide
import psutil
import tifffile
import torch
from scipy import ndimage
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torch_geometric.data import Batch

from wsigraph.bench import best_time, write_record
from wsigraph.data.encoders import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Encoder,
    _resnet50_trunk,
    get_encoder,
)
from wsigraph.data.features import PatchDataset, TilingSettings, plan_slide, read_patch
from wsigraph.data.slides import Slide, SlideError
from wsigraph.data.tiling import TileSet, background_keep
from wsigraph.data.tissue import rgb_variance, tissue_mask
from wsigraph.graphs.build import graph_from_features
from wsigraph.graphs.pyramid import load_graph, save_graph
from wsigraph.io import atomic_path
from wsigraph.profiles import get_profile
from wsigraph.tables import get_row, implemented_runs, run_config

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("WSIGRAPH_WORK") or ROOT / "work") / "benchmarks" / "wsi_throughput"
TILE = 256  # TIFF tile side
FACTOR = 4  # downsample between pyramid levels (Aperio's)
CELL = 64  # level-0 px per cell of the low-frequency tissue and stain fields
QUALITY = 80  # JPEG quality
SLIDE_VERSION = 1  # bump when the rendering changes: the spec hash then rewrites the slide
ENCODERS = ("demo", "resnet50-trunc")
PATCH_SIZE = {"demo": get_profile("demo").patch_size, "resnet50-trunc": 224}
MODELS = {"h2mil": ("h2mil_table1", "H2-MIL"), "higt": ("higt_table1", "HIGT (Ours)")}
TCGA_SLIDE = (50_000, 40_000)  # level-0 px of a typical TCGA diagnostic slide at 20x
TCGA_SLIDES = {"esca": 162, "kica": 374}  # cohort-rule cases of data/clinical's TCGA-CDR table
GLASS = np.array([242, 242, 242], np.float32)
# Colour depth (glass minus colour) of eosin, haematoxylin and nuclei, RGB.
EOSIN = GLASS - np.array([232, 150, 198], np.float32)
HAEMATOXYLIN = GLASS - np.array([165, 120, 200], np.float32)
NUCLEUS = GLASS - np.array([85, 55, 140], np.float32)


# --- the slide ---------------------------------------------------------------------------------


def slide_spec(width: int, height: int) -> dict:
    if width % TILE or height % TILE or min(width, height) < 4 * TILE:
        raise ValueError(
            f"--width and --height must be multiples of {TILE} px and at least {4 * TILE}, "
            f"got {width} x {height}"
        )
    return {
        "width": width,
        "height": height,
        "tile": TILE,
        "level_factor": FACTOR,
        "jpeg_quality": QUALITY,
        "tissue_fraction": 0.55,
        "seed": 0,
        "version": SLIDE_VERSION,
    }


def spec_tag(spec: dict) -> str:
    text = json.dumps(spec, sort_keys=True)
    return f"spec = {hashlib.sha1(text.encode()).hexdigest()[:16]}"


def ensure_slide(path: Path, spec: dict) -> dict:
    """Write the slide unless ``path`` holds one with the same spec; returns what happened."""
    with contextlib.suppress(SlideError):
        with Slide(path) as s:
            if spec_tag(spec) in s.comment and s.dimensions == (spec["width"], spec["height"]):
                return {"written": False, "seconds": 0.0}
    start = time.perf_counter()
    write_slide(path, spec)
    return {"written": True, "seconds": time.perf_counter() - start}


def write_slide(path: Path, spec: dict) -> None:
    """The pyramidal JPEG BigTIFF described in the module docstring, written atomically."""
    w, h = spec["width"], spec["height"]
    rng = np.random.default_rng(spec["seed"])
    fields = _fields(rng, h // TILE, w // TILE, spec["tissue_fraction"])
    bank = _texture_bank(rng)
    level1 = np.empty((h // FACTOR, w // FACTOR, 3), np.uint8)
    description = (
        f"Aperio Image Library v12.0.15 \r\n{w}x{h} [0,0 {w}x{h}] ({TILE}x{TILE}) JPEG/RGB "
        f"Q={QUALITY}|AppMag = 20|MPP = 0.5|wsigraph benchmark slide|{spec_tag(spec)}"
    )
    options = dict(
        tile=(TILE, TILE),
        compression="jpeg",
        compressionargs={"level": QUALITY},
        photometric="rgb",
        metadata=None,
    )

    def level0() -> Iterator[np.ndarray]:
        t = TILE // FACTOR
        for ty in range(h // TILE):
            for tx in range(w // TILE):
                tile = _render_tile(fields, bank, ty, tx)
                level1[ty * t : (ty + 1) * t, tx * t : (tx + 1) * t] = _box(tile, FACTOR)
                yield tile

    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tw:
        tw.write(
            level0(),
            shape=(h, w, 3),
            dtype=np.uint8,
            subfiletype=0,
            description=description,
            **options,
        )
        level = level1
        while True:
            tw.write(level, subfiletype=1, **options)
            if max(level.shape[:2]) <= 1024 or min(level.shape[:2]) < 2 * FACTOR:
                break
            level = _box(level, FACTOR)


def _fields(rng, rows: int, cols: int, tissue: float) -> np.ndarray:
    """Tissue weight and stain mix on the ``CELL`` grid, ``[2, 4 * rows + 2, 4 * cols + 2]``;
    entry ``k`` is the cell ``k - 1`` (a margin for interpolation)."""
    shape = (TILE // CELL * rows + 2, TILE // CELL * cols + 2)
    sigma = max(2.0, max(shape) / 40)
    blobs = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    edge = np.quantile(blobs, 1 - tissue)
    weight = np.clip((blobs - edge) / (0.1 * blobs.std()) + 0.5, 0, 1)  # soft tissue borders
    mix = ndimage.gaussian_filter(rng.standard_normal(shape), sigma / 2)
    mix = 1 / (1 + np.exp(-2 * mix / mix.std()))  # 0: eosin, 1: haematoxylin
    return np.stack([weight, mix]).astype(np.float32)


def _texture_bank(rng, k: int = 16) -> np.ndarray:
    """``k`` tiles of stroma density and nuclei, ``[k, 2, TILE, TILE]`` (tile-periodic)."""
    bank = np.empty((k, 2, TILE, TILE), np.float32)
    for i in range(k):
        fibres = ndimage.gaussian_filter(rng.standard_normal((TILE, TILE)), 1.5, mode="wrap")
        bank[i, 0] = np.clip(0.8 + 0.35 * fibres / fibres.std(), 0.1, 2)
        nuclei = np.zeros((TILE, TILE))
        ys, xs = rng.integers(0, TILE, (2, int(rng.integers(60, 160))))
        nuclei[ys, xs] = 2 * np.pi * 2.5**2
        bank[i, 1] = np.clip(ndimage.gaussian_filter(nuclei, 2.5, mode="wrap"), 0, 1)
    return bank


def _interpolation() -> np.ndarray:
    """``[TILE, TILE // CELL + 2]``: bilinear weights from a tile's cells (with a one-cell
    margin) to its pixels; the same for every tile, as tiles are whole cells."""
    n = TILE // CELL
    u = (np.arange(TILE) + 0.5) / CELL - 0.5 + 1  # position in the margin-padded window
    i0 = np.floor(u).astype(int)
    m = np.zeros((TILE, n + 2), np.float32)
    m[np.arange(TILE), i0] = 1 - (u - i0)
    m[np.arange(TILE), i0 + 1] = u - i0
    return m


_WEIGHTS = _interpolation()


def _render_tile(fields: np.ndarray, bank: np.ndarray, ty: int, tx: int) -> np.ndarray:
    n = TILE // CELL
    window = fields[:, ty * n : ty * n + n + 2, tx * n : tx * n + n + 2]  # [2, n+2, n+2]
    weight, mix = (_WEIGHTS @ window @ _WEIGHTS.T)[..., None]  # [TILE, TILE, 1] each
    if weight.max() < 1e-3:
        return np.broadcast_to(GLASS.astype(np.uint8), (TILE, TILE, 3)).copy()
    texture = bank[(ty * 7919 + tx * 104_729) % len(bank)]
    if (ty + tx) % 2:
        texture = texture.transpose(0, 2, 1)
    stroma, nuclei = texture[0][..., None], texture[1][..., None]
    depth = stroma * (mix * HAEMATOXYLIN + (1 - mix) * EOSIN) + nuclei * NUCLEUS
    return np.clip(GLASS - weight * depth, 0, 255).astype(np.uint8)


def _box(img: np.ndarray, k: int) -> np.ndarray:
    """``k x k`` box average of a ``uint8 [H, W, 3]`` image (sides cropped to multiples of k)."""
    h, w = img.shape[0] // k * k, img.shape[1] // k * k
    x = img[:h, :w].reshape(h // k, k, w // k, k, 3).mean(axis=(1, 3))
    return np.rint(x).astype(np.uint8)


# --- stages: each runs in a forked child ---------------------------------------------------------


class _TreePeak(threading.Thread):
    """Largest sum of PSS over a process and its descendants, sampled every ``interval`` s;
    ``sampled`` is set once the first sample is taken."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self.done, self.sampled = threading.Event(), threading.Event()

    def run(self) -> None:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.pid)
            while not self.done.is_set():
                total = 0
                for p in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_full_info().pss
                self.peak = max(self.peak, total)
                self.sampled.set()
                self.done.wait(self.interval)
        self.sampled.set()  # the process is gone: nothing to wait for


def _child(conn, go, fn: Callable[..., dict], args: tuple) -> None:
    try:
        go.recv()  # the parent's sampler has measured this process once: a stage faster than
        # its interval still gets a tree PSS
        start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = fn(*args)
        out["rss_at_start_mib"] = start / 1024
        out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if children:
            out["peak_worker_rss_mib"] = children / 1024
        conn.send(out)
    except BaseException:  # noqa: BLE001 - reported by the parent
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


def run_stage(fn: Callable[..., dict], *args) -> dict:
    """``fn(*args)`` in a fork-ed child; its dict plus the peak-memory fields (see docstring)."""
    ctx = mp.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    wait_go, go = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, wait_go, fn, args))
    proc.start()
    send.close()
    wait_go.close()
    sampler = _TreePeak(proc.pid)
    sampler.start()
    sampler.sampled.wait(30)
    go.send(True)
    go.close()
    try:
        out = receive.recv()
    except EOFError:
        out = {"error": f"the stage's process died (exit code {proc.exitcode})"}
    proc.join()
    sampler.done.set()
    sampler.join()
    if "error" in out:
        raise RuntimeError(f"stage {fn.__name__} failed:\n{out['error']}")
    return out | {"peak_tree_pss_mib": sampler.peak / 2**20}


def stage_tissue(slide_path: Path, settings: TilingSettings) -> dict:
    with Slide(slide_path) as slide:
        start = time.perf_counter()
        thumb = slide.thumbnail(settings.thumbnail_side)
        read = time.perf_counter()
        mask = tissue_mask(thumb, name=slide.path.name)
        end = time.perf_counter()
    return {
        "seconds": end - start,
        "thumbnail_seconds": read - start,
        "mask_seconds": end - read,
        "thumbnail": list(thumb.shape[:2]),
        "tissue_fraction": float(mask.mean()),
    }


def stage_tiling(slide_path: Path, settings: TilingSettings, max_patches: int, out: Path) -> dict:
    """``plan_slide``, timed; saves the tiles the feature stages read (a subset when
    ``max_patches``: evenly spaced 5x/10x patches plus their parents)."""
    with Slide(slide_path) as slide:
        start = time.perf_counter()
        tiles, _, _ = plan_slide(slide, settings)
        seconds = time.perf_counter() - start
        (width, height), power = slide.dimensions, slide.base_magnification
    sides = {f"{m:g}x": settings.patch_size * power / m for m in settings.magnifications}
    grid = {k: int(width // side) * int(height // side) for k, side in sides.items()}
    planned = tiles.counts()
    if max_patches and len(tiles) - 1 > max_patches:
        pick = np.linspace(1, len(tiles) - 1, max_patches).round().astype(int)
        tiles = tiles.select(np.isin(np.arange(len(tiles)), pick))
    torch.save(tiles.to_dict(), out)
    return {
        "seconds": seconds,
        "patch_size": settings.patch_size,
        "planned": planned,
        "grid_cells": grid,
        "timed": tiles.counts(),  # the thumbnail node is encoded, but outside the timing
    }


def build_encoder(name: str, weights: Path | None, device: str) -> Encoder:
    """A registered encoder; ``resnet50-trunc`` without weights: the same trunk, random weights."""
    if name != "resnet50-trunc" or weights is not None:
        return get_encoder(name, weights, device)
    torch.manual_seed(0)
    module = nn.Sequential(_resnet50_trunk(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    module.to(device).eval().requires_grad_(False)
    return Encoder(name, module, 1024, IMAGENET_MEAN, IMAGENET_STD, 224)


class ClamStyleBag(Dataset):
    """CLAM's ``Whole_Slide_Bag_FP`` pattern: one OpenSlide ``read_region`` per item at the
    best level, a PIL resize when that level is finer, ``ToTensor`` + ``Normalize`` in the
    worker. Items are ``(float [3, P, P], [x, y])``."""

    def __init__(self, path: Path, tiles: TileSet, index: np.ndarray, enc: Encoder, power: float):
        from torchvision import transforms

        self.path, self.size = str(path), tiles.patch_size
        self.coords = np.stack([tiles.x[index], tiles.y[index]], 1).round().astype(np.int64)
        self.downsample = power / tiles.magnification_of(index)
        self.transform = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize(enc.mean, enc.std)]
        )
        self.wsi: openslide.OpenSlide | None = None  # opened in each worker

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, i: int):
        if self.wsi is None:
            self.wsi = openslide.OpenSlide(self.path)
        level = self.wsi.get_best_level_for_downsample(self.downsample[i])
        read = math.ceil(self.size * self.downsample[i] / self.wsi.level_downsamples[level])
        img = self.wsi.read_region(tuple(self.coords[i]), level, (read, read)).convert("RGB")
        if read != self.size:
            img = img.resize((self.size, self.size))
        return self.transform(img), self.coords[i]


def stage_features(
    method: str,
    slide_path: Path,
    tiles_file: Path,
    encoder: str,
    weights: Path | None,
    device: str,
    batch_size: int,
    num_workers: int,
    out: Path,
) -> dict:
    """Encode every tile of ``tiles_file`` but the thumbnail node with ``method`` (``ours`` or
    ``clam-style``), timed; saves the features (ours: with the thumbnail node's, untimed)."""
    enc = build_encoder(encoder, weights, device)
    tiles = TileSet.from_dict(torch.load(tiles_file, weights_only=True))
    index = np.arange(1, len(tiles))
    with Slide(slide_path) as slide:
        power = slide.base_magnification
        thumb = read_patch(slide, tiles, 0) if method == "ours" else None
    if method == "ours":
        dataset = Subset(PatchDataset([(slide_path, tiles, power, "")]), index.tolist())
    else:
        dataset = ClamStyleBag(slide_path, tiles, index, enc, power)
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False
    )  # as extract_features builds it
    features, variances = [], []
    start = time.perf_counter()
    if method == "ours":
        for batch in loader:
            if any(batch["error"]):
                raise SlideError(slide_path, next(e for e in batch["error"] if e))
            features.append(enc.encode(batch["patch"]).cpu())
            variances.append(batch["var"])
    else:
        with torch.inference_mode():
            for images, _ in loader:
                features.append(enc.module(images.to(device)).float().cpu())
    seconds = time.perf_counter() - start
    record = {"features": torch.cat(features), "level": torch.from_numpy(tiles.level[index])}
    if method == "ours":
        record["thumbnail"] = enc.encode(torch.from_numpy(thumb)[None]).cpu()[0]
        record["thumbnail_var"] = float(rgb_variance(thumb))
        record["rgb_var"] = torch.cat(variances).double()
    torch.save(record, out)
    return {
        "encoder": encoder,
        "method": method,
        "device": device,
        "patch_size": tiles.patch_size,
        "batch_size": batch_size,
        "num_workers": num_workers,
        "patches": len(index),
        "seconds": seconds,
        "patches_per_s": len(index) / seconds,
    }


def stage_graph(tiles_file: Path, features_file: Path, threshold: float, out: Path) -> dict:
    """H2-MIL's variance filter and ``graph_from_features``, timed together; saves the graph."""
    tiles = TileSet.from_dict(torch.load(tiles_file, weights_only=True))
    ours = torch.load(features_file, weights_only=True)
    features = torch.cat([ours["thumbnail"][None], ours["features"]])
    variance = np.concatenate([[ours["thumbnail_var"]], ours["rgb_var"].numpy()])

    def build():
        keep = background_keep(tiles, variance, threshold)
        kept = tiles.select(keep)
        record = {"tiles": kept, "features": features[np.flatnonzero(keep)], "slide_id": "wsi"}
        return graph_from_features(record)

    start = time.perf_counter()
    graph = build()
    seconds = time.perf_counter() - start
    save_graph(graph, out)
    level = graph.level.numpy()
    return {
        "seconds": seconds,
        "nodes": graph.num_nodes,
        "edges": int(graph.edge_index.size(1)),
        "nodes_per_level": {
            name: int((level == lv).sum())
            for lv, name in enumerate(["thumbnail", *(f"{m:g}x" for m in tiles.magnifications)])
        },
        "feature_dim": int(graph.x.size(1)),
    }


def stage_train(graph_file: Path, model: str, repeats: int) -> dict:
    """One training step (forward, the model's loss, backward, Adam step), best of ``repeats``,
    as :func:`wsigraph.train.loop.train_epoch` runs it on a batch of this one slide."""
    from wsigraph.models import build_model
    from wsigraph.train.loop import feature_stats, prepare, training_loss

    graph = load_graph(graph_file)
    mean, std = feature_stats([graph], [0])
    batch = Batch.from_data_list(prepare([graph], np.array([0]), mean, std))
    table, row = MODELS[model]
    config = run_config(get_row(table, row), "esca", "typing")
    torch.manual_seed(0)
    net = build_model(model, graph.x.size(1), 2, **config).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-4, weight_decay=5e-4, foreach=True)

    def step():
        optimizer.zero_grad()
        training_loss(net, batch).backward()
        optimizer.step()

    times = best_time(step, repeats, torch.device("cpu"))
    return {
        "model": model,
        "row": f"{table} / {row}",
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
        "nodes": graph.num_nodes,
        "seconds": min(times),
        "seconds_all": times,
    }


def stage_cuda_probe() -> dict:
    """Whether CUDA is usable (asked in a child, so this process never initialises CUDA and
    its later forks stay safe)."""
    ok = torch.cuda.is_available()
    return {"cuda": ok, "name": torch.cuda.get_device_name(0) if ok else ""}


def same_patches_check(ours_file: Path, clam_file: Path, level: int = 1) -> float:
    """Largest feature difference between the methods on the patches both read at a pyramid
    level without resizing (5x: the slide's level 1), relative to the largest feature."""
    a, b = torch.load(ours_file, weights_only=True), torch.load(clam_file, weights_only=True)
    sel = a["level"] == level
    fa, fb = a["features"][sel], b["features"][sel]
    return float((fa - fb).abs().max() / fa.abs().max().clamp_min(1e-12)) if len(fa) else 0.0


# --- projection ----------------------------------------------------------------------------------


def project_tcga(
    tissue: dict, tiling: dict, graph: dict, features: dict, train: dict, settings: TilingSettings
) -> dict:
    """The full ``tcga`` run in hours, by the formula of the module docstring."""
    profile = get_profile("tcga")
    w, h = TCGA_SLIDE
    fraction, cells = {}, {}
    for m in settings.magnifications:
        side = profile.patch_size * 20 / m
        cells[f"{m:g}x"] = int(w // side) * int(h // side)
        fraction[f"{m:g}x"] = graph["nodes_per_level"][f"{m:g}x"] / tiling["grid_cells"][f"{m:g}x"]
    patches = 1 + sum(fraction[k] * cells[k] for k in cells)
    scale = patches / graph["nodes"]
    n = sum(TCGA_SLIDES.values())
    step = {"higt": train["higt"]["seconds"], "slide-mean-lr": 0.0}
    runs = implemented_runs(profile=profile)
    per_run = profile.repeats * profile.folds * profile.epochs
    training = sum(
        per_run * TCGA_SLIDES[d] * step.get(get_row(t, r).model, train["h2mil"]["seconds"])
        for t, r, d, _ in runs
    )
    hours = {
        "preprocessing": n * (tissue["seconds"] + tiling["seconds"]) / 3600,
        "features": n * patches / features["patches_per_s"] / 3600,
        "graphs": n * graph["seconds"] * scale / 3600,
        "training": training * scale / 3600,
    }
    return {
        "hours": hours,
        "total_hours": sum(hours.values()),
        "patches_per_slide": patches,
        "kept_fraction_of_grid": fraction,
        "grid_cells_per_slide": cells,
        "slides": TCGA_SLIDES,
        "runs": len(runs),
        "repeats_folds_epochs": [profile.repeats, profile.folds, profile.epochs],
        "node_scale": scale,
        "assumptions": [
            f"a TCGA slide is {w:,} x {h:,} px at 20x; {profile.patch_size} px patches at "
            f"{', '.join(f'{m:g}x' for m in settings.magnifications)} plus the thumbnail node",
            "its grid cells become graph nodes in the proportion measured on the benchmark slide "
            "(tissue mask, then H2-MIL's variance filter)",
            f"N = ESCA {TCGA_SLIDES['esca']} + KICA {TCGA_SLIDES['kica']} slides: cases of "
            "data/clinical's TCGA-CDR table passing the cohort rule (typing and staging known), "
            "one diagnostic slide per case; the papers used 135-161 and 275-371",
            f"per-patch feature cost = 1 / our patches/s with {features['encoder']} at "
            f"{features['patch_size']} px on {features['device']}; the tcga run's KimiaNet "
            "(512 px patches resized to 224, DenseNet-121) is assumed to cost the same",
            "graph build and training-step costs scale linearly with the number of nodes",
            "every slide of a dataset costs one training step per epoch (validation and test "
            "slides, forward only, counted as full steps: an upper bound); steps on batches of "
            f"{profile.train_batch_size} slides cost the sum of single-slide steps",
            "higt rows cost the measured HIGT step, slide-mean logistic regressions nothing, "
            "every other model (MIL baselines, graph ablations) the measured H2-MIL step",
            "tissue detection and tiling cost per slide what they cost on the benchmark slide",
            "measured on the machine of this record (CPU unless a CUDA section is present); "
            "evaluation, checkpointing and disk I/O are not counted",
        ],
    }


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=40_960, help="level-0 px")
    parser.add_argument("--height", type=int, default=30_720, help="level-0 px")
    parser.add_argument("--slide", type=Path, default=WORK / "slide.tif")
    parser.add_argument("--encoders", nargs="+", choices=ENCODERS, default=list(ENCODERS))
    parser.add_argument("--weights", type=Path, help="resnet50-trunc weights (else random)")
    parser.add_argument("--batch-size", type=int, default=get_profile("tcga").batch_size)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--max-patches", type=int, default=0, help="0: every patch")
    parser.add_argument("--repeats", type=int, default=3, help="training steps timed")
    parser.add_argument("--out-dir", type=Path, help="default results/benchmarks")
    args = parser.parse_args(argv)

    spec = slide_spec(args.width, args.height)
    slide = ensure_slide(args.slide, spec)
    print(
        f"slide {args.slide} ({args.width:,} x {args.height:,} px, "
        f"{args.slide.stat().st_size / 2**20:,.0f} MiB): "
        + (f"written in {slide['seconds']:.1f} s" if slide["written"] else "reused")
    )
    tcga = TilingSettings.from_profile(get_profile("tcga"))
    graph_encoder = "resnet50-trunc" if "resnet50-trunc" in args.encoders else args.encoders[0]
    shown = args.slide.resolve()  # relative to the checkout when inside it (no machine paths)
    shown = shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown
    results: list[dict] = [{"stage": "slide", **slide, "spec": spec, "path": str(shown)}]
    tiling: dict[str, dict] = {}
    cuda = run_stage(stage_cuda_probe)
    devices = ["cpu", "cuda"] if cuda["cuda"] else ["cpu"]
    with tempfile.TemporaryDirectory(dir=args.slide.parent) as tmp:
        tmp = Path(tmp)
        tissue = run_stage(stage_tissue, args.slide, tcga)
        results.append({"stage": "tissue", **tissue})
        features: dict[tuple[str, str, str], dict] = {}
        for encoder in args.encoders:
            settings = dataclasses.replace(tcga, patch_size=PATCH_SIZE[encoder])
            tiles = tmp / f"tiles_{encoder}.pt"
            t = run_stage(stage_tiling, args.slide, settings, args.max_patches, tiles)
            tiling[encoder] = t
            results.append({"stage": "tiling", "encoder": encoder, **t})
            for device in devices:
                for method in ("ours", "clam-style"):
                    f = run_stage(
                        stage_features, method, args.slide, tiles, encoder, args.weights, device,
                        args.batch_size, args.num_workers, tmp / f"{encoder}_{method}_{device}.pt",
                    )  # fmt: skip
                    features[encoder, method, device] = f
                    results.append({"stage": "features", **f})
        graph = run_stage(
            stage_graph, tmp / f"tiles_{graph_encoder}.pt", tmp / f"{graph_encoder}_ours_cpu.pt",
            tcga.rgb_var_threshold, tmp / "graph.pt",
        ) | {"encoder": graph_encoder}  # fmt: skip
        results.append({"stage": "graph", **graph})
        train = {
            model: run_stage(stage_train, tmp / "graph.pt", model, args.repeats) for model in MODELS
        }
        results += [{"stage": "train_step", **t} for t in train.values()]
        ratios = []
        for (encoder, method, device), ours in features.items():
            if method != "ours":
                continue
            clam = features[encoder, "clam-style", device]
            ratios.append(
                {
                    "encoder": encoder,
                    "device": device,
                    "patches_per_s_ours_over_clam": ours["patches_per_s"] / clam["patches_per_s"],
                    "peak_rss_ours_over_clam": ours["peak_rss_mib"] / clam["peak_rss_mib"],
                    "peak_tree_pss_ours_over_clam": ours["peak_tree_pss_mib"]
                    / clam["peak_tree_pss_mib"],
                    "same_patches_max_rel_diff_5x": same_patches_check(
                        tmp / f"{encoder}_ours_{device}.pt",
                        tmp / f"{encoder}_clam-style_{device}.pt",
                    ),
                }
            )
    projection = project_tcga(
        tissue, tiling[graph_encoder], graph, features[graph_encoder, "ours", "cpu"], train, tcga
    )

    _print_summary(results, ratios, projection)
    path = write_record(
        "wsi_throughput",
        "whole-slide throughput on a synthetic 20x JPEG slide: tissue, tiling, features (ours vs "
        "a CLAM-style read_region DataLoader), pyramid graph, H2-MIL and HIGT training steps",
        torch.device("cpu"),
        results,
        directory=args.out_dir,
        ratios=ratios,
        projection_tcga=projection,
        cuda_device=cuda["name"] or None,
        parameters={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        peak_memory_method=(
            "per stage, in its own fork-ed child: peak_rss_mib = the child's ru_maxrss; "
            "peak_worker_rss_mib = the largest DataLoader worker's ru_maxrss (RUSAGE_CHILDREN); "
            "peak_tree_pss_mib = largest sum of PSS over the child and its workers, psutil "
            "sampled every 50 ms"
        ),
    )
    print(f"wrote {path}")
    return path


def _print_summary(results: list[dict], ratios: list[dict], projection: dict) -> None:
    print(f"{'stage':<40}{'seconds':>10}{'patches/s':>11}{'peak RSS':>11}{'tree PSS':>11}")
    for r in results[1:]:
        name = r["stage"]
        if name == "features":
            name += f" {r['encoder']} {r['method']} {r['device']}"
        elif name in ("tiling", "graph"):
            name += f" {r.get('encoder', '')} ({r.get('patch_size', r.get('nodes'))})"
        elif name == "train_step":
            name += f" {r['model']} ({r['nodes']} nodes)"
        rate = f"{r['patches_per_s']:11.1f}" if "patches_per_s" in r else " " * 11
        print(
            f"{name:<40}{r['seconds']:10.3f}{rate}{r['peak_rss_mib']:8.0f} MiB"
            f"{r['peak_tree_pss_mib']:7.0f} MiB"
        )
    for r in ratios:
        print(
            f"ours / clam-style, {r['encoder']} on {r['device']}: "
            f"{r['patches_per_s_ours_over_clam']:.2f}x patches/s, peak RSS "
            f"{r['peak_rss_ours_over_clam']:.2f}x, tree PSS {r['peak_tree_pss_ours_over_clam']:.2f}x "
            f"(same 5x patches: max rel. feature diff {r['same_patches_max_rel_diff_5x']:.1e})"
        )
    hours = ", ".join(f"{k} {v:,.1f}" for k, v in projection["hours"].items())
    print(
        f"projected full tcga run: {projection['total_hours']:,.1f} h ({hours}); "
        f"{projection['patches_per_slide']:,.0f} patches per slide, {projection['runs']} runs"
    )
    print("assumptions:\n  - " + "\n  - ".join(projection["assumptions"]))


if __name__ == "__main__":
    main()
