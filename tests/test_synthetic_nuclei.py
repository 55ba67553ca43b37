"""Synthetic nuclei image sets: determinism, shapes, balance, equal nuclei, real class signal."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from wsigraph.data.nuclei_seg import classical_nuclei, dice
from wsigraph.data.synthetic_nuclei import (
    arrangement_tiles,
    kind_homophily,
    nucleus_properties,
)

N = 12  # images per class


@pytest.fixture(scope="module")
def sets():
    return {
        "bach": arrangement_tiles("bach", N),
        "gleason": arrangement_tiles("gleason", N),
    }


def _measured(instances: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = nucleus_properties(instances)
    return np.column_stack([p["y"], p["x"]]), p["theta"], p["area"]


@pytest.mark.parametrize(
    ("task", "size", "n_classes"),
    [
        ("bach", 256, 2),
        ("gleason", 256, 2),
    ],
)
def test_shapes_balance_and_ground_truth(sets, task, size, n_classes):
    d = sets[task]
    n = N * n_classes
    assert d.images.shape == (n, size, size, 3) and d.images.dtype == np.uint8
    assert d.instances.shape == (n, size, size) and d.instances.dtype == np.int32
    assert len(d.class_names) == n_classes
    np.testing.assert_array_equal(np.bincount(d.labels), [N] * n_classes)
    for img, inst, ell in zip(d.images[::7], d.instances[::7], d.nuclei[::7], strict=True):
        # one instance per drawn ellipse, labels 1..m, each where its ellipse says
        assert inst.max() == len(ell) and len(np.unique(inst)) == len(ell) + 1
        yx, _, _ = _measured(inst)
        err = np.abs(yx - ell[:, :2]).max(1)
        assert np.mean(err < 0.75) > 0.95 and err.max() < 4.0  # edge nuclei are cut by the border
        # nuclei are dark (haematoxylin), the background is light pink
        assert img[inst > 0].mean() < img[inst == 0].mean() - 40
        assert img[inst == 0][:, 1].mean() < img[inst == 0][:, 0].mean()  # eosin: less green


def test_deterministic_and_seeded():
    a = arrangement_tiles("gleason", 2, seed=3)
    b = arrangement_tiles("gleason", 2, seed=3)
    c = arrangement_tiles("gleason", 2, seed=4)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.instances, b.instances)
    assert not np.array_equal(a.images, c.images)


def test_unknown_task_and_bad_count():
    with pytest.raises(ValueError, match="unknown task"):
        arrangement_tiles("crc3", 1)
    with pytest.raises(ValueError, match="n_per_class"):
        arrangement_tiles("bach", 0)


@pytest.mark.parametrize("task", ["bach", "gleason"])
def test_classes_hold_nuclei_count_and_size_equal(sets, task):
    """The classes differ in arrangement, not in how many or how big the nuclei
    are: per-class mean count and mean area (measured on the instance maps) within 3 %."""
    d = sets[task]
    counts = np.array([inst.max() for inst in d.instances])
    areas = np.array([_measured(inst)[2].mean() for inst in d.instances])
    per_class_count = [counts[d.labels == c].mean() for c in range(len(d.class_names))]
    per_class_area = [areas[d.labels == c].mean() for c in range(len(d.class_names))]
    assert max(per_class_count) / min(per_class_count) < 1.03, per_class_count
    assert max(per_class_area) / min(per_class_area) < 1.03, per_class_area
    assert 55 <= counts.min() and counts.max() <= 85


@pytest.mark.parametrize(("task", "high_class"), [("bach", 0), ("gleason", 1)])
def test_arrangement_signal_separates_classes(sets, task, high_class):
    """Kind homophily of the drawn nuclei: tumour nuclei in in situ ducts and cribriform nests
    neighbour tumour nuclei; in invasive cords and on small gland rims they neighbour stromal
    ones."""
    d = sets[task]
    score = np.array([kind_homophily(e[:, :2], k) for e, k in zip(d.nuclei, d.kinds, strict=True)])
    y = (d.labels == high_class).astype(int)
    assert roc_auc_score(y, score) > 0.95


@pytest.mark.parametrize("task", ["bach", "gleason"])
def test_classical_segmentation_finds_the_nuclei(sets, task):
    d = sets[task]
    for i in (0, len(d.labels) - 1):
        pred = classical_nuclei(d.images[i])
        assert dice(pred, d.instances[i]) > 0.7
        assert 0.8 < pred.max() / d.instances[i].max() < 1.2


@pytest.mark.parametrize(("task", "high_class"), [("bach", 0), ("gleason", 1)])
def test_class_signal_on_small_sets(task, high_class):
    """A fast check of each set's class signal on 4 images per class, from the drawn nuclei:
    kind homophily puts every image of ``high_class`` above every image of the other class."""
    d = arrangement_tiles(task, 4, seed=1)
    score = np.array([kind_homophily(e[:, :2], k) for e, k in zip(d.nuclei, d.kinds, strict=True)])
    high = d.labels == high_class
    assert score[high].min() > score[~high].max(), (score[high], score[~high])
