r"""ABiG-Net's 69 per-patch features, ported from the authors' code.

ABiG-Net (Paul, Lund, Jour, Osman, Yener, arXiv 2510.13188; official code
``Paul1086/ABiG_Net``). An image is a set of patches; each patch becomes one node whose
69 features describe the arrangement of its nuclei. The official pipeline is four scripts,
ported here function by function:

``extract_nuclear_props_stardist.py`` → :func:`nucleus_properties`
    StarDist (``2D_versatile_he``) labels each patch; ``regionprops_table`` on the label map
    with the grey image (OpenCV ``RGB2GRAY``) as intensity image gives, per nucleus, the
    centroid and seven properties (area, major and minor axis length, perimeter,
    eccentricity, equivalent diameter, mean intensity), and a grey-level co-occurrence
    matrix of the nucleus' bounding box (pixels outside the nucleus set to 0, grey levels
    quantised to ``floor(g / 32)`` in 0..7, distance 1, angle 0, symmetric, normalised)
    five more (contrast, energy, correlation, homogeneity, ASM; a nucleus whose box is
    thinner than 2 px, or a non-finite value, gives 0). The 12 columns, in this order, are
    the *property vector* of a nucleus (:data:`PROPERTY_NAMES`).

``extract_cell_graph_features.py`` → :func:`cell_graph_features` (18, :data:`CELL_GRAPH_FEATURES`)
    The cell graph joins nuclei :math:`i \ne j` when :math:`\lVert p_i - p_j \rVert \le 64`
    px (``cKDTree.query_pairs``, inclusive) **and** the cosine of their property vectors is
    :math:`\ge 0.70`. Its 18 statistics (Table 4 of the paper), as the official code
    computes them with NetworkX / SciPy:

    - ``clustering_coefficient``: mean over all nodes of :math:`2T_i / (d_i(d_i - 1))`
      (0 where :math:`d_i < 2`), :math:`T_i` the triangles through :math:`i`;
    - ``average_degree`` :math:`2E/n`; ``number_connected_components`` (isolated nuclei
      count); ``giant_connected_component_ratio`` (largest component / :math:`n`);
      ``number_vertices`` :math:`n`; ``number_edges`` :math:`E`;
    - eccentricity :math:`e_i` = the largest hop distance from :math:`i` **to a node it can
      reach** (the official code takes ``nanmax`` over the finite distances, so a
      disconnected graph never gives an infinite eccentricity and an isolated nucleus has
      :math:`e_i = 0`); ``average_eccentricity``, ``radius`` = :math:`\min e`, ``diameter``
      = :math:`\max e`, ``number_central_points`` = :math:`\#\{i : e_i = \min e\}`,
      ``percent_central_points`` = that :math:`\times 100 / n`;
    - ``closeness_average``: mean of NetworkX's closeness with the Wasserman–Faust
      correction, :math:`c_i = \frac{r_i - 1}{\sum_j d_{ij}} \cdot \frac{r_i - 1}{n - 1}`,
      :math:`r_i` the size of :math:`i`'s component (0 for an isolated nucleus);
    - ``laplacian_energy`` :math:`\sum_k |\mu_k - 2E/n|` over the eigenvalues of
      :math:`L = D - A`; ``laplacian_trace`` = :math:`\operatorname{tr} L = 2E`;
    - ``upper_slope`` / ``lower_slope``: the least-squares slope of the sorted eigenvalues of
      the normalised Laplacian (``csgraph.laplacian(normed=True)``: isolated nodes give 0)
      that lie in :math:`[1, 2)` / :math:`[0, 1)` against their rank 0, 1, ...; **NaN** when
      fewer than two lie in the interval (as the official code). Ours: eigenvalues within
      1e-9 of an integer are taken as that integer before binning. The official code bins
      the raw ``eigvalsh`` output, so whether the eigenvalue 0 (always present) is in
      :math:`[0, 1)`, or an eigenvalue 2 (a bipartite component) is out of :math:`[1, 2)`,
      depends on the sign of a 1e-17 rounding error (for a 5-cycle, NumPy gives
      :math:`-6 \cdot 10^{-18}` and the official lower slope drops the 0); we give the
      exact-arithmetic answer of the same rule;
    - ``largest_adjacency_eigenvalue`` and ``adjacency_energy`` :math:`\sum_k |\lambda_k(A)|`.

``vor_del_mst_nn_features.m`` → :func:`voronoi_features` (51, :data:`VORONOI_FEATURES`)
    On the centroids with duplicates removed (``unique(..., 'rows', 'stable')``),
    with ``stats(x) = (std (N - 1), mean, min/max, disorder 1 - 1/(1 + std/mean))``, where an
    empty ``x`` gives all four 0, a max :math:`\le` eps gives min/max 0, a mean :math:`\le`
    eps gives disorder 0, and the std of one value is 0 (MATLAB's ``std``):

    - Voronoi and Delaunay, only when there are at least 3 points not on one line: the
      area of every **bounded** Voronoi cell, the lengths of its boundary edges, and its
      chords (the distances between every two of its vertices); the side lengths (three per
      triangle, so inner sides count twice) and areas of the Delaunay triangles. If Qhull
      fails, all of these are empty (the ``.m``'s silent ``catch``);
    - the minimum-spanning-tree edge lengths on the complete Euclidean graph;
    - per nucleus, the summed distance to its 3, 5 and 7 nearest neighbours (:math:`k`
      capped at :math:`n - 1`) and the number of other nuclei within 10, 20, 30, 40, 50 px
      (inclusive);
    - the number of nuclei and the density :math:`n / \sum` Voronoi area (0 when that sum
      is :math:`\le` eps).

    The 51 are laid out as the ``.m`` assigns them (its index permutations included:
    Delaunay's min/max ratio comes before its std, MST's mean before its std, and the
    :math:`k`-NN and radius blocks are mean, std, disorder with no min/max); see
    :data:`VORONOI_FEATURES`.

``combine_patch_features.py`` → :func:`patch_features` (69, :data:`FEATURE_NAMES`)
    ``concatenate([51 Voronoi/Delaunay/MST/NN, 18 cell graph])``, nothing else: **no NaN
    cleaning and no scaling**. ``abignet_data.py`` stacks an image's patch vectors as its
    node set and standardises them with a ``StandardScaler`` fitted on the training images'
    nodes only; that belongs to the training code, not here. NaN slopes are kept: the
    official scaler ignores NaN when fitting and passes it through, so a training loop must
    decide what to do with them (the official one does nothing).

Patches (:func:`image_patch_features`)
    The official code receives each image as a folder of patch PNGs and segments every patch
    on its own, so a nucleus crossing a patch border is cut by it. Here an image is one label
    map (from our segmenter, or a user's StarDist or any instance masks), cut into
    non-overlapping ``patch_size`` squares from the top-left corner (a partial last row or
    column is dropped); every patch's label map is cropped and measured on its own, so a
    nucleus crossing the border is clipped to the patch, as StarDist on the patch PNG would
    clip it. A patch counts only with **more than** ``min_nuclei`` = 64 nuclei (both
    official scripts skip ``<= 64``); fewer than two counting patches raises
    :class:`TooFewPatchesError`, never an empty graph.

Choices where the official code is silent, or where MATLAB and SciPy differ (ours):
    - **Patch size.** The official code takes pre-cut patches and fixes no size (the paper
      could not be read; a third-party summary of it reports worse results with 512 × 512
      patches on its first dataset). :data:`PATCH_SIZE` = 1024 px is our default.
    - **Voronoi cells.** ``voronoin`` and ``scipy.spatial.Voronoi`` both call Qhull (run
      here with MATLAB's options, ``Qbb``). The ``.m`` skips every cell holding vertex 1,
      MATLAB's vertex at infinity; SciPy marks the same cells with vertex ``-1``, and those
      are skipped. These are exactly the cells of the points on the convex hull. Bounded
      cells are kept whole even where they reach beyond the patch (the ``.m`` clips nothing).
      Vertices are ordered by angle around the cell's mean vertex (cells are convex), as
      MATLAB lists 2-D cells in adjacent order.
    - **Delaunay.** MATLAB's ``delaunay`` is not Qhull; for co-circular points (a regular
      grid) it may pick other diagonals than ``scipy.spatial.Delaunay``, which changes the
      side-length statistics but not the triangle areas' sum.
    - **Grey image.** OpenCV's fixed-point ``RGB2GRAY`` is written as
      ``rint(0.299 R + 0.587 G + 0.114 B)``; a 2-D ``image`` is taken as the grey image.
    - **No image.** Without ``image`` the six intensity columns (mean intensity and the five
      GLCM values) are 0, so the cosine is over the six shape columns only.
    - The StarDist script zeroes labels on pure-black pixels (padding); user masks are used
      as given.

Units are pixels of the image. Speed: see ``tests/test_abignet_features.py`` and the report
of the commit that added this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import csgraph
from scipy.spatial import Delaunay, QhullError, Voronoi, cKDTree
from scipy.spatial.distance import cdist
from skimage.feature import graycomatrix, graycoprops

from wsigraph.graphs.label_props import glcm_table, region_table
from wsigraph.graphs.orientation import check_label_map
from wsigraph.progress import progress_bar

__all__ = [
    "CELL_GRAPH_FEATURES",
    "FEATURE_NAMES",
    "PATCH_SIZE",
    "PROPERTY_NAMES",
    "VORONOI_FEATURES",
    "PatchFeatures",
    "TooFewPatchesError",
    "cell_graph_features",
    "image_patch_features",
    "nucleus_properties",
    "patch_features",
    "voronoi_features",
]

PATCH_SIZE = 1024  # ours: the official code takes pre-cut patches of unstated size
MIN_NUCLEI = 64  # a patch counts with MORE than this many nuclei
RADIUS = 64.0  # px, cell-graph edge length (inclusive)
MIN_COSINE = 0.70  # cell-graph edge: cosine of the property vectors >= this

# The per-nucleus property vector: props[:, 3:] of the official props file.
PROPERTY_NAMES: tuple[str, ...] = (
    "area",
    "major_axis_length",
    "minor_axis_length",
    "perimeter",
    "eccentricity",
    "equivalent_diameter",
    "mean_intensity",
    "glcm_contrast",
    "glcm_energy",
    "glcm_correlation",
    "glcm_homogeneity",
    "glcm_asm",
)
_REGIONPROPS = (
    "label",
    "centroid",
    "area",
    "axis_major_length",
    "axis_minor_length",
    "perimeter",
    "eccentricity",
    "equivalent_diameter_area",
)
_GLCM_PROPS = ("contrast", "energy", "correlation", "homogeneity", "ASM")
_GREY_WEIGHTS = np.array([0.299, 0.587, 0.114])

CELL_GRAPH_FEATURES: tuple[str, ...] = (
    "clustering_coefficient",
    "average_degree",
    "number_connected_components",
    "giant_connected_component_ratio",
    "number_vertices",
    "number_edges",
    "average_eccentricity",
    "radius",
    "diameter",
    "number_central_points",
    "percent_central_points",
    "closeness_average",
    "laplacian_energy",
    "laplacian_trace",
    "upper_slope",
    "lower_slope",
    "largest_adjacency_eigenvalue",
    "adjacency_energy",
)


def _stat_names(prefix: str, order: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{prefix}_{s}" for s in order)


_KS = (3, 5, 7)
_RADII = (10, 20, 30, 40, 50)
VORONOI_FEATURES: tuple[str, ...] = (
    ("voronoi_area_total",)
    + _stat_names("voronoi_area", ("std", "mean", "min_max_ratio", "disorder"))
    + _stat_names("voronoi_perimeter_edge", ("std", "mean", "min_max_ratio", "disorder"))
    + _stat_names("voronoi_chord", ("std", "mean", "min_max_ratio", "disorder"))
    + _stat_names("delaunay_side", ("min_max_ratio", "std", "mean", "disorder"))
    + _stat_names("delaunay_area", ("min_max_ratio", "std", "mean", "disorder"))
    + _stat_names("mst_edge", ("mean", "std", "min_max_ratio", "disorder"))
    + ("number_nuclei", "nuclear_density")
    + tuple(f"knn{k}_distance_sum_mean" for k in _KS)
    + tuple(f"knn{k}_distance_sum_std" for k in _KS)
    + tuple(f"knn{k}_distance_sum_disorder" for k in _KS)
    + tuple(f"neighbours_within_{r}px_mean" for r in _RADII)
    + tuple(f"neighbours_within_{r}px_std" for r in _RADII)
    + tuple(f"neighbours_within_{r}px_disorder" for r in _RADII)
)
# combine_patch_features.py: np.concatenate([vdmn_feats (51), cell_feats (18)])
FEATURE_NAMES: tuple[str, ...] = VORONOI_FEATURES + CELL_GRAPH_FEATURES
assert len(CELL_GRAPH_FEATURES) == 18 and len(VORONOI_FEATURES) == 51


class TooFewPatchesError(ValueError):
    """An image has fewer than two patches with enough nuclei to form an image-level graph."""


# ----------------------------------------------------------------------------- nuclei


def _grey(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The uint8 grey image ``[H, W]`` of an RGB ``[H, W, 3]`` or grey ``[H, W]`` image."""
    image = np.asarray(image)
    if image.shape[:2] != shape or image.ndim not in (2, 3):
        raise ValueError(f"'image' {image.shape} does not match the label map {shape}")
    if image.ndim == 3:
        if image.shape[2] != 3:
            raise ValueError(f"'image' must be [H, W, 3] RGB or [H, W] grey, got {image.shape}")
        image = np.rint(image[..., :3].astype(np.float64) @ _GREY_WEIGHTS)
    return np.clip(image, 0, 255).astype(np.uint8)


def _glcm_values(grey: np.ndarray, labels: np.ndarray, label_ids: np.ndarray, boxes) -> np.ndarray:
    """The five GLCM values ``[n, 5]`` of each nucleus' bounding box (official recipe)."""
    out = np.zeros((len(label_ids), 5))
    for i, (lab, (r0, c0, r1, c1)) in enumerate(zip(label_ids, boxes, strict=True)):
        if r1 - r0 < 2 or c1 - c0 < 2:
            continue
        mask = labels[r0:r1, c0:c1] == lab
        if mask.sum() < 2:
            continue
        patch = np.where(mask, grey[r0:r1, c0:c1], 0)
        patch = np.clip(patch // 32, 0, 7).astype(np.uint8)  # 8 grey levels
        glcm = graycomatrix(patch, [1], [0], levels=8, symmetric=True, normed=True)
        values = np.array([graycoprops(glcm, p)[0, 0] for p in _GLCM_PROPS])
        out[i] = np.where(np.isfinite(values), values, 0.0)
    return out


def nucleus_properties(
    labels: np.ndarray, image: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Returns the centroid and the official property vector of every nucleus.

    Args:
        labels (np.ndarray): Instance label map ``[H, W]``, integers, 0 = background (from
            our segmenter, or a user's StarDist or any instance masks).
        image (np.ndarray, optional): The RGB ``[H, W, 3]`` (uint8) or grey ``[H, W]`` image
            the intensity columns are measured on; without it they are 0. (default: None)

    Returns:
        ``(centroids, props)``: ``[n, 2]`` float64 as ``(x, y)`` = (column, row), and
        ``[n, 12]`` float64 in the order of :data:`PROPERTY_NAMES`; rows in ascending label
        order.
    """
    labels = check_label_map(labels, "labels")
    grey = None if image is None else _grey(image, labels.shape)
    props = region_table(labels)  # = regionprops_table(labels, _REGIONPROPS + ("bbox",))
    n = len(props["label"])
    centroids = np.stack([props["centroid-1"], props["centroid-0"]], 1).reshape(n, 2)
    columns = [props[k] for k in _REGIONPROPS[2:]]  # the six shape columns
    intensity = np.zeros((n, 6))
    if grey is not None and n:
        index = np.searchsorted(props["label"], labels[labels > 0])
        sums = np.bincount(index, grey[labels > 0].astype(np.float64), minlength=n)
        intensity[:, 0] = sums / props["area"]
        intensity[:, 1:] = glcm_table(grey, labels, props)  # = _glcm_values, vectorised
    out = np.column_stack([np.stack(columns, 1).reshape(n, 6), intensity])
    return centroids.astype(np.float64), out.astype(np.float64)


# ----------------------------------------------------------------------------- cell graph


def _check_points(points: np.ndarray, what: str) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"'{what}' must have shape [n, 2] (x, y), got {points.shape}")
    return points


def cell_adjacency(
    points: np.ndarray, props: np.ndarray, radius: float = RADIUS, min_cosine: float = MIN_COSINE
) -> np.ndarray:
    """The cell graph's dense 0/1 adjacency ``[n, n]``: within ``radius`` (inclusive) and
    cosine of the property vectors ``>= min_cosine``. Rows with a non-finite point or
    property are dropped first, as the official ``load_props``."""
    points = _check_points(points, "points")
    props = np.asarray(props, dtype=np.float64).reshape(len(points), -1)
    keep = np.isfinite(points).all(1) & np.isfinite(props).all(1)
    points, props = points[keep], props[keep]
    n = len(points)
    adj = np.zeros((n, n))
    if n < 2:
        return adj
    pairs = cKDTree(points).query_pairs(radius, output_type="ndarray")  # [Q, 2], d <= r
    if len(pairs) == 0:
        return adj
    norm = np.linalg.norm(props, axis=1, keepdims=True)
    unit = np.divide(props, norm, out=np.zeros_like(props), where=norm > 0)  # sklearn: 0 rows
    cosine = np.einsum("qc,qc->q", unit[pairs[:, 0]], unit[pairs[:, 1]])
    i, j = pairs[cosine >= min_cosine].T
    adj[i, j] = adj[j, i] = 1.0
    return adj


_SNAP = 1e-9  # eigenvalues this close to an integer are that integer (see the docstring)


def _slope(eig: np.ndarray, low: float, high: float) -> float:
    """Least-squares slope of the sorted eigenvalues in ``[low, high)`` against their rank."""
    y = np.sort(eig)
    whole = np.rint(y)
    y = np.where(np.abs(y - whole) < _SNAP, whole, y)  # 0, 1, 2 exactly, not 1e-17 off
    y = y[(y >= low) & (y < high)]
    if len(y) < 2:
        return np.nan
    x = np.arange(len(y), dtype=np.float64)
    return float(np.polyfit(x, y, 1)[0])


def graph_statistics(adj: np.ndarray) -> np.ndarray:
    """The 18 :data:`CELL_GRAPH_FEATURES` of an undirected graph's 0/1 adjacency ``[n, n]``."""
    adj = np.asarray(adj, dtype=np.float64)
    n = len(adj)
    if n == 0:
        return np.full(len(CELL_GRAPH_FEATURES), np.nan)
    deg = adj.sum(1)  # [n]
    n_edges = deg.sum() / 2
    triangles = ((adj @ adj) * adj).sum(1) / 2  # [n]
    pairs = deg * (deg - 1) / 2
    clustering = np.divide(triangles, pairs, out=np.zeros(n), where=deg >= 2)

    n_comp, comp = csgraph.connected_components(adj, directed=False)
    giant = np.bincount(comp).max() / n

    dist = csgraph.shortest_path(adj, directed=False, unweighted=True)  # [n, n], inf apart
    finite = np.isfinite(dist)
    ecc = np.where(finite, dist, -np.inf).max(1)  # the diagonal 0 is always finite
    radius, diameter = ecc.min(), ecc.max()
    central = int((ecc == radius).sum())
    reach = finite.sum(1) - 1.0  # r_i - 1
    total = np.where(finite, dist, 0.0).sum(1)
    closeness = np.zeros(n)
    if n > 1:
        ok = total > 0
        closeness[ok] = reach[ok] / total[ok] * reach[ok] / (n - 1)

    adj_eig = np.linalg.eigvalsh(adj)
    lap = csgraph.laplacian(adj, normed=False)
    lap_eig = np.linalg.eigvalsh(lap)
    norm_eig = np.linalg.eigvalsh(csgraph.laplacian(adj, normed=True))
    average_degree = 2 * n_edges / n
    return np.array(
        [
            clustering.mean(),
            deg.mean(),
            n_comp,
            giant,
            n,
            n_edges,
            ecc.mean(),
            radius,
            diameter,
            central,
            central / n * 100.0,
            closeness.mean(),
            np.abs(lap_eig - average_degree).sum(),
            np.trace(lap),
            _slope(norm_eig, 1.0, 2.0),
            _slope(norm_eig, 0.0, 1.0),
            adj_eig.max(),
            np.abs(adj_eig).sum(),
        ],
        dtype=np.float64,
    )


def cell_graph_features(
    points: np.ndarray, props: np.ndarray, radius: float = RADIUS, min_cosine: float = MIN_COSINE
) -> np.ndarray:
    """The 18 cell-graph statistics ``[18]`` (:data:`CELL_GRAPH_FEATURES`) of one patch.

    Args:
        points (np.ndarray): Nucleus centroids ``[n, 2]`` (x, y), px.
        props (np.ndarray): Property vectors ``[n, m]`` (:func:`nucleus_properties`).
        radius (float): Longest edge, px, inclusive. (default: 64.0)
        min_cosine (float): Smallest cosine of two property vectors joined. (default: 0.70)
    """
    return graph_statistics(cell_adjacency(points, props, radius, min_cosine))


# ----------------------------------------------------------------------------- Voronoi & co.


def _stats(x) -> tuple[float, float, float, float]:
    """``(std, mean, min/max, disorder)`` as the ``.m``'s ``get_stats`` (std with N - 1)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size == 0:
        return 0.0, 0.0, 0.0, 0.0
    eps = np.finfo(np.float64).eps
    s = float(x.std(ddof=1)) if x.size > 1 else 0.0
    m = float(x.mean())
    mm = 0.0 if x.max() <= eps else float(x.min() / x.max())
    d = 0.0 if m <= eps else 1.0 - 1.0 / (1.0 + s / m)
    return s, m, mm, d


def _polygon_area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _bounded_cells(vor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Areas, boundary-edge lengths and chords of the bounded cells, in ``point_region`` order,
    every cell's vertices in adjacent order (sorted by angle around their mean), all cells at
    once: the same arrays as measuring cell by cell."""
    cells = [vor.regions[r] for r in vor.point_region]
    cells = [c for c in cells if c and -1 not in c and len(c) >= 3]  # bounded (not on the hull)
    cells = [c for c in cells if np.isfinite(vor.vertices[c]).all()]
    if not cells:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    sizes = np.array([len(c) for c in cells])
    owner = np.repeat(np.arange(len(cells)), sizes)
    v = vor.vertices[np.concatenate(cells)]  # [V, 2]
    centre = np.stack([np.bincount(owner, v[:, d]) / sizes for d in (0, 1)], 1)
    angle = np.arctan2(v[:, 1] - centre[owner, 1], v[:, 0] - centre[owner, 0])
    v = v[np.lexsort((angle, owner))]
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pos = np.arange(len(v)) - start[owner]
    nxt = start[owner] + (pos + 1) % sizes[owner]
    cross = v[:, 0] * v[nxt, 1] - v[:, 1] * v[nxt, 0]
    areas = 0.5 * np.abs(np.bincount(owner, cross, len(cells)))
    step = v[nxt] - v
    edges = np.hypot(step[:, 0], step[:, 1])
    chords = [None] * len(cells)
    for size in np.unique(sizes):
        which = np.flatnonzero(sizes == size)
        block = v[start[which][:, None] + np.arange(size)]  # [c, size, 2]
        i, j = np.triu_indices(size, 1)
        d = np.hypot(*(block[:, i] - block[:, j]).transpose(2, 0, 1))  # [c, pairs]
        for k, c in enumerate(which):
            chords[c] = d[k]
    return areas, edges, np.concatenate(chords)


def _voronoi_delaunay(xy: np.ndarray):
    """Bounded Voronoi cell areas, edge and chord lengths; Delaunay side lengths and areas."""
    areas, edges, chords, sides, tri_areas = [], [], [], np.zeros(0), np.zeros(0)
    try:
        vor = Voronoi(xy, qhull_options="Qbb")  # voronoin's default options
        areas, edges, chords = _bounded_cells(vor)
        tri = Delaunay(xy).simplices
        if len(tri):
            p1, p2, p3 = xy[tri[:, 0]], xy[tri[:, 1]], xy[tri[:, 2]]
            sides = np.concatenate(
                [
                    np.hypot(*(p1 - p2).T),
                    np.hypot(*(p1 - p3).T),
                    np.hypot(*(p2 - p3).T),
                ]
            )
            cross = (p2[:, 0] - p1[:, 0]) * (p3[:, 1] - p1[:, 1]) - (p3[:, 0] - p1[:, 0]) * (
                p2[:, 1] - p1[:, 1]
            )
            tri_areas = np.abs(cross) / 2
    except (QhullError, ValueError):  # the .m's silent catch: no planar features
        return np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0)
    return areas, edges, chords, sides, tri_areas


def voronoi_features(points: np.ndarray) -> np.ndarray:
    """The 51 Voronoi / Delaunay / MST / k-NN statistics ``[51]`` (:data:`VORONOI_FEATURES`)
    of one patch's nucleus centroids ``[n, 2]`` (x, y), px; ``vor_del_mst_nn_features.m``."""
    xy = _check_points(points, "points")
    xy = xy[np.isfinite(xy).all(1)]
    _, first = np.unique(xy, axis=0, return_index=True)
    xy = xy[np.sort(first)]  # unique(..., 'rows', 'stable')
    n = len(xy)
    f = np.zeros(52)  # 1-based like the .m; f[0] unused

    empty = np.zeros(0)
    areas = edges = chords = sides = tri_areas = empty
    if n >= 3 and np.linalg.matrix_rank(xy - xy.mean(0)) >= 2:
        areas, edges, chords, sides, tri_areas = _voronoi_delaunay(xy)

    if n > 1:
        dist = cdist(xy, xy)  # [n, n]
        mst = csgraph.minimum_spanning_tree(dist).data  # [n - 1] on the complete graph
        dsort = np.sort(dist, axis=1)
        knn = np.stack([dsort[:, 1 : min(k, n - 1) + 1].sum(1) for k in _KS])  # [3, n]
        within = np.stack([(dist <= r).sum(1) - 1 for r in _RADII])  # [5, n]
    else:
        mst, knn, within = empty, np.zeros((3, n)), np.zeros((5, n))

    f[1] = areas.sum()
    f[2], f[3], f[4], f[5] = _stats(areas)
    f[6], f[7], f[8], f[9] = _stats(edges)
    f[10], f[11], f[12], f[13] = _stats(chords)
    f[15], f[16], f[14], f[17] = _stats(sides)
    f[19], f[20], f[18], f[21] = _stats(tri_areas)
    f[23], f[22], f[24], f[25] = _stats(mst)
    f[26] = n
    if areas.sum() > np.finfo(np.float64).eps:
        f[27] = n / areas.sum()
    for i in range(3):
        f[31 + i], f[28 + i], _, f[34 + i] = _stats(knn[i])
    for i in range(5):
        f[42 + i], f[37 + i], _, f[47 + i] = _stats(within[i])
    return f[1:]


def patch_features(
    points: np.ndarray,
    props: np.ndarray,
    radius: float = RADIUS,
    min_cosine: float = MIN_COSINE,
) -> np.ndarray:
    """The 69 features ``[69]`` of one patch (:data:`FEATURE_NAMES`): the 51 of
    :func:`voronoi_features` then the 18 of :func:`cell_graph_features`, as
    ``combine_patch_features.py`` concatenates them. NaN (a slope) is kept."""
    return np.concatenate(
        [voronoi_features(points), cell_graph_features(points, props, radius, min_cosine)]
    )


# ----------------------------------------------------------------------------- images


@dataclass
class PatchFeatures:
    """An image's patch nodes.

    Attributes:
        features: ``[P, 69]`` float32, :data:`FEATURE_NAMES`, unscaled, NaN kept.
        positions: ``[P, 2]`` int64, (column, row) of each patch on the patch grid.
        n_nuclei: ``[P]`` int64, nuclei in each patch.
        skipped: ``(column, row, n_nuclei)`` of every patch with too few nuclei.
    """

    features: np.ndarray
    positions: np.ndarray
    n_nuclei: np.ndarray
    skipped: list[tuple[int, int, int]] = field(default_factory=list)


def image_patch_features(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    *,
    name: str = "image",
    patch_size: int = PATCH_SIZE,
    min_nuclei: int = MIN_NUCLEI,
    radius: float = RADIUS,
    min_cosine: float = MIN_COSINE,
    progress: bool = False,
) -> PatchFeatures:
    """Cuts an image's label map into patches and returns the 69 features of each patch
    with more than ``min_nuclei`` nuclei.

    Args:
        labels (np.ndarray): Instance label map ``[H, W]`` of the whole image, 0 = background.
        image (np.ndarray, optional): RGB ``[H, W, 3]`` or grey ``[H, W]`` image for the
            intensity properties. (default: None)
        name (str): The image's name, used in errors. (default: "image")
        patch_size (int): Side of the square patches, px. (default: :data:`PATCH_SIZE`)
        min_nuclei (int): A patch counts with more than this many nuclei. (default: 64)
        radius (float): Cell-graph edge length, px. (default: 64.0)
        min_cosine (float): Cell-graph cosine threshold. (default: 0.70)
        progress (bool): Show a progress bar. (default: False)

    Raises:
        TooFewPatchesError: fewer than two patches have more than ``min_nuclei`` nuclei.
        ValueError: bad ``labels``, ``image`` or ``patch_size``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{name}: 'labels' must be a 2-D integer array, got shape {labels.shape} "
            f"and dtype {labels.dtype}"
        )
    if image is not None and np.asarray(image).shape[:2] != labels.shape:
        raise ValueError(
            f"{name}: 'image' {np.asarray(image).shape} does not match 'labels' {labels.shape}"
        )
    if int(patch_size) < 1:
        raise ValueError(f"{name}: 'patch_size' must be >= 1, got {patch_size}")
    rows, cols = labels.shape[0] // patch_size, labels.shape[1] // patch_size
    feats, positions, counts, skipped = [], [], [], []
    cells = [(r, c) for r in range(rows) for c in range(cols)]
    for r, c in progress_bar(cells, desc=name, disable=not progress):
        window = np.s_[r * patch_size : (r + 1) * patch_size, c * patch_size : (c + 1) * patch_size]
        tile = labels[window]
        n = len(np.unique(tile[tile > 0]))
        if n <= min_nuclei:
            skipped.append((c, r, n))
            continue
        points, props = nucleus_properties(tile, None if image is None else image[window])
        feats.append(patch_features(points, props, radius, min_cosine))
        positions.append((c, r))
        counts.append(len(points))
    if len(feats) < 2:
        raise TooFewPatchesError(
            f"{name}: {len(feats)} of {len(cells)} patches ({patch_size} px) have more than "
            f"{min_nuclei} nuclei; at least 2 are needed for an image-level graph"
        )
    return PatchFeatures(
        features=np.stack(feats).astype(np.float32),
        positions=np.asarray(positions, dtype=np.int64).reshape(-1, 2),
        n_nuclei=np.asarray(counts, dtype=np.int64),
        skipped=skipped,
    )
