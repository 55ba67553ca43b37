import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from wsigraph.graphs.pyramid import pyramid_graph
from wsigraph.models import build_model
from wsigraph.models.h2mil import CONVS, POOLS


def _graph(label: int, seed: int, f: int = 8):
    """A small pyramid whose 10x nodes carry the label in feature 0 (only at level 2)."""
    rng = np.random.default_rng(seed)
    n_mid = int(rng.integers(1, 4))
    n_bot = int(rng.integers(1, 4 * n_mid + 1))
    level = [0] + [1] * n_mid + [2] * n_bot
    row = [0] + [0] * n_mid + [(k // n_mid) // 2 for k in range(n_bot)]
    col = [0] + list(range(n_mid)) + [2 * (k % n_mid) + (k // n_mid) % 2 for k in range(n_bot)]
    parent = [-1] + [0] * n_mid + [1 + k % n_mid for k in range(n_bot)]
    x = torch.from_numpy(rng.normal(size=(len(level), f))).float()
    x[1 + n_mid :, 0] += 2.0 * (2 * label - 1)
    g = pyramid_graph(x, np.array(level), np.array(row), np.array(col), np.array(parent))
    g.y = torch.tensor([label])
    return g


@pytest.mark.parametrize("conv", CONVS)
@pytest.mark.parametrize("pool", POOLS)
def test_every_ablation_builds_and_runs(conv, pool):
    model = build_model("h2mil", 8, 2, conv=conv, pool=pool, hidden=16)
    batch = Batch.from_data_list([_graph(i % 2, i) for i in range(4)])
    out = model(batch)
    assert out.shape == (4, 2) and torch.isfinite(out).all()
    out.sum().backward()


@pytest.mark.parametrize("levels", [(0, 1), (0, 2), (0, 1, 2)])
@pytest.mark.parametrize("layers", [1, 2, 3, 4])
def test_schemes_and_depths(levels, layers):
    model = build_model("h2mil", 8, 2, levels=levels, layers=layers, hidden=16).eval()
    batch = Batch.from_data_list([_graph(i % 2, i) for i in range(3)])
    out, infos = model(batch, return_info=True)
    assert out.shape == (3, 2) and len(infos) == layers
    assert torch.equal(out, model(batch))  # deterministic in eval


def test_single_node_graph():
    g = pyramid_graph(
        torch.randn(1, 8), np.array([0]), np.array([0]), np.array([0]), np.array([-1])
    )
    assert build_model("h2mil", 8, 3, hidden=16)(Batch.from_data_list([g])).shape == (1, 3)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"conv": "RAConv+"}, "allowed: raconv, gcn, gat, hgat"),
        ({"pool": "diff"}, "allowed: ihpool"),
        ({"layers": 0}, "layers"),
        ({"levels": (1, 2)}, "include 0"),
        ({"depth": 3}, "bad settings"),
    ],
)
def test_bad_config_is_a_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        build_model("h2mil", 8, 2, **bad)


def test_h2mil_can_overfit_a_tiny_labelled_set():
    torch.manual_seed(0)
    graphs = [_graph(i % 2, 100 + i) for i in range(12)]
    batch = Batch.from_data_list(graphs)
    model = build_model("h2mil", 8, 2, hidden=32, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(batch), batch.y)
        loss.backward()
        opt.step()
    assert (model.eval()(batch).argmax(1) == batch.y).all()


def test_the_official_block_order_and_shapes():
    # x -> LayerNorm -> [RAConv -> ReLU -> LayerNorm -> Dropout -> IHPool -> mean] x 2
    #   -> sum -> Linear(h, h/2) -> ReLU -> LayerNorm -> Dropout -> Linear  (official main.py)
    from torch_geometric.nn import LayerNorm as GraphLayerNorm

    from wsigraph.nn.ihpool import IHPool
    from wsigraph.nn.raconv import RAConv

    model = build_model("h2mil", 8, 3, hidden=16).eval()
    c = model.config
    assert (c.hidden, c.dropout, c.attention_dropout, c.ratio) == (16, 0.3, 0.0, (0.1, 4))
    assert build_model("h2mil", 8, 2).config.hidden == 256
    assert isinstance(model.input_norm, GraphLayerNorm) and model.input_norm.mode == "graph"
    assert [type(m) for m in model.convs] == [RAConv, RAConv]
    assert all(conv.dropout == 0.0 for conv in model.convs)  # none on the attention
    assert [(p.ratio, p.count) for p in model.pools] == [(0.1, None), (4, 4)]
    assert all(isinstance(p, IHPool) for p in model.pools)
    kinds = [type(m).__name__ for m in model.classifier]
    assert kinds == ["Linear", "ReLU", "LayerNorm", "Dropout", "Linear"]
    assert (model.classifier[0].in_features, model.classifier[0].out_features) == (16, 8)
    assert model.classifier[3].p == 0.3 and model.classifier[4].out_features == 3

    calls, shapes = [], {}

    def hook(name):
        def record(module, args, out):
            calls.append(name)
            shapes[name] = (
                tuple((out[0] if isinstance(out, tuple) else out).x.shape)
                if (name.startswith("pool"))
                else tuple(out.shape)
            )

        return record

    named = {"in_norm": model.input_norm, "classifier": model.classifier}
    for i in range(2):
        named |= {
            f"conv{i}": model.convs[i],
            f"norm{i}": model.norms[i],
            f"pool{i}": model.pools[i],
        }
    for name, module in named.items():
        module.register_forward_hook(hook(name))
    batch = Batch.from_data_list([_graph(1, 3)])
    n = batch.num_nodes
    out = model(batch)
    assert calls == [
        "in_norm", "conv0", "norm0", "pool0", "conv1", "norm1", "pool1", "classifier"
    ]  # fmt: skip
    assert shapes["in_norm"] == (n, 8) and shapes["conv0"] == (n, 16) == shapes["norm0"]
    assert out.shape == (1, 3)


def test_the_graph_layernorm_normalises_each_slide_alone():
    model = build_model("h2mil", 8, 2, hidden=16).eval()
    graphs = [_graph(0, 1), _graph(1, 2)]
    together = model(Batch.from_data_list(graphs))
    alone = torch.cat([model(Batch.from_data_list([g])) for g in graphs])
    torch.testing.assert_close(together, alone)
    # shifting and scaling a slide's input features changes nothing after the input norm
    g = graphs[0].clone()
    g.x = 3.0 * g.x + 5.0
    torch.testing.assert_close(model(Batch.from_data_list([g])), alone[:1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(pool="xyz"), "allowed: ihpool, gap, topk, sag"),
        (dict(ratio=(0.1, 4.5)), r"\(0, 1\]|count"),
        (dict(ratio=0), "count"),
        (dict(ratio=()), "non-empty"),
        (dict(grid="pixels"), "allowed: normalised, patches"),
    ],
)
def test_bad_pool_settings_name_the_allowed_values(bad, match):
    with pytest.raises(ValueError, match=match):
        build_model("h2mil", 8, 2, **bad)
