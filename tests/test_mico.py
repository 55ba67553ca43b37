"""MiCo: Cluster Route (Eq. 1-2), Cluster Reducer (Eq. 3-4), the bag module and the slide model."""

import math

import numpy as np
import pytest
import torch
from conftest import toy_pyramid
from torch_geometric.data import Batch

from wsigraph.data.clusters import CLUSTER_KEY, attach_clusters
from wsigraph.models import build_model
from wsigraph.nn.mico import ClusterReducer, ClusterRoute, MiCoMIL
from wsigraph.train.cv import make_splits
from wsigraph.train.loop import TrainConfig, train_fold

pytestmark = pytest.mark.usefixtures("one_thread")
F_IN = 6


def slide(
    n_mid: int, seed: int = 0, children: int = 4, signal: float = 0.0, sid: str | None = None
):
    data = toy_pyramid(n_mid, seed, children, F_IN, signal)
    data.slide_id = sid or f"slide{seed}"
    return data


def model(seed: int = 0, n_classes: int = 2, **kw):
    torch.manual_seed(seed)
    kw = dict(dim=16, n_clusters=8) | kw
    return build_model("mico", F_IN, n_classes, **kw).eval()


def bag(n: int = 30, seed: int = 0, bags: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, F_IN, generator=g)
    batch = torch.arange(n) % bags
    return x, batch


# Layers ----------------------------------------------------------------------------------------
def test_cluster_route_matches_eq_1_2_dense():
    torch.manual_seed(0)
    route = ClusterRoute(4)
    with torch.no_grad():
        route.tau.fill_(0.7)
    h = torch.randn(5, 4)
    batch = torch.tensor([0, 1, 0, 1, 1])
    anchors = torch.randn(2, 3, 4)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    out, a = route(h, batch, anchors, mask, return_assignment=True)
    for m in range(5):
        b = int(batch[m])
        s = -(h[m] - anchors[b]).norm(dim=-1) / 0.7
        s[~mask[b]] = -math.inf
        w = torch.softmax(s, 0)
        assert torch.allclose(a[m], w, atol=1e-5)
        hm = route.norm(h[m] + w @ anchors[b])
        assert torch.allclose(out[m], hm + route.mlp(hm), atol=1e-5)
    assert (a[batch == 0][:, 2] == 0).all()  # a masked anchor gets no weight


def test_hard_route_is_one_hot_forward():
    route = ClusterRoute(4, hard=True)
    h, anchors = torch.randn(6, 4), torch.randn(1, 3, 4)
    _, a = route(
        h, torch.zeros(6, dtype=torch.long), anchors, torch.ones(1, 3, dtype=torch.bool), True
    )
    assert torch.allclose(a.sum(-1), torch.ones(6)) and set(a.flatten().tolist()) <= {0.0, 1.0}


def test_learned_reducer_is_eq_3():
    torch.manual_seed(0)
    red = ClusterReducer(4, 8, 4, mode="learned")
    c = torch.randn(2, 8, 4)
    out, mask = red(c, torch.ones(2, 8, dtype=torch.bool))
    w1, w2 = red.mlp[0], red.mlp[3]
    expect = torch.stack([w2(torch.relu(w1(ci.t()))).t() for ci in c])
    assert torch.allclose(out, expect, atol=1e-6) and out.shape == (2, 4, 4) and mask.all()


def test_slide_reducer_is_order_invariant_and_ignores_masked_anchors():
    torch.manual_seed(0)
    red = ClusterReducer(4, 6, 3, mode="slide")
    c = torch.randn(1, 6, 4)
    mask = torch.tensor([[True, True, True, True, False, False]])
    out, m = red(c, mask)
    perm = torch.tensor([3, 0, 2, 1, 5, 4])
    out_p, _ = red(c[:, perm], mask[:, perm])
    assert torch.allclose(out, out_p, atol=1e-6) and m.all()
    junk = c.clone()
    junk[:, 4:] = 1e3  # masked anchors' values do not matter
    assert torch.allclose(red(junk, mask)[0], out, atol=1e-6)
    empty, m0 = red(c, torch.zeros(1, 6, dtype=torch.bool))  # a bag without anchors keeps none
    assert (empty == 0).all() and not m0.any()


# Bag module --------------------------------------------------------------------------------------
@pytest.mark.parametrize("anchors", ["slide", "learned"])
def test_instance_order_does_not_matter(anchors):
    torch.manual_seed(0)
    net = MiCoMIL(F_IN, 3, dim=16, n_clusters=4, anchors=anchors).eval()
    x, batch = bag(40, bags=2)
    perm = torch.randperm(40)
    assert torch.allclose(net(x, batch, 2), net(x[perm], batch[perm], 2), atol=1e-5)


def test_cluster_ids_are_interchangeable():
    torch.manual_seed(0)
    net = MiCoMIL(F_IN, 2, dim=16, n_clusters=4).eval()
    x, batch = bag(24, bags=2)
    cluster = torch.arange(24) % 4
    relabel = torch.tensor([2, 0, 3, 1])[cluster]
    assert torch.allclose(net(x, batch, 2, cluster), net(x, batch, 2, relabel), atol=1e-5)
    with pytest.raises(ValueError, match="cluster labels"):
        net(x, batch, 2, cluster + 4)


def test_every_parameter_gets_a_gradient():
    for anchors in ("slide", "learned"):
        torch.manual_seed(0)
        # routes see 8, 4, 2 anchors (a route over 1 anchor has a constant weight: no tau grad)
        net = MiCoMIL(F_IN, 2, dim=16, n_clusters=8, anchors=anchors, dropout=0.0)
        x, batch = bag(45, bags=3)
        net(x, batch, 3).square().sum().backward()
        for name, p in net.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, f"{anchors}: no gradient reaches {name}"


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="anchors"):
        MiCoMIL(F_IN, anchors="global")
    with pytest.raises(ValueError, match="anchor_init"):
        MiCoMIL(F_IN, n_clusters=4, anchors="learned", anchor_init=torch.zeros(3, F_IN))
    with pytest.raises(ValueError, match="bad settings"):
        build_model("mico", F_IN, 2, n_cluster=4)
    with pytest.raises(ValueError, match="anchor_init needs"):
        build_model("mico", F_IN, 2, anchor_init="x.pt")


# Slide model -------------------------------------------------------------------------------------
@pytest.mark.parametrize("anchors", ["slide", "learned"])
@pytest.mark.parametrize("n_classes", [2, 4])
def test_shapes_and_batched_equals_one_at_a_time(anchors, n_classes):
    net = model(n_classes=n_classes, anchors=anchors)
    graphs = [slide(3, 0), slide(5, 1), slide(1, 2, children=1), slide(2, 3)]
    out = net(Batch.from_data_list(graphs))
    assert out.shape == (4, n_classes) and torch.isfinite(out).all()
    one = torch.cat([net(Batch.from_data_list([g])) for g in graphs])
    assert torch.allclose(out, one, atol=1e-5)


def test_one_patch_and_fewer_patches_than_clusters():
    net = model(n_clusters=64)
    tiny = slide(1, 0, children=1)  # one 10x patch
    assert int((tiny.level == 2).sum()) == 1
    out = net(Batch.from_data_list([tiny, slide(2, 1)]))  # 1 and 8 patches, 64 clusters
    assert torch.isfinite(out).all()


def test_cached_clusters_are_used(tmp_path):
    net = model(n_clusters=3)
    graphs = attach_clusters([slide(3, 0), slide(4, 1)], tmp_path, n_clusters=3, backend="sklearn")
    b = Batch.from_data_list(graphs)
    x, batch, nb, cluster = net.inputs(b)
    assert torch.equal(cluster, b[CLUSTER_KEY][b.level == 2])
    assert torch.allclose(net(b), net.net(x, batch, nb, cluster), atol=1e-6)
    b[CLUSTER_KEY][b.level == 2] = -1
    with pytest.raises(ValueError, match="no cluster"):
        net(b)


def test_trains_through_the_harness_and_learns_a_signal():
    graphs = [slide(3, i, signal=2.0 * (i % 2)) for i in range(16)]
    labels = np.array([i % 2 for i in range(16)])
    split = make_splits(labels, folds=2, repeats=1)[0]
    cfg = TrainConfig(
        "mico", dict(dim=16, n_clusters=4), epochs=15, lr=5e-3, batch_size=4, patience=None
    )
    result = train_fold(graphs, labels, split, cfg)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.metrics["auc"] >= 0.75


def test_cluster_centroids_by_hand():
    from wsigraph.nn.mico import cluster_centroids

    x = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0], [0.0, 4.0], [2.0, 2.0]])
    batch = torch.tensor([0, 0, 0, 1, 1])
    cluster = torch.tensor([0, 0, 2, 1, 1])
    mean, mask = cluster_centroids(x, batch, cluster, num_bags=2, k=3)
    expected = torch.tensor(
        [[[2.0, 1.0], [0.0, 0.0], [5.0, 5.0]], [[0.0, 0.0], [1.0, 3.0], [0.0, 0.0]]]
    )
    torch.testing.assert_close(mean, expected)
    assert mask.tolist() == [[True, False, True], [False, True, False]]
