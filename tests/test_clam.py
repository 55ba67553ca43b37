"""CLAM interop (wsigraph.data.clam) on files written here with h5py in CLAM's layout, and a
round trip through our own features of the real slide."""

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from wsigraph.data.clam import clam_graph, read_clam, write_clam
from wsigraph.data.features import TilingSettings, extract_features, feature_path, load_features
from wsigraph.graphs.build import graph_from_features
from wsigraph.models import build_model


def _clam_h5(path, coords, feats=None, **attrs):
    with h5py.File(path, "w") as f:
        if feats is not None:
            f.create_dataset("features", data=feats)
        d = f.create_dataset("coords", data=np.asarray(coords, dtype=np.int64))
        for k, v in attrs.items():
            d.attrs[k] = v
    return path


def _two_levels(tmp_path, d=6):
    rng = np.random.default_rng(0)
    origin = np.array([1000, 2000])
    coarse = origin + 512 * np.array([(c, r) for r in range(2) for c in range(2)])
    fine = np.concatenate([c + 256 * np.array([(0, 0), (1, 0), (0, 1), (1, 1)]) for c in coarse])
    fine = np.concatenate([fine, [[9000, 9000]]])  # one fine patch outside every coarse patch
    a = _clam_h5(tmp_path / "coarse.h5", coarse, rng.normal(size=(4, d)).astype(np.float32),
                 patch_level=1, patch_size=256, downsample=np.array([2.0, 2.0]))  # fmt: skip
    b = _clam_h5(tmp_path / "fine.h5", fine, rng.normal(size=(17, d)).astype(np.float32),
                 patch_level=0, patch_size=256)  # fmt: skip
    return a, b, coarse, fine


def test_two_clam_bags_make_the_pyramid_and_a_model_reads_it(tmp_path):
    a, b, coarse, fine = _two_levels(tmp_path)
    big, small = read_clam(a), read_clam(b)
    assert big.size0 == 512 and small.size0 == 256 and big.slide_id == "coarse"
    g = clam_graph([big, small], slide_id="s1")
    assert np.bincount(g.level.numpy()).tolist() == [1, 4, 16] and int(g.dropped_patches) == 1
    # each fine patch is the child of the coarse patch that holds it
    for i in np.flatnonzero(g.level.numpy() == 2):
        px, py = g.pos[int(g.parent[i])].tolist()
        x, y = g.pos[i].tolist()
        assert abs(x - px) < 256 and abs(y - py) < 256
    torch.testing.assert_close(g.x[0], big.features.mean(0))  # the thumbnail node: coarse mean
    single = clam_graph([small])  # one bag: the spatial graph of one level
    assert np.bincount(single.level.numpy()).tolist() == [1, 17]
    model = build_model("h2mil", 6, 2, hidden=8, layers=1)
    from torch_geometric.data import Batch

    assert model(Batch.from_data_list([g])).shape == (1, 2)


def test_a_pt_bag_reads_its_coords_from_the_h5_and_bad_files_are_named(tmp_path):
    a, b, _, _ = _two_levels(tmp_path)
    h5 = read_clam(b)
    torch.save(h5.features, tmp_path / "fine.pt")
    pt = read_clam(tmp_path / "fine.pt", coords_h5=b)
    torch.testing.assert_close(pt.features, h5.features)
    assert (pt.coords == h5.coords).all() and pt.size0 == h5.size0
    with pytest.raises(ValueError, match="holds no coordinates; pass coords_h5="):
        read_clam(tmp_path / "fine.pt")
    _clam_h5(tmp_path / "short.h5", [[0, 0]], np.zeros((3, 2), np.float32), patch_size=256)
    with pytest.raises(ValueError, match="3 feature rows but 1 coords"):
        read_clam(tmp_path / "short.h5")
    _clam_h5(tmp_path / "nosize.h5", [[0, 0]], np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match="no 'patch_size' attribute; pass patch_size0="):
        read_clam(tmp_path / "nosize.h5")
    assert read_clam(tmp_path / "nosize.h5", patch_size0=128).size0 == 128
    _clam_h5(
        tmp_path / "lvl.h5", [[0, 0]], np.zeros((1, 2), np.float32), patch_level=1, patch_size=256
    )
    with pytest.raises(ValueError, match="read at level 1 but 'coords' has no 'downsample'"):
        read_clam(tmp_path / "lvl.h5")
    _clam_h5(tmp_path / "patches.h5", [[0, 0]], None, patch_size=256)
    with pytest.raises(ValueError, match="no 'features' dataset"):
        read_clam(tmp_path / "patches.h5")
    with pytest.raises(ValueError, match="pass the coarse bag first"):
        clam_graph([read_clam(b), read_clam(a)])


def test_our_features_as_clam_files_rebuild_our_pyramid(tmp_path, real_slide):
    settings = TilingSettings((5.0, 10.0), 64, 256, 0.5, 20.0)
    rows = pd.DataFrame({"slide_id": ["real"], "path": [str(real_slide)]})
    assert (
        extract_features(rows, tmp_path, settings, "demo", progress=False)["status"] == "done"
    ).all()
    record = load_features(feature_path(tmp_path, "real"))
    ours = graph_from_features(record)
    write_clam(record, tmp_path / "h5_files" / "real_10x.h5")
    write_clam(record, tmp_path / "h5_files" / "real_5x.h5", level=1)
    with h5py.File(tmp_path / "h5_files" / "real_10x.h5") as f:
        assert f["coords"].attrs["magnification"] == 10.0 and f["coords"].attrs["encoder"] == "demo"
    g = clam_graph([read_clam(tmp_path / "h5_files" / "real_5x.h5"),
                    read_clam(tmp_path / "h5_files" / "real_10x.h5")])  # fmt: skip
    assert np.bincount(g.level.numpy()).tolist() == np.bincount(ours.level.numpy()).tolist()
    assert int(g.dropped_patches) == 0

    def parent_pos(graph):
        lv = graph.level.numpy()
        return sorted(map(tuple, graph.pos[graph.parent[torch.from_numpy(lv == 2)]].tolist()))

    assert parent_pos(g) == parent_pos(ours)
    fine = ours.level == 2
    torch.testing.assert_close(
        g.x[g.level == 2][np.lexsort(g.pos[g.level == 2].T.numpy())],
        ours.x[fine][np.lexsort(ours.pos[fine].T.numpy())],
    )
