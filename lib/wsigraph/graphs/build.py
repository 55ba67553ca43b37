"""Build and store one pyramid graph per slide from its feature file (notebook ``03_graphs``).

The graph of a slide is :func:`~wsigraph.graphs.pyramid.pyramid_graph` of its feature file,
with ``pos`` the patch centres (level-0 px; the thumbnail node sits at the slide centre) and
the labels of the manifest as graph attributes ``y_typing`` / ``y_staging`` (``-1`` when
missing). Single-resolution spatial graphs for the baselines are not stored separately: they
are ``level_subgraph(graph, level)`` of the same file, so both can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import Data

from wsigraph.data.features import feature_path, load_features
from wsigraph.graphs.pyramid import SCALING, SPATIAL, load_graph, pyramid_graph, save_graph
from wsigraph.stages import SlideJob, plan_workers, remove_stale_tmp, run_slide_stage, slide_jobs

TASKS = ("typing", "staging")


def graph_path(out_dir: str | Path, slide_id: str) -> Path:
    return Path(out_dir) / f"{slide_id}.pt"


def graph_from_features(record: dict, labels: dict[str, int] | None = None) -> Data:
    """The pyramid graph of one feature record (see :func:`wsigraph.data.features.load_features`)."""
    t = record["tiles"]
    centre = np.stack([t.x + t.size0 / 2, t.y + t.size0 / 2], axis=1)
    centre[t.level == 0] = (t.slide_size[0] / 2, t.slide_size[1] / 2)
    extra = {f"y_{task}": torch.tensor([int(v)]) for task, v in (labels or {}).items()}
    return pyramid_graph(
        record["features"],
        t.level,
        t.row,
        t.col,
        t.parent,
        pos=centre,
        slide_id=record["slide_id"],
        **extra,
    )


@dataclass(frozen=True)
class GraphStage:
    """What every slide task of :func:`build_graphs` shares."""

    features_dir: Path
    out_dir: Path

    def target(self, job: SlideJob) -> Path:
        return graph_path(self.out_dir, job.slide_id)


def graph_task(job: SlideJob, stage: GraphStage) -> dict:
    """The pyramid graph of one slide from its feature file, written to ``stage.target(job)``;
    skipped when that file is newer than the features and sound. Returns the slide's row (see
    :func:`build_graphs`)."""
    src, dst = feature_path(stage.features_dir, job.slide_id), stage.target(job)
    remove_stale_tmp(dst)  # left by a worker killed while writing this slide
    if not src.exists():
        error = (
            f"no feature file {src}: the features stage (notebooks/02_tiles_features.ipynb, "
            "features_summary.csv) failed or skipped this slide"
        )
        return {"status": "no features", "error": error}
    note = ""
    if dst.exists() and dst.stat().st_mtime_ns >= src.stat().st_mtime_ns:
        try:
            graph = load_graph(dst, require_digest=True)
            return {"status": "skipped"} | graph_stats(graph)
        except ValueError as e:  # unreadable or damaged: rebuild, and say so
            note = f"rebuilding {dst}: {str(e).removeprefix(f'{dst}: ')}"
    try:
        graph = graph_from_features(load_features(src), dict(job.labels))
    except ValueError as e:
        error = f"{e}; rerun the features stage (notebooks/02_tiles_features.ipynb) for it"
        return {"status": "failed", "error": error} | ({"note": note} if note else {})
    save_graph(graph, dst)
    return {"status": "done"} | ({"note": note} if note else {}) | graph_stats(graph)


def build_graphs(
    manifest: pd.DataFrame,
    features_dir: str | Path,
    out_dir: str | Path,
    progress: bool = True,
    *,
    executor: str = "serial",
    workers: int | None = None,
    scheduler: str | None = None,
) -> pd.DataFrame:
    """Write ``<slide_id>.pt`` for every slide with features, one task per slide
    (:func:`graph_task`) on any executor of :mod:`wsigraph.stages`; skip graphs newer than
    their features.

    Returns:
        One row per slide: ``slide_id, status`` (``done``, ``skipped``, ``no features``,
        ``failed`` = its feature file is unreadable or damaged), ``error`` (why, and which stage
        to rerun), ``note`` (a damaged graph file that was rebuilt) and the graph's size
        (:func:`graph_stats`). Failed slides are also printed on stderr; the others go on.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_workers(executor, len(manifest), workers, "cpu", scheduler=scheduler)
    stage = GraphStage(Path(features_dir), out_dir)
    jobs = slide_jobs(manifest, TASKS)
    return pd.DataFrame(run_slide_stage(graph_task, jobs, stage, plan, "graphs", progress))


def graph_stats(graph: Data) -> dict[str, int]:
    """Node counts per level and edge counts per type."""
    level = graph.level.numpy()
    names = ["thumbnail"] + [f"level {lv}" for lv in range(1, int(level.max()) + 1)]
    nodes = {f"nodes {n}": int((level == lv).sum()) for lv, n in enumerate(names)}
    types = graph.edge_type.numpy()
    return (
        {"nodes": graph.num_nodes}
        | nodes
        | {
            "spatial edges": int((types == SPATIAL).sum()),
            "scaling edges": int((types == SCALING).sum()),
        }
    )
