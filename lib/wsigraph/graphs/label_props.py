r"""Vectorised region properties of an instance label map, equal to scikit-image's.

``skimage.measure.regionprops_table`` computes every region's moments in Python, about 1 ms per
nucleus; an ROI of a few thousand nuclei then costs seconds. :func:`region_table` computes the
same columns for all labels at once from pixel sums (``np.bincount``):

* ``centroid`` (mean pixel coordinates), ``area`` (pixel count), ``bbox``;
* the inertia tensor :math:`\begin{pmatrix}\mu_{02} & -\mu_{11}\\ -\mu_{11} & \mu_{20}
  \end{pmatrix} / \mu_{00}` of the central moments, its eigenvalues :math:`l_1 \ge l_2 \ge 0`
  (``eigvalsh``, clipped at 0, as scikit-image), ``axis_major_length`` :math:`4\sqrt{l_1}`,
  ``axis_minor_length`` :math:`4\sqrt{l_2}`, ``eccentricity`` :math:`\sqrt{1 - l_2/l_1}` (0 when
  :math:`l_1 = 0`), ``orientation`` :math:`\tfrac12 \operatorname{atan2}(-2b, c - a)` of the
  tensor ``[[a, b], [b, c]]`` (:math:`\mp\pi/4` when :math:`a = c`),
  ``equivalent_diameter_area`` :math:`\sqrt{4\,\mathrm{area}/\pi}`;
* ``perimeter`` (scikit-image's 4-neighbourhood estimator: border pixels = the region minus
  its erosion by a cross, each border pixel weighted by the configuration code of the
  ``[[10, 2, 10], [2, 1, 2], [10, 2, 10]]`` convolution). Computed on the whole map when no two
  labels touch (8-neighbourhood), where every region's border pixels see only their own
  region's; regions that touch another are measured one by one with
  ``skimage.measure.perimeter`` on their box, as ``regionprops`` does.

:func:`glcm_table` gives the five grey-level co-occurrence values of ABiG-Net's nucleus
properties (:mod:`wsigraph.graphs.abignet_features`) for all nuclei at once: the box of each
nucleus with the pixels of other labels set to 0, ``floor(g / 32)``, distance 1, angle 0,
symmetric, normalised; ``graycoprops``' formulas (correlation 1 when a standard deviation is
below 1e-15); 0 for a box thinner than 2 px, fewer than 2 pixels, or a non-finite value.
``tests/test_label_props.py`` checks both against scikit-image.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_CROSS = ndimage.generate_binary_structure(2, 1)
_PERIMETER_KERNEL = np.array([[10, 2, 10], [2, 1, 2], [10, 2, 10]])
_PERIMETER_WEIGHTS = np.zeros(50)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1
_PERIMETER_WEIGHTS[[21, 33]] = np.sqrt(2)
_PERIMETER_WEIGHTS[[13, 23]] = (1 + np.sqrt(2)) / 2


def touching_labels(labels: np.ndarray) -> np.ndarray:
    """The labels that touch another non-zero label (8-neighbourhood), ascending."""
    lab = np.asarray(labels)
    h, w = lab.shape
    pairs = [
        (lab[:, : w - 1], lab[:, 1:]),
        (lab[: h - 1, :], lab[1:, :]),
        (lab[: h - 1, : w - 1], lab[1:, 1:]),
        (lab[: h - 1, 1:], lab[1:, : w - 1]),
    ]
    out = []
    for a, b in pairs:
        clash = (a != b) & (a > 0) & (b > 0)
        out += [a[clash], b[clash]]
    return np.unique(np.concatenate(out)) if out else np.zeros(0, lab.dtype)


def region_table(labels: np.ndarray) -> dict[str, np.ndarray]:
    """``regionprops_table`` columns of every non-empty label (module docstring), ascending.

    Keys: ``label``, ``centroid-0``, ``centroid-1``, ``area``, ``bbox-0`` .. ``bbox-3``,
    ``axis_major_length``, ``axis_minor_length``, ``eccentricity``, ``orientation``,
    ``equivalent_diameter_area``, ``perimeter``.
    """
    lab = np.asarray(labels)
    ys, xs = np.nonzero(lab)
    values = lab[ys, xs]
    ids, inv = np.unique(values, return_inverse=True)
    n = len(ids)
    area = np.bincount(inv, minlength=n).astype(np.float64)
    safe = np.maximum(area, 1)
    my, mx = np.bincount(inv, ys, n) / safe, np.bincount(inv, xs, n) / safe
    dy, dx = ys - my[inv], xs - mx[inv]
    mu20, mu02 = np.bincount(inv, dy * dy, n), np.bincount(inv, dx * dx, n)
    mu11 = np.bincount(inv, dy * dx, n)
    tensor = np.empty((n, 2, 2))
    tensor[:, 0, 0], tensor[:, 1, 1] = mu02 / safe, mu20 / safe
    tensor[:, 0, 1] = tensor[:, 1, 0] = -mu11 / safe
    eig = np.clip(np.linalg.eigvalsh(tensor)[:, ::-1], 0, None) if n else np.zeros((0, 2))
    l1, l2 = eig[:, 0], eig[:, 1]
    ecc = np.sqrt(1 - np.divide(l2, l1, out=np.ones_like(l1), where=l1 != 0))
    a, b, c = tensor[:, 0, 0], tensor[:, 0, 1], tensor[:, 1, 1]
    orient = np.where(a - c == 0, np.where(b < 0, np.pi / 4, -np.pi / 4),
                      0.5 * np.arctan2(-2 * b, c - a))  # fmt: skip
    bbox = [np.full(n, lab.size, np.int64), np.full(n, lab.size, np.int64),
            np.zeros(n, np.int64), np.zeros(n, np.int64)]  # fmt: skip
    np.minimum.at(bbox[0], inv, ys)
    np.minimum.at(bbox[1], inv, xs)
    np.maximum.at(bbox[2], inv, ys + 1)
    np.maximum.at(bbox[3], inv, xs + 1)
    table = {
        "label": ids,
        "centroid-0": my,
        "centroid-1": mx,
        "area": area,
        **{f"bbox-{j}": bbox[j] for j in range(4)},
        "axis_major_length": 4 * np.sqrt(l1),
        "axis_minor_length": 4 * np.sqrt(l2),
        "eccentricity": ecc,
        "orientation": orient,
        "equivalent_diameter_area": np.sqrt(4 * area / np.pi),
    }
    table["perimeter"] = _perimeters(lab, ids, inv, ys, xs, table)
    return table


def _perimeters(lab, ids, inv, ys, xs, table) -> np.ndarray:
    from skimage.measure import perimeter

    n = len(ids)
    if n == 0:
        return np.zeros(0)
    same = ndimage.binary_erosion(lab > 0, _CROSS, border_value=0)
    # eroded within its own label: every cross neighbour has the same label
    pad = np.pad(lab, 1)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        same &= pad[1 + dy : 1 + dy + lab.shape[0], 1 + dx : 1 + dx + lab.shape[1]] == lab
    border = ((lab > 0) & ~same).astype(np.int64)
    code = ndimage.convolve(border, _PERIMETER_KERNEL, mode="constant", cval=0)
    out = np.bincount(inv, _PERIMETER_WEIGHTS[np.minimum(code[ys, xs], 49)], n)
    for lab_id in touching_labels(lab):  # borders seen by a neighbour: measure alone
        k = int(np.searchsorted(ids, lab_id))
        r0, c0, r1, c1 = (int(table[f"bbox-{j}"][k]) for j in range(4))
        out[k] = perimeter(lab[r0:r1, c0:c1] == lab_id, 4)
    return out


def glcm_table(grey: np.ndarray, labels: np.ndarray, table: dict) -> np.ndarray:
    """``[n, 5]`` contrast, energy, correlation, homogeneity, ASM of each nucleus' box
    (module docstring), rows as ``table`` (from :func:`region_table`)."""
    grey, lab = np.asarray(grey), np.asarray(labels)
    ids = table["label"]
    n = len(ids)
    r0, c0, r1, c1 = (np.asarray(table[f"bbox-{j}"], np.int64) for j in range(4))
    h, w = r1 - r0, c1 - c0
    ok = (h >= 2) & (w >= 2) & (np.asarray(table["area"]) >= 2)
    out = np.zeros((n, 5))
    if not ok.any():
        return out
    sel = np.flatnonzero(ok)
    npairs = h[sel] * (w[sel] - 1)
    owner = np.repeat(np.arange(len(sel)), npairs)
    start = np.concatenate([[0], np.cumsum(npairs)[:-1]])
    local = np.arange(len(owner)) - start[owner]
    wm1 = (w[sel] - 1)[owner]
    rr, cc = r0[sel][owner] + local // wm1, c0[sel][owner] + local % wm1
    q = np.clip(grey.astype(np.int64) // 32, 0, 7)
    mine = ids[sel][owner]
    left = np.where(lab[rr, cc] == mine, q[rr, cc], 0)
    right = np.where(lab[rr, cc + 1] == mine, q[rr, cc + 1], 0)
    p = np.bincount(owner * 64 + left * 8 + right, minlength=len(sel) * 64).reshape(-1, 8, 8)
    p = (p + p.transpose(0, 2, 1)).astype(np.float64)
    p /= np.maximum(p.sum((1, 2), keepdims=True), 1)
    i, j = np.arange(8)[:, None], np.arange(8)[None, :]
    contrast = (p * (i - j) ** 2).sum((1, 2))
    homogeneity = (p / (1.0 + (i - j) ** 2)).sum((1, 2))
    asm = (p**2).sum((1, 2))
    mi, mj = (p * i).sum((1, 2)), (p * j).sum((1, 2))
    di, dj = i - mi[:, None, None], j - mj[:, None, None]
    si, sj = np.sqrt((p * di**2).sum((1, 2))), np.sqrt((p * dj**2).sum((1, 2)))
    cov = (p * di * dj).sum((1, 2))
    flat = (si < 1e-15) | (sj < 1e-15)
    corr = np.where(flat, 1.0, cov / np.where(flat, 1.0, si * sj))
    values = np.column_stack([contrast, np.sqrt(asm), corr, homogeneity, asm])
    out[sel] = np.where(np.isfinite(values), values, 0.0)
    return out
