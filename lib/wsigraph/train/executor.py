"""Run independent jobs (the folds of a CV grid) serially, in local processes, or on Dask.

:func:`run_folds` calls ``fn(job)`` -- or ``fn(job, shared)`` when ``shared`` is given -- for
every job and returns the results in job order, whichever executor ran them:

``"serial"``
    A plain loop in this process (debugging, GPUs, notebooks).
``"local"``
    ``concurrent.futures.ProcessPoolExecutor`` (start method below); ``workers`` processes
    (default: the CPU cores this process may use), each limited to one torch thread so that
    ``workers`` folds share the cores instead of oversubscribing them.
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

:func:`run_each` is the same for jobs that must not stop one another (the slides of a slide
stage): a job that raises comes back as a :class:`TaskFailure`, and a job whose worker process
dies (killed, out of memory) is retried once, alone, before it is reported. Each worker gets a
:class:`WorkerSetup` (its torch device and threads), so that one worker per GPU, or a few
single-threaded workers on a small CPU, share the machine without oversubscribing it.

Start method (:func:`worker_context`)
    Local workers are forked from a *fork server* that has imported torch, PyTorch Geometric and
    the library once (:data:`PRELOAD`), so a worker starts in milliseconds instead of paying
    those imports (3-5 CPU-seconds) again. Each worker first takes on the environment
    variables, working directory and ``sys.path`` its parent had when the pool was made, as a
    spawned worker would. ``WSIGRAPH_START_METHOD=spawn`` (or a platform without a fork
    server) starts every worker as a fresh interpreter instead. The fork server never touches
    CUDA, so workers that use a GPU initialise it themselves.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
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


# Imported once by the fork server of local workers (worker_context); a module missing here is
# skipped by the server and imported by the worker that needs it.
PRELOAD = ("torch", "torch_geometric", "sklearn.metrics", "wsigraph.train.run", "wsigraph.models")
START_METHOD_ENV = "WSIGRAPH_START_METHOD"


def worker_context() -> multiprocessing.context.BaseContext:
    """The multiprocessing context of local workers: a fork server with :data:`PRELOAD`
    imported (default where the platform has one), or ``"spawn"`` when
    ``WSIGRAPH_START_METHOD=spawn``. Pair it with :func:`parent_state` and
    :func:`_prepare_worker` so a worker sees what a spawned one would."""
    method = os.environ.get(START_METHOD_ENV, "forkserver").strip().lower() or "forkserver"
    if method not in ("forkserver", "spawn"):
        raise ValueError(f"{START_METHOD_ENV} must be forkserver or spawn, got {method!r}")
    if method == "forkserver" and "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(PRELOAD))  # used when the server starts
        return context
    return multiprocessing.get_context("spawn")


def parent_state() -> tuple[dict, str, list]:
    """This process's environment variables, working directory and ``sys.path``, for
    :func:`_prepare_worker` (a forked worker would otherwise keep the fork server's)."""
    import sys

    return dict(os.environ), os.getcwd(), list(sys.path)


def local_pool(workers: int, init: Callable, *args: Any, context=None) -> cf.ProcessPoolExecutor:
    """A pool of ``workers`` local processes from :func:`worker_context` (or ``context``), each
    taking on this process's state (:func:`parent_state`) and then running ``init(*args)``. Every
    local pool is made here, so none forgets the parent's state."""
    return cf.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context or worker_context(),
        initializer=_prepare_worker,
        initargs=(parent_state(), init, *args),
    )


def _prepare_worker(state: tuple[dict, str, list], init: Callable, *args: Any) -> None:
    """A worker's initializer: take on the parent's ``state``, then run ``init(*args)``."""
    import sys

    environ, cwd, path = state
    os.environ.clear()
    os.environ.update(environ)
    os.chdir(cwd)
    sys.path[:] = path
    init(*args)


def _init_local_worker(payload: bytes | None) -> None:
    import torch

    torch.set_num_threads(1)
    global _SHARED
    if payload is not None:
        _SHARED = pickle.loads(payload)


def _call_local(fn: Callable, job: Any) -> Any:
    return fn(job) if _SHARED is _NO_SHARED else fn(job, _SHARED)


# A FoldPool worker's copies of the ``shared`` of several run_folds calls, by the file each call
# wrote it to; the newest few only, so that a long-lived pool does not keep every cohort it saw.
_SHARED_BY_FILE: dict[str, Any] = {}
_SHARED_KEEP = 4


def _call_pooled(fn: Callable, job: Any, shared_file: str | None) -> Any:
    if shared_file is None:
        return fn(job)
    if shared_file not in _SHARED_BY_FILE:
        while len(_SHARED_BY_FILE) >= _SHARED_KEEP:
            _SHARED_BY_FILE.pop(next(iter(_SHARED_BY_FILE)))
        with open(shared_file, "rb") as f:
            _SHARED_BY_FILE[shared_file] = pickle.load(f)
    return fn(job, _SHARED_BY_FILE[shared_file])


def _close_pool(pool: cf.Executor, folder: Path) -> None:
    import shutil

    pool.shutdown(wait=True, cancel_futures=True)
    shutil.rmtree(folder, ignore_errors=True)


class FoldPool:
    """Local worker processes that several :func:`run_folds` calls share (``executor=pool``),
    also from several threads at once (:func:`wsigraph.train.run.run_experiments`).

    A pool per call pays the workers' start-up each time and leaves workers idle while the
    call's last folds finish; one pool for many calls keeps every worker busy until all their
    folds are done. Each call pickles its ``shared`` once, into a file of the pool's temporary
    folder (removed when the call ends), and its jobs carry only that file's name: a worker
    reads it once per call (and keeps the newest four), so a large cohort crosses no pipe. The
    workers run one torch thread each, as ``"local"``'s do, so a fold's result does not depend
    on which executor ran it.

    Use it as a context manager: ``with FoldPool(2) as pool: run_folds(fn, jobs, pool, ...)``.
    A notebook, whose pool spans cells, calls :meth:`close` at the end; should a cell fail
    first, the pool is closed when it is garbage-collected or the interpreter exits.
    """

    def __init__(self, workers: int | None = None):
        import tempfile
        import weakref

        self.workers = max(1, workers or cpu_count())
        self.on_done: Callable[[], Any] | None = None  # called as each job ends (a bar's update)
        self._dir = Path(tempfile.mkdtemp(prefix="wsigraph-foldpool-"))
        self._pool = local_pool(self.workers, _init_local_worker, None)
        self._close = weakref.finalize(self, _close_pool, self._pool, self._dir)

    def __enter__(self) -> FoldPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers and remove the pool's temporary folder (once; later calls do nothing)."""
        self._close()

    def _run(self, fn, jobs, shared, done, failed) -> None:
        path = None
        if shared is not _NO_SHARED:
            path = self._dir / f"{os.urandom(8).hex()}.pkl"
            with open(path, "wb") as f:
                pickle.dump(shared, f, pickle.HIGHEST_PROTOCOL)
        try:
            futures = {
                self._pool.submit(_call_pooled, fn, job, path and str(path)): i
                for i, job in enumerate(jobs)
            }
            for future in cf.as_completed(futures):
                i = futures[future]
                try:
                    result = future.result()
                except Exception as err:
                    for other in futures:  # this call's jobs only: the pool serves other calls
                        other.cancel()
                    raise failed(i, err) from err
                done(i, result)
                if self.on_done is not None:
                    self.on_done()
        finally:  # every job of this call has ended or was cancelled before it started
            if path is not None:
                path.unlink(missing_ok=True)


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
        executor: ``"local"`` (default), ``"serial"``, ``"dask"``, or a :class:`FoldPool`
            that several calls share.
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
    if not isinstance(executor, FoldPool) and executor not in EXECUTORS:
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
        elif isinstance(executor, FoldPool):
            executor._run(fn, jobs, shared, done, failed)
        elif executor == "local":
            _run_local(fn, jobs, n_workers, shared, done, failed)
        else:
            _run_dask(fn, jobs, n_workers, scheduler, shared, done, failed)
    finally:
        bar.close()
    return results


def _run_local(fn, jobs, n_workers, shared, done, failed) -> None:
    payload = None if shared is _NO_SHARED else pickle.dumps(shared, pickle.HIGHEST_PROTOCOL)
    pool = local_pool(n_workers, _init_local_worker, payload)
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
    from distributed import as_completed

    with _dask_client(scheduler, n_workers) as client:
        extra = _scatter(client, shared)
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


@contextlib.contextmanager
def _dask_client(scheduler, n_workers: int, config: dict | None = None, dashboard: bool = False):
    """A ``distributed.Client``: ``scheduler`` itself when it is one, a client of the scheduler
    at that address (:func:`connect`), or of a ``LocalCluster`` of ``n_workers`` single-threaded
    processes started with the Dask ``config`` (and closed on exit)."""
    import dask
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        yield scheduler
        return
    if scheduler is not None:
        with connect(scheduler) as client:
            yield client
        return
    with dask.config.set(config or {}):
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0" if dashboard else None,
        )
    with cluster, Client(cluster) as client:
        yield client


def _scatter(client, shared) -> tuple:
    """``()``, or ``(future,)`` of ``shared`` sent once to every worker."""
    if shared is _NO_SHARED:
        return ()
    # A one-element list: scattering the list itself would scatter each element.
    return (client.scatter([shared], broadcast=True, hash=False)[0],)


# One task per item, failures kept apart ------------------------------------------------------
SCHEDULER_TIMEOUT_S = 10


@dataclass(frozen=True)
class WorkerSetup:
    """What one worker process runs with: its torch ``device`` (``None``: CUDA when present,
    else the CPU) and ``threads`` (torch intra-op threads; ``None``: leave torch's default)."""

    device: str | None = None
    threads: int | None = None

    def apply(self) -> None:
        import warnings

        import torch

        # PyG's import warns of torch.jit.script once per process: noise in every worker
        warnings.filterwarnings("ignore", r".*torch\.jit\.script.* is deprecated", FutureWarning)
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        if self.device is not None and self.device.startswith("cuda"):
            torch.cuda.set_device(torch.device(self.device))


_WORKER_SETUP = WorkerSetup()  # this process's setup (a worker's, once it has been given one)


def worker_setup() -> WorkerSetup:
    """The :class:`WorkerSetup` of the process this runs in (the default in a plain process)."""
    return _WORKER_SETUP


def _set_worker_setup(setup: WorkerSetup) -> None:
    global _WORKER_SETUP
    setup.apply()
    _WORKER_SETUP = setup


@dataclass(frozen=True)
class TaskFailure:
    """A job of :func:`run_each` that did not finish: ``error`` says why; ``worker_died`` when
    its worker process was lost (twice, with the one retry)."""

    job: str
    error: str
    worker_died: bool = False


_STARTED: Any = None  # a local worker's queue of the jobs it starts (for worker-death blame)


def _init_each_worker(setups, started, payload) -> None:
    global _STARTED, _SHARED
    _set_worker_setup(setups.get())
    _STARTED = started
    if payload is not None:
        _SHARED = pickle.loads(payload)


def _call_each(fn: Callable, index: int, job: Any) -> Any:
    _STARTED.put(index)
    return fn(job) if _SHARED is _NO_SHARED else fn(job, _SHARED)


def run_each(
    fn: Callable,
    jobs: Sequence[Any],
    executor: str = "local",
    setups: Sequence[WorkerSetup] | None = None,
    scheduler: Any = None,
    *,
    shared: Any = _NO_SHARED,
    retries: int = 1,
    on_result: Callable[[int, Any], None] | None = None,
    announce: Callable[[str], None] | None = None,
) -> list:
    """Run ``fn`` on every job, each on its own: a failure never stops the others.

    Args:
        fn: module-level function ``fn(job)``, or ``fn(job, shared)`` when ``shared`` is given.
        jobs: picklable jobs (their ``name`` attribute names them in failures).
        executor: ``"serial"`` (this process), ``"local"`` (worker processes, :func:`worker_context`) or
            ``"dask"`` (a ``LocalCluster``, or the cluster of ``scheduler``).
        setups: one :class:`WorkerSetup` per worker (the number of workers; default: one per
            CPU core with one thread each). ``"serial"`` applies none; the workers of an
            external Dask cluster keep their own (start one worker per GPU there).
        scheduler: Dask scheduler address or ``distributed.Client`` (``"dask"`` only); an
            address that does not answer within :data:`SCHEDULER_TIMEOUT_S` raises
            ``ConnectionError`` naming it.
        retries: how often a job whose worker process died is run again, alone (default 1).
        on_result: ``on_result(index, result_or_failure)`` in this process as each job ends.
        announce: called with one line for the user (the Dask dashboard address).

    Returns:
        Per job, in job order, ``fn``'s result or a :class:`TaskFailure`.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    jobs = list(jobs)
    results: list = [None] * len(jobs)
    if not jobs:
        return results
    setups = list(setups or [WorkerSetup(threads=1)] * cpu_count())

    def finish(index: int, result: Any) -> None:
        results[index] = result
        if on_result is not None:
            on_result(index, result)

    def failure(index: int, err: BaseException) -> TaskFailure:
        return TaskFailure(job_name(jobs[index], index), f"{type(err).__name__}: {err}")

    if executor == "serial":
        extra = () if shared is _NO_SHARED else (shared,)
        for i, job in enumerate(jobs):
            try:
                result = fn(job, *extra)
            except Exception as err:  # noqa: BLE001 - reported, and the others go on
                result = failure(i, err)
            finish(i, result)
    elif executor == "local":
        _each_local(fn, jobs, setups, shared, retries, finish, failure)
    else:
        _each_dask(fn, jobs, setups, scheduler, shared, retries, finish, failure, announce)
    return results


def _died(jobs, index: int, attempts: int) -> TaskFailure:
    times = "once" if attempts == 1 else f"{attempts} times"
    return TaskFailure(
        job_name(jobs[index], index),
        f"its worker process died {times} while running it (killed, or out of memory)",
        worker_died=True,
    )


def _each_local(fn, jobs, setups, shared, retries, finish, failure) -> None:
    """Rounds of a process pool. When a worker dies the pool breaks: the jobs that had started
    and not finished are suspects, run again one at a time in a pool of one (so that a job that
    kills its worker cannot take an innocent neighbour down twice); the others are resubmitted."""
    payload = None if shared is _NO_SHARED else pickle.dumps(shared, pickle.HIGHEST_PROTOCOL)
    attempts = [0] * len(jobs)
    todo = list(range(len(jobs)))
    suspects: list[int] = []
    while todo:
        unfinished, started = _local_round(fn, jobs, todo, setups, payload, finish, failure)
        suspects += [i for i in unfinished if i in started]
        todo = [i for i in unfinished if i not in started]
    for i in suspects:
        attempts[i] = 1
        while True:
            if attempts[i] > retries:
                finish(i, _died(jobs, i, attempts[i]))
                break
            unfinished, _ = _local_round(fn, jobs, [i], setups[:1], payload, finish, failure)
            if not unfinished:
                break
            attempts[i] += 1


def _local_round(fn, jobs, indices, setups, payload, finish, failure) -> tuple[list[int], set]:
    """Run ``indices`` in one pool; returns the jobs lost to a broken pool and the set of jobs
    that had started."""
    context = worker_context()
    n = max(1, min(len(setups), len(indices)))
    setup_queue, started = context.SimpleQueue(), context.SimpleQueue()
    for setup in setups[:n]:
        setup_queue.put(setup)
    unfinished = []
    pool = local_pool(n, _init_each_worker, setup_queue, started, payload, context=context)
    with pool:
        futures = {pool.submit(_call_each, fn, i, jobs[i]): i for i in indices}
        for future in cf.as_completed(futures):
            i = futures[future]
            try:
                result = future.result()
            except BrokenProcessPool:
                unfinished.append(i)
                continue
            except Exception as err:  # noqa: BLE001 - reported, and the others go on
                result = failure(i, err)
            finish(i, result)
    seen = set()
    while not started.empty():
        seen.add(started.get())
    return sorted(unfinished), seen


class _SetupPlugin:
    """Gives each worker of a ``LocalCluster`` its :class:`WorkerSetup` by worker name, also
    when its nanny restarts it after a death."""

    idempotent = False

    def __init__(self, setups):
        self.setups = list(setups)

    def setup(self, worker) -> None:
        name = worker.name if isinstance(worker.name, int) else 0
        _set_worker_setup(self.setups[name % len(self.setups)])


def _call_each_dask(fn: Callable, job: Any, *shared: Any) -> Any:
    return fn(job, *shared)


def connect(scheduler: str, timeout: float | None = None):
    """A ``distributed.Client`` of the scheduler at ``scheduler``.

    Raises:
        ConnectionError: it does not answer within ``timeout`` seconds (default
            :data:`SCHEDULER_TIMEOUT_S`; the message names it).
    """
    from distributed import Client

    timeout = SCHEDULER_TIMEOUT_S if timeout is None else timeout
    try:
        return Client(scheduler, timeout=f"{timeout}s")
    except (OSError, TimeoutError) as err:
        raise ConnectionError(
            f"cannot reach the Dask scheduler at {scheduler} within {timeout:g} s ({err}); is it "
            "running, and is the address (tcp://host:port) the one it printed?"
        ) from err


def dashboard_line(client) -> str:
    """The line announcing a Dask client's dashboard (or saying there is none)."""
    link = getattr(client, "dashboard_link", None)
    if not link:
        return f"Dask: {client.scheduler.address}; no dashboard (it needs the bokeh package)"
    return f"Dask dashboard: {link} (scheduler {client.scheduler.address})"


def _each_dask(fn, jobs, setups, scheduler, shared, retries, finish, failure, announce) -> None:
    from distributed import as_completed
    from distributed.diagnostics.plugin import WorkerPlugin
    from distributed.scheduler import KilledWorker

    # A dead worker fails its task at once (we retry it ourselves), and a worker holds only the
    # task it runs, so that a death blames no task that was merely queued there.
    config = {
        "distributed.scheduler.allowed-failures": 0,
        "distributed.scheduler.worker-saturation": 1.0,
    }
    with _dask_client(scheduler, len(setups), config, dashboard=True) as client:
        if scheduler is None:  # our LocalCluster: each worker gets its setup
            plugin = type("SetupPlugin", (_SetupPlugin, WorkerPlugin), {})(setups)
            client.register_plugin(plugin, name="wsigraph-worker-setup")
        if announce is not None:
            announce(dashboard_line(client))
        extra = _scatter(client, shared)

        def submit(i: int):
            key = f"task-{i}-{os.urandom(4).hex()}"
            return client.submit(_call_each_dask, fn, jobs[i], *extra, pure=False, key=key)

        submitted = [submit(i) for i in range(len(jobs))]
        futures = {f.key: i for i, f in enumerate(submitted)}
        attempts = [0] * len(jobs)
        running = as_completed(submitted)
        for future in running:
            i = futures[future.key]
            try:
                result = future.result()
            except KilledWorker:
                attempts[i] += 1
                if attempts[i] <= retries:
                    again = submit(i)
                    futures[again.key] = i
                    running.add(again)
                    continue
                result = _died(jobs, i, attempts[i])
            except Exception as err:  # noqa: BLE001 - reported, and the others go on
                result = failure(i, err)
            finish(i, result)
