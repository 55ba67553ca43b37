"""Regenerate the README's result tables from the written tables in ``results/demo/tables``.

Each generated block sits between ``<!-- generated: <table_id> <metric> -->`` and
``<!-- /generated -->`` in README.md: one row per paper row, one column per cell of that
metric, each "ours / paper" exactly as ``05_tables`` (or notebooks 07-09) wrote them. A block
``<!-- generated: findings <name> -->`` holds ``results/demo/tables/<name>_findings.md``, the
"what the demo shows" text a notebook wrote from the numbers it computed.

    .venv/bin/python scripts/readme_results.py           # rewrite README.md in place
    .venv/bin/python scripts/readme_results.py --check   # exit 1 if README.md is stale

``tests/test_readme.py`` runs the check, so the README cannot drift from ``results/``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- generated: (\S+) (\S+) -->\n)(.*?)(<!-- /generated -->)", re.DOTALL)


def block(table_id: str, metric: str, profile: str = "demo") -> str:
    """The Markdown grid of one written table's cells whose header names ``metric`` (e.g.
    ``AUC``; ``all`` for every cell), each "ours / paper", from the grid of
    ``results/<profile>/tables/<table_id>.md`` (whose cells already read "ours / paper")."""
    import pandas as pd

    from wsigraph.tables import markdown_grid

    text = (ROOT / "results" / profile / "tables" / f"{table_id}.md").read_text()
    rows = [_cells(line) for line in text.splitlines() if line.startswith("|")]
    if len(rows) < 2:
        raise ValueError(f"{table_id}: no Markdown table in its .md file")
    df = pd.DataFrame(rows[2:], columns=rows[0])  # rows[1] is the |---| rule
    # "KICA Typing AUC: ours (demo) / paper", or with the run's size: "...: ours (demo, 10 it.) / paper"
    # (and "...: ours (demo) on synthetic brca / paper" where the column ran on a stand-in)
    label = re.compile(rf": ours \({re.escape(profile)}(?:, [^)]*)?\)(?: on [^/]+)? / paper$")
    cells = [c for c in df.columns if label.search(c)]
    if not cells:
        raise ValueError(f"{table_id}: no 'ours ({profile}...) / paper' column in its table")
    keep = [c for c in df.columns if c not in cells]  # group and the row header
    shown = [c for c in cells if metric == "all" or metric in c[: label.search(c).start()].split()]
    out = df[keep + shown]
    # rows the profile's run set leaves out (their tables say so) would only add noise here
    skipped = out[shown].apply(lambda s: s.str.startswith("not run on")).all(axis=1)
    return markdown_grid(out[~skipped])


def _cells(line: str) -> list[str]:
    """The cells of one Markdown table line (``\\|`` inside a cell is a literal bar)."""
    parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [p.strip().replace("\\|", "|") for p in parts]


def regenerate(text: str, profile: str = "demo") -> str:
    def replace(match: re.Match) -> str:
        head, table_id, metric, _, tail = match.groups()
        if table_id == "findings":
            path = ROOT / "results" / profile / "tables" / f"{metric}_findings.md"
            return head + path.read_text(encoding="utf-8") + tail
        return head + block(table_id, metric, profile) + tail

    return BLOCK.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    args = ap.parse_args(argv)
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = regenerate(text)
    if args.check:
        if new != text:
            print(
                "README.md result tables are stale: run scripts/readme_results.py", file=sys.stderr
            )
            return 1
        return 0
    readme.write_text(new)
    print(f"README.md: {len(BLOCK.findall(text))} result tables regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
