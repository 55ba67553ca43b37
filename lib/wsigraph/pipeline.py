"""``./run_all.sh``: execute the numbered notebooks in order with papermill.

Usage::

    ./run_all.sh                          # demo profile, every notebook
    ./run_all.sh --profile tcga           # the real cohorts (network, GPU, KimiaNet weights)
    ./run_all.sh -p epochs 3 -p folds 2   # override parameters-cell values
    ./run_all.sh --only 01 02             # a subset, by number or name
    ./run_all.sh --list                   # the notebooks and the parameters each accepts

Each notebook ``notebooks/NN_name.ipynb`` runs with the parameters it declares in its cell
tagged ``parameters``; ``-p NAME VALUE`` reaches every notebook that declares ``NAME`` (a name
no notebook declares is an error). Executed copies go to ``results/<profile>/notebooks/`` with
the resolved parameters beside them as ``NN_name.params.json``; ``04_train`` runs once per table
run, into ``results/<profile>/runs/`` (see :func:`expand`). The first failing notebook
stops the run with a message naming it and the executed copy that holds the traceback.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

from wsigraph.io import write_text
from wsigraph.profiles import PROFILES, REPO_ROOT, get_profile

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
KERNEL = "wsigraph"


def parse_value(text: str):
    """``-p`` values: JSON literals (numbers, true/false/null, lists), ``none``, else a string."""
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def notebooks(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks in order, optionally filtered by number (``01``) or stem."""
    found = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if not only:
        return found
    picked = [nb for nb in found if nb.stem[:2] in only or nb.stem in only]
    missing = [o for o in only if not any(nb.stem[:2] == o or nb.stem == o for nb in found)]
    if missing:
        names = ", ".join(nb.stem for nb in found)
        raise SystemExit(f"run_all: no notebook {', '.join(missing)}; available: {names}")
    return picked


def declared_parameters(nb: Path) -> dict:
    """Names and default values of the notebook's ``parameters`` cell."""
    import papermill as pm

    return {name: _literal(info["default"]) for name, info in pm.inspect_notebook(str(nb)).items()}


def _literal(source: str):
    try:
        return ast.literal_eval(source)
    except (ValueError, SyntaxError):
        return source


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="run_all.sh", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="demo", choices=sorted(PROFILES))
    ap.add_argument(
        "-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE")
    )
    ap.add_argument("--only", nargs="+", help="notebook numbers or names to run (default: all)")
    ap.add_argument("--list", action="store_true", help="list notebooks and their parameters")
    args = ap.parse_args(argv)

    import papermill as pm

    profile = get_profile(args.profile)
    selected = notebooks(args.only)
    declared = {nb: declared_parameters(nb) for nb in selected}
    if args.list:
        for nb, params in declared.items():
            print(f"{nb.stem}: " + ", ".join(f"{k}={v!r}" for k, v in params.items()))
        return 0

    given = {name: parse_value(value) for name, value in args.parameter}
    unknown = sorted(set(given) - {k for p in declared.values() for k in p})
    if unknown:
        allowed = sorted({k for p in declared.values() for k in p})
        print(
            f"run_all: unknown parameter(s) {unknown}; the notebooks accept: {', '.join(allowed)}",
            file=sys.stderr,
        )
        return 2

    started = time.time()
    runs = [
        (nb, params, out)
        for nb in selected
        for params, out in expand(nb, profile, given, declared[nb])
    ]
    for nb, params, output in runs:
        output.parent.mkdir(parents=True, exist_ok=True)
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items()) or "defaults"
        print(f"run_all: {nb.stem} ({shown})", flush=True)
        t0 = time.time()
        try:
            pm.execute_notebook(
                str(nb),
                str(output),
                parameters=params,
                kernel_name=KERNEL,
                cwd=str(NOTEBOOKS_DIR),
                progress_bar=False,
                log_output=False,
            )
        except pm.PapermillExecutionError as e:
            _scrub(output)
            print(
                f"\nrun_all: notebook {nb.stem} failed in cell {e.exec_count}: {e.ename}: {e.evalue}\n"
                f"run_all: the executed copy with the full traceback is {_rel(output)}",
                file=sys.stderr,
            )
            return 1
        _scrub(output)
        record = {"notebook": nb.name, "profile": profile.name, "parameters": declared[nb] | params}
        write_text(
            output.with_suffix(".params.json"), json.dumps(record, indent=2, default=str) + "\n"
        )
        print(f"run_all: {nb.stem} done in {time.time() - t0:.0f} s -> {_rel(output)}", flush=True)
    print(
        f"run_all: {len(runs)} notebook run(s) on profile '{profile.name}' in {time.time() - started:.0f} s"
    )
    return 0


def expand(nb: Path, profile, given: dict, declared: dict) -> list[tuple[dict, Path]]:
    """The executions of one notebook: ``(parameters, output path)`` pairs.

    ``04_train`` runs once per table run that has a model (``wsigraph.tables``), into
    ``results/<profile>/runs/<run name>.ipynb``; runs that are the same experiment under another
    table (equal config key, e.g. H2-MIL in Table 1 and "L = 2" in Table 4) run once, and the
    tables reuse their record. ``-p table/row/dataset/task`` narrow the runs. Every other
    notebook runs once into ``results/<profile>/notebooks/``.
    """
    base = {k: v for k, v in ({"profile": profile.name} | given).items() if k in declared}
    if nb.stem != "04_train":
        return [(base, profile.results_dir / "notebooks" / nb.name)]
    from wsigraph.tables import config_key, get_row, implemented_runs, run_name

    wanted = {k: given[k] for k in ("table", "row", "dataset", "task") if k in given}
    seen, out = set(), []
    for table, row, dataset, task in implemented_runs():
        run = {"table": table, "row": row, "dataset": dataset, "task": task}
        key = config_key(get_row(table, row), dataset, task)
        if any(run[k] != v for k, v in wanted.items()) or key in seen:
            continue
        seen.add(key)
        out.append(
            (
                base | run,
                profile.results_dir / "runs" / f"{run_name(table, row, dataset, task)}.ipynb",
            )
        )
    if not out:
        raise SystemExit(f"run_all: no implemented table run matches {wanted}")
    return out


def _scrub(path: Path) -> None:
    """Executed copies are committed: write this checkout's absolute path as relative paths."""
    root = str(REPO_ROOT)
    text = path.read_text()
    if root in text:
        write_text(path, text.replace(root + "/", "").replace(root, "."))


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
