"""Slide stages (tissue + tiles + features, graphs) as one task per slide, on any executor.

A slide stage is a function of one slide that writes one file, atomically, and skips a slide
whose file is already there and sound. :func:`run_slide_stage` runs such a task for every slide
of a cohort on the executors of the CV grid (:func:`wsigraph.train.executor.run_each`):

``serial``
    one slide after another in this process (notebooks, debugging, one GPU);
``local``
    worker processes on this machine (forked from a fork server that imported torch
    once, :func:`wsigraph.train.executor.worker_context`);
``dask``
    a ``LocalCluster`` that the stage starts, or an existing cluster (``scheduler``, e.g. a
    ``dask-jobqueue`` ``SLURMCluster``): the work folder must then be on a filesystem every
    worker sees.

A task that raises, or a slide that cannot be read, fails that slide alone: it is named on the
terminal and in the returned rows, and the others go on. A worker process that dies (killed,
pre-empted, out of memory) loses only the slide it was writing (the file is written under a
temporary name and renamed when complete); that slide is retried once, alone, then reported by
name. Reruns skip the finished slides, so an interrupted stage resumes where it stopped.

:func:`plan_workers` chooses the workers: one per GPU with ``devices="all"`` (or a list), each
with its own encoder; on the CPU, as many single-threaded workers as cores (or ``workers``, each
then getting ``cores // workers`` threads), so that a 2-core laptop is never oversubscribed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from wsigraph.progress import mode as progress_mode
from wsigraph.progress import progress_bar, terminal_stream
from wsigraph.train.executor import EXECUTORS, TaskFailure, WorkerSetup, cpu_count, run_each


@dataclass(frozen=True)
class SlideJob:
    """One slide of a stage: its id, file and the cohort's metadata for it."""

    slide_id: str
    path: str
    objective_power: float | None = None
    mpp: float | None = None
    labels: tuple[tuple[str, int], ...] = ()

    @property
    def name(self) -> str:
        return self.slide_id


@dataclass(frozen=True)
class WorkerPlan:
    """How a stage runs: the executor, one :class:`WorkerSetup` per worker, the patch-reading
    processes each worker's ``DataLoader`` gets, and the Dask scheduler, if any."""

    executor: str
    setups: tuple[WorkerSetup, ...]
    loader_workers: int
    scheduler: str | None = None

    @property
    def device(self) -> str:
        """The device of the first worker (the only one when ``serial``); ``"auto"`` on an
        external Dask cluster, where each worker takes its own CUDA device when it has one."""
        return self.setups[0].device or "auto"

    def describe(self) -> str:
        if self.executor == "dask" and self.scheduler:
            return f"the Dask cluster at {self.scheduler}"
        if self.executor == "serial":
            return f"this process, on {self.device}"
        where = "a Dask LocalCluster" if self.executor == "dask" else "local processes"
        devices = sorted({s.device or "cpu" for s in self.setups})
        threads = self.setups[0].threads
        each = f", {threads} thread{'s' * (threads != 1)} each" if threads else ""
        return f"{len(self.setups)} workers ({where}) on {', '.join(devices)}{each}"


def local_device(device: str) -> str:
    """``device`` with ``"auto"`` resolved in this process: CUDA when present, else the CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def visible_devices() -> list[str]:
    """The CUDA devices this process sees, as ``"cuda:i (name)"``; empty without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]


def resolve_devices(devices: Any = None, device: str = "auto") -> list[str]:
    """The torch devices a stage's workers run on.

    Args:
        devices: ``None`` (one worker device: ``device``), ``"all"`` (every visible CUDA device,
            else the CPU), ``"cpu"``, or CUDA indices: ``3``, ``"0,1"``, ``"cuda:0,cuda:2"``,
            ``[0, 1]``.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:i"``.

    Raises:
        ValueError: a device that is not visible; the message lists the visible ones.
    """
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if devices is None:
        if device == "auto":
            return ["cuda:0" if n else "cpu"]
        return [device if device != "cuda" else "cuda:0"]
    if isinstance(devices, str) and devices.strip().lower() in ("all", "cpu"):
        if devices.strip().lower() == "cpu" or n == 0:
            return ["cpu"]
        return [f"cuda:{i}" for i in range(n)]
    items = devices if isinstance(devices, list | tuple) else str(devices).split(",")
    wanted = []
    for item in items:
        text = str(item).strip().lower().removeprefix("cuda:")
        if not text.isdigit():
            raise ValueError(
                f"devices {devices!r}: {item!r} is not a device; use 'all', 'cpu' or CUDA "
                "indices such as '0,1'"
            )
        wanted.append(int(text))
    missing = [i for i in wanted if i >= n]
    if missing:
        seen = ", ".join(visible_devices()) or "none (no CUDA device)"
        raise ValueError(
            f"devices {devices!r}: cuda:{missing[0]} is not visible; visible CUDA devices: {seen}"
        )
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"devices {devices!r}: a device is named twice")
    return [f"cuda:{i}" for i in wanted]


def plan_workers(
    executor: str = "serial",
    n_slides: int | None = None,
    workers: int | None = None,
    devices: Any = None,
    device: str = "auto",
    loader_workers: int = 0,
    scheduler: str | None = None,
    cores: int | None = None,
) -> WorkerPlan:
    """Workers, devices and threads for a slide stage (see the module docstring).

    Args:
        executor: ``"serial"``, ``"local"`` or ``"dask"``.
        n_slides: slides to run (caps the number of CPU workers).
        workers: CPU workers of ``local`` / a ``LocalCluster`` (default: the cores). With GPUs
            there is one worker per device.
        devices, device: see :func:`resolve_devices`.
        loader_workers: patch-reading processes of a ``serial`` run (the profile's
            ``num_workers``); a CPU worker of ``local``/``dask`` reads its own patches, a GPU
            worker gets the cores left over.
        scheduler: a Dask scheduler address (``dask`` only).
        cores: the CPU cores to share (default: those this process may use).

    Raises:
        ValueError: an unknown executor, a scheduler without ``dask``, ``serial`` over several
            devices, a bad ``workers`` or a device that is not visible.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if scheduler and executor != "dask":
        raise ValueError(f"scheduler {scheduler!r} is for -p executor dask, not {executor!r}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if executor == "dask" and scheduler:  # the cluster's workers bring their own devices
        return WorkerPlan("dask", (WorkerSetup(),), loader_workers, scheduler)
    devs = resolve_devices(devices, device)
    cores = cores or cpu_count()
    gpu = devs[0].startswith("cuda")
    if executor == "serial":
        if len(devs) > 1:
            raise ValueError(
                f"executor 'serial' runs on one device, not {', '.join(devs)}; use -p executor "
                "local (or dask) to spread the slides over them"
            )
        return WorkerPlan("serial", (WorkerSetup(devs[0]),), loader_workers)
    if gpu:
        per = max(1, cores // len(devs))
        setups = tuple(WorkerSetup(d, threads=max(1, per // 2)) for d in devs)
        return WorkerPlan(executor, setups, max(0, per - 1), scheduler)
    n = max(1, min(workers or cores, n_slides or cores))
    setups = (WorkerSetup("cpu", threads=max(1, cores // n)),) * n
    return WorkerPlan(executor, setups, 0, scheduler)


class SlideProgress:
    """A terminal bar for a slide stage: slides done / failed / left, slides per minute and the
    time left, from the slides actually processed (skipped ones cost nothing)."""

    FORMAT = "{desc}: {n_fmt}/{total_fmt} slides |{bar}| {elapsed}{postfix}"  # ", 3 done · ..."

    def __init__(self, total: int, desc: str, disable: bool = False):
        self.total, self.started = total, time.monotonic()
        self.counts = {"done": 0, "skipped": 0, "failed": 0}
        self.bar = progress_bar(total=total, desc=desc, bar_format=self.FORMAT, disable=disable)
        self.bar.set_postfix_str(self.text(), refresh=False)

    def update(self, status: str) -> None:
        key = status if status in self.counts else "failed"
        self.counts[key] += 1
        self.bar.set_postfix_str(self.text(), refresh=False)
        self.bar.update()

    def text(self) -> str:
        c = self.counts
        finished = c["done"] + c["skipped"]
        left = self.total - finished - c["failed"]
        worked = c["done"] + c["failed"]
        minutes = (time.monotonic() - self.started) / 60
        parts = [
            f"{finished} done" + (f" ({c['skipped']} skipped)" if c["skipped"] else ""),
            f"{c['failed']} failed",
            f"{left} left",
        ]
        if worked and minutes > 0:
            rate = worked / minutes
            parts.append(f"{rate:.1f} slides/min")
            if left:
                parts.append(f"~{_duration(left / rate * 60)} left")
        return " · ".join(parts)

    def close(self) -> None:
        self.bar.close()


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def say(message: str) -> None:
    """One line on stderr, outside the progress bars; when the pipeline runs the notebook
    (``WSIGRAPH_PROGRESS=terminal``), on its terminal too, where the person running it looks."""
    tqdm.write(message, file=sys.stderr)
    if progress_mode() == "terminal":
        tqdm.write(message, file=terminal_stream())


def remove_stale_tmp(target: Path) -> None:
    """Delete the temporary files a killed writer of ``target`` left beside it
    (:func:`wsigraph.io.atomic_path` names them ``.<name>.<random>.tmp``). Only the task of
    ``target``'s slide writes them, so no live writer is disturbed."""
    for tmp in target.parent.glob(f".{target.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def run_slide_stage(
    task: Callable,
    jobs: Sequence[SlideJob],
    stage: Any,
    plan: WorkerPlan,
    name: str,
    progress: bool = True,
) -> list[dict]:
    """Run ``task(job, stage)`` for every slide on ``plan``'s executor.

    ``task`` returns the slide's summary row (``status`` ``done``, ``skipped`` or ``failed``,
    ``error``, ``note``); ``stage`` (picklable, sent once per worker) has ``target(job)``, the
    file the task writes. A task that raises, or whose worker died twice, becomes a ``failed``
    row naming the error, and its temporary files are removed.

    Returns:
        One row per job, in job order, each with ``slide_id`` first.
    """
    bar = SlideProgress(len(jobs), name, disable=not progress)
    rows: list[dict] = [{} for _ in jobs]
    # "skipped" means: the slide's file was there before this run. A worker that dies breaks its
    # pool, and a slide another worker had just finished is then run again (its result was lost
    # with the pool); that retry finds the file this run wrote, and the row says "done".
    existed = [Path(stage.target(job)).exists() for job in jobs]

    def on_result(i: int, result: Any) -> None:
        if isinstance(result, TaskFailure):
            remove_stale_tmp(stage.target(jobs[i]))
            result = {"status": "failed", "error": result.error}
        elif result.get("status") == "skipped" and not existed[i]:
            result = result | {"status": "done"}
        rows[i] = {"slide_id": jobs[i].slide_id} | result
        if result.get("note"):
            say(f"{name}: {result['note']}")
        if result["status"] == "failed":
            say(f"{name}: slide {jobs[i].slide_id} failed: {result.get('error', '')}")
        elif result.get("error"):  # e.g. no input from the stage before
            say(f"{name}: slide {jobs[i].slide_id} skipped: {result['error']}")
        bar.update(result["status"])

    if progress and plan.executor != "serial":
        say(f"{name}: {len(jobs)} slides on {plan.describe()}")
    try:
        run_each(
            task,
            jobs,
            plan.executor,
            plan.setups,
            plan.scheduler,
            shared=stage,
            on_result=on_result,
            announce=say,  # the Dask dashboard address, also without bars
        )
    finally:
        bar.close()
    return rows


def slide_jobs(manifest, label_columns: Sequence[str] = ()) -> list[SlideJob]:
    """One :class:`SlideJob` per manifest row (column ``slide_id``; optional ``path``,
    ``objective_power``, ``mpp`` and the ``label_columns``, ``-1`` where missing)."""
    import pandas as pd

    def value(row, column):
        v = row.get(column)
        return None if v is None or pd.isna(v) else float(v)

    jobs = []
    for _, row in manifest.iterrows():
        labels = tuple(
            (c, -1 if pd.isna(row.get(c)) else int(row[c])) for c in label_columns if c in row
        )
        jobs.append(
            SlideJob(
                str(row["slide_id"]),
                str(row.get("path", "")),
                value(row, "objective_power"),
                value(row, "mpp"),
                labels,
            )
        )
    return jobs
