"""ABiG-Net's 69 per-patch features (graphs/abignet_features.py), hand-checked.

Every expected number below is worked out by hand from the official definitions
(``Paul1086/ABiG_Net``: ``extract_cell_graph_features.py``, ``vor_del_mst_nn_features.m``)
on point sets small enough to do so; the MATLAB ``get_stats`` is written out once
(:func:`_m_stats`) and used where a statistic of many hand-listed values is needed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.draw import disk

from wsigraph.graphs import abignet_features as af

SQ2 = math.sqrt(2.0)
PHI = (1 + math.sqrt(5)) / 2


def _m_stats(x) -> tuple[float, float, float, float]:
    """MATLAB ``get_stats``: (std with N - 1, mean, min/max, 1 - 1 / (1 + std/mean))."""
    x = [float(v) for v in x]
    if not x:
        return 0.0, 0.0, 0.0, 0.0
    m = sum(x) / len(x)
    s = math.sqrt(sum((v - m) ** 2 for v in x) / (len(x) - 1)) if len(x) > 1 else 0.0
    mm = min(x) / max(x) if max(x) > 0 else 0.0
    d = 1 - 1 / (1 + s / m) if m > 0 else 0.0
    return s, m, mm, d


def _cell(points, props=None, **kw) -> dict[str, float]:
    points = np.asarray(points, dtype=float)
    if props is None:
        props = np.ones((len(points), 3))  # all cosines 1: the radius graph
    values = af.cell_graph_features(points, props, **kw)
    assert values.shape == (18,)
    return dict(zip(af.CELL_GRAPH_FEATURES, values, strict=True))


def _vor(points) -> dict[str, float]:
    values = af.voronoi_features(np.asarray(points, dtype=float))
    assert values.shape == (51,)
    return dict(zip(af.VORONOI_FEATURES, values, strict=True))


def _check(got: dict[str, float], expected: dict[str, float]) -> None:
    for key, want in expected.items():
        if isinstance(want, float) and math.isnan(want):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(want, abs=1e-9), key


# ----------------------------------------------------------------------------- names


def test_names_and_order_follow_combine_patch_features():
    assert len(af.CELL_GRAPH_FEATURES) == 18 and len(af.VORONOI_FEATURES) == 51
    assert len(af.FEATURE_NAMES) == 69 and len(set(af.FEATURE_NAMES)) == 69
    # combine_patch_features.py: np.concatenate([51 vor/del/mst/nn, 18 cell graph])
    assert af.FEATURE_NAMES[:51] == af.VORONOI_FEATURES
    assert af.FEATURE_NAMES[51] == "clustering_coefficient"
    # the .m's index permutations: Delaunay min/max before std, MST mean before std
    assert af.VORONOI_FEATURES[13] == "delaunay_side_min_max_ratio"
    assert af.VORONOI_FEATURES[21] == "mst_edge_mean"
    assert af.VORONOI_FEATURES[25:28] == (
        "number_nuclei",
        "nuclear_density",
        "knn3_distance_sum_mean",
    )
    assert af.VORONOI_FEATURES[-1] == "neighbours_within_50px_disorder"


# ----------------------------------------------------------------------------- cell graph


def test_cell_graph_path_of_four():
    # 0 - 1 - 2 - 3, 50 px apart (100 px > 64 between second neighbours)
    got = _cell([[0, 0], [50, 0], [100, 0], [150, 0]])
    _check(
        got,
        {
            "clustering_coefficient": 0.0,
            "average_degree": 1.5,
            "number_connected_components": 1,
            "giant_connected_component_ratio": 1.0,
            "number_vertices": 4,
            "number_edges": 3,
            "average_eccentricity": 2.5,  # 3, 2, 2, 3
            "radius": 2,
            "diameter": 3,
            "number_central_points": 2,
            "percent_central_points": 50.0,
            "closeness_average": (3 / 6 + 3 / 4 + 3 / 4 + 3 / 6) / 4,
            # L eigenvalues 0, 2 - sqrt2, 2, 2 + sqrt2 around the mean degree 1.5
            "laplacian_energy": 2 + 2 * SQ2,
            "laplacian_trace": 6.0,
            # normalised L: 0, 0.5, 1.5, 2 -> [1, 2) holds one (2 is out): NaN
            "upper_slope": float("nan"),
            "lower_slope": 0.5,
            # A eigenvalues +-phi, +-1/phi
            "largest_adjacency_eigenvalue": PHI,
            "adjacency_energy": 2 * math.sqrt(5),
        },
    )


def test_cell_graph_five_cycle():
    # regular pentagon, side 50 px, diagonal 50 phi = 80.9 px > 64
    angle = np.pi / 2 + 2 * np.pi * np.arange(5) / 5
    r = 50 / (2 * math.sin(math.pi / 5))
    got = _cell(np.c_[r * np.cos(angle), r * np.sin(angle)] + 200)
    a, b = 1 - math.cos(2 * math.pi / 5), 1 - math.cos(4 * math.pi / 5)  # 0.691, 1.809
    _check(
        got,
        {
            "clustering_coefficient": 0.0,
            "average_degree": 2.0,
            "number_connected_components": 1,
            "number_edges": 5,
            "average_eccentricity": 2.0,
            "radius": 2,
            "diameter": 2,
            "number_central_points": 5,
            "percent_central_points": 100.0,
            "closeness_average": 4 / 6,
            "laplacian_energy": 2 + 2 * (1 / PHI) + 2 * PHI,  # |0-2| + 2|2a-2| + 2|2b-2|
            "laplacian_trace": 10.0,
            "upper_slope": 0.0,  # b, b
            "lower_slope": a / 2,  # least squares of 0, a, a on 0, 1, 2
            "largest_adjacency_eigenvalue": 2.0,
            "adjacency_energy": 2 + 2 / PHI + 2 * PHI,
        },
    )
    assert 2 * b - 2 == pytest.approx(PHI)


def test_cell_graph_triangle_and_an_isolated_nucleus():
    got = _cell([[0, 0], [40, 0], [20, 30], [500, 500]])
    _check(
        got,
        {
            "clustering_coefficient": 0.75,  # 1, 1, 1, 0
            "average_degree": 1.5,
            "number_connected_components": 2,
            "giant_connected_component_ratio": 0.75,
            "number_vertices": 4,
            "number_edges": 3,
            # infinite distances are ignored: the isolated nucleus has eccentricity 0
            "average_eccentricity": 0.75,
            "radius": 0,
            "diameter": 1,
            "number_central_points": 1,
            "percent_central_points": 25.0,
            "closeness_average": (3 * (2 / 2) * (2 / 3) + 0) / 4,
            "laplacian_energy": 6.0,  # eigenvalues 0, 0, 3, 3 around 1.5
            "laplacian_trace": 6.0,
            "upper_slope": 0.0,  # 1.5, 1.5
            "lower_slope": 0.0,  # 0 (isolated, scipy's normed Laplacian), 0
            "largest_adjacency_eigenvalue": 2.0,
            "adjacency_energy": 4.0,  # 2, -1, -1, 0
        },
    )


def test_cell_graph_complete_graph():
    got = _cell([[0, 0], [30, 0], [0, 30], [30, 30]])  # K4 (diagonal 42.4 px)
    _check(
        got,
        {
            "clustering_coefficient": 1.0,
            "average_degree": 3.0,
            "number_edges": 6,
            "average_eccentricity": 1.0,
            "closeness_average": 1.0,
            "laplacian_energy": 6.0,  # 0, 4, 4, 4 around 3
            "laplacian_trace": 12.0,
            "upper_slope": 0.0,  # 4/3 three times
            "lower_slope": float("nan"),  # only the 0
            "largest_adjacency_eigenvalue": 3.0,
            "adjacency_energy": 6.0,  # 3, -1, -1, -1
        },
    )


@pytest.mark.parametrize(("distance", "edges"), [(63.9, 1), (64.0, 1), (64.1, 0)])
def test_cell_graph_radius_is_inclusive_64(distance, edges):
    assert _cell([[10, 10], [10 + distance, 10]])["number_edges"] == edges


@pytest.mark.parametrize(("cosine", "edges"), [(0.71, 1), (0.69, 0)])
def test_cell_graph_cosine_threshold(cosine, edges):
    props = np.array([[1.0, 0.0], [cosine, math.sqrt(1 - cosine**2)]]) * [[3.0], [7.0]]
    assert _cell([[0, 0], [5, 0]], props)["number_edges"] == edges


def test_cell_graph_zero_property_vector_has_cosine_zero():
    # sklearn's cosine_similarity maps a zero row to similarity 0: no edge at 0.70
    assert _cell([[0, 0], [5, 0]], np.array([[0.0, 0.0], [1.0, 1.0]]))["number_edges"] == 0
    assert _cell([[0, 0], [5, 0]], np.array([[0.0, 0.0], [1.0, 1.0]]), min_cosine=0.0)[
        "number_edges"
    ] == pytest.approx(1)


def test_cell_graph_drops_non_finite_rows():
    got = _cell([[0, 0], [50, 0], [np.nan, 0]], np.ones((3, 2)))
    assert got["number_vertices"] == 2 and got["number_edges"] == 1


def test_cell_graph_matches_networkx_on_random_patches():
    nx = pytest.importorskip("networkx")
    rng = np.random.default_rng(3)
    for _ in range(3):
        pts = rng.uniform(0, 400, (80, 2))
        props = rng.normal(size=(80, 12)) + 1.5
        adj = af.cell_adjacency(pts, props)
        g = nx.from_numpy_array(adj)
        got = dict(zip(af.CELL_GRAPH_FEATURES, af.graph_statistics(adj), strict=True))
        ecc = {}
        for comp in nx.connected_components(g):
            ecc.update(nx.eccentricity(g.subgraph(comp)))
        ecc = np.array([ecc[i] for i in range(80)])
        assert got["clustering_coefficient"] == pytest.approx(nx.average_clustering(g))
        closeness = np.mean(list(nx.closeness_centrality(g).values()))
        assert got["closeness_average"] == pytest.approx(closeness)
        assert got["number_connected_components"] == nx.number_connected_components(g)
        assert got["average_eccentricity"] == pytest.approx(ecc.mean())
        assert got["number_central_points"] == (ecc == ecc.min()).sum()
        assert got["laplacian_trace"] == 2 * g.number_of_edges()


# ----------------------------------------------------------------------------- Voronoi & co.


def test_voronoi_unit_square_and_centre():
    # corners of a 10 px square and its centre: the centre's Voronoi cell is the diamond
    # (5,0) (10,5) (5,10) (0,5) (area 50, sides 5 sqrt2, diagonals 10); corner cells are
    # unbounded and dropped. Delaunay: 4 triangles (side 10, two half-diagonals 5 sqrt2,
    # area 25). MST: the 4 half-diagonals.
    h = 5 * SQ2
    got = _vor([[0, 0], [10, 0], [0, 10], [10, 10], [5, 5]])
    chord = _m_stats([h] * 4 + [10, 10])
    side = _m_stats([10] * 4 + [h] * 8)
    corner_k3, centre_k3 = h + 10 + 10, 3 * h
    corner_k4, centre_k4 = h + 10 + 10 + 10 * SQ2, 4 * h  # k = min(5, n - 1) = 4
    k3 = _m_stats([corner_k3] * 4 + [centre_k3])
    k4 = _m_stats([corner_k4] * 4 + [centre_k4])
    r10 = _m_stats([3] * 4 + [4])  # corners: centre + 2 sides; centre: 4 corners
    expected = dict(
        {
            "voronoi_area_total": 50.0,
            "voronoi_area_std": 0.0,  # one value
            "voronoi_area_mean": 50.0,
            "voronoi_area_min_max_ratio": 1.0,
            "voronoi_area_disorder": 0.0,
            "voronoi_perimeter_edge_std": 0.0,
            "voronoi_perimeter_edge_mean": h,
            "voronoi_perimeter_edge_min_max_ratio": 1.0,
            "voronoi_perimeter_edge_disorder": 0.0,
            "voronoi_chord_std": chord[0],
            "voronoi_chord_mean": (4 * h + 20) / 6,
            "voronoi_chord_min_max_ratio": h / 10,
            "voronoi_chord_disorder": chord[3],
            "delaunay_side_min_max_ratio": h / 10,
            "delaunay_side_std": side[0],
            "delaunay_side_mean": (40 + 8 * h) / 12,
            "delaunay_side_disorder": side[3],
            "delaunay_area_min_max_ratio": 1.0,
            "delaunay_area_std": 0.0,
            "delaunay_area_mean": 25.0,
            "delaunay_area_disorder": 0.0,
            "mst_edge_mean": h,
            "mst_edge_std": 0.0,
            "mst_edge_min_max_ratio": 1.0,
            "mst_edge_disorder": 0.0,
            "number_nuclei": 5,
            "nuclear_density": 5 / 50,
            "knn3_distance_sum_mean": (4 * corner_k3 + centre_k3) / 5,
            "knn5_distance_sum_mean": (4 * corner_k4 + centre_k4) / 5,
            "knn7_distance_sum_mean": (4 * corner_k4 + centre_k4) / 5,
            "knn3_distance_sum_std": k3[0],
            "knn5_distance_sum_std": k4[0],
            "knn7_distance_sum_std": k4[0],
            "knn3_distance_sum_disorder": k3[3],
            "knn5_distance_sum_disorder": k4[3],
            "knn7_distance_sum_disorder": k4[3],
            "neighbours_within_10px_mean": 3.2,
            "neighbours_within_10px_std": r10[0],
            "neighbours_within_10px_disorder": r10[3],
            **{f"neighbours_within_{r}px_mean": 4.0 for r in (20, 30, 40, 50)},
            **{f"neighbours_within_{r}px_std": 0.0 for r in (20, 30, 40, 50)},
            **{f"neighbours_within_{r}px_disorder": 0.0 for r in (20, 30, 40, 50)},
        },
    )
    _check(got, expected)
    assert set(expected) == set(got) == set(af.VORONOI_FEATURES)  # all 51


def test_voronoi_regular_grid():
    # 5 x 5 grid, spacing 10: the 9 interior cells are 10 x 10 squares; 32 right
    # triangles (legs 10, hypotenuse 10 sqrt2, area 50) whichever diagonal is chosen
    grid = [[x, y] for y in range(0, 50, 10) for x in range(0, 50, 10)]
    got = _vor(grid)
    d = 10 * SQ2
    side = _m_stats([10] * 64 + [d] * 32)
    chord = _m_stats([10] * 36 + [d] * 18)
    corner, other = 10 + 10 + d, 30.0  # summed distance to the 3 nearest
    r10 = [2] * 4 + [3] * 12 + [4] * 9  # corners, sides, interior
    _check(
        got,
        {
            "voronoi_area_total": 900.0,
            "voronoi_area_mean": 100.0,
            "voronoi_area_std": 0.0,
            "voronoi_perimeter_edge_mean": 10.0,
            "voronoi_perimeter_edge_min_max_ratio": 1.0,
            "voronoi_chord_mean": chord[1],
            "voronoi_chord_std": chord[0],
            "delaunay_side_mean": side[1],
            "delaunay_side_std": side[0],
            "delaunay_side_min_max_ratio": 1 / SQ2,
            "delaunay_area_mean": 50.0,
            "delaunay_area_std": 0.0,
            "mst_edge_mean": 10.0,
            "mst_edge_std": 0.0,
            "number_nuclei": 25,
            "nuclear_density": 25 / 900,
            "knn3_distance_sum_mean": (4 * corner + 21 * other) / 25,
            "neighbours_within_10px_mean": _m_stats(r10)[1],
            "neighbours_within_10px_std": _m_stats(r10)[0],
        },
    )


def test_voronoi_collinear_points_have_no_planar_features():
    got = _vor([[0, 0], [10, 0], [20, 0], [30, 0]])
    planar = af.VORONOI_FEATURES[:21] + ("nuclear_density",)
    assert all(got[k] == 0 for k in planar)
    _check(
        got,
        {
            "mst_edge_mean": 10.0,
            "number_nuclei": 4,
            "knn3_distance_sum_mean": (60 + 40 + 40 + 60) / 4,  # ends 10+20+30, inner 10+10+20
            "neighbours_within_10px_mean": (1 + 2 + 2 + 1) / 4,
        },
    )


def test_voronoi_duplicates_removed_and_tiny_sets():
    square = [[0, 0], [10, 0], [0, 10], [10, 10], [5, 5]]
    np.testing.assert_array_equal(
        af.voronoi_features(np.array(square + [[5, 5], [0, 0]], float)),
        af.voronoi_features(np.array(square, float)),
    )
    one = _vor([[3, 4]])
    assert one["number_nuclei"] == 1 and sum(abs(v) for v in one.values()) == 1
    two = _vor([[0, 0], [3, 4]])
    _check(two, {"mst_edge_mean": 5.0, "knn3_distance_sum_mean": 5.0, "number_nuclei": 2})
    assert two["voronoi_area_total"] == 0 and two["nuclear_density"] == 0


def test_patch_features_concatenates_51_then_18():
    rng = np.random.default_rng(0)
    pts, props = rng.uniform(0, 300, (70, 2)), rng.normal(size=(70, 12)) + 2
    got = af.patch_features(pts, props)
    assert got.shape == (69,)
    np.testing.assert_array_equal(got[:51], af.voronoi_features(pts))
    np.testing.assert_array_equal(got[51:], af.cell_graph_features(pts, props))


# ----------------------------------------------------------------------------- nuclei


def _glcm_write_out(grey_box: np.ndarray, mask: np.ndarray) -> list[float]:
    """Contrast, energy, correlation, homogeneity, ASM of the official per-nucleus GLCM."""
    q = np.where(mask, grey_box, 0) // 32
    p = np.zeros((8, 8))
    for row in q:
        for a, b in zip(row[:-1], row[1:], strict=True):
            p[a, b] += 1
            p[b, a] += 1  # symmetric
    p /= p.sum()
    i, j = np.indices(p.shape)
    mi, mj = (i * p).sum(), (j * p).sum()
    si, sj = math.sqrt(((i - mi) ** 2 * p).sum()), math.sqrt(((j - mj) ** 2 * p).sum())
    asm = (p**2).sum()
    return [
        ((i - j) ** 2 * p).sum(),
        math.sqrt(asm),
        # skimage's graycoprops (which the official code calls) defines 1 for a constant box
        ((i - mi) * (j - mj) * p).sum() / (si * sj) if si * sj > 1e-15 else 1.0,
        (p / (1 + (i - j) ** 2)).sum(),
        asm,
    ]


def test_nucleus_properties_shape_intensity_and_glcm():
    labels = np.zeros((20, 30), dtype=np.int32)
    labels[2:6, 3:8] = 7  # 4 x 5 rectangle
    labels[10:13, 20:22] = 3  # 3 x 2 rectangle, lower label first
    grey = (np.arange(600).reshape(20, 30) * 7 % 256).astype(np.uint8)
    centroids, props = af.nucleus_properties(labels, grey)
    assert props.shape == (2, len(af.PROPERTY_NAMES)) == (2, 12)
    np.testing.assert_allclose(centroids, [[20.5, 11.0], [5.0, 3.5]])  # (x, y), label 3 first
    col = dict(zip(af.PROPERTY_NAMES, props[1], strict=True))
    assert col["area"] == 20
    assert col["equivalent_diameter"] == pytest.approx(math.sqrt(4 * 20 / math.pi))
    assert col["mean_intensity"] == pytest.approx(grey[2:6, 3:8].mean())
    assert col["eccentricity"] > 0 and col["major_axis_length"] > col["minor_axis_length"]
    box = grey[2:6, 3:8]
    np.testing.assert_allclose(props[1, 7:], _glcm_write_out(box, np.ones_like(box, bool)))
    # RGB input goes through OpenCV's grey weights
    rgb = np.repeat(grey[..., None], 3, axis=2)
    np.testing.assert_allclose(af.nucleus_properties(labels, rgb)[1], props)
    # without an image the six intensity columns are 0
    _, no_image = af.nucleus_properties(labels)
    np.testing.assert_array_equal(no_image[:, 6:], 0)
    np.testing.assert_array_equal(no_image[:, :6], props[:, :6])


def test_nucleus_properties_glcm_uses_zeroed_background_in_the_box():
    labels = np.zeros((14, 14), dtype=np.int64)
    rr, cc = disk((6, 6), 5, shape=labels.shape)
    labels[rr, cc] = 1
    grey = np.full((14, 14), 200, dtype=np.uint8)
    _, props = af.nucleus_properties(labels, grey)
    assert 0 < props[0, 7] and props[0, 9] < 1  # the zeroed corners give contrast
    r0, r1, c0, c1 = rr.min(), rr.max() + 1, cc.min(), cc.max() + 1
    want = _glcm_write_out(grey[r0:r1, c0:c1], labels[r0:r1, c0:c1] == 1)
    np.testing.assert_allclose(props[0, 7:], want)
    assert props[0, 6] == 200


def test_nucleus_properties_thin_nucleus_has_zero_texture_and_border_nucleus_is_clipped():
    labels = np.zeros((10, 10), dtype=np.int32)
    labels[5, 2:7] = 1  # one row thick: GLCM skipped (0)
    labels[0:3, 4:9] = 2  # touches the top border
    _, props = af.nucleus_properties(labels, np.full((10, 10), 90, np.uint8))
    np.testing.assert_array_equal(props[0, 7:], 0)
    # a rectangle of one grey level: contrast 0, energy 1, correlation 1 (skimage), ...
    np.testing.assert_allclose(props[1, 7:], [0, 1, 1, 1, 1])
    assert props[1, 0] == 15 and props[1, 6] == 90


def test_nucleus_properties_rejects_bad_labels():
    with pytest.raises(ValueError, match="2-D integer"):
        af.nucleus_properties(np.zeros((4, 4), dtype=float))
    with pytest.raises(ValueError, match=">= 0"):
        af.nucleus_properties(-np.ones((4, 4), dtype=int))
    with pytest.raises(ValueError, match="does not match"):
        af.nucleus_properties(np.zeros((4, 4), dtype=int), np.zeros((5, 4, 3), np.uint8))


# ----------------------------------------------------------------------------- images


def _dots(labels: np.ndarray, row0: int, col0: int, count: int, start: int) -> int:
    """Draws ``count`` 2 x 2 nuclei on a 10 px grid in the 100 px patch at (row0, col0)."""
    for k in range(count):
        r, c = row0 + 3 + 10 * (k // 10), col0 + 3 + 10 * (k % 10)
        labels[r : r + 2, c : c + 2] = start + k
    return start + count


def test_image_patch_features_keeps_more_than_64_nuclei():
    labels = np.zeros((100, 300), dtype=np.int32)
    nxt = _dots(labels, 0, 0, 65, 1)
    nxt = _dots(labels, 0, 100, 64, nxt)  # exactly 64: skipped
    _dots(labels, 0, 200, 65, nxt)
    got = af.image_patch_features(labels, patch_size=100)
    assert got.features.shape == (2, 69) and got.features.dtype == np.float32
    np.testing.assert_array_equal(got.positions, [[0, 0], [2, 0]])
    np.testing.assert_array_equal(got.n_nuclei, [65, 65])
    assert got.skipped == [(1, 0, 64)]
    assert got.features[0, af.FEATURE_NAMES.index("number_nuclei")] == 65
    assert got.features[0, af.FEATURE_NAMES.index("number_vertices")] == 65


def test_image_patch_features_too_few_patches():
    labels = np.zeros((100, 300), dtype=np.int32)
    _dots(labels, 0, 0, 65, 1)
    with pytest.raises(af.TooFewPatchesError, match=r"slide-7: 1 of 3 patches"):
        af.image_patch_features(labels, name="slide-7", patch_size=100)
    with pytest.raises(af.TooFewPatchesError, match=r"0 of 0 patches"):
        af.image_patch_features(labels[:50], patch_size=100)  # smaller than one patch
    assert issubclass(af.TooFewPatchesError, ValueError)
    with pytest.raises(ValueError, match="slide-7.*patch_size"):
        af.image_patch_features(labels, name="slide-7", patch_size=0)


def test_image_patch_features_nucleus_across_a_patch_border_is_clipped_in_both():
    labels = np.zeros((100, 200), dtype=np.int32)
    nxt = _dots(labels, 0, 0, 65, 1)
    nxt = _dots(labels, 0, 100, 65, nxt)
    labels[95:100, 96:104] = nxt  # 5 x 8 nucleus, half in each patch
    got = af.image_patch_features(labels, patch_size=100, min_nuclei=65)
    np.testing.assert_array_equal(got.n_nuclei, [66, 66])
    _, props = af.nucleus_properties(labels[:, :100])
    assert props[-1, 0] == 20  # clipped to the left patch: 5 x 4


def test_image_patch_features_round_trip_from_drawn_disks():
    rng = np.random.default_rng(7)
    size = 256
    labels = np.zeros((size, 2 * size), dtype=np.int32)
    image = np.full((size, 2 * size, 3), 230, dtype=np.uint8)
    n = 0
    for y in range(12, size - 8, 24):
        for x in range(12, 2 * size - 8, 24):
            n += 1
            radius = rng.uniform(4, 9)
            rr, cc = disk(
                (y + rng.uniform(-3, 3), x + rng.uniform(-3, 3)), radius, shape=labels.shape
            )
            labels[rr, cc] = n
            image[rr, cc] = rng.integers(40, 140, 3)
    got = af.image_patch_features(labels, image, patch_size=size, name="disks")
    assert got.features.shape == (2, 69)
    np.testing.assert_array_equal(got.positions, [[0, 0], [1, 0]])
    for k, (c, _) in enumerate(got.positions):
        window = np.s_[:, c * size : (c + 1) * size]
        pts, props = af.nucleus_properties(labels[window], image[window])
        np.testing.assert_allclose(
            got.features[k], af.patch_features(pts, props).astype(np.float32), rtol=1e-6
        )
        assert got.n_nuclei[k] == len(pts) > 64
    row = dict(zip(af.FEATURE_NAMES, got.features[0], strict=True))
    assert row["number_nuclei"] == got.n_nuclei[0]
    assert 20 < row["mst_edge_mean"] < 30  # disks ~24 px apart
    assert row["number_edges"] > 0
