r"""Nuclei instance segmentation of H&E tiles: UNet targets, training, inference, metrics.

The nuclei-graph GCN paper (Sec. III.B) detects the nuclei that become graph vertices with a
UNet (Ronneberger et al. 2015; :class:`wsigraph.models.unet.UNet`). The paper gives no
training details; ours:

Targets (:func:`targets_from_instances`)
    Three classes per pixel, 0 background / 1 nucleus interior / 2 nucleus boundary, the
    boundary being the nucleus pixels adjacent to another label or to background
    (``skimage.segmentation.find_boundaries(mode="inner")``). Touching nuclei then have
    disjoint interiors.

Instances (:func:`instances_from_probabilities`)
    Foreground = ``1 - p_background > threshold``; markers = connected components of
    ``p_interior > threshold``; a watershed on the negated distance transform of the
    foreground grows the markers over it; foreground components without a marker become
    instances of their own; objects smaller than ``min_size`` pixels are removed.

Training (:func:`train_unet`)
    Random square crops with random flips / 90-degree rotations, class-weighted
    cross-entropy (weights proportional to inverse class frequency over the training masks,
    normalised to mean 1), Adam.

Metrics (:func:`dice`, :func:`aji`)
    Binary foreground Dice and the Aggregated Jaccard Index of the MoNuSeg challenge
    (Kumar et al. 2017, IEEE TMI 36(7)).

:func:`classical_nuclei` is a classical scikit-image fallback for the demo, not the paper's
UNet.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage import filters, morphology
from skimage.color import hed_from_rgb, rgb2hed, rgb_from_hed
from skimage.feature import peak_local_max
from skimage.segmentation import find_boundaries, relabel_sequential, watershed
from tqdm.auto import tqdm

from wsigraph.io import save_torch
from wsigraph.models.unet import UNet, UNetConfig

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2


def targets_from_instances(instances: np.ndarray) -> np.ndarray:
    """3-class UNet target of an instance mask.

    Args:
        instances: ``[H, W]`` int, 0 = background, ``k > 0`` = nucleus ``k``.

    Returns:
        ``[H, W]`` int64: 0 background, 1 interior, 2 boundary (nucleus pixels touching
        another label or background, ``find_boundaries(mode="inner")``).
    """
    instances = np.asarray(instances)
    target = (instances > 0).astype(np.int64)  # [H, W]
    target[find_boundaries(instances, mode="inner") & (instances > 0)] = BOUNDARY
    return target


def distance_target(instances: np.ndarray) -> np.ndarray:
    """Per-nucleus normalised distance map, the UNet's fourth (regression) output.

    Each nucleus pixel holds its Euclidean distance to the nearest pixel outside its own
    nucleus (background or another nucleus; boundary pixels of
    :func:`targets_from_instances` are at distance 1), divided by the largest such distance
    in that nucleus, so every nucleus peaks at exactly 1 and falls towards its rim; background
    is 0. Two touching nuclei therefore keep two separate peaks with a valley between them,
    which is what the watershed markers are cut from.

    Args:
        instances: ``[H, W]`` int, 0 = background, ``k > 0`` = nucleus ``k``.

    Returns:
        ``[H, W]`` float32 in ``[0, 1]``.
    """
    instances = np.asarray(instances)
    inside = (instances > 0) & ~find_boundaries(instances, mode="inner")  # [H, W]
    # distance to the nearest pixel outside ``inside``, +1 so the rim (boundary) is 1
    edt = ndimage.distance_transform_edt(inside) + (instances > 0)
    labels, index = np.unique(instances[instances > 0], return_inverse=True)
    if len(labels) == 0:
        return np.zeros(instances.shape, np.float32)
    peak = ndimage.maximum(edt, instances, labels)  # [n] per nucleus
    out = np.zeros(instances.shape, np.float32)
    out[instances > 0] = edt[instances > 0] / np.asarray(peak)[index]
    return out


def _remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Zero out labels with fewer than ``min_size`` pixels and relabel 1..n."""
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    labels = np.where(small[labels], 0, labels)
    return relabel_sequential(labels)[0].astype(np.int32)


def instances_from_probabilities(
    prob: np.ndarray,
    threshold: float = 0.5,
    min_size: int = 10,
    distance: np.ndarray | None = None,
    marker_threshold: float = 0.5,
) -> np.ndarray:
    """Nuclei instances from the UNet's outputs (marker-controlled watershed).

    Without ``distance`` (3-class model): markers are the connected components of
    ``p_interior > threshold``, grown over the foreground by a watershed on the negated
    distance transform of the foreground. With ``distance`` (the predicted normalised
    distance map of :func:`distance_target`): markers are the components of
    ``distance > marker_threshold`` inside the foreground, grown by a watershed on the
    negated predicted distance, so nuclei whose interiors touch still get one marker each
    as long as the prediction dips between their centres.

    Args:
        prob: ``[3, H, W]`` probabilities of background / interior / boundary (a 4-channel
            output's first three channels).
        threshold: on ``1 - p_background`` (foreground) and on ``p_interior`` (markers)
            (default ``0.5``).
        min_size: smallest kept nucleus, in pixels (default ``10``).
        distance: ``[H, W]`` predicted normalised distance, or ``None`` (default).
        marker_threshold: markers where ``distance`` exceeds it (default ``0.5``).

    Returns:
        ``[H, W]`` int32 instance labels 1..n, 0 = background.
    """
    prob = np.asarray(prob)
    foreground = (1.0 - prob[BACKGROUND]) > threshold  # [H, W]
    if distance is None:
        markers, _ = ndimage.label((prob[INTERIOR] > threshold) & foreground)
        relief = ndimage.distance_transform_edt(foreground)
    else:
        relief = np.asarray(distance, np.float64)
        if relief.shape != foreground.shape:
            raise ValueError(f"distance shape {relief.shape} != probabilities {foreground.shape}")
        markers, _ = ndimage.label((relief > marker_threshold) & foreground)
    labels = watershed(-relief, markers, mask=foreground)  # [H, W]
    # Foreground blobs that hold no marker (all boundary) are nuclei too.
    orphans, n_orphans = ndimage.label(foreground & (labels == 0))
    if n_orphans:
        labels = np.where(orphans > 0, orphans + labels.max(), labels)
    return _remove_small(labels, min_size)


def classical_nuclei(
    image: np.ndarray,
    min_size: int = 10,
    sigma: float = 1.0,
    min_distance: int = 7,
    h: float | None = None,
) -> np.ndarray:
    """Classical fallback for the demo, not the paper's UNet: haematoxylin + Otsu + watershed.

    The haematoxylin channel of the colour deconvolution (``skimage.color.rgb2hed``,
    Ruifrok & Johnston 2001), Gaussian-smoothed, is thresholded with Otsu's method; holes are
    filled and specks removed; touching nuclei are split by a watershed on the negated
    distance transform seeded at its local maxima.

    Args:
        image: ``[H, W, 3]`` uint8 RGB H&E.
        min_size: smallest kept nucleus, in pixels (default ``10``).
        sigma: Gaussian smoothing of the haematoxylin channel, in pixels (default ``1.0``).
        min_distance: smallest distance between two seeds, in pixels (default ``7``; MoNuSeg
            nuclei at 40x are ~15-40 px across).
        h: ``None`` (default): seeds at the local maxima of the smoothed distance transform
            (``min_distance`` apart). A number: seeds are its regional maxima of dynamic at
            least ``h`` pixels (``skimage.morphology.h_maxima``), so a shallow neck between two
            lobes of one nucleus no longer splits it; ``min_distance`` is then unused.

    Returns:
        ``[H, W]`` int32 instance labels 1..n, 0 = background.
    """
    haem = filters.gaussian(rgb2hed(image[..., :3])[..., 0], sigma=sigma)  # [H, W]
    mask = haem > filters.threshold_otsu(haem)
    mask = ndimage.binary_fill_holes(ndimage.binary_opening(mask, morphology.disk(1)))
    components, _ = ndimage.label(mask)
    components = _remove_small(components, min_size)
    mask = components > 0
    distance = ndimage.distance_transform_edt(mask)
    smooth = filters.gaussian(distance, sigma=1.0)
    if h is None:
        peaks = peak_local_max(smooth, min_distance=min_distance, labels=components)  # [n, 2]
        markers = np.zeros(mask.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    else:
        markers, _ = ndimage.label(morphology.h_maxima(smooth, h) & mask)
    labels = watershed(-distance, markers, mask=mask)
    orphans, _ = ndimage.label(mask & (labels == 0))
    labels = np.where(orphans > 0, orphans + labels.max(), labels)
    return _remove_small(labels, min_size)


def dice(pred_instances: np.ndarray, true_instances: np.ndarray) -> float:
    """Binary foreground Dice ``2 |P & T| / (|P| + |T|)`` (1.0 when both are empty).

    Args:
        pred_instances: ``[H, W]`` predicted labels (0 = background).
        true_instances: ``[H, W]`` true labels (0 = background).
    """
    p, t = np.asarray(pred_instances) > 0, np.asarray(true_instances) > 0
    total = p.sum() + t.sum()
    return 1.0 if total == 0 else float(2.0 * (p & t).sum() / total)


def _dense_labels(instances: np.ndarray) -> tuple[np.ndarray, int]:
    """``([H * W] int64, n)``: every pixel's nucleus as an index 1..n in the order of the
    labels (0 = background, label 0), and the number ``n`` of nuclei. A lookup table for
    non-negative integer labels (one pass, no sort); ``np.unique`` otherwise."""
    a = np.asarray(instances).ravel()
    if a.size and np.issubdtype(a.dtype, np.integer) and a.min() >= 0 and a.max() <= 4 * a.size:
        present = np.zeros(int(a.max()) + 1, bool)
        present[a] = True
        present[0] = False
        rank = np.cumsum(present)  # label -> 1..n (its rank among the present labels)
        return np.where(present, rank, 0)[a], int(rank[-1])
    ids, index = np.unique(a, return_inverse=True)
    background = np.flatnonzero(ids == 0)
    if len(background):  # ids are sorted: index 0 .. holds the negative labels, then 0
        b = int(background[0])
        index = np.where(index == b, 0, index + (index < b))
        return index.astype(np.int64), len(ids) - 1
    return index.astype(np.int64) + 1, len(ids)


def _overlaps(t: np.ndarray, p: np.ndarray, n_p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sparse contingency table of two dense label maps (:func:`_dense_labels`): ``(ti,
    pj, count)`` per overlapping (true, pred) pair of nuclei, sorted by ``ti`` then ``pj``."""
    both = (t > 0) & (p > 0)
    keys, count = np.unique(t[both] * n_p + p[both], return_counts=True)
    return keys // n_p, keys % n_p, count


def aji(pred_instances: np.ndarray, true_instances: np.ndarray) -> float:
    r"""Aggregated Jaccard Index (Kumar et al. 2017, the MoNuSeg metric).

    .. math::
        \mathrm{AJI} = \frac{\sum_i |T_i \cap P_{j^*(i)}|}
            {\sum_i |T_i \cup P_{j^*(i)}| + \sum_{j \in U} |P_j|},
        \qquad j^*(i) = \arg\max_j \frac{|T_i \cap P_j|}{|T_i \cup P_j|},

    over true nuclei :math:`T_i`; :math:`U` are the predicted nuclei matched to no true one.
    A true nucleus overlapping no prediction adds its area to the denominator only. A
    prediction may be matched by several true nuclei (as in the original). Computed from the
    sparse contingency table of (true, pred) label pairs, without a loop over nuclei.

    Args:
        pred_instances: ``[H, W]`` predicted labels (0 = background).
        true_instances: ``[H, W]`` true labels (0 = background).

    Returns:
        AJI in ``[0, 1]`` (1.0 when both are empty).
    """
    t, _ = _dense_labels(true_instances)
    p, _ = _dense_labels(pred_instances)
    area_t, area_p = np.bincount(t), np.bincount(p)  # [nT + 1], [nP + 1]
    area_t[0] = area_p[0] = 0
    if area_t.sum() + area_p.sum() == 0:
        return 1.0
    ti, pj, inter = _overlaps(t, p, len(area_p))  # [M] overlapping (true, pred) pairs
    union = area_t[ti] + area_p[pj] - inter
    iou = inter / union
    order = np.lexsort((-iou, ti))  # per true nucleus, the best IoU first
    first = np.diff(ti[order], prepend=-1) != 0  # [M]
    best = order[first]  # one pair per overlapped true nucleus
    matched_t = np.zeros(len(area_t), bool)
    matched_t[ti[best]] = True
    used_p = np.zeros(len(area_p), bool)
    used_p[pj[best]] = True
    numerator = inter[best].sum()
    denominator = (
        union[best].sum() + area_t[~matched_t].sum() + area_p[~used_p].sum()
    )  # unmatched true and unused pred areas (index 0 has area 0)
    return float(numerator / denominator)


def matched_instances(
    pred_instances: np.ndarray, true_instances: np.ndarray, iou: float = 0.5
) -> tuple[int, int, int]:
    r"""True positives, false positives and false negatives at an IoU threshold.

    A predicted and a true nucleus match when their IoU exceeds ``iou``. For ``iou >= 0.5``
    each nucleus has at most one such partner (two partners would each need more than half
    of the union), so the matching is unique without any assignment step.

    Args:
        pred_instances: ``[H, W]`` predicted labels (0 = background).
        true_instances: ``[H, W]`` true labels (0 = background).
        iou: the threshold, at least 0.5 (default ``0.5``).

    Returns:
        ``(tp, fp, fn)``: matched pairs, unmatched predictions, unmatched true nuclei.

    Raises:
        ValueError: ``iou`` below 0.5 (the matching would no longer be unique) or above 1.
    """
    if not 0.5 <= iou <= 1.0:
        raise ValueError(f"iou must be in [0.5, 1] for a unique matching, got {iou}")
    t, n_true = _dense_labels(true_instances)
    p, n_pred = _dense_labels(pred_instances)
    area_t, area_p = np.bincount(t), np.bincount(p)
    ti, pj, inter = _overlaps(t, p, len(area_p))
    if not len(inter):
        return 0, n_pred, n_true
    union = area_t[ti] + area_p[pj] - inter
    tp = int((inter / union > iou).sum())
    return tp, n_pred - tp, n_true - tp


def f1_at_iou(pred_instances: np.ndarray, true_instances: np.ndarray, iou: float = 0.5) -> float:
    """Instance F1 ``2 TP / (2 TP + FP + FN)`` with matches at IoU > ``iou`` (default 0.5; see
    :func:`matched_instances`). 1.0 when both maps are empty."""
    tp, fp, fn = matched_instances(pred_instances, true_instances, iou)
    total = 2 * tp + fp + fn
    return 1.0 if total == 0 else 2 * tp / total


def count_error(pred_instances: np.ndarray, true_instances: np.ndarray) -> float:
    """Relative count error ``|n_pred - n_true| / n_true`` over non-zero labels.

    Raises:
        ValueError: the true map holds no nucleus (the ratio is undefined).
    """
    n_true = len(np.unique(true_instances[np.asarray(true_instances) > 0]))
    n_pred = len(np.unique(pred_instances[np.asarray(pred_instances) > 0]))
    if n_true == 0:
        raise ValueError("count error is undefined for a true map without nuclei")
    return abs(n_pred - n_true) / n_true


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image[..., :3], np.uint8)).permute(2, 0, 1).float() / 255


# Ruifrok & Johnston's H&E-DAB stain vectors, as scikit-image uses them (rows = stains).
_RGB_FROM_HED = np.asarray(rgb_from_hed, np.float64)
_HED_FROM_RGB = np.asarray(hed_from_rgb, np.float64)


def stain_jitter(image: np.ndarray, rng: np.random.Generator, sigma: float = 0.05) -> np.ndarray:
    """Random H&E stain and brightness/contrast jitter of an RGB image (Tellez et al. 2018's
    "HED" augmentation, plus a brightness/contrast change).

    Optical density ``-log(rgb)`` is unmixed into haematoxylin / eosin / DAB with the
    Ruifrok-Johnston vectors; each stain ``s`` becomes ``s * a + b`` with ``a ~ U(1 - sigma,
    1 + sigma)`` and ``b ~ U(-sigma, sigma)``; the result is mixed back, then
    ``(x - mean) * c + mean + d`` with ``c ~ U(1 - 2 sigma, 1 + 2 sigma)`` and
    ``d ~ U(-sigma, sigma)``. Geometry is untouched, so masks need no change.

    Args:
        image: ``[H, W, 3]`` float RGB in ``[0, 1]``.
        rng: the random generator.
        sigma: jitter strength (default ``0.05``; ``0`` returns the image unchanged).

    Returns:
        ``[H, W, 3]`` float32 RGB in ``[0, 1]``.
    """
    if sigma == 0:
        return np.asarray(image, np.float32)
    od = -np.log(np.clip(image, 1.0 / 255, 1.0))  # [H, W, 3] optical density
    hed = od @ _HED_FROM_RGB  # [H, W, 3] stain concentrations
    hed = hed * rng.uniform(1 - sigma, 1 + sigma, 3) + rng.uniform(-sigma, sigma, 3)
    rgb = np.exp(-(hed @ _RGB_FROM_HED))
    mean = rgb.mean()
    rgb = (rgb - mean) * rng.uniform(1 - 2 * sigma, 1 + 2 * sigma) + mean
    rgb = rgb + rng.uniform(-sigma, sigma)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def augmented_crop(
    image: np.ndarray,
    instances: np.ndarray,
    rng: np.random.Generator,
    patch: int = 256,
    scale: tuple[float, float] = (0.8, 1.25),
    stain: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """One random training crop of a tile, image and instance map transformed together.

    A scale ``s`` is drawn log-uniformly from ``scale``; a random ``round(patch / s)``-pixel
    square is cut (tiles smaller than that are padded: reflected image, background mask) and
    resized to ``patch x patch`` (image bilinear with antialiasing, instance map nearest, so
    labels stay labels); then a random horizontal flip, a random multiple of 90 degrees, and
    :func:`stain_jitter` on the image only. Targets are computed afterwards from the returned
    instance map, so boundaries keep their one-pixel width at every scale.

    Args:
        image: ``[H, W, 3]`` uint8 RGB.
        instances: ``[H, W]`` int instance map.
        rng: the random generator.
        patch: output side in pixels (default ``256``).
        scale: range of the zoom factor (default ``(0.8, 1.25)``; ``(1, 1)``: no zoom).
        stain: :func:`stain_jitter` strength (default ``0.05``; ``0``: none).

    Returns:
        ``(image [patch, patch, 3] float32 in [0, 1], instances [patch, patch] int64)``.
    """
    lo, hi = scale
    s = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if hi > lo else float(lo)
    side = max(8, int(round(patch / s)))
    H, W = instances.shape
    ph, pw = max(0, side - H), max(0, side - W)
    img = np.asarray(image[..., :3], np.float32) / 255.0
    inst = np.asarray(instances, np.int64)
    if ph or pw:
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect")
        inst = np.pad(inst, ((0, ph), (0, pw)))
        H, W = inst.shape
    i, j = int(rng.integers(0, H - side + 1)), int(rng.integers(0, W - side + 1))
    img, inst = img[i : i + side, j : j + side], inst[i : i + side, j : j + side]
    if side != patch:
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
        x = F.interpolate(x, size=(patch, patch), mode="bilinear", antialias=True)
        img = x[0].permute(1, 2, 0).numpy()
        rows = np.minimum((np.arange(patch) + 0.5) * side / patch, side - 1).astype(int)
        inst = inst[np.ix_(rows, rows)]  # nearest neighbour
    if rng.random() < 0.5:
        img, inst = img[:, ::-1], inst[:, ::-1]
    k = int(rng.integers(4))
    img, inst = np.rot90(img, k), np.rot90(inst, k)
    img = stain_jitter(np.ascontiguousarray(img), rng, stain)
    return img, np.ascontiguousarray(inst)


def train_unet(
    images: Sequence[np.ndarray],
    instances: Sequence[np.ndarray],
    cfg: UNetConfig | None = None,
    epochs: int = 10,
    lr: float = 1e-3,
    patch: int = 256,
    batch_size: int = 4,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    steps_per_epoch: int | None = None,
    augment: bool = False,
    scale: tuple[float, float] = (0.8, 1.25),
    stain: float = 0.05,
    class_weights: str = "inverse",
    schedule: str = "constant",
) -> UNet:
    """Train a :class:`UNet` on H&E tiles with instance masks.

    Each step draws ``batch_size`` random ``patch x patch`` crops (tile chosen with
    probability proportional to its area). Without ``augment`` a crop is cut at scale 1 and
    randomly flipped and rotated by a multiple of 90 degrees (tiles smaller than ``patch``
    reflect-padded, the padding background); with ``augment`` it is
    :func:`augmented_crop` (scale jitter, flips, rotations, stain jitter). Targets:
    :func:`targets_from_instances` (3 classes), and for a 4-output model
    (``cfg.out_channels == 4``) also :func:`distance_target` on the fourth output (through a
    sigmoid). Loss: class-weighted cross-entropy, plus the mean squared error of the
    distance for 4-output models.

    Args:
        images: ``[H, W, 3]`` uint8 RGB tiles.
        instances: ``[H, W]`` int instance masks, one per image.
        cfg: the model's :class:`UNetConfig` (default ``UNetConfig()``: 3 outputs).
        epochs: number of epochs (default ``10``).
        lr: Adam learning rate (default ``1e-3``).
        patch: crop side in pixels (default ``256``).
        batch_size: crops per step (default ``4``).
        seed: seeds the crops and the initial weights (default ``0``).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"`` (default ``"auto"``).
        progress: show a tqdm bar over epochs (default ``True``).
        steps_per_epoch: steps per epoch (default ``None``: enough crops to cover the
            tiles' total area once, ``ceil(sum H W / (patch^2 batch_size))``).
        augment: scale and stain jitter on top of flips / rotations (default ``False``).
        scale: zoom range of the scale jitter (default ``(0.8, 1.25)``).
        stain: stain jitter strength (default ``0.05``).
        class_weights: ``"inverse"`` (inverse class frequency over the training masks,
            normalised to mean 1) or ``"sqrt"`` (its square root, normalised likewise: the
            rare boundary class is weighted less, so the foreground is not inflated)
            (default ``"inverse"``).
        schedule: ``"constant"`` learning rate or ``"cosine"`` decay to 0 over all steps
            (default ``"constant"``).

    Returns:
        The trained model in eval mode, on ``device``; ``model.train_losses`` holds the mean
        training loss of each epoch and ``model.train_seconds`` the wall time.
    """
    import time

    if len(images) != len(instances) or not images:
        raise ValueError(f"need as many masks as images (>0): {len(images)} vs {len(instances)}")
    for k, (im, m) in enumerate(zip(images, instances, strict=True)):
        if np.shape(im)[:2] != np.shape(m):
            raise ValueError(f"tile {k}: image {np.shape(im)[:2]} != mask {np.shape(m)}")
    if class_weights not in ("inverse", "sqrt"):
        raise ValueError(f"class_weights must be 'inverse' or 'sqrt', got {class_weights!r}")
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    cfg = cfg or UNetConfig()
    if cfg.out_channels not in (3, 4):
        raise ValueError(f"out_channels must be 3 (classes) or 4 (+ distance), got {cfg}")
    start = time.perf_counter()
    dev = _device(device)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = UNet(cfg).to(dev)
    with_distance = cfg.out_channels == 4
    masks = [np.asarray(m) for m in instances]
    counts = sum(np.bincount(targets_from_instances(m).ravel(), minlength=3) for m in masks)
    weight = 1.0 / np.maximum(np.asarray(counts, np.float64), 1)
    if class_weights == "sqrt":
        weight = np.sqrt(weight)
    weight = torch.tensor(weight / weight.mean(), dtype=torch.float32, device=dev)  # [3]
    areas = np.array([m.size for m in masks], float)
    if steps_per_epoch is None:
        steps_per_epoch = max(1, math.ceil(areas.sum() / (patch * patch * batch_size)))
    total_steps = epochs * steps_per_epoch
    plain_scale = (1.0, 1.0)

    def crop() -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        k = rng.choice(len(masks), p=areas / areas.sum())
        img, inst = augmented_crop(
            images[k], masks[k], rng, patch,
            scale if augment else plain_scale, stain if augment else 0.0,
        )  # fmt: skip
        dist = distance_target(inst) if with_distance else None
        return img, targets_from_instances(inst), dist

    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    lr_at = (
        (lambda t: lr * 0.5 * (1 + math.cos(math.pi * t / total_steps)))
        if schedule == "cosine"
        else (lambda t: lr)
    )
    model.train()
    model.train_losses = []
    step = 0
    for _ in tqdm(range(epochs), desc="unet", unit="epoch", disable=not progress):
        total = 0.0
        for _ in range(steps_per_epoch):
            batch = [crop() for _ in range(batch_size)]
            x = torch.from_numpy(np.stack([b[0] for b in batch])).permute(0, 3, 1, 2).to(dev)
            y = torch.from_numpy(np.stack([b[1] for b in batch])).to(dev)  # [B, P, P]
            out = model(x)  # [B, C, P, P]
            loss = F.cross_entropy(out[:, :3], y, weight=weight)
            if with_distance:
                d = torch.from_numpy(np.stack([b[2] for b in batch])).to(dev)  # [B, P, P]
                loss = loss + F.mse_loss(torch.sigmoid(out[:, 3]), d)
            for group in optimiser.param_groups:
                group["lr"] = lr_at(step)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item()
            step += 1
        model.train_losses.append(total / steps_per_epoch)
    model.train_seconds = time.perf_counter() - start
    return model.eval()


@torch.no_grad()
def predict_probabilities(
    model: UNet, image: np.ndarray, tile: int = 512, overlap: int = 64
) -> np.ndarray:
    """Softmax of the UNet over an image of any size, by overlapping tiles.

    Tiles of ``tile x tile`` px start every ``tile - overlap`` px (the last one flush with the
    image edge); overlapping probabilities are averaged, which damps the zero-padding
    artefacts at tile borders. Images no larger than ``tile`` go through in one piece.

    Args:
        model: a trained :class:`UNet`.
        image: ``[H, W, 3]`` uint8 RGB.
        tile: tile side in pixels (default ``512``).
        overlap: overlap between neighbouring tiles in pixels (default ``64``).

    Returns:
        ``[3, H, W]`` float32 probabilities (``[4, H, W]`` for a 4-output model: the three
        class probabilities, then the sigmoid of the distance output).
    """
    model.eval()
    dev = next(model.parameters()).device
    x = _to_tensor(image).to(dev)  # [3, H, W]
    H, W = x.shape[-2:]

    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        s = list(range(0, n - tile, tile - overlap))
        return s + [n - tile]

    out = torch.zeros((model.config.out_channels, H, W), device=dev)
    hits = torch.zeros((1, H, W), device=dev)
    for i in starts(H):
        for j in starts(W):
            logits = model(x[None, :, i : i + tile, j : j + tile])[0]  # [3, h, w]
            probs = logits[:3].softmax(0)
            if len(logits) == 4:  # + the normalised-distance output
                probs = torch.cat([probs, torch.sigmoid(logits[3:])])
            out[:, i : i + tile, j : j + tile] += probs
            hits[:, i : i + tile, j : j + tile] += 1
    return (out / hits).cpu().numpy()


def segment(
    model: UNet,
    image: np.ndarray,
    tile: int = 512,
    overlap: int = 64,
    threshold: float = 0.5,
    min_size: int = 10,
    marker_threshold: float = 0.5,
    scale: float = 1.0,
) -> np.ndarray:
    """Nuclei instances of an H&E image with a trained UNet.

    :func:`predict_probabilities` (tiled softmax) then :func:`instances_from_probabilities`.
    With ``scale != 1`` the UNet sees the image resized by ``scale`` (the scale it was trained
    at, see :func:`rescale_tile`); its outputs are resized back bilinearly and the instances
    are cut at the image's own resolution.

    Args:
        model: a trained :class:`UNet`.
        image: ``[H, W, 3]`` uint8 RGB.
        tile: tile side in pixels (default ``512``).
        overlap: overlap between tiles in pixels (default ``64``).
        threshold: see :func:`instances_from_probabilities` (default ``0.5``).
        min_size: smallest kept nucleus in pixels (default ``10``).
        marker_threshold: for a 4-output model, see :func:`instances_from_probabilities`
            (default ``0.5``).
        scale: resize factor of the image for the UNet (default ``1.0``).

    Returns:
        ``[H, W]`` int32 instance labels 1..n, 0 = background.
    """
    prob = predict_at_scale(model, image, scale, tile=tile, overlap=overlap)
    distance = prob[3] if len(prob) == 4 else None
    return instances_from_probabilities(
        prob[:3], threshold=threshold, min_size=min_size, distance=distance,
        marker_threshold=marker_threshold,
    )  # fmt: skip


def predict_at_scale(
    model: UNet, image: np.ndarray, scale: float = 1.0, tile: int = 512, overlap: int = 64
) -> np.ndarray:
    """:func:`predict_probabilities` of the image resized by ``scale`` (:func:`rescale_tile`),
    resized back (bilinear) to the image's ``[C, H, W]``."""
    if scale == 1.0:
        return predict_probabilities(model, image, tile=tile, overlap=overlap)
    small, _ = rescale_tile(image, None, scale)
    prob = predict_probabilities(model, small, tile=tile, overlap=overlap)
    x = torch.from_numpy(prob)[None]  # [1, C, h, w]
    return F.interpolate(x, size=image.shape[:2], mode="bilinear")[0].numpy()


def rescale_tile(
    image: np.ndarray, instances: np.ndarray | None, scale: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """An image (bilinear, antialiased) and its instance map (nearest) resized by ``scale``.

    Args:
        image: ``[H, W, 3]`` uint8 RGB.
        instances: ``[H, W]`` int instance map, or ``None``.
        scale: the factor, e.g. ``0.5`` for 40x tiles seen at 20x.

    Returns:
        ``(image [h, w, 3] uint8, instances [h, w] or None)`` with ``h = round(H * scale)``.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    H, W = image.shape[:2]
    h, w = max(1, round(H * scale)), max(1, round(W * scale))
    x = torch.from_numpy(np.array(image[..., :3], np.float32)).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True)
    small = x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    if instances is None:
        return small, None
    rows = np.minimum(((np.arange(h) + 0.5) * H / h).astype(int), H - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * W / w).astype(int), W - 1)
    return small, np.asarray(instances)[np.ix_(rows, cols)]


def save_unet(model: UNet, path: str | os.PathLike) -> Path:
    """Write a trained UNet (config, weights, training losses) to ``path``, atomically."""
    payload = {
        "format": "wsigraph-unet/1",
        "config": asdict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "train_losses": [float(v) for v in getattr(model, "train_losses", [])],
        "train_seconds": float(getattr(model, "train_seconds", float("nan"))),
    }
    save_torch(payload, path)
    return Path(path)


def load_unet(path: str | os.PathLike, device: str = "auto") -> UNet:
    """Read a UNet written by :func:`save_unet` (``weights_only``), in eval mode on ``device``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is corrupt or not a saved UNet.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no UNet file at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != "wsigraph-unet/1":
            raise ValueError("unknown format")
        model = UNet(UNetConfig(**payload["config"]))
        model.load_state_dict(payload["state_dict"])
    except Exception as err:  # torch raises several types for damaged files
        raise ValueError(f"{path} is not a readable saved UNet ({err})") from err
    model.train_losses = payload["train_losses"]
    model.train_seconds = payload.get("train_seconds", float("nan"))
    return model.to(_device(device)).eval()


def segmentation_scores(
    predictions: dict[str, dict[str, np.ndarray]],
    tiles: dict[str, tuple[np.ndarray, np.ndarray]],
) -> pd.DataFrame:
    """Dice and AJI of every method on every annotated tile.

    Args:
        predictions: ``method -> tile name -> predicted instance mask``.
        tiles: ``tile name -> (image, true instance mask)``.

    Returns:
        One row per (method, tile): ``method, tile, nuclei_true, nuclei_found, dice, aji``.
    """
    rows = []
    for method, by_tile in predictions.items():
        for tile, (_, truth) in tiles.items():
            pred = by_tile[tile]
            rows.append(
                {
                    "method": method,
                    "tile": tile,
                    "nuclei_true": int(len(np.unique(truth[truth > 0]))),
                    "nuclei_found": int(len(np.unique(pred[pred > 0]))),
                    "dice": dice(pred, truth),
                    "aji": aji(pred, truth),
                }
            )
    return pd.DataFrame(rows)


def read_instances(path: str | os.PathLike) -> np.ndarray:
    """An instance map as stored: a ``.npy`` array, or a ``.npz`` holding one array (the
    repository's ``data/nuclei/monuseg`` keeps them as compressed ``_inst.npz``, key
    ``instances``). The dtype is the stored one (uint16 for MoNuSeg).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a ``.npz`` that does not hold exactly one array.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no instance map at {path}")
    if path.suffix != ".npz":
        return np.load(path)
    with np.load(path) as z:
        if len(z.files) != 1:
            raise ValueError(f"{path}: expected one array, found {z.files}")
        return z[z.files[0]]


def _instance_file(image: Path) -> Path | None:
    """``<name>_inst.npz`` or ``<name>_inst.npy`` beside ``<name>.tif``, if any."""
    for suffix in (".npz", ".npy"):
        path = image.with_name(f"{image.stem}_inst{suffix}")
        if path.is_file():
            return path
    return None


def rasterise_monuseg_xml(path: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
    """Instance map of a MoNuSeg ImageScope XML annotation.

    Every ``Region``'s ``Vertex`` list (``X`` = column, ``Y`` = row, pixel coordinates) is
    filled with ``skimage.draw.polygon`` as nucleus ``k`` (1, 2, ... in file order, regions
    with fewer than 3 vertices skipped); where polygons overlap the later one wins. This is
    how the collection's ``_inst.npy`` maps were made (``MANIFEST.md``).

    Args:
        path: the ``.xml`` file.
        shape: ``(H, W)`` of the tile.

    Returns:
        ``[H, W]`` int32 instance labels, 0 = background.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an XML file without any region of 3 or more vertices.
    """
    import xml.etree.ElementTree as ET

    from skimage.draw import polygon

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no annotation XML at {path}")
    out = np.zeros(shape, np.int32)
    k = 0
    for region in ET.parse(path).getroot().iter("Region"):
        xy = np.array(
            [[float(v.get("X")), float(v.get("Y"))] for v in region.iter("Vertex")], float
        ).reshape(-1, 2)
        if len(xy) < 3:
            continue
        k += 1
        rr, cc = polygon(xy[:, 1], xy[:, 0], shape=shape)
        out[rr, cc] = k
    if k == 0:
        raise ValueError(f"{path}: no Region with 3 or more vertices")
    return out


def monuseg_microns_per_pixel(path: str | os.PathLike) -> float | None:
    """``MicronsPerPixel`` of a MoNuSeg XML's root element, or ``None`` when absent."""
    import xml.etree.ElementTree as ET

    value = ET.parse(path).getroot().get("MicronsPerPixel")
    return float(value) if value else None


def read_monuseg_tile(folder: str | os.PathLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One annotated tile of a MoNuSeg-style folder: ``<name>.tif`` and its instance map
    ``<name>_inst.npz`` (or ``.npy``), or, without one, its ImageScope ``<name>.xml``
    rasterised by :func:`rasterise_monuseg_xml`.

    Returns:
        ``(image [H, W, 3] uint8 RGB, instances [H, W] as stored)``.

    Raises:
        FileNotFoundError: no such image, or no instance map or XML beside it.
        ValueError: an instance mask whose shape differs from its image's.
    """
    from PIL import Image

    tif = Path(folder) / f"{name}.tif"
    mask = _instance_file(tif)
    xml = tif.with_suffix(".xml")
    if not tif.is_file() or (mask is None and not xml.is_file()):
        raise FileNotFoundError(
            f"no {name}.tif with {name}_inst.npz, _inst.npy or .xml in {folder}"
        )
    with Image.open(tif) as im:
        image = np.asarray(im.convert("RGB"))
    if mask is None:
        return image, rasterise_monuseg_xml(xml, image.shape[:2])
    instances = read_instances(mask)
    if instances.shape != image.shape[:2]:
        raise ValueError(f"{mask.name}: shape {instances.shape} != image {image.shape[:2]}")
    return image, instances


def read_monuseg(folder: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The annotated tiles of a MoNuSeg-style folder: ``<name>.tif`` with ``<name>_inst.npz``,
    ``<name>_inst.npy`` or ``<name>.xml`` beside it (see :func:`read_monuseg_tile`).

    Returns:
        ``name -> (image [H, W, 3] uint8, instances [H, W] int32)``, sorted by name.

    Raises:
        FileNotFoundError: no such folder, or no ``.tif`` with an instance map beside it.
        ValueError: an instance mask whose shape differs from its image's.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no MoNuSeg folder at {folder}")
    out = {}
    for tif in sorted(folder.glob("*.tif")):
        if _instance_file(tif) is None and not tif.with_suffix(".xml").is_file():
            continue
        image, instances = read_monuseg_tile(folder, tif.stem)
        out[tif.stem] = (image, instances.astype(np.int32))
    if not out:
        raise FileNotFoundError(
            f"no <name>.tif with <name>_inst.npz, _inst.npy or .xml in {folder}"
        )
    return out
