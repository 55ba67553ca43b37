"""The paper-table registry: typed-in numbers, lookups, run names, shared runs, rendering."""

from __future__ import annotations

import re
from collections import defaultdict

import pandas as pd
import pytest

from wsigraph import tables as T

PAPERS = {
    "H2-MIL": "000_d2f63223306d16ff.txt",
    "HIGT": "001_9dce4a7616eb1d99.txt",
}
H2MIL_ROWS = [
    "MIL-CNN",
    "MinMax",
    "MIL-RNN",
    "MS-DA-MIL",
    "DS-MIL",
    "PTree-Net",
    "GCN + IHPool",
    "GAT + IHPool",
    "HGAT + IHPool",
    "RAConv + GAP",
    "RAConv + TopK",
    "RAConv + SAGP",
    "H2-MIL",
]
HIGT_ROWS = ["ABMIL", "CLAM-SB", "DeepAttnMIL", "DS-MIL", "LA-MIL", "H2-MIL", "HIPT", "HIGT (Ours)"]


def value(table_id, row, dataset, task, metric):
    return T.get_row(table_id, row).paper[(dataset, task, metric)]


# Typed-in numbers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "table_id, row, dataset, task, metric, mean, std",
    [
        ("h2mil_table1", "H2-MIL", "esca", "typing", "auc", 96.40, 0.59),
        ("h2mil_table1", "MIL-CNN", "esca", "staging", "f1", 53.20, 2.82),
        ("h2mil_table1", "RAConv + GAP", "esca", "staging", "f1", 65.11, 5.03),
        ("h2mil_table1", "HGAT + IHPool", "esca", "staging", "auc", 72.14, 0.38),
        ("h2mil_table2", "MinMax", "kica", "typing", "acc", 92.76, 0.77),
        ("h2mil_table2", "H2-MIL", "kica", "staging", "auc", 69.16, 1.52),
        ("h2mil_table2", "RAConv + SAGP", "kica", "typing", "f1", 88.04, 1.67),
        ("h2mil_table3", "Thu. + Bot.", "kica", "typing", "auc", 96.13, None),
        ("h2mil_table3", "Thu. + Mid.", "esca", "staging", "auc", 70.98, None),
        ("h2mil_table4", "L = 4", "esca", "staging", "auc", 74.09, None),
        ("h2mil_table4", "L = 2", "kica", "staging", "auc", 68.18, None),
        ("higt_table1", "HIGT (Ours)", "esca", "staging", "auc", 71.11, 6.04),
        ("higt_table1", "HIGT (Ours)", "esca", "typing", "acc", 96.16, 2.85),
        ("higt_table1", "H2-MIL", "esca", "typing", "auc", 91.88, 4.17),
        ("higt_table2", "ABMIL", "kica", "typing", "acc", 98.86, 0.69),
        ("higt_table2", "HIPT", "kica", "staging", "acc", 75.34, 2.31),
        ("higt_table3", "H2-MIL + HIViT", "kica", "staging", "acc", 77.16, 3.29),
        ("higt_table3", "Ours w/o BI", "kica", "typing", "auc", 98.04, 8.30),
        ("higt_table3", "HIGT (Ours)", "kica", "typing", "acc", 97.90, 1.40),
    ],
)
def test_spot_checks(table_id, row, dataset, task, metric, mean, std):
    v = value(table_id, row, dataset, task, metric)
    assert (v.mean, v.std) == (mean, std)


def test_sources_quote_the_printed_row():
    assert (
        value("h2mil_table1", "MinMax", "esca", "typing", "acc").source
        == "H2-MIL Table 1, row 'MinMax', Typing ACC"
    )
    # Table 1 prints "RAConv+GAP", Table 2 "RAConv + GAP"; one canonical name for both.
    assert (
        "row 'RAConv+GAP'" in value("h2mil_table1", "RAConv + GAP", "esca", "typing", "acc").source
    )
    assert (
        "row 'RAConv + GAP'"
        in value("h2mil_table2", "RAConv + GAP", "kica", "typing", "acc").source
    )
    src = value("h2mil_table3", "Thu. + Bot.", "kica", "typing", "auc").source
    assert src == "H2-MIL Table 3, row 'Thu. + Bot.', KICA Typing AUC (mean only; no std printed)"
    assert "row 'Ours'" in value("higt_table2", "HIGT (Ours)", "kica", "typing", "auc").source
    assert "row 'ABMIL [9]'" in value("higt_table1", "ABMIL", "esca", "typing", "auc").source


CONTROLS = list(T.CONTROL_ROWS)


def paper_rows(table):
    """The rows the paper prints (every table also starts with our control rows)."""
    return [r for r in table.rows if r.group != "Control"]


def test_row_names_as_printed():
    for table in T.TABLES.values():  # every table starts with the controls, then the paper's
        assert table.row_names[: len(CONTROLS)] == CONTROLS
        assert {r.group for r in table.rows[: len(CONTROLS)]} == {"Control"}
        assert all(r.group != "Control" for r in table.rows[len(CONTROLS) :])
    names = {t: T.get_table(t).row_names[len(CONTROLS) :] for t in T.TABLES}
    assert names["h2mil_table1"] == H2MIL_ROWS
    assert names["h2mil_table2"] == H2MIL_ROWS
    assert names["h2mil_table3"] == [
        "Thu. + Mid.",
        "Thu. + Bot.",
        "Thu. + Mid. + Bot.",
    ]
    assert names["h2mil_table4"] == ["L = 1", "L = 2", "L = 3", "L = 4"]
    assert names["higt_table1"] == HIGT_ROWS
    assert names["higt_table2"] == HIGT_ROWS
    assert names["higt_table3"] == [
        "H2-MIL + HIViT",
        "Ours w/o SSA",
        "Ours w/o BI",
        "Ours w/o Fusion",
        "HIGT (Ours)",
    ]


@pytest.mark.parametrize("table_id", list(T.TABLES))
def test_every_cell_filled_from_the_paper(table_id):
    table = T.get_table(table_id)
    mean_only = table_id in ("h2mil_table3", "h2mil_table4")
    for row in table.rows:
        assert set(row.paper) == set(table.columns)
        if row.group == "Control":  # ours: no paper prints it
            assert all(v is None for v in row.paper.values()) and row.model == "slide-mean-lr"
            continue
        for cell, v in row.paper.items():
            assert 0 < v.mean <= 100, (row.name, cell)
            assert (v.std is None) == mean_only, (row.name, cell)
            assert v.source.startswith(f"{table.paper} Table {table.number}, row '{row.printed}'")


def _normalised(text: str) -> str:
    return re.sub(r"\s*±\s*", "±", re.sub(r"\s+", " ", text))


@pytest.mark.parametrize("table_id", list(T.TABLES))
def test_every_row_appears_verbatim_in_the_paper(table_id, shared_extra):
    """Each row, rebuilt from the registry's floats, is a line of the paper's text."""
    table = T.get_table(table_id)
    path = shared_extra(f"../papers/{PAPERS[table.paper]}")
    text = _normalised(path.read_text())
    for row in paper_rows(table):
        cells = [row.paper[c] for c in table.columns]
        numbers = " ".join(
            f"{v.mean:.2f}" if v.std is None else f"{v.mean:.2f}±{v.std:.2f}" for v in cells
        )
        assert f"{row.printed} {numbers}" in text, (table_id, row.name)


# Lookups and errors ---------------------------------------------------------------------


def test_misspelt_names_list_the_allowed_ones():
    with pytest.raises(ValueError) as e:
        T.get_row("h2mil_table1", "H2MIL")
    assert str(e.value) == "unknown row 'H2MIL' of h2mil_table1; rows: " + ", ".join(
        CONTROLS + H2MIL_ROWS
    )
    with pytest.raises(ValueError, match=r"unknown table 'h2mil_table5'; tables: h2mil_table1, "):
        T.get_table("h2mil_table5")
    with pytest.raises(ValueError, match=r"unknown row 'RAConv\+GAP' of h2mil_table1"):
        T.get_row("h2mil_table1", "RAConv+GAP")
    with pytest.raises(
        ValueError, match=r"unknown dataset 'kica' for h2mil_table1; datasets: esca"
    ):
        T.run_name("h2mil_table1", "H2-MIL", "kica", "typing")
    with pytest.raises(ValueError, match=r"unknown task 'grading'.*tasks: typing, staging"):
        T.run_name("h2mil_table3", "Thu. + Bot.", "esca", "grading")
    with pytest.raises(ValueError, match="unknown table"):
        T.implemented_runs(["h2mil"])


def test_run_names_are_unique_and_filesystem_safe():
    assert (
        T.run_name("h2mil_table1", "GCN + IHPool", "esca", "typing")
        == "h2mil_table1__gcn-ihpool__esca__typing"
    )
    names = [
        T.run_name(tid, row.name, d, t)
        for tid, table in T.TABLES.items()
        for row in table.rows
        for d in table.datasets
        for t in table.tasks
    ]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[a-z0-9_-]+", n) for n in names)


def test_models_and_configs():
    assert T.get_row("h2mil_table1", "H2-MIL").config == {
        "conv": "raconv",
        "pool": "ihpool",
        "levels": (0, 1, 2),
        "layers": 2,
    }
    assert T.get_row("h2mil_table2", "GAT + IHPool").config["conv"] == "gat"
    assert T.get_row("h2mil_table1", "RAConv + SAGP").config["pool"] == "sag"
    assert T.get_row("h2mil_table3", "Thu. + Bot.").config["levels"] == (0, 2)
    assert T.get_row("h2mil_table4", "L = 3").config["layers"] == 3
    # The published H2-MIL uses L = 1 for KICA staging (Table 4 and its text).
    h2mil = T.get_row("h2mil_table2", "H2-MIL")
    assert T.run_config(h2mil, "kica", "staging")["layers"] == 1
    assert T.run_config(h2mil, "kica", "typing")["layers"] == 2
    runs = T.implemented_runs()
    assert {(tid, row) for tid, row, _, _ in runs} >= {("h2mil_table4", "L = 4")}
    # Every row of every table runs.
    sota = {(tid, row) for tid, row, _, _ in runs if T.get_row(tid, row).group == "SOTA"}
    assert len(sota) == 2 * 6 + 2 * 7
    assert {(tid, row) for tid, row, _, _ in runs} == {
        (t.id, r.name) for t in T.TABLES.values() for r in t.rows
    }
    assert T.get_row("higt_table3", "Ours w/o BI").config == {"bidirectional": False}
    assert T.get_row("h2mil_table2", "MinMax").model == "minmax"
    assert T.get_row("higt_table1", "CLAM-SB").model == "clam-sb"
    # The transformers train at HIGT's lr on every profile; the key says so.
    hipt = T.get_row("higt_table2", "HIPT")
    assert hipt.train == {"lr": 5e-4} and T.get_row("higt_table2", "ABMIL").train == {}
    assert T.config_key(hipt, "kica", "typing") != T.config_key(
        T.Row(**{**hipt.__dict__, "train": {}}), "kica", "typing"
    )
    assert len(T.implemented_runs(["h2mil_table3"])) == (3 + len(CONTROLS)) * 2 * 2
    assert T.get_row("higt_table3", "LR on slide means (Mid.)").config == {"levels": (1,)}
    assert T.get_row("h2mil_table1", "LR on slide means (all levels)").config == {
        "levels": (0, 1, 2)
    }
    with pytest.raises(ValueError, match="no model"):
        T.config_key(T.Row("x", "SOTA", None, {}, {}), "esca", "typing")


def test_shared_runs_have_one_config_key():
    keys = defaultdict(list)
    for tid, row, d, t in T.implemented_runs():
        keys[T.config_key(T.get_row(tid, row), d, t)].append((tid, row, d, t))
    shared = sorted(sorted(group) for group in keys.values() if len(group) > 1)
    expected = []
    for d, t in [("esca", "typing"), ("esca", "staging"), ("kica", "typing"), ("kica", "staging")]:
        cohort = "h2mil_table1" if d == "esca" else "h2mil_table2"
        higt = "higt_table1" if d == "esca" else "higt_table2"
        setting = "L = 1" if (d, t) == ("kica", "staging") else "L = 2"
        expected.append(
            sorted(
                [
                    (cohort, "H2-MIL", d, t),
                    ("h2mil_table3", "Thu. + Mid. + Bot.", d, t),
                    ("h2mil_table4", setting, d, t),
                    (higt, "H2-MIL", d, t),
                ]
            )
        )
        expected.append(sorted([(cohort, "DS-MIL", d, t), (higt, "DS-MIL", d, t)]))
        if d == "kica":
            expected.append(
                sorted([(higt, "HIGT (Ours)", d, t), ("higt_table3", "HIGT (Ours)", d, t)])
            )
        # every control runs once per cell, whichever tables list it
        tables = [cohort, "h2mil_table3", "h2mil_table4", higt] + (
            ["higt_table3"] if d == "kica" else []
        )
        for name in CONTROLS:
            expected.append(sorted((tid, name, d, t) for tid in tables))
    assert shared == sorted(expected)
    # ... and the paper prints the same AUC for each shared run, which supports the choice.
    # (HIGT re-ran H2-MIL and DS-MIL on its own, larger cohorts, so only H2-MIL's tables agree.)
    for group in shared:
        if T.get_row(*group[0][:2]).group == "Control":  # ours: no paper value
            continue
        own = [(tid, row, d, t) for tid, row, d, t in group if tid.startswith("h2mil")]
        assert len({value(tid, row, d, t, "auc").mean for tid, row, d, t in own}) <= 1


def test_config_key_is_stable():
    row = T.get_row("h2mil_table1", "GCN + IHPool")
    assert T.config_key(row, "esca", "typing") == T.config_key(row, "esca", "typing")
    assert T.config_key(row, "esca", "typing") != T.config_key(row, "esca", "staging")
    assert re.fullmatch(r"[0-9a-f]{16}", T.config_key(row, "esca", "typing"))


# Rendering ------------------------------------------------------------------------------


def record(acc=0.9, auc=0.95, f1=0.88, std=0.01):
    return {
        "summary": {
            "acc": {"mean": acc, "std": std},
            "auc": {"mean": auc, "std": std},
            "f1": {"mean": f1, "std": std},
        }
    }


def test_render_puts_ours_beside_paper():
    records = {T.run_name("h2mil_table1", "H2-MIL", "esca", "typing"): record(auc=0.95)}
    df = T.render("h2mil_table1", records, label="ours (tcga)")
    assert list(df.columns[:5]) == [
        "group",
        "Method",
        "ESCA Typing ACC [ours (tcga)]",
        "ESCA Typing ACC [paper]",
        "ESCA Typing ACC [ours (tcga) - paper]",
    ]
    extra = df.attrs["extra_columns"]  # per cell: std over repeats; ACC and F1: official variant
    assert len(extra) == 6 + 4 and extra == list(df.columns[-len(extra) :])
    assert "ESCA Typing ACC [ours (tcga), official code's acc_thr]" in extra
    assert len(df.columns) == 2 + 6 * 3 + len(extra)
    assert df["Method"].tolist() == CONTROLS + H2MIL_ROWS
    assert (df.loc[df["group"] == "Control", "ESCA Typing AUC [paper]"] == "–").all()
    ours = df.set_index("Method").loc["H2-MIL"]
    assert ours["ESCA Typing AUC [ours (tcga)]"] == "95.00 ± 1.00"
    assert ours["ESCA Typing AUC [paper]"] == "96.40 ± 0.59"
    assert ours["ESCA Typing AUC [ours (tcga) - paper]"] == "-1.40"
    assert ours["ESCA Typing ACC [ours (tcga) - paper]"] == "-1.56"
    assert ours["ESCA Staging AUC [ours (tcga)]"] == T.NOT_RUN
    assert ours["ESCA Staging AUC [ours (tcga) - paper]"] == ""
    minmax = df.set_index("Method").loc["MinMax"]
    assert minmax["ESCA Typing ACC [paper]"] == "86.44 ± 2.69"
    assert minmax["ESCA Typing ACC [ours (tcga)]"] == T.NOT_RUN
    # Never a number where we have none: every unfilled "ours" and "diff" cell has no digit.
    ours_cols = [c for c in df.columns if "[ours (tcga)" in c]
    others = df[df["Method"] != "H2-MIL"][ours_cols]
    assert not others.apply(lambda s: s.str.contains(r"\d")).any().any()
    # Rows a profile's run set leaves out say so, rather than "not run yet".
    skipped = T.render("h2mil_table1", records, label="ours (demo)", skipped=["MinMax"])
    assert skipped.set_index("Method").loc["MinMax", "ESCA Typing AUC [ours (demo)]"] == (
        "not run on demo"
    )
    others = df[df["Method"] != "H2-MIL"][ours_cols]
    assert not others.apply(lambda s: s.str.contains(r"\d")).any().any()
    # Demo numbers are never subtracted from the paper's.
    demo = T.render("h2mil_table1", records, label="ours (demo)")
    assert not [c for c in demo.columns if "- paper]" in c]
    assert demo.set_index("Method").loc["H2-MIL", "ESCA Typing AUC [ours (demo)]"] == "95.00 ± 1.00"


def test_render_official_variants_and_repeat_std():
    rec = record(auc=0.9)
    rec["summary"] |= {
        "acc_thr": {"mean": 0.8, "std": 0.05},
        "f1_sens_spec": {"mean": 0.7, "std": 0.1},
        "auc_micro": {"mean": 0.85, "std": 0.02},
    }
    rec["summary"]["auc"]["std_repeats"] = 0.03
    key = T.run_name("h2mil_table1", "H2-MIL", "esca", "typing")
    row = T.render("h2mil_table1", {key: rec}).set_index("Method").loc["H2-MIL"]
    assert row["ESCA Typing ACC [ours (demo), official code's acc_thr]"] == "80.00 ± 5.00"
    assert row["ESCA Typing F1 [ours (demo), official code's f1_sens_spec]"] == "70.00 ± 10.00"
    assert row["ESCA Typing AUC [ours (demo), std over repeats]"] == "3.00"
    higt_key = T.run_name("higt_table1", "HIGT (Ours)", "esca", "typing")
    h = T.render("higt_table1", {higt_key: rec}).set_index("Method").loc["HIGT (Ours)"]
    assert h["ESCA Typing AUC [ours (demo), official code's auc_micro]"] == "85.00 ± 2.00"
    md = T.to_markdown(T.render("h2mil_table1", {key: rec}), T.get_table("h2mil_table1"))
    assert "official code's" not in md.split("\n\n", 1)[1]  # the CSV has them, not the grid
    assert "argmax" in md and "acc_thr, f1_sens_spec" in md


def test_render_reuses_shared_runs_and_flags_bad_records():
    key = T.run_name("h2mil_table1", "H2-MIL", "esca", "typing")
    df3 = T.render("h2mil_table3", {key: record(auc=0.97)}).set_index("Scheme")
    assert df3.loc["Thu. + Mid. + Bot.", "ESCA Typing AUC [ours (demo)]"] == "97.00 ± 1.00"
    assert "ESCA Typing AUC [ours (demo) - paper]" not in df3.columns
    assert df3.loc["Thu. + Bot.", "ESCA Typing AUC [ours (demo)]"] == T.NOT_RUN
    df4 = T.render("h2mil_table4", {key: record(auc=0.964)}, label="ours (tcga)")
    df4 = df4.set_index("Setting")
    assert df4.loc["L = 2", "ESCA Typing AUC [ours (tcga)]"] == "96.40 ± 1.00"
    assert df4.loc["L = 2", "ESCA Typing AUC [ours (tcga) - paper]"] == "+0.00"
    assert df4.loc["L = 1", "ESCA Typing AUC [ours (tcga)]"] == T.NOT_RUN
    # A record without a metric says so; a record in percent instead of fractions is refused.
    partial = {key: {"summary": {"auc": {"mean": 0.9, "std": 0.0}}}}
    df1 = T.render("h2mil_table1", partial).set_index("Method")
    assert df1.loc["H2-MIL", "ESCA Typing F1 [ours (demo)]"] == T.NOT_MEASURED

    with pytest.raises(ValueError, match="fraction"):
        T.render("h2mil_table1", {key: record(auc=95.0)})


def test_write_table(tmp_path):
    records = {T.run_name("h2mil_table2", "GCN + IHPool", "kica", "typing"): record(acc=0.92)}
    md, csv = T.write_table("h2mil_table2", records, tmp_path / "tables", label="ours (demo)")
    assert md == tmp_path / "tables" / "h2mil_table2.md"
    assert csv == tmp_path / "tables" / "h2mil_table2.csv"
    text = md.read_text()
    caption = text.splitlines()[0]
    assert "H2-MIL Table 2" in caption and "ours (demo)" in caption
    assert T.PAPER_NOTE in caption and "Demo numbers" in caption
    assert "| SOTA | MinMax | not run yet / 92.76 ± 0.77 | not run yet / " in text  # one cell each
    header = next(line for line in text.splitlines() if line.startswith("| group"))
    assert "KICA Typing ACC: ours (demo) / paper" in header and "[paper]" not in header
    assert "92.00 ± 1.00" in text and "+0.22" not in text  # no difference on demo numbers
    df = pd.read_csv(csv)  # numeric: one line per (row, cell), numbers in their own columns
    assert list(df.columns) == ["group", "Method", *T.NUMERIC_COLUMNS]
    gcn = df.set_index(["Method", "cell"]).loc[("GCN + IHPool", "KICA Typing ACC")]
    assert gcn["ours_mean"] == pytest.approx(92.0) and gcn["ours_std"] == pytest.approx(1.0)
    assert gcn["status"] == "measured" and gcn["official_variant"] == "acc_thr"
    paper = T.get_row("h2mil_table2", "GCN + IHPool").paper[("kica", "typing", "acc")]
    assert (gcn["paper_mean"], gcn["paper_std"]) == (paper.mean, paper.std)
    # the CSV holds the unrounded numbers, not the Markdown's two decimals read back
    precise = {T.run_name("h2mil_table2", "GCN + IHPool", "kica", "typing"): record(acc=0.923456)}
    fine = T.numeric(T.render("h2mil_table2", precise), "ours (demo)").set_index(["Method", "cell"])
    assert fine.loc[("GCN + IHPool", "KICA Typing ACC"), "ours_mean"] == pytest.approx(92.3456)
    with pytest.raises(ValueError, match="render"):
        T.numeric(pd.DataFrame({"group": [], "Method": []}), "ours (demo)")
    assert (
        df.set_index(["Method", "cell"]).loc[("MinMax", "KICA Typing ACC"), "status"] == T.NOT_RUN
    )
    assert len(df) == len(T.get_table("h2mil_table2").rows) * 6  # 2 tasks x 3 metrics
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == [
        "h2mil_table2.csv",
        "h2mil_table2.md",
    ]


def test_cell_values_and_the_ours_vs_paper_figure():
    import matplotlib.pyplot as plt

    from wsigraph.viz.tables import ours_vs_paper

    records = {T.run_name("higt_table2", "ABMIL", "kica", "typing"): record(auc=0.9, std=0.02)}
    values = T.cell_values("higt_table2", records, "kica", "typing", "auc")
    assert [row.name for row, _, _ in values] == T.get_table("higt_table2").row_names
    controls, values = values[: len(CONTROLS)], values[len(CONTROLS) :]
    assert all(paper is None and ours is None for _, ours, paper in controls)
    (abmil, ours, paper), *rest = values
    assert abmil.name == "ABMIL" and ours == pytest.approx((90.0, 2.0))
    assert paper.mean == 97.76 and all(o is None for _, o, _ in rest)
    with pytest.raises(ValueError, match="not 'f1'"):
        T.cell_values("higt_table2", records, "kica", "typing", "f1")
    fig, ax = plt.subplots()
    ours_vs_paper(ax, "higt_table2", records, "kica", "typing", "auc", "ours (tcga)", ("SOTA",))
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "ABMIL" and labels[-1] == "HIPT (not run)" and len(labels) == 7
    assert ax.get_legend() is not None
    plt.close(fig)
    # On demo: only the rows we ran, controls in their own colour, the control bound drawn.
    control = T.run_name("higt_table2", "LR on slide means (Bot.)", "kica", "typing")
    records[control] = record(auc=0.55, std=0.03)
    fig, ax = plt.subplots()
    ours_vs_paper(ax, "higt_table2", records, "kica", "typing")
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["LR on slide means (Bot.)", "ABMIL"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "ours (demo) (control)" in legend and "control bound" in legend
    plt.close(fig)


# Result tables (papers measured in their own notebooks) ---------------------------------


def test_nuclei_table2_numbers_are_in_the_paper_text(shared_extra):
    text = shared_extra("../papers/002_b59d840f0d0e8e64.txt").read_text()
    table = T.get_result_table("nuclei_table2")
    for row in table.rows:
        if row.group in ("Ablation", "Control"):  # our variant and control: no published number
            assert row.paper["bach"] is None and row.paper["gleason"] is None, row.name
            continue
        b, g = row.paper["bach"].mean, row.paper["gleason"].mean
        assert f"{row.name} {b:.0f}% {g:.0f}%" in text, row.name


def test_abignet_table_numbers():
    abig = T.get_result_table("abignet_table").rows[0].paper
    assert (abig["crc3"].mean, abig["crc3"].std) == (97.33, 1.15)
    assert abig["melanoma"].mean == 96.27


def test_render_results_beside_the_paper_and_errors(tmp_path):
    ours = {"RSF Based": {"bach": (0.8, 0.1)}, "RSF + Edge": {"gleason": (0.95, None)}}
    df = T.render_results("nuclei_table2", ours, label="ours (real)")
    first = df.set_index("Method").loc["RSF Based"]
    assert first["BACH ACC [ours (real)]"] == "80.00 ± 10.00"
    assert first["BACH ACC [paper]"] == "94.00"
    assert first["BACH ACC [ours (real) - paper]"] == "-14.00"
    assert first["Gleason ACC [ours (real)]"] == T.NOT_RUN
    edge = df.set_index("Method").loc["RSF + Edge"]
    assert (
        edge["Gleason ACC [ours (real)]"] == "95.00"
        and edge["Gleason ACC [ours (real) - paper]"] == "-2.00"
    )
    demo = T.render_results("nuclei_table2", ours, label="ours (demo)")
    assert not [c for c in demo.columns if "- paper]" in c]
    missing = T.render_results(
        "abignet_table", {"ABiG-Net, fixed k-NN graph": {"crc2": (1.0, 0.0)}}
    )
    assert missing.iloc[1]["Ext. CRC binary ACC [paper]"] == "–"  # no published value
    assert list(missing.columns[:2]) == ["group", "Method"]
    skipped = T.render_results(
        "abignet_table", {"ABiG-Net": {"crc2": (0.6, 0.1)}}, "ours (demo, 10 it.)",
        skipped=["ABiG-Net, fixed k-NN graph"],
    ).set_index("Method")  # fmt: skip
    col = "Ext. CRC binary ACC [ours (demo, 10 it.)]"
    assert skipped.loc["ABiG-Net, fixed k-NN graph", col] == "not run on demo"
    assert skipped.loc["ABiG-Net (orientation variant)", col] == T.NOT_RUN
    assert skipped.loc["ABiG-Net", col] == "60.00 ± 10.00"
    # a column that ran on something else than the paper's cohort says so in its header
    on = T.render_results(
        "abignet_table", {"ABiG-Net": {"crc2": (0.6, 0.1)}}, "ours (demo, 10 it.)",
        ran={"crc2": "synthetic crc2"},
    )  # fmt: skip
    heads = list(T.compact(on.drop(columns=[]), "ours (demo, 10 it.)").columns)
    assert "Ext. CRC binary ACC: ours (demo, 10 it.) on synthetic crc2 / paper" in heads
    assert "Melanoma ACC: ours (demo, 10 it.) / paper" in heads  # not named: unchanged
    with pytest.raises(ValueError, match="'ran' names unknown columns"):
        T.render_results("abignet_table", {}, ran={"camelyon": "x"})
    with pytest.raises(ValueError, match="unknown rows"):
        T.render_results("nuclei_table2", {"GCN": {}})
    with pytest.raises(ValueError, match="unknown columns"):
        T.render_results("nuclei_table2", {"RSF Based": {"camelyon": (0.5, 0.1)}})
    with pytest.raises(ValueError, match="not a fraction"):
        T.render_results("nuclei_table2", {"RSF Based": {"bach": (80.0, 1.0)}})
    with pytest.raises(ValueError, match="unknown result table"):
        T.get_result_table("nuclei_table9")
    md, csv = T.write_results_table("nuclei_table2", ours, tmp_path)
    assert "Nuclei-GCN Table II" in md.read_text() and "demo" in md.read_text()
    # numeric, one line per (row, dataset): 5 rows (3 paper rows, our variant, the control) x 2
    table = pd.read_csv(csv)
    assert table.shape == (10, 2 + len(T.NUMERIC_COLUMNS))
    rsf = table.set_index(["Method", "cell"]).loc[("RSF Based", "BACH ACC")]
    assert (rsf["ours_mean"], rsf["ours_std"], rsf["paper_mean"]) == (80.0, 10.0, 94.0)
    assert rsf["status"] == "measured" and pd.isna(rsf["paper_std"])
    assert table.set_index(["Method", "cell"]).loc[("RSF Based", "Gleason ACC"), "status"] == (
        T.NOT_RUN
    )
    md, csv = T.write_results_table(
        "nuclei_table2", {"RSF Based": {"bach": (0.8, 0.1, 5)}}, tmp_path
    )
    assert (
        pd.read_csv(csv).set_index(["Method", "cell"]).loc[("RSF Based", "BACH ACC"), "ours_n"] == 5
    )
    md, _ = T.write_results_table(
        "nuclei_table2", ours, tmp_path, demo_note="Demo task: arrangement only."
    )
    caption = md.read_text().split("\n\n")[0]
    assert (
        "values. Demo task: arrangement only. Paper caption:"
        in caption.replace("(no difference to the paper is computed). ", "values. ")
        or "computed). Demo task: arrangement only. Paper caption:" in caption
    )


def test_markdown_cells_are_compact_and_carry_the_difference_on_real_data():
    key = T.run_name("h2mil_table1", "H2-MIL", "esca", "typing")
    df = T.render("h2mil_table1", {key: record(auc=0.964)}, label="ours (tcga)")
    md = T.to_markdown(df, T.get_table("h2mil_table1"), "ours (tcga)")
    caption, grid = md.split("\n\n", 1)
    assert "Each cell reads `ours (tcga) / paper`" in caption and "ours − paper" in caption
    row = next(line for line in grid.splitlines() if "| H2-MIL |" in line)
    assert "| 96.40 ± 1.00 / 96.40 ± 0.59 (+0.00) |" in row
    header = grid.splitlines()[0]
    assert header.count("ours (tcga) / paper") == 6  # 2 tasks x 3 metrics, one column each


def test_orderings_need_a_gap_beyond_the_fold_spread():
    from wsigraph.tables import HOLDS, NOT_HOLD, WITHIN_STD, chain_ordering, ordering, tie

    assert ordering(97.7, 95.3, 2.3) == HOLDS and ordering(97.7, 95.3, 2.5) == WITHIN_STD
    assert ordering(95.3, 93.0, 4.6) == WITHIN_STD and ordering(93.0, 95.3) == NOT_HOLD
    assert ordering(90.0, 90.0) == NOT_HOLD  # equal means are no ordering
    # the chain is as strong as its weakest link
    assert chain_ordering([97.7, 95.3, 93.0], [2.2, 2.5, 4.6]) == WITHIN_STD
    assert chain_ordering([99.0, 95.0, 91.0], [1.0, 2.0, 1.5]) == HOLDS
    assert chain_ordering([97.7, 89.3, 92.7], [2.2, 14.8, 4.5]) == NOT_HOLD
    assert tie([97.0, 97.04, 96.96], [1.0, 1.0, 1.0]) == HOLDS
    assert tie([99.3, 99.3, 99.0], [0.9, 0.9, 1.5]) == WITHIN_STD
    assert tie([99.3, 94.0], [0.9, 1.5]) == NOT_HOLD
    with pytest.raises(ValueError, match="two or more rows"):
        chain_ordering([1.0], [0.1])
