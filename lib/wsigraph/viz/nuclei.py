r"""Which nuclei matter: occlusion importance (nuclei-graph GCN Eq. 5) and its figure (Fig. 3).

For a trained model :math:`M` and a nuclei graph :math:`G`, the importance of nucleus
:math:`n_i` is the drop of the predicted probability when :math:`n_i`, its 1-hop neighbours and
all their edges are removed (Sec. III.F):

.. math::
    \mathrm{score}_i = p(M(G)) - p(M(G_{n_i})).

Choices: :math:`p` is the probability of the class the model predicts for the whole graph
(``target=None``; pass a class to explain another); the occluded graphs are real subgraphs
(nodes removed and the rest relabelled, :func:`torch_geometric.utils.subgraph`), evaluated in
batches; a graph whose occlusion removes every nucleus is evaluated as an empty graph. The
RSF + Attention model is visualised by its attention scores instead, as in the paper.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import colormaps
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.utils import subgraph

from wsigraph.graphs.nuclei import occlusion_neighbourhoods


def _without(graph: Data, drop: Tensor) -> Data:
    """``graph`` without the nodes ``drop`` and their edges (node attributes kept for the rest)."""
    keep = torch.ones(graph.num_nodes, dtype=torch.bool)
    keep[drop] = False
    edge_index, edge_attr = subgraph(
        keep, graph.edge_index, graph.edge_attr, relabel_nodes=True, num_nodes=graph.num_nodes
    )
    return Data(x=graph.x[keep], edge_index=edge_index, edge_attr=edge_attr)


@torch.no_grad()
def occlusion_importance(
    model: nn.Module,
    graph: Data,
    hops: int = 1,
    target: int | None = None,
    batch_size: int = 64,
) -> tuple[Tensor, int]:
    """Eq. 5 for every nucleus of ``graph``.

    Args:
        model: maps a PyG ``Batch`` to logits ``[B, C]`` (put in eval mode here).
        graph: one nuclei graph, prepared as the model was trained (e.g. standardised ``x``).
        hops: occlusion radius in edges (default ``1``, the paper's).
        target: the class whose probability is explained; ``None`` = the predicted class.
        batch_size: occluded graphs per forward pass (default ``64``).

    Returns:
        ``(scores [N], target)``; a positive score means occluding the nucleus lowers the
        probability of ``target``.
    """
    model.eval()
    device = next(model.parameters()).device
    base = Data(x=graph.x, edge_index=graph.edge_index, edge_attr=graph.edge_attr)
    prob = torch.softmax(model(Batch.from_data_list([base]).to(device)), dim=1)[0]
    target = int(prob.argmax()) if target is None else int(target)
    ptr, nodes = occlusion_neighbourhoods(graph.edge_index, graph.num_nodes, hops)
    scores = []
    for start in range(0, graph.num_nodes, batch_size):
        stop = min(start + batch_size, graph.num_nodes)
        occluded = [_without(base, nodes[ptr[i] : ptr[i + 1]]) for i in range(start, stop)]
        logits = model(Batch.from_data_list(occluded).to(device))
        scores.append(prob[target] - torch.softmax(logits, dim=1)[:, target])
    out = torch.cat(scores).cpu() if scores else torch.zeros(0)
    return out, target


def nuclei_overlay(
    image: np.ndarray, instances: np.ndarray, labels: np.ndarray, values: np.ndarray, cmap="jet"
) -> np.ndarray:
    """The tile with each nucleus painted by its value (min-max normalised), as in Fig. 3.

    Args:
        image: ``[H, W, 3]`` uint8 tile.
        instances: ``[H, W]`` instance labels.
        labels: instance label of each node ``[N]`` (the graph's ``label``).
        values: one value per node ``[N]``.
        cmap: a Matplotlib colormap name (default ``"jet"``, the paper's scale).

    Returns:
        ``[H, W, 3]`` float RGB in [0, 1]: nuclei coloured, the rest the greyed tile.
    """
    values = np.asarray(values, dtype=float)
    lo, hi = (values.min(), values.max()) if values.size else (0.0, 1.0)
    norm = (values - lo) / (hi - lo) if hi > lo else np.full_like(values, 0.5)
    lut = np.zeros(int(instances.max()) + 1)
    painted = np.zeros(len(lut), dtype=bool)
    lut[np.asarray(labels, dtype=int)] = norm
    painted[np.asarray(labels, dtype=int)] = True
    out = 0.35 + 0.4 * image.astype(float).mean(axis=-1, keepdims=True).repeat(3, -1) / 255
    mask = painted[instances]
    out[mask] = colormaps[cmap](lut[instances][mask])[:, :3]
    return out


def importance_figure(panels: list[dict], titles: list[str]) -> plt.Figure:
    """Fig. 3 of the paper: one row per tile, one column per picture.

    Args:
        panels: one dict per row, ``title -> [H, W, 3] image`` (uint8 or float in [0, 1]) for
            every entry of ``titles``, plus an optional ``"row"`` label.
        titles: the column titles, e.g. ``["Original image", "Detected nucleus map",
            "RSF+edge", "RSF+attention"]``.
    """
    fig, axes = plt.subplots(
        len(panels), len(titles), figsize=(2.6 * len(titles), 2.6 * len(panels)), squeeze=False
    )
    for r, panel in enumerate(panels):
        for c, title in enumerate(titles):
            ax = axes[r, c]
            ax.imshow(panel[title])
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
        axes[r, 0].set_ylabel(panel.get("row", ""), fontsize=8)
    fig.colorbar(
        plt.cm.ScalarMappable(cmap="jet"), ax=axes, shrink=0.6, label="relative importance"
    )
    return fig
