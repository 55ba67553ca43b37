"""Tissue detection: a mask on the slide thumbnail and H2-MIL's per-patch RGB-variance filter.

Two filters, applied in this order by :mod:`wsigraph.data.tiling`:

1. :func:`tissue_mask` on a thumbnail (longest side ~512-2048 px): a pixel is tissue when its
   median-smoothed HSV saturation exceeds an Otsu threshold clipped to [0.07, 0.15] (the floor
   keeps an empty slide's noise from becoming tissue, the cap keeps pale stroma; CLAM uses a
   fixed 8/255 on the same channel), it is not pen ink (saturated hues from green to blue,
   which H&E never produces) and not near-black debris or marker; then a small closing joins
   loose tissue, small specks are removed and small holes filled. A patch is a candidate when at least ``min_tissue`` of its area is
   tissue.
2. :func:`rgb_variance` on the patch pixels: H2-MIL removes patches "whose variance of RGB value
   is less than a threshold" (paper, Heterogeneous Graph Construction). The paper gives no
   value; we take the variance over all pixels and channels on the 0-255 scale and keep the
   threshold in the profile (``rgb_var_threshold``). Uniform patches (glass, out-of-focus
   washes) fall below it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import color, filters, morphology


class EmptyTissueError(ValueError):
    """No tissue was found where some was required (the message names the slide)."""


def tissue_mask(
    rgb: np.ndarray,
    *,
    min_saturation: float = 0.07,
    max_saturation: float = 0.15,
    pen_hue: tuple[float, float] = (0.17, 0.64),
    pen_min_saturation: float = 0.2,
    dark_value: float = 0.25,
    min_object_fraction: float = 2e-4,
    closing_radius: int = 2,
    name: str = "slide",
) -> np.ndarray:
    """Boolean tissue mask of an RGB thumbnail.

    Args:
        rgb: ``uint8`` array ``[H, W, 3]``.
        min_saturation: floor of the Otsu saturation threshold. (default: ``0.07``)
        max_saturation: cap of the Otsu threshold, so pale but real tissue (loose stroma,
            fat borders) stays when densely stained tissue dominates. (default: ``0.15``)
        pen_hue: hue interval (HSV, 0-1) treated as pen ink when saturated; green is 0.33,
            blue 0.6, while eosin (~0.9) and haematoxylin (~0.75) lie outside. (default:
            ``(0.17, 0.64)``)
        pen_min_saturation: saturation above which a pixel in ``pen_hue`` is ink. (default: ``0.2``)
        dark_value: HSV value below which a pixel is debris/marker, not tissue. (default: ``0.25``)
        min_object_fraction: connected components smaller than this fraction of the image
            are dropped. (default: ``2e-4``)
        closing_radius: radius (thumbnail pixels) of a morphological closing that joins loose
            tissue (fibres with pale gaps) into one region. (default: ``2``)
        name: used in the error message.

    Raises:
        EmptyTissueError: when no pixel is tissue.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{name}: expected an RGB image [H, W, 3], got shape {rgb.shape}")
    hsv = color.rgb2hsv(rgb)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    sat = ndimage.median_filter(sat, size=3)
    threshold = float(np.clip(_otsu(sat), min_saturation, max_saturation))
    mask = sat > threshold
    ink_or_debris = ((hue >= pen_hue[0]) & (hue <= pen_hue[1]) & (sat > pen_min_saturation)) | (
        val <= dark_value
    )
    # Ink and debris are excluded with a margin: their anti-aliased rims are neither ink nor tissue.
    artefact = ndimage.binary_dilation(ink_or_debris, morphology.disk(closing_radius))
    disk = morphology.disk(closing_radius)
    mask = ndimage.binary_closing(mask & ~artefact, disk, border_value=1) & ~artefact
    min_size = max(4, int(min_object_fraction * mask.size))
    mask = morphology.remove_small_objects(mask, max_size=min_size)
    mask = morphology.remove_small_holes(mask, max_size=min_size)
    if not mask.any():
        raise EmptyTissueError(
            f"{name}: no tissue found (saturation threshold {threshold:.3f}; the thumbnail is "
            "blank, glass only, or all ink/debris)"
        )
    return mask


def rgb_variance(patches: np.ndarray) -> np.ndarray:
    """Variance of all RGB values of each patch, 0-255 scale.

    Args:
        patches: ``uint8`` ``[B, H, W, 3]`` (or one patch ``[H, W, 3]``).

    Returns:
        ``float64`` ``[B]`` (or a scalar for one patch).
    """
    arr = np.asarray(patches, dtype=np.float64)
    if arr.ndim == 3:
        return arr.var()
    return arr.reshape(arr.shape[0], -1).var(axis=1)


def _otsu(values: np.ndarray) -> float:
    if np.ptp(values) < 1e-6:
        return float(values.flat[0])
    return float(filters.threshold_otsu(values))
