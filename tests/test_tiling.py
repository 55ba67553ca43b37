import numpy as np
import pytest

from wsigraph.data.tiling import TileSet, background_keep, plan_tiles
from wsigraph.data.tissue import EmptyTissueError

# A 1024 x 512 slide at 20x with 64 px patches: 5x patches are 256 level-0 px (2 x 4 grid),
# 10x patches 128 px (4 x 8 grid).
SIZE, BASE, MAGS, P = (1024, 512), 20.0, (5.0, 10.0), 64


def test_full_mask_gives_complete_nested_grids():
    tiles = plan_tiles(SIZE, BASE, MAGS, P, np.ones((64, 128), bool))
    assert tiles.counts() == {"thumbnail": 1, "5x": 8, "10x": 32}
    assert tiles.level[0] == 0 and tiles.parent[0] == -1
    assert (tiles.parent[tiles.level == 1] == 0).all()
    fine = np.flatnonzero(tiles.level == 2)
    par = tiles.parent[fine]
    assert (tiles.level[par] == 1).all()
    np.testing.assert_array_equal(tiles.row[par], tiles.row[fine] // 2)
    np.testing.assert_array_equal(tiles.col[par], tiles.col[fine] // 2)
    np.testing.assert_array_equal(tiles.size0[fine], 128)
    np.testing.assert_array_equal(tiles.x[fine], tiles.col[fine] * 128)
    # every fine patch lies inside its parent
    assert (tiles.x[fine] >= tiles.x[par]).all() and (
        tiles.x[fine] + 128 <= tiles.x[par] + 256
    ).all()


def test_tissue_in_one_fine_cell_keeps_its_ancestors():
    mask = np.zeros((512, 1024), bool)  # mask at level-0 resolution
    mask[128:256, 384:512] = True  # exactly the 10x cell (row 1, col 3)
    tiles = plan_tiles(SIZE, BASE, MAGS, P, mask, min_tissue=0.5)
    assert tiles.counts() == {"thumbnail": 1, "5x": 1, "10x": 1}
    assert (tiles.row[2], tiles.col[2]) == (1, 3)
    assert (tiles.row[1], tiles.col[1]) == (0, 1)  # its 5x parent, kept although 25 % tissue
    assert tiles.parent.tolist() == [-1, 0, 1]
    assert tiles.tissue[2] == pytest.approx(1.0) and tiles.tissue[1] == pytest.approx(0.25)


def test_min_tissue_threshold():
    mask = np.zeros((64, 128), bool)
    mask[:, :40] = True  # left 5/16 of the slide
    tiles = plan_tiles(SIZE, BASE, MAGS, P, mask, min_tissue=0.5)
    fine = tiles.level == 2
    # tissue covers x < 320: 10x columns 0 and 1 fully, column 2 (x 256..384) by half
    assert set(tiles.col[fine]) == {0, 1, 2}
    assert (tiles.tissue[fine] >= 0.5).all()


def test_background_filter_and_select_reindex():
    tiles = plan_tiles(SIZE, BASE, MAGS, P, np.ones((64, 128), bool))
    var = np.full(len(tiles), 500.0)
    coarse = np.flatnonzero(tiles.level == 1)
    var[coarse] = 1.0  # all 5x patches look like glass ...
    fine = np.flatnonzero(tiles.level == 2)
    var[fine[tiles.row[fine] >= 2]] = 1.0  # ... and the lower half of the 10x grid too
    keep = background_keep(tiles, var, threshold=100)
    kept = tiles.select(keep)
    # upper 10x half survives (16 patches); their 4 parents are kept to hold the pyramid
    assert kept.counts() == {"thumbnail": 1, "5x": 4, "10x": 16}
    assert (kept.level[kept.parent[kept.level == 2]] == 1).all()
    assert (kept.parent[kept.level == 1] == 0).all()
    np.testing.assert_array_equal(np.flatnonzero(keep), np.flatnonzero(tiles.closure(var >= 100)))
    with pytest.raises(ValueError, match="shape"):
        background_keep(tiles, var[:-1], 100)


def test_round_trip_dict():
    tiles = plan_tiles(SIZE, BASE, MAGS, P, np.ones((64, 128), bool))
    back = TileSet.from_dict(tiles.to_dict())
    for name in ("level", "row", "col", "x", "y", "size0", "parent", "tissue"):
        np.testing.assert_array_equal(getattr(back, name), getattr(tiles, name))
    assert back.magnifications == MAGS and back.slide_size == SIZE and back.patch_size == P


def test_bad_inputs():
    full = np.ones((64, 128), bool)
    with pytest.raises(ValueError, match="not an integer"):
        plan_tiles(SIZE, BASE, (5.0, 7.5), P, full)
    with pytest.raises(ValueError, match="40x requested"):
        plan_tiles(SIZE, BASE, (10.0, 40.0), P, full)
    with pytest.raises(ValueError, match="smaller than one"):
        plan_tiles((100, 100), BASE, MAGS, P, full)
    with pytest.raises(EmptyTissueError, match="no patch"):
        plan_tiles(SIZE, BASE, MAGS, P, np.zeros((64, 128), bool), name="blank.svs")


def test_three_magnifications():
    tiles = plan_tiles((2048, 2048), 40.0, (2.5, 5.0, 10.0), 64, np.ones((32, 32), bool))
    assert tiles.counts() == {"thumbnail": 1, "2.5x": 4, "5x": 16, "10x": 64}
    assert (tiles.level[tiles.parent[tiles.level == 3]] == 2).all()
