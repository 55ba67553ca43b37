import numpy as np
import pandas as pd
import pytest
import torch

from wsigraph.data.features import (
    TilingSettings,
    extract_features,
    load_features,
    plan_slide,
    read_patch,
)
from wsigraph.data.slides import Slide
from wsigraph.graphs.pyramid import SCALING, SPATIAL, pyramid_graph

SETTINGS = TilingSettings(
    magnifications=(5.0, 10.0),
    patch_size=64,
    thumbnail_side=256,
    min_tissue=0.5,
    rgb_var_threshold=20.0,
)


@pytest.fixture
def slides(tmp_path, synthetic_slide, real_slide):
    bad = tmp_path / "broken.svs"
    bad.write_bytes(real_slide.read_bytes()[:5000])
    return pd.DataFrame(
        {
            "slide_id": ["synthetic", "real", "broken"],
            "path": [str(synthetic_slide), str(real_slide), str(bad)],
        }
    )


def test_extract_writes_one_file_per_slide_and_resumes(tmp_path, slides):
    out = tmp_path / "features"
    summary = extract_features(
        slides, out, SETTINGS, encoder="demo", batch_size=32, num_workers=0, progress=False
    )
    assert summary.set_index("slide_id")["status"].to_dict() == {
        "synthetic": "done",
        "real": "done",
        "broken": "failed",
    }
    assert "broken.svs" in summary.set_index("slide_id").loc["broken", "error"]
    d = load_features(out / "real.pt")
    tiles = d["tiles"]
    assert d["features"].shape == (len(tiles), 44) and d["features"].dtype == torch.float32
    assert tiles.level[0] == 0 and set(np.unique(tiles.level)) == {0, 1, 2}
    assert (d["rgb_var"][1:] >= SETTINGS.rgb_var_threshold).float().mean() > 0.9
    assert torch.isfinite(d["features"]).all()
    # resume: finished slides are skipped, the broken one is retried and fails again
    again = extract_features(
        slides, out, SETTINGS, encoder="demo", batch_size=32, num_workers=0, progress=False
    )
    assert again.set_index("slide_id")["status"].to_dict() == {
        "synthetic": "skipped",
        "real": "skipped",
        "broken": "failed",
    }
    # changed settings invalidate the file
    other = TilingSettings(magnifications=(5.0, 10.0), patch_size=32, thumbnail_side=256)
    third = extract_features(
        slides.iloc[:1], out, other, encoder="demo", num_workers=0, progress=False
    )
    assert third["status"].tolist() == ["done"]


def test_workers_give_the_same_features(tmp_path, slides):
    a = extract_features(
        slides.iloc[:1],
        tmp_path / "a",
        SETTINGS,
        encoder="demo",
        batch_size=16,
        num_workers=0,
        progress=False,
    )
    b = extract_features(
        slides.iloc[:1],
        tmp_path / "b",
        SETTINGS,
        encoder="demo",
        batch_size=7,
        num_workers=2,
        progress=False,
    )
    assert a["status"].tolist() == b["status"].tolist() == ["done"]
    fa, fb = (
        load_features(tmp_path / "a" / "synthetic.pt"),
        load_features(tmp_path / "b" / "synthetic.pt"),
    )
    torch.testing.assert_close(fa["features"], fb["features"])


def test_thumbnail_patch_is_the_letterboxed_slide(real_slide):
    with Slide(real_slide) as s:
        tiles, thumb, mask = plan_slide(s, SETTINGS)
        patch = read_patch(s, tiles, 0)
        assert patch.shape == (64, 64, 3)
        assert thumb.shape[:2] == mask.shape and max(thumb.shape[:2]) == 256
        assert (patch[:, 60:] == 255).all()  # portrait slide: white right border


def test_real_slide_tiled_at_two_magnifications_becomes_a_pyramid_graph(tmp_path, real_slide):
    """The real Aperio slide: tissue mask, 5x + 10x grids, features, and a valid H2-MIL graph."""
    slides = pd.DataFrame({"slide_id": ["cmu"], "path": [str(real_slide)]})
    extract_features(slides, tmp_path, SETTINGS, encoder="demo", num_workers=0, progress=False)
    d = load_features(tmp_path / "cmu.pt")
    t = d["tiles"]
    counts = t.counts()
    assert (
        counts["thumbnail"] == 1 and counts["5x"] >= 20 and counts["10x"] >= 4 * counts["5x"] * 0.5
    )
    g = pyramid_graph(d["features"], t.level, t.row, t.col, t.parent)
    assert g.num_nodes == len(t)
    types = g.edge_type
    assert (types == SCALING).sum() == 2 * (len(t) - 1)  # every non-thumbnail node has one parent
    src, dst = g.edge_index
    spatial = types == SPATIAL
    assert (g.level[src[spatial]] == g.level[dst[spatial]]).all()
    assert ((g.grid[src[spatial]] - g.grid[dst[spatial]]).abs().max(dim=1).values == 1).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_extraction_matches_cpu(tmp_path, synthetic_slide):
    """device='auto' picks CUDA when present; the features agree with the CPU's."""
    slides = pd.DataFrame({"slide_id": ["s"], "path": [str(synthetic_slide)]})
    kw = dict(encoder="demo", batch_size=64, num_workers=0, progress=False)
    extract_features(slides, tmp_path / "cpu", SETTINGS, device="cpu", **kw)
    extract_features(slides, tmp_path / "gpu", SETTINGS, device="auto", **kw)
    cpu, gpu = load_features(tmp_path / "cpu" / "s.pt"), load_features(tmp_path / "gpu" / "s.pt")
    torch.testing.assert_close(gpu["features"], cpu["features"], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"patch_size": 8}, "patch_size"),
        ({"min_tissue": 1.5}, "min_tissue"),
        ({"magnifications": (0.0, 10.0)}, "magnifications"),
        ({"rgb_var_threshold": -1}, "rgb_var_threshold"),
    ],
)
def test_bad_tiling_settings_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        TilingSettings(**bad)


def test_a_changed_slide_invalidates_its_features(tmp_path, synthetic_slide):
    import shutil

    from conftest import small_spec

    from wsigraph.data.synthetic import render_slide, write_pyramid_tiff

    path = tmp_path / "s.tif"
    shutil.copy(synthetic_slide, path)
    slides = pd.DataFrame({"slide_id": ["s"], "path": [str(path)]})
    kw = dict(encoder="demo", num_workers=0, progress=False)
    assert extract_features(slides, tmp_path / "f", SETTINGS, **kw)["status"].tolist() == ["done"]
    assert extract_features(slides, tmp_path / "f", SETTINGS, **kw)["status"].tolist() == [
        "skipped"
    ]
    spec = small_spec(seed=99)  # the slide is redrawn under the same name
    write_pyramid_tiff(path, render_slide(spec), spec.base_mag, spec.mpp, min_side=128)
    assert extract_features(slides, tmp_path / "f", SETTINGS, **kw)["status"].tolist() == ["done"]
