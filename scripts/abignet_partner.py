"""A candidate ABiG-Net demo task, measured at the feature level (issue 17; not part of the demo).

Two kinds of patch express one hidden 3-d attribute ``a`` in *different* features: a U patch in
features 0-2, a V patch in features 3-5 (feature 6 marks the kind, the other 9 of 16 are noise;
every feature carries noise of s.d. 0.02). An ROI holds 32 of each kind. In class 1 every U patch
has a V twin with the same ``a``; in class 0 the V patches draw their own. Each kind's attributes
are a Latin hypercube in both classes, so every per-kind marginal, and the per-ROI mean and std of
every feature, are the same in both classes.

Rows, under the demo's 4 stratified folds with a validation part (96 ROIs):

* the mean/std logistic regression control (:func:`wsigraph.train.probe.mean_std_lr`);
* the official ABiG-Net (generator + dense GCN, :class:`OfficialBilevelConfig`) and the same GCN
  without edges, for each ``--iterations``;
* the official dense GCN (:class:`wsigraph.nn.dense_gcn.DenseGCN`) on a graph computed from the
  features as a generator could compute it: each U patch joined to the V patch whose features 3-5
  are closest to its features 0-2, with weight ``exp(-d^2 / 0.01)``; and on no edges (Adam, lr
  1e-3, ``--epochs`` epochs, one ROI per step, kept at its last epoch).

Run: ``.venv/bin/python scripts/abignet_partner.py --iterations 10 50 200`` (2 cores: ~12 min).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.data import Data

from wsigraph.nn.dense_gcn import DenseGCN
from wsigraph.train.bilevel import OfficialBilevelConfig, cross_validate
from wsigraph.train.cv import make_splits
from wsigraph.train.executor import FoldPool
from wsigraph.train.metrics import summarise
from wsigraph.train.probe import mean_std_lr

N_KIND, DIM, FEATURES, NOISE = 32, 3, 16, 0.02


def latin_hypercube(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    return np.stack([(rng.permutation(n) + rng.random(n)) / n for _ in range(d)], 1)


def partner_roi(rng: np.random.Generator, label: int) -> Data:
    """One ROI of the module docstring: 64 patches on an 8 x 8 grid, in random order."""
    a_u = latin_hypercube(rng, N_KIND, DIM)
    a_v = a_u[rng.permutation(N_KIND)] if label == 1 else latin_hypercube(rng, N_KIND, DIM)
    x = rng.normal(0, NOISE, (2 * N_KIND, FEATURES)).astype(np.float32)
    x[:N_KIND, :DIM] += a_u
    x[N_KIND:, DIM : 2 * DIM] += a_v
    x[:N_KIND, 2 * DIM] += 1.0
    x[N_KIND:, 2 * DIM] -= 1.0
    x = x[rng.permutation(2 * N_KIND)]
    grid = np.stack(np.divmod(np.arange(2 * N_KIND), 8), 1).astype(np.float32)
    n_nuclei = torch.full((2 * N_KIND,), 20)
    return Data(x=torch.from_numpy(x), pos=torch.from_numpy(grid), n_nuclei=n_nuclei)


def partner_graph(x: torch.Tensor) -> torch.Tensor:
    """Each U patch joined to the V patch whose attribute features match its own best."""
    a = torch.eye(len(x))
    is_u = x[:, 2 * DIM] > 0
    d = torch.cdist(x[:, :DIM], x[:, DIM : 2 * DIM])
    d[~is_u] = torch.inf
    d[:, is_u] = torch.inf
    nearest = d.argmin(1)
    for i in torch.nonzero(is_u).flatten().tolist():
        j = int(nearest[i])
        a[i, j] = a[j, i] = torch.exp(-(d[i, j] ** 2) / 0.01)
    return a


def dense_gcn_row(graphs, labels, splits, graph: bool, epochs: int) -> list[float]:
    accs = []
    for split in splits:
        torch.manual_seed(0)
        fit = np.concatenate([split.train, split.val])
        pooled = torch.cat([graphs[i].x for i in fit])
        mean, std = pooled.mean(0), pooled.std(0) + 1e-6
        z = [(g.x - mean) / std for g in graphs]
        adj = [partner_graph(g.x) if graph else torch.eye(len(g.x)) for g in graphs]
        model = DenseGCN(FEATURES, 2)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        for epoch in range(epochs):
            model.train()
            for i in np.random.default_rng(epoch).permutation(fit):
                loss = F.cross_entropy(model(z[i], adj[i]), torch.tensor([int(labels[i])]))
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            hits = [int(model(z[i], adj[i]).argmax()) == labels[i] for i in split.test]
        accs.append(float(np.mean(hits)))
    return accs


def show(name: str, accs: list[float], seconds: float) -> None:
    mean, std = summarise(accs)
    folds = ", ".join(f"{100 * a:.1f}" for a in accs)
    print(f"{name:>40}: {100 * mean:5.1f} ± {100 * std:4.1f} % (folds {folds}; {seconds:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rois", type=int, default=96)
    parser.add_argument("--iterations", type=int, nargs="*", default=[10])
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    labels = np.arange(args.rois) % 2
    graphs = [partner_roi(rng, int(y)) for y in labels]
    splits = make_splits(labels, 4, 1, 0.25, seed=0)
    start = time.perf_counter()
    show("mean/std LR (control)", [f.metrics["acc"] for f in mean_std_lr(graphs, labels, splits)],
         time.perf_counter() - start)  # fmt: skip
    for graph in (True, False):
        start = time.perf_counter()
        accs = dense_gcn_row(graphs, labels, splits, graph, args.epochs)
        name = f"dense GCN, {'partner graph' if graph else 'no edges'}, {args.epochs} ep."
        show(name, accs, time.perf_counter() - start)
    with FoldPool(2) as pool:
        for iterations in args.iterations:
            for row in ("generated", "none"):
                start = time.perf_counter()
                cfg = OfficialBilevelConfig(
                    model_config={"graph": row, "eval_sample": False}, iterations=iterations,
                    checkpoint="last", seed=0, device="cpu",
                )  # fmt: skip
                results = cross_validate(graphs, labels, splits, cfg, n_classes=2, executor=pool)
                name = f"official ABiG-Net{'' if row == 'generated' else ', no edges'}, {iterations} it."
                show(name, [float(r.metrics["acc"]) for r in results], time.perf_counter() - start)


if __name__ == "__main__":
    main()
