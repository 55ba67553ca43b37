"""Regenerate the README's result tables from the written tables in ``results/demo/tables``.

Each generated block sits between ``<!-- generated: <table_id> <metric> -->`` and
``<!-- /generated -->`` in README.md: one row per paper row, one column per cell of that
metric, each "ours / paper" exactly as ``05_tables`` (or notebooks 07-09) wrote them.

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
    ``AUC``; ``all`` for every cell), each "ours / paper", from
    ``results/<profile>/tables/<table_id>.csv``."""
    import pandas as pd

    from wsigraph.tables import markdown_grid

    df = pd.read_csv(ROOT / "results" / profile / "tables" / f"{table_id}.csv", dtype=str)
    df = df.fillna("")
    # "[ours (demo)]", or with the run's size in it, e.g. "[ours (demo, 10 it.)]"
    label = re.compile(rf" \[(ours \({re.escape(profile)}(?:, [^\]]*)?\))\]$")
    ours = [(c, m) for c in df.columns if (m := label.search(c))]
    if not ours:
        raise ValueError(f"{table_id}: no '[ours ({profile}...)]' column in its CSV")
    row_header = df.columns[df.columns.get_loc(ours[0][0]) - 1]
    out = pd.DataFrame({row_header: df[row_header]})
    if "group" in df.columns:  # controls, SOTA, ablations, ours: as the table groups them
        out.insert(0, "group", df["group"])
    shown = []
    for col, m in ours:
        head = col[: m.start()]
        if metric == "all" or metric in head.split():
            out[f"{head}: {m.group(1)} / paper"] = df[col] + " / " + df[f"{head} [paper]"]
            shown.append(col)
    # rows the profile's run set leaves out (their tables say so) would only add noise here
    skipped = df[shown].apply(lambda s: s.str.startswith("not run on")).all(axis=1)
    return markdown_grid(out[~skipped])


def regenerate(text: str, profile: str = "demo") -> str:
    def replace(match: re.Match) -> str:
        head, table_id, metric, _, tail = match.groups()
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
