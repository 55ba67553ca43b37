r"""Survival analysis: discrete-time labels, NLL loss, c-index, survival data and a CV runner.

MiCo (MICCAI 2025) predicts survival as PatchGCN (Chen et al., MICCAI 2021) and MCAT do: the
follow-up time is cut into ``n_bins`` intervals at the quartiles of the *uncensored* cases'
times (:func:`survival_bins`), a model outputs one logit per interval, hazards
:math:`h_j = \sigma(\text{logit}_j)` and survival :math:`S_j = \prod_{i \leq j} (1 - h_i)`; the
loss is the discrete-time negative log-likelihood (:func:`nll_loss`, PatchGCN's ``nll_loss``
with its ``alpha``), the risk is :math:`-\sum_j S_j` and the metric Harrell's concordance index
(:func:`c_index`, lifelines). Any registered model built with ``n_classes = n_bins`` is a
survival model here (ABMIL, CLAM-SB, DS-MIL, MiCo...): its logits are the hazard logits.

:func:`run_survival_experiment` is :func:`wsigraph.train.run.run_experiment` for survival:
repeated k-fold CV (:func:`wsigraph.train.cv.make_splits`, stratified on bin x censorship, or
on censorship alone when a stratum is too small), a validation split that picks the checkpoint
by c-index (ties: lower validation loss) and stops early, one JSON file per finished fold
(reused on rerun while its config hash matches), and one run record with the per-fold test
c-index and its mean / sample std.

Choices
    * Bins are computed on all the cases of the experiment before splitting, as PatchGCN does
      (labels only; a fold's bins do not depend on its split). ``eps = 1e-6`` widens the outer
      edges to the observed min / max time.
    * Auxiliary training terms of the baselines (CLAM's instance clustering, DS-MIL's max
      stream) are not used for survival: every model is trained with :func:`nll_loss` on its
      ``forward`` logits. (DS-MIL's ``forward`` returns log-probabilities, so its hazards are
      bounded by 1/2; it still ranks.)
    * ``alpha = 0`` by default (the official MiCo survival configs set ``alpha_surv: 0.0``).
    * Synthetic survival (:func:`synthetic_survival`) is exponential with hazard
      :math:`\lambda_0 e^{\beta r}` for a slide signal :math:`r` (the demo uses the staging
      label), censored by an independent exponential time, deterministic given the seed.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch_geometric import seed_everything
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from wsigraph.models import build_model
from wsigraph.train.cv import Split, fold_seed, make_splits, write_splits
from wsigraph.train.loop import (
    BestCheckpoint,
    TrainConfig,
    _peak_memory,
    feature_stats,
    prepare,
    resolve_device,
)
from wsigraph.train.metrics import summarise
from wsigraph.train.run import (
    _clean,
    _write_json,
    check_features,
    data_digest,
    git_commit,
    model_fingerprint,
    resume_folds,
    versions,
)

DAYS_PER_MONTH = 365.25 / 12
_MISSING = ("#N/A", "[Not Available]", "[Discrepancy]", "[Unknown]", "[Not Applicable]", "")


# Labels ----------------------------------------------------------------------------------------
def survival_bins(
    times, censorship, n_bins: int = 4, eps: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """PatchGCN's discrete survival labels.

    The bin edges are the ``n_bins``-quantiles of the times of the uncensored cases
    (``censorship == 0``), the outer edges moved to ``min(times) - eps`` and
    ``max(times) + eps``; every case (censored or not) then falls in ``[edge_j, edge_{j+1})``.

    Returns:
        ``(bins [N] int64 in 0..n_bins-1, edges [n_bins + 1])``.

    Raises:
        ValueError: bad shapes, negative or non-finite times, censorship not in {0, 1}, or
            fewer distinct uncensored times than bins.
    """
    t, c = _check_survival(times, censorship)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    events = t[c == 0]
    if len(np.unique(events)) < n_bins:
        raise ValueError(
            f"{len(np.unique(events))} distinct uncensored times cannot make {n_bins} quantile bins"
        )
    _, edges = pd.qcut(events, q=n_bins, retbins=True, labels=False)
    edges[0], edges[-1] = t.min() - eps, t.max() + eps
    bins = pd.cut(t, bins=edges, labels=False, right=False, include_lowest=True)
    return np.asarray(bins, dtype=np.int64), np.asarray(edges, dtype=np.float64)


def _check_survival(times, censorship) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(times, dtype=np.float64).ravel()
    c = np.asarray(censorship, dtype=np.float64).ravel()
    if len(t) != len(c) or len(t) == 0:
        raise ValueError(f"need as many times as censorship flags (>0), got {len(t)} and {len(c)}")
    if not np.isfinite(t).all() or (t < 0).any():
        raise ValueError("survival times must be finite and >= 0")
    if not np.isin(c, (0, 1)).all():
        raise ValueError("censorship must be 0 (event observed) or 1 (censored)")
    return t, c.astype(np.int64)


# Loss, risk, c-index ---------------------------------------------------------------------------
def nll_loss(
    hazards: Tensor, S: Tensor | None, y: Tensor, c: Tensor, alpha: float = 0.0, eps: float = 1e-7
) -> Tensor:
    r"""Discrete-time survival negative log-likelihood (PatchGCN / MCAT ``nll_loss``).

    With :math:`S_{-1} = 1`, for a case in bin :math:`y`:

    .. math::
        \ell_{\text{unc}} = -(1 - c)\big(\log S_{y-1} + \log h_y\big), \qquad
        \ell_{\text{cen}} = -c \log S_y, \qquad
        \ell = (1 - \alpha)(\ell_{\text{unc}} + \ell_{\text{cen}}) + \alpha\, \ell_{\text{unc}},

    averaged over the batch; logs of values clamped to at least ``eps``.

    Args:
        hazards: :math:`(B, T)` in (0, 1).
        S: survival :math:`(B, T)`, or ``None`` for :math:`\prod (1 - h)`.
        y: bins :math:`(B)` in ``0..T-1``.
        c: censorship :math:`(B)` (1 = censored).
        alpha: weight of the extra uncensored term (default ``0.0``).
    """
    b = len(y)
    y = y.view(b, 1).long()
    c = c.view(b, 1).to(hazards.dtype)
    if S is None:
        S = torch.cumprod(1 - hazards, dim=1)
    s_pad = torch.cat([torch.ones_like(c), S], dim=1)  # [B, T + 1]
    uncensored = -(1 - c) * (
        torch.log(torch.gather(s_pad, 1, y).clamp(min=eps))
        + torch.log(torch.gather(hazards, 1, y).clamp(min=eps))
    )
    censored = -c * torch.log(torch.gather(s_pad, 1, y + 1).clamp(min=eps))
    loss = (1 - alpha) * (censored + uncensored) + alpha * uncensored
    return loss.mean()


def survival_loss(logits: Tensor, y: Tensor, c: Tensor, alpha: float = 0.0) -> Tensor:
    """:func:`nll_loss` of hazard logits ``[B, T]``."""
    return nll_loss(torch.sigmoid(logits), None, y, c, alpha)


def risk_scores(logits: Tensor) -> Tensor:
    """PatchGCN's risk ``-sum_j S_j`` ``[B]`` of hazard logits ``[B, T]`` (higher = worse)."""
    return -torch.cumprod(1 - torch.sigmoid(logits), dim=1).sum(dim=1)


def c_index(times, risk, censorship) -> float:
    """Harrell's concordance index of risks (higher risk = shorter survival).

    Uses :func:`lifelines.utils.concordance_index` on ``-risk``; tied risks count 1/2 (as
    scikit-survival's ``concordance_index_censored`` that PatchGCN and MiCo use). ``NaN`` when no
    pair is comparable (e.g. every case censored)."""
    from lifelines.utils import concordance_index

    t, c = _check_survival(times, censorship)
    r = np.asarray(risk, dtype=np.float64).ravel()
    if len(r) != len(t) or not np.isfinite(r).all():
        raise ValueError(f"need {len(t)} finite risks, got {len(r)}")
    try:
        return float(concordance_index(t, -r, 1 - c))
    except ZeroDivisionError:
        return math.nan


# Survival data ---------------------------------------------------------------------------------
def synthetic_survival(
    signal,
    seed: int = 0,
    beta: float = 1.5,
    median_months: float = 36.0,
    censor_median_months: float = 48.0,
) -> pd.DataFrame:
    """Synthetic survival driven by a slide signal ``r`` (e.g. the demo's staging label).

    Event time :math:`T \\sim \\mathrm{Exp}(\\lambda_0 e^{\\beta r})` with
    :math:`\\lambda_0 = \\ln 2 / \\text{median\\_months}`, censoring time
    :math:`C \\sim \\mathrm{Exp}(\\ln 2 / \\text{censor\\_median\\_months})`; observed
    ``time = min(T, C)`` (months), ``censorship = 1`` if :math:`C < T`. Deterministic given
    ``seed``.

    Returns:
        A frame ``time, censorship, event_time, censor_time`` (one row per signal value).
    """
    r = np.asarray(signal, dtype=np.float64).ravel()
    if not np.isfinite(r).all():
        raise ValueError("signal must be finite")
    rng = np.random.default_rng(seed)
    rate = math.log(2) / median_months * np.exp(beta * r)
    event = rng.exponential(1.0 / rate)
    censor = rng.exponential(censor_median_months / math.log(2), size=len(r))
    return pd.DataFrame(
        {
            "time": np.minimum(event, censor),
            "censorship": (censor < event).astype(np.int64),
            "event_time": event,
            "censor_time": censor,
        }
    )


def read_cdr_survival(path: str | Path, types: Sequence[str] | None = None) -> pd.DataFrame:
    """Overall survival from a TCGA-CDR table (Liu et al., Cell 2018; ``OS``: 1 = dead,
    ``OS.time`` in days): ``case_id, type, time`` (months, days / 30.4375), ``censorship``
    (``1 - OS``). Rows whose ``OS`` or ``OS.time`` is missing ("#N/A", "[Not Available]"...)
    are dropped; ``types`` (e.g. ``["KIRP", "KICH"]``) keeps those cancer types.

    Raises:
        ValueError: a needed column is missing, or an ``OS`` value is not 0/1.
    """
    cdr = pd.read_csv(path, dtype=str, keep_default_na=False)
    need = {"bcr_patient_barcode", "type", "OS", "OS.time"}
    if not need <= set(cdr.columns):
        raise ValueError(f"{path}: missing column(s) {sorted(need - set(cdr.columns))}")
    if types is not None:
        cdr = cdr[cdr["type"].isin([t.upper() for t in types])]
    ok = ~cdr["OS"].str.strip().isin(_MISSING) & ~cdr["OS.time"].str.strip().isin(_MISSING)
    cdr = cdr[ok]
    os_ = pd.to_numeric(cdr["OS"], errors="coerce")
    days = pd.to_numeric(cdr["OS.time"], errors="coerce")
    bad = ~os_.isin([0, 1])
    if bad.any():
        raise ValueError(f"{path}: OS must be 0/1, got {sorted(set(cdr.loc[bad, 'OS']))[:5]}")
    keep = days.notna() & (days >= 0)
    return pd.DataFrame(
        {
            "case_id": cdr["bcr_patient_barcode"][keep].to_numpy(),
            "type": cdr["type"][keep].to_numpy(),
            "time": (days[keep] / DAYS_PER_MONTH).to_numpy(),
            "censorship": (1 - os_[keep]).astype(np.int64).to_numpy(),
        }
    )


# Training --------------------------------------------------------------------------------------
@dataclass
class SurvivalJob:
    """One (repeat, fold); ``shared`` holds ``(graphs, bins, times, censorship)``."""

    split: Split
    cfg: TrainConfig
    n_bins: int
    alpha: float = 0.0

    @property
    def name(self) -> str:
        return f"repeat {self.split.repeat} fold {self.split.fold}"


@dataclass
class SurvivalFoldResult:
    """What one survival (repeat, fold) produced (plain values, JSON-friendly)."""

    repeat: int
    fold: int
    seed: int
    c_index: float
    best_epoch: int
    epochs_run: int
    train_seconds: float
    peak_memory_bytes: int
    device: str
    val_c_index: float
    val_loss: float
    test_slide_ids: list[str]
    test_times: list[float]
    test_censorship: list[int]
    test_risk: list[float]
    history: list[dict] = field(default_factory=list)


def _survival_data(graphs, bins, times, cens, idx, mean, std) -> list[Data]:
    out = prepare([graphs[int(i)] for i in idx], bins[idx], mean, std)
    for h, i in zip(out, idx, strict=True):
        h.surv_time = torch.tensor([float(times[i])])
        h.surv_c = torch.tensor([int(cens[i])])
    return out


@torch.no_grad()
def evaluate_survival(model: nn.Module, loader: DataLoader, device, alpha: float = 0.0) -> dict:
    """``loss`` (NLL), ``risk [N]`` and ``c_index`` of every slide of ``loader``."""
    model.eval()
    logits, y, c, t = [], [], [], []
    for batch in loader:
        batch = batch.to(device)
        logits.append(model(batch).float().cpu())
        y.append(batch.y.cpu()), c.append(batch.surv_c.cpu()), t.append(batch.surv_time.cpu())
    logits, y, c, t = torch.cat(logits), torch.cat(y), torch.cat(c), torch.cat(t)
    risk = risk_scores(logits)
    return {
        "loss": float(survival_loss(logits, y, c, alpha)),
        "risk": risk.numpy(),
        "c_index": c_index(t.numpy(), risk.numpy(), c.numpy()),
    }


def train_survival_fold(
    graphs: Sequence[Data],
    bins: np.ndarray,
    times: np.ndarray,
    censorship: np.ndarray,
    split: Split,
    cfg: TrainConfig,
    n_bins: int = 4,
    alpha: float = 0.0,
) -> SurvivalFoldResult:
    """Train ``cfg.model`` (built with ``n_classes = n_bins``) on ``split.train`` with
    :func:`survival_loss`, keep the epoch of best validation c-index, report on ``split.test``.
    Seeds, standardisation and early stopping as :func:`wsigraph.train.loop.train_fold`."""
    if cfg.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {cfg.epochs}")
    seed = fold_seed(cfg.seed, split.repeat, split.fold)
    seed_everything(seed)
    device = resolve_device(cfg.device)
    mean = std = None
    if cfg.standardize:
        mean, std = feature_stats(graphs, split.train)
    data = {
        part: _survival_data(graphs, bins, times, censorship, idx, mean, std)
        for part, idx in split.parts().items()
    }
    gen = torch.Generator().manual_seed(seed)
    train = DataLoader(data["train"], batch_size=cfg.batch_size, shuffle=True, generator=gen)
    val = DataLoader(data["val"], batch_size=cfg.batch_size)
    test = DataLoader(data["test"], batch_size=cfg.batch_size)
    model = build_model(cfg.model, graphs[0].x.shape[1], n_bins, **cfg.model_config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, history, start = BestCheckpoint(cfg.patience), [], time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        total, n = 0.0, 0
        for batch in train:
            batch = batch.to(device)
            optimizer.zero_grad()
            loss = survival_loss(model(batch), batch.y, batch.surv_c, alpha)
            loss.backward()
            optimizer.step()
            total, n = total + loss.item() * batch.num_graphs, n + batch.num_graphs
        v = evaluate_survival(model, val, device, alpha)
        best.update(epoch, v["c_index"], v["loss"], model)
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / n,
                "val_loss": v["loss"],
                "val_c_index": v["c_index"],
            }
        )
        if best.should_stop(epoch):
            break
    train_seconds = time.perf_counter() - start
    best.restore(model)
    out = evaluate_survival(model, test, device, alpha)
    chosen = history[best.best_epoch - 1]
    return SurvivalFoldResult(
        repeat=split.repeat,
        fold=split.fold,
        seed=seed,
        c_index=out["c_index"],
        best_epoch=best.best_epoch,
        epochs_run=len(history),
        train_seconds=train_seconds,
        peak_memory_bytes=_peak_memory(device)[0],
        device=str(device),
        val_c_index=chosen["val_c_index"],
        val_loss=chosen["val_loss"],
        test_slide_ids=[str(getattr(graphs[int(i)], "slide_id", i)) for i in split.test],
        test_times=[float(times[i]) for i in split.test],
        test_censorship=[int(censorship[i]) for i in split.test],
        test_risk=out["risk"].astype(float).tolist(),
        history=history,
    )


def run_survival_job(job: SurvivalJob, shared: tuple) -> dict:
    """Worker entry point: one fold, as a dict."""
    graphs, bins, times, cens = shared
    return asdict(
        train_survival_fold(graphs, bins, times, cens, job.split, job.cfg, job.n_bins, job.alpha)
    )


def survival_splits(
    bins: np.ndarray,
    censorship: np.ndarray,
    folds: int,
    repeats: int,
    val_fraction: float,
    seed: int,
) -> tuple[list[Split], np.ndarray, str]:
    """:func:`make_splits` stratified on ``bin * 2 + censorship``, or on ``censorship`` alone
    when some stratum is too small for it; returns ``(splits, strata, "bin x censorship" |
    "censorship")``."""
    joint = np.asarray(bins) * 2 + np.asarray(censorship)
    _, joint = np.unique(joint, return_inverse=True)
    try:
        return make_splits(joint, folds, repeats, val_fraction, seed), joint, "bin x censorship"
    except ValueError:
        c = np.asarray(censorship).astype(np.int64)
        return make_splits(c, folds, repeats, val_fraction, seed), c, "censorship"


def _hash(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def run_survival_experiment(
    name: str,
    graphs: Sequence[Data],
    times,
    censorship,
    cfg: TrainConfig,
    out_dir: str | Path,
    folds: int,
    repeats: int,
    n_bins: int = 4,
    alpha: float = 0.0,
    executor: str = "serial",
    workers: int | None = None,
    meta: dict | None = None,
    *,
    val_fraction: float = 0.25,
    progress: bool = True,
) -> dict:
    """Survival CV of one model, resumable per fold; writes ``out_dir/<name>.json``.

    Args:
        name: the record's file name (no folders).
        graphs: one graph per case; ``times`` (months) and ``censorship`` (1 = censored) align.
        cfg: training settings (``cfg.model`` any registered model; ``cfg.seed`` seeds splits).
        folds, repeats, val_fraction: the CV protocol.
        n_bins: discrete-time bins (default ``4``, PatchGCN/MiCo); ``alpha``: :func:`nll_loss`.
        executor, workers: :func:`wsigraph.train.executor.run_folds` (default ``"serial"``).
        meta: anything JSON-able stored in the record (``table, row, dataset, task, profile``).

    Returns:
        The record: ``name, config, meta, cv, folds`` (long format, metric ``c_index``),
        ``summary`` (``{"c_index": {"mean", "std", "n"}}``), ``fold_details``, ``predictions``
        (times, censorship, risk per test slide), ``timings``, ``config_hashes``,
        ``git_commit``, ``created``, ``versions``.
    """
    if not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"name must be a plain file name, got {name!r}")
    start = time.perf_counter()
    t, c = _check_survival(times, censorship)
    if len(t) != len(graphs):
        raise ValueError(f"{len(graphs)} graphs but {len(t)} survival times")
    check_features(graphs)
    out_dir, meta = Path(out_dir), dict(meta or {})
    bins, edges = survival_bins(t, c, n_bins)
    splits, strata, strat_name = survival_splits(bins, c, folds, repeats, val_fraction, cfg.seed)
    slide_ids = [str(getattr(g, "slide_id", i)) for i, g in enumerate(graphs)]
    write_splits(splits, strata, out_dir / name / "splits.csv", slide_ids)
    digests = data_digest(graphs)
    model_key = model_fingerprint(
        build_model(cfg.model, graphs[0].x.shape[1], n_bins, **cfg.model_config)
    )
    hashes = [
        _hash(
            {
                "config": cfg.to_dict(),
                "model": model_key,
                "n_bins": n_bins,
                "alpha": alpha,
                "repeat": s.repeat,
                "fold": s.fold,
                "parts": {
                    p: [
                        [slide_ids[i], int(bins[i]), float(t[i]), int(c[i]), digests[i]]
                        for i in idx
                    ]
                    for p, idx in s.parts().items()
                },
            }
        )  # fmt: skip
        for s in splits
    ]
    results, reused = resume_folds(
        run_survival_job,
        lambda s: SurvivalJob(s, cfg, n_bins, alpha),
        splits,
        hashes,
        out_dir,
        name,
        shared=(graphs, bins, t, c),
        executor=executor,
        workers=workers,
        progress=progress,
    )
    res = [SurvivalFoldResult(**r) for r in results]
    context = {k: meta.get(k) for k in ("table", "row", "dataset", "task")}
    mean, std = summarise(r.c_index for r in res)
    record = {
        "name": name,
        "config": cfg.to_dict(),
        "meta": meta,
        "cv": {
            "folds": folds,
            "repeats": repeats,
            "val_fraction": val_fraction,
            "seed": cfg.seed,
            "n_slides": len(t),
            "n_events": int((c == 0).sum()),
            "n_bins": n_bins,
            "bin_edges": edges.tolist(),
            "bin_counts": np.bincount(bins, minlength=n_bins).tolist(),
            "stratified_on": strat_name,
            "alpha": alpha,
        },  # fmt: skip
        "folds": [
            context
            | {
                "repeat": r.repeat,
                "fold": r.fold,
                "seed": r.seed,
                "metric": "c_index",
                "value": r.c_index,
            }
            for r in res
        ],
        "summary": {"c_index": {"mean": mean, "std": std, "n": len(res)}},
        "fold_details": [
            {
                "repeat": r.repeat,
                "fold": r.fold,
                "seed": r.seed,
                "best_epoch": r.best_epoch,
                "epochs_run": r.epochs_run,
                "val_c_index": r.val_c_index,
                "val_loss": r.val_loss,
                "device": r.device,
                "reused": was,
            }
            for r, was in zip(res, reused, strict=True)
        ],  # fmt: skip
        "predictions": [
            {
                "repeat": r.repeat,
                "fold": r.fold,
                "slide_id": r.test_slide_ids,
                "time": r.test_times,
                "censorship": r.test_censorship,
                "risk": r.test_risk,
            }
            for r in res
        ],  # fmt: skip
        "timings": {
            "total_seconds": time.perf_counter() - start,
            "fold_seconds_sum": sum(r.train_seconds for r in res),
        },
        "config_hashes": hashes,
        "git_commit": git_commit(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
    }
    _write_json(out_dir / f"{name}.json", record)
    return _clean(record)


def pooled_predictions(record: dict, repeat: int = 0) -> pd.DataFrame:
    """The test predictions of one repeat of a survival record, all folds pooled:
    ``slide_id, time, censorship, risk, fold, high_risk`` (each case once per repeat).

    ``high_risk`` is 1 when the case's risk is above the median risk of its own test fold
    (each fold has its own model, so risks are split per fold, not on the pooled values)."""
    rows = [
        pd.DataFrame({k: p[k] for k in ("slide_id", "time", "censorship", "risk")}).assign(
            fold=p["fold"]
        )
        for p in record["predictions"]
        if p["repeat"] == repeat
    ]
    if not rows:
        raise ValueError(f"record {record.get('name')!r} has no predictions for repeat {repeat}")
    out = pd.concat(rows, ignore_index=True)
    fold_median = out.groupby("fold")["risk"].transform("median")
    out["high_risk"] = (out["risk"] > fold_median).astype(np.int64)
    return out


def cohort_survival(
    profile, manifest: pd.DataFrame, dataset: str, seed: int = 0, cdr_path: str | Path | None = None
) -> pd.DataFrame:
    """Survival of one dataset's slides: ``slide_id, time`` (months), ``censorship``.

    ``demo`` profile: :func:`synthetic_survival` driven by each slide's staging label (the demo
    cohort's late-stage slides get a 4.5x higher hazard, ``beta = 1.5``), seeded. Other
    profiles: overall survival from the TCGA-CDR table (``cdr_path``, default
    ``data/clinical/tcga_cdr_esca_kich_kirp_kirc.csv``) joined on ``case_id``; slides
    without survival are dropped.
    """
    from wsigraph.data.cohort import PROJECTS

    sub = manifest[manifest["dataset"] == dataset]
    if sub.empty:
        raise ValueError(f"no slide of dataset {dataset!r} in the manifest")
    if profile.name == "demo":
        staging = pd.to_numeric(sub["staging"], errors="coerce")
        sub = sub[staging.isin([0, 1])]
        surv = synthetic_survival(staging[staging.isin([0, 1])].to_numpy(), seed=seed)
        return pd.DataFrame(
            {"slide_id": sub["slide_id"].astype(str).to_numpy(), "time": surv["time"],
             "censorship": surv["censorship"]}
        )  # fmt: skip
    if "case_id" not in sub.columns:
        raise ValueError("the manifest has no case_id column to join survival on")
    from wsigraph.profiles import data_file

    path = cdr_path or data_file("clinical/tcga_cdr_esca_kich_kirp_kirc.csv")
    types = [p.removeprefix("TCGA-") for p in PROJECTS[dataset]]
    cdr = read_cdr_survival(path, types).drop_duplicates("case_id")
    out = sub[["slide_id", "case_id"]].merge(cdr, on="case_id", how="inner")
    return out[["slide_id", "time", "censorship"]].reset_index(drop=True)
