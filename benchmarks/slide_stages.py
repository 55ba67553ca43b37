"""Benchmark: the slide stages one task per slide -- ``serial`` against ``local`` and ``dask``.

**What is timed.** :func:`wsigraph.data.features.extract_features` (tissue mask, tiles, patch
features, one file per slide) and :func:`wsigraph.graphs.build.build_graphs` on two cohorts,
with each executor in turn, side by side in this process, each into a fresh folder:

* ``demo``: ``--demo-slides`` slides of the ``demo`` profile's cohort (1280 x 1024 px, 64 px
  patches, the ``demo`` filter-bank encoder), rendered once into
  ``work/benchmarks/slide_stages/demo``;
* ``large``: ``--large-slides`` synthetic 20x slides of ``--large-size`` px (the JPEG pyramid
  of ``benchmarks/wsi_throughput.py``, one seed each), tiled as the ``tcga`` profile tiles (5x
  and 10x) with 224 px patches and encoded by CLAM's truncated ResNet-50 (random weights unless
  ``--weights``; the same cost to run).

Executors: ``serial`` as notebook 02 runs it on the CPU (``demo``: one torch thread and the
profile's DataLoader reader process; ``large``: one torch thread per core and one reader), and
``local`` and ``dask`` (a LocalCluster) with ``--workers`` worker processes of
``cores // workers`` threads each (:func:`wsigraph.stages.plan_workers`). Slides per minute = slides / wall seconds
of the call, worker start-up included. ``local`` forks its workers from a fork server that has
imported torch once (:func:`wsigraph.train.executor.worker_context`, started by the first
``local`` call of this process, so that call pays the server's start); ``local (spawn)`` starts
each worker as a fresh interpreter (``WSIGRAPH_START_METHOD=spawn``), as ``local`` did before.

**Projection** of the ``tcga`` feature stage (stated as a projection, in the JSON with its
assumptions): one worker's seconds per patch on this device, from the ``large`` cohort's
``serial`` run, times the patches of a TCGA slide and the slides of the ``tcga`` cohort (both
from ``results/benchmarks/wsi_throughput.json`` when present: 1,317 patches, 536 slides),
divided by 1, 4 and 8 workers with one device each (linear scaling: each worker has its own
device and reads its own slides). Measured on the CPU, it is for workers as fast as one CPU
worker here; run it on a GPU machine (``--device cuda``) for the GPU hours.

Writes ``results/benchmarks/slide_stages.json``. Run:
``.venv/bin/python benchmarks/slide_stages.py`` (``--demo-slides 8 --large-slides 2`` for a
quick look).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from wsigraph.bench import write_record
from wsigraph.data.features import TilingSettings, extract_features
from wsigraph.data.synthetic import make_demo_cohort
from wsigraph.graphs.build import build_graphs
from wsigraph.io import save_torch
from wsigraph.profiles import REPO_ROOT, get_profile
from wsigraph.train.executor import START_METHOD_ENV, cpu_count

sys.path.insert(0, str(Path(__file__).resolve().parent))
import wsi_throughput  # noqa: E402  (its slide writer)

WORK = Path(os.environ.get("WSIGRAPH_WORK") or REPO_ROOT / "work") / "benchmarks" / "slide_stages"
LARGE_PATCH = 224
EXECUTORS = ("serial", "local (spawn)", "local", "dask")  # local (spawn): fresh interpreters


def demo_cohort(n: int):
    profile = get_profile("demo")
    manifest = make_demo_cohort(profile, WORK / "demo", progress=False)
    per = max(1, n // manifest["dataset"].nunique())  # both datasets, both classes
    return manifest.groupby("dataset", group_keys=False).head(per).reset_index(drop=True)


def large_cohort(n: int, width: int, height: int):
    import pandas as pd

    rows = []
    for seed in range(n):
        spec = wsi_throughput.slide_spec(width, height) | {"seed": seed}
        path = WORK / "large" / f"large-{seed}.tif"
        wsi_throughput.ensure_slide(path, spec)
        rows.append({"slide_id": f"large-{seed}", "path": str(path)})
    return pd.DataFrame(rows)


def random_resnet50_weights() -> Path:
    """A torchvision ResNet-50 state dict with random weights (seed 0): what the encoder costs
    to run does not depend on its weights, and nothing is downloaded."""
    import torchvision

    path = WORK / "resnet50-random-seed0.pth"
    if not path.exists():
        torch.manual_seed(0)
        save_torch(torchvision.models.resnet50().state_dict(), path)
    return path


def timed_stage(
    cohort, settings, encoder, weights, executor, workers, device, loader_workers, threads
) -> dict:
    out = WORK / "runs" / executor.replace(" ", "_").strip("()")
    shutil.rmtree(out, ignore_errors=True)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # serial: as notebook 02 sets them for the profile
    name = executor.split()[0]
    run = {} if name == "serial" else {"executor": name, "workers": workers}
    saved = os.environ.get(START_METHOD_ENV)
    if executor == "local (spawn)":
        os.environ[START_METHOD_ENV] = "spawn"
    try:
        t0 = time.perf_counter()
        summary = extract_features(
            cohort, out / "features", settings, encoder, weights, batch_size=64,
            num_workers=loader_workers, device=device, progress=False, **run,
        )  # fmt: skip
        t_features = time.perf_counter() - t0
        t0 = time.perf_counter()
        graphs = build_graphs(cohort, out / "features", out / "graphs", progress=False, **run)
        t_graphs = time.perf_counter() - t0
    finally:
        torch.set_num_threads(before)
        if saved is None:
            os.environ.pop(START_METHOD_ENV, None)
        else:
            os.environ[START_METHOD_ENV] = saved
    ok = summary["status"].eq("done")
    if not ok.all():
        raise RuntimeError(f"{executor}: slides failed:\n{summary[~ok].to_string()}")
    n = len(cohort)
    return {
        "executor": executor,
        "workers": 1 if name == "serial" else workers,
        "slides": n,
        "patches": int(summary["n_patches"].sum()),
        "features_seconds": t_features,
        "features_slides_per_min": 60 * n / t_features,
        "graphs_seconds": t_graphs,
        "graphs_slides_per_min": 60 * n / t_graphs,
        "graphs_done": int(graphs["status"].eq("done").sum()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo-slides", type=int, default=120)
    parser.add_argument("--large-slides", type=int, default=4)
    parser.add_argument("--large-size", type=int, nargs=2, default=(8192, 6144))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", type=Path, help="resnet50-trunc weights (default: random)")
    parser.add_argument("--out-dir", type=Path, help="default results/benchmarks")
    args = parser.parse_args(argv)

    demo = get_profile("demo")
    tcga = get_profile("tcga")
    cohorts = {
        "demo": (
            demo_cohort(args.demo_slides),
            TilingSettings.from_profile(demo),
            "demo",
            None,
            demo.num_workers,
            1,  # notebook 02 on demo: 64 px patches, a second thread mostly waits
        ),
        "large": (
            large_cohort(args.large_slides, *args.large_size),
            TilingSettings.from_profile(tcga.with_overrides(patch_size=LARGE_PATCH)),
            "resnet50-trunc",
            args.weights or random_resnet50_weights(),
            1,
            cpu_count(),  # notebook 02 off demo: torch's threads, one per core
        ),
    }
    results = []
    for name, (cohort, settings, encoder, weights, loader, threads) in cohorts.items():
        for executor in EXECUTORS:
            row = timed_stage(
                cohort, settings, encoder, weights, executor, args.workers, args.device, loader,
                threads,
            )  # fmt: skip
            results.append({"cohort": name, "encoder": encoder} | row)
            print(
                f"{name:5s} {executor:13s} features {row['features_slides_per_min']:7.1f} "
                f"slides/min ({row['features_seconds']:.1f} s)  graphs "
                f"{row['graphs_slides_per_min']:7.1f} slides/min",
                flush=True,
            )
    ratios = {}
    for name in cohorts:
        by = {r["executor"]: r for r in results if r["cohort"] == name}
        for ex in EXECUTORS[1:]:
            for stage in ("features", "graphs"):
                key = f"{name} {stage}: {ex} / serial slides per minute"
                ratios[key] = (
                    by[ex][f"{stage}_slides_per_min"] / by["serial"][f"{stage}_slides_per_min"]
                )
    large_serial = next(r for r in results if r["cohort"] == "large" and r["executor"] == "serial")
    s_per_patch = large_serial["features_seconds"] / large_serial["patches"]
    ref = REPO_ROOT / "results" / "benchmarks" / "wsi_throughput.json"
    patches, slides = 1317.0, 536
    if ref.exists():
        tcga_projection = json.loads(ref.read_text()).get("projection_tcga") or {}
        patches = tcga_projection.get("patches_per_slide", patches)
        slides = sum(tcga_projection.get("slides", {}).values()) or slides
    per_slide = s_per_patch * patches
    projection = {
        "seconds_per_patch_one_worker": s_per_patch,
        "patches_per_tcga_slide": patches,
        "tcga_slides": slides,
        "seconds_per_tcga_slide_one_worker": per_slide,
        "hours": {str(k): slides * per_slide / k / 3600 for k in (1, 4, 8)},
        "assumptions": [
            "a TCGA slide has the patches per slide of results/benchmarks/wsi_throughput.json's "
            "projection (512 px at 5x and 10x, tissue and variance filter as measured there)",
            f"each patch costs what a {LARGE_PATCH} px resnet50-trunc patch cost the serial run "
            f"here on {args.device} (one process with one torch thread per core: 'one worker' "
            "is this whole machine; tissue and tiling included, per patch)",
            "k workers with one device each finish k times faster (slides are independent; "
            "disk and network reads do not saturate)",
            "measured on the device of this record: on the CPU these are workers as fast as one "
            "CPU worker here, not GPUs; run the benchmark with --device cuda for GPU hours",
        ],
    }
    path = write_record(
        "slide_stages",
        "slides per minute of the feature and graph stages: serial vs local and dask workers",
        torch.device(args.device),
        results,
        directory=args.out_dir,
        ratios=ratios,
        projection_tcga_features=projection,
        parameters={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    )
    for key, value in ratios.items():
        print(f"{key}: {value:.2f}x")
    print(
        "projection (tcga features, "
        + ", ".join(f"{k} worker(s): {h:.1f} h" for k, h in projection["hours"].items())
        + f") -> {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
