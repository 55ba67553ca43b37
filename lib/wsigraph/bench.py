"""Measurement helpers for ``benchmarks/``: wall time and peak tensor memory, CPU or CUDA."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

import torch


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what ``platform`` reports."""
    import platform

    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Provenance every benchmark record carries: versions, machine and date."""
    import datetime
    import os
    import platform
    import sys

    import numpy as np
    import torch_geometric

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": cpu_name(),
        "cpu_count": os.cpu_count(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU: {cpu_name()}"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(
    fn: Callable[[], object], repeats: int, device: torch.device, warmup: int = 1
) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def _walk(events) -> Iterator:
    for event in events:
        yield event
        yield from _walk(event.children)


def peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Most bytes held by torch tensors while ``fn`` runs, above those held before.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the largest running total of the CPU
    allocator seen in the profiler's allocation events (``profile_memory=True``).
    """
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with (
        _native_stderr_dropped(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        fn()
    tree = prof.profiler.kineto_results.experimental_event_tree()
    events = [
        e.extra_fields
        for e in _walk(tree)
        if e.tag == _EventType.Allocation and e.extra_fields.device.type == "cpu"
    ]
    if not events:
        return 0
    events.sort(key=lambda f: f.start_time_ns if hasattr(f, "start_time_ns") else 0)
    before = events[0].total_allocated - events[0].alloc_size  # held before fn's first allocation
    return max(f.total_allocated for f in events) - before


@contextlib.contextmanager
def _native_stderr_dropped():
    """Drop what native code writes to file descriptor 2 meanwhile: the profiler's C++ start and
    stop lines ("USDT ... profiler_start", "gpuGetDeviceCount failed") would otherwise land in
    executed notebooks and on the terminal. Python's own warnings are not affected."""
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 to redirect
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def model_megabytes(model: torch.nn.Module) -> float:
    """Size of the model's parameters and buffers in MB (2**20 bytes), as stored."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def training_step_cost(model: torch.nn.Module, batch, device: torch.device) -> dict:
    """Peak memory of one training step (forward, the model's training loss, backward) of
    ``model`` on ``batch`` (a PyG batch with ``y``), and the model's size: HIGT Fig. 2's two
    axes. The step runs once untimed first so lazily built state does not count.

    Returns ``{"peak_bytes", "peak_kind", "model_mb", "parameters"}``; ``peak_kind`` is
    ``"cuda_max_allocated"`` on CUDA and ``"cpu_profiler_allocated"`` (tensor allocations seen
    by the profiler) on CPU.
    """
    from wsigraph.train.loop import training_loss

    model, batch = model.to(device).train(), batch.to(device)

    def step():
        model.zero_grad(set_to_none=True)
        training_loss(model, batch).backward()

    step()
    model.zero_grad(set_to_none=True)
    peak = peak_bytes(step, device)
    return {
        "peak_bytes": int(peak),
        "peak_kind": "cuda_max_allocated" if device.type == "cuda" else "cpu_profiler_allocated",
        "model_mb": model_megabytes(model),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def write_record(
    benchmark: str, what: str, device: torch.device, results: list, directory=None, **extra
):
    """Write ``results/benchmarks/<benchmark>.json`` (``<benchmark>_cuda.json`` on CUDA) with
    what every benchmark record carries: the device, threads, how peak memory was measured and
    :func:`environment`. Returns the path."""
    import json
    from pathlib import Path

    from wsigraph.io import write_text
    from wsigraph.profiles import REPO_ROOT

    record = {
        "benchmark": benchmark,
        "what": what,
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "peak_memory_method": "torch.cuda.max_memory_allocated"
        if device.type == "cuda"
        else "torch.profiler allocation events (bytes held by CPU tensors)",
        "results": results,
        **extra,
        **environment(),
    }
    name = f"{benchmark}_cuda.json" if device.type == "cuda" else f"{benchmark}.json"
    path = Path(directory or REPO_ROOT / "results" / "benchmarks") / name
    write_text(path, json.dumps(record, indent=2) + "\n")
    return path
