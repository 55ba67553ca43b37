"""Per-slide k-means and its cache (wsigraph.data.clusters)."""

import numpy as np
import pytest
import torch

from wsigraph.data import clusters as C
from wsigraph.graphs.pyramid import pyramid_graph

pytestmark = pytest.mark.usefixtures("one_thread")


def blobs(n_per: int = 20, seed: int = 0) -> torch.Tensor:
    """Three well-separated blobs in 5-D."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0] * 5, [10.0] * 5, [-10.0, 10.0, -10.0, 10.0, 0.0]])
    return torch.cat([c + 0.1 * torch.randn(n_per, 5, generator=g) for c in centres])


@pytest.mark.parametrize("backend", ["sklearn", "torch"])
def test_kmeans_is_deterministic_and_finds_the_blobs(backend):
    x = blobs()
    cent, labels = C.kmeans(x, 3, seed=1, backend=backend)
    cent2, labels2 = C.kmeans(x, 3, seed=1, backend=backend)
    assert torch.equal(labels, labels2) and torch.equal(cent, cent2)
    assert cent.shape == (3, 5) and labels.dtype == torch.long
    for b in range(3):  # each blob is one cluster
        assert len(set(labels[20 * b : 20 * (b + 1)].tolist())) == 1
    for k in range(3):  # centroids are the means of their members
        assert torch.allclose(cent[k], x[labels == k].mean(0), atol=1e-5)


@pytest.mark.parametrize("backend", ["sklearn", "torch"])
def test_fewer_instances_than_clusters(backend):
    x = blobs(n_per=2)[:5]  # 5 distinct instances, 64 clusters asked
    cent, labels = C.kmeans(x, 64, backend=backend)
    assert cent.shape == (5, 5) and sorted(labels.tolist()) == [0, 1, 2, 3, 4]
    one, lab = C.kmeans(x[:1], 64, backend=backend)
    assert one.shape == (1, 5) and lab.tolist() == [0]


def test_kmeans_rejects_bad_input():
    with pytest.raises(ValueError, match="no instances"):
        C.kmeans(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="non-finite"):
        C.kmeans(torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="backend"):
        C.kmeans(blobs(), 3, backend="faiss")


def test_read_clam_pt(tmp_path):
    x = torch.randn(7, 12)
    torch.save(x, tmp_path / "slide.pt")
    assert torch.equal(C.read_clam_features(tmp_path / "slide.pt"), x)
    torch.save({"features": x, "coords": torch.zeros(7, 2)}, tmp_path / "wrapped.pt")
    assert torch.equal(C.read_clam_features(tmp_path / "wrapped.pt"), x)
    torch.save(torch.randn(7), tmp_path / "flat.pt")
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        C.read_clam_features(tmp_path / "flat.pt")
    with pytest.raises(FileNotFoundError):
        C.read_clam_features(tmp_path / "missing.pt")


def test_cache_is_reused_and_invalidated(tmp_path, monkeypatch):
    x = blobs()
    rec = C.cluster_slide("a", x, tmp_path, n_clusters=3, backend="sklearn")
    assert (tmp_path / "a.pt").exists() and rec["k"] == 3
    calls = []
    real = C.kmeans
    monkeypatch.setattr(C, "kmeans", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = C.cluster_slide("a", x, tmp_path, n_clusters=3, backend="sklearn")
    assert calls == [] and torch.equal(again["labels"], rec["labels"])
    C.cluster_slide("a", x + 1.0, tmp_path, n_clusters=3, backend="sklearn")  # new features
    C.cluster_slide("a", x + 1.0, tmp_path, n_clusters=4, backend="sklearn")  # new K
    assert calls == [1, 1]
    (tmp_path / "a.pt").write_bytes(b"truncated")  # a broken file is recomputed
    C.cluster_slide("a", x + 1.0, tmp_path, n_clusters=4, backend="sklearn")
    assert calls == [1, 1, 1]


def test_clam_dir_and_dataset_centroids(tmp_path):
    for i in range(3):
        torch.save(blobs(n_per=5, seed=i), tmp_path / f"s{i}.pt")
    out = C.cluster_clam_dir(
        tmp_path, tmp_path / "clusters", n_clusters=3, backend="sklearn", progress=False
    )
    assert sorted(out) == ["s0", "s1", "s2"] and (tmp_path / "clusters" / "s1.pt").exists()
    cent = C.dataset_centroids(
        [blobs(5, i) for i in range(3)], n_clusters=3, n_files=2, backend="sklearn"
    )
    assert cent.shape == (3, 5)


def test_attach_clusters_labels_the_instance_level_only(tmp_path):
    level = np.array([0, 1, 1, 2, 2, 2, 2])
    parent = np.array([-1, 0, 0, 1, 1, 2, 2])
    row, col = np.array([0, 0, 0, 0, 1, 0, 1]), np.array([0, 0, 1, 0, 0, 2, 2])
    g = pyramid_graph(torch.randn(7, 3), level, row, col, parent)
    g.slide_id = "s"
    (h,) = C.attach_clusters([g], tmp_path, n_clusters=2, backend="sklearn")
    assert C.CLUSTER_KEY not in g  # the input graph is untouched
    cl = h[C.CLUSTER_KEY]
    assert (cl[:3] == -1).all() and set(cl[3:].tolist()) == {0, 1}
    del g.slide_id
    with pytest.raises(ValueError, match="slide_id"):
        C.attach_clusters([g], tmp_path)
