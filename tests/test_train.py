"""Training harness: CV splits, metrics, the fold loop, executors and resumable run records."""

from __future__ import annotations

import json
import math
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch_geometric.data import Data

from wsigraph.graphs.pyramid import save_graph
from wsigraph.train import loop
from wsigraph.train.cv import make_splits, min_slides_per_class, split_counts, write_splits
from wsigraph.train.executor import FoldPool, run_each, run_folds
from wsigraph.train.loop import BestCheckpoint, TrainConfig, feature_stats, prepare, train_fold
from wsigraph.train.metrics import classification_metrics, summarise
from wsigraph.train.run import (
    FoldJob,
    load_graphs,
    run_experiment,
    run_experiments,
    run_fold_job,
)


def toy_graphs(n: int = 24, dim: int = 8, shift: float = 3.0, seed: int = 0):
    """``n`` small graphs (4-11 nodes); class 1 adds ``shift`` to feature 0 of every node."""
    g = torch.Generator().manual_seed(seed)
    labels = np.arange(n) % 2
    graphs = []
    for i in range(n):
        k = int(torch.randint(4, 12, (1,), generator=g))
        x = torch.randn(k, dim, generator=g)
        x[:, 0] += shift * labels[i]
        src = torch.arange(k - 1)
        graphs.append(
            Data(
                x=x,
                edge_index=torch.stack([torch.cat([src, src + 1]), torch.cat([src + 1, src])]),
                level=torch.ones(k, dtype=torch.long),
                slide_id=f"slide-{i:02d}",
            )
        )
    return graphs, labels


CFG = TrainConfig("mean-mlp", {"hidden": 16}, lr=1e-2, epochs=15, batch_size=4, patience=6)


# Splits ---------------------------------------------------------------------------------------
def test_splits_protocol():
    labels = np.array([0] * 25 + [1] * 15)
    splits = make_splits(labels, folds=5, repeats=2, seed=3)
    assert [(s.repeat, s.fold) for s in splits] == [(r, f) for r in range(2) for f in range(5)]
    for repeat in range(2):
        tests = np.concatenate([s.test for s in splits if s.repeat == repeat])
        assert sorted(tests) == list(range(40))  # every slide tested exactly once per repeat
    for s in splits:
        train, val, test = set(s.train), set(s.val), set(s.test)
        assert not (train & val) and not (train & test) and not (val & test)
        assert len(train | val | test) == 40
        assert abs(len(val) - 0.25 * (len(train) + len(val))) <= 1
        for idx, size in ((s.test, 8), (s.val, 8)):  # stratified: 3/8 of each part is class 1
            assert len(idx) == size
            assert abs(labels[idx].sum() - size * 15 / 40) <= 1
    counts = split_counts(splits, labels)
    assert counts[["class_0", "class_1"]].sum(axis=1).tolist() == counts["total"].tolist()


def test_splits_deterministic():
    labels = np.array([0, 1] * 10)
    a, b, c = (make_splits(labels, 4, 2, seed=s) for s in (0, 0, 1))
    for x, y in zip(a, b, strict=True):
        for part in ("train", "val", "test"):
            np.testing.assert_array_equal(getattr(x, part), getattr(y, part))
    assert any(not np.array_equal(x.test, y.test) for x, y in zip(a, c, strict=True))
    assert [s.seed for s in a] == [0, 1, 2, 3, 1000, 1001, 1002, 1003]


def test_splits_too_few_members():
    with pytest.raises(ValueError, match=r"\{1: 3\}.*folds=5.*at most 3"):
        make_splits([0] * 10 + [1] * 3, folds=5)


@pytest.mark.parametrize("labels", [[0] * 10 + [1], [0] * 3 + [1] * 3, [0, 0, 1, 1, 1]])
@pytest.mark.parametrize("folds", [2, 5])
def test_splits_too_few_members_for_two_folds(labels, folds):
    """Folds must be >= 2: when even 2 folds cannot work, the hint is the slides per class the
    cohort needs (never "lower folds to at most 1"), and that number is enough."""
    with pytest.raises(ValueError) as err:
        make_splits(labels, folds=folds)
    msg = str(err.value)
    assert "at most 1" not in msg and "lower folds" not in msg and "\n" not in msg, msg
    assert msg.endswith("the cohort needs at least 5 slides per class"), msg
    assert min_slides_per_class(2, 0.25) == 5
    make_splits([0] * 5 + [1] * 5, folds=2, repeats=5, seed=3)  # the hint suffices
    with pytest.raises(ValueError, match="at least 5 slides per class"):
        make_splits([0] * 4 + [1] * 4, folds=2, repeats=1)  # and is the least that does


@pytest.mark.parametrize(("n_classes", "val_fraction"), [(2, 0.5), (3, 0.25), (2, 0.1), (4, 0.9)])
def test_min_slides_per_class_is_tight(n_classes, val_fraction):
    n = min_slides_per_class(n_classes, val_fraction)
    make_splits(np.repeat(np.arange(n_classes), n), 2, 3, val_fraction=val_fraction, seed=1)
    with pytest.raises(ValueError, match=f"at least {n} slides per class"):
        make_splits(np.repeat(np.arange(n_classes), n - 1), 2, 3, val_fraction=val_fraction)


def test_write_splits(tmp_path):
    labels = np.array([0, 1] * 6)
    splits = make_splits(labels, 3, 1)
    ids = [f"s{i}" for i in range(12)]
    path, counts_path = write_splits(splits, labels, tmp_path / "splits.csv", ids)
    table = pd.read_csv(path)
    assert set(table.columns) == {"repeat", "fold", "seed", "part", "index", "slide_id", "label"}
    assert len(table) == 3 * 12
    counts = pd.read_csv(counts_path)
    assert counts.query("fold == 0 and part == 'test'")[["class_0", "class_1"]].values.tolist() == [
        [2, 2]
    ]


# Metrics --------------------------------------------------------------------------------------
def test_metrics_binary_by_hand():
    # Predictions [0, 1, 0, 1]: 2 of 4 right; positive/negative pairs ordered right 3 of 4;
    # per class precision = recall = 1/2, so F1 = 1/2 for both.
    m = classification_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.8])
    assert m == pytest.approx({"acc": 0.5, "auc": 0.75, "f1": 0.5})
    two_column = np.array([[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.2, 0.8]])
    assert classification_metrics([0, 0, 1, 1], two_column) == m


def test_metrics_multiclass_and_single_class():
    prob = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.5, 0.25, 0.25]])
    m = classification_metrics([0, 1, 2, 1], prob)
    # Predictions [0, 1, 2, 0]: class 1 has recall 1/2 -> F1 2/3; class 0 precision 1/2 -> 2/3.
    assert m["acc"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    # One-vs-rest AUCs: class 0: 1.0, class 1: 3/4 (0.5, 0.25 vs 0.2, 0.3), class 2: 1.0.
    assert m["auc"] == pytest.approx((1 + 0.75 + 1) / 3)
    single = classification_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert math.isnan(single["auc"]) and single["acc"] == pytest.approx(2 / 3)


def test_summarise():
    assert summarise([1.0, 2.0, 3.0, math.nan, None]) == pytest.approx((2.0, 1.0))  # ddof=1
    mean, std = summarise([5.0])
    assert mean == 5.0 and math.isnan(std)
    assert all(math.isnan(v) for v in summarise([math.nan]))


# Loop -----------------------------------------------------------------------------------------
def test_train_fold_learns_and_leaves_inputs_alone():
    graphs, labels = toy_graphs()
    before = [g.x.clone() for g in graphs]
    for split in make_splits(labels, folds=3, repeats=1):
        result = train_fold(graphs, labels, split, CFG)
        assert result.metrics["auc"] > 0.9
        assert result.test_slide_ids == [f"slide-{i:02d}" for i in split.test]
        assert result.test_labels == labels[split.test].tolist()
        assert np.allclose(np.sum(result.test_probs, axis=1), 1.0)
        assert 1 <= result.best_epoch <= result.epochs_run <= CFG.epochs
        assert result.peak_memory_kind == "process_max_rss" and result.peak_memory_bytes > 0
        assert result.seed == CFG.seed + 1000 * split.repeat + split.fold
    for g, x in zip(graphs, before, strict=True):
        assert torch.equal(g.x, x) and "y" not in g


def test_standardisation_uses_training_nodes_only(monkeypatch):
    graphs, labels = toy_graphs(12, dim=3)
    split = make_splits(labels, folds=3, repeats=1)[0]
    for i in np.concatenate([split.val, split.test]):
        graphs[i].x = graphs[i].x + 1e6  # would dominate any statistic that saw them
    train_x = torch.cat([graphs[i].x for i in split.train])
    mean, std = feature_stats(graphs, split.train)
    torch.testing.assert_close(mean, train_x.mean(0))
    torch.testing.assert_close(std, train_x.std(0, correction=0))
    z = torch.cat(
        [g.x for g in prepare([graphs[i] for i in split.train], labels[split.train], mean, std)]
    )
    torch.testing.assert_close(z.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    seen = []

    def spy(graphs, index):
        seen.append(np.asarray(index).copy())
        return feature_stats(graphs, index)

    monkeypatch.setattr(loop, "feature_stats", spy)
    train_fold(graphs, labels, split, TrainConfig("mean-mlp", epochs=1, batch_size=4))
    assert len(seen) == 1 and np.array_equal(seen[0], split.train)


def test_best_checkpoint_rule_and_restore():
    model = nn.Linear(1, 1, bias=False)
    best = BestCheckpoint(patience=2)
    # epoch: (val AUC, val loss). Epoch 3 ties epoch 2 on AUC with a lower loss; 4 ties with a
    # higher loss; 5 and 6 are worse, so training stops after epoch 5 (3 + patience).
    sequence = {1: (0.6, 0.7), 2: (0.8, 0.6), 3: (0.8, 0.5), 4: (0.8, 0.55), 5: (0.7, 0.4)}
    stopped = None
    for epoch, (auc, loss) in sequence.items():
        nn.init.constant_(model.weight, float(epoch))
        best.update(epoch, auc, loss, model)
        if best.should_stop(epoch):
            stopped = epoch
            break
    assert best.best_epoch == 3 and stopped == 5
    best.restore(model)
    assert model.weight.item() == 3.0
    nan_auc = BestCheckpoint()  # one-class validation: the loss decides
    for epoch, loss in enumerate([0.9, 0.5, 0.7], start=1):
        nan_auc.update(epoch, math.nan, loss, model)
    assert nan_auc.best_epoch == 2 and not nan_auc.should_stop(100)
    # select="loss": the lowest validation loss, whatever the AUC (epoch 5 above; ties keep the
    # earlier epoch), so a saturated AUC cannot keep an epoch with a drifted threshold
    by_loss = BestCheckpoint(select="loss")
    for epoch, (auc, loss) in (sequence | {6: (0.9, 0.4)}).items():
        by_loss.update(epoch, auc, loss, model)
    assert by_loss.best_epoch == 5
    with pytest.raises(ValueError, match="select must be one of"):
        BestCheckpoint(select="acc")
    with pytest.raises(ValueError, match="select must be one of"):
        TrainConfig("mean-mlp", select="accuracy")


@pytest.mark.parametrize("select,expected", [("auc", 3), ("loss", 4)])
def test_train_fold_passes_its_checkpoint_rule(monkeypatch, select, expected):
    """Validation (AUC, loss) per epoch, scripted: the AUC rule keeps epoch 3 (AUC 1.0 tied
    with epoch 2, lower loss), the loss rule epoch 4 (lowest loss, lower AUC)."""
    script = [(0.9, 0.5), (1.0, 0.6), (1.0, 0.3), (0.8, 0.2)]
    real, calls = loop.evaluate, []

    def scripted(model, loader, device):
        out = real(model, loader, device)
        if len(calls) < len(script):  # the validation calls; the last one is the test fold
            out["auc"], out["loss"] = script[len(calls)]
        calls.append(1)
        return out

    monkeypatch.setattr(loop, "evaluate", scripted)
    graphs, labels = toy_graphs(shift=0.7)
    split = make_splits(labels, folds=3, repeats=1)[0]
    cfg = TrainConfig(**(CFG.to_dict() | {"epochs": 4, "patience": None, "select": select}))
    assert train_fold(graphs, labels, split, cfg).best_epoch == expected


def test_train_fold_restores_best_validation_checkpoint():
    graphs, labels = toy_graphs(shift=0.7)  # a weak signal: validation AUC peaks early
    split = make_splits(labels, folds=3, repeats=1)[0]
    cfg = TrainConfig(**(CFG.to_dict() | {"epochs": 12}))
    result = train_fold(graphs, labels, split, cfg)
    assert result.best_epoch < result.epochs_run < cfg.epochs  # stopped early, past the best
    replay = BestCheckpoint()
    for h in result.history:
        replay.update(h["epoch"], h["val_auc"], h["val_loss"], nn.Linear(1, 1))
    assert result.best_epoch == replay.best_epoch
    assert result.epochs_run == result.best_epoch + cfg.patience
    # Training is deterministic, so stopping right at the best epoch gives the same model.
    short = TrainConfig(**(cfg.to_dict() | {"epochs": result.best_epoch, "patience": None}))
    assert train_fold(graphs, labels, split, short).test_probs == result.test_probs


# Executors ------------------------------------------------------------------------------------
def _fails_on_two(job):
    if job == 2:
        raise ValueError("boom")
    return job * 10


def test_run_folds_serial_order_callback_and_failure():
    seen = []
    out = run_folds(_fails_on_two, [1, 3], "serial", on_result=lambda i, r: seen.append((i, r)))
    assert out == [10, 30] and seen == [(0, 10), (1, 30)]
    with pytest.raises(RuntimeError, match=r"job 1 \(2\) failed: ValueError: boom"):
        run_folds(_fails_on_two, [1, 2, 3], "serial", progress=False)
    with pytest.raises(ValueError, match="unknown executor"):
        run_folds(_fails_on_two, [1], "threads")


def _plus_shared(job, shared):
    return job + shared


@pytest.mark.slow
def test_run_folds_on_a_dask_local_cluster_shares_once_and_names_a_failure():
    assert run_folds(_plus_shared, [1, 2, 3], "dask", workers=2, shared=10, progress=False) == [
        11, 12, 13
    ]  # fmt: skip
    with pytest.raises(RuntimeError, match=r"job 1 \(2\) failed: ValueError: boom"):
        run_folds(_fails_on_two, [1, 2, 3], "dask", workers=1, progress=False)


@pytest.mark.slow
def test_run_folds_local_failure_names_job():
    graphs, labels = toy_graphs(12)
    split = make_splits(labels, folds=3, repeats=1)[0]
    job = FoldJob(split, TrainConfig("no-such-model"), 2)
    with pytest.raises(RuntimeError, match=r"repeat 0 fold 0.*unknown model 'no-such-model'"):
        run_folds(run_fold_job, [job], "local", workers=1, shared=(graphs, labels), progress=False)


# Run records ----------------------------------------------------------------------------------
RECORD_KEYS = {
    "name",
    "config",
    "meta",
    "folds",
    "summary",
    "predictions",
    "timings",
    "peak_memory",
    "git_commit",
    "created",
    "versions",
}


def test_run_experiment_record_and_resume(tmp_path):
    graphs, labels = toy_graphs()
    meta = {"table": "h2mil_table1", "row": "Mean-MLP", "dataset": "toy", "task": "typing"}
    run = dict(graphs=graphs, labels=labels, cfg=CFG, out_dir=tmp_path, folds=3, repeats=1)
    record = run_experiment("toy", **run, executor="serial", meta=meta | {"profile": "test"})
    on_disk = json.loads((tmp_path / "toy.json").read_text())
    assert on_disk == record and RECORD_KEYS <= set(record)
    assert record["config"] | {"model_config": CFG.model_config} == CFG.to_dict() | {
        "model_config_given": CFG.model_config
    }
    # the fully resolved model settings, defaults included
    assert record["config"]["model_config"].items() >= CFG.model_config.items()
    assert len(record["config"]["model_config"]) > len(CFG.model_config)
    assert record["meta"]["profile"] == "test"
    assert set(record["versions"]) >= {"torch", "torch_geometric", "python"}
    rows = pd.DataFrame(record["folds"])
    assert list(rows.columns) == [*meta, "repeat", "fold", "seed", "metric", "value"]
    assert len(rows) == 3 * 4 and set(rows["metric"]) == {"acc", "auc", "f1", "auc_micro"}
    # the official variants: micro-AUC per fold, threshold ACC / F1 per repeat (pooled folds)
    assert [r["repeat"] for r in record["official_per_repeat"]] == [0]
    assert record["summary"]["acc_thr"]["n"] == 1 and record["summary"]["auc_micro"]["n"] == 3
    assert math.isnan(record["summary"]["auc"]["std_repeats"] or math.nan)  # one repeat
    auc = rows.loc[rows["metric"] == "auc", "value"]
    assert record["summary"]["auc"]["mean"] == pytest.approx(auc.mean())
    assert record["summary"]["auc"]["std"] == pytest.approx(auc.std())  # sample std, as pandas
    assert sorted(i for p in record["predictions"] for i in p["slide_id"]) == sorted(
        g.slide_id for g in graphs
    )
    assert (tmp_path / "toy" / "splits.csv").exists()

    files = [tmp_path / "toy" / f"fold_r0_f{f}.json" for f in range(3)]
    mtimes = [p.stat().st_mtime_ns for p in files]
    files[1].unlink()
    again = run_experiment("toy", **run, executor="serial", meta=meta)
    assert [p.stat().st_mtime_ns for p in files[::2]] == mtimes[::2]  # folds 0 and 2 skipped
    assert files[1].exists()
    assert [d["reused"] for d in again["fold_details"]] == [True, False, True]
    assert again["summary"] == record["summary"]

    changed = run_experiment(
        "toy", **(run | {"cfg": TrainConfig(**(CFG.to_dict() | {"lr": 5e-3}))}), executor="serial"
    )
    assert not any(d["reused"] for d in changed["fold_details"])


@pytest.mark.slow
def test_executors_agree(tmp_path):
    graphs, labels = toy_graphs(18)
    run = dict(graphs=graphs, labels=labels, cfg=CFG, folds=3, repeats=1, workers=2)
    records = {
        ex: run_experiment("grid", **run, out_dir=tmp_path / ex, executor=ex, progress=False)
        for ex in ("serial", "local", "dask")
    }
    serial = records["serial"]
    for ex in ("local", "dask"):
        assert records[ex]["folds"] == serial["folds"], ex
        for a, b in zip(records[ex]["predictions"], serial["predictions"], strict=True):
            np.testing.assert_allclose(a["prob"], b["prob"], rtol=0, atol=1e-6)


def _pid_and_shared(job, shared):
    import os

    return os.getpid(), job * shared


def test_fold_pool_serves_several_calls_with_their_own_shared():
    with FoldPool(2) as pool:
        first = run_folds(_pid_and_shared, [1, 2, 3], pool, shared=10, progress=False)
        second = run_folds(_pid_and_shared, [1, 2], pool, shared=100, progress=False)
        with pytest.raises(RuntimeError, match=r"job 1 \(2\) failed: ValueError: boom"):
            run_folds(_fails_on_two, [1, 2, 3], pool, progress=False)
        after = run_folds(_pid_and_shared, [4], pool, shared=1, progress=False)
    assert [r for _, r in first] == [10, 20, 30] and [r for _, r in second] == [100, 200]
    assert after[0][1] == 4  # a failed call leaves the pool serving the next one
    assert len({pid for pid, _ in first + second + after}) <= 2  # the same two workers


def test_fold_pool_left_open_is_closed_when_dropped():
    """A notebook's pool spans cells: if a cell fails before ``close``, dropping the pool stops
    its workers and removes its folder; ``close`` twice is harmless."""
    import gc

    pool = FoldPool(1)
    folder, executor = pool._dir, pool._pool
    assert run_folds(_pid_and_shared, [2], pool, shared=3, progress=False)[0][1] == 6
    del pool
    gc.collect()
    assert not folder.exists()
    with pytest.raises(RuntimeError, match="shutdown"):
        executor.submit(abs, -1)
    pool = FoldPool(1)
    pool.close()
    pool.close()
    assert not pool._dir.exists()


def _worker_state(job):
    import os
    import sys

    return os.environ.get("WSIGRAPH_TEST_STATE"), os.getcwd(), sys.path[-1]


def test_local_workers_see_the_parents_environment_folder_and_path(tmp_path, monkeypatch):
    """Workers fork from a server started earlier (wsigraph.train.executor.worker_context);
    each must still see what its parent has now, as a freshly spawned worker would."""
    run_folds(_pid_and_shared, [1], "local", workers=1, shared=1, progress=False)  # server up
    monkeypatch.setenv("WSIGRAPH_TEST_STATE", "set after the server started")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [*sys.path, str(tmp_path)])
    want = ("set after the server started", str(tmp_path), str(tmp_path))
    assert run_folds(_worker_state, [0, 1], "local", workers=2, progress=False) == [want] * 2
    with FoldPool(1) as pool:
        assert run_folds(_worker_state, [0], pool, progress=False) == [want]
    assert run_each(_worker_state, [0], "local") == [want]  # the slide stages' workers


@pytest.mark.slow
def test_run_experiments_share_one_pool_and_match_one_by_one(tmp_path):
    graphs, labels = toy_graphs(18)
    other = [g.clone() for g in graphs[:12]]
    for g in other:
        g.x = g.x.flip(0)
    spec = [
        dict(name="a", graphs=graphs, labels=labels, cfg=CFG, folds=3, repeats=1),
        dict(name="b", graphs=other, labels=labels[:12], cfg=CFG, folds=2, repeats=1),
    ]
    alone = [run_experiment(**s, out_dir=tmp_path / "alone", executor="serial", progress=False)
             for s in spec]  # fmt: skip
    for ex in ("local", "dask"):
        together = run_experiments(
            [s | {"out_dir": tmp_path / ex} for s in spec], executor=ex, workers=2, progress=False
        )
        for a, b in zip(together, alone, strict=True):
            assert a["name"] == b["name"] and a["folds"] == b["folds"], ex
    again = run_experiments([s | {"out_dir": tmp_path / "local"} for s in spec], workers=2)
    assert all(d["reused"] for r in again for d in r["fold_details"])  # resumed, nothing rerun

    broken = spec[1] | {"cfg": TrainConfig("no-such-model"), "out_dir": tmp_path / "broken"}
    with pytest.raises(RuntimeError, match=r"1 of 2 experiments failed \(b: .*no-such-model"):
        run_experiments([spec[0] | {"out_dir": tmp_path / "broken"}, broken], workers=2)
    assert (tmp_path / "broken" / "a.json").exists()  # the other experiment ran to the end
    with pytest.raises(ValueError, match="sets executor"):
        run_experiments([spec[0] | {"out_dir": tmp_path, "executor": "local"}])


# Loading --------------------------------------------------------------------------------------
def test_load_graphs(tmp_path):
    graphs, _ = toy_graphs(5)
    for g, y in zip(graphs, [0, 1, -1, 1, 0], strict=True):
        g.y_typing = torch.tensor([y])
        save_graph(g, tmp_path / f"{g.slide_id}.pt")
    manifest = pd.DataFrame(
        {
            "slide_id": [g.slide_id for g in graphs],
            "dataset": ["esca"] * 4 + ["kica"],
            "typing": pd.array([0, 1, None, 1, 0], dtype="Int64"),
            "staging": pd.array([0, 0, 1, 2, 0], dtype="Int64"),
        }
    )
    profile = SimpleNamespace(graphs_dir=tmp_path)
    loaded, labels, ids = load_graphs(profile, manifest, "esca", "typing")
    assert ids == ["slide-00", "slide-01", "slide-03"] and labels.tolist() == [0, 1, 1]
    assert torch.equal(loaded[2].x, graphs[3].x)
    with pytest.raises(ValueError, match="known datasets: esca, kica"):
        load_graphs(profile, manifest, "brca", "typing")
    with pytest.raises(ValueError, match=r"known tasks \(label columns\): typing, staging$"):
        load_graphs(profile, manifest, "esca", "grade")
    # your own label column (read_cohort_csv: class indices beside <label>_name), 3 classes
    own = manifest.assign(grade=[2, 0, 1, None, 1], grade_name=["G3", "G1", "G2", "", "G2"])
    _, labels, ids = load_graphs(profile, own, "esca", "grade")
    assert ids == ["slide-00", "slide-01", "slide-02"] and labels.tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match=r"grade labels must be class indices.*slide-01"):
        load_graphs(profile, own.assign(grade=[2, 0.5, 1, None, 1]), "esca", "grade")
    with pytest.raises(ValueError, match="known tasks .*typing, staging, grade"):
        load_graphs(profile, own, "esca", "grade_name")
    with pytest.raises(ValueError, match="slide-03"):
        load_graphs(profile, manifest, "esca", "staging")
    nan = graphs[3].clone()
    nan.x[0, 0] = float("nan")
    save_graph(nan, tmp_path / "slide-03.pt")
    with pytest.raises(ValueError, match=r"non-finite .*slide-03"):
        load_graphs(profile, manifest, "esca", "typing")
    save_graph(graphs[3], tmp_path / "slide-03.pt")
    (tmp_path / "slide-01.pt").unlink()
    with pytest.warns(UserWarning, match=r"slide-01: no graph file.*03_graphs.*left out"):
        loaded, labels, ids = load_graphs(profile, manifest, "esca", "typing")
    assert ids == ["slide-00", "slide-03"] and labels.tolist() == [0, 1] and len(loaded) == 2
    with pytest.raises(FileNotFoundError, match=r"slide-01: no graph file.*02_tiles_features"):
        load_graphs(profile, manifest, "esca", "typing", missing_slides="error")


def test_a_changed_model_default_invalidates_the_fold_cache(monkeypatch):
    """The TrainConfig names the model and its explicit settings only; a changed default of
    the model (here MeanMLP's dropout) must still recompute cached folds."""
    from wsigraph.models import build_model
    from wsigraph.models.mean_mlp import MeanMLPConfig
    from wsigraph.train.run import model_fingerprint

    a = model_fingerprint(build_model("mean-mlp", 4, 2))
    assert a == model_fingerprint(build_model("mean-mlp", 4, 2))  # not the weights
    monkeypatch.setattr(MeanMLPConfig, "__init__", _with_default(MeanMLPConfig, dropout=0.5))
    assert model_fingerprint(build_model("mean-mlp", 4, 2)) != a
    assert model_fingerprint(build_model("mean-mlp", 4, 2, hidden=32)) != a


def _with_default(cls, **defaults):
    """``cls.__init__`` with other defaults for some fields (as if the code had changed)."""
    init = cls.__init__

    def patched(self, **kw):
        init(self, **(defaults | kw))

    return patched


def test_splits_repeats_reshuffle():
    """Each repeat is a fresh shuffle, not the first repeat's folds again, and every
    (repeat, fold) draws its validation hold-out (and its training) with a seed of its own."""
    labels = np.array([0] * 12 + [1] * 8)
    splits = make_splits(labels, folds=4, repeats=3, seed=0)
    partitions = [
        frozenset(frozenset(s.test.tolist()) for s in splits if s.repeat == r) for r in range(3)
    ]
    assert all(sum(map(len, p)) == 20 for p in partitions)  # each repeat tests every slide
    assert len(set(partitions)) == 3  # three different ways of cutting the 20 slides
    seeds = [s.seed for s in splits]
    assert len(set(seeds)) == len(seeds) == 12


def test_run_record_resolves_every_model_setting(tmp_path):
    from wsigraph.models import build_model
    from wsigraph.models.h2mil import H2MILConfig
    from wsigraph.train.run import resolved_model_config

    graphs, labels = toy_graphs(12)
    model = build_model("h2mil", graphs[0].x.shape[1], 2, conv="gcn")
    resolved = resolved_model_config(model, {"conv": "gcn"})
    assert resolved["conv"] == "gcn" and resolved["hidden"] == H2MILConfig.hidden
    assert resolved["ratio"] == [0.1, 4] and resolved["dropout"] == 0.3
    abmil = resolved_model_config(build_model("abmil", 6, 2), {})
    assert abmil and all(not k.startswith("_") for k in abmil)


def test_history_holds_the_training_auc_of_the_training_passes():
    from sklearn.metrics import roc_auc_score

    from wsigraph.train.loop import _TrainOutputs

    graphs, labels = toy_graphs(shift=3.0)
    split = make_splits(labels, folds=3, repeats=1)[0]
    cfg = TrainConfig(**(CFG.to_dict() | {"epochs": 6, "patience": None}))
    result = train_fold(graphs, labels, split, cfg)
    aucs = [h["train_auc"] for h in result.history]
    assert all(0.0 <= a <= 1.0 for a in aucs) and aucs[-1] > 0.9  # an easy task, learned
    # the hook pairs each training output with its batch's labels, and only in training mode
    model = nn.Sequential(nn.Linear(2, 2))
    seen = _TrainOutputs(model)
    x, y = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]]), torch.tensor([0, 1, 1])
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2))
        model[0].bias.zero_()
        model.train()
        model(x)
        seen.label(y)
        model.eval()
        model(x)  # an evaluation pass is not a training pass
        seen.label(y)
    expected = roc_auc_score(y.numpy(), torch.softmax(x, 1)[:, 1].numpy())
    assert seen.auc(2) == pytest.approx(expected) and len(seen.logits) == 1
    seen.close()
    model.train()
    model(x)
    assert seen._pending is None  # the hook is gone
