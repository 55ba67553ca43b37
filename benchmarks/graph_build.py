"""Benchmark: building the edges of an H2-MIL pyramid graph of about 100,000 patches.

The synthetic slide is a thumbnail, a 190 x 190 grid of 5x patches and the 2 x 2 children of
each at 10x; 30% of the 5x cells and then 30% of the remaining 10x cells are removed at random
as background (a 5x patch may lose all its children; parent links stay valid). That leaves
about 25,000 5x and 71,000 10x patches.

It times, on one thread and on the same input (best of ``REPEATS``):

* ours: :func:`wsigraph.graphs.pyramid.pyramid_edges` (validation, spatial and scaling edges,
  and the final sort by ``(dst, src)``);
* ``naive_loop``: a per-patch Python loop looking up the 8 neighbours of each patch in a dict,
  the way the official H2-MIL notebook builds its edges (with tuple keys rather than its
  string keys, which only favours the peer). No final sort.
* ``sklearn_radius``: :func:`sklearn.neighbors.radius_neighbors_graph` on each level's grid
  cells with radius 1.5 (any radius in [sqrt 2, 2) is exactly the 8-neighbourhood; 1.5
  keeps clear of rounding at sqrt 2), plus the parent links. No final sort.

A peer whose estimated full-size time exceeds ``PEER_BUDGET_S`` runs on a subset (the first
5x rows and their children) and its time is scaled linearly by the node count; the output
says so. Every peer's typed edge set is checked against ours on the input it ran on.

Writes ``results/benchmarks/graph_build.json``. Run with
``.venv/bin/python benchmarks/graph_build.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy
import sklearn
import torch
from sklearn.neighbors import radius_neighbors_graph
from threadpoolctl import threadpool_limits

from wsigraph.bench import environment
from wsigraph.graphs.pyramid import SCALING, SPATIAL, pyramid_edges, pyramid_graph

SEED = 0
GRID_5X = (190, 190)  # rows, cols of the 5x grid before background removal
KEEP = 0.7  # fraction of 5x cells, then of their 10x children, kept as tissue
REPEATS = 3
PEER_BUDGET_S = 60.0
PILOT_NODES = 10_000  # subset size used to estimate a peer's full-size time
OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "graph_build.json"

Pyramid = dict[str, np.ndarray]  # level, row, col, parent: [N] int64 each
Edges = tuple[np.ndarray, np.ndarray]  # edge_index [2, E], edge_type [E]


def synthetic_pyramid(grid: tuple[int, int], keep: float, seed: int) -> Pyramid:
    """Returns a thumbnail + 5x + 10x pyramid with random background removed."""
    rng = np.random.default_rng(seed)
    cells = np.flatnonzero(rng.random(grid[0] * grid[1]) < keep)  # kept 5x cells
    row5, col5 = np.divmod(cells, grid[1])
    n5 = len(cells)
    child = np.repeat(np.arange(n5), 4)  # [4 n5], index of the 5x parent among 5x nodes
    row10 = 2 * row5[child] + np.tile([0, 0, 1, 1], n5)
    col10 = 2 * col5[child] + np.tile([0, 1, 0, 1], n5)
    kept = rng.random(4 * n5) < keep
    n10 = int(kept.sum())
    return dict(
        level=np.concatenate([[0], np.full(n5, 1), np.full(n10, 2)]).astype(np.int64),
        row=np.concatenate([[0], row5, row10[kept]]).astype(np.int64),
        col=np.concatenate([[0], col5, col10[kept]]).astype(np.int64),
        parent=np.concatenate([[-1], np.zeros(n5), 1 + child[kept]]).astype(np.int64),
    )


def sub_pyramid(pyr: Pyramid, max_nodes: int) -> Pyramid:
    """Returns the thumbnail, the first 5x rows and their 10x children: about ``max_nodes``."""
    level, row, parent = pyr["level"], pyr["row"], pyr["parent"]
    rows5 = np.sort(row[level == 1])
    cut = rows5[min(len(rows5) - 1, max_nodes // 4)]  # ~1 5x patch per 3 10x patches
    keep = (level == 0) | ((level == 1) & (row < cut))
    keep |= (level == 2) & keep[np.maximum(parent, 0)]
    new_id = np.cumsum(keep) - 1
    sub = {name: a[keep] for name, a in pyr.items()}
    sub["parent"] = np.where(sub["parent"] >= 0, new_id[np.maximum(sub["parent"], 0)], -1)
    return sub


def naive_loop_edges(level, row, col, parent) -> Edges:
    """Per-patch Python loop with a dict of cells, as in the official H2-MIL notebook."""
    level, row, col, parent = (a.tolist() for a in (level, row, col, parent))
    index = {cell: i for i, cell in enumerate(zip(level, row, col, strict=True))}
    offsets = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]
    src, dst, kind = [], [], []
    for i, (lv, r, c, p) in enumerate(zip(level, row, col, parent, strict=True)):
        for dr, dc in offsets:
            j = index.get((lv, r + dr, c + dc))
            if j is not None:
                src.append(j)
                dst.append(i)
                kind.append(SPATIAL)
        if p >= 0:
            src += [i, p]
            dst += [p, i]
            kind += [SCALING, SCALING]
    return np.array([src, dst], dtype=np.int64), np.array(kind, dtype=np.int8)


def sklearn_radius_edges(level, row, col, parent) -> Edges:
    """scikit-learn radius graph per level, plus the parent links."""
    src, dst = [], []
    for lv in np.unique(level):
        idx = np.flatnonzero(level == lv)
        cells = np.stack([row[idx], col[idx]], axis=1).astype(np.float64)
        adj = radius_neighbors_graph(cells, radius=1.5, include_self=False).tocoo()
        src.append(idx[adj.col])
        dst.append(idx[adj.row])
    n_spatial = sum(len(s) for s in src)
    child = np.flatnonzero(parent >= 0)
    src += [child, parent[child]]
    dst += [parent[child], child]
    edge_type = np.full(n_spatial + 2 * len(child), SCALING, dtype=np.int8)
    edge_type[:n_spatial] = SPATIAL
    return np.stack([np.concatenate(src), np.concatenate(dst)]), edge_type


def best_of(fn: Callable[[], Edges], repeats: int) -> tuple[float, list[float], Edges]:
    """Returns the best and all wall-clock times of ``fn()``, and its last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), times, out


def typed_edge_keys(edges: Edges, num_nodes: int) -> np.ndarray:
    """Returns the sorted ``(type, dst, src)`` keys of the edges, for set comparison."""
    (src, dst), edge_type = edges
    return np.sort((edge_type.astype(np.int64) * num_nodes + dst) * num_nodes + src)


def run_peer(fn: Callable[..., Edges], pyr: Pyramid) -> dict:
    """Times a peer at full size, or on a subset scaled linearly if it would be too slow."""
    n_full = len(pyr["level"])
    pilot = sub_pyramid(pyr, PILOT_NODES)
    pilot_s, _, _ = best_of(lambda: fn(**pilot), 1)
    estimate = pilot_s * n_full / len(pilot["level"]) * REPEATS
    on = pyr if estimate <= PEER_BUDGET_S else pilot
    n = len(on["level"])
    seconds, times, edges = best_of(lambda: fn(**on), REPEATS)
    ours = pyramid_edges(**on)
    same = bool(np.array_equal(typed_edge_keys(edges, n), typed_edge_keys(ours, n)))
    scaled = n != n_full
    return dict(
        seconds=seconds * n_full / n,
        measured_seconds=seconds,
        seconds_all=times,
        nodes_timed=n,
        scaled_linearly=scaled,
        same_edges=same,
        same_edges_checked_on_nodes=n,
    )


def main() -> None:
    torch.set_num_threads(1)
    pyr = synthetic_pyramid(GRID_5X, KEEP, SEED)
    n_nodes = len(pyr["level"])
    per_level = np.bincount(pyr["level"]).tolist()
    print(f"pyramid: {n_nodes} nodes (per level {per_level}), 1 thread, best of {REPEATS}")

    with threadpool_limits(limits=1):
        seconds, times, (edge_index, edge_type) = best_of(lambda: pyramid_edges(**pyr), REPEATS)
        x = torch.zeros(n_nodes, 1)
        graph_s, _, _ = best_of(lambda: pyramid_graph(x, **pyr), REPEATS)
        peers = {
            "naive_loop": run_peer(naive_loop_edges, pyr),
            "sklearn_radius": run_peer(sklearn_radius_edges, pyr),
        }
    n_edges = edge_index.shape[1]

    print(
        f"ours  pyramid_edges: {seconds:8.3f} s  {n_edges / seconds:12,.0f} edges/s  {n_edges} edges"
    )
    print(f"ours  pyramid_graph: {graph_s:8.3f} s  (edges + Data)")
    for name, peer in peers.items():
        peer["ratio"] = peer["seconds"] / seconds
        note = (
            f"  (timed on {peer['nodes_timed']} nodes, scaled linearly)"
            if peer["scaled_linearly"]
            else ""
        )
        print(
            f"{name:>15}: {peer['seconds']:8.3f} s  ratio {peer['ratio']:6.1f}x  "
            f"same edges: {peer['same_edges']}{note}"
        )

    record = dict(
        benchmark="graph_build",
        parameters=dict(seed=SEED, grid_5x=GRID_5X, keep=KEEP, repeats=REPEATS),
        n_nodes=n_nodes,
        n_nodes_per_level=per_level,
        n_edges=n_edges,
        n_edges_spatial=int((edge_type == SPATIAL).sum()),
        n_edges_scaling=int((edge_type == SCALING).sum()),
        seconds=seconds,
        seconds_all=times,
        edges_per_s=n_edges / seconds,
        pyramid_graph_seconds=graph_s,
        peers=peers,
        ratios={name: peer["ratio"] for name, peer in peers.items()},
        threads=1,
        **environment(),
        scipy=scipy.__version__,
        sklearn=sklearn.__version__,
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(OUT.parents[2])}")


if __name__ == "__main__":
    main()
