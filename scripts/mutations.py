"""Mutation check: plant small, plausible bugs in lib/ one at a time and see the tests catch them.

Each :class:`Mutation` replaces one exact snippet of one file (it must occur exactly once) in a
private copy of the repository, runs only the tests that concern it, and counts as **caught**
when those tests fail (or time out), **survived** when they pass. Before any mutation, the same
tests run once on the unmodified copy and must pass, so that "caught" means something.

    .venv/bin/python scripts/mutations.py              # every mutation, 2 at a time
    .venv/bin/python scripts/mutations.py --list       # what is planted where
    .venv/bin/python scripts/mutations.py -k ihpool    # the mutations whose name contains "ihpool"

Exit status 0 when every mutation is caught, 1 otherwise. ``.ci/run`` runs it after the tests.

Adding a module? Add one or more mutations below: the smallest edit a tired person could make
that would silently break the science (a swapped split, a dropped term, a wrong axis), the
tests that should catch it, and run ``scripts/mutations.py -k <name>``. If it survives, the
module needs a better test, not a weaker mutation.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str  # short id: <area>-<what>
    path: str  # file, relative to the repository root
    old: str  # exact text; must occur exactly once in the file
    new: str  # what replaces it
    tests: tuple[str, ...]  # pytest files or node ids that must fail


M = Mutation
MUTATIONS: list[Mutation] = [
    # ---- sparse segment attention ----------------------------------------------------------
    M(
        "attention-softmax-no-max-shift-sign",
        "lib/wsigraph/nn/attention.py",
        "            torch.exp(score.detach() - smax.index_select(0, seg), out=p)",
        "            torch.exp(smax.index_select(0, seg) - score.detach(), out=p)",
        ("tests/test_attention.py",),
    ),
    M(
        "attention-softmax-not-normalised",
        "lib/wsigraph/nn/attention.py",
        '            p /= segment(p, ptr, reduce="sum").index_select(0, seg)',
        '            p /= segment(p, ptr, reduce="sum").index_select(0, seg).mean()',
        ("tests/test_attention.py",),
    ),
    M(
        "attention-backward-drops-delta",
        "lib/wsigraph/nn/attention.py",
        "                    g_p - delta.index_select(0, seg[a : a + step])",
        "                    g_p",
        ("tests/test_attention.py",),
    ),
    # ---- IHPool (H2-MIL Algorithm 1) -------------------------------------------------------
    M(
        "ihpool-distance-only",
        "lib/wsigraph/nn/ihpool.py",
        "        cost = (grid[nodes[pair_node]] - grid[nodes[cpos]]).norm(dim=-1) + (\n"
        "            f[pair_node] - f[cpos]\n"
        "        ).abs()",
        "        cost = (grid[nodes[pair_node]] - grid[nodes[cpos]]).norm(dim=-1) + 0 * (\n"
        "            f[pair_node] - f[cpos]\n"
        "        ).abs()",
        ("tests/test_ihpool.py",),
    ),
    M(
        "ihpool-top-fitness-centres",
        "lib/wsigraph/nn/ihpool.py",
        "        centre_pos = start[g_of_centre] + torch.div(\n"
        '            j * size[g_of_centre], m[g_of_centre], rounding_mode="floor"\n'
        "        )",
        "        centre_pos = start[g_of_centre] + size[g_of_centre] - 1 - j",
        ("tests/test_ihpool.py",),
    ),
    M(
        "ihpool-grid-divided-by-range-not-max",
        "lib/wsigraph/nn/ihpool.py",
        "    unit = torch.where(peak > 0, p.grid / peak.clamp(min=1e-12), torch.zeros_like(p.grid))",
        "    unit = torch.where(peak > 0, p.grid / peak.clamp(min=1e-12) ** 2, torch.zeros_like(p.grid))",
        ("tests/test_ihpool.py",),
    ),
    M(
        "ihpool-ceil-becomes-floor",
        "lib/wsigraph/nn/ihpool.py",
        "        m = torch.ceil(self.ratio * size.float()).long().clamp(min=1, max=None)",
        "        m = torch.floor(self.ratio * size.float()).long().clamp(min=1, max=None)",
        ("tests/test_ihpool.py",),
    ),
    M(
        "ihpool-groups-ignore-parent-cluster",
        "lib/wsigraph/nn/ihpool.py",
        "            group = cluster[p.parent[nodes]]",
        "            group = torch.zeros_like(cluster[p.parent[nodes]])",
        ("tests/test_ihpool.py",),
    ),
]


def _copy_tree(dest: Path) -> None:
    """The working tree as git sees it (tracked + untracked, not ignored), minus results/."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in files:
        rel = raw.decode()
        if not rel or rel.startswith("results/") or not (ROOT / rel).is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)


def _pytest(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float, str]:
    """Runs ``tests`` in ``copy``; returns ("passed" | "failed" | "timeout", seconds, tail)."""
    env = os.environ | {
        "PYTHONPATH": str(copy / "lib"),
        "PYTHONDONTWRITEBYTECODE": "1",  # no stale bytecode between a mutation and its undo
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    start = time.perf_counter()
    try:
        run = subprocess.run(
            cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start, ""
    tail = (run.stdout + run.stderr).strip().splitlines()[-3:]
    return (
        ("passed" if run.returncode == 0 else "failed"),
        time.perf_counter() - start,
        "\n".join(tail),
    )


def _apply(copy: Path, m: Mutation) -> str:
    """Plants ``m`` in ``copy``; returns the original text of the file."""
    path = copy / m.path
    text = path.read_text()
    if text.count(m.old) != 1:
        raise ValueError(f"{m.name}: the snippet occurs {text.count(m.old)} times in {m.path}")
    mutated = text.replace(m.old, m.new)
    if m.path.endswith(".py"):
        compile(mutated, m.path, "exec")  # a mutation must be valid Python, not a syntax error
    path.write_text(mutated)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "-k", dest="pattern", default="", help="only mutations whose name contains this"
    )
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--jobs", type=int, default=2, help="mutations run side by side (default 2)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per test run (default 300)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    chosen = [m for m in MUTATIONS if args.pattern in m.name]
    if args.list:
        for m in chosen:
            print(f"{m.name:45s} {m.path}  <- {' '.join(m.tests)}")
        return 0
    if not chosen:
        print(f"no mutation matches {args.pattern!r}", file=sys.stderr)
        return 2
    names = [m.name for m in MUTATIONS]
    if len(set(names)) != len(names):
        raise SystemExit("duplicate mutation names")

    jobs = max(1, min(args.jobs, len(chosen)))
    with tempfile.TemporaryDirectory(prefix="wsigraph-mutations-") as tmp:
        copies = [Path(tmp) / f"copy{i}" for i in range(jobs)]
        for c in copies:
            _copy_tree(c)
        for m in chosen:  # every snippet must be found before anything runs
            _apply(copies[0], m)
            (copies[0] / m.path).write_text((ROOT / m.path).read_text())

        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            status, secs, tail = _pytest(copies[0], tests, args.timeout * 2)
            print(f"baseline (unmutated, {len(tests)} test targets): {status} in {secs:.0f} s")
            if status != "passed":
                print(tail)
                return 1

        free = list(copies)
        results: list[dict] = []

        def run_one(m: Mutation) -> dict:
            copy = free.pop()
            try:
                original = _apply(copy, m)
                try:
                    status, secs, tail = _pytest(copy, m.tests, args.timeout)
                finally:
                    (copy / m.path).write_text(original)
            finally:
                free.append(copy)
            verdict = "survived" if status == "passed" else "caught"
            print(f"{verdict:9s} {m.name:45s} {secs:5.0f} s  ({status})", flush=True)
            return {"name": m.name, "path": m.path, "verdict": verdict, "seconds": round(secs, 1)}

        start = time.perf_counter()
        with ThreadPoolExecutor(jobs) as pool:
            results = list(pool.map(run_one, chosen))
    survived = [r["name"] for r in results if r["verdict"] == "survived"]
    total = time.perf_counter() - start
    print(f"{len(results) - len(survived)} of {len(results)} mutations caught in {total:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if survived:
        print("survived (the tests do not notice these bugs): " + ", ".join(survived))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
