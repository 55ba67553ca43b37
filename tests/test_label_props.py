"""Vectorised region properties (graphs/label_props.py) against scikit-image, on synthetic ROIs
(no touching nuclei), the classical segmenter's masks (some touch) and hand-made label maps."""

import numpy as np
import pytest
from skimage.measure import regionprops_table

from wsigraph.data.nuclei_seg import classical_nuclei
from wsigraph.data.synthetic_rois import relation_rois
from wsigraph.graphs.abignet_features import _REGIONPROPS, _glcm_values, _grey
from wsigraph.graphs.label_props import glcm_table, region_table, touching_labels

PROPS = _REGIONPROPS + ("bbox", "orientation")


def _maps():
    s = relation_rois("crc2", 1, grid=4, patch_size=64, seed=3)
    img, lab = s.images[0], s.instances[0]
    hand = np.zeros((9, 12), np.int32)
    hand[1:4, 1:5] = 3  # a rectangle
    hand[4, 4] = 3  # a pixel touching diagonally, same label
    hand[5:8, 5:7] = 7  # touches label 3 diagonally (at (4, 4))
    hand[1:3, 5:7] = 9  # touches label 3
    hand[8, 0] = 2  # one pixel on the border
    hand_img = np.random.default_rng(0).integers(0, 256, (9, 12, 3), dtype=np.uint8)
    return [(lab, img), (classical_nuclei(img), img), (hand, hand_img)]


@pytest.mark.parametrize("case", range(3))
def test_region_table_equals_regionprops(case):
    lab, img = _maps()[case]
    ref = regionprops_table(lab, properties=PROPS)
    fast = region_table(lab)
    assert set(ref) <= set(fast)
    for key in ref:
        if key == "orientation":  # axial: +-pi/2 are one angle
            d = np.abs(np.mod(ref[key] - fast[key] + np.pi / 2, np.pi) - np.pi / 2)
            assert d.max() < 1e-9, key
        else:
            np.testing.assert_allclose(fast[key], ref[key], atol=1e-9, err_msg=key)
    grey = _grey(img, lab.shape)
    boxes = list(zip(*(ref[f"bbox-{j}"] for j in range(4)), strict=True))
    np.testing.assert_allclose(
        glcm_table(grey, lab, fast), _glcm_values(grey, lab, ref["label"], boxes), atol=1e-12
    )


def test_touching_labels():
    lab = _maps()[2][0]
    assert touching_labels(lab).tolist() == [3, 7, 9]
    assert touching_labels(np.zeros((3, 3), np.int32)).size == 0
    assert region_table(np.zeros((4, 4), np.int32))["label"].size == 0
