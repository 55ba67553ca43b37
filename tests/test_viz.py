"""The figure helpers draw what the figures promise (issue 18, item 5): a µm scale bar at a
round length, one shared 0-1 colour scale for fitness panels, ROC legends that say the curve is
pooled, equal x ranges that cut no bar, cost plots identified by a legend, not by overlapping
text."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar
from torch_geometric.data import Data

from wsigraph import tables as T
from wsigraph.viz.interpret import draw_fitness, roc_panel
from wsigraph.viz.nuclei import draw_nuclei_graph
from wsigraph.viz.slides import draw_pyramid_graph, level_counts, scale_bar, thumbnail_grid
from wsigraph.viz.tables import cost_scatter, ours_vs_paper


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _bars(ax):
    return [a for a in ax.artists if isinstance(a, AnchoredSizeBar)]


@pytest.mark.parametrize(
    "um_per_px, width, length, label",
    [(1.0, 600, 100, "100 µm"), (0.5, 700, 50, "50 µm"), (16.0, 400, 1000, "1 mm"), (2.0, 300, 100, "100 µm")],
)  # fmt: skip
def test_scale_bar_is_a_round_length_about_a_fifth_of_the_width(um_per_px, width, length, label):
    fig, ax = plt.subplots()
    ax.imshow(np.zeros((10, width)))
    bar = scale_bar(ax, um_per_px, width)
    assert _bars(ax) == [bar]
    assert bar.size_bar.get_children()[0].get_width() == pytest.approx(length / um_per_px)
    assert bar.txt_label.get_text() == label
    assert length <= width * um_per_px / 5


@pytest.mark.parametrize("mpp", [None, float("nan"), 0.0, -1.0])
def test_no_scale_bar_without_a_resolution(mpp):
    fig, ax = plt.subplots()
    assert scale_bar(ax, mpp, 100) is None and not _bars(ax)


def test_thumbnail_grid_draws_a_bar_where_the_resolution_is_known():
    img = np.zeros((40, 80, 3), np.uint8)
    fig = thumbnail_grid([(img, "a"), (img, "b")], ncols=2, um_per_px=[10.0, None])
    a, b = fig.axes
    assert len(_bars(a)) == 1 and not _bars(b)


def _pyramid():
    # thumbnail + 2 x 2 patches at level 1 (256 level-0 px each) on a 512 x 512 slide
    pos = torch.tensor([[256.0, 256.0], [128, 128], [384, 128], [128, 384], [384, 384]])
    level = torch.tensor([0, 1, 1, 1, 1])
    src = torch.tensor([1, 2, 3, 4, 0, 0, 0, 0, 1, 2])
    dst = torch.tensor([0, 0, 0, 0, 1, 2, 3, 4, 2, 1])
    etype = torch.tensor([1, 1, 1, 1, 1, 1, 1, 1, 0, 0])
    return Data(pos=pos, level=level, edge_index=torch.stack([src, dst]), edge_type=etype)


def test_fitness_panels_share_one_fixed_scale_and_keep_cool_patches_see_through():
    g = _pyramid()
    thumb = np.full((64, 64, 3), 255, np.uint8)
    fig, axes = plt.subplots(1, 2)
    scales = []
    for ax, peak in zip(axes, (0.3, 1.0), strict=True):
        heat = np.array([1.0, 0.0, 0.1, 0.2, peak])
        cluster = np.array([0, 1, 1, 2, 2])
        scales.append(
            draw_fitness(
                ax,
                thumb,
                g,
                heat,
                cluster,
                np.array([1.0, 0.5, 0.2]),
                (512, 512),
                level=1,
                mpp=0.5,
                colorbar=False,
            )  # fmt: skip
        )
    assert len(fig.axes) == 2  # colorbar=False adds no colour-bar axis
    assert all(s.get_clim() == (0, 1) for s in scales)  # the same scale in every panel
    faces = axes[1].collections[0].get_facecolors()
    assert faces[0, 3] < faces[3, 3]  # heat 0 more transparent than heat 1
    assert len(_bars(axes[0])) == 1  # 64 px thumb of 512 px at 0.5 µm/px: a bar
    draw_fitness(axes[0], thumb, g, np.ones(5), np.zeros(5, int), np.ones(1), (512, 512), level=1)
    assert len(fig.axes) == 3  # the default draws its own colour bar


def test_pyramid_legend_sits_below_the_image_and_a_bar_is_drawn():
    fig, ax = plt.subplots()
    draw_pyramid_graph(ax, np.zeros((64, 64, 3), np.uint8), _pyramid(), (512, 512), mpp=0.5)
    legend = ax.get_legend()
    assert legend._loc == 9 and legend.get_bbox_to_anchor().y0 <= ax.bbox.y0 + 1e-6  # upper center
    assert len(_bars(ax)) == 1


def test_roc_legend_says_pooled_and_gives_the_per_fold_auc():
    fig, ax = plt.subplots()
    y = np.array([0, 0, 1, 1])
    roc_panel(ax, {"H2-MIL": (y, np.array([0.1, 0.6, 0.4, 0.9]))}, "t", {"H2-MIL": (0.8, 0.1)})
    (text,) = [t.get_text() for t in ax.get_legend().get_texts()]
    assert text == "H2-MIL: pooled AUC 0.750, per fold 0.800 ± 0.100"


def _record(auc, std):
    return {"summary": {m: {"mean": auc, "std": std} for m in ("acc", "auc", "f1")}}


def test_ours_vs_paper_panels_share_an_x_range_that_cuts_no_bar():
    records = {
        T.run_name("h2mil_table1", "H2-MIL", "esca", t): _record(0.99, 0.15)
        for t in ("typing", "staging")
    }
    fig, axes = plt.subplots(1, 2)
    for ax, task in zip(axes, ("typing", "staging"), strict=True):
        ours_vs_paper(ax, "h2mil_table1", records, "esca", task)
    assert axes[0].get_xlim() == axes[1].get_xlim()
    assert axes[0].get_xlim()[1] >= 99 + 15  # mean + std inside the axis
    assert axes[0].get_xlim()[0] <= 20


def test_cost_scatter_uses_a_legend_not_labels_beside_the_dots():
    fig, ax = plt.subplots()
    points = [("LR on slide means (Thu.)", 0.0, 55.0), ("H2-MIL", 20.0, 99.0), ("HIPT", 5.0, None)]
    handles = cost_scatter(ax, points, "x", "y", title="KICA typing",
                           controls=("LR on slide means (Thu.)",))  # fmt: skip
    assert list(handles) == ["LR on slide means (Thu.)", "H2-MIL"]
    assert [t.get_text() for t in ax.texts] == ["not run: HIPT"]  # no per-dot text labels
    assert ax.get_title() == "KICA typing"
    red = matplotlib.colors.to_rgba("tab:red")
    assert tuple(handles["LR on slide means (Thu.)"].get_facecolors()[0]) == pytest.approx(red)
    assert tuple(handles["H2-MIL"].get_facecolors()[0]) != pytest.approx(red)


def test_level_counts_and_the_nuclei_edge_scale():
    class Tiles:
        level = np.array([0, 1, 1, 2, 2, 2])
        magnifications = (5.0, 10.0)

    assert level_counts(Tiles) == "1 thumbnail, 2 patches at 5x, 3 at 10x"
    g = Data(
        pos=torch.tensor([[5.0, 5.0], [10.0, 10.0]]),
        edge_index=torch.tensor([[0, 1], [1, 0]]),
        edge_attr=torch.tensor([[0.5], [0.5]]),
    )
    fig, ax = plt.subplots()
    scale = draw_nuclei_graph(ax, np.zeros((16, 16, 3), np.uint8), g, "x")
    assert scale.get_clim() == (0, 1)


def test_training_curves_average_the_folds_and_skip_records_without_history():
    from wsigraph.viz.interpret import draw_curves

    def fold(v):
        return {"history": [{"epoch": e, "train_loss": 1.0 / e, "train_auc": None,
                             "val_loss": v / e, "val_auc": 0.5 + 0.1 * e} for e in (1, 2, 3)]}  # fmt: skip

    fig, (a, b) = plt.subplots(1, 2)
    assert draw_curves(a, b, "H2-MIL", {"fold_details": [fold(1.0), fold(3.0)]})
    val = next(line for line in a.get_lines() if line.get_label() == "H2-MIL val")
    assert list(val.get_ydata()) == pytest.approx([2.0, 1.0, 2 / 3])  # mean of 1/e and 3/e
    assert [line.get_label() for line in b.get_lines()] == ["H2-MIL val"]  # no train AUC
    assert not draw_curves(a, b, "old", {"fold_details": [{"best_epoch": 3}]})


def test_patch_graph_has_a_legend_for_edges_and_nodes():
    from wsigraph.viz.graphs import draw_patch_graph

    grid = np.array([[0, 0], [0, 1], [1, 1], [2, 2]])
    edges = np.array([[0, 1, 0, 3], [1, 0, 3, 0]])
    fig, ax = plt.subplots()
    scale = draw_patch_graph(ax, np.zeros((48, 48, 3)), grid, 16, edges, np.array([1.0, 1.0, 0.5, 0.5]),
                             np.array([0.0, 0.5, 1.0, 0.2]), "t", node_label="nuclei per patch")  # fmt: skip
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "long-range edge (not adjacent)" in labels and "node colour: nuclei per patch" in labels
    assert scale.get_clim() == (0, 1)
    fig, ax = plt.subplots()
    assert draw_patch_graph(ax, np.zeros((48, 48, 3)), grid, 16, edges) is None
