"""MiCo (Li et al., MICCAI 2025) as a slide-level model on our pyramid graphs.

The layers and their equations are in :mod:`wsigraph.nn.mico`; this file decides what MiCo
reads from a batch of pyramid graphs: the patches of one level (``level=2``, 10x, the deepest
level, as the single-resolution baselines of :mod:`wsigraph.models.baselines`) are the
instances. If the graphs carry per-slide cluster labels (``mico_cluster [num_nodes]``, -1 off
the level; written by :func:`wsigraph.data.clusters.attach_clusters` from the per-slide k-means
cache), they are the anchors' clusters; otherwise each slide is clustered inside the model with
:func:`wsigraph.nn.mil.bag_kmeans`.

It also reads *bags* (no ``level``; every node an instance): the patient bags and slide bags
of :mod:`wsigraph.train.mico`, which runs the row "MiCo" as its authors did (``anchors="learned"``,
anchors k-means-initialised per fold on training slides, Lookahead-RAdam, 4 folds of the cases);
``anchors="slide"`` is our variant "MiCo (per-slide anchors)" (:data:`ROW_CONFIGS`).

For survival, build it (like any registered model) with ``n_classes = n_bins``: the logits are
the discrete-time hazard logits (:mod:`wsigraph.train.survival`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsigraph.data.clusters import CLUSTER_KEY
from wsigraph.models import register
from wsigraph.nn.ihpool import from_batch
from wsigraph.nn.mico import MiCoMIL


@dataclass
class MiCoConfig:
    """MiCo's settings (:class:`wsigraph.nn.mico.MiCoMIL` documents each).

    ``anchor_init`` is the path of a ``[n_clusters, F]`` tensor (``torch.save``) of initial
    learned anchors (``anchors="learned"`` only), as the official ``cluster_init_path``.
    """

    dim: int = 512
    n_clusters: int = 64
    n_layers: int = 3
    dropout: float = 0.05
    anchors: str = "slide"
    similarity: str = "l2"
    hard: bool = False
    kmeans_iters: int = 10
    anchor_init: str | None = None
    level: int = 2


@register("mico")
class MiCo(nn.Module):
    """MiCo on a PyG ``Batch`` of pyramid graphs: ``forward(batch) -> logits [B, C]``.

    Args:
        in_dim (int): Node feature size.
        n_classes (int): Classes, or survival bins.
        **config: fields of :class:`MiCoConfig` (unknown names raise ``TypeError``, which
            :func:`wsigraph.models.build_model` turns into a ``ValueError``).
    """

    def __init__(self, in_dim: int, n_classes: int, **config):
        super().__init__()
        self.config = MiCoConfig(**config)
        cfg = self.config
        if cfg.level < 1:
            raise ValueError(f"level must be a patch level (>= 1), got {cfg.level}")
        init = None
        if cfg.anchor_init is not None:
            if cfg.anchors != "learned":
                raise ValueError("anchor_init needs anchors='learned'")
            init = torch.load(cfg.anchor_init, map_location="cpu", weights_only=True)
            init = torch.as_tensor(init, dtype=torch.float32)
        options = {k: v for k, v in asdict(cfg).items() if k not in ("anchor_init", "level")}
        self.net = MiCoMIL(in_dim, n_classes, anchor_init=init, **options)

    def inputs(self, data) -> tuple[Tensor, Tensor, int, Tensor | None]:
        """Instances of ``level``: ``x [N_l, F]``, slide ``[N_l]``, slide count, cluster or ``None``.

        A batch of *bags* (:func:`wsigraph.train.mico.patient_bags` / ``slide_bags``: no
        ``level``) is taken as it is: every node is an instance."""
        cluster = getattr(data, CLUSTER_KEY, None)
        if getattr(data, "level", None) is None:
            batch = getattr(data, "batch", None)
            if batch is None:
                batch = torch.zeros(data.num_nodes, dtype=torch.long, device=data.x.device)
            return data.x, batch, int(getattr(data, "num_graphs", 1)), cluster
        p = from_batch(data)
        keep = p.level == self.config.level
        if cluster is not None:
            cluster = cluster[keep]
            if cluster.numel() and int(cluster.min()) < 0:
                raise ValueError(
                    f"{CLUSTER_KEY} has no cluster for some level-{self.config.level} nodes; "
                    "cluster the slides at this level (wsigraph.data.clusters.attach_clusters)"
                )
        return p.x[keep], p.batch[keep], p.num_graphs, cluster

    def forward(self, data) -> Tensor:
        return self.outputs(data)["logits"]  # [B, C]

    def outputs(self, data) -> dict[str, Tensor]:
        """:meth:`MiCoMIL.outputs`; a patient bag's last anchors join its tokens once per slide
        (``n_slides``), as the official survival forward does."""
        copies = getattr(data, "n_slides", None) if self.config.anchors == "learned" else None
        return self.net.outputs(*self.inputs(data), copies=copies)

    def training_loss(self, data, weight: Tensor | None = None) -> Tensor:
        """Cross-entropy of the logits (MiCo has no auxiliary loss)."""
        return F.cross_entropy(self(data), data.y, weight=weight)

    def extra_repr(self) -> str:
        return f"level={self.config.level}"


# What the MiCo notebook (09_mico) runs: table row names of our models, which of our datasets
# stands in for which column of the paper's tables, and MiCo's size per profile.
TABLE_ROWS = {"abmil": "ABMIL", "clam-sb": "CLAM-SB", "dsmil": "DS-MIL", "mico": "MiCo"}
# The two MiCo rows: "MiCo" is the official model (learned anchors shared by every slide,
# k-means-initialised per fold on training slides, wsigraph.train.mico); the per-slide-centroid
# design is our variant.
ROW_CONFIGS = {"MiCo": {"anchors": "learned"}, "MiCo (per-slide anchors)": {"anchors": "slide"}}
STAND_INS = {
    # tcga: adeno vs squamous ~ LUAD vs LUSC; demo: the synthetic columns of the same names
    # (wsigraph.data.synthetic_mico.DEMO_SPECS)
    "mico_table1": {"esca": "nsclc", "kica": "brca", "nsclc": "nsclc", "brca": "brca"},
    # tcga: KIRP+KICH ~ KIRP, ESCA not in the paper; demo: the synthetic survival column
    "mico_table2": {"kica": "kirp", "esca": None, "kirp": "kirp"},
}


def profile_config(
    profile_name: str, n_clusters: int | None = None, dim: int | None = None
) -> dict:
    """MiCo's ``model_config`` for a profile: the official 64 anchors and 512-d embedding,
    except on ``demo`` (about 100 patches of 44-d features per slide): 16 anchors, 128-d.
    Explicit ``n_clusters`` / ``dim`` win."""
    demo = profile_name == "demo"
    return {
        "n_clusters": n_clusters or (16 if demo else 64),
        "dim": dim or (128 if demo else 512),
    }
