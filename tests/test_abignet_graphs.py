"""The official ABiG-Net's node sets from instance masks (lib/wsigraph/graphs/abignet_graphs.py):
the user's label maps, the skip report for images with too few qualifying patches, the cache."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from wsigraph.graphs import abignet_graphs as ag
from wsigraph.graphs.abignet_features import image_patch_features

PATCH = 45


def lattice(rows: int, cols: int, per_side: int = 9, step: int = 5) -> np.ndarray:
    """A label map of ``rows x cols`` patches of ``PATCH`` px, each with ``per_side^2`` nuclei
    (2 x 2 px squares on a ``step`` px lattice, slightly jittered so the graph is not regular)."""
    rng = np.random.default_rng(0)
    labels = np.zeros((rows * PATCH, cols * PATCH), np.int32)
    n = 0
    for pr in range(rows):
        for pc in range(cols):
            for i in range(per_side):
                for j in range(per_side):
                    y = pr * PATCH + 1 + i * step + rng.integers(0, 2)
                    x = pc * PATCH + 1 + j * step + rng.integers(0, 2)
                    n += 1
                    labels[y : y + 2, x : x + 2 + (n % 2)] = n
    return labels


def test_read_and_find_label_maps(tmp_path):
    labels = lattice(1, 1, per_side=3)
    np.save(tmp_path / "roi_a.npy", labels)
    tifffile.imwrite(tmp_path / "labels_roi_b.tif", labels.astype(np.uint16))
    assert np.array_equal(ag.read_label_map(ag.find_label_map(tmp_path, "roi_a")), labels)
    found = ag.find_label_map(tmp_path, "b-id", image_path="/data/img/roi_b.png")
    assert found.name == "labels_roi_b.tif"
    assert np.array_equal(ag.read_label_map(found), labels)
    with pytest.raises(FileNotFoundError, match="image roi_c: no label map"):
        ag.find_label_map(tmp_path, "roi_c")
    np.save(tmp_path / "rgb.npy", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="rgb.npy: expected a 2-D integer"):
        ag.read_label_map(tmp_path / "rgb.npy")
    (tmp_path / "roi.png").write_bytes(b"")
    with pytest.raises(ValueError, match="label maps must be"):
        ag.read_label_map(tmp_path / "roi.png")


def test_official_graphs_skip_report_and_cache(tmp_path, monkeypatch):
    good = lattice(1, 3)  # 3 patches of 81 nuclei
    poor = lattice(1, 3)
    poor[:, PATCH:] = 0  # 1 qualifying patch: skipped, never an empty graph
    images = [np.full((*m.shape, 3), 200, np.uint8) for m in (good, poor)]
    graphs, report = ag.official_graphs(images, ["good", "poor"], [good, poor], tmp_path, PATCH)
    assert graphs[1] is None and graphs[0].x.shape == (3, 69)
    ref = image_patch_features(good, images[0], patch_size=PATCH)
    assert np.allclose(graphs[0].x.numpy(), np.nan_to_num(ref.features, nan=0.0))
    assert graphs[0].pos.tolist() == [[0, 0], [1, 0], [2, 0]] and graphs[0].slide_id == "good"
    assert report["status"].tolist()[0] == "used"
    assert report["status"].tolist()[1].startswith("skipped: poor: 1 of 3 patches")
    assert report["used"].tolist() == [3, 0] and report["patches"].tolist() == [3, 3]

    # cached: a second call computes nothing; a changed setting recomputes
    monkeypatch.setattr(ag, "image_patch_features", lambda *a, **k: pytest.fail("recomputed"))
    again, _ = ag.official_graphs(images, ["good", "poor"], [good, poor], tmp_path, PATCH)
    assert again[1] is None and np.array_equal(again[0].x.numpy(), graphs[0].x.numpy())
    with pytest.raises(BaseException, match="recomputed"):
        ag.official_graphs(images, ["good", "poor"], [good, poor], tmp_path, PATCH, min_nuclei=10)


def test_official_graphs_bad_input(tmp_path):
    m = lattice(1, 2, per_side=2)
    with pytest.raises(ValueError, match="image x: label map"):
        ag.official_graphs([np.zeros((5, 5, 3), np.uint8)], ["x"], [m], tmp_path, PATCH)
    with pytest.raises(ValueError, match="unique"):
        ag.official_graphs([None, None], ["x", "x"], [m, m], tmp_path, PATCH)


def test_non_finite_features_are_zeroed_and_counted(tmp_path, monkeypatch):
    good = lattice(1, 2)
    real = ag.image_patch_features

    def with_nan(*a, **k):
        out = real(*a, **k)
        out.features[0, 5] = np.nan
        return out

    before = real(good, None, patch_size=PATCH).features
    assert np.isfinite(before[0, 5])
    monkeypatch.setattr(ag, "image_patch_features", with_nan)
    graphs, report = ag.official_graphs([None], ["g"], [good], tmp_path, PATCH)
    assert graphs[0].x[0, 5] == 0 and bool(np.isfinite(graphs[0].x.numpy()).all())
    assert report["non_finite"].tolist() == [int((~np.isfinite(before)).sum()) + 1]


def test_cached_masks(tmp_path):
    images = [np.full((8, 8, 3), v, np.uint8) for v in (10, 20)]
    masks = ag.cached_masks(images, ["a", "b"], tmp_path, _fake_segment)
    assert [int(m.max()) for m in masks] == [10, 20]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.npz"]
    assert [int(m.max()) for m in ag.cached_masks(images, ["a", "b"], tmp_path, _fake_segment)] == [
        10,
        20,
    ]


def _fake_segment(image: np.ndarray) -> np.ndarray:
    return np.full(image.shape[:2], int(image[0, 0, 0]), np.int32)
