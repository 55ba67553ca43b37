"""The paper-table registry: every reproduced table, its rows, the model behind each row, and
the numbers the paper published for it.

A :class:`Table` lists its rows in the paper's order; each :class:`Row` names the model that
produces it (``wsigraph.models.build_model(row.model, in_dim, n_classes, **config)``, ``model
is None`` meaning "not implemented yet") and carries the paper's value for every printed cell
as a :class:`PaperValue` (percent, exactly as printed, with the place it was read from).
:func:`render` puts our measured mean ± std beside the paper's value and, for real-data runs,
their difference (never for demo numbers); a row we have not run shows "not run yet", never a
number.

Where the numbers come from
    Typed in by hand from the paper texts in ``../shared/papers``:
    H2-MIL (AAAI 2022, ``000_d2f63223306d16ff.txt``) Tables 1-4 and HIGT (MICCAI 2023,
    ``001_9dce4a7616eb1d99.txt``) Tables 1-3. Each row's numbers are kept below as the
    literal string printed in the paper (``"68.74± 3.90 75.50± 4.82 ..."``, odd spacing
    included), so a reader can find the line in the paper text verbatim;
    ``tests/test_tables.py`` checks that it is there. Every :class:`PaperValue` has a
    ``source`` such as ``"H2-MIL Table 1, row 'MinMax', Typing ACC"`` quoting the row as
    printed. Tables 3 and 4 of H2-MIL print the mean AUC only, so their ``std`` is ``None``.

Ambiguities in the papers and the choices made
    * Row spelling. H2-MIL Table 1 prints "RAConv+GAP", "RAConv+TopK", "RAConv+SAGP" while
      Table 2 prints "RAConv + GAP" etc. (and both print "GCN + IHPool"). The registry uses one
      canonical name per row, with spaces around "+" (Table 2's spelling); ``source`` keeps
      the spelling printed in the table the number came from (``Row.printed``).
    * HIGT's full model is printed as "Ours"; here it is named ``"HIGT (Ours)"`` so that it is
      not mistaken for *our* (this repository's) column. Its ablations keep their printed
      names ("Ours w/o SSA", ...). HIGT's citation marks are dropped ("ABMIL [9]" -> "ABMIL").
    * H2-MIL's number of IHPool layers L. Table 4 says L = 2 is best for ESCA typing, ESCA
      staging and KICA typing, and L = 1 for KICA staging (also stated in the text); and the
      H2-MIL row of Table 2 and the "Thu. + Mid. + Bot." row of Table 3 print KICA staging
      AUC 69.16, which is Table 4's "L = 1" value, not its "L = 2" value (68.18). So the
      published H2-MIL uses L = 2 except for KICA staging, where it uses L = 1. The H2-MIL
      family rows of Tables 1-3 (H2-MIL, its ablations, the schemes) therefore carry
      ``cell_config={("kica", "staging"): {"layers": 1}}`` on top of ``layers: 2``; Table 4
      sets L explicitly. :func:`run_config` returns the merged config of one run, and shared
      runs are: H2-MIL = "Thu. + Mid. + Bot." = "L = 2" for three cells and = "L = 1" for
      KICA staging (the paper prints the same AUC in each group).
    * H2-MIL reports F1 in Tables 1-2 without saying which average; we compute macro F1.
    * HIGT's "H2-MIL" rows are HIGT's re-run of H2-MIL on HIGT's larger cohorts (ESCA 161,
      KICA 371 cases, against H2-MIL's 135 and 275), so they differ from H2-MIL's own tables.
      We run one cohort per dataset, so HIGT's H2-MIL and DS-MIL rows are the same runs as
      H2-MIL's (same model, config and cell), trained once and shown in both papers' tables.
    * The SOTA rows run the methods of :mod:`wsigraph.models.baselines` on the same features
      as H2-MIL; each method's choices are documented there and in its ``nn`` module.
    * HIGT Table 3's first row is printed "H2-MIL + HIViT" and described in the text as HIGT
      with RAConv+ replaced by the original RAConv.
    * Printed as is, though unusual: HIGT Table 2 "ABMIL" typing ACC 98.86 > AUC 97.76; HIGT
      Table 3 "Ours w/o BI" typing AUC 98.04 ± 8.30 (a std that large at that mean needs a
      fold far below the others).
    * Column order follows each paper: H2-MIL Typing then Staging, ACC AUC F1; HIGT Staging
      then Typing, AUC then ACC.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from wsigraph.io import atomic_path

DATASETS = {"esca": "ESCA", "kica": "KICA"}
TASKS = {"typing": "Typing", "staging": "Staging"}
METRICS = {"acc": "ACC", "auc": "AUC", "f1": "F1"}
GROUPS = ("Control", "SOTA", "Ablation", "Ours", "Scheme", "Setting", "Reference")
NOT_RUN = "not run yet"
NOT_IN_RUN_SET = "not run on {profile}"
NOT_MEASURED = "not measured"
PAPER_NOTE = "paper numbers as published; ours measured by this repository"


@dataclass(frozen=True)
class PaperValue:
    """One published number, in percent as printed; ``std`` is ``None`` where none is printed."""

    mean: float
    std: float | None
    source: str

    def __str__(self) -> str:
        return f"{self.mean:.2f}" if self.std is None else f"{self.mean:.2f} ± {self.std:.2f}"


@dataclass(frozen=True)
class Row:
    """One row of a paper table.

    Args:
        name: canonical row name (as printed; see the module docstring for the few choices).
        group: "Control", "SOTA", "Ablation", "Ours", "Scheme", "Setting" or "Reference" (a
            ceiling that reads the demo's ground truth, e.g. ABiG-Net's GCN on the true graph).
        model: name for :func:`wsigraph.models.build_model`; ``None`` = not implemented yet.
        config: keyword arguments of the model for every cell of the row.
        paper: ``(dataset, task, metric) -> PaperValue``, or ``None`` where the paper prints
            no number (the control rows).
        printed: the name exactly as printed in this table (the registry always sets it).
        cell_config: ``(dataset, task) -> overrides`` of ``config`` for single cells
            (default: none). Use :func:`run_config` to get the config of one run.
        train: training settings of this row that replace the profile's (e.g. ``{"lr": 5e-4}``
            for the transformers); an explicit ``-p lr`` still wins (default: none).
    """

    name: str
    group: str
    model: str | None
    config: dict
    paper: dict
    printed: str = ""
    cell_config: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Table:
    """One paper table: its columns (datasets x tasks x metrics, in printed order) and rows."""

    id: str
    paper: str
    number: int
    title: str
    datasets: tuple
    tasks: tuple
    metrics: tuple
    rows: tuple
    caption: str
    row_header: str = "Method"

    @property
    def columns(self) -> list[tuple[str, str, str]]:
        """Every ``(dataset, task, metric)`` cell of a row, in the paper's column order."""
        return [(d, t, m) for d in self.datasets for t in self.tasks for m in self.metrics]

    @property
    def row_names(self) -> list[str]:
        return [r.name for r in self.rows]


# ----------------------------------------------------------------------------------------
# Typed-in tables: row name -> the row's numbers exactly as printed in the paper (one string,
# printed spacing kept), in the paper's column order. Models and configs are attached below.
# ----------------------------------------------------------------------------------------

_H2MIL = {"conv": "raconv", "pool": "ihpool", "levels": (0, 1, 2), "layers": 2}
# The published H2-MIL uses L = 1 for KICA staging (see the module docstring).
_H2MIL_CELLS = {("kica", "staging"): {"layers": 1}}


def _h2(**changes) -> dict:
    return _H2MIL | changes


# The published MIL methods: row name -> registered model (``wsigraph.models.baselines``).
# DS-MIL and H2-MIL appear in both papers' tables with one config each, so they run once.
_H2MIL_SOTA = {
    "MIL-CNN": "mil-cnn",
    "MinMax": "minmax",
    "MIL-RNN": "mil-rnn",
    "MS-DA-MIL": "ms-da-mil",
    "DS-MIL": "dsmil",
    "PTree-Net": "ptree-net",
}
_H2MIL_ABLATION = {
    "GCN + IHPool": _h2(conv="gcn"),
    "GAT + IHPool": _h2(conv="gat"),
    "HGAT + IHPool": _h2(conv="hgat"),
    "RAConv + GAP": _h2(pool="gap"),
    "RAConv + TopK": _h2(pool="topk"),
    "RAConv + SAGP": _h2(pool="sag"),
}

_H2MIL_T1 = {
    "MIL-CNN": "68.74± 3.90 75.50± 4.82 67.89± 2.59 56.59± 2.46 57.73± 7.02 53.20± 2.82",
    "MinMax": "86.44± 2.69 91.78± 3.09 85.94± 3.71 58.52± 3.14 60.88± 4.37 57.15± 3.78",
    "MIL-RNN": "81.33± 3.16 87.50± 2.65 80.20± 1.99 64.74± 3.43 63.25± 3.05 63.05± 2.69",
    "MS-DA-MIL": "88.89± 3.70 92.27± 4.67 88.22± 3.88 69.13± 2.13 72.53± 3.32 64.14± 5.36",
    "DS-MIL": "87.26± 2.01 92.47± 1.65 86.26± 1.99 66.67± 1.78 69.23± 2.66 65.38± 2.63",
    "PTree-Net": "88.29± 1.27 91.03± 0.97 86.32± 1.12 65.78± 1.44 64.52± 3.18 63.42± 3.49",
    "GCN + IHPool": "87.41± 2.34 92.58± 1.71 85.80± 2.85 68.00± 2.74 71.06± 2.38 67.97± 2.89",
    "GAT + IHPool": "89.93± 1.60 91.68± 2.09 89.10± 1.60 69.18± 1.44 71.16± 2.20 68.23± 1.43",
    "HGAT + IHPool": "90.96± 1.19 93.15± 1.48 89.71± 0.83 69.48± 2.31 72.14± 0.38 69.86± 2.96",
    "RAConv + GAP": "90.07± 1.66 91.57± 1.51 88.58± 2.18 67.25± 2.93 69.59± 3.87 65.11± 5.03",
    "RAConv + TopK": "89.63± 1.41 90.84± 2.48 87.97± 1.71 68.00± 1.60 69.43± 1.23 67.26± 1.08",
    "RAConv + SAGP": "87.70± 1.97 90.22± 2.79 87.09± 1.71 68.89± 1.23 71.25± 2.24 65.21± 2.74",
    "H2-MIL": "91.56 ± 1.60 96.40 ± 0.59 91.01 ± 1.83 72.89 ± 2.32 76.36 ± 1.69 71.92 ± 2.56",
}
# Table 1 prints these three without spaces around "+".
_H2MIL_T1_PRINTED = {
    "RAConv + GAP": "RAConv+GAP",
    "RAConv + TopK": "RAConv+TopK",
    "RAConv + SAGP": "RAConv+SAGP",
}

_H2MIL_T2 = {
    "MIL-CNN": "68.44± 4.69 67.66± 5.76 60.40± 4.69 58.98± 3.78 59.68± 1.05 49.72± 1.68",
    "MinMax": "92.76± 0.77 96.69± 0.36 91.37± 0.69 64.29± 4.83 59.22± 3.34 54.27± 3.63",
    "MIL-RNN": "89.75± 2.27 94.41± 1.32 87.37± 2.29 62.55± 3.64 56.80± 3.43 54.22± 4.18",
    "MS-DA-MIL": "93.52± 1.31 94.77± 2.96 87.68± 2.78 65.45± 1.82 64.69± 4.18 62.06± 4.25",
    "DS-MIL": "91.19± 1.91 95.87± 1.13 90.10± 1.88 67.41± 4.45 60.25± 3.81 56.08± 4.66",
    "PTree-Net": "91.20± 2.19 94.94± 1.46 88.98± 3.40 66.18± 4.66 56.95± 2.83 53.00± 3.13",
    "GCN + IHPool": "91.78± 0.71 95.04± 1.17 89.97± 1.03 65.89± 4.03 61.70± 3.22 56.68± 2.72",
    "GAT + IHPool": "93.45± 0.97 96.53± 1.10 92.33± 1.55 69.01± 3.40 62.44± 2.86 58.52± 1.66",
    "HGAT + IHPool": "93.16± 1.11 96.57± 0.67 91.99± 1.25 69.75± 4.03 60.42± 2.55 54.23± 1.44",
    "RAConv + GAP": "92.58± 1.35 94.51± 1.08 91.00± 1.20 64.80± 4.06 62.51± 5.72 58.73± 3.20",
    "RAConv + TopK": "89.45± 1.21 93.89± 0.88 88.32± 1.19 66.04± 2.96 61.69± 5.01 57.63± 3.24",
    "RAConv + SAGP": "90.83± 0.84 93.09± 1.67 88.04± 1.67 65.16± 1.58 60.43± 3.35 58.37± 4.48",
    "H2-MIL": "95.05 ± 0.49 98.05 ± 0.57 93.30 ± 1.34 70.62 ± 2.60 69.16 ± 1.52 63.51 ± 5.01",
}

# Mean AUC only: ESCA Typing, ESCA Staging, KICA Typing, KICA Staging.
_H2MIL_T3 = {
    "Thu. + Mid.": ("87.17 70.98 93.31 64.59", (0, 1)),
    "Thu. + Bot.": ("94.49 73.20 96.13 64.57", (0, 2)),
    "Thu. + Mid. + Bot.": ("96.40 76.36 98.05 69.16", (0, 1, 2)),
}
_H2MIL_T4 = {
    "L = 1": "94.64 76.04 97.50 69.16",
    "L = 2": "96.40 76.36 98.05 68.18",
    "L = 3": "95.46 74.86 97.44 65.42",
    "L = 4": "93.30 74.09 97.52 64.24",
}

# HIGT: Staging AUC, Staging ACC, Typing AUC, Typing ACC. Printed name -> numbers.
_HIGT_SOTA = (
    ("ABMIL [9]", "ABMIL"),
    ("CLAM-SB [12]", "CLAM-SB"),
    ("DeepAttnMIL [18]", "DeepAttnMIL"),
    ("DS-MIL [11]", "DS-MIL"),
    ("LA-MIL [15]", "LA-MIL"),
    ("H2-MIL [7]", "H2-MIL"),
    ("HIPT [3]", "HIPT"),
)
_HIGT_OURS = "HIGT (Ours)"
_HIGT_SOTA_MODELS = {
    "ABMIL": ("abmil", {}),
    "CLAM-SB": ("clam-sb", {}),
    "DeepAttnMIL": ("deepattnmil", {}),
    "DS-MIL": ("dsmil", {}),
    "LA-MIL": ("la-mil", {}),
    "H2-MIL": ("h2mil", _H2MIL),
    "HIPT": ("hipt", {}),
}
# HIGT and its Table 3 ablations (wsigraph.models.higt): printed name -> config.
_HIGT_MODELS = {
    "Ours": {},
    "H2-MIL + HIViT": {"conv": "raconv"},
    "Ours w/o SSA": {"attention": "mhsa"},
    "Ours w/o BI": {"bidirectional": False},
    "Ours w/o Fusion": {"fusion": False},
}
# The transformers (HIPT, LA-MIL and HIGT's own rows) train at HIGT's lr 5e-4 on every
# profile: at the demo profile's 2e-3 HIPT diverges (demo ESCA typing AUC 0.47 +/- 0.17 at
# 2e-3 against 1.00 at 5e-4).
_TRANSFORMER_TRAIN = {"lr": 5e-4}
_HIGT_T1 = {
    "ABMIL [9]": "64.53± 4.80 64.39± 5.05 94.11± 2.69 93.07± 2.68",
    "CLAM-SB [12]": "67.45± 5.40 67.29± 5.18 93.79± 5.52 93.47± 5.77",
    "DeepAttnMIL [18]": "67.96± 5.52 67.53± 4.96 95.68± 1.94 94.43± 3.04",
    "DS-MIL [11]": "66.92± 5.28 66.83± 5.57 95.96± 3.07 94.77± 4.10",
    "LA-MIL [15]": "63.93± 6.19 63.45± 6.19 95.23± 3.75 94.69± 3.94",
    "H2-MIL [7]": "63.20± 8.36 62.72± 8.32 91.88± 4.17 91.31± 4.18",
    "HIPT [3]": "68.59± 5.62 68.45± 6.39 94.62± 2.34 93.01± 3.28",
    "Ours": "71.11 ± 6.04 70.53 ± 5.41 96.81 ± 2.49 96.16 ± 2.85",
}
_HIGT_T2 = {
    "ABMIL [9]": "77.40± 3.87 75.94± 5.06 97.76± 1.74 98.86± 0.69",
    "CLAM-SB [12]": "77.16± 3.64 76.61± 4.31 96.76± 3.42 97.13± 2.99",
    "DeepAttnMIL [18]": "76.77± 1.94 75.94± 2.41 97.44± 1.04 96.30± 2.63",
    "DS-MIL [11]": "77.33± 4.11 76.57± 5.14 98.03± 1.13 97.31± 1.85",
    "LA-MIL [15]": "69.37± 5.27 68.73± 5.09 98.34± 0.98 97.71± 1.76",
    "H2-MIL [7]": "65.59± 6.65 64.48± 6.20 98.06± 1.43 96.99± 3.01",
    "HIPT [3]": "75.93± 2.01 75.34± 2.31 98.71± 0.49 97.32± 2.24",
    "Ours": "78.80 ± 2.10 76.80 ± 2.30 98.90 ± 0.60 97.90 ± 1.40",
}
_HIGT_T3 = {
    "H2-MIL + HIViT": "77.35± 3.41 77.16 ± 3.29 98.56± 1.01 95.00± 1.75",
    "Ours w/o SSA": "73.45± 8.48 71.47± 3.21 97.94± 2.51 97.42± 2.65",
    "Ours w/o BI": "72.42± 2.09 71.34± 7.23 98.04± 8.30 96.54± 2.80",
    "Ours w/o Fusion": "77.87± 2.09 76.80± 2.95 98.46± 0.88 97.35± 1.81",
    "Ours": "78.80 ± 2.10 76.80± 2.30 98.90 ± 0.60 97.90 ± 1.40",
}

_NUMBER = re.compile(r"(\d+\.\d+)(?:\s*±\s*(\d+\.\d+))?")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _parse(printed: str) -> list[tuple[float, float | None]]:
    """``"68.74± 3.90 75.50"`` -> ``[(68.74, 3.90), (75.50, None)]``."""
    values = [(float(m), float(s) if s else None) for m, s in _NUMBER.findall(printed)]
    if _NUMBER.sub("", printed).strip():
        raise ValueError(f"unparsed text in {printed!r}")
    return values


def _cell_name(table: Table, dataset: str, task: str, metric: str) -> str:
    parts = ([DATASETS[dataset]] if len(table.datasets) > 1 else []) + [TASKS[task]]
    return " ".join(parts + [METRICS[metric]])


def _row(
    table: Table,
    name: str,
    group: str,
    numbers: str,
    model: str | None = None,
    config: dict | None = None,
    printed: str | None = None,
    cell_config: dict | None = None,
    train: dict | None = None,
) -> Row:
    printed = printed or name
    values = _parse(numbers)
    columns = table.columns
    if len(values) != len(columns):
        raise ValueError(f"{table.id} row {name!r}: {len(values)} numbers for {len(columns)} cells")
    note = "" if all(s is not None for _, s in values) else " (mean only; no std printed)"
    paper = {
        cell: PaperValue(
            mean,
            std,
            f"{table.paper} Table {table.number}, row '{printed}', {_cell_name(table, *cell)}{note}",
        )
        for cell, (mean, std) in zip(columns, values, strict=True)
    }
    return Row(
        name,
        group,
        model,
        dict(config or {}),
        paper,
        printed,
        dict(cell_config or {}),
        dict(train or {}),
    )


def _table(rows: list[dict], **kw) -> Table:
    """Build a table from row specs (keyword arguments of :func:`_row` besides the table)."""
    shell = Table(rows=(), **kw)  # columns, id and paper, for parsing and sources
    return Table(rows=tuple(_row(shell, **spec) for spec in rows), **kw)


def _h2mil_cohort_table(number: int, dataset: str, numbers: dict, printed: dict) -> Table:
    assert list(numbers) == [*_H2MIL_SOTA, *_H2MIL_ABLATION, "H2-MIL"]
    rows = []
    for name, text in numbers.items():
        spec = dict(name=name, numbers=text, printed=printed.get(name))
        if name in _H2MIL_SOTA:
            spec |= dict(group="SOTA", model=_H2MIL_SOTA[name])
        else:
            config = _H2MIL_ABLATION.get(name, _H2MIL)
            group = "Ours" if name == "H2-MIL" else "Ablation"
            spec |= dict(group=group, model="h2mil", config=config, cell_config=_H2MIL_CELLS)
        rows.append(spec)
    cohort = DATASETS[dataset]
    return _table(
        rows,
        id=f"h2mil_table{number}",
        paper="H2-MIL",
        number=number,
        title=f"Classification results on the {cohort} cohort",
        datasets=(dataset,),
        tasks=("typing", "staging"),
        metrics=("acc", "auc", "f1"),
        caption=f"Classification results on the {cohort} cohort. We use the same patch "
        "feature extractor for all methods.",
    )


def _higt_name(printed: str) -> str:
    return _HIGT_OURS if printed == "Ours" else dict(_HIGT_SOTA).get(printed, printed)


def _higt_table(number: int, dataset: str, numbers: dict, title: str, caption: str) -> Table:
    rows = []
    for printed, text in numbers.items():
        name = _higt_name(printed)
        spec = dict(
            name=name,
            group="Ours" if printed == "Ours" else ("SOTA" if number < 3 else "Ablation"),
            numbers=text,
            printed=printed,
        )
        if number < 3 and name in _HIGT_SOTA_MODELS:
            model, config = _HIGT_SOTA_MODELS[name]
            spec |= dict(model=model, config=config)
            if model == "h2mil":
                spec |= dict(cell_config=_H2MIL_CELLS)
            if model in ("hipt", "la-mil"):
                spec |= dict(train=_TRANSFORMER_TRAIN)
        elif printed in _HIGT_MODELS:
            spec |= dict(model="higt", config=_HIGT_MODELS[printed], train=_TRANSFORMER_TRAIN)
        rows.append(spec)
    return _table(
        rows,
        id=f"higt_table{number}",
        paper="HIGT",
        number=number,
        title=title,
        datasets=(dataset,),
        tasks=("staging", "typing"),
        metrics=("auc", "acc"),
        caption=caption,
    )


def _build() -> dict[str, Table]:
    t1 = _h2mil_cohort_table(1, "esca", _H2MIL_T1, _H2MIL_T1_PRINTED)
    t2 = _h2mil_cohort_table(2, "kica", _H2MIL_T2, {})
    both = dict(datasets=("esca", "kica"), tasks=("typing", "staging"), metrics=("auc",))
    t3 = _table(
        [
            dict(
                name=name,
                group="Scheme",
                numbers=text,
                model="h2mil",
                config=_h2(levels=levels),
                cell_config=_H2MIL_CELLS,
            )
            for name, (text, levels) in _H2MIL_T3.items()
        ],
        id="h2mil_table3",
        paper="H2-MIL",
        number=3,
        title="Comparison of different multi-resolution schemes in H2-MIL (mean AUC)",
        caption="Comparison of different multi-resolution schemes in H2-MIL. Thu., Mid., and "
        "Bot. denotes the thumbnail, middle-level, and bottom-level of WSI pyramid, "
        "respectively. The mean AUC is reported.",
        row_header="Scheme",
        **both,
    )
    t4 = _table(
        [
            dict(
                name=name,
                group="Setting",
                numbers=text,
                model="h2mil",
                config=_h2(layers=int(name.removeprefix("L = "))),
            )
            for name, text in _H2MIL_T4.items()
        ],
        id="h2mil_table4",
        paper="H2-MIL",
        number=4,
        title="Performance of H2-MIL with respect to different settings of L (mean AUC)",
        caption="Performance of H2-MIL with respect to different settings of L. The mean AUC "
        "is reported.",
        row_header="Setting",
        **both,
    )
    assert list(_HIGT_T1) == list(_HIGT_T2) == [p for p, _ in _HIGT_SOTA] + ["Ours"]
    h1, h2 = (
        _higt_table(
            n,
            d,
            numbers,
            f"Comparison with other methods on {DATASETS[d]}",
            f"Comparison with other methods on {DATASETS[d]}. Top results are shown in bold.",
        )
        for n, d, numbers in ((1, "esca", _HIGT_T1), (2, "kica", _HIGT_T2))
    )
    h3 = _higt_table(
        3,
        "kica",
        _HIGT_T3,
        "Ablation analysis on KICA dataset",
        "Ablation analysis on KICA dataset.",
    )
    tables = {t.id: _with_controls(t) for t in (t1, t2, t3, t4, h1, h2, h3)}
    for table in tables.values():
        _check(table)
    return tables


#: The control rows of every slide-level table (issue 17): logistic regression on the slide-mean
#: patch features of one pyramid level, and of all levels side by side (``slide-mean-lr``).
#: They ignore the graph and the hierarchy; no paper prints them.
CONTROL_ROWS = {
    "LR on slide means (Thu.)": (0,),
    "LR on slide means (Mid.)": (1,),
    "LR on slide means (Bot.)": (2,),
    "LR on slide means (all levels)": (0, 1, 2),
}


def _with_controls(table: Table) -> Table:
    """``table`` with the :data:`CONTROL_ROWS` first, in the group "Control"."""
    controls = tuple(
        Row(
            name,
            "Control",
            "slide-mean-lr",
            {"levels": levels},
            dict.fromkeys(table.columns),
            name,
        )
        for name, levels in CONTROL_ROWS.items()
    )
    return replace(table, rows=controls + table.rows)


def _check(table: Table) -> None:
    names = table.row_names
    if len(set(names)) != len(names):
        raise ValueError(f"{table.id}: duplicate row names {names}")
    slugs = [_slug(n) for n in names]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"{table.id}: row names collide as slugs {slugs}")
    for row in table.rows:
        if row.group not in GROUPS:
            raise ValueError(f"{table.id} row {row.name!r}: group {row.group!r} not in {GROUPS}")
        if set(row.paper) != set(table.columns):
            raise ValueError(f"{table.id} row {row.name!r}: paper cells do not match columns")


TABLES: dict[str, Table] = _build()


# ----------------------------------------------------------------------------------------
# Lookup
# ----------------------------------------------------------------------------------------


def get_table(table_id: str) -> Table:
    """The registered table ``table_id`` (e.g. ``"h2mil_table1"``)."""
    try:
        return TABLES[table_id]
    except KeyError:
        raise ValueError(f"unknown table {table_id!r}; tables: {', '.join(TABLES)}") from None


def get_row(table_id: str, row_name: str) -> Row:
    """The row ``row_name`` (canonical name) of table ``table_id``."""
    table = get_table(table_id)
    for row in table.rows:
        if row.name == row_name:
            return row
    raise ValueError(f"unknown row {row_name!r} of {table_id}; rows: {', '.join(table.row_names)}")


def _check_cell(table: Table, dataset: str, task: str) -> None:
    if dataset not in table.datasets:
        raise ValueError(
            f"unknown dataset {dataset!r} for {table.id}; datasets: {', '.join(table.datasets)}"
        )
    if task not in table.tasks:
        raise ValueError(f"unknown task {task!r} for {table.id}; tasks: {', '.join(table.tasks)}")


def run_name(table_id: str, row_name: str, dataset: str, task: str) -> str:
    """Filesystem-safe name of one run, e.g. ``"h2mil_table1__gcn-ihpool__esca__typing"``."""
    table = get_table(table_id)
    get_row(table_id, row_name)
    _check_cell(table, dataset, task)
    return f"{table_id}__{_slug(row_name)}__{dataset}__{task}"


def own_run_name(table_id: str, row_name: str, dataset: str, label: str) -> str:
    """Name of a run of one table row on *your* label column (``04_train -p label_column``),
    e.g. ``"own__h2mil_table1__h2-mil__custom__grade"``: the row's model and settings on a
    dataset and label that are no cell of the paper's table, so the tables never show it."""
    get_row(table_id, row_name)
    if not str(dataset).strip() or not str(label).strip():
        raise ValueError(f"dataset and label must be non-empty, got {dataset!r}, {label!r}")
    return f"own__{table_id}__{_slug(row_name)}__{_slug(dataset)}__{_slug(label)}"


def run_config(row: Row, dataset: str, task: str) -> dict:
    """The model config of one run: ``row.config`` with that cell's overrides applied."""
    return row.config | row.cell_config.get((dataset, task), {})


def config_key(row: Row, dataset: str, task: str) -> str:
    """Stable hash of (model, config, training overrides, dataset, task): runs with equal keys
    are the same run."""
    if row.model is None:
        raise ValueError(f"row {row.name!r} has no model yet, so no config key")
    payload = {
        "model": row.model,
        "config": run_config(row, dataset, task),
        "dataset": dataset,
        "task": task,
    }
    if row.train:  # only when set, so that keys of rows without overrides stay as they were
        payload["train"] = row.train
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def implemented_runs(table_ids=None, profile=None) -> list[tuple[str, str, str, str]]:
    """Every ``(table_id, row_name, dataset, task)`` whose row has a model, in table order;
    with ``profile``, only the rows of its run set (:func:`run_set`)."""
    ids = list(TABLES) if table_ids is None else [get_table(t).id for t in table_ids]
    chosen = {tid: run_set(profile, tid) for tid in ids} if profile is not None else {}
    return [
        (tid, row.name, d, t)
        for tid in ids
        for row in TABLES[tid].rows
        if row.model is not None and (chosen.get(tid) is None or row.name in chosen[tid])
        for d in TABLES[tid].datasets
        for t in TABLES[tid].tasks
    ]


def load_records(runs_dir: str | os.PathLike) -> dict[str, dict]:
    """The run records of ``runs_dir/*.json`` (not ``*.params.json``) by name (the file stem),
    as notebooks 05 and 06 read them.

    A file that is not readable JSON (truncated by a crash or a full disk), not a JSON object,
    or without a ``summary`` object is skipped with a warning naming it, so its table rows show
    "not run yet" instead of the notebook stopping on a bare ``JSONDecodeError``.
    """
    records = {}
    for path in sorted(Path(runs_dir).glob("*.json")):
        if path.name.endswith(".params.json"):
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            _skip_record(path, f"not readable JSON: {e}")
            continue
        if not isinstance(record, dict):
            _skip_record(path, f"holds a {type(record).__name__}, not a JSON object")
        elif not isinstance(record.get("summary"), dict):
            _skip_record(path, "no 'summary' object")
        else:
            records[path.stem] = record
    return records


def _skip_record(path: Path, why: str) -> None:
    import warnings

    warnings.warn(
        f"skipping run record {path} ({why}); its rows show 'not run yet' -- rerun that run "
        "(notebooks/04_train.ipynb) to recreate it",
        stacklevel=3,
    )


# ----------------------------------------------------------------------------------------
# Rendering: ours beside the paper's
# ----------------------------------------------------------------------------------------


def _find_record(records: dict, by_key: dict, table: Table, row: Row, dataset: str, task: str):
    rec = records.get(run_name(table.id, row.name, dataset, task))
    if rec is None and row.model is not None:
        # The same run listed under another table (e.g. "L = 2" of Table 4 for H2-MIL).
        rec = by_key.get(config_key(row, dataset, task))
    return rec


def _records_by_config_key(records: dict) -> dict:
    by_key = {}
    for tid, name, dataset, task in implemented_runs():
        rec = records.get(run_name(tid, name, dataset, task))
        if rec is not None:
            by_key.setdefault(config_key(get_row(tid, name), dataset, task), rec)
    return by_key


def _ours(record: dict, metric: str) -> tuple[float, float | None] | None:
    """Our (mean, std) in percent, or ``None`` if the record lacks the metric."""
    value = record.get("summary", {}).get(metric)
    if value is None or value.get("mean") is None or not math.isfinite(value["mean"]):
        return None
    mean, std = float(value["mean"]), value.get("std")
    if not 0.0 <= mean <= 1.0:
        raise ValueError(f"record {metric} mean {mean} is not a fraction in [0, 1]")
    return 100 * mean, None if std is None else 100 * float(std)


def _extra(
    record: dict | None, metric: str, kind: str, paper: str
) -> tuple[float, float | None] | None:
    """A CSV-only cell, in percent: our std over the repeats' means as ``(std, None)``, or the
    official variant's ``(mean, std)``; ``None`` where there is none."""
    if record is None:
        return None
    summary = record.get("summary", {})
    if kind == "std_repeats":
        std = summary.get(metric, {}).get("std_repeats")
        return None if std is None or not math.isfinite(std) else (100 * std, None)
    return _ours(record, OFFICIAL_VARIANT[(paper, metric)])


def _fmt(mean: float, std: float | None) -> str:
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def _diff(ours: float, paper: float) -> str:
    d = round(round(ours, 2) - paper, 2)  # of the printed values, so a reader can check it
    return f"{d + 0.0:+.2f}"  # + 0.0 turns -0.0 into 0.0


def compares(label: str) -> bool:
    """Whether our numbers under ``label`` may be subtracted from the paper's: never for demo
    numbers (a synthetic number minus a TCGA number means nothing)."""
    return "demo" not in label


#: The official code's variant of a metric, per paper (:data:`wsigraph.train.metrics.
#: OFFICIAL_METRICS`): H2-MIL's threshold-chosen ACC and sensitivity/specificity F1, HIGT's
#: micro-AUC. They go into the CSV beside ours, labelled; the Markdown shows ours.
OFFICIAL_VARIANT = {
    ("H2-MIL", "acc"): "acc_thr",
    ("H2-MIL", "f1"): "f1_sens_spec",
    ("HIGT", "auc"): "auc_micro",
}


def column_names(table: Table, dataset: str, task: str, metric: str, label: str) -> list[str]:
    """The column names of one cell: ours, the paper's and, unless ``label`` is a demo label,
    their difference."""
    head = f"{DATASETS[dataset]} {TASKS[task]} {METRICS[metric]}"
    names = [f"{head} [{label}]", f"{head} [paper]"]
    return names + [f"{head} [{label} - paper]"] if compares(label) else names


def extra_column_names(table: Table, dataset: str, task: str, metric: str, label: str) -> dict:
    """The CSV-only columns of one cell: ``{"std_repeats": name}`` and, where the paper's
    official code computes the metric otherwise, ``{"official": name}``."""
    head = f"{DATASETS[dataset]} {TASKS[task]} {METRICS[metric]}"
    out = {"std_repeats": f"{head} [{label}, std over repeats]"}
    variant = OFFICIAL_VARIANT.get((table.paper, metric))
    if variant:
        out["official"] = f"{head} [{label}, official code's {variant}]"
    return out


def cell_values(
    table_id: str, records: dict, dataset: str, task: str, metric: str
) -> list[tuple[Row, tuple[float, float | None] | None, PaperValue]]:
    """Numbers of one cell for every row, for plotting: ``(row, ours, paper)`` with ``ours``
    our ``(mean, std)`` in percent or ``None`` when not run (records as in :func:`render`)."""
    table = get_table(table_id)
    _check_cell(table, dataset, task)
    if metric not in table.metrics:
        raise ValueError(f"{table_id} reports {', '.join(table.metrics)}, not {metric!r}")
    by_key = _records_by_config_key(records)
    out = []
    for row in table.rows:
        rec = _find_record(records, by_key, table, row, dataset, task)
        out.append(
            (row, None if rec is None else _ours(rec, metric), row.paper[(dataset, task, metric)])
        )
    return out


def label_profile(label: str) -> str:
    """The profile a column label names: ``"ours (demo, 10 it.)"`` -> ``"demo"``."""
    m = re.search(r"\(([A-Za-z0-9_-]+)", label)
    return m[1] if m else label


def run_set(profile, table_id: str) -> list[str] | None:
    """The rows of ``table_id`` that ``./run_all.sh`` trains by default on ``profile``
    (``profile.extra["runs"]``), or ``None`` for every row with a model."""
    runs = profile.extra.get("runs")
    if runs is None:
        return None
    table = get_table(table_id)
    rows = list(runs.get(table_id, []))
    unknown = sorted(set(rows) - set(table.row_names))
    if unknown:
        raise ValueError(
            f"profile {profile.name!r}: run set of {table_id} names unknown rows {unknown}; "
            f"rows: {table.row_names}"
        )
    return rows


def skipped_rows(profile, table_id: str) -> list[str]:
    """Rows of ``table_id`` with a model that ``profile``'s run set leaves out."""
    chosen = run_set(profile, table_id)
    if chosen is None:
        return []
    return [r.name for r in get_table(table_id).rows if r.model and r.name not in chosen]


def render(
    table_id: str, records: dict, label: str = "ours (demo)", skipped: Sequence[str] = ()
) -> pd.DataFrame:
    """Our numbers beside the paper's, one row per paper row.

    Args:
        table_id: a key of :data:`TABLES`.
        records: ``run_name -> record``; a record holds fractions in
            ``record["summary"][metric] = {"mean": .., "std": ..}``. A run missing under its own
            name is taken from an identical run (same :func:`config_key`) of another table.
        label: the name of our column group, e.g. ``"ours (demo)"`` or ``"ours (tcga)"``.
        skipped: rows the profile's run set leaves out (:func:`skipped_rows`): without a
            record they read "not run on <profile>" rather than "not run yet".

    Returns:
        A frame with ``group`` and the row header, then for every cell three string columns
        ``"<cell> [<label>]"`` (mean ± std, percent), ``"<cell> [paper]"`` (as printed) and
        ``"<cell> [<label> - paper]"`` (points, signed; empty when there is nothing to compare;
        no such column for demo labels). Then, for the CSV (:func:`extra_column_names`), the std
        over the repeats' means and the official code's variant of the metric where there is one
        (mean ± std over repeats for H2-MIL's per-repeat ACC/F1, over folds for micro-AUC).
    """
    table = get_table(table_id)
    by_key = _records_by_config_key(records)
    lines, counts, values = [], {}, {}
    for row in table.rows:
        line = {"group": row.group, table.row_header: row.name}
        extra: dict[str, str] = {}
        for dataset, task, metric in table.columns:
            rec = _find_record(records, by_key, table, row, dataset, task)
            ours = None if rec is None else _ours(rec, metric)
            paper = row.paper[(dataset, task, metric)]
            c_ours, c_paper, *c_diff = column_names(table, dataset, task, metric, label)
            if ours is None and rec is None and row.name in skipped:
                line[c_ours] = NOT_IN_RUN_SET.format(profile=label_profile(label))
            elif ours is None:
                line[c_ours] = NOT_RUN if rec is None else NOT_MEASURED
            else:
                line[c_ours] = _fmt(*ours)
                values[(row.name, c_ours)] = ours
                n = rec.get("summary", {}).get(metric, {}).get("n")
                if n is not None:
                    counts[(row.name, c_ours)] = int(n)
            line[c_paper] = "–" if paper is None else str(paper)
            if paper is not None:
                values[(row.name, c_paper)] = (paper.mean, paper.std)
            if c_diff:
                line[c_diff[0]] = (
                    "" if ours is None or paper is None else _diff(ours[0], paper.mean)
                )
            for kind, col in extra_column_names(table, dataset, task, metric, label).items():
                number = _extra(rec, metric, kind, table.paper)
                extra[col] = "" if number is None else _fmt(*number)
                if number is not None:
                    values[(row.name, col)] = number
        lines.append(line | extra)
    df = pd.DataFrame(lines)  # the CSV-only columns come last
    df.attrs.update(extra_columns=list(extra), counts=counts, values=values)
    df.attrs.update(table_id=table_id, label=label, row_header=table.row_header)
    return df


def to_markdown(
    df: pd.DataFrame, table: Table, label: str | None = None, demo_note: str | None = None
) -> str:
    """A Markdown table with a caption naming the table, our label and where numbers come from;
    ``demo_note`` (demo labels only) says what the demo task is and how the controls did."""
    label = label or df.attrs.get("label", "ours")
    compared = ", then in brackets ours − paper in points" if compares(label) else ""
    caption = (
        f"**{table.paper} Table {table.number}.** {table.title}. "
        f"Each cell reads `{label} / paper`: ours, then the paper's{compared} — {PAPER_NOTE}."
    )
    variants = [v for (p, _), v in OFFICIAL_VARIANT.items() if p == table.paper]
    if variants:
        caption += (
            " Ours: ACC of the argmax class, ROC AUC, macro F1; mean ± std over all test "
            "folds. The CSV adds the std over the repeats' means and the official code's "
            f"variants ({', '.join(variants)})."
        )
    if "demo" in label:
        caption += (
            " Demo numbers come from a synthetic demo task built so that only the paper's "
            "mechanism can solve it; they test the mechanism and are not a reproduction of the "
            "paper's values (no difference to the paper is computed)."
        )
        if demo_note:
            caption += " " + demo_note.strip()
    caption += f' Paper caption: "{table.caption}"'
    shown = df.drop(columns=[c for c in df.attrs.get("extra_columns", []) if c in df.columns])
    return caption + "\n\n" + markdown_grid(compact(shown, label))


def compact(df: pd.DataFrame, label: str) -> pd.DataFrame:
    """One column per table cell, ``"ours / paper"`` (and ``" (difference)"`` where a
    ``[<label> - paper]`` column exists), headed ``"<cell>: <label> / paper"``, in place of the
    separate ``<cell> [<label>]``, ``<cell> [paper]`` (and difference) columns; other columns
    are kept as they are. A Markdown table of 4 cells x 3 metrics then has 12 value columns,
    not 24 or 36. A cell named in ``df.attrs["ran"]`` (:func:`render_results`) says what ours
    ran on: ``"<cell>: <label> on <what> / paper"``."""
    ran = df.attrs.get("ran", {})
    out = {}
    for col in df.columns:
        suffix = f" [{label}]"
        if col.endswith(suffix) and f"{col[: -len(suffix)]} [paper]" in df.columns:
            head = col[: -len(suffix)]
            value = df[col].astype(str) + " / " + df[f"{head} [paper]"].astype(str)
            diff = f"{head} [{label} - paper]"
            if diff in df.columns:
                value = value + df[diff].map(lambda d: f" ({d})" if d not in ("", "–") else "")
            on = f" on {ran[head]}" if head in ran else ""
            out[f"{head}: {label}{on} / paper"] = value
        elif col.endswith(" [paper]") or col.endswith(f" [{label} - paper]"):
            continue  # folded into its cell's column above
        else:
            out[col] = df[col]
    return pd.DataFrame(out)


def markdown_grid(df: pd.DataFrame) -> str:
    """``df`` as a Markdown pipe table (``|`` in cells escaped), without its index."""

    def cell(value) -> str:
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(cell(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def write_table(
    table_id: str,
    records: dict,
    out_dir: str | os.PathLike,
    label: str = "ours (demo)",
    skipped: Sequence[str] = (),
    demo_note: str | None = None,
) -> tuple[Path, Path]:
    """Render ``table_id`` and write ``<out_dir>/<table_id>.md`` and ``.csv`` atomically
    (``skipped`` as in :func:`render`, ``demo_note`` as in :func:`to_markdown`)."""
    df = render(table_id, records, label, skipped)
    return _write_rendered(df, get_table(table_id), out_dir, label, demo_note)


def _write_rendered(
    df: pd.DataFrame, table, out_dir: str | os.PathLike, label: str, demo_note=None
):
    """``<out_dir>/<table.id>.md`` (:func:`to_markdown`) and ``.csv``, each written atomically."""
    out_dir = Path(out_dir)
    md, csv = out_dir / f"{table.id}.md", out_dir / f"{table.id}.csv"
    with atomic_path(md) as tmp:
        tmp.write_text(to_markdown(df, table, label, demo_note), encoding="utf-8")
    with atomic_path(csv) as tmp:
        numeric(df, label).to_csv(tmp, index=False, encoding="utf-8", float_format="%.6g")
    return md, csv


NUMERIC_COLUMNS = (
    "cell", "ours_mean", "ours_std", "ours_n", "ours_std_repeats", "official_variant",
    "official_mean", "official_std", "paper_mean", "paper_std", "status",
)  # fmt: skip


def numeric(df: pd.DataFrame, label: str) -> pd.DataFrame:
    """The CSV form of a rendered table (:func:`render` or :func:`render_results`): one row per
    (table row, cell) with numbers in their own columns, in percent (:data:`NUMERIC_COLUMNS`
    after ``group`` and the row header): ``cell`` (e.g. ``"KICA Typing AUC"``), our mean, fold
    std and number of test folds ``n``, our std over the repeats' means, the official code's
    variant of the metric (its name, mean and std, where there is one), the paper's mean and
    std (empty where it prints none), and ``status``: ``measured``, or why there is no number
    of ours (``not run yet``, ``not run on demo``, ``not measured``). The numbers are the
    unrounded values the frame was rendered from (``df.attrs["values"]``), not its printed
    strings read back."""
    header = df.attrs.get("row_header") or df.columns[1]
    counts = df.attrs.get("counts", {})
    if "values" not in df.attrs:
        raise ValueError("numeric() needs a frame from render() or render_results()")
    values = df.attrs["values"]
    suffix = f" [{label}]"

    def number(row, col) -> tuple[float, float]:  # the unrounded (mean, std); nan where none
        mean, std = values.get((row, col), (math.nan, math.nan))
        return mean, math.nan if std is None else std

    rows = []
    for _, line in df.iterrows():
        name = line[header]
        for col in df.columns:
            if not col.endswith(suffix) or f"{col[: -len(suffix)]} [paper]" not in df.columns:
                continue
            head = col[: -len(suffix)]
            ours_mean, ours_std = number(name, col)
            paper_mean, paper_std = number(name, f"{head} [paper]")
            official = [c for c in df.columns if c.startswith(f"{head} [{label}, official code's ")]
            variant = official[0].rsplit("official code's ", 1)[1].rstrip("]") if official else ""
            off_mean, off_std = number(name, official[0]) if official else (math.nan, math.nan)
            repeats = f"{head} [{label}, std over repeats]"
            rows.append(
                {
                    "group": line.get("group", ""),
                    header: line[header],
                    "cell": head,
                    "ours_mean": ours_mean,
                    "ours_std": ours_std,
                    "ours_n": counts.get((line[header], col)),
                    "ours_std_repeats": number(name, repeats)[0],
                    "official_variant": variant,
                    "official_mean": off_mean,
                    "official_std": off_std,
                    "paper_mean": paper_mean,
                    "paper_std": paper_std,
                    "status": "measured" if math.isfinite(ours_mean) else str(line[col]),
                }
            )
    out = pd.DataFrame(rows, columns=["group", header, *NUMERIC_COLUMNS])
    out["ours_n"] = out["ours_n"].astype("Int64")
    return out


# ----------------------------------------------------------------------------------------
# Tables of the other papers (nuclei-graph GCN, ABiG-Net, MiCo)
#
# Their rows are not runs of ``04_train`` (each paper has its own notebook, 07-09, which
# measures its rows), and their columns are not H2-MIL's dataset x task x metric grid, so they
# are :class:`ResultTable` s: named columns, one published value (or ``None``, not reported) per
# row and column, and a renderer that puts the notebook's numbers beside them.
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultRow:
    """One row of a :class:`ResultTable`: ``paper`` maps a column key to the published value,
    ``None`` where the paper reports none for that column."""

    name: str
    paper: dict
    group: str = "Ours"


@dataclass(frozen=True)
class ResultTable:
    """A paper table whose rows a paper notebook measures itself.

    Args:
        id: file stem, e.g. ``"nuclei_table2"``.
        paper, number, title, caption: as printed.
        columns: ``(key, header)`` pairs in printed order, e.g. ``("bach", "BACH accuracy")``.
        rows: the rows in printed order.
        row_header: the name of the first column (default ``"Method"``).
    """

    id: str
    paper: str
    number: int | str
    title: str
    caption: str
    columns: tuple
    rows: tuple
    row_header: str = "Method"

    @property
    def row_names(self) -> list[str]:
        return [r.name for r in self.rows]

    @property
    def column_keys(self) -> list[str]:
        return [k for k, _ in self.columns]


_CELL = re.compile(r"(\d+(?:\.\d+)?)%?(?:\s*±\s*(\d+(?:\.\d+)?))?")


def _result_row(table_id: str, paper: str, number, name: str, printed: dict, group="Ours"):
    """A :class:`ResultRow` from ``column -> "94" | "97.33 ± 1.15" | None`` (as printed)."""
    values = {}
    for key, text in printed.items():
        if text is None:
            values[key] = None
            continue
        m = _CELL.fullmatch(text.strip())
        if m is None:
            raise ValueError(
                f"{table_id} row {name!r}: expected 'mean' or 'mean ± std', got {text!r}"
            )
        mean, std = float(m[1]), None if m[2] is None else float(m[2])
        values[key] = PaperValue(mean, std, f"{paper} Table {number}, row '{name}', {key}")
    return ResultRow(name, values, group)


# Orderings -------------------------------------------------------------------------------------
# The findings of 07-09 say whether a paper's ordering of rows holds on our numbers; a gap inside
# the rows' fold spread is not an ordering.
HOLDS, WITHIN_STD, NOT_HOLD = "holds", "within one fold std", "does not hold"


def ordering(a: float, b: float, spread: float = 0.0) -> str:
    """Does "a > b" hold? :data:`HOLDS` when ``a`` exceeds ``b`` by more than ``spread`` (e.g.
    the larger fold std of the two rows), :data:`WITHIN_STD` when by less, else
    :data:`NOT_HOLD`."""
    return HOLDS if a - b > spread else (WITHIN_STD if a > b else NOT_HOLD)


def chain_ordering(means, stds) -> str:
    """Does "m[0] > m[1] > ..." hold? Each neighbouring pair by :func:`ordering` with the larger
    of their two fold stds as the spread; the weakest pair's verdict is the chain's."""
    if len(means) != len(stds) or len(means) < 2:
        raise ValueError(f"need two or more rows with a std each, got {len(means)} / {len(stds)}")
    verdicts = [
        ordering(a, b, max(sa, sb))
        for a, b, sa, sb in zip(means[:-1], means[1:], stds[:-1], stds[1:], strict=True)
    ]
    return next((v for v in (NOT_HOLD, WITHIN_STD) if v in verdicts), HOLDS)


def tie(means, stds, decimals: int = 1) -> str:
    """Does "all rows equal" hold? :data:`HOLDS` when the means agree to ``decimals`` places,
    :data:`WITHIN_STD` when their range is at most the largest fold std, else
    :data:`NOT_HOLD`."""
    if len(means) != len(stds) or not means:
        raise ValueError(f"need one std per mean, got {len(means)} / {len(stds)}")
    if len({round(m, decimals) for m in means}) == 1:
        return HOLDS
    return WITHIN_STD if max(means) - min(means) <= max(stds) else NOT_HOLD


#: The control row of the nuclei-graph Table II and issue 17's bound on its accuracy.
NUCLEI_CONTROL_ROW = "count/degree/edge-weight LR (control)"
NUCLEI_CONTROL_BOUND = 0.60


def _nuclei_tables() -> list[ResultTable]:
    # Sureka et al. (BIBE 2020), Table II: accuracy, printed as whole percents with no std.
    # The BACH column is in-situ vs invasive, Gleason is 3+3 vs 4+4/4+5 (Sec. III.A).
    printed = {"RSF Based": ("94%", "97%"), "RSF + Edge": ("92%", "97%"),
               "RSF + Attention": ("90%", "97%")}  # fmt: skip
    rows = tuple(
        _result_row(
            "nuclei_table2", "Nuclei-GCN", "II", name, {"bach": b, "gleason": g}
        )  # fmt: skip
        for name, (b, g) in printed.items()
    )
    # Our variant: RSF with the earlier pooling (softmax over the clusters, no batch norm after
    # pooling) instead of the RSF reference code's vertex-axis pooling; no published number.
    rows += (
        _result_row(
            "nuclei_table2", "Nuclei-GCN", "II", "RSF Based (cluster-axis pooling)",
            {"bach": None, "gleason": None}, group="Ablation",
        ),
        # Issue 17's control: logistic regression on three numbers per tile (nucleus count,
        # mean degree, mean Eq. 1 edge weight) under the GCN rows' folds; no published number.
        _result_row(
            "nuclei_table2", "Nuclei-GCN", "II", NUCLEI_CONTROL_ROW,
            {"bach": None, "gleason": None}, group="Control",
        ),
    )  # fmt: skip
    return [
        ResultTable(
            id="nuclei_table2",
            paper="Nuclei-GCN",
            number="II",
            title="Accuracy results for different techniques",
            caption="ACCURACY RESULTS FOR DIFFERENT TECHNIQUES",
            columns=(("bach", "BACH ACC"), ("gleason", "Gleason ACC")),
            rows=rows,
        )
    ]


def _abignet_tables() -> list[ResultTable]:
    # ABiG-Net (arXiv 2510, abstract): accuracy, mean ± std over its CV folds. The row
    # "ABiG-Net" is the official code's method (Paul1086/ABiG_Net). The other rows are ours and
    # the abstract prints no number for them: our earlier design (orientation features, top-k
    # learned graph), the same with a fixed k-NN graph, and two controls that ignore the graph
    # (issue 17): the official GCN without edges, and a logistic regression on the per-ROI mean
    # and std of the patch features (wsigraph.train.probe.mean_std_lr). One reference row, run on
    # synthetic ROIs only: the official GCN on the true look-alike graph (a ceiling: what the
    # learned graph would buy if the generator found the graph the demo hides).
    cols = ("crc3", "crc2", "melanoma")
    ours = (
        ("ABiG-Net (orientation variant)", "Variant"),
        ("ABiG-Net, fixed k-NN graph", "Ablation"),
        ("GCN on the true look-alike graph (oracle)", "Reference"),
        ("no-edge control (GCN on isolated patches)", "Control"),
        ("mean/std LR (control)", "Control"),
    )
    rows = (
        _result_row(
            "abignet_table",
            "ABiG-Net",
            "(abstract)",
            "ABiG-Net",
            dict(zip(cols, ("97.33 ± 1.15", "98.33 ± 0.58", "96.27 ± 0.74"), strict=True)),
        ),
        *(
            _result_row(
                "abignet_table", "ABiG-Net", "(abstract)", name, dict.fromkeys(cols), group=group
            )
            for name, group in ours
        ),  # fmt: skip
    )
    return [
        ResultTable(
            id="abignet_table",
            paper="ABiG-Net",
            number="(abstract)",
            title="Accuracy on Extended CRC (3-class grading, binary) and melanoma ROIs",
            caption="on the Extended CRC dataset, ABiG-Net achieves 97.33 ± 1.15 % accuracy for "
            "three-class colorectal cancer grading and 98.33 ± 0.58 % for binary "
            "classification; on the melanoma dataset, it attains 96.27 ± 0.74 % for "
            "tumor-lymphocyte ROI classification",
            columns=(
                ("crc3", "Ext. CRC 3-class ACC"),
                ("crc2", "Ext. CRC binary ACC"),
                ("melanoma", "Melanoma ACC"),
            ),
            rows=rows,
        )
    ]


def _mico_tables() -> list[ResultTable]:
    # MiCo (Li et al., MICCAI 2025, arXiv:2506.18028): subtyping on TCGA-BRCA and TCGA-NSCLC
    # (ACC, AUC; the official Cls/ configs) and survival c-index on seven TCGA cohorts (the
    # official Survival/ configs), nine datasets in all as the abstract says. The paper's
    # result tables could not be read from this environment (only its abstract and the
    # official README/code were reachable), so every published value is None ("–") until
    # someone copies them from the paper; the table numbers 1 and 2 are ours, not checked
    # against the paper. Rows are the methods we run beside MiCo; "MiCo" is the official model
    # (learned anchors, wsigraph.train.mico), "MiCo (per-slide anchors)" our variant.
    methods = ("ABMIL", "CLAM-SB", "DS-MIL", "MiCo", "MiCo (per-slide anchors)")
    cls_cols = (
        ("brca_acc", "BRCA ACC"), ("brca_auc", "BRCA AUC"),
        ("nsclc_acc", "NSCLC ACC"), ("nsclc_auc", "NSCLC AUC"),
    )  # fmt: skip
    surv_cols = tuple(
        (d.lower(), f"{d} C-index")
        for d in ("BLCA", "BRCA", "GBMLGG", "HNSC", "KIRC", "KIRP", "LUAD")
    )

    def rows(table_id: str, number: int, cols: tuple, control: str) -> tuple:
        # the control row (issue 17): a linear model on the slide-mean patch feature, which
        # ignores MiCo's mechanism (wsigraph.train.mico.run_mean_pool_control)
        keys = [k for k, _ in cols]
        return tuple(
            _result_row(table_id, "MiCo", number, m, dict.fromkeys(keys),
                        group="Ours" if m.startswith("MiCo") else "SOTA")
            for m in methods
        ) + (_result_row(table_id, "MiCo", number, control, dict.fromkeys(keys),
                         group="Control"),)  # fmt: skip

    return [
        ResultTable(
            id="mico_table1",
            paper="MiCo",
            number=1,
            title="Cancer subtyping: ACC and AUC on TCGA-BRCA and TCGA-NSCLC",
            caption="Subtyping (BRCA: IDC vs ILC; NSCLC: LUAD vs LUSC). Published values not "
            "transcribed yet. Demo: two synthetic cohorts whose label is which dispersed tissue "
            "types co-occur (wsigraph.data.synthetic_mico) fill the NSCLC and BRCA columns; "
            "tcga: our ESCA typing (adenocarcinoma vs squamous) stands in for NSCLC, our KICA "
            "typing (KIRP vs KICH) for BRCA.",
            columns=cls_cols,
            rows=rows("mico_table1", 1, cls_cols, "mean-pool + LR (control)"),
        ),
        ResultTable(
            id="mico_table2",
            paper="MiCo",
            number=2,
            title="Survival prediction: c-index on seven TCGA cohorts",
            caption="Overall survival, 4 discrete-time bins, NLL loss (PatchGCN protocol). "
            "Published values not transcribed yet. Demo: a synthetic cohort whose hazard "
            "follows which dispersed tissue types co-occur (wsigraph.data.synthetic_mico) fills "
            "the KIRP column; tcga: our KICA slides with TCGA-CDR overall survival stand in "
            "for KIRP.",
            columns=surv_cols,
            rows=rows("mico_table2", 2, surv_cols, "mean-pool + Cox (control)"),
        ),
    ]


RESULT_TABLES: dict[str, ResultTable] = {
    t.id: t for t in (*_nuclei_tables(), *_abignet_tables(), *_mico_tables())
}


def get_result_table(table_id: str) -> ResultTable:
    """The registered :class:`ResultTable` ``table_id`` (e.g. ``"nuclei_table2"``)."""
    try:
        return RESULT_TABLES[table_id]
    except KeyError:
        known = ", ".join(RESULT_TABLES)
        raise ValueError(f"unknown result table {table_id!r}; tables: {known}") from None


def render_results(
    table_id: str,
    ours: dict,
    label: str = "ours (demo)",
    skipped: Sequence[str] = (),
    ran: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Our numbers beside the paper's for a :class:`ResultTable`.

    Args:
        table_id: a key of :data:`RESULT_TABLES`.
        ours: ``row name -> column key -> (mean, std)`` or ``(mean, std, n)`` (``n`` test
            folds, for the CSV) as fractions in [0, 1] (``std`` may be ``None``); a missing row
            or column shows "not run yet". Unknown rows or columns
            raise ``ValueError``.
        label: the name of our column group.
        skipped: rows the profile leaves out: without numbers they read "not run on
            <profile>" rather than "not run yet".
        ran: ``column key -> what ours ran on`` where that is not the paper's cohort (a
            synthetic demo column, or our cohort standing in for one of the paper's); the
            compact Markdown header then names it (``"BRCA ACC: ours (demo) on synthetic brca
            / paper"``). Unknown keys raise ``ValueError``.

    Returns:
        A frame with ``group`` and the row header, then per column ``"<header> [<label>]"``,
        ``"<header> [paper]"`` ("–" where the paper reports nothing) and, unless ``label`` is
        a demo label, ``"<header> [<label> - paper]"``.
    """
    table = get_result_table(table_id)
    counts, values = {}, {}
    unknown = set(ours) - set(table.row_names)
    if unknown:
        raise ValueError(f"{table_id}: unknown rows {sorted(unknown)}; rows: {table.row_names}")
    ran = dict(ran or {})
    if set(ran) - set(table.column_keys):
        raise ValueError(
            f"{table_id}: 'ran' names unknown columns {sorted(set(ran) - set(table.column_keys))}"
        )
    lines = []
    for row in table.rows:
        cells = ours.get(row.name, {})
        bad = set(cells) - set(table.column_keys)
        if bad:
            raise ValueError(f"{table_id} row {row.name!r}: unknown columns {sorted(bad)}")
        line = {"group": row.group, table.row_header: row.name}
        for key, header in table.columns:
            value, paper = cells.get(key), row.paper.get(key)
            ours_text, diff = NOT_RUN, ""
            if value is None and row.name in skipped:
                ours_text = NOT_IN_RUN_SET.format(profile=label_profile(label))
            if value is not None:
                mean, std, *n = value
                if n and n[0] is not None:
                    counts[(row.name, f"{header} [{label}]")] = int(n[0])
                if not (math.isfinite(mean) and 0.0 <= mean <= 1.0):
                    raise ValueError(f"{table_id} {row.name!r} {key}: {mean} is not a fraction")
                mean, std = 100 * mean, None if std is None else 100 * std
                ours_text = _fmt(mean, std)
                values[(row.name, f"{header} [{label}]")] = (mean, std)
                diff = "" if paper is None else _diff(mean, paper.mean)
            line[f"{header} [{label}]"] = ours_text
            line[f"{header} [paper]"] = "–" if paper is None else str(paper)
            if paper is not None:
                values[(row.name, f"{header} [paper]")] = (paper.mean, paper.std)
            if compares(label):
                line[f"{header} [{label} - paper]"] = diff
        lines.append(line)
    df = pd.DataFrame(lines)
    df.attrs.update(table_id=table_id, label=label, row_header=table.row_header, counts=counts,
                    values=values, ran={header: ran[key] for key, header in table.columns if key in ran})  # fmt: skip
    return df


def write_results_table(
    table_id: str,
    ours: dict,
    out_dir: str | os.PathLike,
    label: str = "ours (demo)",
    demo_note: str | None = None,
    skipped: Sequence[str] = (),
    ran: dict[str, str] | None = None,
) -> tuple[Path, Path]:
    """Render a :class:`ResultTable` and write ``<out_dir>/<table_id>.md`` and ``.csv``;
    ``demo_note`` (demo labels only) ends the caption: what the demo task is and which
    controls fail, written from the numbers just measured; ``skipped`` rows the profile
    leaves out and ``ran`` what each column ran on (:func:`render_results`)."""
    df = render_results(table_id, ours, label, skipped, ran)
    return _write_rendered(df, get_result_table(table_id), out_dir, label, demo_note)


# ----------------------------------------------------------------------------------------
# Demo checks (issue 17): do the controls fail, are the headline rows precise, which of the
# paper's orderings hold?
# ----------------------------------------------------------------------------------------

#: Issue 17's bound for the slide-level controls on the demo cohort: a control AUC above it
#: means the demo task leaks its label to a model without the mechanism.
CONTROL_AUC_BOUND = 0.65
#: Issue 17's bound on the headline rows' fold std (points).
HEADLINE_STD_BOUND = 5.0
#: The row of each slide-level table that is the paper's own method.
HEADLINE = {
    "h2mil_table1": "H2-MIL",
    "h2mil_table2": "H2-MIL",
    "h2mil_table3": "Thu. + Mid. + Bot.",
    "h2mil_table4": "L = 2",
    "higt_table1": "HIGT (Ours)",
    "higt_table2": "HIGT (Ours)",
    "higt_table3": "HIGT (Ours)",
}
#: Cells where the paper's own method is another row than :data:`HEADLINE`'s: in Table 4 the
#: published H2-MIL is the L it uses in that cell (L = 1 for KICA staging, see the module
#: docstring), so that cell's headline is "L = 1".
HEADLINE_CELLS = {
    "h2mil_table4": {
        cell: f"L = {config['layers']}"
        for cell, config in _H2MIL_CELLS.items()
        if "layers" in config
    }
}


def headline_row(table_id: str, dataset: str, task: str) -> str:
    """The row of ``table_id`` that is the paper's own method in the cell ``(dataset, task)``."""
    return HEADLINE_CELLS.get(table_id, {}).get((dataset, task), HEADLINE[table_id])


def _cells(table: Table, metric: str = "auc") -> list[tuple[str, str]]:
    return [(d, t) for d, t, m in table.columns if m == metric]


def control_check(table_id: str, records: dict, bound: float = CONTROL_AUC_BOUND) -> pd.DataFrame:
    """Per cell of ``table_id``: each control row's AUC (percent) and whether the highest one
    stays at or below ``bound``; cells without a control record are left out."""
    table = get_table(table_id)
    by_key = _records_by_config_key(records)
    out = []
    for dataset, task in _cells(table):
        line = {"table": table_id, "dataset": dataset, "task": task}
        values = {}
        for row in table.rows:
            if row.group != "Control":
                continue
            rec = _find_record(records, by_key, table, row, dataset, task)
            ours = None if rec is None else _ours(rec, "auc")
            if ours is not None:
                values[row.name] = ours[0]
        if not values:
            continue
        line.update(values)
        line["highest control AUC"] = max(values.values())
        line["bound"] = 100 * bound
        line["control fails"] = max(values.values()) <= 100 * bound
        out.append(line)
    return pd.DataFrame(out)


def headline_check(
    table_id: str, records: dict, bound: float = HEADLINE_STD_BOUND, metric: str = "auc"
) -> pd.DataFrame:
    """Per cell: the headline row's (:func:`headline_row`) mean and fold std (percent) and whether
    the std is at most ``bound`` points; cells without its record are left out."""
    table = get_table(table_id)
    by_key = _records_by_config_key(records)
    out = []
    for dataset, task in _cells(table, metric):
        row = get_row(table_id, headline_row(table_id, dataset, task))
        rec = _find_record(records, by_key, table, row, dataset, task)
        ours = None if rec is None else _ours(rec, metric)
        if ours is None:
            continue
        mean, std = ours
        out.append(
            {
                "table": table_id,
                "row": row.name,
                "dataset": dataset,
                "task": task,
                f"{metric.upper()} mean": mean,
                "fold std": std,
                "std within bound": std is not None and std <= bound,
            }
        )
    return pd.DataFrame(out)


def ordering_check(table_id: str, records: dict, metric: str = "auc") -> pd.DataFrame:
    """Which of the paper's orderings hold in our numbers, per cell: over every pair of rows
    that both have a paper value and our value and differ in the paper, the share we order the
    same way; and whether the paper's best row is also our best among those rows.

    Only rows with a published value take part (controls and our variants have none). A pair
    whose paper values tie is skipped; our ties count as not holding.
    """
    table = get_table(table_id)
    by_key = _records_by_config_key(records)
    out = []
    for dataset, task in _cells(table, metric):
        both = []
        for row in table.rows:
            paper = row.paper[(dataset, task, metric)]
            rec = _find_record(records, by_key, table, row, dataset, task)
            ours = None if rec is None else _ours(rec, metric)
            if paper is not None and ours is not None:
                both.append((row.name, paper.mean, ours[0]))
        if len(both) < 2:
            continue
        pairs = [(a, b) for i, a in enumerate(both) for b in both[i + 1 :] if a[1] != b[1]]
        agree = sum((a[1] - b[1]) * (a[2] - b[2]) > 0 for a, b in pairs)
        paper_best = max(both, key=lambda r: r[1])[0]
        top = max(r[2] for r in both)
        ours_top = [r[0] for r in both if round(r[2], 2) == round(top, 2)]
        ours_best = "; ".join(ours_top)  # "; ": row names such as "L = 2" hold " = "
        out.append(
            {
                "table": table_id,
                "dataset": dataset,
                "task": task,
                "rows compared": len(both),
                "pairs ordered as in the paper": f"{agree}/{len(pairs)}",
                "share": agree / len(pairs) if pairs else float("nan"),
                "paper's best": paper_best,
                "our best": ours_best,
                # "tied": the paper's best shares our top value with another row
                "best holds": (
                    "tied"
                    if paper_best in ours_top and len(ours_top) > 1
                    else bool(paper_best == ours_best)
                ),
            }
        )
    return pd.DataFrame(out)


#: Rows above this fold std (points) are named in :func:`slide_findings` as unstable.
UNSTABLE_STD = 20.0


def slide_findings(records: dict, table_ids: Sequence[str] | None = None) -> str:
    """What the slide-level demo shows, as Markdown bullets written from ``records`` (the run
    records of ``table_ids``, default every slide-level table): whether the controls fail,
    how precise the papers' own methods are, which of the papers' orderings hold (the paper's
    best row and the rows that match or beat it) and which rows are unstable across folds.
    ``05_tables`` shows it and writes it for the README, so no sentence about the results is
    typed by hand."""
    table_ids = list(TABLES if table_ids is None else table_ids)
    lines = []
    controls = [control_check(t, records) for t in table_ids]
    controls = pd.concat(
        [c for c in controls if not c.empty] or [pd.DataFrame()], ignore_index=True
    )
    if not controls.empty:
        ok = controls["control fails"]
        worst = controls.loc[controls["highest control AUC"].idxmax()]
        lines.append(
            f"- **Controls** (logistic regression on slide means): at or below AUC "
            f"{100 * CONTROL_AUC_BOUND:.0f} in {int(ok.sum())} of {len(ok)} cells; highest "
            f"{worst['highest control AUC']:.1f} ({get_table(worst['table']).paper} Table "
            f"{get_table(worst['table']).number}, {DATASETS[worst['dataset']]} "
            f"{worst['task']})."
        )
    for t in table_ids:
        head = headline_check(t, records)
        order = ordering_check(t, records)
        if head.empty:
            continue
        rows = " / ".join(dict.fromkeys(head["row"]))
        table = get_table(t)
        text = (
            f"- **{table.paper} Table {table.number}**: {rows} AUC {head['AUC mean'].min():.1f}–{head['AUC mean'].max():.1f}, "
            f"fold std ≤ {head['fold std'].max():.1f} ({int(head['std within bound'].sum())} of "
            f"{len(head)} cells within {HEADLINE_STD_BOUND:.0f} points)"
        )
        if not order.empty:
            holds = order["best holds"].astype(str)
            text += (
                f"; the paper's best row is our best in {int((holds == 'True').sum())} of "
                f"{len(order)} cells, tied with another row in {int((holds == 'tied').sum())}"
            )
            rivals = sorted(
                {
                    name
                    for _, r in order.iterrows()
                    for name in str(r["our best"]).split("; ")
                    if name != r["paper's best"]
                }
            )
            if rivals:
                text += f" (matched or beaten by {', '.join(rivals)})"
            text += f"; pairs of rows ordered as in the paper: {order['share'].mean():.0%}"
        lines.append(text + ".")
    unstable = []
    for t in table_ids:
        table = get_table(t)
        by_key = _records_by_config_key(records)
        for row in table.rows:
            for dataset, task in _cells(table):
                rec = _find_record(records, by_key, table, row, dataset, task)
                ours = None if rec is None else _ours(rec, "auc")
                if ours and ours[1] is not None and ours[1] > UNSTABLE_STD:
                    unstable.append(
                        f"{row.name} ({table.paper} Table {table.number}, {DATASETS[dataset]} "
                        f"{task}: {ours[0]:.1f} ± {ours[1]:.1f})"
                    )
    if unstable:
        lines.append(
            f"- **Unstable across folds** (fold std above {UNSTABLE_STD:.0f} points): "
            + "; ".join(dict.fromkeys(unstable))
            + "."
        )
    return "\n".join(lines) + "\n" if lines else "*No run records yet.*\n"


def first_epoch_reaching(record: dict, level: float = 0.95) -> int | None:
    """The first epoch at which the mean over a run's folds of the validation AUC reaches
    ``level`` (``record["fold_details"][*]["history"]``), or ``None`` if it never does or the
    record holds no curves."""
    histories = [f.get("history") for f in record.get("fold_details", []) if f.get("history")]
    if not histories:
        return None
    mean = pd.concat([pd.DataFrame(h) for h in histories]).groupby("epoch")["val_auc"].mean()
    hit = mean[mean >= level]
    return int(hit.index[0]) if len(hit) else None


def figure_findings(
    fig3: pd.DataFrame | None = None,
    costs: pd.DataFrame | None = None,
    cost_auc: dict[str, float | None] | None = None,
    curves: Sequence[tuple[str, str, str, dict]] = (),
    ours: str = "HIGT (Ours)",
    cost_cell: str = "KICA typing",
) -> str:
    """What ``06_figures`` shows, as Markdown bullets written from the numbers it just computed,
    so no sentence about a figure is typed by hand.

    Args:
        fig3: one row per held-out slide of H2-MIL Fig. 3 with ``dataset``, ``task``, ``label``,
            ``prob`` (of class 1) and, on demo slides, :func:`~wsigraph.viz.interpret.
            heat_on_signal`'s ``patch_share``, ``heat_share`` and ``auc`` of the fitness heat
            against the patches that carry the label.
        costs: HIGT Fig. 2's cost per method (index) with ``peak_bytes`` and ``model_mb``.
        cost_auc: our AUC (percent) per method in the same cell, for the sentence on HIGT's
            claim ("maintain the promising prediction result while reducing the computational
            cost and model size").
        curves: ``(row, dataset, task, record)`` of the runs whose training curves are drawn.
        ours: the row of ``costs`` that is HIGT.
        cost_cell: the cell ``cost_auc`` comes from, for the sentence.
    """
    lines = []
    if fig3 is not None and len(fig3):
        d, t = fig3["dataset"].iloc[0], fig3["task"].iloc[0]
        correct = ((fig3["prob"] >= 0.5).astype(int) == fig3["label"]).mean()
        text = (
            f"- **H2-MIL Fig. 3** ({DATASETS[d]} {t}, {len(fig3)} held-out slides of one fold): "
            f"the saved model classifies {correct:.0%} of them correctly."
        )
        if "heat_share" in fig3 and fig3["heat_share"].notna().any():
            patch, heat = fig3["patch_share"].mean(), fig3["heat_share"].mean()
            auc = fig3["auc"].dropna()
            verdict = (
                "points at them"
                if heat > 1.5 * patch and auc.mean() > 0.6
                else "leans slightly towards them"
                if heat > patch and auc.mean() > 0.5
                else "does not point at them"
            )
            text += (
                f" The generator knows which 10x patches carry the label ({patch:.0%} of them): "
                f"they hold {heat:.0%} of the fitness heat, and the heat tells them from the rest "
                f"with a within-slide AUC of {auc.mean():.2f} ± {auc.std():.2f}. So the fitness "
                f"map {verdict}: IHPool's fitness ranks nodes for pooling, and a model can be "
                "right without it being a map of the evidence."
            )
        lines.append(text)
    if costs is not None and ours in costs.index:
        others = costs.drop(index=[m for m in costs.index if m == ours or m in CONTROL_ROWS])
        mine = costs.loc[ours]
        parts = []
        for column, what, unit in (
            ("peak_bytes", "peak memory", 2**20),
            ("model_mb", "model size", 1),
        ):
            larger = sorted(others.index[others[column] > mine[column]])
            smaller = sorted(others.index[others[column] <= mine[column]])
            parts.append(
                f"{what} {mine[column] / unit:.1f} MB, below {len(larger)} of {len(others)} "
                f"published methods" + (f" (not below {', '.join(smaller)})" if smaller else "")
            )
        text = f"- **HIGT Fig. 2** (KICA, one training step): {ours} needs " + "; ".join(parts)
        both = sorted(
            m for m in others.index
            if others.loc[m, "peak_bytes"] > mine["peak_bytes"]
            and others.loc[m, "model_mb"] > mine["model_mb"]
        )  # fmt: skip
        if not both:
            text += (
                f". No published method costs more than {ours} on both counts, so the paper's "
                "claim of a lower memory and model size does not show at this scale (the paper "
                "measures TCGA slides of thousands of patches)"
            )
        else:
            text += f". It is cheaper on both counts than {', '.join(both)}"
        auc = {k: v for k, v in (cost_auc or {}).items() if v is not None}
        if ours in auc and both:
            scored = [m for m in both if m in auc]
            kept = [m for m in scored if auc[ours] >= auc[m] - 1.0]
            text += f"; its {cost_cell} AUC is {auc[ours]:.1f}"
            if scored:
                text += (
                    ", so the paper's claim (the AUC kept at a lower memory and model size) "
                    "holds here against "
                    + (", ".join(f"{m} ({auc[m]:.1f})" for m in kept) if kept else "none of them")
                )
            unscored = [m for m in both if m not in auc]
            if unscored:
                text += (
                    f"; {', '.join(unscored)} did not run on this profile, so the AUC side of "
                    "the claim is not measured against it"
                )
        lines.append(text + ".")
    by_row: dict[str, list] = {}
    for name, dataset, task, rec in curves:
        by_row.setdefault(name, []).append((f"{DATASETS[dataset]} {task}", rec))
    for name, runs in by_row.items():
        reached = {cell: first_epoch_reaching(rec) for cell, rec in runs}
        hit = [e for e in reached.values() if e is not None]
        never = [cell for cell, e in reached.items() if e is None]
        folds = [
            f
            for _, rec in runs
            for f in rec.get("fold_details", [])
            if f.get("history") and "best_epoch" in f
        ]
        last = [f for f in folds if f["best_epoch"] == max(h["epoch"] for h in f["history"])]
        text = f"- **Training curves, {name}** ({len(runs)} cells): "
        text += (
            f"the mean validation AUC reaches 0.95 at epoch {min(hit)}–{max(hit)}"
            if hit
            else "the mean validation AUC never reaches 0.95"
        )
        if hit and never:
            text += f" (never in {', '.join(never)})"
        if folds:
            text += (
                f"; {len(last)} of {len(folds)} folds keep the model of their last epoch (one "
                "that was still improving when training stopped)"
            )
        lines.append(text + ".")
    return "\n".join(lines) + "\n" if lines else "*No figure numbers yet.*\n"


def demo_note(table_id: str, records: dict, task_text: str) -> str:
    """The demo caption's last sentences for ``table_id``, from the numbers just measured:
    ``task_text`` (what the demo task is), then how high the controls reached against the bound
    and how the headline row's fold std compares with its bound."""
    parts = [task_text.strip().rstrip(".") + "."]
    controls = control_check(table_id, records)
    if not controls.empty:
        worst = controls.loc[controls["highest control AUC"].idxmax()]
        verdict = "all stay" if controls["control fails"].all() else "NOT all stay"
        parts.append(
            f"Controls (logistic regression on slide means, no graph): highest AUC "
            f"{worst['highest control AUC']:.1f} ({DATASETS[worst['dataset']]} "
            f"{TASKS[worst['task']].lower()}); {verdict} at or below the bound "
            f"{100 * CONTROL_AUC_BOUND:.0f}."
        )
    head = headline_check(table_id, records)
    if not head.empty:
        verdict = "within" if head["std within bound"].all() else "NOT all within"
        parts.append(
            f"{' / '.join(dict.fromkeys(head['row']))}: fold std of AUC {head['fold std'].min():.1f}–"
            f"{head['fold std'].max():.1f} points, {verdict} the bound of "
            f"{HEADLINE_STD_BOUND:.0f}."
        )
    return " ".join(parts)
