"""MUSK1 ("Clean1", UCI), the classic multiple-instance benchmark: molecules are bags, their
low-energy conformations instances, 166 shape features each (Dietterich et al., AIJ 1997).

The file is a headerless CSV whose first line is blank; each row is ``molecule name,
conformation name, f1, ..., f166, class`` with class ``1.`` (musk) or ``0.``. A bag is positive
when any of its instances is, i.e. the bag label is the maximum of its instance labels (in this
file every instance carries its molecule's label). 476 instances in 92 bags, 47 positive.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

import numpy as np

from wsigraph.profiles import data_file

N_FEATURES = 166
N_INSTANCES, N_BAGS, N_POSITIVE = 476, 92, 47


class MuskBags(NamedTuple):
    instances: np.ndarray  # [476, 166] float32, raw (unstandardised) features
    bag_index: np.ndarray  # [476] int64, bag of each instance, 0..91 in order of appearance
    bag_labels: np.ndarray  # [92] int64, 1 = musk
    bag_names: list[str]  # [92] molecule names


def default_musk1_path() -> Path:
    """``data/mil/musk1_clean1.data`` (see :func:`wsigraph.profiles.data_file`)."""
    return data_file("mil/musk1_clean1.data")


def load_musk1(path: str | Path | None = None) -> MuskBags:
    """Reads MUSK1 ``clean1.data`` into instance features, bag indices, bag labels and names.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: on a malformed row (wrong field count, a non-numeric feature, a class not
            0/1) or when the counts differ from MUSK1's 476 instances, 92 bags, 47 positive.
    """
    path = Path(path) if path is not None else default_musk1_path()
    if not path.is_file():
        raise FileNotFoundError(f"MUSK1 file not found: {path}")
    features, labels, bag_of, bag_names, bag_ids = [], [], [], [], {}
    with open(path, newline="") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if not row or all(not field.strip() for field in row):
                continue
            where = f"{path}, line {line_no}"
            if len(row) != N_FEATURES + 3:
                raise ValueError(
                    f"{where}: expected {N_FEATURES + 3} comma-separated fields "
                    f"(bag, instance, {N_FEATURES} features, class), found {len(row)}"
                )
            try:
                features.append([float(v) for v in row[2:-1]])
                label = float(row[-1])
            except ValueError as err:
                raise ValueError(f"{where}: non-numeric feature or class ({err})") from None
            if label not in (0.0, 1.0):
                raise ValueError(f"{where}: class must be 0 or 1, found {row[-1]!r}")
            name = row[0].strip()
            if name not in bag_ids:
                bag_ids[name] = len(bag_names)
                bag_names.append(name)
            bag_of.append(bag_ids[name])
            labels.append(int(label))

    instances = np.asarray(features, dtype=np.float32).reshape(-1, N_FEATURES)
    bag_index = np.asarray(bag_of, dtype=np.int64)
    bag_labels = np.zeros(len(bag_names), dtype=np.int64)
    np.maximum.at(bag_labels, bag_index, np.asarray(labels, dtype=np.int64))
    found = (len(instances), len(bag_names), int(bag_labels.sum()))
    if found != (N_INSTANCES, N_BAGS, N_POSITIVE):
        raise ValueError(
            f"{path} is not the complete MUSK1 file: found {found[0]} instances, {found[1]} bags, "
            f"{found[2]} positive bags; expected {N_INSTANCES}, {N_BAGS}, {N_POSITIVE} "
            "(truncated or a different file?)"
        )
    return MuskBags(instances, bag_index, bag_labels, bag_names)
