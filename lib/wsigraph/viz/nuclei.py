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

from pathlib import Path

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
    keep = torch.ones(graph.num_nodes, dtype=torch.bool, device=graph.x.device)
    keep[drop.to(keep.device)] = False
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


def draw_nuclei_graph(
    ax: plt.Axes, image: np.ndarray, graph: Data, title: str = ""
) -> plt.cm.ScalarMappable:
    """Fig. 2 of the paper: the tile with its nuclei graph on top (edges shaded by Eq. 1 weight).

    Args:
        ax: where to draw.
        image: ``[H, W, 3]`` tile.
        graph: its nuclei graph (``pos`` ``(row, col)``, ``edge_index``, ``edge_attr``).
        title: the panel title.

    Returns:
        The edge-weight colour scale (0-1, viridis) for a colour bar: ``fig.colorbar(sm, ...)``.
    """
    from matplotlib.collections import LineCollection

    pos = graph.pos.numpy()[:, ::-1]  # (x, y) for plotting
    src, dst = graph.edge_index.numpy()
    once = src < dst  # each undirected edge once
    weight = graph.edge_attr.view(-1).numpy()[once]
    segments = np.stack([pos[src[once]], pos[dst[once]]], axis=1)
    ax.imshow(image)
    ax.add_collection(
        LineCollection(segments, colors=colormaps["viridis"](weight), linewidths=0.3, alpha=0.35)
    )
    ax.scatter(pos[:, 0], pos[:, 1], s=4, c="yellow", edgecolors="none", zorder=3)
    ax.set_title(f"{title}\n{graph.num_nodes} nuclei, {int(once.sum())} edges", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    return plt.cm.ScalarMappable(norm=plt.Normalize(0, 1), cmap="viridis")


def segmentation_figure(
    tiles: dict[str, tuple[np.ndarray, np.ndarray]],
    predictions: dict[str, dict[str, np.ndarray]],
    scores: dict[tuple[str, str], tuple[float, float]] | None = None,
    crop: int = 256,
) -> plt.Figure:
    """Annotated nuclei beside each method's instances, one row per tile (a ``crop`` px corner).

    Args:
        tiles: ``tile -> (image, true instances)``.
        predictions: ``method -> tile -> instances``.
        scores: ``(method, tile) -> (dice, aji)`` shown in the titles.
        crop: side of the shown top-left corner in px (default ``256``).
    """
    from skimage.segmentation import find_boundaries

    methods = list(predictions)
    fig, axes = plt.subplots(
        len(tiles), 1 + len(methods), figsize=(3 * (1 + len(methods)), 3 * len(tiles)),
        squeeze=False,
    )  # fmt: skip
    for r, (tile, (image, truth)) in enumerate(tiles.items()):
        panels = [("annotation", truth)] + [(m, predictions[m][tile]) for m in methods]
        for c, (name, inst) in enumerate(panels):
            view = image[:crop, :crop].copy()
            view[find_boundaries(inst[:crop, :crop], mode="inner")] = (0, 255, 0)
            ax = axes[r, c]
            ax.imshow(view)
            ax.set_xticks([])
            ax.set_yticks([])
            extra = ""
            if scores and (name, tile) in scores:
                extra = " Dice {:.2f} AJI {:.2f}".format(*scores[(name, tile)])
            ax.set_title(f"{name}{extra}", fontsize=8)
        axes[r, 0].set_ylabel(tile, fontsize=7)
    fig.tight_layout()
    return fig


def fold_importance(
    graphs, labels, cfg, split, picks, checkpoint=None
) -> tuple[dict, dict[int, np.ndarray]]:
    """Trains ``cfg`` on one split (or loads the model a run saved for it: ``checkpoint``, a
    fold model of :func:`wsigraph.train.run.run_experiment` trained with ``cfg`` on ``split``)
    and scores the nuclei of some of its held-out tiles.

    RSF + Attention is read through its attention scores, the other variants through Eq. 5
    occlusion (:func:`occlusion_importance`), as in the paper's Fig. 3.

    Args:
        graphs, labels: the data set (as for :func:`wsigraph.train.loop.train_fold`).
        cfg: a :class:`~wsigraph.train.loop.TrainConfig` of the ``nuclei-gcn`` model.
        split: a :class:`~wsigraph.train.cv.Split`.
        picks: indices into ``graphs`` of test tiles of ``split`` to score.

    Returns:
        ``(fold metrics, index -> importance [N_i])``.
    """
    from wsigraph.train.loop import train_fold

    test = {int(i): k for k, i in enumerate(split.test)}
    missing = [i for i in picks if int(i) not in test]
    if missing:
        raise ValueError(f"tiles {missing} are not in the split's test fold")
    if checkpoint is not None and Path(checkpoint).is_file():
        from wsigraph.checkpoint import load_model

        saved = load_model(checkpoint)
        if saved.model_name != cfg.model:
            raise ValueError(f"{checkpoint} holds a {saved.model_name!r} model, not {cfg.model!r}")
        model, metrics = saved.model, {}
        test_graphs = [saved.prepare(graphs[int(i)]) for i in split.test]
    else:
        result, model, test_graphs = train_fold(graphs, labels, split, cfg, return_model=True)
        metrics = result.metrics
    device = next(model.parameters()).device
    out = {}
    for i in picks:
        g = test_graphs[test[int(i)]]
        if cfg.model_config.get("variant") == "attention":
            with torch.no_grad():
                model(Batch.from_data_list([g]).to(device))
            out[int(i)] = model.last_attention.cpu().numpy()
        else:
            out[int(i)] = occlusion_importance(model, g)[0].numpy()
    return metrics, out


def nucleus_map(image: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """The detected nuclei, one random colour each, over the greyed tile (Fig. 3, 2nd column)."""
    from skimage.color import label2rgb

    grey = image.astype(float).mean(axis=-1) / 255
    return label2rgb(instances, image=grey, bg_label=0, alpha=0.6, image_alpha=0.6)
