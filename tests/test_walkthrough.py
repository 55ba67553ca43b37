"""The toy-pyramid walkthrough of notebook 03 reads the layers correctly (issue 18, item 2)."""

import torch

from wsigraph.nn.ihpool import IHPool
from wsigraph.nn.raconv import RAConv, RAConvPlus
from wsigraph.walkthrough import (
    hivit_shapes,
    ihpool_steps,
    raconv_attention,
    raconv_plus_attention,
    toy_pyramid,
)


def test_toy_pyramid_is_a_thumbnail_two_regions_and_eight_children():
    g = toy_pyramid(n_features=3, seed=1)
    assert g.level.tolist() == [0, 1, 1] + [2] * 8
    assert g.parent.tolist() == [-1, 0, 0, 1, 1, 2, 2, 1, 1, 2, 2]
    assert g.x.shape == (11, 3)


def test_raconv_weights_are_resolution_times_node_attention_and_sum_to_one():
    g = toy_pyramid()
    torch.manual_seed(0)
    edges = raconv_attention(g, RAConv(4, 4, num_levels=3))
    assert torch.allclose(
        torch.tensor(edges["alpha"].to_numpy()),
        torch.tensor((edges["alpha_r"] * edges["alpha_node"]).to_numpy()),
        atol=1e-6,
    )
    assert (edges.groupby("target")["alpha"].sum() - 1).abs().max() < 1e-5
    # node attention is a softmax within each (target, resolution)
    per_segment = edges.groupby(["target", "source level"])["alpha_node"].sum()
    assert (per_segment - 1).abs().max() < 1e-5
    # resolution budgets of one target sum to 1
    budgets = edges.groupby(["target", "source level"])["alpha_r"].first().groupby("target").sum()
    assert (budgets - 1).abs().max() < 1e-5


def test_raconv_plus_splits_a_into_its_two_added_terms():
    g = toy_pyramid()
    torch.manual_seed(0)
    edges = raconv_plus_attention(g, RAConvPlus(4, 4, num_levels=3))
    assert ((edges["alpha_k"] + edges["alpha_node"]) - edges["A"]).abs().max() < 1e-5
    per_segment = edges.groupby(["target", "source level"])["alpha_node"].sum()
    assert (per_segment - 1).abs().max() < 1e-5
    budgets = edges.groupby(["target", "source level"])["alpha_k"].first().groupby("target").sum()
    assert (budgets - 1).abs().max() < 1e-4  # alpha_k is a softmax over the resolutions


def test_ihpool_steps_rebuild_s_and_the_pooled_features():
    g = toy_pyramid()
    for compat in (False, True):
        torch.manual_seed(0)
        nodes, S, x_pooled, x_layer = ihpool_steps(
            g, IHPool(4, ratio=0.5, num_levels=3, official_compat=compat)
        )
        assert torch.allclose(x_pooled, x_layer, atol=1e-5)
        assert abs(S.sum(0) - 1).max() < 1e-6 and ((S > 0).sum(1) == 1).all()
        assert nodes.loc[0, "cluster"] == 0 and nodes.loc[0, "centre"]  # the thumbnail
        # each centre belongs to its own cluster, one centre per cluster
        centres = nodes[nodes["centre"]]
        assert centres["cluster"].is_unique and len(centres) == S.shape[1]


def test_only_the_bidirectional_hivit_block_lets_a_patch_reach_the_regions():
    shapes, reach = hivit_shapes(toy_pyramid(), seed=0)
    assert shapes.set_index("tensor")["shape"].iloc[0] == (2, 4)
    moved = reach.set_index("block").iloc[:, 0]
    assert moved["bidirectional (HIGT)"] > 1e-4 and moved["w/o BI (Table 3)"] == 0.0
