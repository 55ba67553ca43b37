"""TCGA cohort rules (labels, one slide per case, pinning) and the offline TCGA-CDR counts."""

from dataclasses import dataclass

import pandas as pd
import pytest

from wsigraph.data import cohort as C
from wsigraph.profiles import data_file, get_profile


@pytest.mark.parametrize(
    "dataset, project, diagnosis, expected",
    [
        ("esca", "TCGA-ESCA", "Adenocarcinoma, NOS", 0),
        ("esca", "TCGA-ESCA", "Esophagus Adenocarcinoma, NOS", 0),
        ("esca", "TCGA-ESCA", "Tubular adenocarcinoma", 0),
        ("esca", "TCGA-ESCA", "Squamous cell carcinoma, keratinizing, NOS", 1),
        ("esca", "TCGA-ESCA", "Basaloid squamous cell carcinoma", 1),
        ("esca", "TCGA-ESCA", "Not Reported", None),
        ("esca", "TCGA-ESCA", None, None),
        ("kica", "TCGA-KIRP", "Papillary adenocarcinoma, NOS", 0),
        ("kica", "TCGA-KICH", "Renal cell carcinoma, chromophobe type", 1),
        ("kica", "TCGA-KIRC", "Clear cell adenocarcinoma, NOS", None),
    ],
)
def test_typing_label(dataset, project, diagnosis, expected):
    assert C.typing_label(dataset, project, diagnosis) == expected


@pytest.mark.parametrize(
    "stage, expected",
    [
        ("Stage I", 0),
        ("Stage IA", 0),
        ("Stage IIB", 0),
        ("Stage III", 1),
        ("Stage IIIC", 1),
        ("Stage IVA", 1),
        ("Stage X", None),
        ("Not Reported", None),
        ("[Discrepancy]", None),
        (None, None),
    ],
)
def test_staging_label(stage, expected):
    assert C.staging_label(stage) == expected


def _slide(case, name, project="TCGA-ESCA", md5="0" * 32, size=10):
    return {
        "file_id": f"id-{name}",
        "file_name": name,
        "md5sum": md5,
        "file_size": size,
        "case_submitter_id": case,
        "project_id": project,
    }


def _case(case, diagnosis="Adenocarcinoma, NOS", stage="Stage II"):
    return {
        "submitter_id": case,
        "primary_diagnosis": diagnosis,
        "ajcc_pathologic_stage": stage,
        "vital_status": "Alive",
        "days_to_death": None,
        "days_to_last_follow_up": 100,
    }


def test_one_diagnostic_slide_per_case_and_labels(tmp_path):
    slides = [
        _slide("TCGA-AA-0001", "TCGA-AA-0001-01Z-00-DX2.B.svs"),
        _slide("TCGA-AA-0001", "TCGA-AA-0001-01Z-00-DX1.A.svs"),  # DX1 of the tumour: kept
        _slide("TCGA-AA-0001", "TCGA-AA-0001-11Z-00-DX1.C.svs"),  # normal tissue sample
        _slide("TCGA-AA-0002", "TCGA-AA-0002-01Z-00-DX1.D.svs"),
        _slide("TCGA-AA-0003", "TCGA-AA-0003-01Z-00-DX1.E.svs"),  # no label at all: dropped
        _slide("TCGA-AA-0004", "TCGA-AA-0004-01Z-00-DX1.F.svs"),  # no clinical record: dropped
    ]
    clinical = [
        _case("TCGA-AA-0001", "Squamous cell carcinoma, NOS", "Stage IIIA"),
        _case("TCGA-AA-0002", "Adenocarcinoma, NOS", "Not Reported"),
        _case("TCGA-AA-0003", "Not Reported", "Stage X"),
    ]
    m = C.tcga_manifest("esca", slides, clinical, tmp_path)
    assert m["file_name"].tolist() == [
        "TCGA-AA-0001-01Z-00-DX1.A.svs",
        "TCGA-AA-0002-01Z-00-DX1.D.svs",
    ]
    assert m["slide_id"].tolist() == ["TCGA-AA-0001-01Z-00-DX1.A", "TCGA-AA-0002-01Z-00-DX1.D"]
    assert m["typing"].tolist() == [1, 0] and m["typing_name"].tolist() == [
        "squamous",
        "adenocarcinoma",
    ]
    assert m["staging"].tolist()[0] == 1 and pd.isna(m["staging"].iloc[1])
    assert m["path"].iloc[0] == str(tmp_path / "TCGA-AA-0001-01Z-00-DX1.A.svs")


def test_pin_and_resolve_by_name_and_md5():
    slides = [_slide(f"c{i}", f"f{i}.svs", md5=f"{i}" * 32) for i in range(3)]
    manifest = pd.DataFrame([{"case_id": s["case_submitter_id"], **s} for s in slides])
    pinned = C.pin(manifest)
    assert list(pinned.columns) == list(C.PINNED_COLUMNS)
    today = [dict(s, file_id=f"new-{s['file_name']}") for s in slides]  # ids change
    resolved = C.resolve_pinned(pinned, today)
    assert [r["file_id"] for r in resolved] == ["new-f0.svs", "new-f1.svs", "new-f2.svs"]
    changed = [dict(today[0], md5sum="f" * 32), *today[1:]]
    with pytest.raises(ValueError, match="another md5"):
        C.resolve_pinned(pinned, changed)
    with pytest.raises(ValueError, match="no longer listed"):
        C.resolve_pinned(pinned, today[1:])


def test_tcga_cdr_counts_beside_the_papers():
    """The label rules on the real TCGA-CDR table: every patient, slides or not. HIGT's staging
    counts (ESCA 96 / 65, KICA 279 / 92) are the CDR's less a few cases without a slide."""
    path = data_file("clinical/tcga_cdr_esca_kich_kirp_kirc.csv")
    esca, kica = C.labels_from_cdr(path, "esca"), C.labels_from_cdr(path, "kica")
    assert esca["typing"].value_counts().to_dict() == {1: 96, 0: 89}
    assert esca["staging"].value_counts().to_dict() == {0: 97, 1: 65}
    assert kica["typing"].value_counts().to_dict() == {0: 291, 1: 113}
    assert kica["staging"].value_counts().to_dict() == {0: 281, 1: 93}
    assert set(kica["project_id"]) == {"TCGA-KIRP", "TCGA-KICH"}


class FakeGDC:
    """What build_tcga_cohort needs of the GDC client (the client itself is tested in
    test_gdc.py against a loopback server)."""

    def __init__(self, slides: dict, clinical: dict, fail: set):
        self.slides_by_project, self.clinical_by_project, self.fail = slides, clinical, fail
        self.calls = []

    def diagnostic_slides(self, project):
        return self.slides_by_project.get(project, [])

    def clinical(self, project):
        return self.clinical_by_project.get(project, [])

    def download(self, files, dest, workers=4, dry_run=False, progress=True):
        self.calls.append((len(files), dry_run))
        names = [f["file_name"] for f in files]
        return _Report(failed=[(n, "md5 mismatch") for n in names if n in self.fail])


@dataclass
class _Report:
    failed: list


def test_build_tcga_cohort_writes_manifest_and_pin(tmp_path, monkeypatch):
    monkeypatch.setenv("WSIGRAPH_WORK", str(tmp_path / "work"))
    profile = get_profile("tcga")
    profile.work_dir.mkdir(parents=True)
    kirp = [_slide(f"TCGA-K{i}", f"TCGA-K{i}-01Z-00-DX1.{i}.svs", "TCGA-KIRP") for i in range(3)]
    kich = [_slide("TCGA-H1", "TCGA-H1-01Z-00-DX1.h.svs", "TCGA-KICH")]
    esca = [_slide("TCGA-E1", "TCGA-E1-01Z-00-DX1.e.svs")]
    client = FakeGDC(
        slides={"TCGA-KIRP": kirp, "TCGA-KICH": kich, "TCGA-ESCA": esca},
        clinical={
            "TCGA-KIRP": [_case(f"TCGA-K{i}", "Papillary", "Stage I") for i in range(3)],
            "TCGA-KICH": [_case("TCGA-H1", "Chromophobe", "Stage III")],
            "TCGA-ESCA": [_case("TCGA-E1")],
        },
        fail={"TCGA-K2-01Z-00-DX1.2.svs"},
    )
    manifest, report = C.build_tcga_cohort(profile, client, dry_run=True)
    assert len(manifest) == 5 and client.calls == [(5, True)]
    assert not profile.cohort_csv.exists()  # a dry run writes nothing
    manifest, report = C.build_tcga_cohort(profile, client)
    assert len(manifest) == 4 and "TCGA-K2-01Z-00-DX1.2.svs" not in set(manifest["file_name"])
    assert C.read_manifest(profile.cohort_csv)["slide_id"].tolist() == manifest["slide_id"].tolist()
    pinned = pd.read_csv(profile.work_dir / "cohort_pinned.csv")
    assert list(pinned.columns) == list(C.PINNED_COLUMNS) and len(pinned) == 4
    kica = manifest[manifest["dataset"] == "kica"].set_index("case_id")
    assert kica.loc["TCGA-H1", "typing"] == 1 and kica.loc["TCGA-K0", "typing"] == 0
    assert kica.loc["TCGA-H1", "staging_name"] == "late (III-IV)"
    # Reproduce exactly from the pin: only the pinned files, even if the GDC lists more.
    client.fail = set()
    again, _ = C.build_tcga_cohort(profile, client, pinned=profile.work_dir / "cohort_pinned.csv")
    assert sorted(again["file_name"]) == sorted(pinned["file_name"])
