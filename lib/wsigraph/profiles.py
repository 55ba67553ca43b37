"""Profiles: every path and every profile-dependent value, in one place.

Two profiles exist:

``demo`` (the default)
    No network, no GPU, no weights. A deterministic synthetic cohort of small
    OpenSlide-readable pyramidal TIFF slides (see :mod:`wsigraph.data.synthetic`) plus the
    real fixture slide ``data/wsi/CMU-1-Small-Region.svs`` (unlabelled; it goes through
    tiling, features and graphs so the demo also exercises a real Aperio file).
    Patches are 64 px instead of the papers' 512 px and the ``demo`` filter-bank encoder
    replaces KimiaNet, so that everything runs on 2 CPU cores. Demo numbers are demo numbers.

``tcga``
    The papers' setting: TCGA diagnostic slides from the NCI GDC, 512 x 512 patches at
    5x and 10x plus the thumbnail node, KimiaNet (DenseNet-121) 1024-d features from a weights
    file the user supplies, 5 x 5-fold CV, 50 epochs. Needs a CUDA GPU to be practical.

Precedence: environment variable > profile default > nothing. The environment variables are
``WSIGRAPH_WORK`` (root of the work folders), ``WSIGRAPH_RESULTS`` (root of ``results/``) and
``WSIGRAPH_SHARED_DATA`` (optional larger real extras, default ``../shared/data`` beside the
repo; the small real fixtures ship in the repository's ``data/``, see :func:`data_file`).
Experiment knobs a reader changes per run live in each notebook's ``parameters`` cell.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DemoDataset:
    """One synthetic dataset of the demo cohort, mirroring a TCGA cohort of the papers.

    Class counts follow the ratios of H2-MIL's cohorts (typing and staging drawn jointly so
    that both marginals hold exactly; see :func:`wsigraph.data.synthetic.assign_labels`).
    """

    name: str
    n_slides: int
    typing_classes: tuple[str, str]
    typing_minority: int  # slides of typing class 1
    staging_minority: int  # slides of staging class 1 (late, III-IV)
    seed: int


@dataclass(frozen=True)
class Profile:
    """All profile-dependent settings. Use :func:`get_profile` rather than building one."""

    name: str
    # Cohort ------------------------------------------------------------------------------
    datasets: tuple[str, ...]
    demo_datasets: tuple[DemoDataset, ...] = ()
    include_real_slide: bool = False
    slide_size: tuple[int, int] = (2048, 1536)  # synthetic slides, level-0 (width, height)
    slide_base_mag: float = 20.0  # synthetic slides' objective power (AppMag)
    slide_mpp: float = 0.5  # synthetic slides' microns per pixel at level 0
    # Tiling (H2-MIL: thumbnail + 5x + 10x, 512 px patches) ------------------------------
    magnifications: tuple[float, ...] = (5.0, 10.0)
    patch_size: int = 512
    thumbnail_side: int = 1024  # longest side of the thumbnail the tissue mask is computed on
    min_tissue: float = 0.5  # minimum tissue-mask fraction of a patch
    rgb_var_threshold: float = 100.0  # H2-MIL's background filter: RGB variance below this
    # Features -----------------------------------------------------------------------------
    encoder: str = "kimianet"
    batch_size: int = 64
    num_workers: int = 2
    # Training protocol (H2-MIL / HIGT) ---------------------------------------------------
    folds: int = 5
    repeats: int = 5
    epochs: int = 50
    lr: float = 5e-4  # H2-MIL tunes {5e-4, 1e-4, 5e-5}
    train_batch_size: int = 8  # slides per optimiser step (HIGT: 8; H2-MIL does not say)
    extra: dict = field(default_factory=dict)

    # Paths --------------------------------------------------------------------------------
    @property
    def work_dir(self) -> Path:
        """Root of this profile's intermediate files (slides, features, graphs, checkpoints)."""
        root = os.environ.get("WSIGRAPH_WORK")
        return (Path(root) if root else REPO_ROOT / "work") / self.name

    @property
    def results_dir(self) -> Path:
        """``results/<profile>``: executed notebooks, tables, figures, run records."""
        root = os.environ.get("WSIGRAPH_RESULTS")
        return (Path(root) if root else REPO_ROOT / "results") / self.name

    @property
    def slides_dir(self) -> Path:
        return self.work_dir / "slides"

    @property
    def features_dir(self) -> Path:
        return self.work_dir / "features"

    @property
    def graphs_dir(self) -> Path:
        return self.work_dir / "graphs"

    @property
    def cohort_csv(self) -> Path:
        """The cohort manifest written by ``01_cohort``: one row per slide."""
        return self.work_dir / "cohort.csv"

    def with_demo_size(
        self, n_slides: int | None = None, slide_size: tuple[int, int] | None = None
    ) -> Profile:
        """A demo profile with ``n_slides`` per dataset (class ratios kept) and/or a slide size.

        Used by notebooks' parameters (``n_slides``, ``slide_size``) for quick runs and tests.

        Raises:
            ValueError: ``n_slides`` below 4, or a ``slide_size`` the tiling cannot use (see
                :meth:`check_slide_size`).
        """
        out = self
        if n_slides is not None:
            if not _whole(n_slides) or n_slides < 4:
                raise ValueError(
                    "n_slides must be a whole number >= 4 so both classes of both tasks exist, "
                    f"got {n_slides!r}"
                )

            def scaled(k: int, n: int) -> int:
                return min(n_slides - 1, max(1, round(k * n_slides / n)))

            out = replace(
                out,
                demo_datasets=tuple(
                    replace(
                        d,
                        n_slides=n_slides,
                        typing_minority=scaled(d.typing_minority, d.n_slides),
                        staging_minority=scaled(d.staging_minority, d.n_slides),
                    )
                    for d in self.demo_datasets
                ),
            )
        if slide_size is not None:
            out = replace(out, slide_size=self.check_slide_size(slide_size))
        return out

    @property
    def min_slide_side(self) -> int:
        """Smallest side, in level-0 px, of a synthetic slide the tiling can use: one patch at
        the coarsest magnification (demo: a 64 px patch at 5x is 256 px of the 20x level 0)."""
        return math.ceil(self.patch_size * self.slide_base_mag / min(self.magnifications))

    def check_slide_size(self, slide_size) -> tuple[int, int]:
        """``slide_size`` as ``(width, height)`` after checking it is two whole numbers of at
        least :attr:`min_slide_side` px (the message says the minimum and why)."""
        ok = isinstance(slide_size, list | tuple) and len(slide_size) == 2
        if not ok or not all(_whole(v) for v in slide_size):
            raise ValueError(
                f"slide_size must be [width, height] in level-0 px, two whole numbers, got "
                f"{slide_size!r}"
            )
        least = self.min_slide_side
        if min(slide_size) < least:
            raise ValueError(
                f"slide_size {list(slide_size)} is too small: each side must be at least {least} "
                f"px, one {self.patch_size} px patch at {min(self.magnifications):g}x (the "
                f"coarsest magnification) on the slides' {self.slide_base_mag:g}x level 0; "
                f"[{2 * least}, {2 * least}] gives a pyramid of 2 x 2 patches at "
                f"{min(self.magnifications):g}x"
            )
        return int(slide_size[0]), int(slide_size[1])

    def with_overrides(self, **values) -> Profile:
        """A copy with some fields replaced; unknown names raise a clear error."""
        unknown = sorted(set(values) - set(self.__dataclass_fields__))
        if unknown:
            allowed = ", ".join(sorted(self.__dataclass_fields__))
            raise ValueError(f"unknown profile setting(s) {unknown}; allowed: {allowed}")
        return replace(self, **values)


def _whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


#: The repository's own small real fixtures (origins and licences in ``data/README.md``).
DATA_DIR = REPO_ROOT / "data"


def shared_data_dir() -> Path:
    """Optional larger real extras: ``WSIGRAPH_SHARED_DATA``, default ``../shared/data`` beside
    the repo (it may not exist; nothing the demo or the default tests need lives only there)."""
    env = os.environ.get("WSIGRAPH_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def data_file(relative: str | os.PathLike) -> Path:
    """A real data file or folder by its path relative to a data folder (e.g.
    ``"wsi/CMU-1-Small-Region.svs"``): the repository's own ``data/`` first, then
    :func:`shared_data_dir` (``WSIGRAPH_SHARED_DATA``).

    Raises:
        FileNotFoundError: in neither place; the message names both and the variable.
    """
    roots = (DATA_DIR, shared_data_dir())
    for root in roots:
        if (root / relative).exists():
            return root / relative
    raise FileNotFoundError(
        f"{relative} is neither under {roots[0]} nor under {roots[1]}; set "
        "WSIGRAPH_SHARED_DATA to a folder that holds it"
    )


def real_fixture_slide() -> Path:
    """The real Aperio slide used by the demo profile and the tests (CC0, OpenSlide test data)."""
    return data_file("wsi/CMU-1-Small-Region.svs")


# Demo: ratios of H2-MIL's cohorts (ESCA typing squamous 86 / adenocarcinoma 49, staging 80/55;
# KICA typing KIRP 192 / KICH 83, staging 205/70; class names by the data, as in
# wsigraph.data.cohort.PAPER_COUNTS: both papers swap the ESCA names) scaled to 200 slides each,
# so that a 5-fold test fold holds 40 slides (issue 17: enough slides to read differences).
_CONTROLS = [
    "LR on slide means (Thu.)",
    "LR on slide means (Mid.)",
    "LR on slide means (Bot.)",
    "LR on slide means (all levels)",
]
# One graph ablation (GCN + IHPool) and no "L = 1": on the demo task the other ablations and
# depths reach the same ~100 % as H2-MIL (measured with --all-rows) and cost most of the time.
_DEMO_H2MIL = ["MIL-CNN", "MS-DA-MIL", "DS-MIL", "GCN + IHPool", "H2-MIL"]
_DEMO_RUNS = {
    "h2mil_table1": _CONTROLS + _DEMO_H2MIL,
    "h2mil_table2": _CONTROLS + _DEMO_H2MIL,
    "h2mil_table3": _CONTROLS + ["Thu. + Mid.", "Thu. + Bot.", "Thu. + Mid. + Bot."],
    "h2mil_table4": _CONTROLS + ["L = 2"],
    "higt_table1": _CONTROLS + ["ABMIL", "H2-MIL", "HIGT (Ours)"],
    "higt_table2": _CONTROLS + ["ABMIL", "H2-MIL", "HIGT (Ours)"],
    "higt_table3": _CONTROLS + ["Ours w/o BI", "HIGT (Ours)"],
}

_DEMO = Profile(
    name="demo",
    datasets=("esca", "kica"),
    demo_datasets=(
        DemoDataset("esca", 200, ("squamous", "adenocarcinoma"), 73, 81, seed=1),
        DemoDataset("kica", 200, ("KIRP", "KICH"), 60, 51, seed=2),
    ),
    include_real_slide=True,
    slide_size=(1280, 1024),  # 4 x 4 blocks of 2 x 2 10x patches of tissue + a glass column
    slide_base_mag=20.0,
    slide_mpp=0.5,
    magnifications=(5.0, 10.0),
    patch_size=64,
    thumbnail_side=256,  # the tissue mask: 5 level-0 px per mask px on a demo slide
    min_tissue=0.5,
    rgb_var_threshold=20.0,
    encoder="demo",
    batch_size=256,
    num_workers=1,
    folds=5,
    repeats=1,
    # 120 training slides per fold make 15 optimiser steps per epoch; the demo's methods that
    # can solve its task do so within ~10 epochs at lr 2e-3 (H2-MIL's validation AUC reaches
    # 1.0 at epoch 9 on ESCA typing), so the demo trains 20 epochs (the papers: 50, lr in
    # {5e-4, 1e-4, 5e-5}; demo only).
    epochs=20,
    lr=2e-3,
    extra={
        # 07_nuclei_graph: synthetic Table II tiles. Segmenters scored leaving out one organ
        # only (brain, one of the repository's two MoNuSeg tiles), the UNet 300 steps, the
        # classical fallback's grid thinned to 3 points, one training tile scored; the better
        # held-out AJI segments the tiles. Table II: 150 synthetic 256 px tiles per class (60
        # test tiles per fold: with 75, RSF + Attention reached 70 +- 9 % on BACH, with 150
        # 96 +- 2, and every RSF row's fold std fell within 5 points), 20 epochs (the 07 budget).
        "nuclei": {
            "unet_epochs": 3,
            "seg_folds": ["brain"],
            "seg_grid": "diagonal",
            "seg_score_train": 1,
            "tiles_per_class": 150,
            "epochs": 20,
        },
        # 08_abignet: the official ABiG-Net's alternating iterations (official 200; the
        # notebook must run in 4.5 minutes on 2 cores). Demo ROIs (wsigraph.data.synthetic_rois):
        # 8 x 8 patches of 64 px holding 12-36 small nuclei each, so the official features run
        # on 64 px patches with more than 8 nuclei (official: >64 nuclei per patch of unstated
        # size) and a 20 px cell-graph radius (official 64 px, which would join every pair of
        # nuclei of a 64 px patch); the nuclei are the generator's ground-truth masks. The
        # budget goes to ROIs (96-108 per column, 4 folds: test folds of 24-27 ROIs) rather than
        # to our orientation variant and its fixed k-NN ablation, not run on demo (skip_rows).
        "abignet": {
            "iterations": 10,
            "n_per_class": {"crc3": 36, "crc2": 48, "melanoma": 48},
            "folds": 4,
            "skip_rows": ["ABiG-Net (orientation variant)", "ABiG-Net, fixed k-NN graph"],
            "official_patch_size": 64,
            "min_nuclei": 8,
            "cell_radius": 20.0,
            "patch_size": 64,
            "radius": 20.0,
            "segmenter": "ground_truth",
        },
        # 09_mico: the synthetic co-occurrence columns (wsigraph.data.synthetic_mico): slides per
        # subtyping column and of the survival column, folds of the baselines (MiCo: the
        # official 4) and the epoch caps (MiCo keeps its official early stopping). Survival
        # needs more cases: at 160-480 slides no row learned the hazard, at 960 the official
        # MiCo does on every fold (synthetic_mico's docstring); the per-slide-anchors variant
        # is not run on the survival column, so 09 fits the 30-minute demo run.
        # Demo-only (provenance "demo run size").
        "mico": {
            "n_slides": 160,
            "surv_slides": 960,
            "folds": 4,
            "epochs": 10,
            "surv_epochs": 20,
            "surv_skip_rows": ["MiCo (per-slide anchors)"],
        },
        # The slide-level rows ./run_all.sh trains on demo (--all-rows trains every row; the
        # others read "not run on demo"): the controls, the flat and multi-scale MIL rows that
        # ignore the hierarchy, the graph ablations and the papers' own methods -- the rows
        # that test the mechanism the demo cohort is built for, within 30 minutes on 2 cores.
        "runs": _DEMO_RUNS,
    },
)

_TCGA = Profile(
    name="tcga",
    datasets=("esca", "kica"),
    magnifications=(5.0, 10.0),
    patch_size=512,
    thumbnail_side=2048,
    min_tissue=0.5,
    rgb_var_threshold=100.0,
    encoder="kimianet",
    batch_size=64,
    num_workers=4,
    folds=5,
    repeats=5,
    epochs=50,
    # 07: every organ left out in turn, 800 UNet steps per fold (at half resolution: about
    # 2 CPU-minutes a fold); the better held-out AJI segments the tiles (the UNet then
    # retrained on every tile, its weights kept in the work folder).
    extra={
        "nuclei": {"unet_epochs": 8, "epochs": 50},
        "abignet": {  # the official code's defaults; patch size ours (module abignet_features)
            "iterations": 200,
            "official_patch_size": 1024,
            "min_nuclei": 64,
            "cell_radius": 64.0,
            "patch_size": 128,
            "radius": 40.0,
            "segmenter": "classical",
        },
    },
)

PROFILES: dict[str, Profile] = {p.name: p for p in (_DEMO, _TCGA)}


def get_profile(name: str = "demo", **overrides) -> Profile:
    """Return the named profile, optionally with some settings overridden.

    Raises:
        ValueError: for an unknown profile name (the message lists the known ones).
    """
    try:
        profile = PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown profile {name!r}; known profiles: {', '.join(PROFILES)}"
        ) from None
    return profile.with_overrides(**overrides) if overrides else profile
