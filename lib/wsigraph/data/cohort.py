"""Cohorts: the manifest of slides with their labels, and the papers' class counts beside ours.

The manifest (``work/<profile>/cohort.csv``) has one row per slide: ``slide_id, dataset, path,
typing, typing_name, staging, staging_name`` (labels are integers; 1 is the minority class of
each task in TCGA; missing labels are empty), plus generator or GDC columns.

The cohort rule (:func:`keep_labelled`): a paper cohort holds the cases whose typing AND
staging are both known. H2-MIL "only include[s] patients whose diagnostic WSI, type and stage
records are all available", and both papers report one set of cases for the two tasks (H2-MIL
ESCA 135 / KICA 275, HIGT 161 / 371), so typing and staging are learnt and counted on the same
cases. ``require_both=False`` keeps any case with either label (each task then uses the cases
that have its label), for uses other than the papers'.

Paper cohorts (H2-MIL "Datasets and Experiment Setting"; HIGT "Datasets"), under the class
names the data give them (:data:`PAPER_COUNTS`; the papers' own names in
:data:`PAPER_CLASS_NAMES`). Under the rule, the TCGA-CDR table (all patients, slides or not)
gives ESCA 162 cases, squamous 94 / adenocarcinoma 68, and KICA 374, KIRP 261 / KICH 113,
against HIGT's 161 (94 / 67) and 371 (259 / 112). Both papers swap the ESCA typing names:
H2-MIL's "adenocarcinoma (86) and squamous cell carcinoma (49)" and HIGT's "67 squamous cell
carcinoma cases and 94 adenocarcinoma cases" cannot be, for TCGA has only 68 adenocarcinomas
with a known stage (89 in all) against 94 squamous ones (96), so the larger class is squamous;
we list 86 / 49 and 94 / 67 as squamous / adenocarcinoma. Likewise H2-MIL's KICA text names
chromophobe as the larger class (192) and papillary as the smaller (83), although TCGA holds
113 KICH patients and HIGT reports KIRP 259 / KICH 112; we list KIRP 192 / KICH 83.

TCGA (``build_tcga_cohort``): the GDC's diagnostic slides of TCGA-ESCA, TCGA-KIRP and TCGA-KICH,
labelled by :func:`typing_label` and :func:`staging_label`, one slide per case
(:func:`one_slide_per_case`), labels the GDC leaves empty filled from the TCGA-CDR, then the
cohort rule (:func:`tcga_manifest`), downloaded with :mod:`wsigraph.data.gdc`; the manifest is
pinned by file name and md5 (:func:`pin`, :func:`resolve_pinned`). :func:`labels_from_cdr`
applies the same label rules to the TCGA-CDR table offline. The demo cohort
(:func:`build_demo_cohort`) gives every synthetic slide both labels; its real fixture slide is
unlabelled on purpose (dataset ``"real"``, in no task).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from wsigraph.data.slides import Slide
from wsigraph.io import atomic_path
from wsigraph.progress import mode as progress_mode
from wsigraph.progress import to_terminal

TASKS = ("typing", "staging")
STAGING_CLASSES = ("early (I-II)", "late (III-IV)")

#: (paper, dataset, task) -> (class 0 name, class 0 count, class 1 name, class 1 count), the
#: papers' counts under the class names the data give them (see the module docstring).
PAPER_COUNTS: dict[tuple[str, str, str], tuple[str, int, str, int]] = {
    ("H2-MIL", "esca", "typing"): ("squamous", 86, "adenocarcinoma", 49),
    ("H2-MIL", "esca", "staging"): (STAGING_CLASSES[0], 80, STAGING_CLASSES[1], 55),
    ("H2-MIL", "kica", "typing"): ("KIRP", 192, "KICH", 83),
    ("H2-MIL", "kica", "staging"): (STAGING_CLASSES[0], 205, STAGING_CLASSES[1], 70),
    ("HIGT", "esca", "typing"): ("squamous", 94, "adenocarcinoma", 67),
    ("HIGT", "esca", "staging"): (STAGING_CLASSES[0], 96, STAGING_CLASSES[1], 65),
    ("HIGT", "kica", "typing"): ("KIRP", 259, "KICH", 112),
    ("HIGT", "kica", "staging"): (STAGING_CLASSES[0], 279, STAGING_CLASSES[1], 92),
}

#: Where a paper names a count otherwise: (paper, dataset, task) -> the paper's names of the
#: counts :data:`PAPER_COUNTS` lists as class 0 and class 1 (both papers swap the ESCA typing
#: classes, H2-MIL also the KICA ones).
PAPER_CLASS_NAMES: dict[tuple[str, str, str], tuple[str, str]] = {
    ("H2-MIL", "esca", "typing"): ("adenocarcinoma", "squamous cell carcinoma"),
    ("H2-MIL", "kica", "typing"): ("chromophobe", "renal papillary cell carcinoma"),
    ("HIGT", "esca", "typing"): ("adenocarcinoma", "squamous cell carcinoma"),
}


def class_count_table(
    manifest: pd.DataFrame,
    label: str = "ours",
    *,
    require_both: bool = True,
    cdr_path: str | Path | None = None,
) -> pd.DataFrame:
    """Class counts of ``manifest`` beside H2-MIL's and HIGT's, one row per (dataset, task, class).

    Like is compared with like: classes are named by the data (:data:`PAPER_COUNTS`; the column
    ``"named in the papers"`` gives the papers' own name where it differs, e.g. H2-MIL's
    "adenocarcinoma" for its 86 squamous cases), and with ``require_both`` (default) our counts
    are of the cases with both labels known, the papers' one set of cases per dataset, even
    when the manifest was built with ``require_both=False``.

    Args:
        manifest: a cohort manifest (rows of other datasets, e.g. ``"real"``, are ignored).
        label: our column's name (e.g. ``"ours (demo)"``), so demo numbers are never mistaken
            for the papers'.
        require_both: count only the cases with both labels; ``False`` counts each task on the
            cases with its label.
        cdr_path: the TCGA-CDR table; adds a ``"TCGA-CDR"`` column, the counts the same rule
            gives on all TCGA patients (slides or not), an upper bound of the papers' cohorts.
    """
    rows = []
    cdr = {}
    if cdr_path is not None:
        for dataset in PROJECTS:
            cdr[dataset] = keep_labelled(labels_from_cdr(cdr_path, dataset), require_both)
    for (paper, dataset, task), (n0, c0, n1, c1) in PAPER_COUNTS.items():
        if paper != "H2-MIL":
            continue
        higt = PAPER_COUNTS[("HIGT", dataset, task)]
        sub = (
            manifest[manifest["dataset"] == dataset] if "dataset" in manifest else manifest.iloc[:0]
        )
        if require_both and len(sub):
            both = pd.Series(True, index=sub.index)
            for t in TASKS:
                both &= sub[t].notna() if t in sub else False
            sub = sub[both]
        for cls, name, h2, hg in ((0, n0, c0, higt[1]), (1, n1, c1, higt[3])):
            ours = int((sub[task] == cls).sum()) if task in sub else 0
            published = [
                f"{p} '{PAPER_CLASS_NAMES[(p, dataset, task)][cls]}'"
                for p in ("H2-MIL", "HIGT")
                if (p, dataset, task) in PAPER_CLASS_NAMES
            ]
            row = {
                "dataset": dataset.upper(),
                "task": task,
                "class": f"{cls}: {name}",
                label: ours,
                "H2-MIL": h2,
                "HIGT": hg,
            }
            if cdr:
                row["TCGA-CDR"] = int((cdr[dataset][task] == cls).sum())
            row["named in the papers"] = "swapped: " + ", ".join(published) if published else ""
            rows.append(row)
    table = pd.DataFrame(rows)
    counted = [label, "H2-MIL", "HIGT"] + (["TCGA-CDR"] if cdr else [])
    totals = table.groupby(["dataset", "task"], sort=False)[counted].sum()
    for col in counted:
        table[f"{col} %"] = [
            100 * r[col] / totals.loc[(r["dataset"], r["task"]), col]
            if totals.loc[(r["dataset"], r["task"]), col]
            else float("nan")
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


#: Manifest columns for slides whose metadata lacks their magnification: ``objective_power``
#: (magnification of level 0) and ``mpp`` (um per level-0 pixel; the magnification is then taken
#: as 10 / mpp, see :mod:`wsigraph.data.slides`). Every stage that opens a slide honours them.
MAGNIFICATION_COLUMNS = ("objective_power", "mpp")


def with_magnification(
    manifest: pd.DataFrame, objective_power: float | None = None, mpp: float | None = None
) -> pd.DataFrame:
    """A copy of ``manifest`` whose ``objective_power`` / ``mpp`` columns hold the given value
    for every slide that has none there yet (a value in the CSV wins over the parameter).

    Raises:
        ValueError: for a value that is not a positive number.
    """
    out = manifest.copy()
    for column, value in zip(MAGNIFICATION_COLUMNS, (objective_power, mpp), strict=True):
        if value is None:
            continue
        if not (isinstance(value, int | float) and value > 0):
            raise ValueError(f"{column} must be a positive number, got {value!r}")
        if column not in out:
            out[column] = float("nan")
        out[column] = out[column].astype("float64").fillna(float(value))
    return out


def slide_of(row) -> Slide:
    """Open the slide of one manifest row (a Series or a namedtuple row), honouring its
    ``objective_power`` / ``mpp`` columns."""

    def get(name):
        value = row.get(name) if hasattr(row, "get") else getattr(row, name, None)
        return None if value is None or pd.isna(value) else float(value)

    path = row["path"] if hasattr(row, "get") else row.path
    return Slide(path, objective_power=get("objective_power"), mpp=get("mpp"))


#: Columns of a cohort CSV that are not labels (:func:`read_cohort_csv`).
COHORT_CSV_COLUMNS = ("slide_id", "path", "case_id", "dataset", *MAGNIFICATION_COLUMNS)


def read_cohort_csv(
    path: str | Path,
    labels: list[str] | None = None,
    classes: dict[str, list] | None = None,
    root: str | Path | None = None,
) -> pd.DataFrame:
    """Your own cohort as a manifest: a CSV with a ``path`` column (one slide file per row,
    used where it is: nothing is copied), one or more label columns, and optional
    ``slide_id`` (default: the file name's stem), ``case_id`` (default: the slide id),
    ``dataset`` (default ``"custom"``), ``objective_power`` and ``mpp`` columns.

    Label columns hold class names (an empty cell: the slide has no label for that column). The
    pipeline's paper tables train the columns named ``typing`` and ``staging``; any other
    label column is kept too (``<label>`` the class index, ``<label>_name`` the name).

    Args:
        path: the CSV.
        labels: the label columns (default: every column not in :data:`COHORT_CSV_COLUMNS`).
        classes: per label column, its class names in index order (default: sorted); a value
            outside them is an error.
        root: folder that relative paths start from (default: the CSV's folder).

    Raises:
        FileNotFoundError: no CSV at ``path``.
        ValueError: one message listing every bad row and column: no ``path`` column, no label
            column, a missing slide file, a duplicate slide id, an unknown label, a label column
            with fewer than two classes, a magnification that is not a positive number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no cohort CSV")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    root = Path(root) if root is not None else path.parent
    if "path" not in df.columns:
        raise ValueError(f"{path}: no 'path' column (columns: {', '.join(df.columns)})")
    labels = (
        list(labels)
        if labels is not None
        else [c for c in df.columns if c not in COHORT_CSV_COLUMNS]
    )
    problems = [f"no label column {c!r}" for c in labels if c not in df.columns]
    if not labels:
        problems.append(
            "no label column: add one (e.g. 'typing') beside "
            + ", ".join(c for c in df.columns if c in COHORT_CSV_COLUMNS)
        )
    out = pd.DataFrame()
    paths = [p if Path(p).is_absolute() else str((root / p).resolve()) for p in df["path"]]
    ids = [
        r["slide_id"] or Path(p).stem if "slide_id" in df else Path(p).stem
        for r, p in zip(df.to_dict("records"), paths, strict=True)
    ]
    seen: dict[str, int] = {}
    for i, (sid, p) in enumerate(zip(ids, paths, strict=True)):
        line = i + 2  # the header is line 1
        if not df["path"].iloc[i]:
            problems.append(f"line {line}: empty path")
        elif not Path(p).is_file():
            problems.append(f"line {line} ({sid}): no slide file at {p}")
        if sid in seen:
            problems.append(f"line {line}: duplicate slide {sid!r} (also line {seen[sid]})")
        seen.setdefault(sid, line)
    out["slide_id"] = ids
    out["dataset"] = df["dataset"].replace("", "custom") if "dataset" in df else "custom"
    out["path"] = paths
    out["case_id"] = (
        df["case_id"].where(df["case_id"] != "", out["slide_id"]) if "case_id" in df else ids
    )
    for column in MAGNIFICATION_COLUMNS:
        if column in df:
            values = pd.to_numeric(df[column].replace("", None), errors="coerce")
            bad = (df[column] != "") & ~(values > 0)
            problems += [
                f"line {i + 2}: {column} {df[column].iloc[i]!r} is not a positive number"
                for i in np.flatnonzero(bad)
            ]
            out[column] = values
    for column in [c for c in labels if c in df.columns]:
        given = df[column]
        names = list((classes or {}).get(column) or sorted(set(given) - {""}))
        unknown = ~given.isin(names) & (given != "")
        problems += [
            f"line {i + 2}: label {given.iloc[i]!r} in column {column!r} is not one of {names}"
            for i in np.flatnonzero(unknown)
        ]
        if len(names) < 2:
            problems.append(
                f"column {column!r} has {len(names)} class(es) {names}: a label needs two or more"
            )
        code = {n: k for k, n in enumerate(names)}
        out[column] = pd.array([code.get(v) for v in given], dtype="Int64")
        out[f"{column}_name"] = given.replace("", None)
    if problems:
        raise ValueError(f"{path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return out


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
#: Typing class names by label; class 1 is the smaller class in TCGA (ESCA: 68 adenocarcinoma
#: against 94 squamous cases with a known stage; KICA: 113 KICH against 261 KIRP).
TYPING_CLASSES = {"esca": ("squamous", "adenocarcinoma"), "kica": ("KIRP", "KICH")}
PINNED_COLUMNS = ("case_id", "file_name", "md5sum", "file_size")


def typing_label(dataset: str, project: str, diagnosis: str | None) -> int | None:
    """Typing class (0/1) of a case, ``None`` when it is neither class.

    ESCA: the (GDC ``primary_diagnosis`` / TCGA-CDR ``histological_type``) text — any
    "squamous" diagnosis is class 0 (squamous cell carcinoma, incl. basaloid / keratinising),
    any other "adenocarcinoma" class 1; anything else (e.g. "Not Reported") has no label.
    KICA: the project — TCGA-KIRP is class 0 (papillary), TCGA-KICH class 1 (chromophobe).
    Class 1 is the smaller class in TCGA (:data:`TYPING_CLASSES`).
    """
    if dataset == "kica":
        return {"TCGA-KIRP": 0, "TCGA-KICH": 1}.get(project)
    text = (diagnosis or "").lower()
    if "squamous" in text:
        return 0
    if "adenocarcinoma" in text:
        return 1
    return None


def staging_label(stage: str | None) -> int | None:
    """0 for AJCC pathologic stage I-II (any sub-stage), 1 for III-IV, ``None`` otherwise
    ("Stage X", "Not Reported", "[Discrepancy]", missing)."""
    text = (stage or "").strip().upper()
    if not text.startswith("STAGE "):
        return None
    roman = text.removeprefix("STAGE ").rstrip("ABC")
    return {"I": 0, "II": 0, "III": 1, "IV": 1}.get(roman)


def keep_labelled(df: pd.DataFrame, require_both: bool = True, name: str = "") -> pd.DataFrame:
    """The cohort rule: the cases (rows) that enter a cohort.

    With ``require_both`` (the papers' rule, the default) a case enters when its typing AND its
    staging are both known, so that both tasks use the same cases; with ``require_both=False``
    when either is (each task then filters its own cases), today's rule for other uses.

    Raises:
        ValueError: ``require_both`` and cases are given but none has both labels; the message
            says how many had each label (``name``, e.g. the dataset, heads it).
    """
    known = {task: df[task].notna() for task in TASKS}
    if require_both:
        labelled = known["typing"] & known["staging"]
    else:
        labelled = known["typing"] | known["staging"]
    if require_both and len(df) and not labelled.any():
        raise ValueError(
            f"{name + ': ' if name else ''}no case has both labels known: of {len(df)} case(s), "
            f"{int(known['typing'].sum())} have a typing label and "
            f"{int(known['staging'].sum())} a staging label, none both "
            "(require_both=False keeps the cases with either label)"
        )
    df = df[labelled].reset_index(drop=True)
    return df


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
    dataset: str,
    slides: list[dict],
    clinical: list[dict],
    slides_dir: str | Path,
    *,
    require_both: bool = True,
    cdr: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The manifest of one TCGA dataset from GDC hits (:mod:`wsigraph.data.gdc`).

    Args:
        dataset: ``"esca"`` or ``"kica"``.
        slides: ``diagnostic_slides`` hits of its projects (``file_id, file_name, md5sum,
            file_size, case_submitter_id, project_id``).
        clinical: ``clinical`` hits of its projects (``submitter_id, primary_diagnosis,
            ajcc_pathologic_stage, vital_status, days_to_death, days_to_last_follow_up``).
        slides_dir: where the slides are (or will be) downloaded.
        require_both: the cohort rule (:func:`keep_labelled`): keep the cases whose typing and
            staging are both known (the papers' cohorts); ``False``: either label.
        cdr: TCGA-CDR labels (:func:`labels_from_cdr`) filling the labels the GDC leaves
            empty, before the rule is applied.

    Returns:
        One row per case with a diagnostic slide that passes the cohort rule: ``slide_id`` (the
        file name without ``.svs``), ``dataset, path, typing, typing_name, staging,
        staging_name, case_id, project_id, file_id, file_name, md5sum, file_size`` and the
        survival fields.

    Raises:
        ValueError: cases are listed but none passes the rule (:func:`keep_labelled`).
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
                "file_size": _int_or_as_is(s["file_size"]),
                "primary_diagnosis": case.get("primary_diagnosis"),
                "ajcc_pathologic_stage": case.get("ajcc_pathologic_stage"),
                "vital_status": case.get("vital_status"),
                "days_to_death": case.get("days_to_death"),
                "days_to_last_follow_up": case.get("days_to_last_follow_up"),
            }
        )
    df = one_slide_per_case(pd.DataFrame(rows, columns=_TCGA_COLUMNS))
    for task in TASKS:
        df[task] = df[task].astype("Int64")
    if cdr is not None:
        df = _fill_from_cdr(df, cdr)
    return keep_labelled(df, require_both, name=dataset.upper())


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
    KICA, ``ajcc_pathologic_tumor_stage`` for staging), one row per patient, whatever labels
    are known. Used offline to count the classes the papers' cohorts can have (with the cohort
    rule, :func:`keep_labelled`), and to fill labels the GDC leaves empty."""
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
    require_both: bool = True,
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
            empty (default: none); filled before the cohort rule is applied.
        require_both: the cohort rule (:func:`keep_labelled`): only cases whose typing and
            staging are both known (the papers' cohorts); ``False`` keeps cases with either.
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
    frames, listed = [], set()
    for dataset in profile.datasets:
        slides, clinical = [], []
        for project in PROJECTS[dataset]:
            slides += client.diagnostic_slides(project)
            clinical += client.clinical(project)
        here = {s["file_name"] for s in slides}
        listed |= here
        if pinned is not None:
            wanted = pd.read_csv(pinned, dtype={"file_name": str, "md5sum": str})
            slides = resolve_pinned(wanted[wanted["file_name"].isin(here)], slides)
        cdr = labels_from_cdr(cdr_path, dataset) if cdr_path is not None else None
        frames.append(
            tcga_manifest(
                dataset, slides, clinical, profile.slides_dir, require_both=require_both, cdr=cdr
            )
        )
    manifest = pd.concat(frames, ignore_index=True)
    if pinned is not None:
        wanted = pd.read_csv(pinned, dtype={"file_name": str, "md5sum": str})
        absent = sorted(set(wanted["file_name"]) - listed)
        if absent:
            raise ValueError(f"{len(absent)} pinned file(s) not found in the GDC: {absent[:5]}")
        dropped = sorted(set(wanted["file_name"]) - set(manifest["file_name"]))
        if dropped:
            raise ValueError(
                f"{len(dropped)} pinned file(s) fail the cohort rule (require_both="
                f"{require_both}; a label is unknown): {dropped[:5]}"
            )
    files = manifest[["file_id", "file_name", "md5sum", "file_size"]].to_dict("records")
    report = client.download(
        files, profile.slides_dir, workers=workers, dry_run=dry_run, progress=progress
    )
    if dry_run:  # the listing is what a dry run is for: on the terminal too under ./run_all.sh
        if progress_mode() == "terminal":
            to_terminal(f"GDC {report}\n{report.summary().to_string(index=False)}")
        return manifest, report
    failed = {name for name, _ in report.failed}
    manifest = manifest[~manifest["file_name"].isin(failed)].reset_index(drop=True)
    located = getattr(report, "located", {})  # used in place, e.g. gdc-client's <file_id>/<name>
    manifest["path"] = [
        str(located.get(n, p)) for n, p in zip(manifest["file_name"], manifest["path"], strict=True)
    ]
    manifest["file_size"] = manifest["file_size"].astype("int64")  # bad sizes failed above
    write_manifest(manifest, profile.cohort_csv)
    pin(manifest).to_csv(profile.work_dir / "cohort_pinned.csv", index=False)
    return read_manifest(profile.cohort_csv), report


def _int_or_as_is(value):
    """``int(value)``, or ``value`` itself when it is not a whole number: a broken GDC size then
    fails that one file in :meth:`~wsigraph.data.gdc.GDCClient.download`, named, instead of
    stopping the whole cohort here."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


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
