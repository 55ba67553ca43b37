"""The nuclei-graph GCN (RSF / RSF + Edge / RSF + Attention) and occlusion importance (Eq. 5)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

from wsigraph.graphs.nuclei import nuclei_edges
from wsigraph.models import build_model, nuclei_gcn
from wsigraph.models.nuclei_gcn import VARIANTS
from wsigraph.viz.nuclei import importance_figure, nuclei_overlay, occlusion_importance

pytestmark = pytest.mark.usefixtures("one_thread")


def _graph(n: int, seed: int, y: int = 0) -> Data:
    """``n`` random nuclei in a 300 px tile, Eq. 1 edges, random 18-d features."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, 300, size=(n, 2)).astype(np.float32)
    edge_index, weight = nuclei_edges(pos)
    x = torch.from_numpy(rng.normal(size=(n, 18)).astype(np.float32))
    return Data(x=x, edge_index=edge_index, edge_attr=weight.view(-1, 1), y=torch.tensor([y]))


def _model(variant: str):
    torch.manual_seed(0)
    return build_model("nuclei-gcn", 18, 2, variant=variant).eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_count_near_the_papers_300k(variant):
    n = sum(p.numel() for p in _model(variant).parameters())
    assert 250_000 < n < 450_000, n


def _docstring_counts() -> dict[str, tuple[int, int, int]]:
    """The parameter table of the module docstring: pooling -> (RSF, RSF + Edge, Attention)."""
    rows = {}
    for line in nuclei_gcn.__doc__.splitlines():
        m = re.match(r"\s*(vertices|clusters)\b.*?((?:\s+[\d,]+){3})\s*$", line)
        if m:
            rows[m.group(1)] = tuple(int(v.replace(",", "")) for v in m.group(2).split())
    return rows


POOLINGS = {"vertices": {}, "clusters": {"pool_axis": "clusters", "pool_norm": False}}


@pytest.mark.parametrize("pooling", list(POOLINGS))
def test_docstring_parameter_counts_are_the_models(pooling):
    documented = _docstring_counts()[pooling]
    for variant, n_doc in zip(VARIANTS, documented, strict=True):
        model = build_model("nuclei-gcn", 18, 2, variant=variant, **POOLINGS[pooling])
        assert sum(p.numel() for p in model.parameters()) == n_doc, (pooling, variant)


def test_default_pooling_is_the_reference_codes():
    model = _model("rsf")
    assert model.pool1.axis == model.pool2.axis == "vertices"
    assert isinstance(model.pool_norm1, torch.nn.BatchNorm1d)
    old = build_model("nuclei-gcn", 18, 2, **POOLINGS["clusters"])
    assert old.pool1.axis == "clusters" and isinstance(old.pool_norm1, torch.nn.Identity)


@pytest.mark.parametrize("pooling", list(POOLINGS))
def test_both_poolings_train_and_ignore_node_order(pooling):
    torch.manual_seed(0)
    model = build_model("nuclei-gcn", 18, 2, **POOLINGS[pooling]).train()
    batch = Batch.from_data_list([_graph(30, 3), _graph(20, 4, y=1)])
    torch.nn.functional.cross_entropy(model(batch), batch.y).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, missing
    model.eval()
    g = _graph(30, 3)
    perm = torch.randperm(g.num_nodes, generator=torch.Generator().manual_seed(2))
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(g.num_nodes)
    h = Data(x=g.x[perm], edge_index=inv[g.edge_index], edge_attr=g.edge_attr)
    torch.testing.assert_close(model(Batch.from_data_list([h])), model(Batch.from_data_list([g])))


@pytest.mark.parametrize("variant", VARIANTS)
def test_batched_equals_alone_and_node_order_does_not_matter(variant):
    model = _model(variant)
    graphs = [_graph(40, 0), _graph(25, 1), _graph(1, 2)]  # a single nucleus, no edges
    batched = model(Batch.from_data_list(graphs))
    assert batched.shape == (3, 2)
    for i, g in enumerate(graphs):
        torch.testing.assert_close(batched[i : i + 1], model(Batch.from_data_list([g])))
    g = graphs[0]
    perm = torch.randperm(g.num_nodes, generator=torch.Generator().manual_seed(1))
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(g.num_nodes)
    h = Data(x=g.x[perm], edge_index=inv[g.edge_index], edge_attr=g.edge_attr)
    torch.testing.assert_close(model(Batch.from_data_list([h])), batched[:1])


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_reach_every_parameter_and_isolated_nodes(variant):
    model = _model(variant).train()
    g = _graph(30, 3)
    g.x = torch.cat([g.x, torch.randn(3, 18)])  # three isolated nuclei
    batch = Batch.from_data_list([g, _graph(20, 4, y=1)])
    loss = torch.nn.functional.cross_entropy(model(batch), batch.y)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, missing


def test_attention_scores_sum_to_one_per_graph():
    model = _model("attention")
    batch = Batch.from_data_list([_graph(30, 5), _graph(12, 6)])
    model(batch)
    scores = model.last_attention
    assert scores.shape == (42,) and (scores >= 0).all()
    torch.testing.assert_close(scores[:30].sum(), torch.tensor(1.0))
    torch.testing.assert_close(scores[30:].sum(), torch.tensor(1.0))


def test_bad_config():
    with pytest.raises(ValueError, match="variant"):
        build_model("nuclei-gcn", 18, 2, variant="gat")
    with pytest.raises(ValueError, match="clusters"):
        build_model("nuclei-gcn", 18, 2, clusters=(8,))
    with pytest.raises(ValueError, match="pool_axis must be one of"):
        build_model("nuclei-gcn", 18, 2, pool_axis="rows")


def test_occlusion_matches_eq5_by_hand():
    model = _model("rsf")
    g = _graph(15, 7)
    scores, target = occlusion_importance(model, g, batch_size=4)
    assert scores.shape == (15,)
    p = torch.softmax(model(Batch.from_data_list([g])), 1)[0, target]
    i = 4  # node 4, its 1-hop neighbours and their edges removed, by hand
    hood = {i} | set(g.edge_index[0, g.edge_index[1] == i].tolist())
    keep = torch.tensor([k not in hood for k in range(15)])
    new = torch.full((15,), -1)
    new[keep] = torch.arange(int(keep.sum()))
    e = keep[g.edge_index[0]] & keep[g.edge_index[1]]
    h = Data(x=g.x[keep], edge_index=new[g.edge_index[:, e]], edge_attr=g.edge_attr[e])
    q = torch.softmax(model(Batch.from_data_list([h])), 1)[0, target]
    torch.testing.assert_close(scores[i], p - q)
    # a different class to explain flips the sign for two classes
    other, t2 = occlusion_importance(model, g, target=1 - target)
    assert t2 == 1 - target
    torch.testing.assert_close(other, -scores)


def test_overlay_and_figure():
    inst = np.zeros((20, 20), dtype=np.int32)
    inst[2:6, 2:6], inst[10:14, 10:14] = 1, 2
    img = np.full((20, 20, 3), 200, dtype=np.uint8)
    out = nuclei_overlay(img, inst, np.array([1, 2]), np.array([0.0, 1.0]))
    assert out.shape == (20, 20, 3) and 0 <= out.min() and out.max() <= 1
    assert not np.allclose(out[3, 3], out[11, 11])  # low vs high importance
    fig = importance_figure([{"a": img, "b": out, "row": "tile"}], ["a", "b"])
    assert len(fig.axes) == 3  # two panels and the colour bar


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("variant", VARIANTS)
def test_runs_on_cuda_like_on_cpu(variant):
    model = _model(variant)
    batch = Batch.from_data_list([_graph(40, 0), _graph(25, 1)])
    expected = model(batch)
    out = model.cuda()(batch.cuda())
    assert out.is_cuda
    torch.testing.assert_close(out.cpu(), expected, atol=1e-4, rtol=1e-4)
    scores, _ = occlusion_importance(model, _graph(15, 7).cuda())
    assert scores.shape == (15,)


@pytest.mark.parametrize("variant", ["edge", "attention"])
def test_fig3_importance_reuses_the_fold_model_a_run_saved(tmp_path, variant):
    from wsigraph.train.cv import make_splits
    from wsigraph.train.loop import TrainConfig
    from wsigraph.train.run import checkpoint_path, run_experiment
    from wsigraph.viz.nuclei import fold_importance

    graphs = [_graph(12 + i % 5, seed=i, y=i % 2) for i in range(16)]
    labels = np.array([i % 2 for i in range(16)])
    for g in graphs:
        del g.y
    cfg = TrainConfig("nuclei-gcn", {"variant": variant}, lr=1e-2, epochs=2, batch_size=4, seed=0)
    run_experiment("nuc", graphs, labels, cfg, tmp_path, folds=2, repeats=1, executor="serial",
                   progress=False)  # fmt: skip
    split = make_splits(labels, 2, 1, 0.25, seed=0)[0]
    picks = [int(split.test[0]), int(split.test[1])]
    saved = checkpoint_path(tmp_path, "nuc", 0, 0)
    metrics, reused = fold_importance(graphs, labels, cfg, split, picks, saved)
    trained_metrics, trained = fold_importance(graphs, labels, cfg, split, picks)
    assert metrics == {} and "auc" in trained_metrics  # the saved model: no training
    for i in picks:  # the same fold, seed and data: the same model, the same importance
        np.testing.assert_allclose(reused[i], trained[i], rtol=1e-4, atol=1e-5)
    other = TrainConfig("mean-mlp", {}, epochs=1)
    with pytest.raises(ValueError, match="holds a 'nuclei-gcn' model, not 'mean-mlp'"):
        fold_importance(graphs, labels, other, split, picks, saved)
