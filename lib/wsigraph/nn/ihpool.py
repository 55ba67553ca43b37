r"""IHPool: the iterative hierarchical pooling of H2-MIL (Algorithm 1), and the pyramid it pools.

A :class:`Pyramid` is the model-side view of a batch of pyramid graphs: node features, edges,
node levels (0 = thumbnail, 1, 2, ... coarse to fine), grid positions in units of each level's
patches, and *global* parent indices (``-1`` for each graph's thumbnail). :func:`from_batch`
builds it from a PyG ``Batch`` of :func:`~wsigraph.graphs.pyramid.pyramid_graph` graphs (PyG
does not offset ``parent`` when batching; this does). :func:`keep_levels` drops whole levels
(H2-MIL Table 3's schemes), re-attaching each kept patch to its nearest kept ancestor.

IHPool (Algorithm 1), for each graph and each resolution from coarse to fine:

1. the thumbnail node is its own cluster;
2. the nodes of resolution :math:`r` are grouped by the cluster their parent fell into at
   resolution :math:`r-1` ("the nodes to be pooled depend on the pooling results of the
   corresponding low-resolution nodes"), so clusters never cross a coarser cluster;
3. fitness :math:`\phi = \tanh(V P_r / \|P_r\|)` with one projection :math:`P_r` per resolution;
4. in a group of :math:`n` nodes, :math:`m = \lceil k n \rceil` cluster centres are taken at evenly
   spaced ranks of the sorted fitness (the official code's interval sampling, which covers the
   whole fitness range rather than only its top). The official code also accepts an integer
   ``ratio`` as a *count* (its ``main.py`` pools the second block to 4 regions): then the
   coarsest pooled level keeps :math:`m = \min(k, n)` centres per group at evenly spaced ranks,
   and each finer group keeps :math:`\min(2, n)`, its lowest- and highest-fitness nodes (what
   the official ``range(0, n, n - 1)`` selects). ``fine_count=c`` makes every finer group keep
   :math:`\min(c, n)` centres spread over the fitness ranks from lowest to highest, the
   deterministic stand-in for HIGT's official IHPool, which samples 4 random 10x centres per
   region in every pool;
5. every node joins the centre minimising spatial distance plus fitness difference,
   :math:`\|g_u - g_c\|_2 + |\phi_u - \phi_c|` (ties: the lower-ranked centre);
6. :math:`X' = S^\top X` and :math:`A' = S^\top A S`.

The spatial term is measured in whatever units ``Pyramid.grid`` holds. The models first map the
grid positions per slide and level to :math:`[-1, 1]` with :func:`normalise_grid`, as the
official code does (H2-MIL graph notebook cell 24 and ``main.py``; HIGT ``modules/GCN.py``): in
raw patch units the distance term would outweigh the fitness term (which lies in
:math:`[0, 2]`) 10-40x on TCGA-size grids, and fitness would hardly matter. The pooled grid is
the mean position of each cluster's members, in the same units, so later blocks do not rescale.

Choices the paper leaves open, made here:

* ``S`` holds, for each node, a softmax of fitness within its cluster (a fitness-weighted
  mean). With a hard assignment alone the projections would get no gradient (in the official
  code :math:`P` never trains); ``official_compat=True`` uses the plain mean instead.
* :math:`A'` is binary and has no self loops; edges between clusters of one level are spatial,
  between levels scaling. Cluster positions are the mean grid position of their members.
* Everything is deterministic (stable sorts, no sampling), in training and in evaluation alike,
  and works for any graph with at least its thumbnail node (the official code fails on small
  graphs and samples at random in evaluation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from wsigraph.graphs.pyramid import SCALING, SPATIAL


@dataclass
class Pyramid:
    """A batch of pyramid graphs as the models see it (all tensors on one device)."""

    x: Tensor  # [N, F]
    edge_index: Tensor  # [2, E], no self loops, both directions
    edge_type: Tensor  # [E], SPATIAL or SCALING
    level: Tensor  # [N], 0 = thumbnail, consecutive levels
    grid: Tensor  # [N, 2] float, position in patches of the node's level
    parent: Tensor  # [N], global index of the parent, -1 for thumbnails
    batch: Tensor  # [N], graph of each node
    num_graphs: int

    @property
    def num_nodes(self) -> int:
        return self.x.size(0)

    def replace(self, **kw) -> Pyramid:
        return Pyramid(**(self.__dict__ | kw))


def from_batch(data) -> Pyramid:
    """The :class:`Pyramid` of a PyG ``Batch`` (or a single ``Data``) of pyramid graphs."""
    batch = getattr(data, "batch", None)
    if batch is None:
        batch = torch.zeros(data.num_nodes, dtype=torch.long, device=data.x.device)
        ptr = torch.tensor([0, data.num_nodes], device=data.x.device)
    else:
        ptr = data.ptr
    parent = torch.where(data.parent >= 0, data.parent + ptr[batch], -1)
    return Pyramid(
        x=data.x,
        edge_index=data.edge_index,
        edge_type=data.edge_type,
        level=data.level,
        grid=data.grid.float(),
        parent=parent,
        batch=batch,
        num_graphs=int(getattr(data, "num_graphs", 1)),
    )


def keep_levels(p: Pyramid, levels: tuple[int, ...]) -> Pyramid:
    """Keep only the nodes of ``levels`` (which must include 0, the thumbnail).

    Kept nodes are re-attached to their nearest kept ancestor, levels are renumbered
    consecutively, spatial edges among kept nodes stay and scaling edges are rebuilt from the
    new parents (e.g. for thumbnail + 10x, every 10x patch hangs under the thumbnail).
    """
    levels = tuple(sorted(set(levels)))
    if 0 not in levels:
        raise ValueError(f"levels must include 0 (the thumbnail node), got {levels}")
    top = int(p.level.max()) + 1 if p.num_nodes else 1
    lut = torch.full((max(top, max(levels) + 1),), -1, dtype=torch.long, device=p.x.device)
    lut[list(levels)] = torch.arange(len(levels), device=p.x.device)
    keep = lut[p.level] >= 0
    parent = p.parent.clone()
    for _ in range(top):  # climb until the parent is kept (at most one step per level)
        climb = (parent >= 0) & ~keep[parent.clamp(min=0)]
        if not climb.any():
            break
        parent[climb] = p.parent[parent[climb]]
    new_id = torch.cumsum(keep, 0) - 1
    src, dst = p.edge_index
    spatial = (p.edge_type == SPATIAL) & keep[src] & keep[dst]
    child = torch.nonzero(keep & (parent >= 0)).view(-1)
    up = torch.stack([new_id[child], new_id[parent[child]]])
    edge_index = torch.cat([new_id[p.edge_index[:, spatial]], up, up.flip(0)], dim=1)
    edge_type = torch.cat(
        [
            p.edge_type.new_full((int(spatial.sum()),), SPATIAL),
            p.edge_type.new_full((2 * child.numel(),), SCALING),
        ]
    )
    return Pyramid(
        x=p.x[keep],
        edge_index=edge_index,
        edge_type=edge_type,
        level=lut[p.level[keep]],
        grid=p.grid[keep],
        parent=torch.where(parent[keep] >= 0, new_id[parent[keep].clamp(min=0)], -1),
        batch=p.batch[keep],
        num_graphs=p.num_graphs,
    )


GRID_SCALES = ("normalised", "patches")


def normalise_grid(p: Pyramid) -> Pyramid:
    """``p`` with each grid axis divided by its maximum over the nodes of the same slide and
    level, then mapped to ``2 u - 1``: the official code's scaling to :math:`[-1, 1]` (it divides
    by the maximum, not the range). An axis whose maximum is 0 (a single row or column) maps
    to ``-1``."""
    if p.num_nodes == 0:
        return p
    key = p.batch * (int(p.level.max()) + 1) + p.level  # [N] one group per (slide, level)
    n_keys = p.num_graphs * (int(p.level.max()) + 1)
    peak = torch.zeros(n_keys, 2, dtype=p.grid.dtype, device=p.grid.device).scatter_reduce(
        0, key.unsqueeze(-1).expand(-1, 2), p.grid, "amax", include_self=False
    )[key]  # [N, 2]
    unit = torch.where(peak > 0, p.grid / peak.clamp(min=1e-12), torch.zeros_like(p.grid))
    return p.replace(grid=2 * unit - 1)


def scale_grid(p: Pyramid, scale: str) -> Pyramid:
    """``normalise_grid(p)`` for ``scale="normalised"``, ``p`` itself for ``"patches"``."""
    if scale not in GRID_SCALES:
        raise ValueError(f"unknown grid scale {scale!r}; allowed: {', '.join(GRID_SCALES)}")
    return normalise_grid(p) if scale == "normalised" else p


def pool_count(ratio: float | int) -> int | None:
    """``None`` for a pooling ratio in (0, 1] (a float), the count for an integer ``>= 1``;
    anything else raises a ``ValueError`` naming the allowed values."""
    if isinstance(ratio, bool) or not isinstance(ratio, int | float):
        raise ValueError(f"pooling ratio must be a float in (0, 1] or an int count, got {ratio!r}")
    if isinstance(ratio, int):
        if ratio < 1:
            raise ValueError(f"a pooling count must be an int >= 1, got {ratio}")
        return ratio
    if not 0.0 < ratio <= 1.0:
        raise ValueError(
            f"pooling ratio must lie in (0, 1], or be an int count of clusters such as 4, "
            f"got {ratio}"
        )
    return None


def block_ratios(ratio) -> float | int | tuple:
    """A model's per-block pooling setting, checked: one ratio or count for every block, or a
    non-empty list / tuple of them for blocks 1, 2, ... (returned as a tuple)."""
    ratios = tuple(ratio) if isinstance(ratio, list | tuple) else (ratio,)
    if not ratios:
        raise ValueError("ratio must be a number or a non-empty tuple of them")
    for r in ratios:
        pool_count(r)  # a ValueError naming the allowed values
    return ratios if isinstance(ratio, list | tuple) else ratio


def block_ratio(ratio: float | int | tuple, i: int) -> float | int:
    """The pooling ratio (float) or count (int) of block ``i`` (from 0); the last repeats."""
    return ratio[min(i, len(ratio) - 1)] if isinstance(ratio, tuple) else ratio


@dataclass
class PoolInfo:
    """What one IHPool layer did, for interpretation (H2-MIL Fig. 3)."""

    assignment: Tensor  # [N_in] cluster (node of the pooled pyramid) of each input node
    fitness: Tensor  # [N_in] fitness of each input node (0 for thumbnails)
    centre: Tensor  # [N_out] input index of each cluster's centre


class IHPool(nn.Module):
    r"""Iterative hierarchical pooling of H2-MIL (Algorithm 1); see the module docstring.

    Args:
        in_channels (int): Size of each node feature.
        ratio (float or int): Pooling ratio :math:`k` in (0, 1] (a float): a group of :math:`n`
            nodes keeps :math:`\lceil k n \rceil` clusters; or a count of clusters (an int
            :math:`\ge 1`), as the official code's second pool (module docstring). A count larger
            than a group keeps the whole group. (default: ``0.2``)
        fine_count (int, optional): Centres per group at the levels below the coarsest pooled
            one, spread from the lowest to the highest fitness; ``None`` follows ``ratio``
            (a count keeps 2 there). (default: ``None``)
        num_levels (int): Number of pyramid levels (one projection each). (default: ``3``)
        official_compat (bool): Plain mean in :math:`S` (no fitness weighting). (default: ``False``)

    Shapes:
        - **input:** a :class:`Pyramid` with :math:`N` nodes
        - **output:** a :class:`Pyramid` with :math:`N' \le N` nodes, and :class:`PoolInfo`
    """

    def __init__(
        self,
        in_channels: int,
        ratio: float | int = 0.2,
        num_levels: int = 3,
        official_compat: bool = False,
        fine_count: int | None = None,
    ):
        super().__init__()
        self.count = pool_count(ratio)
        if fine_count is not None and (
            isinstance(fine_count, bool) or not isinstance(fine_count, int) or fine_count < 1
        ):
            raise ValueError(f"fine_count must be an int >= 1 or None, got {fine_count!r}")
        self.fine_count = fine_count
        self.in_channels, self.ratio, self.num_levels = in_channels, ratio, num_levels
        self.official_compat = official_compat
        self.proj = nn.Parameter(torch.empty(num_levels, in_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_channels)
        nn.init.uniform_(self.proj, -bound, bound)

    def fitness(self, x: Tensor, level: Tensor) -> Tensor:
        """:math:`\\tanh(x P_r / \\|P_r\\|)` with ``r`` each node's level; 0 for thumbnails."""
        p = self.proj[level.clamp(max=self.num_levels - 1)]  # [N, F]
        phi = torch.tanh((x * p).sum(-1) / p.norm(dim=-1).clamp(min=1e-12))
        return torch.where(level == 0, torch.zeros_like(phi), phi)

    def forward(self, p: Pyramid) -> tuple[Pyramid, PoolInfo]:
        N, device = p.num_nodes, p.x.device
        phi = self.fitness(p.x, p.level)
        cluster = torch.full((N,), -1, dtype=torch.long, device=device)  # provisional ids
        centre_of: list[Tensor] = []  # input index of each provisional cluster's centre
        n_clusters = 0

        roots = torch.nonzero(p.level == 0).view(-1)
        cluster[roots] = torch.arange(roots.numel(), device=device)
        centre_of.append(roots)
        n_clusters = roots.numel()
        for lv in range(1, int(p.level.max()) + 1 if N else 1):
            nodes = torch.nonzero(p.level == lv).view(-1)
            if nodes.numel() == 0:
                continue
            group = cluster[p.parent[nodes]]
            if (group < 0).any():
                raise ValueError(f"level-{lv} nodes whose parent is not at level {lv - 1}")
            assign, centres = self._cluster_level(nodes, group, phi, p.grid, finest=lv > 1)
            cluster[nodes] = n_clusters + assign
            centre_of.append(centres)
            n_clusters += centres.numel()

        # Order the clusters by (graph, level, provisional id): batches stay sorted by graph.
        centre = torch.cat(centre_of)
        key = p.batch[centre] * (n_clusters * (self.num_levels + 1)) + p.level[centre] * n_clusters
        order = torch.argsort(key + torch.arange(n_clusters, device=device), stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(n_clusters, device=device)
        assignment = rank[cluster]
        centre = centre[order]

        x = self._aggregate(p.x, phi, assignment, n_clusters)
        edge_index, edge_type = _coarsen_edges(
            p.edge_index, assignment, p.level[centre], n_clusters
        )
        count = torch.bincount(assignment, minlength=n_clusters).clamp(min=1).unsqueeze(-1)
        grid = torch.zeros(n_clusters, 2, device=device).index_add_(0, assignment, p.grid) / count
        parent_in = p.parent[centre]
        parent = torch.where(parent_in >= 0, assignment[parent_in.clamp(min=0)], -1)
        pooled = Pyramid(
            x, edge_index, edge_type, p.level[centre], grid, parent, p.batch[centre], p.num_graphs
        )
        return pooled, PoolInfo(assignment=assignment, fitness=phi, centre=centre)

    def _cluster_level(
        self, nodes: Tensor, group: Tensor, phi: Tensor, grid: Tensor, finest: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Centres and assignment of one level's nodes, grouped by their parent's cluster.

        ``finest``: a level below the coarsest pooled one (matters only in count mode).
        Returns ``(assign, centres)``: for each node its centre's ordinal within this level,
        and the input index of each centre (ordered by group, then fitness rank).
        """
        device = nodes.device
        f = phi[nodes].detach()
        # Sort by (group, fitness): stable, so equal fitness keeps node order (deterministic).
        by_fit = torch.argsort(f, stable=True)
        order = by_fit[torch.argsort(group[by_fit], stable=True)]
        nodes, group, f = nodes[order], group[order], f[order]
        _, size = torch.unique_consecutive(group, return_counts=True)  # [G]
        start = torch.cumsum(size, 0) - size
        spread = finest and (self.fine_count is not None or self.count is not None)
        if spread:
            m = torch.full_like(size, self.fine_count or 2)
        elif self.count is None:
            m = torch.ceil(self.ratio * size.float()).long().clamp(min=1, max=None)
        else:
            m = torch.full_like(size, self.count)
        m = torch.minimum(m, size)  # centres per group
        g_of_centre = torch.repeat_interleave(torch.arange(size.numel(), device=device), m)
        j = torch.arange(int(m.sum()), device=device) - torch.repeat_interleave(
            torch.cumsum(m, 0) - m, m
        )
        n_g, m_g = size[g_of_centre], m[g_of_centre]
        if spread:  # from rank 0 to n - 1 (m = 2: the extremes, as the official count mode)
            rank = torch.div(j * (n_g - 1), (m_g - 1).clamp(min=1), rounding_mode="floor")
        else:  # centre j at rank floor(j * n / m): evenly spaced in fitness
            rank = torch.div(j * n_g, m_g, rounding_mode="floor")
        centre_pos = start[g_of_centre] + rank
        # Every node against every centre of its group.
        g_of_node = torch.repeat_interleave(torch.arange(size.numel(), device=device), size)
        n_pairs = m[g_of_node]
        pair_node = torch.repeat_interleave(torch.arange(nodes.numel(), device=device), n_pairs)
        first_centre = torch.cumsum(m, 0) - m
        pair_centre = first_centre[g_of_node].repeat_interleave(n_pairs) + (
            torch.arange(int(n_pairs.sum()), device=device)
            - torch.repeat_interleave(torch.cumsum(n_pairs, 0) - n_pairs, n_pairs)
        )
        cpos = centre_pos[pair_centre]
        cost = (grid[nodes[pair_node]] - grid[nodes[cpos]]).norm(dim=-1) + (
            f[pair_node] - f[cpos]
        ).abs()
        best = torch.full((nodes.numel(),), float("inf"), device=device).scatter_reduce(
            0, pair_node, cost, "amin"
        )
        is_best = cost <= best[pair_node]
        big = torch.iinfo(torch.long).max
        choice = torch.full((nodes.numel(),), big, dtype=torch.long, device=device).scatter_reduce(
            0, pair_node, torch.where(is_best, pair_centre, big), "amin"
        )
        assign = torch.empty_like(choice)
        assign[order] = choice
        return assign, nodes[centre_pos]

    def _aggregate(self, x: Tensor, phi: Tensor, assignment: Tensor, n: int) -> Tensor:
        """:math:`S^\\top X` with S the within-cluster softmax of fitness (or the plain mean)."""
        if self.official_compat:
            w = torch.ones_like(phi)
        else:
            shift = torch.zeros(n, device=x.device, dtype=phi.dtype).scatter_reduce(
                0, assignment, phi, "amax", include_self=False
            )
            w = torch.exp(phi - shift.detach()[assignment])
        total = torch.zeros(n, device=x.device, dtype=x.dtype).index_add_(
            0, assignment, w.to(x.dtype)
        )
        weights = (w / total[assignment]).unsqueeze(-1)  # [N, 1]
        return torch.zeros(n, x.size(1), device=x.device, dtype=x.dtype).index_add_(
            0, assignment, x * weights
        )

    def __repr__(self) -> str:
        k = f"count={self.count}" if self.count is not None else f"ratio={self.ratio}"
        if self.fine_count is not None:
            k += f", fine_count={self.fine_count}"
        return f"{self.__class__.__name__}({self.in_channels}, {k}, levels={self.num_levels})"


def _coarsen_edges(
    edge_index: Tensor, assignment: Tensor, level: Tensor, n: int
) -> tuple[Tensor, Tensor]:
    """:math:`A' = S^\\top A S` as a binary edge list without self loops, sorted by destination."""
    src, dst = assignment[edge_index[0]], assignment[edge_index[1]]
    keep = src != dst
    key = torch.unique(dst[keep] * n + src[keep])  # sorted: by destination, then source
    src, dst = key % n, torch.div(key, n, rounding_mode="floor")
    edge_type = torch.where(level[src] == level[dst], SPATIAL, SCALING)
    return torch.stack([src, dst]), edge_type
