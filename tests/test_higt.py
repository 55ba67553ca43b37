"""HIGT end to end (models/higt.py): pyramid graph -> RAConv+ / IHPool -> HIViT -> Fusion."""

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from wsigraph.graphs.pyramid import pyramid_graph
from wsigraph.models import build_model
from wsigraph.models.higt import HIGT
from wsigraph.train.cv import make_splits
from wsigraph.train.loop import TrainConfig, train_fold

pytestmark = pytest.mark.usefixtures("one_thread")

F_IN = 6
ABLATIONS = {
    "full": {},
    "h2mil+hivit": {"conv": "raconv"},
    "w/o ssa": {"attention": "mhsa"},
    "w/o bi": {"bidirectional": False},
    "w/o fusion": {"fusion": False},
}
SMALL = dict(hidden=8, vit_depth=2, dropout=0.0)


def slide(n_regions: int, children=4, seed: int = 0, signal: float = 0.0, cols: int = 4):
    """Thumbnail + ``n_regions`` 5x patches on a ``cols``-wide grid, each with ``children`` 10x
    patches (an int, or one count per region, at most 4) in its 2 x 2 cells."""
    counts = [children] * n_regions if isinstance(children, int) else list(children)
    g = torch.Generator().manual_seed(seed)
    level, row, col, parent = [0], [0], [0], [-1]
    for i in range(n_regions):
        level.append(1), row.append(i // cols), col.append(i % cols), parent.append(0)
    for i, n in enumerate(counts):
        r, c = i // cols, i % cols
        for k in range(n):
            level.append(2), row.append(2 * r + k // 2), col.append(2 * c + k % 2)
            parent.append(1 + i)
    x = torch.randn(len(level), F_IN, generator=g)
    x[:, 0] += signal
    return pyramid_graph(x, np.array(level), np.array(row), np.array(col), np.array(parent))


def model(seed=0, **config):
    torch.manual_seed(seed)
    return build_model("higt", F_IN, 2, **(SMALL | config)).eval()


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_every_ablation_gives_logits_and_batched_equals_alone(ablation):
    net = model(**ABLATIONS[ablation])
    graphs = [slide(1), slide(2, children=[0, 3]), slide(8, children=[1, 4, 0, 2, 3, 4, 1, 1])]
    out = net(Batch.from_data_list(graphs))
    assert out.shape == (3, 2) and torch.isfinite(out).all()
    for i, g in enumerate(graphs):
        alone = net(Batch.from_data_list([g]))
        torch.testing.assert_close(out[i : i + 1], alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("n_regions", [1, 2, 8, 11, 14])
def test_any_number_of_regions(n_regions):
    """The official code crashes for some region counts; ragged regions too."""
    children = [(i * 3) % 5 for i in range(n_regions)]  # 0..4 patches per region
    children = [min(c, 4) for c in children]
    net = model(ratio=1.0)
    out = net(Batch.from_data_list([slide(n_regions, children=children)]))
    assert out.shape == (1, 2) and torch.isfinite(out).all()


def test_degenerate_slides():
    net = model()
    graphs = [slide(0), slide(1, children=0), slide(3, children=1)]
    out = net(Batch.from_data_list(graphs))
    assert out.shape == (3, 2) and torch.isfinite(out).all()


def test_gradients_reach_every_parameter():
    net = model().train()
    batch = Batch.from_data_list([slide(4, seed=s) for s in range(3)])
    torch.nn.functional.cross_entropy(net(batch), torch.tensor([0, 1, 0])).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing, missing


def test_trains_through_the_harness():
    labels = np.array([0, 1] * 6)
    graphs = [slide(4, seed=i, signal=2.0 * y) for i, y in enumerate(labels)]
    split = make_splits(labels, folds=3, repeats=1, seed=0)[0]
    cfg = TrainConfig(model="higt", model_config=SMALL, epochs=2, batch_size=4, device="cpu")
    result = train_fold(graphs, labels, split, cfg)
    assert result.epochs_run == 2 and len(result.test_probs) == len(split.test)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="conv"):
        HIGT(F_IN, 2, conv="gcn")
    with pytest.raises(ValueError, match="attention"):
        HIGT(F_IN, 2, attention="full")
    with pytest.raises(ValueError, match="ratio"):
        HIGT(F_IN, 2, ratio=0.0)


def test_official_pools_option():
    # pool_ratio_list = [0.5, 5] and 4 10x centres per region (random in the official code)
    from wsigraph.models import build_model

    model = build_model("higt", 8, 2, hidden=16, ratio=(0.5, 5), fine_count=4)
    assert [(p.ratio, p.count, p.fine_count) for p in model.pools] == [(0.5, None, 4), (5, 5, 4)]
    default = build_model("higt", 8, 2, hidden=16)
    assert [(p.ratio, p.fine_count) for p in default.pools] == [(0.5, None), (0.5, None)]
    with pytest.raises(ValueError, match="count"):
        build_model("higt", 8, 2, ratio=(0.5, 5.5))
