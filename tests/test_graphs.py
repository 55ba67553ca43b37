"""Tests for wsigraph.graphs: the H2-MIL pyramid graph and single-resolution graphs."""

import numpy as np
import pytest
import torch

from wsigraph.graphs.pyramid import (
    SCALING,
    SPATIAL,
    grid_edges,
    load_graph,
    pyramid_edges,
    pyramid_graph,
    save_graph,
)
from wsigraph.graphs.spatial import grid_graph, knn_graph, level_subgraph, radius_graph


def edge_set(edge_index) -> set[tuple[int, int]]:
    return set(map(tuple, np.asarray(edge_index).T.tolist()))


def both_ways(pairs) -> set[tuple[int, int]]:
    return {(a, b) for a, b in pairs} | {(b, a) for a, b in pairs}


def assert_dst_sorted(edge_index) -> None:
    src, dst = np.asarray(edge_index)
    key = dst.astype(np.int64) * (max(src.max(initial=0), dst.max(initial=0)) + 1) + src
    assert np.all(np.diff(key) > 0)  # sorted by (dst, src), no duplicates


# Node 0: thumbnail; node 1: the one 5x patch; nodes 2-5: its 2 x 2 children at 10x.
#   10x grid:  2 3
#              4 5
TINY = dict(
    level=[0, 1, 2, 2, 2, 2],
    row=[0, 0, 0, 0, 1, 1],
    col=[0, 0, 0, 1, 0, 1],
    parent=[-1, 0, 1, 1, 1, 1],
)


# (a) the 2 x 2 pyramid, every edge written out
def test_pyramid_edges_tiny():
    edge_index, edge_type = pyramid_edges(**TINY)

    spatial = both_ways([(2, 3), (2, 4), (2, 5), (3, 4), (3, 5), (4, 5)])
    scaling = both_ways([(1, 0), (2, 1), (3, 1), (4, 1), (5, 1)])
    assert edge_index.shape == (2, 22) and edge_index.dtype == np.int64
    assert edge_type.shape == (22,) and edge_type.dtype == np.int8
    assert edge_set(edge_index[:, edge_type == SPATIAL]) == spatial
    assert edge_set(edge_index[:, edge_type == SCALING]) == scaling
    assert_dst_sorted(edge_index)
    # CSR by destination: node 1 receives from the thumbnail and its four children.
    assert edge_index[:, edge_index[1] == 1].tolist() == [[0, 2, 3, 4, 5], [1, 1, 1, 1, 1]]


def test_pyramid_graph_tiny():
    x = torch.arange(12.0).view(6, 2)
    pos = torch.tensor([[512, 512], [512, 512], [256, 256], [256, 768], [768, 256], [768, 768]])
    data = pyramid_graph(x, **TINY, pos=pos, slide_id="slide-1", y_typing=torch.tensor([2]))

    assert data.num_nodes == 6 and data.num_edges == 22
    assert torch.equal(data.x, x)
    assert data.edge_index.dtype == data.edge_type.dtype == torch.long
    assert data.level.tolist() == TINY["level"]
    assert data.parent.tolist() == TINY["parent"]
    assert data.grid.tolist() == [[0, 0], [0, 0], [0, 0], [0, 1], [1, 0], [1, 1]]
    assert data.pos.dtype == torch.float and data.pos.shape == (6, 2)
    assert data.slide_id == "slide-1" and data.y_typing.tolist() == [2]
    assert data.is_undirected() and not data.has_self_loops()


# (b) a sparse grid counted by hand
def test_grid_edges_holey():
    #   col: 0 1 2 3 4 5
    # row 0: 0 1 2
    # row 1: 3 . 4          (hole at (1, 1))
    # row 2: 5 6 7
    # row 5:           8    (isolated)
    cells = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2), (5, 5)]
    row, col = np.array(cells).T
    pairs = [
        (0, 1), (1, 2), (2, 4), (4, 7), (7, 6), (6, 5), (5, 3), (3, 0),  # around the ring
        (1, 3), (1, 4), (3, 6), (4, 6),  # diagonals past the hole
    ]  # fmt: skip
    edge_index = grid_edges(row, col)
    assert edge_index.shape == (2, 24)
    assert edge_set(edge_index) == both_ways(pairs)
    assert_dst_sorted(edge_index)
    assert torch.equal(grid_graph(row, col), torch.from_numpy(edge_index))


def test_grid_edges_groups_and_negative_cells():
    # An L: (0,0) (1,0) (1,1) in group 7, the same cells in group 3 and a shifted copy.
    row = np.array([0, 1, 1, 0, 1, 1, -1])
    col = np.array([0, 0, 1, 0, 0, 1, -1])
    group = np.array([7, 7, 7, 3, 3, 3, 3])
    pairs = [(0, 1), (0, 2), (1, 2), (3, 4), (3, 5), (4, 5), (6, 3)]
    assert edge_set(grid_edges(row, col, group)) == both_ways(pairs)


def test_grid_edges_empty_and_single():
    assert grid_edges([], []).shape == (2, 0)
    assert grid_edges([4], [2]).shape == (2, 0)


# (c) a slide that is only its thumbnail
def test_pyramid_graph_thumbnail_only():
    data = pyramid_graph(torch.ones(1, 8), level=[0], row=[0], col=[0], parent=[-1])
    assert data.num_nodes == 1
    assert data.edge_index.shape == (2, 0) and data.edge_type.shape == (0,)


# (d) invalid inputs
def test_duplicate_cell_raises():
    with pytest.raises(ValueError, match=r"duplicate grid cell \(group=0, row=1, col=2\)"):
        grid_edges([0, 1, 1], [0, 2, 2])
    bad = dict(TINY, row=[0, 0, 0, 0, 1, 0], col=[0, 0, 0, 1, 0, 1])  # node 5 onto node 3
    with pytest.raises(ValueError, match=r"row=0, col=1\) at nodes 3 and 5"):
        pyramid_edges(**bad)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(parent=[-1, 0, 1, 1, 1, 0]), "node 5 \\(level 2\\) has parent 0 \\(level 0\\)"),
        (dict(parent=[-1, 0, 1, 1, 1, 6]), "out of range"),
        (dict(parent=[-1, 0, 1, 1, 1, -1]), "out of range"),
        (dict(parent=[0, 0, 1, 1, 1, 1]), "parent -1"),
        (dict(level=[0, 0, 2, 2, 2, 2]), "exactly one"),
        (dict(level=[1, 1, 2, 2, 2, 2]), "exactly one"),
        (dict(level=[0, 1, 2, 2, 2]), "same length"),
    ],
)
def test_invalid_pyramid_raises(change, message):
    with pytest.raises(ValueError, match=message):
        pyramid_edges(**dict(TINY, **change))


def test_pyramid_graph_invalid_raises():
    with pytest.raises(ValueError, match="0 nodes"):
        pyramid_graph(torch.ones(0, 4), level=[], row=[], col=[], parent=[])
    with pytest.raises(ValueError, match="'x' must have shape"):
        pyramid_graph(torch.ones(5, 4), **TINY)
    with pytest.raises(ValueError, match="clash"):
        pyramid_graph(torch.ones(6, 4), **TINY, edge_type=torch.zeros(22))
    with pytest.raises(ValueError, match="integers"):
        pyramid_graph(torch.ones(6, 4), **dict(TINY, row=[0.0, 0, 0, 0, 1, 1]))


# (e) save / load
def test_save_load_round_trip(tmp_path):
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    data = pyramid_graph(x, **TINY, pos=torch.rand(6, 2), slide_id="s", y_typing=torch.tensor([1]))
    path = tmp_path / "slide.pt"
    save_graph(data, path)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["slide.pt"]  # no temp file left
    raw = torch.load(path, weights_only=True)
    assert isinstance(raw, dict) and isinstance(raw["fields"], dict)
    loaded = load_graph(path)
    assert sorted(loaded.keys()) == sorted(data.keys())
    for name, value in data:
        if isinstance(value, torch.Tensor):
            assert torch.equal(loaded[name], value), name
        else:
            assert loaded[name] == value, name

    save_graph(level_subgraph(data, 2), path)  # overwrite in place
    assert load_graph(path).num_nodes == 4


def test_save_compacts_views(tmp_path):
    big = torch.randn(10_000, 16)
    data = pyramid_graph(big[:6], **TINY)
    save_graph(data, tmp_path / "g.pt")
    assert (tmp_path / "g.pt").stat().st_size < 100_000  # not the 640 kB parent tensor


def test_load_corrupt_raises(tmp_path):
    path = tmp_path / "slide.pt"
    save_graph(pyramid_graph(torch.ones(6, 2), **TINY), path)
    blob = path.read_bytes()
    for size in (0, 10, len(blob) // 2, len(blob) - 1):
        bad = tmp_path / f"cut{size}.pt"
        bad.write_bytes(blob[:size])
        with pytest.raises(ValueError, match=f"cut{size}.pt"):
            load_graph(bad)
    other = tmp_path / "other.pt"
    torch.save(torch.ones(3), other)
    with pytest.raises(ValueError, match="not a wsigraph graph file"):
        load_graph(other)
    with pytest.raises(FileNotFoundError):
        load_graph(tmp_path / "missing.pt")


# (f) single-resolution graphs
POINTS = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [7.0, 0.0]])  # on a line: 0 1 . 2 . . . 3


def test_knn_graph():
    # Nearest other point: 0 <- 1, 1 <- 0, 2 <- 1 (2 < 4), 3 <- 2.
    assert edge_set(knn_graph(POINTS, k=1)) == {(1, 0), (0, 1), (1, 2), (2, 3)}
    # k = 2: 0 <- {1, 2}, 1 <- {0, 2}, 2 <- {1, 0}, 3 <- {2, 1}.
    edge_index = knn_graph(torch.from_numpy(POINTS), k=2)
    assert edge_set(edge_index) == {(1, 0), (2, 0), (0, 1), (2, 1), (1, 2), (0, 2), (2, 3), (1, 3)}
    assert edge_index.dtype == torch.long
    assert_dst_sorted(edge_index)
    # k >= N: every other node.
    full = {(i, j) for i in range(4) for j in range(4) if i != j}
    assert edge_set(knn_graph(POINTS, k=3)) == full
    assert edge_set(knn_graph(POINTS, k=10)) == full
    assert knn_graph(POINTS[:1], k=3).shape == (2, 0)


def test_knn_graph_repeated_points():
    pos = np.zeros((4, 2))  # all at one place: the node itself may not come first
    edge_index = knn_graph(pos, k=2)
    assert edge_index.shape == (2, 8)
    assert not (edge_index[0] == edge_index[1]).any()
    assert torch.bincount(edge_index[1]).tolist() == [2, 2, 2, 2]


def test_radius_graph():
    # Distances: 0-1: 1, 1-2: 2, 0-2: 3, 2-3: 4; the boundary r = 2 is included.
    assert edge_set(radius_graph(POINTS, r=2.0)) == both_ways([(0, 1), (1, 2)])
    assert edge_set(radius_graph(POINTS, r=0.5)) == set()
    assert_dst_sorted(radius_graph(POINTS, r=10.0))
    # On a grid r in [sqrt 2, 2) is the 8-neighbourhood.
    rng = np.random.default_rng(1)
    cells = rng.choice(30 * 30, size=300, replace=False)
    row, col = np.divmod(cells, 30)
    pos = np.stack([row, col], axis=1)
    assert torch.equal(radius_graph(pos, r=1.5), grid_graph(row, col))


def test_level_subgraph():
    x = torch.arange(6.0).view(6, 1)
    data = pyramid_graph(x, **TINY, pos=torch.rand(6, 2), slide_id="s")
    fine = level_subgraph(data, 2)
    assert fine.num_nodes == 4
    assert fine.x.view(-1).tolist() == [2.0, 3.0, 4.0, 5.0]
    assert fine.node_index.tolist() == [2, 3, 4, 5]
    assert fine.grid.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert torch.equal(fine.pos, data.pos[2:])
    assert edge_set(fine.edge_index) == {(i, j) for i in range(4) for j in range(4) if i != j}
    assert_dst_sorted(fine.edge_index)
    assert fine.slide_id == "s" and "edge_type" not in fine and "level" not in fine

    coarse = level_subgraph(data, 1)
    assert coarse.num_nodes == 1 and coarse.edge_index.shape == (2, 0)
    with pytest.raises(ValueError, match="level 3 has no nodes"):
        level_subgraph(data, 3)


# (g) against a naive O(N^2) reference
def naive_grid_edges(row, col, group) -> set[tuple[int, int]]:
    cells = list(zip(group.tolist(), row.tolist(), col.tolist(), strict=True))
    return {
        (j, i)
        for i, (gi, ri, ci) in enumerate(cells)
        for j, (gj, rj, cj) in enumerate(cells)
        if i != j and gi == gj and abs(ri - rj) <= 1 and abs(ci - cj) <= 1
    }


def test_grid_edges_random_vs_naive():
    rng = np.random.default_rng(0)
    # 2000 distinct cells of two 60 x 50 grids, shuffled: about 55% of each grid filled.
    cells = rng.choice(2 * 60 * 50, size=2000, replace=False)
    group, rest = np.divmod(cells, 60 * 50)
    row, col = np.divmod(rest, 50)
    edge_index = grid_edges(row - 10, col, group + 1)

    expected = naive_grid_edges(row, col, group)
    assert len(expected) > 4000  # the test means something
    assert edge_index.shape[1] == len(expected)
    assert edge_set(edge_index) == expected
    assert_dst_sorted(edge_index)


def test_pyramid_edges_random_structure():
    rng = np.random.default_rng(0)
    coarse = rng.choice(20 * 20, size=200, replace=False)  # level-1 cells
    r1, c1 = np.divmod(coarse, 20)
    child = np.repeat(np.arange(200), 4)  # each level-1 node has 4 candidate children
    r2 = 2 * r1[child] + np.tile([0, 0, 1, 1], 200)
    c2 = 2 * c1[child] + np.tile([0, 1, 0, 1], 200)
    keep = rng.random(800) < 0.7
    level = np.concatenate([[0], np.ones(200, int), np.full(keep.sum(), 2)])
    row = np.concatenate([[0], r1, r2[keep]])
    col = np.concatenate([[0], c1, c2[keep]])
    parent = np.concatenate([[-1], np.zeros(200, int), 1 + child[keep]])

    edge_index, edge_type = pyramid_edges(level, row, col, parent)
    assert_dst_sorted(edge_index)
    assert edge_set(edge_index) == edge_set(edge_index[::-1])  # symmetric
    src, dst = edge_index
    assert np.all((level[src] == level[dst]) == (edge_type == SPATIAL))
    assert (edge_type == SCALING).sum() == 2 * (len(level) - 1)
    expected = naive_grid_edges(row, col, level)
    assert edge_set(edge_index[:, edge_type == SPATIAL]) == expected
