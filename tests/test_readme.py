"""The README's result tables are generated from results/demo (scripts/readme_results.py)."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "readme_results", ROOT / "scripts/readme_results.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["readme_results"] = module
    spec.loader.exec_module(module)
    return module


def test_readme_result_tables_agree_with_results():
    script = _script()
    text = (ROOT / "README.md").read_text()
    assert len(script.BLOCK.findall(text)) >= 9
    assert script.regenerate(text) == text, "run scripts/readme_results.py"


def test_a_changed_number_is_noticed():
    script = _script()
    text = (ROOT / "README.md").read_text()
    first = script.BLOCK.search(text)
    stale = text[: first.start(4)] + first.group(4).replace(" / ", " /  ", 1) + text[first.end(4) :]
    assert script.regenerate(stale) == text


def test_a_labelled_run_size_is_kept_and_a_table_without_ours_is_named(tmp_path, monkeypatch):
    script = _script()
    tables = tmp_path / "results" / "demo" / "tables"
    tables.mkdir(parents=True)
    (tables / "t.md").write_text(
        "**T.** A caption | with a bar.\n\n| group | Method | Acc: ours (demo, 10 it.) / paper "
        "| F1: ours (demo, 10 it.) / paper |\n|---|---|---|---|\n"
        "| Ours | A \\| B | 50.00 ± 1.00 / 97.33 ± 1.15 | 40.00 / – |\n"
        "| Ours | C | not run on demo / 90.00 | not run on demo / – |\n"
    )
    (tables / "bare.md").write_text("| Method | Acc [paper] |\n|---|---|\n| A | 97.33 |\n")
    (tables / "none.md").write_text("No table here.\n")
    monkeypatch.setattr(script, "ROOT", tmp_path)
    grid = script.block("t", "all")
    assert "Acc: ours (demo, 10 it.) / paper" in grid and "50.00 ± 1.00 / 97.33 ± 1.15" in grid
    assert "A \\| B" in grid and "| C |" not in grid  # escaped bar kept; a row not run left out
    only_acc = script.block("t", "Acc")
    assert "F1:" not in only_acc and "Acc:" in only_acc
    with pytest.raises(ValueError, match="bare: no"):
        script.block("bare", "all")
    with pytest.raises(ValueError, match="none: no Markdown table"):
        script.block("none", "all")


def test_a_stand_in_column_and_a_findings_block(tmp_path, monkeypatch):
    script = _script()
    tables = tmp_path / "results" / "demo" / "tables"
    tables.mkdir(parents=True)
    (tables / "m.md").write_text(
        "**M.** Caption.\n\n| group | Method | BRCA AUC: ours (demo) on synthetic brca / paper |\n"
        "|---|---|---|\n| Ours | MiCo | 100.00 ± 0.00 / – |\n"
    )
    (tables / "slide_findings.md").write_text("- **Controls**: at chance.\n")
    monkeypatch.setattr(script, "ROOT", tmp_path)
    assert "on synthetic brca / paper" in script.block("m", "AUC")
    text = "a\n<!-- generated: findings slide -->\nold\n<!-- /generated -->\nb\n"
    new = script.regenerate(text)
    assert (
        new
        == "a\n<!-- generated: findings slide -->\n- **Controls**: at chance.\n<!-- /generated -->\nb\n"
    )
    with pytest.raises(FileNotFoundError):
        script.regenerate(text.replace("slide", "absent"))
