r"""Synthetic ROIs for the ABiG-Net demo: the class is in which distant patches resemble each other.

Derivation (ABiG-Net, arXiv 2510.13188, abstract; official code ``Paul1086/ABiG_Net``)
    ABiG-Net describes each patch of an ROI by 69 statistics of the arrangement of its nuclei
    and *learns* the image-level graph over the patches: "sparse, biologically meaningful
    connections between patches", "capturing the long-range contextual dependencies across the
    image". Its generator scores every pair of patches from their features alone
    (``MLP([x_i || x_j])``): it sees no patch position, so the whole model is a function of the
    ROI's *set* of patch feature vectors. What a learned graph can add to a model without
    edges is therefore only in how the patches of one ROI relate to each other: which of them
    are alike, wherever they lie. The demo puts the class signal there and nowhere else.

    * Every patch draws 4 arrangement parameters (:data:`PARAM_NAMES`: nuclei per patch,
      fraction of them gathered in 2 clumps, the clumps' spread, the smallest distance between
      nuclei), each uniform over its range and independent of the others, in every class. So
      **one patch's features are distributed alike in every class** (no per-patch signal; a
      GCN without edges, which embeds each patch alone before its mean-pools, has nothing to
      read).
    * The classes differ in the *dependence* between the patches of an ROI. In a *grouped* ROI
      the 64 patches form 16 **look-alike groups** of 4 that share one parameter draw (their
      nuclei are drawn independently, so they are alike, not equal), the 4 members scattered
      at random over the ``g x g`` grid. In an *ungrouped* ROI every patch draws its own
      parameters. A patch of a grouped ROI has 3 look-alikes somewhere in the ROI; a patch of
      an ungrouped one has only chance neighbours in parameter space (4 dimensions keep them
      apart). A graph that joins patches with similar features joins the look-alikes across
      the ROI; a grid graph (fixed k-NN) joins patches that are unrelated in both classes.
    * First and second moments. The draws of an ROI are a Latin hypercube (one per ``1/D`` of
      every parameter's range, ``D`` the number of draws), in every class. Every patch's
      parameters are uniform on the box, so the per-ROI mean of **any** feature has the same
      expectation in every class. Its per-ROI variance differs only through features that
      respond to two parameters jointly (not additively): a grouped ROI holds 16 distinct
      draws, an ungrouped one 64, and the mean of such an interaction over 16 draws varies
      more, which lowers the expected within-ROI variance by about ``(1/16 - 1/64)`` of the
      interaction's variance. The group size is kept at 4 for that reason: with 8 groups of 8
      the signal is stronger but a logistic regression on the per-ROI mean and std of the 69
      official features reached 59 +- 8 % (10 x 5-fold CV, 120 melanoma ROIs) against the
      bound of 60; with groups of 4 it gets 53 % (180 ROIs). Measured in
      ``tests/test_synthetic_rois.py`` on position statistics of the drawn nuclei.

Classes (``task``)
    * ``"crc3"`` (Extended CRC grading, 3 classes): "normal" all patches grouped; "low grade"
      half of them (8 groups of 4 at random places, the other 32 patches alone); "high grade"
      none.
    * ``"crc2"`` (normal vs cancer): "normal" grouped; "cancer" half of the ROIs low grade,
      half high grade, as above.
    * ``"melanoma"`` (tumour vs lymphocyte-rich): "tumour" grouped, "lymphocyte-rich"
      ungrouped.

Per patch: ``round(density)`` nuclei, a fraction ``clumped_fraction`` of them placed around 2
clump centres (Gaussian, ``clump_sd`` px), the others uniform; every nucleus at least
``min_dist`` px from the others and ``margin`` px inside its patch (so no nucleus crosses a
patch border and cropping a patch never cuts one). Nuclei are small ellipses (semi-axes
2.2-3.0 px, random orientation) rendered with the H&E model of
:mod:`wsigraph.data.synthetic_nuclei`.

:func:`lookalike_distance` is the oracle: per ROI, the mean distance from a patch's true
parameters to the most alike other patch's (0 when every patch is grouped).
:func:`nearest_patch_distance` is the same on measured features (a mechanism-aware summary: it
compares patches with each other). :func:`roi_mean_std` is the control's input (per-ROI mean and
std of the patch features). :func:`lookalike_edges` is the oracle *graph*: each true look-alike group
joined as a clique, a patch without look-alikes left alone.

Everything is deterministic in ``seed`` (one generator per image,
``default_rng([seed, task code, i])``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsigraph.data.synthetic_nuclei import NucleiImages, _render

RELATION_CLASSES = {
    "crc3": ("normal", "low grade", "high grade"),
    "crc2": ("normal", "cancer"),
    "melanoma": ("tumour", "lymphocyte-rich"),
}
GROUP_SIZE = 4  # patches per look-alike group
PARAM_NAMES = ("density", "clumped_fraction", "clump_sd", "min_dist")
_TASK_CODE = {"crc3": 13, "crc2": 14, "melanoma": 15}


@dataclass
class RelationROIs(NucleiImages):
    """:class:`~wsigraph.data.synthetic_nuclei.NucleiImages` plus the ground truth per patch.

    Attributes:
        groups: ``[n, P]`` look-alike group of each patch (row-major over the grid); a patch
            alone in its group has a look-alike nowhere.
        params: ``[n, P, 4]`` the patch's arrangement parameters (:data:`PARAM_NAMES`).
        styles: ``[n, P]`` nuclei per patch drawn for it (``params[..., 0]``).
        marks: ``[n, P]`` clumped fraction of each patch (``params[..., 1]``).
        grouped: ``[n, P]`` whether the patch shares its parameters with others.
        patch_size: side of a patch, px.
    """

    groups: np.ndarray | None = None
    params: np.ndarray | None = None
    styles: np.ndarray | None = None
    marks: np.ndarray | None = None
    grouped: np.ndarray | None = None
    patch_size: int = 64


def relation_rois(
    task: str,
    n_per_class: int,
    grid: int = 8,
    patch_size: int = 64,
    seed: int = 0,
    density: tuple[float, float] = (12.0, 36.0),
    clump_sd: tuple[float, float] = (3.0, 8.0),
    min_dist: tuple[float, float] = (4.0, 6.5),
    margin: float = 4.0,
    group_size: int = GROUP_SIZE,
    render: bool = True,
    layout_jitter: float | None = None,
) -> RelationROIs:
    """ROIs whose classes differ only in which distant patches resemble each other.

    Args:
        task: ``"crc3"``, ``"crc2"`` or ``"melanoma"`` (module docstring).
        n_per_class: ROIs per class.
        grid: patches per side; the ROI is ``grid * patch_size`` px square (default ``8``:
            64 patches).
        patch_size: patch side, px (default ``64``).
        seed: generator seed (default ``0``).
        density: range of the nuclei per patch (default ``(12, 36)``).
        clump_sd: range of the spread of a clump, px (default ``(3, 8)``).
        min_dist: range of the smallest distance between nucleus centres, px (default
            ``(4, 6.5)``).
        margin: nuclei stay this far inside their patch, px (default ``4``).
        group_size: patches per look-alike group (default ``4``).
        render: draw the images and masks (default ``True``); ``False`` leaves them empty
            (``[n, 0, 0, 3]``, ``[n, 0, 0]``) for statistics of the drawn nuclei only. The
            nuclei do not depend on it.
        layout_jitter: ``None`` (default): the members of a look-alike group share their
            parameters and draw their nuclei independently. A number: they also share the
            group's nuclei, each member under a random rotation by a multiple of 90 degrees or
            reflection, every nucleus moved by a Gaussian of this many px (stronger
            look-alikes; an option for measuring, not the demo's setting).

    Returns:
        :class:`RelationROIs`, classes in blocks (``labels = [0]*n + [1]*n (+ [2]*n)``).
    """
    if task not in RELATION_CLASSES:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(RELATION_CLASSES)}")
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    n_patches = grid * grid
    if grid < 2 or group_size < 2 or n_patches % (2 * group_size):
        raise ValueError(
            f"{task}: {n_patches} patches cannot form an even number of look-alike groups "
            f"of {group_size}"
        )
    if patch_size < 2 * margin + 2 * max(min_dist):
        raise ValueError(f"patch_size {patch_size} too small for margin {margin}")
    ranges = np.array([density, (0.0, 1.0), clump_sd, min_dist], np.float64)
    names = RELATION_CLASSES[task]
    labels = np.repeat(np.arange(len(names)), n_per_class).astype(np.int64)
    size = grid * patch_size
    side = size if render else 0
    images = np.zeros((len(labels), side, side, 3), np.uint8)
    instances = np.zeros((len(labels), side, side), np.int32)
    nuclei, out = [], {"groups": [], "params": [], "grouped": []}
    for i, label in enumerate(labels):
        rng = np.random.default_rng([seed, _TASK_CODE[task], i])
        share = _grouped_share(task, int(label), i - label * n_per_class)
        groups, params, grouped = _layout(rng, n_patches, group_size, share, ranges)
        cells, base = [], {}
        for p in range(n_patches):
            if layout_jitter is not None and grouped[p] and groups[p] in base:
                cells.append(_copied_nuclei(rng, base[groups[p]], p, grid, patch_size, margin,
                                            layout_jitter))  # fmt: skip
                continue
            cells.append(_patch_nuclei(rng, p, grid, patch_size, *params[p], margin))
            if layout_jitter is not None and grouped[p]:
                row, col = divmod(p, grid)
                base[groups[p]] = cells[-1] - (row * patch_size, col * patch_size, 0, 0, 0)
        ell = np.concatenate(cells)
        if render:
            images[i], instances[i] = _render(rng, ell, size)
        nuclei.append(ell)
        for key, value in zip(out, (groups, params, grouped), strict=True):
            out[key].append(value)
    params = np.stack(out["params"])
    return RelationROIs(
        images, labels, instances, tuple(names), nuclei, groups=np.stack(out["groups"]),
        params=params, styles=params[..., 0], marks=params[..., 1],
        grouped=np.stack(out["grouped"]), patch_size=patch_size,
    )  # fmt: skip


def _grouped_share(task: str, label: int, index: int) -> float:
    """Share of an ROI's patches that sit in look-alike groups (the class's relation)."""
    if label == 0:
        return 1.0
    grade = label if task == "crc3" else (1 + index % 2 if task == "crc2" else 2)
    return 0.5 if grade == 1 else 0.0


def _layout(rng, n_patches: int, group_size: int, share: float, ranges: np.ndarray):
    """Look-alike group, parameters and grouped flag of every patch.

    A ``share`` of the patches, at random places, form groups of ``group_size`` sharing one
    parameter draw; every other patch draws its own. Every draw is uniform over ``ranges``
    (independent per parameter), so one patch's parameters are distributed alike in every
    class."""
    n_grouped = int(round(share * n_patches / group_size)) * group_size
    n_draws = n_grouped // group_size + n_patches - n_grouped
    draws = ranges[:, 0] + (ranges[:, 1] - ranges[:, 0]) * _latin(rng, n_draws, len(ranges))
    which = np.concatenate(
        [np.repeat(np.arange(n_grouped // group_size), group_size),
         np.arange(n_grouped // group_size, n_draws)]
    )  # fmt: skip
    place = rng.permutation(n_patches)
    groups = np.empty(n_patches, np.int64)
    groups[place] = which
    grouped = np.zeros(n_patches, bool)
    grouped[place[:n_grouped]] = True
    return groups, draws[groups], grouped


def _latin(rng, n: int, d: int) -> np.ndarray:
    """``[n, d]`` Latin hypercube on ``[0, 1)^d``: per dimension one value in each ``1/n`` of
    the range, uniform within it, the dimensions permuted independently (one row alone is
    uniform on the cube)."""
    return (np.stack([rng.permutation(n) for _ in range(d)], 1) + rng.uniform(size=(n, d))) / n


def _patch_nuclei(rng, p, grid, patch_size, style, mark, clump_sd, min_dist, margin):
    """``[m, 5]`` ellipses ``(y, x, a, b, theta)`` of patch ``p``: ``round(style)`` nuclei, a
    fraction ``mark`` around 2 clump centres."""
    n = int(round(style))
    lo, hi = margin, patch_size - margin
    n_clump = int(round(mark * n))
    centres = rng.uniform(lo + clump_sd, hi - clump_sd, (2, 2))
    clump = centres[rng.integers(0, 2, 8 * n)] + rng.normal(0, clump_sd, (8 * n, 2))
    clump = clump[np.all((clump >= lo) & (clump < hi), axis=1)]
    free = rng.uniform(lo, hi, (30 * n, 2))
    yx = _hard_core(clump, np.zeros((0, 2)), n_clump, min_dist)
    yx = _hard_core(free, yx, n, min_dist)
    row, col = divmod(p, grid)
    yx = yx + (row * patch_size, col * patch_size)
    a = rng.uniform(2.2, 3.0, len(yx))
    b = a * rng.uniform(0.65, 0.9, len(yx))
    theta = rng.uniform(0, np.pi, len(yx))
    return np.column_stack([yx, a, b, theta])


def _copied_nuclei(rng, local, p, grid, patch_size, margin, jitter):
    """``[m, 5]`` ellipses of patch ``p``: a group's nuclei ``local`` (patch coordinates) under
    one of the 8 symmetries of the square, each moved by ``N(0, jitter)`` px, kept ``margin``
    inside the patch."""
    k = int(rng.integers(8))
    c = patch_size / 2
    y, x, theta = local[:, 0] - c, local[:, 1] - c, local[:, 4]
    for _ in range(k % 4):  # a quarter turn: (y, x) -> (x, -y), the axis turns with it
        y, x, theta = x, -y, theta + np.pi / 2
    if k >= 4:  # reflection across the horizontal axis
        y, theta = -y, -theta
    yx = np.column_stack([y, x]) + c + rng.normal(0, jitter, (len(local), 2))
    yx = np.clip(yx, margin, patch_size - margin - 1e-6)
    row, col = divmod(p, grid)
    yx = yx + (row * patch_size, col * patch_size)
    return np.column_stack([yx, local[:, 2:4], np.mod(theta, np.pi)])


def _hard_core(cands: np.ndarray, kept: np.ndarray, n: int, min_dist: float) -> np.ndarray:
    """``kept`` plus candidates, in order, at least ``min_dist`` from every kept one, up to
    ``n`` in all."""
    pts = np.empty((max(n, len(kept)), 2))
    m = len(kept)
    pts[:m] = kept
    d2 = min_dist**2
    for c in cands:
        if m >= n:
            break
        if m == 0 or (((pts[:m] - c) ** 2).sum(1) >= d2).all():
            pts[m] = c
            m += 1
    return pts[:m].copy()


def lookalike_distance(params: np.ndarray, ranges=None) -> np.ndarray:
    """The oracle: per ROI, the mean over its patches of the distance from a patch's true
    parameters to those of the most alike other patch (``[n]``; 0 when every patch has a
    look-alike, larger when the patches draw their parameters alone).

    Args:
        params: ``[n, P, D]`` the true parameters (:attr:`RelationROIs.params`).
        ranges: ``[D, 2]`` each parameter's range, to scale it to ``[0, 1]`` (default: the
            range over ``params``).
    """
    params = np.asarray(params, np.float64)
    if params.ndim != 3:
        raise ValueError(f"params must be [n, P, D], got shape {params.shape}")
    flat = params.reshape(-1, params.shape[-1])
    lo, hi = (flat.min(0), flat.max(0)) if ranges is None else np.asarray(ranges, float).T
    return nearest_patch_distance((params - lo) / np.maximum(hi - lo, 1e-12))


def lookalike_edges(groups: np.ndarray, pos: np.ndarray, grid: int) -> np.ndarray:
    """The true look-alike graph of one ROI: ``edge_index [2, E]`` (both directions, no self
    loops) joining every pair of its nodes that belong to one look-alike group; a patch without
    look-alikes has no edge.

    It is the graph the demo hides and a learned graph should find; the reference row "GCN on
    the true look-alike graph (oracle)" of ``08_abignet`` reads it. Under the official GCN's
    symmetric normalisation its shape alone tells nothing: joined *exact* copies give the
    output of no edges (``tests/test_abignet_official.py``), so a GCN on this graph can only
    read how the joined look-alikes differ from each other.

    Args:
        groups: ``[P]`` look-alike group of every patch of the ROI (:attr:`RelationROIs.groups`),
            row-major over the grid.
        pos: ``[N, 2]`` grid cell ``(column, row)`` of each node (a graph's ``pos``); patches
            left out of the graph are left out of their group.
        grid: patches per side.
    """
    pos = np.asarray(pos).astype(np.int64)
    groups = np.asarray(groups)
    if pos.ndim != 2 or pos.shape[1] != 2 or (pos < 0).any() or (pos >= grid).any():
        raise ValueError(f"pos must be [N, 2] grid cells in [0, {grid}), got shape {pos.shape}")
    if groups.shape != (grid * grid,):
        raise ValueError(
            f"groups must hold the {grid * grid} patches of the grid, got {groups.shape}"
        )
    node_group = groups[pos[:, 1] * grid + pos[:, 0]]
    same = node_group[:, None] == node_group[None, :]
    np.fill_diagonal(same, False)
    return np.stack(np.nonzero(same)).astype(np.int64)


def with_lookalike_edges(graphs, groups: np.ndarray, grid: int) -> list:
    """Copies of the patch graphs of :func:`relation_rois` ROIs (a ``pos`` of grid cells each)
    with ``edge_index`` set to :func:`lookalike_edges`.

    Args:
        graphs: one PyG ``Data`` per ROI.
        groups: ``[n, P]`` the ROIs' look-alike groups (:attr:`RelationROIs.groups`), in the
            order of ``graphs``.
        grid: patches per side.
    """
    import torch

    if len(graphs) != len(groups):
        raise ValueError(f"{len(graphs)} graphs but {len(groups)} rows of groups")
    out = []
    for g, row in zip(graphs, groups, strict=True):
        h = g.clone()
        h.edge_index = torch.from_numpy(lookalike_edges(row, g.pos.cpu().numpy(), grid))
        out.append(h)
    return out


def nearest_patch_distance(features) -> np.ndarray:
    """Per ROI, the mean over its patches of the Euclidean distance to the nearest other patch
    of the same ROI (``[n]``), NaN taken as 0. A mechanism-aware summary: it compares patches
    with each other, which no per-feature mean or std does. Scale the features first."""
    out = []
    for x in features:
        x = np.nan_to_num(np.asarray(x, np.float64))
        d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(d2, np.inf)
        out.append(float(np.sqrt(d2.min(1)).mean()))
    return np.array(out)


def roi_mean_std(features) -> np.ndarray:
    """The control's input: ``[n, 2F]`` per-ROI mean and std of the patch features (a list of
    ``[P_i, F]`` arrays or tensors), NaN taken as 0."""
    rows = []
    for x in features:
        x = np.nan_to_num(np.asarray(x, np.float64))
        rows.append(np.concatenate([x.mean(0), x.std(0)]))
    return np.stack(rows)
