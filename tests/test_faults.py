"""Fault injection (issue 20): damaged caches, a broken slide in a cohort, damaged fold and run
JSON files, slides too big to thumbnail. Each fault is detected, named and recovered from (or
reported), never silently fed downstream. Every test takes a few seconds at most."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

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
    from wsigraph.tables import load_records, render

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
    render("h2mil_table1", records)  # the tables still render: those rows show 'not run yet'
