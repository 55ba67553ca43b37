"""Benchmark: RSF + Edge's dense edge convolution (nuclei-graph GCN, Eq. 4), two formulations.

Eq. 4 maps every pair of pooled nodes to new edge features,
``phi(W [v_i + v_k || |v_i - v_k| || a_ik])``. It times, on one thread and on the same input
(median of ``REPEATS`` forward + backward passes):

* ``concatenation``: the pair tensor ``[B, N, N, 2F + L]`` built with ``torch.cat`` and one
  linear map, as the equation reads (the layer's code before this benchmark);
* ours: :class:`wsigraph.nn.rsf.DenseRSFEdgeConv`, by linearity
  ``W+ v_i + W+ v_k + W- |v_i - v_k| + Wa a_ik``, which forms only the ``[B, N, N, F]``
  absolute difference.

Both are checked to agree (float64, to 1e-10) before timing. The shapes are those of the
three edge convolutions in :class:`wsigraph.models.nuclei_gcn.NucleiGCN` (32 then 8 pooled
nodes, 64- then 128-d nodes, 4 edge channels) at a training batch of 8 graphs, and a whole
RSF + Edge training step (forward and backward) on 8 random nuclei graphs of 70 nuclei with
either layer.

Writes ``results/benchmarks/rsf_edge.json``. Run with ``.venv/bin/python benchmarks/rsf_edge.py``.
"""

from __future__ import annotations

import statistics

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from wsigraph.bench import best_time, device_name, write_record
from wsigraph.graphs.nuclei import nuclei_edges
from wsigraph.models import build_model
from wsigraph.nn.rsf import DenseRSFEdgeConv

SEED = 0
REPEATS = 30
BATCH = 8
# (nodes, node features, input edge channels) of Edge Conv 1-3 in NucleiGCN
LAYERS = [(32, 64, 1), (32, 128, 4), (8, 128, 4)]
NUCLEI, FEATURES, SIDE, RADIUS = 70, 18, 256.0, 60.0  # random nuclei graphs for the model step


def concatenation(layer: DenseRSFEdgeConv, x, adj, mask=None):
    """Eq. 4 as written: one linear map of the concatenated pair features."""
    adj = (adj.unsqueeze(-1) if adj.dim() == 3 else adj).to(x.dtype)
    x_i, x_k = x.unsqueeze(2), x.unsqueeze(1)
    out = layer.lin(torch.cat([x_i + x_k, (x_i - x_k).abs(), adj], dim=-1))
    out = layer.act(out) if layer.act is not None else out
    keep = (adj != 0).any(dim=-1, keepdim=True)
    if mask is not None:
        keep = keep & (mask.unsqueeze(2) & mask.unsqueeze(1)).unsqueeze(-1)
    return out * keep.to(out.dtype)


def median_ms(fn) -> float:
    return 1000 * statistics.median(best_time(fn, REPEATS, torch.device("cpu"), warmup=3))


def layer_rows() -> list[dict]:
    rows = []
    for n, f, edge in LAYERS:
        torch.manual_seed(SEED)
        layer = DenseRSFEdgeConv(f, edge, 4)
        x = torch.randn(BATCH, n, f, requires_grad=True)
        adj = torch.rand(BATCH, n, n, edge)
        with torch.no_grad():  # the two formulations agree (float64)
            d = layer.double()
            gap = (d(x.double(), adj.double()) - concatenation(d, x.double(), adj.double())).abs()
            assert float(gap.max()) < 1e-10, float(gap.max())
            layer.float()

        peer = median_ms(lambda: concatenation(layer, x, adj).sum().backward())  # noqa: B023
        ours = median_ms(lambda: layer(x, adj).sum().backward())  # noqa: B023
        rows.append({"what": f"layer: {BATCH} x {n} nodes, {f}-d, {edge} -> 4 edge channels",
                     "concatenation_ms": peer, "ours_ms": ours, "speedup": peer / ours})  # fmt: skip
    return rows


def nuclei_batch() -> Batch:
    rng = np.random.default_rng(SEED)
    graphs = []
    for _ in range(BATCH):
        pos = rng.uniform(0, SIDE, size=(NUCLEI, 2))
        edge_index, weight = nuclei_edges(pos, RADIUS)
        graphs.append(Data(x=torch.randn(NUCLEI, FEATURES), edge_index=edge_index,
                           edge_attr=weight, y=torch.tensor([int(rng.integers(2))])))  # fmt: skip
    return Batch.from_data_list(graphs)


def model_row() -> dict:
    batch = nuclei_batch()
    torch.manual_seed(SEED)
    model = build_model("nuclei-gcn", FEATURES, 2, variant="edge")
    own = DenseRSFEdgeConv.forward
    times = {}
    for name, fwd in (("concatenation", concatenation), ("ours", own)):
        DenseRSFEdgeConv.forward = fwd
        try:
            times[name] = median_ms(lambda: model(batch).sum().backward())
        finally:
            DenseRSFEdgeConv.forward = own
    return {"what": f"RSF + Edge training step: {BATCH} graphs of {NUCLEI} nuclei",
            "concatenation_ms": times["concatenation"], "ours_ms": times["ours"],
            "speedup": times["concatenation"] / times["ours"]}  # fmt: skip


def main() -> None:
    torch.set_num_threads(1)
    rows = [*layer_rows(), model_row()]
    print(f"{device_name(torch.device('cpu'))}, 1 thread; median of {REPEATS}, forward + backward")
    for r in rows:
        print(f"{r['what']:<58} concatenation {r['concatenation_ms']:7.2f} ms   ours "
              f"{r['ours_ms']:7.2f} ms   {r['speedup']:.2f}x")  # fmt: skip
    path = write_record("rsf_edge", "RSF + Edge dense edge convolution (Eq. 4), fwd + bwd",
                        torch.device("cpu"), rows)  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
