"""Saved fold models (wsigraph.checkpoint): what a run saves scores a slide exactly as in training."""

import numpy as np
import pytest
import torch
from test_train import CFG, toy_graphs

import wsigraph
from wsigraph.checkpoint import FORMAT, CheckpointError, load_model, save_checkpoint
from wsigraph.models import build_model
from wsigraph.train.run import checkpoint_path, run_experiment


def test_every_fold_saves_a_model_that_reproduces_its_test_predictions(tmp_path):
    graphs, labels = toy_graphs(12)
    features = {"encoder": "toy", "patch_size": 64}
    record = run_experiment(
        "toy", graphs, labels, CFG, tmp_path, folds=3, repeats=1, executor="serial",
        meta={"table": "t", "row": "r"}, class_names=["benign", "tumour"], features=features,
    )  # fmt: skip
    assert [c["path"] for c in record["checkpoints"]] == [f"toy/fold_r0_f{f}.pt" for f in range(3)]
    by_id = {g.slide_id: g for g in graphs}
    for pred in record["predictions"]:
        ckpt = wsigraph.load_model(tmp_path / "toy" / f"fold_r0_f{pred['fold']}.pt")
        assert ckpt.class_names == ["benign", "tumour"] and ckpt.features == features
        assert ckpt.meta["fold"] == pred["fold"] and ckpt.meta["row"] == "r"
        assert not ckpt.model.training and ckpt.feature_mean is not None
        for sid, prob in zip(pred["slide_id"], pred["prob"], strict=True):
            p = ckpt.predict(by_id[sid])
            np.testing.assert_allclose(p.numpy(), prob, rtol=0, atol=1e-5)
    assert ckpt.class_name(1) == "tumour" and ckpt.class_name(5) == "class 5"


def test_a_fold_whose_model_is_missing_is_trained_again(tmp_path):
    graphs, labels = toy_graphs(12)
    run = dict(cfg=CFG, out_dir=tmp_path, folds=3, repeats=1, executor="serial", progress=False)
    run_experiment("toy", graphs, labels, **run)
    checkpoint_path(tmp_path, "toy", 0, 1).unlink()
    again = run_experiment("toy", graphs, labels, **run)
    assert [d["reused"] for d in again["fold_details"]] == [True, False, True]
    assert checkpoint_path(tmp_path, "toy", 0, 1).exists()
    off = run_experiment(
        "toy", graphs, labels, **run | {"out_dir": tmp_path / "off"}, save_models=False
    )
    assert off["checkpoints"] == [] and not list((tmp_path / "off").rglob("*.pt"))


def test_refit_trains_one_model_on_every_slide_for_the_folds_median_best_epoch(tmp_path):
    from wsigraph.train.loop import refit
    from wsigraph.train.run import refit_path

    graphs, labels = toy_graphs(12, shift=0.5)  # a harder task: the folds stop improving early
    cfg = CFG.__class__(**CFG.to_dict() | {"lr": 5e-2})
    run = dict(cfg=cfg, out_dir=tmp_path, folds=3, repeats=1, executor="serial", progress=False)
    record = run_experiment("toy", graphs, labels, **run, class_names=["a", "b"], refit=True)
    best = sorted(d["best_epoch"] for d in record["fold_details"])
    entry = record["refit"]
    assert best[1] < cfg.epochs  # so the median below is not the configured epoch count
    assert entry["epochs"] == best[1] and entry["n_slides"] == 12 and not entry["reused"]
    assert entry["path"] == "toy/refit.pt" and refit_path(tmp_path, "toy").exists()
    ckpt = load_model(tmp_path / entry["path"])
    assert ckpt.meta["refit"] and ckpt.meta["epochs"] == best[1] and ckpt.class_names == ["a", "b"]
    # the normaliser is every slide's, and the model is exactly loop.refit's (seeded)
    model, mean, std = refit(graphs, labels, cfg, best[1])
    x = torch.cat([g.x for g in graphs])
    torch.testing.assert_close(ckpt.feature_mean, x.mean(0), rtol=0, atol=1e-5)
    for a, b in zip(ckpt.model.state_dict().values(), model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    # it scores the slides it was trained on, and a rerun reuses it
    probs = torch.stack([ckpt.predict(g) for g in graphs])[:, 1].numpy()
    assert ((probs > 0.5) == labels.astype(bool)).mean() >= 0.75
    again = run_experiment("toy", graphs, labels, **run, class_names=["a", "b"], refit=True)
    assert again["refit"]["reused"] and again["refit"]["epochs"] == best[1]
    other = run_experiment("toy", graphs, labels, **run | {"cfg": CFG}, refit=True)
    assert not other["refit"]["reused"]
    assert run_experiment("toy", graphs, labels, **run)["refit"] is None
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        refit(graphs, labels, cfg, 0)


def _saved(tmp_path, dim=8):
    model = build_model("mean-mlp", dim, 2, hidden=16)
    return save_checkpoint(tmp_path / "m.pt", model, "mean-mlp", {"hidden": 16}, dim, 2)


def test_bad_checkpoints_are_refused_with_the_reason(tmp_path):
    path = _saved(tmp_path)
    state = torch.load(path, weights_only=True)
    torch.save(state | {"format": FORMAT + 1, "wsigraph_version": "9.9"}, tmp_path / "new.pt")
    with pytest.raises(
        CheckpointError, match=r"format 2 \(wsigraph 9.9\); this wsigraph .* reads format 1"
    ):
        load_model(tmp_path / "new.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt is not a readable wsigraph checkpoint"):
        load_model(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no 'format' entry"):
        load_model(tmp_path / "other.pt")
    torch.save(state | {"model_config": {"hidden": 32}}, tmp_path / "wide.pt")
    with pytest.raises(CheckpointError, match="weights do not fit model 'mean-mlp'"):
        load_model(tmp_path / "wide.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_model(tmp_path / "absent.pt")


class _Payload:  # pickled code: weights_only=True refuses to run it
    def __reduce__(self):
        return (print, ("code ran",))


def test_a_checkpoint_carrying_code_is_refused(tmp_path):
    state = torch.load(_saved(tmp_path), weights_only=True)
    torch.save(state | {"meta": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not a readable wsigraph checkpoint"):
        load_model(tmp_path / "evil.pt")


def test_a_slide_with_other_features_is_refused_naming_both_sizes(tmp_path):
    ckpt = load_model(_saved(tmp_path, dim=8))
    graphs, _ = toy_graphs(2, dim=5)
    with pytest.raises(CheckpointError, match="has 5 features per patch but the model .* 8"):
        ckpt.predict(graphs[0])
    graphs, _ = toy_graphs(2, dim=8)
    assert np.isclose(float(ckpt.predict(graphs[0]).sum()), 1.0)
