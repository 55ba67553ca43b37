"""06_figures' "What the demo shows": the demo slide's ground truth, the heat against it, and the
sentences written from the numbers."""

from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from wsigraph import tables as T
from wsigraph.data import synthetic as S
from wsigraph.viz.interpret import heat_on_signal


def _row(spec: S.SlideSpec) -> dict:
    """A manifest row as make_demo_cohort writes it (gen_ columns; read_manifest gives floats)."""
    hidden = {k: v for k, v in asdict(spec).items() if k not in ("slide_id", "dataset")}
    row = {"slide_id": spec.slide_id, "dataset": spec.dataset}
    row |= {k: float(v) for k, v in hidden.items() if k in ("typing", "staging")}
    row |= {f"gen_{k}": v if isinstance(v, str) else float(v) for k, v in hidden.items()
            if k not in ("typing", "staging")}  # fmt: skip
    row["gen_pen"] = spec.pen or np.nan  # an empty pen reads back as NaN from the CSV
    return row


def test_spec_of_rebuilds_the_spec_and_signal_cells_finds_the_textured_cells():
    spec = S.slide_specs("esca", 3, 1, 1, seed=4)[2]
    assert S.spec_of(pd.Series(_row(spec))) == spec
    assert S.spec_of(_row(spec)) == spec
    with pytest.raises(ValueError, match="not a demo slide"):
        S.spec_of({"slide_id": "x", "dataset": "esca", "typing": 0, "staging": 0})
    lay = S.slide_layout(spec)
    i, j = np.indices(lay.kind.shape)
    centres = np.stack([(j.ravel() + 0.5) * spec.cell, (i.ravel() + 0.5) * spec.cell], 1)
    for task, truth in (("typing", lay.textured), ("staging", lay.reactive)):
        got = S.signal_cells(spec, task, centres)
        assert got.sum() == truth.sum() > 0
        np.testing.assert_array_equal(got, truth.ravel())
    off = S.signal_cells(spec, "typing", np.array([[-5.0, 10.0], [1e6, 1e6]]))
    assert not off.any()
    with pytest.raises(ValueError, match="unknown demo task"):
        S.signal_cells(spec, "grade", centres)


def test_heat_on_signal():
    signal = np.array([True, False, False, False])
    exact = heat_on_signal(signal.astype(float), signal)
    assert exact == {"patch_share": 0.25, "heat_share": 1.0, "auc": 1.0}
    flat = heat_on_signal(np.ones(4), signal)
    assert flat["heat_share"] == flat["patch_share"] and flat["auc"] == 0.5
    assert np.isnan(heat_on_signal(np.ones(4), np.zeros(4, bool))["auc"])
    with pytest.raises(ValueError, match="shape"):
        heat_on_signal(np.ones(3), signal)


def _fig3(heat_share: float, auc: float) -> pd.DataFrame:
    return pd.DataFrame(
        {"dataset": "esca", "task": "staging", "label": [0, 1, 1, 0], "prob": [0.1, 0.9, 0.8, 0.7],
         "patch_share": 0.125, "heat_share": heat_share, "auc": [auc, auc, auc, auc]}
    )  # fmt: skip


def _curves(best_epochs, reach: bool) -> dict:
    history = [{"epoch": e, "val_auc": (0.97 if reach and e >= 3 else 0.6)} for e in range(1, 6)]
    return {"fold_details": [{"best_epoch": b, "history": history} for b in best_epochs]}


def test_figure_findings_are_written_from_the_numbers():
    text = T.figure_findings(fig3=_fig3(0.6, 0.9))
    assert "40" not in text and "4 held-out slides" in text and "classifies 75%" in text
    assert "points at them" in text and "60% of the fitness heat" in text
    assert "does not point at them" in T.figure_findings(fig3=_fig3(0.1, 0.4))

    costs = pd.DataFrame(
        {"peak_bytes": [10 * 2**20, 20 * 2**20, 5 * 2**20, 1], "model_mb": [1.0, 2.0, 3.0, 0.0]},
        index=["HIGT (Ours)", "H2-MIL", "ABMIL", "LR on slide means (Thu.)"],
    )
    text = T.figure_findings(costs=costs, cost_auc={"HIGT (Ours)": 99.0, "H2-MIL": 99.5})
    assert "peak memory 10.0 MB, below 1 of 2 published methods (not below ABMIL)" in text
    assert (
        "cheaper on both counts than H2-MIL" in text and "holds here against H2-MIL (99.5)" in text
    )
    worse = T.figure_findings(costs=costs, cost_auc={"HIGT (Ours)": 90.0, "H2-MIL": 99.5})
    assert "holds here against none of them" in worse
    unrun = T.figure_findings(costs=costs, cost_auc={"HIGT (Ours)": 99.0})  # H2-MIL not run
    assert "H2-MIL did not run on this profile" in unrun and "holds here" not in unrun
    # ABMIL alone: less memory than HIGT, a larger model, so neither is cheaper on both counts
    assert "does not show at this scale" in T.figure_findings(costs=costs.drop(index="H2-MIL"))

    curves = [("H2-MIL", "esca", "typing", _curves([5, 5, 2], True)),
              ("H2-MIL", "kica", "typing", _curves([3], False))]  # fmt: skip
    text = T.figure_findings(curves=curves)
    assert "reaches 0.95 at epoch 3–3 (never in KICA typing)" in text
    assert "2 of 4 folds keep the model of their last epoch" in text
    assert T.first_epoch_reaching(_curves([5], True)) == 3
    assert T.first_epoch_reaching(_curves([5], False)) is None
    assert T.first_epoch_reaching({}) is None
    assert T.figure_findings() == "*No figure numbers yet.*\n"
