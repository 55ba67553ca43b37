"""UNet nuclei segmentation: model shapes, targets, watershed, metrics, real MoNuSeg tile."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from skimage.draw import disk

from wsigraph.data.nuclei_seg import (
    aji,
    classical_nuclei,
    dice,
    f1_at_iou,
    instances_from_probabilities,
    load_unet,
    matched_instances,
    read_instances,
    read_monuseg,
    read_monuseg_tile,
    save_unet,
    segment,
    segmentation_scores,
    targets_from_instances,
    train_unet,
)
from wsigraph.models.unet import UNet, UNetConfig
from wsigraph.profiles import data_file

pytestmark = pytest.mark.usefixtures("one_thread")

TILE = "TCGA-HT-8564-01Z-00-DX1"  # 249 annotated nuclei


@pytest.fixture(scope="module")
def monuseg() -> tuple[np.ndarray, np.ndarray]:
    image, instances = read_monuseg_tile(data_file("nuclei/monuseg"), TILE)
    return image, instances.astype(np.int32)


def test_read_monuseg_reads_npz_or_npy_instance_maps(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    inst = rng.integers(0, 5, (20, 30)).astype(np.uint16)
    for name in ("a", "b", "c"):
        Image.fromarray(image).save(tmp_path / f"{name}.tif")
    np.savez_compressed(tmp_path / "a_inst.npz", instances=inst)
    np.save(tmp_path / "b_inst.npy", inst)  # c: no instance map, left out
    assert read_instances(tmp_path / "a_inst.npz").dtype == np.uint16
    img, got = read_monuseg_tile(tmp_path, "a")
    assert np.array_equal(img, image) and np.array_equal(got, inst) and got.dtype == np.uint16
    tiles = read_monuseg(tmp_path)
    assert list(tiles) == ["a", "b"]
    assert all(np.array_equal(t[1], inst) and t[1].dtype == np.int32 for t in tiles.values())
    with pytest.raises(FileNotFoundError, match="c_inst"):
        read_monuseg_tile(tmp_path, "c")
    np.savez(tmp_path / "two.npz", x=inst, y=inst)
    with pytest.raises(ValueError, match="one array"):
        read_instances(tmp_path / "two.npz")


def test_real_monuseg_tiles_read_from_the_repository(monuseg):
    image, true = monuseg
    assert image.shape == (1000, 1000, 3) and image.dtype == np.uint8
    assert len(np.unique(true[true > 0])) == 249  # data/README.md


@pytest.mark.parametrize("size", [(64, 64), (70, 90)])
def test_unet_shape(size):
    torch.manual_seed(0)
    model = UNet(UNetConfig(base=4, depth=3)).eval()
    x = torch.rand(2, 3, *size)
    out = model(x)
    assert out.shape == (2, 3, *size)
    assert torch.isfinite(out).all()


def test_unet_padding_matches_multiple():
    """A non-multiple input gives the same logits, away from the padded edge, as the input
    padded by hand: the crop keeps the top-left corner aligned."""
    torch.manual_seed(0)
    model = UNet(UNetConfig(base=4, depth=2)).eval()
    x = torch.rand(1, 3, 30, 30)
    padded = torch.nn.functional.pad(x, (0, 2, 0, 2), mode="reflect")
    with torch.no_grad():
        assert torch.allclose(model(x), model(padded)[..., :30, :30], atol=1e-5)


def test_targets_touching_squares():
    inst = np.zeros((8, 10), int)
    inst[1:7, 1:5] = 1
    inst[1:7, 5:9] = 2  # touches square 1 along column 4 | 5
    t = targets_from_instances(inst)
    assert t.dtype == np.int64
    assert (t[inst == 0] == 0).all()
    # the shared edge is boundary on both sides, so the interiors are not connected
    assert (t[2:6, 4] == 2).all() and (t[2:6, 5] == 2).all()
    assert (t[2:6, 2:4] == 1).all() and (t[2:6, 6:8] == 1).all()
    assert (t[1, 1:9] == 2).all() and (t[6, 1:9] == 2).all()  # outer ring
    assert (t[1:7, 1] == 2).all() and (t[1:7, 8] == 2).all()


def test_watershed_splits_touching_discs():
    inst = np.zeros((60, 80), int)
    inst[disk((30, 25), 14)] = 1
    inst[disk((30, 52), 14)] = 2  # overlaps disc 1: they touch along a chord
    prob = np.eye(3)[targets_from_instances(inst)].transpose(2, 0, 1)  # [3, H, W] one-hot
    prob = 0.9 * prob + 0.1 / 3
    pred = instances_from_probabilities(prob)
    assert pred.dtype == np.int32
    assert pred.max() == 2
    assert aji(pred, inst) > 0.9
    # merged foreground without the boundary class would give one blob
    merged = prob.copy()
    merged[1] += merged[2]
    merged[2] = 0
    assert instances_from_probabilities(merged).max() == 1


def test_min_size_removes_specks():
    prob = np.zeros((3, 20, 20))
    prob[0] = 1.0
    prob[:, 2:4, 2:4] = [[[0.0]], [[1.0]], [[0.0]]]  # a 4-pixel nucleus
    prob[:, 10:16, 10:16] = [[[0.0]], [[1.0]], [[0.0]]]  # 36 pixels
    pred = instances_from_probabilities(prob, min_size=10)
    assert pred.max() == 1 and (pred > 0).sum() == 36


def test_dice_aji_hand_computed():
    true = np.zeros((10, 12), int)
    true[0:4, 0:4] = 1  # 16 px
    assert dice(true, true) == 1.0 and aji(true, true) == 1.0
    # relabelled prediction is still perfect
    assert aji(np.where(true > 0, 7, 0), true) == 1.0

    pred = np.zeros_like(true)
    pred[0:4, 2:6] = 3  # shifted by two columns: intersection 8, union 24
    assert dice(pred, true) == pytest.approx(2 * 8 / 32)
    assert aji(pred, true) == pytest.approx(8 / 24)

    fp = pred.copy()
    fp[7:9, 7:9] = 5  # a 4-px false positive adds 4 to the union
    assert aji(fp, true) == pytest.approx(8 / 28)
    assert dice(fp, true) == pytest.approx(2 * 8 / 36)

    missed = true.copy()
    missed[7:10, 7:10] = 2  # a 9-px true nucleus that nothing predicts
    assert aji(pred, missed) == pytest.approx(8 / (24 + 9))

    # two true nuclei both best matched by one big prediction: it is counted in both unions
    two = np.zeros((4, 8), int)
    two[:, :4], two[:, 4:] = 1, 2
    big = np.ones_like(two)
    assert aji(big, two) == pytest.approx((16 + 16) / (32 + 32))

    empty = np.zeros_like(true)
    assert dice(empty, empty) == 1.0 and aji(empty, empty) == 1.0
    assert dice(empty, true) == 0.0 and aji(empty, true) == 0.0


def test_scores_do_not_depend_on_how_the_nuclei_are_numbered(monuseg):
    """AJI and F1 read label maps through a lookup table (small non-negative labels) or a sort
    (anything else): both give the same contingency, whatever the numbering."""
    image, true = monuseg
    pred = classical_nuclei(image)
    scores = (aji(pred, true), f1_at_iou(pred, true), matched_instances(pred, true))
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.arange(1, pred.max() + 1))
    renumbered = {
        "permuted": np.concatenate([[0], ids])[pred],
        "sparse": np.where(pred > 0, pred * 1009 + 17, 0),
        "huge": np.where(pred > 0, pred.astype(np.int64) + 10**12, 0),  # past the table's size
        "float": pred.astype(np.float64),
        "no background": pred + (pred == 0) * (pred.max() + 1),  # background as one more label
    }
    for name, other in renumbered.items():
        if name == "no background":
            continue
        assert (aji(other, true), f1_at_iou(other, true), matched_instances(other, true)) == scores
        assert aji(true, other) == aji(true, pred), name
    # a map with no 0 has no background: the "background" region becomes a (huge) false nucleus
    tp, fp, fn = matched_instances(renumbered["no background"], true)
    assert (tp, fp) == (scores[2][0], scores[2][1] + 1) and aji(
        renumbered["no background"], true
    ) < scores[0]


def test_classical_fallback_on_monuseg(monuseg):
    image, true = monuseg
    pred = classical_nuclei(image)
    n_true, n_pred = len(np.unique(true)) - 1, int(pred.max())
    assert pred.shape == true.shape and pred.dtype == np.int32
    assert n_true / 3 < n_pred < 3 * n_true, (n_pred, n_true)
    assert dice(pred, true) > 0.5
    score = aji(pred, true)
    print(f"classical fallback on {TILE}: {n_pred} nuclei (true {n_true}), AJI {score:.3f}")
    assert score > 0.2


def test_train_unet_smoke(monuseg):
    image, true = monuseg
    crop = (slice(300, 428), slice(300, 428))  # 128 x 128 px of tissue with nuclei
    cfg = UNetConfig(base=4, depth=2)
    model = train_unet(
        [image[crop]], [true[crop]], cfg, epochs=25, lr=1e-2, patch=64, batch_size=4,
        device="cpu", progress=False, steps_per_epoch=1,
    )  # fmt: skip
    losses = model.train_losses
    assert len(losses) == 25 and np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert not model.training
    pred = segment(model, image[crop], tile=64, overlap=16)
    assert pred.shape == (128, 128) and pred.dtype == np.int32


def test_save_load_unet_roundtrip_and_corrupt_file(tmp_path):
    torch.manual_seed(0)
    model = UNet(UNetConfig(base=4, depth=2)).eval()
    model.train_losses = [1.5, 1.0]
    path = save_unet(model, tmp_path / "unet.pt")
    back = load_unet(path, device="cpu")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x))
    assert back.config == model.config and back.train_losses == [1.5, 1.0]
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable saved UNet"):
        load_unet(path)
    with pytest.raises(FileNotFoundError):
        load_unet(tmp_path / "missing.pt")


def test_segmentation_scores_table():
    truth = np.zeros((40, 40), dtype=np.int32)
    truth[disk((10, 10), 5)], truth[disk((28, 28), 6)] = 1, 2
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    scores = segmentation_scores(
        {"perfect": {"t": truth}, "half": {"t": np.where(truth == 2, 0, truth)}},
        {"t": (image, truth)},
    )
    perfect = scores.set_index("method").loc["perfect"]
    assert perfect.dice == 1.0 and perfect.aji == 1.0 and perfect.nuclei_found == 2
    half = scores.set_index("method").loc["half"]
    assert half.nuclei_found == 1 and half.aji < 1.0


# ---- generalising segmentation: instance metrics, targets, augmentation, LOO (issue 16) ----


def test_f1_and_count_error_hand_computed():
    from wsigraph.data.nuclei_seg import count_error, f1_at_iou, matched_instances

    true = np.zeros((10, 12), int)
    true[0:4, 0:4] = 1  # 16 px
    true[6:9, 6:9] = 2  # 9 px
    pred = np.zeros_like(true)
    pred[0:4, 1:5] = 7  # vs 1: intersection 12, union 20, IoU 0.6 > 0.5: a match
    pred[6:9, 7:10] = 8  # vs 2: intersection 6, union 12, IoU 0.5: not > 0.5, no match
    pred[0:2, 9:11] = 9  # 4 px false positive
    assert matched_instances(pred, true) == (1, 2, 1)
    assert f1_at_iou(pred, true) == pytest.approx(2 * 1 / (2 * 1 + 2 + 1))
    assert f1_at_iou(pred, true, iou=0.7) == 0.0  # 0.6 no longer matches: (0, 3, 2)
    assert count_error(pred, true) == pytest.approx(abs(3 - 2) / 2)
    assert f1_at_iou(true, true) == 1.0 and count_error(true, true) == 0.0
    # one prediction merging both true nuclei and a bridge (16 + 9 + 18 = 43 px): IoU 16/43
    # with nucleus 1 and 9/43 with nucleus 2, so neither matches
    merged = np.where(true > 0, 5, 0)
    merged[4:6, 0:9] = 5
    assert matched_instances(merged, true) == (0, 1, 2)
    blob = np.zeros_like(true)
    blob[0:4, 0:5] = 3  # 20 px vs 1: IoU 16 / 20
    assert matched_instances(blob, true) == (1, 0, 1)
    empty = np.zeros_like(true)
    assert f1_at_iou(empty, empty) == 1.0 and f1_at_iou(empty, true) == 0.0
    with pytest.raises(ValueError, match="unique matching"):
        f1_at_iou(pred, true, iou=0.3)
    with pytest.raises(ValueError, match="undefined"):
        count_error(pred, empty)


def test_aji_split_nucleus_hand_computed():
    true = np.zeros((4, 8), int)
    true[:, :] = 1  # one 32-px nucleus
    halves = np.zeros_like(true)
    halves[:, :4], halves[:, 4:] = 1, 2  # split in two: one half matched, the other unused
    # matched: I = 16, U = 32; the unused half adds its 16 px to the denominator
    assert aji(halves, true) == pytest.approx(16 / (32 + 16))


def test_distance_target_on_a_tiny_square():
    from wsigraph.data.nuclei_seg import distance_target

    inst = np.zeros((7, 7), int)
    inst[1:6, 1:6] = 4  # 5 x 5 nucleus: rim, ring, centre at distances 1, 2, 3
    d = distance_target(inst)
    expected = np.zeros((7, 7))
    expected[1:6, 1:6] = 1 / 3
    expected[2:5, 2:5] = 2 / 3
    expected[3, 3] = 1.0
    np.testing.assert_allclose(d, expected, atol=1e-6)
    # two touching nuclei: each peaks at 1, the shared edge is rim (low) on both sides
    two = np.zeros((5, 10), int)
    two[:, :5], two[:, 5:] = 1, 2
    d2 = distance_target(two)
    assert d2[two == 1].max() == pytest.approx(1.0) and d2[two == 2].max() == pytest.approx(1.0)
    assert d2[2, 4] < d2[2, 2] and d2[2, 5] < d2[2, 7]
    assert d2.dtype == np.float32 and (distance_target(np.zeros((3, 3), int)) == 0).all()


def test_distance_watershed_separates_two_touching_discs():
    from wsigraph.data.nuclei_seg import distance_target

    inst = np.zeros((60, 80), int)
    inst[disk((30, 25), 14)] = 1
    inst[disk((30, 50), 14)] = 2  # overlaps disc 1 over a wide chord: one merged foreground
    fg = (inst > 0).astype(float)
    prob = np.stack([1 - fg, fg, np.zeros_like(fg)])  # no boundary class: a single blob
    assert instances_from_probabilities(prob).max() == 1  # interior markers merge them
    pred = instances_from_probabilities(prob, distance=distance_target(inst))
    assert pred.max() == 2 and aji(pred, inst) > 0.9
    with pytest.raises(ValueError, match="distance shape"):
        instances_from_probabilities(prob, distance=np.zeros((3, 3)))


def test_augmented_crop_keeps_image_and_mask_aligned():
    from wsigraph.data.nuclei_seg import augmented_crop

    rng = np.random.default_rng(0)
    inst = np.zeros((300, 340), int)
    for k, (r, c) in enumerate([(40, 50), (150, 200), (250, 90), (100, 300), (200, 280)], 1):
        inst[disk((r, c), 18, shape=inst.shape)] = k
    inst[:60, 150:170] = 9  # an asymmetric bar, so a wrong flip or rotation shows
    image = np.where(inst[..., None] > 0, 40, 230).astype(np.uint8).repeat(3, axis=2)
    for stain in (0.0, 0.05):
        for _ in range(10):
            img, m = augmented_crop(image, inst, rng, patch=128, scale=(0.7, 1.4), stain=stain)
            assert img.shape == (128, 128, 3) and m.shape == (128, 128)
            dark = img.mean(axis=2) < 0.5
            assert (dark == (m > 0)).mean() > 0.97
            assert set(np.unique(m)) <= set(np.unique(inst))  # labels stay labels
    # no zoom, no stain: the crop is an exact flip / rotation of a window of the tile
    img, m = augmented_crop(image, inst, np.random.default_rng(3), 64, (1, 1), 0.0)
    assert np.array_equal(img[..., 0] < 0.5, m > 0)


def test_stain_jitter_identity_and_range():
    from wsigraph.data.nuclei_seg import stain_jitter

    rng = np.random.default_rng(1)
    x = rng.uniform(0.2, 1.0, (8, 8, 3)).astype(np.float32)
    assert np.array_equal(stain_jitter(x, rng, 0.0), x)
    y = stain_jitter(x, rng, 0.05)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    assert 0 < np.abs(y - x).mean() < 0.15


def test_train_unet_with_distance_output_smoke(monuseg):
    image, true = monuseg
    crop = (slice(300, 428), slice(300, 428))
    model = train_unet(
        [image[crop]], [true[crop]], UNetConfig(base=4, depth=2, out_channels=4), epochs=3,
        lr=1e-2, patch=64, batch_size=2, device="cpu", progress=False, steps_per_epoch=2,
        augment=True, class_weights="sqrt", schedule="cosine",
    )  # fmt: skip
    assert len(model.train_losses) == 3 and model.train_seconds > 0
    from wsigraph.data.nuclei_seg import predict_probabilities

    prob = predict_probabilities(model, image[crop], tile=64, overlap=16)
    assert prob.shape == (4, 128, 128)
    np.testing.assert_allclose(prob[:3].sum(0), 1.0, atol=1e-5)
    assert 0 <= prob[3].min() and prob[3].max() <= 1
    assert segment(model, image[crop], tile=64, overlap=16).shape == (128, 128)
    with pytest.raises(ValueError, match="image"):
        train_unet([image[crop]], [true[:10, :10]], progress=False)


def test_rasterised_xml_matches_the_stored_instance_map(monuseg):
    from wsigraph.data.nuclei_seg import monuseg_microns_per_pixel, rasterise_monuseg_xml

    folder = data_file("nuclei/monuseg")
    _, true = monuseg
    inst = rasterise_monuseg_xml(folder / f"{TILE}.xml", true.shape)
    assert np.array_equal(inst, true)
    assert monuseg_microns_per_pixel(folder / f"{TILE}.xml") == pytest.approx(0.2525)


def _toy_tiles():
    tiles, organs = {}, {}
    for k, organ in enumerate(["a", "a", "b", "c", "c"]):
        inst = np.zeros((40, 40), int)
        inst[disk((20, 20), 6 + k)] = 1
        image = np.where(inst[..., None] > 0, 40, 230).astype(np.uint8).repeat(3, axis=2)
        tiles[f"t{k}"], organs[f"t{k}"] = (image, inst), organ
    return tiles, organs


def test_leave_one_organ_out_never_trains_on_the_held_out_organ(tmp_path):
    from wsigraph.data.nuclei_loo import choose_by_held_out_aji, leave_one_organ_out, summarise

    tiles, organs = _toy_tiles()
    seen = []

    def spy(train, fold):
        seen.append((fold, sorted(train)))
        return lambda image: (image[..., 0] < 128).astype(np.int32)  # a perfect threshold

    def empty(train, fold):
        return lambda image: np.zeros(image.shape[:2], np.int32)

    methods = {"threshold": spy, "nothing": empty}
    rows = leave_one_organ_out(tiles, organs, methods, tmp_path, score_train=True, progress=False)
    assert [f for f, _ in seen] == ["a", "b", "c"]
    for fold, train in seen:
        assert train == sorted(n for n in tiles if organs[n] != fold)
    held = rows[rows["split"] == "held out"]
    assert (held["organ"] == held["fold"]).all()
    assert sorted(held[held["method"] == "threshold"]["tile"]) == sorted(tiles)
    train = rows[rows["split"] == "train"]
    assert (train["organ"] != train["fold"]).all()
    summary = summarise(rows)
    mean = summary[(summary["organ"] == "mean over organs") & (summary["split"] == "held out")]
    assert mean.set_index("method").loc["threshold", "aji"] == pytest.approx(1.0)
    assert choose_by_held_out_aji(summary) == "threshold"
    # resumable: cached folds are read back, nothing is refitted
    again = leave_one_organ_out(tiles, organs, methods, tmp_path, progress=False)
    assert len(seen) == 3 and again.equals(rows)
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["a.json", "b.json", "c.json"]
    with pytest.raises(ValueError, match="no tiles"):
        leave_one_organ_out(tiles, organs, methods, tmp_path / "x", folds=["z"])
    with pytest.raises(KeyError, match="t0"):
        leave_one_organ_out(tiles, {}, methods, tmp_path / "y")


def test_summary_means_count_each_organ_once():
    from wsigraph.data.nuclei_loo import summarise

    rows = pd.DataFrame(
        [
            {"method": "m", "organ": "a", "split": "held out", "tile": "t1", "nuclei_true": 10,
             "nuclei_found": 12, "dice": 0.5, "aji": 0.4, "f1": 0.6, "count_error": 0.2},
            {"method": "m", "organ": "a", "split": "held out", "tile": "t2", "nuclei_true": 10,
             "nuclei_found": 10, "dice": 0.7, "aji": 0.6, "f1": 0.8, "count_error": 0.0},
            {"method": "m", "organ": "b", "split": "held out", "tile": "t3", "nuclei_true": 5,
             "nuclei_found": 4, "dice": 0.9, "aji": 0.9, "f1": 0.9, "count_error": 0.2},
        ]
    )  # fmt: skip
    s = summarise(rows).set_index("organ")
    assert s.loc["a", "aji"] == pytest.approx(0.5) and s.loc["a", "nuclei_found"] == 22
    assert s.loc["mean over organs", "aji"] == pytest.approx((0.5 + 0.9) / 2)
    assert s.loc["mean over organs", "count_error"] == pytest.approx((0.1 + 0.2) / 2)


def test_classical_method_chooses_its_settings_on_training_tiles_only(monkeypatch):
    import wsigraph.data.nuclei_loo as loo

    tiles, _ = _toy_tiles()
    calls = []

    def fake(image, **kwargs):
        calls.append(kwargs["h"])
        good = kwargs["h"] == 2.0
        return (image[..., 0] < 128).astype(np.int32) if good else np.zeros(image.shape[:2], int)

    monkeypatch.setattr(loo, "classical_nuclei", fake)
    fit = loo.classical_method([{"h": None}, {"h": 2.0}])
    train = {n: tiles[n] for n in ("t0", "t1")}
    seg = fit(train, "held")
    assert seg.settings == {"h": 2.0} and len(calls) == 4  # 2 settings x 2 training tiles
    assert seg(tiles["t4"][0]).max() == 1


def test_loo_caches_held_out_predictions_and_settings(tmp_path):
    from wsigraph.data.nuclei_loo import (
        deployed_classical_settings,
        held_out_predictions,
        leave_one_organ_out,
    )

    tiles, organs = _toy_tiles()

    def classical_like(train, fold):
        run = lambda image: (image[..., 0] < 128).astype(np.int32)  # noqa: E731
        run.settings = {"h": 1.0 if fold == "b" else None}
        return run

    rows = leave_one_organ_out(
        tiles, organs, {"classical fallback": classical_like}, tmp_path, progress=False
    )
    assert deployed_classical_settings(rows) == {"h": None}  # chosen by folds a and c
    preds = held_out_predictions(tmp_path, ["a", "b", "c"])["classical fallback"]
    assert sorted(preds) == sorted(tiles)
    for name, (_, truth) in tiles.items():
        assert np.array_equal(preds[name] > 0, truth > 0)


def test_annotated_tiles_without_and_with_the_shared_data(shared_extra):
    from wsigraph.data.nuclei_loo import MONUSEG_ORGANS, annotated_monuseg_tiles, organs_of

    own, note = annotated_monuseg_tiles(use_shared=False)
    assert sorted(own) == ["TCGA-HC-7209-01A-01-TS1", "TCGA-HT-8564-01Z-00-DX1"]
    assert "repository's tiles only" in note
    assert organs_of(list(own)) == {
        "TCGA-HC-7209-01A-01-TS1": "prostate", "TCGA-HT-8564-01Z-00-DX1": "brain",
    }  # fmt: skip
    with pytest.raises(KeyError, match="unknown-tile"):
        organs_of(["unknown-tile"])
    shared_extra("nuclei/monuseg_more")
    every, note = annotated_monuseg_tiles()
    assert sorted(every) == sorted(MONUSEG_ORGANS) and "7 organs" in note
    for name, (image, inst) in every.items():
        assert image.shape == (1000, 1000, 3) and inst.shape == (1000, 1000), name


def test_rescale_tile_and_segment_at_half_scale():
    from wsigraph.data.nuclei_seg import rescale_tile

    inst = np.zeros((40, 60), int)
    inst[disk((20, 20), 8)], inst[disk((20, 42), 8)] = 3, 7
    image = np.where(inst[..., None] > 0, 40, 230).astype(np.uint8).repeat(3, axis=2)
    small, small_inst = rescale_tile(image, inst, 0.5)
    assert small.shape == (20, 30, 3) and small.dtype == np.uint8 and small_inst.shape == (20, 30)
    assert set(np.unique(small_inst)) == {0, 3, 7}
    assert ((small.mean(axis=2) < 135) == (small_inst > 0)).mean() > 0.9
    assert rescale_tile(image, None, 0.5)[1] is None
    with pytest.raises(ValueError, match="positive"):
        rescale_tile(image, inst, 0.0)
    torch.manual_seed(0)
    model = UNet(UNetConfig(base=4, depth=2, out_channels=4)).eval()
    assert segment(model, image, tile=32, overlap=8, scale=0.5).shape == (40, 60)


def test_unet_method_picks_post_processing_on_training_tiles_only(tmp_path, monkeypatch):
    import wsigraph.data.nuclei_loo as loo

    tiles, organs = _toy_tiles()
    train = {n: tiles[n] for n in tiles if organs[n] != "c"}
    scored = []

    def spy_aji(pred, truth):
        scored.append(truth)
        return float(pred.max() > 0)

    monkeypatch.setattr(loo, "aji", spy_aji)
    grid = [{"marker_threshold": 0.5, "min_size": 10}, {"marker_threshold": 0.6, "min_size": 5}]
    fit = loo.unet_method(
        tmp_path, UNetConfig(base=4, depth=2, out_channels=4), steps=2, patch=32, device="cpu",
        scale=0.5, post_grid=grid,
    )  # fmt: skip
    seg = fit(train, "c")
    assert (tmp_path / "unet_c.pt").is_file()
    assert len(scored) == len(grid) * len(train)
    assert all(any(t is truth for _, truth in train.values()) for t in scored)
    assert seg.settings["weights"] == "unet_c.pt" and seg.settings["marker_threshold"] in (0.5, 0.6)
    assert seg(tiles["t4"][0]).shape == (40, 40)
    again = fit(train, "c")  # weights read back, not retrained
    assert again.train_seconds == seg.train_seconds
