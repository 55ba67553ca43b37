"""GDC client against a loopback server that speaks /files, /cases and /data with faults.

The server (stdlib ``ThreadingHTTPServer`` on 127.0.0.1, port 0) serves slices of the real
Aperio slide as GDC files, paginates search hits by ``size``/``from``, honours ``Range``, and
injects per-file faults: a connection dropped halfway, HTTP 500, wrong bytes, 200 to a range.
Nothing reaches the network; back-off sleeps are recorded, not slept.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import socket
import threading
from collections import namedtuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from wsigraph.data import gdc as gdc_module
from wsigraph.data.gdc import (
    CLINICAL_FIELDS,
    SLIDE_FIELDS,
    DownloadReport,
    GDCClient,
    GDCError,
    InsufficientDiskSpaceError,
    UnsafeFileNameError,
    raise_for_failures,
    safe_file_name,
)

ALWAYS = 10**9


class FakeGDC:
    """State of the loopback server: hits, file bytes, a request log and per-test faults."""

    def __init__(self, slide: bytes):
        self.blobs: dict[str, bytes] = {}
        self.files: list[dict] = []  # /files hits
        self.cases: list[dict] = []  # /cases hits
        for i in range(7):  # 7 ESCA slides: the whole slide, then overlapping slices of it
            blob = slide if i == 0 else slide[i * 150_000 : i * 150_000 + 300_000 + i * 1111]
            self.add_file(f"uuid-{i}", f"TCGA-ESCA-{i}.svs", blob, "TCGA-ESCA", f"TCGA-L5-{i:04d}")
        self.add_file("uuid-kich", "TCGA-KICH-0.svs", slide[:1000], "TCGA-KICH", "TCGA-KL-0001")
        self.log: list[tuple[str, dict, dict]] = []  # (path, headers, query)
        self.faults: dict[str, dict[str, int]] = {}  # file id or "/files" -> fault -> times left
        self.lock = threading.Lock()
        self.url = ""
        self.mangle = None  # a hostile server: rewrites each search answer before it is sent

    def add_file(self, file_id, name, blob, project, case):
        self.blobs[file_id] = blob
        self.files.append(
            {
                "id": file_id,
                "file_id": file_id,
                "file_name": name,
                "md5sum": hashlib.md5(blob).hexdigest(),
                "file_size": len(blob),
                "state": "released",
                "cases": [
                    {
                        "submitter_id": case,
                        "case_id": f"case-{case}",
                        "project": {"project_id": project},
                    }
                ],
            }
        )

    def fault(self, key: str, kind: str, times: int = 1) -> None:
        self.faults.setdefault(key, {})[kind] = times

    def take(self, key: str, kind: str) -> bool:
        """Whether fault ``kind`` fires now for ``key`` (and use one of its times)."""
        with self.lock:
            left = self.faults.get(key, {}).get(kind, 0)
            if left > 0:
                self.faults[key][kind] = left - 1
            return left > 0

    def requests(self, prefix: str) -> list[tuple[str, dict, dict]]:
        return [r for r in self.log if r[0].startswith(prefix)]

    def flat(self, project="TCGA-ESCA") -> list[dict]:
        """The download dicts of a project's files, as ``diagnostic_slides`` returns them."""
        keys = ("file_id", "file_name", "md5sum", "file_size")
        return [
            {k: h[k] for k in keys}
            for h in self.files
            if h["cases"][0]["project"]["project_id"] == project
        ]


def _projects(tree) -> set[str]:
    """Project ids named anywhere in a GDC filter tree."""
    if isinstance(tree, dict):
        content = tree.get("content")
        if isinstance(content, dict) and content.get("field", "").endswith("project_id"):
            return set(content["value"])
        if isinstance(content, list):
            return set().union(*(_projects(c) for c in content))
    return set()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        gdc: FakeGDC = self.server.gdc
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        with gdc.lock:
            gdc.log.append((url.path, dict(self.headers), query))
        if url.path in ("/files", "/cases"):
            self.search(gdc, url.path, query)
        elif url.path.startswith("/data/"):
            self.data(gdc, url.path.removeprefix("/data/"))
        else:
            self.reply(404, b"no such endpoint")

    def reply(self, status: int, body: bytes, headers: dict | None = None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def search(self, gdc: FakeGDC, path: str, query: dict):
        if gdc.take(path, "500"):
            return self.reply(500, b"internal error")
        if gdc.take(path, "400"):
            return self.reply(400, b'{"message": "invalid filters"}')
        if query.get("format") != "json" or "fields" not in query:
            return self.reply(400, b"format=json and fields are required")
        try:
            projects = _projects(json.loads(query["filters"]))
        except (KeyError, ValueError):
            return self.reply(400, b"filters must be JSON")
        size, start = int(query.get("size", 10)), int(query.get("from", 0))
        source = gdc.files if path == "/files" else gdc.cases
        hits = [
            h
            for h in source
            if (h["cases"][0] if path == "/files" else h)["project"]["project_id"] in projects
        ]
        page = hits[start : start + size]
        pagination = {
            "count": len(page),
            "total": len(hits),
            "size": size,
            "from": start,
            "sort": "",
            "page": start // size + 1,
            "pages": -(-len(hits) // size),
        }
        body = {"data": {"hits": page, "pagination": pagination}, "warnings": {}}
        if gdc.mangle is not None:
            body = gdc.mangle(copy.deepcopy(body))
        self.reply(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def data(self, gdc: FakeGDC, file_id: str):
        if file_id not in gdc.blobs:
            return self.reply(404, f"file {file_id} not found".encode())
        if gdc.take(file_id, "500"):
            return self.reply(500, b"internal error")
        blob = gdc.blobs[file_id]
        if gdc.take(file_id, "bad_md5"):  # same size, one byte changed
            mid = len(blob) // 2
            blob = blob[:mid] + bytes([blob[mid] ^ 0xFF]) + blob[mid + 1 :]
        rng = self.headers.get("Range")
        if rng and not gdc.take(file_id, "ignore_range"):
            start = int(rng.removeprefix("bytes=").split("-")[0])
            status, body = 206, blob[start:]
            extra = {"Content-Range": f"bytes {start}-{len(blob) - 1}/{len(blob)}"}
        else:
            status, body, extra = 200, blob, {}
        self.send_response(status)
        for k, v in (extra | {"Content-Length": str(len(body))}).items():
            self.send_header(k, v)
        self.end_headers()
        if gdc.take(file_id, "drop"):  # full Content-Length promised, half sent, then hang up
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture
def server(real_slide):
    gdc = FakeGDC(real_slide.read_bytes())
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.gdc = gdc
    gdc.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield gdc
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(server, sleeps):
    with GDCClient(server.url, timeout=10.0, retries=3, backoff=1.0, sleep=sleeps.append) as c:
        yield c


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ------------------------------------------------------------------- queries


def test_query_pages_through_all_hits(server, sleeps):
    c = GDCClient(server.url, page_size=3, sleep=sleeps.append)
    slides = c.diagnostic_slides("TCGA-ESCA")
    assert [s["file_id"] for s in slides] == [f"uuid-{i}" for i in range(7)]  # not the KICH one
    assert set(slides[0]) == {
        "file_id",
        "file_name",
        "md5sum",
        "file_size",
        "case_submitter_id",
        "case_id",
        "project_id",
    }
    assert slides[3]["case_submitter_id"] == "TCGA-L5-0003"
    assert slides[3]["project_id"] == "TCGA-ESCA"

    pages = server.requests("/files")
    assert [(q["from"], q["size"]) for _, _, q in pages] == [("0", "3"), ("3", "3"), ("6", "3")]
    query = pages[0][2]
    assert query["format"] == "json"
    assert query["fields"].split(",") == list(SLIDE_FIELDS)
    clauses = {
        c["content"]["field"]: c["content"]["value"]
        for c in json.loads(query["filters"])["content"]
    }
    assert clauses == {
        "cases.project.project_id": ["TCGA-ESCA"],
        "data_format": ["SVS"],
        "experimental_strategy": ["Diagnostic Slide"],
        "access": ["open"],
    }
    assert sleeps == []


def test_clinical_flattens_first_diagnosis(server, client):
    server.cases = [
        {
            "submitter_id": "TCGA-L5-0000",
            "case_id": "c0",
            "project": {"project_id": "TCGA-ESCA"},
            "diagnoses": [
                {"primary_diagnosis": "Adenocarcinoma, NOS", "ajcc_pathologic_stage": "Stage II"},
                {"primary_diagnosis": "Recurrence", "ajcc_pathologic_stage": "Stage IV"},
            ],
            "demographic": {"vital_status": "Dead", "days_to_death": 400},
        },
        {"submitter_id": "TCGA-L5-0001", "case_id": "c1", "project": {"project_id": "TCGA-ESCA"}},
        {"submitter_id": "TCGA-KL-0001", "case_id": "k", "project": {"project_id": "TCGA-KICH"}},
    ]
    rows = client.clinical("TCGA-ESCA")
    assert [r["case_id"] for r in rows] == ["c0", "c1"]
    assert rows[0]["primary_diagnosis"] == "Adenocarcinoma, NOS"
    assert rows[0]["ajcc_pathologic_stage"] == "Stage II"
    assert rows[0]["vital_status"] == "Dead" and rows[0]["days_to_death"] == 400
    assert rows[1]["primary_diagnosis"] is None and rows[1]["vital_status"] is None
    query = server.requests("/cases")[0][2]
    assert query["fields"].split(",") == list(CLINICAL_FIELDS)
    assert _projects(json.loads(query["filters"])) == {"TCGA-ESCA"}


def test_query_retries_5xx_with_exponential_backoff(server, client, sleeps):
    server.fault("/files", "500", times=2)
    assert len(client.diagnostic_slides("TCGA-ESCA")) == 7
    assert sleeps == [1.0, 2.0]
    assert len(server.requests("/files")) == 3


def test_query_gives_up_after_retries(server, client, sleeps):
    server.fault("/files", "500", times=ALWAYS)
    with pytest.raises(GDCError, match=r"/files: failed after 4 attempts; last error: HTTP 500"):
        client.diagnostic_slides("TCGA-ESCA")
    assert sleeps == [1.0, 2.0, 4.0]


def test_query_4xx_raises_at_once(server, client, sleeps):
    server.fault("/files", "400")
    with pytest.raises(GDCError, match="HTTP 400.*invalid filters"):
        client.diagnostic_slides("TCGA-ESCA")
    assert len(server.requests("/files")) == 1 and sleeps == []


def test_query_retries_connection_errors(sleeps):
    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = GDCClient(f"http://127.0.0.1:{port}", retries=2, sleep=sleeps.append)
    with pytest.raises(GDCError, match=rf"127.0.0.1:{port}/files: failed after 3 .*Connection"):
        c.query("files", None, ["file_id"])
    assert sleeps == [1.0, 2.0]


# ----------------------------------------------------------------- downloads


def test_download_with_workers(server, client, tmp_path):
    files = server.flat()
    report = client.download(files, tmp_path / "slides", workers=3, progress=True)
    assert report.downloaded == [f["file_name"] for f in files]  # input order
    assert report.failed == [] and report.skipped == []
    assert report.bytes == sum(f["file_size"] for f in files)
    for f in files:
        assert md5(tmp_path / "slides" / f["file_name"]) == f["md5sum"]
    assert not list((tmp_path / "slides").glob("*.part"))
    summary = report.summary()
    assert list(summary.columns) == ["file_name", "status", "size", "reason"]
    assert (summary["status"] == "downloaded").all() and len(summary) == 7
    raise_for_failures(report)  # nothing to raise


def test_dropped_connection_resumes_with_range(server, client, sleeps, tmp_path):
    f = server.flat()[0]  # the whole 1.9 MB slide
    server.fault(f["file_id"], "drop")
    report = client.download([f], tmp_path, progress=False)
    assert report.downloaded == [f["file_name"]]
    assert md5(tmp_path / f["file_name"]) == f["md5sum"]
    first, second = server.requests("/data/")
    assert "Range" not in first[1]
    # Resumes from what reached the disk: the half sent, less the unfinished last chunk.
    start = int(second[1]["Range"].removeprefix("bytes=").removesuffix("-"))
    assert f["file_size"] // 2 - client.chunk_size < start <= f["file_size"] // 2
    assert report.bytes == f["file_size"] and sleeps == [1.0]


def test_interrupted_part_file_continues(server, client, real_slide, tmp_path):
    f = server.flat()[0]
    half = f["file_size"] // 2
    (tmp_path / (f["file_name"] + ".part")).write_bytes(real_slide.read_bytes()[:half])
    report = client.download([f], tmp_path, progress=False)
    assert report.downloaded == [f["file_name"]] and report.bytes == f["file_size"] - half
    assert [r[1].get("Range") for r in server.requests("/data/")] == [f"bytes={half}-"]
    assert md5(tmp_path / f["file_name"]) == f["md5sum"]
    assert not (tmp_path / (f["file_name"] + ".part")).exists()


def test_200_to_a_range_request_restarts_from_zero(server, client, real_slide, tmp_path):
    f = server.flat()[0]
    (tmp_path / (f["file_name"] + ".part")).write_bytes(real_slide.read_bytes()[:1000])
    server.fault(f["file_id"], "ignore_range")
    report = client.download([f], tmp_path, progress=True)  # the bar takes the 1000 bytes back
    assert report.downloaded == [f["file_name"]]
    assert (tmp_path / f["file_name"]).stat().st_size == f["file_size"]  # not appended
    assert md5(tmp_path / f["file_name"]) == f["md5sum"]
    assert len(server.requests("/data/")) == 1


def test_bad_md5_once_is_fetched_again(server, client, tmp_path):
    f = server.flat()[1]
    server.fault(f["file_id"], "bad_md5")
    report = client.download([f], tmp_path, progress=False)
    assert report.downloaded == [f["file_name"]]
    assert md5(tmp_path / f["file_name"]) == f["md5sum"]
    assert [r[1].get("Range") for r in server.requests("/data/")] == [None, None]  # from scratch


def test_bad_md5_always_fails_that_file_only(server, client, tmp_path):
    bad, good = server.flat()[1:3]
    server.fault(bad["file_id"], "bad_md5", times=ALWAYS)
    report = client.download([bad, good], tmp_path, workers=2, progress=False)
    assert report.downloaded == [good["file_name"]]
    [(name, reason)] = report.failed
    assert name == bad["file_name"] and "md5" in reason and "after 4 attempts" in reason
    assert tree(tmp_path) == {good["file_name"]}  # no corrupt file, no .part
    assert len(server.requests(f"/data/{bad['file_id']}")) == 4
    with pytest.raises(GDCError, match=bad["file_name"]):
        raise_for_failures(report)


def test_data_5xx_then_success(server, client, sleeps, tmp_path):
    f = server.flat()[2]
    server.fault(f["file_id"], "500", times=2)
    report = client.download([f], tmp_path, progress=False)
    assert report.downloaded == [f["file_name"]] and sleeps == [1.0, 2.0]
    assert md5(tmp_path / f["file_name"]) == f["md5sum"]


def test_data_4xx_fails_at_once_and_others_go_on(server, client, sleeps, tmp_path):
    missing = {"file_id": "nope", "file_name": "x.svs", "md5sum": "0" * 32, "file_size": 10}
    good = server.flat()[3]
    report = client.download([missing, good], tmp_path, workers=2, progress=False)
    assert report.downloaded == [good["file_name"]]
    assert report.failed[0][0] == "x.svs" and "HTTP 404" in report.failed[0][1]
    assert len(server.requests("/data/nope")) == 1 and sleeps == []


@pytest.mark.parametrize(
    "name",
    ["../evil.svs", "/etc/passwd", "a\x00b.svs", "", ".", "..", "a\\b.svs", "x\n.svs", "C:x.svs"],
)
def test_safe_file_name_refuses(name):
    with pytest.raises(UnsafeFileNameError, match="file uuid-9"):
        safe_file_name(name, "uuid-9")
    assert issubclass(UnsafeFileNameError, ValueError)


def test_safe_file_name_keeps_gdc_names():
    name = "TCGA-L5-A4OE-01Z-00-DX1.A1B2C3D4-0000-4000-8000-000000000000.svs"
    assert safe_file_name(name) == name
    assert safe_file_name("..hidden.svs") == "..hidden.svs"  # dots, but not a path part


def test_malicious_names_are_refused(server, client, tmp_path):
    slide = server.blobs["uuid-0"]
    for i, evil in enumerate(["../evil.svs", "/etc/passwd", "a\x00b.svs"]):
        server.add_file(f"evil-{i}", evil, slide[:5000], "TCGA-EVIL", "TCGA-EV-0001")
    slides = client.diagnostic_slides("TCGA-EVIL")
    assert [s["file_name"] for s in slides] == ["../evil.svs", "/etc/passwd", "a\x00b.svs"]
    dest = tmp_path / "dest"
    report = client.download(slides, dest, progress=False)
    assert [n for n, _ in report.failed] == ["../evil.svs", "/etc/passwd", "a\x00b.svs"]
    assert all("unsafe" in why and "evil-" in why for _, why in report.failed)
    assert report.downloaded == [] and server.requests("/data/") == []
    assert tree(tmp_path) == set()  # not even dest: nothing was to be fetched
    with pytest.raises(GDCError, match="evil.svs"):
        raise_for_failures(report)


def test_duplicate_names_fail_the_second(server, client, tmp_path):
    a, b = server.flat()[:2]
    report = client.download([a, b | {"file_name": a["file_name"]}], tmp_path, progress=False)
    assert report.downloaded == [a["file_name"]]
    assert report.failed == [(a["file_name"], f"duplicate file name (file {b['file_id']})")]
    assert md5(tmp_path / a["file_name"]) == a["md5sum"]


def test_complete_files_are_skipped(server, client, tmp_path):
    f = server.flat()[4]
    (tmp_path / f["file_name"]).write_bytes(server.blobs[f["file_id"]])
    report = client.download([f], tmp_path, progress=False)
    assert report.skipped == [f["file_name"]] and report.downloaded == []
    assert server.requests("/data/") == []

    # Same size, wrong bytes: only verify_existing notices, and the file is replaced.
    (tmp_path / f["file_name"]).write_bytes(b"\0" * f["file_size"])
    assert client.download([f], tmp_path, progress=False).skipped == [f["file_name"]]
    report = client.download([f], tmp_path, progress=False, verify_existing=True)
    assert report.downloaded == [f["file_name"]]
    assert md5(tmp_path / f["file_name"]) == f["md5sum"]


def test_a_file_in_gdc_clients_layout_is_used_in_place(server, client, tmp_path):
    f = server.flat()[4]
    where = tmp_path / f["file_id"] / f["file_name"]  # gdc-client download <file_id>
    where.parent.mkdir()
    where.write_bytes(server.blobs[f["file_id"]])
    report = client.download([f], tmp_path, progress=False, verify_existing=True)
    assert report.skipped == [f["file_name"]] and report.located == {f["file_name"]: where}
    assert server.requests("/data/") == [] and not (tmp_path / f["file_name"]).exists()


def test_dry_run_lists_without_fetching(server, client, tmp_path):
    files = server.flat()[:3]
    (tmp_path / files[0]["file_name"]).write_bytes(server.blobs[files[0]["file_id"]])
    report = client.download(files, tmp_path, dry_run=True)
    assert isinstance(report, DownloadReport) and report.dry_run
    assert report.skipped == [files[0]["file_name"]]
    assert report.planned == [(f["file_name"], f["file_size"]) for f in files[1:]]
    assert report.planned_bytes == files[1]["file_size"] + files[2]["file_size"]
    assert report.downloaded == [] and report.bytes == 0
    assert server.requests("/data/") == []
    assert tree(tmp_path) == {files[0]["file_name"]}
    summary = report.summary()
    assert summary["status"].tolist() == ["to_download", "to_download", "skipped"]
    assert summary["size"].tolist() == [f["file_size"] for f in (*files[1:], files[0])]
    assert "dry run: would download 2 files" in str(report) and "1 already present" in str(report)


def test_disk_space_check(server, client, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1234, 1234))
    files = server.flat()[:2]
    need = sum(f["file_size"] for f in files)
    with pytest.raises(InsufficientDiskSpaceError, match=rf"{need} bytes .* only 1234 bytes"):
        client.download(files, tmp_path, progress=False)
    assert server.requests("/data/") == []


# ------------------------------------------------------------------- the cohort build


def test_interrupted_cohort_build_continues_where_it_stopped(server, client, tmp_path, monkeypatch):
    """build_tcga_cohort against the loopback GDC: a first run fails one slide (bad bytes every
    time) and keeps the rest; the rerun fetches only that slide and completes the manifest."""
    from wsigraph.data.cohort import build_tcga_cohort, read_manifest
    from wsigraph.profiles import get_profile

    monkeypatch.setenv("WSIGRAPH_WORK", str(tmp_path / "work"))
    profile = get_profile("tcga")
    profile.work_dir.mkdir(parents=True)
    server.cases = _labelled_cases(server)
    broken = server.flat()[3]
    server.fault(broken["file_id"], "bad_md5", ALWAYS)
    manifest, report = build_tcga_cohort(profile, client, workers=2, progress=False)
    assert [name for name, _ in report.failed] == [broken["file_name"]]
    assert len(manifest) == 7 and broken["file_name"] not in set(manifest["file_name"])
    assert not (profile.slides_dir / broken["file_name"]).exists()
    fetched = len(server.requests("/data/"))

    server.faults.clear()  # the GDC serves the right bytes again
    manifest, report = build_tcga_cohort(profile, client, workers=2, progress=False)
    assert report.downloaded == [broken["file_name"]] and len(report.skipped) == 7
    assert len(server.requests("/data/")) == fetched + 1  # only the missing slide
    assert len(read_manifest(profile.cohort_csv)) == 8
    assert md5(profile.slides_dir / broken["file_name"]) == broken["md5sum"]


@pytest.mark.slow
def test_01_cohort_on_the_tcga_profile_against_the_loopback_gdc(
    server, real_slide, tmp_path, monkeypatch
):
    """`./run_all.sh --profile tcga --only 01` end to end: the notebook's GDC branch queries,
    labels, downloads (real slide bytes), writes the manifest, the pin and the class counts."""
    from wsigraph import pipeline
    from wsigraph.data.cohort import read_manifest

    monkeypatch.setenv("WSIGRAPH_WORK", str(tmp_path / "work"))
    monkeypatch.setenv("WSIGRAPH_RESULTS", str(tmp_path / "results"))
    blob = real_slide.read_bytes()
    server.files, server.blobs = [], {}
    cases = [
        ("TCGA-ESCA", "TCGA-E1-0001", "Adenocarcinoma, NOS", "Stage I"),
        ("TCGA-ESCA", "TCGA-E1-0002", "Squamous cell carcinoma, NOS", "Stage IIIA"),
        ("TCGA-KIRP", "TCGA-P1-0001", "Papillary adenocarcinoma, NOS", "Stage II"),
        ("TCGA-KICH", "TCGA-H1-0001", "Renal cell carcinoma, chromophobe type", "Stage IV"),
    ]
    server.cases = []
    for i, (project, case, diagnosis, stage) in enumerate(cases):
        server.add_file(f"id-{i}", f"{case}-01Z-00-DX1.{i}.svs", blob, project, case)
        server.cases.append(
            {
                "submitter_id": case,
                "case_id": f"case-{case}",
                "project": {"project_id": project},
                "diagnoses": [{"primary_diagnosis": diagnosis, "ajcc_pathologic_stage": stage}],
            }
        )
    args = ["--profile", "tcga", "--only", "01", "-p", "gdc_url", server.url]
    assert pipeline.main(args) == 0
    work, results = tmp_path / "work" / "tcga", tmp_path / "results" / "tcga"
    manifest = read_manifest(work / "cohort.csv").set_index("case_id")
    assert manifest.loc[[c for _, c, _, _ in cases], "typing_name"].tolist() == [
        "adenocarcinoma",
        "squamous",
        "KIRP",
        "KICH",
    ]
    assert manifest.loc[[c for _, c, _, _ in cases], "staging"].tolist() == [0, 1, 0, 1]
    assert (work / "cohort_pinned.csv").exists() and len(list((work / "slides").iterdir())) == 4
    assert (results / "tables" / "cohort_class_counts.csv").exists()
    assert (results / "figures" / "cohort_thumbnails.png").stat().st_size > 10_000


def test_truncated_final_file_is_fetched_again(server, client, tmp_path):
    """A file under its final name whose size is not the GDC's (cut short by a full disk, or a
    different file copied in by hand) is not 'already present': it is fetched and verified."""
    f = server.flat()[4]
    blob = server.blobs[f["file_id"]]
    final = tmp_path / f["file_name"]
    for wrong in (blob[: len(blob) // 2], blob + b"\0" * 10):
        final.write_bytes(wrong)
        report = client.download([f], tmp_path, progress=False)
        assert report.skipped == [] and report.downloaded == [f["file_name"]]
        assert md5(final) == f["md5sum"]
    assert len(server.requests("/data/")) == 2


def test_cohort_rule_on_the_gdc_path(server, client, tmp_path, monkeypatch):
    """build_tcga_cohort against the loopback GDC keeps only the cases whose typing and staging
    are both known (the papers' rule): a case without a stage is neither listed nor fetched;
    ``require_both=False`` keeps it with an empty staging label."""
    from wsigraph.data.cohort import build_tcga_cohort
    from wsigraph.profiles import get_profile

    monkeypatch.setenv("WSIGRAPH_WORK", str(tmp_path / "work"))
    profile = get_profile("tcga")
    profile.work_dir.mkdir(parents=True)
    hits = [h["cases"][0] for h in server.files]
    stageless = hits[0]["submitter_id"]
    server.cases = [
        {
            "submitter_id": c["submitter_id"],
            "case_id": c["case_id"],
            "project": c["project"],
            "diagnoses": [
                {
                    "primary_diagnosis": "Squamous cell carcinoma, NOS",
                    "ajcc_pathologic_stage": (
                        "Not Reported" if c["submitter_id"] == stageless else "Stage IIIB"
                    ),
                }
            ],
        }
        for c in hits
    ]
    manifest, report = build_tcga_cohort(profile, client, dry_run=True, progress=False)
    assert len(manifest) == len(hits) - 1 and stageless not in set(manifest["case_id"])
    assert manifest["staging"].notna().all() and manifest["typing"].notna().all()
    assert len(report.planned) == len(hits) - 1 and server.requests("/data/") == []
    either, _ = build_tcga_cohort(profile, client, dry_run=True, progress=False, require_both=False)
    assert len(either) == len(hits) and either["staging"].isna().sum() == 1

    # under ./run_all.sh (WSIGRAPH_PROGRESS=terminal) the listing also reaches the terminal
    import io

    from wsigraph import progress

    terminal = io.StringIO()
    monkeypatch.setattr(progress, "_terminal", terminal)
    monkeypatch.setenv(progress.ENV, "terminal")
    build_tcga_cohort(profile, client, dry_run=True, progress=False)
    listing = terminal.getvalue()
    assert listing.startswith(f"GDC dry run: would download {len(hits) - 1} files")
    assert all(name in listing for name in report.summary()["file_name"])


# ------------------------------------------------------------- a broken or hostile server


def _one_line_gdc_error(err: pytest.ExceptionInfo, *fragments: str) -> str:
    """A GDCError (not a raw KeyError / AttributeError) on one line, naming every fragment."""
    assert type(err.value) is GDCError, repr(err.value)
    msg = str(err.value)
    assert "\n" not in msg, msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)
    return msg


def test_pagination_count_minus_one_is_refused_at_once(server, sleeps):
    """count: -1 used to move `from` backwards for ever."""
    c = GDCClient(server.url, page_size=3, sleep=sleeps.append)
    c.max_pages = 50  # refused on the first page, long before any cap

    def minus_one(body):
        body["data"]["pagination"]["count"] = -1
        return body

    server.mangle = minus_one
    with pytest.raises(GDCError) as err:
        c.diagnostic_slides("TCGA-ESCA")
    _one_line_gdc_error(err, "/files (from=0)", "data.pagination.count is -1", "(3)")
    assert len(server.requests("/files")) == 1


def test_pagination_that_never_ends_is_capped(server, sleeps):
    """Every page full, `total` never reached: stopped after max_pages, naming the field."""
    c = GDCClient(server.url, page_size=1, sleep=sleeps.append)
    c.max_pages = 4

    def endless(body):
        body["data"]["pagination"]["total"] = 10**12
        body["data"]["hits"] = body["data"]["hits"] or [{"file_id": "again"}]
        body["data"]["pagination"]["count"] = len(body["data"]["hits"])
        return body

    server.mangle = endless
    with pytest.raises(GDCError) as err:
        c.query("files", {"op": "in", "content": {"field": "project_id", "value": ["x"]}}, "a")
    _one_line_gdc_error(err, "data.pagination.total (1000000000000)", "max_pages=4")
    assert len(server.requests("/files")) == 4


def test_empty_page_before_total_is_not_a_silent_end(server, client):
    """An empty page while `total` says more hits exist would lose them without a word."""

    def short(body):
        body["data"]["pagination"]["total"] += 5
        return body

    server.mangle = short
    with pytest.raises(GDCError) as err:
        client.diagnostic_slides("TCGA-ESCA")
    _one_line_gdc_error(err, "data.hits is empty but data.pagination.total is 12", "lost 5")


def _set(path: str, value):
    """A mangler that sets ``body[path...]`` (dotted) to ``value``; ``...`` deletes it."""

    def mangle(body):
        *parents, last = path.split(".")
        node = body
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is ...:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
        return body

    return mangle


@pytest.mark.parametrize(
    ("mangle", "expected"),
    [
        (_set("data.hits", "oops"), "data.hits is 'oops' (str), expected a list of hits"),
        (_set("data.hits", {"0": {}}), "data.hits is {'0': {}} (dict), expected a list"),
        (_set("data.hits", ...), "data.hits is missing (or null), expected a list"),
        (_set("data.hits.1", "x"), "data.hits[1] is 'x' (str), expected an object"),
        (_set("data.pagination", []), "data.pagination is [] (list), expected an object"),
        (_set("data.pagination.count", "7x"), "data.pagination.count is '7x' (str)"),
        (_set("data.pagination.count", 2), "data.pagination.count is 2 (int), expected the"),
        (_set("data.pagination.total", None), "data.pagination.total is missing (or null)"),
        (_set("data", [1]), "data is [1] (list), expected an object"),
        (lambda body: [body], "the answer is [{"),
    ],
)
def test_malformed_search_answers_name_the_field(server, client, mangle, expected):
    server.mangle = mangle
    with pytest.raises(GDCError) as err:
        client.diagnostic_slides("TCGA-ESCA")
    _one_line_gdc_error(err, "/files (from=0): ", expected, "retry later")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("file_id", ..., "data.hits[2].file_id is missing (or null), expected a non-empty string"),
        ("file_id", 17, "data.hits[2].file_id is 17 (int)"),
        ("file_name", "", "data.hits[2].file_name is '' (str)"),
        ("cases", ["TCGA-L5-0002"], "data.hits[2].cases[0] is 'TCGA-L5-0002' (str), expected"),
        ("cases", {"submitter_id": "TCGA-L5-0002"}, "data.hits[2].cases is {'submitter_id"),
    ],
)
def test_hit_without_file_id_names_the_field(server, client, field, value, expected):
    server.mangle = _set(f"data.hits.2.{field}", value)
    with pytest.raises(GDCError) as err:
        client.diagnostic_slides("TCGA-ESCA")
    _one_line_gdc_error(err, "/files (TCGA-ESCA): ", expected)


def test_clinical_hit_of_the_wrong_shape_names_the_field(server, client):
    server.cases = [
        {"submitter_id": "a", "project": {"project_id": "TCGA-ESCA"}, "diagnoses": [[]]},
    ]
    with pytest.raises(GDCError) as err:
        client.clinical("TCGA-ESCA")
    _one_line_gdc_error(err, "/cases (TCGA-ESCA): data.hits[0].diagnoses[0] is [] (list)")


def test_bad_sizes_and_md5s_fail_their_file_only(server, client, tmp_path):
    """file_size "12abc" used to abort every download with a ValueError, a negative size gave
    a confusing "No such file"; now each fails its own file, named, and the others go on."""
    bad = {1: ("file_size", "12abc"), 2: ("file_size", -5), 4: ("md5sum", "not-an-md5")}
    for i, (key, value) in bad.items():
        server.files[i][key] = value
    server.files[3]["file_size"] = str(server.files[3]["file_size"])  # decimal text is fine
    slides = client.diagnostic_slides("TCGA-ESCA")
    report = client.download(slides, tmp_path, workers=2, progress=False)
    names = [s["file_name"] for s in slides]
    assert report.downloaded == [n for i, n in enumerate(names) if i not in bad]
    assert [n for n, _ in report.failed] == [names[i] for i in bad]
    reasons = [why for _, why in report.failed]
    assert "file_size '12abc' (file uuid-1) is not a whole number of bytes >= 0" in reasons[0]
    assert "file_size -5 (file uuid-2) is not a whole number of bytes >= 0" in reasons[1]
    assert "md5sum 'not-an-md5' (file uuid-4) is not 32 hex digits" in reasons[2]
    assert all("\n" not in why and "No such file" not in why for why in reasons)
    assert not any(r[0] in {"/data/uuid-1", "/data/uuid-2", "/data/uuid-4"} for r in server.log)
    assert tree(tmp_path) == {n for i, n in enumerate(names) if i not in bad}
    dry = client.download(slides, tmp_path / "dry", dry_run=True)  # a dry run says the same
    assert [n for n, _ in dry.failed] == [names[i] for i in bad]


@pytest.mark.parametrize("suffix", [".part", ".PART"])
def test_a_name_ending_in_the_temporary_suffix_is_refused(server, client, tmp_path, suffix):
    """`X.svs` and `X.svs.part` fetched by 2 workers used to report 0 failures while one file
    was missing or held the other's bytes: the `.part` name is refused, the other is fine."""
    blob = server.blobs["uuid-0"]
    server.add_file("id-x", "X.svs", blob[:400_000], "TCGA-PART", "TCGA-PA-0001")
    server.add_file("id-p", "X.svs" + suffix, blob[500_000:800_000], "TCGA-PART", "TCGA-PA-0002")
    slides = client.diagnostic_slides("TCGA-PART")
    report = client.download(slides, tmp_path, workers=2, progress=False)
    assert report.downloaded == ["X.svs"]
    [(name, why)] = report.failed
    assert name == "X.svs" + suffix and "(file id-p)" in why and "\n" not in why
    assert "ends in '.part', the suffix of unfinished downloads" in why
    assert tree(tmp_path) == {"X.svs"} and md5(tmp_path / "X.svs") == slides[0]["md5sum"]
    assert server.requests("/data/id-p") == []
    with pytest.raises(GDCError, match="X.svs"):
        raise_for_failures(report)


def test_md5_is_checked_on_the_file_that_is_renamed(server, client, tmp_path, monkeypatch):
    """Another writer swaps the .part between the md5 check and the rename: the swapped file
    is not left under the final name and the file fails, named; the other files go on."""
    victim, other = server.flat()[1:3]
    md5_of = gdc_module._md5_of

    def md5_then_swap(fh, chunk):
        digest = md5_of(fh, chunk)
        part = Path(fh.name)
        if part.name == victim["file_name"] + ".part":
            swap = part.with_name("swap")
            swap.write_bytes(b"\0" * victim["file_size"])  # same size, other bytes
            os.replace(swap, part)
        return digest

    monkeypatch.setattr(gdc_module, "_md5_of", md5_then_swap)
    report = client.download([victim, other], tmp_path, workers=2, progress=False)
    assert report.downloaded == [other["file_name"]]
    [(name, why)] = report.failed
    assert name == victim["file_name"] and "\n" not in why
    assert "was replaced or changed while its md5 was checked" in why
    assert not (tmp_path / victim["file_name"]).exists()
    assert md5(tmp_path / other["file_name"]) == other["md5sum"]


def test_cohort_build_goes_on_past_a_broken_file_size(server, client, tmp_path, monkeypatch):
    """build_tcga_cohort: a slide whose GDC file_size is "12abc" fails alone, named in the
    report and left out of the manifest; the other slides are fetched and listed."""
    from wsigraph.data.cohort import build_tcga_cohort
    from wsigraph.profiles import get_profile

    monkeypatch.setenv("WSIGRAPH_WORK", str(tmp_path / "work"))
    profile = get_profile("tcga")
    profile.work_dir.mkdir(parents=True)
    server.cases = _labelled_cases(server)
    broken = server.files[2]
    broken["file_size"] = "12abc"
    manifest, report = build_tcga_cohort(profile, client, workers=2, progress=False)
    [(name, why)] = report.failed
    assert name == broken["file_name"] and "file_size '12abc'" in why
    assert len(manifest) == 7 and name not in set(manifest["file_name"])
    assert manifest["file_size"].dtype == "int64"
    assert not (profile.slides_dir / name).exists()


def test_zero_byte_file(server, client, tmp_path):
    """file_size 0 is a size, not a failure: the file is created, verified and renamed."""
    server.add_file("id-empty", "empty.svs", b"", "TCGA-NONE", "TCGA-NO-0001")
    report = client.download(client.diagnostic_slides("TCGA-NONE"), tmp_path, progress=False)
    assert report.downloaded == ["empty.svs"] and report.failed == []
    assert tree(tmp_path) == {"empty.svs"} and (tmp_path / "empty.svs").stat().st_size == 0


def _labelled_cases(server) -> list[dict]:
    """One clinical case per listed file, each an adenocarcinoma at stage II."""
    return [
        {
            "submitter_id": h["cases"][0]["submitter_id"],
            "case_id": h["cases"][0]["case_id"],
            "project": h["cases"][0]["project"],
            "diagnoses": [
                {"primary_diagnosis": "Adenocarcinoma, NOS", "ajcc_pathologic_stage": "Stage II"}
            ],
        }
        for h in server.files
    ]
