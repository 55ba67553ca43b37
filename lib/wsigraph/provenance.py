"""Paper / official code / ours: every hyper-parameter and design choice of a method, side by side.

Each :class:`Choice` states what the paper says (with where), what the official code does (with
the file), and reads **our** value live from the code that runs: a model config's default, the
``tcga`` profile, the training defaults. A changed default therefore changes the generated table;
a difference can never be silent. ``follows`` says whose value ours is: ``"paper"``,
``"official"`` (the paper is silent), ``"both"`` (they agree) or ``"ours"`` (a deliberate
difference, explained in ``note``). Where ``follows`` names a source that states a plain value
(``value``), the tests check that our live value equals it.

    >>> from wsigraph.provenance import comparison_table
    >>> comparison_table("H2-MIL")          # a DataFrame: item, paper, official code, ours, ...

``write_comparisons(out_dir)`` writes ``<paper>_paper_official_ours.md`` and ``.csv`` for every
paper; ``05_tables`` calls it and ``04_train`` shows the row's paper's table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from wsigraph.io import write_text
from wsigraph.tables import markdown_grid

FOLLOWS = ("paper", "official", "both", "ours")


@dataclass(frozen=True)
class Choice:
    """One row of a paper's comparison table (see the module docstring)."""

    item: str
    paper: str  # what the paper says, with its place ("not stated" when silent)
    official: str  # what the official code does, with its file
    ours: Callable[[], object]  # our live value
    follows: str  # paper | official | both | ours
    note: str = ""
    value: object = None  # the plain value of the source named by ``follows``, when there is one

    def __post_init__(self):
        if self.follows not in FOLLOWS:
            raise ValueError(f"follows must be one of {FOLLOWS}, got {self.follows!r}")


def model_default(model: str, field: str) -> Callable[[], object]:
    """Our value: the default of ``field`` in the config dataclass of registered ``model``."""

    def get():
        cls = _config_class(model)
        f = {f.name: f for f in dataclasses.fields(cls)}[field]
        if f.default is not dataclasses.MISSING:
            return f.default
        return f.default_factory()  # type: ignore[misc]

    get.__qualname__ = f"{model}.{field}"
    return get


def profile_value(field: str, profile: str = "tcga") -> Callable[[], object]:
    """Our value: a setting of a profile (the real-data ``tcga`` one by default)."""

    def get():
        from wsigraph.profiles import get_profile  # late: profiles imports much of the package

        return getattr(get_profile(profile), field)

    return get


def train_default(field: str) -> Callable[[], object]:
    """Our value: the default of :class:`wsigraph.train.loop.TrainConfig`'s ``field``."""

    def get():
        from wsigraph.train.loop import TrainConfig

        return {f.name: f.default for f in dataclasses.fields(TrainConfig)}[field]

    return get


def row_training(table: str, row: str, field: str) -> Callable[[], object]:
    """Our value: a training setting a table row sets for itself (``Row.train``)."""

    def get():
        from wsigraph.tables import get_row

        return get_row(table, row).train[field]

    return get


def notebook_parameter(notebook: str, name: str, profile: str = "tcga") -> Callable[[], object]:
    """Our value: a setting of a notebook: the profile's ``extra[<section>]`` entry where it sets
    one (``section`` = the notebook's topic, e.g. ``"nuclei"`` for ``07_nuclei_graph``), else the
    default in the notebook's ``parameters`` cell."""

    def get():
        import ast
        import json

        from wsigraph.pipeline import NOTEBOOKS_DIR
        from wsigraph.profiles import get_profile

        section = {"07_nuclei_graph": "nuclei"}.get(notebook)
        extra = get_profile(profile).extra.get(section, {}) if section else {}
        if name in extra:
            return extra[name]
        cells = json.loads((NOTEBOOKS_DIR / f"{notebook}.ipynb").read_text())["cells"]
        for cell in cells:
            if "parameters" in cell.get("metadata", {}).get("tags", []):
                for node in ast.parse("".join(cell["source"])).body:
                    if isinstance(node, ast.Assign) and any(
                        isinstance(t, ast.Name) and t.id == name for t in node.targets
                    ):
                        return ast.literal_eval(node.value)
        raise KeyError(f"{notebook} has no parameter {name!r}")

    return get


def fixed(value: object) -> Callable[[], object]:
    """Our value: a design decision that is no setting (e.g. the loss), stated as text."""
    return lambda: value


def _config_class(model: str) -> type:
    if model == "h2mil":
        from wsigraph.models.h2mil import H2MILConfig

        return H2MILConfig
    if model == "higt":
        from wsigraph.models.higt import HIGTConfig

        return HIGTConfig
    if model == "nuclei-gcn":
        from wsigraph.models.nuclei_gcn import NucleiGCNConfig

        return NucleiGCNConfig
    if model == "abignet_official":
        from wsigraph.models.abignet import ABiGNetOfficialConfig

        return ABiGNetOfficialConfig
    raise ValueError(f"no config class known for model {model!r}")


_H = "h2mil"
_G = "higt"
# H2-MIL: the paper (AAAI 2022, ``000_*.txt``) and lin-lcx/H2-MIL (code/main.py, IHPool.py,
# RAConv.py, generate_heterougeneous_graph.ipynb).
H2MIL: tuple[Choice, ...] = (
    Choice(
        "magnifications",
        "thumbnail, 5x, 10x (Sec. 3, Fig. 2)",
        "thumbnail, 5x, 10x (graph notebook)",
        profile_value("magnifications"),
        "both",
        value=(5.0, 10.0),
    ),
    Choice(
        "patch size (px)",
        "512 x 512 (Implementation details)",
        "512",
        profile_value("patch_size"),
        "both",
        value=512,
    ),
    Choice(
        "encoder",
        "KimiaNet, 1,024-d (Implementation details)",
        "KimiaNet features",
        profile_value("encoder"),
        "both",
        value="kimianet",
    ),
    Choice(
        "background filter",
        "RGB variance below a threshold (Sec. 3)",
        "not in the repository",
        profile_value("rgb_var_threshold"),
        "ours",
        "threshold not stated anywhere; 100 on 0-255 RGB, plus a tissue mask",
    ),
    Choice(
        "edges",
        "8-adjacent spatial edges within a resolution; scaling edges between a "
        "patch and the patches it contains",
        "thumbnail - every 5x node, 5x - its four 10x "
        "children, 8-neighbours within a level (graph notebook)",
        fixed("as the official graph (graphs/pyramid.py)"),
        "both",
    ),
    Choice(
        "convolution",
        "RAConv (Eq. 2-5)",
        "RAConv.py: per-node-type attention, prototypes "
        "from a separate linear map, no self loops in the first layer",
        model_default(_H, "conv"),
        "paper",
        value="raconv",
    ),
    Choice(
        "blocks L",
        "Table 4 tunes L in {1, 2, 3, 4}",
        "2 (conv1/pool1, conv2/pool2)",
        model_default(_H, "layers"),
        "official",
        "L = 1 for KICA staging, as the paper's Table 4 best (tables.py)",
        value=2,
    ),
    Choice(
        "hidden / read-out width",
        "tuned in {128, 256, 512}",
        "256 (--out_classes)",
        model_default(_H, "hidden"),
        "official",
        value=256,
    ),
    Choice(
        "input and per-block LayerNorm",
        "not stated",
        "LayerNorm(1024) on the input and "
        "after every RAConv + ReLU (one instance; cannot run on 256-d features as published)",
        model_default(_H, "norm"),
        "official",
        "PyG graph-wise LayerNorm, one per place",
        value=True,
    ),
    Choice(
        "feature dropout",
        "tuned in {0, ..., 0.4} ('linear layers')",
        "0.3 after each block and in the classifier (--drop_out_ratio)",
        model_default(_H, "dropout"),
        "official",
        value=0.3,
    ),
    Choice(
        "attention dropout",
        "not stated",
        "none",
        model_default(_H, "attention_dropout"),
        "official",
        value=0.0,
    ),
    Choice(
        "pooling per block",
        "ratio tuned in {0.1, ..., 0.4}; keep ceil(k|V|) clusters (Alg. 1)",
        "pool1_ratio 0.1, pool2_ratio 4 (an int: a count of about 4 regions)",
        model_default(_H, "ratio"),
        "official",
        "a count keeps min(4, n) regions, evenly "
        "spaced in fitness; finer groups keep their lowest and highest fitness, as official",
        value=(0.1, 4),
    ),
    Choice(
        "IHPool centres",
        "sampled based on fitness (Alg. 1 line 14)",
        "every ceil(1/k)-th node in fitness order ('inter')",
        fixed("ceil(k n) at evenly spaced fitness ranks"),
        "ours",
        "the paper's count ceil(k n) with the official interval spacing",
    ),
    Choice(
        "IHPool distance",
        "spatial distance + fitness difference (Alg. 1 line 15)",
        "positions divided by their per-slide, per-level maximum and mapped to [-1, 1]",
        model_default(_H, "grid"),
        "official",
        value="normalised",
    ),
    Choice(
        "IHPool S",
        "X' = S^T X (Alg. 1)",
        "hard assignment, plain mean",
        model_default(_H, "official_compat"),
        "ours",
        "a fitness softmax within each "
        "cluster, so the projection trains (official_compat=True: plain mean)",
    ),
    Choice(
        "IHPool in evaluation",
        "not stated",
        "deterministic selection",
        fixed("deterministic"),
        "both",
    ),
    Choice(
        "read-out",
        "sum over blocks of each pooled graph's read-out (Eq. 6)",
        "global_mean_pool per block, summed",
        model_default(_H, "readout"),
        "both",
        value="mean",
    ),
    Choice(
        "classifier",
        "not stated",
        "Linear(h, h/2) - ReLU - LayerNorm - Dropout - Linear(4)",
        fixed("Linear(h, h/2) - ReLU - LayerNorm - Dropout - Linear(n_classes)"),
        "official",
        "n_classes outputs (the official has 4 for every task)",
    ),
    Choice(
        "loss",
        "cross-entropy",
        "softmax, then CrossEntropyLoss (a double softmax)",
        fixed("cross-entropy on logits"),
        "paper",
    ),
    Choice("optimiser", "Adam", "Adam", fixed("Adam"), "both"),
    Choice(
        "learning rate",
        "tuned in {5e-4, 1e-4, 5e-5}",
        "5e-5",
        profile_value("lr"),
        "ours",
        "5e-4, one value of the paper's grid for every row (no per-row tuning)",
    ),
    Choice(
        "weight decay", "not stated", "5e-4", train_default("weight_decay"), "official", value=5e-4
    ),
    Choice("epochs", "50", "60", profile_value("epochs"), "paper", value=50),
    Choice(
        "slides per step",
        "not stated",
        "32",
        profile_value("train_batch_size"),
        "ours",
        "8, HIGT's, for both papers",
    ),
    Choice("early stopping", "none", "none", train_default("patience"), "both", value=None),
    Choice(
        "checkpoint",
        "chosen on a 25 % validation split",
        "best validation AUC once the training AUC > 0.8 (or in the last 10 epochs)",
        fixed("best validation AUC, ties by validation loss"),
        "paper",
        "no train-AUC gate",
    ),
    Choice(
        "protocol",
        "5 repeats of 5-fold CV",
        "5 repeats of 5-fold CV (StratifiedKFold)",
        profile_value("repeats"),
        "both",
        value=5,
    ),
    Choice(
        "metrics",
        "ACC, AUC, F1",
        "AUC per fold; ACC and 'F1' (harmonic mean of "
        "sensitivity and specificity) at the best threshold on each repeat's pooled "
        "predictions",
        fixed("argmax ACC, AUC, macro F1; the official ACC/F1 as extra columns"),
        "paper",
    ),
    Choice(
        "cohort",
        "patients with both type and stage known",
        "case lists in Data/*.pkl",
        fixed("both labels known"),
        "paper",
    ),
)

# HIGT: the paper (MICCAI 2023, ``001_*.txt``) and HKU-MedAI/HIGT (HiGT.py, train.py, modules/).
HIGT: tuple[Choice, ...] = (
    Choice(
        "magnifications",
        "5x, 10x, plus the thumbnail (Sec. 2.1)",
        "5x, 10x (tutorial)",
        profile_value("magnifications"),
        "both",
        value=(5.0, 10.0),
    ),
    Choice(
        "encoder",
        "KimiaNet, 1 x 1,024 (Experimental setup)",
        "ResNet-50 in the tutorial",
        profile_value("encoder"),
        "paper",
        value="kimianet",
    ),
    Choice(
        "convolution",
        "RAConv+ (Eq. 2-3)",
        "modules/RAConv.py: LeakyReLU after summing the two scores, W used as V",
        model_default(_G, "conv"),
        "paper",
        value="raconv+",
    ),
    Choice(
        "GNN blocks",
        "not stated",
        "2 (pool_ratio_list [0.5, 5])",
        model_default(_G, "gnn_layers"),
        "official",
        value=2,
    ),
    Choice(
        "hidden width",
        "1 x C tokens, C = 1,024",
        "1,024 (gcn_channel_list)",
        model_default(_G, "hidden"),
        "ours",
        "our HIViT attends over node tokens: 40 M parameters at 1,024 against the official "
        "0.3 M (a 64-channel image), so 128 keeps the official size; hidden=None takes the "
        "input width",
    ),
    Choice(
        "pooling per block",
        "IHPool (Sec. 2.2)",
        "0.5, then a count of 5 regions; 4 random 10x centres per region in every pool",
        model_default(_G, "ratio"),
        "ours",
        "0.5 in both blocks, so small slides work; ratio=(0.5, 5), fine_count=4 is the "
        "official (deterministic instead of random)",
    ),
    Choice(
        "HIViT blocks",
        "not stated",
        "3 (mhit_num)",
        model_default(_G, "vit_depth"),
        "official",
        value=3,
    ),
    Choice(
        "token attention",
        "separable self-attention (Eq. 4, 7)",
        "MobileViTv2 separable attention",
        model_default(_G, "attention"),
        "both",
        value="ssa",
    ),
    Choice(
        "bidirectional interaction",
        "region -> patch and patch -> region (Eq. 5-6)",
        "region -> patch only (MobileHiT)",
        model_default(_G, "bidirectional"),
        "paper",
        value=True,
    ),
    Choice(
        "fusion",
        "thumbnail + GNN patches, concatenated with HIViT patches, 1x1 conv (Sec. 2.4)",
        "Conv2d over the 2P tokens as channels (mixes tokens per feature), BatchNorm, ReLU",
        model_default(_G, "fusion"),
        "paper",
        "features mixed per token, LayerNorm instead of BatchNorm",
        value=True,
    ),
    Choice(
        "dropout",
        "not stated",
        "0.2 (--drop_out_ratio)",
        model_default(_G, "dropout"),
        "official",
        value=0.2,
    ),
    Choice(
        "IHPool distance",
        "IHPool of H2-MIL",
        "positions mapped to [-1, 1] (GCN.py)",
        model_default(_G, "grid"),
        "official",
        value="normalised",
    ),
    Choice(
        "loss",
        "not stated",
        "softmax, then CrossEntropyLoss",
        fixed("cross-entropy on logits"),
        "ours",
        "no double softmax",
    ),
    Choice("optimiser", "Adam", "Adam", fixed("Adam"), "both"),
    Choice(
        "learning rate",
        "5e-4 (Experimental setup)",
        "1e-4",
        row_training("higt_table3", "HIGT (Ours)", "lr"),
        "paper",
        value=5e-4,
    ),
    Choice(
        "weight decay", "not stated", "5e-4", train_default("weight_decay"), "official", value=5e-4
    ),
    Choice("epochs", "50", "50", profile_value("epochs"), "both", value=50),
    Choice("slides per step", "8", "8", profile_value("train_batch_size"), "both", value=8),
    Choice(
        "checkpoint",
        "not stated",
        "best *test* ACC + micro-AUC (a leak)",
        fixed("best validation AUC on a 25 % validation split"),
        "ours",
        "never the test fold",
    ),
    Choice(
        "protocol",
        "5-fold CV from five initialisations",
        "1 repeat (repeat_num), seed 2023",
        profile_value("repeats"),
        "paper",
        value=5,
    ),
    Choice(
        "metrics",
        "ACC, AUC",
        "micro-AUC, ACC; weighted F1 printed",
        fixed("argmax ACC, AUC; micro-AUC as an extra column"),
        "paper",
    ),
)


def _nuclei_radius() -> str:
    from wsigraph.graphs.nuclei import PAPER_MPP, RADIUS_UM, radius_in_pixels

    px = radius_in_pixels(RADIUS_UM, PAPER_MPP)
    return f"{RADIUS_UM:g} µm, converted with each image's µm/px (= {px:g} px at {PAPER_MPP} µm/px)"


def _nuclei_widths() -> str:
    from wsigraph.models.nuclei_gcn import NucleiGCNConfig as C

    (c1, c2), (f1, f2) = C.clusters, C.fc
    return (
        f"{C.hidden}, {C.hidden}, pool {c1}, {C.hidden3}, pool {c2}, FC {f1}, FC {f2}, FC classes"
    )


def _nuclei_parameters() -> int:
    from wsigraph.models import build_model

    return sum(p.numel() for p in build_model("nuclei-gcn", 18, 2).parameters())


_N = "nuclei-gcn"
_NB07 = "07_nuclei_graph"
_REF = "fps7806/Graph-CNN"
# Nuclei-graph GCN: the paper (Sureka et al., IEEE BIBE 2020, ``002_*.txt``) has no official code;
# its RSF layers come from Such et al. 2017, whose reference code fps7806/Graph-CNN
# (src/graphcnn/layers.py, network.py, experiment.py, run_nci1.py) fills the "official code"
# column.
NUCLEI_GCN: tuple[Choice, ...] = (
    Choice(
        "graph radius",
        "100 px (Sec. III.B); the images' scale is not stated",
        "none: graphs are given (NCI1 molecules)",
        _nuclei_radius,
        "paper",
        "the paper's BACH images have 0.42 µm pixels, so 100 px is 42 µm of tissue; images "
        "at another magnification get the same tissue radius, not the same pixel count",
    ),
    Choice(
        "edge weights",
        "1 - d/100 (Eq. 1)",
        "edge features given with the data",
        fixed("1 - d/r (Eq. 1), r the radius in px"),
        "paper",
    ),
    Choice(
        "node features",
        "nuclear features, not named (Sec. III.B)",
        "the dataset's vertex features",
        fixed("18: morphology, stain, texture (graphs.nuclei.FEATURE_NAMES)"),
        "ours",
        "the paper does not list its nucleus features",
    ),
    Choice(
        "layer widths",
        "Table I names the layers, not their widths; 'nearly 300,000 parameters'",
        "64, 64, pool 32, 32, pool 8, FC 256, FC classes (run_nci1.py)",
        _nuclei_widths,
        "ours",
        "the reference's widths with Vertex Conv 3 at 128 and Table I's three FC layers, "
        "for the paper's ~300k parameters",
    ),
    Choice(
        "parameters (RSF, 18 features, 2 classes)",
        "nearly 300,000 (Sec. IV.B)",
        "not stated",
        _nuclei_parameters,
        "paper",
        "counted from the model, batch norm included",
    ),
    Choice(
        "pooling axis",
        "V_emb = Softmax(V) (Eq. 3), axis not stated",
        "softmax over the vertices: pooled nodes are weighted means "
        "(layers.make_graph_embed_pooling, make_softmax_layer axis 1)",
        model_default(_N, "pool_axis"),
        "official",
        "pool_axis='clusters' (a softmax per vertex over the clusters) is kept as a variant",
        value="vertices",
    ),
    Choice(
        "pooled adjacency",
        "A_out = V_emb^T A V_emb (Eq. 3)",
        "S^T A_l S per edge feature l (make_graph_embed_pooling)",
        fixed("S^T A_l S per edge feature l"),
        "both",
    ),
    Choice(
        "assignment logits",
        "'similar to convolution operation given in Equation 2' (Sec. III.C)",
        "a per-vertex linear map (make_embedding_layer, a 0-hop filter)",
        fixed("an RSF convolution (Eq. 2)"),
        "paper",
    ),
    Choice(
        "padded vertices in pooling",
        "not stated",
        "logits multiplied by the 0/1 mask: a padded vertex gets logit 0, a non-zero weight",
        fixed("weight 0 (masked out of the softmax)"),
        "ours",
        "a graph's pooled nodes must not depend on the other graphs padded into its batch",
    ),
    Choice(
        "batch norm after vertex convolutions",
        "not stated",
        "yes, then ReLU (network.make_graphcnn_layer, make_bn with the vertex mask)",
        model_default(_N, "norm"),
        "official",
        value=True,
    ),
    Choice(
        "batch norm + ReLU after pooling",
        "not stated",
        "yes (network.make_graph_embed_pooling)",
        model_default(_N, "pool_norm"),
        "official",
        value=True,
    ),
    Choice(
        "edge convolution (RSF + Edge)",
        "A_out = phi(W X), X the edge and end-node features concatenated (Eq. 4)",
        "none (RSF only)",
        fixed("ReLU(W [v_i + v_k, |v_i - v_k|, a_ik] + b), 4 edge features"),
        "ours",
        "symmetric in i and k, so undirected edges keep one weight; the paper gives no order",
    ),
    Choice(
        "readout",
        "FC 1 after Pooling 2 (Table I)",
        "the 8 pooled vertices flattened into the first FC layer (make_fc_layer)",
        fixed("the pooled nodes flattened into FC 1 (+ Edge Conv 3's edges for RSF + Edge)"),
        "official",
    ),
    Choice(
        "classifier",
        "FC 1, FC 2, FC 3 (Table I)",
        "FC 256 + ReLU, FC classes (run_nci1.py)",
        model_default(_N, "fc"),
        "paper",
        "three FC layers as Table I; widths (256, 64) ours",
    ),
    Choice(
        "optimiser",
        "Adam (Sec. IV.B)",
        "Adam (optimizer='adam', run_nci1.py)",
        fixed("Adam"),
        "both",
    ),  # fmt: skip
    Choice(
        "learning rate",
        "0.01 (Sec. IV.B)",
        "Adam's default 0.001",
        notebook_parameter(_NB07, "lr"),
        "paper",
        value=0.01,
    ),
    Choice(
        "weight decay",
        "not stated",
        "L2 5e-4 on the weights (make_variable_with_weight_decay)",
        train_default("weight_decay"),
        "official",
        "Adam's weight_decay: on every parameter, biases and batch norm too",
        value=5e-4,
    ),
    Choice(
        "epochs",
        "approximately 50 (Sec. IV.B)",
        "1,500 iterations (run_nci1.py)",
        notebook_parameter(_NB07, "epochs"),
        "paper",
        value=50,
    ),
    Choice(
        "batch size",
        "not stated",
        "128 graphs (run_nci1.py)",
        notebook_parameter(_NB07, "batch_size"),
        "ours",
        "the demo has 150 tiles per dataset (90 train per fold): 128 would be one step per epoch",
    ),
    Choice(
        "data augmentation",
        "not stated",
        "none (graphs only cropped to their size)",
        fixed("none"),
        "official",
    ),
    Choice(
        "checkpoint / protocol",
        "not stated (Table II: one accuracy per cell)",
        "10-fold CV, best *test* accuracy reported (max_acc_test, a leak)",
        fixed(
            "stratified k-fold, checkpoint with the lowest loss on a 25 % validation split, "
            "never the test fold"
        ),
        "ours",
        "no test-set checkpoint selection; the loss, not AUC, because AUC ignores the decision "
        "threshold that Table II's accuracy depends on (07's select)",
    ),
    Choice(
        "segmentation",
        "UNet (Sec. III.B)",
        "none: graphs are given",
        fixed("see the segmentation table (notebook 07)"),
        "ours",
        "the segmenter of each profile is chosen and recorded in the segmentation table",
    ),
)

# ABiG-Net: the paper (arXiv 2510.13188; only its abstract was readable) and Paul1086/ABiG_Net
# (abignet_model.py, abignet_train.py, run_training.py, abignet_data.py, the feature scripts).
_A = "abignet_official"
_ABIG_PAPER = "not in the abstract"


def abignet_train_default(field: str) -> Callable[[], object]:
    """Our value: the default of :class:`wsigraph.train.bilevel.OfficialBilevelConfig`."""

    def get():
        from wsigraph.train.bilevel import OfficialBilevelConfig

        return {f.name: f.default for f in dataclasses.fields(OfficialBilevelConfig)}[field]

    return get


def abignet_feature_setting(name: str) -> Callable[[], object]:
    """Our value: a constant of :mod:`wsigraph.graphs.abignet_features` (``FEATURE_NAMES`` as its
    length)."""

    def get():
        from wsigraph.graphs import abignet_features

        value = getattr(abignet_features, name)
        return len(value) if name == "FEATURE_NAMES" else value

    return get


def abignet_iterations(profile: str = "tcga") -> Callable[[], object]:
    """Our value: the official model's iterations in a profile (``extra["abignet"]``)."""

    def get():
        from wsigraph.profiles import get_profile

        return get_profile(profile).extra["abignet"]["iterations"]

    return get


def abignet_demo_setting(*names: str) -> Callable[[], object]:
    """Our value: settings of the demo profile's ``extra["abignet"]`` (08_abignet on demo)."""

    def get():
        from wsigraph.profiles import get_profile

        extra = get_profile("demo").extra["abignet"]
        return tuple(extra[n] for n in names) if len(names) > 1 else extra[names[0]]

    return get


ABIGNET: tuple[Choice, ...] = (
    Choice(
        "segmentation",
        _ABIG_PAPER,
        "StarDist 2D_versatile_he, prob 0.2, nms 0.25 (extract_nuclear_props_stardist.py)",
        fixed("the project's segmenter (classical_nuclei) or the user's instance masks"),
        "ours",
        "StarDist's pretrained weights cannot be downloaded here; 08_abignet reads a folder of "
        "StarDist (or any) label maps instead (label_dir)",
    ),
    Choice(
        "patch features",
        "features of local structure from cellular orientation (abstract)",
        "69: 51 Voronoi / Delaunay / MST / k-NN statistics (vor_del_mst_nn_features.m) + 18 "
        "cell-graph statistics (extract_cell_graph_features.py), combine_patch_features.py",
        abignet_feature_setting("FEATURE_NAMES"),
        "official",
        value=69,
    ),
    Choice(
        "cell-graph radius (px)",
        _ABIG_PAPER,
        "64 (extract_cell_graph_features.py)",
        abignet_feature_setting("RADIUS"),
        "official",
        value=64.0,
    ),
    Choice(
        "cell-graph cosine threshold",
        _ABIG_PAPER,
        "0.70 on the nucleus properties (extract_cell_graph_features.py)",
        abignet_feature_setting("MIN_COSINE"),
        "official",
        value=0.70,
    ),
    Choice(
        "nuclei a patch needs (more than)",
        _ABIG_PAPER,
        "64: patches with <= 64 nuclei skipped (extract_cell_graph_features.py)",
        abignet_feature_setting("MIN_NUCLEI"),
        "official",
        value=64,
    ),
    Choice(
        "demo only: patch size (px), nuclei a patch needs, cell-graph radius (px)",
        _ABIG_PAPER,
        "pre-cut patches of unstated size; > 64 nuclei; 64 px",
        abignet_demo_setting("official_patch_size", "min_nuclei", "cell_radius"),
        "ours",
        "the demo ROIs (data.synthetic_rois) are 8 x 8 patches of 64 px with 12-36 small nuclei, "
        "so that 08 runs in minutes on 2 cores; a 64 px radius would join every pair of a "
        "64 px patch. Real data (tcga profile) uses the official values",
    ),
    Choice(
        "demo only: iterations, ROIs per class, folds, rows not run",
        _ABIG_PAPER,
        "200 iterations; the real Extended CRC and melanoma sets; every row is the paper's",
        abignet_demo_setting("iterations", "n_per_class", "folds", "skip_rows"),
        "ours",
        "08 must run in 4.5 minutes on 2 cores: the demo trains the official model for few "
        "iterations and spends the rest on ROIs (synthetic look-alike groups, "
        "data.synthetic_rois); our orientation variant and its fixed k-NN ablation read 'not "
        "run on demo'. Real data (tcga profile) runs 200 iterations and every row",
    ),
    Choice(
        "demo only: nuclei masks",
        _ABIG_PAPER,
        "StarDist 2D_versatile_he (extract_nuclear_props_stardist.py)",
        abignet_demo_setting("segmenter"),
        "ours",
        "the synthetic generator's ground-truth instance masks: the demo tests the graph, "
        "not a segmenter",
    ),
    Choice(
        "feature scaling",
        _ABIG_PAPER,
        "StandardScaler fitted on the training images' patches (abignet_data.py)",
        abignet_train_default("standardize"),
        "official",
        value=True,
    ),
    Choice(
        "generator (pair MLP widths)",
        "a learned sparse global graph (abstract)",
        "[x_i || x_j] 2F -> 32 -> 16 -> 1, ReLU (AdjacencyGenerator)",
        model_default(_A, "generator_hidden"),
        "official",
        value=(32, 16),
    ),
    Choice(
        "edge sampling",
        _ABIG_PAPER,
        "binary Gumbel-sigmoid, one Gumbel draw per entry, soft (hard=False); KL prior off "
        "(beta_kl = 0)",
        fixed("binary Gumbel-sigmoid, one Gumbel draw per entry, soft; no KL term"),
        "official",
    ),
    Choice(
        "temperature (start, factor per iteration, floor)",
        _ABIG_PAPER,
        "1.0, x0.98 before each iteration, floor 0.1 (bilevel_train)",
        lambda: tuple(abignet_train_default(f)() for f in ("tau_init", "tau_decay", "tau_min")),
        "official",
        value=(1.0, 0.98, 0.1),
    ),
    Choice(
        "symmetrisation",
        _ABIG_PAPER,
        "(A + A^T) / 2, diagonal set to 1",
        fixed("(A + A^T) / 2, diagonal 1"),
        "official",
    ),
    Choice(
        "sparsity penalty (L1 weight)",
        "sparse connections (abstract)",
        "1e-5 x mean |A| over all n^2 entries, validation loss only (sparsity_loss)",
        abignet_train_default("l1"),
        "official",
        value=1e-5,
    ),
    Choice(
        "GCN widths",
        _ABIG_PAPER,
        "69 -> 64 -> 512 -> 1024 dense GCN, D^-1/2 A D^-1/2 (degree floor 1e-8), W ~ 0.01 N(0,1)",
        model_default(_A, "widths"),
        "official",
        value=(64, 512, 1024),
    ),
    Choice(
        "normalisation layer",
        _ABIG_PAPER,
        "LayerNorm after each GCN layer, then ReLU (DenseGCN)",
        fixed("LayerNorm after each GCN layer, then ReLU"),
        "official",
    ),
    Choice("dropout", _ABIG_PAPER, "0.2", model_default(_A, "dropout"), "official", value=0.2),
    Choice(
        "readout",
        _ABIG_PAPER,
        "node means of the 3 layers (after dropout) concatenated, 1600",
        fixed("node means of the 3 layers (after dropout) concatenated, 1600"),
        "official",
    ),
    Choice(
        "classifier",
        _ABIG_PAPER,
        "1600 -> 256 -> 32 -> classes, ReLU and dropout between",
        model_default(_A, "head"),
        "official",
        value=(256, 32),
    ),
    Choice(
        "bilevel scheme",
        "first-order approximate bilevel optimisation (abstract)",
        "alternating full passes: training pass steps the GCN, validation pass the generator; "
        "one image per step, batch size 1 (bilevel_train, run_training.py)",
        fixed("alternating full passes, one image per step: GCN on train, generator on val"),
        "both",
    ),
    Choice(
        "optimisers (GCN lr, generator lr)",
        _ABIG_PAPER,
        "Adam 1e-4 (GCN), Adam 1e-3 (generator), no weight decay",
        lambda: (abignet_train_default("lr_gcn")(), abignet_train_default("lr_gen")()),
        "official",
        value=(1e-4, 1e-3),
    ),
    Choice(
        "gradient clip (generator)",
        _ABIG_PAPER,
        "norm 1.0 (train_upper_level)",
        abignet_train_default("clip"),
        "official",
        value=1.0,
    ),
    Choice(
        "iterations",
        _ABIG_PAPER,
        "200 (--num-iterations)",
        abignet_iterations("tcga"),
        "official",
        value=200,
    ),
    Choice(
        "evaluation adjacency",
        _ABIG_PAPER,
        "a fresh Gumbel-sigmoid sample (noisy predictions)",
        model_default(_A, "eval_sample"),
        "ours",
        "deterministic by default: the expected adjacency E_u[sigmoid((l + g(u)) / tau)] "
        "(64-quantile midpoint rule), symmetrised, diagonal 1; eval_sample=True is the "
        "official noisy evaluation",
    ),
    Choice(
        "checkpoint",
        _ABIG_PAPER,
        "the last iteration (the test accuracy is also printed every iteration)",
        abignet_train_default("checkpoint"),
        "official",
        "checkpoint='val' (best validation AUC, ties by loss) is an option; the test fold is "
        "evaluated once, at the end, never during training",
        value="last",
    ),
    Choice(
        "splits",
        "accuracy mean ± std over folds (abstract)",
        "fixed train / val / test image lists on the command line (run_training.py)",
        fixed(
            "stratified k-fold x repeats of the profile, 25 % of each training split as validation"
        ),
        "ours",
        "the image lists of the paper's folds are not published; the validation part trains "
        "the generator as in the official code",
    ),  # fmt: skip
    Choice(
        "seed",
        _ABIG_PAPER,
        "101, once (set_seed); cudnn deterministic",
        abignet_train_default("seed"),
        "ours",
        "base seed 0, one derived seed per fold (fold_seed), so every fold is reproducible",
    ),
)


def _demo_extra(key: str) -> dict:
    """The demo profile's demo-only settings of one notebook (``extra[key]``)."""
    from wsigraph.profiles import get_profile  # late: profiles imports much of the package

    return dict(get_profile("demo").extra.get(key, {}))


def _mico(field: str) -> Callable[[], object]:
    """Our value: a field of MiCo's official protocol as :mod:`wsigraph.train.mico` runs it."""

    def get():
        from wsigraph.train.mico import OFFICIAL

        return getattr(OFFICIAL, field)

    return get


def _mico_model(field: str) -> Callable[[], object]:
    """Our value: the row "MiCo"'s model setting (its config over :class:`MiCoConfig`)."""

    def get():
        from wsigraph.models.mico import ROW_CONFIGS, MiCoConfig

        return getattr(MiCoConfig(**ROW_CONFIGS["MiCo"]), field)

    return get


def _mico_schedule() -> str:
    from wsigraph.nn.mico import MiCoMIL
    from wsigraph.train.mico import OFFICIAL

    net = MiCoMIL(4, n_clusters=OFFICIAL.n_clusters, n_layers=_mico_model("n_layers")(), dim=4)
    return " -> ".join(map(str, net.schedule))


def _mico_optimiser() -> str:
    from wsigraph.train.optim import LOOKAHEAD_ALPHA, LOOKAHEAD_K

    return f"Lookahead(RAdam), k={LOOKAHEAD_K}, alpha={LOOKAHEAD_ALPHA}"


# MiCo: the README of the paper (MICCAI 2025, ``../shared/papers``; its tables were not
# reachable) and junjianli106/MiCo (models/MiCo.py, run_clustering.py, datasets/, utils/utils.py,
# MyOptimizer/, Survival/*/MiCo.yaml, Cls/*/MiCo.yaml, splits/).
_MP = "abstract / README"
MICO: tuple[Choice, ...] = (
    Choice(
        "anchors",
        f"cluster centroids serve as semantic anchors ({_MP})",
        "one learnable [64, D] matrix shared by all slides, initialised from a k-means file "
        "(models/MiCo.py cluster_centers)",
        _mico_model("anchors"),
        "official",
        "the per-slide-centroid design is the row 'MiCo (per-slide anchors)'",
        value="learned",
    ),
    Choice(
        "k-means scope",
        "not stated",
        "first 20 feature files (sorted) of the whole dataset, test slides included "
        "(run_clustering.py --n_files 20)",
        fixed("first 20 training slides (sorted) of each fold, recomputed per fold"),
        "ours",
        "never a validation or test slide: the official scope lets test features shape the "
        "initial anchors (a leak we do not copy)",
    ),
    Choice(
        "k-means algorithm",
        "not stated",
        "faiss Clustering, 20 iterations, faiss's default init (run_clustering.py)",
        lambda: f"scikit-learn KMeans (k-means++, seeded), {_mico('kmeans_iters')()} iterations",
        "ours",
        "faiss is not installed here; same iteration count, seeded so the fold is reproducible",
    ),
    Choice(
        "clusters (anchors)",
        "64 in the README's run_clustering.py command",
        "64 (num_clusters, all configs)",
        _mico("n_clusters"),
        "both",
        "fewer only when the fold's 20 training slides hold fewer instances (then one per "
        "instance, with a warning)",
        value=64,
    ),
    Choice(
        "enhancer stages",
        "not stated",
        "3 (num_enhancers)",
        _mico_model("n_layers"),
        "official",
        value=3,
    ),
    Choice(
        "similarity",
        "not stated",
        "l2: -cdist(patch, anchor) (similarity_method='l2')",
        _mico_model("similarity"),
        "official",
        value="l2",
    ),
    Choice(
        "assignment scale",
        "not stated",
        "softmax(sim / similarity_scale), one learnable scalar shared by the 3 stages, init 1",
        fixed("one learnable scalar per stage, init 1, clamped to >= 1e-2"),
        "ours",
        "identical at initialisation (tests/test_mico_official.py ties them to check the "
        "official forward); per stage lets each stage sharpen on its own",
    ),
    Choice(
        "hard assignment",
        "not stated",
        "False (hard=False; straight-through when True)",
        _mico_model("hard"),
        "official",
        value=False,
    ),
    Choice(
        "cluster reducer",
        "Cluster Reducer consolidates anchors",
        "MLP over the anchor axis, 64 -> 32 -> 16 -> 8 (ClusterReducer)",
        _mico_schedule,
        "official",
        value="64 -> 32 -> 16 -> 8",
    ),
    Choice(
        "embedding width",
        "not stated",
        "512 (embedding_dim)",
        _mico_model("dim"),
        "official",
        "the demo runs 128 (44-d demo features)",
        value=512,
    ),
    Choice("dropout", "not stated", "0.05 (drop)", _mico_model("dropout"), "official", value=0.05),
    Choice(
        "pooling",
        "not stated",
        "gated attention over all patches and the last 8 anchors, anchors appended once per "
        "slide of the patient",
        fixed("gated attention over all patches and the last 8 anchors, once per slide"),
        "official",
    ),
    Choice(
        "survival bins / loss",
        "discrete-time survival",
        "4 bins (n_classes: 4), NLLSurvLoss alpha_surv 0",
        fixed("4 quantile bins of the uncensored times, NLL, alpha 0"),
        "official",
    ),
    Choice(
        "bags",
        "not stated",
        "survival: all slides of a patient (datasets/prog_data.py); subtyping: one slide "
        "(datasets/cls_data.py)",
        fixed("survival: all slides of a case pooled; subtyping: one slide"),
        "official",
    ),
    Choice(
        "folds",
        "not stated in the README",
        "4 fixed folds, train / val / test CSV per fold (splits/4foldcv, splits/4foldcls)",
        _mico("folds"),
        "official",
        value=4,
    ),
    Choice(
        "validation share",
        "not stated",
        "~20 % of the non-test cases (TCGA-BRCA fold 0: 153 of 772)",
        _mico("val_fraction"),
        "official",
        value=0.2,
    ),
    Choice(
        "split unit",
        "not stated",
        "survival: by case; subtyping: by slide (BRCA fold 0 puts 16 cases in train and test)",
        fixed("by case, both tasks"),
        "ours",
        "a case never straddles train and test; the official subtyping CSVs leak some cases",
    ),
    Choice(
        "checkpoint",
        "not stated",
        "best validation macro-F1 (subtyping) / lowest validation loss (survival), "
        "ModelCheckpoint in utils/utils.py",
        fixed("best validation macro-F1 (subtyping) / lowest validation loss (survival)"),
        "official",
    ),
    Choice(
        "early stopping",
        "not stated",
        "patience 8 on the checkpoint's monitor",
        _mico("patience"),
        "official",
        value=8,
    ),
    Choice(
        "optimiser",
        "not stated",
        "lookahead_radam: Lookahead(RAdam), k=6, alpha=0.5 (MyOptimizer/)",
        _mico_optimiser,
        "official",
        value="Lookahead(RAdam), k=6, alpha=0.5",
    ),
    Choice(
        "learning rate",
        "not stated",
        "2e-4",
        _mico("lr"),
        "official",
        "demo only: the demo's 2e-3 on standardised features (train.mico.profile_protocol)",
        value=2e-4,
    ),
    Choice(
        "weight decay",
        "not stated",
        "1e-5, decoupled, none on biases and 1-D parameters (optim_factory.add_weight_decay)",
        _mico("weight_decay"),
        "official",
        value=1e-5,
    ),
    Choice(
        "bags per step",
        "not stated",
        "batch_size 1, grad_acc 2",
        lambda: f"{_mico('batch_size')()} bag, {_mico('grad_accumulation')()} accumulated",
        "official",
        value="1 bag, 2 accumulated",
    ),
    Choice(
        "epochs",
        "not stated",
        "200 (with early stopping)",
        profile_value("epochs"),
        "ours",
        "the profile's epochs (tcga 50; demo: extra['mico']) with the official early stopping",
    ),
    Choice(
        "precision",
        "not stated",
        "fp16 (precision: 16)",
        fixed("fp32"),
        "ours",
        "fp32 runs the same on CPU and GPU; the model is small",
    ),
    Choice(
        "feature standardisation",
        "not stated",
        "none",
        _mico("standardize"),
        "official",
        "demo only: z-scored with the training split's statistics, as every demo row (raw, at "
        "2e-4, MiCo stayed at chance on a demo subtyping column: AUC 48.5 +- 4.6)",
        value=False,
    ),
    Choice(
        "features",
        "CLAM-pipeline patch features (README 3.1)",
        "CONCH v1.5, 768-d (dim_in: 768; feats-m20-s448-conch_v1_5)",
        profile_value("encoder"),
        "ours",
        "CONCH weights are not reachable here: the tcga profile's encoder; the demo's are "
        "synthetic 32-d patch features (wsigraph.data.synthetic_mico: tissue prototypes + noise)",
    ),
    Choice(
        "determinism",
        "not stated",
        "seed 2024, Lightning deterministic=True",
        fixed("fold seed, one intra-op thread, deterministic algorithms"),
        "ours",
        "the thread count changed the last bits and then the checkpoint; now pinned",
    ),
    Choice(
        "demo run size",
        "not stated",
        "200 epochs with early stopping; whole TCGA cohorts",
        lambda: ", ".join(f"{k} {v}" for k, v in _demo_extra("mico").items()),
        "ours",
        "demo only (profiles._DEMO.extra['mico']): slides per synthetic subtyping column and of "
        "the survival column, the epoch caps, and the per-slide-anchors variant not run on "
        "survival, sized for the 30-minute demo run. The official early stopping still applies: "
        "a 40-epoch cap gave the same per-fold numbers on the nsclc subtyping column, and on the "
        "960-slide survival column every MiCo fold stopped early (epochs 12-19) before the cap "
        "of 20",
    ),
    Choice(
        "demo cohorts",
        "TCGA-BRCA, TCGA-NSCLC (subtyping); seven TCGA cohorts (survival)",
        "the same",
        fixed("demo: synthetic co-occurrence cohorts nsclc, brca, kirp (synthetic_mico)"),
        "ours",
        "no TCGA data on demo: the label is which dispersed tissue types co-occur, the quantity "
        "MiCo says it models; controls on the slide mean must fail (issue 17)",
    ),
    Choice(
        "paper numbers",
        "per-cohort tables not reachable (mean c-index 0.680 over 7 cohorts in the summary)",
        "none",
        fixed("paper cells stay '-'"),
        "ours",
        "never filled from anything but the paper",
    ),
)

CHOICES: dict[str, tuple[Choice, ...]] = {
    "H2-MIL": H2MIL,
    "HIGT": HIGT,
    "Nuclei GCN": NUCLEI_GCN,
    "ABiG-Net": ABIGNET,
    "MiCo": MICO,
}

# A lead sentence for tables whose "official code" column is not the paper's own code.
LEADS = {
    "Nuclei GCN": f"The paper has no official code: the 'official code' column is the RSF "
    f"reference code {_REF} (Such et al. 2017), the layers' origin.",
}


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(_show(v) for v in value) + ")"
    return "none" if value is None else str(value)


def comparison_table(paper: str) -> pd.DataFrame:
    """The paper / official code / ours table of ``paper`` (a key of :data:`CHOICES`)."""
    try:
        choices = CHOICES[paper]
    except KeyError:
        raise ValueError(f"unknown paper {paper!r}; known: {', '.join(CHOICES)}") from None
    return pd.DataFrame(
        [
            {
                "item": c.item,
                "paper": c.paper,
                "official code": c.official,
                "ours": _show(c.ours()),
                "ours follows": c.follows,
                "note": c.note,
            }
            for c in choices
        ]
    )


def write_comparisons(out_dir: str | Path) -> list[Path]:
    """``<paper>_paper_official_ours.md`` and ``.csv`` for every paper, in ``out_dir``."""
    out_dir = Path(out_dir)
    written = []
    for paper in CHOICES:
        df = comparison_table(paper)
        stem = paper.lower().replace("-", "").replace(" ", "_") + "_paper_official_ours"
        title = f"# {paper}: paper / official code / ours\n\n"
        lead = (
            "Generated from the code's defaults (`wsigraph.provenance`); 'ours' is what the "
            "`tcga` profile runs.\n\n"
        )
        if paper in LEADS:
            lead = LEADS[paper] + " " + lead
        write_text(out_dir / f"{stem}.md", title + lead + markdown_grid(df))
        write_text(out_dir / f"{stem}.csv", df.to_csv(index=False))
        written += [out_dir / f"{stem}.md", out_dir / f"{stem}.csv"]
    return written
