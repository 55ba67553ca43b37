"""One table row under the papers' protocol: every (repeat, fold), resumable, one run record.

This is what ``notebooks/04_train.ipynb`` calls. :func:`run_experiment` builds the splits
(:func:`wsigraph.train.cv.make_splits` with ``cfg.seed``), runs each (repeat, fold) with
:func:`wsigraph.train.loop.train_fold` through :func:`wsigraph.train.executor.run_folds`, and
writes, atomically:

``out_dir/<name>/fold_r{repeat}_f{fold}.json``
    one file per finished fold (metrics, predictions, history), written as soon as the fold
    ends. A rerun skips a fold whose file exists and carries the same ``config_hash``: a hash
    of the :class:`~wsigraph.train.loop.TrainConfig`, the built model's architecture and
    hyper-parameters (:func:`model_fingerprint`: a changed *default* of a model, which the
    TrainConfig does not show, recomputes the folds), ``n_classes``, the fold's slide ids and
    labels per part, and a digest of the node features (so new features -- another encoder --
    recompute the folds). Anything else is recomputed and overwritten.
``out_dir/<name>/splits.csv`` and ``splits_counts.csv``
    the splits and their class counts (:func:`wsigraph.train.cv.write_splits`).
``out_dir/<name>.json``
    the run record: ``name, config, meta, cv, n_classes, folds, summary, fold_details,
    predictions, timings, peak_memory, config_hashes, git_commit, created, versions``;
    ``fold_details`` holds each fold's per-epoch ``history`` (the training curves).
    ``config`` is the :class:`~wsigraph.train.loop.TrainConfig` with its ``model_config``
    fully resolved (every setting of the built model, defaults included:
    :func:`resolved_model_config`); ``config.model_config_given`` is what the run passed.
    ``folds`` is long format, one row per (repeat, fold, metric) with the ``table, row,
    dataset, task`` of ``meta``; ``summary`` maps each metric to its mean, sample std over all
    folds, ``n`` and ``std_repeats`` (the std of the repeats' means;
    :func:`wsigraph.train.metrics.summarise`). Beside ours (argmax ACC, AUC, macro F1) the
    record holds the official codes' variants (:data:`~wsigraph.train.metrics.OFFICIAL_METRICS`):
    ``auc_micro`` per fold (HIGT) in ``folds`` and ``summary``, and H2-MIL's threshold-chosen
    ``acc_thr`` / ``f1_sens_spec`` per repeat in ``official_per_repeat`` and ``summary``. ``timings.total_seconds`` is this call's wall
    time (reused folds cost nothing), ``timings.fold_seconds_sum`` the sum of every fold's
    ``train_seconds``, reused ones included. ``NaN`` is written as ``null`` (strict JSON).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import math
import platform
import subprocess
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch_geometric.data import Data

from wsigraph.io import write_text
from wsigraph.models import build_model
from wsigraph.train.cv import Split, make_splits, write_splits
from wsigraph.train.executor import run_folds
from wsigraph.train.loop import FoldResult, TrainConfig, train_fold
from wsigraph.train.metrics import METRICS, official_metrics, repeat_std, summarise

TASKS = ("typing", "staging")
META_COLUMNS = ("table", "row", "dataset", "task")


# Loading -------------------------------------------------------------------------------------
def load_graphs(
    profile,
    manifest: pd.DataFrame,
    dataset: str,
    task: str,
    missing_slides: str = "drop",
    left_out: dict | None = None,
) -> tuple[list[Data], np.ndarray, list[str]]:
    """The graphs of one dataset's slides that have a label for ``task``, in manifest order.

    ``task`` is a label column of the manifest: the papers' ``typing`` or ``staging`` (two
    classes, 0 and 1), or any other label column of your cohort CSV
    (:func:`wsigraph.data.cohort.read_cohort_csv` writes ``<label>`` as class indices 0 .. C-1
    beside ``<label>_name``).

    Graphs are read from ``profile.graphs_dir / f"{slide_id}.pt"``. Slides whose label is
    missing or ``-1`` are dropped. A labelled slide whose graph file is missing or damaged
    (a slide that failed in the features or graphs stage) is dropped from cross-validation
    with a warning naming it and the stage to look at (``missing_slides="drop"``), or stops
    the run (``missing_slides="error"``). Pass a dict as ``left_out`` to receive
    ``{slide_id: why}`` of the slides dropped (for the run record).

    Returns:
        ``(graphs, labels [N] int64, slide_ids)``.

    Raises:
        ValueError: unknown dataset or task (the message lists the known ones), no labelled
            slide, a label outside {0, 1} for typing / staging or not a class index for another
            column (naming the slide), or a graph whose stored label disagrees with the manifest.
        FileNotFoundError: graph files are missing or damaged and ``missing_slides="error"``
            (or no labelled slide has a graph): the message names the slides and the stage.
    """
    from wsigraph.graphs.pyramid import load_graph

    if missing_slides not in ("drop", "error"):
        raise ValueError(f"missing_slides must be 'drop' or 'error', got {missing_slides!r}")

    if task not in manifest.columns or not (task in TASKS or f"{task}_name" in manifest.columns):
        known = label_columns(manifest)
        raise ValueError(
            f"unknown task {task!r}; known tasks (label columns): {', '.join(known) or 'none'}"
        )
    datasets = sorted(manifest["dataset"].dropna().astype(str).unique())
    if dataset not in datasets:
        raise ValueError(f"unknown dataset {dataset!r}; known datasets: {', '.join(datasets)}")
    sub = manifest[manifest["dataset"] == dataset]
    values = pd.to_numeric(sub[task], errors="coerce")
    sub, values = sub[values.notna() & (values != -1)], values[values.notna() & (values != -1)]
    valid = values.isin([0, 1]) if task in TASKS else values.map(_class)
    bad = sub.loc[~valid, "slide_id"].tolist()
    if bad:
        shown = {s: values[sub["slide_id"] == s].iloc[0] for s in bad[:5]}
        what = "0 or 1" if task in TASKS else "class indices 0, 1, ..."
        raise ValueError(f"{task} labels must be {what}; slide(s) {shown} have other values")
    if sub.empty:
        raise ValueError(f"no slide of dataset {dataset!r} has a {task} label")
    slide_ids = sub["slide_id"].astype(str).tolist()
    labels = values.to_numpy().astype(np.int64)
    graphs_dir = Path(profile.graphs_dir)
    graphs, problems = [], {}
    for sid in slide_ids:
        path = graphs_dir / f"{sid}.pt"
        try:
            graph = load_graph(path)
            if graph.num_nodes < 2:
                graphs.append(None)
                problems[sid] = (
                    f"a graph of {graph.num_nodes} node(s): the features stage kept no tissue "
                    "patch, so a prediction would be made from nothing"
                )
                continue
            graphs.append(graph)
        except FileNotFoundError:
            graphs.append(None)
            problems[sid] = "no graph file"
        except ValueError as e:
            graphs.append(None)
            problems[sid] = f"damaged graph file ({e})"
    if problems:
        shown = "; ".join(f"{sid}: {why}" for sid, why in list(problems.items())[:10])
        more = f" and {len(problems) - 10} more" if len(problems) > 10 else ""
        what = (
            f"{len(problems)} of {len(slide_ids)} labelled {dataset} slide(s) have no usable graph "
            f"in {graphs_dir} ({shown}{more}). They come from the graphs stage "
            "(notebooks/03_graphs.ipynb: it rebuilds damaged graph files and lists failed slides "
            "in results/<profile>/tables/graph_stats.csv); a slide listed there as 'no features' "
            "failed in the features stage (notebooks/02_tiles_features.ipynb, "
            "features_summary.csv), which says why"
        )
        if missing_slides == "error" or len(problems) == len(slide_ids):
            raise FileNotFoundError(
                f"{what}; fix or remove those slides and rerun those stages"
                + (
                    ", or pass missing_slides='drop' to leave them out"
                    if len(problems) < len(slide_ids)
                    else ""
                )
            )
        warnings.warn(
            f"{what}. They are left out of cross-validation; pass missing_slides='error' to "
            "stop instead",
            stacklevel=2,
        )
        if left_out is not None:
            left_out.update(problems)
        keep = [i for i, g in enumerate(graphs) if g is not None]
        graphs = [graphs[i] for i in keep]
        slide_ids = [slide_ids[i] for i in keep]
        labels = labels[keep]
    bad = [sid for sid, g in zip(slide_ids, graphs, strict=True) if not torch.isfinite(g.x).all()]
    if bad:
        raise ValueError(
            f"non-finite (NaN/inf) node features in {len(bad)} slide(s): {bad[:5]}; re-extract their features"
        )
    for g, sid, y in zip(graphs, slide_ids, labels, strict=True):
        stored = getattr(g, f"y_{task}", None)
        stored = None if stored is None else int(stored.reshape(-1)[0])
        if stored is not None and stored >= 0 and stored != y:
            raise ValueError(
                f"slide {sid}: graph stores {task} = {stored} but the manifest says {y}; "
                "rebuild the graphs (notebooks/03_graphs.ipynb)"
            )
    return graphs, labels, slide_ids


def label_columns(manifest: pd.DataFrame) -> list[str]:
    """The label columns of a manifest: ``typing`` and ``staging`` where present, then every
    other column ``c`` with a ``c_name`` companion (your cohort CSV's labels)."""
    named = [c for c in manifest.columns if f"{c}_name" in manifest.columns]
    return list(dict.fromkeys([*(t for t in TASKS if t in manifest.columns), *named]))


def _class(v) -> bool:
    """Whether ``v`` is a whole number >= 0 (``1`` or ``1.0``, not ``0.5``, ``-1`` or ``"a"``)."""
    return isinstance(v, int | float | np.number) and float(v).is_integer() and v >= 0


def check_inputs(graphs: Sequence[Data], labels, n_classes: int | None = None) -> np.ndarray:
    """Refuse inputs that would train silently wrong, naming the slide(s); return the labels
    as ``int64``.

    Refused: a label count that differs from the graph count; labels that are not whole
    numbers >= 0, or classes that are not ``0 .. C-1`` with every class present (``{0, 2}``
    would run with an AUC of ``null``); node features that are not 2-D, of another width than
    the first slide's (naming both) or not finite; a graph of fewer than 2 nodes (its
    prediction would be made from nothing). Slides are named by ``graph.slide_id``, else by
    their index.
    """
    raw = np.asarray(labels)
    if raw.ndim != 1 or len(raw) != len(graphs):
        raise ValueError(f"{len(graphs)} graphs but labels of shape {raw.shape}")
    if len(raw) == 0:
        raise ValueError("no graphs to train on")
    names = [str(getattr(g, "slide_id", f"#{i}")) for i, g in enumerate(graphs)]
    try:
        as_int = raw.astype(np.int64)
        whole = bool(np.all(as_int == raw))
    except (TypeError, ValueError):
        whole = False
    if not whole or (as_int < 0).any():
        bad = [f"{n}: {v!r}" for n, v in zip(names, raw.tolist(), strict=True) if not _class(v)]
        raise ValueError(
            f"labels must be whole numbers >= 0; got {bad[:5] or sorted(set(raw.tolist()))[:5]}"
        )
    classes = sorted(set(as_int.tolist()))
    expected = list(range(n_classes or max(2, classes[-1] + 1)))
    absent = [c for c in expected if c not in classes]
    if absent or classes[-1] >= len(expected):
        counts = dict(zip(*np.unique(as_int, return_counts=True), strict=True))
        raise ValueError(
            f"labels must be the classes 0..{len(expected) - 1} with every class present; got "
            f"{ {int(k): int(v) for k, v in counts.items()} } (class: slides), so class(es) "
            f"{absent or [c for c in classes if c >= len(expected)]} "
            f"{'have no slide' if absent else 'are out of range'}. Map them to 0..C-1 first, "
            "e.g. labels = np.unique(labels, return_inverse=True)[1]"
        )
    check_features(graphs)
    return as_int


def check_features(graphs: Sequence[Data]) -> None:
    """Refuse node features that would train silently wrong, naming the slide(s): not 2-D, of
    another width than the first slide's (naming both), not finite (NaN/inf), or a graph of
    fewer than 2 nodes. Slides are named by ``graph.slide_id``, else by their index. Used by
    :func:`check_inputs` and by the survival and MiCo runners."""
    if len(graphs) == 0:
        raise ValueError("no graphs to train on")
    names = [str(getattr(g, "slide_id", f"#{i}")) for i, g in enumerate(graphs)]
    width, first = None, None
    nonfinite, tiny = [], []
    for name, g in zip(names, graphs, strict=True):
        x = getattr(g, "x", None)
        if x is None or x.dim() != 2:
            raise ValueError(
                f"slide {name}: node features x must be [nodes, features], got "
                f"{None if x is None else tuple(x.shape)}"
            )
        if width is None:
            width, first = x.shape[1], name
        elif x.shape[1] != width:
            raise ValueError(
                f"slide {name} has {x.shape[1]} features per node but slide {first} has {width}; "
                "every slide must come from the same encoder (re-extract the odd one's features)"
            )
        if x.shape[0] < 2:
            tiny.append(f"{name} ({x.shape[0]} node{'s' if x.shape[0] != 1 else ''})")
        elif not torch.isfinite(x).all():
            nonfinite.append(name)
    if nonfinite:
        raise ValueError(
            f"non-finite (NaN/inf) node features in {len(nonfinite)} slide(s): {nonfinite[:5]}; "
            "re-extract their features"
        )
    if tiny:
        raise ValueError(
            f"graph(s) with fewer than 2 nodes, whose prediction would be made from nothing: "
            f"{tiny[:5]}; leave those slides out (no tissue patch was kept: see the features "
            "stage's summary)"
        )


# Jobs ----------------------------------------------------------------------------------------
@dataclass
class FoldJob:
    """One (repeat, fold) to train; ``shared`` holds ``(graphs, labels)``. With ``checkpoint``
    (a path) the fold's chosen model is saved there (:mod:`wsigraph.checkpoint`), with
    ``checkpoint_info`` (``model_config``, ``class_names``, ``features``, ``meta``)."""

    split: Split
    cfg: TrainConfig
    n_classes: int
    checkpoint: str | None = None
    checkpoint_info: dict | None = None

    @property
    def name(self) -> str:
        return f"repeat {self.split.repeat} fold {self.split.fold}"


def run_fold_job(job: FoldJob, shared: tuple[Sequence[Data], np.ndarray]) -> dict:
    """Worker entry point: train one fold (saving its model when the job names a checkpoint),
    return :meth:`FoldResult.to_dict`."""
    graphs, labels = shared
    if job.checkpoint is None:
        return train_fold(graphs, labels, job.split, job.cfg, job.n_classes).to_dict()
    from wsigraph.checkpoint import save_checkpoint
    from wsigraph.train.loop import feature_stats

    result, model, _ = train_fold(
        graphs, labels, job.split, job.cfg, job.n_classes, return_model=True
    )
    mean = std = None
    if job.cfg.standardize:
        mean, std = feature_stats(graphs, job.split.train)
    info = job.checkpoint_info or {}
    save_checkpoint(
        job.checkpoint, model, job.cfg.model, info.get("model_config", job.cfg.model_config),
        int(graphs[0].x.shape[1]), job.n_classes, mean, std, info.get("class_names"),
        info.get("features"),
        (info.get("meta") or {}) | {"repeat": job.split.repeat, "fold": job.split.fold},
    )  # fmt: skip
    return result.to_dict()


def refit_path(out_dir: str | Path, name: str) -> Path:
    """Where :func:`run_experiment` saves the model refit on every labelled slide."""
    return Path(out_dir) / name / "refit.pt"


def _refit(name, graphs, labels, cfg, n_classes, fold_results, hashes, out_dir, info) -> dict:
    """Train (or reuse) the refit model of :func:`run_experiment`; its entry of the record."""
    from wsigraph.checkpoint import CheckpointError, load_model, save_checkpoint
    from wsigraph.train.loop import refit

    epochs = max(1, int(np.round(np.median([r.best_epoch for r in fold_results]))))
    key = hashlib.blake2b(
        json.dumps([hashes, epochs]).encode(), digest_size=8
    ).hexdigest()  # the folds' settings and data, and the epoch count
    path = refit_path(out_dir, name)
    entry = {"path": f"{name}/{path.name}", "epochs": epochs, "n_slides": len(labels)}
    if path.exists():
        try:
            if load_model(path).meta.get("refit_key") == key:
                return entry | {"reused": True}
        except (CheckpointError, OSError):
            pass  # damaged or of another version: train it again
    start = time.perf_counter()
    model, mean, std = refit(graphs, labels, cfg, epochs, n_classes)
    save_checkpoint(
        path, model, cfg.model, info["model_config"], int(graphs[0].x.shape[1]), n_classes,
        mean, std, info["class_names"], info["features"],
        info["meta"] | {"refit": True, "epochs": epochs, "n_slides": len(labels),
                        "refit_key": key},
    )  # fmt: skip
    return entry | {"reused": False, "seconds": time.perf_counter() - start}


def fold_path(out_dir: str | Path, name: str, repeat: int, fold: int) -> Path:
    return Path(out_dir) / name / f"fold_r{repeat}_f{fold}.json"


def checkpoint_path(out_dir: str | Path, name: str, repeat: int, fold: int) -> Path:
    """Where :func:`run_experiment` saves the model of one fold."""
    return Path(out_dir) / name / f"fold_r{repeat}_f{fold}.pt"


def data_digest(graphs: Sequence[Data]) -> list[str]:
    """A short digest of each graph's node features (bytes of ``x``)."""
    return [
        hashlib.blake2b(
            g.x.detach().cpu().contiguous().numpy().tobytes(), digest_size=8
        ).hexdigest()
        for g in graphs
    ]


def model_fingerprint(model: nn.Module) -> str:
    """The architecture and hyper-parameters of a built model, not its weights, hashed: each
    submodule's path, class and plain attributes (numbers, strings, tuples, dicts, dataclass
    configs: a dropout's ``p``, a layer's widths, a method's options)."""
    plain = (int, float, bool, str, tuple, list, dict, type(None))

    def settings(module: nn.Module) -> dict:
        out = {}
        for k, v in sorted(vars(module).items()):
            if k.startswith("_") or k == "training":
                continue
            if dataclasses.is_dataclass(v) and not isinstance(v, type):
                out[k] = dataclasses.asdict(v)
            elif isinstance(v, plain):
                out[k] = v
        return out

    parts = [
        [path, type(module).__qualname__, settings(module)]
        for path, module in model.named_modules()
    ]
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_hash(
    cfg: TrainConfig,
    n_classes: int,
    split: Split,
    labels: np.ndarray,
    slide_ids: Sequence[str],
    digests: Sequence[str],
    model_key: str = "",
) -> str:
    """What a fold's result depends on, hashed (see the module docstring); ``model_key`` is
    the :func:`model_fingerprint` of the model ``cfg`` builds."""
    payload = {
        "config": cfg.to_dict(),
        "model": model_key,
        "n_classes": n_classes,
        "repeat": split.repeat,
        "fold": split.fold,
        "parts": {
            part: [[slide_ids[i], int(labels[i]), digests[i]] for i in idx]
            for part, idx in split.parts().items()
        },
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resolved_model_config(model: nn.Module, given: dict) -> dict:
    """Every setting of a built model, defaults included: ``model.settings()`` where the model
    has it (H2-MIL, HIGT: their resolved dataclass config), its dataclass ``config`` where it has
    one (e.g. MeanMLP), else the keyword defaults of its
    constructor and of the MIL module it wraps (``model.module``), its ``options``, and
    ``given`` on top."""
    if hasattr(model, "settings"):
        return _clean(model.settings())
    config = getattr(model, "config", None)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return _clean(dataclasses.asdict(config))
    skip = {"self", "in_dim", "n_classes", "in_channels", "out_channels"}
    variadic = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    out: dict = {}
    for cls in (getattr(model, "module", None), type(model)):
        if not isinstance(cls, type):
            continue
        for name, par in inspect.signature(cls.__init__).parameters.items():
            if name not in skip and par.kind not in variadic and par.default is not par.empty:
                out[name] = par.default
    out |= getattr(model, "options", None) or {}
    return _clean(out | dict(given))


# Records -------------------------------------------------------------------------------------
def _clean(value):
    """NaN -> None, numpy scalars -> Python, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_json(path: Path, obj: dict) -> None:
    write_text(path, json.dumps(_clean(obj), indent=1, allow_nan=False) + "\n")


def _read_fold(path: Path, expected_hash: str) -> dict | None:
    """The stored result of one fold, or ``None`` to recompute it: no file, another
    ``config_hash``, or a damaged file (not JSON, not an object, no ``result`` object, a
    missing field or metric), which is also reported with a warning naming the file."""
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return _damaged_fold(path, f"not readable JSON ({e})")
    if not isinstance(stored, dict):
        return _damaged_fold(path, f"holds a {type(stored).__name__}, not a JSON object")
    if "config_hash" not in stored:
        return _damaged_fold(path, "no 'config_hash'")
    if stored["config_hash"] != expected_hash:
        return None  # made with other settings: recomputed silently, as documented
    problem = _fold_result_problem(stored.get("result"))
    if problem:
        return _damaged_fold(path, problem)
    return stored["result"]


def _fold_result_problem(result) -> str:
    """Why ``result`` is not a usable stored fold result, or ``""``: a non-empty object, and
    for a classification :class:`FoldResult` (one with ``metrics`` or ``test_probs``; survival
    folds store another shape) every field and metric."""
    if not isinstance(result, dict):
        return f"'result' is {type(result).__name__}, not an object"
    if not result:
        return "'result' is empty"
    if "metrics" not in result and "test_probs" not in result:
        return ""  # not a classification fold (e.g. survival): nothing more to check here
    required = [
        f.name
        for f in dataclasses.fields(FoldResult)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [k for k in required if k not in result]
    if missing:
        return f"'result' lacks {', '.join(missing)}"
    metrics = result["metrics"]
    if not isinstance(metrics, dict):
        return f"'result.metrics' is {type(metrics).__name__}, not an object"
    lacking = [m for m in METRICS if m not in metrics]
    if lacking:
        return f"'result.metrics' lacks {', '.join(lacking)}"
    bad = [m for m in METRICS if not (metrics[m] is None or isinstance(metrics[m], int | float))]
    if bad:
        return f"'result.metrics' has non-numbers for {', '.join(bad)}"
    n = len(result["test_slide_ids"]) if isinstance(result["test_slide_ids"], list) else -1
    if not (
        isinstance(result["test_labels"], list)
        and isinstance(result["test_probs"], list)
        and len(result["test_labels"]) == n
        and len(result["test_probs"]) == n
    ):
        return "'result' test_slide_ids / test_labels / test_probs are not lists of one length"
    return ""


def _damaged_fold(path: Path, why: str) -> None:
    warnings.warn(f"fold cache {path} is damaged ({why}); recomputing that fold", stacklevel=3)
    return None


def git_commit() -> str | None:
    """``git rev-parse HEAD`` of the repository, or ``None`` outside a git checkout."""
    from wsigraph.profiles import REPO_ROOT

    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def versions() -> dict[str, str]:
    import sklearn
    import torch
    import torch_geometric

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }


def resume_folds(
    fn: Callable,
    make_job: Callable[[Split], object],
    splits: Sequence[Split],
    hashes: Sequence[str],
    out_dir: Path,
    name: str,
    shared: tuple,
    executor: str = "local",
    workers: int | None = None,
    scheduler=None,
    progress: bool = True,
    artifact: Callable[[Split], Path] | None = None,
) -> tuple[list[dict], list[bool]]:
    """Every fold's result, reusing ``out_dir/<name>/fold_r*_f*.json`` files whose
    ``config_hash`` matches and running the rest through ``fn(job, shared)``
    (:func:`~wsigraph.train.executor.run_folds`); each new result is written as soon as its fold
    ends, so an interrupted run resumes. With ``artifact`` (split -> path of a file the job
    writes, e.g. its checkpoint) a stored fold whose file is missing is trained again.

    Returns:
        ``(results, reused)``: one result dict per split, and whether it came from a file.
    """
    results: list[dict | None] = [
        _read_fold(fold_path(out_dir, name, s.repeat, s.fold), h)
        if artifact is None or artifact(s).exists()
        else None
        for s, h in zip(splits, hashes, strict=True)
    ]
    reused = [r is not None for r in results]
    todo = [i for i, r in enumerate(results) if r is None]

    def save(k: int, result: dict) -> None:
        i = todo[k]
        s = splits[i]
        results[i] = result
        record = {"name": name, "repeat": s.repeat, "fold": s.fold, "config_hash": hashes[i]}
        _write_json(fold_path(out_dir, name, s.repeat, s.fold), record | {"result": result})

    run_folds(
        fn,
        [make_job(splits[i]) for i in todo],
        executor=executor,
        workers=workers,
        scheduler=scheduler,
        shared=shared,
        on_result=save,
        progress=progress,
        desc=name,
    )
    return results, reused


def run_experiment(
    name: str,
    graphs: Sequence[Data],
    labels,
    cfg: TrainConfig,
    out_dir: str | Path,
    folds: int,
    repeats: int,
    executor: str = "local",
    workers: int | None = None,
    scheduler=None,
    meta: dict | None = None,
    *,
    val_fraction: float = 0.25,
    n_classes: int | None = None,
    progress: bool = True,
    save_models: bool = True,
    class_names: Sequence[str] | None = None,
    features: dict | None = None,
    refit: bool = False,
) -> dict:
    """Train every (repeat, fold) of one experiment, resuming finished folds; write its record.

    Args:
        name: the record's name, e.g. ``"h2mil_table1__h2-mil__esca__typing"`` (a file name).
        graphs: one graph per labelled slide (from :func:`load_graphs`).
        labels: their classes ``[N]``.
        cfg: training settings; ``cfg.seed`` also seeds the splits.
        out_dir: where the record and the ``<name>/`` folder of fold files go.
        folds, repeats: the CV protocol (the papers: 5 and 5).
        executor, workers, scheduler: see :func:`wsigraph.train.executor.run_folds`.
        meta: ``table, row, dataset, task, profile`` (anything JSON-able) stored in the record.
        val_fraction: validation share of each training split (default ``0.25``).
        n_classes: default ``max(labels) + 1`` (at least 2).
        progress: a bar over finished folds.
        save_models: save each fold's chosen model beside its result
            (``out_dir/<name>/fold_r<r>_f<f>.pt``, :func:`checkpoint_path`; load with
            :func:`wsigraph.load_model`); a stored fold without its model is trained again.
        class_names: one name per class, kept in the checkpoints.
        features: how the slides' features were made (encoder id, patch size,
            magnifications...), kept in the checkpoints so a new slide is made the same way.
        refit: also train one model on *every* labelled slide, for the folds' median best
            epoch, with no selection (:func:`wsigraph.train.loop.refit`), and save it as
            ``out_dir/<name>/refit.pt`` (:func:`refit_path`; the record's ``"refit"``). It is the
            model to score new slides with; its quality is the cross-validation's, as nothing
            is held out from it. Resumed when the folds and the epoch count are unchanged.

    Returns:
        The run record (as written to ``out_dir/<name>.json``, NaN as ``None``).
    """
    if not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"name must be a plain file name, got {name!r}")
    start = time.perf_counter()
    out_dir = Path(out_dir)
    meta = dict(meta or {})
    labels = check_inputs(graphs, labels, n_classes)
    n_classes = n_classes or max(2, int(labels.max()) + 1)
    slide_ids = [str(getattr(g, "slide_id", i)) for i, g in enumerate(graphs)]
    splits = make_splits(labels, folds, repeats, val_fraction, seed=cfg.seed)
    write_splits(splits, labels, out_dir / name / "splits.csv", slide_ids)

    digests = data_digest(graphs)
    in_dim = graphs[0].x.shape[1]
    model = build_model(cfg.model, in_dim, n_classes, **cfg.model_config)
    model_key = model_fingerprint(model)
    hashes = [config_hash(cfg, n_classes, s, labels, slide_ids, digests, model_key) for s in splits]
    info = {
        "model_config": resolved_model_config(model, cfg.model_config),
        "class_names": None if class_names is None else list(class_names),
        "features": dict(features or {}),
        "meta": meta | {"name": name, "git_commit": git_commit()},
    }

    def ckpt(s: Split) -> Path:
        return checkpoint_path(out_dir, name, s.repeat, s.fold)

    results, reused = resume_folds(
        run_fold_job,
        lambda s: FoldJob(s, cfg, n_classes, str(ckpt(s)) if save_models else None, info),
        splits,
        hashes,
        out_dir,
        name,
        shared=(graphs, labels),
        executor=executor,
        workers=workers,
        scheduler=scheduler,
        progress=progress,
        artifact=ckpt if save_models else None,
    )

    fold_results = [FoldResult.from_dict(r) for r in results]
    refitted = (
        _refit(name, graphs, labels, cfg, n_classes, fold_results, hashes, out_dir, info)
        if refit
        else None
    )
    context = {k: meta.get(k) for k in META_COLUMNS}
    rows = [
        context
        | {"repeat": r.repeat, "fold": r.fold, "seed": r.seed, "metric": m, "value": r.metrics[m]}
        for r in fold_results
        for m in METRICS
    ]
    predictions = [
        {
            "repeat": r.repeat,
            "fold": r.fold,
            "slide_id": r.test_slide_ids,
            "label": r.test_labels,
            "prob": r.test_probs,
        }
        for r in fold_results
    ]
    per_fold, per_repeat = official_metrics(predictions)
    rows += [
        context
        | {"repeat": r.repeat, "fold": r.fold, "seed": r.seed, "metric": "auc_micro"}
        | {"value": f["auc_micro"]}
        for r, f in zip(fold_results, per_fold, strict=True)
    ]
    summary = {}
    for m in (*METRICS, "auc_micro"):
        values = [row["value"] for row in rows if row["metric"] == m]
        by_repeat: dict[int, list[float]] = {}
        for row in rows:
            if row["metric"] == m:
                by_repeat.setdefault(row["repeat"], []).append(row["value"])
        mean, std = summarise(values)
        summary[m] = {
            "mean": mean,
            "std": std,
            "n": len(values),
            "std_repeats": repeat_std(by_repeat),
        }
    for m in ("acc_thr", "f1_sens_spec"):  # one value per repeat: std over the repeats
        mean, std = summarise(r[m] for r in per_repeat)
        summary[m] = {"mean": mean, "std": std, "n": len(per_repeat), "std_repeats": std}
    record = {
        "name": name,
        "config": cfg.to_dict()
        | {
            "model_config": resolved_model_config(model, cfg.model_config),
            "model_config_given": _clean(cfg.model_config),
        },
        "meta": meta,
        "cv": {
            "folds": folds,
            "repeats": repeats,
            "val_fraction": val_fraction,
            "seed": cfg.seed,
            "n_slides": len(labels),
            "class_counts": np.bincount(labels, minlength=n_classes).tolist(),
        },
        "n_classes": n_classes,
        "folds": rows,
        "summary": summary,
        "fold_details": [
            {
                "repeat": r.repeat,
                "fold": r.fold,
                "seed": r.seed,
                "best_epoch": r.best_epoch,
                "epochs_run": r.epochs_run,
                "val_auc": r.val_metrics.get("auc"),
                "val_loss": r.val_metrics.get("loss"),
                "device": r.device,
                "reused": was_reused,
                "history": r.history,
            }
            for r, was_reused in zip(fold_results, reused, strict=True)
        ],
        "predictions": predictions,
        # each fold's saved model, relative to out_dir (the profile's work folder "cv")
        "checkpoints": [
            {"repeat": s.repeat, "fold": s.fold, "path": f"{name}/{ckpt(s).name}"} for s in splits
        ]
        if save_models
        else [],
        "refit": refitted,
        "official_per_repeat": per_repeat,
        "timings": {
            "total_seconds": time.perf_counter() - start,
            "fold_seconds_sum": sum(r.train_seconds for r in fold_results),
            "per_fold": [
                {"repeat": r.repeat, "fold": r.fold, "seconds": r.train_seconds}
                for r in fold_results
            ],
        },
        "peak_memory": {
            "kind": sorted({r.peak_memory_kind for r in fold_results}),
            "max_bytes": max(r.peak_memory_bytes for r in fold_results),
            "per_fold": [
                {"repeat": r.repeat, "fold": r.fold, "bytes": r.peak_memory_bytes}
                for r in fold_results
            ],
        },
        "config_hashes": hashes,
        "git_commit": git_commit(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
    }
    _write_json(out_dir / f"{name}.json", record)
    return _clean(record)


def run_experiments(
    experiments: Sequence[dict],
    executor: str = "local",
    workers: int | None = None,
    scheduler=None,
    progress: bool = True,
) -> list[dict]:
    """Several :func:`run_experiment` calls whose folds share one set of workers.

    Called one after another, each ``"local"`` call starts its own worker processes, and its
    workers idle while its last folds finish (5 folds on 2 workers: a third round with one
    worker busy). Here every experiment runs in its own thread and submits its folds to one
    :class:`~wsigraph.train.executor.FoldPool` (``"local"``) or one Dask client (``"dask"``),
    so the workers start once and stay busy until the last fold of the last experiment.
    ``"serial"`` runs the experiments one after another. Each record is the one
    :func:`run_experiment` writes, fold for fold the same whichever way it ran.

    Args:
        experiments: the keyword arguments of each :func:`run_experiment` call (``name, graphs,
            labels, cfg, out_dir, folds, repeats`` and any of its options), without
            ``executor``, ``workers``, ``scheduler`` and ``progress``, which are this call's.
        executor, workers, scheduler: see :func:`wsigraph.train.executor.run_folds`.
        progress: one bar over every experiment's folds.

    Returns:
        The records, in the order of ``experiments``.

    Raises:
        ValueError: an experiment sets one of this call's arguments, or two share a name.
        RuntimeError: an experiment failed; the others ran to the end (their folds are stored),
            and the message names each failed one, the first error chained. (``"serial"``:
            the first failure stops the run, as :func:`run_experiment`'s own.)
    """
    from concurrent.futures import ThreadPoolExecutor

    from wsigraph.progress import progress_bar
    from wsigraph.train.executor import EXECUTORS, FoldPool, _dask_client, cpu_count

    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    experiments = [dict(e) for e in experiments]
    names = [e.get("name") for e in experiments]
    for e in experiments:
        ours = {"executor", "workers", "scheduler", "progress"} & e.keys()
        if ours:
            raise ValueError(
                f"experiment {e.get('name')!r} sets {', '.join(sorted(ours))}: "
                "pass them to run_experiments itself"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"experiment names repeat: {names}")
    total = sum(e["folds"] * e["repeats"] for e in experiments)
    bar = progress_bar(total=total, desc="folds", unit="fold", disable=not progress)
    try:
        if executor == "serial" or len(experiments) < 2:
            records = []
            for e in experiments:
                records.append(run_experiment(**e, executor=executor, workers=workers,
                                              scheduler=scheduler, progress=False))  # fmt: skip
                bar.update(e["folds"] * e["repeats"])
            return records
        n = max(1, min(workers or cpu_count(), total))
        with contextlib.ExitStack() as stack:
            if executor == "local":
                pool = stack.enter_context(FoldPool(n))
                pool.on_done = bar.update  # each new fold as it ends; stored ones below
                run = {"executor": pool}
            else:
                client = stack.enter_context(_dask_client(scheduler, n))
                run = {"executor": "dask", "scheduler": client}
            # two experiments per worker in flight keep every worker busy; more would only
            # hold more cohorts in memory at once
            threads = stack.enter_context(ThreadPoolExecutor(min(len(experiments), 2 * n)))
            futures = [threads.submit(run_experiment, **e, **run, progress=False)
                       for e in experiments]  # fmt: skip
            records, errors = [], []
            for e, future in zip(experiments, futures, strict=True):
                try:
                    record = future.result()
                except Exception as err:
                    errors.append((e["name"], err))
                    continue
                records.append(record)
                done = sum(d["reused"] for d in record["fold_details"])
                bar.update(done if executor == "local" else len(record["fold_details"]))
        if errors:
            listed = "; ".join(f"{name}: {type(err).__name__}: {err}" for name, err in errors)
            raise RuntimeError(
                f"{len(errors)} of {len(experiments)} experiments failed ({listed}); "
                "the others' folds are stored and a rerun resumes"
            ) from errors[0][1]
        return records
    finally:
        bar.close()
