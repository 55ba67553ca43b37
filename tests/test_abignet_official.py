"""The official ABiG-Net (Paul1086/ABiG_Net): generator and dense GCN against plain write-outs of
the official equations, the temperature schedule, the L1 term, which optimiser moves what on
which pass, deterministic evaluation and the no-edge control (lib/wsigraph/nn/dense_gcn.py,
models/abignet.py ABiGNetOfficial, train/bilevel.py train_fold_official)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data

from wsigraph.models import build_model
from wsigraph.models.abignet import ABiGNetOfficial, ABiGNetOfficialConfig, given_adjacency
from wsigraph.nn.dense_gcn import AdjacencyGenerator, DenseGCN, expected_gumbel_sigmoid
from wsigraph.train.bilevel import (
    OfficialBilevelConfig,
    cross_validate,
    l1_penalty,
    official_lower_pass,
    official_upper_pass,
    temperatures,
    train_fold_official,
)
from wsigraph.train.cv import make_splits
from wsigraph.train.executor import FoldPool

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"widths": (8, 16, 8), "head": (8, 4), "generator_hidden": (6, 4)}


def sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def gumbel(u: float) -> float:
    return -math.log(-math.log(u + 1e-10) + 1e-10)


def pair_logits_by_loops(gen: AdjacencyGenerator, x: np.ndarray) -> np.ndarray:
    """The pair MLP written out: for every (i, j), [x_i || x_j] -> Linear, ReLU, ... -> 1."""
    layers = [m for m in gen.mlp if isinstance(m, torch.nn.Linear)]
    ws = [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in layers]
    n = len(x)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            h = np.concatenate([x[i], x[j]])
            for k, (w, b) in enumerate(ws):
                h = w @ h + b
                if k < len(ws) - 1:
                    h = np.maximum(h, 0.0)
            out[i, j] = h[0]
    return out


def symmetrised_by_loops(a: np.ndarray) -> np.ndarray:
    n = len(a)
    return np.array([[1.0 if i == j else (a[i, j] + a[j, i]) / 2 for j in range(n)]
                     for i in range(n)])  # fmt: skip


def test_generator_matches_the_official_equations():
    torch.manual_seed(0)
    gen = AdjacencyGenerator(5).double()
    for m in gen.mlp:  # larger weights than the default init, so the logits spread
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=0.7)
    gen.set_tau(0.37)
    assert gen.mlp[0].in_features == 10 and [m.out_features for m in gen.mlp[::2]] == [32, 16, 1]
    x = torch.randn(6, 5, dtype=torch.float64)
    logits = pair_logits_by_loops(gen, x.numpy())
    assert np.allclose(gen.logits(x).detach().numpy(), logits, atol=1e-12)
    assert logits.std() > 0.3 and not np.allclose(logits, logits.T)  # [x_i||x_j] is ordered

    torch.manual_seed(5)
    a = gen(x, sample=True).detach().numpy()
    torch.manual_seed(5)
    u = torch.rand(6, 6, dtype=torch.float64).numpy()  # the draws rand_like made
    sample = np.array([[sig((logits[i, j] + gumbel(u[i, j])) / 0.37) for j in range(6)]
                       for i in range(6)])  # fmt: skip
    assert np.allclose(a, symmetrised_by_loops(sample), atol=1e-12)

    # Deterministic: the expectation over the same noise at 64 quantiles (midpoint rule),
    # drawing no random numbers.
    rng = torch.get_rng_state()
    e = gen(x, sample=False).detach().numpy()
    assert torch.equal(rng, torch.get_rng_state())
    qs = [(k + 0.5) / 64 for k in range(64)]
    mean = np.array([[np.mean([sig((logits[i, j] + gumbel(q)) / 0.37) for q in qs])
                      for j in range(6)] for i in range(6)])  # fmt: skip
    assert np.allclose(e, symmetrised_by_loops(mean), atol=1e-12)
    # ... which is the mean of many samples
    draws = torch.stack([gen(x, sample=True).detach() for _ in range(4000)]).mean(0).numpy()
    assert np.abs(draws - e).max() < 0.03


def test_expected_gumbel_sigmoid_limits():
    logits = torch.tensor([-30.0, 0.0, 30.0], dtype=torch.float64)
    e = expected_gumbel_sigmoid(logits, tau=1.0, quadrature=400)
    assert e[0] < 1e-6 and e[2] > 1 - 1e-6
    # tau -> 0: P(l + g > 0) = 1 - exp(-exp(l)) (a single Gumbel draw, not logistic noise)
    e0 = expected_gumbel_sigmoid(torch.tensor([0.0], dtype=torch.float64), 1e-4, 20000)
    assert abs(float(e0) - (1 - math.exp(-1))) < 1e-3
    with pytest.raises(ValueError, match="quadrature"):
        expected_gumbel_sigmoid(logits, 1.0, 0)


def layer_norm(h: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mu = h.mean(1, keepdims=True)
    var = ((h - mu) ** 2).mean(1, keepdims=True)
    return (h - mu) / np.sqrt(var + 1e-5) * gamma + beta


def test_dense_gcn_matches_the_official_equations():
    torch.manual_seed(1)
    gcn = DenseGCN(5, 3).double().eval()
    for norm in gcn.norms:  # non-trivial affine parameters
        torch.nn.init.normal_(norm.weight)
        torch.nn.init.normal_(norm.bias)
    for conv in gcn.convs:
        torch.nn.init.normal_(conv.bias)
    x = torch.randn(7, 5, dtype=torch.float64)
    a = torch.rand(7, 7, dtype=torch.float64)
    a = (a + a.T) / 2
    a.fill_diagonal_(1.0)
    a[0, 1:] = a[1:, 0] = 0.0  # node 0 alone: degree 1

    an = a.numpy()
    deg = an.sum(1)
    d = np.diag(deg**-0.5)
    a_hat = d @ an @ d  # D^-1/2 A D^-1/2, explicit
    h, pools = x.numpy(), []
    for conv, norm in zip(gcn.convs, gcn.norms, strict=True):
        w, b = conv.weight.detach().numpy(), conv.bias.detach().numpy()
        h = np.maximum(layer_norm(a_hat @ h @ w + b, norm.weight.detach().numpy(),
                                  norm.bias.detach().numpy()), 0.0)  # fmt: skip
        pools.append(h.mean(0))
    z = np.concatenate(pools)
    assert z.shape == (64 + 512 + 1024,)
    for lin in gcn.head:
        z = np.maximum(lin.weight.detach().numpy() @ z + lin.bias.detach().numpy(), 0.0)
    z = gcn.out.weight.detach().numpy() @ z + gcn.out.bias.detach().numpy()
    got = gcn(x, a).detach().numpy()
    assert got.shape == (1, 3) and np.allclose(got[0], z, atol=1e-10)
    assert [lin.out_features for lin in gcn.head] == [256, 32] and gcn.head[0].in_features == 1600


def test_official_init_and_sizes():
    torch.manual_seed(0)
    m = ABiGNetOfficial(69, 3)
    assert [tuple(c.weight.shape) for c in m.gcn.convs] == [(69, 64), (64, 512), (512, 1024)]
    w = m.gcn.convs[2].weight.detach()
    assert abs(float(w.std()) - 0.01) < 5e-4 and not m.gcn.convs[2].bias.any()
    assert m.generator.mlp[0].in_features == 138 and m.gcn.dropout == 0.2
    assert isinstance(build_model("abignet_official", 69, 2), ABiGNetOfficial)
    assert {id(p) for p in m.structure_parameters()}.isdisjoint(
        id(p) for p in m.weight_parameters()
    )
    assert len(m.structure_parameters()) + len(m.weight_parameters()) == len(list(m.parameters()))


def test_temperature_schedule():
    taus = temperatures(200)
    assert taus[0] == pytest.approx(0.98) and taus[1] == pytest.approx(0.98**2)
    first_floor = next(t for t in range(200) if 0.98 ** (t + 1) < 0.1)
    assert taus[first_floor] == 0.1 and taus[first_floor - 1] > 0.1
    assert taus[-1] == 0.1 and all(a >= b for a, b in zip(taus, taus[1:], strict=False))
    assert temperatures(3, init=2.0, decay=0.5, floor=0.6) == [1.0, 0.6, 0.6]


def test_l1_penalty_by_hand():
    a = torch.tensor([[1.0, -0.5], [0.25, 1.0]])
    assert float(l1_penalty(a, 1e-5)) == pytest.approx(1e-5 * 2.75 / 4)


def toy(n_graphs: int = 12, seed: int = 0, dim: int = 6):
    rng = np.random.default_rng(seed)
    graphs, labels = [], []
    for i in range(n_graphs):
        y = i % 2
        x = rng.normal(size=(3 + i % 4, dim)).astype(np.float32)
        x[:, 0] += 1.5 * y
        g = Data(x=torch.tensor(x), y=torch.tensor([y]))
        g.slide_id = f"img{i}"
        graphs.append(g)
        labels.append(y)
    return graphs, np.array(labels)


def snapshot(params):
    return [p.detach().clone() for p in params]


def moved(before, params) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, params, strict=True))


def test_each_pass_moves_only_its_own_side():
    torch.manual_seed(0)
    graphs, _ = toy()
    m = ABiGNetOfficial(6, 2, **SMALL)
    gcn_opt = torch.optim.Adam(m.weight_parameters(), lr=1e-2)
    gen_opt = torch.optim.Adam(m.structure_parameters(), lr=1e-2)
    modes = []
    m.gcn.register_forward_pre_hook(lambda mod, args: modes.append(mod.training))

    phi, w = snapshot(m.structure_parameters()), snapshot(m.weight_parameters())
    official_lower_pass(m, graphs[:6], gcn_opt)
    assert moved(w, m.weight_parameters()) and not moved(phi, m.structure_parameters())
    assert modes == [True] * 6  # dropout on in the training pass
    assert all(p.grad is None for p in m.structure_parameters())

    modes.clear()
    for p in m.weight_parameters():
        p.grad = None
    phi, w = snapshot(m.structure_parameters()), snapshot(m.weight_parameters())
    official_upper_pass(m, graphs[6:], gen_opt)
    assert moved(phi, m.structure_parameters()) and not moved(w, m.weight_parameters())
    assert modes == [False] * 6  # the GCN in eval mode in the validation pass
    assert all(p.grad is None for p in m.weight_parameters())


def test_upper_pass_loss_is_ce_plus_l1_and_clipped():
    graphs, _ = toy()
    g = graphs[1]
    for l1, clip in ((10.0, 1e6), (0.0, 1e6), (10.0, 1e-3)):
        torch.manual_seed(3)
        m = ABiGNetOfficial(6, 2, **SMALL)
        phi = snapshot(m.structure_parameters())
        torch.manual_seed(7)
        a = m.adjacency(g.x, sample=True)
        m.gcn.eval()
        loss = F.cross_entropy(m.gcn(g.x, a), g.y) + l1 * a.abs().mean()
        grads = torch.autograd.grad(loss, m.structure_parameters())
        norm = math.sqrt(sum(float((gr**2).sum()) for gr in grads))
        scale = min(1.0, clip / (norm + 1e-6))
        sgd = torch.optim.SGD(m.structure_parameters(), lr=1.0)
        torch.manual_seed(7)
        official_upper_pass(m, [g], sgd, l1=l1, clip=clip)
        for p0, p, gr in zip(phi, m.structure_parameters(), grads, strict=True):
            assert torch.allclose(p0 - p, scale * gr, atol=1e-6), (l1, clip)
        if clip < 1:
            step = math.sqrt(sum(float(((p0 - p.detach()) ** 2).sum())
                                 for p0, p in zip(phi, m.structure_parameters(), strict=True)))  # fmt: skip
            assert step == pytest.approx(clip, rel=1e-3)


def test_evaluation_is_deterministic_unless_eval_sample():
    torch.manual_seed(0)
    graphs, _ = toy()
    batch = Batch.from_data_list(graphs[:4])
    m = ABiGNetOfficial(6, 2, **SMALL).eval()
    m.set_tau(0.3)
    with torch.no_grad():
        assert torch.equal(m(batch), m(batch))
        per_image = torch.cat([m(Batch.from_data_list([g])) for g in graphs[:4]])
        assert torch.allclose(m(batch), per_image, atol=1e-6)
        noisy = ABiGNetOfficial(6, 2, eval_sample=True, **SMALL).eval()
        noisy.load_state_dict(m.state_dict())
        assert not torch.equal(noisy(batch), noisy(batch))
        m.train()
        assert not torch.equal(m.adjacency(graphs[0].x), m.adjacency(graphs[0].x))


def test_no_edge_control_has_no_edges():
    torch.manual_seed(0)
    graphs, _ = toy()
    m = ABiGNetOfficial(6, 2, graph="none", **SMALL).eval()
    assert m.generator is None and m.structure_parameters() == []
    x = graphs[3].x
    assert torch.equal(m.adjacency(x), torch.eye(len(x)))
    assert torch.equal(m.train().adjacency(x), torch.eye(len(x)))
    m.eval()
    # each patch embedded alone: the first layer's output of a node ignores the others
    h = m.gcn.convs[0](x, m.adjacency(x))
    x2 = x.clone()
    x2[1:] = torch.randn_like(x2[1:])
    assert torch.allclose(m.gcn.convs[0](x2, m.adjacency(x2))[0], h[0])


def test_given_graph_reads_each_images_own_edges():
    """graph='given' (the reference row): a fixed adjacency from each image's edge_index, weight
    1, symmetric, unit diagonal; no generator; a batch gives what its images give one by one."""
    torch.manual_seed(0)
    graphs, labels = toy(12)
    for k, g in enumerate(graphs):  # one edge per image, one direction only: 0 -> j
        g.edge_index = torch.tensor([[0], [k % (g.num_nodes - 1) + 1]])
    a = given_adjacency(graphs[5].edge_index, graphs[5].num_nodes)
    want = torch.eye(graphs[5].num_nodes)
    j = int(graphs[5].edge_index[1, 0])
    want[0, j] = want[j, 0] = 1.0
    assert torch.equal(a, want)
    m = ABiGNetOfficial(6, 2, graph="given", **SMALL).eval()
    assert m.generator is None and m.structure_parameters() == []
    assert torch.equal(m.adjacency(graphs[5].x, edge_index=graphs[5].edge_index), want)
    with torch.no_grad():
        batch = Batch.from_data_list(graphs)
        one_by_one = torch.cat([m(Batch.from_data_list([g])) for g in graphs])
        assert torch.allclose(m(batch), one_by_one, atol=1e-6)
        none = ABiGNetOfficial(6, 2, graph="none", **SMALL).eval()
        none.load_state_dict(m.state_dict())
        assert not torch.allclose(none(batch), m(batch))  # the edges are used
    with pytest.raises(ValueError, match="edge_index"):
        m.adjacency(graphs[0].x)
    with pytest.raises(ValueError, match="index the image"):
        given_adjacency(torch.tensor([[0], [9]]), 3)
    split = make_splits(labels, 2, 1, 0.25, seed=0)[0]
    cfg = OfficialBilevelConfig(model_config={"graph": "given", **SMALL}, iterations=2,
                                device="cpu")  # fmt: skip
    r = train_fold_official(graphs, labels, split, cfg)
    assert all(math.isnan(h["outer_loss"]) for h in r.history)  # nothing learns the graph
    assert all(h["mean_edge_weight"] > 0 for h in r.history)


def test_train_fold_official_is_deterministic_and_learns():
    graphs, labels = toy(24)
    split = make_splits(labels, 3, 1, 0.25, seed=0)[0]
    cfg = OfficialBilevelConfig(
        model_config=SMALL, iterations=15, lr_gcn=3e-3, device="cpu", checkpoint="val"
    )
    a = train_fold_official(graphs, labels, split, cfg)
    b = train_fold_official(graphs, labels, split, cfg)
    assert a.metrics == b.metrics and a.history == b.history and a.test_probs == b.test_probs
    assert [h["tau"] for h in a.history] == pytest.approx(temperatures(15))
    assert a.metrics["auc"] > 0.7
    best = max(range(15), key=lambda i: (a.history[i]["val_auc"], -a.history[i]["val_loss"]))
    assert a.best_epoch == best + 1
    last = train_fold_official(
        graphs, labels, split, OfficialBilevelConfig(model_config=SMALL, iterations=4,
                                                     device="cpu"),
    )  # fmt: skip
    assert last.best_epoch == 4  # the official default keeps the last iteration
    control = cross_validate(
        graphs, labels, [split],
        OfficialBilevelConfig(model_config={**SMALL, "graph": "none"}, iterations=3,
                              device="cpu"),
    )[0]  # fmt: skip
    assert all(math.isnan(h["outer_loss"]) for h in control.history)
    assert all(h["mean_edge_weight"] == 0.0 for h in control.history)
    # keep_first: the first fold's model and test graphs, the same fold as trained alone
    short = OfficialBilevelConfig(model_config=SMALL, iterations=3, device="cpu")
    kept, (model, test) = cross_validate(graphs, labels, [split, split], short, keep_first=True)
    alone = train_fold_official(graphs, labels, split, short)
    assert [r.metrics for r in kept] == [alone.metrics, alone.metrics]
    with FoldPool(2) as pool:  # in worker processes: the same folds, the same first model
        pooled, (pooled_model, _) = cross_validate(
            graphs, labels, [split, split], short, keep_first=True, executor=pool
        )
    assert [r.metrics for r in pooled] == [alone.metrics, alone.metrics]
    assert [r.history for r in pooled] == [r.history for r in kept]
    for a, b in zip(pooled_model.state_dict().values(), model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert len(test) == len(split.test)
    model.eval()
    with torch.no_grad():
        probs = torch.cat([model(g).softmax(-1) for g in test])
    np.testing.assert_allclose(probs.numpy(), np.asarray(alone.test_probs), atol=1e-5)


def test_config_errors():
    with pytest.raises(ValueError, match="graph must be one of"):
        ABiGNetOfficialConfig(graph="knn")
    with pytest.raises(ValueError, match="dropout"):
        ABiGNetOfficialConfig(dropout=1.0)
    with pytest.raises(ValueError, match="checkpoint must be one of"):
        OfficialBilevelConfig(checkpoint="test")
    with pytest.raises(ValueError, match="iterations"):
        OfficialBilevelConfig(iterations=0)
    graphs, labels = toy(12)
    split = make_splits(labels, 3, 1, 0.25, seed=0)[0]
    graphs[int(split.test[0])] = Data(x=torch.zeros(0, 6))
    with pytest.raises(ValueError, match="has no patches"):
        train_fold_official(graphs, labels, split, OfficialBilevelConfig(iterations=1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    graphs, labels = toy(12)
    batch = Batch.from_data_list(graphs[:4])
    m = ABiGNetOfficial(6, 2, **SMALL).eval()
    m.set_tau(0.5)
    with torch.no_grad():
        cpu = m(batch)
        cuda = m.cuda()(batch.cuda()).cpu()
    torch.testing.assert_close(cuda, cpu, rtol=1e-4, atol=1e-5)
    split = make_splits(labels, 3, 1, 0.25, seed=0)[0]
    cfg = OfficialBilevelConfig(model_config=SMALL, iterations=2, device="cuda")
    result = train_fold_official(graphs, labels, split, cfg)
    assert result.device.startswith("cuda") and np.isfinite(result.test_probs).all()


def test_linked_exact_copies_read_like_isolated_patches():
    """Why a look-alike demo is hard for the official ABiG-Net (README, ABiG-Net section): with
    the symmetric normalisation D^-1/2 A D^-1/2 and a unit diagonal, a graph that links only
    exact copies (any weight) gives every layer, and so the logits, exactly what no edges give;
    only edges between patches that differ change the output."""
    torch.manual_seed(0)
    model = DenseGCN(69, 2).eval()
    x = torch.randn(16, 69).repeat_interleave(4, 0)  # 16 groups of 4 exact copies
    group = torch.arange(64) // 4
    same = (group[:, None] == group[None, :]).double()
    alone = model.double()(x.double(), torch.eye(64, dtype=torch.float64))
    for w in (1.0, 0.5, 0.1):
        a = same * w
        a.fill_diagonal_(1.0)
        torch.testing.assert_close(model(x.double(), a), alone, atol=1e-12, rtol=0)
    a = same.clone()
    a[0, 8] = a[8, 0] = 0.5  # one edge between different patches
    assert (model(x.double(), a) - alone).abs().max() > 1e-6
