"""Cohorts: the manifest of slides with their labels, and the papers' class counts beside ours.

The manifest (``work/<profile>/cohort.csv``) has one row per slide: ``slide_id, dataset, path,
typing, typing_name, staging, staging_name`` (labels are integers; 1 is the minority class of
each task in the papers; missing labels are empty), plus generator or GDC columns.

Paper cohorts, as the papers state them (H2-MIL "Datasets and Experiment Setting"; HIGT
"Datasets"). Joined with TCGA clinical data, H2-MIL's ESCA list is squamous 86 / adeno 49, so
its text appears to swap the two names; H2-MIL's KICA text likewise names chromophobe as the
larger class although TCGA holds 291 KIRP and 113 KICH patients. We list the papers' numbers
under the class they are most plausibly about: the larger class first.
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
        if real.exists():
            row = {"slide_id": real.stem, "dataset": "real", "path": str(real)}
            manifest = pd.concat([manifest, pd.DataFrame([row])], ignore_index=True)
    write_manifest(manifest, profile.cohort_csv)
    return read_manifest(profile.cohort_csv)
