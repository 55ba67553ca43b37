"""The MiCo demo cohort: controls fail, the co-occurrence is there, deterministic by seed."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from wsigraph.data.synthetic_mico import (
    DEMO_SPECS,
    TYPES,
    MiCoDemoSpec,
    mico_cohort,
    nearest_prototype_pairing,
    oracle_c_index,
    slide_means,
    tissue_map,
)
from wsigraph.train.mico import run_mean_pool_control
from wsigraph.train.survival import c_index

N = 160  # a moderately sized sample per column


@pytest.fixture(scope="module")
def cohorts():
    return {k: mico_cohort(s.resized(N)) for k, s in DEMO_SPECS.items()}


def test_pairing_is_balanced_and_shares_are_matched(cohorts):
    for name, (_, truth) in cohorts.items():
        combos = truth.groupby(["x_type", "y_type"]).size()
        assert len(combos) == 4 and combos.max() - combos.min() == 0, name
        n_x = np.where(truth["x_type"] == "A", truth["n_A"], truth["n_A'"])
        n_y = np.where(truth["y_type"] == "B", truth["n_B"], truth["n_B'"])
        assert np.abs(n_x - n_y).max() <= 1, name  # matched shares
        absent = np.where(truth["x_type"] == "A", truth["n_A'"], truth["n_A"])
        assert (absent == 0).all(), name  # one member of each pair per slide
        # the label is the XOR of the two choices, written out
        expect = (truth["x_type"] == "A'").astype(int) ^ (truth["y_type"] == "B'").astype(int)
        assert (truth["pairing"] == expect).all(), name
        # no single type's share tells the class apart (same mean count per class)
        for t in TYPES:  # class means within 4 standard errors (no design difference)
            g = truth.groupby("pairing")[f"n_{t}"]
            se = np.sqrt((g.var() / g.size()).sum())
            assert abs(g.mean()[0] - g.mean()[1]) <= 4 * se + 1e-9, (name, t)
        for a, b in (("A", "A'"), ("B", "B'")):  # the pair's total is the same in both classes
            total = truth[f"n_{a}"] + truth[f"n_{b}"]
            g = total.groupby(truth["pairing"])
            assert abs(g.mean()[0] - g.mean()[1]) <= 4 * np.sqrt((g.var() / g.size()).sum())


def test_informative_types_lie_in_distant_regions(cohorts):
    spec = DEMO_SPECS["nsclc"]
    _, truth = cohorts["nsclc"]
    for i in range(10):
        kind = tissue_map(spec.resized(N), i)
        for t in (truth.iloc[i]["x_type"], truth.iloc[i]["y_type"]):
            cells = np.argwhere(kind == TYPES.index(t))
            assert len(cells) == truth.iloc[i][f"n_{t}"]
            assert np.ptp(cells, axis=0).max() >= spec.grid[0] // 2, (i, t)  # not one region


def test_slide_mean_control_fails_on_subtyping(cohorts):
    for name in ("nsclc", "brca"):
        graphs, truth = cohorts[name]
        y = truth["pairing"].to_numpy()
        prob = cross_val_predict(
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
            slide_means(graphs), y, cv=StratifiedKFold(4, shuffle=True, random_state=0),
            method="predict_proba",
        )[:, 1]  # fmt: skip
        assert roc_auc_score(y, prob) <= 0.65, name


def test_controls_stay_within_bounds_under_the_mico_folds(cohorts, tmp_path):
    graphs, truth = cohorts["nsclc"]
    rec = run_mean_pool_control("c1", graphs, "typing", tmp_path, labels=truth["pairing"])
    assert rec["summary"]["auc"]["mean"] <= 0.65 and rec["summary"]["auc"]["n"] == 4
    graphs, truth = cohorts["kirp"]
    rec = run_mean_pool_control(
        "c2", graphs, "survival", tmp_path, times=truth["time"], censorship=truth["censorship"]
    )
    assert rec["summary"]["c_index"]["mean"] <= 0.60
    assert (tmp_path / "c2.json").exists()


def test_oracle_separates_classes_and_orders_hazards(cohorts):
    for name in ("nsclc", "brca"):
        graphs, truth = cohorts[name]
        # reading co-occurrence from the patches (nearest prototype, per slide) recovers it
        acc = (nearest_prototype_pairing(graphs, DEMO_SPECS[name]) == truth["pairing"]).mean()
        assert acc >= 0.9, name
    graphs, truth = cohorts["kirp"]
    assert c_index(truth["time"], truth["signal"], truth["censorship"]) >= 0.65
    assert c_index(truth["time"], truth["pairing"], truth["censorship"]) >= 0.6
    assert 0.2 <= truth["censorship"].mean() <= 0.6


def test_oracle_c_index_is_the_true_hazards_c_index(cohorts):
    _, truth = cohorts["kirp"]
    # written out: Harrell's c of the true log-hazard, pooled and on two folds of slide ids
    t, r, c = (truth[k].to_numpy() for k in ("time", "signal", "censorship"))
    num = den = 0.0
    for i in range(len(t)):
        if c[i]:
            continue  # a censored case starts no comparable pair
        later = t > t[i]
        den += later.sum()
        num += (r[i] > r[later]).sum() + 0.5 * (r[i] == r[later]).sum()
    folds = [list(truth["slide_id"][:80]), [f"{s},x" for s in truth["slide_id"][80:]]]
    pooled, per_fold = oracle_c_index(truth, folds)
    assert pooled == pytest.approx(num / den)
    assert per_fold[0] == pytest.approx(c_index(t[:80], r[:80], c[:80]))
    assert per_fold[1] == pytest.approx(c_index(t[80:], r[80:], c[80:]))
    with pytest.raises(ValueError, match="survival column"):
        oracle_c_index(cohorts["nsclc"][1])
    with pytest.raises(ValueError, match="nope"):
        oracle_c_index(truth, [["nope"]])


def test_subtyping_columns_differ_only_by_seed():
    # equal difficulty: the BRCA column is an independent draw of the NSCLC column's settings
    a, b = DEMO_SPECS["nsclc"], DEMO_SPECS["brca"]
    assert replace(b, name=a.name, seed=a.seed) == a and a.seed != b.seed


def test_deterministic_by_seed():
    spec = DEMO_SPECS["brca"].resized(8)
    (g1, t1), (g2, t2) = mico_cohort(spec), mico_cohort(spec)
    assert all(
        torch.equal(a.x, b.x) and torch.equal(a.grid, b.grid) for a, b in zip(g1, g2, strict=True)
    )
    assert t1.equals(t2)
    g3, _ = mico_cohort(replace(spec, seed=spec.seed + 1))
    assert not torch.equal(g1[0].x, g3[0].x)


def test_graphs_are_pyramids_the_models_read(cohorts):
    graphs, truth = cohorts["brca"]
    g = graphs[0]
    rows, cols = DEMO_SPECS["brca"].grid
    assert int((g.level == 2).sum()) == rows * cols and int((g.level == 0).sum()) == 1
    # a 5x node is the mean of its four 10x children
    kids = g.parent == 1
    assert torch.allclose(g.x[kids].mean(0), g.x[1], atol=1e-5)
    assert int(g.y_typing) == int(truth.iloc[0]["pairing"])


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(task="grading"), "task"),
        (dict(n_slides=3), "n_slides"),
        (dict(share=(0.2, 0.3)), "share"),
        (dict(grid=(7, 8)), "grid"),
    ],
)
def test_bad_spec_names_the_item(bad, match):
    with pytest.raises(ValueError, match=match):
        MiCoDemoSpec("x", **bad)


def _flat_bags(x):
    from torch_geometric.data import Data

    return [
        Data(x=torch.as_tensor(v, dtype=torch.float32), level=torch.full((len(v),), 2),
             slide_id=f"s{i:03d}")
        for i, v in enumerate(x)
    ]  # fmt: skip


def test_control_tests_on_held_out_cases_only(tmp_path):
    # 64-d noise and random labels: a model fitted on its test cases would score far above
    # chance in-sample; held out, the control stays near 0.5
    rng = np.random.default_rng(0)
    graphs = _flat_bags(rng.normal(size=(80, 3, 64)))
    y = rng.permutation(np.arange(80) % 2)
    rec = run_mean_pool_control("noise", graphs, "typing", tmp_path, labels=y)
    assert rec["summary"]["auc"]["mean"] < 0.75
    # the test folds are MiCo's (case_splits with the same folds and seed), each case once
    from wsigraph.train.mico import OFFICIAL, case_splits

    splits = case_splits([g.slide_id for g in graphs], y, 4, OFFICIAL.val_fraction, 0)
    tested = [p["slide_id"] for p in rec["predictions"]]
    assert tested == [[graphs[i].slide_id for i in s.test] for s in splits]


def test_cox_control_reads_a_linear_signal(tmp_path):
    # a hazard linear in the slide mean: the Cox control must find it (it is not just noise)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 4, 6))
    signal = x.mean(1)[:, 0] * 2.0
    from wsigraph.train.survival import synthetic_survival

    surv = synthetic_survival(signal, seed=0, beta=1.5)
    rec = run_mean_pool_control("lin", _flat_bags(x), "survival", tmp_path,
                                times=surv["time"], censorship=surv["censorship"])  # fmt: skip
    assert rec["summary"]["c_index"]["mean"] >= 0.65
