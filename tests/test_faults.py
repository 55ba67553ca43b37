"""Fault injection (issue 20): damaged caches, a broken slide in a cohort, damaged fold and run
JSON files, slides too big to thumbnail. Each fault is detected, named and recovered from (or
reported), never silently fed downstream. Every test takes a few seconds at most."""

from __future__ import annotations

import json
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from wsigraph.data.features import TilingSettings, extract_features, load_features
from wsigraph.graphs.build import build_graphs
from wsigraph.graphs.pyramid import load_graph, save_graph
from wsigraph.io import DigestMismatchError

SETTINGS = TilingSettings(
    magnifications=(5.0, 10.0),
    patch_size=64,
    thumbnail_side=256,
    min_tissue=0.5,
    rgb_var_threshold=20.0,
)


def flip_tensor_bytes(path: Path, n: int = 8) -> None:
    """Flip ``n`` bytes in the middle of the largest tensor stored in a ``torch.save`` zip file,
    leaving the pickle and the zip directory intact (so the file still loads)."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack(
        "<HH", raw[info.header_offset + 26 : info.header_offset + 30]
    )
    start = info.header_offset + 30 + name_len + extra_len
    mid = start + info.file_size // 2
    for k in range(mid, mid + n):
        raw[k] ^= 0x5A
    path.write_bytes(bytes(raw))


@pytest.fixture
def cohort(tmp_path, synthetic_slide):
    return pd.DataFrame({"slide_id": ["a"], "path": [str(synthetic_slide)]})


def _extract(slides, out):
    kw = dict(encoder="demo", batch_size=32, num_workers=0, progress=False)
    return extract_features(slides, out, SETTINGS, **kw).set_index("slide_id")


def test_bit_flipped_feature_file_is_caught_and_rebuilt(tmp_path, cohort, capsys):
    out = tmp_path / "features"
    assert _extract(cohort, out).loc["a", "status"] == "done"
    good = load_features(out / "a.pt")["features"].clone()
    flip_tensor_bytes(out / "a.pt")
    with pytest.raises(DigestMismatchError, match=r"a\.pt: content digest mismatch"):
        load_features(out / "a.pt")
    again = _extract(cohort, out)
    assert again.loc["a", "status"] == "done"  # rebuilt, not "skipped"
    assert "a.pt" in again.loc["a", "note"] and "digest mismatch" in again.loc["a", "note"]
    assert "rebuilding" in capsys.readouterr().err
    assert torch.equal(load_features(out / "a.pt")["features"], good)


def test_truncated_feature_file_is_rebuilt(tmp_path, cohort):
    out = tmp_path / "features"
    _extract(cohort, out)
    raw = (out / "a.pt").read_bytes()
    (out / "a.pt").write_bytes(raw[: len(raw) // 2])
    again = _extract(cohort, out)
    assert again.loc["a", "status"] == "done" and "unreadable" in again.loc["a", "note"]
    load_features(out / "a.pt")


def _graph(seed=0):
    from conftest import toy_pyramid

    return toy_pyramid(3, seed=seed)


def test_bit_flipped_graph_file_is_caught(tmp_path):
    path = tmp_path / "g.pt"
    save_graph(_graph(), path)
    load_graph(path)
    flip_tensor_bytes(path)
    with pytest.raises(DigestMismatchError, match=r"g\.pt: content digest mismatch"):
        load_graph(path)


def test_build_graphs_rebuilds_a_damaged_graph_and_reports_a_damaged_feature_file(
    tmp_path, cohort, capsys
):
    feats, graphs = tmp_path / "features", tmp_path / "graphs"
    _extract(cohort, feats)
    manifest = pd.DataFrame({"slide_id": ["a", "gone"], "typing": [0, 1]})
    first = build_graphs(manifest, feats, graphs, progress=False).set_index("slide_id")
    assert first.loc["a", "status"] == "done"
    assert first.loc["gone", "status"] == "no features"
    assert "02_tiles_features" in first.loc["gone", "error"]
    flip_tensor_bytes(graphs / "a.pt")
    second = build_graphs(manifest, feats, graphs, progress=False).set_index("slide_id")
    assert second.loc["a", "status"] == "done" and "digest mismatch" in second.loc["a", "note"]
    load_graph(graphs / "a.pt", require_digest=True)
    # a damaged feature file fails that slide (named, with the stage to rerun), not the stage
    flip_tensor_bytes(feats / "a.pt")
    (graphs / "a.pt").unlink()
    third = build_graphs(manifest, feats, graphs, progress=False).set_index("slide_id")
    assert third.loc["a", "status"] == "failed"
    assert "a.pt" in third.loc["a", "error"] and "02_tiles_features" in third.loc["a", "error"]
    assert "graphs: slide a failed" in capsys.readouterr().err


# The fold cache ------------------------------------------------------------------------------
def _fold_damages(stored: dict) -> dict:
    no_metric = json.loads(json.dumps(stored))
    del no_metric["result"]["metrics"]["auc"]
    no_probs = json.loads(json.dumps(stored))
    del no_probs["result"]["test_probs"]
    return {
        "null": "null",
        "list": "[]",
        "empty result": json.dumps({"result": {}}),
        "hash, empty result": json.dumps({"config_hash": stored["config_hash"], "result": {}}),
        "null result": json.dumps({"config_hash": stored["config_hash"], "result": None}),
        "no metric": json.dumps(no_metric),
        "no probs": json.dumps(no_probs),
        "truncated": json.dumps(stored)[:40],
    }


def test_damaged_fold_cache_files_are_named_and_recomputed(tmp_path):
    from test_train import CFG, toy_graphs

    from wsigraph.train.run import run_experiment

    graphs, labels = toy_graphs(12)
    cfg = type(CFG)(**(CFG.to_dict() | {"epochs": 2, "patience": 2}))
    run = dict(graphs=graphs, labels=labels, cfg=cfg, out_dir=tmp_path, folds=2, repeats=1)
    record = run_experiment("toy", **run, executor="serial", progress=False)
    path = tmp_path / "toy" / "fold_r0_f1.json"
    good = json.loads(path.read_text())
    for case, text in _fold_damages(good).items():
        path.write_text(text)
        with pytest.warns(UserWarning, match=r"fold cache .*fold_r0_f1\.json is damaged") as w:
            again = run_experiment("toy", **run, executor="serial", progress=False)
        assert "recomputing" in str(w[0].message), case
        assert [d["reused"] for d in again["fold_details"]] == [True, False], case
        assert again["summary"] == record["summary"], case
        assert json.loads(path.read_text())["result"]["metrics"] == good["result"]["metrics"]


# Run records (notebooks 05 and 06) -------------------------------------------------------------
def test_damaged_run_records_are_named_and_skipped(tmp_path):
    from wsigraph.tables import NOT_RUN, load_records, render

    good = {"name": "ok", "summary": {"auc": {"mean": 0.8, "std": 0.1}}}
    (tmp_path / "ok.json").write_text(json.dumps(good))
    (tmp_path / "ok.params.json").write_text("{")  # not a record: ignored, no warning
    damaged = {"cut": json.dumps(good)[:25], "null": "null", "list": "[1]", "bare": "{}"}
    for name, text in damaged.items():
        (tmp_path / f"{name}.json").write_text(text)
    with pytest.warns(UserWarning) as w:
        records = load_records(tmp_path)
    assert records == {"ok": good}
    messages = sorted(str(m.message) for m in w)
    assert len(messages) == len(damaged)
    for name in damaged:
        assert any(f"skipping run record {tmp_path / name}.json" in m for m in messages), name
    assert "not readable JSON" in next(m for m in messages if "cut.json" in m)
    table = render("h2mil_table1", records)  # the tables still render
    assert (table == NOT_RUN).to_numpy().any()  # the damaged runs' rows show 'not run yet'


# Slides too big or without a pyramid -----------------------------------------------------------
def _claims_huge(monkeypatch, name: str = "huge.tif"):
    """Slides opened from ``name`` claim one 100,000 x 100,000 px level; reading a region larger
    than 64 Mpx raises MemoryError, as OpenSlide's allocation would."""
    from wsigraph.data import slides as slides_mod

    init = slides_mod.Slide.__init__

    def fake_init(self, path, *a, **kw):
        init(self, path, *a, **kw)
        if Path(path).name == name:
            self.levels = (slides_mod.Level(0, 100_000, 100_000, 1.0),)
            real = self._osr.read_region

            def read_region(loc, level, size):
                if size[0] * size[1] > 1 << 26:
                    raise MemoryError
                return real(loc, 0, (min(size[0], 64), min(size[1], 64))).resize(size)

            self._osr = type(
                "Fake",
                (),
                {
                    "read_region": staticmethod(read_region),
                    "properties": self._osr.properties,
                    "close": self._osr.close,
                },
            )()

    monkeypatch.setattr(slides_mod.Slide, "__init__", fake_init)


def test_single_level_huge_slide_is_named_and_the_stage_goes_on(
    tmp_path, synthetic_slide, monkeypatch, capsys
):
    from wsigraph.data.slides import Slide, SlideError

    huge = tmp_path / "huge.tif"
    huge.write_bytes(synthetic_slide.read_bytes())
    _claims_huge(monkeypatch)
    with Slide(huge) as s, pytest.raises(SlideError, match="no level small enough for a thumbnail"):
        s.thumbnail(256)
    slides = pd.DataFrame({"slide_id": ["huge", "a"], "path": [str(huge), str(synthetic_slide)]})
    summary = _extract(slides, tmp_path / "features")
    assert summary["status"].to_dict() == {"huge": "failed", "a": "done"}
    error = summary.loc["huge", "error"]
    assert "huge.tif" in error and "no level small enough for a thumbnail" in error
    assert "features: slide huge failed" in capsys.readouterr().err


def test_thumbnail_of_a_large_level_is_read_in_strips(synthetic_slide, monkeypatch):
    from wsigraph.data import slides as slides_mod

    with slides_mod.Slide(synthetic_slide) as s:
        whole = s.thumbnail(200)
        monkeypatch.setattr(slides_mod, "STRIP_PIXELS", 5000)
        strips = s.thumbnail(200)
    assert strips.shape == whole.shape
    assert np.abs(strips.astype(int) - whole.astype(int)).mean() < 3


# One bad slide in a cohort ---------------------------------------------------------------------
def test_a_truncated_slide_is_named_by_each_stage_and_left_out_of_cv(
    tmp_path, synthetic_slide, capsys
):
    from types import SimpleNamespace

    from wsigraph.train.run import load_graphs

    cut = tmp_path / "cut.tif"
    cut.write_bytes(synthetic_slide.read_bytes()[:6000])
    ids = ["s0", "s1", "cut"]
    paths = [str(synthetic_slide), str(synthetic_slide), str(cut)]
    manifest = pd.DataFrame(
        {"slide_id": ids, "path": paths, "dataset": ["esca"] * 3, "typing": [0, 1, 1]}
    )
    feats, graphs = tmp_path / "features", tmp_path / "graphs"
    summary = _extract(manifest, feats)
    assert summary["status"].to_dict() == {"s0": "done", "s1": "done", "cut": "failed"}
    assert "cut.tif" in summary.loc["cut", "error"]
    assert "features: slide cut failed" in capsys.readouterr().err
    stats = build_graphs(manifest, feats, graphs, progress=False).set_index("slide_id")
    assert stats.loc["cut", "status"] == "no features"
    assert "02_tiles_features" in stats.loc["cut", "error"]
    assert "graphs: slide cut skipped" in capsys.readouterr().err
    profile = SimpleNamespace(graphs_dir=graphs)
    left_out = {}
    with pytest.warns(UserWarning, match=r"cut: no graph file.*03_graphs.*left out of cross-val"):
        _, labels, kept = load_graphs(profile, manifest, "esca", "typing", left_out=left_out)
    assert kept == ["s0", "s1"] and labels.tolist() == [0, 1]
    assert left_out == {"cut": "no graph file"}
    with pytest.raises(FileNotFoundError, match=r"cut: no graph file.*02_tiles_features"):
        load_graphs(profile, manifest, "esca", "typing", missing_slides="error")
    # a damaged graph file is dropped the same way, naming the file
    flip_tensor_bytes(graphs / "s1.pt")
    with pytest.warns(UserWarning, match=r"s1: damaged graph file .*s1\.pt: content digest"):
        _, _, kept = load_graphs(profile, manifest, "esca", "typing")
    assert kept == ["s0"]


# Bad values through the API (run_experiment) ---------------------------------------------------
def test_bad_inputs_are_refused_naming_the_slides():
    from test_train import toy_graphs

    from wsigraph.train.run import check_inputs

    graphs, labels = toy_graphs(6)
    assert check_inputs(graphs, labels).tolist() == labels.tolist()
    nan = [g.clone() for g in graphs]
    nan[2].x[0, 1] = float("nan")
    with pytest.raises(ValueError, match=rf"non-finite .*{graphs[2].slide_id}"):
        check_inputs(nan, labels)
    wide = [g.clone() for g in graphs]
    wide[4].x = torch.zeros(wide[4].num_nodes, 9)
    with pytest.raises(
        ValueError,
        match=rf"slide {graphs[4].slide_id} has 9 features .* slide {graphs[0].slide_id} has 8",
    ):
        check_inputs(wide, labels)
    with pytest.raises(
        ValueError, match=r"classes 0\.\.2 with every class present.*\[1\] have no slide"
    ):
        check_inputs(graphs, np.where(labels == 1, 2, 0))
    with pytest.raises(ValueError, match=r"whole numbers >= 0"):
        check_inputs(graphs, labels - 1)
    for n in (0, 1):
        tiny = [g.clone() for g in graphs]
        tiny[3].x = tiny[3].x[:n]
        with pytest.raises(
            ValueError, match=rf"fewer than 2 nodes.*{graphs[3].slide_id} \({n} node"
        ):
            check_inputs(tiny, labels)
    with pytest.raises(ValueError, match="6 graphs but labels of shape"):
        check_inputs(graphs, labels[:5])


def test_load_graphs_drops_a_one_node_graph(tmp_path):
    from types import SimpleNamespace

    from test_train import toy_graphs

    from wsigraph.train.run import load_graphs

    graphs, labels = toy_graphs(4)
    graphs[1] = graphs[1].subgraph(torch.tensor([0]))
    for g in graphs:
        save_graph(g, tmp_path / f"{g.slide_id}.pt")
    ids = [g.slide_id for g in graphs]
    manifest = pd.DataFrame({"slide_id": ids, "dataset": "esca", "typing": labels})
    profile = SimpleNamespace(graphs_dir=tmp_path)
    with pytest.warns(UserWarning, match=rf"{ids[1]}: a graph of 1 node\(s\)"):
        _, _, kept = load_graphs(profile, manifest, "esca", "typing")
    assert kept == [ids[0], *ids[2:]]


def test_run_all_names_failed_slides_on_the_terminal(tmp_path, capsys):
    from types import SimpleNamespace

    from wsigraph.pipeline import _report_failed_slides

    (tmp_path / "tables").mkdir()
    pd.DataFrame(
        {"slide_id": ["a", "b"], "status": ["done", "failed"], "error": [None, "b.tif: truncated"]}
    ).to_csv(tmp_path / "tables" / "features_summary.csv", index=False)
    _report_failed_slides(Path("02_tiles_features.ipynb"), SimpleNamespace(results_dir=tmp_path))
    err = capsys.readouterr().err
    assert "run_all: 02_tiles_features: slide b failed: b.tif: truncated" in err
    assert "slide a" not in err and "1 slide(s) failed" in err


# Slide sizes of the demo cohort ---------------------------------------------------------------
def test_a_too_small_slide_size_says_the_minimum(tmp_path):
    from wsigraph.data.synthetic import make_demo_cohort
    from wsigraph.profiles import get_profile

    demo = get_profile("demo")
    assert demo.min_slide_side == 64 * 20 // 5  # one 64 px patch at 5x of a 20x slide
    for size in ([100, 100], [256, 255], (1000, 200)):
        with pytest.raises(ValueError, match=r"too small: each side must be at least 256 px"):
            demo.with_demo_size(slide_size=size)
    for size in ([768], "768", [768.0, 512]):
        with pytest.raises(ValueError, match=r"slide_size must be \[width, height\]"):
            demo.with_demo_size(slide_size=size)
    with pytest.raises(ValueError, match=r"at least 256 px"):  # the API path too
        make_demo_cohort(demo.with_overrides(slide_size=(100, 100)), tmp_path, progress=False)
    with pytest.raises(ValueError, match="n_slides must be a whole number >= 4"):
        demo.with_demo_size(n_slides="abc")


def test_the_smallest_slide_size_makes_slides_that_tile(tmp_path):
    from wsigraph.data.features import plan_slide
    from wsigraph.data.slides import Slide
    from wsigraph.data.synthetic import make_demo_cohort
    from wsigraph.profiles import get_profile

    demo = get_profile("demo")
    side = demo.min_slide_side
    tiny = demo.with_demo_size(n_slides=4, slide_size=[side, side])
    manifest = make_demo_cohort(tiny, tmp_path, progress=False, workers=1)
    settings = TilingSettings(
        magnifications=demo.magnifications,
        patch_size=demo.patch_size,
        thumbnail_side=demo.thumbnail_side,
        min_tissue=demo.min_tissue,
        rgb_var_threshold=demo.rgb_var_threshold,
    )
    for path in manifest["path"]:
        with Slide(path) as s:
            assert s.dimensions == (side, side)
            counts = plan_slide(s, settings)[0].counts()
        assert counts["5x"] == 1 and counts["10x"] >= 1, (path, counts)


def test_run_all_names_the_slides_a_training_run_left_out(tmp_path, capsys):
    from wsigraph.pipeline import _report_left_out

    run = tmp_path / "h2mil_table1__h2-mil__esca__typing.ipynb"
    record = {"meta": {"left_out": {"esca-demo-003": "no graph file"}}}
    run.with_suffix(".json").write_text(json.dumps(record))
    _report_left_out(Path("04_train.ipynb"), run)
    err = capsys.readouterr().err
    assert "04_train (h2mil_table1__h2-mil__esca__typing): slide esca-demo-003 left out: " in err
    assert "no graph file" in err and "1 labelled slide(s) left out of cross-validation" in err
    run.with_suffix(".json").write_text(json.dumps({"meta": {"left_out": {}}}))
    _report_left_out(Path("04_train.ipynb"), run)
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_a_truncated_demo_slide_through_notebooks_02_to_04(tmp_path, monkeypatch, capsys):
    """Issue 20, item 1, through run_all: one labelled demo slide truncated after 01; 02 and 03
    name it in their tables and on the terminal, 04 trains without it and names it too. The
    slides have the smallest size the tiling accepts (256 px: one 5x patch), which keeps the
    test near 50 s on 2 idle cores (four kernel starts make most of it)."""
    from wsigraph import pipeline

    monkeypatch.setenv("WSIGRAPH_WORK", str(tmp_path / "work"))
    monkeypatch.setenv("WSIGRAPH_RESULTS", str(tmp_path / "results"))
    tiny = ["-p", "n_slides", "12", "-p", "slide_size", "[256, 256]"]
    assert pipeline.main([*tiny, "--only", "01"]) == 0
    cohort = pd.read_csv(tmp_path / "work" / "demo" / "cohort.csv")
    cut = cohort[(cohort["dataset"] == "esca") & (cohort["typing"] == 0)].iloc[0]
    sid = cut["slide_id"]  # of the larger class, so that 2-fold CV still works without it
    Path(cut["path"]).write_bytes(Path(cut["path"]).read_bytes()[:6000])
    capsys.readouterr()
    run = ["-p", "table", "h2mil_table1", "-p", "row", "H2-MIL", "-p", "dataset", "esca"]
    run += ["-p", "task", "typing", "-p", "folds", "2", "-p", "epochs", "1"]
    run += ["-p", "executor", "serial", "--only", "02", "03", "04"]
    assert pipeline.main(run) == 0
    err = capsys.readouterr().err
    assert f"02_tiles_features: slide {sid} failed: " in err and f"{sid}.tif" in err
    assert f"03_graphs: slide {sid} no features: " in err and "02_tiles_features" in err
    assert f"slide {sid} left out: no graph file" in err
    tables = tmp_path / "results" / "demo" / "tables"
    features = pd.read_csv(tables / "features_summary.csv").set_index("slide_id")
    assert features.loc[sid, "status"] == "failed"
    assert (features.drop(sid)["status"] == "done").all()
    graphs = pd.read_csv(tables / "graph_stats.csv").set_index("slide_id")
    assert graphs.loc[sid, "status"] == "no features"
    record = tmp_path / "results" / "demo" / "runs" / "h2mil_table1__h2-mil__esca__typing.json"
    record = json.loads(record.read_text())
    assert record["meta"]["left_out"] == {sid: "no graph file"}
    tested = {s for p in record["predictions"] for s in p["slide_id"]}
    assert len(tested) == 11 and sid not in tested
    # missing_slides=error makes the missing slide stop 04, naming it and the stages
    assert pipeline.main([*run[:-4], "-p", "missing_slides", "error", "--only", "04"]) == 1
    err = capsys.readouterr().err
    assert "notebook 04_train failed" in err and f"{sid}: no graph file" in err
    assert "03_graphs" in err and "02_tiles_features" in err


def test_nan_features_are_named_by_the_survival_and_mico_runners(tmp_path):
    """MiCo used to fail in k-means with sklearn's bare "Input contains NaN", the survival
    runner with "need 3 finite risks"; both now name the slide before training."""
    from test_mico_official import TINY, cohort
    from test_survival import _graph

    from wsigraph.train.loop import TrainConfig
    from wsigraph.train.mico import mico_train_config, run_mico_experiment
    from wsigraph.train.survival import run_survival_experiment

    graphs, labels = cohort(16)
    graphs[5].x[-1, 2] = float("nan")
    cfg = mico_train_config(dict(dim=8, n_clusters=4, anchors="learned"), epochs=1, device="cpu")
    with pytest.raises(ValueError, match=r"non-finite .*\['s05'\]"):
        run_mico_experiment("m", graphs, "typing", cfg, tmp_path, labels=labels, protocol=TINY)
    with pytest.raises(ValueError, match=r"classes 0\.\.2 with every class present"):
        run_mico_experiment("m", graphs, "typing", cfg, tmp_path, labels=labels * 2)
    times, cens = np.arange(16) + 1.0, np.arange(16) % 3 == 0
    with pytest.raises(ValueError, match=r"non-finite .*\['s05'\]"):
        run_mico_experiment(
            "m", graphs, "survival", cfg, tmp_path, times=times, censorship=cens, protocol=TINY
        )
    graphs = [_graph(i, 2 + i % 3, 0.0) for i in range(20)]
    graphs[3].x[1, 0] = float("inf")
    surv_cfg = TrainConfig("abmil", epochs=1, batch_size=4, lr=1e-3, seed=0)
    times, cens = np.arange(20) + 1.0, (np.arange(20) % 3 == 0).astype(int)
    with pytest.raises(ValueError, match=r"non-finite .*\['s03'\]"):
        run_survival_experiment("s", graphs, times, cens, surv_cfg, tmp_path, 2, 1, progress=False)


@pytest.mark.slow
def test_the_probe_script_finds_nothing_silent_or_unclear(capsys, monkeypatch):
    """scripts/fault_probes.py (issue 20's probes, rerun): every probe is a clear error, a
    recovery or holds."""
    import importlib.util

    from wsigraph.profiles import REPO_ROOT

    path = REPO_ROOT / "scripts" / "fault_probes.py"
    spec = importlib.util.spec_from_file_location("fault_probes", path)
    probes = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "fault_probes", probes)  # dataclasses look it up there
    spec.loader.exec_module(probes)
    code = probes.main([])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "| -p n_slides abc | clear error |" in out and "0 not clear or not recovered" in out
