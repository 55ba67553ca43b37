"""TCGA cohort rules (labels, one slide per case, pinning) and the offline TCGA-CDR counts."""

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from wsigraph.data import cohort as C
from wsigraph.profiles import data_file, get_profile


@pytest.mark.parametrize(
    "dataset, project, diagnosis, expected",
    [
        ("esca", "TCGA-ESCA", "Adenocarcinoma, NOS", 1),
        ("esca", "TCGA-ESCA", "Esophagus Adenocarcinoma, NOS", 1),
        ("esca", "TCGA-ESCA", "Tubular adenocarcinoma", 1),
        ("esca", "TCGA-ESCA", "Squamous cell carcinoma, keratinizing, NOS", 0),
        ("esca", "TCGA-ESCA", "Basaloid squamous cell carcinoma", 0),
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
    # require_both=False: a case with either label enters (the papers' rule is tested below)
    m = C.tcga_manifest("esca", slides, clinical, tmp_path, require_both=False)
    assert m["file_name"].tolist() == [
        "TCGA-AA-0001-01Z-00-DX1.A.svs",
        "TCGA-AA-0002-01Z-00-DX1.D.svs",
    ]
    assert m["slide_id"].tolist() == ["TCGA-AA-0001-01Z-00-DX1.A", "TCGA-AA-0002-01Z-00-DX1.D"]
    assert m["typing"].tolist() == [0, 1] and m["typing_name"].tolist() == [
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
    assert esca["typing"].value_counts().to_dict() == {0: 96, 1: 89}
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
        # the first file was found in gdc-client's layout <file_id>/<file_name>
        located = {names[0]: Path(dest) / files[0]["file_id"] / names[0]} if names else {}
        return _Report(
            failed=[(n, "md5 mismatch") for n in names if n in self.fail], located=located
        )


@dataclass
class _Report:
    failed: list
    located: dict


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
    first, where = next(iter(report.located.items()))  # a file found in place is used there
    assert manifest.set_index("file_name").loc[first, "path"] == str(where)
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


def test_cdr_fills_only_the_labels_the_gdc_leaves_empty(tmp_path, monkeypatch):
    """With ``cdr_path``, a label the GDC gives is kept even where the TCGA-CDR disagrees; a label
    the GDC leaves empty is taken from the CDR (with its class name)."""
    monkeypatch.setenv("WSIGRAPH_WORK", str(tmp_path / "work"))
    profile = get_profile("tcga", datasets=("esca",))
    profile.work_dir.mkdir(parents=True)
    esca = [_slide(f"TCGA-E{i}", f"TCGA-E{i}-01Z-00-DX1.{i}.svs") for i in (1, 2)]
    client = FakeGDC(
        slides={"TCGA-ESCA": esca},
        clinical={
            "TCGA-ESCA": [
                _case("TCGA-E1", "Adenocarcinoma, NOS", "Stage II"),  # both labels known
                _case("TCGA-E2", "Adenocarcinoma, NOS", "Not Reported"),  # no stage
            ]
        },
        fail=set(),
    )
    cdr = tmp_path / "cdr.csv"
    pd.DataFrame(
        {
            "bcr_patient_barcode": ["TCGA-E1", "TCGA-E2"],
            "type": ["ESCA", "ESCA"],
            "histological_type": ["Esophagus Squamous Cell Carcinoma"] * 2,
            "ajcc_pathologic_tumor_stage": ["Stage IV", "Stage IIIA"],
        }
    ).to_csv(cdr, index=False)
    manifest, _ = C.build_tcga_cohort(profile, client, dry_run=True, cdr_path=cdr)
    m = manifest.set_index("case_id")
    assert m.loc["TCGA-E1", "typing"] == 1 and m.loc["TCGA-E1", "typing_name"] == "adenocarcinoma"
    assert m.loc["TCGA-E1", "staging"] == 0 and m.loc["TCGA-E1", "staging_name"] == "early (I-II)"
    assert m.loc["TCGA-E2", "typing"] == 1  # the GDC's, not the CDR's squamous
    assert m.loc["TCGA-E2", "staging"] == 1 and m.loc["TCGA-E2", "staging_name"] == "late (III-IV)"


# ---- the cohort rule: typing AND staging known (issue 15) -----------------------------------


def test_cohort_rule_on_the_tcga_cdr_table():
    """Both labels known, on all TCGA-CDR patients: ESCA 162 (squamous 94 / adenocarcinoma 68),
    KICA 374 (KIRP 261 / KICH 113), beside HIGT's 161 (94 / 67) and 371 (259 / 112). Every
    paper count is at most the CDR's count of the same class; under the papers' own ESCA names
    (adenocarcinoma 86 or 94) it would exceed the 68 adenocarcinomas with a known stage."""
    path = data_file("clinical/tcga_cdr_esca_kich_kirp_kirc.csv")
    esca = C.keep_labelled(C.labels_from_cdr(path, "esca"))
    kica = C.keep_labelled(C.labels_from_cdr(path, "kica"))
    assert len(esca) == 162 and len(kica) == 374
    assert esca["typing"].value_counts().to_dict() == {0: 94, 1: 68}
    assert esca["staging"].value_counts().to_dict() == {0: 97, 1: 65}
    assert kica["typing"].value_counts().to_dict() == {0: 261, 1: 113}
    assert kica["staging"].value_counts().to_dict() == {0: 281, 1: 93}
    assert C.TYPING_CLASSES["esca"] == ("squamous", "adenocarcinoma")
    assert C.TYPING_CLASSES["kica"] == ("KIRP", "KICH")
    both = {"esca": esca, "kica": kica}
    for (paper, dataset, task), (n0, c0, n1, c1) in C.PAPER_COUNTS.items():
        cdr = both[dataset][task].value_counts()
        names = C.TYPING_CLASSES[dataset] if task == "typing" else C.STAGING_CLASSES
        assert (n0, n1) == names, (paper, dataset, task)
        assert c0 <= cdr[0] and c1 <= cdr[1], (paper, dataset, task)
        assert c1 < c0 and cdr[1] < cdr[0]  # class 1 is the smaller class, in the papers and TCGA
    assert C.PAPER_COUNTS[("H2-MIL", "esca", "typing")] == ("squamous", 86, "adenocarcinoma", 49)
    assert C.PAPER_COUNTS[("HIGT", "esca", "typing")] == ("squamous", 94, "adenocarcinoma", 67)
    adeno = int((esca["typing"] == 1).sum())
    assert adeno < 86 and adeno < 94  # neither paper's "adenocarcinoma" count can be one
    # The relaxed rule keeps every patient with either label (today's behaviour for other uses).
    assert len(C.keep_labelled(C.labels_from_cdr(path, "esca"), require_both=False)) == 185
    assert len(C.keep_labelled(C.labels_from_cdr(path, "kica"), require_both=False)) == 404


def test_tcga_manifest_keeps_only_cases_with_both_labels(tmp_path):
    slides = [_slide(f"TCGA-AA-000{i}", f"TCGA-AA-000{i}-01Z-00-DX1.{i}.svs") for i in range(4)]
    clinical = [
        _case("TCGA-AA-0000", "Squamous cell carcinoma, NOS", "Stage IIIA"),  # both
        _case("TCGA-AA-0001", "Adenocarcinoma, NOS", "Not Reported"),  # typing only
        _case("TCGA-AA-0002", "Not Reported", "Stage I"),  # staging only
        _case("TCGA-AA-0003", "Adenocarcinoma, NOS", "Stage IVB"),  # both
    ]
    m = C.tcga_manifest("esca", slides, clinical, tmp_path)
    assert m["case_id"].tolist() == ["TCGA-AA-0000", "TCGA-AA-0003"]
    assert m["typing"].tolist() == [0, 1] and m["staging"].tolist() == [1, 1]
    assert m["typing_name"].tolist() == ["squamous", "adenocarcinoma"]
    either = C.tcga_manifest("esca", slides, clinical, tmp_path, require_both=False)
    assert either["case_id"].tolist() == [f"TCGA-AA-000{i}" for i in range(4)]
    assert either["typing"].isna().sum() == 1 and either["staging"].isna().sum() == 1


def test_no_case_with_both_labels_is_an_error_that_counts_each_label(tmp_path):
    slides = [_slide(f"TCGA-AA-000{i}", f"TCGA-AA-000{i}-01Z-00-DX1.{i}.svs") for i in range(5)]
    clinical = [
        _case("TCGA-AA-0000", "Adenocarcinoma, NOS", "Not Reported"),  # typing only
        _case("TCGA-AA-0001", "Squamous cell carcinoma, NOS", None),  # typing only
        _case("TCGA-AA-0002", "Adenocarcinoma, NOS", "Stage X"),  # typing only
        _case("TCGA-AA-0003", "Not Reported", "Stage II"),  # staging only
        _case("TCGA-AA-0004", "Not Reported", "Not Reported"),  # neither
    ]
    with pytest.raises(ValueError) as err:
        C.tcga_manifest("esca", slides, clinical, tmp_path)
    msg = str(err.value)
    assert "ESCA" in msg and "no case has both labels" in msg
    assert "of 5 case(s), 3 have a typing label and 1 a staging label" in msg
    assert "require_both=False" in msg
    either = C.tcga_manifest("esca", slides, clinical, tmp_path, require_both=False)
    assert len(either) == 4  # the option keeps today's behaviour: any case with a label
    empty = pd.DataFrame({"typing": pd.array([], "Int64"), "staging": pd.array([], "Int64")})
    assert C.keep_labelled(empty).empty  # no cases at all: nothing to refuse


def test_build_tcga_cohort_applies_the_rule_after_the_cdr_fill(tmp_path, monkeypatch):
    """The GDC path: a stage the GDC leaves empty but the TCGA-CDR knows lets the case in; a case
    with no stage anywhere stays out (unless ``require_both=False``); a pinned file that the
    rule drops is an error naming the rule, not a file missing from the GDC."""
    monkeypatch.setenv("WSIGRAPH_WORK", str(tmp_path / "work"))
    profile = get_profile("tcga", datasets=("esca",))
    profile.work_dir.mkdir(parents=True)
    esca = [_slide(f"TCGA-E{i}", f"TCGA-E{i}-01Z-00-DX1.{i}.svs") for i in (1, 2, 3)]
    client = FakeGDC(
        slides={"TCGA-ESCA": esca},
        clinical={
            "TCGA-ESCA": [
                _case("TCGA-E1", "Adenocarcinoma, NOS", "Stage II"),  # both from the GDC
                _case("TCGA-E2", "Squamous cell carcinoma, NOS", "Not Reported"),  # CDR: IIIA
                _case("TCGA-E3", "Squamous cell carcinoma, NOS", "Not Reported"),  # CDR: none
            ]
        },
        fail=set(),
    )
    cdr = tmp_path / "cdr.csv"
    pd.DataFrame(
        {
            "bcr_patient_barcode": ["TCGA-E2", "TCGA-E3"],
            "type": ["ESCA", "ESCA"],
            "histological_type": ["Esophagus Squamous Cell Carcinoma"] * 2,
            "ajcc_pathologic_tumor_stage": ["Stage IIIA", "[Discrepancy]"],
        }
    ).to_csv(cdr, index=False)
    manifest, _ = C.build_tcga_cohort(profile, client, cdr_path=cdr)
    assert manifest["case_id"].tolist() == ["TCGA-E1", "TCGA-E2"]
    assert manifest["staging"].tolist() == [0, 1] and manifest["typing"].tolist() == [1, 0]
    assert client.calls[-1] == (2, False)  # only the cohort's slides are downloaded
    either, _ = C.build_tcga_cohort(profile, client, cdr_path=cdr, require_both=False)
    assert either["case_id"].tolist() == ["TCGA-E1", "TCGA-E2", "TCGA-E3"]
    pin_either = profile.work_dir / "cohort_pinned.csv"  # written by the relaxed build
    with pytest.raises(ValueError, match="1 pinned file.*fail the cohort rule"):
        C.build_tcga_cohort(profile, client, cdr_path=cdr, pinned=pin_either)
    again, _ = C.build_tcga_cohort(
        profile, client, cdr_path=cdr, pinned=pin_either, require_both=False
    )
    assert sorted(again["case_id"]) == ["TCGA-E1", "TCGA-E2", "TCGA-E3"]


def test_class_count_table_compares_like_with_like():
    """Classes named by the data, the papers' counts under those names (their own names beside),
    and our counts of the cases with both labels, even from a manifest built with either."""
    manifest = pd.DataFrame(
        {
            "slide_id": [f"s{i}" for i in range(6)],
            "dataset": ["esca"] * 5 + ["real"],
            "typing": pd.array([0, 0, 1, 1, None, None], "Int64"),
            "staging": pd.array([0, 1, 0, None, 1, None], "Int64"),
        }
    )
    path = data_file("clinical/tcga_cdr_esca_kich_kirp_kirc.csv")
    t = C.class_count_table(manifest, label="ours (x)", cdr_path=path)
    counts = ["ours (x)", "H2-MIL", "HIGT", "TCGA-CDR"]
    esca = t[t["dataset"] == "ESCA"].set_index(["task", "class"])
    assert esca.loc[("typing", "0: squamous"), counts].tolist() == [2, 86, 94, 94]
    assert esca.loc[("typing", "1: adenocarcinoma"), counts].tolist() == [1, 49, 67, 68]
    assert esca.loc[("staging", "1: late (III-IV)"), "ours (x)"] == 1  # s4 has no typing label
    note = esca.loc[("typing", "0: squamous"), "named in the papers"]
    assert "swapped" in note and "H2-MIL 'adenocarcinoma'" in note
    assert "HIGT 'adenocarcinoma'" in note
    assert esca.loc[("staging", "0: early (I-II)"), "named in the papers"] == ""
    kica = t[t["dataset"] == "KICA"].set_index(["task", "class"])
    assert kica.loc[("typing", "0: KIRP"), counts[1:]].tolist() == [192, 259, 261]
    assert "H2-MIL 'chromophobe'" in kica.loc[("typing", "0: KIRP"), "named in the papers"]
    per_task = C.class_count_table(manifest, require_both=False)
    per_task = per_task.set_index(["dataset", "task", "class"])["ours"]
    assert per_task[("ESCA", "typing", "1: adenocarcinoma")] == 2
    assert per_task[("ESCA", "staging", "1: late (III-IV)")] == 2


def test_demo_cohort_follows_the_corrected_names():
    """The demo ESCA keeps H2-MIL's ratio, squamous 86 / adenocarcinoma 49, at 200 slides."""
    demo = {d.name: d for d in get_profile("demo").demo_datasets}
    for name, d in demo.items():
        n0, c0, n1, c1 = C.PAPER_COUNTS[("H2-MIL", name, "typing")]
        assert d.typing_classes == (n0, n1) == C.TYPING_CLASSES[name]
        assert d.typing_minority == round(c1 * d.n_slides / (c0 + c1))
        _, s0, _, s1 = C.PAPER_COUNTS[("H2-MIL", name, "staging")]
        assert d.staging_minority == round(s1 * d.n_slides / (s0 + s1))
    assert demo["esca"].n_slides == 200 and demo["esca"].typing_minority == 73


def test_your_own_cohort_csv_is_read_in_place(tmp_path, real_slide):
    csv = tmp_path / "cohort.csv"
    copy = tmp_path / "slides" / "b.svs"
    copy.parent.mkdir()
    copy.write_bytes(real_slide.read_bytes())
    (tmp_path / "slides" / "c.svs").write_bytes(real_slide.read_bytes())
    csv.write_text(
        "path,case_id,grade,typing,mpp\n"
        f"{real_slide},P1,low,KIRP,\n"
        "slides/b.svs,,high,,0.25\n"  # relative to the CSV; no typing label
        "slides/c.svs,P1,,KICH,\n"  # no grade label
    )
    m = C.read_cohort_csv(csv)
    assert m["slide_id"].tolist() == [real_slide.stem, "b", "c"]
    assert m["path"].tolist()[:2] == [str(real_slide), str(copy.resolve())]  # used in place
    assert m["case_id"].tolist() == ["P1", "b", "P1"] and set(m["dataset"]) == {"custom"}
    assert m["grade"].tolist()[:2] == [1, 0] and m["grade_name"].tolist()[:2] == ["low", "high"]
    assert m["typing"].isna().tolist() == [False, True, False] and m["grade"].isna().tolist()[2]
    assert m["mpp"].isna().tolist() == [True, False, True]
    ordered = C.read_cohort_csv(csv, labels=["grade"], classes={"grade": ["low", "high"]})
    assert ordered["grade"].tolist()[:2] == [0, 1] and "typing" not in ordered
    # written as a manifest, it reads back and its slides open honouring mpp
    C.write_manifest(m, tmp_path / "manifest.csv")
    back = C.read_manifest(tmp_path / "manifest.csv")
    with C.slide_of(back.iloc[1]) as s:
        assert s.mpp == 0.25


def test_a_bad_cohort_csv_lists_every_bad_row_at_once(tmp_path, real_slide):
    csv = tmp_path / "bad.csv"
    csv.write_text(
        "slide_id,path,grade,objective_power\n"
        f"a,{real_slide},low,\n"
        f"a,{real_slide},high,40\n"  # duplicate id
        "c,missing.svs,mid,-5\n"  # no file, unknown label, bad magnification
    )
    with pytest.raises(ValueError) as e:
        C.read_cohort_csv(csv, classes={"grade": ["low", "high"]})
    text = str(e.value)
    assert "4 problem(s)" in text
    assert "line 3: duplicate slide 'a' (also line 2)" in text
    assert "line 4 (c): no slide file at" in text
    assert "line 4: label 'mid' in column 'grade' is not one of ['low', 'high']" in text
    assert "line 4: objective_power '-5' is not a positive number" in text
    (tmp_path / "nolabel.csv").write_text(f"path\n{real_slide}\n")
    with pytest.raises(ValueError, match="no label column: add one"):
        C.read_cohort_csv(tmp_path / "nolabel.csv")
    (tmp_path / "nopath.csv").write_text("file,grade\nx,low\n")
    with pytest.raises(ValueError, match="no 'path' column"):
        C.read_cohort_csv(tmp_path / "nopath.csv")
    (tmp_path / "one.csv").write_text(f"path,grade\n{real_slide},low\n")
    with pytest.raises(ValueError, match="column 'grade' has 1 class"):
        C.read_cohort_csv(tmp_path / "one.csv")
