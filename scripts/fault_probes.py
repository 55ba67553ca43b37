"""Issue 20's fault and bad-input probes, rerun in-process in a temporary folder.

    PYTHONPATH=lib .venv/bin/python scripts/fault_probes.py          # every probe (~1 min)
    PYTHONPATH=lib .venv/bin/python scripts/fault_probes.py -k gdc   # probes whose name has "gdc"

Each probe injects one fault (a damaged cache, a truncated slide, a hostile GDC server, a bad
``-p`` value, bad inputs through the API, a full disk, ...) and judges what the user gets:

``clear error``    it stopped with an error naming what the probe expects it to name (the file,
                   the slide, the field or the parameter, and the way out);
``recovered``      it went on with a correct result and said what it did (a warning, a note in
                   the stage's table, a per-file failure);
``holds``          no fault to recover from: the behaviour asked for is there (the umask);
``UNCLEAR error``  it stopped, but the message misses what it should name;
``SILENT``         it went on without a word, or with a wrong result.

The table lists probe, outcome and the first line of the message. Exit status 1 when a probe is
UNCLEAR or SILENT. The GDC probes run against the loopback server of ``tests/test_gdc.py`` and
reuse the helpers of ``tests/test_faults.py`` (both imported from ``tests/``); nothing reaches
the network.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "lib"), str(REPO / "tests")]
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402  (MonkeyPatch, and the test modules import it)
import torch  # noqa: E402


@dataclass
class Outcome:
    kind: str
    message: str


PROBES: list[tuple[str, Callable[[Path], Outcome]]] = []


def probe(name: str):
    def register(fn):
        PROBES.append((name, fn))
        return fn

    return register


@contextlib.contextmanager
def notices():
    """Collect what the user is told: warnings and stderr (``out.text`` after the block)."""
    out = type("Notices", (), {"text": ""})()
    err = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(err):
        warnings.simplefilter("always")
        try:
            yield out
        finally:
            shown = [str(w.message) for w in caught if not _noise(w)]
            out.text = "\n".join([*shown, err.getvalue()]).strip()


def _noise(w: warnings.WarningMessage) -> bool:
    return issubclass(w.category, DeprecationWarning | FutureWarning) or "tqdm" in str(w.filename)


def raises(fn: Callable[[], object], *names: str) -> Outcome:
    """A probe that should stop: clear when the error's text holds every one of ``names``."""
    try:
        with notices():
            fn()
    except Exception as e:  # noqa: BLE001  (judged, then reported)
        text = str(e) if isinstance(e, RunAllRefused) else f"{type(e).__name__}: {e}"
        missing = [n for n in names if n not in text]
        kind = "clear error" if not missing else "UNCLEAR error"
        return Outcome(kind, text if not missing else f"{text}  [does not name {missing}]")
    return Outcome("SILENT", "no error")


def recovers(fn: Callable[[], object], correct: Callable[[object], bool], *names: str) -> Outcome:
    """A probe that should go on: recovered when ``correct(result)`` and the user is told
    (warnings, stderr or the returned text hold every one of ``names``)."""
    try:
        with notices() as told:
            result = fn()
    except Exception as e:  # noqa: BLE001
        return Outcome("UNCLEAR error", f"stopped instead of recovering: {type(e).__name__}: {e}")
    said = "\n".join([told.text, result if isinstance(result, str) else ""])
    if not correct(result):
        return Outcome("SILENT", f"wrong result: {result!r}"[:300])
    missing = [n for n in names if n not in said]
    if missing:
        return Outcome("SILENT", f"recovered without saying {missing}")
    relevant = [line for line in said.splitlines() if any(n in line for n in names)]
    return Outcome("recovered", (relevant or said.splitlines() or ["(correct result)"])[0])


# Fixtures ------------------------------------------------------------------------------------
def synthetic_slide(tmp: Path) -> Path:
    from conftest import small_spec

    from wsigraph.data.synthetic import render_slide, write_pyramid_tiff

    spec = small_spec()
    return write_pyramid_tiff(
        tmp / "synthetic.tif", render_slide(spec), spec.base_mag, spec.mpp, min_side=128
    )


_SLIDE: list[Path] = []


def slide(tmp: Path) -> Path:
    """One rendered synthetic slide per run, copied into the probe's folder."""
    if not _SLIDE:
        _SLIDE.append(synthetic_slide(Path(tempfile.mkdtemp(prefix="probe-slide-"))))
    return Path(shutil.copy(_SLIDE[0], tmp / "slide.tif"))


def extract(slides: pd.DataFrame, out: Path) -> pd.DataFrame:
    from test_faults import _extract

    return _extract(slides, out)


def one_slide_features(tmp: Path) -> Path:
    out = tmp / "features"
    extract(pd.DataFrame({"slide_id": ["a"], "path": [str(slide(tmp))]}), out)
    return out


# 1. One bad slide in a cohort ----------------------------------------------------------------
def _cut_cohort(tmp: Path) -> tuple[pd.DataFrame, object]:
    from types import SimpleNamespace

    from wsigraph.graphs.build import build_graphs

    good = slide(tmp)
    cut = tmp / "cut.tif"
    cut.write_bytes(good.read_bytes()[:6000])
    manifest = pd.DataFrame(
        {
            "slide_id": ["s0", "s1", "cut"],
            "path": [str(good), str(good), str(cut)],
            "dataset": "esca",
            "typing": [0, 1, 1],
        }
    )
    extract(manifest, tmp / "features")
    build_graphs(manifest, tmp / "features", tmp / "graphs", progress=False)
    return manifest, SimpleNamespace(graphs_dir=tmp / "graphs")


@probe("truncated slide in a cohort: 02 -> 03 -> 04 (API)")
def _(tmp):
    from wsigraph.train.run import load_graphs

    def run():
        manifest, profile = _cut_cohort(tmp)
        return load_graphs(profile, manifest, "esca", "typing")[2]

    return recovers(run, lambda kept: kept == ["s0", "s1"], "cut", "cut.tif", "02_tiles_features")


@probe("truncated slide in a cohort, missing_slides='error'")
def _(tmp):
    from wsigraph.train.run import load_graphs

    with notices():
        manifest, profile = _cut_cohort(tmp)
    call = lambda: load_graphs(profile, manifest, "esca", "typing", missing_slides="error")  # noqa: E731
    return raises(call, "cut: no graph file", "02_tiles_features")


# 2. Cached files are verified ----------------------------------------------------------------
@probe("bit-flipped feature .pt: load_features")
def _(tmp):
    from test_faults import flip_tensor_bytes

    from wsigraph.data.features import load_features

    with notices():
        out = one_slide_features(tmp)
    flip_tensor_bytes(out / "a.pt")
    return raises(lambda: load_features(out / "a.pt"), "a.pt", "digest mismatch")


@probe("bit-flipped feature .pt: features stage rerun")
def _(tmp):
    from test_faults import flip_tensor_bytes

    from wsigraph.data.features import load_features

    with notices():
        out = one_slide_features(tmp)
    good = load_features(out / "a.pt")["features"].clone()
    flip_tensor_bytes(out / "a.pt")
    manifest = pd.DataFrame({"slide_id": ["a"], "path": [str(tmp / "slide.tif")]})

    def rerun():
        summary = extract(manifest, out)
        same = torch.equal(load_features(out / "a.pt")["features"], good)
        return summary.loc["a", "status"] == "done" and same

    return recovers(rerun, bool, "a.pt", "digest mismatch", "rebuilding")


@probe("bit-flipped graph .pt: load_graph")
def _(tmp):
    from conftest import toy_pyramid
    from test_faults import flip_tensor_bytes

    from wsigraph.graphs.pyramid import load_graph, save_graph

    save_graph(toy_pyramid(3), tmp / "g.pt")
    flip_tensor_bytes(tmp / "g.pt")
    return raises(lambda: load_graph(tmp / "g.pt"), "g.pt", "digest mismatch")


@probe("bit-flipped graph .pt: graphs stage rerun")
def _(tmp):
    from test_faults import flip_tensor_bytes

    from wsigraph.graphs.build import build_graphs
    from wsigraph.graphs.pyramid import load_graph

    manifest = pd.DataFrame({"slide_id": ["a"], "typing": [0]})
    with notices():
        feats = one_slide_features(tmp)
        build_graphs(manifest, feats, tmp / "graphs", progress=False)
    flip_tensor_bytes(tmp / "graphs" / "a.pt")

    def rerun():
        stats = build_graphs(manifest, feats, tmp / "graphs", progress=False).set_index("slide_id")
        load_graph(tmp / "graphs" / "a.pt", require_digest=True)
        return f"{stats.loc['a', 'status']}: {stats.loc['a', 'note']}"

    return recovers(rerun, lambda r: r.startswith("done"), "a.pt", "digest mismatch")


def _fold_cache(tmp: Path, damage: Callable[[dict], str]) -> Outcome:
    from test_train import CFG, toy_graphs

    from wsigraph.train.run import run_experiment

    graphs, labels = toy_graphs(12)
    cfg = type(CFG)(**(CFG.to_dict() | {"epochs": 2, "patience": 2}))
    run = dict(graphs=graphs, labels=labels, cfg=cfg, out_dir=tmp, folds=2, repeats=1)
    with notices():
        first = run_experiment("toy", **run, executor="serial", progress=False)
    path = tmp / "toy" / "fold_r0_f1.json"
    path.write_text(damage(json.loads(path.read_text())))

    def again():
        return run_experiment("toy", **run, executor="serial", progress=False)["summary"]

    return recovers(again, lambda s: s == first["summary"], "fold_r0_f1.json", "recomputing")


def _no_metric(stored: dict) -> str:
    del stored["result"]["metrics"]["auc"]
    return json.dumps(stored)


for _case, _damage in {
    "null": lambda d: "null",
    "[]": lambda d: "[]",
    '{"result": {}}': lambda d: json.dumps({"result": {}}),
    "missing metric": _no_metric,
}.items():
    probe(f"fold-cache JSON {_case}")(lambda tmp, _damage=_damage: _fold_cache(tmp, _damage))


@probe("truncated run JSON into 05's loader")
def _(tmp):
    from wsigraph.tables import load_records

    good = {"name": "ok", "summary": {"auc": {"mean": 0.8, "std": 0.1}}}
    (tmp / "ok.json").write_text(json.dumps(good))
    (tmp / "cut.json").write_text(json.dumps(good)[:25])
    return recovers(lambda: load_records(tmp), lambda r: r == {"ok": good}, "cut.json")


# 3. Slides too big or without a pyramid --------------------------------------------------------
@probe("single-level 100,000 px slide: thumbnail")
def _(tmp):
    from test_faults import _claims_huge

    from wsigraph.data.slides import Slide

    huge = Path(shutil.copy(slide(tmp), tmp / "huge.tif"))
    with pytest.MonkeyPatch.context() as mp:
        _claims_huge(mp)

        def thumb():
            with Slide(huge) as s:
                s.thumbnail(256)

        return raises(thumb, "huge.tif", "no level small enough")


@probe("single-level 100,000 px slide in a cohort")
def _(tmp):
    from test_faults import _claims_huge

    good = slide(tmp)
    huge = Path(shutil.copy(good, tmp / "huge.tif"))
    slides = pd.DataFrame({"slide_id": ["huge", "a"], "path": [str(huge), str(good)]})
    with pytest.MonkeyPatch.context() as mp:
        _claims_huge(mp)
        run = lambda: extract(slides, tmp / "features")["status"].to_dict()  # noqa: E731
        return recovers(run, lambda s: s == {"huge": "failed", "a": "done"}, "huge.tif")


# 4. The GDC client against a broken or hostile server ----------------------------------------
@contextlib.contextmanager
def gdc_server(tmp: Path):
    from test_gdc import FakeGDC, Handler

    gdc = FakeGDC(slide(tmp).read_bytes())
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.gdc = gdc
    gdc.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield gdc
    finally:
        httpd.shutdown()
        httpd.server_close()


def _client(gdc, **kw):
    from wsigraph.data.gdc import GDCClient

    return GDCClient(gdc.url, timeout=10.0, retries=3, backoff=1.0, sleep=lambda s: None, **kw)


def _hostile_search(tmp: Path, mangle, *names: str, page_size: int = 3) -> Outcome:
    with gdc_server(tmp) as gdc:
        gdc.mangle = mangle
        client = _client(gdc, page_size=page_size)
        client.max_pages = 50
        start = time.time()
        out = raises(lambda: client.diagnostic_slides("TCGA-ESCA"), *names)
        if time.time() - start > 30:
            out.message += " (took > 30 s)"
        return out


@probe("GDC: pagination count -1")
def _(tmp):
    def minus_one(body):
        body["data"]["pagination"]["count"] = -1
        return body

    return _hostile_search(tmp, minus_one, "GDCError", "data.pagination.count is -1")


@probe("GDC: pagination that never ends")
def _(tmp):
    def endless(body):
        body["data"]["pagination"]["total"] = 10**12
        body["data"]["hits"] = body["data"]["hits"] or [
            {"file_id": "again", "file_name": "again.svs"}
        ]
        body["data"]["pagination"]["count"] = len(body["data"]["hits"])
        return body

    return _hostile_search(tmp, endless, "GDCError", "max_pages", page_size=1)


@probe("GDC: a hit without file_id")
def _(tmp):
    from test_gdc import _set

    mangle = _set("data.hits.2.file_id", ...)
    return _hostile_search(tmp, mangle, "GDCError", "data.hits[2].file_id", page_size=100)


@probe("GDC: hits that are not a list")
def _(tmp):
    from test_gdc import _set

    return _hostile_search(tmp, _set("data.hits", "oops"), "GDCError", "data.hits is 'oops'")


def _download(tmp: Path, edit, check, *names: str, workers: int = 2) -> Outcome:
    with gdc_server(tmp) as gdc:
        project = edit(gdc)
        with _client(gdc) as client:
            slides = client.diagnostic_slides(project)

            def run():
                report = client.download(slides, tmp / "slides", workers=workers, progress=False)
                shown = "; ".join(f"{n}: {why}" for n, why in report.failed)
                return report, shown

            out = recovers(lambda: run()[1], bool, *names)
            if out.kind == "recovered":
                report = client.download(slides, tmp / "slides", workers=workers, progress=False)
                if not check(report, slides, gdc):
                    return Outcome("SILENT", f"wrong files on disk: {report}")
            return out


def _bad_file_size(tmp, index: int, value):
    """One file of the cohort with a broken ``file_size``: that file fails, the others arrive."""

    def edit(gdc):
        gdc.files[index]["file_size"] = value
        return "TCGA-ESCA"

    def check(report, slides, gdc):
        return len(report.downloaded) + len(report.skipped) == len(slides) - 1

    return _download(tmp, edit, check, f"file_size {value!r}", f"uuid-{index}")


@probe('GDC: file_size "12abc"')
def _(tmp):
    return _bad_file_size(tmp, 1, "12abc")


@probe("GDC: negative file_size")
def _(tmp):
    return _bad_file_size(tmp, 2, -5)


@probe("GDC: X.svs and X.svs.part, 2 workers")
def _(tmp):
    import hashlib

    def edit(gdc):
        blob = gdc.blobs["uuid-0"]
        gdc.add_file("id-x", "X.svs", blob[:400_000], "TCGA-PART", "TCGA-PA-0001")
        gdc.add_file("id-p", "X.svs.part", blob[500_000:800_000], "TCGA-PART", "TCGA-PA-0002")
        return "TCGA-PART"

    def check(report, slides, gdc):
        x = tmp / "slides" / "X.svs"
        same = hashlib.md5(x.read_bytes()).hexdigest() == gdc.files[-2]["md5sum"]
        return same and [n for n, _ in report.failed] == ["X.svs.part"]

    return _download(tmp, edit, check, "X.svs.part", "unfinished downloads")


# 5. Bad values reach the user as errors ------------------------------------------------------
class RunAllRefused(Exception):
    """``run_all --check`` returned non-zero; the text is what it printed."""


def _run_all(*args: str) -> Callable[[], None]:
    from wsigraph import pipeline

    def run():
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = pipeline.main([*args, "--check"])
        if code != 0:
            raise RunAllRefused(err.getvalue().strip())

    return run


BAD_P = {
    "-p n_slides abc": (["-p", "n_slides", "abc"], "n_slides", "01_cohort", "whole number", "abc"),
    "-p slide_size [100,100]": (["-p", "slide_size", "[100,100]"], "at least 256 px"),
    "-p slide_size 768": (["-p", "slide_size", "768"], "slide_size", "a list", "768"),
    "-p epochs 2.5": (["-p", "epochs", "2.5"], "epochs", "04_train", "whole number", "2.5"),
    "-p folds 1": (["-p", "folds", "1"], "folds must be at least 2"),
    "-p gdc_dry_run 1": (["-p", "gdc_dry_run", "1"], "gdc_dry_run", "true or false"),
    "-p lr fast": (["-p", "lr", "fast"], "lr", "a number", "'fast'"),
    "-p tasks crc3": (["-p", "tasks", "crc3"], "tasks", "08_abignet", "a list"),
    "-p epoch 3 (unknown name)": (["-p", "epoch", "3"], "unknown parameter", "epoch"),
}
for _name, (_args, *_names) in BAD_P.items():
    probe(_name)(lambda tmp, a=_args, n=_names: raises(_run_all(*a), *n))


def _toy(n: int = 6):
    from test_train import toy_graphs

    return toy_graphs(n)


def _train(graphs, labels, tmp):
    from test_train import CFG

    from wsigraph.train.run import run_experiment

    cfg = type(CFG)(**(CFG.to_dict() | {"epochs": 1}))
    return lambda: run_experiment(
        "p", graphs, labels, cfg, tmp, folds=2, repeats=1, executor="serial", progress=False
    )


@probe("NaN features through run_experiment")
def _(tmp):
    graphs, labels = _toy()
    graphs[2].x[0, 1] = float("nan")
    return raises(_train(graphs, labels, tmp), graphs[2].slide_id, "non-finite")


@probe("NaN features, h2mil model")
def _(tmp):
    from conftest import toy_pyramid

    from wsigraph.train.loop import TrainConfig
    from wsigraph.train.run import run_experiment

    graphs = [toy_pyramid(3, seed=i) for i in range(6)]
    for i, g in enumerate(graphs):
        g.slide_id = f"slide-{i}"
    graphs[4].x[3, 0] = float("nan")
    labels = np.arange(6) % 2
    cfg = TrainConfig("h2mil", {}, lr=1e-3, epochs=1, batch_size=2)
    run = lambda: run_experiment(  # noqa: E731
        "h", graphs, labels, cfg, tmp, folds=2, repeats=1, executor="serial", progress=False
    )
    return raises(run, "slide-4", "non-finite")


@probe("NaN features through run_mico_experiment")
def _(tmp):
    from test_mico_official import TINY, cohort

    from wsigraph.train.mico import mico_train_config, run_mico_experiment

    graphs, labels = cohort(16)
    graphs[5].x[-1, 2] = float("nan")
    cfg = mico_train_config(dict(dim=8, n_clusters=4, anchors="learned"), epochs=1, device="cpu")
    run = lambda: run_mico_experiment(  # noqa: E731
        "m", graphs, "typing", cfg, tmp, labels=labels, folds=2, protocol=TINY
    )
    return raises(run, "s05", "non-finite")


@probe("NaN features through run_survival_experiment")
def _(tmp):
    from test_survival import _graph

    from wsigraph.train.loop import TrainConfig
    from wsigraph.train.survival import run_survival_experiment

    graphs = [_graph(i, 2 + i % 3, 0.0) for i in range(20)]
    graphs[3].x[1, 0] = float("nan")
    cfg = TrainConfig("abmil", epochs=1, batch_size=4, lr=1e-3, seed=0)
    times, cens = np.arange(20) + 1.0, (np.arange(20) % 3 == 0).astype(int)
    run = lambda: run_survival_experiment(  # noqa: E731
        "s", graphs, times, cens, cfg, tmp, 2, 1, n_bins=2, progress=False
    )
    return raises(run, "s03", "non-finite")


@probe("mismatched feature widths")
def _(tmp):
    graphs, labels = _toy()
    graphs[4].x = torch.zeros(graphs[4].num_nodes, 9)
    return raises(_train(graphs, labels, tmp), graphs[4].slide_id, graphs[0].slide_id)


@probe("labels {0, 2}")
def _(tmp):
    graphs, labels = _toy()
    return raises(_train(graphs, np.where(labels == 1, 2, 0), tmp), "labels", "[1]")


for _n in (0, 1):

    def _tiny_graph(tmp, n=_n):
        graphs, labels = _toy()
        graphs[3].x = graphs[3].x[:n]
        return raises(_train(graphs, labels, tmp), graphs[3].slide_id, f"({n} node")

    probe(f"{_n}-node graph in a batch")(_tiny_graph)


@probe("folds hint (1 slide of a class, folds=5)")
def _(tmp):
    from wsigraph.train.cv import make_splits

    def split():
        make_splits(np.array([0] * 10 + [1]), folds=5, repeats=1)

    out = raises(split, "folds >= 2", "slides per class")
    if "at most 1" in out.message:
        out.kind = "UNCLEAR error"
    return out


@probe("disk full while torch.save writes")
def _(tmp):
    from collections import namedtuple

    from wsigraph import io as wio

    if not os.path.exists("/dev/full"):
        return Outcome("SILENT", "not run: no /dev/full here")
    usage = namedtuple("usage", "total used free")
    target = wio.write_text(tmp / "feats.pt", "old")

    def full_tmp(path: Path) -> Path:
        link = path.with_name(f".{path.name}.full.tmp")
        link.symlink_to("/dev/full")
        return link

    def save():
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(wio, "_new_tmp", full_tmp)
            mp.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 0))
            with wio.atomic_path(target) as t:
                torch.save({"features": torch.zeros(1000)}, t)

    out = raises(save, "no space left on device", str(target))
    if out.kind == "clear error" and target.read_text() != "old":
        return Outcome("SILENT", "the old file was damaged")
    return out


@probe("directory named x.svs")
def _(tmp):
    from wsigraph.data.slides import Slide

    (tmp / "x.svs").mkdir()
    return raises(lambda: Slide(tmp / "x.svs"), "x.svs", "is a directory")


# 6. Files honour the umask -------------------------------------------------------------------
@probe("umask 077: files written through wsigraph.io")
def _(tmp):
    from wsigraph.io import write_text

    old = os.umask(0o077)
    try:
        mode = write_text(tmp / "x.txt", "x").stat().st_mode & 0o777
    finally:
        os.umask(old)
    if mode == 0o600:
        return Outcome("holds", f"mode {mode:04o} under umask 0077")
    return Outcome("SILENT", f"mode {mode:04o} under umask 0077 (expected 0600)")


# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", default="", help="run only the probes whose name contains this")
    args = ap.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread only adds contention
    rows = []
    try:
        for name, fn in PROBES:
            if args.k.lower() not in name.lower():
                continue
            with tempfile.TemporaryDirectory(prefix="probe-") as tmp:
                t0 = time.time()
                try:
                    out = fn(Path(tmp))
                except Exception:  # noqa: BLE001  (a probe that breaks is a finding too)
                    out = Outcome("PROBE BROKE", traceback.format_exc().strip().splitlines()[-1])
            first = out.message.strip().splitlines()[0] if out.message.strip() else ""
            rows.append((name, out.kind, first, time.time() - t0))
            print(f"{name} | {out.kind} | {first[:160]}", file=sys.stderr, flush=True)
    finally:
        torch.set_num_threads(threads)
        while _SLIDE:
            shutil.rmtree(_SLIDE.pop().parent, ignore_errors=True)
    print("\n| probe | outcome | message (first line) |\n|---|---|---|")
    for name, kind, first, _ in rows:
        print(f"| {name} | {kind} | {first[:220].replace('|', '/')} |")
    bad = [r for r in rows if r[1] not in ("clear error", "recovered", "holds")]
    print(f"\n{len(rows)} probes, {len(bad)} not clear or not recovered")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
