"""Cohorts: the manifest of slides with their labels, and the papers' class counts beside ours.

The manifest (``work/<profile>/cohort.csv``) has one row per slide: ``slide_id, dataset, path,
typing, typing_name, staging, staging_name`` (labels are integers; 1 is the minority class of
each task in the papers; missing labels are empty), plus generator or GDC columns.

Paper cohorts, as the papers state them (H2-MIL "Datasets and Experiment Setting"; HIGT
"Datasets"). H2-MIL's KICA text names chromophobe as the larger class (192) and papillary as the
smaller (83), although TCGA holds 291 KIRP and 113 KICH patients (TCGA-CDR) and HIGT reports
KIRP 259 / KICH 112; we list H2-MIL's numbers under KIRP 192 / KICH 83, the reading that fits
TCGA. Both papers call adenocarcinoma the larger ESCA class (86 / 49 and 94 / 67), while
TCGA-CDR lists 89 adenocarcinoma and 96 squamous patients among all ESCA cases; which cases
have a usable diagnostic slide decides it, so we keep the papers' names.

TCGA (``build_tcga_cohort``): the GDC's diagnostic slides of TCGA-ESCA, TCGA-KIRP and TCGA-KICH,
labelled by :func:`typing_label` and :func:`staging_label`, one slide per case
(:func:`one_slide_per_case`), downloaded with :mod:`wsigraph.data.gdc`; the manifest is pinned
by file name and md5 (:func:`pin`, :func:`resolve_pinned`). :func:`labels_from_cdr` applies the
same label rules to the TCGA-CDR table offline.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from wsigraph.io import atomic_path

TASKS = ("typing", "staging")
STAGING_CLASSES = ("early (I-II)", "late (III-IV)")

# (paper, dataset, task) -> (class 0 name, class 0 count, class 1 name, class 1 count)
PAPER_COUNTS: dict[tuple[str, str, str], tuple[str, int, str, int]] = {
    ("H2-MIL", "esca", "typing"): ("adenocarcinoma", 86, "squamous", 49),
    ("H2-MIL", "esca", "staging"): (STAGING_CLASSES[0], 80, STAGING_CLASSES[1], 55),
    ("H2-MIL", "kica", "typing"): ("KIRP", 192, "KICH", 83),
    ("H2-MIL", "kica", "staging"): (STAGING_CLASSES[0], 205, STAGING_CLASSES[1], 70),
    ("HIGT", "esca", "typing"): ("adenocarcinoma", 94, "squamous", 67),
    ("HIGT", "esca", "staging"): (STAGING_CLASSES[0], 96, STAGING_CLASSES[1], 65),
    ("HIGT", "kica", "typing"): ("KIRP", 259, "KICH", 112),
    ("HIGT", "kica", "staging"): (STAGING_CLASSES[0], 279, STAGING_CLASSES[1], 92),
}


def class_count_table(manifest: pd.DataFrame, label: str = "ours") -> pd.DataFrame:
    """Class counts of ``manifest`` beside H2-MIL's and HIGT's, one row per (dataset, task, class).

    ``label`` names our column (e.g. ``"ours (demo)"``), so demo numbers are never mistaken for
    the papers'.
    """
    rows = []
    for (paper, dataset, task), (n0, c0, n1, c1) in PAPER_COUNTS.items():
        if paper != "H2-MIL":
            continue
        higt = PAPER_COUNTS[("HIGT", dataset, task)]
        sub = (
            manifest[manifest["dataset"] == dataset] if "dataset" in manifest else manifest.iloc[:0]
        )
        for cls, name, h2, hg in ((0, n0, c0, higt[1]), (1, n1, c1, higt[3])):
            ours = int((sub[task] == cls).sum()) if task in sub else 0
            rows.append(
                {
                    "dataset": dataset.upper(),
                    "task": task,
                    "class": f"{cls}: {name}",
                    label: ours,
                    "H2-MIL": h2,
                    "HIGT": hg,
                }
            )
    table = pd.DataFrame(rows)
    totals = table.groupby(["dataset", "task"], sort=False)[[label, "H2-MIL", "HIGT"]].sum()
    table[f"{label} %"] = [
        100 * r[label] / totals.loc[(r["dataset"], r["task"]), label]
        if totals.loc[(r["dataset"], r["task"]), label]
        else float("nan")
        for _, r in table.iterrows()
    ]
    table["H2-MIL %"] = [
        100 * r["H2-MIL"] / totals.loc[(r["dataset"], r["task"]), "H2-MIL"]
        for _, r in table.iterrows()
    ]
    return table


def write_manifest(manifest: pd.DataFrame, path: str | Path) -> Path:
    """Write the manifest CSV atomically (temp file, then rename)."""
    with atomic_path(path) as tmp:
        manifest.to_csv(tmp, index=False)
    return Path(path)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest written by :func:`write_manifest`; checks the required columns."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no cohort manifest; run notebooks/01_cohort.ipynb first")
    df = pd.read_csv(path, dtype={"slide_id": str})
    missing = {"slide_id", "dataset", "path"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: manifest lacks column(s) {sorted(missing)}")
    if df["slide_id"].duplicated().any():
        dup = df.loc[df["slide_id"].duplicated(), "slide_id"].tolist()
        raise ValueError(f"{path}: duplicate slide ids {dup[:5]}")
    for task in TASKS:
        if task in df:
            df[task] = df[task].astype("Int64")
    return df


def build_demo_cohort(profile, progress: bool = True) -> pd.DataFrame:
    """Synthesise the demo slides, add the real fixture slide (unlabelled) and write the manifest."""
    from wsigraph.data.synthetic import make_demo_cohort
    from wsigraph.profiles import real_fixture_slide

    manifest = make_demo_cohort(profile, progress=progress)
    if profile.include_real_slide:
        real = real_fixture_slide()
        row = {"slide_id": real.stem, "dataset": "real", "path": str(real)}
        manifest = pd.concat([manifest, pd.DataFrame([row])], ignore_index=True)
    write_manifest(manifest, profile.cohort_csv)
    return read_manifest(profile.cohort_csv)


# ----------------------------------------------------------------------------------------
# TCGA: labels, one slide per case, the pinned manifest
# ----------------------------------------------------------------------------------------

#: GDC projects of each dataset. KICA is TCGA-KIRP + TCGA-KICH (H2-MIL and HIGT).
PROJECTS: dict[str, tuple[str, ...]] = {"esca": ("TCGA-ESCA",), "kica": ("TCGA-KIRP", "TCGA-KICH")}
TYPING_CLASSES = {"esca": ("adenocarcinoma", "squamous"), "kica": ("KIRP", "KICH")}
PINNED_COLUMNS = ("case_id", "file_name", "md5sum", "file_size")


def typing_label(dataset: str, project: str, diagnosis: str | None) -> int | None:
    """Typing class (0/1) of a case, ``None`` when it is neither class.

    ESCA: the (GDC ``primary_diagnosis`` / TCGA-CDR ``histological_type``) text — any
    "squamous" diagnosis is class 1 (squamous cell carcinoma, incl. basaloid / keratinising),
    any other "adenocarcinoma" class 0; anything else (e.g. "Not Reported") has no label.
    KICA: the project — TCGA-KIRP is class 0 (papillary), TCGA-KICH class 1 (chromophobe).
    """
    if dataset == "kica":
        return {"TCGA-KIRP": 0, "TCGA-KICH": 1}.get(project)
    text = (diagnosis or "").lower()
    if "squamous" in text:
        return 1
    if "adenocarcinoma" in text:
        return 0
    return None


def staging_label(stage: str | None) -> int | None:
    """0 for AJCC pathologic stage I-II (any sub-stage), 1 for III-IV, ``None`` otherwise
    ("Stage X", "Not Reported", "[Discrepancy]", missing)."""
    text = (stage or "").strip().upper()
    if not text.startswith("STAGE "):
        return None
    roman = text.removeprefix("STAGE ").rstrip("ABC")
    return {"I": 0, "II": 0, "III": 1, "IV": 1}.get(roman)


def _barcode_parts(file_name: str) -> tuple[str, int, int]:
    """``TCGA-XX-XXXX-01Z-00-DX1.<uuid>.svs`` -> (sample type "01", portion-slide "DX", DX index)."""
    parts = file_name.split(".")[0].split("-")
    sample = parts[3][:2] if len(parts) > 3 else "99"
    slide = parts[5] if len(parts) > 5 else "DX99"
    digits = "".join(ch for ch in slide if ch.isdigit())
    return sample, int(sample) if sample.isdigit() else 99, int(digits) if digits else 99


def one_slide_per_case(slides: pd.DataFrame) -> pd.DataFrame:
    """Keep one diagnostic slide per case: a primary-tumour slide (sample type 01 in the TCGA
    barcode) before any other, then the lowest ``DX`` index (DX1 first), then the file name.

    H2-MIL and HIGT count cases, not slides, but do not say which slide of a case with several
    they used; this rule is ours. The kept rows are in case order.
    """
    if slides.empty:
        return slides.copy()
    keys = slides["file_name"].map(_barcode_parts)
    ranked = slides.assign(
        _tumour=[0 if k[0] == "01" else 1 for k in keys],
        _dx=[k[2] for k in keys],
    ).sort_values(["case_id", "_tumour", "_dx", "file_name"])
    kept = ranked.drop_duplicates("case_id", keep="first")
    return kept.drop(columns=["_tumour", "_dx"]).reset_index(drop=True)


def tcga_manifest(
    dataset: str, slides: list[dict], clinical: list[dict], slides_dir: str | Path
) -> pd.DataFrame:
    """The manifest of one TCGA dataset from GDC hits (:mod:`wsigraph.data.gdc`).

    Args:
        dataset: ``"esca"`` or ``"kica"``.
        slides: ``diagnostic_slides`` hits of its projects (``file_id, file_name, md5sum,
            file_size, case_submitter_id, project_id``).
        clinical: ``clinical`` hits of its projects (``submitter_id, primary_diagnosis,
            ajcc_pathologic_stage, vital_status, days_to_death, days_to_last_follow_up``).
        slides_dir: where the slides are (or will be) downloaded.

    Returns:
        One row per case with a diagnostic slide and at least one label: ``slide_id`` (the file
        name without ``.svs``), ``dataset, path, typing, typing_name, staging, staging_name,
        case_id, project_id, file_id, file_name, md5sum, file_size`` and the survival fields.
    """
    if dataset not in PROJECTS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(PROJECTS)}")
    cases = {c["submitter_id"]: c for c in clinical}
    rows = []
    for s in slides:
        case = cases.get(s["case_submitter_id"], {})
        typing = typing_label(dataset, s["project_id"], case.get("primary_diagnosis"))
        staging = staging_label(case.get("ajcc_pathologic_stage"))
        rows.append(
            {
                "slide_id": s["file_name"].removesuffix(".svs"),
                "dataset": dataset,
                "path": str(Path(slides_dir) / s["file_name"]),
                "typing": typing,
                "typing_name": None if typing is None else TYPING_CLASSES[dataset][typing],
                "staging": staging,
                "staging_name": None if staging is None else STAGING_CLASSES[staging],
                "case_id": s["case_submitter_id"],
                "project_id": s["project_id"],
                "file_id": s["file_id"],
                "file_name": s["file_name"],
                "md5sum": s["md5sum"],
                "file_size": int(s["file_size"]),
                "primary_diagnosis": case.get("primary_diagnosis"),
                "ajcc_pathologic_stage": case.get("ajcc_pathologic_stage"),
                "vital_status": case.get("vital_status"),
                "days_to_death": case.get("days_to_death"),
                "days_to_last_follow_up": case.get("days_to_last_follow_up"),
            }
        )
    df = one_slide_per_case(pd.DataFrame(rows, columns=_TCGA_COLUMNS))
    labelled = df["typing"].notna() | df["staging"].notna()
    df = df[labelled].reset_index(drop=True)
    for task in TASKS:
        df[task] = df[task].astype("Int64")
    return df


_TCGA_COLUMNS = [
    "slide_id", "dataset", "path", "typing", "typing_name", "staging", "staging_name",
    "case_id", "project_id", "file_id", "file_name", "md5sum", "file_size",
    "primary_diagnosis", "ajcc_pathologic_stage", "vital_status", "days_to_death",
    "days_to_last_follow_up",
]  # fmt: skip


def pin(manifest: pd.DataFrame) -> pd.DataFrame:
    """The pinned form of a cohort: ``case_id, file_name, md5sum, file_size`` (GDC file ids
    change between data releases; names and checksums do not)."""
    return manifest.loc[:, list(PINNED_COLUMNS)].sort_values("file_name").reset_index(drop=True)


def resolve_pinned(pinned: pd.DataFrame, slides: list[dict]) -> list[dict]:
    """Today's GDC hits for a pinned cohort, matched by file name; refuses a pinned file that
    the GDC no longer lists or whose md5 changed (the message lists them)."""
    by_name = {s["file_name"]: s for s in slides}
    missing = [n for n in pinned["file_name"] if n not in by_name]
    changed = [
        n
        for n, md5 in zip(pinned["file_name"], pinned["md5sum"], strict=True)
        if n in by_name and by_name[n]["md5sum"] != md5
    ]
    if missing or changed:
        raise ValueError(
            f"pinned cohort does not match the GDC: {len(missing)} file(s) no longer listed "
            f"{missing[:5]}, {len(changed)} with another md5 {changed[:5]}"
        )
    return [by_name[n] for n in pinned["file_name"]]


def labels_from_cdr(path: str | Path, dataset: str) -> pd.DataFrame:
    """Case labels from the TCGA Pan-Cancer Clinical Data Resource (Liu et al., Cell 2018;
    ``data/clinical/tcga_cdr_*.csv``): ``case_id, project_id, typing, staging`` with
    the same rules as the GDC path (``histological_type`` for ESCA typing, the cancer type for
    KICA, ``ajcc_pathologic_tumor_stage`` for staging). Used offline to count the classes the
    papers' cohorts can have, and to fill labels the GDC leaves empty."""
    cdr = pd.read_csv(path, dtype=str)
    projects = {p.removeprefix("TCGA-"): p for p in PROJECTS[dataset]}
    cdr = cdr[cdr["type"].isin(projects)]
    out = pd.DataFrame(
        {
            "case_id": cdr["bcr_patient_barcode"],
            "project_id": cdr["type"].map(projects),
        }
    )
    out["typing"] = [
        typing_label(dataset, p, h)
        for p, h in zip(out["project_id"], cdr["histological_type"], strict=True)
    ]
    out["staging"] = [staging_label(s) for s in cdr["ajcc_pathologic_tumor_stage"]]
    for task in TASKS:
        out[task] = out[task].astype("Int64")
    return out.reset_index(drop=True)


def build_tcga_cohort(
    profile,
    client=None,
    *,
    dry_run: bool = False,
    workers: int = 4,
    pinned: str | Path | None = None,
    cdr_path: str | Path | None = None,
    progress: bool = True,
):
    """Query the GDC for the profile's datasets, label the cases, download one diagnostic slide
    per case (resumable, md5-verified) and write the manifest and its pinned form.

    Args:
        profile: the ``tcga`` profile (its ``datasets``, ``slides_dir``, ``cohort_csv``).
        client: a :class:`wsigraph.data.gdc.GDCClient` (default: the public API).
        dry_run: list what would be downloaded (and the total size); write nothing.
        workers: parallel downloads.
        pinned: a pinned manifest (``case_id, file_name, md5sum, file_size``) to reproduce
            exactly: its files are re-resolved by name and md5 against today's GDC listing
            (ids change between releases) and nothing else is used.
        cdr_path: the TCGA-CDR table (:func:`labels_from_cdr`) to fill labels the GDC leaves
            empty (default: none).
        progress: byte progress bar.

    Returns:
        ``(manifest, report)``: the manifest of the slides on disk (all listed ones with
        ``dry_run``) and the :class:`~wsigraph.data.gdc.DownloadReport`. Slides that failed to
        download are left out of the manifest and listed in the report; rerunning continues
        where the last run stopped (finished files are skipped, partial ones resumed).
    """
    if client is None:
        from wsigraph.data.gdc import GDCClient

        client = GDCClient()
    frames = []
    for dataset in profile.datasets:
        slides, clinical = [], []
        for project in PROJECTS[dataset]:
            slides += client.diagnostic_slides(project)
            clinical += client.clinical(project)
        if pinned is not None:
            wanted = pd.read_csv(pinned, dtype={"file_name": str, "md5sum": str})
            listed = {s["file_name"] for s in slides}
            slides = resolve_pinned(wanted[wanted["file_name"].isin(listed)], slides)
        df = tcga_manifest(dataset, slides, clinical, profile.slides_dir)
        if cdr_path is not None:
            df = _fill_from_cdr(df, labels_from_cdr(cdr_path, dataset))
        frames.append(df)
    manifest = pd.concat(frames, ignore_index=True)
    if pinned is not None:
        wanted = pd.read_csv(pinned, dtype={"file_name": str, "md5sum": str})
        absent = sorted(set(wanted["file_name"]) - set(manifest["file_name"]))
        if absent:
            raise ValueError(f"{len(absent)} pinned file(s) not found in the GDC: {absent[:5]}")
    files = manifest[["file_id", "file_name", "md5sum", "file_size"]].to_dict("records")
    report = client.download(
        files, profile.slides_dir, workers=workers, dry_run=dry_run, progress=progress
    )
    if dry_run:
        return manifest, report
    failed = {name for name, _ in report.failed}
    manifest = manifest[~manifest["file_name"].isin(failed)].reset_index(drop=True)
    write_manifest(manifest, profile.cohort_csv)
    pin(manifest).to_csv(profile.work_dir / "cohort_pinned.csv", index=False)
    return read_manifest(profile.cohort_csv), report


def _fill_from_cdr(manifest: pd.DataFrame, cdr: pd.DataFrame) -> pd.DataFrame:
    """Labels the GDC leaves empty, taken from the TCGA-CDR table by case id."""
    by_case = cdr.set_index("case_id")
    out = manifest.copy()
    for task in TASKS:
        fill = out["case_id"].map(by_case[task]) if len(by_case) else None
        if fill is not None:
            out[task] = out[task].fillna(fill).astype("Int64")
    classes = {
        "typing": TYPING_CLASSES[out["dataset"].iloc[0]] if len(out) else (),
        "staging": STAGING_CLASSES,
    }
    for task in TASKS:
        out[f"{task}_name"] = [None if pd.isna(v) else classes[task][int(v)] for v in out[task]]
    return out
