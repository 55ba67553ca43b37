"""The README's result tables are generated from results/demo (scripts/readme_results.py)."""

import importlib.util
import sys
from pathlib import Path

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
