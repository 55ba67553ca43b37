"""Which split chooses the checkpoint (issue 22, item 1).

The protocol (wsigraph.train.cv): 25 % of each training split is held out as validation and
chooses the checkpoint; the test fold is looked at once, after training. For each training loop
-- classification (:func:`wsigraph.train.loop.train_fold`), survival
(:func:`wsigraph.train.survival.train_survival_fold`) and ABiG-Net's bilevel loop
(:func:`wsigraph.train.bilevel.train_fold_bilevel`) -- a spy records, in order, every
evaluation call and every forward pass of the model with the slides it saw (each graph carries
a unique ``sid``), and replaces the per-epoch ranking metric with a script in which validation
and test disagree on the best epoch. A loop that selected on the test fold fails here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import toy_pyramid

from wsigraph.train import bilevel, loop, survival
from wsigraph.train.bilevel import BilevelConfig, train_fold_bilevel
from wsigraph.train.cv import make_splits
from wsigraph.train.loop import TrainConfig, train_fold
from wsigraph.train.survival import survival_bins, synthetic_survival, train_survival_fold

pytestmark = pytest.mark.usefixtures("one_thread")

EPOCHS = 5
# The ranking metric each evaluation call reports, by the part it saw and its call number:
# validation ranks epoch 2 best, the test fold epoch 4. The last test entry is the final report.
SCRIPT = {"val": [0.6, 0.9, 0.7, 0.8, 0.5], "test": [0.9, 0.5, 0.6, 0.95, 0.7, 0.55]}
VAL_BEST = 2  # = 1 + argmax(SCRIPT["val"])


def cohort(n: int = 24, seed: int = 0):
    """``n`` toy pyramids (class 1 shifts feature 0), each with a unique ``sid`` and ``pos``."""
    labels = np.arange(n) % 2
    graphs = []
    for i, y in enumerate(labels):
        g = toy_pyramid(2 + i % 3, seed=seed + i, signal=1.5 * float(y))
        g.sid = torch.tensor([i])  # graph-level: a batch of B slides has sid [B]
        g.pos = g.grid.float()  # ABiG-Net reads patch positions
        graphs.append(g)
    return graphs, labels


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def differing(a: dict, b: dict) -> list[str]:
    """The names of the tensors in which two state dicts differ (empty: the same model)."""
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


class Spy:
    """Records what a training loop shows its model and its evaluation function.

    ``events`` holds, in call order, ``("forward", sids, training)`` for every forward pass of
    the model and ``("evaluate", part, state)`` for every evaluation call, ``part`` naming the
    split whose slides the call saw (``"val"``, ``"test"``, ``"train"``, or ``"other <sids>"``)
    and ``state`` the model's parameters at that moment.
    """

    def __init__(self, split, metric: str):
        self.parts = {p: frozenset(int(i) for i in idx) for p, idx in split.parts().items()}
        self.metric = metric
        self.events: list[tuple] = []
        self.calls = {"val": 0, "test": 0}

    def part(self, sids) -> str:
        sids = frozenset(int(i) for i in sids)
        for name, members in self.parts.items():
            if sids == members:
                return name
        return f"other {sorted(sids)}"

    def watch(self, model: torch.nn.Module) -> torch.nn.Module:
        def hook(module, args):
            sids = tuple(args[0].sid.view(-1).tolist())
            self.events.append(("forward", sids, module.training))

        model.register_forward_pre_hook(hook)
        return model

    def wrap_evaluate(self, real):
        """``real(model, loader, ...)`` recorded, its ranking metric replaced from SCRIPT."""

        def spy(model, loader, *args, **kwargs):
            part = self.part(d.sid for d in loader.dataset)
            self.events.append(("evaluate", part, state(model)))
            out = real(model, loader, *args, **kwargs)
            if part in self.calls:
                out[self.metric] = SCRIPT[part][self.calls[part]]
                self.calls[part] += 1
            return out

        return spy

    def evaluations(self) -> list[tuple[int, str, dict]]:
        """``(event index, part, state)`` of every evaluation call, in order."""
        return [(i, e[1], e[2]) for i, e in enumerate(self.events) if e[0] == "evaluate"]

    def check_protocol(self, epochs: int, training_parts=("train",)) -> list[dict]:
        """Each epoch's selection call saw exactly the validation slides, the test slides were
        evaluated once, after every selection call, and no other forward pass saw a test slide.
        Returns the model state at each selection call (epoch order) and at the final call."""
        evals = self.evaluations()
        assert [p for _, p, _ in evals] == ["val"] * epochs + ["test"]
        final = evals[-1][0]
        test, allowed = self.parts["test"], frozenset().union(*map(self.parts.get, training_parts))
        seen_test = []
        for i, event in enumerate(self.events):
            if event[0] != "forward":
                continue
            sids, training = frozenset(event[1]), event[2]
            if sids & test:
                assert i > final and not training, f"test slides {sorted(sids & test)} seen early"
                seen_test += event[1]
            elif training:
                assert sids <= allowed, f"trained on {sorted(sids - allowed)}"
            else:  # a selection call
                assert sids <= self.parts["val"] and i < final, f"evaluated on {sorted(sids)}"
        assert sorted(seen_test) == sorted(test)  # every test slide once, in the final call
        return [s for _, _, s in evals]


def check_selection(result, states: list[dict], returned: torch.nn.Module | None = None):
    """The kept checkpoint is the validation-best epoch of SCRIPT, not the test-best one, and
    the final evaluation ran on it."""
    assert result.best_epoch == VAL_BEST != 1 + int(np.argmax(SCRIPT["test"][:EPOCHS]))
    assert result.epochs_run == EPOCHS
    chosen, final = states[VAL_BEST - 1], states[-1]
    assert differing(chosen, states[EPOCHS - 1]), "training did not move the weights"
    assert not differing(final, chosen), "the test fold did not see the validation-best model"
    if returned is not None:
        assert not differing(state(returned), chosen), "returned another model than the best"


def toy_split(labels):
    split = make_splits(labels, folds=3, repeats=1, seed=0)[0]
    assert len(split.val) and len(split.test)
    return split


# Classification --------------------------------------------------------------------------------
def test_train_fold_selects_on_validation_and_tests_once(monkeypatch):
    graphs, labels = cohort()
    split = toy_split(labels)
    spy = Spy(split, "auc")
    real_build = loop.build_model
    monkeypatch.setattr(loop, "build_model", lambda *a, **k: spy.watch(real_build(*a, **k)))
    monkeypatch.setattr(loop, "evaluate", spy.wrap_evaluate(loop.evaluate))
    cfg = TrainConfig(
        "mean-mlp", {"hidden": 8}, lr=1e-2, epochs=EPOCHS, batch_size=4, patience=None,
        device="cpu",
    )  # fmt: skip
    result, model, _ = train_fold(graphs, labels, split, cfg, return_model=True)
    states = spy.check_protocol(EPOCHS)
    check_selection(result, states, model)
    assert [h["val_auc"] for h in result.history] == SCRIPT["val"]
    assert result.val_metrics["auc"] == max(SCRIPT["val"])
    assert result.metrics["auc"] == SCRIPT["test"][0]  # the one test call's report
    assert result.test_slide_ids == [str(i) for i in split.test]


def test_train_fold_early_stopping_follows_validation(monkeypatch):
    """With patience 2 the loop stops 2 epochs after the validation-best epoch 2."""
    graphs, labels = cohort(12)
    split = toy_split(labels)
    spy = Spy(split, "auc")
    monkeypatch.setattr(loop, "evaluate", spy.wrap_evaluate(loop.evaluate))
    cfg = TrainConfig(
        "mean-mlp", {"hidden": 8}, lr=1e-2, epochs=EPOCHS, batch_size=4, patience=2, device="cpu"
    )
    result = train_fold(graphs, labels, split, cfg)
    assert result.best_epoch == VAL_BEST and result.epochs_run == VAL_BEST + 2
    assert [p for _, p, _ in spy.evaluations()] == ["val"] * (VAL_BEST + 2) + ["test"]


# Survival --------------------------------------------------------------------------------------
def test_survival_fold_selects_on_validation_and_tests_once(monkeypatch):
    graphs, labels = cohort()
    surv = synthetic_survival(labels, seed=0, beta=2.0)
    times, cens = surv["time"].to_numpy(), surv["censorship"].to_numpy()
    bins, _ = survival_bins(times, cens, n_bins=2)
    split = toy_split(labels)
    spy = Spy(split, "c_index")
    real_build = survival.build_model
    monkeypatch.setattr(survival, "build_model", lambda *a, **k: spy.watch(real_build(*a, **k)))
    monkeypatch.setattr(
        survival, "evaluate_survival", spy.wrap_evaluate(survival.evaluate_survival)
    )
    cfg = TrainConfig(
        "mean-mlp", {"hidden": 8}, lr=1e-2, epochs=EPOCHS, batch_size=4, patience=None,
        device="cpu",
    )  # fmt: skip
    result = train_survival_fold(graphs, bins, times, cens, split, cfg, n_bins=2)
    states = spy.check_protocol(EPOCHS)
    check_selection(result, states)
    assert [h["val_c_index"] for h in result.history] == SCRIPT["val"]
    assert result.val_c_index == max(SCRIPT["val"])
    assert result.c_index == SCRIPT["test"][0]
    assert result.test_slide_ids == [str(i) for i in split.test]


# Bilevel (ABiG-Net) ----------------------------------------------------------------------------
def test_bilevel_selects_on_validation_and_each_side_moves_on_its_own_split(monkeypatch):
    graphs, labels = cohort()
    split = toy_split(labels)
    spy = Spy(split, "auc")
    real_model = bilevel.ABiGNet
    monkeypatch.setattr(bilevel, "ABiGNet", lambda *a, **k: spy.watch(real_model(*a, **k)))
    monkeypatch.setattr(bilevel, "evaluate", spy.wrap_evaluate(bilevel.evaluate))
    models, losses, stats = [], [], []

    def loss_spy(kind, real):
        def f(model, batch, *args):
            models.append(model)
            phi = [p.detach().clone() for p in model.structure_parameters()]
            w = [p.detach().clone() for p in model.weight_parameters()]
            losses.append((kind, set(batch.sid.tolist()), phi, w))
            return real(model, batch, *args)

        return f

    def stats_spy(model, loader, device):
        stats.append(spy.part(d.sid for d in loader.dataset))
        return real_stats(model, loader, device)

    real_stats = bilevel.graph_stats
    monkeypatch.setattr(bilevel, "graph_stats", stats_spy)
    monkeypatch.setattr(bilevel, "inner_loss", loss_spy("inner", bilevel.inner_loss))
    monkeypatch.setattr(bilevel, "outer_loss", loss_spy("outer", bilevel.outer_loss))
    cfg = BilevelConfig(
        model_config={"graph": "learned", "hidden": 8, "k": 3, "learner_hidden": 4,
                      "learner_heads": 1, "dropout": 0.0},
        lr=1e-2, outer_lr=5e-2, epochs=EPOCHS, batch_size=4, patience=None, device="cpu",
    )  # fmt: skip
    result, model, _ = train_fold_bilevel(graphs, labels, split, cfg, return_model=True)

    # Selection on validation, the test fold once at the end (training forwards: the inner
    # problem on training batches, the outer one on validation batches).
    states = spy.check_protocol(EPOCHS, training_parts=("train", "val"))
    check_selection(result, states, model)
    assert [h["val_auc"] for h in result.history] == SCRIPT["val"]
    assert stats == ["val"] * EPOCHS

    # Outer (structure) losses only on validation batches, inner (weight) losses only on
    # training batches; every training slide every epoch.
    assert all(m is model for m in models)
    steps = len(split.train) // cfg.batch_size + bool(len(split.train) % cfg.batch_size)
    assert [k for k, *_ in losses] == ["outer", "inner"] * (steps * EPOCHS)
    test = set(spy.parts["test"])
    for kind, sids, _, _ in losses:
        assert sids <= (spy.parts["val"] if kind == "outer" else spy.parts["train"]), kind
        assert not sids & test
    for e in range(EPOCHS):
        epoch = losses[2 * steps * e : 2 * steps * (e + 1)]
        assert set().union(*(s for k, s, _, _ in epoch if k == "inner")) == spy.parts["train"]

    # Each side moves only in its own step: phi between an outer loss and the next inner loss
    # (the outer step on the validation loss), w between an inner loss and the next outer loss.
    def equal(a, b):
        return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))

    phi_moved = w_moved = 0
    for (k0, _, phi0, w0), (_, _, phi1, w1) in zip(losses[:-1], losses[1:], strict=True):
        if k0 == "outer":  # the outer step ran in between
            assert equal(w0, w1), "the outer step moved the GCN weights"
            phi_moved += not equal(phi0, phi1)
        else:  # the inner step (and, between epochs, the evaluation) ran in between
            assert equal(phi0, phi1), "the inner step moved the structure"
            w_moved += not equal(w0, w1)
    assert phi_moved >= len(losses) // 4 and w_moved >= len(losses) // 4  # both sides learn
    assert math.isfinite(result.history[-1]["outer_loss"])


# MiCo (official protocol: wsigraph.train.mico) ---------------------------------------------------
@pytest.mark.parametrize("task", ["typing", "survival"])
def test_mico_fold_selects_on_validation_and_tests_once(monkeypatch, task):
    """Subtyping keeps the best validation macro-F1, survival the lowest validation loss."""
    from types import SimpleNamespace

    from wsigraph.train import mico

    graphs, labels = cohort()
    bags = mico.slide_bags(graphs)
    for b, g in zip(bags, graphs, strict=True):
        b.sid = g.sid
    split = toy_split(labels)
    targets = {"y": labels}
    metric = "f1"
    if task == "survival":
        surv = synthetic_survival(labels, seed=0, beta=2.0)
        times, cens = surv["time"].to_numpy(), surv["censorship"].to_numpy()
        targets = {"y": survival_bins(times, cens, n_bins=2)[0], "time": times, "c": cens}
        metric = "loss"
    spy = Spy(split, metric)
    real_build = mico.build_model
    monkeypatch.setattr(mico, "build_model", lambda *a, **k: spy.watch(real_build(*a, **k)))
    scripted = spy.wrap_evaluate(mico._evaluate)

    def evaluate(*a, **k):  # survival: the lowest loss wins, so report minus the script
        out = scripted(*a, **k)
        if task == "survival":
            out["loss"] = -out["loss"]
        return out

    monkeypatch.setattr(mico, "_evaluate", evaluate)
    cfg = mico.mico_train_config(dict(dim=8, n_clusters=4, anchors="learned"), EPOCHS, device="cpu")
    protocol = mico.MiCoProtocol(patience=8)
    result, model = mico.train_mico_fold(
        bags, targets, split, cfg, task, 2, protocol, return_model=True
    )
    states = spy.check_protocol(EPOCHS)
    check_selection(SimpleNamespace(**result), states, model)
    assert result["scores"][metric if task == "typing" else "c_index"] is not None


def test_official_abignet_selects_on_validation_and_tests_once(monkeypatch):
    graphs, labels = cohort()
    split = toy_split(labels)
    spy = Spy(split, "auc")
    real_model = bilevel.ABiGNetOfficial
    monkeypatch.setattr(bilevel, "ABiGNetOfficial", lambda *a, **k: spy.watch(real_model(*a, **k)))
    monkeypatch.setattr(bilevel, "evaluate", spy.wrap_evaluate(bilevel.evaluate))
    passes = []

    def pass_spy(kind, real):
        def f(model, gs, *args):
            passes.append((kind, spy.part(int(g.sid) for g in gs)))
            return real(model, gs, *args)

        return f

    for kind in ("lower", "upper"):
        name = f"official_{kind}_pass"
        monkeypatch.setattr(bilevel, name, pass_spy(kind, getattr(bilevel, name)))
    cfg = bilevel.OfficialBilevelConfig(
        model_config={"widths": (8, 8, 8), "head": (8,), "generator_hidden": (4,)},
        iterations=EPOCHS, lr_gcn=1e-2, device="cpu", checkpoint="val",
    )  # fmt: skip
    result, model, _ = bilevel.train_fold_official(graphs, labels, split, cfg, return_model=True)
    states = spy.check_protocol(EPOCHS, training_parts=("train", "val"))
    check_selection(result, states, model)
    # the GCN's pass on every training image, then the generator's on every validation image
    assert passes == [("lower", "train"), ("upper", "val")] * EPOCHS
