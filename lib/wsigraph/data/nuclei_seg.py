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
from skimage.color import rgb2hed
from skimage.feature import peak_local_max
from skimage.segmentation import find_boundaries, relabel_sequential, watershed
from tqdm.auto import tqdm

from wsigraph.io import atomic_path
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


def _remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Zero out labels with fewer than ``min_size`` pixels and relabel 1..n."""
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    labels = np.where(small[labels], 0, labels)
    return relabel_sequential(labels)[0].astype(np.int32)


def instances_from_probabilities(
    prob: np.ndarray, threshold: float = 0.5, min_size: int = 10
) -> np.ndarray:
    """Nuclei instances from the UNet's 3-class probabilities (distance-transform watershed).

    Args:
        prob: ``[3, H, W]`` probabilities of background / interior / boundary.
        threshold: on ``1 - p_background`` (foreground) and on ``p_interior`` (markers)
            (default ``0.5``).
        min_size: smallest kept nucleus, in pixels (default ``10``).

    Returns:
        ``[H, W]`` int32 instance labels 1..n, 0 = background.
    """
    prob = np.asarray(prob)
    foreground = (1.0 - prob[BACKGROUND]) > threshold  # [H, W]
    markers, _ = ndimage.label((prob[INTERIOR] > threshold) & foreground)
    distance = ndimage.distance_transform_edt(foreground)
    labels = watershed(-distance, markers, mask=foreground)  # [H, W]
    # Foreground blobs that hold no marker (all boundary) are nuclei too.
    orphans, n_orphans = ndimage.label(foreground & (labels == 0))
    if n_orphans:
        labels = np.where(orphans > 0, orphans + labels.max(), labels)
    return _remove_small(labels, min_size)


def classical_nuclei(
    image: np.ndarray, min_size: int = 10, sigma: float = 1.0, min_distance: int = 7
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
    peaks = peak_local_max(
        filters.gaussian(distance, sigma=1.0), min_distance=min_distance, labels=components
    )  # [n, 2]
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
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
    _, t = np.unique(np.asarray(true_instances).ravel(), return_inverse=True)
    _, p = np.unique(np.asarray(pred_instances).ravel(), return_inverse=True)
    # After np.unique, label 0 (background) maps to index 0 only if present; shift so that
    # index 0 always means background.
    t = t + (np.asarray(true_instances).min() > 0)
    p = p + (np.asarray(pred_instances).min() > 0)
    area_t, area_p = np.bincount(t), np.bincount(p)  # [nT + 1], [nP + 1]
    area_t[0] = area_p[0] = 0
    if area_t.sum() + area_p.sum() == 0:
        return 1.0
    both = (t > 0) & (p > 0)
    pairs, inter = np.unique(np.stack([t[both], p[both]]), axis=1, return_counts=True)
    ti, pj = pairs  # [M] overlapping (true, pred) pairs
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


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image[..., :3], np.uint8)).permute(2, 0, 1).float() / 255


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
) -> UNet:
    """Train a :class:`UNet` on H&E tiles with instance masks (3-class targets).

    Each step draws ``batch_size`` random ``patch x patch`` crops (tile chosen with
    probability proportional to its area; tiles smaller than ``patch`` are reflect-padded,
    the padding counted as background), each randomly flipped and rotated by a multiple of
    90 degrees. Loss: cross-entropy weighted by inverse class frequency (mean weight 1).

    Args:
        images: ``[H, W, 3]`` uint8 RGB tiles.
        instances: ``[H, W]`` int instance masks, one per image.
        cfg: the model's :class:`UNetConfig` (default ``UNetConfig()``).
        epochs: number of epochs (default ``10``).
        lr: Adam learning rate (default ``1e-3``).
        patch: crop side in pixels (default ``256``).
        batch_size: crops per step (default ``4``).
        seed: seeds the crops and the initial weights (default ``0``).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"`` (default ``"auto"``).
        progress: show a tqdm bar over epochs (default ``True``).
        steps_per_epoch: steps per epoch (default ``None``: enough crops to cover the
            tiles' total area once, ``ceil(sum H W / (patch^2 batch_size))``).

    Returns:
        The trained model in eval mode, on ``device``; ``model.train_losses`` holds the mean
        training loss of each epoch.
    """
    dev = _device(device)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = UNet(cfg).to(dev)
    xs = [_to_tensor(im) for im in images]  # [3, H, W] each
    ys = [torch.from_numpy(targets_from_instances(m)) for m in instances]  # [H, W] each
    counts = sum(torch.bincount(y.ravel(), minlength=3) for y in ys).double()
    weight = 1.0 / counts.clamp(min=1)
    weight = (weight / weight.mean()).float().to(dev)  # [3]
    areas = np.array([y.numel() for y in ys], float)
    if steps_per_epoch is None:
        steps_per_epoch = max(1, math.ceil(areas.sum() / (patch * patch * batch_size)))

    def crop() -> tuple[torch.Tensor, torch.Tensor]:
        k = rng.choice(len(xs), p=areas / areas.sum())
        x, y = xs[k], ys[k]
        H, W = y.shape
        if H < patch or W < patch:
            ph, pw = max(0, patch - H), max(0, patch - W)
            x = F.pad(x[None], (0, pw, 0, ph), mode="reflect")[0]
            y = F.pad(y, (0, pw, 0, ph), value=BACKGROUND)
            H, W = y.shape
        i, j = rng.integers(0, H - patch + 1), rng.integers(0, W - patch + 1)
        x, y = x[:, i : i + patch, j : j + patch], y[i : i + patch, j : j + patch]
        if rng.random() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        r = int(rng.integers(4))
        return x.rot90(r, (-2, -1)), y.rot90(r, (-2, -1))

    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    model.train_losses = []
    for _ in tqdm(range(epochs), desc="unet", unit="epoch", disable=not progress):
        total = 0.0
        for _ in range(steps_per_epoch):
            batch = [crop() for _ in range(batch_size)]
            x = torch.stack([b[0] for b in batch]).to(dev)  # [B, 3, P, P]
            y = torch.stack([b[1] for b in batch]).to(dev)  # [B, P, P]
            loss = F.cross_entropy(model(x), y, weight=weight)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item()
        model.train_losses.append(total / steps_per_epoch)
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
        ``[3, H, W]`` float32 probabilities.
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
            out[:, i : i + tile, j : j + tile] += logits.softmax(0)
            hits[:, i : i + tile, j : j + tile] += 1
    return (out / hits).cpu().numpy()


def segment(
    model: UNet,
    image: np.ndarray,
    tile: int = 512,
    overlap: int = 64,
    threshold: float = 0.5,
    min_size: int = 10,
) -> np.ndarray:
    """Nuclei instances of an H&E image with a trained UNet.

    :func:`predict_probabilities` (tiled softmax) then :func:`instances_from_probabilities`.

    Args:
        model: a trained :class:`UNet`.
        image: ``[H, W, 3]`` uint8 RGB.
        tile: tile side in pixels (default ``512``).
        overlap: overlap between tiles in pixels (default ``64``).
        threshold: see :func:`instances_from_probabilities` (default ``0.5``).
        min_size: smallest kept nucleus in pixels (default ``10``).

    Returns:
        ``[H, W]`` int32 instance labels 1..n, 0 = background.
    """
    prob = predict_probabilities(model, image, tile=tile, overlap=overlap)
    return instances_from_probabilities(prob, threshold=threshold, min_size=min_size)


def save_unet(model: UNet, path: str | os.PathLike) -> Path:
    """Write a trained UNet (config, weights, training losses) to ``path``, atomically."""
    payload = {
        "format": "wsigraph-unet/1",
        "config": asdict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "train_losses": [float(v) for v in getattr(model, "train_losses", [])],
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
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


def read_monuseg_tile(folder: str | os.PathLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One annotated tile of a MoNuSeg-style folder: ``<name>.tif`` and its instance map
    ``<name>_inst.npz`` (or ``.npy``).

    Returns:
        ``(image [H, W, 3] uint8 RGB, instances [H, W] as stored)``.

    Raises:
        FileNotFoundError: no such image, or no instance map beside it.
        ValueError: an instance mask whose shape differs from its image's.
    """
    from PIL import Image

    tif = Path(folder) / f"{name}.tif"
    mask = _instance_file(tif)
    if not tif.is_file() or mask is None:
        raise FileNotFoundError(f"no {name}.tif with {name}_inst.npz or _inst.npy in {folder}")
    with Image.open(tif) as im:
        image = np.asarray(im.convert("RGB"))
    instances = read_instances(mask)
    if instances.shape != image.shape[:2]:
        raise ValueError(f"{mask.name}: shape {instances.shape} != image {image.shape[:2]}")
    return image, instances


def read_monuseg(folder: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The annotated tiles of a MoNuSeg-style folder: ``<name>.tif`` with ``<name>_inst.npz``
    (or ``<name>_inst.npy``) beside it (see :func:`read_monuseg_tile`).

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
        if _instance_file(tif) is None:
            continue
        image, instances = read_monuseg_tile(folder, tif.stem)
        out[tif.stem] = (image, instances.astype(np.int32))
    if not out:
        raise FileNotFoundError(f"no <name>.tif with <name>_inst.npz or _inst.npy in {folder}")
    return out
