r"""Synthetic ROIs for the ABiG-Net demo: the class is in which distant patches resemble each other.

Derivation (ABiG-Net, arXiv 2510.13188, abstract)
    ABiG-Net describes each patch of an ROI by the local structure of its nuclei and *learns*
    the image-level graph over the patches: "sparse, biologically meaningful connections between
    patches", "capturing the long-range contextual dependencies across the image". A fixed graph
    joins patches that are close in the image; the learned one can join patches that are far
    apart but alike. So the class signal of the demo is put where only such a graph reaches it:
    in *which* patches, wherever they lie, resemble each other -- and nowhere else.

    * No per-patch signal. Every patch draws its nuclei from a ``(style, mark)`` pair whose
      marginal distribution is the same in every class.
    * No ROI-level first-order signal. Within an ROI the multiset of styles and the multiset of
      marks are drawn by the same process in every class; only their *pairing* with each other
      differs. Among a few random candidate pairings, the one whose patch-level correlation
      between style and mark is smallest is kept (every class alike), so the per-ROI mean of
      any feature has the same expectation in every class. The per-ROI standard deviation is
      matched only where a feature responds to style and mark additively: where they interact
      (a clumped fraction changes the neighbour counts more at high density), a consistent ROI,
      whose 4 (style, mark) pairs are one draw, has a slightly smaller within-ROI spread than a
      shuffled one, which holds every pairing. This residual leak is weak (the tests bound a
      mean/std logistic regression at chance + 10 points on 80-90 ROIs) but it is there.
    * No local signal. Each style is carried by ``P / K`` patches scattered at random over the
      ``g x g`` grid, so grid neighbours rarely share a style.
    * The signal. *Style* (the nucleus density of a patch) changes almost every patch feature,
      so patches of one style resemble each other strongly: a graph built from feature
      similarity joins them, across the ROI. *Mark* (the fraction of a patch's nuclei that
      gather in clumps) changes fewer features, weakly. In the *consistent* relation every patch
      of a style has the same mark (the style group is homogeneous: "the distant patches that
      look alike *are* alike"); in the *shuffled* relation the marks are dealt to the patches at
      random, so a style group holds several marks. A model that aggregates each patch with the
      patches of its own style sees the mark spread within the groups; one that aggregates
      grid neighbours (a fixed k-NN graph) sees mostly patches of other styles, and one
      without edges sees each patch alone.

Classes (``task``), ``K`` style groups of ``P / K`` patches each
    * ``"crc3"`` (Extended CRC grading, 3 classes, ``K = 8``): "normal" every group consistent;
      "low grade" half of the groups consistent, the marks of the other half shuffled among
      their patches; "high grade" all shuffled.
    * ``"crc2"`` (normal vs cancer, ``K = 8``): "normal" consistent; "cancer" half of the ROIs
      low grade, half high grade, as above.
    * ``"melanoma"`` (tumour vs lymphocyte-rich, ``K = 16`` groups of 4 patches): "tumour"
      consistent, "lymphocyte-rich" shuffled.

Per ROI: ``K`` styles ``d_k`` stratified over ``[d_lo, d_hi]`` nuclei per patch (one per
``1/K`` of the range, at a uniform position within it), ``K`` marks ``m_k`` stratified over
``[0, 1]`` likewise, a random grouping of the patches. Per patch: ``round(d)`` nuclei, a
fraction ``m`` of them placed around 2 clump centres (Gaussian, ``clump_sd`` px), the others
uniform; every nucleus at least ``min_dist`` px from the others and ``margin`` px inside its
patch (so no nucleus crosses a patch border and cropping a patch never cuts one). Nuclei are
small ellipses (semi-axes 2.2-3.0 px, random orientation) rendered with the H&E model of
:mod:`wsigraph.data.synthetic_nuclei`.

:func:`group_mark_spread` is the oracle: the within-group variance of the true marks over
their total variance (0 for consistent, about 1 for shuffled). :func:`roi_mean_std` is the
control's input (per-ROI mean and std of the patch features).

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
GROUPS = {"crc3": 4, "crc2": 4, "melanoma": 4}
_TASK_CODE = {"crc3": 13, "crc2": 14, "melanoma": 15}


@dataclass
class RelationROIs(NucleiImages):
    """:class:`~wsigraph.data.synthetic_nuclei.NucleiImages` plus the ground truth per patch.

    Attributes:
        groups: ``[n, P]`` style group of each patch (row-major over the grid).
        styles: ``[n, P]`` nuclei per patch drawn for it (float, before rounding).
        marks: ``[n, P]`` clumped fraction of each patch, in ``[0, 1]``.
        consistent: ``[n, K]`` whether each style group's marks are one value.
        patch_size: side of a patch, px.
    """

    groups: np.ndarray | None = None
    styles: np.ndarray | None = None
    marks: np.ndarray | None = None
    consistent: np.ndarray | None = None
    patch_size: int = 64


def relation_rois(
    task: str,
    n_per_class: int,
    grid: int = 8,
    patch_size: int = 64,
    seed: int = 0,
    density: tuple[float, float] = (10.0, 40.0),
    min_dist: float = 6.5,
    clump_sd: float = 5.0,
    margin: float = 4.0,
    candidates: int = 8,
    render: bool = True,
) -> RelationROIs:
    """ROIs whose classes differ only in which distant patches resemble each other.

    Args:
        task: ``"crc3"``, ``"crc2"`` or ``"melanoma"`` (module docstring).
        n_per_class: ROIs per class.
        grid: patches per side; the ROI is ``grid * patch_size`` px square (default ``8``:
            64 patches).
        patch_size: patch side, px (default ``64``).
        seed: generator seed (default ``0``).
        density: range of the styles, nuclei per patch (default ``(14, 34)``).
        min_dist: smallest distance between nucleus centres, px (default ``7``).
        clump_sd: spread of a clump, px (default ``5``).
        margin: nuclei stay this far inside their patch, px (default ``4``).
        candidates: pairings drawn per ROI; the least correlated is kept (default ``8``).
        render: draw the images and masks (default ``True``); ``False`` leaves them empty
            (``[n, 0, 0, 3]``, ``[n, 0, 0]``) for statistics of the drawn nuclei only. The
            nuclei do not depend on it.

    Returns:
        :class:`RelationROIs`, classes in blocks (``labels = [0]*n + [1]*n (+ [2]*n)``).
    """
    if task not in RELATION_CLASSES:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(RELATION_CLASSES)}")
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    n_patches, k = grid * grid, GROUPS[task]
    if grid < 2 or n_patches % k:
        raise ValueError(f"{task}: {n_patches} patches cannot form {k} equal style groups")
    if patch_size < 2 * margin + min_dist:
        raise ValueError(f"patch_size {patch_size} too small for margin {margin}")
    names = RELATION_CLASSES[task]
    labels = np.repeat(np.arange(len(names)), n_per_class).astype(np.int64)
    size = grid * patch_size
    side = size if render else 0
    images = np.zeros((len(labels), side, side, 3), np.uint8)
    instances = np.zeros((len(labels), side, side), np.int32)
    nuclei, out = [], {"groups": [], "styles": [], "marks": [], "consistent": []}
    for i, label in enumerate(labels):
        rng = np.random.default_rng([seed, _TASK_CODE[task], i])
        consistent = _consistent_groups(task, int(label), i - label * n_per_class, k, rng)
        groups, styles, marks = _layout(rng, n_patches, k, consistent, density, candidates)
        ell = np.concatenate(
            [
                _patch_nuclei(
                    rng, p, grid, patch_size, styles[p], marks[p], min_dist, clump_sd, margin
                )
                for p in range(n_patches)
            ]
        )
        if render:
            images[i], instances[i] = _render(rng, ell, size)
        nuclei.append(ell)
        for key, value in zip(out, (groups, styles, marks, consistent), strict=True):
            out[key].append(value)
    return RelationROIs(
        images, labels, instances, tuple(names), nuclei,
        **{key: np.stack(v) for key, v in out.items()}, patch_size=patch_size,
    )  # fmt: skip


def _consistent_groups(task: str, label: int, index: int, k: int, rng) -> np.ndarray:
    """Which of the ``k`` style groups keep one mark (the class's relation)."""
    if label == 0:
        return np.ones(k, bool)
    grade = label if task == "crc3" else (1 + index % 2 if task == "crc2" else 2)
    out = np.zeros(k, bool)
    if grade == 1:  # low grade: half of the groups consistent
        out[rng.permutation(k)[: k // 2]] = True
    return out


def _stratified(rng, k: int, lo: float, hi: float, jitter: float) -> np.ndarray:
    """One value per ``1/k`` of ``[lo, hi]``, at the bin's centre +- ``jitter / 2`` of its width,
    in random order."""
    return lo + (hi - lo) * (rng.permutation(k) + 0.5 + jitter * rng.uniform(-0.5, 0.5, k)) / k


def _layout(rng, n_patches: int, k: int, consistent: np.ndarray, density, candidates: int):
    """Groups, styles and marks of every patch; the pairing least correlated of ``candidates``."""
    groups = rng.permutation(np.repeat(np.arange(k), n_patches // k))
    style_k = _stratified(rng, k, *density, jitter=0.3)
    mark_k = _stratified(rng, k, 0.0, 1.0, jitter=1.0)
    styles = style_k[groups]
    shuffled = ~consistent[groups]  # patches whose marks are dealt at random
    best, best_r = None, np.inf
    for _ in range(candidates):
        marks = mark_k[rng.permutation(k)][groups]
        marks[shuffled] = marks[shuffled][rng.permutation(int(shuffled.sum()))]
        r = abs(np.corrcoef(styles, marks)[0, 1])
        if r < best_r:
            best, best_r = marks, r
    return groups, styles, best


def _patch_nuclei(rng, p, grid, patch_size, style, mark, min_dist, clump_sd, margin):
    """``[m, 5]`` ellipses ``(y, x, a, b, theta)`` of patch ``p``."""
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


def group_mark_spread(groups: np.ndarray, marks: np.ndarray) -> np.ndarray:
    """The oracle: per ROI, the within-group variance of the marks over their total variance
    (``[n]``; 0 when every style group is homogeneous, about 1 when marks are dealt at random).

    Args:
        groups: ``[n, P]`` style group of each patch.
        marks: ``[n, P]`` a per-patch mark (the true one, or a measured proxy).
    """
    groups, marks = np.atleast_2d(groups), np.atleast_2d(np.asarray(marks, np.float64))
    out = np.empty(len(groups))
    for i, (g, m) in enumerate(zip(groups, marks, strict=True)):
        _, inv = np.unique(g, return_inverse=True)
        means = np.bincount(inv, m) / np.bincount(inv)
        out[i] = ((m - means[inv]) ** 2).mean() / max(m.var(), 1e-12)
    return out


def roi_mean_std(features) -> np.ndarray:
    """The control's input: ``[n, 2F]`` per-ROI mean and std of the patch features (a list of
    ``[P_i, F]`` arrays or tensors), NaN taken as 0."""
    rows = []
    for x in features:
        x = np.nan_to_num(np.asarray(x, np.float64))
        rows.append(np.concatenate([x.mean(0), x.std(0)]))
    return np.stack(rows)
