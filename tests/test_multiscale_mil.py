import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Batch

from wsigraph.graphs.pyramid import pyramid_graph
from wsigraph.nn.ihpool import Pyramid, from_batch
from wsigraph.nn.mil import DSMIL
from wsigraph.nn.multiscale_mil import HIPT, MSDAMIL, PTreeNet, grad_reverse, multiscale_concat

F_IN = 6
MODELS = {
    "msdamil": lambda f, c=2: MSDAMIL(f, c, hidden=(16, 8), attention_dim=4, domain_hidden=8),
    "ptree": lambda f, c=2: PTreeNet(f, c, hidden=(16, 8), attention_dim=4, n_select=3),
    "hipt": lambda f, c=2: HIPT(f, c, dim=8, heads=2, region_layers=1, slide_layers=2),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(name, f=F_IN, c=2, seed=0):
    torch.manual_seed(seed)
    return MODELS[name](f, c).eval()


def _pyramid(n_mid, n_bottom, f=F_IN, seed=0):
    """Thumbnail + a row of n_mid 5x patches + n_bottom 10x patches dealt round-robin under them
    (at most 4 each, in the 2 x 2 cells inside their parent)."""
    level, row, col, parent = [0], [0], [0], [-1]
    for i in range(n_mid):
        level.append(1), row.append(0), col.append(i), parent.append(0)
    for k in range(n_bottom):
        i, slot = k % n_mid, k // n_mid
        level.append(2), row.append(slot // 2), col.append(2 * i + slot % 2), parent.append(1 + i)
    x = torch.randn(len(level), f, generator=torch.Generator().manual_seed(seed))
    return pyramid_graph(x, np.array(level), np.array(row), np.array(col), np.array(parent))


def _batch(graphs):
    return from_batch(Batch.from_data_list(graphs))


SHAPES = [(3, 7), (1, 4), (5, 20), (2, 0), (4, 9)]


def _graphs(f=F_IN):
    return [_pyramid(m, b, f=f, seed=i) for i, (m, b) in enumerate(SHAPES)]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_output_shape_and_repr(name, n_classes):
    model = _model(name, c=n_classes)
    out = model(_batch(_graphs()))
    assert out.shape == (len(SHAPES), n_classes) and torch.isfinite(out).all()
    assert repr(model).startswith(f"{type(model).__name__}({F_IN}, n_classes={n_classes}")


def _permute(p: Pyramid, perm: Tensor) -> Pyramid:
    """The same pyramid with its nodes in the order ``perm`` (parents and edges remapped)."""
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    parent = p.parent[perm]
    return p.replace(
        x=p.x[perm],
        level=p.level[perm],
        grid=p.grid[perm],
        parent=torch.where(parent >= 0, inv[parent.clamp(min=0)], -1),
        batch=p.batch[perm],
        edge_index=inv[p.edge_index],
    )


@pytest.mark.parametrize("name", MODELS)
def test_node_order_invariant(name):
    model = _model(name)
    p = from_batch(_pyramid(5, 17))
    perm = torch.randperm(p.num_nodes, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model(_permute(p, perm)), model(p), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_batched_equals_each_pyramid_alone(name):
    model = _model(name)
    graphs = _graphs()
    graphs.insert(2, _pyramid(0, 0, seed=9))  # a thumbnail-only slide mid-batch
    together = model(_batch(graphs))
    for b, g in enumerate(graphs):
        torch.testing.assert_close(together[b : b + 1], model(from_batch(g)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_thumbnail_only_and_one_patch(name):
    model = _model(name)
    for g in (_pyramid(0, 0), _pyramid(1, 0), _pyramid(1, 1)):
        assert torch.isfinite(model(from_batch(g))).all()
    out = model.outputs(from_batch(_pyramid(0, 0)))
    assert model.loss(out, torch.tensor([1])).isfinite()


def _big(n_mid=12_500, f=64):
    """Thumbnail + n_mid 5x patches with 4 10x children each, built directly."""
    n = 1 + 5 * n_mid
    level = torch.cat([torch.zeros(1), torch.ones(n_mid), torch.full((4 * n_mid,), 2.0)]).long()
    parent = torch.cat(
        [torch.tensor([-1]), torch.zeros(n_mid, dtype=torch.long), 1 + torch.arange(4 * n_mid) // 4]
    )
    return Pyramid(
        x=torch.randn(n, f, generator=torch.Generator().manual_seed(0)),
        edge_index=torch.empty(2, 0, dtype=torch.long),
        edge_type=torch.empty(0, dtype=torch.long),
        level=level,
        grid=torch.zeros(n, 2),
        parent=parent,
        batch=torch.zeros(n, dtype=torch.long),
        num_graphs=1,
    )


BIG = {
    "msdamil": lambda f: MSDAMIL(f),
    "ptree": lambda f: PTreeNet(f),
    "hipt": lambda f: HIPT(f, dim=32, heads=2),
}


@pytest.mark.parametrize("name", BIG)
def test_50000_level2_nodes_on_cpu(name):
    torch.manual_seed(0)
    model = BIG[name](64).eval()
    p = _big()
    assert int((p.level == 2).sum()) == 50_000
    with torch.no_grad():
        out = model(p)
    assert out.shape == (1, 2) and torch.isfinite(out).all()


def _toy(n=8, f=4, seed=0):
    """Pyramids labelled by whether one 10x patch has feature 0 = 3 (half of them)."""
    g = torch.Generator().manual_seed(seed)
    graphs, y = [], torch.arange(n) % 2
    for i in range(n):
        n_mid = int(torch.randint(1, 4, (1,), generator=g))
        n_bottom = int(torch.randint(n_mid, 4 * n_mid + 1, (1,), generator=g))
        d = _pyramid(n_mid, n_bottom, f=f, seed=seed * 100 + i)
        d.x = d.x.clamp(-1.5, 1.5)
        if y[i]:
            d.x[1 + n_mid + int(torch.randint(n_bottom, (1,), generator=g)), 0] = 3.0
        graphs.append(d)
    return _batch(graphs), y


@pytest.mark.parametrize("name", MODELS)
def test_overfits_a_tiny_labelled_set(name):
    p, y = _toy()
    model = _model(name, f=p.x.size(1)).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        model.loss(model.outputs(p), y).backward()
        opt.step()
    model.eval()
    logits = model(p)
    assert torch.equal(logits.argmax(-1), y)
    assert F.cross_entropy(logits, y).item() < 0.1  # the class term (MS-DA-MIL adds a domain term)


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_a_gradient(name):
    model = _model(name).train()
    p = _batch([_pyramid(4, 11, seed=0), _pyramid(2, 6, seed=1)])
    model.loss(model.outputs(p), torch.tensor([0, 1])).backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), pname
        assert param.grad.abs().sum() > 0, pname


def test_gradient_reversal_flips_and_scales():
    x = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(5, 3)
    y = grad_reverse(x, 0.25)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    torch.testing.assert_close(x.grad, -0.25 * w)


def test_msdamil_scale_attention_and_domain_loss():
    model = _model("msdamil", c=3)
    p = _batch([_pyramid(3, 7), _pyramid(2, 0, seed=1), _pyramid(0, 0, seed=2)])
    out = model.outputs(p)
    beta = out["scale_attention"]
    assert beta.shape == (3, 2)
    torch.testing.assert_close(beta.sum(1), torch.ones(3))
    assert beta[1, 1] == 0  # slide 1 has no 10x patch
    a = out["attention"]
    assert a[p.level == 0].eq(0).all()
    for b in range(2):
        for lv in (1, 2):
            m = (p.batch == b) & (p.level == lv)
            if m.any():
                torch.testing.assert_close(a[m].sum(), torch.tensor(1.0))
    used = p.level > 0
    assert torch.equal(out["domain_labels"].sort().values, p.batch[used].sort().values)
    y = torch.tensor([0, 2, 1])
    domain = F.cross_entropy(out["domain_logits"], out["domain_labels"])
    torch.testing.assert_close(model.loss(out, y), F.cross_entropy(out["logits"], y) + domain)
    alone = model.outputs(from_batch(_pyramid(3, 7)))
    torch.testing.assert_close(model.loss(alone, y[:1]), F.cross_entropy(alone["logits"], y[:1]))


def test_ptreenet_selects_top_patches_and_builds_trees():
    model = PTreeNet(2, hidden=(), attention_dim=1, n_select=3).eval()
    with torch.no_grad():  # score = tanh(x_patch[0]): selection by feature 0
        model.focal_V.weight.zero_()
        model.focal_V.weight[0, 0] = 1.0
        model.focal_V.bias.zero_()
        model.focal_w.weight.fill_(1.0)
    a = _pyramid(5, 10, f=2)  # nodes 1..5 are 5x, 6..15 10x (parent 1 + k % 5)
    a.x[1:6, 0] = torch.tensor([0.1, 0.9, -0.5, 0.4, 0.4])  # a tie between nodes 4 and 5
    b = _pyramid(2, 3, f=2, seed=1)  # fewer than n_select patches
    p = _batch([a, b])
    out = model.outputs(p)
    assert out["selected"][:3].tolist() == [2, 4, 5]  # descending; the tie to the lower index
    assert sorted(out["selected"][3:].tolist()) == [17, 18]  # slide b: all its patches
    w = out["selection_weight"]
    torch.testing.assert_close(w[:3].sum(), torch.tensor(1.0))
    torch.testing.assert_close(w[3:].sum(), torch.tensor(1.0))
    assert w[0] > w[1] and torch.isclose(w[1], w[2])
    # tree of slide a: thumbnail 0, patches 2, 4, 5 and their 10x children (parent in {2, 4, 5})
    kids_a = [6 + k for k in range(10) if 1 + k % 5 in (2, 4, 5)]
    assert out["tree"].tolist() == sorted([0, 2, 4, 5, *kids_a] + list(range(16, 22)))
    # a patch with a bigger score than all others wins in any node order
    perm = torch.randperm(p.num_nodes, generator=torch.Generator().manual_seed(0))
    moved = model.outputs(_permute(p, perm))
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    assert moved["selected"][0] == inv[2]


def test_multiscale_concat_hand_made():
    x = torch.arange(7 * 2, dtype=torch.float).view(7, 2)
    level, row, col = [0, 1, 1, 2, 2, 2, 2], [0, 0, 0, 0, 0, 1, 0], [0, 0, 1, 0, 1, 0, 2]
    parent = [-1, 0, 0, 1, 1, 1, 2]
    g = pyramid_graph(x, np.array(level), np.array(row), np.array(col), np.array(parent))
    h = _pyramid(1, 2, f=2, seed=3)
    p = _batch([g, h])
    feats, batch = multiscale_concat(p, 2)
    expected = torch.cat([x[[3, 4, 5, 6]], x[[1, 1, 1, 2]]], dim=-1)
    expected = torch.cat([expected, torch.cat([h.x[[2, 3]], h.x[[1, 1]]], dim=-1)])
    torch.testing.assert_close(feats, expected)
    assert batch.tolist() == [0, 0, 0, 0, 1, 1]
    feats, batch = multiscale_concat(p, 1)
    torch.testing.assert_close(feats, torch.cat([x[[1, 2]], h.x[[1]]]))
    assert batch.tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="level must be >= 1"):
        multiscale_concat(p, 0)
    assert DSMIL(4, hidden=(8,))(*multiscale_concat(p, 2), p.num_graphs).shape == (2, 2)


def test_msdamil_domain_gradient_is_reversed_in_the_features():
    model = _model("msdamil").train()
    model.grl_lambda = 0.5
    p = _batch([_pyramid(3, 7), _pyramid(2, 5, seed=1)])
    out = model.outputs(p)
    F.cross_entropy(out["domain_logits"], out["domain_labels"]).backward()
    features = [param.grad.clone() for param in model.embed.parameters()]
    head = [param.grad.clone() for param in model.domain.parameters()]
    model.zero_grad()
    plain = [model.domain[s](model.embed[s](p.x[p.level == s + 1])) for s in range(2)]
    F.cross_entropy(torch.cat(plain), out["domain_labels"]).backward()
    for got, param in zip(features, model.embed.parameters(), strict=True):
        torch.testing.assert_close(got, -0.5 * param.grad)
    for got, param in zip(head, model.domain.parameters(), strict=True):
        torch.testing.assert_close(got, param.grad)


def test_hipt_region_attention_sums_to_one_per_slide():
    model = _model("hipt")
    p = _batch([_pyramid(3, 7), _pyramid(0, 0, seed=1), _pyramid(2, 0, seed=2)])
    out = model.outputs(p)
    assert torch.equal(out["regions"], torch.nonzero(p.level == 1).view(-1))
    a = out["attention"]
    assert ((a >= 0) & (a <= 1)).all()
    torch.testing.assert_close(
        torch.zeros(3).index_add_(0, p.batch[out["regions"]], a), torch.tensor([1.0, 0.0, 1.0])
    )
