"""The ABiG-Net demo generator (data/synthetic_rois.py): per-patch and per-ROI statistics carry
no class signal (the mean/std control stays within chance + 10 points), the look-alike groups
do (the oracle and a measured nearest-patch distance separate the classes), and the sets are
deterministic."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from wsigraph.data.synthetic_rois import (
    GROUP_SIZE,
    PARAM_NAMES,
    RELATION_CLASSES,
    lookalike_distance,
    lookalike_edges,
    nearest_patch_distance,
    relation_rois,
    roi_mean_std,
)
from wsigraph.graphs.abignet_features import image_patch_features

N = 12  # ROIs per class


@pytest.fixture(scope="module")
def melanoma():
    s = relation_rois("melanoma", N, seed=5)
    feats = [
        image_patch_features(
            s.instances[i], s.images[i], patch_size=64, min_nuclei=8, radius=20.0
        ).features
        for i in range(len(s.labels))
    ]
    return s, feats


def _cv_acc(x, y) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    return float(cross_val_score(model, x, y, cv=cv).mean())


def _position_features(nuclei: np.ndarray, grid: int = 8, patch: int = 64) -> np.ndarray:
    """``[P, 5]`` per patch, from the drawn centres: count, mean, std and min nearest-neighbour
    distance, mean neighbours within 10 px (what the official positional features summarise)."""
    from scipy.spatial import cKDTree

    cell = (nuclei[:, 0] // patch).astype(int) * grid + (nuclei[:, 1] // patch).astype(int)
    rows = []
    for p in range(grid * grid):
        yx = nuclei[cell == p, :2]
        tree = cKDTree(yx)
        d, _ = tree.query(yx, 2)
        near = [len(n) - 1 for n in tree.query_ball_point(yx, 10.0)]
        rows.append([len(yx), d[:, 1].mean(), d[:, 1].std(), d[:, 1].min(), np.mean(near)])
    return np.array(rows)


def _scaled(feats):
    pooled = np.concatenate(feats)
    mu, sd = pooled.mean(0), pooled.std(0) + 1e-12
    return [(f - mu) / sd for f in feats]


@pytest.mark.parametrize(
    ("task", "n", "bound"), [("melanoma", 100, 0.60), ("crc3", 40, 1 / 3 + 0.10)]
)
def test_mean_std_control_stays_within_chance_plus_10_points(task, n, bound):
    s = relation_rois(task, n, seed=11, render=False)
    assert s.images.shape[1:3] == (0, 0) and s.groups.shape[1] >= 64
    feats = [_position_features(e) for e in s.nuclei]
    assert _cv_acc(roi_mean_std(feats), s.labels) <= bound
    # the same per-patch statistics compared between the patches of an ROI (mechanism-aware:
    # the distance to the most alike other patch) do separate
    near = nearest_patch_distance(_scaled(feats))
    assert _cv_acc(near[:, None], s.labels) > bound + 0.15


def test_official_features_keep_all_64_patches(melanoma):
    _, feats = melanoma
    assert all(f.shape == (64, 69) for f in feats)


def test_ground_truth_and_the_official_features_separate_the_classes(melanoma):
    s, feats = melanoma
    truth = lookalike_distance(s.params)
    assert truth[s.labels == 0].max() < 1e-9 and truth[s.labels == 1].min() > 0.05
    # measured: the nearest other patch in the 69 standardised official features is closer
    # in a grouped ROI
    near = nearest_patch_distance(_scaled([np.nan_to_num(f) for f in feats]))
    assert near[s.labels == 0].mean() < near[s.labels == 1].mean()


def test_groups_and_marginals():
    s = relation_rois("crc3", 6, grid=8, seed=2)
    assert s.groups.shape == (18, 64) and s.params.shape == (18, 64, len(PARAM_NAMES))
    np.testing.assert_array_equal(s.styles, s.params[..., 0])
    np.testing.assert_array_equal(s.marks, s.params[..., 1])
    for i, c in enumerate(s.labels):
        sizes = np.bincount(s.groups[i])
        want = {0: 64, 1: 32, 2: 0}[int(c)]  # normal: all grouped, low: half, high: none
        assert s.grouped[i].sum() == want == (sizes == GROUP_SIZE).sum() * GROUP_SIZE
        assert np.all((sizes == GROUP_SIZE) | (sizes == 1))
        for g in np.unique(s.groups[i]):  # one draw per group
            assert len(np.unique(s.params[i][s.groups[i] == g], axis=0)) == 1
        # a Latin hypercube: each parameter's draws fall one per 1/D of its range
        draws = np.unique(s.params[i], axis=0)
        lo = np.array([12.0, 0.0, 3.0, 4.0])
        hi = np.array([36.0, 1.0, 8.0, 6.5])
        strata = np.floor((draws - lo) / (hi - lo) * len(draws)).astype(int)
        for d in range(4):
            np.testing.assert_array_equal(np.sort(strata[:, d]), np.arange(len(draws)))
    truth = lookalike_distance(s.params)
    means = [truth[s.labels == c].mean() for c in range(3)]
    assert means[0] < 1e-9 < means[1] < means[2]  # normal < low grade < high grade
    # no nucleus crosses a patch border (so cropping a patch never cuts one)
    for e in s.nuclei:
        cell = lambda v: (v // s.patch_size).astype(int)  # noqa: E731
        reach = e[:, 2:3]
        assert np.all(cell(e[:, :2] - reach) == cell(e[:, :2] + reach))
    # the drawn number of nuclei is placed (the hard core never runs out of room)
    counts = [np.bincount(
        (e[:, 0] // 64).astype(int) * 8 + (e[:, 1] // 64).astype(int), minlength=64
    ) for e in s.nuclei]  # fmt: skip
    np.testing.assert_array_equal(np.stack(counts), np.round(s.styles).astype(int))


def test_nearest_patch_distance_matches_a_plain_write_out():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 3))
    want = np.mean([min(np.linalg.norm(x[i] - x[j]) for j in range(7) if j != i) for i in range(7)])
    assert nearest_patch_distance([x])[0] == pytest.approx(want)
    twins = np.concatenate([x, x])
    assert nearest_patch_distance([twins])[0] == 0.0
    np.testing.assert_allclose(lookalike_distance(twins[None]), [0.0])
    with pytest.raises(ValueError, match="params must be"):
        lookalike_distance(x)


def test_deterministic_and_errors():
    a, b = relation_rois("crc2", 1, grid=4, seed=7), relation_rois("crc2", 1, grid=4, seed=7)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(a.images, relation_rois("crc2", 1, grid=4, seed=8).images)
    assert set(RELATION_CLASSES) == {"crc3", "crc2", "melanoma"}
    with pytest.raises(ValueError, match="unknown task"):
        relation_rois("bach", 1)
    with pytest.raises(ValueError, match="look-alike groups"):
        relation_rois("crc3", 1, grid=3)


def test_mean_std_lr_control_fits_on_train_and_val_only():
    import torch
    from torch_geometric.data import Data

    from wsigraph.train.cv import make_splits
    from wsigraph.train.probe import mean_std_lr

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    splits = make_splits(y, 4, 1, 0.25, seed=0)
    test0 = splits[0].test
    sign = np.where(np.isin(np.arange(40), test0), -1.0, 1.0)  # the test fold's rule is flipped
    graphs = [
        Data(x=torch.tensor(rng.normal(sign[i] * (2 * y[i] - 1), 0.3, (8, 3)), dtype=torch.float32))
        for i in range(40)
    ]
    folds = mean_std_lr(graphs, y, splits[:1])
    assert folds[0].metrics["acc"] == 0.0 and folds[0].metrics["auc"] == 0.0  # never saw them
    assert (folds[0].repeat, folds[0].fold) == (splits[0].repeat, splits[0].fold)
    x = roi_mean_std([g.x for g in graphs[:2]])
    np.testing.assert_allclose(x[0, :3], graphs[0].x.numpy().mean(0), rtol=1e-6)
    np.testing.assert_allclose(x[0, 3:], graphs[0].x.numpy().std(0), rtol=1e-5)


def test_shared_layouts_copy_the_groups_nuclei_under_a_symmetry_of_the_square():
    """layout_jitter=0: every member of a look-alike group holds the group's nuclei, turned or
    reflected (the same pairwise distances and ellipse axes), inside its own patch; the default
    draws each member's nuclei alone, and nothing else changes for ungrouped patches."""
    from scipy.spatial.distance import pdist

    def patch_cells(s, i, p):
        e = s.nuclei[i]
        where = (e[:, 0] // s.patch_size).astype(int) * 4 + (e[:, 1] // s.patch_size).astype(int)
        return e[where == p]

    shared = relation_rois("melanoma", 1, grid=4, seed=3, layout_jitter=0.0, render=False)
    alone = relation_rois("melanoma", 1, grid=4, seed=3, render=False)
    np.testing.assert_array_equal(shared.groups, alone.groups)
    turned = 0
    for g in np.unique(shared.groups[0]):
        members = np.flatnonzero(shared.groups[0] == g)
        first = patch_cells(shared, 0, members[0])
        for p in members[1:]:
            cells = patch_cells(shared, 0, p)
            assert len(cells) == len(first)
            np.testing.assert_allclose(np.sort(pdist(cells[:, :2])), np.sort(pdist(first[:, :2])))
            np.testing.assert_allclose(np.sort(cells[:, 2]), np.sort(first[:, 2]))
            local = cells[:, :2] % shared.patch_size
            turned += not np.allclose(np.sort(local, 0), np.sort(first[:, :2] % 64, 0))
        other = patch_cells(alone, 0, members[1])
        assert len(other) != len(first) or not np.allclose(
            np.sort(pdist(other[:, :2])), np.sort(pdist(first[:, :2]))
        )
    assert turned > 0  # the copies are turned or reflected, not shifted copies
    # ungrouped ROIs: the option changes nothing
    for i in np.flatnonzero(~shared.grouped.any(1)):
        np.testing.assert_array_equal(shared.nuclei[i], alone.nuclei[i])
    jittered = relation_rois("melanoma", 1, grid=4, seed=3, layout_jitter=0.5, render=False)
    assert not np.allclose(jittered.nuclei[0][:, :2], shared.nuclei[0][:, :2])


def test_lookalike_edges_join_exactly_the_true_look_alikes():
    s = relation_rois("crc3", 2, seed=4, render=False)
    cells = np.stack(np.divmod(np.arange(64), 8), 1)[:, ::-1]  # (column, row), row-major
    for i in range(len(s.labels)):
        ei = lookalike_edges(s.groups[i], cells, 8)
        adj = np.zeros((64, 64), bool)
        adj[ei[0], ei[1]] = True
        alike = (s.params[i][:, None] == s.params[i][None, :]).all(-1) & ~np.eye(64, dtype=bool)
        np.testing.assert_array_equal(adj, alike)  # joined iff they share their parameter draw
        assert adj.sum() == (GROUP_SIZE - 1) * s.grouped[i].sum()
    # patches left out of the graph: edges index the nodes that remain, in their order
    normal = int(np.flatnonzero(s.labels == 0)[0])
    ei = lookalike_edges(s.groups[normal], cells[1:], 8)
    full = lookalike_edges(s.groups[normal], cells, 8)
    kept = (full > 0).all(0)
    np.testing.assert_array_equal(ei, full[:, kept] - 1)
    with pytest.raises(ValueError, match="grid cells"):
        lookalike_edges(s.groups[0], cells + 8, 8)
    with pytest.raises(ValueError, match="64 patches"):
        lookalike_edges(s.groups[0][:10], cells, 8)
