"""Benchmark: a full HIGT training step (forward + backward) -- ours vs the official E x N RAConv.

HIGT (``wsigraph.models.higt``) with 1,024-d KimiaNet-sized inputs and the official width
(hidden 1,024, two RAConv+ / IHPool blocks, three HIViT blocks) on one pyramid graph of about
500 and 4,500 nodes (the sizes of the official code's anchors in DESIGN.md). Two models with the
same weights everywhere else, side by side in this process:

* ``ours``: RAConv+ on :func:`~wsigraph.nn.attention.segment_attention` (O(E) memory);
* ``official-raconv``: the same model with each RAConv+ replaced by the official code's
  formulation (``OfficialRAConv(combine="sum")`` of ``benchmarks/attention.py``: prototypes
  scattered from raw features, two message passings, and the E x N' boolean matrix that pairs
  each edge with its prototype's attention).

Everything after the convolutions (IHPool, HIViT, fusion) is ours in both, so the ratios isolate
the convolution's formulation. Times are the best of 3 steps after a warm-up; peak memory as in
``benchmarks/attention.py`` (CUDA: ``max_memory_allocated``; CPU: profiler allocation events).
Writes ``results/benchmarks/higt.json`` (``higt_cuda.json`` on a GPU). Run:
``.venv/bin/python benchmarks/higt.py``.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsigraph.bench import best_time, model_megabytes, peak_bytes, write_record
from wsigraph.graphs.pyramid import pyramid_graph
from wsigraph.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attention import SIDES, OfficialRAConv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IN, HIDDEN = 1024, 1024
SIZES = (500, 4_500)


def slide(nodes: int, seed: int = 0):
    """A pyramid graph of about ``nodes`` nodes: thumbnail, a 5x grid with 30 % background, and
    each 5x patch's 10x children kept with probability 0.7 (as ``benchmarks/attention.py``)."""
    rng = np.random.default_rng(seed)
    side = SIDES[nodes]
    r5, c5 = np.divmod(np.flatnonzero(rng.random(side * side) < 0.7), side)
    level, row, col, parent = [0], [0], [0], [-1]
    for r, c in zip(r5, c5, strict=True):
        level.append(1), row.append(int(r)), col.append(int(c)), parent.append(0)
    for k, (r, c) in enumerate(zip(r5, c5, strict=True), start=1):
        for dr in (0, 1):
            for dc in (0, 1):
                if rng.random() < 0.7:
                    level.append(2), row.append(2 * int(r) + dr), col.append(2 * int(c) + dc)
                    parent.append(k)
    x = torch.from_numpy(rng.standard_normal((len(level), IN)).astype(np.float32))
    g = pyramid_graph(x, np.array(level), np.array(row), np.array(col), np.array(parent))
    g.y = torch.tensor([1])
    return g


def official_variant(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose RAConv+ layers compute as the official code does."""
    other = copy.deepcopy(model)
    for i, conv in enumerate(model.convs):
        official = OfficialRAConv(conv.in_channels, conv.out_channels, conv.heads, combine="sum")
        other.convs[i] = official.to(next(model.parameters()).device)
    return other


def main() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    results = []
    for nodes in SIZES:
        g = slide(nodes)
        batch = g.to(device)
        ours = build_model("higt", IN, 2, hidden=HIDDEN).to(device).train()
        models = {"ours": ours, "official-raconv": official_variant(ours)}
        row = {"nodes": g.num_nodes, "edges": int(g.edge_index.size(1)), "methods": {}}
        print(f"{g.num_nodes} nodes, {g.edge_index.size(1)} edges:")
        for name, model in models.items():

            def run(model=model, batch=batch):
                model.zero_grad(set_to_none=True)
                F.cross_entropy(model(batch), batch.y).backward()

            times = best_time(run, 3, device)
            m = {
                "seconds": min(times),
                "seconds_all": times,
                "peak_bytes": peak_bytes(run, device),
                "model_mb": model_megabytes(model),
            }
            row["methods"][name] = m
            print(
                f"  {name:>16}: {m['seconds'] * 1e3:9.1f} ms  peak {m['peak_bytes'] / 2**20:8.1f} MiB"
            )
        o, r = row["methods"]["ours"], row["methods"]["official-raconv"]
        row["ratios"] = {
            "time": r["seconds"] / o["seconds"],
            "peak_memory": r["peak_bytes"] / max(1, o["peak_bytes"]),
        }
        print(
            f"  ours vs official RAConv: {row['ratios']['time']:.2f}x faster, "
            f"{row['ratios']['peak_memory']:.2f}x less peak memory"
        )
        results.append(row)
    path = write_record(
        "higt",
        "HIGT training step (1024-d input, hidden 1024), ours vs the official E x N RAConv",
        device,
        results,
    )
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
