r"""Deterministic synthetic H&E tiles whose class signal lies in how the nuclei are arranged.

Demo image sets for the two nuclei papers, drawn with the Beer-Lambert H&E stain model of
:mod:`wsigraph.data.synthetic` (Ruifrok & Johnston stain vectors): dark haematoxylin ellipses
with a slight chromatin texture on an eosin-pink background with smooth and pixel noise. Every
image comes with its ground-truth instance map (one label per nucleus, later nuclei drawn on
top; nuclei are placed at a minimum centre distance larger than their longest axis, so they
never overlap).

What is held equal across classes (both functions)
    The background and stain model (per-image stain strength +-10 %), the nucleus size / shape
    / colour distribution (semi-axes, intensity, texture), and the number of nuclei per image
    (the ``i``-th image of every class gets the same target count, reached by accepting
    uniform candidate positions at the minimum distance). Per-class mean counts and mean
    nucleus areas differ by less than 3 % (tested).

:func:`arrangement_tiles` -- nuclei-graph GCN (Sureka et al. 2020), Table II demo
    What the paper's convolution can see. Its graph (Sec. III.B, Eq. 1) joins nuclei closer
    than 100 px (42 µm) with weight ``1 - d/r``; its RSF convolution (Eq. 2) is
    ``V_out = sum_i H_i V^i + b`` with ``H_i = h_i0 I + sum_j h_ij A_j``: each nucleus's output
    mixes its *own* features with the edge-weighted sum of its *neighbours'* features, and the
    pooling ``A_out = S^T A S`` (Eq. 3) carries that to groups of nuclei. The paper picked BACH
    because in situ and invasive carcinoma "differ in the spatial arrangement of nuclei even
    though the nuclei themselves share similar morphologies", and its occlusion / attention
    maps light up the nuclei lining the gland boundary (in situ, Gleason 3) against all tumour
    nuclei (invasive, Gleason 4). The quantity the convolution reaches and a tile summary
    cannot is therefore the *joint* of a nucleus's features and its neighbours' features --
    which kind of nucleus sits next to which -- not how many nuclei there are, how many
    neighbours each has or how close they are.

    How the generator hides everything else. Every tile draws, by one class-independent process:
    the nucleus count (60-80 per 256 px tile, the ``i``-th tile of every class the same), the
    positions (uniform, at least 16 px apart; so the radius graph's degree and edge-weight
    distributions are the same for both classes), the share of tumour nuclei (40-60 %, the
    ``i``-th tile of every class the same) and the look of each kind (tumour: large, oval,
    pale; stromal: small, round, dark; so the per-tile mixture of nucleus features is the
    same). The class decides only *which* of the drawn positions the tumour nuclei take -- the
    ``share`` highest of a class-specific score:

    * ``task="bach"``: class 0 "in situ": tumour nuclei fill one or two compact ducts (nearest
      to their centres), so a tumour nucleus's neighbours are tumour nuclei; class 1 "invasive":
      they follow 10-15 thin cords (persistent random walks) with single cells scattered
      between them (a 20 px jitter of the score), so tumour and stromal nuclei interleave.
    * ``task="gleason"``: class 0 "Gleason 3": tumour nuclei on the rims of many separate small
      round glands (rings of radius 16-30 px), stromal nuclei inside and between them; class 1
      "Gleason 4": tumour nuclei fused into one or two large nests punched out by small lumens
      (cribriform).

    The nucleus count, mean degree and mean edge weight of a tile (the control's inputs) thus
    carry no class signal, on the drawn nuclei and on segmented ones (tested), while
    :func:`kind_homophily` -- the share of graph edges joining two nuclei of the same kind,
    above its value for randomly placed kinds, computable from the drawn ``kinds`` (the
    oracle) -- separates the classes. A caricature: the lumens hold stromal nuclei, since
    positions may not depend on the class.

Everything is deterministic in ``seed`` (each image has its own generator
``default_rng([seed, task, i])``) and takes a few tens of milliseconds per image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import cKDTree

from wsigraph.data.synthetic import _E, _H

ARRANGEMENT_CLASSES = {
    "bach": ("in situ", "invasive"),
    "gleason": ("Gleason 3", "Gleason 4"),
}
# Demo tiles of arrangement_tiles: nuclei per 256 px tile (before scaling with the area), the
# smallest centre distance (px), the tumour share range, the jitter (px) that scatters single
# tumour cells between the cords of the invasive class, and the nuclei graph's radius in px
# (42 µm at the 0.63 µm/px the Table II notebook declares for these tiles).
NUCLEI_PER_TILE = (60, 80)
MIN_DIST = 16.0
SHARE = (0.4, 0.6)
CORD_JITTER = 20.0
DEMO_RADIUS_PX = 42.0 / 0.63
_TASK_CODE = {"bach": 1, "gleason": 2}


@dataclass
class NucleiImages:
    """A synthetic image set.

    Attributes:
        images: ``[n, H, W, 3]`` uint8 RGB.
        labels: ``[n]`` int64 class index.
        instances: ``[n, H, W]`` int32 ground-truth nuclei, 0 = background, 1..m per image.
        class_names: name of each class index.
        nuclei: per image, ``[m, 5]`` float64 rows ``(y, x, a, b, theta)`` of the drawn
            ellipses (centre in px, semi-axes in px, major-axis angle in radians from the +x
            (column) axis towards +y (row)); row ``k`` is instance label ``k + 1``.
        kinds: per image, ``[m]`` int64 kind of each drawn nucleus (``1`` tumour, ``0``
            stromal) for :func:`arrangement_tiles`; ``None`` for sets without kinds.
    """

    images: np.ndarray
    labels: np.ndarray
    instances: np.ndarray
    class_names: tuple[str, ...]
    nuclei: list[np.ndarray]
    kinds: list[np.ndarray] | None = None


# --------------------------------------------------------------------------------------------
# Public generators


def arrangement_tiles(task: str, n_per_class: int, size: int = 256, seed: int = 0) -> NucleiImages:
    """Tiles whose classes differ only in which nuclei neighbour which (nuclei-graph Table II demo).

    Positions, nucleus count, the share of tumour nuclei and the look of each kind of nucleus
    are drawn by one class-independent process; the class decides only *which* positions the
    tumour nuclei take (see the module docstring).

    Args:
        task: ``"bach"`` (in situ vs invasive) or ``"gleason"`` (Gleason 3 vs Gleason 4).
        n_per_class: images per class.
        size: tile side in px (default ``256``; the nucleus count scales with the area).
        seed: generator seed (default ``0``).

    Returns:
        :class:`NucleiImages`, classes in blocks (``labels = [0]*n + [1]*n``), with ``kinds``
        (``1`` tumour, ``0`` stromal) per nucleus.
    """
    if task not in ARRANGEMENT_CLASSES:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(ARRANGEMENT_CLASSES)}")
    layouts = {
        "bach": (_ducts, _cords),
        "gleason": (_small_glands, _cribriform),
    }[task]
    scale = (size / 256) ** 2

    def draw(rng: np.random.Generator, label: int, index: int) -> np.ndarray:
        # class-independent: count, share and positions (the i-th tile of every class gets the
        # same count and share; positions from the same process)
        n = int(round(_count(seed, task, index, *NUCLEI_PER_TILE) * scale))
        share = _share(seed, task, index)
        yx = _accept(rng, _uniform(rng, size, 8 * n), size, min_dist=MIN_DIST, n=n, margin=3.0)
        # class-dependent: which nuclei are tumour nuclei
        score = layouts[label](rng, yx, size)  # [m], higher = more tumour-like place
        tumour = np.zeros(len(yx), bool)
        tumour[np.argsort(-score, kind="stable")[: int(round(share * len(yx)))]] = True
        return np.column_stack([yx, *_looks(rng, tumour), tumour])

    return _make_set(task, ARRANGEMENT_CLASSES[task], n_per_class, size, seed, draw)


# --------------------------------------------------------------------------------------------
# Statistics of nuclei (measured from instance maps, used by the tests and the notebooks)


def nucleus_properties(instances: np.ndarray) -> dict[str, np.ndarray]:
    """Centroid, area and major-axis angle of every labelled nucleus, from pixel moments.

    Args:
        instances: ``[H, W]`` int labels, 0 = background.

    Returns:
        ``{"label", "y", "x", "area", "theta"}`` arrays over the labels present; ``theta`` in
        ``[0, pi)`` from the +x axis towards +y, as in :class:`NucleiImages`.
    """
    instances = np.asarray(instances)
    ys, xs = np.nonzero(instances)
    lab = instances[ys, xs]
    labels, inv = np.unique(lab, return_inverse=True)
    area = np.bincount(inv).astype(np.float64)
    my = np.bincount(inv, ys) / area
    mx = np.bincount(inv, xs) / area
    dy, dx = ys - my[inv], xs - mx[inv]
    cyy = np.bincount(inv, dy * dy) / area
    cxx = np.bincount(inv, dx * dx) / area
    cxy = np.bincount(inv, dx * dy) / area
    theta = np.mod(0.5 * np.arctan2(2 * cxy, cxx - cyy), np.pi)
    return {"label": labels, "y": my, "x": mx, "area": area, "theta": theta}


def kind_homophily(yx: np.ndarray, kinds: np.ndarray, radius: float = DEMO_RADIUS_PX) -> float:
    """The oracle of :func:`arrangement_tiles`: the fraction of the radius graph's edges that
    join two nuclei of the same kind, minus the fraction expected if the kinds were placed at
    random on the same graph (``p**2 + (1 - p)**2`` for a tumour share ``p``). About 0 when the
    kinds are mixed, positive when they are segregated; ``nan`` without edges.

    Args:
        yx: ``[m, 2]`` nucleus centres in px.
        kinds: ``[m]`` kind per nucleus (any two values).
        radius: graph radius in px (default :data:`DEMO_RADIUS_PX`, 42 µm at the demo tiles'
            0.63 µm per pixel, as 07 builds its graphs).
    """
    yx, kinds = np.asarray(yx, np.float64), np.asarray(kinds)
    if len(yx) != len(kinds):
        raise ValueError(f"yx has {len(yx)} rows but kinds {len(kinds)}")
    pairs = cKDTree(yx).query_pairs(radius, output_type="ndarray").reshape(-1, 2)
    if not len(pairs):
        return float("nan")
    same = float(np.mean(kinds[pairs[:, 0]] == kinds[pairs[:, 1]]))
    p = float(np.mean(kinds == kinds.flat[0]))
    return same - (p**2 + (1 - p) ** 2)


# --------------------------------------------------------------------------------------------
# Rendering


def _make_set(
    task: str,
    class_names: tuple[str, ...],
    n_per_class: int,
    size: int,
    seed: int,
    draw: Callable,
) -> NucleiImages:
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    labels = np.repeat(np.arange(len(class_names)), n_per_class).astype(np.int64)
    images = np.empty((len(labels), size, size, 3), np.uint8)
    instances = np.empty((len(labels), size, size), np.int32)
    nuclei, kinds = [], []
    for i, label in enumerate(labels):
        rng = np.random.default_rng([seed, _TASK_CODE[task], i])
        ell = draw(rng, int(label), i - label * n_per_class)  # [m, 5] or [m, 7]
        images[i], instances[i] = _render(rng, ell, size)
        nuclei.append(ell[:, :5])
        kinds.append(ell[:, 6].astype(np.int64) if ell.shape[1] > 6 else None)
    has_kinds = all(k is not None for k in kinds)
    return NucleiImages(
        images, labels, instances, tuple(class_names), nuclei, kinds if has_kinds else None
    )


def _render(rng: np.random.Generator, ell: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB image and instance map of the ellipses ``ell`` ``[m, 5]`` on stroma (a 6th column,
    when present, is each nucleus's stain strength; otherwise drawn at random)."""
    h = w = size
    inst = np.zeros((h, w), np.int32)
    stain = np.zeros((h, w), np.float64)  # per-pixel haematoxylin strength of its nucleus
    if len(ell):
        cy, cx, a, b, th = (ell[:, k][:, None] for k in range(5))
        reach = int(np.ceil(ell[:, 2].max())) + 1
        dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1].reshape(2, -1)  # [K]
        iy, ix = np.round(cy).astype(np.int64), np.round(cx).astype(np.int64)
        py, px = iy + dy[None, :], ix + dx[None, :]  # [m, K] pixel coordinates
        ry, rx = py - cy, px - cx
        u = rx * np.cos(th) + ry * np.sin(th)
        v = -rx * np.sin(th) + ry * np.cos(th)
        inside = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        inside &= (py >= 0) & (py < h) & (px >= 0) & (px < w)
        rows = np.broadcast_to(np.arange(len(ell))[:, None], inside.shape)[inside]
        inst[py[inside], px[inside]] = rows + 1  # later nuclei on top
        if ell.shape[1] > 5:
            strength = ell[:, 5]
        else:
            strength = rng.uniform(0.85, 1.15, len(ell))
        stain[py[inside], px[inside]] = strength[rows]
    nucleus = inst > 0
    chromatin = 1.0 + 0.15 * _smooth_noise(rng, h, w, 2.5)
    conc_h = 1.05 * ndimage.gaussian_filter(stain * chromatin, 0.6)
    fibres = _smooth_noise(rng, h, w, 10.0) + 0.5 * _smooth_noise(rng, h, w, 3.0)
    conc_e = 0.42 * np.clip(1.0 + 0.25 * fibres, 0.3, 2.0) * (1.0 - 0.6 * nucleus)
    s_h, s_e = rng.uniform(0.9, 1.1, 2)
    od = (s_h * (conc_h + 0.05))[..., None] * _H + (s_e * conc_e)[..., None] * _E + 0.03
    od += rng.normal(0.0, 0.015, (h, w, 3))
    rgb = 255.0 * np.exp(-od)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8), inst


# --------------------------------------------------------------------------------------------
# Placement


def _accept(
    rng: np.random.Generator,
    candidates: np.ndarray,
    size: int,
    min_dist: float,
    n: int,
    margin: float,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Up to ``n`` candidates inside the tile, at least ``min_dist`` apart.

    Without ``groups`` the candidates are visited in random order. With ``groups`` (one
    structure id per candidate: a duct, a gland, a cord, a nest) whole structures are visited in
    random order, each from a random point outwards, so that cutting at ``n`` leaves complete
    structures and one partial, compact one -- not every structure randomly thinned.
    """
    inside = np.all((candidates >= margin) & (candidates < size - margin), axis=1)
    c = candidates[inside]
    if groups is None:
        c = c[rng.permutation(len(c))]
    else:
        g = np.asarray(groups)[inside]
        _, g = np.unique(g, return_inverse=True)
        group_rank = rng.permutation(g.max() + 1 if len(g) else 0)[g]
        start = c[rng.integers(0, len(c), g.max() + 1)] if len(c) else np.zeros((0, 2))
        within = np.hypot(*(c - start[g]).T)
        c = c[np.lexsort((within, group_rank))]
    cell = min_dist / np.sqrt(2)  # at most one accepted point per grid cell
    g = int(np.ceil(size / cell)) + 1
    grid = -np.ones((g + 4, g + 4), np.int64)
    kept: list[int] = []
    d2 = min_dist**2
    for k, (y, x) in enumerate(c):
        gy, gx = int(y / cell) + 2, int(x / cell) + 2
        near = grid[gy - 2 : gy + 3, gx - 2 : gx + 3]
        near = near[near >= 0]
        if len(near) and (((c[near] - (y, x)) ** 2).sum(1) < d2).any():
            continue
        grid[gy, gx] = k
        kept.append(k)
        if len(kept) == n:
            break
    return c[kept]


def _uniform(rng: np.random.Generator, size: int, k: int) -> np.ndarray:
    return rng.uniform(0, size, (k, 2))


def _place_discs(
    rng: np.random.Generator, size: int, radii: np.ndarray, gap: float, overhang: float
) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping disc centres (``gap`` px apart), up to ``overhang * r`` outside the tile."""
    centres, kept = [], []
    for r in radii:
        for _ in range(60):
            c = rng.uniform(-overhang * r, size + overhang * r, 2)
            if all(
                np.hypot(*(c - c2)) >= r + r2 + gap for c2, r2 in zip(centres, kept, strict=True)
            ):
                centres.append(c)
                kept.append(r)
                break
    return np.asarray(centres).reshape(-1, 2), np.asarray(kept)


def _ducts(rng: np.random.Generator, yx: np.ndarray, size: int) -> np.ndarray:
    """BACH in situ: tumour nuclei fill one or two compact ducts (closest to their centres)."""
    centres = rng.uniform(0.2 * size, 0.8 * size, (int(rng.integers(1, 3)), 2))
    return -_nearest(yx, centres)


def _cords(rng: np.random.Generator, yx: np.ndarray, size: int) -> np.ndarray:
    """BACH invasive: tumour nuclei along thin single-file cords (persistent random walks)
    crossing the stroma, and single cells scattered between them."""
    pts = []
    for _ in range(int(rng.integers(10, 16))):
        p, phi = rng.uniform(0, size, 2), rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(8, 16))):
            pts.append(p.copy())
            phi += rng.normal(0, 0.3)
            p = p + 8.0 * np.array([np.sin(phi), np.cos(phi)])
    return -_nearest(yx, np.asarray(pts)) + rng.normal(0, CORD_JITTER, len(yx))


def _small_glands(rng: np.random.Generator, yx: np.ndarray, size: int) -> np.ndarray:
    """Gleason 3: tumour nuclei on the rims of many separate small round glands (rings of
    radius 16-30 px), stromal nuclei inside and between them."""
    centres, radii = _place_discs(rng, size, rng.uniform(16, 30, 40), gap=24.0, overhang=0.3)
    d = np.hypot(*(yx[:, None, :] - centres[None, :, :]).transpose(2, 0, 1))  # [m, g]
    return -np.abs(d - radii[None, :]).min(1)


def _cribriform(rng: np.random.Generator, yx: np.ndarray, size: int) -> np.ndarray:
    """Gleason 4: tumour nuclei fused into one or two large nests, punched out by small lumens
    (cribriform), stromal nuclei around them."""
    centres = rng.uniform(0.3 * size, 0.7 * size, (int(rng.integers(1, 3)), 2))
    score = -_nearest(yx, centres)
    lumens = rng.uniform(0, size, (int(rng.integers(2, 5)), 2))
    inside = _nearest(yx, lumens) < rng.uniform(14, 22)
    return np.where(inside, score - size, score)


def _nearest(yx: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance of every row of ``yx`` to the nearest of ``points``."""
    return cKDTree(points).query(yx)[0] if len(yx) else np.zeros(0)


def _looks(rng: np.random.Generator, tumour: np.ndarray) -> tuple[np.ndarray, ...]:
    """Semi-axes, angle and stain strength of each nucleus, from its kind only (the same for
    every class): tumour nuclei large, oval and pale (vesicular); stromal nuclei small, round
    and dark."""
    m = len(tumour)
    a = np.where(tumour, rng.uniform(5.2, 6.4, m), rng.uniform(4.2, 4.8, m))
    b = a * np.where(tumour, rng.uniform(0.7, 0.9, m), rng.uniform(0.85, 1.0, m))
    theta = rng.uniform(0, np.pi, m)
    strength = np.where(tumour, rng.uniform(0.8, 0.95, m), rng.uniform(1.05, 1.2, m))
    return a, b, theta, strength


def _share(seed: int, task: str, index: int) -> float:
    """Tumour share of the ``index``-th image of *every* class."""
    return float(np.random.default_rng([seed, _TASK_CODE[task], 10**6 + 1, index]).uniform(*SHARE))


def _count(seed: int, task: str, index: int, lo: int, hi: int) -> int:
    """Target nucleus count of the ``index``-th image of *every* class (equal across classes)."""
    return int(np.random.default_rng([seed, _TASK_CODE[task], 10**6, index]).integers(lo, hi + 1))


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Zero-mean, unit-std noise with features of about ``scale`` pixels (bicubic upsampling
    of white noise)."""
    small = rng.standard_normal((max(2, int(h / scale) + 1), max(2, int(w / scale) + 1)))
    big = np.asarray(
        Image.fromarray(small.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BICUBIC)
    )
    return (big - big.mean()) / (big.std() + 1e-9)
