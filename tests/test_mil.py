import math

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.utils import scatter

from wsigraph.data.musk import load_musk1
from wsigraph.nn.mil import (
    ABMIL,
    CLAMSB,
    DSMIL,
    MILRNN,
    DeepAttnMIL,
    MaxPoolMIL,
    MeanPoolMIL,
    MinMaxMIL,
    _rank_in_bags,
    _top_bottom,
    bag_kmeans,
)

F_IN = 6
MODELS = {
    "mean": lambda f, c=2: MeanPoolMIL(f, c, hidden=(16, 8)),
    "max": lambda f, c=2: MaxPoolMIL(f, c, hidden=(16, 8)),
    "abmil": lambda f, c=2: ABMIL(f, c, hidden=(16, 8), attention_dim=4),
    "abmil-gated": lambda f, c=2: ABMIL(f, c, hidden=(16, 8), attention_dim=4, gated=True),
    "dsmil": lambda f, c=2: DSMIL(f, c, hidden=(16, 8), query_dim=4),
    "minmax": lambda f, c=2: MinMaxMIL(f, c, hidden=(8,), r=3),
    "minmax-embed": lambda f, c=2: MinMaxMIL(f, c, hidden=(8,), r=2, embed=(8,)),
    "clam-sb": lambda f, c=2: CLAMSB(f, c, hidden=(16,), attention_dim=4, k_sample=2),
    "deepattnmil": lambda f, c=2: DeepAttnMIL(
        f, c, hidden=(16,), attention_dim=4, head=(8,), n_clusters=3, kmeans_iters=5
    ),
    "mil-rnn": lambda f, c=2: MILRNN(f, c, hidden=(16,), k=3, rnn_dim=8),
}
ATTENTION = ("abmil", "abmil-gated", "dsmil", "clam-sb", "deepattnmil")


pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_load_musk1_counts(real_data):
    data = load_musk1(real_data / "mil" / "musk1_clean1.data")
    assert data.instances.shape == (476, 166) and data.instances.dtype.name == "float32"
    assert data.bag_index.shape == (476,) and data.bag_index.max() == 91
    assert data.bag_labels.shape == (92,) and data.bag_labels.sum() == 47
    assert len(data.bag_names) == 92 and data.bag_names[0] == "MUSK-188"
    assert load_musk1().bag_names == data.bag_names  # the default path


def test_load_musk1_rejects_bad_files(real_data, tmp_path):
    lines = (real_data / "mil" / "musk1_clean1.data").read_text().splitlines()
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


def test_rank_in_bags():
    score = torch.tensor([0.5, -1.0, 2.0, 0.0, 3.0, 1.0])
    batch = torch.tensor([1, 0, 1, 1, 0, 1])  # bag 2 is empty
    order, rank, count = _rank_in_bags(score, batch, 3)
    assert order.tolist() == [4, 1, 2, 5, 0, 3]
    assert rank.tolist() == [0, 1, 0, 1, 2, 3] and count.tolist() == [2, 4, 0]


def _monotone_clam(c=3, subtyping=True):
    """CLAM-SB on raw features whose attention score is increasing in feature 0."""
    torch.manual_seed(0)
    model = CLAMSB(2, c, hidden=(), attention_dim=1, k_sample=2, subtyping=subtyping).eval()
    with torch.no_grad():
        model.attention_V.weight.copy_(torch.tensor([[1.0, 0.0]]))
        model.attention_V.bias.zero_()
        model.attention_U.weight.zero_()  # the gate is a constant 1/2
        model.attention_w.weight.fill_(1.0)
    return model


@pytest.mark.parametrize("subtyping", [True, False])
def test_clam_instance_pseudo_labels(subtyping):
    """Top-k / bottom-k by attention on a hand-made batch; the loss written out per bag."""
    x = torch.tensor(
        [[0.3, 1.0], [-1.0, 0.5], [2.0, -0.2], [0.1, 0.0], [1.5, 0.7]]  # bag 0
        + [[0.5, -1.0], [-0.5, 0.2], [0.0, 0.3]]  # bag 1: 3 < 2k instances
    )
    batch = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])
    y = torch.tensor([2, 0])
    model = _monotone_clam(subtyping=subtyping)
    out = model.outputs(x, batch, 2)
    assert out["top"].tolist() == [2, 4, 5, 7]  # descending feature 0 within each bag
    assert out["bottom"].tolist() == [3, 1, 7, 6]  # row 7 is in both halves of bag 1
    ce, g, zeros = F.cross_entropy, model.instance_classifiers, torch.zeros(2, dtype=torch.long)
    expected_inst = []
    for top, bottom, label in [([2, 4], [3, 1], 2), ([5, 7], [7, 6], 0)]:
        in_class = torch.cat([g[label](x[top]), g[label](x[bottom])])  # labels 1, 1, 0, 0
        terms = [ce(in_class, torch.tensor([1, 1, 0, 0]))]
        if subtyping:  # every other class: the top-k are out of class
            terms += [ce(g[c](x[top]), zeros) for c in range(3) if c != label]
        expected_inst.append(sum(terms) / len(terms))
    expected_inst = sum(expected_inst) / 2
    torch.testing.assert_close(model.instance_loss(out, y), expected_inst)
    expected = 0.7 * ce(out["logits"], y) + 0.3 * expected_inst
    torch.testing.assert_close(model.loss(out, y), expected)


def test_clam_small_bags_clip_k():
    model = _model("clam-sb", c=3)  # k_sample=2
    x, batch = _bags([1, 0, 3])
    out = model.outputs(x, batch, 3)
    assert out["top"].tolist()[0] == 0 and out["bottom"].tolist()[0] == 0  # bag of one: k = 1
    assert out["instance_logits"].shape == (2 * 3, 3, 2)  # 1 + 0 + 2 rows per half
    assert torch.isfinite(model.loss(out, torch.tensor([1, 0, 2])))


def test_bag_kmeans_finds_blobs_and_ignores_instance_order():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    blob = torch.arange(3).repeat_interleave(torch.tensor([4, 7, 5]))  # [16]
    x = torch.cat([centres[blob] + 0.3 * torch.randn(16, 3, generator=g), torch.randn(2, 3)])
    batch = torch.tensor([0] * 16 + [1] * 2)  # bag 1 has 2 < 3 instances
    cluster = bag_kmeans(x, batch, 2, 3, 10)
    same = cluster[:16, None] == cluster[None, :16]
    assert torch.equal(same, blob[:, None] == blob[None, :])  # the blobs, up to relabelling
    assert sorted(cluster[16:].tolist()) == [0, 1]  # two instances, two clusters
    perm = torch.randperm(18, generator=g)
    assert torch.equal(bag_kmeans(x[perm], batch[perm], 2, 3, 10), cluster[perm])
    assert torch.equal(bag_kmeans(x, batch, 2, 3, 10), cluster)  # deterministic


def test_deepattnmil_matches_dense_cluster_pooling():
    model = _model("deepattnmil")  # 3 clusters
    x, batch = _bags([10, 2])
    x.requires_grad_(True)
    out = model.outputs(x, batch, 2)
    assert out["cluster"][:10].unique().numel() == 3 and out["cluster"][10:].unique().numel() == 2
    assert not out["cluster"].requires_grad
    for b, rows in enumerate([torch.arange(10), torch.arange(10, 12)]):
        h, cluster = model.embed(x[rows]), out["cluster"][rows]
        e = torch.stack([h[cluster == j].mean(0) for j in cluster.unique()])  # [K_b, D]
        gate = torch.tanh(model.attention_V(e)) * torch.sigmoid(model.attention_U(e))
        a = torch.softmax(model.attention_w(gate).squeeze(-1), 0)
        torch.testing.assert_close(out["cluster_attention"][b, cluster.unique()], a)
        expected = model.classifier(model.head((a.unsqueeze(-1) * e).sum(0, keepdim=True)))
        torch.testing.assert_close(out["logits"][b : b + 1], expected)
        size = (cluster[:, None] == cluster[None, :]).sum(-1)
        torch.testing.assert_close(out["attention"][rows], a[cluster] / size)  # a_j / |S_j|
    torch.manual_seed(1)  # the clustering depends on the features only
    again = MODELS["deepattnmil"](F_IN).eval().outputs(x, batch, 2)
    assert torch.equal(again["cluster"], out["cluster"])


def test_milrnn_top_k_order_and_sequence():
    torch.manual_seed(0)
    model = MILRNN(2, 2, hidden=(), k=3, rnn_dim=4).eval()
    with torch.no_grad():  # p = sigmoid(feature 0)
        model.instance_classifier.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
        model.instance_classifier.bias.zero_()
    x = torch.tensor(
        [[0.3, 1.0], [-1.0, 0.5], [2.0, -0.2], [0.1, 0.0], [1.5, 0.7], [0.5, -1.0], [-0.5, 0.2]]
    )
    batch = torch.tensor([0, 1, 0, 0, 0, 1, 2])  # bag 1 has 2 < k, bag 2 one, bag 3 none
    out = model.outputs(x, batch, 4)
    assert out["top"].tolist() == [[2, 4, 0], [5, 1, -1], [6, -1, -1], [-1, -1, -1]]
    assert out["lengths"].tolist() == [3, 2, 1, 0]
    torch.testing.assert_close(out["scores"], torch.sigmoid(x[:, 0]))
    for b, rows in enumerate([[2, 4, 0], [5, 1], [6]]):
        _, state = model.rnn(x[rows].unsqueeze(0))  # the bag's top instances, in order
        torch.testing.assert_close(out["logits"][b], model.classifier(state[0, 0]))
        torch.testing.assert_close(out["max_logits"][b], model.instance_classifier(x[rows[0]]))
    torch.testing.assert_close(out["logits"][3], model.classifier(torch.zeros(4)))
    y = torch.tensor([1, 0, 1, 0])
    expected = F.cross_entropy(out["logits"], y) + F.cross_entropy(out["max_logits"][:3], y[:3])
    torch.testing.assert_close(model.loss(out, y), expected)
