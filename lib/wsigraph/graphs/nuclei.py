r"""Nuclei graphs of H&E tiles, for the attention GCN with node occlusion.

The nuclei-graph GCN (RSF convolutions with attention and node occlusion), Sec. III.B: nuclei
are detected (by a UNet there; any instance mask here) and become the nodes; two nuclei
:math:`i, j` are joined when their centroids are closer than 100 px, with the weight of Eq. 1

.. math::
    A_{ij} = 1 - \frac{\operatorname{dist}(i, j)}{100},
    \qquad \operatorname{dist}(i, j) = \sqrt{(x_i - x_j)^2 + (y_i - y_j)^2}.

Radius in micrometres
    100 px is a distance in the paper's images. The paper does not state their scale; its BACH
    images (2048 x 1536 px, the size it gives) have 0.42 µm pixels (the BACH challenge,
    Aresta et al., Med. Image Anal. 2019), so 100 px there is :data:`RADIUS_UM` = 42 µm. The
    radius is therefore given in µm and converted with each image's µm per pixel
    (:func:`radius_in_pixels`; :func:`read_mpp` reads it from the image's metadata), so a 20x
    or 10x image gets the same tissue neighbourhood as a 40x one instead of 2x or 4x as many
    neighbours. At the paper's scale (``mpp`` = :data:`PAPER_MPP`) the radius is 100 px and
    Eq. 1 is unchanged; the weight :math:`1 - d / r` is the same in µm or px.

The paper says the vertices carry nuclear features but not which ones; :data:`FEATURE_NAMES`
lists ours (morphology, stain intensity, texture). Sec. III.E, Eq. 5 scores a node by the drop
in class probability when the node and its k-hop neighbourhood are occluded;
:func:`occlusion_neighbourhoods` gives those neighbourhoods.

Node order
    Node ``k`` is the ``k``-th smallest label of the instance mask (labels need not be
    consecutive); :func:`nuclei_graph` keeps each node's ``label`` so the graph maps back
    onto the mask.

Edge order
    Like :mod:`wsigraph.graphs.pyramid` and :mod:`wsigraph.graphs.spatial`: ``edge_index[0]``
    is the source, ``edge_index[1]`` the destination, every edge is stored in both directions,
    there are no self loops and edges are sorted by ``(dst, src)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.spatial import cKDTree
from skimage.color import rgb2hed
from skimage.measure import regionprops_table
from torch import Tensor
from torch_geometric.data import Data

from wsigraph.graphs.pyramid import dst_order
from wsigraph.graphs.spatial import _as_points
from wsigraph.io import array_digest
from wsigraph.progress import progress_bar

# The paper's distance threshold (Sec. III.B), in pixels of its images.
RADIUS = 100.0
# Micrometres per pixel of the paper's images: BACH's 0.42 µm (not stated in the paper; see the
# module docstring). The radius in µm is 100 px at that scale.
PAPER_MPP = 0.42
RADIUS_UM = 42.0
# read_mpp accepts metadata only in this range (µm per px): TIFF writers put 72 dpi (352 µm/px)
# into images that have no physical scale.
_MPP_RANGE = (0.05, 20.0)

# Node features, in the column order of `nucleus_features`. All are in pixel units of the tile
# and unnormalised: standardise them per cohort before training.
#
# Morphology (skimage.measure.regionprops on the nucleus mask)
#   area               number of pixels
#   perimeter          boundary length (regionprops `perimeter`, 4-connected contour estimate)
#   circularity        4 pi area / perimeter^2: 1 for a disc, lower for irregular outlines
#                      (0 when the perimeter is 0, i.e. one-pixel nuclei)
#   eccentricity       of the ellipse with the same second moments: 0 circle .. 1 line
#   solidity           area / convex hull area: < 1 for notched or lobulated nuclei
#   extent             area / bounding box area
#   major_axis_length  of the same-moments ellipse
#   minor_axis_length  of the same-moments ellipse
#   orientation_sin2   sin(2 theta), theta = regionprops `orientation`, the angle between the
#   orientation_cos2   cos(2 theta)   row axis and the major axis. theta and theta + pi are the
#                      same axis, so (sin 2theta, cos 2theta) is continuous where theta wraps
#                      from pi/2 to -pi/2. Vertical major axis: cos = 1; horizontal: cos = -1.
# Stain intensity (over the nucleus pixels)
#   hema_mean          mean haematoxylin optical density (skimage.color.rgb2hed, channel 0):
#   hema_std           and its std; chromatin density / hyperchromasia
#   red_mean, green_mean, blue_mean
#                      mean RGB, 0 .. 255
# Texture (grey = skimage.color.rgb2gray scaled to 0 .. 255 and rounded to 256 levels)
#   grey_std           std of the grey level: coarse chromatin gives a high value
#   glcm_contrast      GLCM contrast, sum_ij P(i, j) (i - j)^2, and
#   glcm_homogeneity   GLCM homogeneity, sum_ij P(i, j) / (1 + (i - j)^2), of the symmetric
#                      normalised co-occurrence matrix at distance 1, averaged over angles 0
#                      and pi/2 (horizontal and vertical neighbours). Only pairs of pixels that
#                      are both inside the nucleus count, so background never leaks in; this
#                      equals skimage.feature.graycoprops on a nucleus that fills its bounding
#                      box. A nucleus with no pair in one direction (one pixel thick) gets
#                      contrast 0 and homogeneity 1 for that direction.
FEATURE_NAMES = (
    "area",
    "perimeter",
    "circularity",
    "eccentricity",
    "solidity",
    "extent",
    "major_axis_length",
    "minor_axis_length",
    "orientation_sin2",
    "orientation_cos2",
    "hema_mean",
    "hema_std",
    "red_mean",
    "green_mean",
    "blue_mean",
    "grey_std",
    "glcm_contrast",
    "glcm_homogeneity",
)

_MORPHOLOGY = (
    "label",
    "centroid",
    "area",
    "perimeter",
    "eccentricity",
    "solidity",
    "extent",
    "axis_major_length",
    "axis_minor_length",
    "orientation",
)

# skimage.color.rgb2gray's weights (ITU-R BT.709).
_GREY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])

# Node fields of `nuclei_graph`; `extra` may not overwrite them.
NODE_FIELDS = ("x", "pos", "label")
EDGE_FIELDS = ("edge_index", "edge_attr")


def _check_inputs(image: np.ndarray, instances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``image`` and ``instances`` as arrays, raising ``ValueError`` if invalid."""
    image, instances = np.asarray(image), np.asarray(instances)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"'image' must have shape [H, W, 3] (RGB), got {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"'image' must be uint8, got dtype {image.dtype}")
    if instances.ndim != 2 or not np.issubdtype(instances.dtype, np.integer):
        raise ValueError(
            f"'instances' must be a 2-D integer array, got shape {instances.shape} "
            f"and dtype {instances.dtype}"
        )
    if instances.shape != image.shape[:2]:
        raise ValueError(
            f"'instances' {instances.shape} and 'image' {image.shape[:2]} differ in size"
        )
    if instances.size and instances.min() < 0:
        raise ValueError(f"instance labels must be >= 0 (0 = background), got {instances.min()}")
    return image, instances


def _per_label(index: np.ndarray, values: np.ndarray, num: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns the mean and (population) std of ``values`` ``[P, C]`` grouped by ``index``
    ``[P]`` (in ``0 .. num - 1``), each ``[num, C]``."""
    count = np.bincount(index, minlength=num)[:, None]  # [K, 1]
    cols = range(values.shape[1])
    mean = np.stack([np.bincount(index, values[:, c], minlength=num) for c in cols], 1) / count
    centred = values - mean[index]  # [P, C], two passes: no cancellation
    var = np.stack([np.bincount(index, centred[:, c] ** 2, minlength=num) for c in cols], 1)
    return mean, np.sqrt(var / count)


def _glcm(node: np.ndarray, grey: np.ndarray, num: int) -> tuple[np.ndarray, np.ndarray]:
    """GLCM contrast and homogeneity ``[K]`` at distance 1, mean of angles 0 and pi/2.

    ``node`` ``[H, W]`` is each pixel's node index (``-1`` for background) and ``grey``
    ``[H, W]`` its grey level.
    """
    contrast, homogeneity = np.zeros(num), np.zeros(num)
    for a, b in ((np.s_[:, :-1], np.s_[:, 1:]), (np.s_[:-1, :], np.s_[1:, :])):
        same = (node[a] == node[b]) & (node[a] >= 0)  # pairs inside one nucleus
        k = node[a][same]  # [Q]
        diff2 = (grey[a][same] - grey[b][same]) ** 2  # [Q]
        pairs = np.bincount(k, minlength=num)  # [K]
        has = pairs > 0
        c = np.bincount(k, diff2, minlength=num)
        h = np.bincount(k, 1.0 / (1.0 + diff2), minlength=num)
        contrast += np.divide(c, pairs, out=np.zeros(num), where=has)
        homogeneity += np.divide(h, pairs, out=np.ones(num), where=has)
    return contrast / 2, homogeneity / 2


def _nucleus_table(
    image: np.ndarray, instances: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`nucleus_features` that also returns each node's label ``[K]`` (first)."""
    image, instances = _check_inputs(image, instances)
    props = regionprops_table(instances, properties=_MORPHOLOGY)
    labels = props["label"].astype(np.int64)  # [K], ascending
    num = len(labels)
    centroids = np.stack([props["centroid-0"], props["centroid-1"]], 1).reshape(num, 2)
    if num == 0:
        return labels, centroids, np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)

    # Node index of every pixel (-1 = background), without a loop over nuclei.
    fg = instances > 0  # [H, W]
    node = np.full(instances.shape, -1, dtype=np.int64)
    node[fg] = np.searchsorted(labels, instances[fg])
    index = node[fg]  # [P]

    rgb = image[fg].astype(np.float64)  # [P, 3]
    hema = rgb2hed(image[fg][None])[0, :, :1]  # [P, 1], stain separation of the nuclei only
    grey = np.rint(image.astype(np.float64) @ _GREY_WEIGHTS)  # [H, W], 0 .. 255
    mean, std = _per_label(index, np.hstack([rgb, hema, grey[fg][:, None]]), num)  # [K, 5]
    contrast, homogeneity = _glcm(node, grey, num)

    area, perimeter = props["area"], props["perimeter"]
    circularity = np.divide(4 * np.pi * area, perimeter**2, out=np.zeros(num), where=perimeter > 0)
    theta = props["orientation"]
    columns = [
        area,
        perimeter,
        circularity,
        props["eccentricity"],
        props["solidity"],
        props["extent"],
        props["axis_major_length"],
        props["axis_minor_length"],
        np.sin(2 * theta),
        np.cos(2 * theta),
        mean[:, 3],  # hema_mean
        std[:, 3],  # hema_std
        mean[:, 0],
        mean[:, 1],
        mean[:, 2],
        std[:, 4],  # grey_std
        contrast,
        homogeneity,
    ]
    return labels, centroids, np.stack(columns, 1).astype(np.float32)


def nucleus_features(
    image: np.ndarray, instances: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    r"""Returns the centroid and the morphology, stain and texture features of every nucleus.

    Morphology comes from :func:`skimage.measure.regionprops_table`; the intensity and texture
    statistics are computed for all nuclei at once with :func:`numpy.bincount` over the
    nucleus pixels. :data:`FEATURE_NAMES` documents each feature.

    Args:
        image (np.ndarray): The H&E tile, ``[H, W, 3]`` uint8 RGB.
        instances (np.ndarray): Instance mask ``[H, W]``, integers: ``0`` background, ``k > 0``
            the pixels of nucleus ``k``. Labels need not be consecutive.

    Returns:
        (np.ndarray, np.ndarray, list[str]): ``centroids`` ``[K, 2]`` float64 as
        ``(row, col)``, ``features`` ``[K, F]`` float32 and their ``F`` names
        (:data:`FEATURE_NAMES`), for the ``K`` non-empty labels in ascending order.
        ``K = 0`` for an empty mask.

    Raises:
        ValueError: If ``image`` is not ``[H, W, 3]`` uint8, or ``instances`` is not a
            non-negative 2-D integer array of the same height and width.
    """
    _, centroids, features = _nucleus_table(image, instances)
    return centroids, features, list(FEATURE_NAMES)


def nuclei_edges(centroids: np.ndarray | Tensor, radius: float = RADIUS) -> tuple[Tensor, Tensor]:
    r"""Returns the nuclei graph's edges and their Eq. 1 weights.

    Nodes :math:`i \ne j` are joined, in both directions, when
    :math:`d_{ij} = \lVert p_i - p_j \rVert_2 < r` (strictly, as in the paper), with weight
    :math:`1 - d_{ij} / r`, which falls from 1 to 0 as the distance grows to :math:`r`.
    :meth:`scipy.spatial.cKDTree.query_pairs` also returns the pairs at exactly :math:`r`
    (weight 0); they are dropped.

    Args:
        centroids (np.ndarray or torch.Tensor): Node positions ``[K, D]`` (``D = 2``: pixels).
        radius (float): Distance threshold :math:`r`, ``> 0``. (default: :obj:`100.0`)

    Returns:
        (torch.Tensor, torch.Tensor): ``edge_index`` ``[2, E]`` long, sorted by ``(dst, src)``,
        and ``weight`` ``[E]`` float32 in :math:`(0, 1]`.

    Raises:
        ValueError: If ``centroids`` is not 2-D or ``radius`` is not a positive finite number.
    """
    if not np.isfinite(radius) or radius <= 0:
        raise ValueError(f"'radius' must be a positive finite number, got {radius}")
    pos = _as_points(centroids)
    num_nodes = len(pos)
    pairs = cKDTree(pos).query_pairs(radius, output_type="ndarray")  # [P, 2], i < j
    pairs = pairs.reshape(-1, 2).astype(np.int64, copy=False)
    dist = np.linalg.norm(pos[pairs[:, 0]] - pos[pairs[:, 1]], axis=1)  # [P]
    keep = dist < radius
    pairs, dist = pairs[keep], dist[keep]

    edge_index = np.concatenate([pairs.T, pairs.T[::-1]], axis=1)  # [2, 2P], both directions
    weight = np.concatenate([dist, dist])  # [2P]
    order = dst_order(edge_index, num_nodes)
    weight = (1.0 - weight[order] / radius).astype(np.float32)
    return torch.from_numpy(edge_index[:, order].copy()), torch.from_numpy(weight)


def _check_mpp(mpp: float, name: str = "mpp") -> float:
    try:
        value = float(mpp)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name!r} must be a positive number of µm per pixel, got {mpp!r}"
        ) from None
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name!r} must be a positive number of µm per pixel, got {mpp!r}")
    return value


def radius_in_pixels(radius_um: float = RADIUS_UM, mpp: float = PAPER_MPP) -> float:
    """The graph radius in pixels of an image with ``mpp`` µm per pixel: ``radius_um / mpp``.

    Args:
        radius_um (float): Radius in µm, ``> 0``. (default: :data:`RADIUS_UM`, 42 µm: the
            paper's 100 px at its 0.42 µm/px)
        mpp (float): The image's µm per pixel, ``> 0``. (default: :data:`PAPER_MPP`)

    Raises:
        ValueError: If ``radius_um`` or ``mpp`` is not a positive finite number.
    """
    radius_um = _check_mpp(radius_um, "radius_um")
    return radius_um / _check_mpp(mpp)


def read_mpp(path: str | os.PathLike) -> float | None:
    """µm per pixel of an image file from its metadata, or ``None`` when it carries none.

    In order: ``MicronsPerPixel`` of an Aperio / MoNuSeg annotation ``<stem>.xml`` beside the
    image; an Aperio ``MPP = ...`` in a TIFF's ImageDescription; the TIFF resolution tags
    (``XResolution`` per centimetre or inch). A value outside 0.05-20 µm/px is no physical
    scale (many writers store 72 dpi) and is ignored.
    """
    import re

    path = Path(path)

    def plausible(v: float | None) -> float | None:
        ok = v is not None and np.isfinite(v) and _MPP_RANGE[0] <= v <= _MPP_RANGE[1]
        return float(v) if ok else None

    xml = path.with_suffix(".xml")
    if xml.is_file():
        m = re.search(r'MicronsPerPixel="([0-9.eE+-]+)"', xml.read_text(errors="replace")[:4096])
        if m and (v := plausible(float(m.group(1)))):
            return v
    if path.suffix.lower() not in (".tif", ".tiff", ".svs"):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            m = re.search(r"MPP\s*=\s*([0-9.eE+-]+)", page.description or "")
            if m and (v := plausible(float(m.group(1)))):
                return v
            tags = page.tags
            if "XResolution" in tags and "ResolutionUnit" in tags:
                num, den = tags["XResolution"].value
                unit = int(tags["ResolutionUnit"].value)  # 2 inch, 3 centimetre
                per_unit = num / den if den else 0.0
                um = {2: 25_400.0, 3: 10_000.0}.get(unit)
                if um and per_unit > 0:
                    return plausible(um / per_unit)
    except (tifffile.TiffFileError, OSError, ValueError):
        return None
    return None


def nuclei_graph(
    image: np.ndarray,
    instances: np.ndarray,
    radius_um: float = RADIUS_UM,
    mpp: float = PAPER_MPP,
    **extra: Any,
) -> Data:
    r"""Builds the nuclei graph of an H&E tile (Sec. III.B, Eq. 1).

    Args:
        image (np.ndarray): The H&E tile, ``[H, W, 3]`` uint8 RGB.
        instances (np.ndarray): Instance mask ``[H, W]``, ``0`` background (see
            :func:`nucleus_features`).
        radius_um (float): Distance threshold in µm. (default: :data:`RADIUS_UM`, 42 µm)
        mpp (float): The tile's µm per pixel. (default: :data:`PAPER_MPP`, where the radius is
            the paper's 100 px)
        **extra: Graph-level attributes stored as they are (e.g. ``y``, ``tile_id``).

    Returns:
        torch_geometric.data.Data: ``x`` ``[K, F]`` float32 (:data:`FEATURE_NAMES`),
        ``pos`` ``[K, 2]`` float32 centroids ``(row, col)``, ``label`` ``[K]`` long (each node's
        label in ``instances``), ``edge_index`` ``[2, E]`` long sorted by ``(dst, src)``,
        ``edge_attr`` ``[E, 1]`` float32 (the Eq. 1 weight), ``feature_names`` (list of ``F``
        str), ``radius`` (float, in px), ``radius_um`` and ``mpp`` (floats) and the ``extra``
        attributes.

    Raises:
        ValueError: As :func:`nucleus_features` and :func:`nuclei_edges`, if ``radius_um`` or
            ``mpp`` is not positive, or if an ``extra`` name is one of the graph's own fields.
    """
    own = ("feature_names", "radius", "radius_um", "mpp")
    reserved = set(NODE_FIELDS + EDGE_FIELDS + own) & set(extra)
    if reserved:
        raise ValueError(f"extra attributes may not overwrite {sorted(reserved)}")
    radius = radius_in_pixels(radius_um, mpp)
    labels, centroids, features = _nucleus_table(image, instances)
    edge_index, weight = nuclei_edges(centroids, radius)
    return Data(
        x=torch.from_numpy(features),
        pos=torch.from_numpy(centroids.astype(np.float32)),
        label=torch.from_numpy(labels),
        edge_index=edge_index,
        edge_attr=weight.view(-1, 1),
        feature_names=list(FEATURE_NAMES),
        radius=float(radius),
        radius_um=float(radius_um),
        mpp=float(mpp),
        **extra,
    )


def occlusion_neighbourhoods(
    edge_index: np.ndarray | Tensor, num_nodes: int, hops: int = 1
) -> tuple[Tensor, Tensor]:
    r"""Returns every node's ``hops``-hop neighbourhood, the node set occluded for its Eq. 5
    score :math:`\mathrm{score}_i = p(M(G)) - p(M(G_{n_i}))`.

    The neighbourhood of node :math:`i` holds :math:`i` and every node with a path of at most
    ``hops`` edges to :math:`i`, following the edge direction (the nodes whose messages reach
    :math:`i`, as :func:`torch_geometric.utils.k_hop_subgraph` with the default flow); on the
    symmetric nuclei graph the direction does not matter. It is the non-zero pattern of row
    :math:`i` of :math:`(I + A)^{\text{hops}}`, :math:`A_{ij} = 1` for an edge
    :math:`j \to i`, computed with sparse matrix products.

    Args:
        edge_index (np.ndarray or torch.Tensor): Edges ``[2, E]`` (source, destination).
        num_nodes (int): Number of nodes ``N``.
        hops (int): Neighbourhood radius in edges, ``>= 0`` (the paper occludes 1 hop and found
            2 and 3 similar). (default: :obj:`1`)

    Returns:
        (torch.Tensor, torch.Tensor): ``ptr`` ``[N + 1]`` and ``nodes`` ``[M]``, both long:
        node ``i``'s neighbourhood is ``nodes[ptr[i]:ptr[i + 1]]``, in ascending order.

    Raises:
        ValueError: If ``hops < 0``, ``num_nodes < 0``, or ``edge_index`` is not ``[2, E]``
            integers in ``[0, num_nodes)``.
    """
    if hops < 0:
        raise ValueError(f"'hops' must be >= 0, got {hops}")
    if num_nodes < 0:
        raise ValueError(f"'num_nodes' must be >= 0, got {num_nodes}")
    if isinstance(edge_index, Tensor):
        edge_index = edge_index.detach().cpu().numpy()
    edge_index = np.asarray(edge_index)
    if edge_index.size == 0:
        edge_index = np.empty((2, 0), dtype=np.int64)
    if edge_index.ndim != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"'edge_index' must have shape [2, E], got {edge_index.shape}")
    if not np.issubdtype(edge_index.dtype, np.integer):
        raise ValueError(f"'edge_index' must hold integers, got dtype {edge_index.dtype}")
    if edge_index.size and (edge_index.min() < 0 or edge_index.max() >= num_nodes):
        raise ValueError(
            f"'edge_index' must lie in [0, {num_nodes}), got [{edge_index.min()}, "
            f"{edge_index.max()}]"
        )

    src, dst = edge_index
    ones = np.ones(len(src), dtype=np.int32)
    step = sp.csr_matrix((ones, (dst, src)), shape=(num_nodes, num_nodes))
    step = (step + sp.identity(num_nodes, dtype=np.int32, format="csr")).tocsr()  # I + A
    step.data[:] = 1  # duplicate edges summed: back to a pattern
    reach = sp.identity(num_nodes, dtype=np.int32, format="csr")
    for _ in range(hops):
        reach = (reach @ step).tocsr()
        reach.data[:] = 1  # path counts would overflow; only the pattern matters
    reach.sort_indices()
    ptr = torch.from_numpy(reach.indptr.astype(np.int64))
    nodes = torch.from_numpy(reach.indices.astype(np.int64))
    return ptr, nodes


def build_nuclei_graphs(
    tiles: Iterable[tuple[str, np.ndarray, int]],
    segment: Callable[[np.ndarray], np.ndarray],
    out_dir: str | os.PathLike,
    method: str,
    progress: bool = True,
    mpp: float = PAPER_MPP,
    radius_um: float = RADIUS_UM,
) -> list[Data]:
    """Segments every tile and builds its nuclei graph, one cached file per tile.

    ``out_dir/<tile_id>.pt`` (:func:`~wsigraph.graphs.pyramid.save_graph`, atomic) is reused when
    it was built from the same pixels (:func:`wsigraph.io.array_digest`) by the same ``method``
    with the same radius in pixels, so a rerun segments only new or changed tiles and an
    interrupted run resumes.

    Args:
        tiles: ``(tile_id, image [H, W, 3] uint8, label)`` triples.
        segment: image -> instance mask ``[H, W]`` (e.g. a UNet or the classical fallback).
        out_dir: the cache folder.
        method: the segmenter's name, stored with each graph (``"unet"``, ``"classical"``...).
        progress: show a tqdm bar.
        mpp: the tiles' µm per pixel (default :data:`PAPER_MPP`).
        radius_um: the graph radius in µm (default :data:`RADIUS_UM`).

    Returns:
        One graph per tile, in order: :func:`nuclei_graph` with ``y`` ``[1]``, ``slide_id`` (the tile id),
        ``method`` and ``digest`` (``feature_names`` is not stored; see :data:`FEATURE_NAMES`).
    """
    from wsigraph.graphs.pyramid import load_graph, save_graph

    radius = radius_in_pixels(radius_um, mpp)  # checks both before any work
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    graphs = []
    for tile_id, image, label in progress_bar(
        list(tiles), desc="nuclei graphs", disable=not progress
    ):
        path, digest = out_dir / f"{tile_id}.pt", array_digest(image)
        graph = None
        if path.is_file():
            try:
                graph = load_graph(path)
            except ValueError:
                graph = None  # corrupt: rebuild
            key = (digest, method, radius)
            if (
                graph is not None
                and (graph.digest, graph.method, getattr(graph, "radius", None)) != key
            ):
                graph = None
        if graph is None:
            graph = nuclei_graph(
                image,
                segment(image),
                radius_um,
                mpp,
                y=torch.tensor([int(label)]),
                slide_id=str(tile_id),
                method=method,
                digest=digest,
            )
            del graph.feature_names
            save_graph(graph, path)
        graphs.append(graph)
    return graphs
