import math

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.utils import scatter

from wsigraph.data.musk import load_musk1
from wsigraph.nn.mil import ABMIL, DSMIL, MaxPoolMIL, MeanPoolMIL, MinMaxMIL, _top_bottom

F_IN = 6
MODELS = {
    "mean": lambda f, c=2: MeanPoolMIL(f, c, hidden=(16, 8)),
    "max": lambda f, c=2: MaxPoolMIL(f, c, hidden=(16, 8)),
    "abmil": lambda f, c=2: ABMIL(f, c, hidden=(16, 8), attention_dim=4),
    "abmil-gated": lambda f, c=2: ABMIL(f, c, hidden=(16, 8), attention_dim=4, gated=True),
    "dsmil": lambda f, c=2: DSMIL(f, c, hidden=(16, 8), query_dim=4),
    "minmax": lambda f, c=2: MinMaxMIL(f, c, hidden=(8,), r=3),
    "minmax-embed": lambda f, c=2: MinMaxMIL(f, c, hidden=(8,), r=2, embed=(8,)),
}
ATTENTION = ("abmil", "abmil-gated", "dsmil")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: a second intra-op thread only adds contention (seconds on a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(name, f=F_IN, c=2, seed=0):
    torch.manual_seed(seed)
    return MODELS[name](f, c).eval()


def _bags(sizes, f=F_IN, seed=0):
    """Instances of bags of the given sizes, concatenated: x [N, f], batch [N]."""
    x = torch.randn(sum(sizes), f, generator=torch.Generator().manual_seed(seed))
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return x, batch


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_output_shape_and_repr(name, n_classes):
    model = _model(name, c=n_classes)
    x, batch = _bags([3, 1, 7])
    out = model(x, batch, 3)
    assert out.shape == (3, n_classes) and torch.isfinite(out).all()
    assert repr(model).startswith(f"{type(model).__name__}({F_IN}, n_classes={n_classes}")


@pytest.mark.parametrize("name", MODELS)
def test_permutation_invariant(name):
    model = _model(name)
    x, batch = _bags([5, 9, 2, 4])
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))  # bags interleave
    torch.testing.assert_close(
        model(x[perm], batch[perm], 4), model(x, batch, 4), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("name", MODELS)
def test_batched_equals_each_bag_alone(name):
    model = _model(name)
    sizes = [1, 3, 7, 12, 2]
    x, batch = _bags(sizes)
    together = model(x, batch, len(sizes))
    for b in range(len(sizes)):
        xb = x[batch == b]
        alone = model(xb, torch.zeros(len(xb), dtype=torch.long), 1)
        torch.testing.assert_close(together[b : b + 1], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_bag_of_one_instance_and_empty_bag(name):
    model = _model(name)
    x, batch = _bags([1])
    assert torch.isfinite(model(x, batch, 1)).all()
    x, batch = _bags([2, 0, 3])  # bag 1 is empty: finite, and the others are unaffected
    out = model(x, batch, 3)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[[0, 2]], model(x, torch.where(batch == 2, 1, batch), 2))


@pytest.mark.parametrize("name", MODELS)
def test_bag_of_50000_instances_on_cpu(name):
    torch.manual_seed(0)
    model = MODELS[name](64).eval()
    x = torch.randn(50_000, 64)
    with torch.no_grad():
        out = model(x, torch.zeros(50_000, dtype=torch.long), 1)
    assert out.shape == (1, 2) and torch.isfinite(out).all()


def _toy_bags(n_bags=8, f=4, seed=0):
    """Bag label = whether any instance has feature 0 > 2; half the bags positive."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(3, 9, (n_bags,), generator=g)
    x = torch.randn(int(sizes.sum()), f, generator=g).clamp(-1.5, 1.5)
    batch = torch.repeat_interleave(torch.arange(n_bags), sizes)
    y = torch.arange(n_bags) % 2
    for b in y.nonzero().flatten():
        first = (batch == b).nonzero()[0, 0]
        x[first, 0] = 3.0
    assert torch.equal(scatter((x[:, 0] > 2).long(), batch, reduce="max"), y)
    return x, batch, y


def _loss(model, x, batch, num_bags, y):
    return model.loss(model.outputs(x, batch, num_bags), y)


@pytest.mark.parametrize("name", MODELS)
def test_overfits_a_tiny_labelled_set(name):
    x, batch, y = _toy_bags()
    model = _model(name, f=x.size(1)).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        _loss(model, x, batch, 8, y).backward()
        opt.step()
    model.eval()
    assert torch.equal(model(x, batch, 8).argmax(-1), y)
    assert _loss(model, x, batch, 8, y).item() < 0.1


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_a_gradient(name):
    model = _model(name).train()
    x, batch = _bags([4, 6])
    _loss(model, x, batch, 2, torch.tensor([0, 1])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", ATTENTION)
def test_attention_sums_to_one_per_bag(name):
    model = _model(name, c=3)
    x, batch = _bags([1, 4, 9])
    _, a = model(x, batch, 3, return_attention=True)
    assert a.shape[0] == len(x) and ((a >= 0) & (a <= 1)).all()
    torch.testing.assert_close(scatter(a, batch, reduce="sum"), torch.ones(3, *a.shape[1:]))
    assert torch.allclose(a[0], torch.ones_like(a[0]))  # the bag of one instance


def test_abmil_matches_dense_equations():
    """Ilse et al. Eq. 8 and 10 on one bag, written out densely."""
    model = _model("abmil-gated")
    x, batch = _bags([7])
    h = model.embed(x)
    e = model.attention_w(torch.tanh(model.attention_V(h)) * torch.sigmoid(model.attention_U(h)))
    a = torch.softmax(e.squeeze(-1), 0)
    expected = model.classifier((a.unsqueeze(-1) * h).sum(0, keepdim=True))
    out, att = model(x, batch, 1, return_attention=True)
    torch.testing.assert_close(att, a)
    torch.testing.assert_close(out, expected)


def test_dsmil_matches_official_formulation():
    """One bag through DS-MIL's official BClassifier steps (sort, index_select, mm, Conv1d)."""
    model = _model("dsmil", c=3)
    x, batch = _bags([9])
    feats = model.embed(x)
    classes = model.instance_classifier(feats)  # [N, C]
    Q = model.query(feats)
    _, m_indices = torch.sort(classes, 0, descending=True)
    q_max = model.query(torch.index_select(feats, 0, m_indices[0, :]))  # [C, Q]
    A = F.softmax(Q @ q_max.T / math.sqrt(Q.size(1)), 0)  # [N, C]
    B = A.T @ feats  # [C, D]
    conv_weight = model.bag_classifier.weight.view(3, 3, -1)  # Conv1d(C, C, kernel_size=D)
    bag = F.conv1d(B.unsqueeze(0), conv_weight, model.bag_classifier.bias).view(1, -1)
    max_pred = classes.max(0, keepdim=True).values
    out = model.outputs(x, batch, 1)
    torch.testing.assert_close(out["attention"], A)
    torch.testing.assert_close(out["bag_logits"], bag)
    torch.testing.assert_close(out["max_logits"], max_pred)
    prob = 0.5 * torch.softmax(max_pred, -1) + 0.5 * torch.softmax(bag, -1)
    torch.testing.assert_close(out["logits"].exp(), prob)
    torch.testing.assert_close(model(x, batch, 1), out["logits"])
    y = torch.tensor([2])
    expected = 0.5 * F.cross_entropy(bag, y) + 0.5 * F.cross_entropy(max_pred, y)
    torch.testing.assert_close(model.loss(out, y), expected)


def test_minmax_top_bottom_and_padding():
    score = torch.tensor([0.5, -1.0, 2.0, 0.0, 3.0, 1.0, -2.0])
    batch = torch.tensor([0, 0, 0, 0, 0, 1, 1])  # bag 1 has 2 < r instances; bag 2 is empty
    out = _top_bottom(score, batch, 3, r=3)
    expected = torch.tensor(
        [
            [3.0, 2.0, 0.5, -1.0, 0.0, 0.5],
            [1.0, -2.0, -2.0, -2.0, 1.0, 1.0],
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    torch.testing.assert_close(out, expected)
    model = _model("minmax")
    x, batch = _bags([10])
    _, s = model(x, batch, 1, return_attention=True)
    top, bottom = s.topk(3).values, (-s).topk(3).values.neg()
    expected = model.classifier(model.mlp(torch.cat([top, bottom]).unsqueeze(0)))
    torch.testing.assert_close(model(x, batch, 1), expected)


def test_load_musk1_counts(shared_data):
    data = load_musk1(shared_data / "mil" / "musk1_clean1.data")
    assert data.instances.shape == (476, 166) and data.instances.dtype.name == "float32"
    assert data.bag_index.shape == (476,) and data.bag_index.max() == 91
    assert data.bag_labels.shape == (92,) and data.bag_labels.sum() == 47
    assert len(data.bag_names) == 92 and data.bag_names[0] == "MUSK-188"
    assert load_musk1().bag_names == data.bag_names  # the default path


def test_load_musk1_rejects_bad_files(shared_data, tmp_path):
    lines = (shared_data / "mil" / "musk1_clean1.data").read_text().splitlines()
    truncated = tmp_path / "truncated.data"
    truncated.write_text("\n".join(lines[:300]) + "\n")
    with pytest.raises(ValueError, match="not the complete MUSK1 file.*299 instances"):
        load_musk1(truncated)
    cut_row = tmp_path / "cut_row.data"
    cut_row.write_text("\n".join(lines[:10] + [lines[10][:200]]) + "\n")
    with pytest.raises(ValueError, match="line 11: expected 169 comma-separated fields"):
        load_musk1(cut_row)
    bad_class = tmp_path / "bad_class.data"
    bad_class.write_text("\n".join(lines[:5] + [lines[5].rsplit(",", 1)[0] + ",2."]) + "\n")
    with pytest.raises(ValueError, match="line 6: class must be 0 or 1"):
        load_musk1(bad_class)
    with pytest.raises(FileNotFoundError, match="MUSK1 file not found"):
        load_musk1(tmp_path / "missing.data")
