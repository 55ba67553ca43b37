r"""Single-resolution spatial graphs, for the baselines that work on one magnification.

All builders return a ``[2, E]`` long ``edge_index`` of (source, destination) edges without
self loops, sorted by ``(dst, src)`` like :func:`~wsigraph.graphs.pyramid.pyramid_edges`.
They use :class:`scipy.spatial.cKDTree`, not ``torch_cluster``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor
from torch_geometric.data import Data

from wsigraph.graphs.pyramid import EDGE_FIELDS, NODE_FIELDS, SPATIAL, dst_order, grid_edges


def _as_points(pos: np.ndarray | Tensor) -> np.ndarray:
    """Returns ``pos`` as a float64 numpy array ``[N, D]``."""
    if isinstance(pos, Tensor):
        pos = pos.detach().cpu().numpy()
    pos = np.asarray(pos, dtype=np.float64)
    if pos.ndim != 2:
        raise ValueError(f"'pos' must have shape [N, D], got {pos.shape}")
    return pos


def _sorted_edges(src: np.ndarray, dst: np.ndarray, num_nodes: int) -> Tensor:
    edge_index = np.stack([src, dst]).astype(np.int64, copy=False)  # [2, E]
    return torch.from_numpy(edge_index[:, dst_order(edge_index, num_nodes)])


def grid_graph(row: np.ndarray | Tensor, col: np.ndarray | Tensor) -> Tensor:
    r"""Returns the 8-neighbour graph of a sparse grid (see
    :func:`~wsigraph.graphs.pyramid.grid_edges`).

    Args:
        row (np.ndarray): Grid row of each node, ``[N]`` integers.
        col (np.ndarray): Grid column of each node, ``[N]`` integers.

    Returns:
        torch.Tensor: ``edge_index`` ``[2, E]`` long, sorted by ``(dst, src)``.
    """
    return torch.from_numpy(grid_edges(row, col))


def knn_graph(pos: np.ndarray | Tensor, k: int) -> Tensor:
    r"""Returns the k-nearest-neighbour graph: an edge from each of a node's ``k`` nearest
    other nodes (Euclidean) to the node.

    Every node gets ``min(k, N - 1)`` incoming edges, so ``N <= k`` gives the complete graph.
    Ties at equal distance are broken by the k-d tree. The graph is not symmetric in general.

    Args:
        pos (np.ndarray or torch.Tensor): Node positions ``[N, D]``.
        k (int): Number of neighbours, ``>= 1``.

    Returns:
        torch.Tensor: ``edge_index`` ``[2, N * min(k, N - 1)]`` long, sorted by ``(dst, src)``.
    """
    if k < 1:
        raise ValueError(f"'k' must be >= 1, got {k}")
    pos = _as_points(pos)
    num_nodes = len(pos)
    if num_nodes < 2:
        return torch.empty(2, 0, dtype=torch.long)
    _, nbr = cKDTree(pos).query(pos, k=min(k + 1, num_nodes))  # [N, K + 1]
    nbr = nbr.reshape(num_nodes, -1)
    keep = nbr != np.arange(num_nodes)[:, None]  # [N, K + 1], drops the node itself
    # With repeated points the node itself may be crowded out: drop the farthest instead.
    keep[keep.all(axis=1), -1] = False
    dst = np.broadcast_to(np.arange(num_nodes)[:, None], nbr.shape)
    return _sorted_edges(nbr[keep], dst[keep], num_nodes)


def radius_graph(pos: np.ndarray | Tensor, r: float) -> Tensor:
    r"""Returns the radius graph: an edge in both directions between every two nodes at
    Euclidean distance ``<= r``.

    On an integer grid any ``r`` in :math:`[\sqrt{2}, 2)` gives the 8-neighbour graph.

    Args:
        pos (np.ndarray or torch.Tensor): Node positions ``[N, D]``.
        r (float): Radius, ``>= 0``; the boundary is included.

    Returns:
        torch.Tensor: ``edge_index`` ``[2, E]`` long, sorted by ``(dst, src)``.
    """
    if r < 0:
        raise ValueError(f"'r' must be >= 0, got {r}")
    pos = _as_points(pos)
    pairs = cKDTree(pos).query_pairs(r, output_type="ndarray")  # [P, 2], i < j
    src = np.concatenate([pairs[:, 0], pairs[:, 1]])
    dst = np.concatenate([pairs[:, 1], pairs[:, 0]])
    return _sorted_edges(src, dst, len(pos))


def level_subgraph(data: Data, level: int) -> Data:
    r"""Extracts one level of a pyramid graph as a single-resolution graph.

    Keeps the nodes of ``level`` with their spatial edges (reindexed), drops the scaling edges
    and the other levels.

    Args:
        data (torch_geometric.data.Data): A graph from
            :func:`~wsigraph.graphs.pyramid.pyramid_graph`.
        level (int): The level to keep.

    Returns:
        torch_geometric.data.Data: ``x`` ``[n, F]``, ``edge_index`` ``[2, e]`` (sorted by
        ``(dst, src)``), ``grid`` ``[n, 2]``, ``pos`` ``[n, 2]`` if ``data`` has it,
        ``node_index`` ``[n]`` (each node's index in ``data``), and ``data``'s graph-level
        attributes unchanged.

    Raises:
        ValueError: If ``data`` has no node at ``level``.
    """
    mask = data.level == level  # [N]
    if not bool(mask.any()):
        levels = torch.unique(data.level).tolist()
        raise ValueError(f"level {level} has no nodes (levels present: {levels})")
    node_index = mask.nonzero().view(-1)  # [n]
    new_id = torch.full_like(data.level, -1)  # [N]
    new_id[node_index] = torch.arange(node_index.numel())

    src, dst = data.edge_index  # [E]
    edge_mask = (data.edge_type == SPATIAL) & mask[dst]  # spatial edges never leave a level
    # Filtering keeps the (dst, src) order: both are renumbered monotonically.
    edge_index = new_id[torch.stack([src[edge_mask], dst[edge_mask]])]  # [2, e]

    sub = Data(x=data.x[node_index], edge_index=edge_index, grid=data.grid[node_index])
    if data.get("pos") is not None:
        sub.pos = data.pos[node_index]
    sub.node_index = node_index
    for name, value in data:
        if name not in NODE_FIELDS + EDGE_FIELDS:
            sub[name] = value
    return sub
