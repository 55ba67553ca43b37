import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image

from wsigraph.data.slides import MissingMagnificationError, Slide, SlideError


def test_real_aperio_slide_metadata(real_slide):
    with Slide(real_slide) as s:
        assert s.vendor == "aperio"
        assert s.objective_power == 20
        assert s.mpp == pytest.approx(0.499)
        assert s.dimensions == (2220, 2967)
        assert "20x" in repr(s)


def test_real_slide_read_at_lower_magnification_is_box_resize(real_slide):
    with Slide(real_slide) as s:
        patch = s.read_region_at(400, 600, 64, magnification=10)
        assert patch.shape == (64, 64, 3) and patch.dtype == np.uint8
        full = s.read_region_at(400, 600, 128, magnification=20)
    expected = np.asarray(Image.fromarray(full).resize((64, 64), Image.Resampling.BOX))
    assert np.abs(patch.astype(int) - expected).max() <= 1


def test_best_level_is_used(synthetic_slide):
    with Slide(synthetic_slide) as s:
        assert [lv.downsample for lv in s.levels] == [1, 2, 4, 8]
        assert s.best_level(2.0).index == 1
        assert s.best_level(3.0).index == 1  # never read a coarser level than requested
        assert s.best_level(0.5).index == 0
        at10 = s.read_region_at(128, 64, 96, magnification=10)
        direct = np.asarray(s._osr.read_region((128, 64), 1, (96, 96)).convert("RGB"))
        np.testing.assert_array_equal(at10, direct)
        with pytest.raises(ValueError, match="upsampling"):
            s.read_region_at(0, 0, 16, magnification=40)


def test_thumbnail_aspect(real_slide):
    with Slide(real_slide) as s:
        thumb = s.thumbnail(300)
    assert max(thumb.shape[:2]) == 300
    assert thumb.shape[0] > thumb.shape[1]  # the slide is portrait


def _generic_tiff(path, description=None):
    img = np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    with tifffile.TiffWriter(path) as tw:
        tw.write(
            img,
            tile=(256, 256),
            compression="zlib",
            photometric="rgb",
            description=description,
            metadata=None,
        )
        tw.write(
            img[::2, ::2].copy(),
            tile=(256, 256),
            compression="zlib",
            photometric="rgb",
            subfiletype=1,
            metadata=None,
        )
    return path


def test_missing_magnification_is_a_clear_error_unless_supplied(tmp_path):
    path = _generic_tiff(tmp_path / "plain.tif")
    with Slide(path) as s:
        assert s.objective_power is None
        with pytest.raises(MissingMagnificationError, match="neither an objective power") as e:
            s.read_region_at(0, 0, 32, magnification=10)
        # the message names the parameter and the cohort column, not a guess
        assert "-p objective_power <magnification>" in str(e.value)
        assert "cohort CSV column objective_power" in str(e.value) and "e.g." not in str(e.value)
    with Slide(path, objective_power=20) as s:
        assert s.read_region_at(0, 0, 32, magnification=10).shape == (32, 32, 3)
    with Slide(path, mpp=0.25) as s:  # only the pixel size: 10 / mpp, said in a warning
        with pytest.warns(UserWarning, match=r"taken as 10 / mpp = 40x from 0.25 um/px"):
            assert s.base_magnification == 40.0


def test_a_real_slide_stripped_of_its_metadata_gets_the_same_pyramid_when_told(
    tmp_path, real_slide
):
    import tifffile

    from wsigraph.data.features import TilingSettings, extract_features, feature_path, load_features

    stripped = tmp_path / "stripped.svs"
    stripped.write_bytes(real_slide.read_bytes())
    tifffile.tiffcomment(stripped, comment=b"no vendor metadata")
    with Slide(stripped) as s:
        assert s.vendor == "generic-tiff" and s.objective_power is None and s.mpp is None
    settings = TilingSettings((5.0, 10.0), 64, 256, 0.5, 20.0)
    import pandas as pd

    rows = pd.DataFrame(
        {"slide_id": ["orig", "stripped"], "path": [str(real_slide), str(stripped)]}
    )
    out = extract_features(rows, tmp_path / "f", settings, "demo", progress=False)
    assert out.set_index("slide_id").loc["stripped", "status"] == "failed"
    assert "-p objective_power" in out.set_index("slide_id").loc["stripped", "error"]
    for column, value in (("objective_power", 20.0), ("mpp", 0.499)):
        told = rows.assign(**{column: [None, value]})
        with pytest.warns(UserWarning) if column == "mpp" else _nothing():
            out = extract_features(told, tmp_path / column, settings, "demo", progress=False)
        assert (out["status"] == "done").all(), out
        a = load_features(feature_path(tmp_path / column, "orig"))["tiles"]
        b = load_features(feature_path(tmp_path / column, "stripped"))["tiles"]
        assert (a.level == b.level).all() and (a.x == b.x).all() and (a.y == b.y).all()


def _nothing():
    import contextlib

    return contextlib.nullcontext()


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.3, 0.7, 0.97])
@pytest.mark.parametrize("which", ["real", "synthetic"])
def test_truncated_slide_raises_slide_error(tmp_path, real_slide, synthetic_slide, fraction, which):
    src = real_slide if which == "real" else synthetic_slide
    data = src.read_bytes()
    bad = tmp_path / f"truncated{src.suffix}"
    bad.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(SlideError) as err:
        with Slide(bad) as s:
            s.verify()
            for lv in s.levels:  # read everything: a damaged tile must not pass silently
                s._read(lv.index, 0, 0, lv.width, lv.height)
    assert bad.name in str(err.value)
    assert err.value.path == bad


def test_corrupt_tile_data_raises_slide_error(tmp_path, synthetic_slide):
    data = bytearray(synthetic_slide.read_bytes())
    with tifffile.TiffFile(synthetic_slide) as tf:  # zero the bytes of level 0's last tile
        page = tf.pages[0]
        off, n = page.dataoffsets[-1], page.databytecounts[-1]
    data[off : off + n] = bytes(n)
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(bytes(data))
    with Slide(bad) as s, pytest.raises(SlideError, match="corrupt.tif"):
        s.verify()


@pytest.mark.parametrize("content", [b"", b"not a slide at all\n", b"II*\x00" + bytes(100)])
def test_non_slide_files(tmp_path, content):
    path = tmp_path / "x.svs"
    path.write_bytes(content)
    with pytest.raises(SlideError, match="x.svs"):
        Slide(path)


def test_png_and_missing_file(real_data, tmp_path):
    with pytest.raises(SlideError, match="no-tissue"):
        Slide(real_data / "tiles" / "histolab_no-tissue.png")
    with pytest.raises(SlideError, match="no such file"):
        Slide(tmp_path / "missing.svs")


def test_directory_named_like_a_slide(tmp_path):
    (tmp_path / "x.svs").mkdir()
    with pytest.raises(SlideError, match=r"x\.svs: is a directory, not a slide file") as err:
        Slide(tmp_path / "x.svs")
    assert "no such file" not in str(err.value) and "\n" not in str(err.value)


def test_openslide_itself_agrees_on_synthetic_slide(synthetic_slide):
    osr = openslide.OpenSlide(str(synthetic_slide))
    assert osr.properties["openslide.vendor"] == "aperio"
    assert osr.properties[openslide.PROPERTY_NAME_OBJECTIVE_POWER] == "20"
    assert float(osr.properties[openslide.PROPERTY_NAME_MPP_X]) == 0.5
    assert osr.level_dimensions[0] == (768, 512)
    osr.close()
