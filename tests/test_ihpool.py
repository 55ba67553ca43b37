import math

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from wsigraph.graphs.pyramid import SCALING, SPATIAL, pyramid_graph
from wsigraph.nn.ihpool import IHPool, from_batch, keep_levels, normalise_grid, scale_grid


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


# --- Algorithm 1 pinned by hand ------------------------------------------------------------------


def _hand_pyramid(fit_mid, fit_bottom=(), bottom_cells=(), f: int = 4):
    """Thumbnail + a row of 5x patches with fitness ``tanh(fit_mid)`` (feature 0) + 10x patches
    at ``bottom_cells`` = ``[(parent ordinal, row, col), ...]`` with fitness ``tanh(fit_bottom)``."""
    level, row, col, parent = [0], [0], [0], [-1]
    for i in range(len(fit_mid)):
        level.append(1), row.append(0), col.append(i), parent.append(0)
    for par, r, c in bottom_cells:
        level.append(2), row.append(r), col.append(c), parent.append(1 + par)
    x = torch.zeros(len(level), f)
    x[1 : 1 + len(fit_mid), 0] = torch.tensor(fit_mid, dtype=torch.float)
    if fit_bottom:
        x[1 + len(fit_mid) :, 0] = torch.tensor(fit_bottom, dtype=torch.float)
    return pyramid_graph(x, np.array(level), np.array(row), np.array(col), np.array(parent))


def _hand_pool(ratio: float, f: int = 4) -> IHPool:
    """IHPool whose fitness is tanh(feature 0) at every level."""
    pool = IHPool(f, ratio=ratio).eval()
    with torch.no_grad():
        pool.proj.zero_()
        pool.proj[:, 0] = 1.0
    return pool


def _clusters(info, nodes) -> list[set[int]]:
    """The partition of ``nodes`` by ``info.assignment``, as sets of input indices."""
    out: dict[int, set[int]] = {}
    for n in nodes:
        out.setdefault(int(info.assignment[n]), set()).add(n)
    return sorted(out.values(), key=min)


@pytest.mark.parametrize("scale", ["patches", "normalised"])
def test_algorithm_1_four_patches_in_a_row(scale):
    # Patches A B C D at columns 0..3 with fitness A < D < C < B, ratio 0.5: 2 centres at the
    # evenly spaced fitness ranks 0 and 2 of (A, D, C, B) -> {A, C}, plus the thumbnail alone.
    # B is one column from both A and C, and joins C, whose fitness is closer; D joins C (near).
    A, B, C, D = 1, 2, 3, 4
    g = _hand_pyramid([-1.0, 1.0, 0.5, 0.0])
    p = scale_grid(from_batch(g), scale)
    out, info = _hand_pool(0.5)(p)
    assert set(info.centre.tolist()) == {0, A, C}
    assert _clusters(info, range(5)) == [{0}, {A}, {B, C, D}]
    assert out.level.tolist() == [0, 1, 1]


def test_algorithm_1_the_fitness_term_decides_between_equally_near_centres():
    # Mirror image: B's fitness is now closest to A's, so it joins A.
    A, B, C, D = 1, 2, 3, 4
    g = _hand_pyramid([0.9, 1.0, -0.5, -1.0])  # order D < C < A < B: centres at ranks 0, 2 = D, A
    out, info = _hand_pool(0.5)(scale_grid(from_batch(g), "normalised"))
    assert set(info.centre.tolist()) == {0, D, A}
    assert _clusters(info, range(5)) == [{0}, {A, B}, {C, D}]


def test_algorithm_1_finer_level_pools_inside_its_parents_cluster():
    # 5x: A B C D as above -> clusters {A} and {B, C, D}. 10x: two children under A (cols 0, 1)
    # and two under each of B, C, D; ratio 0.5 keeps ceil(0.5 n) centres per parent cluster.
    A, C = 1, 3
    cells = [(i, 0, 2 * i + k) for i in range(4) for k in range(2)]  # 8 children, 2 per parent
    fit_bottom = [0.1, 0.2, -0.3, 0.3, -0.2, 0.8, 0.5, -0.9]
    g = _hand_pyramid([-1.0, 1.0, 0.5, 0.0], fit_bottom, cells)
    out, info = _hand_pool(0.5)(scale_grid(from_batch(g), "normalised"))
    kids = list(range(5, 13))  # 10x columns 0..7, row 0; nodes 5, 6 under A
    # Under A: 2 nodes, 1 centre at rank 0 (fitness 0.1 < 0.2) -> one cluster of both.
    # Under {B, C, D}: nodes 7..12 (columns 2..7), sorted fitness 12 < 7 < 9 < 8 < 11 < 10;
    # 3 centres at ranks 0, 2, 4 -> 12, 9, 11.
    assert set(info.centre.tolist()) == {0, A, C, 5, 12, 9, 11}
    # Normalised, one column is 2/7. Cost of node 7 (col 2, tanh -0.3 = -0.29): to 9 (col 4,
    # -0.20) 0.57 + 0.09; to 11 (col 6, 0.46) 1.14 + 0.75; to 12 (col 7, -0.72) 1.43 + 0.42.
    # Node 8 (col 3, 0.29): 9 at 0.29 + 0.49 beats 11 at 0.86 + 0.17. Node 10 (col 5, 0.66):
    # 11 at 0.29 + 0.20 beats 9 at 0.29 + 0.86.
    assert _clusters(info, kids) == [{5, 6}, {7, 8, 9}, {10, 11}, {12}]
    assert _clusters(info, kids) == [c for c in _official_loop(g, 0.5) if min(c) >= 5]


def _official_loop(g, ratio: float | int, fine_count: int | None = None) -> list[set[int]]:
    """A plain-Python write-out of Algorithm 1 with the official distance, for one graph:
    coordinates divided by their per-level maximum and mapped to [-1, 1]; fitness tanh(x_0);
    centres at evenly spaced fitness ranks (ceil(ratio n) of them, ranks floor(j n / m));
    each node joins argmin ||g_u - g_c|| + |f_u - f_c| (ties: the lower-ranked centre); the
    nodes of level r are pooled within the cluster of their parent. Returns the clusters."""
    level, parent = g.level.tolist(), g.parent.tolist()
    grid = g.grid.double().tolist()
    fit = [math.tanh(float(v)) for v in g.x[:, 0]]
    norm = {}
    for lv in set(level):
        members = [i for i in range(len(level)) if level[i] == lv]
        peak = [max(grid[i][a] for i in members) for a in (0, 1)]
        for i in members:
            norm[i] = [2 * (grid[i][a] / peak[a] if peak[a] > 0 else 0.0) - 1 for a in (0, 1)]
    cluster_of = {0: 0}
    clusters = [{0}]
    for lv in range(1, max(level) + 1):
        groups: dict[int, list[int]] = {}
        for i in range(len(level)):
            if level[i] == lv:
                groups.setdefault(cluster_of[parent[i]], []).append(i)
        for _, members in sorted(groups.items()):
            ranked = sorted(members, key=lambda i: (fit[i], i))
            n = len(ranked)
            if lv > 1 and fine_count:  # spread from the lowest to the highest fitness
                m = min(n, fine_count)
                centres = [ranked[(j * (n - 1)) // max(1, m - 1)] for j in range(m)]
            elif isinstance(ratio, float):
                m = min(n, max(1, math.ceil(ratio * n)))
                centres = [ranked[(j * n) // m] for j in range(m)]
            elif lv == 1:  # a count: that many regions
                m = min(n, ratio)
                centres = [ranked[(j * n) // m] for j in range(m)]
            else:  # a count, finer levels: the lowest and highest fitness, as official
                m = min(n, 2)
                centres = [ranked[j * (n - 1)] for j in range(m)]
            mine = {c: len(clusters) + k for k, c in enumerate(centres)}
            clusters += [set() for _ in centres]
            for i in members:
                cost = [math.dist(norm[i], norm[c]) + abs(fit[i] - fit[c]) for c in centres]
                best = centres[min(range(m), key=lambda k: (cost[k], k))]
                cluster_of[i] = mine[best]
                clusters[mine[best]].add(i)
    return sorted(clusters, key=min)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ihpool_matches_the_official_distance_written_out(seed):
    # Random 2-level pyramids of different sizes in one batch; every partition must equal the
    # loop write-out's, graph by graph.
    rng = np.random.default_rng(seed)
    graphs = []
    for n_mid in (7, 12):
        fit_mid = rng.normal(size=n_mid).tolist()
        cells = [(i, r, 2 * i + c) for i in range(n_mid) for r in range(2) for c in range(2)]
        cells = [cell for cell in cells if rng.random() < 0.8]
        graphs.append(_hand_pyramid(fit_mid, rng.normal(size=len(cells)).tolist(), cells))
    pool = _hand_pool(0.3)
    b = Batch.from_data_list(graphs)
    _, info = pool(scale_grid(from_batch(b), "normalised"))
    offset = 0
    for g in graphs:
        nodes = range(offset, offset + g.num_nodes)
        got = [{i - offset for i in c} for c in _clusters(info, nodes)]
        assert got == _official_loop(g, 0.3)
        offset += g.num_nodes


def test_normalise_grid_maps_each_slide_and_level_to_minus_one_one():
    g1, g2 = _pyramid(5, 20, seed=0), _pyramid(2, 8, seed=1)
    p = normalise_grid(from_batch(Batch.from_data_list([g1, g2])))
    for b in (0, 1):
        for lv in (1, 2):
            sel = (p.batch == b) & (p.level == lv)
            assert p.grid[sel].min() >= -1 and p.grid[sel].max() == 1  # the max of each axis
    # a single row (every row 0) maps to -1, not NaN
    assert torch.isfinite(p.grid).all() and (p.grid[p.level == 1, 0] == -1).all()
    with pytest.raises(ValueError, match="normalised, patches"):
        scale_grid(p, "pixels")


def test_grid_scale_changes_clusters_on_a_tcga_size_grid():
    # On a 40 x 30 grid of 5x patches the raw-unit distance swamps the fitness term; normalised,
    # fitness matters again and many nodes change cluster.
    rows, cols = np.meshgrid(np.arange(30), np.arange(40), indexing="ij")
    n = rows.size
    level = np.r_[0, np.ones(n, int)]
    row, col = np.r_[0, rows.ravel()], np.r_[0, cols.ravel()]
    x = torch.zeros(n + 1, 4)
    x[1:, 0] = torch.randn(n, generator=torch.Generator().manual_seed(0))
    g = pyramid_graph(x, level, row, col, np.r_[-1, np.zeros(n, int)])
    pool = _hand_pool(0.1)
    _, raw = pool(from_batch(g))
    _, norm = pool(scale_grid(from_batch(g), "normalised"))
    changed = (raw.assignment != norm.assignment).float().mean()
    assert changed > 0.3, float(changed)


@pytest.mark.parametrize("seed", [0, 1])
def test_count_mode_matches_the_official_selection_written_out(seed):
    rng = np.random.default_rng(seed)
    n_mid = 11
    cells = [(i, r, 2 * i + c) for i in range(n_mid) for r in range(2) for c in range(2)]
    g = _hand_pyramid(rng.normal(size=n_mid).tolist(), rng.normal(size=len(cells)).tolist(), cells)
    pool = _hand_pool(4)
    out, info = pool(scale_grid(from_batch(g), "normalised"))
    assert int((out.level == 1).sum()) == 4  # four regions
    # each region keeps two 10x clusters (its extremes), or one if it has a single child
    assert _clusters(info, range(g.num_nodes)) == _official_loop(g, 4)
    assert repr(pool) == "IHPool(4, count=4, levels=3)"


def test_count_mode_by_hand():
    # Patches A..E at columns 0..4 with fitness C < A < E < B < D, count 2: centres at ranks 0
    # and floor(5 / 2) = 2 of (C, A, E, B, D) -> {C, E}. Normalised, one column is 0.5.
    # A (-0.8): C 1.0 + 0.19 vs E 2.0 + 0.2 -> C.  B (0.2): C 0.5 + 1.19 vs E 1.5 + 0.8 -> C.
    # D (0.99): C 0.5 + 1.98 vs E 0.5 + 1.59 -> E.
    g = _hand_pyramid(np.arctanh([-0.8, 0.2, -0.99, 0.99, -0.6]).tolist())
    out, info = _hand_pool(2)(scale_grid(from_batch(g), "normalised"))
    assert set(info.centre.tolist()) == {0, 3, 5}
    assert _clusters(info, range(6)) == [{0}, {1, 2, 3}, {4, 5}]


@pytest.mark.parametrize("bad", [0, -3, 4.5, 1.5, 0.0, "0.1", True, None])
def test_bad_ratios_and_counts_name_the_allowed_values(bad):
    with pytest.raises(ValueError, match=r"\(0, 1\]|count"):
        IHPool(8, ratio=bad)


@pytest.mark.parametrize("ratio", [0.5, 5])
def test_fine_count_spreads_centres_over_each_regions_fitness(ratio):
    # HIGT's official pools: 0.5 then 5 regions, with 4 10x centres per region (drawn at random
    # there, spread over the fitness ranks here).
    rng = np.random.default_rng(3)
    n_mid = 9
    cells = [(i, r, 3 * i + c) for i in range(n_mid) for r in range(3) for c in range(3)]
    cells = [cell for cell in cells if rng.random() < 0.9]
    g = _hand_pyramid(rng.normal(size=n_mid).tolist(), rng.normal(size=len(cells)).tolist(), cells)
    pool = _hand_pool(ratio)
    pool.fine_count = 4
    _, info = pool(scale_grid(from_batch(g), "normalised"))
    assert _clusters(info, range(g.num_nodes)) == _official_loop(g, ratio, fine_count=4)
    with pytest.raises(ValueError, match="fine_count"):
        IHPool(8, fine_count=0)
