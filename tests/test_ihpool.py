import math

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from wsigraph.graphs.pyramid import SCALING, SPATIAL, pyramid_graph
from wsigraph.nn.ihpool import IHPool, from_batch, keep_levels


def _pyramid(n_mid: int, n_bottom: int, f: int = 8, seed: int = 0):
    """Thumbnail + a row of n_mid 5x patches + n_bottom 10x patches dealt round-robin under them
    (at most 4 each, in the 2 x 2 cells inside their parent)."""
    assert n_bottom <= 4 * n_mid or n_mid == n_bottom == 0
    level, row, col, parent = [0], [0], [0], [-1]
    for i in range(n_mid):
        level.append(1), row.append(0), col.append(i), parent.append(0)
    for k in range(n_bottom):
        i, slot = k % n_mid, k // n_mid
        level.append(2), row.append(slot // 2), col.append(2 * i + slot % 2), parent.append(1 + i)
    x = torch.randn(len(level), f, generator=torch.Generator().manual_seed(seed))
    return pyramid_graph(x, np.array(level), np.array(row), np.array(col), np.array(parent))


SIZES = {1: (0, 0), 2: (1, 0), 3: (2, 0), 8: (3, 4), 13: (3, 9)}  # nodes -> (mid, bottom)


@pytest.mark.parametrize("n", [1, 2, 3, 8, 13])
@pytest.mark.parametrize("ratio", [0.1, 0.5, 1.0])
def test_small_graphs_pool_and_keep_the_pyramid(n, ratio):
    g = _pyramid(*SIZES[n])
    assert g.num_nodes == n
    pool = IHPool(8, ratio=ratio).eval()
    p = from_batch(g)
    out, info = pool(p)
    assert out.level[0] == 0 and (out.level == 0).sum() == 1  # the thumbnail is kept alone
    n_mid = int((p.level == 1).sum())
    assert int((out.level == 1).sum()) == (math.ceil(ratio * n_mid) if n_mid else 0)
    # every pooled node's parent is one level up, and a cluster never crosses a coarser cluster
    child = out.parent >= 0
    assert (out.level[out.parent[child]] == out.level[child] - 1).all()
    members_parent = info.assignment[p.parent.clamp(min=0)]
    for c in range(out.num_nodes):
        mem = (info.assignment == c) & (p.level > 0)
        if mem.any():
            assert members_parent[mem].unique().numel() == 1
            assert members_parent[mem][0] == out.parent[c]
    assert info.fitness.shape == (n,) and info.fitness[0] == 0
    assert out.x.shape == (out.num_nodes, 8) and torch.isfinite(out.x).all()


def test_deterministic_in_eval_and_train():
    g = _pyramid(5, 20)
    pool = IHPool(8, ratio=0.3)
    for mode in (pool.eval, pool.train):
        mode()
        a, ia = pool(from_batch(g))
        b, ib = pool(from_batch(g))
        assert torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index)
        assert torch.equal(ia.assignment, ib.assignment)


def test_features_are_convex_combinations_of_members():
    g = _pyramid(4, 16)
    g.x = torch.ones_like(g.x) * 3.0
    out, _ = IHPool(8, ratio=0.5)(from_batch(g))
    torch.testing.assert_close(out.x, torch.full_like(out.x, 3.0))
    g2 = _pyramid(4, 16)
    out, info = IHPool(8, ratio=0.5, official_compat=True)(from_batch(g2))
    for c in range(out.num_nodes):  # plain mean of the members
        torch.testing.assert_close(out.x[c], g2.x[info.assignment == c].mean(0))


def test_coarsened_edges_follow_member_edges():
    g = _pyramid(4, 16)
    p = from_batch(g)
    out, info = IHPool(8, ratio=0.5)(p)
    a = info.assignment
    expected = {(int(a[s]), int(a[d])) for s, d in p.edge_index.t() if a[s] != a[d]}
    got = {tuple(e) for e in out.edge_index.t().tolist()}
    assert got == expected
    assert (out.edge_index[1][1:] >= out.edge_index[1][:-1]).all()  # sorted by destination
    lv = out.level
    types = torch.where(lv[out.edge_index[0]] == lv[out.edge_index[1]], SPATIAL, SCALING)
    assert torch.equal(out.edge_type, types)


def test_batch_pools_like_each_graph_alone():
    graphs = [_pyramid(3, 12, seed=1), _pyramid(5, 10, seed=2), _pyramid(1, 0, seed=3)]
    pool = IHPool(8, ratio=0.4)
    out, _ = pool(from_batch(Batch.from_data_list(graphs)))
    assert (out.batch[1:] >= out.batch[:-1]).all()
    for i, g in enumerate(graphs):
        alone, _ = pool(from_batch(g))
        torch.testing.assert_close(out.x[out.batch == i], alone.x)


def test_fitness_projection_learns_unless_official_compat():
    g = _pyramid(4, 16)
    g.x.requires_grad_()
    for compat, has_grad in ((False, True), (True, False)):
        pool = IHPool(8, ratio=0.5, official_compat=compat)
        out, _ = pool(from_batch(g))
        out.x.square().sum().backward()
        grad = pool.proj.grad
        assert (grad is not None and grad.abs().sum() > 0) == has_grad


def test_keep_levels_reattaches_to_the_nearest_kept_ancestor():
    g = _pyramid(2, 8)  # 1 + 2 + 8 nodes
    p = keep_levels(from_batch(g), (0, 2))
    assert p.num_nodes == 9 and p.level.tolist() == [0] + [1] * 8  # renumbered
    assert (p.parent[1:] == 0).all()
    scaling = p.edge_index[:, p.edge_type == SCALING]
    assert scaling.size(1) == 16 and set(scaling.flatten().tolist()) == set(range(9))
    assert int((p.edge_type == SPATIAL).sum()) == int(
        (g.edge_type == SPATIAL)[(g.level[g.edge_index[0]] == 2)].sum()
    )
    with pytest.raises(ValueError, match="include 0"):
        keep_levels(from_batch(g), (1, 2))


def test_bad_ratio():
    with pytest.raises(ValueError, match="ratio"):
        IHPool(8, ratio=0.0)
