"""MiCo as its authors ran it (``junjianli106/MiCo``): bags, splits, anchors, optimiser, selection.

What :func:`run_mico_experiment` does, per task (``"typing"``: subtyping, ``"survival"``):

Bags
    Survival: one bag per *case*, the instances of all its slides pooled
    (:func:`patient_bags`; the official ``datasets/prog_data.py`` feeds the model the list of
    a patient's slides). Subtyping: one bag per slide (official ``cls_data``). Instances are
    the patches of one pyramid level (``level=2``, 10x).
Splits
    :func:`case_splits`: ``folds`` (official: 4) folds of the *cases*, stratified (subtyping:
    class; survival: discrete bin x censorship, else censorship), one repeat; the test fold is
    one of them and ``val_fraction`` (official: ~20 %, 153 / 772 cases of TCGA-BRCA fold 0) of
    the remaining cases is the validation split, as the official ``splits/4fold*/fold{k}.csv``
    (train / val / test columns). A case never straddles two parts.
Anchors
    ``anchors="learned"``: one ``[K, F]`` matrix shared by every slide, initialised per fold by
    :func:`fold_anchors`, a k-means (``K = 64``, 20 iterations, as the official
    ``run_clustering.py``) over the instances of the first ``kmeans_slides`` (20, official
    ``n_files``) *training* slides (sorted by slide id) of the fold. The official script
    clusters the first 20 files of the whole dataset, test slides included (a leak we do not
    copy). Fewer instances than ``K`` give ``K' = N`` anchors (with a warning) and the fold's
    model is built with ``K'``. ``anchors="slide"`` (our per-slide variant) uses the graphs'
    cached per-slide k-means labels (slide bags; patient bags when every case has one slide)
    and otherwise clusters each patient bag in the model.
Optimiser and loop
    :func:`wsigraph.train.optim.lookahead_radam` (lr 2e-4, weight decay 1e-5), one bag per step
    and gradients accumulated over ``grad_accumulation = 2`` bags (official ``batch_size: 1``,
    ``grad_acc: 2``), cross-entropy or the NLL survival loss, fp32 (official: fp16).
Checkpoint
    Subtyping: the epoch of the highest validation macro-F1; survival: the lowest validation
    NLL (official ``load_callbacks``: ``val_f1`` / ``val_loss``; a later epoch replaces the kept
    one only if strictly better). Early stopping after ``patience = 8`` epochs without
    improvement (official). The test fold is evaluated once, with the kept weights.
Determinism
    Every fold runs inside :func:`deterministic` (one intra-op thread, deterministic algorithms,
    scikit-learn's k-means on one thread): CPU reductions give other last bits with another
    thread count, and the notebook pipeline sets ``OMP_NUM_THREADS = cores / concurrent
    notebooks``, so the same commit used to train on 1 or 2 threads depending on what else
    ran and ended on other checkpoints (BRCA AUC 96.67 vs 95.56). Seeds as
    :func:`wsigraph.train.loop.setup_fold`; the shuffle has its own generator.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric import seed_everything
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from wsigraph.data.clusters import CLUSTER_KEY, kmeans
from wsigraph.models import build_model
from wsigraph.train.cv import Split, fold_seed, make_splits, write_splits
from wsigraph.train.loop import TrainConfig, _peak_memory, resolve_device
from wsigraph.train.metrics import classification_metrics, summarise
from wsigraph.train.optim import lookahead_radam
from wsigraph.train.run import (
    _clean,
    _write_json,
    check_features,
    check_inputs,
    git_commit,
    resume_folds,
    versions,
)
from wsigraph.train.survival import c_index, risk_scores, survival_bins, survival_loss

TASKS = ("typing", "survival")


@dataclass(frozen=True)
class MiCoProtocol:
    """The official training protocol (values from ``Survival/*/MiCo.yaml``, ``Cls/*/MiCo.yaml``,
    ``utils/utils.py``, ``splits/``); ``epochs`` is the official 200, a run may pass fewer."""

    folds: int = 4
    val_fraction: float = 0.2
    lr: float = 2e-4
    weight_decay: float = 1e-5
    batch_size: int = 1
    grad_accumulation: int = 2
    patience: int = 8
    epochs: int = 200
    n_clusters: int = 64
    kmeans_iters: int = 20
    kmeans_slides: int = 20
    standardize: bool = False


OFFICIAL = MiCoProtocol()


def profile_protocol(profile) -> MiCoProtocol:
    """The protocol a profile runs: :data:`OFFICIAL`, except on ``demo``: there MiCo trains on
    standardised features at the demo's learning rate (2e-3), the two adaptations every demo
    row gets; on the raw synthetic demo features (:mod:`wsigraph.data.synthetic_mico`) at the
    official 2e-4 it stayed at chance on a subtyping column (AUC 48.5 +- 4.6, measured once)."""
    if profile.name == "demo":
        return replace(OFFICIAL, lr=profile.lr, standardize=True)
    return OFFICIAL


# Determinism ------------------------------------------------------------------------------------
@contextlib.contextmanager
def deterministic(threads: int = 1):
    """Run the block on ``threads`` intra-op threads (torch and the OpenMP/BLAS pools that
    scikit-learn uses) with ``torch.use_deterministic_algorithms`` on; restore afterwards."""
    from threadpoolctl import threadpool_limits

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with threadpool_limits(threads):
            yield
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)


# Bags -------------------------------------------------------------------------------------------
def _instances(graph: Data, level: int) -> Tensor:
    lv = getattr(graph, "level", None)
    return graph.x if lv is None else graph.x[lv == level]


def patient_bags(
    graphs: Sequence[Data], case_ids: Sequence[str], level: int = 2
) -> tuple[list[Data], list[str], list[list[int]]]:
    """One bag per case: the ``level`` instances of all its slides, concatenated in input order.

    Returns:
        ``(bags, cases, members)``: cases in order of first appearance; ``members[i]`` the
        input indices of case ``i``'s slides. A bag holds ``x [N, F]``, ``bag_slide [N]`` (the
        slide of each instance, ``0 .. n_slides - 1``), ``n_slides [1]``, ``case_id`` and
        ``slide_ids``; when every case has one slide and every graph carries cached per-slide
        cluster labels (``mico_cluster``), the bags carry them too (the per-slide-anchor
        variant then reads them instead of clustering each bag in the model).

    Raises:
        ValueError: lengths differ, or the slides of a case have different feature widths
            (naming the case and its slides' widths).
    """
    if len(graphs) != len(case_ids):
        raise ValueError(f"{len(graphs)} graphs but {len(case_ids)} case ids")
    order: dict[str, list[int]] = {}
    for i, c in enumerate(case_ids):
        order.setdefault(str(c), []).append(i)
    bags = []
    for case, idx in order.items():
        xs = [_instances(graphs[i], level) for i in idx]
        widths = {
            str(getattr(graphs[i], "slide_id", i)): int(x.size(1))
            for i, x in zip(idx, xs, strict=True)
        }
        if len(set(widths.values())) > 1:
            raise ValueError(
                f"case {case}: its slides have different feature widths {widths}; extract "
                "every slide of a case with the same encoder"
            )
        bags.append(
            Data(
                x=torch.cat(xs),
                bag_slide=torch.cat([torch.full((len(x),), j) for j, x in enumerate(xs)]),
                n_slides=torch.tensor([len(xs)]),
                case_id=case,
                slide_ids=[str(getattr(graphs[i], "slide_id", i)) for i in idx],
            )
        )
    if all(len(idx) == 1 and getattr(graphs[idx[0]], CLUSTER_KEY, None) is not None
           for idx in order.values()):  # fmt: skip
        for bag, idx in zip(bags, order.values(), strict=True):  # cached per-slide clusters
            g = graphs[idx[0]]
            bag[CLUSTER_KEY] = g[CLUSTER_KEY] if getattr(g, "level", None) is None else (
                g[CLUSTER_KEY][g.level == level])  # fmt: skip
    return bags, list(order), list(order.values())


def slide_bags(graphs: Sequence[Data], level: int = 2) -> list[Data]:
    """One bag per slide (subtyping, official ``cls_data``): the ``level`` instances and, when the
    graph carries them, its cached per-slide cluster labels."""
    out = []
    for i, g in enumerate(graphs):
        keep = g.level == level
        sid = str(getattr(g, "slide_id", i))
        b = Data(x=g.x[keep], n_slides=torch.tensor([1]), slide_ids=[sid])
        if getattr(g, CLUSTER_KEY, None) is not None:
            b[CLUSTER_KEY] = g[CLUSTER_KEY][keep]
        out.append(b)
    return out


# Splits -----------------------------------------------------------------------------------------
def case_splits(
    case_ids: Sequence[str],
    strata,
    folds: int = 4,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> list[Split]:
    """The official split style on *cases*: ``folds`` stratified folds, one repeat; each fold's
    test part is one fold, its validation part a stratified ``val_fraction`` of the rest. Index
    arrays point into ``case_ids`` (one entry per bag); all bags of a case share a part.

    Raises:
        ValueError: the bags of one case have different strata (naming it), or too few cases
            (:func:`wsigraph.train.cv.make_splits`'s message).
    """
    strata = np.asarray(strata).astype(np.int64).ravel()
    cases: dict[str, list[int]] = {}
    for i, c in enumerate(case_ids):
        cases.setdefault(str(c), []).append(i)
    case_stratum = []
    for c, idx in cases.items():
        s = set(strata[idx].tolist())
        if len(s) > 1:
            raise ValueError(f"case {c}: its slides have different labels {sorted(s)}")
        case_stratum.append(s.pop())
    members = list(cases.values())
    out = []
    for s in make_splits(np.array(case_stratum), folds, 1, val_fraction, seed):
        parts = {p: np.sort(np.concatenate([members[i] for i in idx]).astype(np.int64))
                 for p, idx in s.parts().items()}  # fmt: skip
        out.append(replace(s, **parts))
    return out


# Anchors ----------------------------------------------------------------------------------------
def fold_anchors(
    bags: Sequence[Data],
    train: Sequence[int],
    n_clusters: int = 64,
    n_slides: int | None = 20,
    seed: int = 0,
    max_iter: int = 20,
) -> Tensor:
    """Initial learned anchors ``[K', F]`` of one fold: k-means (scikit-learn, one thread) of the
    instances of the first ``n_slides`` training bags' slides, sorted by slide id (official
    ``run_clustering.py``: the first 20 files, sorted, of the whole dataset). ``K' = min(K, N)``."""
    slides = sorted(
        ((sid, j, int(b)) for b in train for j, sid in enumerate(bags[int(b)].slide_ids)),
    )[: n_slides or None]
    xs = []
    for _, j, b in slides:
        bag = bags[b]
        sel = bag.bag_slide == j if getattr(bag, "bag_slide", None) is not None else slice(None)
        xs.append(bag.x[sel])
    pooled = torch.cat(xs)
    if pooled.size(0) < n_clusters:
        warnings.warn(
            f"{pooled.size(0)} training instances for {n_clusters} anchors: the fold uses "
            f"{pooled.size(0)} anchors",
            stacklevel=2,
        )
    return kmeans(pooled, n_clusters, seed, backend="sklearn", max_iter=max_iter)[0]


# One fold ---------------------------------------------------------------------------------------
@dataclass
class MiCoJob:
    """One fold; ``shared`` holds ``(bags, targets)``."""

    split: Split
    cfg: TrainConfig
    task: str
    n_out: int
    protocol: MiCoProtocol = OFFICIAL

    @property
    def name(self) -> str:
        return f"fold {self.split.fold}"


def _standardise(bags, train, on: bool):
    if not on:
        return list(bags)
    x = torch.cat([bags[int(i)].x for i in train]).double()
    mean, std = x.mean(0), x.std(0, correction=0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    out = []
    for b in bags:
        h = copy.copy(b)
        h.x = ((b.x.double() - mean) / std).to(b.x.dtype)
        out.append(h)
    return out


def _with_targets(bags, idx, targets) -> list[Data]:
    out = []
    for i in idx:
        h = copy.copy(bags[int(i)])
        h.y = torch.tensor([int(targets["y"][i])])
        if "time" in targets:
            h.surv_time = torch.tensor([float(targets["time"][i])])
            h.surv_c = torch.tensor([int(targets["c"][i])])
        out.append(h)
    return out


def _loss(logits: Tensor, batch, task: str) -> Tensor:
    if task == "survival":
        return survival_loss(logits, batch.y, batch.surv_c)
    return F.cross_entropy(logits, batch.y)


@torch.no_grad()
def _evaluate(model: nn.Module, loader, device, task: str) -> dict:
    model.eval()
    logits, ys, ts, cs = [], [], [], []
    for batch in loader:
        batch = batch.to(device)
        logits.append(model(batch).float().cpu())
        ys.append(batch.y.cpu())
        if task == "survival":
            ts.append(batch.surv_time.cpu()), cs.append(batch.surv_c.cpu())
    logits, y = torch.cat(logits), torch.cat(ys)
    if task == "survival":
        t, c = torch.cat(ts), torch.cat(cs)
        risk = risk_scores(logits)
        return {"loss": float(survival_loss(logits, y, c)), "risk": risk.numpy(),
                "c_index": c_index(t.numpy(), risk.numpy(), c.numpy())}  # fmt: skip
    prob = torch.softmax(logits, 1).numpy()
    return {"loss": float(F.cross_entropy(logits, y)), "prob": prob,
            **classification_metrics(y.numpy(), prob)}  # fmt: skip


def _score(val: dict, task: str) -> float:
    """Higher is better: validation macro-F1 (subtyping) or minus the validation loss."""
    return -val["loss"] if task == "survival" else val["f1"]


def train_mico_fold(
    bags: Sequence[Data],
    targets: dict,
    split: Split,
    cfg: TrainConfig,
    task: str,
    n_out: int,
    protocol: MiCoProtocol = OFFICIAL,
    return_model: bool = False,
):
    """Train MiCo on one fold under the official protocol (module docstring), deterministically.

    ``targets``: ``{"y": [M]}`` (classes, or survival bins) plus ``"time"`` and ``"c"`` for
    survival, aligned with ``bags``. Returns a plain dict (and the model with
    ``return_model``)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    with deterministic():
        return _train(bags, targets, split, cfg, task, n_out, protocol, return_model)


def _train(bags, targets, split, cfg, task, n_out, protocol, return_model):
    seed = fold_seed(cfg.seed, split.repeat, split.fold)
    seed_everything(seed)
    device = resolve_device(cfg.device)
    bags = _standardise(bags, split.train, cfg.standardize)
    config = dict(cfg.model_config)
    if config.get("anchors") == "learned":
        init = fold_anchors(bags, split.train, config.get("n_clusters", protocol.n_clusters),
                            protocol.kmeans_slides, seed, protocol.kmeans_iters)  # fmt: skip
        config["n_clusters"] = int(init.size(0))
    else:
        init = None
    data = {p: _with_targets(bags, idx, targets) for p, idx in split.parts().items()}
    gen = torch.Generator().manual_seed(seed)
    train = DataLoader(data["train"], batch_size=cfg.batch_size, shuffle=True, generator=gen)
    val = DataLoader(data["val"], batch_size=cfg.batch_size)
    test = DataLoader(data["test"], batch_size=cfg.batch_size)
    model = build_model(cfg.model, bags[0].x.size(1), n_out, **config)
    if init is not None:
        with torch.no_grad():
            model.net.anchor_weight.copy_(init)
    model = model.to(device)
    opt = lookahead_radam(model, cfg.lr, cfg.weight_decay)
    best_score, best_epoch, best_state, history = -math.inf, 0, None, []
    start = time.perf_counter()
    acc = protocol.grad_accumulation
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        total, n = 0.0, 0
        opt.zero_grad()
        for step, batch in enumerate(train, 1):
            batch = batch.to(device)
            loss = _loss(model(batch), batch, task)
            (loss / acc).backward()
            if step % acc == 0 or step == len(train):
                opt.step()
                opt.zero_grad()
            total, n = total + loss.item() * batch.num_graphs, n + batch.num_graphs
        v = _evaluate(model, val, device, task)
        score = _score(v, task)
        history.append({"epoch": epoch, "train_loss": total / n, "val_loss": v["loss"],
                        "val_f1" if task == "typing" else "val_c_index":
                            v["f1"] if task == "typing" else v["c_index"]})  # fmt: skip
        if best_state is None or score > best_score:
            best_score, best_epoch = score, epoch
            best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
        if protocol.patience and epoch - best_epoch >= protocol.patience:
            break
    train_seconds = time.perf_counter() - start
    model.load_state_dict(best_state)
    out = _evaluate(model, test, device, task)
    test_bags = [bags[int(i)] for i in split.test]
    result = {
        "repeat": split.repeat, "fold": split.fold, "seed": seed, "best_epoch": best_epoch,
        "epochs_run": len(history), "train_seconds": train_seconds, "device": str(device),
        "peak_memory_bytes": _peak_memory(device)[0], "n_anchors": config.get("n_clusters"),
        "val": history[best_epoch - 1], "history": history,
        "test_ids": [",".join(b.slide_ids) for b in test_bags],
        "test_cases": [str(getattr(b, "case_id", b.slide_ids[0])) for b in test_bags],
    }  # fmt: skip
    if task == "survival":
        result |= {"scores": {"c_index": out["c_index"]}, "test_risk": out["risk"].tolist(),
                   "test_times": [float(targets["time"][i]) for i in split.test],
                   "test_censorship": [int(targets["c"][i]) for i in split.test]}  # fmt: skip
    else:
        result |= {"scores": {k: out[k] for k in ("acc", "auc", "f1")},
                   "test_labels": [int(targets["y"][i]) for i in split.test],
                   "test_prob": out["prob"].astype(float).tolist()}  # fmt: skip
    result = _clean(result)
    return (result, model) if return_model else result


def run_mico_job(job: MiCoJob, shared: tuple) -> dict:
    """Worker entry point: one fold."""
    bags, targets = shared
    return train_mico_fold(bags, targets, job.split, job.cfg, job.task, job.n_out, job.protocol)


# The experiment ---------------------------------------------------------------------------------
def mico_train_config(
    model_config: dict, epochs: int, seed: int = 0, device: str = "auto",
    protocol: MiCoProtocol = OFFICIAL,
) -> TrainConfig:  # fmt: skip
    """The :class:`TrainConfig` of a MiCo row: the official lr, weight decay, bag size and
    standardisation (none); ``epochs`` and ``model_config`` from the caller."""
    return TrainConfig(
        "mico", dict(model_config), lr=protocol.lr, weight_decay=protocol.weight_decay,
        epochs=epochs, batch_size=protocol.batch_size, patience=protocol.patience, seed=seed,
        device=device, standardize=protocol.standardize,
    )  # fmt: skip


def _without_clusters(bag: Data) -> Data:
    """A shallow copy of ``bag`` without its cached per-slide cluster labels."""
    if getattr(bag, CLUSTER_KEY, None) is None:
        return bag
    out = copy.copy(bag)
    del out[CLUSTER_KEY]
    return out


def _digest(bags) -> str:
    h = hashlib.blake2b(digest_size=8)
    for b in bags:
        h.update(b.x.detach().cpu().contiguous().numpy().tobytes())
        if getattr(b, CLUSTER_KEY, None) is not None:
            h.update(b[CLUSTER_KEY].numpy().tobytes())
    return h.hexdigest()


def run_mico_experiment(
    name: str,
    graphs: Sequence[Data],
    task: str,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    labels=None,
    times=None,
    censorship=None,
    case_ids: Sequence[str] | None = None,
    folds: int = OFFICIAL.folds,
    n_bins: int = 4,
    protocol: MiCoProtocol = OFFICIAL,
    level: int = 2,
    executor: str = "serial",
    meta: dict | None = None,
    progress: bool = False,
) -> dict:
    """One MiCo row under the official protocol; resumable per fold; writes ``out_dir/<name>.json``.

    Args:
        graphs: one pyramid graph per slide (with ``slide_id``).
        task: ``"typing"`` (needs ``labels``) or ``"survival"`` (``times`` in months and
            ``censorship``, 1 = censored, per slide; the slides of a case must agree).
        cfg: :func:`mico_train_config`; ``cfg.model_config["anchors"]`` picks the row.
        case_ids: the case of each slide (default: each slide its own case).
        folds: official 4 (fewer on tiny data).

    Returns:
        The record: ``name, config, meta, cv, folds`` (long format), ``summary`` (mean / std /
        n per metric), ``fold_details``, ``predictions`` (survival: ``slide_id`` holds the case's
        slides joined by commas), ``timings``, ``config_hashes``, ``git_commit``, ``created``,
        ``versions``.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    start = time.perf_counter()
    out_dir, meta = Path(out_dir), dict(meta or {})
    slide_ids = [str(getattr(g, "slide_id", i)) for i, g in enumerate(graphs)]
    case_ids = [str(c) for c in (case_ids if case_ids is not None else slide_ids)]
    if task == "survival":
        check_features(graphs)
        t = np.asarray(times, dtype=np.float64)
        c = np.asarray(censorship).astype(np.int64)
        bags, cases, members = patient_bags(graphs, case_ids, level)
        for case, idx in zip(cases, members, strict=True):
            if len({(t[i], c[i]) for i in idx}) > 1:
                raise ValueError(f"case {case}: its slides have different survival times")
        first = [idx[0] for idx in members]
        t, c = t[first], c[first]
        bins, edges = survival_bins(t, c, n_bins)
        targets, n_out = {"y": bins, "time": t, "c": c}, n_bins
        joint = np.unique(bins * 2 + c, return_inverse=True)[1]
        try:
            splits = case_splits(cases, joint, folds, protocol.val_fraction, cfg.seed)
            strata = joint
        except ValueError:
            splits = case_splits(cases, c, folds, protocol.val_fraction, cfg.seed)
            strata = c
        ids = [",".join(b.slide_ids) for b in bags]
        extra = {"n_bins": n_bins, "bin_edges": edges.tolist(), "n_cases": len(bags)}
    else:
        y = check_inputs(graphs, labels)  # names a slide with NaN features, odd labels, ...
        bags, ids, strata = slide_bags(graphs, level), slide_ids, y
        targets, n_out = {"y": y}, max(2, int(y.max()) + 1)
        splits = case_splits(case_ids, y, folds, protocol.val_fraction, cfg.seed)
        extra = {"n_slides": len(bags), "class_counts": np.bincount(y).tolist()}
    if cfg.model_config.get("anchors", "slide") == "learned":  # k-means per fold, not per slide:
        bags = [_without_clusters(b) for b in bags]  # cached labels unread, so not in the digest
    write_splits(splits, strata, out_dir / name / "splits.csv", ids)
    payload = {"config": cfg.to_dict(), "protocol": asdict(protocol), "task": task,
               "n_out": n_out, "data": _digest(bags), "targets": _clean({k: np.asarray(v).tolist()
               for k, v in targets.items()})}  # fmt: skip
    hashes = [
        hashlib.sha256(json.dumps(payload | {"fold": s.fold, "parts": {
            p: [ids[i] for i in idx] for p, idx in s.parts().items()}}, sort_keys=True,
            default=str).encode()).hexdigest()[:16]
        for s in splits
    ]  # fmt: skip
    results, reused = resume_folds(
        run_mico_job, lambda s: MiCoJob(s, cfg, task, n_out, protocol), splits, hashes,
        out_dir, name, shared=(bags, targets), executor=executor, progress=progress,
    )  # fmt: skip
    context = {k: meta.get(k) for k in ("table", "row", "dataset", "task")}
    rows = [context | {"repeat": r["repeat"], "fold": r["fold"], "seed": r["seed"], "metric": m,
                       "value": v} for r in results for m, v in r["scores"].items()]  # fmt: skip
    summary = {}
    for m in results[0]["scores"]:
        mean, std = summarise(r["scores"][m] for r in results)
        summary[m] = {"mean": mean, "std": std, "n": len(results)}
    if task == "survival":
        predictions = [{"repeat": r["repeat"], "fold": r["fold"], "slide_id": r["test_ids"],
                        "case_id": r["test_cases"], "time": r["test_times"],
                        "censorship": r["test_censorship"], "risk": r["test_risk"]}
                       for r in results]  # fmt: skip
    else:
        predictions = [{"repeat": r["repeat"], "fold": r["fold"], "slide_id": r["test_ids"],
                        "label": r["test_labels"], "prob": r["test_prob"]} for r in results]  # fmt: skip
    record = {
        "name": name, "config": cfg.to_dict(), "protocol": asdict(protocol), "meta": meta,
        "cv": {"folds": folds, "repeats": 1, "val_fraction": protocol.val_fraction,
               "seed": cfg.seed, "split_by": "case", **extra},
        "folds": rows, "summary": summary,
        "fold_details": [{k: r[k] for k in ("repeat", "fold", "seed", "best_epoch", "epochs_run",
                                            "n_anchors", "val", "device")} | {"reused": w}
                         for r, w in zip(results, reused, strict=True)],
        "predictions": predictions,
        "timings": {"total_seconds": time.perf_counter() - start,
                    "fold_seconds_sum": sum(r["train_seconds"] for r in results)},
        "config_hashes": hashes, "git_commit": git_commit(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "versions": versions(),
    }  # fmt: skip
    _write_json(out_dir / f"{name}.json", record)
    return _clean(record)


# Controls ---------------------------------------------------------------------------------------
#: The control rows of the MiCo tables (issue 17): the simplest models that ignore MiCo's
#: mechanism, a linear model on the slide-mean patch feature.
CONTROL_ROWS = {"typing": "mean-pool + LR (control)", "survival": "mean-pool + Cox (control)"}


def _mean_features(graphs: Sequence[Data], level: int) -> np.ndarray:
    return np.stack([_instances(g, level).double().mean(0).numpy() for g in graphs])


def _fit_control(task: str, x: np.ndarray, fit: np.ndarray, targets: dict, seed: int,
                 n_components: int, penalizer: float):  # fmt: skip
    """Fit the control on rows ``fit`` of ``x``; returns a function ``x -> score``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if task == "typing":
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        model.fit(x[fit], targets["y"][fit])
        return model.predict_proba
    from lifelines import CoxPHFitter
    from sklearn.decomposition import PCA

    k = max(1, min(n_components, x.shape[1], len(fit) - 2))
    reduce = make_pipeline(StandardScaler(), PCA(k, random_state=seed)).fit(x[fit])
    cols = [f"pc{i}" for i in range(k)]
    frame = pd.DataFrame(reduce.transform(x[fit]), columns=cols)
    frame["time"], frame["event"] = targets["time"][fit], 1 - targets["c"][fit]
    cox = CoxPHFitter(penalizer=penalizer).fit(frame, "time", "event")
    return lambda z: cox.predict_partial_hazard(pd.DataFrame(reduce.transform(z), columns=cols))


def run_mean_pool_control(
    name: str,
    graphs: Sequence[Data],
    task: str,
    out_dir: str | Path,
    *,
    labels=None,
    times=None,
    censorship=None,
    case_ids: Sequence[str] | None = None,
    folds: int = OFFICIAL.folds,
    seed: int = 0,
    n_bins: int = 4,
    level: int = 2,
    n_components: int = 8,
    penalizer: float = 0.1,
    meta: dict | None = None,
) -> dict:
    """The control row of a MiCo table on the *same* test folds as the row "MiCo".

    Each slide (survival: each case, its slides' means averaged) becomes the mean of its
    ``level`` patch features. Subtyping: standardise, then scikit-learn's
    ``LogisticRegression`` (C = 1). Survival: standardise, PCA to ``n_components`` (fitted on
    the training cases), then lifelines' ``CoxPHFitter(penalizer)``; the risk is the partial
    hazard. The splits are :func:`case_splits` with ``folds``, the protocol's validation
    fraction and ``seed`` -- exactly those of :func:`run_mico_experiment` with the same
    arguments -- and the control fits on training and validation cases together (it selects
    nothing). Writes ``out_dir/<name>.json``; returns a record with ``summary`` (mean / std /
    n per metric), ``folds`` (long format) and ``predictions``, like the other rows.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    start = time.perf_counter()
    slide_ids = [str(getattr(g, "slide_id", i)) for i, g in enumerate(graphs)]
    case_ids = [str(c) for c in (case_ids if case_ids is not None else slide_ids)]
    x = _mean_features(graphs, level)
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: non-finite slide-mean features")
    if task == "survival":
        t = np.asarray(times, dtype=np.float64)
        c = np.asarray(censorship).astype(np.int64)
        _, cases, members = patient_bags(graphs, case_ids, level)
        x = np.stack([x[idx].mean(0) for idx in members])
        first = [idx[0] for idx in members]
        t, c = t[first], c[first]
        bins, _ = survival_bins(t, c, n_bins)
        joint = np.unique(bins * 2 + c, return_inverse=True)[1]
        try:
            splits = case_splits(cases, joint, folds, OFFICIAL.val_fraction, seed)
        except ValueError:
            splits = case_splits(cases, c, folds, OFFICIAL.val_fraction, seed)
        targets = {"time": t, "c": c}
        ids = [",".join(slide_ids[i] for i in idx) for idx in members]
    else:
        y_ctl = check_inputs(graphs, labels)  # names odd labels, NaN features
        splits = case_splits(case_ids, y_ctl, folds, OFFICIAL.val_fraction, seed)
        targets, ids = {"y": y_ctl}, slide_ids
    meta = dict(meta or {})
    context = {k: meta.get(k) for k in ("table", "row", "dataset", "task")}
    rows, predictions, per_fold = [], [], []
    for s in splits:
        fit = np.sort(np.concatenate([s.train, s.val])).astype(np.int64)
        score = _fit_control(task, x, fit, targets, seed, n_components, penalizer)(x[s.test])
        if task == "typing":
            prob = np.asarray(score, dtype=np.float64)
            scores = classification_metrics(targets["y"][s.test], prob)
            scores = {k: scores[k] for k in ("acc", "auc", "f1")}
            predictions.append({"repeat": s.repeat, "fold": s.fold,
                                "slide_id": [ids[i] for i in s.test],
                                "label": targets["y"][s.test].tolist(),
                                "prob": prob.tolist()})  # fmt: skip
        else:
            risk = np.asarray(score, dtype=np.float64).ravel()
            scores = {"c_index": c_index(t[s.test], risk, c[s.test])}
            predictions.append({"repeat": s.repeat, "fold": s.fold,
                                "slide_id": [ids[i] for i in s.test],
                                "case_id": [cases[i] for i in s.test],
                                "time": t[s.test].tolist(), "censorship": c[s.test].tolist(),
                                "risk": risk.tolist()})  # fmt: skip
        per_fold.append(scores)
        rows += [context | {"repeat": s.repeat, "fold": s.fold, "seed": seed, "metric": m,
                            "value": v} for m, v in scores.items()]  # fmt: skip
    summary = {}
    for m in per_fold[0]:
        mean, std = summarise(f[m] for f in per_fold)
        summary[m] = {"mean": mean, "std": std, "n": len(per_fold)}
    record = {
        "name": name, "meta": meta, "task": task,
        "config": {"model": "logistic regression" if task == "typing" else "Cox PH",
                   "features": f"mean of the level-{level} patch features",
                   "n_components": n_components if task == "survival" else None,
                   "penalizer": penalizer if task == "survival" else None},
        "cv": {"folds": folds, "repeats": 1, "val_fraction": OFFICIAL.val_fraction,
               "seed": seed, "split_by": "case", "fit_on": "train + val"},
        "folds": rows, "summary": summary, "predictions": predictions,
        "timings": {"total_seconds": time.perf_counter() - start},
    }  # fmt: skip
    _write_json(Path(out_dir) / f"{name}.json", _clean(record))
    return _clean(record)


__all__ = [
    "CONTROL_ROWS", "OFFICIAL", "MiCoProtocol", "case_splits", "deterministic", "fold_anchors", "profile_protocol",
    "mico_train_config", "patient_bags", "run_mean_pool_control", "run_mico_experiment", "slide_bags", "train_mico_fold",
]  # fmt: skip
