"""Whole-slide images through OpenSlide, addressed by magnification.

Every coordinate in this project is in level-0 pixels, the convention of OpenSlide's
``read_region``. A region is requested at a *magnification* (objective power, e.g. 5x or 10x);
:meth:`Slide.read_region_at` picks the pyramid level with the largest downsample that is still
at least as detailed as requested, reads there, and resizes down with area averaging (never up
from a coarser level).

Magnification comes from the slide's metadata (``openslide.objective-power``, which OpenSlide
fills from e.g. Aperio's ``AppMag``), or from the caller (``objective_power=``: the notebooks'
parameter and the cohort CSV column ``objective_power``, ``wsigraph --objective-power``). When only
the pixel size is known (metadata or ``mpp=``), the magnification is taken as ``10 / mpp``
(0.25 um/px is 40x, 0.5 um/px is 20x) with a warning, because scanners disagree on that mapping;
pass the magnification itself to override it. A slide with neither raises
:class:`MissingMagnificationError`, naming the parameters and columns that supply them.

Any failure of the underlying library (not a slide, unsupported format, truncated or corrupt
tiles) is re-raised as :class:`SlideError` naming the file.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openslide
from PIL import Image

# A thumbnail (tissue mask, thumbnail node, figures) is read from one pyramid level. A level up
# to STRIP_PIXELS is read at once; a larger one in strips of that size. A slide whose coarsest
# level exceeds THUMBNAIL_MAX_PIXELS (a 32,768 x 32,768 single-level TIFF) is refused.
STRIP_PIXELS = 1 << 24
THUMBNAIL_MAX_PIXELS = 1 << 30


class SlideError(Exception):
    """A slide cannot be opened or read. ``path`` names the file."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class MissingMagnificationError(SlideError):
    """The slide's metadata has no objective power and the caller supplied none."""


@dataclass(frozen=True)
class Level:
    """One pyramid level: its size in pixels and its downsample from level 0."""

    index: int
    width: int
    height: int
    downsample: float


class Slide:
    """An OpenSlide-readable whole-slide image with its objective power.

    Args:
        path: any file OpenSlide can read (SVS, generic tiled TIFF, NDPI, MRXS, ...).
        objective_power: magnification of level 0 when the metadata lacks it (or to override
            wrong metadata). (default: ``None``, read from metadata)
        mpp: microns per pixel at level 0, likewise. (default: ``None``)

    Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        path: str | Path,
        objective_power: float | None = None,
        mpp: float | None = None,
    ):
        self.path = Path(path)
        if self.path.is_dir():
            raise SlideError(
                self.path, "is a directory, not a slide file; pass the slide file itself"
            )
        if not self.path.is_file():
            raise SlideError(
                self.path,
                "not a regular file (a device, pipe or socket); pass the slide file itself"
                if self.path.exists()
                else "no such file",
            )
        try:
            self._osr = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideUnsupportedFormatError:
            raise SlideError(
                self.path,
                "not a slide OpenSlide can read (unsupported format, or a truncated or corrupt file)",
            ) from None
        except (openslide.OpenSlideError, OSError, ValueError) as e:
            raise SlideError(self.path, f"cannot open: {e}") from None
        props = self._osr.properties
        self.vendor = props.get("openslide.vendor", "unknown")
        self.objective_power = (
            float(objective_power)
            if objective_power is not None
            else _float_or_none(props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER))
        )
        self.mpp = (
            float(mpp)
            if mpp is not None
            else _float_or_none(props.get(openslide.PROPERTY_NAME_MPP_X))
        )
        self.levels = tuple(
            Level(i, *self._osr.level_dimensions[i], float(self._osr.level_downsamples[i]))
            for i in range(self._osr.level_count)
        )

    # Basic facts ------------------------------------------------------------------------
    @property
    def properties(self) -> dict[str, str]:
        """All metadata OpenSlide reports (``openslide.*`` and vendor keys)."""
        return dict(self._osr.properties)

    @property
    def comment(self) -> str:
        """The slide's description text (e.g. Aperio's ``ImageDescription``), or ``""``."""
        return self._osr.properties.get(openslide.PROPERTY_NAME_COMMENT) or ""

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height)."""
        return self.levels[0].width, self.levels[0].height

    @property
    def base_magnification(self) -> float:
        """Objective power of level 0; raises :class:`MissingMagnificationError` if unknown."""
        if self.objective_power is None:
            if self.mpp is not None and self.mpp > 0:
                self.objective_power = magnification_from_mpp(self.mpp)
                warnings.warn(
                    f"{self.path.name}: no objective power in the metadata; its magnification is "
                    f"taken as 10 / mpp = {self.objective_power:g}x from {self.mpp:g} um/px. Give "
                    "the magnification itself (parameter objective_power, cohort column "
                    "objective_power) if the scanner maps pixel size otherwise",
                    stacklevel=2,
                )
                return self.objective_power
            raise MissingMagnificationError(
                self.path,
                "the slide's metadata has neither an objective power "
                "(openslide.objective-power) nor a pixel size (openslide.mpp-x): give the "
                "magnification of its level 0 with the notebooks' parameter objective_power "
                "(./run_all.sh -p objective_power <magnification>) or the cohort CSV column "
                "objective_power, or its pixel size in um with -p mpp / the column mpp "
                "(wsigraph commands: --objective-power / --mpp)",
            )
        return self.objective_power

    def downsample_for(self, magnification: float) -> float:
        """Level-0 pixels per output pixel at ``magnification``."""
        if magnification <= 0:
            raise ValueError(f"magnification must be > 0, got {magnification}")
        ds = self.base_magnification / magnification
        if ds < 1 - 1e-6:
            raise ValueError(
                f"{self.path.name}: {magnification}x requested but the slide's level 0 is "
                f"{self.base_magnification}x; upsampling is not supported"
            )
        return ds

    def best_level(self, downsample: float) -> Level:
        """The level with the largest downsample not exceeding ``downsample`` (0.1 % slack)."""
        ok = [lv for lv in self.levels if lv.downsample <= downsample * 1.001]
        return ok[-1] if ok else self.levels[0]

    # Reading ----------------------------------------------------------------------------
    def read_region_at(
        self, x: float, y: float, size: int | tuple[int, int], magnification: float
    ) -> np.ndarray:
        """Read a ``size`` pixel region at ``magnification`` whose top-left is level-0 ``(x, y)``.

        Returns:
            ``uint8`` array ``[H, W, 3]`` (RGB; transparent areas outside the scan are white).
        """
        out_w, out_h = (size, size) if isinstance(size, int) else size
        ds = self.downsample_for(magnification)
        level = self.best_level(ds)
        scale = ds / level.downsample  # level pixels per output pixel, >= 1
        read_w, read_h = max(1, math.ceil(out_w * scale)), max(1, math.ceil(out_h * scale))
        img = self._read(level.index, int(round(x)), int(round(y)), read_w, read_h)
        if img.size != (out_w, out_h):
            img = img.resize((out_w, out_h), Image.Resampling.BOX)
        return np.array(img)

    def thumbnail(self, max_side: int) -> np.ndarray:
        """The whole slide resized so its longest side is ``max_side`` (RGB ``uint8``).

        It is read from the finest level no more detailed than needed; a level of more than
        :data:`STRIP_PIXELS` is read and shrunk in horizontal strips, so memory stays bounded.
        A slide whose coarsest level still has more than :data:`THUMBNAIL_MAX_PIXELS` (a
        single-level image claiming 100,000 x 100,000 px) raises :class:`SlideError` instead of
        running out of memory.
        """
        w, h = self.dimensions
        ds = max(w, h) / max_side
        level = self.thumbnail_level(max(ds, 1.0))
        tw, th = max(1, round(w / ds)), max(1, round(h / ds))
        if level.width * level.height <= STRIP_PIXELS:
            img = self._read(level.index, 0, 0, level.width, level.height)
            return np.array(img.resize((tw, th), Image.Resampling.BOX))
        out = Image.new("RGB", (tw, th), (255, 255, 255))
        rows = max(1, STRIP_PIXELS // max(1, level.width) * th // max(1, level.height))
        for r0 in range(0, th, rows):
            r1 = min(th, r0 + rows)
            y0, y1 = round(r0 * level.height / th), round(r1 * level.height / th)
            if y1 <= y0:
                continue
            band = self._read(level.index, 0, int(y0 * level.downsample), level.width, y1 - y0)
            out.paste(band.resize((tw, r1 - r0), Image.Resampling.BOX), (0, r0))
        return np.array(out)

    def thumbnail_level(self, downsample: float) -> Level:
        """The level a thumbnail of ``downsample`` (level-0 px per thumbnail px) is read from:
        :meth:`best_level`, or a coarser one when that has more than
        :data:`THUMBNAIL_MAX_PIXELS`; :class:`SlideError` when every level is that large."""
        level = self.best_level(downsample)
        if level.width * level.height <= THUMBNAIL_MAX_PIXELS:
            return level
        small = [lv for lv in self.levels if lv.width * lv.height <= THUMBNAIL_MAX_PIXELS]
        if not small:
            sizes = ", ".join(f"{lv.width} x {lv.height}" for lv in self.levels)
            raise SlideError(
                self.path,
                f"has no level small enough for a thumbnail (levels: {sizes} px; the limit is "
                f"{THUMBNAIL_MAX_PIXELS:,} px): convert it to a pyramidal TIFF, e.g. "
                "'vips tiffsave in out.tif --tile --pyramid'",
            )
        return max(small, key=lambda lv: lv.width * lv.height)

    def verify(self) -> None:
        """Decode the coarsest level and level 0's last tile row; raises :class:`SlideError`.

        Truncated or corrupt files open fine and fail only when the damaged tiles are read;
        this touches the end of the file cheaply so a cohort build can reject them early.
        """
        last = self.levels[-1]
        self.thumbnail_level(last.downsample)  # SlideError when even the coarsest is too large
        for y in range(0, last.height, max(1, STRIP_PIXELS // max(1, last.width))):
            rows = min(last.height - y, max(1, STRIP_PIXELS // max(1, last.width)))
            self._read(last.index, 0, int(y * last.downsample), last.width, rows)
        w, h = self.dimensions
        step = 256
        for x in range(0, w, step * 8):
            self._read(0, x, max(0, h - step), min(step, w - x), min(step, h))
        self._read(0, max(0, w - step), max(0, h - step), min(step, w), min(step, h))

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> Image.Image:
        try:
            rgba = self._osr.read_region((x, y), level, (w, h))
        except (openslide.OpenSlideError, OSError, ValueError) as e:
            raise SlideError(self.path, f"cannot read level {level} at ({x}, {y}): {e}") from None
        except MemoryError:
            raise SlideError(
                self.path, f"out of memory reading {w} x {h} px of level {level} at ({x}, {y})"
            ) from None
        # OpenSlide returns premultiplied RGBA; fill transparent (unscanned) areas with white.
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba.getchannel("A"))
        return white

    # Lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        self._osr.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        mag = f"{self.objective_power:g}x" if self.objective_power else "unknown magnification"
        sizes = ", ".join(f"{lv.width}x{lv.height}" for lv in self.levels)
        return f"Slide({self.path.name!r}, {self.vendor}, {mag}, levels=[{sizes}])"


def magnification_from_mpp(mpp: float) -> float:
    """The magnification commonly meant by a level-0 pixel size: ``10 / mpp`` (0.25 um/px ->
    40x, 0.5 -> 20x, 1.0 -> 10x), to one decimal."""
    if not mpp > 0:
        raise ValueError(f"mpp must be > 0, got {mpp}")
    return round(10.0 / float(mpp), 1)


def open_slide(
    path: str | Path, objective_power: float | None = None, mpp: float | None = None
) -> Slide:
    """Open ``path`` as a :class:`Slide` (see there)."""
    return Slide(path, objective_power=objective_power, mpp=mpp)


def _float_or_none(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None
