"""UNet nuclei segmentation: model shapes, targets, watershed, metrics, real MoNuSeg tile."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.draw import disk

from wsigraph.data.nuclei_seg import (
    aji,
    classical_nuclei,
    dice,
    instances_from_probabilities,
    load_unet,
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
