"""run_all.sh's driver and notebooks 01-03 executed under papermill with tiny parameters."""

import json
import os
import time

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from wsigraph import pipeline
from wsigraph.data.cohort import read_manifest
from wsigraph.graphs.pyramid import load_graph
from wsigraph.pipeline import NOISE_LINES, strip_noise
from wsigraph.profiles import REPO_ROOT


@pytest.mark.parametrize(
    "text, value",
    [
        ("3", 3),
        ("0.5", 0.5),
        ("true", True),
        ("None", None),
        ("[768, 512]", [768, 512]),
        ("kimianet", "kimianet"),
    ],
)
def test_parse_value(text, value):
    assert pipeline.parse_value(text) == value


def _notebook(path, body, params="profile = 'demo'\nx = 1"):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "wsigraph",
        "display_name": "wsigraph",
        "language": "python",
    }
    cell = new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, new_code_cell(body)]
    nbformat.write(nb, path)


@pytest.fixture
def fake_notebooks(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    monkeypatch.setattr(pipeline, "NOTEBOOKS_DIR", nbdir)
    monkeypatch.setenv("WSIGRAPH_RESULTS", str(tmp_path / "results"))
    return nbdir


def test_unknown_parameter_is_refused_with_the_allowed_names(fake_notebooks, capsys):
    _notebook(fake_notebooks / "01_a.ipynb", "pass")
    assert pipeline.main(["-p", "epoch", "3"]) == 2
    err = capsys.readouterr().err
    assert "epoch" in err and "profile, x" in err


def test_list_and_unknown_notebook(fake_notebooks, capsys):
    _notebook(fake_notebooks / "01_a.ipynb", "pass")
    assert pipeline.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "01_a:\n  profile='demo'\n  x=1\n" in out
    with pytest.raises(SystemExit, match="no notebook 07"):
        pipeline.main(["--only", "07"])


TYPED = (
    "profile = 'demo'\nx = 1\nr = 0.5\nflag = False\nnames = ['a']\nopts = {'a': 1}\n"
    "folds = None\nanything = None\nexpr = list(range(2))"
)


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("x", "abc", "expects a whole number for x (default 1), got the string 'abc'"),
        ("x", "2.5", "expects a whole number for x (default 1), got the number 2.5"),
        ("x", "true", "expects a whole number for x (default 1), got true"),
        ("x", "none", "expects a whole number for x (default 1), got none"),
        ("r", "fast", "expects a number for r (default 0.5), got the string 'fast'"),
        ("flag", "1", "expects true or false for flag (default False), got the whole number 1"),
        ("names", "a", "expects a list (JSON, e.g. [1, 2]) for names (default ['a'])"),
        ("opts", "[1]", "expects a dict"),
        ("profile", "3", "expects a string for profile (default 'demo'), got the whole number 3"),
        ("folds", "two", "expects None (the profile's value) or a whole number for folds"),
        ("folds", "1", "folds must be at least 2 (notebook 01_a), got 1"),
    ],
)
def test_bad_values_are_refused_before_any_notebook_runs(
    fake_notebooks, tmp_path, capsys, name, text, expected
):
    _notebook(fake_notebooks / "01_a.ipynb", "open('ran', 'w')", params=TYPED)
    assert pipeline.main(["-p", name, text]) == 2
    err = capsys.readouterr().err
    assert f"run_all: -p {name} {text}: " in err and expected in err and "notebook 01_a" in err
    assert "nothing was run" in err and not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "name, text",
    [("x", "2"), ("r", "2"), ("r", "1e-3"), ("flag", "true"), ("names", '["b", "c"]'),
     ("opts", '{"b": 2}'), ("folds", "3"), ("folds", "none"), ("anything", "abc"),
     ("anything", "[1]"), ("expr", "3")],
)  # fmt: skip
def test_good_values_pass_the_check(fake_notebooks, capsys, name, text):
    _notebook(fake_notebooks / "01_a.ipynb", "pass", params=TYPED)
    assert pipeline.main(["-p", name, text, "--check"]) == 0
    assert "the -p values suit 01_a" in capsys.readouterr().out


def test_the_real_notebooks_refuse_bad_values_up_front(capsys):
    assert pipeline.main(["-p", "n_slides", "abc", "--check"]) == 2
    err = capsys.readouterr().err
    assert "-p n_slides abc: notebook 01_cohort expects None (the profile's value) or a " in err
    assert "whole number for n_slides (default None), got the string 'abc'" in err
    assert pipeline.main(["-p", "slide_size", "[100,100]", "--check"]) == 2
    err = capsys.readouterr().err
    assert "slide_size [100, 100] is too small: each side must be at least 256 px" in err
    args = ["-p", "slide_size", "[256, 256]", "-p", "patch_size", "128", "--check"]
    assert pipeline.main(args) == 2  # 128 px patches at 5x need 512 px
    assert "at least 512 px, one 128 px patch at 5x" in capsys.readouterr().err
    assert pipeline.main([*TINY, *ONE_RUN, *QUICK, "--check"]) == 0


def test_every_none_default_of_the_notebooks_has_a_type():
    """A parameter whose default is None needs its type in NONE_DEFAULT_TYPES."""
    untyped = {
        f"{nb.stem}: {name}"
        for nb in pipeline.notebooks()
        for name, default in pipeline.declared_parameters(nb).items()
        if default is None and name not in pipeline.NONE_DEFAULT_TYPES
    }
    assert not untyped, f"add these to wsigraph.pipeline.NONE_DEFAULT_TYPES: {sorted(untyped)}"


@pytest.mark.slow
def test_failing_notebook_stops_the_run_and_is_named(fake_notebooks, tmp_path, capsys):
    _notebook(fake_notebooks / "01_ok.ipynb", "assert x == 5")
    _notebook(fake_notebooks / "02_boom.ipynb", "raise RuntimeError('boom')")
    _notebook(fake_notebooks / "03_never.ipynb", "open('never-ran', 'w')")
    assert pipeline.main(["-p", "x", "5"]) == 1
    err = capsys.readouterr().err
    assert "notebook 02_boom failed" in err and "RuntimeError: boom" in err
    out = tmp_path / "results" / "demo" / "notebooks"
    params = json.loads((out / "01_ok.params.json").read_text())
    assert params["parameters"]["x"] == 5
    assert (out / "02_boom.ipynb").exists() and not (out / "03_never.ipynb").exists()


TRAIN_PARAMS = (
    "profile = 'demo'\ntable = 'h2mil_table1'\nrow = 'H2-MIL'\ndataset = 'esca'\n"
    "task = 'typing'\nexecutor = 'local'"
)
TABLE3_ESCA_TYPING = "-p table h2mil_table3 -p dataset esca -p task typing".split()


@pytest.mark.slow
def test_train_runs_execute_concurrently_with_serial_folds(fake_notebooks, tmp_path, capsys):
    body = "import os\nprint(row, executor, os.environ.get('OMP_NUM_THREADS'))"
    _notebook(fake_notebooks / "04_train.ipynb", body, params=TRAIN_PARAMS)
    assert pipeline.main([*TABLE3_ESCA_TYPING, "--jobs", "2"]) == 0
    assert "7 runs, 2 at a time" in capsys.readouterr().out  # 4 controls + 3 schemes
    runs = tmp_path / "results" / "demo" / "runs"
    for row in ("thu-mid", "thu-bot", "thu-mid-bot"):
        name = f"h2mil_table3__{row}__esca__typing"
        params = json.loads((runs / f"{name}.params.json").read_text())["parameters"]
        assert params["executor"] == "serial" and params["table"] == "h2mil_table3"
        assert "serial" in (runs / f"{name}.ipynb").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("fresh", [False, True])
def test_concurrent_runs_reuse_a_cleared_kernel_per_slot(fake_notebooks, tmp_path, fresh):
    body = (
        "import os\n"
        "assert 'leftover' not in globals(), 'a name of the previous run survived'\n"
        "leftover = row\n"
        "print('kernel', os.getpid())"
    )
    _notebook(fake_notebooks / "04_train.ipynb", body, params=TRAIN_PARAMS)
    extra = ["--fresh-kernels"] if fresh else []
    assert pipeline.main([*TABLE3_ESCA_TYPING, "--jobs", "2", *extra]) == 0
    kernels = set()
    for path in (tmp_path / "results" / "demo" / "runs").glob("*.ipynb"):
        cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        assert cells[0].execution_count == 1, path.name  # each run counts from 1
        kernels |= {o["text"].split()[1] for o in cells[-1].outputs if o.get("name") == "stdout"}
    # 7 runs: two kept kernels (one per slot), or a new kernel each
    assert len(kernels) == 7 if fresh else 1 <= len(kernels) <= 2


@pytest.mark.slow
def test_a_failing_concurrent_run_is_named(fake_notebooks, capsys):
    body = "assert row != 'Thu. + Bot.', 'boom'"
    _notebook(fake_notebooks / "04_train.ipynb", body, params=TRAIN_PARAMS)
    assert pipeline.main([*TABLE3_ESCA_TYPING, "-p", "executor", "dask", "--jobs", "2"]) == 1
    err = capsys.readouterr().err
    assert "notebook 04_train failed" in err and "AssertionError: boom" in err
    assert "h2mil_table3__thu-bot__esca__typing.ipynb" in err


TINY = ["-p", "n_slides", "12", "-p", "slide_size", "[768, 512]"]
ONE_RUN = [
    "-p",
    "table",
    "h2mil_table1",
    "-p",
    "row",
    "H2-MIL",
    "-p",
    "dataset",
    "esca",
    "-p",
    "task",
    "typing",
]
QUICK = ["-p", "folds", "2", "-p", "epochs", "2", "-p", "executor", "serial"]
# 07-09 at toy sizes: a one-epoch UNet of 10 steps on the repository's two annotated tiles only
# (not the shared extras: the same work wherever the tests run), 6 tiles / ROIs per class.
PAPERS = [
    "-p", "unet_epochs", "1", "-p", "unet_steps_per_epoch", "10", "-p", "tiles_per_class", "6",
    "-p", "use_shared_tiles", "false",
    "-p", "n_per_class", '{"crc3": 6, "crc2": 6, "melanoma": 6}',
    "-p", "mico_executor", "serial",
]  # fmt: skip


@pytest.mark.slow
def test_every_notebook_executes_with_tiny_parameters(tmp_path, monkeypatch, capfd, real_slide):
    """01-09 end to end on a tiny cohort: one 04_train run, every table, every figure; each
    figure a notebook saves is shown inline in its executed copy, and the kernels print no
    transport warning."""
    monkeypatch.setenv("WSIGRAPH_WORK", str(tmp_path / "work"))
    monkeypatch.setenv("WSIGRAPH_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # as run_all.sh runs the kernels
    assert pipeline.main([*TINY, *ONE_RUN, *QUICK, *PAPERS]) == 0
    assert "without encryption" not in capfd.readouterr().err
    results = tmp_path / "results" / "demo"
    index = (results / "index.html").read_text()  # the report page of the run
    assert 'href="html/notebooks/09_mico.html"' in index and 'src="figures/' in index
    assert (results / "html" / "notebooks" / "09_mico.html").exists()
    names = ("01_cohort", "02_tiles_features", "03_graphs", "05_tables", "06_figures")
    for name in (*names, "07_nuclei_graph", "08_abignet", "09_mico"):
        executed = (results / "notebooks" / f"{name}.ipynb").read_text()
        assert str(REPO_ROOT) not in executed
        saved = (REPO_ROOT / "notebooks" / f"{name}.ipynb").read_text().count("savefig(")
        assert executed.count('"image/png"') >= saved, f"{name}: a saved figure is not shown"
        for cell in json.loads(executed)["cells"]:  # no log noise left in the executed copy
            for out in cell.get("outputs", []):
                if out.get("name") == "stderr":
                    text = "".join(out["text"])
                    assert not any(p.search(text) for p in NOISE_LINES), f"{name}: {text[:200]}"
        assert (results / "notebooks" / f"{name}.params.json").exists()
    for fig in ("cohort_thumbnails.png", "tiles_overlay.png", "pyramid_graph_overlay.png"):
        assert (results / "figures" / fig).stat().st_size > 10_000
    manifest = read_manifest(tmp_path / "work" / "demo" / "cohort.csv")
    assert len(manifest) == 12 + 12 + 1  # two demo datasets and the real slide
    graph = load_graph(tmp_path / "work" / "demo" / "graphs" / "CMU-1-Small-Region.pt")
    assert graph.num_nodes > 20 and int(graph.y_typing) == -1
    labelled = load_graph(tmp_path / "work" / "demo" / "graphs" / "esca-demo-000.pt")
    assert int(labelled.y_typing) in (0, 1)
    run = results / "runs" / "h2mil_table1__h2-mil__esca__typing"
    record = json.loads(run.with_suffix(".json").read_text())
    assert record["meta"]["row"] == "H2-MIL" and len(record["predictions"]) == 2
    assert run.with_suffix(".ipynb").exists() and run.with_suffix(".params.json").exists()
    table = (results / "tables" / "h2mil_table1.md").read_text()
    assert "not run yet" in table and "96.40 ± 0.59" in table  # SOTA rows; the paper's H2-MIL AUC
    for fig in ("h2mil_fig3_heatmaps.png", "h2mil_roc.png"):
        assert (results / "figures" / fig).stat().st_size > 10_000
    # 07-09: each paper's table beside its published numbers, and its figures
    nuclei = (results / "tables" / "nuclei_table2.md").read_text()
    assert "94.00" in nuclei and "not run yet" not in nuclei  # RSF's BACH accuracy, printed 94%
    assert "count/degree/edge-weight LR (control)" in nuclei and "Demo task:" in nuclei
    seg = pd.read_csv(results / "tables" / "nuclei_segmentation.csv")
    assert set(seg["split"]) == {"train", "held out"} and seg["dice"].between(0, 1).all()
    assert set(seg["method"]) == {"UNet", "classical fallback"} and seg["chosen"].any()
    assert "mean over organs" in set(seg["organ"]) and seg["f1"].between(0, 1).all()
    abignet = (results / "tables" / "abignet_table.md").read_text()
    assert "97.33 ± 1.15" in abignet and "not run yet" not in abignet
    assert "not run on demo" in abignet and "look-alike groups" in abignet  # demo: skip_rows
    oracle = next(line for line in abignet.splitlines() if "(oracle) |" in line)
    assert (
        oracle.startswith("| Reference | GCN on the true look-alike graph")
        and "not run" not in oracle
    )
    for fig in ("nuclei_fig2_graphs.png", "nuclei_fig3_importance.png", "abignet_graph.png"):
        assert (results / "figures" / fig).stat().st_size > 10_000
    mico = (results / "tables" / "mico_table1.md").read_text()
    assert "| MiCo |" in mico and "| MiCo (per-slide anchors) |" in mico
    assert "| mean-pool + LR (control) |" in mico and "co-occur" in mico  # demo: synthetic_mico
    surv = (results / "tables" / "mico_table2.md").read_text()  # demo: surv_skip_rows
    rows = {r: next(line for line in surv.splitlines() if f"| {r} |" in line)
            for r in ("MiCo", "MiCo (per-slide anchors)")}  # fmt: skip
    assert "not run on demo" in rows["MiCo (per-slide anchors)"]
    assert "not run on demo" not in rows["MiCo"]
    # README "Your own slides": a fold model 04 saved on demo scores the real slide
    from wsigraph import cli

    first = record["checkpoints"][0]
    assert (first["repeat"], first["fold"]) == (0, 0)
    ckpt = tmp_path / "work" / "demo" / "cv" / first["path"]
    assert ckpt.is_file()
    work, out = str(tmp_path / "mine"), tmp_path / "predictions.csv"
    rec = str(run.with_suffix(".json"))  # --model takes the run record too (its fold 0 model)
    predict = ["predict", str(real_slide), "--model", rec, "--work", work, "--out", str(out)]
    assert cli.main(predict) == 0
    scored = pd.read_csv(out)
    assert {"p_squamous", "p_adenocarcinoma"} <= set(scored.columns) and len(scored) == 1
    heatmap = ["heatmap", str(real_slide), "--model", str(ckpt), "--work", work]
    assert cli.main([*heatmap, "--out", str(tmp_path / "hm")]) == 0
    assert (tmp_path / "hm" / f"{real_slide.stem}_patches.geojson").stat().st_size > 1000
    # 04 on your own label column (as read_cohort_csv writes it), with a model refit on all
    cohort = tmp_path / "work" / "demo" / "cohort.csv"
    esca = manifest["dataset"] == "esca"
    grade = np.where(esca, np.arange(len(manifest)) % 2, np.nan)
    names = pd.Series(grade).map({0.0: "G1", 1.0: "G3"}).fillna("")
    manifest.assign(grade=grade, grade_name=names).to_csv(cohort, index=False)
    own = ["-p", "row", "H2-MIL", "-p", "dataset", "esca", "-p", "label_column", "grade"]
    assert pipeline.main(["--only", "04", *own, "-p", "refit", "true", *QUICK]) == 0
    own_run = results / "runs" / "own__h2mil_table1__h2-mil__esca__grade"
    own_record = json.loads(own_run.with_suffix(".json").read_text())
    assert own_record["meta"]["task"] == "grade" and own_record["meta"]["own_label"]
    assert own_record["refit"]["n_slides"] == 12 and own_run.with_suffix(".ipynb").exists()
    assert (
        "h2mil_table1__h2-mil__esca__grade"
        not in (results / "tables" / "h2mil_table1.csv").read_text()
    )
    refit = ["predict", str(real_slide), "--model", str(own_run.with_suffix(".json")), "--fold",
             "refit", "--work", work, "--out", str(tmp_path / "refit.csv")]  # fmt: skip
    assert cli.main(refit) == 0
    assert {"p_G1", "p_G3"} <= set(pd.read_csv(tmp_path / "refit.csv").columns)


def _two_notebooks(nbdir):
    _notebook(nbdir / "01_a.ipynb", "open(f'a-{x}', 'w')", params="profile = 'demo'\nx = 1")
    _notebook(nbdir / "07_b.ipynb", "pass", params="profile = 'demo'\nx = 1\nlr = 0.5")


def test_scoped_parameter_reaches_only_its_notebook(fake_notebooks, tmp_path, monkeypatch):
    _two_notebooks(fake_notebooks)
    (tmp_path / "results" / "demo").mkdir(parents=True)  # as the executed notebooks would
    seen = []
    monkeypatch.setattr(
        pipeline, "_execute", lambda nb, params, *a, **k: seen.append((nb.stem, params)) or True
    )
    assert pipeline.main(["-p", "07.x", "5", "-p", "07_b.lr", "0.1"]) == 0
    assert seen == [
        ("01_a", {"profile": "demo"}),
        ("07_b", {"profile": "demo", "x": 5, "lr": 0.1}),
    ]
    seen.clear()
    assert pipeline.main(["-p", "x", "3", "-p", "01.x", "4"]) == 0  # the scoped value wins
    assert seen == [("01_a", {"profile": "demo", "x": 4}), ("07_b", {"profile": "demo", "x": 3})]


def test_complete_run_prunes_run_records_it_no_longer_writes(
    fake_notebooks, tmp_path, monkeypatch, capsys
):
    """A record of a row the pipeline no longer runs must not outlive a complete run; narrowed
    runs (--only, -p) keep every record."""
    _two_notebooks(fake_notebooks)
    runs = tmp_path / "results" / "demo" / "runs"
    (runs / "mico").mkdir(parents=True)
    dropped, current = runs / "mico" / "dropped_row.json", runs / "current.json"
    for path in (dropped, current):
        path.write_text("{}")
        os.utime(path, (time.time() - 60, time.time() - 60))

    def execute(nb, params, *args, **kwargs):
        if nb.stem == "07_b":  # the notebook rewrites its record, as every notebook does
            current.write_text('{"new": 1}')
        return True

    monkeypatch.setattr(pipeline, "_execute", execute)
    assert pipeline.main(["--only", "07"]) == 0
    assert pipeline.main(["-p", "x", "3"]) == 0
    assert dropped.exists()
    capsys.readouterr()
    assert pipeline.main([]) == 0
    assert not dropped.exists() and current.read_text() == '{"new": 1}'
    assert "removed 1 stale file(s)" in capsys.readouterr().out


def test_unscoped_parameter_says_which_notebooks_it_reaches(fake_notebooks, capsys):
    _two_notebooks(fake_notebooks)
    assert pipeline.main(["-p", "x", "3", "-p", "lr", "0.2", "--check"]) == 0
    out = capsys.readouterr().out
    assert "-p x reaches 01_a, 07_b (scope it, e.g. -p 01.x)" in out
    assert "-p lr reaches 07_b\n" in out
    assert pipeline.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "  x: 01, 07" in out and "  lr:" not in out


@pytest.mark.parametrize(
    "args, expected",
    [
        (["-p", "09.x", "1"], "-p 09.x 1: '09' names no notebook of this run; scope a parameter"
         " by number or name, one of: 01_a, 07_b"),
        (["-p", "01.lr", "1"], "-p 01.lr 1: notebook 01_a does not declare 'lr'; it accepts: "
         "profile, x"),
        (["-p", "07.x", "abc"], "-p 07.x abc: notebook 07_b expects a whole number for x"),
        (["-p", "07.lr", "fast"], "-p 07.lr fast: notebook 07_b expects a number for lr"),
    ],
)  # fmt: skip
def test_bad_scoped_parameters_are_refused(fake_notebooks, tmp_path, capsys, args, expected):
    _two_notebooks(fake_notebooks)
    assert pipeline.main(args) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_scoped_values_meet_the_minimums(fake_notebooks, capsys):
    _notebook(fake_notebooks / "07_b.ipynb", "pass", params="profile = 'demo'\nfolds = 5")
    assert pipeline.main(["-p", "07.folds", "1", "--check"]) == 2
    assert (
        "-p 07.folds 1: folds must be at least 2 (notebook 07_b), got 1" in capsys.readouterr().err
    )


@pytest.mark.parametrize("label", ["profile", "01.profile"])
def test_profile_parameter_contradicting_the_option_is_refused(fake_notebooks, capsys, label):
    _two_notebooks(fake_notebooks)
    assert pipeline.main(["--profile", "demo", "-p", label, "tcga", "--check"]) == 2
    err = capsys.readouterr().err
    assert f"-p {label} tcga contradicts --profile demo" in err
    assert pipeline.main(["-p", label, "demo", "--check"]) == 0


def test_help_explains_every_option_with_examples_in_plain_text(capsys):
    with pytest.raises(SystemExit) as exit_:
        pipeline.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    helps = {
        "--profile": "synthetic slides",
        "--parameter": "NN.NAME",
        "--only": "notebook numbers",
        "--list": "tables and rows",
        "--check": "without running",
        "--jobs": "at a time",
    }
    for option, words in helps.items():
        options = out.split("\noptions:", 1)[1]
        text = " ".join(options.split(option, 1)[1].split("\n  -", 1)[0].split())
        assert words in text, f"{option}: no help text"
    assert "examples:" in out and "-p 07.lr 0.01" in out
    assert "``" not in out and ":func:" not in out  # no raw RST
    assert max(len(ln) for ln in out.splitlines()) <= 100


def test_list_shows_the_comments_of_the_parameters_cell(fake_notebooks, capsys):
    params = "profile = 'demo'  # demo or tcga\nlr = 0.5  # the learning rate\nx = 1"
    _notebook(fake_notebooks / "01_a.ipynb", "pass", params=params)
    assert pipeline.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "  profile='demo'  # demo or tcga\n  lr=0.5          # the learning rate\n  x=1\n" in out


def test_list_shows_the_tables_and_rows_of_04_train(capsys):
    from wsigraph.tables import TABLES, implemented_runs

    assert pipeline.main(["--list", "--only", "04"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for table, row, _, _ in implemented_runs():
        assert f"{table} ({TABLES[table].paper} Table {TABLES[table].number})" in out
        assert row in out
    assert "H2-MIL | " in out
    # demo (the default profile): rows outside its run set are starred, --all-rows named
    assert "MinMax* | " in out and "| H2-MIL |" in out.replace("H2-MIL*", "")
    assert "--all-rows runs every row" in out


@pytest.mark.parametrize(
    "args, expected",
    [
        (["-p", "row", "Foo"], "-p row Foo: no runnable row 'Foo'; rows: LR on slide means (Thu.), "),
        (["-p", "04.row", "Foo"], "-p row Foo: no runnable row 'Foo'; rows: "),
        (["-p", "table", "h2mil_table1", "-p", "row", "HIGT (Ours)"],
         "no runnable row 'HIGT (Ours)' of table h2mil_table1; rows: LR on slide means (Thu.), "),
        (["-p", "table", "nope"], "-p table nope: unknown table; tables: h2mil_table1, "),
        (["-p", "row", "H2-MIL", "-p", "dataset", "brca"],
         "-p dataset brca: no runnable dataset 'brca'; datasets: esca, kica"),
    ],
)  # fmt: skip
def test_unknown_table_or_row_lists_the_valid_ones_before_anything_runs(capsys, args, expected):
    assert pipeline.main([*args, "--only", "04"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "nothing was run" in err
    assert pipeline.main(["-p", "row", "H2-MIL", "-p", "task", "staging", "--check"]) == 0


def test_your_own_label_column_is_one_run_outside_the_tables(capsys):
    from wsigraph.profiles import get_profile

    assert pipeline.main(["-p", "label_column", "grade", "--only", "04", "--check"]) == 2
    assert "name the row to train and your cohort's dataset too" in capsys.readouterr().err
    own = ["-p", "row", "H2-MIL", "-p", "dataset", "custom", "-p", "label_column", "grade"]
    assert pipeline.main([*own, "--only", "04", "--check"]) == 0  # no paper dataset needed
    nb = pipeline.NOTEBOOKS_DIR / "04_train.ipynb"
    declared = pipeline.declared_parameters(nb)
    given = {"row": "H2-MIL", "dataset": "custom", "label_column": "grade", "refit": True}
    [(params, output)] = pipeline.expand(nb, get_profile("demo"), given, declared)
    assert output.name == "own__h2mil_table1__h2-mil__custom__grade.ipynb"
    assert params["table"] == "h2mil_table1" and params["refit"] is True
    assert params["label_column"] == "grade" and "task" not in params


def test_a_successful_run_ends_with_the_report_page(fake_notebooks, tmp_path, monkeypatch, capsys):
    _two_notebooks(fake_notebooks)
    monkeypatch.setattr(pipeline, "_execute", lambda *a, **k: True)
    (tmp_path / "results" / "demo" / "figures").mkdir(parents=True)
    (tmp_path / "results" / "demo" / "figures" / "f.png").write_bytes(b"png")
    assert pipeline.main([]) == 0
    index = tmp_path / "results" / "demo" / "index.html"
    assert 'src="figures/f.png"' in index.read_text()
    assert f"run_all: report: {index}" in capsys.readouterr().out
    index.unlink()
    monkeypatch.setattr(pipeline, "_execute", lambda *a, **k: False)
    assert pipeline.main([]) == 1 and not index.exists()  # a failed run writes no page


def test_strip_noise_drops_progress_frames_and_known_chatter_but_keeps_real_warnings():
    bar = "graphs:  40%|####      | 160/401 [00:00<00:01, 228.07slide/s]"
    nb = {
        "cells": [
            {"cell_type": "code", "outputs": [
                {"output_type": "stream", "name": "stderr", "text": [
                    "/x/tqdm/auto.py:21: TqdmWarning: IProgress not found. Please update\n",
                    "  from .autonotebook import tqdm as notebook_tqdm\n",
                ]},
                {"output_type": "stream", "name": "stderr", "text": f"\r{bar}\r{bar}\n"},
                {"output_type": "stream", "name": "stderr", "text": (
                    "/x/_script.py:1491: FutureWarning: `torch.jit.script` is deprecated.\n"
                    "  warnings.warn(\n"
                    "/x/cv.py:3: UserWarning: 2 slides have no graph\n"
                )},
                {"output_type": "stream", "name": "stdout", "text": f"{bar}\n"},
            ]},
            {"cell_type": "markdown", "source": "text"},
        ]
    }  # fmt: skip
    assert strip_noise(nb)
    outs = nb["cells"][0]["outputs"]
    assert [o["name"] for o in outs] == ["stderr", "stdout"]  # the empty stderr outputs are gone
    assert (
        outs[0]["text"] == "/x/cv.py:3: UserWarning: 2 slides have no graph\n"
    )  # a real one stays
    assert outs[1]["text"] == f"{bar}\n"  # stdout is the notebook's own output: untouched
    assert not strip_noise(nb)  # nothing left to strip


def test_kernel_shutdown_sends_no_interrupt_but_a_live_kernel_can_still_be_interrupted():
    # jupyter_client interrupts (SIGINT) before every shutdown; on an idle papermill kernel that
    # only makes ipykernel print "KeyboardInterrupt caught in kernel" on the terminal.
    import asyncio

    from jupyter_client.manager import AsyncKernelManager

    sent = []

    async def record(self):
        sent.append(self.shutting_down)

    km_class = pipeline._kernel_manager_class()
    original = AsyncKernelManager._async_interrupt_kernel
    AsyncKernelManager._async_interrupt_kernel = record
    try:
        km = km_class()
        km.shutting_down = True
        asyncio.run(km._async_interrupt_kernel())
        assert sent == []
        km.shutting_down = False
        asyncio.run(km._async_interrupt_kernel())
        assert sent == [False]
    finally:
        AsyncKernelManager._async_interrupt_kernel = original


@pytest.mark.slow
def test_your_own_cohort_csv_runs_through_01_to_03(tmp_path, monkeypatch, real_slide):
    """`-p cohort_csv`: your slides, in place, through the cohort, features and graph stages;
    one of them without magnification metadata, given by its CSV column."""
    import tifffile

    monkeypatch.setenv("WSIGRAPH_WORK", str(tmp_path / "work"))
    monkeypatch.setenv("WSIGRAPH_RESULTS", str(tmp_path / "results"))
    slides = tmp_path / "my_slides"
    slides.mkdir()
    stripped = slides / "no_metadata.svs"
    stripped.write_bytes(real_slide.read_bytes())
    tifffile.tiffcomment(stripped, comment=b"no vendor metadata")
    csv = tmp_path / "cohort.csv"
    csv.write_text(f"path,typing,objective_power\n{real_slide},tumour,\n{stripped},normal,20\n")
    assert pipeline.main(["--only", "01", "02", "03", "-p", "cohort_csv", str(csv)]) == 0
    manifest = read_manifest(tmp_path / "work" / "demo" / "cohort.csv")
    assert manifest["path"].tolist() == [str(real_slide), str(stripped)]  # used in place
    assert set(manifest["typing_name"]) == {"tumour", "normal"}
    a = load_graph(tmp_path / "work" / "demo" / "graphs" / f"{real_slide.stem}.pt")
    b = load_graph(tmp_path / "work" / "demo" / "graphs" / "no_metadata.pt")
    assert a.num_nodes == b.num_nodes > 20 and int(b.y_typing) == 0 and int(a.y_typing) == 1
    assert not list(tmp_path.glob("work/demo/slides/*.svs"))  # nothing copied


def test_images_whose_base64_spells_a_noise_word_are_re_encoded_with_the_same_pixels():
    import base64
    import io
    import re

    import numpy as np
    from PIL import Image

    from wsigraph.pipeline import NOISE_WORDS, reencode_flagged_images

    # a compressible figure-like image (random noise would be stored, the same at every level)
    y, x = np.mgrid[:80, :120]
    noise = np.random.default_rng(0).integers(0, 8, (80, 120))
    pixels = np.stack([(x * 2 + noise) % 256, (y * 3) % 256, (x + y) % 256], -1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    text = base64.b64encode(buffer.getvalue()).decode()
    word = re.compile(re.escape(text[len(text) // 2 : len(text) // 2 + 6]))  # inside the IDAT
    nb = {"cells": [{"outputs": [{"data": {"image/png": text + "\n"}}, {"text": "x"}]}]}
    assert not reencode_flagged_images(nb)  # the default words are not in it: nothing to do
    assert not NOISE_WORDS.search(text)
    assert reencode_flagged_images(nb, word)
    new = nb["cells"][0]["outputs"][0]["data"]["image/png"]
    assert new.endswith("\n") and not word.search(new) and new != text + "\n"
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(new))))
    assert np.array_equal(decoded, pixels)
    assert not reencode_flagged_images(nb, word)  # done once
