import numpy as np
import pytest
from conftest import small_spec

from wsigraph.data.slides import Slide
from wsigraph.data.synthetic import (
    _box_half,
    _tumour_map,
    assign_labels,
    make_demo_cohort,
    render_slide,
    slide_specs,
)
from wsigraph.data.tissue import tissue_mask
from wsigraph.profiles import DemoDataset, get_profile


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


def test_labels_have_exact_counts_and_are_independent_of_seed_order():
    typing, staging = assign_labels(40, 15, 16, seed=1)
    assert typing.sum() == 15 and staging.sum() == 16
    t2, s2 = assign_labels(40, 15, 16, seed=1)
    np.testing.assert_array_equal(typing, t2)
    np.testing.assert_array_equal(staging, s2)
    with pytest.raises(ValueError):
        assign_labels(10, 0, 3, seed=1)


def test_specs_follow_the_documented_signal_ranges():
    specs = slide_specs("esca", 40, 15, 16, seed=1)
    q = np.array([s.speckle_fraction for s in specs])
    f = np.array([s.infiltration for s in specs])
    t = np.array([s.typing for s in specs])
    st = np.array([s.staging for s in specs])
    assert q[t == 0].min() >= 0.5 and q[t == 1].max() <= 0.5
    r = np.array([s.stroma_reaction for s in specs])
    assert f[st == 0].max() <= 0.9 * 0.6 and f[st == 1].min() >= 0.9 * 0.4
    assert r[st == 0].max() <= 0.6 and r[st == 1].min() >= 0.4
    assert q[t == 0].mean() > q[t == 1].mean() + 0.2
    with pytest.raises(ValueError, match="unknown demo dataset"):
        slide_specs("brca", 4, 1, 1, seed=1)


@pytest.mark.parametrize("texture", ["speckle_fraction", "stroma_reaction"])
def test_fine_textures_are_visible_at_10x_and_cancel_at_5x(texture):
    """Same slide with all vs none of a fine texture (typing's chromatin, staging's stromal
    stripes): differs at 10x, identical at 5x up to rounding."""
    textured = render_slide(small_spec(**{texture: 1.0}))
    smooth = render_slide(small_spec(**{texture: 0.0}))
    at10 = [_box_half(img).astype(float) for img in (textured, smooth)]
    at5 = [_box_half(_box_half(img)).astype(float) for img in (textured, smooth)]
    diff10 = np.abs(at10[0] - at10[1])
    diff5 = np.abs(at5[0] - at5[1])
    assert diff10.max() > 10  # the texture is there at 10x
    assert diff5.max() <= 2  # and averages out at 5x (up to rounding at 20x, 10x and 5x)
    assert abs(textured.mean() - smooth.mean()) < 0.5  # no colour shift at any scale


def test_staging_architecture_is_pure_at_10x_and_mixed_at_5x():
    """Tumour lattice: 10x patches hold one tissue type; 5x patches mix in proportion to f."""

    def mixed_fraction(f, cell):
        spec = small_spec(width=1536, height=1024, infiltration=f)
        rng = np.random.default_rng(spec.seed)
        tissue = np.ones((spec.height, spec.width), bool)
        tumour = _tumour_map(rng, tissue, spec)
        blocks = tumour.reshape(spec.height // cell, cell, spec.width // cell, cell).mean(
            axis=(1, 3)
        )
        return ((blocks > 0.1) & (blocks < 0.9)).mean()

    assert mixed_fraction(0.0, 128) < 0.15 and mixed_fraction(0.9, 128) < 0.15  # 10x: pure
    assert mixed_fraction(0.9, 256) > 2 * mixed_fraction(0.0, 256) + 0.1  # 5x: infiltration shows


def test_artefacts_are_removed_by_the_tissue_mask():
    spec = small_spec(width=1024, height=768, pen="green")
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


def test_class_is_recoverable_from_rendered_slides():
    """The labels can be read off the rendered pixels, each by its own statistic at 10x:
    typing by the chromatin checkerboard (correlation with (-1)^(row+col); class 0 has more
    speckled nuclei), staging by the stromal stripes (correlation with (-1)^row; late stage has
    more reactive stroma). Neither statistic separates the other label."""
    from sklearn.metrics import roc_auc_score

    specs = slide_specs("esca", 16, 8, 8, seed=0, size=(512, 384))
    typing = np.array([s.typing for s in specs])
    staging = np.array([s.staging for s in specs])
    checker, stripes = [], []
    for spec in specs:
        grey = _box_half(render_slide(spec)).astype(float).mean(axis=2)  # 10x
        rows, cols = np.indices(grey.shape)
        checker.append((grey * np.where((rows + cols) % 2 == 0, 1.0, -1.0)).mean())
        stripes.append((grey * np.where(rows % 2 == 0, 1.0, -1.0)).mean())
    checker, stripes = np.array(checker), np.array(stripes)

    assert roc_auc_score(typing == 0, checker) >= 0.9
    assert checker[typing == 0].mean() > 2 * checker[typing == 1].mean()
    assert roc_auc_score(staging == 1, stripes) >= 0.85
    assert stripes[staging == 1].mean() > 1.5 * stripes[staging == 0].mean()
    assert 0.2 < roc_auc_score(staging == 1, checker) < 0.8  # no leak between the labels
    assert 0.2 < roc_auc_score(typing == 1, stripes) < 0.8
