"""The paper / official code / ours tables: generated from the live defaults, never stale."""

import pytest

from wsigraph.provenance import CHOICES, comparison_table, write_comparisons


@pytest.mark.parametrize("paper", list(CHOICES))
def test_values_we_claim_to_follow_are_the_ones_that_run(paper):
    for c in CHOICES[paper]:
        if c.value is not None or c.item == "early stopping":
            assert c.follows in ("paper", "official", "both"), c.item
            assert c.ours() == c.value, (
                f"{paper} {c.item}: ours {c.ours()!r}, {c.follows} {c.value!r}"
            )


@pytest.mark.parametrize("paper", list(CHOICES))
def test_every_difference_is_explained(paper):
    df = comparison_table(paper)
    assert list(df.columns) == ["item", "paper", "official code", "ours", "ours follows", "note"]
    assert df["item"].is_unique
    ours_rows = df[df["ours follows"] == "ours"]
    assert (ours_rows["note"].str.len() > 10).all(), ours_rows["item"].tolist()


def test_the_table_follows_a_changed_default(monkeypatch):
    from wsigraph.models.h2mil import H2MILConfig

    field = H2MILConfig.__dataclass_fields__["hidden"]
    monkeypatch.setattr(field, "default", 512)
    df = comparison_table("H2-MIL").set_index("item")
    assert df.loc["hidden / read-out width", "ours"] == "512"


def test_write_comparisons(tmp_path):
    paths = write_comparisons(tmp_path)
    names = sorted(p.name for p in paths)
    assert names == [
        "h2mil_paper_official_ours.csv",
        "h2mil_paper_official_ours.md",
        "higt_paper_official_ours.csv",
        "higt_paper_official_ours.md",
        "mico_paper_official_ours.csv",
        "mico_paper_official_ours.md",
    ]
    text = (tmp_path / "h2mil_paper_official_ours.md").read_text()
    assert "| weight decay |" in text and "official code" in text
    with pytest.raises(ValueError, match="known: H2-MIL, HIGT"):
        comparison_table("NoSuchPaper")
