"""Survival labels, NLL loss, c-index, the TCGA-CDR reader, synthetic survival, the CV runner
and the Kaplan-Meier figure (wsigraph.train.survival, wsigraph.viz.survival)."""

import json
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from wsigraph.graphs.pyramid import pyramid_graph
from wsigraph.train.loop import TrainConfig
from wsigraph.train.survival import (
    c_index,
    nll_loss,
    pooled_predictions,
    read_cdr_survival,
    risk_scores,
    run_survival_experiment,
    survival_bins,
    survival_loss,
    synthetic_survival,
)

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("one_thread")
LOG2 = math.log(2.0)


def test_bins_are_quantiles_of_the_uncensored_times():
    t = np.arange(1.0, 9.0)  # 1..8
    c = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    bins, edges = survival_bins(t, c, n_bins=2)
    # uncensored 1..4: median 2.5; outer edges widened to the observed min / max
    assert edges == pytest.approx([1 - 1e-6, 2.5, 8 + 1e-6])
    assert bins.tolist() == [0, 0, 1, 1, 1, 1, 1, 1]


def test_bins_reject_bad_input():
    with pytest.raises(ValueError, match="censorship"):
        survival_bins([1.0, 2.0], [0, 2])
    with pytest.raises(ValueError, match=">= 0"):
        survival_bins([-1.0, 2.0], [0, 0])
    with pytest.raises(ValueError, match="distinct uncensored"):
        survival_bins([1.0, 2.0, 3.0], [0, 1, 1], n_bins=2)


def test_nll_loss_matches_hand_computed_values():
    hazards = torch.full((4, 2), 0.5)  # S = [0.5, 0.25]
    y = torch.tensor([0, 0, 1, 1])
    c = torch.tensor([0, 1, 0, 1])
    # rows: -(log1 + log.5), -log.5, -(log.5 + log.5), -log.25
    assert float(nll_loss(hazards, None, y, c)) == pytest.approx(1.5 * LOG2)
    # alpha = 0.4: 0.6 * (all) + 0.4 * (uncensored only) -> (1 + .6 + 2 + 1.2) / 4 log 2
    assert float(nll_loss(hazards, None, y, c, alpha=0.4)) == pytest.approx(1.2 * LOG2)
    logits = torch.zeros(4, 2, requires_grad=True)  # sigmoid(0) = 0.5
    loss = survival_loss(logits, y, c)
    assert float(loss.detach()) == pytest.approx(1.5 * LOG2)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_risk_is_minus_the_sum_of_survival():
    logits = torch.zeros(1, 2)  # S = [0.5, 0.25]
    assert float(risk_scores(logits)) == pytest.approx(-0.75)


def test_c_index_hand_computed():
    t = [1.0, 2.0, 3.0]
    assert c_index(t, [3, 2, 1], [0, 0, 0]) == pytest.approx(1.0)
    assert c_index(t, [1, 2, 3], [0, 0, 0]) == pytest.approx(0.0)
    # the first case is censored first: only the pair (2, 3) is comparable
    assert c_index(t, [0, 2, 1], [1, 0, 0]) == pytest.approx(1.0)
    assert c_index(t, [0, 1, 1], [1, 0, 0]) == pytest.approx(0.5)  # tied risks count 1/2
    # 4 cases, pairs (1,2) (1,3) (1,4) (2,3) (2,4) [3 censored before 4 -> (3,4) not comparable]
    t4, c4, r4 = [1.0, 2.0, 3.0, 4.0], [0, 0, 1, 0], [4.0, 1.0, 2.0, 3.0]
    # concordant: (1,2) (1,3) (1,4); discordant: (2,3) (2,4) -> 3 / 5
    assert c_index(t4, r4, c4) == pytest.approx(0.6)
    assert math.isnan(c_index(t, [1, 2, 3], [1, 1, 1]))


def test_cdr_reader_on_the_shared_table(real_data):
    path = real_data / "clinical" / "tcga_cdr_esca_kich_kirp_kirc.csv"
    esca = read_cdr_survival(path, ["ESCA"])
    # MANIFEST.md: ESCA 185 patients, OS 0: 108, 1: 77
    assert len(esca) == 185
    assert esca["censorship"].value_counts().to_dict() == {1: 108, 0: 77}
    row = esca.set_index("case_id").loc["TCGA-2H-A9GF"]  # Dead, OS.time 784 days
    assert row["censorship"] == 0 and row["time"] == pytest.approx(784 / 30.4375)
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    usable = pd.to_numeric(raw["OS.time"], errors="coerce").notna() & raw["OS"].isin(["0", "1"])
    every = read_cdr_survival(path)
    assert len(every) == int(usable.sum()) and set(every["type"]) == {
        "ESCA",
        "KICH",
        "KIRP",
        "KIRC",
    }
    assert (every["time"] >= 0).all()


def test_synthetic_survival_is_seeded_and_driven_by_the_signal():
    signal = np.repeat([0.0, 1.0], 400)
    a, b = synthetic_survival(signal, seed=3), synthetic_survival(signal, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(synthetic_survival(signal, seed=4))
    assert a["event_time"][signal == 1].median() < 0.5 * a["event_time"][signal == 0].median()
    assert ((a["censorship"] == 1) == (a["censor_time"] < a["event_time"])).all()
    assert 0.1 < a["censorship"].mean() < 0.7


def _graph(seed: int, n: int, signal: float):
    g = torch.Generator().manual_seed(seed)
    level = [0] + [1] * n + [2] * (2 * n)
    parent = [-1] + [0] * n + [1 + i // 2 for i in range(2 * n)]
    row = [0] + [0] * n + [i % 2 for i in range(2 * n)]
    col = [0] + list(range(n)) + [i // 2 * 2 + i % 2 for i in range(2 * n)]
    x = torch.randn(len(level), 4, generator=g)
    x[:, 0] += signal
    data = pyramid_graph(x, np.array(level), np.array(row), np.array(col), np.array(parent))
    data.slide_id = f"s{seed:02d}"
    return data


def test_survival_cv_runner_end_to_end_and_resumes(tmp_path):
    signal = np.repeat([0.0, 1.0], 10)
    graphs = [_graph(i, 2 + i % 3, 2.0 * s) for i, s in enumerate(signal)]
    surv = synthetic_survival(signal, seed=0, beta=2.0)
    cfg = TrainConfig("abmil", epochs=2, batch_size=4, lr=1e-3, seed=0)
    rec = run_survival_experiment(
        "surv_abmil", graphs, surv["time"], surv["censorship"], cfg, tmp_path, 2, 1,
        n_bins=2, progress=False, meta={"table": "t", "row": "ABMIL"},
    )  # fmt: skip
    assert [f["metric"] for f in rec["folds"]] == ["c_index", "c_index"]
    assert all(0.0 <= f["value"] <= 1.0 for f in rec["folds"])
    mean = np.mean([f["value"] for f in rec["folds"]])
    assert rec["summary"]["c_index"]["mean"] == pytest.approx(mean)
    assert rec["cv"]["n_slides"] == 20 and sum(rec["cv"]["bin_counts"]) == 20
    stored = json.loads((tmp_path / "surv_abmil.json").read_text())
    assert stored["summary"] == rec["summary"]
    assert (tmp_path / "surv_abmil" / "fold_r0_f0.json").exists()
    again = run_survival_experiment(
        "surv_abmil", graphs, surv["time"], surv["censorship"], cfg, tmp_path, 2, 1,
        n_bins=2, progress=False,
    )  # fmt: skip
    assert all(d["reused"] for d in again["fold_details"])
    assert again["summary"] == rec["summary"]
    pooled = pooled_predictions(again)
    assert sorted(pooled["slide_id"]) == sorted(g.slide_id for g in graphs)
    assert set(pooled["high_risk"]) <= {0, 1}


def test_survival_runner_rejects_mismatched_input(tmp_path):
    graphs = [_graph(i, 2, 0.0) for i in range(4)]
    with pytest.raises(ValueError, match="survival times"):
        run_survival_experiment(
            "x", graphs, [1.0, 2.0], [0, 0], TrainConfig("abmil"), tmp_path, 2, 1
        )


def test_km_figure_separates_risk_groups():
    from wsigraph.viz.survival import km_figure

    rng = np.random.default_rng(0)
    high = np.repeat([0, 1], 40)
    df = pd.DataFrame(
        {
            "time": rng.exponential(np.where(high == 1, 5.0, 50.0)),
            "censorship": (rng.random(80) < 0.2).astype(int),
            "high_risk": high,
        }
    )
    fig, p = km_figure({"separated": df, "shuffled": df.assign(high_risk=rng.permutation(high))})
    assert len([ax for ax in fig.axes if ax.get_visible() and ax.lines]) == 2
    assert p["separated"] < 1e-4 and p["shuffled"] > p["separated"]
    assert "log-rank p" in fig.axes[0].get_title()
    # lifelines' at-risk table sits under each panel: a twin axis whose first tick lists each
    # group's cases at risk at time 0 (all 40) and its events so far (0)
    fig.canvas.draw()
    tables = [
        ax
        for ax in fig.axes
        if ax.get_xticklabels() and "At risk" in ax.get_xticklabels()[0].get_text()
    ]
    assert len(tables) == 2
    first = tables[0].get_xticklabels()[0].get_text()
    assert first.count("At risk   40") == 2 and first.count("Events     0") == 2


def test_cohort_survival_demo_and_tcga(real_data):
    from wsigraph.profiles import get_profile
    from wsigraph.train.survival import cohort_survival

    manifest = pd.DataFrame(
        {
            "slide_id": ["a", "b", "c", "d"],
            "dataset": ["kica", "kica", "kica", "esca"],
            "staging": [0, 1, -1, 0],
            "case_id": ["TCGA-2H-A9GF", "x", "y", "TCGA-2H-A9GG"],
        }
    )
    demo = cohort_survival(get_profile("demo"), manifest, "kica", seed=1)
    assert demo["slide_id"].tolist() == ["a", "b"]  # the unstaged slide has no signal
    pd.testing.assert_frame_equal(
        demo, cohort_survival(get_profile("demo"), manifest, "kica", seed=1)
    )
    tcga = cohort_survival(get_profile("tcga"), manifest, "esca")
    assert tcga["slide_id"].tolist() == ["d"] and tcga["censorship"].tolist() == [0]
    with pytest.raises(ValueError, match="no slide"):
        cohort_survival(get_profile("demo"), manifest, "brca")


def test_nll_loss_per_case_by_hand():
    """One case at a time, with unequal hazards h = (0.2, 0.25), S = (0.8, 0.6): an event in
    bin y costs -log(S_{y-1} h_y), a case censored in bin y costs -log S_y (it survived bin y).
    Uniform hazards of 0.5 cannot tell these apart (-log(S_{y-1} h_y) = -log S_y then)."""
    import math

    import torch

    from wsigraph.train.survival import nll_loss

    hazards = torch.tensor([[0.2, 0.25]], dtype=torch.float64)

    def one(y, c, alpha=0.0, h=hazards):
        return float(nll_loss(h, None, torch.tensor([y]), torch.tensor([c]), alpha=alpha))

    assert one(0, 0) == pytest.approx(-math.log(0.2))  # died in bin 0
    assert one(0, 1) == pytest.approx(-math.log(0.8))  # censored in bin 0: survived it
    assert one(1, 0) == pytest.approx(-math.log(0.8 * 0.25))  # survived bin 0, died in bin 1
    assert one(1, 1) == pytest.approx(-math.log(0.6))  # survived both
    # alpha re-weights only the event term: censored cases get (1 - alpha) of theirs
    assert one(1, 0, alpha=0.4) == pytest.approx(-math.log(0.8 * 0.25))
    assert one(1, 1, alpha=0.4) == pytest.approx(-0.6 * math.log(0.6))
    # what happens after a case's bin does not matter; a death gets likelier with h_y
    later = torch.tensor([[0.2, 0.9]], dtype=torch.float64)
    assert one(0, 1, h=later) == pytest.approx(one(0, 1))
    assert one(0, 0, h=later) == pytest.approx(one(0, 0))
    assert one(1, 0, h=later) < one(1, 0)
    # the batch loss is the mean of the cases'
    batch = nll_loss(
        hazards.expand(4, 2), None, torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    )
    assert float(batch) == pytest.approx((one(0, 0) + one(0, 1) + one(1, 0) + one(1, 1)) / 4)
