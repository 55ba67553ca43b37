r"""Local scale of the ABiG-Net *orientation variant*: patch-level graphs from cellular
orientation and the features that quantify their local structure. This is our design, written
from the abstract before the official code (``Paul1086/ABiG_Net``) was found; the official 69
per-patch features are :mod:`wsigraph.graphs.abignet_features` (the row "ABiG-Net").

ABiG-Net (Paul, Lund, Jour, Osman, Yener, arXiv 2510.13188; ``003_*.txt``): "At the local
scale, we construct patch-level graphs from cellular orientation within each patch and extract
features to quantify local structures." Only the abstract and third-party summaries of the paper
could be read here (the full text was not reachable), so **every concrete choice below is ours**;
it follows the authors' own line of work where that is public (C2P-GCN, arXiv 2403.04962:
patch-level cell graphs described by Voronoi / Delaunay / MST / nearest-neighbour statistics;
cell orientation entropy, "COrE", Lee et al. 2017: clusters of nearby, similarly oriented nuclei
and the entropy of their orientations).

Orientation (:func:`nuclei_orientations`)
    :math:`\theta` is ``skimage.measure.regionprops``' ``orientation``: the angle between the
    row axis and the major axis of the ellipse with the nucleus' second moments, in
    :math:`(-\pi/2, \pi/2]`. An orientation is an *axis*: :math:`\theta` and
    :math:`\theta + \pi` are the same, so every statistic uses the doubled angle
    :math:`2\theta` (axial statistics), which is continuous where :math:`\theta` wraps.

Orientation graph (:func:`orientation_graph`)
    Nodes are nuclei. Nuclei :math:`i \ne j` are joined, in both directions, when their
    centroids are closer than ``radius`` (the radius graph of
    :func:`wsigraph.graphs.nuclei.nuclei_edges`, reused) **and** their axes differ by at most
    ``max_angle`` (COrE's rule: nearby and similarly oriented), with weight

    .. math::
        w_{ij} = \Bigl(1 - \frac{d_{ij}}{r}\Bigr)\,\cos^2(\theta_i - \theta_j)
               = \Bigl(1 - \frac{d_{ij}}{r}\Bigr)\,\frac{1 + \cos 2(\theta_i - \theta_j)}{2}
               \in (0, 1],

    the Eq. 1 distance weight of the nuclei graph times an axial similarity that is 1 for
    parallel and 0 for perpendicular nuclei. Its connected components of two or more nuclei are
    the *orientation clusters*.

Local structure features (:func:`local_structure_features`, :data:`FEATURE_NAMES`)
    One vector per patch from the nuclei whose centroid lies in it (documented feature by
    feature at :data:`FEATURE_NAMES`): density and shape; orientation coherence (the length of
    the mean doubled-angle vector, 1 when all nuclei are parallel), the mean doubled-angle
    vector itself, orientation entropy (histogram of :math:`\theta`, normalised to [0, 1], 0
    when all nuclei share a bin); neighbour alignment; nearest-neighbour spacing; Delaunay and
    minimum-spanning-tree edge lengths (C2P-GCN's graph families); the orientation graph's
    degree and clusters, and the entropy of the cluster orientations (COrE).

Patches (:func:`patch_features`)
    An ROI is segmented once (:func:`wsigraph.data.nuclei_seg.classical_nuclei` unless an
    instance mask is given), cut into non-overlapping ``patch_size`` squares from the top-left
    corner (a partial last row / column is dropped), and every nucleus goes to the patch that
    holds its centroid. Each patch's features use only its own nuclei.

:func:`roi_graph` turns an ROI's patch features and grid into the node set of the image-level
graph; :func:`roi_graphs` does it for a set of ROIs, caching each ROI's features
(:func:`cached_patch_features`: keyed by pixels and settings, resumable, atomic writes).

Units are pixels of the ROI: standardise the features per cohort before training (the training
code does, with the training split's statistics).
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree
from scipy.spatial import Delaunay, QhullError, cKDTree
from torch import Tensor
from torch_geometric.data import Data

from wsigraph.graphs.label_props import region_table
from wsigraph.graphs.nuclei import RADIUS, nuclei_edges
from wsigraph.graphs.spatial import _as_points
from wsigraph.io import array_digest, atomic_path
from wsigraph.progress import progress_bar

# Default largest axis difference of an orientation-graph edge (COrE links nuclei whose
# orientations are "similar"; it names no value). 30 degrees: two of the 12 default bins.
MAX_ANGLE = math.pi / 6
# Default orientation histogram: 12 bins of 15 degrees, centred on 0, 15, 30, ... degrees.
N_BINS = 12

# Columns of `nuclei_orientations`.
NUCLEUS_COLUMNS = (
    "label",
    "row",
    "col",
    "orientation",
    "area",
    "eccentricity",
    "major_axis_length",
    "minor_axis_length",
)

# Per-patch features, in the column order of `local_structure_features`. n = nuclei in the
# patch; theta = orientation; "vector" = the doubled-angle unit vector (cos 2theta, sin 2theta).
#   density               n per 10,000 px^2 of patch area (a 100 x 100 px square)
#   area_mean, area_std   nucleus area (px)
#   eccentricity_mean     of the same-moments ellipses: 0 round .. 1 a line
#   coherence             |mean vector| in [0, 1]: 1 when all nuclei are parallel, ~0 when
#                         the orientations are uniform (or cancel)
#   orientation_cos2      the mean vector: its direction is twice the dominant axis; together
#   orientation_sin2      with coherence it says where the nuclei point (rotation-dependent)
#   orientation_entropy   Shannon entropy of the n_bins histogram of theta (bins centred on
#                         k pi / n_bins, so theta and theta + pi share a bin) / log(n_bins):
#                         0 when all nuclei share a bin, 1 when the bins are equally full
#   alignment             mean of cos 2(theta_i - theta_j) over neighbour pairs (d < radius),
#                         weighted by 1 - d / radius: 1 parallel, 0 unrelated, -1 perpendicular
#   nn_dist_mean          distance from each nucleus to its nearest other nucleus (px): spacing
#   nn_dist_cv            its std / mean: 0 for a lattice, larger for clumped nuclei
#   delaunay_mean         lengths of the Delaunay triangulation's edges (px)
#   delaunay_std
#   mst_mean              lengths of the Euclidean minimum spanning tree's edges (px)
#   mst_std
#   graph_degree          mean degree of the orientation graph (edges per nucleus)
#   clustered_fraction    share of nuclei in an orientation cluster (component of >= 2 nuclei)
#   cluster_size_mean     mean nuclei per orientation cluster
#   cluster_entropy       COrE: the orientation entropy (as above) of the clusters' own
#                         orientations (half the angle of each cluster's mean vector); 0 with
#                         fewer than two clusters
# Degenerate patches: with no nuclei every feature is 0; quantities that need two nuclei
# (spacing, alignment, Delaunay, MST, clusters) are 0 with one; Delaunay falls back to the MST
# when the nuclei are collinear.
FEATURE_NAMES = (
    "density",
    "area_mean",
    "area_std",
    "eccentricity_mean",
    "coherence",
    "orientation_cos2",
    "orientation_sin2",
    "orientation_entropy",
    "alignment",
    "nn_dist_mean",
    "nn_dist_cv",
    "delaunay_mean",
    "delaunay_std",
    "mst_mean",
    "mst_std",
    "graph_degree",
    "clustered_fraction",
    "cluster_size_mean",
    "cluster_entropy",
)


def check_label_map(labels, name: str = "labels") -> np.ndarray:
    """``labels`` as an array, checked to be an instance label map: 2-D, integer, >= 0
    (0 = background).

    Raises:
        ValueError: naming ``name``, the shape and dtype, or the negative label.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{name!r} must be a 2-D integer array, got shape {labels.shape} "
            f"and dtype {labels.dtype}"
        )
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name!r} labels must be >= 0 (0 = background), got {labels.min()}")
    return labels


def nuclei_orientations(instances: np.ndarray) -> pd.DataFrame:
    r"""Returns the position, orientation and shape of every nucleus of an instance mask.

    Args:
        instances (np.ndarray): Instance mask ``[H, W]``, integers: ``0`` background, ``k > 0``
            the pixels of nucleus ``k`` (labels need not be consecutive), e.g. from
            :func:`wsigraph.data.nuclei_seg.classical_nuclei`.

    Returns:
        pandas.DataFrame: one row per non-empty label, ascending, with the columns of
        :data:`NUCLEUS_COLUMNS`: ``label``; centroid ``row``, ``col`` (px); ``orientation``
        :math:`\theta` in :math:`(-\pi/2, \pi/2]` (regionprops: angle between the row axis and
        the major axis, counter-clockwise); ``area`` (px); ``eccentricity``;
        ``major_axis_length`` and ``minor_axis_length`` (px).

    Raises:
        ValueError: If ``instances`` is not a non-negative 2-D integer array.
    """
    instances = check_label_map(instances, "instances")
    props = region_table(instances)  # = regionprops_table, vectorised
    return pd.DataFrame(
        {
            "label": props["label"].astype(np.int64),
            "row": props["centroid-0"].astype(np.float64),
            "col": props["centroid-1"].astype(np.float64),
            "orientation": props["orientation"].astype(np.float64),
            "area": props["area"].astype(np.float64),
            "eccentricity": props["eccentricity"].astype(np.float64),
            "major_axis_length": props["axis_major_length"].astype(np.float64),
            "minor_axis_length": props["axis_minor_length"].astype(np.float64),
        },
        columns=list(NUCLEUS_COLUMNS),
    )


def _as_angles(orientations, n: int) -> np.ndarray:
    if isinstance(orientations, Tensor):
        orientations = orientations.detach().cpu().numpy()
    theta = np.asarray(orientations, dtype=np.float64).reshape(-1)
    if len(theta) != n:
        raise ValueError(f"{n} centroids but {len(theta)} orientations")
    if not np.all(np.isfinite(theta)):
        raise ValueError("orientations must be finite (radians)")
    return theta


def orientation_graph(
    centroids: np.ndarray | Tensor,
    orientations: np.ndarray | Tensor,
    radius: float = RADIUS,
    max_angle: float | None = MAX_ANGLE,
) -> tuple[Tensor, Tensor]:
    r"""Returns the orientation graph of a set of nuclei: nearby, similarly oriented nuclei are
    joined with weight :math:`(1 - d_{ij}/r)\cos^2(\theta_i - \theta_j)` (module docstring).

    Args:
        centroids (np.ndarray or torch.Tensor): Nucleus centroids ``[K, 2]`` (px).
        orientations (np.ndarray or torch.Tensor): Their axes :math:`\theta` ``[K]`` (radians;
            :math:`\theta` and :math:`\theta + \pi` are the same axis).
        radius (float): Largest centroid distance :math:`r` (strict), px.
            (default: :obj:`100.0`, the nuclei graph's)
        max_angle (float, optional): Largest axis difference of an edge, radians in
            :math:`[0, \pi/2]`; ``None`` keeps every pair closer than ``radius``.
            (default: :obj:`pi / 6`)

    Returns:
        (torch.Tensor, torch.Tensor): ``edge_index`` ``[2, E]`` long (both directions, no self
        loops, sorted by ``(dst, src)``) and ``weight`` ``[E]`` float32 in :math:`(0, 1]`.

    Raises:
        ValueError: If the shapes disagree, an angle is not finite, or ``radius`` /
            ``max_angle`` is out of range.
    """
    pos = _as_points(centroids)
    theta = _as_angles(orientations, len(pos))
    if max_angle is not None and not 0.0 <= max_angle <= math.pi / 2:
        raise ValueError(f"'max_angle' must lie in [0, pi/2] radians, got {max_angle}")
    edge_index, dist_weight = nuclei_edges(pos, radius)  # [2, E], [E] = 1 - d / r
    src, dst = edge_index.numpy()
    cos2 = np.cos(theta[src] - theta[dst]) ** 2  # [E], axial similarity in [0, 1]
    keep = np.ones(len(src), dtype=bool)
    if max_angle is not None:
        keep = cos2 >= math.cos(max_angle) ** 2 - 1e-12  # |axis difference| <= max_angle
    keep &= cos2 > 0  # exactly perpendicular: weight 0, no edge
    weight = dist_weight.numpy() * cos2
    return edge_index[:, torch.from_numpy(keep)], torch.from_numpy(weight[keep].astype(np.float32))


def _axial_entropy(theta: np.ndarray, n_bins: int) -> float:
    """Normalised Shannon entropy of the histogram of axes ``theta`` over ``n_bins`` bins centred
    on ``k pi / n_bins``."""
    if len(theta) == 0 or n_bins < 2:
        return 0.0
    idx = np.rint(theta / (math.pi / n_bins)).astype(np.int64) % n_bins
    p = np.bincount(idx, minlength=n_bins) / len(theta)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / math.log(n_bins))


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    return (float(values.mean()), float(values.std())) if len(values) else (0.0, 0.0)


def _spanning_and_delaunay(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge lengths of the Euclidean MST and of the Delaunay triangulation (MST if collinear)."""
    n = len(pos)
    if n < 2:
        return np.zeros(0), np.zeros(0)
    if n == 2:
        d = np.array([np.linalg.norm(pos[0] - pos[1])])
        return d, d
    try:
        simplices = Delaunay(pos).simplices  # [T, 3]
        pairs = np.concatenate([simplices[:, [0, 1]], simplices[:, [1, 2]], simplices[:, [0, 2]]])
        pairs = np.unique(np.sort(pairs, axis=1), axis=0)  # [D, 2], each edge once
    except QhullError:  # collinear or repeated points
        pairs = None
    # The MST is a subgraph of the Delaunay triangulation; on collinear points use all pairs.
    cand = pairs if pairs is not None else np.array(np.triu_indices(n, 1)).T
    length = np.linalg.norm(pos[cand[:, 0]] - pos[cand[:, 1]], axis=1)
    # Zero-length edges (repeated points) would vanish from a sparse matrix: nudge them.
    graph = sp.coo_matrix((np.maximum(length, 1e-9), (cand[:, 0], cand[:, 1])), shape=(n, n))
    mst = minimum_spanning_tree(graph.tocsr()).tocoo()
    mst_len = np.where(mst.data <= 1e-9, 0.0, mst.data)
    return mst_len, (length if pairs is not None else mst_len)


def local_structure_features(
    centroids: np.ndarray | Tensor,
    orientations: np.ndarray | Tensor,
    area: np.ndarray | None = None,
    eccentricity: np.ndarray | None = None,
    patch_area: float = 1.0e4,
    radius: float = RADIUS,
    max_angle: float | None = MAX_ANGLE,
    n_bins: int = N_BINS,
) -> np.ndarray:
    r"""Returns the local-structure feature vector of one patch (:data:`FEATURE_NAMES`).

    Args:
        centroids (np.ndarray or torch.Tensor): Centroids ``[K, 2]`` of the patch's nuclei (px).
        orientations (np.ndarray or torch.Tensor): Their axes :math:`\theta` ``[K]`` (radians).
        area (np.ndarray, optional): Their areas ``[K]`` (px); ``None`` gives area features 0.
            (default: :obj:`None`)
        eccentricity (np.ndarray, optional): Their eccentricities ``[K]``; ``None`` gives 0.
            (default: :obj:`None`)
        patch_area (float): Area of the patch in px², for the density.
            (default: :obj:`1.0e4`)
        radius (float): Neighbour radius of the alignment and of the orientation graph, px.
            (default: :obj:`100.0`)
        max_angle (float, optional): The orientation graph's largest axis difference, radians.
            (default: :obj:`pi / 6`)
        n_bins (int): Bins of the orientation histograms, ``>= 2``. (default: :obj:`12`)

    Returns:
        np.ndarray: ``[F]`` float32, ``F = len(FEATURE_NAMES)``.

    Raises:
        ValueError: On mismatched shapes, non-finite angles, ``patch_area <= 0`` or
            ``n_bins < 2``.
    """
    pos = _as_points(centroids).reshape(-1, 2)
    n = len(pos)
    theta = _as_angles(orientations, n)
    if not patch_area > 0:
        raise ValueError(f"'patch_area' must be > 0, got {patch_area}")
    if n_bins < 2:
        raise ValueError(f"'n_bins' must be >= 2, got {n_bins}")
    out = dict.fromkeys(FEATURE_NAMES, 0.0)
    if n == 0:
        return np.zeros(len(FEATURE_NAMES), dtype=np.float32)
    out["density"] = n * 1.0e4 / patch_area
    if area is not None:
        out["area_mean"], out["area_std"] = _mean_std(np.asarray(area, dtype=np.float64))
    if eccentricity is not None:
        out["eccentricity_mean"] = float(np.mean(eccentricity))
    c2, s2 = np.cos(2 * theta), np.sin(2 * theta)  # [K], doubled-angle unit vectors
    out["orientation_cos2"], out["orientation_sin2"] = float(c2.mean()), float(s2.mean())
    out["coherence"] = float(np.hypot(c2.mean(), s2.mean()))
    out["orientation_entropy"] = _axial_entropy(theta, n_bins)
    if n >= 2:
        edge_index, dist_w = nuclei_edges(pos, radius)
        src, dst = edge_index.numpy()
        if len(src):
            w = dist_w.numpy().astype(np.float64)
            out["alignment"] = float((w * np.cos(2 * (theta[src] - theta[dst]))).sum() / w.sum())
        nn_dist = cKDTree(pos).query(pos, k=2)[0][:, 1]  # [K], nearest other nucleus
        out["nn_dist_mean"] = float(nn_dist.mean())
        out["nn_dist_cv"] = float(nn_dist.std() / nn_dist.mean()) if nn_dist.mean() > 0 else 0.0
        mst_len, tri_len = _spanning_and_delaunay(pos)
        out["delaunay_mean"], out["delaunay_std"] = _mean_std(tri_len)
        out["mst_mean"], out["mst_std"] = _mean_std(mst_len)
        og, _ = orientation_graph(pos, theta, radius, max_angle)
        out["graph_degree"] = og.shape[1] / n
        ncomp, comp = connected_components(
            sp.coo_matrix((np.ones(og.shape[1]), og.numpy()), shape=(n, n)), directed=False
        )
        sizes = np.bincount(comp, minlength=ncomp)
        clusters = np.flatnonzero(sizes >= 2)
        if len(clusters):
            out["clustered_fraction"] = float(sizes[clusters].sum() / n)
            out["cluster_size_mean"] = float(sizes[clusters].mean())
            mc = np.bincount(comp, c2, minlength=ncomp)[clusters]
            ms = np.bincount(comp, s2, minlength=ncomp)[clusters]
            out["cluster_entropy"] = (
                _axial_entropy(0.5 * np.arctan2(ms, mc), n_bins) if len(clusters) > 1 else 0.0
            )
    return np.array([out[k] for k in FEATURE_NAMES], dtype=np.float32)


def patch_features(
    image: np.ndarray | None,
    patch_size: int,
    instances: np.ndarray | None = None,
    radius: float = RADIUS,
    max_angle: float | None = MAX_ANGLE,
    n_bins: int = N_BINS,
    min_nuclei: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    r"""Tiles an ROI into patches and returns each patch's local-structure features.

    Args:
        image (np.ndarray, optional): The ROI, ``[H, W, 3]`` uint8 RGB; segmented with
            :func:`wsigraph.data.nuclei_seg.classical_nuclei` when ``instances`` is ``None``.
        patch_size (int): Side of the square patches, px, ``>= 1``.
        instances (np.ndarray, optional): The ROI's instance mask ``[H, W]`` (then ``image``
            may be ``None``). (default: :obj:`None`)
        radius (float): See :func:`local_structure_features`. (default: :obj:`100.0`)
        max_angle (float, optional): See :func:`local_structure_features`.
            (default: :obj:`pi / 6`)
        n_bins (int): See :func:`local_structure_features`. (default: :obj:`12`)
        min_nuclei (int): Patches with fewer nuclei are left out (e.g. background).
            (default: :obj:`0`, keep all)

    Returns:
        (np.ndarray, np.ndarray, list[str]): ``features`` ``[P, F]`` float32, ``grid``
        ``[P, 2]`` int64 patch coordinates ``(row, col)`` in patch units (the patch covers
        pixels ``[row * s, (row + 1) * s) x [col * s, (col + 1) * s)``), row-major, and the
        ``F`` feature names.

    Raises:
        ValueError: If neither ``image`` nor ``instances`` is given, they disagree in size,
            ``patch_size < 1`` or the ROI is smaller than one patch.
    """
    if instances is None:
        if image is None:
            raise ValueError("give 'image' or 'instances'")
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] < 3 or image.dtype != np.uint8:
            raise ValueError(f"'image' must be [H, W, 3] uint8, got {image.shape} {image.dtype}")
        from wsigraph.data.nuclei_seg import classical_nuclei

        instances = classical_nuclei(image[..., :3])
    instances = np.asarray(instances)
    if image is not None and np.asarray(image).shape[:2] != instances.shape:
        raise ValueError(f"'instances' {instances.shape} and 'image' differ in size")
    if patch_size < 1:
        raise ValueError(f"'patch_size' must be >= 1, got {patch_size}")
    rows, cols = instances.shape[0] // patch_size, instances.shape[1] // patch_size
    if rows == 0 or cols == 0:
        raise ValueError(f"ROI {instances.shape} is smaller than one {patch_size} px patch")
    nuc = nuclei_orientations(instances)
    r = np.floor(nuc["row"].to_numpy() / patch_size).astype(np.int64)
    c = np.floor(nuc["col"].to_numpy() / patch_size).astype(np.int64)
    inside = (r < rows) & (c < cols)
    cell = np.where(inside, r * cols + c, -1)
    feats, grid = [], []
    for k in range(rows * cols):
        sel = cell == k
        if sel.sum() < min_nuclei:
            continue
        part = nuc[sel]
        feats.append(
            local_structure_features(
                part[["row", "col"]].to_numpy(),
                part["orientation"].to_numpy(),
                part["area"].to_numpy(),
                part["eccentricity"].to_numpy(),
                patch_area=float(patch_size**2),
                radius=radius,
                max_angle=max_angle,
                n_bins=n_bins,
            )
        )
        grid.append(divmod(k, cols))
    features = np.stack(feats) if feats else np.zeros((0, len(FEATURE_NAMES)), np.float32)
    return features, np.array(grid, dtype=np.int64).reshape(-1, 2), list(FEATURE_NAMES)


def roi_graph(features: np.ndarray, grid: np.ndarray, **extra) -> Data:
    r"""The image-level node set of an ROI for :class:`wsigraph.models.abignet.ABiGNet`.

    Args:
        features (np.ndarray): Patch features ``[P, F]`` (:func:`patch_features`).
        grid (np.ndarray): Patch grid coordinates ``[P, 2]`` ``(row, col)``.
        **extra: Graph-level attributes stored as they are (e.g. ``slide_id``).

    Returns:
        torch_geometric.data.Data: ``x`` ``[P, F]`` float32, ``pos`` ``[P, 2]`` float32 (the grid
        coordinates, in patches) and the ``extra`` attributes. No edges: the model builds them
        (learned, or the fixed k-NN graph).
    """
    features, grid = np.asarray(features), np.asarray(grid)
    if features.ndim != 2 or grid.shape != (len(features), 2):
        raise ValueError(
            f"need features [P, F] and grid [P, 2], got {features.shape}, {grid.shape}"
        )
    return Data(
        x=torch.from_numpy(features.astype(np.float32)),
        pos=torch.from_numpy(grid.astype(np.float32)),
        **extra,
    )


def cached_patch_features(
    path: str | os.PathLike,
    image: np.ndarray | None,
    patch_size: int,
    instances: np.ndarray | None = None,
    **params,
) -> tuple[np.ndarray, np.ndarray]:
    r""":func:`patch_features` of one ROI, cached in ``path`` (``.npz``).

    The cache key holds the SHA-1 of the pixels (and of the instance mask when one is given,
    else the name of the segmenter), ``patch_size``, ``params`` and :data:`FEATURE_NAMES`; a
    file at ``path`` with the same key is reused; otherwise (missing, other key, unreadable)
    the features are computed and written atomically (:func:`wsigraph.io.atomic_path`), so an
    interrupted run resumes where it stopped and a changed setting is never served stale.

    Returns:
        (np.ndarray, np.ndarray): ``features`` ``[P, F]`` and ``grid`` ``[P, 2]``.
    """
    path = Path(path)
    key = json.dumps(
        {
            "image": array_digest(image),
            "instances": None if instances is None else array_digest(instances),
            "segmenter": "given" if instances is not None else "classical_nuclei",
            "patch_size": patch_size,
            "features": list(FEATURE_NAMES),
            **params,
        },
        sort_keys=True,
    )
    if path.exists():
        try:
            with np.load(path) as z:
                if str(z["key"]) == key:
                    return z["features"], z["grid"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # damaged or foreign file: recompute
    features, grid, _ = patch_features(image, patch_size, instances, **params)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, features=features, grid=grid, key=np.array(key))
    return features, grid


def roi_graphs(
    images: Sequence[np.ndarray],
    ids: Sequence[str],
    cache_dir: str | os.PathLike,
    patch_size: int,
    instances: Sequence[np.ndarray] | None = None,
    progress: bool = False,
    **params,
) -> list[Data]:
    r"""The image-level node sets (:func:`roi_graph`) of a set of ROIs, features cached per ROI
    in ``cache_dir/<id>.npz`` (:func:`cached_patch_features`).

    Args:
        images: the ROIs, each ``[H, W, 3]`` uint8.
        ids: one file-name-safe id per ROI (stored as ``slide_id``).
        cache_dir: folder of the cached features.
        patch_size: patch side, px.
        instances: the ROIs' instance masks; ``None`` segments each image with
            :func:`wsigraph.data.nuclei_seg.classical_nuclei`. (default: :obj:`None`)
        progress: show a progress bar. (default: :obj:`False`)
        **params: ``radius``, ``max_angle``, ``n_bins``, ``min_nuclei`` of
            :func:`patch_features`.
    """
    if len(images) != len(ids) or (instances is not None and len(instances) != len(ids)):
        raise ValueError("images, ids (and instances) must have the same length")
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique")
    out = []
    for i, name in enumerate(progress_bar(ids, desc="ROIs", unit="ROI", disable=not progress)):
        inst = None if instances is None else instances[i]
        path = Path(cache_dir) / f"{name}.npz"
        features, grid = cached_patch_features(path, images[i], patch_size, inst, **params)
        out.append(roi_graph(features, grid, slide_id=str(name)))
    return out
