"""Benchmark: RAConv forward + backward -- ours vs the official E x N formulation vs PyG GATConv.

On pyramid graphs of about 500, 4,500, 20,000 and 100,000 nodes (thumbnail + a 5x grid + its 10x
children, 30 % of cells removed as background), with 1024-d input features (KimiaNet), 4 heads
and 256 channels, it times forward + backward (best of a few) and measures peak memory for:

* ``ours``: :class:`wsigraph.nn.raconv.RAConv` on :func:`~wsigraph.nn.attention.segment_attention`
  (on CPU the sparse CSR path, on CUDA the Triton kernel), and the same layer on the plain
  PyTorch reference as ``ours-reference``;
* ``official``: RAConv as the official H2-MIL/HIGT code computes it -- prototypes by scattering
  the *raw* neighbour features, two PyG-style message passings, and the product of the two
  attentions matched through a boolean ``E x N'`` matrix (``torch.where(type_edge == soft_index
  [:, None])``, N' = number of (node, resolution) prototypes). Re-implemented here from the
  official code's structure for the comparison only; the library never uses it;
* ``gatconv``: :class:`torch_geometric.nn.GATConv` with the same heads and channels;
* on CUDA also ``ours-tf32`` and ``ours-bfloat16``: ours with its projection in TF32 or under
  bf16 autocast (``RAConv(precision=...)``; the attention stays float32).

**The attention part** (issue 21): the same forward + backward without the shared projection
``z = W x`` (1024 -> 4 x 256), which both formulations compute identically: ``z`` is given
(a leaf that takes the gradient) and each layer's ``attend`` does the rest -- ours
(:meth:`RAConv.attend`: scores, both attentions, the weighted sum) against the official
formulation's (its prototype gather and projection, the ``E x N'`` match, the messages).

A method whose estimated memory exceeds the budget is skipped, and the output says so. Peak
memory: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the peak of bytes held by torch
tensors, from the profiler's allocation events. Ratios are measured side by side in this
process. Writes ``results/benchmarks/attention.json``. Run: ``.venv/bin/python benchmarks/attention.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATConv
from torch_geometric.utils import scatter, softmax

from wsigraph.bench import best_time, peak_bytes, write_record
from wsigraph.graphs.pyramid import pyramid_edges
from wsigraph.nn.raconv import RAConv

ROOT = Path(__file__).resolve().parents[1]
IN, HEADS, CH = 1024, 4, 256
SIDES = {500: 14, 4_500: 41, 20_000: 87, 100_000: 194}  # nodes (~2.66 side^2) -> 5x grid side
BOOL_MATRIX_LIMIT = 3e9  # E x N' booleans the official formulation may allocate


class OfficialRAConv(nn.Module):
    """RAConv as the official code computes it (for this benchmark only; see module docstring).

    Follows the official ``RAConv.forward``/``message`` step by step: the per-edge gather of raw
    features for the prototypes, ``T * N`` prototype slots, ``sorted(set(...))`` over the edge
    keys, two softmaxes, and the ``E x N'`` boolean match that pairs each edge with its
    prototype's attention. Messages are ``x_j * alpha`` gathered per edge, as PyG's ``propagate``.
    ``combine="product"`` is H2-MIL's RAConv (Eq. 4); ``"sum"`` is what the official HIGT code
    does for RAConv+ (``t_alpha[...] + alpha``, HIGT Eq. 2).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        heads: int,
        num_types: int = 3,
        combine: str = "product",
    ):
        super().__init__()
        self.H, self.C, self.T, self.combine = heads, out_channels, num_types, combine
        self.lin = nn.Linear(in_channels, heads * out_channels, bias=False)
        self.t_lin = nn.Linear(in_channels, heads * out_channels, bias=False)
        self.att_l = nn.Parameter(torch.randn(1, heads, out_channels) * 0.05)
        self.att_r = nn.Parameter(torch.randn(1, heads, out_channels) * 0.05)
        self.t_att_l = nn.Parameter(torch.randn(1, heads, out_channels) * 0.05)
        self.t_att_r = nn.Parameter(torch.randn(1, heads, out_channels) * 0.05)

    def forward(self, x, edge_index, node_type):
        return self.attend(x, self.lin(x).view(x.size(0), self.H, self.C), edge_index, node_type)

    def attend(self, x, x_l, edge_index, node_type):
        """Everything after the shared projection ``x_l = lin(x)``."""
        N, H, C = x.size(0), self.H, self.C
        src, dst = edge_index
        a_l, a_r = (x_l * self.att_l).sum(-1), (x_l * self.att_r).sum(-1)
        # resolution-level graph, as the official code builds it: raw neighbour features gathered
        # per edge, scattered into T * N prototype slots, and the slots in use found through a
        # Python set of all edge keys
        new_index = node_type[src] + dst * self.T
        t_x = scatter(x[src], new_index, dim=0, dim_size=N * self.T, reduce="mean")
        t_x = self.t_lin(torch.cat([x, t_x])).view(-1, H, C)
        t_al, t_ar = (t_x * self.t_att_l).sum(-1), (t_x * self.t_att_r).sum(-1)
        used = torch.tensor(sorted(set(new_index.tolist())), device=x.device)
        p_src, p_dst = used + N, used // self.T
        t_alpha = softmax(
            F.leaky_relu(t_al[p_src] + t_ar[p_dst], 0.2), p_dst, num_nodes=N
        )  # [N', H]
        inverse = new_index
        # node-level attention within each (dst, type)
        alpha = softmax(F.leaky_relu(a_l[src] + a_r[dst], 0.2), inverse, num_nodes=N * self.T)
        # the official matching of each edge to its prototype: an E x N' boolean matrix
        match = torch.where((p_src - N) == inverse[:, None])[-1]
        alpha = t_alpha[match] * alpha if self.combine == "product" else t_alpha[match] + alpha
        return scatter(x_l[src] * alpha.unsqueeze(-1), dst, dim=0, dim_size=N, reduce="sum").mean(1)


def pyramid(nodes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """edge_index and level of a pyramid graph of about ``nodes`` nodes."""
    rng = np.random.default_rng(seed)
    side = SIDES[nodes]
    r5, c5 = np.divmod(np.flatnonzero(rng.random(side * side) < 0.7), side)
    level, row, col, parent = [0], [0], [0], [-1]
    level += [1] * len(r5)
    row += r5.tolist()
    col += c5.tolist()
    parent += [0] * len(r5)
    for k, (r, c) in enumerate(zip(r5, c5, strict=True), start=1):
        for dr in (0, 1):
            for dc in (0, 1):
                if rng.random() < 0.7:
                    (
                        level.append(2),
                        row.append(2 * r + dr),
                        col.append(2 * c + dc),
                        parent.append(k),
                    )
    edge_index, _ = pyramid_edges(np.array(level), np.array(row), np.array(col), np.array(parent))
    return torch.from_numpy(edge_index), torch.tensor(level)


def step(
    model: nn.Module, x: torch.Tensor, edge_index: torch.Tensor, level: torch.Tensor, gat: bool
) -> None:
    out = model(x, edge_index) if gat else model(x, edge_index, level)
    out.square().mean().backward()


def measure(model, gat, x, edge_index, level, repeats, device) -> dict:
    def run():
        step(model, x, edge_index, level, gat)

    times = best_time(run, repeats, device)
    return {"seconds": min(times), "seconds_all": times, "peak_bytes": peak_bytes(run, device)}


def measure_attention(model, x, edge_index, level, repeats, device) -> dict:
    """Forward + backward of ``model.attend`` from a given projection (see the docstring)."""
    with torch.no_grad():
        z = model.lin(x).view(x.size(0), HEADS, CH)
    z.requires_grad_(True)

    def run():
        z.grad = None
        model.attend(x, z, edge_index, level).square().mean().backward()

    times = best_time(run, repeats, device)
    return {"seconds": min(times), "seconds_all": times, "peak_bytes": peak_bytes(run, device)}


def _show(m: dict) -> str:
    return f"{m['seconds'] * 1e3:10.1f} ms  peak {m['peak_bytes'] / 2**20:9.1f} MiB"


def main() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    results = []
    for nodes in SIDES:
        edge_index, level = pyramid(nodes)
        N, E = level.numel(), edge_index.size(1)
        x = torch.randn(N, IN)
        edge_index, level, x = edge_index.to(device), level.to(device), x.to(device)
        n_protos = int(torch.unique(edge_index[1] * 3 + level[edge_index[0]]).numel())
        methods: dict[str, tuple[nn.Module, bool] | str] = {
            "ours": (RAConv(IN, CH, num_levels=3, heads=HEADS).to(device), False),
            "official": (OfficialRAConv(IN, CH, HEADS).to(device), False)
            if E * n_protos <= BOOL_MATRIX_LIMIT
            else f"skipped: its E x N' matrix would hold {E * n_protos / 1e9:.1f} G booleans",
            "gatconv": (GATConv(IN, CH, heads=HEADS).to(device), True),
        }
        if device.type == "cpu" and N > 50_000:
            methods["gatconv"] = "skipped on CPU above 50,000 nodes (minutes per step)"
        row = {"nodes": N, "edges": E, "prototypes": n_protos, "methods": {}}
        print(f"{N:>7} nodes, {E:>8} edges:")
        for name, spec in methods.items():
            if isinstance(spec, str):
                row["methods"][name] = {"skipped": spec}
                print(f"  {name:>15}: {spec}")
                continue
            model, gat = spec
            repeats = 3 if N <= 20_000 else 1
            row["methods"][name] = measure(model, gat, x, edge_index, level, repeats, device)
            print(f"  {name:>15}: {_show(row['methods'][name])}")
            if name == "ours":  # the same layer on the plain PyTorch reference
                os.environ["WSIGRAPH_ATTENTION"] = "reference"
                row["methods"]["ours-reference"] = measure(
                    model, gat, x, edge_index, level, repeats, device
                )
                del os.environ["WSIGRAPH_ATTENTION"]
                print(f"  {'ours-reference':>15}: {_show(row['methods']['ours-reference'])}")
                if device.type == "cuda":  # the projection in TF32 / bf16 (the same weights)
                    for precision in ("tf32", "bfloat16"):
                        model.precision = precision
                        key = f"ours-{precision}"
                        row["methods"][key] = measure(
                            model, gat, x, edge_index, level, repeats, device
                        )
                        print(f"  {key:>15}: {_show(row['methods'][key])}")
                    model.precision = "float32"
        ours = row["methods"]["ours"]
        row["ratios_vs_ours"] = {
            name: {
                "time": m["seconds"] / ours["seconds"],
                "peak_memory": m["peak_bytes"] / max(1, ours["peak_bytes"]),
            }
            for name, m in row["methods"].items()
            if name != "ours" and "seconds" in m
        }
        for name, r in row["ratios_vs_ours"].items():
            print(
                f"  ours vs {name}: {r['time']:.1f}x faster, {r['peak_memory']:.1f}x less peak memory"
            )
        part = {}
        for name in ("ours", "official"):
            spec = methods[name]
            if isinstance(spec, str):
                continue
            repeats = 3 if N <= 20_000 else 1
            part[name] = measure_attention(spec[0], x, edge_index, level, repeats, device)
            print(f"  {'attention part, ' + name:>24}: {_show(part[name])}")
        if "official" in part:
            part["ratio_official_vs_ours"] = {
                "time": part["official"]["seconds"] / part["ours"]["seconds"],
                "peak_memory": part["official"]["peak_bytes"] / max(1, part["ours"]["peak_bytes"]),
            }
            r = part["ratio_official_vs_ours"]
            print(f"  attention part, ours vs official: {r['time']:.1f}x faster, "
                  f"{r['peak_memory']:.1f}x less peak memory")  # fmt: skip
        row["attention_part"] = part
        results.append(row)

    path = write_record(
        "attention",
        "RAConv forward + backward (1024 -> 4 heads x 256), ours vs official E x N vs PyG GATConv",
        device,
        results,
    )
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
