"""The demo cohort: deterministic synthetic H&E-like slides that OpenSlide reads as real slides.

Each slide is a tiled, zlib-compressed, pyramidal TIFF (one page per level, levels after the
first marked reduced-resolution, 256 px tiles) with an Aperio-style ``ImageDescription``
(``AppMag`` and ``MPP``), so OpenSlide opens it with vendor ``aperio``, objective power and
um/px -- the same code path as a TCGA ``.svs``. Level 0 is 20x at 0.5 um/px (2048 x 1536 px in
the demo profile); levels 1, 2 are exact 2 x 2 box averages (10x, 5x).

Where the class signal is (the point of the cohort: H2-MIL Table 3 compares resolutions)
---------------------------------------------------------------------------------------------
Everything is drawn with a Beer-Lambert H&E stain model (Ruifrok & Johnston stain vectors).
Tissue is *tumour* (dense round nuclei on pale cytoplasm) or *stroma* (eosin fibres, sparse
elongated nuclei). With patches of ``cell`` = 64 px at 10x (128 level-0 px; the demo tiling):

* **Typing -- fine texture, visible only at 10x.** A fraction ``q`` of tumour nuclei carries a
  chromatin checkerboard of 2 x 2 level-0 pixel blocks (+-``speckle_amplitude`` of the intensity) whose
  mean is zero: at 10x (level 1) it is a pixel-level checkerboard, at 5x (level 2) it averages
  out *exactly*, and every colour statistic is the same for both classes. Class 0 draws
  ``q ~ U(0.5, 0.9)``, class 1 ``q ~ U(0.1, 0.5)``.
* **Staging -- needs two scales: tissue architecture (5x and thumbnail) and a stromal reaction
  (10x only).** Tumour covers ~40 % of the tissue. It is laid out on the 128-px lattice of the
  10x grid (boundaries warped by ~3 px), so a 10x patch holds one tissue type whatever the
  stage and the *bag* of 10x patches has the same composition for both classes. What differs is
  the arrangement: a fraction ``f`` (the infiltration) of the tumour lattice cells is scattered
  as isolated nests among stroma, the rest forms one compact mass. A 5x patch covers 2 x 2
  lattice cells, so it sees tumour/stroma mixing in proportion to ``f``. Independently, the
  stroma of a fraction ``s`` of the lattice cells carries fine horizontal stripes (rows of 2
  px, +-``stroma_amplitude``) that cancel exactly at 5x like the chromatin texture. Early stage
  (class 0) draws ``f ~ 0.9 U(0, 0.6)`` and ``s ~ U(0, 0.6)``; late stage ``f ~ 0.9 U(0.4, 1)``
  and ``s ~ U(0.4, 1)``: each half alone separates the classes only partly, both together
  better -- so a model needs the mid *and* the bottom level for its best staging AUC.

Staging is assigned stratified by typing and the signal strengths are spread evenly within
each (typing, staging) cell, so that neither label leaks into the other's level. Per-slide stain strength varies (+-15 %), and
artefacts the tissue filter must remove appear independently of the labels: background glass
with faint noise (low RGB variance), a grey smudge on the glass (unsaturated), pen strokes in
green or blue (saturated non-H&E hue) on ~40 % of slides, and dark debris specks.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm

from wsigraph.io import atomic_path

# Bump when render_slide changes, so that slides written by an older generator are redrawn.
GENERATOR_VERSION = 3

# Ruifrok & Johnston (2001) optical-density vectors, normalised.
_H = np.array([0.65, 0.70, 0.29])
_E = np.array([0.07, 0.99, 0.11])
_H, _E = _H / np.linalg.norm(_H), _E / np.linalg.norm(_E)

PALETTES = {
    # dataset: (cytoplasm eosin, stroma eosin, nucleus haematoxylin)
    "esca": (0.30, 0.55, 1.10),
    "kica": (0.18, 0.45, 1.00),
}


@dataclass(frozen=True)
class SlideSpec:
    """Everything that determines one synthetic slide (its labels and generator values)."""

    slide_id: str
    dataset: str
    typing: int
    staging: int
    seed: int
    width: int = 2048
    height: int = 1536
    base_mag: float = 20.0
    mpp: float = 0.5
    cell: int = 128  # level-0 side of the architecture lattice (= one 10x demo patch)
    speckle_fraction: float = 0.5  # q: fraction of tumour nuclei with fine chromatin texture
    speckle_amplitude: float = 0.45
    infiltration: float = 0.5  # f: fraction of tumour cells scattered as nests
    stroma_reaction: float = 0.5  # s: fraction of lattice cells whose stroma has fine stripes
    stroma_amplitude: float = 0.08
    tumour_fraction: float = 0.4
    stain_h: float = 1.0
    stain_e: float = 1.0
    pen: str = ""  # "", "green" or "blue"


def assign_labels(
    n: int, typing_minority: int, staging_minority: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Typing and staging labels with exact class counts and as little association as possible.

    Staging is stratified by typing: each typing class gets its proportional share of late-stage
    slides (largest remainder), so neither label predicts the other in the cohort.
    """
    if not (0 < typing_minority < n and 0 < staging_minority < n):
        raise ValueError(
            f"class counts must lie in 1..{n - 1}: {typing_minority}, {staging_minority}"
        )
    rng = np.random.default_rng([seed, 0])
    typing = np.zeros(n, np.int64)
    typing[rng.permutation(n)[:typing_minority]] = 1
    sizes = np.array([n - typing_minority, typing_minority])
    share = staging_minority * sizes / n
    late = np.floor(share).astype(int)
    late[np.argsort(-(share - late))[: staging_minority - late.sum()]] += 1
    staging = np.zeros(n, np.int64)
    for cls in (0, 1):
        members = rng.permutation(np.flatnonzero(typing == cls))
        staging[members[: late[cls]]] = 1
    return typing, staging


def _stratified_uniform(rng: np.random.Generator, cells: np.ndarray) -> np.ndarray:
    """One U(0, 1) draw per item, stratified within each cell (k items: one per k-quantile)."""
    u = np.empty(len(cells))
    for cell in np.unique(cells):
        idx = np.flatnonzero(cells == cell)
        u[idx] = (rng.permutation(len(idx)) + rng.uniform(size=len(idx))) / len(idx)
    return u


def slide_specs(
    dataset: str,
    n_slides: int,
    typing_minority: int,
    staging_minority: int,
    seed: int,
    size: tuple[int, int] = (2048, 1536),
    base_mag: float = 20.0,
    mpp: float = 0.5,
    cell: int = 128,
) -> list[SlideSpec]:
    """The specs of one demo dataset; deterministic in ``seed``."""
    if dataset not in PALETTES:
        raise ValueError(f"unknown demo dataset {dataset!r}; known: {', '.join(PALETTES)}")
    typing, staging = assign_labels(n_slides, typing_minority, staging_minority, seed)
    # Signal strengths are spread evenly within every (typing, staging) cell, so that neither
    # one leaks into the other label by chance.
    cells = 2 * typing + staging
    u_q = _stratified_uniform(np.random.default_rng([seed, 2]), cells)
    u_f = _stratified_uniform(np.random.default_rng([seed, 3]), cells)
    q_all = np.where(typing == 1, 0.1 + 0.40 * u_q, 0.5 + 0.40 * u_q)
    u_s = _stratified_uniform(np.random.default_rng([seed, 4]), cells)
    f_all = 0.9 * (0.4 * staging + 0.6 * u_f)
    s_all = 0.4 * staging + 0.6 * u_s
    specs = []
    for i in range(n_slides):
        rng = np.random.default_rng([seed, 1, i])
        q, f, s_react = q_all[i], f_all[i], s_all[i]
        pen = rng.choice(["green", "blue"]) if rng.random() < 0.4 else ""
        specs.append(
            SlideSpec(
                slide_id=f"{dataset}-demo-{i:03d}",
                dataset=dataset,
                typing=int(typing[i]),
                staging=int(staging[i]),
                seed=int(rng.integers(2**31)),
                width=size[0],
                height=size[1],
                base_mag=base_mag,
                mpp=mpp,
                cell=cell,
                speckle_fraction=float(q),
                infiltration=float(f),
                stroma_reaction=float(s_react),
                stain_h=float(rng.uniform(0.85, 1.15)),
                stain_e=float(rng.uniform(0.85, 1.15)),
                pen=str(pen),
            )
        )
    return specs


def render_slide(spec: SlideSpec) -> np.ndarray:
    """Render the level-0 RGB image ``[height, width, 3]`` (uint8) of ``spec``."""
    rng = np.random.default_rng(spec.seed)
    h, w = spec.height, spec.width
    cyto_e, stroma_e, nucleus_h = PALETTES[spec.dataset]

    tissue = _tissue_region(rng, h, w)  # [H, W] bool
    tumour = _tumour_map(rng, tissue, spec) & tissue  # [H, W] bool
    stroma = tissue & ~tumour

    nuclei_smooth, nuclei_speckled = _tumour_nuclei(rng, tumour, spec.speckle_fraction)
    fibro = _stroma_nuclei(rng, stroma)
    chromatin = nuclei_smooth + nuclei_speckled

    fibres = ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma=(1.5, 7.0))
    fibres = fibres / (fibres.std() + 1e-9)
    conc_h = spec.stain_h * (nucleus_h * chromatin + 0.75 * fibro + 0.06 * tissue)
    conc_e = spec.stain_e * (
        cyto_e * tumour * (1 - 0.6 * (nuclei_smooth + nuclei_speckled))
        + stroma_e * stroma * np.clip(1 + 0.35 * fibres, 0.2, 2.0)
    )
    od = conc_h[..., None] * _H + conc_e[..., None] * _E + 0.03  # glass
    od += rng.normal(0.0, 0.012, (h, w, 1)) + rng.normal(0.0, 0.012 * tissue[..., None], (h, w, 3))
    rgb = 255.0 * np.exp(-od)
    # Chromatin texture of 2 x 2-pixel blocks, applied to intensity (not optical density) so
    # that box averaging to 5x cancels it exactly: speckled and smooth nuclei have equal means.
    # It is added on whole 4 x 4 blocks (one 5x pixel) inside a nucleus, scaled by the block's
    # mean, so that every 4 x 4 block mean -- hence the 5x image -- is unchanged.
    yy, xx = np.mgrid[0:h, 0:w]
    checker = np.where(((yy // 2) + (xx // 2)) % 2 == 0, 1.0, -1.0)
    # The amplitude is capped per block and channel so that no pixel clips at 0 or 255
    # (clipping would shift the mean and leak the label into 5x colour).
    # Stromal reaction: rows of 2 pixels alternating, in the stroma of a fraction of the lattice
    # cells (staging's fine-scale half); it cancels at 5x the same way.
    stripes = np.where((yy // 2) % 2 == 0, 1.0, -1.0)
    c = spec.cell
    reactive = rng.random((-(-h // c)) * (-(-w // c))) < spec.stroma_reaction
    reactive = reactive.reshape(-(-h // c), -(-w // c))[yy // c, xx // c] & stroma
    clean = ~_add_artefacts(rng, rgb, tissue, spec.pen)  # textures stay off artefact blocks
    texture = spec.speckle_amplitude * checker * _whole_blocks(nuclei_speckled * clean, 4) + (
        spec.stroma_amplitude * stripes * _whole_blocks(reactive & clean, 4)
    )
    mean, lo, hi = _block_stats(rgb, 4)
    cap = np.minimum(lo, 255.0 - hi) / np.maximum(mean, 1e-6)
    rgb += np.sign(texture)[..., None] * np.minimum(np.abs(texture)[..., None], cap) * mean
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def write_pyramid_tiff(
    path: str | Path,
    rgb: np.ndarray,
    base_mag: float,
    mpp: float,
    tile: int = 256,
    min_side: int = 512,
    note: str = "",
) -> Path:
    """Write ``rgb`` as a tiled pyramidal TIFF that OpenSlide reads as an Aperio slide.

    One page per level (each an exact 2 x 2 box average of the previous, until the longest side
    is at most ``min_side``), levels after the first marked reduced-resolution, zlib
    compression (lossless: the fine-texture signal must survive). Written atomically.
    """
    path = Path(path)
    h, w = rgb.shape[:2]
    description = (
        f"Aperio Image Library v12.0.15 \r\n{w}x{h} [0,0 {w}x{h}] ({tile}x{tile}) ZLIB/RGB"
        f"|AppMag = {base_mag:g}|MPP = {mpp:g}|wsigraph synthetic slide{'|' + note if note else ''}"
    )
    levels = [rgb]
    while max(levels[-1].shape[:2]) > min_side and min(levels[-1].shape[:2]) >= 2 * 16:
        levels.append(_box_half(levels[-1]))
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp) as tw:
        for i, img in enumerate(levels):
            tw.write(
                img,
                tile=(tile, tile),
                compression="zlib",
                compressionargs={"level": 4},
                photometric="rgb",
                subfiletype=1 if i else 0,
                description=description if i == 0 else None,
                metadata=None,
            )
    return path


def make_demo_cohort(
    profile, out_dir: str | Path | None = None, progress: bool = True, workers: int | None = None
) -> pd.DataFrame:
    """Write every demo slide of ``profile`` (skipping ones already written) and its manifest.

    Slides are rendered by ``workers`` processes (default: one per CPU core). A slide already on
    disk is kept when it opens, decodes and carries the spec's seed; otherwise it is rewritten.

    Raises:
        ValueError: a ``profile.slide_size`` smaller than the tiling needs (the message says the
            minimum, :attr:`~wsigraph.profiles.Profile.min_slide_side`).

    Returns:
        The manifest: one row per slide with ``slide_id, dataset, path, typing, staging``, the
        class names, and the generator's hidden values (prefixed ``gen_``) for inspection.
    """
    out_dir = Path(out_dir) if out_dir is not None else profile.slides_dir
    size = profile.check_slide_size(profile.slide_size)
    specs = [
        spec
        for d in profile.demo_datasets
        for spec in slide_specs(
            d.name,
            d.n_slides,
            d.typing_minority,
            d.staging_minority,
            d.seed,
            size=size,
            base_mag=profile.slide_base_mag,
            mpp=profile.slide_mpp,
            cell=_lattice_cell(profile),
        )
    ]
    paths = [out_dir / spec.dataset / f"{spec.slide_id}.tif" for spec in specs]
    todo = [
        (spec, path) for spec, path in zip(specs, paths, strict=True) if not _is_written(spec, path)
    ]
    workers = max(1, min(len(todo), workers or os.cpu_count() or 1))
    with (
        ProcessPoolExecutor(workers, mp_context=get_context("fork"))
        if workers > 1
        else nullcontext() as pool
    ):
        jobs = pool.map(_write_slide, todo) if pool else map(_write_slide, todo)
        for _ in tqdm(
            jobs,
            total=len(todo),
            desc="synthesising demo slides",
            disable=not progress,
            unit="slide",
        ):
            pass
    rows = []
    for spec, path in zip(specs, paths, strict=True):
        names = dict(zip(("typing", "staging"), _class_names(profile, spec.dataset), strict=True))
        rows.append(
            {
                "slide_id": spec.slide_id,
                "dataset": spec.dataset,
                "path": str(path),
                "typing": spec.typing,
                "typing_name": names["typing"][spec.typing],
                "staging": spec.staging,
                "staging_name": names["staging"][spec.staging],
            }
            | {
                f"gen_{k}": v
                for k, v in asdict(spec).items()
                if k not in ("slide_id", "dataset", "typing", "staging")
            }
        )
    return pd.DataFrame(rows)


def _is_written(spec: SlideSpec, path: Path) -> bool:
    from wsigraph.data.slides import Slide, SlideError

    if not path.exists():
        return False
    try:
        with Slide(path) as s:
            s.verify()
            return s.dimensions == (spec.width, spec.height) and _spec_tag(spec) in s.comment
    except SlideError:
        return False


def _write_slide(job: tuple[SlideSpec, Path]) -> Path:
    spec, path = job
    return write_pyramid_tiff(
        path, render_slide(spec), spec.base_mag, spec.mpp, note=_spec_tag(spec)
    )


def _spec_tag(spec: SlideSpec) -> str:
    """Identifies everything that made the slide (and the generator version), for resuming."""
    text = json.dumps(asdict(spec), sort_keys=True) + f"|generator {GENERATOR_VERSION}"
    return f"spec = {hashlib.sha1(text.encode()).hexdigest()[:16]}"


# --------------------------------------------------------------------------------------------
# Drawing helpers (all vectorised over pixels / nuclei).


def _class_names(profile, dataset: str) -> tuple[tuple[str, str], tuple[str, str]]:
    d = next(d for d in profile.demo_datasets if d.name == dataset)
    return d.typing_classes, ("early (I-II)", "late (III-IV)")


def _lattice_cell(profile) -> int:
    """Level-0 side of one patch at the finest magnification of the profile's tiling."""
    return int(round(profile.patch_size * profile.slide_base_mag / max(profile.magnifications)))


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Zero-mean, unit-std noise with features of about ``scale`` pixels."""
    small = rng.standard_normal((max(2, int(h / scale) + 1), max(2, int(w / scale) + 1)))
    big = np.asarray(
        Image.fromarray(small.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BICUBIC)
    )
    return (big - big.mean()) / (big.std() + 1e-9)


def _tissue_region(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    cy, cx = rng.uniform(0.42, 0.58, 2)
    ry, rx = rng.uniform(0.36, 0.44, 2)
    r2 = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    return (1.0 - r2 + 0.18 * _smooth_noise(rng, h, w, min(h, w) / 5)) > 0.0


def _tumour_map(rng: np.random.Generator, tissue: np.ndarray, spec: SlideSpec) -> np.ndarray:
    """Tumour/stroma laid out on the ``cell`` lattice: a compact mass plus scattered nests."""
    h, w, c = spec.height, spec.width, spec.cell
    gh, gw = -(-h // c), -(-w // c)
    cell_tissue = ndimage.zoom(tissue.astype(float), (gh / h, gw / w), order=1)[:gh, :gw] > 0.5
    if not cell_tissue.any():  # <= 2 cells a side: the zoom samples only the slide's corners
        padded = np.pad(tissue, ((0, gh * c - h), (0, gw * c - w)))
        fraction = padded.reshape(gh, c, gw, c).mean(axis=(1, 3))
        cell_tissue = fraction >= 0.5 * fraction.max()
    idx = np.flatnonzero(cell_tissue)
    n_tumour = max(1, round(spec.tumour_fraction * len(idx)))
    n_scattered = round(spec.infiltration * n_tumour)
    gy, gx = np.divmod(idx, gw)
    centre = rng.choice(idx)
    cy, cx = divmod(centre, gw)
    dist = np.hypot(gy - cy, gx - cx) + rng.uniform(0, 0.8, len(idx))
    compact = idx[np.argsort(dist)[: n_tumour - n_scattered]]
    rest = np.setdiff1d(idx, compact)
    # Nests are isolated: prefer cells not 8-adjacent to the mass or to other nests.
    scattered = _isolated_choice(rng, rest, compact, n_scattered, gh, gw)
    cells = np.zeros(gh * gw, bool)
    cells[compact] = True
    cells[scattered] = True
    cells = cells.reshape(gh, gw)
    # Warp boundaries by a few pixels so the lattice is not visible as straight lines.
    wy = 3.0 * _smooth_noise(rng, h, w, 48)
    wx = 3.0 * _smooth_noise(rng, h, w, 48)
    yy, xx = np.mgrid[0:h, 0:w]
    ci = np.clip(((yy + wy) // c).astype(np.int64), 0, gh - 1)
    cj = np.clip(((xx + wx) // c).astype(np.int64), 0, gw - 1)
    return cells[ci, cj]


def _isolated_choice(rng, candidates, taken, n, gh, gw) -> np.ndarray:
    occupied = np.zeros((gh, gw), bool)
    occupied.flat[taken] = True
    chosen = []
    for cand in rng.permutation(candidates):  # loop over lattice cells (~200), not pixels
        if len(chosen) == n:
            break
        y, x = divmod(int(cand), gw)
        if not occupied[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2].any():
            chosen.append(cand)
            occupied[y, x] = True
    if len(chosen) < n:  # not enough isolated cells: fill with any free ones
        free = np.setdiff1d(candidates, chosen)
        chosen.extend(rng.permutation(free)[: n - len(chosen)])
    return np.asarray(chosen, np.int64)


def _stamp(
    h: int, w: int, cy: np.ndarray, cx: np.ndarray, inside: np.ndarray, reach: int
) -> np.ndarray:
    """Rasterise shapes: ``inside(dy, dx, i)`` -> bool, vectorised over shapes i and offsets."""
    img = np.zeros((h, w), np.float64)
    if len(cy) == 0:
        return img
    dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1].reshape(2, -1)  # [K]
    keep = np.broadcast_to(inside(dy[None, :], dx[None, :]), (len(cy), len(dy)))  # [M, K]
    ys = (cy[:, None] + dy[None, :])[keep]
    xs = (cx[:, None] + dx[None, :])[keep]
    ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    img[ys[ok], xs[ok]] = 1.0
    return img


def _tumour_nuclei(
    rng, tumour: np.ndarray, speckle_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    h, w = tumour.shape
    n = int(h * w / 13.0**2)
    cy, cx = rng.integers(0, h, n), rng.integers(0, w, n)
    inside = tumour[cy, cx]
    cy, cx = cy[inside], cx[inside]
    r = rng.uniform(4.0, 6.5, len(cy))
    speckled = rng.random(len(cy)) < speckle_fraction
    maps = []
    for sel in (~speckled, speckled):
        rr = r[sel][:, None]
        maps.append(_stamp(h, w, cy[sel], cx[sel], lambda dy, dx, rr=rr: dy**2 + dx**2 <= rr**2, 7))
    smooth, speck = maps
    return smooth * (1 - speck), speck


def _stroma_nuclei(rng, stroma: np.ndarray) -> np.ndarray:
    h, w = stroma.shape
    n = int(h * w / 45.0**2)
    cy, cx = rng.integers(0, h, n), rng.integers(0, w, n)
    inside = stroma[cy, cx]
    cy, cx = cy[inside], cx[inside]
    theta = rng.normal(0.0, 0.35, len(cy))[:, None]  # fibres run roughly horizontally
    cos, sin = np.cos(theta), np.sin(theta)

    def ellipse(dy, dx):
        u, v = dx * cos + dy * sin, -dx * sin + dy * cos
        return (u / 7.5) ** 2 + (v / 2.5) ** 2 <= 1.0

    return _stamp(h, w, cy, cx, ellipse, 8)


def _add_artefacts(rng, rgb: np.ndarray, tissue: np.ndarray, pen: str) -> np.ndarray:
    """Draw glass smudge, debris and pen into ``rgb``; return the mask of pixels drawn on."""
    h, w = tissue.shape
    yy, xx = np.mgrid[0:h, 0:w]
    # Grey smudge on the glass: unsaturated, low variance.
    sy, sx = rng.uniform(0.1, 0.9) * h, rng.choice([0.08, 0.92]) * w
    smudge = ((yy - sy) / (0.08 * h)) ** 2 + ((xx - sx) / (0.05 * w)) ** 2 <= 1.0
    rgb[smudge & ~tissue] *= np.exp(-0.10)
    touched = smudge & ~tissue
    # Dark debris specks anywhere.
    for _ in range(int(rng.integers(2, 5))):
        dy, dx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(6, 18)
        speck = (yy - dy) ** 2 + (xx - dx) ** 2 <= r**2
        rgb[speck] = 255.0 * np.exp(-2.2)
        touched |= speck
    # Pen stroke: a thick quadratic Bezier curve in non-H&E ink.
    if pen:
        ink = np.array([0.95, 0.08, 0.75]) if pen == "green" else np.array([1.1, 0.55, 0.05])
        p = rng.uniform([0.1 * w, 0.0], [0.9 * w, h], (3, 2))
        t = np.linspace(0, 1, 400)[:, None]
        curve = (1 - t) ** 2 * p[0] + 2 * (1 - t) * t * p[1] + t**2 * p[2]
        stroke = (
            _stamp(
                h,
                w,
                curve[:, 1].astype(int),
                curve[:, 0].astype(int),
                lambda dy, dx: dy**2 + dx**2 <= 81,
                9,
            )
            > 0
        )
        rgb[stroke] = 255.0 * np.exp(-ink)
        touched |= stroke
    return touched


def _whole_blocks(mask: np.ndarray, b: int) -> np.ndarray:
    """``mask`` restricted to the aligned ``b`` x ``b`` blocks that lie wholly inside it."""
    h, w = mask.shape
    ph, pw = -h % b, -w % b
    m = np.pad(mask, ((0, ph), (0, pw)))
    blocks = m.reshape(m.shape[0] // b, b, m.shape[1] // b, b).min(axis=(1, 3))
    return np.repeat(np.repeat(blocks, b, axis=0), b, axis=1)[:h, :w]


def _block_stats(img: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max of each aligned ``b`` x ``b`` block, broadcast back to every pixel."""
    h, w = img.shape[:2]
    m = np.pad(img, ((0, -h % b), (0, -w % b), (0, 0)), mode="edge")
    blocks = m.reshape(m.shape[0] // b, b, m.shape[1] // b, b, -1)

    def expand(x: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(x, b, axis=0), b, axis=1)[:h, :w]

    return (
        expand(blocks.mean(axis=(1, 3))),
        expand(blocks.min(axis=(1, 3))),
        expand(blocks.max(axis=(1, 3))),
    )


def _box_half(img: np.ndarray) -> np.ndarray:
    h, w = (img.shape[0] // 2) * 2, (img.shape[1] // 2) * 2
    x = img[:h, :w].astype(np.float32).reshape(h // 2, 2, w // 2, 2, -1).mean(axis=(1, 3))
    return np.round(x).astype(np.uint8)


#: One sentence on the demo cohort's task, for the captions of the demo tables.
DEMO_TASK = (
    "Demo task: each label depends on where a fine texture visible only at 10x lies relative "
    "to the tissue architecture seen at 5x (a relation across scales), so no single level's "
    "slide mean carries it"
)
