"""CLAM interop: features people already have, as wsigraph graphs; ours, as CLAM files.

CLAM (Lu et al., Nat. Biomed. Eng. 2021; ``mahmoodlab/CLAM``) writes, per slide:

* ``patches/<slide>.h5``: dataset ``coords`` ``[N, 2]`` (level-0 x, y of each patch's top-left
  corner) with attributes ``patch_level`` and ``patch_size`` (the side, in pixels of that
  pyramid level) and, from ``create_patches_fp.py``, ``downsample`` (that level's downsample);
* ``h5_files/<slide>.h5``: datasets ``features`` ``[N, D]`` and ``coords`` (the same attributes);
* ``pt_files/<slide>.pt``: the same ``features`` as one tensor ``[N, D]``, without coordinates
  (rows in the order of the h5 file's ``coords``).

:func:`read_clam` reads either (a ``.pt`` bag with the ``coords`` of its h5 file) into a
:class:`ClamBag`; :func:`clam_graph` turns one bag into a spatial graph (the thumbnail node and
one level of patches joined to their 8 grid neighbours) or two bags of one slide at two
magnifications into the H2-MIL pyramid (thumbnail, coarse, fine; each fine patch the child of
the coarse patch that holds its centre). CLAM has no thumbnail feature: the thumbnail node holds
the mean of the coarsest level's features (our choice, written down here). The graphs are the
same :func:`wsigraph.graphs.pyramid.pyramid_graph` the slide pipeline builds, so every model
reads them.

:func:`write_clam` writes one level of our feature files as a CLAM ``h5_files`` file
(``patch_level`` 0, ``patch_size`` the patch side in level-0 pixels, ``downsample`` 1), plus
``magnification`` and ``encoder`` attributes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wsigraph.io import atomic_path


@dataclass
class ClamBag:
    """One CLAM feature bag: ``features [N, D]``, ``coords [N, 2]`` (level-0 top-left x, y),
    ``size0`` (patch side in level-0 pixels), the slide id and, where known, the
    magnification."""

    features: torch.Tensor
    coords: np.ndarray
    size0: float
    slide_id: str
    magnification: float | None = None

    @property
    def centres(self) -> np.ndarray:
        return self.coords + self.size0 / 2


def read_clam(
    path: str | os.PathLike,
    coords_h5: str | os.PathLike | None = None,
    slide_id: str | None = None,
    patch_size0: float | None = None,
) -> ClamBag:
    """Read a CLAM ``h5_files/<slide>.h5`` (features and coords) or a ``pt_files/<slide>.pt``
    (features; coords from ``coords_h5``, its ``h5_files`` or ``patches`` file).

    Args:
        path: the ``.h5`` or ``.pt`` file.
        coords_h5: for a ``.pt`` bag, the h5 file holding its ``coords`` (required).
        slide_id: default: the file's stem.
        patch_size0: the patch side in level-0 pixels, when the file's attributes cannot give it
            (no ``patch_size``).

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: what is wrong with the file (missing dataset or attribute, row counts that
            differ), naming it.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such CLAM file")
    slide_id = slide_id or path.stem
    if path.suffix == ".pt":
        if coords_h5 is None:
            raise ValueError(
                f"{path}: a CLAM .pt bag holds no coordinates; pass coords_h5= (its h5_files or "
                "patches/<slide>.h5)"
            )
        feats = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(feats, torch.Tensor) or feats.dim() != 2:
            raise ValueError(f"{path}: expected one [N, D] feature tensor")
        coords_path = Path(coords_h5)
        if not coords_path.is_file():
            raise FileNotFoundError(f"{coords_path}: no such CLAM h5 file")
    else:
        feats, coords_path = None, path
    with h5py.File(coords_path, "r") as f:
        if "coords" not in f:
            raise ValueError(f"{coords_path}: no 'coords' dataset (not a CLAM h5 file?)")
        coords = np.asarray(f["coords"][:], dtype=np.float64)
        attrs = dict(f["coords"].attrs)
        if feats is None:
            if "features" not in f:
                raise ValueError(f"{path}: no 'features' dataset (a patches/ file? use h5_files/)")
            feats = torch.from_numpy(np.asarray(f["features"][:], dtype=np.float32))
        magnification = attrs.get("magnification")
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"{coords_path}: 'coords' must be [N, 2], got {coords.shape}")
    if len(coords) != len(feats):
        raise ValueError(f"{path}: {len(feats)} feature rows but {len(coords)} coords")
    if len(coords) == 0:
        raise ValueError(f"{path}: an empty bag (no patches)")
    size0 = patch_size0 or _size0(attrs, coords_path)
    return ClamBag(
        feats.float(), coords, float(size0), slide_id,
        None if magnification is None else float(magnification),
    )  # fmt: skip


def _size0(attrs: dict, path: Path) -> float:
    """Level-0 patch side from CLAM's ``patch_size`` (at ``patch_level``) and ``downsample``."""
    if "patch_size" not in attrs:
        raise ValueError(f"{path}: 'coords' has no 'patch_size' attribute; pass patch_size0=")
    size = float(np.asarray(attrs["patch_size"]).reshape(-1)[0])
    level = int(np.asarray(attrs.get("patch_level", 0)).reshape(-1)[0])
    down = np.asarray(attrs.get("downsample", 1.0), dtype=np.float64).reshape(-1)
    if level != 0 and "downsample" not in attrs:
        raise ValueError(
            f"{path}: patches were read at level {level} but 'coords' has no 'downsample' "
            "attribute; pass patch_size0= (the patch side in level-0 pixels)"
        )
    return size * float(down[0])


def _grid(bag: ClamBag) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each patch on its level's grid (from the top-left corners)."""
    origin = bag.coords.min(axis=0)
    cells = np.rint((bag.coords - origin) / bag.size0).astype(np.int64)
    key = cells[:, 1] * (cells[:, 0].max() + 1) + cells[:, 0]
    if len(np.unique(key)) != len(key):
        raise ValueError(
            f"{bag.slide_id}: two patches fall on one grid cell of side {bag.size0:g} px "
            "(overlapping patches, or a wrong patch size)"
        )
    return cells[:, 1], cells[:, 0]


def clam_graph(bags: list[ClamBag], slide_id: str | None = None, **extra):
    """The graph of one slide from one CLAM bag (spatial) or two (coarse first: the pyramid).

    Fine patches whose centre lies in no coarse patch are left out (their count is stored as
    ``dropped_patches``). Returns a :func:`~wsigraph.graphs.pyramid.pyramid_graph` ``Data``.
    """
    from scipy.spatial import cKDTree

    from wsigraph.graphs.pyramid import pyramid_graph

    if len(bags) not in (1, 2):
        raise ValueError(
            f"clam_graph takes one bag (spatial graph) or two (pyramid), got {len(bags)}"
        )
    dims = {b.features.shape[1] for b in bags}
    if len(dims) != 1:
        raise ValueError(
            f"the bags have different feature sizes {sorted(dims)}: one encoder, please"
        )
    slide_id = slide_id or bags[0].slide_id
    coarse = bags[0]
    if len(bags) == 2 and bags[1].size0 >= coarse.size0:
        raise ValueError(
            f"{slide_id}: the second bag's patches ({bags[1].size0:g} px at level 0) must be "
            f"smaller than the first's ({coarse.size0:g} px): pass the coarse bag first"
        )
    xs = [coarse.features.mean(0, keepdim=True), coarse.features]
    level = [np.zeros(1, np.int64), np.ones(len(coarse.coords), np.int64)]
    r, c = _grid(coarse)
    row, col = [np.zeros(1, np.int64), r], [np.zeros(1, np.int64), c]
    parent = [np.array([-1]), np.zeros(len(coarse.coords), np.int64)]
    pos = [coarse.centres.mean(0, keepdims=True), coarse.centres]
    dropped = 0
    if len(bags) == 2:
        fine = bags[1]
        # the coarse patch holding each fine centre: Chebyshev distance to its centre <= half a side
        dist, idx = cKDTree(coarse.centres).query(fine.centres, p=np.inf)
        inside = dist <= coarse.size0 / 2 + 1e-6
        dropped = int((~inside).sum())
        kept = ClamBag(fine.features[torch.from_numpy(inside)], fine.coords[inside], fine.size0,
                       fine.slide_id)  # fmt: skip
        if len(kept.coords) == 0:
            raise ValueError(f"{slide_id}: no fine patch lies inside a coarse patch")
        r, c = _grid(kept)
        xs.append(kept.features)
        level.append(np.full(len(kept.coords), 2, np.int64))
        row.append(r), col.append(c)
        parent.append(1 + idx[inside])
        pos.append(kept.centres)
    return pyramid_graph(
        torch.cat(xs).float(), np.concatenate(level), np.concatenate(row), np.concatenate(col),
        np.concatenate(parent), pos=np.concatenate(pos), slide_id=slide_id,
        dropped_patches=dropped, **extra,
    )  # fmt: skip


def write_clam(record: dict, path: str | os.PathLike, level: int | None = None) -> Path:
    """Write one level of our feature record (:func:`wsigraph.data.features.load_features`;
    default: the finest) as a CLAM ``h5_files`` file, atomically."""
    import h5py

    tiles = record["tiles"]
    level = int(tiles.level.max()) if level is None else int(level)
    sel = np.flatnonzero(tiles.level == level)
    if len(sel) == 0 or level == 0:
        raise ValueError(f"no patches at level {level} (levels 1..{int(tiles.level.max())})")
    size0 = float(np.asarray(tiles.size0)[sel][0])
    coords = np.stack([np.asarray(tiles.x)[sel], np.asarray(tiles.y)[sel]], axis=1).astype(np.int64)
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("features", data=record["features"][sel].float().numpy())
            d = f.create_dataset("coords", data=coords)
            d.attrs["patch_level"] = 0
            d.attrs["patch_size"] = int(round(size0))
            d.attrs["downsample"] = np.array([1.0, 1.0])
            d.attrs["magnification"] = float(tiles.magnifications[level - 1])
            d.attrs["encoder"] = str(record.get("encoder", ""))
            d.attrs["name"] = str(record.get("slide_id", path.stem))
    return path
