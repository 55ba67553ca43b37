"""Build and store one pyramid graph per slide from its feature file (notebook ``03_graphs``).

The graph of a slide is :func:`~wsigraph.graphs.pyramid.pyramid_graph` of its feature file,
with ``pos`` the patch centres (level-0 px; the thumbnail node sits at the slide centre) and
the labels of the manifest as graph attributes ``y_typing`` / ``y_staging`` (``-1`` when
missing). Single-resolution spatial graphs for the baselines are not stored separately: they
are ``level_subgraph(graph, level)`` of the same file, so both can never disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import Data
from tqdm import tqdm

from wsigraph.data.features import feature_path, load_features
from wsigraph.graphs.pyramid import SCALING, SPATIAL, load_graph, pyramid_graph, save_graph
from wsigraph.progress import progress_bar

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


def build_graphs(
    manifest: pd.DataFrame, features_dir: str | Path, out_dir: str | Path, progress: bool = True
) -> pd.DataFrame:
    """Write ``<slide_id>.pt`` for every slide with features; skip graphs newer than their features.

    Returns:
        One row per slide: ``slide_id, status`` (``done``, ``skipped``, ``no features``,
        ``failed`` = its feature file is unreadable or damaged), ``error`` (why, and which stage
        to rerun), ``note`` (a damaged graph file that was rebuilt) and the graph's size
        (:func:`graph_stats`). Failed slides are also printed on stderr; the others go on.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for _, row in progress_bar(
        list(manifest.iterrows()), desc="graphs", unit="slide", disable=not progress
    ):
        sid = row["slide_id"]
        src, dst = feature_path(features_dir, sid), graph_path(out_dir, sid)
        if not src.exists():
            error = (
                f"no feature file {src}: the features stage (notebooks/02_tiles_features.ipynb, "
                "features_summary.csv) failed or skipped this slide"
            )
            tqdm.write(f"graphs: slide {sid} skipped: {error}", file=sys.stderr)
            rows.append({"slide_id": sid, "status": "no features", "error": error})
            continue
        note = ""
        if dst.exists() and dst.stat().st_mtime_ns >= src.stat().st_mtime_ns:
            try:
                graph = load_graph(dst, require_digest=True)
                rows.append({"slide_id": sid, "status": "skipped"} | graph_stats(graph))
                continue
            except ValueError as e:  # unreadable or damaged: rebuild, and say so
                note = f"rebuilding {dst}: {str(e).removeprefix(f'{dst}: ')}"
                tqdm.write(f"graphs: {note}", file=sys.stderr)
        labels = {
            task: -1 if pd.isna(row.get(task)) else int(row[task]) for task in TASKS if task in row
        }
        try:
            graph = graph_from_features(load_features(src), labels)
        except ValueError as e:
            error = f"{e}; rerun the features stage (notebooks/02_tiles_features.ipynb) for it"
            tqdm.write(f"graphs: slide {sid} failed: {error}", file=sys.stderr)
            rows.append({"slide_id": sid, "status": "failed", "error": error})
            continue
        save_graph(graph, dst)
        done = {"slide_id": sid, "status": "done"} | ({"note": note} if note else {})
        rows.append(done | graph_stats(graph))
    return pd.DataFrame(rows)


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
