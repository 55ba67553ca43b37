"""A small client for the NCI Genomic Data Commons (GDC) API: slide lists, clinical data, downloads.

Endpoints used (https://docs.gdc.cancer.gov/API/Users_Guide/Search_and_Retrieval/):

``GET /files``, ``GET /cases``
    Query parameters ``filters`` (a JSON filter tree), ``fields`` (a comma list), ``expand``,
    ``format=json``, ``size`` and ``from`` (0-based). The answer is
    ``{"data": {"hits": [...], "pagination": {"count", "total", "size", "from", ...}},
    "warnings": {}}``; :meth:`GDCClient.query` asks page after page until
    ``from + count >= total`` and returns every hit. An answer of another shape (``hits`` not
    a list of objects, ``count`` not the number of hits on the page or negative, an empty
    page before ``total``) or more than :attr:`GDCClient.max_pages` pages raises
    :class:`GDCError` naming the field.
``GET /data/{file_id}``
    Streams one file. It honours ``Range: bytes=N-`` with ``206 Partial Content``, which is how
    an interrupted download resumes.

Retry rules (the same for queries and downloads): a connection error, a time-out, a body cut
short or an HTTP 5xx answer is retried ``retries`` times after sleeping
``backoff * 2**attempt`` seconds (attempt = 0, 1, ...; no jitter), so ``retries=5`` means at most
six requests. An HTTP 4xx answer is a mistake on our side (bad filter, unknown or controlled
file) and raises :class:`GDCError` at once with the server's text.

Download rules (:meth:`GDCClient.download`):

1. The GDC ``file_name`` is used as the local name only if :func:`safe_file_name` accepts it;
   it is refused, never rewritten, so a local name always equals the GDC name. A name ending
   in ``.part`` (the temporary suffix, any case) is refused too: it would share a file with
   the download of the name without it. A ``file_size`` that is not a whole number >= 0, or an
   ``md5sum`` that is not 32 hex digits, fails that file alone.
2. A file already present under its final name with the expected size (and md5 when
   ``verify_existing=True``) is skipped: re-running a cohort download resumes it.
3. Before any request, the free space of the destination (:func:`shutil.disk_usage`) must
   cover the bytes still to fetch (sizes less what ``.part`` files already hold) plus
   ``disk_margin``, else :class:`InsufficientDiskSpaceError` names both numbers. Files then go
   through a :class:`~concurrent.futures.ThreadPoolExecutor` of ``workers`` threads, and one
   tqdm bar counts the bytes on disk over all files (a ``.part`` thrown away is taken back).
4. Bytes go to ``<name>.part``. A ``.part`` left by an earlier run, or by a dropped connection,
   is continued with ``Range: bytes=<size on disk>-``; an answer of ``206`` is appended, an
   answer of ``200`` (the server ignored the range) restarts the file from byte zero.
   The transient-retry count starts again whenever an attempt added bytes, so a long file on a
   flaky link still finishes while a server that sends nothing fails after ``retries``.
5. When the ``.part`` holds ``file_size`` bytes its size and md5 are checked (md5 streamed
   through :mod:`hashlib`). On a mismatch the ``.part`` is deleted and the file is fetched
   again from scratch, at most ``retries`` more times; then the file is reported as failed.
6. Only a verified ``.part`` is renamed (:func:`os.replace`, atomic) to the final name, so a
   corrupt or half-written file never sits under the final name. The md5 is read through one
   open handle immediately before the rename, and the rename goes ahead only if the ``.part``
   is still that same, unchanged file (device, inode, size, mtime); a file swapped or changed
   meanwhile (another writer) fails and is not left under the final name. A file that failed
   on transient errors keeps its ``.part`` for the next run; one that failed md5 does not.

One file failing does not stop the others: :meth:`GDCClient.download` returns a
:class:`DownloadReport` and :func:`raise_for_failures` turns failures into an exception.

Example::

    gdc = GDCClient()
    slides = gdc.diagnostic_slides("TCGA-ESCA")
    report = gdc.download(slides, "data/esca/slides", workers=4)
    raise_for_failures(report)
"""

from __future__ import annotations

import hashlib
import json
import ntpath
import os
import re
import shutil
import threading
import time
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

import pandas as pd
import requests
from requests.adapters import HTTPAdapter
from tqdm import tqdm

from wsigraph.progress import progress_bar

GDC_API = "https://api.gdc.cancer.gov"

DISK_MARGIN = 256 * 2**20
"""Bytes kept free on top of what a download still needs (filesystem overhead, other writers)."""

SLIDE_FIELDS = (
    "file_id",
    "file_name",
    "md5sum",
    "file_size",
    "state",
    "cases.submitter_id",
    "cases.case_id",
    "cases.project.project_id",
)
CLINICAL_FIELDS = (
    "submitter_id",
    "case_id",
    "project.project_id",
    "diagnoses.primary_diagnosis",
    "diagnoses.ajcc_pathologic_stage",
    "diagnoses.days_to_last_follow_up",
    "demographic.vital_status",
    "demographic.days_to_death",
)
_DOWNLOAD_KEYS = ("file_id", "file_name", "md5sum", "file_size")
PART_SUFFIX = ".part"
"""Suffix of a file being downloaded; GDC names ending in it are refused."""


class GDCError(RuntimeError):
    """A GDC request failed for good (after the retries, or at once for HTTP 4xx)."""


class UnsafeFileNameError(ValueError):
    """A GDC file name that could escape the destination folder or is not a plain name."""


class InsufficientDiskSpaceError(GDCError):
    """The destination has less free space than the download still needs plus a margin."""


class _Transient(Exception):
    """A failure worth retrying (5xx, a body cut short, a bad ``Content-Range``)."""


class _Stopped(Exception):
    """The download was interrupted in the main thread; worker threads give up."""


# A body cut short surfaces as ChunkedEncodingError, which is not a ConnectionError.
_TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    _Transient,
)


def safe_file_name(name: str, file_id: str | None = None) -> str:
    """Return ``name`` if it is safe as a single file name inside the destination folder.

    Refused (:class:`UnsafeFileNameError`, a :class:`ValueError`, naming ``file_id``): a
    non-string or empty name, ``.`` and ``..``, any ``/`` or ``\\`` (which also covers absolute
    paths and ``..`` parts), a Windows drive (``C:x``), NUL and every other control character.
    Names are refused rather than cleaned so that the local name always equals the GDC name.
    """
    where = f" (file {file_id})" if file_id else ""

    def refuse(why: str) -> UnsafeFileNameError:
        return UnsafeFileNameError(f"unsafe GDC file name {name!r}{where}: {why}")

    if not isinstance(name, str) or not name:
        raise refuse("empty or not a string")
    if name in (".", ".."):
        raise refuse("not a file name")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise refuse("contains NUL or a control character")
    if "/" in name or "\\" in name:
        raise refuse("contains a path separator")
    if ntpath.splitdrive(name)[0] or os.path.isabs(name):
        raise refuse("absolute path")
    return name


@dataclass
class DownloadReport:
    """What :meth:`GDCClient.download` did (or, with ``dry_run``, would do).

    Attributes:
        downloaded: names fetched and verified in this call, in input order.
        skipped: names already present under their final name (size, and md5 if asked, right),
            in the folder itself or in gdc-client's layout ``<file_id>/<file_name>``.
        located: name -> path of each skipped file (where it was found; used in place).
        failed: ``(name, reason)`` pairs: refused names, duplicates, exhausted retries, md5.
        bytes: bytes received over the network in this call.
        planned: ``(name, size)`` of the files that were (dry run: would be) fetched.
        dry_run: whether nothing was fetched.
    """

    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    bytes: int = 0
    planned: list[tuple[str, int]] = field(default_factory=list)
    dry_run: bool = False
    sizes: dict[str, int] = field(default_factory=dict, repr=False)
    located: dict[str, Path] = field(default_factory=dict)

    @property
    def planned_bytes(self) -> int:
        """Total size of the files that were (dry run: would be) fetched."""
        return sum(size for _, size in self.planned)

    def summary(self) -> pd.DataFrame:
        """One row per file: ``file_name, status, size, reason``.

        ``status`` is ``downloaded``, ``skipped``, ``failed`` or, in a dry run, ``to_download``.
        """
        rows = [(n, "downloaded", "") for n in self.downloaded]
        if self.dry_run:
            rows += [(n, "to_download", "") for n, _ in self.planned]
        rows += [(n, "skipped", "") for n in self.skipped]
        rows += [(n, "failed", why) for n, why in self.failed]
        return pd.DataFrame(
            [
                {"file_name": n, "status": s, "size": self.sizes.get(n), "reason": r}
                for n, s, r in rows
            ],
            columns=["file_name", "status", "size", "reason"],
        )

    def __str__(self) -> str:
        head = "dry run: would download" if self.dry_run else "downloaded"
        count = len(self.planned) if self.dry_run else len(self.downloaded)
        size = self.planned_bytes if self.dry_run else self.bytes
        return (
            f"{head} {count} files ({_human(size)}), {len(self.skipped)} already present, "
            f"{len(self.failed)} failed"
        )


def raise_for_failures(report: DownloadReport) -> None:
    """Raise :class:`GDCError` listing every failed file of ``report``; do nothing otherwise."""
    if report.failed:
        lines = "\n".join(f"  {name}: {why}" for name, why in report.failed)
        raise GDCError(f"{len(report.failed)} GDC file(s) failed:\n{lines}")


class GDCClient:
    """Client for the GDC API with pagination, retries and resumable, verified downloads.

    Args:
        base_url: API root (default: ``https://api.gdc.cancer.gov``).
        session: a :class:`requests.Session` to use (default: a new one whose connection pool
            grows to the number of download workers).
        timeout: seconds to wait for a connection or for the next bytes (default: ``60.0``).
        retries: retries after the first attempt, for transient errors and for md5/size
            mismatches alike (default: ``5``).
        backoff: first back-off in seconds, doubled at each retry (default: ``1.0``).
        page_size: hits asked per query page (default: ``500``).
        sleep: the sleep function used between retries; tests pass a no-op
            (default: :func:`time.sleep`).
    """

    # Bytes per streamed read. Small enough that a dropped connection loses little: what
    # urllib3 buffered towards an unfinished chunk is lost with it, and resumption starts from
    # what reached the disk.
    chunk_size = 64 * 1024
    md5_chunk_size = 1 << 20
    # Pages one query may take: 5 million hits at the default page size, far beyond any GDC
    # project, so a server whose pagination never ends is stopped with an error.
    max_pages = 10_000

    def __init__(
        self,
        base_url: str = GDC_API,
        session: requests.Session | None = None,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 1.0,
        page_size: int = 500,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if retries < 0 or backoff < 0 or page_size < 1 or timeout <= 0:
            raise ValueError(
                f"need retries >= 0, backoff >= 0, page_size >= 1, timeout > 0; got "
                f"{retries}, {backoff}, {page_size}, {timeout}"
            )
        self.base_url = base_url.rstrip("/")
        self._own_session = session is None
        self.session = session if session is not None else _new_session(10)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.page_size = page_size
        self.sleep = sleep
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r}, retries={self.retries})"

    def close(self) -> None:
        """Close the session if this client made it."""
        if self._own_session:
            self.session.close()

    def __enter__(self) -> GDCClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- queries

    def query(
        self,
        endpoint: str,
        filters: Mapping | None,
        fields: Sequence[str] | str,
        expand: Sequence[str] | str | None = None,
    ) -> list[dict]:
        """Every hit of ``GET /<endpoint>`` for ``filters``, gathered page by page.

        Args:
            endpoint: ``"files"``, ``"cases"``, ... (a leading ``/`` is allowed).
            filters: a GDC filter tree, sent as JSON; ``None`` for no filter.
            fields: field names (or one comma-separated string).
            expand: field groups to expand, as for ``fields`` (default: none).

        Returns:
            The hits as the API gives them (nested dicts and lists).

        Raises:
            GDCError: with the URL and the last error after the retries, at once on HTTP 4xx,
                or on an answer that is not shaped like a GDC search result.
        """
        url = f"{self.base_url}/{endpoint.strip('/')}"
        params = {"format": "json", "size": str(self.page_size), "fields": _comma(fields)}
        if filters:
            params["filters"] = json.dumps(filters)
        if expand:
            params["expand"] = _comma(expand)
        hits: list[dict] = []
        start = 0
        for _ in range(self.max_pages):
            body = self._get_json(url, params | {"from": str(start)})
            page, count, total = _search_page(body, f"{url} (from={start})")
            if body.get("warnings"):
                warnings.warn(f"GDC {url}: {body['warnings']}", stacklevel=2)
            hits.extend(page)
            start += count
            if start >= total:
                return hits
            if count == 0:
                raise GDCError(
                    f"{url} (from={start}): data.hits is empty but data.pagination.total is "
                    f"{total}; the server lost {total - start} hit(s), retry later"
                )
        raise GDCError(
            f"{url}: data.pagination.total ({total}) not reached after max_pages="
            f"{self.max_pages} pages of {self.page_size} (from={start}); the server's "
            "pagination does not end: retry later, or raise page_size or GDCClient.max_pages"
        )

    def diagnostic_slides(self, project: str) -> list[dict]:
        """Open-access diagnostic H&E slides (SVS) of a project, e.g. ``"TCGA-ESCA"``.

        Queries ``/files`` for ``cases.project.project_id``, ``data_format = SVS``,
        ``experimental_strategy = Diagnostic Slide`` and ``access = open``.

        Returns:
            Flat dicts ``file_id, file_name, md5sum, file_size, case_submitter_id, case_id,
            project_id`` (ready for :meth:`download`). A slide belongs to one case; should a
            hit list several, the first is used.
        """
        filters = _and(
            _in("cases.project.project_id", project),
            _in("data_format", "SVS"),
            _in("experimental_strategy", "Diagnostic Slide"),
            _in("access", "open"),
        )
        rows = []
        url = f"{self.base_url}/files"
        for i, hit in enumerate(self.query("files", filters, SLIDE_FIELDS)):
            where = f"{url} ({project}): data.hits[{i}]"
            for key in ("file_id", "file_name"):
                if not isinstance(hit.get(key), str) or not hit[key]:
                    raise GDCError(
                        f"{where}.{key} is {_shown(hit.get(key))}, expected a non-empty string "
                        f"(hit keys: {sorted(hit)}); the GDC answer is broken, retry later"
                    )
            case = _obj(_first(hit.get("cases"), f"{where}.cases"), f"{where}.cases[0]")
            rows.append(
                {
                    "file_id": hit["file_id"],
                    "file_name": hit["file_name"],
                    "md5sum": hit.get("md5sum"),
                    "file_size": hit.get("file_size"),
                    "case_submitter_id": case.get("submitter_id"),
                    "case_id": case.get("case_id"),
                    "project_id": _obj(case.get("project"), f"{where}.cases[0].project").get(
                        "project_id"
                    ),
                }
            )
        return rows

    def clinical(self, project: str) -> list[dict]:
        """Diagnosis, stage and survival fields of every case of a project, from ``/cases``.

        Returns:
            Flat dicts ``submitter_id, case_id, project_id, primary_diagnosis,
            ajcc_pathologic_stage, days_to_last_follow_up, vital_status, days_to_death``;
            a field the GDC leaves out is ``None``.

        A case may list several diagnoses (e.g. a recurrence); the API gives them in no
        documented order, and the TCGA primary tumour is almost always alone or first, so the
        *first* diagnosis is used. Callers needing another rule can :meth:`query` ``/cases``.
        """
        rows = []
        filters = _in("project.project_id", project)
        for i, hit in enumerate(self.query("cases", filters, CLINICAL_FIELDS)):
            where = f"{self.base_url}/cases ({project}): data.hits[{i}]"
            diagnosis = _obj(
                _first(hit.get("diagnoses"), f"{where}.diagnoses"), f"{where}.diagnoses[0]"
            )
            demographic = _obj(hit.get("demographic"), f"{where}.demographic")
            rows.append(
                {
                    "submitter_id": hit.get("submitter_id"),
                    "case_id": hit.get("case_id"),
                    "project_id": _obj(hit.get("project"), f"{where}.project").get(
                        "project_id", project
                    ),
                    "primary_diagnosis": diagnosis.get("primary_diagnosis"),
                    "ajcc_pathologic_stage": diagnosis.get("ajcc_pathologic_stage"),
                    "days_to_last_follow_up": diagnosis.get("days_to_last_follow_up"),
                    "vital_status": demographic.get("vital_status"),
                    "days_to_death": demographic.get("days_to_death"),
                }
            )
        return rows

    def _get_json(self, url: str, params: dict) -> dict:
        last = ""
        for attempt in range(self.retries + 1):
            try:
                r = self.session.get(url, params=params, timeout=self.timeout)
            except _TRANSIENT as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if r.status_code < 400:
                    try:
                        return r.json()
                    except ValueError:
                        raise GDCError(f"{url}: answer is not JSON: {r.text[:200]!r}") from None
                if r.status_code < 500:
                    raise GDCError(f"{url}: HTTP {r.status_code}: {r.text[:1000]}")
                last = f"HTTP {r.status_code}: {r.text[:200]}"
            if attempt < self.retries:
                self.sleep(self.backoff * 2**attempt)
        raise GDCError(f"{url}: failed after {self.retries + 1} attempts; last error: {last}")

    # -------------------------------------------------------------- downloads

    def download(
        self,
        files: Iterable[Mapping],
        dest_dir: str | os.PathLike,
        workers: int = 4,
        dry_run: bool = False,
        progress: bool = True,
        *,
        verify_existing: bool = False,
        disk_margin: int = DISK_MARGIN,
    ) -> DownloadReport:
        """Fetch ``files`` into ``dest_dir`` (see the module docstring for every rule).

        Args:
            files: dicts with ``file_id, file_name, md5sum, file_size`` (other keys ignored),
                e.g. from :meth:`diagnostic_slides`.
            dest_dir: destination folder, created if needed.
            workers: files fetched at once, by a thread pool (default: ``4``).
            dry_run: only report what would be fetched; no ``/data`` request, no folder, no
                disk-space check (default: ``False``).
            progress: one tqdm bar in bytes over all files (default: ``True``).
            verify_existing: also check the md5 of files already present before skipping them
                (default: ``False``: their size is checked).
            disk_margin: bytes that must stay free beyond what is still to fetch
                (default: :data:`DISK_MARGIN`, 256 MiB).

        Returns:
            A :class:`DownloadReport`; failures are in it, not raised.

        Raises:
            InsufficientDiskSpaceError: before any download, when ``dest_dir`` has less free
                space than the bytes still to fetch plus ``disk_margin`` (both numbers given).
        """
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        dest = Path(dest_dir)
        report = DownloadReport(dry_run=dry_run)
        jobs = self._plan(list(files), dest, report, verify_existing)
        report.planned = [(job["name"], job["size"]) for job in jobs]
        if dry_run or not jobs:
            return report

        dest.mkdir(parents=True, exist_ok=True)
        on_disk = sum(job["have"] for job in jobs)
        remaining = report.planned_bytes - on_disk
        free = shutil.disk_usage(dest).free
        if free < remaining + disk_margin:
            raise InsufficientDiskSpaceError(
                f"{dest}: {remaining} bytes ({_human(remaining)}) still to download plus a "
                f"{disk_margin}-byte margin, but only {free} bytes ({_human(free)}) free"
            )
        if self._own_session and workers > 10:
            self.session = _new_session(workers, self.session)

        bar = progress_bar(
            total=report.planned_bytes,
            initial=on_disk,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc="GDC download",
            disable=not progress,
        )
        self._stop.clear()
        outcome: dict[int, str | None] = {}
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = {
                    pool.submit(self._fetch, job, bar, report): i for i, job in enumerate(jobs)
                }
                try:
                    for future in as_completed(futures):
                        try:
                            future.result()
                            outcome[futures[future]] = None
                        except Exception as e:  # noqa: BLE001 - one file must not stop the others
                            outcome[futures[future]] = str(e) or type(e).__name__
                except BaseException:  # Ctrl-C: let the threads stop at their next chunk
                    self._stop.set()
                    for future in futures:
                        future.cancel()
                    raise
        finally:
            bar.close()
        for i, job in enumerate(jobs):  # input order
            if outcome[i] is None:
                report.downloaded.append(job["name"])
            else:
                report.failed.append((job["name"], outcome[i]))
        return report

    def _plan(
        self, files: list[Mapping], dest: Path, report: DownloadReport, verify_existing: bool
    ) -> list[dict]:
        """Refuse bad entries, skip complete files, and list the rest with bytes on disk."""
        jobs, seen = [], set()
        for f in files:
            raw = str(f.get("file_name", ""))
            missing = [k for k in _DOWNLOAD_KEYS if f.get(k) in (None, "")]
            if missing:
                report.failed.append((raw, f"missing {', '.join(missing)}"))
                continue
            try:
                name = safe_file_name(f["file_name"], f["file_id"])
                if name.lower().endswith(PART_SUFFIX):
                    raise UnsafeFileNameError(
                        f"unsafe GDC file name {name!r} (file {f['file_id']}): ends in "
                        f"{PART_SUFFIX!r}, the suffix of unfinished downloads, so it would share "
                        f"a file with {name[: -len(PART_SUFFIX)]!r}; refused"
                    )
            except UnsafeFileNameError as e:
                report.failed.append((raw, str(e)))
                continue
            if name in seen:
                report.failed.append((name, f"duplicate file name (file {f['file_id']})"))
                continue
            seen.add(name)
            size, md5 = _file_size(f["file_size"]), str(f["md5sum"]).strip().lower()
            if size is None:
                report.failed.append(
                    (
                        name,
                        f"file_size {f['file_size']!r} (file {f['file_id']}) is not a whole "
                        "number of bytes >= 0; the GDC listing is broken, list it again later",
                    )
                )
                continue
            if len(md5) != 32 or any(c not in "0123456789abcdef" for c in md5):
                report.failed.append(
                    (
                        name,
                        f"md5sum {f['md5sum']!r} (file {f['file_id']}) is not 32 hex digits; "
                        "the GDC listing is broken, list it again later",
                    )
                )
                continue
            report.sizes[name] = size
            final = dest / name
            # present already: here, or where gdc-client puts it (<file_id>/<file_name>)
            found = next(
                (
                    p
                    for p in (final, dest / str(f["file_id"]) / name)
                    if p.is_file()
                    and p.stat().st_size == size
                    and (not verify_existing or _md5(p, self.md5_chunk_size) == md5)
                ),
                None,
            )
            if found is not None:
                report.skipped.append(name)
                report.located[name] = found
                continue
            part = _part(final)
            have = part.stat().st_size if part.is_file() else 0
            jobs.append(
                {
                    "file_id": str(f["file_id"]),
                    "name": name,
                    "final": final,
                    "size": size,
                    "md5": md5,
                    "have": have if have <= size else 0,
                }
            )
        return jobs

    def _fetch(self, job: dict, bar: tqdm, report: DownloadReport) -> None:
        """Download, verify and rename one file; raise with the reason on failure."""
        final, part = job["final"], _part(job["final"])
        why = ""
        for _ in range(self.retries + 1):
            self._stream(job, part, bar, report)
            why = self._verify_and_rename(job, part, final)
            if not why:
                return
            self._discard(part, bar)
        raise GDCError(
            f"{job['name']} (file {job['file_id']}): {why} after {self.retries + 1} attempts; "
            "the partial file was removed"
        )

    def _verify_and_rename(self, job: dict, part: Path, final: Path) -> str:
        """Check size and md5 of ``part`` through one open handle, then rename it to ``final``
        at once if the path still names that same, unchanged file. Returns why not ("" when
        renamed); a file swapped or changed meanwhile raises :class:`GDCError`."""
        with open(part, "rb") as fh:
            seen = _identity(os.fstat(fh.fileno()))
            if seen.size != job["size"]:
                return f"size {seen.size} bytes, expected {job['size']}"
            md5 = _md5_of(fh, self.md5_chunk_size)
            if md5 != job["md5"]:
                return f"md5 {md5}, expected {job['md5']}"
            unchanged = _identity(os.fstat(fh.fileno())) == seen
        try:
            if unchanged and _identity(os.stat(part)) == seen:
                os.replace(part, final)
                if _identity(os.stat(final)) == seen:
                    return ""
                os.unlink(final)
        except FileNotFoundError:
            pass
        raise GDCError(
            f"{job['name']} (file {job['file_id']}): {part.name} was replaced or changed while "
            "its md5 was checked (another download writing the same file?); not kept under "
            "the final name, download it again"
        )

    def _stream(self, job: dict, part: Path, bar: tqdm, report: DownloadReport) -> None:
        """Bring ``part`` to ``job['size']`` bytes, resuming and retrying transient errors."""
        url = f"{self.base_url}/data/{quote(job['file_id'], safe='')}"
        attempt, last = 0, ""
        while True:
            have = part.stat().st_size if part.exists() else 0
            if have > job["size"]:  # cannot be a prefix of the file (nor was it on the bar)
                part.unlink()
                have = 0
            if have == job["size"]:
                part.touch()  # a 0-byte file is never requested, but is renamed like any other
                return
            before = have
            try:
                self._stream_once(url, part, have, bar, report)
            except _TRANSIENT as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if part.stat().st_size >= job["size"]:
                    return
                last = "the body ended early"
            if part.exists() and part.stat().st_size > before:
                attempt = 0  # progress was made: only stalls count against the retries
            if attempt >= self.retries:
                raise GDCError(
                    f"{job['name']} (file {job['file_id']}): {url} failed after "
                    f"{self.retries + 1} attempts; last error: {last}; the .part is kept for "
                    "the next run"
                )
            self.sleep(self.backoff * 2**attempt)
            attempt += 1

    def _stream_once(
        self, url: str, part: Path, have: int, bar: tqdm, report: DownloadReport
    ) -> None:
        headers = {"Range": f"bytes={have}-"} if have else {}
        with self.session.get(url, headers=headers, stream=True, timeout=self.timeout) as r:
            if r.status_code >= 500:
                raise _Transient(f"HTTP {r.status_code}")
            if r.status_code >= 400:
                raise GDCError(f"{url}: HTTP {r.status_code}: {r.text[:1000]}")
            if r.status_code == 206:
                start = _range_start(r.headers.get("Content-Range", ""))
                if start != have:
                    self._discard(part, bar)
                    raise _Transient(f"asked bytes from {have}, Content-Range says {start}")
                mode = "ab"
            else:  # 200: the whole file, even if we asked for a range
                if have:
                    self._discard(part, bar)
                mode = "wb"
            with open(part, mode) as fh:
                for chunk in r.iter_content(self.chunk_size):
                    if self._stop.is_set():
                        raise _Stopped("download interrupted")
                    fh.write(chunk)
                    with self._lock:
                        bar.update(len(chunk))
                        report.bytes += len(chunk)

    def _discard(self, part: Path, bar: tqdm) -> None:
        """Delete ``part`` and take its bytes back off the progress bar."""
        try:
            n = part.stat().st_size
            part.unlink()
        except FileNotFoundError:
            return
        with self._lock:
            bar.update(-n)


def _new_session(pool: int, old: requests.Session | None = None) -> requests.Session:
    """A session whose pool keeps ``pool`` connections, so no worker thread waits for one."""
    session = old or requests.Session()
    adapter = HTTPAdapter(pool_connections=pool, pool_maxsize=pool)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers.setdefault("User-Agent", "wsigraph-gdc")
    return session


def _part(final: Path) -> Path:
    return final.with_name(final.name + ".part")


def _md5(path: Path, chunk: int) -> str:
    with open(path, "rb") as fh:
        return _md5_of(fh, chunk)


def _md5_of(fh, chunk: int) -> str:
    h = hashlib.md5(usedforsecurity=False)
    while block := fh.read(chunk):
        h.update(block)
    return h.hexdigest()


class _Identity(NamedTuple):
    """What tells one file version from another."""

    dev: int
    ino: int
    size: int
    mtime_ns: int


def _identity(st: os.stat_result) -> _Identity:
    return _Identity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _count(value) -> int | None:
    """A count or size as the GDC sends it (an int, or its decimal text), or None if not one;
    negative values are returned for the caller to refuse."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
        return int(value)
    return None


def _file_size(value) -> int | None:
    n = _count(value)
    return n if n is not None and n >= 0 else None


def _search_page(body, where: str) -> tuple[list[dict], int, int]:
    """``(hits, count, total)`` of one search answer; :class:`GDCError` naming the field that
    is missing or wrong."""

    def broken(what: str) -> GDCError:
        return GDCError(f"{where}: {what}; the GDC answer is broken, retry later")

    if not isinstance(body, dict):
        raise broken(f"the answer is {_shown(body)}, expected an object with data")
    data = body.get("data")
    if not isinstance(data, dict):
        raise broken(f"data is {_shown(data)}, expected an object")
    hits, pagination = data.get("hits"), data.get("pagination")
    if not isinstance(hits, list):
        raise broken(f"data.hits is {_shown(hits)}, expected a list of hits")
    for i, hit in enumerate(hits):
        if not isinstance(hit, dict):
            raise broken(f"data.hits[{i}] is {_shown(hit)}, expected an object")
    if not isinstance(pagination, dict):
        raise broken(f"data.pagination is {_shown(pagination)}, expected an object")
    count, total = _count(pagination.get("count")), _count(pagination.get("total"))
    if count is None or count < 0 or count != len(hits):
        raise broken(
            f"data.pagination.count is {_shown(pagination.get('count'))}, expected the "
            f"number of hits on the page ({len(hits)})"
        )
    if total is None or total < 0:
        raise broken(
            f"data.pagination.total is {_shown(pagination.get('total'))}, expected a whole "
            "number >= 0"
        )
    return hits, count, total


def _obj(value, where: str) -> dict:
    """``value`` if it is an object, ``{}`` for a missing one; :class:`GDCError` otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GDCError(
            f"{where} is {_shown(value)}, expected an object; the GDC answer is broken, retry later"
        )
    return value


def _shown(value) -> str:
    """A value for a one-line message: missing, or its repr (cut) and type."""
    if value is None:
        return "missing (or null)"
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _range_start(content_range: str) -> int | None:
    """First byte of ``Content-Range: bytes START-END/TOTAL``, or None if unreadable."""
    try:
        unit, spec = content_range.split(" ", 1)
        return int(spec.split("-", 1)[0]) if unit == "bytes" else None
    except ValueError:
        return None


def _in(field_name: str, value) -> dict:
    values = list(value) if isinstance(value, list | tuple) else [value]
    return {"op": "in", "content": {"field": field_name, "value": values}}


def _and(*filters: dict) -> dict:
    return {"op": "and", "content": list(filters)}


def _comma(names: Sequence[str] | str) -> str:
    return names if isinstance(names, str) else ",".join(names)


def _first(items, where: str):
    """The first element of a list, None for a missing or empty one; :class:`GDCError`
    naming ``where`` for anything else."""
    if items is not None and not isinstance(items, list):
        raise GDCError(
            f"{where} is {_shown(items)}, expected a list; the GDC answer is broken, retry later"
        )
    return items[0] if items else None


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
