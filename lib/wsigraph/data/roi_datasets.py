"""Readers for the real image-level datasets of the nuclei-graph and ABiG-Net papers, as they ship.

Each reader walks the dataset's own folder layout and returns a :class:`pandas.DataFrame` with
one row per image: ``path`` (str), ``image_id``, ``label`` (int, the task's class index),
``class_name``, plus ``split`` / ``fold`` and case columns where the dataset has them. A wrong
layout raises :class:`FileNotFoundError` (or :class:`ValueError` for inconsistent labels) that
names what is missing and where it was expected. Nothing is downloaded.

Layouts (where they come from)
------------------------------
``read_bach`` -- ICIAR 2018 BACH, part A (microscopy), ``ICIAR2018_BACH_Challenge.zip``
    (zenodo 3632035)::

        ICIAR2018_BACH_Challenge/Photos/{Normal,Benign,InSitu,Invasive}/*.tif   (2048 x 1536)
        ICIAR2018_BACH_Challenge/Photos/microscopy_ground_truth.csv            (no header:
                                                                                 file,class)

    As documented by kaiko-ai/eva ``docs/datasets/bach.md`` and read (``header=None``, columns
    file and class) by several public BACH loaders. 400 labelled images, 100 per class; the
    patient of each image is not in the archive (a separate file on the challenge site), so
    there is no case column. The nuclei-graph paper uses InSitu vs Invasive.

``read_gleason2019`` -- MICCAI 2019 Gleason challenge (gleason2019.grand-challenge.org)::

        Train Imgs/slide001_core003.jpg ...                  (TMA cores, ~5000 x 5000)
        Maps1_T/slide001_core003_classimg_nonconvex.png ... Maps6_T/...   (one per pathologist,
                                                                          not every core in each)

    Map values: 0 background (not annotated), 1 benign, 3 / 4 / 5 Gleason pattern; a few maps
    hold 6, which the published correction script of the challenge data (``dataset.py``:
    "grade > 5 are mistakes and should be = 1") and the STAPLE scripts of participants
    ("original label 0, 1, 3, 4, 5, 6") treat as benign -- so do we. The core's label: a
    pixel-wise majority vote over the maps present (ties to the lower value), then primary =
    the most frequent pattern among 3/4/5 in the consensus and secondary = the second most
    frequent if present, else the primary (simple pixel count). Binary task of the paper:
    3+3 -> 0 vs 4+4 / 4+5 -> 1; other scores are dropped. The ``slide`` column is the TMA
    slide, which holds cores of many patients -- not a patient id.

    Note: the paper cites its prostate set ([22]) as "1506 images"; the Gleason 2019 training
    set has 244 cores (331 with the test set), so the paper's set may be another one; this
    reader follows the layout the brief names.

``read_extended_crc`` -- Extended CRC grading dataset (Shaban et al., IEEE TMI 2020,
    warwick.ac.uk/fac/cross_fac/tia/data/extended_crc_grading): 300 images (>= 4548 x 7548 px,
    20x), three-fold cross-validation folders::

        fold_1/{1_normal,2_low_grade,3_high_grade}/Grade1_Patient_157_5.png ...  fold_2/ fold_3/

    Layout as read by CGC-Net-derived code (``fold_k/1_normal`` ..., file names
    ``GradeN_Patient_NNN_...``) and by zhoupanyun/Colorectal-Cancer-Grading (label = digit of
    the ``GradeN`` file prefix). The class comes from the class folder, or from the ``GradeN``
    prefix when there is no class folder; if both exist and disagree the reader raises. The
    ``case_id`` is ``Patient_NNN`` (without the grade, so that a patient's images of different
    grades share one case: over-grouping is safe for splitting, under-grouping would leak).

``read_melanoma`` -- the ABiG-Net melanoma tumour / lymphocyte ROI set. Its layout is not
    public (not found in any public source searched), so it is read with the generic
    :func:`read_class_folders`: ``root/<class>/*.{png,jpg,tif}``, optionally under split
    folders ``root/<split>/<class>/``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

BACH_CLASSES = ("Normal", "Benign", "InSitu", "Invasive")
GLEASON_MAP_DIRS = tuple(f"Maps{i}_T" for i in range(1, 7))
GLEASON_BINARY = {"3+3": 0, "4+4": 1, "4+5": 1}
GLEASON_BINARY_NAMES = ("Gleason 3+3", "Gleason 4+4/4+5")
CRC_CLASSES = ("normal", "low grade", "high grade")
CRC_FOLDERS = {"1_normal": 0, "2_low_grade": 1, "3_high_grade": 2}
CRC_BINARY_NAMES = ("normal", "cancer")


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``[H, W, 3]`` uint8 RGB (alpha / palette / grey converted)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# BACH


def read_bach(root: str | Path, classes: Sequence[str] = ("InSitu", "Invasive")) -> pd.DataFrame:
    """ICIAR 2018 BACH microscopy images with their labels.

    Args:
        root: the folder holding ``ICIAR2018_BACH_Challenge/``, that folder itself, or its
            ``Photos/`` folder.
        classes: the BACH classes to keep, in label order (default the paper's
            ``("InSitu", "Invasive")``; all four: :data:`BACH_CLASSES`).

    Returns:
        Columns ``path, image_id, label, class_name`` (``label`` indexes ``classes``), in the
        order of ``microscopy_ground_truth.csv``.
    """
    unknown = set(classes) - set(BACH_CLASSES)
    if unknown:
        raise ValueError(f"unknown BACH classes {sorted(unknown)}; known: {BACH_CLASSES}")
    root = Path(root)
    candidates = [root / "ICIAR2018_BACH_Challenge" / "Photos", root / "Photos", root]
    photos = next((p for p in candidates if (p / "microscopy_ground_truth.csv").is_file()), None)
    if photos is None:
        raise FileNotFoundError(
            "BACH layout not found: expected microscopy_ground_truth.csv in one of "
            + ", ".join(str(p) for p in candidates)
        )
    truth = pd.read_csv(photos / "microscopy_ground_truth.csv", header=None, names=["file", "cls"])
    bad = sorted(set(truth["cls"]) - set(BACH_CLASSES))
    if bad:
        raise ValueError(f"{photos / 'microscopy_ground_truth.csv'}: unknown classes {bad}")
    truth = truth[truth["cls"].isin(classes)]
    paths = [photos / c / f for f, c in zip(truth["file"], truth["cls"], strict=True)]
    _require_files(paths, "BACH images listed in microscopy_ground_truth.csv")
    return pd.DataFrame(
        {
            "path": [str(p) for p in paths],
            "image_id": [Path(f).stem for f in truth["file"]],
            "label": [list(classes).index(c) for c in truth["cls"]],
            "class_name": list(truth["cls"]),
        }
    )


# --------------------------------------------------------------------------------------------
# Gleason 2019


def gleason_consensus(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Pixel-wise majority vote of Gleason 2019 annotation maps (values > 5 count as 1).

    Ties go to the lower value. Returns an array of the maps' (common) shape, values in 0..5.
    """
    if not maps:
        raise ValueError("no annotation maps to vote over")
    shapes = {m.shape for m in maps}
    if len(shapes) != 1:
        raise ValueError(f"annotation maps differ in shape: {sorted(shapes)}")
    votes = np.zeros((6, *maps[0].shape), np.int16)  # [6, H, W]
    for m in maps:
        m = np.where(m > 5, 1, m)
        for v in range(6):
            votes[v] += m == v
    return votes.argmax(0).astype(np.uint8)


def gleason_score(consensus: np.ndarray) -> tuple[int, int]:
    """``(primary, secondary)`` Gleason pattern of a core by pixel count of 3/4/5; ``(0, 0)``
    when the core has no cancer pixels (benign). A single pattern gives ``(p, p)``."""
    counts = np.array([(consensus == g).sum() for g in (3, 4, 5)])
    if counts.sum() == 0:
        return 0, 0
    order = np.argsort(-counts, kind="stable")  # ties: the lower pattern first
    primary = 3 + int(order[0])
    secondary = 3 + int(order[1]) if counts[order[1]] > 0 else primary
    return primary, secondary


def read_gleason2019(
    root: str | Path,
    binary: bool = True,
    images_dir: str = "Train Imgs",
    stride: int = 4,
) -> pd.DataFrame:
    """Gleason 2019 training cores with image-level grades from the pathologists' maps.

    Args:
        root: the folder holding ``Train Imgs/`` and ``Maps1_T/`` ... ``Maps6_T/``.
        binary: keep only the paper's binary task, 3+3 (label 0) vs 4+4 / 4+5 (label 1)
            (default ``True``); with ``False`` every annotated core is kept and ``label`` is
            the Gleason sum (0 for benign).
        images_dir: name of the images folder (default ``"Train Imgs"``).
        stride: the vote runs on every ``stride``-th pixel of each map (nearest subsampling,
            default ``4``; ``1`` = every pixel). Area ranks of patterns are what matter.

    Returns:
        Columns ``path, image_id, slide, core, n_maps, primary, secondary, score, label,
        class_name``. Cores with no map at all are skipped with a warning.
    """
    root = Path(root)
    img_dir = root / images_dir
    if not img_dir.is_dir():
        raise FileNotFoundError(
            f"Gleason 2019 layout not found: no folder {img_dir} "
            f"(found: {sorted(p.name for p in root.iterdir()) if root.is_dir() else 'nothing'})"
        )
    map_dirs = [root / d for d in GLEASON_MAP_DIRS if (root / d).is_dir()]
    if not map_dirs:
        raise FileNotFoundError(
            f"Gleason 2019 layout not found: none of the annotation folders "
            f"{', '.join(GLEASON_MAP_DIRS)} under {root}"
        )
    images = sorted(img_dir.glob("*.jpg"))
    if not images:
        raise FileNotFoundError(f"no .jpg images in {img_dir}")
    rows, unannotated = [], []
    for img in images:
        maps = []
        for d in map_dirs:
            f = d / f"{img.stem}_classimg_nonconvex.png"
            if f.is_file():
                with Image.open(f) as im:
                    maps.append(np.asarray(im)[::stride, ::stride])
        if not maps:
            unannotated.append(img.name)
            continue
        primary, secondary = gleason_score(gleason_consensus(maps))
        score = f"{primary}+{secondary}" if primary else "benign"
        match = re.match(r"(slide\d+)_(core\d+)", img.stem)
        rows.append(
            {
                "path": str(img),
                "image_id": img.stem,
                "slide": match.group(1) if match else "",
                "core": match.group(2) if match else "",
                "n_maps": len(maps),
                "primary": primary,
                "secondary": secondary,
                "score": score,
            }
        )
    if unannotated:
        warnings.warn(
            f"{len(unannotated)} Gleason 2019 images have no annotation map and are skipped: "
            f"{unannotated[:5]}",
            stacklevel=2,
        )
    df = pd.DataFrame(rows)
    if df.empty:
        return df.assign(label=pd.Series(dtype=int), class_name=pd.Series(dtype=str))
    if binary:
        df = df[df["score"].isin(GLEASON_BINARY)].reset_index(drop=True)
        df["label"] = df["score"].map(GLEASON_BINARY).astype(int)
        df["class_name"] = [GLEASON_BINARY_NAMES[k] for k in df["label"]]
    else:
        df["label"] = (df["primary"] + df["secondary"]).astype(int)
        df["class_name"] = df["score"]
    return df


# --------------------------------------------------------------------------------------------
# Extended CRC


def read_extended_crc(root: str | Path, task: str = "crc3") -> pd.DataFrame:
    """Extended CRC grading images (normal / low grade / high grade) with folds and patients.

    Args:
        root: the dataset folder (searched recursively for images).
        task: ``"crc3"`` (labels 0 normal, 1 low grade, 2 high grade; default) or ``"crc2"``
            (0 normal, 1 cancer = low or high grade).

    Returns:
        Columns ``path, image_id, grade, label, class_name, fold, case_id``; ``grade`` is the
        3-class label whatever the task, ``fold`` the ``fold_k`` number (0 when there is none).
    """
    if task not in ("crc3", "crc2"):
        raise ValueError(f"unknown task {task!r}; known: crc3, crc2")
    root = Path(root)
    files = _images_under(root)
    rows = []
    for f in files:
        rel = f.relative_to(root).parts[:-1]
        from_folder = {CRC_FOLDERS[p.lower()] for p in rel if p.lower() in CRC_FOLDERS}
        prefix = re.match(r"grade([123])_", f.name, flags=re.IGNORECASE)
        from_name = int(prefix.group(1)) - 1 if prefix else None
        if len(from_folder) > 1:
            raise ValueError(f"{f}: more than one class folder in its path")
        grade = next(iter(from_folder)) if from_folder else from_name
        if grade is None:
            continue  # not an image of a class (e.g. a readme figure)
        if from_name is not None and from_name != grade:
            raise ValueError(
                f"{f}: class folder says {CRC_CLASSES[grade]!r} but the file name says "
                f"{CRC_CLASSES[from_name]!r}"
            )
        fold = next((int(m.group(1)) for p in rel if (m := re.fullmatch(r"fold_?(\d+)", p))), 0)
        patient = re.search(r"patient_?(\d+)", f.stem, flags=re.IGNORECASE)
        rows.append(
            {
                "path": str(f),
                "image_id": f.stem,
                "grade": grade,
                "fold": fold,
                "case_id": f"Patient_{patient.group(1)}" if patient else f.stem,
            }
        )
    if not rows:
        raise FileNotFoundError(
            f"Extended CRC layout not found under {root}: expected images in class folders "
            f"{', '.join(CRC_FOLDERS)} (e.g. fold_1/1_normal/Grade1_Patient_001.png) or files "
            f"named Grade1_/Grade2_/Grade3_..."
        )
    df = pd.DataFrame(rows)
    if task == "crc3":
        df["label"] = df["grade"]
        df["class_name"] = [CRC_CLASSES[g] for g in df["grade"]]
    else:
        df["label"] = (df["grade"] > 0).astype(int)
        df["class_name"] = [CRC_BINARY_NAMES[k] for k in df["label"]]
    cols = ["path", "image_id", "grade", "label", "class_name", "fold", "case_id"]
    return df[cols].sort_values(["fold", "grade", "image_id"]).reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Class folders (melanoma)


def read_class_folders(root: str | Path, classes: Sequence[str]) -> pd.DataFrame:
    """Images in one folder per class: ``root/<class>/*`` or ``root/<split>/<class>/*``.

    Class folders are matched case-insensitively; ``label`` is the index in ``classes``.

    Returns:
        Columns ``path, image_id, label, class_name`` and, with split folders, ``split``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no folder {root}")
    wanted = {c.lower(): i for i, c in enumerate(classes)}

    def class_dirs(folder: Path) -> dict[int, Path]:
        return {wanted[d.name.lower()]: d for d in folder.iterdir() if d.name.lower() in wanted}

    found = class_dirs(root)
    if found:
        groups = [("", found)]
    else:
        groups = [(d.name, class_dirs(d)) for d in sorted(root.iterdir()) if d.is_dir()]
        groups = [(s, g) for s, g in groups if g]
    if not groups:
        raise FileNotFoundError(
            f"no class folders {list(classes)} under {root} (nor under a split folder of it)"
        )
    rows = []
    for split, dirs in groups:
        missing = [classes[i] for i in range(len(classes)) if i not in dirs]
        if missing:
            where = root / split if split else root
            raise FileNotFoundError(f"class folders {missing} missing under {where}")
        for label, d in sorted(dirs.items()):
            for f in _images_under(d):
                rows.append(
                    {
                        "path": str(f),
                        "image_id": f.stem,
                        "label": label,
                        "class_name": classes[label],
                    }
                    | ({"split": split} if split else {})
                )
    return pd.DataFrame(rows)


def read_melanoma(
    root: str | Path, classes: Sequence[str] = ("tumour", "lymphocyte")
) -> pd.DataFrame:
    """The ABiG-Net melanoma tumour / lymphocyte-rich ROI set, read as class folders.

    Its public layout could not be found, so this is :func:`read_class_folders` with the
    folder names as ``classes`` (default ``("tumour", "lymphocyte")``; pass the names your
    copy uses, in label order).
    """
    return read_class_folders(root, classes)


# --------------------------------------------------------------------------------------------


def _images_under(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def _require_files(paths: Sequence[Path], what: str) -> None:
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} {what} are missing, e.g. {missing[:3]}")
