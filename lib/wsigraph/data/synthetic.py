"""The demo cohort: deterministic synthetic H&E-like slides that OpenSlide reads as real slides.

Each slide is a tiled, zlib-compressed, pyramidal TIFF (one page per level, levels after the
first marked reduced-resolution, 256 px tiles) with an Aperio-style ``ImageDescription``
(``AppMag`` and ``MPP``), so OpenSlide opens it with vendor ``aperio``, objective power and
um/px -- the same code path as a TCGA ``.svs``. Level 0 is 20x at 0.5 um/px (1280 x 1024 px in
the demo profile); levels 1, 2 are exact 2 x 2 box averages (10x, 5x).

Where the class signal is: a relation *across* scales (issue 17)
-----------------------------------------------------------------
**What the papers say their hierarchy captures.** H2-MIL (Hou et al., AAAI 2022) builds one
graph over the pyramid because "pathologists comprehensively observe the tissue-level
information (e.g., vessels and glands) from low-resolution WSI and cellular-level information
(e.g., nucleus and micro-environment) from high-resolution WSI"; its *scaling* edges join "patches
with different resolutions at the same location", and it argues that features of different
resolutions "simply concatenated or linked" learn suboptimally and that global max or average
pooling is "inherently flat and incapable of capturing hierarchical structure information". HIGT (Guo et al., MICCAI 2023) puts "nucleus and chromatin
morphology" at high resolution and tissue layout ("the extent of tumor-immune localization") at
low resolution, and its Bidirectional Interaction block passes each region node (a 5x patch) to
the patch nodes linked to it (its 10x children, Eq. 5) and the MEAN of those children back to the
region node (Eq. 6). What both add over flat multi-scale MIL is therefore **which fine-scale
patches lie inside which coarse-scale patch**: the label of a slide whose meaning needs a cell
morphology *together with* the architecture around it.

**How the generator puts the label only there.** With the demo tiling (64 px patches at 5x and
10x on a 20x level 0), a 10x patch is one cell of a lattice of ``cell`` = 128 level-0 px and a
5x patch is a *block* of 2 x 2 cells. Tissue fills whole blocks (4 x 4 blocks = 8 x 8 cells in
the demo, beside one column of glass that holds the artefacts). Every block has one of two
architectures, visible at 5x and in the thumbnail:

* **mixed** (A): 2 tumour + 2 stroma cells on the diagonals (which diagonal is random);
* **compact** (B): 4 cells of one type, half of the compact blocks tumour and half stroma.

Every slide has the same number of mixed and compact blocks (with 16 blocks: 8 mixed, 4 compact
tumour, 4 compact stroma, so 16 tumour cells in each architecture), placed at random. Two fine
textures, visible at 10x and cancelled *exactly* at 5x (each adds +-a of the local intensity on
2 x 2 level-0 px blocks, mean zero on every 4 x 4 block = one 5x pixel), mark single cells:

* **Typing -- chromatin texture x architecture.** The nuclei of ``texture_share`` (half) of the
  tumour cells of ONE architecture carry a chromatin checkerboard: class 0 puts these textured
  cells in the mixed blocks, class 1 in the compact blocks. The same number of textured cells
  in both classes.
* **Staging -- stromal reaction x architecture.** Independently, ``texture_share`` of the
  stroma cells of one architecture carry fine stripes (rows of 2 px): late stage (class 1) in
  the mixed blocks, where the tumour meets the stroma, early stage in the compact stroma.

Hence the *bag* of 10x patches (tissue type x texture) and the bag of 5x patches (mixed,
compact tumour, compact stroma; no texture) have the same distribution in both classes of both
tasks, and so does the thumbnail: the slide means (and stds) of every level's features, alone or
concatenated, carry no signal (``wsigraph.train.probe``; notebook 02 reports the AUCs). The
label is read only by relating each 10x patch to its 5x parent: "are the textured tumour cells
the children of mixed or of compact 5x patches?" -- H2-MIL's scaling edges, HIGT's
region <-> patch interaction (:func:`hierarchy_oracle` does exactly this with two thresholds and
separates both tasks). To keep a 10x patch from seeing its neighbours' architecture, all the
content of a cell is drawn inside the cell (nuclei clipped to it, no warped boundaries). A
single-level graph with spatial edges can still partly infer a 10x cell's architecture from its
8 neighbours (in a mixed block a tumour cell has 1 tumour neighbour of 3 in its block, in a
compact one 3 of 3); only the hierarchy gives it exactly.

Everything is drawn with a Beer-Lambert H&E stain model (Ruifrok & Johnston stain vectors).
Tumour is dense round nuclei on pale cytoplasm, stroma eosin fibres with sparse elongated
nuclei. Labels are assigned with exact class counts and as little association between the two
tasks as possible (:func:`assign_labels`). Per-slide stain strength varies (+-15 %), and
artefacts the tissue filter must remove lie on the glass, independently of the labels: faint
noise (low RGB variance), a grey smudge (unsaturated), pen strokes in green or blue (saturated
non-H&E hue) on ~40 % of slides, and dark debris specks.
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
from scipy import ndimage

from wsigraph.io import atomic_path
from wsigraph.progress import progress_bar

# Bump when render_slide changes, so that slides written by an older generator are redrawn.
GENERATOR_VERSION = 4

# Ruifrok & Johnston (2001) optical-density vectors, normalised.
_H = np.array([0.65, 0.70, 0.29])
_E = np.array([0.07, 0.99, 0.11])
_H, _E = _H / np.linalg.norm(_H), _E / np.linalg.norm(_E)

PALETTES = {
    # dataset: (cytoplasm eosin, stroma eosin, nucleus haematoxylin)
    "esca": (0.30, 0.55, 1.10),
    "kica": (0.18, 0.45, 1.00),
}

# Cell kinds and block architectures of the lattice.
GLASS, TUMOUR, STROMA = 0, 1, 2
MIXED, COMPACT_TUMOUR, COMPACT_STROMA = 0, 1, 2
# Which architecture's cells carry the fine texture, by class: typing 0 -> the tumour cells of
# mixed blocks, typing 1 -> of compact blocks; staging 0 (early) -> the stroma of compact blocks,
# staging 1 (late) -> the stroma of mixed blocks.
TYPING_TEXTURE_IN_MIXED = (True, False)
STAGING_TEXTURE_IN_MIXED = (False, True)


@dataclass(frozen=True)
class SlideSpec:
    """Everything that determines one synthetic slide (its labels and generator values)."""

    slide_id: str
    dataset: str
    typing: int
    staging: int
    seed: int
    width: int = 1280
    height: int = 1024
    base_mag: float = 20.0
    mpp: float = 0.5
    cell: int = 128  # level-0 side of a lattice cell (= one 10x demo patch); a block is 2 x 2
    texture_share: float = 0.5  # of the tumour (stroma) cells of one architecture, textured
    speckle_amplitude: float = 0.45  # chromatin checkerboard, fraction of the intensity
    stroma_amplitude: float = 0.15  # stromal stripes, fraction of the intensity
    stain_h: float = 1.0
    stain_e: float = 1.0
    pen: str = ""  # "", "green" or "blue"


@dataclass(frozen=True)
class SlideLayout:
    """The lattice of one slide, one entry per ``cell`` x ``cell`` square (``[rows, cols]``).

    Attributes:
        kind: ``GLASS``, ``TUMOUR`` or ``STROMA``.
        block: architecture of the 2 x 2 block the cell belongs to (``MIXED``,
            ``COMPACT_TUMOUR``, ``COMPACT_STROMA``; -1 on glass).
        textured: tumour cells whose nuclei carry the chromatin texture (typing).
        reactive: stroma cells with the fine stripes (staging).
    """

    kind: np.ndarray
    block: np.ndarray
    textured: np.ndarray
    reactive: np.ndarray


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


def slide_specs(
    dataset: str,
    n_slides: int,
    typing_minority: int,
    staging_minority: int,
    seed: int,
    size: tuple[int, int] = (1280, 1024),
    base_mag: float = 20.0,
    mpp: float = 0.5,
    cell: int = 128,
) -> list[SlideSpec]:
    """The specs of one demo dataset; deterministic in ``seed``."""
    if dataset not in PALETTES:
        raise ValueError(f"unknown demo dataset {dataset!r}; known: {', '.join(PALETTES)}")
    typing, staging = assign_labels(n_slides, typing_minority, staging_minority, seed)
    specs = []
    for i in range(n_slides):
        rng = np.random.default_rng([seed, 1, i])
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
                stain_h=float(rng.uniform(0.85, 1.15)),
                stain_e=float(rng.uniform(0.85, 1.15)),
                pen=str(pen),
            )
        )
    return specs


def slide_layout(spec: SlideSpec) -> SlideLayout:
    """The lattice of ``spec``: tissue blocks, their architecture, the textured cells.

    Blocks are ``2 * cell`` squares aligned with level 0's origin (the 5x grid of the demo
    tiling). One column of blocks (a row when the slide is too narrow) is left as glass when the
    slide has at least 3 of them; the tissue blocks are half mixed, and the compact ones half
    tumour and half stroma (an odd one either, at random), all placed at random. Textured cells
    are drawn from the architecture the labels name (:data:`TYPING_TEXTURE_IN_MIXED`,
    :data:`STAGING_TEXTURE_IN_MIXED`); their number, ``texture_share`` of the smaller of the two
    architectures' counts, does not depend on the labels.
    """
    rng = np.random.default_rng([spec.seed, 1])
    c = spec.cell
    bh, bw = spec.height // (2 * c), spec.width // (2 * c)
    tissue = np.ones((bh, bw), bool)
    if bw >= 3:
        tissue[:, rng.choice([0, bw - 1])] = False
    elif bh >= 3:
        tissue[rng.choice([0, bh - 1]), :] = False
    n = int(tissue.sum())
    n_mixed = n // 2
    n_tumour = (n - n_mixed) // 2 + int((n - n_mixed) % 2 and rng.random() < 0.5)
    kinds = np.repeat(
        [MIXED, COMPACT_TUMOUR, COMPACT_STROMA], [n_mixed, n_tumour, n - n_mixed - n_tumour]
    )
    blocks = np.full((bh, bw), -1, np.int64)
    blocks[tissue] = rng.permutation(kinds)
    flip = rng.random((bh, bw)) < 0.5  # which diagonal of a mixed block is tumour

    gh, gw = spec.height // c, spec.width // c
    block = np.full((gh, gw), -1, np.int64)
    block[: 2 * bh, : 2 * bw] = np.repeat(np.repeat(blocks, 2, 0), 2, 1)
    i, j = np.indices((gh, gw))
    diagonal = ((i % 2) == (j % 2)) ^ flip[np.minimum(i // 2, bh - 1), np.minimum(j // 2, bw - 1)]
    kind = np.select(
        [block == COMPACT_TUMOUR, block == COMPACT_STROMA, block == MIXED],
        [TUMOUR, STROMA, np.where(diagonal, TUMOUR, STROMA)],
        GLASS,
    )
    in_mixed = block == MIXED
    textured = _choose_cells(
        rng, kind == TUMOUR, in_mixed, TYPING_TEXTURE_IN_MIXED[spec.typing], spec.texture_share
    )
    reactive = _choose_cells(
        rng, kind == STROMA, in_mixed, STAGING_TEXTURE_IN_MIXED[spec.staging], spec.texture_share
    )
    return SlideLayout(kind.astype(np.int64), block, textured, reactive)


def spec_of(row) -> SlideSpec:
    """The spec that drew a demo slide, from its manifest row: the ``gen_`` columns that
    :func:`make_demo_cohort` writes (a mapping or a :class:`pandas.Series`).

    Raises:
        ValueError: the row holds no generator values (not a demo slide).
    """
    from dataclasses import fields

    get = row.get if hasattr(row, "get") else row.__getitem__
    missing = [f.name for f in fields(SlideSpec)[4:] if get(f"gen_{f.name}") is None]
    if missing:
        raise ValueError(
            f"{get('slide_id')} is not a demo slide: its manifest row has no generator values "
            f"(gen_{missing[0]}, ...)"
        )
    cast = {"int": int, "float": float, "str": lambda v: "" if pd.isna(v) else str(v)}
    values = {f.name: cast[f.type](get(f"gen_{f.name}")) for f in fields(SlideSpec)[4:]}
    return SlideSpec(
        slide_id=str(get("slide_id")),
        dataset=str(get("dataset")),
        typing=int(get("typing")),
        staging=int(get("staging")),
        **values,
    )


def signal_cells(spec: SlideSpec, task: str, pos: np.ndarray) -> np.ndarray:
    """Whether each level-0 position ``pos`` (``[N, 2]``, x, y) lies in a lattice cell that
    carries ``task``'s fine texture: the chromatin texture for typing
    (:attr:`SlideLayout.textured`), the stromal stripes for staging
    (:attr:`SlideLayout.reactive`). These are the 10x patches a model must relate to their 5x
    parent to read the label; positions off the lattice are ``False``."""
    if task not in ("typing", "staging"):
        raise ValueError(f"unknown demo task {task!r}; known: typing, staging")
    lay = slide_layout(spec)
    carries = lay.textured if task == "typing" else lay.reactive
    pos = np.asarray(pos, np.float64).reshape(-1, 2)
    i, j = (pos[:, 1] // spec.cell).astype(int), (pos[:, 0] // spec.cell).astype(int)
    inside = (i >= 0) & (j >= 0) & (i < carries.shape[0]) & (j < carries.shape[1])
    out = np.zeros(len(pos), bool)
    out[inside] = carries[i[inside], j[inside]]
    return out


def _choose_cells(rng, of_type, in_mixed, mixed: bool, share: float) -> np.ndarray:
    """``share`` of the smaller of (mixed, compact) cells of a type, drawn from one of them."""
    n = round(share * min(int((of_type & in_mixed).sum()), int((of_type & ~in_mixed).sum())))
    pool = np.flatnonzero(of_type & (in_mixed if mixed else ~in_mixed))
    out = np.zeros(of_type.shape, bool)
    out.flat[rng.choice(pool, n, replace=False)] = True
    return out


def render_slide(spec: SlideSpec) -> np.ndarray:
    """Render the level-0 RGB image ``[height, width, 3]`` (uint8) of ``spec``."""
    lay = slide_layout(spec)
    rng = np.random.default_rng([spec.seed, 2])
    h, w, c = spec.height, spec.width, spec.cell
    cyto_e, stroma_e, nucleus_h = PALETTES[spec.dataset]

    def pixels(cells: np.ndarray) -> np.ndarray:  # [gh, gw] -> [h, w], glass beyond the lattice
        out = np.zeros((h, w), cells.dtype)
        out[: cells.shape[0] * c, : cells.shape[1] * c] = np.repeat(np.repeat(cells, c, 0), c, 1)
        return out

    tumour, stroma = pixels(lay.kind == TUMOUR), pixels(lay.kind == STROMA)
    tissue = tumour | stroma
    nuclei, speckled = _tumour_nuclei(rng, lay, c, (h, w))
    fibro = _stroma_nuclei(rng, lay, c, (h, w))
    # Eosin fibres: smooth noise elongated along x, drawn at half resolution (10x; level 0 is
    # never read finer than 10x by the tiling) to save time.
    fibres = ndimage.gaussian_filter(
        rng.random((-(-h // 2), -(-w // 2)), np.float32), sigma=(0.75, 3.5)
    )
    fibres = np.repeat(np.repeat((fibres - fibres.mean()) / (fibres.std() + 1e-9), 2, 0), 2, 1)
    conc_h = spec.stain_h * (nucleus_h * nuclei + 0.75 * fibro + np.float32(0.06) * tissue)
    conc_e = spec.stain_e * np.where(
        tumour,
        cyto_e * (1 - 0.6 * nuclei),
        stroma_e * stroma * np.clip(1 + 0.35 * fibres[:h, :w], 0.2, 2.0),
    )
    # Faint noise: uniform, std 0.012 OD, on glass and tissue, plus per-channel on tissue.
    # Channels are computed as planes ([3, H, W]), which is several times faster.
    amp = np.float32(0.012 * 12**0.5)
    glass_noise = 0.03 + amp * (rng.random((h, w), np.float32) - 0.5)
    rgb = np.empty((3, h, w), np.float32)
    for ch in range(3):
        od = conc_h * np.float32(_H[ch]) + conc_e * np.float32(_E[ch]) + glass_noise
        od += amp * (rng.random((h, w), np.float32) - 0.5) * tissue
        np.exp(-od, out=rgb[ch])
    rgb *= 255.0
    _add_artefacts(rng, rgb, tissue, spec.pen)
    # Fine textures, added to intensity (not optical density) on whole 4 x 4 blocks (one 5x
    # pixel), +-amplitude x the block's mean on alternating 2 x 2 sub-blocks: every 4 x 4 mean --
    # hence the 5x image -- is unchanged. Chromatin: a checkerboard on the nuclei of textured
    # cells; stromal reaction: rows of 2 px on reactive stroma cells. Cells are multiples of 4
    # px and aligned, so each cell is textured on its own.
    rows, cols = (np.arange(c) // 2) % 2, (np.arange(c) // 2) % 2
    checker = np.where(rows[:, None] == cols[None, :], 1.0, -1.0).astype(np.float32)
    stripes = np.broadcast_to(np.where(rows == 0, 1.0, -1.0).astype(np.float32)[:, None], (c, c))
    for cy, cx in zip(*np.nonzero(lay.textured), strict=True):
        cell = np.s_[cy * c : (cy + 1) * c, cx * c : (cx + 1) * c]
        texture = spec.speckle_amplitude * checker * _whole_blocks(speckled[cell] > 0, 4)
        _add_texture(rgb[(slice(None), *cell)], texture, 4)
    for cy, cx in zip(*np.nonzero(lay.reactive), strict=True):
        cell = np.s_[cy * c : (cy + 1) * c, cx * c : (cx + 1) * c]
        _add_texture(rgb[(slice(None), *cell)], spec.stroma_amplitude * stripes, 4)
    out = np.empty((h, w, 3), np.uint8)
    for ch in range(3):
        out[..., ch] = np.clip(np.rint(rgb[ch]), 0, 255)
    return out


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
                compressionargs={"level": 1},
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
        for _ in progress_bar(
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


def _centres(rng, cells: np.ndarray, c: int, per_cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Uniform points in the ``True`` cells, Poisson(``per_cell``) of them in each."""
    cy, cx = np.nonzero(cells)
    n = rng.poisson(per_cell, len(cy))
    y = np.repeat(cy * c, n) + rng.integers(0, c, n.sum())
    x = np.repeat(cx * c, n) + rng.integers(0, c, n.sum())
    return y, x


def _stamp(
    shape: tuple[int, int],
    cy: np.ndarray,
    cx: np.ndarray,
    inside,
    reach: int,
    cell: int | None = None,
) -> np.ndarray:
    """Rasterise shapes: ``inside(dy, dx)`` -> bool ``[M, K]``, vectorised over shapes and offsets.

    With ``cell``, every shape is clipped to the ``cell`` x ``cell`` lattice square holding its
    centre, so nothing drawn for one cell shows in another.
    """
    h, w = shape
    img = np.zeros((h, w), np.float32)
    if len(cy) == 0:
        return img
    dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1].reshape(2, -1)  # [K]
    keep = np.broadcast_to(inside(dy[None, :], dx[None, :]), (len(cy), len(dy)))  # [M, K]
    ys = cy[:, None] + dy[None, :]
    xs = cx[:, None] + dx[None, :]
    ok = keep & (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    if cell is not None:
        ok &= (ys // cell == (cy // cell)[:, None]) & (xs // cell == (cx // cell)[:, None])
    img[ys[ok], xs[ok]] = 1.0
    return img


def _tumour_nuclei(rng, lay: SlideLayout, c: int, shape) -> tuple[np.ndarray, np.ndarray]:
    """All tumour nuclei and those of the textured cells (``[H, W]`` masks, float32)."""
    cy, cx = _centres(rng, lay.kind == TUMOUR, c, c * c / 13.0**2)
    r = rng.uniform(4.0, 6.5, len(cy))[:, None]
    nuclei = _stamp(shape, cy, cx, lambda dy, dx: dy**2 + dx**2 <= r**2, 7, cell=c)
    textured = lay.textured[cy // c, cx // c]
    speckled = _stamp(
        shape, cy[textured], cx[textured], lambda dy, dx: dy**2 + dx**2 <= r[textured] ** 2, 7, c
    )
    return nuclei, speckled


def _stroma_nuclei(rng, lay: SlideLayout, c: int, shape) -> np.ndarray:
    cy, cx = _centres(rng, lay.kind == STROMA, c, c * c / 45.0**2)
    theta = rng.normal(0.0, 0.35, len(cy))[:, None]  # fibres run roughly horizontally
    cos, sin = np.cos(theta), np.sin(theta)

    def ellipse(dy, dx):
        u, v = dx * cos + dy * sin, -dx * sin + dy * cos
        return (u / 7.5) ** 2 + (v / 2.5) ** 2 <= 1.0

    return _stamp(shape, cy, cx, ellipse, 8, cell=c)


def _add_artefacts(rng, rgb: np.ndarray, tissue: np.ndarray, pen: str) -> None:
    """Draw a glass smudge, debris specks and a pen stroke into ``rgb`` (``[3, H, W]``), on the
    glass only.

    They are drawn on the widest glass margin (the glass column of blocks on the demo slides)
    and never touch a tissue pixel, so no patch content depends on them.
    """
    h, w = tissue.shape
    cols = np.flatnonzero(~tissue.any(axis=0))  # columns of glass only
    if len(cols) == 0:
        return
    x0, x1 = int(cols.min()), int(cols.max()) + 1
    region = rgb[:, :, x0:x1]  # a view: drawing on it draws on the slide
    glass = ~tissue[:, x0:x1]
    yy, xx = np.ogrid[0:h, x0:x1]
    # Grey smudge: unsaturated, low variance.
    sy, sx = rng.uniform(0.2, 0.8) * h, rng.uniform(x0, x1)
    smudge = ((yy - sy) / (0.12 * h)) ** 2 + ((xx - sx) / max(8.0, 0.3 * (x1 - x0))) ** 2 <= 1.0
    region[:, smudge & glass] *= np.float32(np.exp(-0.10))
    # Dark debris specks.
    for _ in range(int(rng.integers(2, 5))):
        dy, dx, r = rng.uniform(0, h), rng.uniform(x0, x1), rng.uniform(6, 18)
        region[:, ((yy - dy) ** 2 + (xx - dx) ** 2 <= r**2) & glass] = 255.0 * np.exp(-2.2)
    # Pen stroke: a thick quadratic Bezier curve in non-H&E ink, down the glass margin.
    if pen:
        ink = np.array([0.95, 0.08, 0.75]) if pen == "green" else np.array([1.1, 0.55, 0.05])
        p = rng.uniform([0.2 * (x1 - x0), 0.0], [0.8 * (x1 - x0), h], (3, 2))
        p[:, 1] = np.sort(p[:, 1])
        t = np.linspace(0, 1, 400)[:, None]
        curve = (1 - t) ** 2 * p[0] + 2 * (1 - t) * t * p[1] + t**2 * p[2]
        stroke = _stamp(
            (h, x1 - x0),
            curve[:, 1].astype(int),
            curve[:, 0].astype(int),
            lambda dy, dx: dy**2 + dx**2 <= 81,
            9,
        )
        region[:, (stroke > 0) & glass] = (255.0 * np.exp(-ink))[:, None]


def _whole_blocks(mask: np.ndarray, b: int) -> np.ndarray:
    """``mask`` restricted to the aligned ``b`` x ``b`` blocks that lie wholly inside it."""
    h, w = mask.shape
    m = np.pad(mask, ((0, -h % b), (0, -w % b)))
    blocks = m.reshape(m.shape[0] // b, b, m.shape[1] // b, b).min(axis=(1, 3))
    return np.repeat(np.repeat(blocks, b, axis=0), b, axis=1)[:h, :w]


def _add_texture(rgb: np.ndarray, texture: np.ndarray, b: int) -> None:
    """``rgb += texture x mean`` of each aligned ``b`` x ``b`` block and channel, in place.

    ``rgb`` is ``[3, H, W]`` (a view), ``texture`` ``[H, W]``, both multiples of ``b``. The
    amplitude is capped per block and channel so that no pixel leaves [0, 255] (clipping would
    shift the mean and leak the texture into coarser levels).
    """
    _, h, w = rgb.shape
    blocks = rgb.reshape(3, h // b, b, w // b, b)
    t = texture.reshape(1, h // b, b, w // b, b)
    mean = blocks.mean(axis=(2, 4), keepdims=True)
    lo, hi = blocks.min(axis=(2, 4), keepdims=True), blocks.max(axis=(2, 4), keepdims=True)
    cap = np.minimum(lo, 255.0 - hi) / np.maximum(mean, 1e-6)
    rgb[...] = (blocks + np.sign(t) * np.minimum(np.abs(t), cap) * mean).reshape(3, h, w)


def _box_half(img: np.ndarray) -> np.ndarray:
    """2 x 2 box average of a uint8 image (odd last row/column dropped), rounded half up."""
    h, w = (img.shape[0] // 2) * 2, (img.shape[1] // 2) * 2
    x = img[:h:2, :w:2].astype(np.uint16) + img[1:h:2, :w:2] + img[:h:2, 1:w:2] + img[1:h:2, 1:w:2]
    return ((x + 2) >> 2).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# The check that the hierarchy carries the labels.


def hierarchy_oracle(
    features: np.ndarray, level: np.ndarray, parent: np.ndarray, feature_names: list[str]
) -> dict[str, float]:
    """Read both labels of a demo slide off its pyramid, knowing how the generator hides them.

    A check of the demo cohort, not a method: it uses the demo encoder's named features
    (:class:`wsigraph.data.encoders.DemoFilterBank`) and splits each slide's patches in two
    by 1-D two-means, so it needs no training.

    * A 5x patch (level 1) is *mixed* when its four quadrants (its four 10x cells) hold both
      tissue types: tumour when the quadrant's mean optical density in red (``od_mean_r_tl``,
      ...) is above the two-means split of all the slide's quadrants (haematoxylin absorbs red,
      eosin little).
    * A 10x patch (level 2) is *tumour* when it has more haematoxylin, i.e. a higher mean optical
      density in red (``od_mean_r``; eosin absorbs little red); its fine texture is the
      Laplacian of Gaussian at sigma 0.5 (``log_absmean_s0.5``).

    Returns:
        ``typing``: mean texture of tumour 10x patches whose 5x parent is mixed minus that of
        those whose parent is compact (high for typing class 0); ``staging``: the same for
        stroma 10x patches (high for late stage). NaN when a group is empty.
    """
    col = {n: i for i, n in enumerate(feature_names)}
    x = np.asarray(features, np.float64)
    five, ten = np.flatnonzero(level == 1), np.flatnonzero(level == 2)

    quadrants = x[five][:, [col[f"od_mean_r_{q}"] for q in ("tl", "tr", "bl", "br")]]
    tumour_quadrant = _two_means(quadrants.ravel()).reshape(-1, 4)
    mixed = np.zeros(len(x), bool)
    mixed[five] = tumour_quadrant.any(axis=1) & ~tumour_quadrant.all(axis=1)
    tumour = _two_means(x[ten, col["od_mean_r"]])
    texture = x[ten, col["log_absmean_s0.5"]]
    under_mixed = mixed[parent[ten]]

    def difference(sel: np.ndarray) -> float:
        a, b = texture[sel & under_mixed], texture[sel & ~under_mixed]
        return float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")

    return {"typing": difference(tumour), "staging": difference(~tumour)}


def _two_means(v: np.ndarray) -> np.ndarray:
    """``v`` above the threshold that best splits it in two groups (least within-group SS)."""
    s = np.sort(np.asarray(v, np.float64))
    if len(s) < 2 or s[0] == s[-1]:
        return np.zeros(len(s), bool)
    k = np.arange(1, len(s))
    csum, csq = np.cumsum(s), np.cumsum(s**2)
    left = csq[:-1] - csum[:-1] ** 2 / k
    right = (csq[-1] - csq[:-1]) - (csum[-1] - csum[:-1]) ** 2 / (len(s) - k)
    i = int(np.argmin(left + right))
    return np.asarray(v) > (s[i] + s[i + 1]) / 2


def hierarchy_oracle_auc(manifest: pd.DataFrame, features_dir: str | Path) -> pd.DataFrame:
    """ROC AUC of :func:`hierarchy_oracle` per (dataset, task) over the demo slides of
    ``manifest`` whose feature file (demo encoder) is in ``features_dir``; typing scored for
    class 0, staging for late stage (the directions the generator puts them in)."""
    from sklearn.metrics import roc_auc_score

    from wsigraph.data.encoders import DemoFilterBank
    from wsigraph.data.features import feature_path, load_features

    names = DemoFilterBank().feature_names()
    rows = []
    for r in manifest[manifest["dataset"].isin(PALETTES)].itertuples():
        path = feature_path(features_dir, r.slide_id)
        if path.exists():
            d = load_features(path)
            t = d["tiles"]
            stat = hierarchy_oracle(d["features"].numpy(), t.level, t.parent, names)
            rows.append(
                {"dataset": r.dataset, "typing": r.typing, "staging": r.staging}
                | {f"oracle {k}": v for k, v in stat.items()}
            )
    df = pd.DataFrame(rows)
    if df.empty:  # no demo slide in the cohort (e.g. your own cohort CSV on the demo profile)
        return pd.DataFrame()
    out = []
    for dataset, sub in df.groupby("dataset", sort=True):
        for task, positive in (("typing", 0), ("staging", 1)):
            y, score = (sub[task] == positive).to_numpy(), sub[f"oracle {task}"].to_numpy()
            ok = ~np.isnan(score)
            if y[ok].all() or not y[ok].any():
                continue
            auc = roc_auc_score(y[ok], score[ok])
            out.append(
                {"dataset": dataset, "task": task, "slides": int(ok.sum()), "oracle AUC": auc}
            )
    return pd.DataFrame(out)


#: One sentence on the demo cohort's task, for the captions of the demo tables.
DEMO_TASK = (
    "Demo task: each label depends on where a fine texture visible only at 10x lies relative "
    "to the tissue architecture seen at 5x (a relation across scales), so no single level's "
    "slide mean carries it"
)
