r"""H2-MIL's and HIGT's layers, one step at a time, on a pyramid small enough to read.

Notebook 03 uses these to show what the layers compute before any model is trained (issue 18,
item 2): every number comes from the library's own layers (:class:`~wsigraph.nn.raconv.RAConv`,
:class:`~wsigraph.nn.ihpool.IHPool`, :class:`~wsigraph.nn.raconv.RAConvPlus`,
:class:`~wsigraph.nn.vit.HIViTBlock`), read out and checked against a plain write-out of the
paper's equation where one exists.

* :func:`toy_pyramid`: a thumbnail, two 5x patches and their eight 10x children (11 nodes).
* :func:`raconv_attention`: per edge, RAConv's resolution attention :math:`\alpha_r` (Eq. 2),
  its node attention :math:`\alpha_{v'}` within that resolution (Eq. 3) and their product
  :math:`\alpha_{vv'}` (Eq. 4); the products of each target sum to 1.
* :func:`ihpool_steps`: IHPool's fitness :math:`\phi = \tanh(x P_r / \lVert P_r \rVert)`, the
  clusters Algorithm 1 forms under each parent, the assignment matrix :math:`S` (the
  within-cluster softmax of fitness) and :math:`X' = S^\top X`, checked against the layer's
  pooled features.
* :func:`hivit_shapes`: the token and region tensors through one HIViT block (Eq. 4-7), and how
  far a change of one patch token moves the region tokens with and without the
  bidirectional step (Eq. 6).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch_geometric.data import Data

from wsigraph.graphs.pyramid import pyramid_graph
from wsigraph.nn.ihpool import IHPool, from_batch
from wsigraph.nn.raconv import RAConv, RAConvPlus
from wsigraph.nn.vit import HIViTBlock

LEVEL_NAMES = ("thumbnail", "5x", "10x")


def toy_pyramid(n_features: int = 4, seed: int = 0) -> Data:
    """A thumbnail, a row of two 5x patches and, under each, its 2 x 2 children at 10x.

    Node 0 is the thumbnail, nodes 1-2 the 5x patches (left, right), nodes 3-10 the 10x patches
    in row-major order over the 2 x 4 grid. Features are standard normal (``seed``); the graph
    is the library's :func:`~wsigraph.graphs.pyramid.pyramid_graph` (spatial edges within each
    level, scaling edges between each patch and its parent).
    """
    level = [0, 1, 1] + [2] * 8
    row = [0, 0, 0] + [r for r in range(2) for _ in range(4)]
    col = [0, 0, 1] + [c for _ in range(2) for c in range(4)]
    parent = [-1, 0, 0] + [1 + c // 2 for _ in range(2) for c in range(4)]
    x = torch.randn(len(level), n_features, generator=torch.Generator().manual_seed(seed))
    return pyramid_graph(x, level, row, col, parent)


def raconv_attention(graph: Data, conv: RAConv) -> pd.DataFrame:
    r"""RAConv's attention on every edge of ``graph`` (self loops included), head 0.

    Returns:
        One row per edge: ``target``, ``source``, ``source level``, ``alpha_r`` (the target's
        attention to the source's resolution, Eq. 2), ``alpha_node`` (the source's share among
        the target's neighbours at that resolution, Eq. 3) and ``alpha`` (their product, Eq. 4,
        the weight of the source in the target's new feature).
    """
    src, dst, w, group = _edge_weights(graph, conv)
    alpha_r = torch.zeros(int(group.max()) + 1).index_add_(0, group, w)[group]  # sum per (v, r)
    return _edge_frame(
        graph,
        src,
        dst,
        {
            "alpha_r": alpha_r.numpy(),
            "alpha_node": (w / alpha_r).numpy(),
            "alpha": w.numpy(),
        },
    )


def _edge_weights(graph: Data, conv) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(src, dst, weight of head 0, segment (target, source level))`` of every edge the
    layer used (self loops included), read with ``return_attention_weights``."""
    conv.eval()
    with torch.no_grad():
        _, (edges, weight) = conv(
            graph.x, graph.edge_index, graph.level, return_attention_weights=True
        )
    src, dst = edges
    w = weight.reshape(len(src), -1)[:, 0]
    return src, dst, w, dst * conv.num_levels + graph.level[src]


def _edge_frame(graph: Data, src: Tensor, dst: Tensor, columns: dict) -> pd.DataFrame:
    """One row per edge, ``target``, ``source``, ``source level`` then ``columns``, sorted."""
    frame = pd.DataFrame(
        {
            "target": dst.numpy(),
            "source": src.numpy(),
            "source level": [LEVEL_NAMES[int(lv)] for lv in graph.level[src]],
            **columns,
        }
    )
    return frame.sort_values(["target", "source"], ignore_index=True)


def ihpool_steps(graph: Data, pool: IHPool) -> tuple[pd.DataFrame, np.ndarray, Tensor, Tensor]:
    r"""One IHPool layer on ``graph``, step by step.

    Returns:
        ``(nodes, S, X_pooled, X_layer)``: ``nodes`` has per input node its ``level``,
        ``parent``, ``fitness`` :math:`\phi`, ``cluster`` (the pooled node it joins), whether it
        is its cluster's ``centre`` and its weight ``s`` in the cluster; ``S`` ``[N, N']`` the
        assignment matrix; ``X_pooled`` :math:`= S^\top X` computed here from ``S``;
        ``X_layer`` the layer's own pooled features (equal to ``X_pooled``).
    """
    pool.eval()
    with torch.no_grad():
        pooled, info = pool(from_batch(graph))
    phi, cluster = info.fitness, info.assignment
    n, k = graph.num_nodes, pooled.num_nodes
    # the within-cluster softmax of phi (a plain mean with official_compat)
    weight = torch.ones_like(phi) if pool.official_compat else torch.exp(phi)
    total = torch.zeros(k).index_add_(0, cluster, weight)
    s = weight / total[cluster]
    S = torch.zeros(n, k)
    S[torch.arange(n), cluster] = s
    centre = torch.zeros(n, dtype=torch.bool)
    centre[info.centre] = True
    nodes = pd.DataFrame(
        {
            "node": np.arange(n),
            "level": [LEVEL_NAMES[int(lv)] for lv in graph.level],
            "parent": graph.parent.numpy(),
            "fitness": phi.numpy(),
            "cluster": cluster.numpy(),
            "centre": centre.numpy(),
            "s": s.numpy(),
        }
    )
    return nodes, S.numpy(), S.T @ graph.x, pooled.x


def raconv_plus_attention(graph: Data, conv: RAConvPlus) -> pd.DataFrame:
    r"""RAConv+'s (HIGT Eq. 2) attention on every edge of ``graph`` (self loops included), head 0.

    HIGT *adds* the two levels, :math:`A_{jj'} = \alpha_k + \alpha_{j'}`, where H2-MIL
    multiplies them, and does not normalise the rows. Since :math:`\alpha_{j'}` sums to 1 over
    the :math:`n` neighbours of one resolution, :math:`\alpha_k = (\sum A - 1) / n` over that
    segment, which recovers both terms from the layer's :math:`A`.

    Returns:
        One row per edge: ``target``, ``source``, ``source level``, ``alpha_k`` (resolution
        attention), ``alpha_node`` (node attention within that resolution) and ``A`` (their sum,
        the weight of the source in the target's new feature).
    """
    src, dst, a, group = _edge_weights(graph, conv)
    size = int(group.max()) + 1
    total = torch.zeros(size).index_add_(0, group, a)
    count = torch.zeros(size).index_add_(0, group, torch.ones_like(a))
    alpha_k = ((total - 1) / count.clamp(min=1))[group]
    return _edge_frame(
        graph,
        src,
        dst,
        {"alpha_k": alpha_k.numpy(), "alpha_node": (a - alpha_k).numpy(), "A": a.numpy()},
    )


def hivit_shapes(graph: Data, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One HIViT block on the toy pyramid: the 5x patches are HIGT's regions, the 10x patches
    its patch tokens.

    Returns:
        ``(shapes, reach)``. ``shapes``: each tensor of the block (Eq. 4-7) with its shape.
        ``reach``: how far the region tokens move (max abs change) when one patch token of the
        first region changes, for the block with and without the bidirectional step (Eq. 6):
        without it the regions never see the patches, so the change is exactly 0.
    """
    level = graph.level
    region_nodes = torch.nonzero(level == 1).view(-1)
    patch_nodes = torch.nonzero(level == 2).view(-1)
    row_of = {int(v): i for i, v in enumerate(region_nodes)}
    patch_region = torch.tensor([row_of[int(graph.parent[p])] for p in patch_nodes])
    region, patch = graph.x[region_nodes], graph.x[patch_nodes]
    region_batch = torch.zeros(len(region_nodes), dtype=torch.long)
    dim = graph.x.size(1)
    shapes = [
        ("region tokens R (the 5x patches)", tuple(region.shape)),
        ("patch tokens P (the 10x patches)", tuple(patch.shape)),
        ("region of each patch token", tuple(patch_region.shape)),
    ]
    reach = []
    for bidirectional in (True, False):
        torch.manual_seed(seed)
        block = HIViTBlock(dim, bidirectional=bidirectional).eval()
        with torch.no_grad():
            r_next, p_next = block(region, region_batch, patch, patch_region, 1)
            changed = patch.clone()
            changed[0] += 1.0  # one patch token of region 0
            r_changed, _ = block(region, region_batch, changed, patch_region, 1)
        if bidirectional:
            shapes += [
                ("Eq. 4: patch-level block PL(P)", tuple(p_next.shape)),
                ("Eq. 5: each patch token + its gated region token", tuple(p_next.shape)),
                ("Eq. 6: mean of each region's patch tokens, gated, + R", tuple(region.shape)),
                ("Eq. 7: region-level block RL(R^)", tuple(r_next.shape)),
            ]
        reach.append(
            {
                "block": "bidirectional (HIGT)" if bidirectional else "w/o BI (Table 3)",
                "region tokens moved by one patch token": float((r_changed - r_next).abs().max()),
            }
        )
    return pd.DataFrame(shapes, columns=["tensor", "shape"]), pd.DataFrame(reach)
