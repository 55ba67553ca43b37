"""Every ablation switch changes something (issue 22, item 4).

For every model of the papers and every config switch (the ablation rows of
:mod:`wsigraph.tables`, the variants the notebooks run, the other choices a config offers), and
for every pair of values the switch takes:

1. the built modules differ as the switch says (module types, a module present or absent,
   attributes of the layers; the set of parameter names and shapes changes exactly when the
   switch adds, drops or resizes parameters);
2. the outputs differ on one input, both models built under ``torch.manual_seed(0)``, eval mode;
3. the outputs still differ once the second model holds the first's weights wherever the names
   and shapes agree: a switch that is built but ignored in ``forward`` makes both models
   compute the same function there, which 2. alone would miss (two models whose constructors
   draw different numbers of random weights differ anyway).

A switch that does nothing fails here. Inputs and widths are tiny (each test well under 1 s).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from functools import cache

import numpy as np
import pytest
import torch
from conftest import toy_pyramid
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GATConv, GCNConv, SAGPooling, TopKPooling
from torch_geometric.nn import LayerNorm as GraphLayerNorm

from wsigraph import tables
from wsigraph.graphs.nuclei import nuclei_edges
from wsigraph.models import abignet, build_model, h2mil, higt, nuclei_gcn
from wsigraph.models.abignet import ABiGNetConfig
from wsigraph.models.h2mil import H2MILConfig
from wsigraph.models.higt import HIGTConfig
from wsigraph.models.mico import MiCoConfig
from wsigraph.models.nuclei_gcn import NucleiGCNConfig
from wsigraph.nn.graph_learner import GraphLearner, knn_adjacency
from wsigraph.nn.ihpool import GRID_SCALES, IHPool
from wsigraph.nn.mico import ANCHORS, SIMILARITIES
from wsigraph.nn.raconv import HGATConv, RAConv, RAConvPlus
from wsigraph.nn.rsf import POOL_AXES, DenseRSFEdgeConv, NodeAttention
from wsigraph.nn.vit import Fusion, MultiHeadSelfAttention, SeparableSelfAttention

pytestmark = pytest.mark.usefixtures("one_thread")

F_IN, N_CLASSES = 6, 3


# Inputs ----------------------------------------------------------------------------------------


@cache
def _pyramids() -> Batch:
    """Two small pyramids (H2-MIL, HIGT, MiCo): 1 + 4 + 16 and 1 + 3 + 9 nodes."""
    return Batch.from_data_list([toy_pyramid(4, 0, 4, F_IN, 0.0), toy_pyramid(3, 1, 3, F_IN, 0.0)])


@cache
def _images() -> Batch:
    """Two images of 9 and 7 patches on a grid (ABiG-Net: ``x`` and ``pos``)."""
    g = torch.Generator().manual_seed(0)
    data = []
    for n in (9, 7):
        side = math.ceil(math.sqrt(n))
        pos = torch.tensor([divmod(i, side) for i in range(n)], dtype=torch.float32)
        data.append(Data(x=torch.randn(n, F_IN, generator=g), pos=pos))
    return Batch.from_data_list(data)


@cache
def _nuclei() -> Batch:
    """Two nuclei graphs of 20 and 14 nuclei in a 200 px tile (Eq. 1 edges)."""
    data = []
    for n, seed in ((20, 0), (14, 1)):
        rng = np.random.default_rng(seed)
        pos = rng.uniform(0, 200, size=(n, 2)).astype(np.float32)
        edge_index, weight = nuclei_edges(pos)
        x = torch.from_numpy(rng.normal(size=(n, F_IN)).astype(np.float32))
        data.append(Data(x=x, edge_index=edge_index, edge_attr=weight.view(-1, 1)))
    return Batch.from_data_list(data)


# Small configs: the switch under test is the only other difference.
BASE = {
    "h2mil": dict(hidden=8, dropout=0.0),
    "higt": dict(hidden=8, vit_depth=2, dropout=0.0),  # depth 2: a block that updates regions
    "mico": dict(dim=8, n_clusters=4, n_layers=2, dropout=0.0),
    "abignet": dict(hidden=8, layers=2, dropout=0.0, k=3, learner_hidden=4, learner_heads=2,
                    min_weight=0.0),
    "nuclei-gcn": dict(hidden=8, hidden3=8, clusters=(4, 2), fc=(8, 8)),
}  # fmt: skip
INPUTS = {
    "h2mil": _pyramids,
    "higt": _pyramids,
    "mico": _pyramids,
    "abignet": _images,
    "nuclei-gcn": _nuclei,
}


# What each switch value must build ---------------------------------------------------------


def _all_type(modules, cls) -> None:
    modules = list(modules)
    assert modules and all(type(m) is cls for m in modules), (cls, modules)


def _h2_conv(m, v):
    types = {"raconv": RAConv, "gcn": GCNConv, "gat": GATConv, "hgat": HGATConv}
    _all_type(m.convs, types[v])


def _h2_pool(m, v):
    types = {"ihpool": IHPool, "gap": None, "topk": TopKPooling, "sag": SAGPooling}
    assert len(m.pools) == m.config.layers
    for pool in m.pools:
        assert pool is None if types[v] is None else type(pool) is types[v], (v, pool)


def _h2_levels(m, v):
    assert m.config.levels == tuple(v)
    _all_type(m.convs, RAConv)
    assert all(c.num_levels == len(v) for c in m.convs)
    assert all(p.num_levels == len(v) for p in m.pools)
    assert all(p.proj.shape[0] == len(v) for p in m.pools)


def _h2_layers(m, v):
    assert len(m.convs) == len(m.pools) == v


def _h2_readout(m, v):
    assert m.config.readout == v


def _h2_official(m, v):
    _all_type(m.pools, IHPool)
    assert all(p.official_compat is v for p in m.pools)


def _h2_norm(m, v):
    assert (type(m.input_norm) is GraphLayerNorm) if v else m.input_norm is None
    _all_type(m.norms, GraphLayerNorm if v else nn.Identity)


def _grid(m, v):
    assert m.config.grid == v


def _higt_conv(m, v):
    _all_type(m.convs, {"raconv+": RAConvPlus, "raconv": RAConv}[v])


def _higt_attention(m, v):
    cls = {"ssa": SeparableSelfAttention, "mhsa": MultiHeadSelfAttention}[v]
    blocks = list(m.vit.blocks)
    _all_type([b.pl.attn for b in blocks] + [b.rl.attn for b in blocks if b.rl is not None], cls)


def _higt_bidirectional(m, v):
    updating = [b for b in m.vit.blocks if b.update_regions]
    assert updating, "no HIViT block updates the regions: bidirectional would do nothing"
    assert all(b.bidirectional is v for b in m.vit.blocks)
    assert all((b.se_patch is not None) is v for b in updating)  # Eq. 6's SE_P


def _higt_fusion(m, v):
    assert (type(m.fusion) is Fusion) if v else m.fusion is None
    assert any(isinstance(x, Fusion) for x in m.modules()) is v


def _mico_anchors(m, v):
    net = m.net
    assert net.anchors == v and net.reducers
    if v == "learned":
        assert isinstance(net.anchor_weight, nn.Parameter)
        assert net.anchor_weight.shape == (net.n_clusters, F_IN)
    else:
        assert net.anchor_weight is None
    for r in net.reducers:
        assert r.mode == v and hasattr(r, "queries") is (v == "slide")


def _mico_similarity(m, v):
    assert m.net.routes and all(r.similarity == v for r in m.net.routes)


def _mico_hard(m, v):
    assert m.net.routes and all(r.hard is v for r in m.net.routes)


def _mico_layers(m, v):
    assert len(m.net.routes) == len(m.net.reducers) == v


def _mico_level(m, v):
    assert m.config.level == v


def _abig_graph(m, v):
    if v == "learned":
        assert isinstance(m.learner, GraphLearner) and m.structure_parameters()
    else:
        assert m.learner is None and m.structure_parameters() == []


def _abig_knn_on(m, v):
    assert m.learner is None and m.config.knn_on == v


def _abig_distance(m, v):
    assert m.learner.distance is v and (m.learner.gamma is not None) is v


def _nuc_variant(m, v):
    assert (type(m.attention) is NodeAttention) if v == "attention" else m.attention is None
    if v == "edge":
        assert len(m.edge_convs) == 3
        _all_type(m.edge_convs, DenseRSFEdgeConv)
    else:
        assert m.edge_convs is None


def _nuc_norm(m, v):
    _all_type([m.norm1, m.norm2, m.norm3], nn.BatchNorm1d if v else nn.Identity)


def _nuc_pool_axis(m, v):
    assert m.pool1.axis == m.pool2.axis == v


def _nuc_pool_norm(m, v):
    _all_type([m.pool_norm1, m.pool_norm2], nn.BatchNorm1d if v else nn.Identity)


# (model, switch) -> (values, what a value builds, whether two values build different parameter
# sets (True, False, or the set of value pairs that build the same ones), base config overrides).
# The values are the registry's (module constants) where one exists.
SWITCHES = {
    # RAConv and HGAT hold the same parameters (H2-MIL Eq. 2's resolution attention, W, nu).
    ("h2mil", "conv"): (h2mil.CONVS, _h2_conv, {frozenset({"raconv", "hgat"})}, {}),
    ("h2mil", "pool"): (h2mil.POOLS, _h2_pool, True, {}),
    # two-level schemes have the same parameters (R = 2); which levels they read is tested below
    ("h2mil", "levels"): (
        ((0, 1), (0, 2), (0, 1, 2)),
        _h2_levels,
        {frozenset({(0, 1), (0, 2)})},
        {},
    ),
    ("h2mil", "layers"): ((1, 2, 3, 4), _h2_layers, True, {}),
    ("h2mil", "readout"): (("mean", "max"), _h2_readout, False, {}),
    ("h2mil", "official_compat"): ((False, True), _h2_official, False, {}),
    ("h2mil", "grid"): (GRID_SCALES, _grid, False, {}),
    ("h2mil", "norm"): ((True, False), _h2_norm, True, {}),
    ("higt", "conv"): (higt.CONVS, _higt_conv, True, {}),
    ("higt", "attention"): (higt.ATTENTIONS, _higt_attention, True, {}),
    ("higt", "bidirectional"): ((True, False), _higt_bidirectional, True, {}),
    ("higt", "fusion"): ((True, False), _higt_fusion, True, {}),
    ("higt", "grid"): (GRID_SCALES, _grid, False, {}),
    ("mico", "anchors"): (ANCHORS, _mico_anchors, True, {}),
    ("mico", "similarity"): (SIMILARITIES, _mico_similarity, False, {}),
    ("mico", "hard"): ((False, True), _mico_hard, False, {}),
    ("mico", "n_layers"): ((0, 1, 2, 3), _mico_layers, True, {}),
    ("mico", "level"): ((1, 2), _mico_level, False, {}),
    ("abignet", "graph"): (abignet.GRAPHS, _abig_graph, True, {}),
    ("abignet", "knn_on"): (("position", "features"), _abig_knn_on, False, {"graph": "knn"}),
    ("abignet", "distance"): ((True, False), _abig_distance, True, {}),
    ("nuclei-gcn", "variant"): (nuclei_gcn.VARIANTS, _nuc_variant, True, {}),
    ("nuclei-gcn", "norm"): ((True, False), _nuc_norm, True, {}),
    ("nuclei-gcn", "pool_axis"): (POOL_AXES, _nuc_pool_axis, False, {}),
    ("nuclei-gcn", "pool_norm"): ((True, False), _nuc_pool_norm, True, {}),
}
CONFIGS = {
    "h2mil": H2MILConfig,
    "higt": HIGTConfig,
    "mico": MiCoConfig,
    "abignet": ABiGNetConfig,
    "nuclei-gcn": NucleiGCNConfig,
}

PAIRS = [
    pytest.param(model, key, a, b, id=f"{model}-{key}-{a}-vs-{b}")
    for (model, key), (values, *_) in SWITCHES.items()
    for a, b in itertools.combinations(values, 2)
]


# Helpers ---------------------------------------------------------------------------------------


def _build(model: str, **config) -> nn.Module:
    torch.manual_seed(0)
    net = build_model(model, F_IN, N_CLASSES, **config)
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        # Fresh running statistics (0, 1) make an eval-mode BatchNorm almost the identity:
        # give them the statistics of the input first (train-mode forward, no dropout here).
        with torch.no_grad():
            net.train()(INPUTS[model]())
    return net.eval()


def _signature(net: nn.Module) -> dict:
    return {name: tuple(p.shape) for name, p in net.named_parameters()}


def _share_weights(src: nn.Module, dst: nn.Module) -> int:
    """Load into ``dst`` every entry of ``src``'s state with the same name and shape."""
    theirs = dst.state_dict()
    shared = {
        k: v for k, v in src.state_dict().items() if k in theirs and theirs[k].shape == v.shape
    }
    dst.load_state_dict(shared, strict=False)
    return len(shared)


@torch.no_grad()
def _outputs(net: nn.Module, model: str) -> torch.Tensor:
    out = net(INPUTS[model]())
    assert out.shape == (2, N_CLASSES) and torch.isfinite(out).all()
    return out


def _assert_differ(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    gap = (a - b).abs().max().item()
    assert not torch.allclose(a, b) and gap > 1e-4, f"{what}: outputs equal (max gap {gap:.1e})"


# Tests -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model, key, a, b", PAIRS)
def test_switch_changes_the_modules_and_the_outputs(model, key, a, b):
    _, expect, changes, base = SWITCHES[model, key]
    changes_parameters = changes if isinstance(changes, bool) else frozenset({a, b}) not in changes
    config = BASE[model] | base
    net_a, net_b = _build(model, **config | {key: a}), _build(model, **config | {key: b})
    expect(net_a, a)
    expect(net_b, b)
    sig_a, sig_b = _signature(net_a), _signature(net_b)
    if changes_parameters:
        assert sig_a != sig_b, f"{key}={a!r} and {key}={b!r} build the same parameters"
    else:
        assert sig_a == sig_b  # the switch acts in forward only
    out_a, out_b = _outputs(net_a, model), _outputs(net_b, model)
    _assert_differ(out_a, out_b, f"{model} {key}={a!r} vs {b!r}, same seed")
    shared = _share_weights(net_a, net_b)
    assert shared > 0
    if not changes_parameters:
        assert shared == len(net_b.state_dict())  # now the very same weights
    _assert_differ(out_a, _outputs(net_b, model), f"{model} {key}={a!r} vs {b!r}, shared weights")


def _perturb(batch: Batch, nodes: torch.Tensor) -> Batch:
    out = batch.clone()
    out.x = batch.x.clone()
    out.x[nodes] += torch.randn(
        int(nodes.sum()), batch.x.size(1), generator=torch.Generator().manual_seed(5)
    )
    return out


@pytest.mark.parametrize("levels", SWITCHES["h2mil", "levels"][0])
def test_h2mil_levels_read_only_the_kept_levels(levels):
    """Table 3: a scheme's output ignores the features of the levels it drops and reads the
    ones it keeps."""
    net = _build("h2mil", **BASE["h2mil"], levels=levels)
    batch = _pyramids()
    with torch.no_grad():
        out = net(batch)
        for lv in (1, 2):
            moved = net(_perturb(batch, batch.level == lv))
            if lv in levels:
                _assert_differ(out, moved, f"levels={levels}, level {lv} perturbed")
            else:
                torch.testing.assert_close(moved, out)


@pytest.mark.parametrize("level", SWITCHES["mico", "level"][0])
def test_mico_level_reads_only_that_level(level):
    net = _build("mico", **BASE["mico"], level=level)
    batch = _pyramids()
    with torch.no_grad():
        out = net(batch)
        for lv in (0, 1, 2):
            moved = net(_perturb(batch, batch.level == lv))
            if lv == level:
                _assert_differ(out, moved, f"level={level}, level {lv} perturbed")
            else:
                torch.testing.assert_close(moved, out)


@pytest.mark.parametrize("knn_on", SWITCHES["abignet", "knn_on"][0])
def test_abignet_fixed_graph_is_the_knn_graph(knn_on):
    """The "fixed k-NN graph" row uses exactly :func:`knn_adjacency`, the learned one another."""
    batch = _images()
    knn = _build("abignet", **BASE["abignet"], graph="knn", knn_on=knn_on)
    ei, w = knn.graph(batch)
    ref_ei, ref_w = knn_adjacency(batch.x, batch.pos, batch.batch, BASE["abignet"]["k"], knn_on)
    assert torch.equal(ei, ref_ei) and torch.equal(w, ref_w)
    learned = _build("abignet", **BASE["abignet"], graph="learned")
    _, w_l = learned.graph(batch)
    assert ((w_l > 0) & (w_l < 1)).all()  # gated weights, not the k-NN graph's ones


def test_every_ablation_row_of_the_tables_is_covered():
    """Each config value of every row (and cell override) of the paper tables is one this file
    tests; a new ablation row with a new switch or value must come with a test here."""
    seen = 0
    for table in tables.TABLES.values():
        for row in table.rows:
            if row.model not in CONFIGS:
                continue
            for config in [row.config, *row.cell_config.values()]:
                for key, value in config.items():
                    assert (row.model, key) in SWITCHES, (table.id, row.name, key)
                    values = SWITCHES[row.model, key][0]
                    assert value in values, (table.id, row.name, key, value)
                    seen += 1
    assert seen > 20
    # every switch of this file is a real config field of its model, default among the values
    for (model, key), (values, *_) in SWITCHES.items():
        default = getattr(CONFIGS[model](), key)
        assert default in values, (model, key, default)


@pytest.mark.parametrize("model", CONFIGS)
def test_every_bool_or_str_setting_is_a_tested_switch(model):
    """A new on/off or named-choice setting of a model config must come with its pair test."""
    for f in dataclasses.fields(CONFIGS[model]):
        if f.type in ("bool", "str"):
            assert (model, f.name) in SWITCHES, f"{model}: setting {f.name!r} is not tested here"
