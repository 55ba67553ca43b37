"""MiCo as its authors ran it (wsigraph.train.mico, wsigraph.train.optim): the official forward,
Lookahead-RAdam against plain write-outs, anchors from training slides only, patient bags,
case-level splits, bad input, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import toy_pyramid
from torch_geometric.loader import DataLoader

from wsigraph.models import build_model
from wsigraph.train import mico
from wsigraph.train.mico import (
    MiCoProtocol,
    case_splits,
    fold_anchors,
    mico_train_config,
    patient_bags,
    run_mico_experiment,
    slide_bags,
    train_mico_fold,
)
from wsigraph.train.optim import Lookahead, decay_groups, lookahead_radam

TINY = MiCoProtocol(epochs=3, patience=8)


def cohort(n=16, f=6, seed=0):
    labels = np.arange(n) % 2
    graphs = []
    for i, y in enumerate(labels):
        g = toy_pyramid(2 + i % 3, seed=seed + i, f=f, signal=1.5 * float(y))
        g.slide_id = f"s{i:02d}"
        graphs.append(g)
    return graphs, labels


# The official forward (models/MiCo.py), written out with our weights ----------------------------
def official_forward(net, slides: list[torch.Tensor]) -> torch.Tensor:
    """``MiCo.forward`` of ``junjianli106/MiCo`` (eval mode, soft assignment, l2), one bag made of
    the list ``slides`` of ``[n_i, F]`` features, written with ``F.linear`` on ``net``'s weights."""

    def lin(m, x):
        return F.linear(x, m.weight, m.bias)

    scale = net.routes[0].tau
    per_slide = []
    for x in slides:
        h = F.leaky_relu(lin(net.patch_proj[0], x))
        c = F.leaky_relu(lin(net.anchor_proj[0], net.anchor_weight))
        for route, red in zip(net.routes, net.reducers, strict=True):
            a = F.softmax(-torch.cdist(h, c) / scale, dim=1)
            h = route.norm(h + a @ c)
            h = h + lin(route.mlp[3], F.relu(lin(route.mlp[0], h)))
            c = lin(red.mlp[3], F.relu(lin(red.mlp[0], c.t()))).t()
        per_slide.append(F.relu(lin(net.token_proj[0], torch.cat([h, c]))))
    t = net.token_norm(torch.cat(per_slide))
    score = lin(net.attention_w, torch.tanh(lin(net.attention_V[0], t))
                * torch.sigmoid(lin(net.attention_U[0], t)))  # fmt: skip
    z = F.softmax(score.t(), dim=1) @ t
    return lin(net.classifier, F.relu(lin(net.head[0], z)))


@pytest.mark.parametrize("n_slides", [1, 2])
def test_learned_anchors_match_the_official_forward(n_slides):
    torch.manual_seed(0)
    model = build_model("mico", 6, 4, dim=16, n_clusters=8, anchors="learned").eval()
    for r in model.net.routes:  # the official scale is one parameter shared by the layers
        r.tau.data.fill_(0.7)
    graphs = [toy_pyramid(3 + k, seed=k) for k in range(n_slides)]
    for k, g in enumerate(graphs):
        g.slide_id = f"x{k}"
    bags, _, _ = patient_bags(graphs, ["case"] * n_slides)
    batch = next(iter(DataLoader(bags, batch_size=1)))
    with torch.no_grad():
        ours = model(batch)
        ref = official_forward(model.net, [g.x[g.level == 2] for g in graphs])
    assert ours.shape == ref.shape == (1, 4)
    assert (ours - ref).abs().max() < 1e-5


# Lookahead-RAdam ---------------------------------------------------------------------------------
def official_radam_step(p, g, st, lr, wd, betas=(0.9, 0.999), eps=1e-8):
    """``MyOptimizer/radam.py`` (LiyuanLucasLiu's RAdam), one step, written out."""
    b1, b2 = betas
    st["t"] += 1
    st["m"] = b1 * st["m"] + (1 - b1) * g
    st["v"] = b2 * st["v"] + (1 - b2) * g * g
    t = st["t"]
    b2t = b2**t
    n_max = 2 / (1 - b2) - 1
    n_sma = n_max - 2 * t * b2t / (1 - b2t)
    p = p - wd * lr * p
    if n_sma >= 5:
        step = lr * math.sqrt((1 - b2t) * (n_sma - 4) / (n_max - 4) * (n_sma - 2) / n_sma
                              * n_max / (n_max - 2)) / (1 - b1**t)  # fmt: skip
        return p - step * st["m"] / (st["v"].sqrt() + eps)
    return p - lr / (1 - b1**t) * st["m"]


def test_lookahead_radam_matches_the_official_update_written_out():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    opt = lookahead_radam(lin, lr=1e-2, weight_decay=0.1)
    assert isinstance(opt, Lookahead) and (opt.alpha, opt.k) == (0.5, 6)
    ref = {n: p.detach().clone().double() for n, p in lin.named_parameters()}
    st = {n: {"t": 0, "m": torch.zeros_like(p), "v": torch.zeros_like(p)} for n, p in ref.items()}
    slow = {}
    wd = {"weight": 0.1, "bias": 0.0}  # official add_weight_decay: no decay on biases
    for step in range(1, 21):
        x = torch.randn(5, 3)
        opt.zero_grad()
        lin(x).square().sum().backward()
        grads = {n: p.grad.detach().double() for n, p in lin.named_parameters()}
        opt.step()
        for n in ref:
            ref[n] = official_radam_step(ref[n], grads[n], st[n], 1e-2, wd[n])
        if step % 6 == 0:  # Lookahead: slow copy made lazily at the first sync
            for n in ref:
                slow.setdefault(n, ref[n].clone())
                slow[n] = slow[n] + 0.5 * (ref[n] - slow[n])
                ref[n] = slow[n].clone()
        for n, p in lin.named_parameters():
            assert torch.allclose(p.detach().double(), ref[n], atol=1e-6), (step, n)


def test_decay_groups_skip_biases_and_1d():
    model = build_model("mico", 6, 2, dim=8, n_clusters=4, anchors="learned")
    no, yes = decay_groups(model, 1e-5)
    assert no["weight_decay"] == 0 and yes["weight_decay"] == 1e-5
    assert all(p.ndim >= 2 for p in yes["params"]) and any(p.ndim == 1 for p in no["params"])
    assert any(p is model.net.anchor_weight for p in yes["params"])


def test_lookahead_rejects_bad_settings():
    base = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="alpha"):
        Lookahead(base, alpha=1.5)
    with pytest.raises(ValueError, match="k must"):
        Lookahead(base, k=0)


# Bags and splits ----------------------------------------------------------------------------------
def test_two_slides_of_a_case_make_one_bag_with_both_slides_instances():
    graphs, _ = cohort(4)
    bags, cases, members = patient_bags(graphs, ["A", "B", "A", "C"])
    assert cases == ["A", "B", "C"] and members == [[0, 2], [1], [3]]
    a = bags[0]
    expect = torch.cat([graphs[0].x[graphs[0].level == 2], graphs[2].x[graphs[2].level == 2]])
    assert torch.equal(a.x, expect) and int(a.n_slides) == 2
    assert (
        a.slide_ids == ["s00", "s02"]
        and a.bag_slide.tolist().count(1) == (graphs[2].level == 2).sum()
    )


def test_width_mismatch_in_a_case_names_the_case():
    graphs, _ = cohort(3)
    graphs[2].x = torch.randn(graphs[2].num_nodes, 9)
    with pytest.raises(ValueError, match=r"case P7: .*different feature widths"):
        patient_bags(graphs, ["P1", "P7", "P7"])


def test_case_splits_never_separate_a_case_and_follow_the_official_shape():
    labels = np.repeat(np.arange(2), 20)
    cases = [f"c{i // 2}" for i in range(40)]  # two slides per case
    splits = case_splits(cases, labels, folds=4, val_fraction=0.2, seed=0)
    assert len(splits) == 4 and {s.repeat for s in splits} == {0}
    tests = np.sort(np.concatenate([s.test for s in splits]))
    assert tests.tolist() == list(range(40))  # each slide tested once
    for s in splits:
        owner = {}
        for part, idx in s.parts().items():
            for i in idx:
                assert owner.setdefault(cases[i], part) == part, cases[i]
        assert 0.15 < len(s.val) / (len(s.train) + len(s.val)) < 0.3


def test_case_splits_refuse_a_case_with_two_labels():
    with pytest.raises(ValueError, match="case c0"):
        case_splits(["c0", "c0", "c1", "c2"], [0, 1, 0, 1], folds=2)


# Anchors from training slides only ------------------------------------------------------------------
@pytest.mark.parametrize("task", ["typing", "survival"])
def test_anchor_kmeans_never_sees_a_validation_or_test_slide(monkeypatch, tmp_path, task):
    graphs, labels = cohort(16)
    seen = []
    real = mico.kmeans

    def spy(x, *a, **k):
        seen.append(x.clone())
        return real(x, *a, **k)

    monkeypatch.setattr(mico, "kmeans", spy)
    splits_seen = []
    real_train = mico.train_mico_fold

    def record(bags, targets, split, *a, **k):
        splits_seen.append((bags, split))
        return real_train(bags, targets, split, *a, **k)

    monkeypatch.setattr(mico, "train_mico_fold", record)
    cfg = mico_train_config(dict(dim=8, n_clusters=4, anchors="learned"), epochs=1, device="cpu")
    kw = dict(labels=labels) if task == "typing" else dict(
        times=np.arange(16) + 1.0, censorship=np.arange(16) % 3 == 0)  # fmt: skip
    run_mico_experiment("r", graphs, task, cfg, tmp_path, folds=2, protocol=TINY, **kw)
    assert len(seen) == len(splits_seen) == 2
    for x, (bags, split) in zip(seen, splits_seen, strict=True):
        rows = {tuple(r.tolist()) for r in x}
        train = {tuple(r.tolist()) for i in split.train for r in bags[int(i)].x}
        held = {tuple(r.tolist()) for i in (*split.val, *split.test) for r in bags[int(i)].x}
        assert rows <= train and not rows & held


def test_more_anchors_than_training_instances_uses_one_per_instance():
    graphs, labels = cohort(8)
    bags = slide_bags(graphs)
    with pytest.warns(UserWarning, match="anchors"):
        init = fold_anchors(bags, [0, 1], n_clusters=64)
    n = sum(len(bags[i].x) for i in (0, 1))
    assert init.shape == (n, 6)
    split = case_splits([g.slide_id for g in graphs], labels, folds=2, val_fraction=0.3)[0]
    cfg = mico_train_config(dict(dim=8, n_clusters=64, anchors="learned"), epochs=1, device="cpu")
    with pytest.warns(UserWarning, match="anchors"):
        r = train_mico_fold(bags, {"y": labels}, split, cfg, "typing", 2, TINY)
    assert r["n_anchors"] < 64


# Determinism -------------------------------------------------------------------------------------------
def test_two_runs_give_identical_metrics_and_weights_whatever_the_thread_count(
    tmp_path, monkeypatch
):
    """Demo-sized bags (~100 instances of 44 features, width 128): big enough for torch's CPU
    kernels to split work across threads on some CPUs (an Intel Xeon), so an unpinned thread
    count changes the last bits there. Other CPUs give the same bits on 1 and 2 threads at this
    size (an AMD EPYC did), so the threads a fold trains on are also checked directly."""
    from wsigraph.train import mico

    seen, train = [], mico._train
    monkeypatch.setattr(
        mico, "_train", lambda *a, **k: (seen.append(torch.get_num_threads()), train(*a, **k))[1]
    )
    graphs, labels = [], np.arange(12) % 2
    for i, y in enumerate(labels):
        g = toy_pyramid(25, seed=i, f=44, signal=0.3 * float(y))
        g.slide_id = f"s{i:02d}"
        graphs.append(g)
    cfg = mico_train_config(dict(dim=128, n_clusters=16, anchors="learned"), 2, device="cpu")
    bags = slide_bags(graphs)
    split = case_splits([g.slide_id for g in graphs], labels, folds=2, val_fraction=0.3)[0]
    before = torch.get_num_threads()
    runs = []
    try:
        for threads, out in ((1, "a"), (2, "b")):
            torch.set_num_threads(threads)
            rec = run_mico_experiment("d", graphs, "typing", cfg, tmp_path / out, labels=labels,
                                      folds=2, protocol=TINY)  # fmt: skip
            r, model = train_mico_fold(bags, {"y": labels}, split, cfg, "typing", 2, TINY,
                                       return_model=True)  # fmt: skip
            runs.append((rec, r, model.state_dict()))
    finally:
        torch.set_num_threads(before)
    (ra, fa, wa), (rb, fb, wb) = runs
    assert ra["summary"] == rb["summary"] and ra["predictions"] == rb["predictions"]
    assert fa["history"] == fb["history"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert torch.get_num_threads() == before
    assert seen and set(seen) == {1}, seen  # every fold on one thread, whatever the caller's


def test_a_case_whose_slides_disagree_on_survival_is_named(tmp_path):
    graphs, _ = cohort(8)
    cfg = mico_train_config(dict(dim=8, n_clusters=4, anchors="learned"), 1, device="cpu")
    times, cens = np.arange(8) + 1.0, np.zeros(8)
    with pytest.raises(ValueError, match="case K3: its slides have different survival times"):
        run_mico_experiment("r", graphs, "survival", cfg, tmp_path, times=times, censorship=cens,
                            case_ids=["K3", "K3", *[f"c{i}" for i in range(6)]])  # fmt: skip


def test_survival_bags_pool_the_slides_of_a_case(tmp_path):
    graphs, _ = cohort(24)
    cases = [f"c{i // 2}" for i in range(24)]  # two slides per case
    times = np.repeat(np.arange(12) + 1.0, 2)
    cens = np.repeat(np.arange(12) % 3 == 0, 2).astype(int)
    cfg = mico_train_config(dict(dim=8, n_clusters=4, anchors="learned"), 1, device="cpu")
    rec = run_mico_experiment("r", graphs, "survival", cfg, tmp_path, times=times,
                              censorship=cens, case_ids=cases, folds=2, protocol=TINY)  # fmt: skip
    assert rec["cv"]["n_cases"] == 12
    tested = [c for p in rec["predictions"] for c in p["case_id"]]
    assert sorted(tested) == sorted(set(cases))  # each case tested once, as one bag
    assert all(len(s.split(",")) == 2 for p in rec["predictions"] for s in p["slide_id"])


def test_single_slide_cases_keep_their_cached_clusters():
    from wsigraph.data.clusters import CLUSTER_KEY

    graphs, _ = cohort(3)
    for g in graphs:
        g[CLUSTER_KEY] = torch.where(g.level == 2, torch.arange(g.num_nodes) % 3, -1)
    bags, _, _ = patient_bags(graphs, ["a", "b", "c"])
    assert all(torch.equal(b[CLUSTER_KEY], g[CLUSTER_KEY][g.level == 2])
               for b, g in zip(bags, graphs, strict=True))  # fmt: skip
    bags, _, _ = patient_bags(graphs, ["a", "a", "c"])  # a two-slide case: clustered in the model
    assert all(getattr(b, CLUSTER_KEY, None) is None for b in bags)


def test_only_rows_that_read_cached_clusters_hash_them(tmp_path):
    """The official row (learned anchors) never reads per-slide cluster labels, so attaching them
    must not change its fold hashes (and re-run it); the per-slide-anchor row reads them."""
    from wsigraph.data.clusters import CLUSTER_KEY

    graphs, labels = cohort(16)
    clustered = []
    for g in graphs:
        h = g.clone()
        h[CLUSTER_KEY] = torch.where(h.level == 2, torch.arange(h.num_nodes) % 2, -1)
        clustered.append(h)
    hashes = {}
    for anchors in ("learned", "slide"):
        cfg = mico_train_config(dict(dim=8, n_clusters=2, anchors=anchors), 1, device="cpu")
        for name, gs in (("plain", graphs), ("clustered", clustered)):
            rec = run_mico_experiment(f"{anchors}_{name}", gs, "typing", cfg, tmp_path,
                                      labels=labels, folds=2, protocol=TINY)  # fmt: skip
            hashes[anchors, name] = rec["config_hashes"]
    assert hashes["learned", "plain"] == hashes["learned", "clustered"]
    assert hashes["slide", "plain"] != hashes["slide", "clustered"]
    assert all(getattr(g, CLUSTER_KEY, None) is not None for g in clustered)  # inputs untouched
