"""Benchmark: segment attention (forward + backward) against the naive PyG formulation.

The graphs are full H2-MIL pyramids (:func:`wsigraph.graphs.pyramid.pyramid_edges`): a
thumbnail, a ``g x g`` grid of 5x patches and the 2 x 2 children of each at 10x, so
``N = 1 + 5 g^2`` (501, 4,501, 19,846 and 99,406 nodes for ``g`` = 10, 30, 63, 141; the first
two are the node counts of the HIGT anchors in DESIGN.md). Each node has about 9 in-edges
(8 spatial neighbours, its parent, its 4 children); the thumbnail's segment holds ``g^2``
edges. Scores and values are random, H = 4 heads, C = 64 channels; segments are destinations.

It times, on the same inputs and in one process (the best of at least ``--repeats`` runs, and
of as many as fit in ``MIN_SECONDS`` for small sizes, after one warm-up),
``out = op(...)`` followed by ``torch.autograd.grad(out, (score, value), grad_out)``:

* ``sparse``: :func:`wsigraph.nn.attention.segment_attention_sparse` (ours on CPU: PyTorch's
  sparse CSR products);
* ``reference``: :func:`wsigraph.nn.attention.segment_attention_reference` (plain PyTorch);
* ``triton``: :func:`wsigraph.nn.attention.segment_attention_triton` (ours on CUDA);
* ``pyg_naive``: ``torch_geometric.utils.softmax`` + gather ``value[src] * alpha`` +
  ``torch_geometric.utils.scatter(..., reduce="sum")``, the formulation of PyG's ``GATConv``.

Peak memory is the most bytes held by torch tensors during one forward + backward, above what
was held before it (inputs excluded, outputs and gradients included): on CUDA from
``torch.cuda.max_memory_allocated``; on CPU from the allocation events of ``torch.profiler``
(``profile_memory=True``; each event carries the allocator's running total), in a separate
untimed pass. Every method's output and gradients are checked against the reference.

Writes (merging with runs on other device types already there)
``results/benchmarks/attention_op.json``. Run with
``.venv/bin/python benchmarks/attention_op.py [--sizes 10 30] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch_geometric.utils import scatter
from torch_geometric.utils import softmax as pyg_softmax

from wsigraph.bench import best_time, cpu_name, environment, peak_bytes
from wsigraph.graphs.pyramid import pyramid_edges
from wsigraph.nn import attention
from wsigraph.nn.attention import (
    segment_attention_reference,
    segment_attention_sparse,
    segment_attention_triton,
)

SEED = 0
GRIDS = (10, 30, 63, 141)  # 5x grid sides: 501, 4,501, 19,846, 99,406 nodes
HEADS, CHANNELS = 4, 64
MIN_SECONDS = 1.0  # small sizes repeat beyond --repeats until this much was timed (noisy hosts)
OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "attention_op.json"

Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]


def pyg_naive(score, value, src, seg, num_segments):
    """The GATConv formulation: PyG softmax, an [E, H, C] gather, a scatter sum."""
    alpha = pyg_softmax(score, seg, num_nodes=num_segments)  # [E, H]
    msg = value.index_select(0, src) * alpha.unsqueeze(-1)  # [E, H, C]
    return scatter(msg, seg, dim=0, dim_size=num_segments, reduce="sum")  # [S, H, C]


def full_pyramid(side: int) -> tuple[np.ndarray, int]:
    """Returns the pyramid's ``edge_index`` [2, E] (sorted by destination) and node count."""
    row5, col5 = np.divmod(np.arange(side * side), side)
    child = np.repeat(np.arange(side * side), 4)  # index of the 5x parent among 5x nodes
    level = np.concatenate([[0], np.full(side * side, 1), np.full(4 * side * side, 2)])
    row = np.concatenate([[0], row5, 2 * row5[child] + np.tile([0, 0, 1, 1], side * side)])
    col = np.concatenate([[0], col5, 2 * col5[child] + np.tile([0, 1, 0, 1], side * side)])
    parent = np.concatenate([[-1], np.zeros(side * side), 1 + child]).astype(np.int64)
    edge_index, _ = pyramid_edges(level, row, col, parent)
    return edge_index, len(level)


def make_inputs(side: int, device: torch.device) -> Inputs:
    edge_index, n = full_pyramid(side)
    gen = torch.Generator().manual_seed(SEED)
    src, seg = (torch.from_numpy(a).to(device) for a in edge_index)
    score = torch.randn(src.numel(), HEADS, generator=gen).to(device).requires_grad_()
    value = torch.randn(n, HEADS, CHANNELS, generator=gen).to(device).requires_grad_()
    return score, value, src, seg, n


def fwd_bwd(op: Callable, inputs: Inputs, grad_out: torch.Tensor) -> list[torch.Tensor]:
    score, value = inputs[:2]
    out = op(*inputs)
    return [out.detach(), *torch.autograd.grad(out, (score, value), grad_out)]


def max_error(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> float:
    return max(
        float((a.double() - b.double()).abs().max()) for a, b in zip(actual, expected, strict=True)
    )


def run_size(side: int, methods: dict[str, Callable], repeats: int, device) -> dict:
    inputs = make_inputs(side, device)
    n, num_edges = inputs[4], inputs[2].numel()
    grad_out = torch.randn(n, HEADS, CHANNELS, generator=torch.Generator().manual_seed(1))
    grad_out = grad_out.to(device)
    expected = fwd_bwd(segment_attention_reference, inputs, grad_out)
    row: dict = dict(nodes=n, edges=num_edges, max_in_degree=int(side * side), methods={})
    for name, op in methods.items():
        times = best_time(lambda op=op: fwd_bwd(op, inputs, grad_out), repeats, device)
        peak = peak_bytes(lambda op=op: fwd_bwd(op, inputs, grad_out), device)
        error = max_error(fwd_bwd(op, inputs, grad_out), expected)
        row["methods"][name] = dict(
            seconds=min(times), seconds_all=times, peak_bytes=peak, max_abs_error=error
        )
    ours = "triton" if "triton" in methods else "sparse"
    row["ours"] = ours
    row["ratios_vs_ours"] = {
        name: dict(
            time=m["seconds"] / row["methods"][ours]["seconds"],
            peak_memory=m["peak_bytes"] / max(1, row["methods"][ours]["peak_bytes"]),
        )
        for name, m in row["methods"].items()
        if name != ours
    }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(GRIDS), help="grid sides")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    methods: dict[str, Callable] = {}
    if device.type == "cuda" and attention.HAS_TRITON and not attention._interpreted():
        methods["triton"] = segment_attention_triton
    else:
        methods["sparse"] = segment_attention_sparse
    methods["reference"] = segment_attention_reference
    methods["pyg_naive"] = pyg_naive
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"{device.type} ({name}), {torch.get_num_threads()} threads, "
          f"H={HEADS}, C={CHANNELS}, best of {args.repeats}")  # fmt: skip

    sizes = []
    for side in args.sizes:
        row = run_size(side, methods, args.repeats, device)
        sizes.append(row)
        print(f"N={row['nodes']:>7,} E={row['edges']:>9,}")
        for method, m in row["methods"].items():
            ratio = row["ratios_vs_ours"].get(method)
            vs = (
                f"  vs ours: {ratio['time']:5.2f}x time {ratio['peak_memory']:6.1f}x memory"
                if ratio
                else ""
            )
            print(
                f"  {method:>10}: {m['seconds'] * 1e3:10.2f} ms  peak {m['peak_bytes'] / 2**20:9.1f} MiB"
                f"  err {m['max_abs_error']:.1e}{vs}"
            )

    run = dict(
        device=device.type,
        device_name=name,
        peak_memory_method=(
            "torch.cuda.max_memory_allocated minus memory_allocated before the call"
            if device.type == "cuda"
            else "torch.profiler(profile_memory=True) allocation events: max running total of "
            "bytes allocated by torch on the CPU during the call"
        ),
        parameters=dict(
            seed=SEED, heads=HEADS, channels=CHANNELS, repeats=args.repeats, min_seconds=MIN_SECONDS
        ),
        chunk_elements=attention.CHUNK_ELEMENTS,
        block_e=attention.BLOCK_E,
        split=attention.SPLIT,
        threads=torch.get_num_threads(),
        sizes=sizes,
        **environment(),
        triton=__import__("triton").__version__ if attention.HAS_TRITON else None,
    )
    record = json.loads(args.out.read_text()) if args.out.exists() else {}
    record = dict(benchmark="attention_op", runs=record.get("runs", {}) | {device.type: run})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
