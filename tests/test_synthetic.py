"""The demo cohort generator: slides OpenSlide reads, the lattice layout, textures that cancel at
5x, and the class signal: absent from every level's slide means, present in the hierarchy."""

import numpy as np
import pytest
import torch
from conftest import small_spec

from wsigraph.data.features import TilingSettings, extract_features, load_features
from wsigraph.data.slides import Slide
from wsigraph.data.synthetic import (
    COMPACT_STROMA,
    COMPACT_TUMOUR,
    GLASS,
    MIXED,
    STROMA,
    TUMOUR,
    _box_half,
    _stamp,
    _stroma_nuclei,
    _tumour_nuclei,
    assign_labels,
    hierarchy_oracle_auc,
    make_demo_cohort,
    render_slide,
    slide_layout,
    slide_specs,
)
from wsigraph.data.tissue import tissue_mask
from wsigraph.profiles import DemoDataset, get_profile
from wsigraph.train.probe import linear_probe, pooled_level_features, with_concatenated_levels


def test_slide_reads_back_as_aperio_pyramid(synthetic_slide):
    with Slide(synthetic_slide) as s:
        assert s.vendor == "aperio"
        assert s.objective_power == 20 and s.mpp == 0.5
        assert [(lv.width, lv.height) for lv in s.levels] == [
            (768, 512),
            (384, 256),
            (192, 128),
            (96, 64),
        ]
        assert [lv.downsample for lv in s.levels] == [1, 2, 4, 8]
        s.verify()


def test_render_is_deterministic():
    a, b = render_slide(small_spec()), render_slide(small_spec())
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, render_slide(small_spec(seed=8)))
    la, lb = slide_layout(small_spec()), slide_layout(small_spec())
    for field in ("kind", "block", "textured", "reactive"):
        np.testing.assert_array_equal(getattr(la, field), getattr(lb, field))
    assert slide_specs("esca", 6, 2, 3, seed=1) == slide_specs("esca", 6, 2, 3, seed=1)


def test_labels_have_exact_counts_and_are_independent_of_seed_order():
    typing, staging = assign_labels(40, 15, 16, seed=1)
    assert typing.sum() == 15 and staging.sum() == 16
    t2, s2 = assign_labels(40, 15, 16, seed=1)
    np.testing.assert_array_equal(typing, t2)
    np.testing.assert_array_equal(staging, s2)
    with pytest.raises(ValueError):
        assign_labels(10, 0, 3, seed=1)
    with pytest.raises(ValueError, match="unknown demo dataset"):
        slide_specs("brca", 4, 1, 1, seed=1)


@pytest.mark.parametrize("typing", [0, 1])
@pytest.mark.parametrize("staging", [0, 1])
def test_layout_is_the_same_bag_in_every_class_and_only_placement_differs(typing, staging):
    """Demo slide (1280 x 1024): one glass column of blocks, 4 x 4 tissue blocks, 8 mixed (one
    diagonal tumour), 4 compact tumour, 4 compact stroma; 8 textured tumour cells, in the mixed
    blocks for typing 0 and in the compact ones for typing 1; 8 reactive stroma cells, in the
    mixed blocks for late stage and in the compact stroma for early stage."""
    lay = slide_layout(small_spec(width=1280, height=1024, typing=typing, staging=staging))
    assert lay.kind.shape == (8, 10)
    glass_cols = np.flatnonzero((lay.kind == GLASS).all(axis=0))
    assert list(glass_cols) in ([0, 1], [8, 9]) and (lay.kind != GLASS).sum() == 64
    blocks = lay.block[::2, ::2]
    assert [(blocks == k).sum() for k in (MIXED, COMPACT_TUMOUR, COMPACT_STROMA)] == [8, 4, 4]
    for by, bx in zip(*np.nonzero(blocks == MIXED), strict=True):
        tum = lay.kind[2 * by : 2 * by + 2, 2 * bx : 2 * bx + 2] == TUMOUR
        assert tum.sum() == 2 and tum[0, 0] == tum[1, 1] and tum[0, 1] == tum[1, 0]
    mixed = lay.block == MIXED
    assert ((lay.kind == TUMOUR) & mixed).sum() == ((lay.kind == TUMOUR) & ~mixed).sum() == 16
    assert lay.textured.sum() == 8 and (lay.kind[lay.textured] == TUMOUR).all()
    assert lay.reactive.sum() == 8 and (lay.kind[lay.reactive] == STROMA).all()
    assert (mixed[lay.textured] == (typing == 0)).all()
    assert (mixed[lay.reactive] == (staging == 1)).all()


def test_nuclei_stay_inside_their_cells():
    """No drawing crosses a cell border: a 10x patch cannot see its neighbours' architecture."""
    spec = small_spec(width=1280, height=1024)
    lay, c = slide_layout(spec), spec.cell
    kind = np.repeat(np.repeat(lay.kind, c, 0), c, 1)
    textured = np.repeat(np.repeat(lay.textured, c, 0), c, 1)
    rng = np.random.default_rng(0)
    nuclei, speckled = _tumour_nuclei(rng, lay, c, kind.shape)
    fibro = _stroma_nuclei(rng, lay, c, kind.shape)
    assert nuclei.sum() > 0 and fibro.sum() > 0
    assert nuclei[kind != TUMOUR].sum() == 0 and fibro[kind != STROMA].sum() == 0
    assert speckled.sum() > 0 and speckled[~textured].sum() == 0
    disc = _stamp(
        (256, 256), np.array([127]), np.array([130]), lambda dy, dx: dy**2 + dx**2 <= 25, 5, 128
    )
    ys, xs = np.nonzero(disc)
    assert ys.max() == 127 and xs.min() == 128  # clipped to the cell of its centre


@pytest.mark.parametrize("amplitude", ["speckle_amplitude", "stroma_amplitude"])
def test_fine_textures_are_visible_at_10x_and_cancel_at_5x(amplitude):
    """Same slide with and without a fine texture (typing's chromatin, staging's stromal
    stripes): differs at 10x, identical at 5x up to rounding."""
    textured = render_slide(small_spec())
    smooth = render_slide(small_spec(**{amplitude: 0.0}))
    at10 = [_box_half(img).astype(float) for img in (textured, smooth)]
    at5 = [_box_half(_box_half(img)).astype(float) for img in (textured, smooth)]
    assert np.abs(at10[0] - at10[1]).max() > 10  # the texture is there at 10x
    assert np.abs(at5[0] - at5[1]).max() <= 2  # and averages out at 5x (rounding at each level)
    assert abs(textured.mean() - smooth.mean()) < 0.5  # no colour shift at any scale


def test_artefacts_are_removed_by_the_tissue_mask():
    spec = small_spec(width=1280, height=1024, pen="green")
    rgb = render_slide(spec)
    thumb = _box_half(_box_half(rgb))
    mask = tissue_mask(thumb)
    green = (thumb[..., 1].astype(int) - thumb[..., 0] > 60) & (
        thumb[..., 1].astype(int) - thumb[..., 2] > 40
    )
    assert green.sum() > 50  # the pen stroke is drawn ...
    assert mask[green].mean() < 0.05  # ... and excluded
    white = thumb.min(axis=2) > 225
    assert mask[white].mean() < 0.02  # glass and smudge are background
    cells = slide_layout(spec).kind != GLASS
    tissue = np.repeat(np.repeat(cells, spec.cell // 4, 0), spec.cell // 4, 1)
    assert mask[tissue].mean() > 0.97  # every cell of tissue is tissue to the filter


def test_demo_cohort_writes_manifest_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("WSIGRAPH_WORK", str(tmp_path))
    profile = get_profile(
        "demo",
        demo_datasets=(DemoDataset("kica", 3, ("KIRP", "KICH"), 1, 1, seed=5),),
        slide_size=(512, 384),
    )
    manifest = make_demo_cohort(profile, progress=False)
    assert list(manifest["slide_id"]) == ["kica-demo-000", "kica-demo-001", "kica-demo-002"]
    assert manifest["typing"].sum() == 1 and manifest["staging"].sum() == 1
    assert set(manifest["typing_name"]) == {"KIRP", "KICH"}
    paths = [tmp_path / "demo" / "slides" / "kica" / f"{i}.tif" for i in manifest["slide_id"]]
    mtimes = [p.stat().st_mtime_ns for p in paths]
    paths[1].write_bytes(paths[1].read_bytes()[:1000])  # a slide cut short by an interruption
    again = make_demo_cohort(profile, progress=False)
    assert again.equals(manifest)
    assert paths[0].stat().st_mtime_ns == mtimes[0]  # finished slides are not rewritten
    with Slide(paths[1]) as s:  # the broken one was regenerated
        s.verify()


@pytest.fixture
def one_torch_thread():
    """The demo encoder on 64 px patches: a second thread mostly waits on the first (and on a
    shared machine spins), so this test encodes with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_slide_means_carry_no_signal_and_the_hierarchy_does(tmp_path, one_torch_thread):
    """Issue 17's slide-level control on a generated cohort, through the real pipeline (TIFF,
    tissue mask, tiling, demo encoder): a cross-validated logistic regression on the slide mean
    and std of each level's features, and of all levels concatenated, stays at AUC <= 0.65 for
    both tasks, while the parent-child oracle separates both (AUC >= 0.9)."""
    n = 100
    profile = get_profile(
        "demo",
        demo_datasets=(DemoDataset("esca", n, ("a", "b"), n // 2, n // 2, seed=11),),
        slide_size=(768, 512),  # 2 x 2 tissue blocks: 2 mixed, 1 compact tumour, 1 stroma
    )
    manifest = make_demo_cohort(profile, tmp_path / "slides", progress=False)
    settings = TilingSettings.from_profile(profile)
    summary = extract_features(
        manifest, tmp_path / "features", settings, "demo", num_workers=0, progress=False
    )
    assert (summary["status"] == "done").all()
    n_levels = 3
    pooled = {}
    for sid in manifest["slide_id"]:
        d = load_features(tmp_path / "features" / f"{sid}.pt")
        assert d["tiles"].counts() == {"thumbnail": 1, "5x": 4, "10x": 16}
        pooled[sid] = pooled_level_features(d["features"].numpy(), d["tiles"].level, n_levels)
    levels = ["thumbnail", "5x", "10x", "all levels"]
    probe = linear_probe(manifest, with_concatenated_levels(pooled, n_levels), levels)
    assert len(probe) == 2 * len(levels)
    assert probe["probe AUC"].max() <= 0.65, probe
    oracle = hierarchy_oracle_auc(manifest, tmp_path / "features")
    assert list(oracle["slides"]) == [n, n], oracle
    assert oracle["oracle AUC"].min() >= 0.9, oracle


def test_concatenated_levels_are_every_level_in_order():
    pooled = {"s": {0: np.array([1.0]), 1: np.array([2.0, 3.0]), 2: np.array([4.0])}}
    out = with_concatenated_levels(pooled, 3)
    np.testing.assert_array_equal(out["s"][3], [1.0, 2.0, 3.0, 4.0])
    assert set(out["s"]) == {0, 1, 2, 3} and "s" in pooled and 3 not in pooled["s"]


def test_chance_auc_std_matches_random_scores():
    from sklearn.metrics import roc_auc_score

    from wsigraph.train.probe import chance_auc_std

    rng = np.random.default_rng(0)
    y = np.r_[np.ones(30), np.zeros(70)]
    aucs = [roc_auc_score(y, rng.random(100)) for _ in range(4000)]
    assert abs(np.std(aucs) / chance_auc_std(30, 70) - 1) < 0.05
    with pytest.raises(ValueError, match="each class"):
        chance_auc_std(0, 5)
