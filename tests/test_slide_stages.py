"""Slide stages as one task per slide: executors agree byte for byte, a killed worker loses only
its slide, a bad slide is named while the others finish, and bad executor settings are refused
with a clear message (issue 23). Every cluster here is a LocalCluster on this machine."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from wsigraph.data.features import (
    FeatureStage,
    TilingSettings,
    extract_features,
    feature_task,
)
from wsigraph.graphs.build import build_graphs
from wsigraph.stages import (
    SlideProgress,
    plan_workers,
    resolve_devices,
    run_slide_stage,
    slide_jobs,
)
from wsigraph.train import executor as executor_module
from wsigraph.train.executor import TaskFailure, WorkerSetup, connect, run_each, worker_setup

SETTINGS = TilingSettings((5.0, 10.0), patch_size=64, thumbnail_side=256, rgb_var_threshold=20.0)
KW = dict(encoder="demo", batch_size=32, num_workers=0, progress=False)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, synthetic_slide):
    """Three small slides (two drawn anew) and a truncated one."""
    from conftest import small_spec

    from wsigraph.data.synthetic import render_slide, write_pyramid_tiff

    folder = tmp_path_factory.mktemp("cohort")
    paths = [str(synthetic_slide)]
    for seed in (11, 12):
        spec = small_spec(seed=seed, typing=seed % 2)
        path = folder / f"s{seed}.tif"
        write_pyramid_tiff(path, render_slide(spec), spec.base_mag, spec.mpp, min_side=128)
        paths.append(str(path))
    cut = folder / "cut.tif"
    cut.write_bytes(synthetic_slide.read_bytes()[:6000])
    return pd.DataFrame(
        {
            "slide_id": ["a", "b", "c", "cut"],
            "path": [*paths, str(cut)],
            "typing": [0, 1, 0, 1],
            "staging": [1, 0, 0, 1],
        }
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_serial_local_and_dask_write_identical_files_and_name_the_bad_slide(
    tmp_path, cohort, capfd
):
    made = {}
    for executor in ("serial", "local", "dask"):
        feats, graphs = tmp_path / executor / "features", tmp_path / executor / "graphs"
        run = dict(executor=executor, workers=None if executor == "serial" else 2)
        summary = extract_features(cohort, feats, SETTINGS, **KW, **run).set_index("slide_id")
        assert summary["status"].to_dict() == {
            "a": "done", "b": "done", "c": "done", "cut": "failed"
        }  # fmt: skip
        assert "cut.tif" in summary.loc["cut", "error"]
        err = capfd.readouterr().err
        assert "features: slide cut failed" in err
        if executor == "dask":
            assert "Dask dashboard: http://127.0.0.1:" in err
        stats = build_graphs(cohort, feats, graphs, progress=False, **run).set_index("slide_id")
        assert stats["status"].tolist() == ["done", "done", "done", "no features"]
        made[executor] = (_files(feats), _files(graphs))
        assert sorted(made[executor][0]) == ["a.pt", "b.pt", "c.pt"]  # no temporary files
    assert made["local"] == made["serial"]
    assert made["dask"] == made["serial"]
    again = extract_features(cohort, tmp_path / "local" / "features", SETTINGS, **KW,
                             executor="local", workers=2)  # fmt: skip
    assert again["status"].tolist() == ["skipped", "skipped", "skipped", "failed"]


# A worker killed mid-slide ---------------------------------------------------------------------
def _dies_while_saving(job, stage):
    """The feature task, except that slide ``stage.victim`` kills its own worker while its file
    is half written; with ``stage.once`` only on the first attempt (a marker file remembers)."""
    victim, once = stage.victim, stage.once
    marker = stage.out_dir / f"{victim}.attempted"
    if job.slide_id == victim and not (once and marker.exists()):
        marker.touch()
        real_save = torch.save

        def save_half_then_die(obj, f, *args, **kwargs):
            real_save(obj, f, *args, **kwargs)
            f.flush()
            f.truncate(f.tell() // 2)
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = save_half_then_die
    return feature_task(job, stage.inner)


class _Victim:
    def __init__(self, inner: FeatureStage, victim: str, once: bool):
        self.inner, self.victim, self.once, self.out_dir = inner, victim, once, inner.out_dir

    def target(self, job):
        return self.inner.target(job)


def _stage(out: Path) -> FeatureStage:
    out.mkdir(parents=True, exist_ok=True)
    return FeatureStage(out, SETTINGS, "demo", None, 32, 0, "cpu")


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "dask"])
def test_a_killed_worker_leaves_no_partial_file_and_the_rerun_completes(
    tmp_path, cohort, executor, capfd
):
    good = cohort[cohort["slide_id"] != "cut"]
    out = tmp_path / "features"
    stage = _Victim(_stage(out), victim="b", once=False)
    plan = plan_workers(executor, len(good), workers=2, device="cpu")
    rows = run_slide_stage(_dies_while_saving, slide_jobs(good), stage, plan, "features", False)
    status = {r["slide_id"]: r["status"] for r in rows}
    assert status == {"a": "done", "b": "failed", "c": "done"}
    error = next(r["error"] for r in rows if r["slide_id"] == "b")
    assert "worker process died 2 times" in error  # it was retried once
    assert "features: slide b failed: its worker process died 2 times" in capfd.readouterr().err
    left = sorted(p.name for p in out.iterdir() if p.suffix != ".attempted")
    assert left == ["a.pt", "c.pt"]  # neither b.pt nor its half-written temporary file
    rerun = extract_features(good, out, SETTINGS, **KW, executor=executor, workers=2)
    assert rerun["status"].tolist() == ["skipped", "done", "skipped"]


@pytest.mark.slow
def test_a_worker_that_dies_once_is_retried_alone_and_its_slide_finishes(tmp_path, cohort):
    good = cohort[cohort["slide_id"] != "cut"]
    stage = _Victim(_stage(tmp_path / "f"), victim="a", once=True)
    plan = plan_workers("local", len(good), workers=2, device="cpu")
    rows = run_slide_stage(_dies_while_saving, slide_jobs(good), stage, plan, "features", False)
    assert [r["status"] for r in rows] == ["done", "done", "done"]
    assert (tmp_path / "f" / "a.attempted").exists()  # it did die once


# Workers get their device and threads ----------------------------------------------------------
def _report_setup(job):
    return job, worker_setup(), torch.get_num_threads(), os.getpid()


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "dask"])
def test_each_worker_gets_its_own_setup(executor):
    setups = [WorkerSetup("cpu", threads=1), WorkerSetup("cpu", threads=2)]
    out = run_each(_report_setup, list(range(6)), executor, setups)
    assert [o[0] for o in out] == list(range(6))
    assert {(o[1], o[2]) for o in out} <= {(s, s.threads) for s in setups}
    assert all(o[3] != os.getpid() for o in out)


def _raises_on_two(job):
    if job == 2:
        raise RuntimeError("bad item")
    return job


def test_run_each_keeps_going_after_a_failure():
    out = run_each(_raises_on_two, [1, 2, 3], "serial")
    assert out[0] == 1 and out[2] == 3
    assert isinstance(out[1], TaskFailure) and out[1].error == "RuntimeError: bad item"
    assert out[1].job.startswith("job 1") and not out[1].worker_died


# Bad settings ----------------------------------------------------------------------------------
def test_an_unreachable_scheduler_is_named_within_seconds(cohort, tmp_path, monkeypatch):
    with socket.socket() as s:  # a port on which nothing listens
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=f"Dask scheduler at {address}"):
        connect(address, timeout=2)
    assert time.monotonic() - started < 10
    monkeypatch.setattr(executor_module, "SCHEDULER_TIMEOUT_S", 2)  # the stage's default, shortened
    with pytest.raises(ConnectionError, match=f"{address} within 2 s"):
        extract_features(cohort, tmp_path, SETTINGS, **KW, executor="dask", scheduler=address)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"Fake GPU {i}")


def test_devices_are_checked_against_the_visible_ones(two_gpus):
    assert resolve_devices("all") == ["cuda:0", "cuda:1"]
    assert resolve_devices("1") == resolve_devices([1]) == resolve_devices("cuda:1") == ["cuda:1"]
    with pytest.raises(ValueError, match=r"cuda:3 is not visible.*cuda:0 \(Fake GPU 0\), cuda:1"):
        resolve_devices("3")
    with pytest.raises(ValueError, match=r"cuda:2 is not visible"):
        resolve_devices("0,2")
    with pytest.raises(ValueError, match="'gpu' is not a device"):
        resolve_devices("gpu")
    with pytest.raises(ValueError, match="runs on one device"):
        plan_workers("serial", 10, devices="all")
    plan = plan_workers("dask", 10, devices="all", cores=16)
    assert [s.device for s in plan.setups] == ["cuda:0", "cuda:1"]
    assert plan.setups[0].threads == 4 and plan.loader_workers == 7


def test_without_a_gpu_devices_all_means_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_devices("all") == ["cpu"]
    with pytest.raises(ValueError, match=r"not visible; visible CUDA devices: none"):
        resolve_devices("0")


def test_cpu_workers_never_oversubscribe_the_cores():
    plan = plan_workers("local", 50, cores=2)
    assert len(plan.setups) == 2 and {s.threads for s in plan.setups} == {1}
    assert plan.loader_workers == 0
    one = plan_workers("dask", 50, workers=1, cores=2)
    assert len(one.setups) == 1 and one.setups[0].threads == 2
    assert len(plan_workers("local", 1, cores=8).setups) == 1  # never more workers than slides
    cluster = plan_workers("dask", 50, scheduler="tcp://x:1")  # its workers bring their devices
    assert cluster.device == "auto" and cluster.scheduler == "tcp://x:1"
    with pytest.raises(ValueError, match="is for -p executor dask"):
        plan_workers("local", 5, scheduler="tcp://x:1")
    with pytest.raises(ValueError, match="workers must be at least 1"):
        plan_workers("local", 5, workers=0)
    with pytest.raises(ValueError, match="unknown executor"):
        plan_workers("threads", 5)


def test_the_progress_line_counts_slides_and_estimates_the_time_left(monkeypatch):
    bar = SlideProgress(10, "features", disable=True)
    assert bar.text() == "0 done · 0 failed · 10 left"
    bar.started -= 120  # two minutes in
    for status in ("done", "done", "skipped", "failed"):
        bar.update(status)
    text = bar.text()
    assert text.startswith("3 done (1 skipped) · 1 failed · 6 left · 1.5 slides/min")
    assert text.endswith("~4 min left")


def test_run_all_refuses_a_device_that_is_not_there_before_running(two_gpus, capsys):
    from wsigraph import pipeline

    assert pipeline.main(["--only", "02", "-p", "devices", "3", "--check"]) == 2
    err = capsys.readouterr().err
    assert "-p devices 3: cuda:3 is not visible; visible CUDA devices: cuda:0 (Fake GPU 0)" in err
    assert pipeline.main(["--only", "02", "-p", "devices", "all", "--check"]) == 0


def test_a_stage_message_reaches_the_terminal_when_the_pipeline_runs_the_notebook(
    monkeypatch, capsys
):
    import io

    from wsigraph import progress, stages

    terminal = io.StringIO()
    monkeypatch.setattr(progress, "_terminal", terminal)
    monkeypatch.setenv("WSIGRAPH_PROGRESS", "terminal")
    stages.say("Dask dashboard: http://127.0.0.1:8787/status")
    assert "Dask dashboard" in terminal.getvalue()  # where the person running it looks
    assert "Dask dashboard" in capsys.readouterr().err  # and in the notebook
    monkeypatch.setenv("WSIGRAPH_PROGRESS", "auto")
    stages.say("features: slide x failed")
    assert "slide x" not in terminal.getvalue()


class _Writes:
    """A stage whose task writes ``<slide>.pt`` and says "skipped" whenever the file is there,
    as the feature and graph stages do (picklable: module level)."""

    def __init__(self, out: Path):
        self.out = out

    def target(self, job) -> Path:
        return self.out / f"{job.slide_id}.pt"


def _write_or_skip(job, stage):
    target = stage.target(job)
    if target.exists():
        return {"status": "skipped"}
    target.write_text("x")
    return {"status": "done"}


def _write_then_report_skipped(job, stage):
    """What a retry after a broken pool returns: this run wrote the file, the retry found it."""
    stage.target(job).write_text("x")
    return {"status": "skipped"}


def test_skipped_means_the_file_was_there_before_the_run(tmp_path, cohort):
    jobs = slide_jobs(cohort[cohort["slide_id"] != "cut"])
    (tmp_path / "a.pt").write_text("old")
    plan = plan_workers("serial", len(jobs))
    rows = run_slide_stage(_write_or_skip, jobs, _Writes(tmp_path), plan, "features", False)
    assert [r["status"] for r in rows] == ["skipped", "done", "done"]
    rows = run_slide_stage(_write_or_skip, jobs, _Writes(tmp_path), plan, "features", False)
    assert [r["status"] for r in rows] == ["skipped"] * 3
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    rows = run_slide_stage(_write_then_report_skipped, jobs, _Writes(fresh), plan, "f", False)
    assert [r["status"] for r in rows] == ["done"] * 3  # written by this run, whoever found it
