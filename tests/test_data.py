"""The repository's own real fixtures (data/) and the lookup order of wsigraph.profiles.data_file."""

from __future__ import annotations

import hashlib
import re

import pytest

from wsigraph import profiles
from wsigraph.profiles import DATA_DIR, data_file

ROW = re.compile(r"^\| `([^`]+)` \| (\d+) \| `([0-9a-f]{64})` \|")


def test_every_file_in_data_is_listed_in_its_readme_with_size_and_sha256():
    rows = [ROW.match(line) for line in (DATA_DIR / "README.md").read_text().splitlines()]
    listed = {m[1]: (int(m[2]), m[3]) for m in rows if m}
    stored = {
        str(p.relative_to(DATA_DIR)): p
        for p in DATA_DIR.rglob("*")
        if p.is_file() and p.name != "README.md"
    }
    assert sorted(listed) == sorted(stored)
    for name, path in stored.items():
        data = path.read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == listed[name], name
        assert len(data) < 5 * 2**20, name
    assert sum(size for size, _ in listed.values()) < 20e6


def test_data_file_looks_in_the_repository_then_under_the_shared_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("WSIGRAPH_SHARED_DATA", str(tmp_path))
    (tmp_path / "wsi").mkdir()
    (tmp_path / "wsi" / "CMU-1-Small-Region.svs").write_bytes(b"not this one")
    (tmp_path / "extra.csv").write_text("a\n")
    assert data_file("wsi/CMU-1-Small-Region.svs") == DATA_DIR / "wsi" / "CMU-1-Small-Region.svs"
    assert profiles.real_fixture_slide() == DATA_DIR / "wsi" / "CMU-1-Small-Region.svs"
    assert data_file("extra.csv") == tmp_path / "extra.csv"
    with pytest.raises(FileNotFoundError, match="WSIGRAPH_SHARED_DATA"):
        data_file("nuclei/monuseg_more")


def test_the_demo_and_test_fixtures_need_no_shared_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("WSIGRAPH_SHARED_DATA", str(tmp_path / "absent"))
    for rel in (
        "wsi/CMU-1-Small-Region.svs",
        "clinical/tcga_cdr_esca_kich_kirp_kirc.csv",
        "mil/musk1_clean1.data",
        "nuclei/monuseg",
        "tiles/histolab_no-tissue.png",
    ):
        assert data_file(rel).is_relative_to(DATA_DIR), rel
