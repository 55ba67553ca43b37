"""The SOTA-row models of H2-MIL Tables 1-2 and HIGT Tables 1-2 behind the slide-model API.

The bag modules themselves (equations, invariances, 50,000-instance bags, overfitting) are
tested in test_mil.py, test_spatial_mil.py and test_multiscale_mil.py; here: every SOTA row
builds from the table registry, reads the right nodes of a batch of pyramid graphs, and
trains through the harness with its own loss.
"""

import numpy as np
import pytest
import torch
from conftest import toy_pyramid as slide  # F_IN = 6 features
from torch_geometric.data import Batch

from wsigraph import tables as T
from wsigraph.models import build_model
from wsigraph.models.baselines import DSMILBaseline
from wsigraph.nn.ihpool import from_batch
from wsigraph.train.cv import make_splits
from wsigraph.train.loop import TrainConfig, train_fold

F_IN = 6
SOTA = sorted(
    {
        (row.model, tuple(sorted(row.config.items())))
        for table in T.TABLES.values()
        for row in table.rows
        if row.group == "SOTA" and row.model not in (None, "h2mil")
    }
)
NAMES = [name for name, _ in SOTA]


pytestmark = pytest.mark.usefixtures("one_thread")


def model(name: str, seed: int = 0, n_classes: int = 2):
    torch.manual_seed(seed)
    return build_model(name, F_IN, n_classes).eval()


def test_every_sota_row_has_a_registered_model():
    assert set(NAMES) == {
        "abmil",
        "clam-sb",
        "deepattnmil",
        "dsmil",
        "hipt",
        "la-mil",
        "mil-cnn",
        "mil-rnn",
        "minmax",
        "ms-da-mil",
        "ptree-net",
    }
    assert all(config == () for _, config in SOTA)  # each method's defaults, one config


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_batch_of_slides_gives_one_row_of_logits_each(name, n_classes):
    net = model(name, n_classes=n_classes)
    graphs = [slide(3, seed=0), slide(5, seed=1), slide(2, seed=2, children=1)]
    out = net(Batch.from_data_list(graphs))
    assert out.shape == (3, n_classes) and torch.isfinite(out).all()
    for i, g in enumerate(graphs):  # batched == each slide alone
        torch.testing.assert_close(
            out[i : i + 1], net(Batch.from_data_list([g])), atol=1e-5, rtol=1e-4
        )


@pytest.mark.parametrize("name", NAMES)
def test_degenerate_slides_give_finite_logits(name):
    """A thumbnail-only slide, one without 10x patches, and a 5x patch with one child."""
    net = model(name)
    graphs = [slide(0), slide(1, children=0), slide(1, children=1), slide(4)]
    out = net(Batch.from_data_list(graphs))
    assert out.shape == (4, 2) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_training_loss_reaches_every_parameter(name):
    net = model(name).train()
    batch = Batch.from_data_list([slide(3, seed=s) for s in range(4)])
    batch.y = torch.tensor([0, 1, 0, 1])
    loss = net.training_loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing, missing


@pytest.mark.parametrize("name", NAMES)
def test_trains_through_the_harness(name):
    """Two epochs of the papers' loop on 12 slides whose class shifts feature 0."""
    labels = np.array([0, 1] * 6)
    graphs = [slide(3, seed=i, signal=2.0 * y) for i, y in enumerate(labels)]
    split = make_splits(labels, folds=3, repeats=1, seed=0)[0]
    cfg = TrainConfig(model=name, epochs=2, batch_size=4, device="cpu", patience=None)
    result = train_fold(graphs, labels, split, cfg)
    assert result.epochs_run == 2 and len(result.test_probs) == len(split.test)
    assert all(np.isfinite(h["train_loss"]) for h in result.history)


def test_dsmil_reads_each_10x_patch_with_its_5x_parent():
    g = slide(2, seed=3)
    net = DSMILBaseline(F_IN, 2).eval()
    x, batch, num_bags = net.inputs(from_batch(g))
    level2 = (g.level == 2).nonzero().flatten()
    expected = torch.cat([g.x[level2], g.x[g.parent[level2]]], dim=1)
    torch.testing.assert_close(x, expected)
    assert x.shape == (8, 2 * F_IN) and num_bags == 1 and (batch == 0).all()
    single = DSMILBaseline(F_IN, 2, multiscale=False)
    assert single.inputs(from_batch(g))[0].shape == (8, F_IN)


def test_bad_level_is_refused():
    with pytest.raises(ValueError, match="level"):
        build_model("abmil", F_IN, 2, level=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_runs_on_cuda_like_on_cpu(name):
    """Every tensor the model makes follows its inputs' device; CUDA logits match the CPU's."""
    net = model(name)
    batch = Batch.from_data_list([slide(3, seed=s) for s in range(3)])
    batch.y = torch.tensor([0, 1, 0])
    cpu = net(batch)
    net, batch = net.cuda(), batch.cuda()
    out = net(batch)
    assert out.is_cuda
    torch.testing.assert_close(out.cpu(), cpu, atol=1e-4, rtol=1e-3)
    net.train().training_loss(batch).backward()


def test_training_step_cost_and_benchmark_record(tmp_path):
    import json

    from wsigraph.bench import model_megabytes, training_step_cost, write_record

    net = model("abmil")
    batch = Batch.from_data_list([slide(3, seed=s) for s in range(2)])
    batch.y = torch.tensor([0, 1])
    cost = training_step_cost(net, batch, torch.device("cpu"))
    n = sum(p.numel() for p in net.parameters())
    assert cost["parameters"] == n and cost["model_mb"] == pytest.approx(n * 4 / 2**20)
    assert cost["peak_bytes"] > 0 and cost["peak_kind"] == "cpu_profiler_allocated"
    assert model_megabytes(net) == cost["model_mb"]
    path = write_record("demo", "a test", torch.device("cpu"), [{"x": 1}], directory=tmp_path)
    record = json.loads(path.read_text())
    assert path.name == "demo.json" and record["results"] == [{"x": 1}]
    assert {"device", "threads", "peak_memory_method", "torch", "date"} <= set(record)
