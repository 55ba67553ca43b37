"""ABiG-Net: local orientation graphs and features, the learned global graph, the model and the
first-order bilevel training (lib/wsigraph/graphs/orientation.py, nn/graph_learner.py,
models/abignet.py, train/bilevel.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.draw import ellipse
from torch_geometric.data import Batch, Data

from wsigraph.graphs.orientation import (
    FEATURE_NAMES,
    cached_patch_features,
    local_structure_features,
    nuclei_orientations,
    orientation_graph,
    patch_features,
    roi_graph,
    roi_graphs,
)
from wsigraph.models.abignet import ABiGNet, ABiGNetConfig
from wsigraph.nn.graph_learner import GraphLearner, knn_adjacency
from wsigraph.train.bilevel import (
    BilevelConfig,
    bilevel_step,
    first_order_hypergradient,
    inner_loss,
    outer_loss,
    train_fold_bilevel,
)
from wsigraph.train.cv import make_splits

pytestmark = pytest.mark.usefixtures("one_thread")

F_ = {name: i for i, name in enumerate(FEATURE_NAMES)}
TILES = ("TCGA-HC-7209-01A-01-TS1", "TCGA-HT-8564-01Z-00-DX1")


def ellipses(angles_deg, shape=(100, 100), step=20, radii=(7, 3)) -> np.ndarray:
    """An instance mask with one ellipse per angle on a ``step`` px lattice, row-major."""
    mask = np.zeros(shape, np.int32)
    per_row = shape[1] // step
    for k, a in enumerate(angles_deg):
        r, c = divmod(k, per_row)
        rr, cc = ellipse(
            step // 2 + r * step, step // 2 + c * step, *radii, shape=shape,
            rotation=math.radians(a),
        )  # fmt: skip
        mask[rr, cc] = k + 1
    return mask


def feats(mask: np.ndarray, **kw) -> np.ndarray:
    t = nuclei_orientations(mask)
    return local_structure_features(
        t[["row", "col"]].to_numpy(), t["orientation"].to_numpy(), t["area"].to_numpy(),
        t["eccentricity"].to_numpy(), patch_area=mask.size, **kw,
    )  # fmt: skip


# ---- local scale: orientations, the orientation graph, the features ------------------------


def test_parallel_nuclei_coherence_one_entropy_zero():
    mask = ellipses([30] * 25)
    t = nuclei_orientations(mask)
    assert len(t) == 25 and list(t["label"]) == list(range(1, 26))
    np.testing.assert_allclose(np.degrees(t["orientation"]), 30, atol=3)  # pixel discretisation
    f = feats(mask, radius=30)
    assert f[F_["coherence"]] > 0.99
    assert f[F_["orientation_entropy"]] == 0.0
    assert f[F_["alignment"]] > 0.98
    np.testing.assert_allclose(f[F_["orientation_cos2"]], math.cos(math.radians(60)), atol=0.05)
    np.testing.assert_allclose(f[F_["orientation_sin2"]], math.sin(math.radians(60)), atol=0.05)
    # A 5 x 5 lattice of step 20 px, radius 30 px: every nucleus joins its 8-neighbourhood.
    np.testing.assert_allclose(f[F_["nn_dist_mean"]], 20, atol=0.5)
    assert f[F_["nn_dist_cv"]] < 0.02
    np.testing.assert_allclose(f[F_["mst_mean"]], 20, atol=0.5)
    np.testing.assert_allclose(f[F_["graph_degree"]], (4 * 3 + 12 * 5 + 9 * 8) / 25)
    assert f[F_["clustered_fraction"]] == 1.0 and f[F_["cluster_size_mean"]] == 25
    assert f[F_["cluster_entropy"]] == 0.0
    np.testing.assert_allclose(f[F_["density"]], 25 * 1e4 / mask.size)


def test_uniform_and_perpendicular_orientations():
    uniform = feats(ellipses(np.arange(12) * 15.0, shape=(60, 120), radii=(8, 3)), radius=30)
    assert uniform[F_["coherence"]] < 0.1
    np.testing.assert_allclose(uniform[F_["orientation_entropy"]], 1.0)
    # Alternating 0 / 90 degrees along rows and columns: perpendicular neighbours.
    angles = [0 if (k // 5 + k % 5) % 2 == 0 else 90 for k in range(25)]
    f = feats(ellipses(angles), radius=21)
    assert f[F_["coherence"]] < 0.1
    p = np.array([13, 12]) / 25  # 13 nuclei at 0 degrees, 12 at 90
    np.testing.assert_allclose(f[F_["orientation_entropy"]], -(p * np.log(p)).sum() / math.log(12), rtol=1e-6)  # fmt: skip
    assert f[F_["alignment"]] < -0.95  # 4-neighbours are perpendicular
    assert f[F_["graph_degree"]] == 0 and f[F_["clustered_fraction"]] == 0


def test_orientation_graph_weights_by_hand():
    pos = np.array([[0.0, 0.0], [0.0, 10.0], [0.0, 30.0], [10.0, 0.0]])
    theta = np.array([0.0, math.pi / 6, math.pi / 2, math.radians(89)])
    ei, w = orientation_graph(pos, theta, radius=20.0, max_angle=math.pi / 6)
    got = {(int(s), int(d)): float(x) for (s, d), x in zip(ei.T.tolist(), w, strict=True)}
    # (0, 1): d = 10, 30 degrees apart -> 0.5 cos^2(30deg); (0, 3): d = 10, 89 degrees apart
    # -> dropped; (1, 2): d = 20 is not < 20; (1, 3): d = 14.1, 59 degrees -> dropped.
    assert got == pytest.approx({(1, 0): 0.375, (0, 1): 0.375})
    assert list(ei[1]) == sorted(ei[1].tolist())  # sorted by destination
    ei, _ = orientation_graph(pos, theta, radius=20.0, max_angle=math.pi / 12)
    assert ei.shape == (2, 0)
    # Axes wrap: 89 and -89 degrees are 2 degrees apart.
    ei, w = orientation_graph(pos[:2], np.radians([89.0, -89.0]), radius=20.0)
    np.testing.assert_allclose(w.numpy(), 0.5 * math.cos(math.radians(2)) ** 2, rtol=1e-6)
    ei, w = orientation_graph(pos, theta, radius=20.0, max_angle=None)  # all close pairs
    assert ei.shape[1] == 2 * 3  # (0,1), (0,3), (1,3); (1,3) 59 deg, (0,3) 89 deg: w > 0
    with pytest.raises(ValueError, match="max_angle"):
        orientation_graph(pos, theta, max_angle=2.0)
    with pytest.raises(ValueError, match="orientations"):
        orientation_graph(pos, theta[:2])


def test_spacing_features_of_a_square_and_degenerate_patches():
    pos = np.array([[0.0, 0.0], [0.0, 10.0], [10.0, 0.0], [10.0, 10.0]])
    f = local_structure_features(pos, np.zeros(4), patch_area=400.0)
    np.testing.assert_allclose(f[F_["density"]], 4 * 1e4 / 400)
    np.testing.assert_allclose(f[[F_["nn_dist_mean"], F_["nn_dist_cv"]]], [10, 0], atol=1e-6)
    np.testing.assert_allclose(f[[F_["mst_mean"], F_["mst_std"]]], [10, 0], atol=1e-6)
    tri = np.array([10, 10, 10, 10, 10 * math.sqrt(2)])  # 4 sides + 1 diagonal
    np.testing.assert_allclose(f[[F_["delaunay_mean"], F_["delaunay_std"]]], [tri.mean(), tri.std()], rtol=1e-6)  # fmt: skip
    assert f[F_["area_mean"]] == 0 and f[F_["eccentricity_mean"]] == 0  # not given
    assert np.all(local_structure_features(np.zeros((0, 2)), np.zeros(0)) == 0)
    one = local_structure_features(np.array([[5.0, 5.0]]), np.array([0.3]))
    assert one[F_["coherence"]] == pytest.approx(1.0) and one[F_["nn_dist_mean"]] == 0
    line = local_structure_features(np.array([[0.0, 0], [0, 5], [0, 15]]), np.zeros(3))
    np.testing.assert_allclose(line[F_["delaunay_mean"]], 7.5)  # collinear: the MST's edges
    with pytest.raises(ValueError, match="n_bins"):
        local_structure_features(pos, np.zeros(4), n_bins=1)


def test_patch_features_tiles_and_assigns_nuclei():
    mask = ellipses([30] * 25 + [120] * 11, shape=(120, 120))  # 36 nuclei, 6 x 6
    f, grid, names = patch_features(None, 60, instances=mask, radius=30)
    assert names == list(FEATURE_NAMES) and f.shape == (4, len(names)) and f.dtype == np.float32
    assert grid.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    np.testing.assert_allclose(f[:, F_["density"]] * 3600 / 1e4, [9, 9, 9, 9])
    # The top patches hold only 30-degree nuclei; the bottom-right holds 120-degree ones.
    assert f[0, F_["coherence"]] > 0.99 and f[0, F_["orientation_entropy"]] == 0
    f2, grid2, _ = patch_features(None, 50, instances=mask, min_nuclei=5)
    assert len(f2) == len(grid2) and (grid2 < 2).all()  # partial last row / column dropped
    with pytest.raises(ValueError, match="smaller than one"):
        patch_features(None, 200, instances=mask)
    with pytest.raises(ValueError, match="give"):
        patch_features(None, 60)
    with pytest.raises(ValueError, match="uint8"):
        patch_features(np.zeros((64, 64, 3)), 32)
    with pytest.raises(ValueError, match="integer"):
        nuclei_orientations(mask.astype(float))


@pytest.mark.parametrize("name", TILES)
def test_real_tiles(real_data, name):
    folder = real_data / "nuclei" / "monuseg"
    image = np.asarray(Image.open(folder / f"{name}.tif").convert("RGB"))
    instances = np.load(folder / f"{name}_inst.npz")["instances"]
    table = np.genfromtxt(folder / f"{name}_centroids.csv", delimiter=",", names=True)
    t = nuclei_orientations(instances)
    assert len(t) == len(table)
    np.testing.assert_allclose(t["row"], table["centroid_y"], atol=6e-4)  # CSV: 3 decimals
    assert t["orientation"].between(-math.pi / 2, math.pi / 2).all()
    f, grid, _ = patch_features(image, 250, instances=instances)
    assert f.shape == (16, len(FEATURE_NAMES)) and np.isfinite(f).all()
    # Every nucleus whose centroid is inside the 4 x 4 grid is counted once.
    np.testing.assert_allclose((f[:, F_["density"]] * 250**2 / 1e4).sum(), len(t), atol=1e-3)
    for k in ("coherence", "orientation_entropy", "cluster_entropy", "clustered_fraction"):
        assert ((f[:, F_[k]] >= 0) & (f[:, F_[k]] <= 1 + 1e-6)).all(), k
    # Segmenting the image itself (the demo's classical fallback) also gives a full grid.
    seg, grid_seg, _ = patch_features(image[:500, :500], 250)
    assert seg.shape == (4, len(FEATURE_NAMES)) and np.isfinite(seg).all()
    assert (seg[:, F_["density"]] > 0).all()


def test_feature_cache_resumes_and_rekeys(tmp_path, monkeypatch):
    mask = ellipses([30] * 25)
    image = np.full((*mask.shape, 3), 230, np.uint8)
    image[mask > 0] = (60, 40, 120)
    f, grid = cached_patch_features(tmp_path / "a.npz", image, 50, mask, radius=30)
    calls = []
    monkeypatch.setattr(
        "wsigraph.graphs.orientation.patch_features",
        lambda *a, **k: calls.append(1) or patch_features(*a, **k),
    )
    f2, _ = cached_patch_features(tmp_path / "a.npz", image, 50, mask, radius=30)
    assert calls == [] and np.array_equal(f, f2)  # served from the cache
    cached_patch_features(tmp_path / "a.npz", image, 50, mask, radius=20)  # other setting
    image[0, 0] = 0
    cached_patch_features(tmp_path / "a.npz", image, 50, mask, radius=20)  # other pixels
    (tmp_path / "a.npz").write_bytes(b"broken")
    f3, _ = cached_patch_features(tmp_path / "a.npz", image, 50, mask, radius=30)
    assert len(calls) == 3 and np.array_equal(f, f3)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files
    graphs = roi_graphs([image, image], ["r0", "r1"], tmp_path, 50, [mask, mask], radius=30)
    assert [g.slide_id for g in graphs] == ["r0", "r1"] and graphs[0].x.shape == (
        4,
        len(FEATURE_NAMES),
    )
    torch.testing.assert_close(graphs[1].pos, torch.tensor(grid, dtype=torch.float32))
    with pytest.raises(ValueError, match="unique"):
        roi_graphs([image, image], ["r", "r"], tmp_path, 50)
    with pytest.raises(ValueError, match="grid"):
        roi_graph(np.zeros((3, 2)), np.zeros((2, 2)))


# ---- global scale: the learned graph ---------------------------------------------------------


def two_graphs(n1=7, n2=5, f=6, seed=0, dtype=torch.float32) -> Batch:
    g = torch.Generator().manual_seed(seed)
    data = []
    for n in (n1, n2):
        side = math.ceil(math.sqrt(n))
        pos = torch.tensor([divmod(i, side) for i in range(n)], dtype=dtype)
        data.append(Data(x=torch.randn(n, f, generator=g, dtype=dtype), pos=pos))
    return Batch.from_data_list(data)


def edge_dict(ei, w):
    return {(int(s), int(d)): float(x) for (s, d), x in zip(ei.T.tolist(), w, strict=True)}


def test_learned_graph_is_sparse_symmetric_and_within_images():
    torch.manual_seed(0)
    batch = two_graphs(30, 12)
    k = 3
    learner = GraphLearner(6, hidden=4, heads=2, k=k, min_weight=0.0)
    ei, w = learner(batch.x, batch.pos, batch.batch)
    e = edge_dict(ei, w.detach())
    assert all(e[(d, s)] == pytest.approx(v) for (s, d), v in e.items())  # symmetric
    assert all(s != d for s, d in e)  # no self loops
    assert (batch.batch[ei[0]] == batch.batch[ei[1]]).all()  # never across images
    deg = torch.bincount(ei[1], minlength=batch.num_nodes)
    assert (deg >= k).all() and ei.shape[1] <= 2 * k * batch.num_nodes
    assert ei.shape[1] < 0.3 * (30 * 29 + 12 * 11)  # sparse: far from complete
    assert torch.equal(ei[1] * 42 + ei[0], (ei[1] * 42 + ei[0]).sort().values)  # (dst, src)
    assert ((w > 0) & (w < 1)).all()
    # The gate drops weak edges: a high learned threshold leaves fewer edges.
    pruned = GraphLearner(6, hidden=4, heads=2, k=k, min_weight=0.5)
    pruned.load_state_dict(learner.state_dict())
    with torch.no_grad():
        pruned.threshold.fill_(0.2)
    ei2, w2 = pruned(batch.x, batch.pos, batch.batch)
    assert ei2.shape[1] < ei.shape[1] and (w2 >= 0.5).all()
    assert "GraphLearner(6, hidden=4, heads=2, k=3" in repr(learner)


def test_knn_adjacency_on_a_grid():
    pos = torch.tensor([divmod(i, 4) for i in range(16)], dtype=torch.float32)
    ei, w = knn_adjacency(torch.randn(16, 3), pos, None, k=4)
    e = edge_dict(ei, w)
    assert set(e) == {(d, s) for s, d in e} and set(e.values()) == {1.0}
    assert (torch.bincount(ei[1], minlength=16) >= 4).all()
    d = (pos[:, None] - pos[None]).norm(dim=-1)  # [16, 16]
    for i in [5, 6, 9, 10]:  # interior nodes: their 4 nearest are the 4-neighbours
        assert {(j, i) for j in range(16) if d[i, j] == 1} <= set(e)
    ei8, _ = knn_adjacency(torch.randn(16, 3), pos, None, k=8)
    e8 = set(edge_dict(ei8, torch.ones(ei8.shape[1])))
    assert {(j, i) for i in range(16) for j in range(16) if 0 < d[i, j] < 1.5} <= e8
    with pytest.raises(ValueError, match="'on'"):
        knn_adjacency(torch.randn(16, 3), pos, on="colour")


def model_and_batch(graph="learned", dtype=torch.float64, **kw):
    torch.manual_seed(0)
    cfg = dict(graph=graph, hidden=8, layers=2, dropout=0.0, k=10, learner_hidden=4,
               learner_heads=2, min_weight=0.0) | kw  # fmt: skip
    model = ABiGNet(6, 3, **cfg).to(dtype)
    batch = two_graphs(7, 5, dtype=dtype)
    batch.y = torch.tensor([0, 2])
    return model, batch


def test_shapes_repr_and_permutation_equivariance():
    model, batch = model_and_batch(k=3, dtype=torch.float32)
    model.eval()
    assert model(batch).shape == (2, 3)
    assert "graph=learned" in repr(model) and "GraphLearner" in repr(model)
    h = model.embed(batch)
    perm = torch.cat([torch.randperm(7), 7 + torch.randperm(5)])
    pb = batch.clone()
    pb.x, pb.pos = batch.x[perm], batch.pos[perm]
    torch.testing.assert_close(model.embed(pb), h[perm], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(pb), model(batch), rtol=1e-5, atol=1e-5)
    single = Data(x=batch.x[:7], pos=batch.pos[:7])  # no batch vector: one image
    torch.testing.assert_close(model(single), model(batch)[:1], rtol=1e-5, atol=1e-5)


def test_gradients_reach_structure_and_weights():
    model, batch = model_and_batch(dtype=torch.float32, k=3)
    structure = model.structure_parameters()
    assert len(structure) == 3  # proj.weight, gamma, threshold
    outer_loss(model, batch, sparsity=0.1).backward()
    for p in structure:
        assert p.grad is not None and p.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    inner_loss(model, batch).backward()
    assert all(p.grad is None for p in structure)  # the inner loss holds the graph fixed
    for name, p in model.named_parameters():
        if "learner" not in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    knn, _ = model_and_batch("knn", dtype=torch.float32)
    assert knn.structure_parameters() == [] and knn.learner is None


def test_first_order_hypergradient_matches_finite_differences():
    """The first-order update direction is the gradient of the validation objective with the
    weights held fixed; check it entry by entry against central differences (float64; k >= N - 1
    so the top-k selection cannot change under the perturbation)."""
    model, batch = model_and_batch()
    lam = 0.3
    grads = first_order_hypergradient(model, batch, sparsity=lam)
    eps = 1e-6
    for p, g in zip(model.structure_parameters(), grads, strict=True):
        flat, gflat = p.data.view(-1), g.view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + eps
            with torch.no_grad():
                up = outer_loss(model, batch, lam).item()
            flat[i] = old - eps
            with torch.no_grad():
                down = outer_loss(model, batch, lam).item()
            flat[i] = old
            assert gflat[i].item() == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8)


def test_bilevel_step_moves_each_side_on_its_own_loss():
    model, train = model_and_batch()
    val = two_graphs(6, 8, seed=1, dtype=torch.float64)
    val.y = torch.tensor([1, 0])
    lr_w, lr_phi, lam = 0.05, 0.2, 0.1
    inner = torch.optim.SGD(model.weight_parameters(), lr=lr_w)
    outer = torch.optim.SGD(model.structure_parameters(), lr=lr_phi)
    phi0 = [p.detach().clone() for p in model.structure_parameters()]
    w0 = [p.detach().clone() for p in model.weight_parameters()]
    g_phi = first_order_hypergradient(model, val, lam)
    bilevel_step(model, train, val, inner, outer, lam, inner_steps=1)
    for p, p0, g in zip(model.structure_parameters(), phi0, g_phi, strict=True):
        torch.testing.assert_close(p.detach(), p0 - lr_phi * g)
    # The inner step is taken at the *updated* structure, on the training loss only.
    probe, _ = model_and_batch()
    probe.load_state_dict(model.state_dict())
    for p, p0 in zip(probe.weight_parameters(), w0, strict=True):
        p.data.copy_(p0)
    g_w = torch.autograd.grad(inner_loss(probe, train), probe.weight_parameters())
    for p, p0, g in zip(model.weight_parameters(), w0, g_w, strict=True):
        torch.testing.assert_close(p.detach(), p0 - lr_w * g)
    with pytest.raises(ValueError, match="inner optimiser"):
        bilevel_step(model, train, val, torch.optim.SGD(model.parameters(), lr=0.1), outer)


def separable_images(n=24, seed=0) -> tuple[list[Data], np.ndarray]:
    """Images of 9-16 patches; class 1 has a higher mean in feature 0."""
    g = torch.Generator().manual_seed(seed)
    labels = np.arange(n) % 2
    graphs = []
    for i, y in enumerate(labels):
        side = 3 + i % 2
        x = torch.randn(side * side, 5, generator=g)
        x[:, 0] += 1.5 * float(y)
        pos = torch.tensor([divmod(j, side) for j in range(side * side)], dtype=torch.float32)
        graphs.append(Data(x=x, pos=pos, slide_id=f"img{i}"))
    return graphs, labels


@pytest.mark.parametrize("graph", ["learned", "knn"])
def test_train_fold_bilevel_learns(graph):
    graphs, labels = separable_images()
    split = make_splits(labels, folds=3, repeats=1, seed=0)[0]
    cfg = BilevelConfig(
        model_config={"graph": graph, "hidden": 16, "k": 4}, lr=1e-2, outer_lr=1e-2,
        epochs=15, batch_size=4, patience=None, device="cpu",
    )  # fmt: skip
    result, model, test = train_fold_bilevel(graphs, labels, split, cfg, return_model=True)
    assert result.epochs_run == 15 and len(result.test_labels) == len(split.test)
    assert result.metrics["acc"] >= 0.75  # the signal is strong; chance is 0.5
    h = result.history[-1]
    assert 3 <= h["edges_per_node"] <= 2 * 4 and 0 < h["mean_edge_weight"] <= 1  # k = 4
    if graph == "learned":
        assert math.isfinite(h["outer_loss"])
        init = ABiGNet(5, 2, graph="learned", hidden=16, k=4)
        assert not torch.equal(model.learner.threshold, init.learner.threshold)  # it moved
    else:
        assert math.isnan(h["outer_loss"]) and h["mean_edge_weight"] == 1.0


def test_draw_patch_graph(tmp_path):
    import matplotlib.pyplot as plt

    from wsigraph.viz.graphs import draw_patch_graph

    pos = torch.tensor([divmod(i, 3) for i in range(9)], dtype=torch.float32)
    ei = torch.tensor([[0, 1, 0, 8], [1, 0, 8, 0]])
    fig, ax = plt.subplots()
    draw_patch_graph(ax, np.zeros((90, 90, 3)), pos, 30, ei, torch.tensor([0.5, 0.5, 1, 1]),
                     node_values=np.linspace(0, 1, 9), title="t")  # fmt: skip
    assert "2 edges, 1 long-range" in ax.get_title()
    fig.savefig(tmp_path / "g.png")
    plt.close(fig)


def test_config_errors():
    with pytest.raises(ValueError, match="graph"):
        ABiGNetConfig(graph="dense")
    with pytest.raises(ValueError, match="dropout"):
        ABiGNetConfig(dropout=1.0)
    with pytest.raises(ValueError, match="tau"):
        GraphLearner(4, tau=0.0)
    with pytest.raises(ValueError, match="sparsity"):
        BilevelConfig(sparsity=-1)
    graphs, labels = separable_images(12)
    split = make_splits(labels, folds=3, repeats=1)[0]
    split.val = split.val[:0]
    with pytest.raises(ValueError, match="validation"):
        train_fold_bilevel(graphs, labels, split, BilevelConfig(epochs=1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    model, batch = model_and_batch(dtype=torch.float32, k=3)
    model.eval()
    cpu_graph = model.graph(batch)
    cpu = model(batch)
    cuda_model, cuda_batch = model.cuda(), batch.cuda()
    ei, w = cuda_model.graph(cuda_batch)
    assert torch.equal(ei.cpu(), cpu_graph[0])
    torch.testing.assert_close(w.cpu(), cpu_graph[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cuda_model(cuda_batch).cpu(), cpu, rtol=1e-4, atol=1e-4)


def test_edge_statistics_by_hand():
    from wsigraph.viz.graphs import edge_statistics

    grid = np.array([[0, 0], [0, 1], [0, 3]])
    values = np.array([0.0, 0.5, 1.0])
    ei = np.array([[0, 1, 0, 2], [1, 0, 2, 0]])  # 0-1 adjacent, 0-2 long-range; both directions
    stats = edge_statistics(ei, grid, values, weight=np.array([1.0, 1.0, 3.0, 3.0]))
    assert stats["edges"] == 2 and stats["long_range"] == 0.5
    assert stats["gap"] == pytest.approx((1 * 0.5 + 3 * 1.0) / 4)
    assert stats["gap_all_pairs"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
