"""benchmarks/wsi_throughput.py end to end on a tiny slide: demo encoder, a few patches."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import openslide
import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "wsi_throughput.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("wsi_throughput", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_wsi_throughput_tiny(tmp_path):
    bench = _benchmark()
    slide = tmp_path / "slide.tif"
    argv = ["--width", "2048", "--height", "1536", "--slide", str(slide), "--encoders", "demo"]
    argv += ["--max-patches", "48", "--batch-size", "16", "--repeats", "1"]
    # A fresh interpreter, as the benchmark is run: it forks one process per stage, and a fork
    # of this test process (whose torch thread pools the suite has started) can deadlock.
    run = subprocess.run(
        [sys.executable, str(BENCHMARK), *argv, "--out-dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    record = json.loads((tmp_path / "out" / "wsi_throughput.json").read_text())

    # the slide: an Aperio-style 20x JPEG pyramid reduced by 4, reused when the spec matches
    with openslide.OpenSlide(slide) as osr:
        assert osr.properties["openslide.vendor"] == "aperio"
        assert osr.properties["openslide.objective-power"] == "20"
        assert osr.level_dimensions[:2] == ((2048, 1536), (512, 384))
    assert bench.ensure_slide(slide, bench.slide_spec(2048, 1536))["written"] is False

    results = record["results"]
    assert {r["stage"] for r in results} == {
        "slide", "tissue", "tiling", "features", "graph", "train_step",
    }  # fmt: skip
    for r in results[1:]:
        assert r["seconds"] > 0 and r["peak_rss_mib"] > 0 and r["peak_tree_pss_mib"] > 0, r
    features = {
        r["method"]: r for r in results if r["stage"] == "features" and r["device"] == "cpu"
    }
    assert set(features) == {"ours", "clam-style"}
    assert features["ours"]["patches"] == features["clam-style"]["patches"] >= 48
    assert all(r["patches_per_s"] > 0 and r["encoder"] == "demo" for r in features.values())
    assert {r["model"] for r in results if r["stage"] == "train_step"} == {"h2mil", "higt"}

    (ratio,) = [r for r in record["ratios"] if r["device"] == "cpu"]
    assert ratio["encoder"] == "demo"
    assert ratio["patches_per_s_ours_over_clam"] > 0 and ratio["peak_tree_pss_ours_over_clam"] > 0
    assert ratio["same_patches_max_rel_diff_5x"] < 1e-5  # same patches, same pixels at 5x

    projection = record["projection_tcga"]
    assert projection["total_hours"] > 0
    assert set(projection["hours"]) == {"preprocessing", "features", "graphs", "training"}
    assert projection["slides"] == {"esca": 162, "kica": 374} and projection["assumptions"]
