"""``./run_all.sh``: execute the numbered notebooks in order with papermill.

Usage::

    ./run_all.sh                          # demo profile, every notebook
    ./run_all.sh --profile tcga           # the real cohorts (network, GPU, KimiaNet weights)
    ./run_all.sh -p epochs 3 -p folds 2   # override parameters-cell values
    ./run_all.sh --only 01 02             # a subset, by number or name
    ./run_all.sh --list                   # the notebooks and the parameters each accepts
    ./run_all.sh -p n_slides 8 --check    # check the -p values, run nothing
    ./run_all.sh --jobs 1                 # one notebook at a time (default: one per CPU core)

Each notebook ``notebooks/NN_name.ipynb`` runs with the parameters it declares in its cell
tagged ``parameters``; ``-p NAME VALUE`` reaches every notebook that declares ``NAME`` (the
start line says which), ``-p 07.NAME VALUE`` only notebook 07 (:func:`split_parameters`). A name
no notebook declares is an error, and so is a value whose type does not suit the default (checked
before anything runs: :func:`check_parameters`). Executed copies go to
``results/<profile>/notebooks/`` with the resolved parameters beside them as
``NN_name.params.json``; ``04_train`` runs once per table run, into ``results/<profile>/runs/``
(see :func:`expand`). The first failing notebook stops the run with a message naming it and the
executed copy that holds the traceback.
A successful run ends by writing ``results/<profile>/index.html``, a static page linking every
executed notebook (rendered to HTML), table and figure (:func:`wsigraph.report.write_index`).

Concurrency: the many ``04_train`` runs execute ``--jobs`` at a time (default: one per CPU core
on CPU-only machines, one on a GPU machine), each kernel limited to ``cores / jobs`` threads and,
unless ``-p executor`` says otherwise, training its folds in-process (``executor="serial"``):
on a 2-core laptop two small runs side by side beat one run with two fold workers, whose
process start-up costs as much as a small model's training. Each of the ``--jobs`` slots keeps
one kernel for all its runs (:func:`_warm_engine`): a run starts by clearing the namespace the
previous one left (``%reset -f``), while the imported modules stay loaded, which saves the ~7 s a
fresh kernel spends starting and importing torch, PyG and the library (55 runs on demo).
``--fresh-kernels`` starts a new kernel for every run instead. Other notebooks run one at a
time, in order, each in its own kernel. A failing run stops the submission of new runs; those
already running finish.

Progress: the library's bars (:mod:`wsigraph.progress`) draw on the terminal, never into the
executed notebooks: per slide in 01-03, per epoch, fold or ROI in 07-09. The concurrent 04 runs
draw none (their bars would interleave); the pipeline prints a line per finished run instead.
"""

from __future__ import annotations

import argparse
import ast
import json
import multiprocessing
import os
import re
import sys
import textwrap
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from wsigraph.io import write_text
from wsigraph.profiles import PROFILES, REPO_ROOT, get_profile

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
KERNEL = "wsigraph"


DESCRIPTION = textwrap.fill(
    "Execute the numbered notebooks (notebooks/NN_name.ipynb) in order with papermill; the "
    "executed copies, tables and figures go to results/<profile>/, with results/<profile>/"
    "index.html linking them all.",
    width=79,
)

EXAMPLES = """examples:
  ./run_all.sh                          demo profile, every notebook
  ./run_all.sh --profile tcga           the real cohorts
  ./run_all.sh -p epochs 3 -p folds 2   override values in every notebook that declares them
  ./run_all.sh -p 07.lr 0.01            a value for notebook 07 only
  ./run_all.sh --only 01 02             a subset, by number or name
  ./run_all.sh --only 04 -p table h2mil_table1 -p row H2-MIL   one table row
  ./run_all.sh --only 04 --all-rows     every table row, not only the demo's run set
  ./run_all.sh --only 04 -p row H2-MIL -p dataset custom -p label_column grade -p refit true
                                        your cohort's label column, plus a model refit on all
  ./run_all.sh --list                   notebooks, parameters, tables and rows
  ./run_all.sh -p n_slides 8 --check    check the -p values, run nothing
"""


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


def parameter_comments(nb: Path) -> dict[str, str]:
    """The inline comment (``# ...`` after the value) of each parameter of the notebook."""
    import papermill as pm

    return {name: info.get("help") or "" for name, info in pm.inspect_notebook(str(nb)).items()}


class Expression(str):
    """A ``parameters``-cell default that is not a plain literal (its source text)."""


def _literal(source: str):
    try:
        return ast.literal_eval(source)
    except (ValueError, SyntaxError):
        return Expression(source)


# A default of None ("None means the profile's value") says nothing of a parameter's type, so the
# types of those parameters are written here (tests/test_pipeline.py checks that every None
# default of the notebooks is listed). A name missing here accepts any value.
NONE_DEFAULT_TYPES: dict[str, type | None] = {
    # 01_cohort
    "n_slides": int,
    "slide_size": list,
    "pinned_manifest": str,
    "gdc_url": str,
    "objective_power": float,
    "cohort_csv": str,
    "mpp": float,
    # 02_tiles_features
    "encoder": str,
    "weights_path": str,
    "patch_size": int,
    "batch_size": int,
    "num_workers": int,
    # 02 and 03: "all", "cpu", "0,1" or one CUDA index (wsigraph.stages.resolve_devices)
    "devices": None,
    # 03_graphs
    "draw_slides": list,
    # 04_train, 06, 07, 08, 09
    "label_column": str,
    "epochs": int,
    "folds": int,
    "repeats": int,
    "lr": float,
    "weight_decay": float,
    "patience": int,
    "workers": int,
    "scheduler": str,
    "unet_epochs": int,
    "seg_folds": list,
    "tiles_per_class": int,
    "segmentation": str,
    "bach_root": str,
    "gleason_root": str,
    "max_images": int,
    "graph_radius_um": float,
    "tiles_mpp": float,
    "crc_root": str,
    "melanoma_root": str,
    "label_dir": str,
    "iterations": int,
    "n_clusters": int,
    "mico_dim": int,
    "mico_folds": int,
    "surv_epochs": int,
    "cls_datasets": list,
    "surv_dataset": str,
    "surv_slides": int,
    "surv_skip_rows": list,
    "executor": str,  # 09's default is None (local on demo, serial otherwise)
    "mico_executor": str,
    # 08_abignet (demo values in the profile)
    "n_per_class": dict,
    "segmenter": str,
    "official_patch_size": int,
    "min_nuclei": int,
    "cell_radius": float,
    "radius": float,
    "skip_rows": list,
}

_TYPE_WORDS = {
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "a string",
    list: "a list (JSON, e.g. [1, 2])",
    dict: 'a dict (JSON, e.g. {"a": 1})',
}

# Smallest values that make sense, checked before any notebook runs.
AT_LEAST = {"folds": 2, "mico_folds": 2, "epochs": 1, "repeats": 1, "n_slides": 4, "surv_slides": 4}


def expected_type(name: str, default) -> type | None:
    """The type a ``-p`` value must have for a parameter with this default; ``None``: any."""
    if default is None:
        return NONE_DEFAULT_TYPES.get(name)
    if isinstance(default, Expression):
        return None
    if isinstance(default, tuple):
        return list
    return type(default) if type(default) in _TYPE_WORDS else None


def fits(value, expected: type | None) -> bool:
    """Whether a parsed ``-p`` value suits ``expected`` (ints count as floats, not as bools)."""
    if expected is None:
        return True
    if isinstance(value, bool) and expected is not bool:
        return False
    if expected is float:
        return isinstance(value, int | float)
    if expected is list:
        return isinstance(value, list | tuple)
    return isinstance(value, expected)


def check_parameters(
    given: dict, texts: dict, declared: dict, profile, shown: dict | None = None
) -> list[str]:
    """Problems with the ``-p`` values, each naming the parameter, the notebook, what it expects
    and the value given; empty when every value suits every notebook that declares it.

    Args:
        given: parsed values by name; texts: the values as typed; declared: the defaults of the
            selected notebooks, ``{notebook path: {name: default}}``; shown: the name as typed
            when it differs (a scoped ``07.lr``), by name.
    """
    shown = shown or {}
    problems = []
    for name, value in given.items():
        label = shown.get(name, name)
        for nb, params in declared.items():
            if name not in params:
                continue
            default = params[name]
            want = expected_type(name, default)
            if value is None and default is None:
                continue
            if not fits(value, want):
                what = "None (the profile's value) or " if default is None else ""
                problems.append(
                    f"-p {label} {texts[name]}: notebook {nb.stem} expects {what}"
                    f"{_TYPE_WORDS[want]} for {name} (default {default!r}), got "
                    f"{_describe_value(value)}"
                    + (f" (to pass it as text, write '\"{texts[name]}\"')" if want is str else "")
                )
                break
            least = AT_LEAST.get(name)
            if least is not None and isinstance(value, int | float) and value < least:
                problems.append(
                    f"-p {label} {texts[name]}: {name} must be at least {least} "
                    f"(notebook {nb.stem}), got {value!r}"
                )
                break
    if "slide_size" in given and given["slide_size"] is not None and not problems:
        patch = given.get("patch_size")
        tiled = profile.with_overrides(patch_size=patch) if isinstance(patch, int) else profile
        try:
            tiled.check_slide_size(given["slide_size"])
        except ValueError as e:
            label = shown.get("slide_size", "slide_size")
            problems.append(f"-p {label} {texts['slide_size']}: {e}")
    return problems


def _describe_value(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, bool):
        return str(value).lower()
    kind = {int: "the whole number", float: "the number", list: "the list", dict: "the dict"}
    return f"{kind.get(type(value), type(value).__name__)} {value!r}"


TRAIN = "04_train"


def table_listing(profile=None) -> str:
    """The table ids and row names that ``-p table`` / ``-p row`` of ``04_train`` accept (rows
    with a model; the others are printed in the tables as "not run yet"); with ``profile``,
    rows outside its run set are marked ``*``."""
    from wsigraph.tables import TABLES, implemented_runs, skipped_rows

    runnable = {(t, r) for t, r, _, _ in implemented_runs()}
    head = "04_train runs every row below unless narrowed"
    if profile is not None and profile.extra.get("runs") is not None:
        head = (
            f"on {profile.name}, 04_train runs the rows without * unless narrowed; "
            "--all-rows runs every row"
        )
    lines = [f"  -p table / -p row accept ({head}):"]
    for tid, table in TABLES.items():
        skipped = set(skipped_rows(profile, tid)) if profile is not None else set()
        rows = [
            r.name + ("*" if r.name in skipped else "")
            for r in table.rows
            if (tid, r.name) in runnable
        ]
        left = len(table.rows) - len(rows)
        more = f" ({left} row(s) without a model: not run)" if left else ""
        lines.append(f"    {tid} ({table.paper} Table {table.number}){more}:")
        lines += [
            "      " + line
            for line in textwrap.wrap(" | ".join(rows), width=90, break_on_hyphens=False)
        ]
    return "\n".join(lines)


def check_runs(values: dict) -> list[str]:
    """``-p table/row/dataset/task`` of ``04_train`` that match no runnable table run, each
    problem listing the valid values (checked before anything runs)."""
    from wsigraph.tables import TABLES, implemented_runs

    runs = implemented_runs()
    problems = []
    table = values.get("table")
    if table is not None and table not in TABLES:
        return [f"-p table {table}: unknown table; tables: {', '.join(TABLES)}"]
    if table is not None:
        runs = [r for r in runs if r[0] == table]
    where = f" of table {table}" if table is not None else ""
    own = values.get("label_column") is not None
    if own and ("row" not in values or "dataset" not in values):
        return [
            f"-p label_column {values['label_column']}: name the row to train and your cohort's "
            "dataset too, e.g. -p row H2-MIL -p dataset custom (the CSV's 'dataset' column; "
            "default custom)"
        ]
    # with your own label column, the dataset is your cohort's and there is no paper task
    for i, key in [(1, "row")] if own else enumerate(("row", "dataset", "task"), start=1):
        if key not in values:
            continue
        valid = list(dict.fromkeys(r[i] for r in runs))
        if values[key] not in valid:
            problems.append(
                f"-p {key} {values[key]}: no runnable {key} {values[key]!r}{where}; "
                f"{key}s: {', '.join(valid)}"
            )
            return problems
        runs = [r for r in runs if r[i] == values[key]]
    return problems


def _matches(nb: Path, scope: str) -> bool:
    return scope in (nb.stem[:2], nb.stem)


def split_parameters(pairs: list, declared: dict) -> tuple[dict, dict, dict, list[str]]:
    """The ``-p NAME VALUE`` pairs split into unscoped and scoped (``-p 07.lr 0.01``) values.

    A name without a dot reaches every selected notebook that declares it; ``NN.name`` or
    ``NN_stem.name`` reaches that notebook only. Returns ``(given, texts, scoped, problems)``:
    ``given`` the parsed unscoped values by name, ``texts`` the values as typed, ``scoped``
    ``{notebook path: {name: (value, text, "07.lr")}}`` and the problems (unknown names, a scope
    naming no selected notebook, a notebook that does not declare the name), each a sentence.
    """
    given, texts, scoped, problems = {}, {}, {}, []
    declared_names = sorted({k for p in declared.values() for k in p})
    stems = ", ".join(nb.stem for nb in declared)
    for label, text in pairs:
        scope, dot, name = label.rpartition(".")
        if not dot:
            if name not in declared_names:
                problems.append(
                    f"unknown parameter {name!r} (-p {label} {text}); the notebooks accept: "
                    f"{', '.join(declared_names)}"
                )
                continue
            given[name] = parse_value(text)
            texts[name] = text
            continue
        hits = [nb for nb in declared if _matches(nb, scope)]
        if not hits:
            problems.append(
                f"-p {label} {text}: {scope!r} names no notebook of this run; "
                f"scope a parameter by number or name, one of: {stems}"
            )
            continue
        nb = hits[0]
        if name not in declared[nb]:
            accepts = ", ".join(declared[nb]) or "nothing"
            problems.append(
                f"-p {label} {text}: notebook {nb.stem} does not declare {name!r}; "
                f"it accepts: {accepts}"
            )
            continue
        scoped.setdefault(nb, {})[name] = (parse_value(text), text, label)
    return given, texts, scoped, problems


def _contradicted_profile(profile: str, given: dict, texts: dict, scoped: dict) -> list[str]:
    """``-p profile X`` (scoped or not) that contradicts ``--profile``."""
    values = [("profile", given["profile"], texts["profile"])] if "profile" in given else []
    for entries in scoped.values():
        if "profile" in entries:
            value, text, label = entries["profile"]
            values.append((label, value, text))
    return [
        f"-p {label} {text} contradicts --profile {profile}; give the profile once, "
        f"with --profile {value}"
        for label, value, text in values
        if value != profile
    ]


def reach_lines(given: dict, declared: dict) -> list[str]:
    """For each unscoped ``-p`` name, which notebooks it reaches (said on the terminal, so a
    value reaching several notebooks is never a surprise)."""
    lines = []
    for name in given:
        reached = [nb.stem for nb, params in declared.items() if name in params]
        if name == "profile":
            continue
        tip = f" (scope it, e.g. -p {reached[0][:2]}.{name})" if len(reached) > 1 else ""
        lines.append(f"-p {name} reaches {', '.join(reached)}{tip}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="run_all.sh",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--profile",
        default="demo",
        choices=sorted(PROFILES),
        help="demo: synthetic slides, CPU, minutes (default); tcga: the real cohorts "
        "(network, GPU, KimiaNet weights)",
    )
    ap.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="set a parameters-cell value (repeatable); VALUE is JSON (3, 0.5, true, none, "
        "[1, 2]) or else text; NAME reaches every notebook that declares it, NN.NAME (e.g. "
        "07.lr) only notebook NN; values are checked against the type of the default",
    )
    ap.add_argument(
        "--only", nargs="+", metavar="NN", help="notebook numbers or names to run (default: all)"
    )
    ap.add_argument(
        "--list",
        action="store_true",
        help="list the notebooks, their parameters with defaults and comments, and the tables "
        "and rows of 04_train",
    )
    ap.add_argument(
        "--check", action="store_true", help="check the -p values and exit without running"
    )
    ap.add_argument(
        "--all-rows",
        action="store_true",
        help="04_train: train every row of every table, not only the profile's run set (the "
        "demo trains the rows that test each paper's mechanism, see README)",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        default=None,
        help="04_train runs executed at a time (default: CPU cores without a GPU, else 1)",
    )
    ap.add_argument(
        "--fresh-kernels",
        action="store_true",
        help="04_train: a new kernel for every run (default: each of the --jobs slots reuses "
        "one kernel, its namespace cleared between runs)",
    )
    args = ap.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")

    profile = get_profile(args.profile)
    selected = notebooks(args.only)
    declared = {nb: declared_parameters(nb) for nb in selected}
    if args.list:
        for nb, params in declared.items():
            print(f"{nb.stem}:")
            comments = parameter_comments(nb)
            width = max((len(f"{k}={v!r}") for k, v in params.items()), default=0)
            for k, v in params.items():
                note = f"  # {comments[k]}" if comments.get(k) else ""
                print(f"  {f'{k}={v!r}':<{width}}{note}".rstrip())
            if nb.stem == TRAIN:
                print(table_listing(profile))
        shared = {}
        for nb, params in declared.items():
            for name in params:
                if name != "profile":
                    shared.setdefault(name, []).append(nb.stem[:2])
        shared = {k: v for k, v in shared.items() if len(v) > 1}
        if shared:
            print(
                "\n-p NAME reaches every notebook that declares NAME; -p NN.NAME only notebook NN:"
            )
            for name, where in sorted(shared.items()):
                print(f"  {name}: {', '.join(where)}")
        return 0

    given, texts, scoped, problems = split_parameters(args.parameter, declared)
    if problems:
        print("\n".join(f"run_all: {p}" for p in problems), file=sys.stderr)
        return 2
    problems = check_parameters(given, texts, declared, profile)
    for nb, values in scoped.items():
        problems += check_parameters(
            {name: v for name, (v, _, _) in values.items()},
            {name: t for name, (_, t, _) in values.items()},
            {nb: declared[nb]},
            profile,
            shown={name: label for name, (_, _, label) in values.items()},
        )
    if not problems:
        problems = _contradicted_profile(args.profile, given, texts, scoped)
    if not problems and given.get("devices") is not None:
        from wsigraph.stages import resolve_devices

        try:  # a GPU that is not there: say which are, before anything runs
            resolve_devices(given["devices"])
        except ValueError as e:
            problems = [f"-p {e}"]
    for nb in declared:
        if nb.stem == TRAIN and not problems:
            values = given | {name: v for name, (v, _, _) in scoped.get(nb, {}).items()}
            problems = check_runs(values)
    if problems:
        print("\n".join(f"run_all: {p}" for p in problems), file=sys.stderr)
        print("run_all: nothing was run; fix the value(s) above", file=sys.stderr)
        return 2
    for line in reach_lines(given, declared):
        print(f"run_all: {line}")
    if args.check:
        print(f"run_all: the -p values suit {', '.join(nb.stem for nb in selected)}")
        return 0

    started = time.time()
    jobs = args.jobs or default_jobs()
    total = 0
    for nb in selected:
        values = given | {name: v for name, (v, _, _) in scoped.get(nb, {}).items()}
        runs = expand(nb, profile, values, declared[nb], all_rows=args.all_rows)
        if len(runs) > 1 and jobs > 1:
            if "executor" in declared[nb] and "executor" not in values:
                runs = [(params | {"executor": "serial"}, out) for params, out in runs]
            warm = not args.fresh_kernels
            failed = _execute_concurrently(nb, runs, declared[nb], profile, jobs, warm)
        else:
            failed = False
            for params, out in runs:
                if not _execute(nb, params, out, declared[nb], profile):
                    failed = True
                    break
        if failed:
            return 1
        total += len(runs)
    if not args.only and not args.parameter:  # every record of this profile was just rewritten
        prune_stale_runs(profile.results_dir / "runs", started)
    from wsigraph.report import write_index

    try:
        # the numbered notebooks only: the ~100 training runs would add ~40 MB of HTML on demo
        # (their executed notebooks stay linked from results/<profile>/runs/)
        index = write_index(profile.results_dir, runs=False)
    except Exception as e:  # the runs succeeded; say what failed, and fail the command
        print(f"run_all: the report page could not be written: {e}", file=sys.stderr)
        return 1
    print(f"run_all: report: {_rel(index)} (open it in a browser; no server needed)")
    print(
        f"run_all: {total} notebook run(s) on profile '{profile.name}' in {time.time() - started:.0f} s"
    )
    return 0


def prune_stale_runs(runs_dir: Path, since: float) -> list[Path]:
    """Delete the files under ``runs_dir`` last written more than 2 s before ``since`` (a
    timestamp) and return them.

    Every notebook rewrites its run records on every run, so after a complete ``./run_all.sh``
    (every notebook, no ``-p``) a record older than the run belongs to a row, column or run
    the pipeline no longer makes (a row dropped from the demo, a renamed run); left there, it
    would sit in ``results/`` beside the current ones as if it were one of them. Narrowed runs
    (``--only``, ``-p``) prune nothing: they may have skipped records that are still current.
    """
    if not runs_dir.is_dir():
        return []
    since -= 2.0  # file systems that keep whole (or even) seconds
    stale = sorted(p for p in runs_dir.rglob("*") if p.is_file() and p.stat().st_mtime < since)
    for path in stale:
        path.unlink()
    if stale:
        print(f"run_all: removed {len(stale)} stale file(s) from {_rel(runs_dir)}, which this "
              "run no longer writes: " + ", ".join(str(p.relative_to(runs_dir)) for p in stale))  # fmt: skip
    return stale


def default_jobs() -> int:
    """Concurrent ``04_train`` runs: one per CPU core, or 1 when CUDA is available (the GPU is
    the shared resource then, and each run's folds already use it)."""
    import torch

    return 1 if torch.cuda.is_available() else max(1, os.cpu_count() or 1)


def _describe(params: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items()) or "defaults"


def _execute(nb: Path, params: dict, output: Path, declared: dict, profile, threads=None) -> bool:
    """Run one notebook into ``output``; on failure print which and where, return ``False``."""
    print(f"run_all: {nb.stem} ({_describe(params)})", flush=True)
    t0 = time.time()
    error = _papermill(str(nb), str(output), params, threads, progress="terminal")
    if error:
        _report_failure(nb, output, error)
        return False
    _finish(nb, params, output, declared, profile)
    print(f"run_all: {nb.stem} done in {time.time() - t0:.0f} s -> {_rel(output)}", flush=True)
    return True


def _execute_concurrently(
    nb: Path, runs: list, declared: dict, profile, jobs: int, warm: bool = True
) -> bool:
    """Run the ``(params, output)`` runs of one notebook ``jobs`` at a time; ``True`` if one
    failed (no new run starts after a failure; running ones finish). With ``warm`` each worker
    process keeps one kernel for its runs (:func:`_warm_engine`)."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    print(f"run_all: {nb.stem}: {len(runs)} runs, {jobs} at a time, {threads} thread(s) each")
    pending = list(reversed(runs))
    failed = False
    done = 0
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        active = {}
        while pending or active:
            while pending and not failed and len(active) < jobs:
                params, output = pending.pop()
                # no bars: two runs' bars would interleave; a line per finished run instead
                fut = pool.submit(_papermill, str(nb), str(output), params, threads, "off", warm)
                active[fut] = (params, output, time.time())
            if not active:
                break
            finished, _ = wait(active, return_when=FIRST_COMPLETED)
            for fut in finished:
                params, output, t0 = active.pop(fut)
                error = fut.result()
                done += 1
                if error:
                    _report_failure(nb, output, error)
                    failed = True
                    continue
                _finish(nb, params, output, declared, profile)
                print(
                    f"run_all: [{done}/{len(runs)}] {nb.stem} ({_describe(params)}) done in "
                    f"{time.time() - t0:.0f} s -> {_rel(output)}",
                    flush=True,
                )
    return failed


def _kernel_manager_class() -> type:
    """A kernel manager that talks to its kernel over local IPC sockets, not TCP.

    The kernel and the pipeline share one machine, so TCP buys nothing; over TCP every kernel
    warns on the terminal that its traffic is unencrypted. The socket files sit beside the
    kernel's connection file, in Jupyter's runtime folder.
    """
    import uuid

    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.paths import jupyter_runtime_dir
    from traitlets import default

    class IPCKernelManager(AsyncKernelManager):
        transport = "ipc"

        @default("ip")
        def _unique_ipc_path(self) -> str:
            # jupyter_client's default, read before the connection file is named, is the
            # relative "kernel-ipc": concurrent kernels (--jobs) in one cwd then pick the same
            # socket files and read each other's messages ("Invalid Signature").
            if self.connection_file:
                return os.path.splitext(self.connection_file)[0] + "-ipc"
            folder = jupyter_runtime_dir()
            os.makedirs(folder, exist_ok=True)
            return os.path.join(folder, f"kernel-{uuid.uuid4().hex[:12]}-ipc")

        async def _async_interrupt_kernel(self) -> None:
            # jupyter_client's shutdown sends SIGINT before its shutdown request, to break a busy
            # kernel. papermill shuts a kernel down once its last cell has finished, so the
            # kernel is idle; the signal only lands, now and then, inside the handler of a
            # control message, and ipykernel then logs "KeyboardInterrupt caught in kernel" on
            # the terminal. A kernel that ignores the shutdown request is still killed.
            if self.shutting_down:
                return
            await super()._async_interrupt_kernel()

    return IPCKernelManager


# A kernel kept for the next run of the same worker process clears what the last run left.
_RESET = "get_ipython().run_line_magic('reset', '-f')\nget_ipython().execution_count = 1"
WARM_ENGINE = "wsigraph-warm-kernel"
_warm: dict = {}  # this process's kept kernel manager, under "km"


def _warm_engine() -> str:
    """Register, once per process, a papermill engine that runs every notebook of this process
    in one kernel, and return its name.

    The first run starts the kernel (in its ``cwd``, with its environment); later runs find it
    alive and begin with ``%reset -f`` (every name the previous run defined is gone, the
    execution count starts at 1 again) while the imported modules stay loaded. A kernel that died
    is replaced by a new one; the last one is shut down when the process exits. Only for runs of
    one notebook that differ by their parameters (the ``04_train`` runs): a notebook must not
    rely on state left by an earlier run, and 04's results do not (each fold seeds itself).
    """
    import atexit

    from jupyter_core.utils import run_sync
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.log import logger
    from papermill.utils import merge_kwargs, remove_args

    if _warm.get("registered"):
        return WARM_ENGINE

    class Client(PapermillNotebookClient):
        def papermill_execute_cells(self):
            self.wait_for_reply(self.kc.execute(_RESET, silent=True, store_history=False))
            super().papermill_execute_cells()

    def kept_kernel(kernel_name: str):
        km = _warm.get("km")
        if km is not None and km.has_kernel and not run_sync(km.is_alive)():
            km = None  # it died (a crash, out of memory): start a new one
        if km is None:
            km = _warm["km"] = _kernel_manager_class()(kernel_name=kernel_name)
        return km

    def shutdown() -> None:
        km = _warm.pop("km", None)
        if km is not None and km.has_kernel:
            try:
                run_sync(km.shutdown_kernel)(now=True)
            except Exception:  # exiting anyway; the kernel also exits when its parent has gone
                pass

    class Engine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False,
                                     stdout_file=None, stderr_file=None, start_timeout=60,
                                     execution_timeout=None, **kwargs):  # fmt: skip
            # as papermill's NBClientEngine, with this process's kept kernel
            kwargs = remove_args(["input_path", "kernel_manager_class"], **kwargs)
            safe_kwargs = remove_args(["timeout", "startup_timeout"], **kwargs)
            final_kwargs = merge_kwargs(
                safe_kwargs,
                timeout=execution_timeout if execution_timeout else kwargs.get("timeout"),
                startup_timeout=start_timeout,
                kernel_name=kernel_name,
                log=logger,
                log_output=log_output,
                stdout_file=stdout_file,
                stderr_file=stderr_file,
            )
            client = Client(nb_man, km=kept_kernel(kernel_name), **final_kwargs)
            try:
                return client.execute()
            finally:
                if client.kc is not None:  # this run's channels; the kernel stays
                    client.kc.stop_channels()

    papermill_engines.register(WARM_ENGINE, Engine)
    atexit.register(shutdown)
    _warm["registered"] = True
    return WARM_ENGINE


def _papermill(
    nb: str,
    output: str,
    params: dict,
    threads: int | None = None,
    progress: str = "terminal",
    warm: bool = False,
) -> str | None:
    """Execute one notebook with papermill; the error text if a cell failed, else ``None``.

    Runs in the pipeline's process or in a worker process; ``threads`` caps the kernel's
    intra-op threads and ``progress`` says where the library's progress bars go
    (:mod:`wsigraph.progress`: ``"terminal"`` or ``"off"``); the kernel inherits the environment.
    With ``warm`` the notebook runs in this process's kept kernel (:func:`_warm_engine`).
    """
    import papermill as pm

    from wsigraph.progress import ENV

    # the kernel inherits the environment; set it for this kernel only, then restore it
    saved = {k: os.environ.get(k) for k in (ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ[ENV] = progress
    if threads is not None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(
            nb,
            output,
            parameters=params,
            kernel_name=KERNEL,
            cwd=str(NOTEBOOKS_DIR),
            progress_bar=False,
            log_output=False,
            kernel_manager_class=_kernel_manager_class(),
            engine_name=_warm_engine() if warm else None,
        )
    except pm.PapermillExecutionError as e:
        return f"cell {e.exec_count}: {e.ename}: {e.evalue}"
    except Exception as e:  # the kernel died, could not start, ...: still name the notebook
        return f"{type(e).__name__}: {e}"
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
    return None


def _report_failure(nb: Path, output: Path, error: str) -> None:
    if output.exists():
        _scrub(output)
    print(
        f"\nrun_all: notebook {nb.stem} failed in {error}\n"
        f"run_all: the executed copy with the full traceback is {_rel(output)}",
        file=sys.stderr,
        flush=True,
    )


def _finish(nb: Path, params: dict, output: Path, declared: dict, profile) -> None:
    """Scrub machine paths from the executed copy and write its resolved parameters."""
    _scrub(output)
    record = {"notebook": nb.name, "profile": profile.name, "parameters": declared | params}
    write_text(output.with_suffix(".params.json"), json.dumps(record, indent=2, default=str) + "\n")
    _report_failed_slides(nb, profile)
    _report_left_out(nb, output)


# The per-slide summary tables of the stages: a slide that failed there is named on the terminal
# too, not only inside the executed notebook (later stages leave it out of cross-validation).
STAGE_SUMMARIES = {"02_tiles_features": "features_summary.csv", "03_graphs": "graph_stats.csv"}


def _report_failed_slides(nb: Path, profile) -> None:
    name = STAGE_SUMMARIES.get(nb.stem)
    path = profile.results_dir / "tables" / name if name else None
    if path is None or not path.exists():
        return
    import pandas as pd

    try:
        table = pd.read_csv(path)
        bad = table[~table["status"].isin(["done", "skipped"])]
    except (OSError, ValueError, KeyError):
        return
    for _, row in bad.head(10).iterrows():
        error = row.get("error")
        why = "" if not isinstance(error, str) else f": {error}"
        print(f"run_all: {nb.stem}: slide {row['slide_id']} {row['status']}{why}", file=sys.stderr)
    if len(bad):
        more = f" ({len(bad) - 10} more)" if len(bad) > 10 else ""
        print(
            f"run_all: {nb.stem}: {len(bad)} slide(s) failed{more}, listed in {_rel(path)}; "
            "later stages leave them out of cross-validation",
            file=sys.stderr,
            flush=True,
        )


def _report_left_out(nb: Path, output: Path) -> None:
    """A training run's labelled slides left out of cross-validation (``meta.left_out`` of the
    run record beside the executed copy), named on the terminal with the reason."""
    try:
        left_out = json.loads(output.with_suffix(".json").read_text())["meta"]["left_out"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if not isinstance(left_out, dict) or not left_out:
        return
    for sid, why in list(left_out.items())[:10]:
        print(f"run_all: {nb.stem} ({output.stem}): slide {sid} left out: {why}", file=sys.stderr)
    print(
        f"run_all: {nb.stem} ({output.stem}): {len(left_out)} labelled slide(s) left out of "
        "cross-validation (see 02_tiles_features / 03_graphs above; -p missing_slides error "
        "stops instead)",
        file=sys.stderr,
        flush=True,
    )


def expand(
    nb: Path, profile, given: dict, declared: dict, all_rows: bool = False
) -> list[tuple[dict, Path]]:
    """The executions of one notebook: ``(parameters, output path)`` pairs.

    ``04_train`` runs once per table run that has a model (``wsigraph.tables``) and that the
    profile's run set keeps (:func:`wsigraph.tables.run_set`; every row with ``all_rows`` or
    an explicit ``-p row``), into
    ``results/<profile>/runs/<run name>.ipynb``; runs that are the same experiment under another
    table (equal config key, e.g. H2-MIL in Table 1 and "L = 2" in Table 4) run once, and the
    tables reuse their record. ``-p table/row/dataset/task`` narrow the runs; with
    ``-p label_column`` it runs once, the row on your dataset's label column (``-p row`` and
    ``-p dataset`` required, checked by :func:`check_runs`). Every other
    notebook runs once into ``results/<profile>/notebooks/``.
    """
    base = {k: v for k, v in ({"profile": profile.name} | given).items() if k in declared}
    if nb.stem != "04_train":
        return [(base, profile.results_dir / "notebooks" / nb.name)]
    from wsigraph.tables import config_key, get_row, implemented_runs, run_name

    if given.get("label_column") is not None:  # your own label: one run, outside the tables
        from wsigraph.tables import TABLES, own_run_name

        row, dataset, label = given["row"], given["dataset"], given["label_column"]
        table = given.get("table") or next(t for t in TABLES if row in rows_with_model(t))
        run = {"table": table, "row": row, "dataset": dataset, "label_column": label}
        name = own_run_name(table, row, dataset, label)
        return [(base | run, profile.results_dir / "runs" / f"{name}.ipynb")]
    wanted = {k: given[k] for k in ("table", "row", "dataset", "task") if k in given}
    seen, out = set(), []
    limit = None if all_rows or "row" in wanted else profile
    for table, row, dataset, task in implemented_runs(profile=limit):
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


def rows_with_model(table_id: str) -> list[str]:
    """The rows of ``table_id`` that have a model (that ``04_train`` can run)."""
    from wsigraph.tables import get_table

    return [r.name for r in get_table(table_id).rows if r.model is not None]


def _scrub(path: Path) -> None:
    """Executed copies are committed: write this checkout's absolute path as relative paths,
    drop the log noise of their stderr (:func:`strip_noise`) and re-encode the images whose
    base64 happens to spell a noise word (:func:`reencode_flagged_images`)."""
    root = str(REPO_ROOT)
    original = path.read_text()
    text = original.replace(root + "/", "").replace(root, ".")
    try:
        nb = json.loads(text)
    except json.JSONDecodeError:  # not a notebook we can parse: only the paths change
        nb = None
    if nb is not None and (strip_noise(nb) | reencode_flagged_images(nb)):
        text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    if text != original:
        write_text(path, text)


#: stderr lines of an executed notebook that are noise, not messages for its reader: progress-bar
#: frames (the bars go to the terminal), the fallback warning of ``tqdm.auto`` without ipywidgets,
#: deprecation chatter of imported libraries, profiler and CUDA-probe lines, and the source line
#: ``warnings.warn`` prints under each warning.
NOISE_LINES = (
    re.compile(r"\d+%\|.*\|"),  # a tqdm frame: "graphs:  40%|####   | 160/401 [...]"
    re.compile(r"TqdmWarning: IProgress not found"),
    re.compile(r"from \.autonotebook import tqdm as notebook_tqdm"),
    re.compile(r"FutureWarning: `torch\.jit\.script` is deprecated"),
    re.compile(r"^\s*warnings\.warn\($"),
    re.compile(r"^STAGE:\d{4}-\d\d-\d\d"),  # the torch profiler's stage lines
    re.compile(r"ActivityProfilerController|gpuGetDeviceCount|without encryption"),
)


def strip_noise(nb: dict) -> bool:
    """Remove :data:`NOISE_LINES` from every stderr stream output of the notebook ``nb`` (a parsed
    ``.ipynb``) in place, and outputs left empty; everything else on stderr stays (a real
    warning is a message for the reader). Returns whether anything changed."""
    changed = False
    for cell in nb.get("cells", []):
        outputs = cell.get("outputs")
        if not outputs:
            continue
        kept = []
        for out in outputs:
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                text = out["text"] if isinstance(out["text"], str) else "".join(out["text"])
                lines = [
                    line
                    for line in re.split(r"[\r\n]", text)
                    if line.strip() and not any(p.search(line) for p in NOISE_LINES)
                ]
                if "\n".join(lines) + ("\n" if lines else "") != text:
                    changed = True
                    if not lines:
                        continue
                    out["text"] = "\n".join(lines) + "\n"
            kept.append(out)
        cell["outputs"] = kept
    return changed


#: What a grep for log noise in the executed copies looks for. An inline PNG's base64 spells one of
#: these by chance now and then (a 100 kB figure about once in a few hundred); such an image is
#: re-encoded, with the same pixels, so that the grep finds only real noise.
NOISE_WORDS = re.compile(r"USDT|gpuGetDeviceCount|without encryption|ActivityProfilerController")


def reencode_flagged_images(nb: dict, pattern: re.Pattern = NOISE_WORDS) -> bool:
    """Re-encode, in place, every inline PNG of the notebook ``nb`` whose base64 matches
    ``pattern``: the same pixels written again by Pillow at another compression level, the first
    whose base64 does not match (an image no level clears is left as it was). Returns whether
    anything changed."""
    import base64
    import io

    from PIL import Image

    changed = False
    for cell in nb.get("cells", []):
        for out in cell.get("outputs") or []:
            data = out.get("data") or {}
            png = data.get("image/png")
            if png is None:
                continue
            text = png if isinstance(png, str) else "".join(png)
            if not pattern.search(text):
                continue
            image = Image.open(io.BytesIO(base64.b64decode(text)))
            for level in (9, 8, 7, 6, 5, 4, 3, 2, 1):
                buffer = io.BytesIO()
                image.save(buffer, format="PNG", compress_level=level)
                new = base64.b64encode(buffer.getvalue()).decode()
                if not pattern.search(new):
                    data["image/png"] = new + ("\n" if text.endswith("\n") else "")
                    changed = True
                    break
    return changed


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
