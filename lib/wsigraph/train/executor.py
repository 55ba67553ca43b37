"""Run independent jobs (the folds of a CV grid) serially, in local processes, or on Dask.

:func:`run_folds` calls ``fn(job)`` -- or ``fn(job, shared)`` when ``shared`` is given -- for
every job and returns the results in job order, whichever executor ran them:

``"serial"``
    A plain loop in this process (debugging, GPUs, notebooks).
``"local"``
    ``concurrent.futures.ProcessPoolExecutor`` with the ``"spawn"`` start method; ``workers``
    processes (default: the CPU cores this process may use), each limited to one torch thread
    so that ``workers`` folds share the cores instead of oversubscribing them.
``"dask"``
    ``distributed.Client(scheduler)`` when a scheduler address (or a ``Client``) is given;
    otherwise a ``LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)`` that
    this function starts and closes.

``fn`` must be a module-level (picklable) function and jobs and results picklable plain data.
``shared`` (e.g. the graphs of a cohort) is sent to each worker once, not with every job: to
local processes as one pickled payload at start-up, to Dask workers by ``Client.scatter``.
The first failing job stops the run (pending jobs are cancelled) with a ``RuntimeError``
naming the job; results already handed to ``on_result`` are kept, so a resumable caller
loses nothing that finished.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import pickle
from collections.abc import Callable, Sequence
from typing import Any

from wsigraph.progress import progress_bar

EXECUTORS = ("local", "serial", "dask")

_NO_SHARED = object()
_SHARED: Any = _NO_SHARED  # a local worker's copy of ``shared``


def cpu_count() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def job_name(job: Any, index: int) -> str:
    """``job.name`` if it has one, else a short ``repr``; prefixed with the job's position."""
    name = getattr(job, "name", None) or repr(job)
    return f"job {index} ({name[:200]})"


def _init_local_worker(payload: bytes | None) -> None:
    import torch

    torch.set_num_threads(1)
    global _SHARED
    if payload is not None:
        _SHARED = pickle.loads(payload)


def _call_local(fn: Callable, job: Any) -> Any:
    return fn(job) if _SHARED is _NO_SHARED else fn(job, _SHARED)


def _call_dask(fn: Callable, job: Any, *shared: Any) -> Any:
    import torch

    torch.set_num_threads(1)
    return fn(job, *shared)


def run_folds(
    fn: Callable,
    jobs: Sequence[Any],
    executor: str = "local",
    workers: int | None = None,
    scheduler: Any = None,
    *,
    shared: Any = _NO_SHARED,
    on_result: Callable[[int, Any], None] | None = None,
    progress: bool = True,
    desc: str = "folds",
) -> list:
    """Run ``fn`` on every job; results in job order.

    Args:
        fn: module-level function ``fn(job)``, or ``fn(job, shared)`` when ``shared`` is given.
        jobs: picklable jobs.
        executor: ``"local"`` (default), ``"serial"`` or ``"dask"``.
        workers: processes (local) or Dask workers of a ``LocalCluster``; default: CPU cores,
            capped by the number of jobs. Ignored by ``"serial"`` and a given ``scheduler``.
        scheduler: Dask scheduler address (``"tcp://host:8786"``) or a ``distributed.Client``;
            ``None`` starts a ``LocalCluster``. Only for ``"dask"``.
        shared: data every call needs, sent once per worker (default: none).
        on_result: called as ``on_result(index, result)`` in this process as each job
            finishes (e.g. to save it at once).
        progress: show a tqdm bar over completed jobs (default ``True``).
        desc: the bar's label.

    Raises:
        ValueError: unknown executor.
        RuntimeError: a job failed; the message names it and the original error is chained.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    jobs = list(jobs)
    if not jobs:
        return []
    n_workers = max(1, min(workers or cpu_count(), len(jobs)))
    results: list = [None] * len(jobs)
    bar = progress_bar(total=len(jobs), desc=desc, unit="job", disable=not progress)

    def done(index: int, result: Any) -> None:
        results[index] = result
        if on_result is not None:
            on_result(index, result)
        bar.update()

    def failed(index: int, err: BaseException) -> RuntimeError:
        msg = f"{job_name(jobs[index], index)} failed: {type(err).__name__}: {err}"
        return RuntimeError(msg)

    try:
        if executor == "serial":
            extra = () if shared is _NO_SHARED else (shared,)
            for i, job in enumerate(jobs):
                try:
                    result = fn(job, *extra)
                except Exception as err:
                    raise failed(i, err) from err
                done(i, result)
        elif executor == "local":
            _run_local(fn, jobs, n_workers, shared, done, failed)
        else:
            _run_dask(fn, jobs, n_workers, scheduler, shared, done, failed)
    finally:
        bar.close()
    return results


def _run_local(fn, jobs, n_workers, shared, done, failed) -> None:
    payload = None if shared is _NO_SHARED else pickle.dumps(shared, pickle.HIGHEST_PROTOCOL)
    pool = cf.ProcessPoolExecutor(
        max_workers=n_workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_local_worker,
        initargs=(payload,),
    )
    with pool:
        futures = {pool.submit(_call_local, fn, job): i for i, job in enumerate(jobs)}
        for future in cf.as_completed(futures):
            i = futures[future]
            try:
                result = future.result()
            except Exception as err:
                pool.shutdown(wait=True, cancel_futures=True)
                raise failed(i, err) from err
            done(i, result)


def _run_dask(fn, jobs, n_workers, scheduler, shared, done, failed) -> None:
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if isinstance(scheduler, Client):
        client, own_client = scheduler, False
    elif scheduler is not None:
        client, own_client = Client(scheduler), True
    else:
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
        client, own_client = Client(cluster), True
    try:
        extra = ()
        if shared is not _NO_SHARED:
            # A one-element list: scattering the list itself would scatter each element.
            extra = (client.scatter([shared], broadcast=True, hash=False)[0],)
        futures = [
            client.submit(
                _call_dask, fn, job, *extra, pure=False, key=f"job-{i}-{os.urandom(4).hex()}"
            )
            for i, job in enumerate(jobs)
        ]
        index = {f.key: i for i, f in enumerate(futures)}
        for future in as_completed(futures):
            i = index[future.key]
            try:
                result = future.result()
            except Exception as err:
                client.cancel(futures)
                raise failed(i, err) from err
            done(i, result)
    finally:
        if own_client:
            client.close()
        if cluster is not None:
            cluster.close()
