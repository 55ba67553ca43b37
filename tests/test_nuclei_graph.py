"""Tests for wsigraph.graphs.nuclei: the nuclei graph (Sec. III.B, Eq. 1) and the occlusion
neighbourhoods (Eq. 5)."""

import time

import numpy as np
import pytest
import torch
from skimage.color import rgb2hed
from skimage.draw import disk
from skimage.feature import graycomatrix, graycoprops
from torch_geometric.utils import k_hop_subgraph

from wsigraph.data.nuclei_seg import read_monuseg_tile
from wsigraph.graphs.nuclei import (
    FEATURE_NAMES,
    PAPER_MPP,
    RADIUS_UM,
    build_nuclei_graphs,
    nuclei_edges,
    nuclei_graph,
    nucleus_features,
    occlusion_neighbourhoods,
    radius_in_pixels,
    read_mpp,
)
from wsigraph.profiles import data_file

TILES = ["TCGA-HC-7209-01A-01-TS1", "TCGA-HT-8564-01Z-00-DX1"]


def col(features: np.ndarray, name: str) -> np.ndarray:
    return features[:, FEATURE_NAMES.index(name)]


def assert_dst_sorted(edge_index: torch.Tensor) -> None:
    src, dst = edge_index.numpy()
    key = dst * (max(src.max(initial=0), dst.max(initial=0)) + 1) + src
    assert np.all(np.diff(key) > 0)  # sorted by (dst, src), no duplicates


# ---- nuclei_edges ---------------------------------------------------------------------------

# 0 -- 1 at 50 px (weight 0.5); 1 -- 2 at exactly 100 px (no edge); 0 -- 3 at 99.9 px
# (weight 0.001); 4 far from everything.
POINTS = [(0.0, 0.0), (0.0, 50.0), (0.0, 150.0), (99.9, 0.0), (1000.0, 1000.0)]


def test_nuclei_edges_hand_checked():
    edge_index, weight = nuclei_edges(np.array(POINTS))
    assert edge_index.dtype == torch.long and weight.dtype == torch.float32
    assert edge_index.tolist() == [[1, 3, 0, 0], [0, 0, 1, 3]]  # by destination, then source
    torch.testing.assert_close(weight, torch.tensor([0.5, 0.001, 0.5, 0.001]), atol=1e-6, rtol=0)


def test_nuclei_edges_radius_is_strict_and_scales_the_weight():
    edge_index, weight = nuclei_edges(torch.tensor(POINTS), radius=50.0)
    assert edge_index.numel() == 0 and weight.shape == (0,)  # 0 -- 1 is exactly at 50
    edge_index, weight = nuclei_edges(np.array(POINTS), radius=200.0)
    pairs = {(0, 1): 0.75, (1, 2): 0.5, (0, 2): 0.25, (0, 3): 1 - 99.9 / 200}
    pairs |= {(1, 3): 1 - np.hypot(99.9, 50) / 200, (2, 3): 1 - np.hypot(99.9, 150) / 200}
    pairs |= {(j, i): w for (i, j), w in pairs.items()}
    got = {(s, d): w for (s, d), w in zip(edge_index.T.tolist(), weight.tolist(), strict=True)}
    assert got.keys() == pairs.keys()
    np.testing.assert_allclose([got[k] for k in pairs], list(pairs.values()), rtol=1e-6)


def test_nuclei_edges_matches_dense_distances():
    pos = np.random.default_rng(0).uniform(0, 400, size=(200, 2))
    edge_index, weight = nuclei_edges(pos)
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    adj = (dist < 100) & ~np.eye(len(pos), dtype=bool)
    dst, src = np.nonzero(adj)  # row-major: sorted by (dst, src)
    assert edge_index.tolist() == [src.tolist(), dst.tolist()]
    np.testing.assert_allclose(weight.numpy(), 1 - dist[dst, src] / 100, rtol=1e-6)
    assert_dst_sorted(edge_index)
    # Symmetric, both directions with one weight.
    dense = torch.zeros(len(pos), len(pos))
    dense[edge_index[1], edge_index[0]] = weight
    assert torch.equal(dense, dense.T)
    assert bool((weight > 0).all()) and bool((weight <= 1).all())


@pytest.mark.parametrize("num", [0, 1])
def test_nuclei_edges_no_pairs(num):
    edge_index, weight = nuclei_edges(np.zeros((num, 2)))
    assert edge_index.shape == (2, 0) and edge_index.dtype == torch.long
    assert weight.shape == (0,) and weight.dtype == torch.float32


def test_nuclei_edges_invalid():
    with pytest.raises(ValueError, match="radius"):
        nuclei_edges(np.zeros((3, 2)), radius=0.0)
    with pytest.raises(ValueError, match="radius"):
        nuclei_edges(np.zeros((3, 2)), radius=float("nan"))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        nuclei_edges(np.zeros(3))


# ---- nucleus_features -----------------------------------------------------------------------


def synthetic_tile(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels 3 and 7: discs of radius 10 and 6; label 10: a 10 x 40 horizontal rectangle.
    Each nucleus has its own colour plus noise; the background is pink."""
    rng = np.random.default_rng(seed)
    instances = np.zeros((100, 120), dtype=np.int32)
    instances[disk((25, 25), 10)] = 3
    instances[disk((25, 80), 6)] = 7
    instances[60:70, 20:60] = 10
    image = np.full((100, 120, 3), (230, 180, 210), dtype=np.float64)
    for label, colour in ((3, (90, 40, 140)), (7, (60, 30, 110)), (10, (120, 70, 160))):
        mask = instances == label
        image[mask] = colour + rng.normal(0, 15, size=(mask.sum(), 3))
    return np.clip(image, 0, 255).astype(np.uint8), instances


def test_nucleus_features_synthetic_shapes():
    image, instances = synthetic_tile()
    centroids, features, names = nucleus_features(image, instances)
    assert names == list(FEATURE_NAMES)
    assert centroids.shape == (3, 2) and features.shape == (3, len(FEATURE_NAMES))
    assert features.dtype == np.float32 and np.isfinite(features).all()

    # Rows follow the labels 3, 7, 10 (not consecutive).
    for row, label in enumerate((3, 7, 10)):
        rr, cc = np.nonzero(instances == label)
        np.testing.assert_allclose(centroids[row], [rr.mean(), cc.mean()])
        assert col(features, "area")[row] == rr.size
    np.testing.assert_allclose(centroids[2], [64.5, 39.5])
    assert col(features, "area")[2] == 400

    # Discs: round, solid; the rectangle: elongated along the columns, fills its box.
    assert (col(features, "eccentricity")[:2] < 0.15).all()
    assert (col(features, "circularity")[:2] > 0.85).all()
    np.testing.assert_allclose(col(features, "solidity")[2], 1.0)
    np.testing.assert_allclose(col(features, "extent")[2], 1.0)
    assert col(features, "eccentricity")[2] > 0.9
    major, minor = col(features, "major_axis_length")[2], col(features, "minor_axis_length")[2]
    np.testing.assert_allclose(major / minor, 4.0, rtol=0.05)
    np.testing.assert_allclose(col(features, "orientation_cos2")[2], -1.0, atol=1e-5)
    np.testing.assert_allclose(col(features, "orientation_sin2")[2], 0.0, atol=1e-5)

    # A vertical rectangle: cos(2 theta) = +1.
    _, vertical, _ = nucleus_features(image.transpose(1, 0, 2), instances.T)
    np.testing.assert_allclose(col(vertical, "orientation_cos2")[2], 1.0, atol=1e-5)
    np.testing.assert_allclose(col(vertical, "area"), col(features, "area"))


def test_nucleus_features_intensity_and_texture_match_references():
    image, instances = synthetic_tile()
    _, features, _ = nucleus_features(image, instances)
    hema = rgb2hed(image)[..., 0]
    grey = np.rint(image @ np.array([0.2125, 0.7154, 0.0721]))
    for row, label in enumerate((3, 7, 10)):
        mask = instances == label
        np.testing.assert_allclose(col(features, "hema_mean")[row], hema[mask].mean(), rtol=1e-5)
        np.testing.assert_allclose(col(features, "hema_std")[row], hema[mask].std(), rtol=1e-4)
        for c, name in enumerate(("red_mean", "green_mean", "blue_mean")):
            np.testing.assert_allclose(col(features, name)[row], image[mask, c].mean(), rtol=1e-5)
        np.testing.assert_allclose(col(features, "grey_std")[row], grey[mask].std(), rtol=1e-5)

    # The rectangle fills its bounding box: skimage's GLCM on the crop is the reference.
    crop = grey[60:70, 20:60].astype(np.uint8)
    glcm = graycomatrix(crop, [1], [0, np.pi / 2], levels=256, symmetric=True, normed=True)
    for name in ("contrast", "homogeneity"):
        expected = graycoprops(glcm, name).mean()
        np.testing.assert_allclose(col(features, f"glcm_{name}")[2], expected, rtol=1e-5)


def test_nucleus_features_one_pixel_and_empty():
    image = np.full((8, 8, 3), 128, dtype=np.uint8)
    instances = np.zeros((8, 8), dtype=np.uint16)
    centroids, features, names = nucleus_features(image, instances)
    assert centroids.shape == (0, 2) and features.shape == (0, len(names))
    assert features.dtype == np.float32

    instances[4, 4] = 5  # a single pixel: no perimeter, no pixel pairs
    _, features, _ = nucleus_features(image, instances)
    assert np.isfinite(features).all()
    assert col(features, "glcm_homogeneity")[0] == 1.0 and col(features, "glcm_contrast")[0] == 0


def test_nucleus_features_invalid():
    image, instances = synthetic_tile()
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        nucleus_features(np.dstack([image, image[..., :1]]), instances)
    with pytest.raises(ValueError, match="uint8"):
        nucleus_features(image / 255.0, instances)
    with pytest.raises(ValueError, match="differ in size"):
        nucleus_features(image, instances[:-1])
    with pytest.raises(ValueError, match="integer"):
        nucleus_features(image, instances.astype(np.float32))
    with pytest.raises(ValueError, match=">= 0"):
        nucleus_features(image, -instances)


def test_nucleus_features_500_nuclei_under_two_seconds():
    rng = np.random.default_rng(1)
    instances = np.zeros((1000, 1000), dtype=np.int32)
    centres = np.stack(np.meshgrid(np.arange(22, 1000, 44), np.arange(22, 1000, 44)), -1)
    for label, (r, c) in enumerate(centres.reshape(-1, 2)[:500], start=1):
        instances[disk((r, c), rng.uniform(6, 14), shape=instances.shape)] = label
    image = rng.integers(0, 256, size=(1000, 1000, 3), dtype=np.uint8)
    nucleus_features(image, instances)  # warm-up
    start = time.perf_counter()
    _, features, _ = nucleus_features(image, instances)
    assert time.perf_counter() - start < 2.0
    assert features.shape == (500, len(FEATURE_NAMES))


# ---- nuclei_graph on the real MoNuSeg tiles -------------------------------------------------


def load_tile(name: str) -> tuple[np.ndarray, np.ndarray]:
    return read_monuseg_tile(data_file("nuclei/monuseg"), name)


def centroids_csv(name: str) -> np.ndarray:
    """The collection's own table of the instance mask (x = col, y = row)."""
    path = data_file(f"nuclei/monuseg/{name}_centroids.csv")
    return np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")


@pytest.mark.parametrize("name", TILES)
def test_nuclei_graph_real_tile(name):
    image, instances = load_tile(name)
    labels = np.unique(instances)
    labels = labels[labels > 0]

    nuclei_graph(image[:64, :64], instances[:64, :64])  # warm-up (imports, caches)
    start = time.perf_counter()
    data = nuclei_graph(image, instances, y=1, tile_id=name)
    seconds = time.perf_counter() - start
    assert seconds < 2.0

    num = len(labels)
    assert data.num_nodes == num and data.x.shape == (num, len(FEATURE_NAMES))
    assert torch.isfinite(data.x).all() and data.x.dtype == torch.float32
    assert data.label.tolist() == labels.tolist()
    assert data.feature_names == list(FEATURE_NAMES) and data.radius == 100.0
    assert data.y == 1 and data.tile_id == name

    # Centroids and areas agree with the collection's own table.
    table = centroids_csv(name)
    assert table["instance_id"].tolist() == labels.tolist()
    expected = np.stack([table["centroid_y"], table["centroid_x"]], 1)
    torch.testing.assert_close(
        data.pos, torch.tensor(expected, dtype=torch.float), atol=2e-3, rtol=0
    )
    assert data.x[:, FEATURE_NAMES.index("area")].tolist() == table["area_px"].tolist()

    # Eq. 1 on the real geometry.
    src, dst = data.edge_index
    dist = (data.pos[src] - data.pos[dst]).norm(dim=1)
    assert data.edge_attr.shape == (data.num_edges, 1)
    torch.testing.assert_close(data.edge_attr[:, 0], 1 - dist / 100, atol=1e-4, rtol=0)
    assert_dst_sorted(data.edge_index)
    mean_degree = data.num_edges / num
    assert 1 < mean_degree < 60


def test_nuclei_graph_empty_and_reserved_names():
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    data = nuclei_graph(image, np.zeros((16, 16), dtype=np.int64), tile_id="blank")
    assert data.x.shape == (0, len(FEATURE_NAMES)) and data.pos.shape == (0, 2)
    assert data.edge_index.shape == (2, 0) and data.edge_attr.shape == (0, 1)
    assert data.tile_id == "blank"
    with pytest.raises(ValueError, match="overwrite"):
        nuclei_graph(image, np.zeros((16, 16), dtype=np.int64), x=1)


# ---- occlusion_neighbourhoods ---------------------------------------------------------------


def neighbourhoods(ptr: torch.Tensor, nodes: torch.Tensor) -> list[list[int]]:
    return [nodes[ptr[i] : ptr[i + 1]].tolist() for i in range(len(ptr) - 1)]


def test_occlusion_neighbourhoods_path():
    path = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])  # 0 - 1 - 2 - 3
    assert neighbourhoods(*occlusion_neighbourhoods(path, 4, hops=0)) == [[0], [1], [2], [3]]
    ptr, nodes = occlusion_neighbourhoods(path, 4)
    assert ptr.dtype == torch.long and nodes.dtype == torch.long
    assert neighbourhoods(ptr, nodes) == [[0, 1], [0, 1, 2], [1, 2, 3], [2, 3]]
    two = neighbourhoods(*occlusion_neighbourhoods(path, 4, hops=2))
    assert two == [[0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3], [1, 2, 3]]
    # Directed: only 0 -> 1, so node 1's messages come from 0 and node 0 hears nobody.
    directed = occlusion_neighbourhoods(np.array([[0], [1]]), 3)
    assert neighbourhoods(*directed) == [[0], [0, 1], [2]]


@pytest.mark.parametrize("hops", [1, 2, 3])
def test_occlusion_neighbourhoods_match_k_hop_subgraph(hops):
    pos = np.random.default_rng(hops).uniform(0, 500, size=(60, 2))
    edge_index, _ = nuclei_edges(pos)
    got = neighbourhoods(*occlusion_neighbourhoods(edge_index, 60, hops))
    for i in range(60):
        subset, *_ = k_hop_subgraph(i, hops, edge_index, num_nodes=60)
        assert got[i] == sorted(subset.tolist())


def test_occlusion_neighbourhoods_empty_and_invalid():
    ptr, nodes = occlusion_neighbourhoods(torch.empty(2, 0, dtype=torch.long), 0)
    assert ptr.tolist() == [0] and nodes.numel() == 0
    ptr, nodes = occlusion_neighbourhoods(np.empty((2, 0), dtype=np.int64), 2, hops=2)
    assert neighbourhoods(ptr, nodes) == [[0], [1]]
    with pytest.raises(ValueError, match="hops"):
        occlusion_neighbourhoods(np.empty((2, 0), dtype=np.int64), 2, hops=-1)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        occlusion_neighbourhoods(np.array([[0], [2]]), 2)
    with pytest.raises(ValueError, match=r"\[2, E\]"):
        occlusion_neighbourhoods(np.array([0, 1, 2]), 3)


def test_build_nuclei_graphs_caches_by_pixels_and_method(tmp_path):
    image, instances = synthetic_tile()
    calls = []

    def seg(im):
        calls.append(1)
        return instances

    tiles = [("a", image, 0), ("b", image[:, ::-1].copy(), 1)]
    graphs = build_nuclei_graphs(tiles, seg, tmp_path, "truth", progress=False)
    assert [g.slide_id for g in graphs] == ["a", "b"] and len(calls) == 2
    assert [int(g.y) for g in graphs] == [0, 1] and graphs[0].num_nodes == 3
    again = build_nuclei_graphs(tiles, seg, tmp_path, "truth", progress=False)
    assert len(calls) == 2  # reused from the cache
    torch.testing.assert_close(again[1].x, graphs[1].x)
    changed = [("a", np.ascontiguousarray(255 - image), 0)]
    build_nuclei_graphs(changed, seg, tmp_path, "truth", progress=False)
    build_nuclei_graphs(tiles[:1], seg, tmp_path, "other", progress=False)
    assert len(calls) == 4  # new pixels, then another method: rebuilt
    (tmp_path / "b.pt").write_bytes(b"junk")
    build_nuclei_graphs(tiles, seg, tmp_path, "other", progress=False)
    assert len(calls) == 5  # "a" reused (same pixels and method), "b" corrupt: rebuilt


# ---- the radius in micrometres ---------------------------------------------------------------


def test_radius_in_pixels_is_microns_over_mpp():
    assert RADIUS_UM / PAPER_MPP == pytest.approx(100.0)  # the paper's 100 px at its scale
    assert radius_in_pixels() == pytest.approx(100.0)
    assert radius_in_pixels(25.0, 0.25) == pytest.approx(100.0)  # 40x
    assert radius_in_pixels(42.0, 0.84) == pytest.approx(50.0)  # half the magnification
    assert radius_in_pixels(42.0, 0.21) == pytest.approx(200.0)  # twice the magnification


@pytest.mark.parametrize("bad", [0, -0.25, float("nan"), float("inf"), None, "x"])
def test_a_non_positive_mpp_is_a_clear_error(bad):
    image, instances = synthetic_tile()
    with pytest.raises(ValueError, match="'mpp' must be a positive number of µm per pixel"):
        radius_in_pixels(42.0, bad)
    with pytest.raises(ValueError, match="'mpp'"):
        nuclei_graph(image, instances, mpp=bad)
    with pytest.raises(ValueError, match="'mpp'"):
        build_nuclei_graphs([("a", image, 0)], lambda im: instances, ".", "x", mpp=bad)
    with pytest.raises(ValueError, match="'radius_um'"):
        nuclei_graph(image, instances, radius_um=bad if bad is not None else 0)


def test_the_graph_is_the_same_tissue_neighbourhood_at_any_magnification():
    """A tile and its 2x upsampling (half the µm per px) give the same edges and Eq. 1 weights
    for the same radius in µm; the same radius in pixels would not."""
    image, instances = synthetic_tile()
    # discs 50 px apart at 0.5 µm/px = 25 µm apart; radius 30 µm joins them
    g1 = nuclei_graph(image, instances, radius_um=30.0, mpp=0.5)
    big = np.kron(instances, np.ones((2, 2), dtype=instances.dtype))
    big_image = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)
    g2 = nuclei_graph(big_image, big, radius_um=30.0, mpp=0.25)
    assert g1.radius == pytest.approx(60.0) and g2.radius == pytest.approx(120.0)
    assert g1.mpp == 0.5 and g2.radius_um == 30.0
    assert g1.num_edges > 0
    torch.testing.assert_close(g2.edge_index, g1.edge_index)
    torch.testing.assert_close(g2.edge_attr, g1.edge_attr)  # 1 - d/r: d and r both doubled
    # by hand: nodes 0 and 1 (labels 3 and 7) lie 55 px = 27.5 µm apart
    d_um = np.linalg.norm(g1.pos[0].numpy() - g1.pos[1].numpy()) * 0.5
    w = g1.edge_attr[(g1.edge_index[0] == 0) & (g1.edge_index[1] == 1)]
    torch.testing.assert_close(w, torch.tensor([[1 - d_um / 30.0]]))
    same_px = nuclei_graph(big_image, big, radius_um=30.0 * 0.5, mpp=0.25)  # 60 px
    assert same_px.num_edges < g2.num_edges


def test_build_nuclei_graphs_rebuilds_when_the_radius_in_pixels_changes(tmp_path):
    image, instances = synthetic_tile()
    calls = []

    def seg(im):
        calls.append(1)
        return instances

    tiles = [("a", image, 0)]
    g = build_nuclei_graphs(tiles, seg, tmp_path, "truth", progress=False, mpp=0.5)[0]
    assert g.radius == pytest.approx(84.0) and g.mpp == 0.5
    build_nuclei_graphs(tiles, seg, tmp_path, "truth", progress=False, mpp=0.5)
    assert len(calls) == 1
    g = build_nuclei_graphs(tiles, seg, tmp_path, "truth", progress=False, mpp=0.25)[0]
    assert len(calls) == 2 and g.radius == pytest.approx(168.0)


def test_read_mpp_from_metadata(tmp_path):
    import tifffile

    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    # the real MoNuSeg tiles: MicronsPerPixel in the annotation XML beside the image
    folder = data_file("nuclei/monuseg")
    assert read_mpp(folder / f"{TILES[0]}.tif") == pytest.approx(0.2462)
    assert read_mpp(folder / f"{TILES[1]}.tif") == pytest.approx(0.2525)
    # TIFF resolution tags: 40,000 px per cm = 0.25 µm/px; 20,000 px per inch = 1.27 µm/px
    tifffile.imwrite(tmp_path / "cm.tif", rgb, resolution=(40_000, 40_000), resolutionunit=3)
    assert read_mpp(tmp_path / "cm.tif") == pytest.approx(0.25)
    tifffile.imwrite(tmp_path / "in.tif", rgb, resolution=(20_000, 20_000), resolutionunit=2)
    assert read_mpp(tmp_path / "in.tif") == pytest.approx(1.27)
    # Aperio's ImageDescription
    tifffile.imwrite(tmp_path / "svs.tif", rgb, description="Aperio Image |AppMag = 20|MPP = 0.499")
    assert read_mpp(tmp_path / "svs.tif") == pytest.approx(0.499)
    # 72 dpi (no physical scale), no tags, other formats: None
    tifffile.imwrite(tmp_path / "dpi.tif", rgb, resolution=(72, 72), resolutionunit=2)
    assert read_mpp(tmp_path / "dpi.tif") is None
    (tmp_path / "x.png").write_bytes(b"")
    assert read_mpp(tmp_path / "x.png") is None


def test_annotated_centroids_and_degree_at(tmp_path):
    from wsigraph.data.nuclei_sets import annotated_centroids, degree_at

    xml = tmp_path / "t.xml"
    xml.write_text(
        '<Annotations MicronsPerPixel="0.25"><Annotation><Regions>'
        '<Region Id="1"><Vertices><Vertex X="0" Y="0"/><Vertex X="4" Y="2"/></Vertices></Region>'
        '<Region Id="2"><Vertices><Vertex X="10" Y="20"/></Vertices></Region>'
        '<Region Id="3"><Vertices/></Region>'
        "</Regions></Annotation></Annotations>"
    )
    np.testing.assert_allclose(annotated_centroids(xml), [[1.0, 2.0], [20.0, 10.0]])
    # three points on a line 10 apart: at r = 15 the middle has 2 neighbours, the ends 1 each
    line = np.array([[0.0, 0.0], [0.0, 10.0], [0.0, 20.0]])
    assert degree_at([line], 15.0) == pytest.approx(4 / 3)
    assert degree_at([line], 25.0) == pytest.approx(2.0)
    assert degree_at([line, line], [15.0, 25.0]) == pytest.approx((4 + 6) / 6)
