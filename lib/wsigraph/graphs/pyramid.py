r"""The H2-MIL heterogeneous pyramid graph of a whole-slide image.

H2-MIL (Hou et al., AAAI 2022), "Heterogeneous Graph Construction": a slide becomes one graph
whose nodes are patches at several magnifications and whose edges are of two kinds.

Nodes and levels
    * level ``0``: the thumbnail, the whole slide seen as one patch. Exactly one node, by
      convention node ``0``; its parent is ``-1``.
    * level ``1``: the 5x patches, level ``2``: the 10x patches, and so on (any number of levels).
      Each patch has a grid position ``(row, col)`` within its level and a ``parent``: the index
      of the patch one level coarser that contains it (every level-1 patch has the thumbnail as
      parent). Background patches are removed beforehand, so each level is a sparse subset of
      its grid.

Edge types
    * :data:`SPATIAL` (``0``): between two patches of the same level whose cells are
      8-adjacent (:math:`|\Delta r| \le 1`, :math:`|\Delta c| \le 1`, not the same cell).
    * :data:`SCALING` (``1``): between a patch and its parent, in both directions.

    Every edge is stored in both directions and there are no self loops, so ``edge_index`` is
    symmetric.

Edge order
    ``edge_index[0]`` is the source and ``edge_index[1]`` the destination (PyG's
    ``source_to_target`` flow). Edges are sorted by ``(dst, src)``: the edges entering a node are
    contiguous, which is the CSR layout by destination that the attention kernels rely on
    (``ptr = cumsum(bincount(dst))``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from wsigraph.io import check_digest, content_digest, save_torch

SPATIAL, SCALING = 0, 1

# The 8 neighbour offsets (drow, dcol) of a grid cell.
_OFFSETS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]

# Node-level fields written by `pyramid_graph`; everything else is a graph-level attribute.
NODE_FIELDS = ("x", "level", "grid", "parent", "pos")
EDGE_FIELDS = ("edge_index", "edge_type")

_FILE_FORMAT = "wsigraph.graph/1"

ArrayLike = np.ndarray | Tensor | Sequence[int]


def _as_index(a: ArrayLike, name: str) -> np.ndarray:
    """Returns ``a`` as a 1-D int64 numpy array, raising ``ValueError`` otherwise."""
    if isinstance(a, Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.size == 0:
        a = a.astype(np.int64)
    if a.ndim != 1:
        raise ValueError(f"'{name}' must be 1-D, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"'{name}' must hold integers, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def _check_lengths(**arrays: np.ndarray) -> int:
    """Returns the common length of ``arrays``, raising ``ValueError`` if they differ."""
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs must have the same length, got {lengths}")
    return next(iter(lengths.values()))


def dst_order(edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
    """Returns the permutation that sorts the edges by ``(dst, src)``.

    Args:
        edge_index (np.ndarray): Edges ``[2, E]`` as (source, destination) rows.
        num_nodes (int): Number of nodes (all indices are below it).
    """
    return np.argsort(edge_index[1] * num_nodes + edge_index[0])


def _cell_keys(row: np.ndarray, col: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, int]:
    """Encodes ``(group, row, col)`` into one int64 key per node; also returns the row stride.

    Rows and columns are shifted to start at 1 and the grid is padded by one cell on every
    side, so that ``key + drow * width + dcol`` is the key of the neighbour cell and never
    wraps into another row or group.
    """
    _, g = np.unique(group, return_inverse=True)  # [N], 0 .. G-1
    r = row - row.min() + 1
    c = col - col.min() + 1
    height, width = int(r.max()) + 2, int(c.max()) + 2
    if (int(g.max()) + 1) * height * width >= 2**62:
        raise ValueError(f"grid too large to encode: {height} x {width} cells per group")
    return (g.astype(np.int64) * height + r) * width + c, width


def _raise_duplicate(
    sorted_key: np.ndarray, order: np.ndarray, row: np.ndarray, col: np.ndarray, group: np.ndarray
) -> None:
    """Raises ``ValueError`` naming the first repeated ``(group, row, col)`` cell, if any."""
    dup = np.flatnonzero(sorted_key[1:] == sorted_key[:-1])
    if dup.size == 0:
        return
    i, j = sorted(order[dup[0] : dup[0] + 2].tolist())
    raise ValueError(
        f"duplicate grid cell (group={group[i]}, row={row[i]}, col={col[i]}) "
        f"at nodes {i} and {j} ({dup.size} duplicate(s) in all)"
    )


def _grid_edges_unsorted(row: np.ndarray, col: np.ndarray, group: np.ndarray) -> np.ndarray:
    """:func:`grid_edges` on validated int64 arrays, in no particular edge order."""
    if row.size == 0:
        return np.empty((2, 0), dtype=np.int64)
    key, width = _cell_keys(row, col, group)  # [N]
    order = np.argsort(key)  # [N]
    sorted_key = key[order]  # [N]
    _raise_duplicate(sorted_key, order, row, col, group)

    src, dst = [], []
    for dr, dc in _OFFSETS:
        # Queries are `sorted_key + const`, hence sorted too: searchsorted stays cache-friendly.
        query = sorted_key + (dr * width + dc)  # [N]
        pos = np.searchsorted(sorted_key, query)  # [N]
        pos[pos == len(sorted_key)] = 0
        hit = sorted_key[pos] == query  # [N]
        src.append(order[pos[hit]])
        dst.append(order[hit])
    return np.stack([np.concatenate(src), np.concatenate(dst)])  # [2, E]


def grid_edges(
    row: ArrayLike,
    col: ArrayLike,
    group: ArrayLike | None = None,
) -> np.ndarray:
    r"""Returns the 8-neighbour edges between cells of a sparse grid.

    Two nodes are joined when they share a ``group`` (e.g. a pyramid level) and their cells
    touch by a side or a corner: :math:`|\Delta r| \le 1`, :math:`|\Delta c| \le 1`, not the
    same cell. The search is vectorised: ``(group, row, col)`` is encoded into one int64 key,
    the keys are sorted once, and each of the 8 offsets is one :func:`numpy.searchsorted`.

    Args:
        row (np.ndarray): Grid row of each node, ``[N]`` integers.
        col (np.ndarray): Grid column of each node, ``[N]`` integers.
        group (np.ndarray, optional): Group of each node, ``[N]`` integers; nodes of different
            groups are never joined. (default: :obj:`None`, one group)

    Returns:
        np.ndarray: ``[2, E]`` int64 (source, destination) edges, both directions of every
        pair, sorted by ``(dst, src)``.

    Raises:
        ValueError: If the inputs are not 1-D integer arrays of one length, or if two nodes
            share the same ``(group, row, col)`` cell.
    """
    row, col = _as_index(row, "row"), _as_index(col, "col")
    group = np.zeros_like(row) if group is None else _as_index(group, "group")
    num_nodes = _check_lengths(row=row, col=col, group=group)
    edge_index = _grid_edges_unsorted(row, col, group)
    return edge_index[:, dst_order(edge_index, num_nodes)]


def _check_pyramid(level: np.ndarray, parent: np.ndarray) -> None:
    """Raises ``ValueError`` unless ``level`` and ``parent`` describe a valid pyramid."""
    num_nodes = len(level)
    if num_nodes == 0:
        raise ValueError("a pyramid graph needs at least the thumbnail node, got 0 nodes")
    if level.min() < 0:
        raise ValueError(f"levels must be >= 0, got {level.min()}")
    thumbs = np.flatnonzero(level == 0)
    if thumbs.size != 1:
        raise ValueError(f"level 0 must hold exactly one (thumbnail) node, got {thumbs.size}")
    if parent[thumbs[0]] != -1:
        raise ValueError(f"the thumbnail (node {thumbs[0]}) must have parent -1")
    child = np.flatnonzero(level > 0)
    bad = child[(parent[child] < 0) | (parent[child] >= num_nodes)]
    if bad.size:
        raise ValueError(
            f"parent index out of range [0, {num_nodes}): node {bad[0]} has parent "
            f"{parent[bad[0]]} ({bad.size} such node(s))"
        )
    bad = child[level[parent[child]] != level[child] - 1]
    if bad.size:
        i = bad[0]
        raise ValueError(
            f"a parent's level must be its child's level - 1: node {i} (level {level[i]}) has "
            f"parent {parent[i]} (level {level[parent[i]]}) ({bad.size} such node(s))"
        )


def pyramid_edges(
    level: ArrayLike,
    row: ArrayLike,
    col: ArrayLike,
    parent: ArrayLike,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Returns the edges of the H2-MIL pyramid graph (see the module docstring).

    Args:
        level (np.ndarray): Pyramid level of each node, ``[N]``; ``0`` is the thumbnail.
        row (np.ndarray): Grid row of each node within its level, ``[N]``.
        col (np.ndarray): Grid column of each node within its level, ``[N]``.
        parent (np.ndarray): Index of each node's parent, ``[N]``; ``-1`` for the thumbnail.

    Returns:
        (np.ndarray, np.ndarray): ``edge_index`` ``[2, E]`` int64 (source, destination) and
        ``edge_type`` ``[E]`` int8 (:data:`SPATIAL` or :data:`SCALING`), sorted by
        ``(dst, src)`` so that the edges entering each node are contiguous (CSR by
        destination).

    Raises:
        ValueError: If the inputs differ in length, there is not exactly one level-0 node
            (with parent ``-1``), a parent index is out of range, a parent's level is not its
            child's level minus one, or two nodes share a ``(level, row, col)`` cell.
    """
    level, row = _as_index(level, "level"), _as_index(row, "row")
    col, parent = _as_index(col, "col"), _as_index(parent, "parent")
    num_nodes = _check_lengths(level=level, row=row, col=col, parent=parent)
    _check_pyramid(level, parent)

    spatial = _grid_edges_unsorted(row, col, level)  # [2, E_s]
    child = np.flatnonzero(parent >= 0)  # [N - 1]
    up = np.stack([child, parent[child]])  # [2, N - 1], child -> parent
    edge_index = np.concatenate([spatial, up, up[::-1]], axis=1)  # [2, E]
    edge_type = np.full(edge_index.shape[1], SCALING, dtype=np.int8)  # [E]
    edge_type[: spatial.shape[1]] = SPATIAL

    perm = dst_order(edge_index, num_nodes)
    return edge_index[:, perm], edge_type[perm]


def _to_long(a: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).long()


def pyramid_graph(
    x: Tensor,
    level: ArrayLike,
    row: ArrayLike,
    col: ArrayLike,
    parent: ArrayLike,
    pos: np.ndarray | Tensor | None = None,
    **extra: Any,
) -> Data:
    r"""Builds the H2-MIL pyramid graph of one slide as a :class:`~torch_geometric.data.Data`.

    Args:
        x (torch.Tensor): Node features ``[N, F]``.
        level (np.ndarray): Pyramid level of each node, ``[N]``; ``0`` is the thumbnail.
        row (np.ndarray): Grid row of each node within its level, ``[N]``.
        col (np.ndarray): Grid column of each node within its level, ``[N]``.
        parent (np.ndarray): Index of each node's parent, ``[N]``; ``-1`` for the thumbnail.
        pos (np.ndarray or torch.Tensor, optional): Centre of each patch in level-0 (full
            resolution) pixels, ``[N, 2]``. (default: :obj:`None`)
        **extra: Graph-level attributes stored as they are, e.g. ``slide_id="TCGA-..."`` or
            ``y_typing=torch.tensor([1])``. Use tensors, strings or numbers so that
            :func:`save_graph` can write them.

    Returns:
        torch_geometric.data.Data: with ``x`` ``[N, F]``, ``edge_index`` ``[2, E]`` (sorted by
        ``(dst, src)``), ``edge_type`` ``[E]``, ``level`` ``[N]``, ``grid`` ``[N, 2]``
        (row, col), ``parent`` ``[N]`` (all long), ``pos`` ``[N, 2]`` float if given, and
        the ``extra`` attributes.

    Raises:
        ValueError: On 0 nodes, on mismatched sizes, on an invalid pyramid (see
            :func:`pyramid_edges`), or if an ``extra`` name clashes with a built-in field.
    """
    level, row = _as_index(level, "level"), _as_index(row, "row")
    col, parent = _as_index(col, "col"), _as_index(parent, "parent")
    if x.dim() != 2 or x.size(0) != len(level):
        raise ValueError(f"'x' must have shape [N, F] with N = {len(level)}, got {tuple(x.shape)}")
    clash = sorted(set(extra) & set(NODE_FIELDS + EDGE_FIELDS))
    if clash:
        raise ValueError(f"extra attributes clash with built-in fields: {clash}")
    edge_index, edge_type = pyramid_edges(level, row, col, parent)

    data = Data(
        x=x,
        edge_index=_to_long(edge_index),
        edge_type=_to_long(edge_type),
        level=_to_long(level),
        grid=_to_long(np.stack([row, col], axis=1)),
        parent=_to_long(parent),
    )
    if pos is not None:
        pos = torch.as_tensor(pos, dtype=torch.float)
        if pos.shape != (len(level), 2):
            raise ValueError(f"'pos' must have shape [{len(level)}, 2], got {tuple(pos.shape)}")
        data.pos = pos
    for name, value in extra.items():
        data[name] = value
    return data


def _compact(t: Tensor) -> Tensor:
    """Returns ``t`` on the CPU, copied if it is a view into a larger storage.

    ``torch.save`` writes a tensor's whole storage, so a slice would otherwise drag its
    parent tensor into the file.
    """
    t = t.detach().cpu()
    if t.untyped_storage().nbytes() != t.numel() * t.element_size():
        t = t.clone()
    return t


def save_graph(data: Data, path: str | os.PathLike) -> None:
    r"""Writes ``data`` to ``path`` as a plain dictionary, atomically.

    The file is a :func:`torch.save` of ``{"format": ..., "fields": {name: value}}`` with only
    tensors, strings and numbers, so :func:`load_graph` can read it with
    ``weights_only=True``. It is first written to a temporary file in the same folder and
    then moved over ``path`` with :func:`os.replace`, so an interrupted run never leaves a
    half-written graph behind.

    Args:
        data (torch_geometric.data.Data): The graph.
        path (str or os.PathLike): Destination file (its folder must exist).

    Raises:
        TypeError: If an attribute is not a tensor, string, bool, int or float.
    """
    fields = {}
    for name, value in data:
        if isinstance(value, Tensor):
            value = _compact(value)
        elif not isinstance(value, str | bool | int | float):
            raise TypeError(f"cannot save attribute '{name}' of type {type(value).__name__}")
        fields[name] = value

    payload = {"format": _FILE_FORMAT, "fields": fields}
    payload["digest"] = content_digest(payload)
    save_torch(payload, path)


def load_graph(path: str | os.PathLike, require_digest: bool = False) -> Data:
    r"""Reads a graph written by :func:`save_graph` (with ``weights_only=True``) and checks its
    content digest (:func:`wsigraph.io.content_digest`), so bytes flipped on disk are caught.

    Args:
        path (str or os.PathLike): The file.
        require_digest (bool): Refuse a file without a digest (written before digests were
            stored) instead of loading it unverified.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is corrupt, truncated or not a wsigraph graph file;
            :class:`wsigraph.io.DigestMismatchError` (a ``ValueError``) if its content differs
            from its stored digest.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no graph file at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load fails in many ways on damaged bytes (struct.error...)
        reason = (str(err).strip().splitlines() or ["empty or truncated"])[0]
        raise ValueError(f"corrupt graph file {path} ({type(err).__name__}: {reason})") from err
    if not (
        isinstance(payload, dict)
        and payload.get("format") == _FILE_FORMAT
        and isinstance(payload.get("fields"), dict)
    ):
        raise ValueError(f"{path} is not a wsigraph graph file ({_FILE_FORMAT})")
    check_digest(payload, path, required=require_digest)
    return Data(**payload["fields"])
