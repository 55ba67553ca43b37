"""Tests for the patch-encoder registry (``wsigraph.data.encoders``).

Learned encoders are loaded from state dicts made on the fly from randomly initialised
torchvision models (``weights=None``); nothing is downloaded.
"""

from pathlib import Path

import pytest
import torch
from torchvision.models import densenet121, resnet50

from wsigraph.data.encoders import (
    ENCODERS,
    DemoFilterBank,
    Encoder,
    WeightsMismatchError,
    WeightsNotFoundError,
    get_encoder,
)


@pytest.fixture(scope="module")
def densenet_state() -> dict[str, torch.Tensor]:
    """A torchvision DenseNet-121 state dict (``features.*`` and ``classifier.*``)."""
    torch.manual_seed(0)
    return densenet121(weights=None).state_dict()


@pytest.fixture(scope="module")
def resnet_state() -> dict[str, torch.Tensor]:
    """A torchvision ResNet-50 state dict, ``fc.*`` and ``layer4.*`` included."""
    torch.manual_seed(0)
    return resnet50(weights=None).state_dict()


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _patches(n: int = 2, side: int = 64, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, side, side, 3), dtype=torch.uint8, generator=generator)


def _flat(rgb: tuple[int, int, int], side: int = 64) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.uint8).expand(1, side, side, 3).clone()  # [1, S, S, 3]


def _checkerboard(a: tuple[int, int, int], b: tuple[int, int, int], side: int = 64) -> torch.Tensor:
    """Period-2 px checkerboard of colours ``a`` and ``b``, ``[1, side, side, 3]`` uint8."""
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    odd = ((yy + xx) % 2 == 1).unsqueeze(-1)  # [S, S, 1]
    return torch.where(odd, torch.tensor(b), torch.tensor(a)).to(torch.uint8).unsqueeze(0)


def test_registry_lists_names():
    assert set(ENCODERS) == {"kimianet", "resnet50-trunc", "demo"}


def test_unknown_name_lists_allowed_names():
    with pytest.raises(ValueError, match="Unknown encoder 'uni'") as info:
        get_encoder("uni")
    for name in ENCODERS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "layout",
    ["module.", "module.model.0.", "state_dict", "model"],
    ids=["dataparallel", "authors-file", "checkpoint-state_dict", "checkpoint-model"],
)
def test_kimianet_loads_prefixed_state_dict(densenet_state, tmp_path, layout):
    trunk = {k.removeprefix("features."): v for k, v in densenet_state.items()}
    if layout == "module.model.0.":  # the authors' DataParallel(fully_connected(...)) file
        state = {f"module.model.0.{k}": v for k, v in trunk.items() if "classifier" not in k}
        state["module.fc_4.weight"] = torch.zeros(30, 1024)
    elif layout == "module.":
        state = {f"module.{k}": v for k, v in densenet_state.items()}
        state["module.classifier.weight"] = torch.zeros(30, 1024)  # a KimiaNet-sized head
    else:
        state = {layout: densenet_state, "epoch": 3}
    encoder = get_encoder("kimianet", weights_path=_save(state, tmp_path / "kimianet.pth"))

    assert isinstance(encoder, Encoder)
    assert (encoder.out_dim, encoder.input_size) == (1024, 224)
    loaded = encoder.module[0].conv0.weight
    torch.testing.assert_close(loaded, densenet_state["features.conv0.weight"])
    assert not encoder.module.training
    features = encoder.encode(_patches())
    assert features.shape == (2, 1024) and features.dtype == torch.float32
    assert features.isfinite().all()


def test_resnet50_trunc_loads_and_drops_layer4(resnet_state, tmp_path):
    encoder = get_encoder("resnet50-trunc", weights_path=_save(resnet_state, tmp_path / "r50.pth"))

    assert not hasattr(encoder.module[0], "layer4")
    torch.testing.assert_close(encoder.module[0].conv1.weight, resnet_state["conv1.weight"])
    features = encoder.encode(_patches())
    assert features.shape == (2, 1024) and features.dtype == torch.float32
    assert features.isfinite().all()


@pytest.mark.parametrize("name", ["kimianet", "resnet50-trunc"])
def test_missing_weights_file_explains_where_to_get_it(tmp_path, name):
    path = tmp_path / "nowhere" / "weights.pth"
    with pytest.raises(WeightsNotFoundError) as info:
        get_encoder(name, weights_path=path)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(path) in message and "weights_path" in message and "run_all.sh" in message
    assert ("KimiaNet" if name == "kimianet" else "ResNet-50") in message


def test_kimianet_without_path_names_the_expected_file():
    with pytest.raises(WeightsNotFoundError, match="KimiaNetPyTorchWeights.pth") as info:
        get_encoder("kimianet")
    assert "KimiaNet" in str(info.value) and "no weights_path was given" in str(info.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_weights_file_raises_value_error(resnet_state, tmp_path, damage):
    path = tmp_path / "broken.pth"
    if damage == "garbage":
        path.write_bytes(b"this is not a checkpoint" * 10)
    else:
        small = {k: v for k, v in resnet_state.items() if k.startswith("layer1.")}
        data = _save(small, path).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="broken.pth"):
        get_encoder("resnet50-trunc", weights_path=path)


def test_non_state_dict_file_raises_value_error(tmp_path):
    path = _save({"epoch": 3, "note": "no tensors here"}, tmp_path / "meta.pth")
    with pytest.raises(ValueError, match="meta.pth"):
        get_encoder("kimianet", weights_path=path)


def test_wrong_shapes_and_missing_keys_are_listed(densenet_state, tmp_path):
    state = dict(densenet_state)
    state["features.conv0.weight"] = torch.zeros(32, 3, 7, 7)
    del state["features.norm5.weight"]
    with pytest.raises(WeightsMismatchError) as info:
        get_encoder("kimianet", weights_path=_save(state, tmp_path / "wrong.pth"))
    message = str(info.value)
    assert "wrong.pth" in message
    assert "conv0.weight: file (32, 3, 7, 7) vs model (64, 3, 7, 7)" in message
    assert "missing: norm5.weight" in message


def test_resnet50_trunc_rejects_a_densenet_file(densenet_state, tmp_path):
    with pytest.raises(WeightsMismatchError, match="unexpected"):
        get_encoder("resnet50-trunc", weights_path=_save(densenet_state, tmp_path / "dn.pth"))


def test_encode_rejects_non_uint8_patches():
    with pytest.raises(ValueError, match="uint8"):
        get_encoder("demo").encode(torch.rand(2, 64, 64, 3))


def test_encode_empty_batch():
    encoder = get_encoder("demo")
    empty = torch.zeros(0, 64, 64, 3, dtype=torch.uint8)
    assert encoder.encode(empty).shape == (0, encoder.out_dim)


def test_demo_shape_names_and_determinism():
    encoder = get_encoder("demo")
    patches = _patches(n=5, side=48)
    features = encoder.encode(patches)

    assert encoder.input_size is None
    assert features.shape == (5, encoder.out_dim) and encoder.out_dim == 44
    assert len(encoder.module.feature_names()) == encoder.out_dim
    assert features.dtype == torch.float32 and features.isfinite().all()
    assert torch.equal(features, get_encoder("demo").encode(patches))
    torch.testing.assert_close(encoder.encode(patches[2:3]), features[2:3])  # batch-independent


def test_demo_separates_flat_from_textured():
    encoder = get_encoder("demo")
    flat = encoder.encode(_flat((180, 120, 200)))
    textured = encoder.encode(_patches(n=1))
    assert (flat - textured).abs().max() > 0.1


def test_demo_sees_fine_checkerboard_but_not_flat_patch_size():
    encoder = get_encoder("demo")
    names = DemoFilterBank().feature_names()
    checker = encoder.encode(_checkerboard((120, 60, 150), (200, 140, 230)))[0]
    flat = encoder.encode(_flat((160, 100, 190)))[0]  # the checkerboard's mean colour
    flat_larger = encoder.encode(_flat((160, 100, 190), side=96))[0]

    torch.testing.assert_close(flat[:3], checker[:3])  # same mean RGB
    torch.testing.assert_close(flat, flat_larger, atol=1e-5, rtol=1e-4)
    assert (checker - flat).norm() > 1e3 * (flat - flat_larger).norm() + 0.1
    fine = names.index("log_absmean_s0.5")
    assert checker[fine] > 0.1 and flat[fine].abs() < 1e-5


def test_demo_tissue_fractions():
    encoder = get_encoder("demo")
    names = DemoFilterBank().feature_names()
    columns = [i for i, name in enumerate(names) if name.startswith("frac_odsum")]
    white = encoder.encode(_flat((255, 255, 255)))[0, columns]
    dark = encoder.encode(_flat((40, 20, 60)))[0, columns]
    assert white.tolist() == [0.0] * 4 and dark.tolist() == [1.0] * 4


def test_demo_rejects_tiny_patches_and_warns_on_weights():
    with pytest.raises(ValueError, match="side >= 16"):
        get_encoder("demo").encode(_patches(side=8))
    with pytest.warns(UserWarning, match="no weights"):
        get_encoder("demo", weights_path="unused.pth")


# timm encoders ---------------------------------------------------------------------------------
def _timm_weights(tmp_path, name="vit_tiny_patch16_224", suffix=".safetensors", head=True):
    """A timm model initialised at random and saved to a file (nothing is downloaded)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    full = timm.create_model(name, pretrained=False, num_classes=7 if head else 0)
    path = tmp_path / f"{name}{suffix}"
    state = {k: v.contiguous() for k, v in full.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    return path, full


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_timm_model_from_a_local_file_encodes_with_its_own_normalisation(
    tmp_path, suffix, monkeypatch
):
    import timm

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a download attempt would fail loudly
    path, full = _timm_weights(tmp_path, suffix=suffix)
    enc = get_encoder("timm:vit_tiny_patch16_224", path)
    config = timm.data.resolve_data_config({}, model=full)
    assert enc.name == "timm:vit_tiny_patch16_224" and enc.out_dim == full.num_features == 192
    assert enc.input_size == config["input_size"][-1] == 224
    assert enc.mean == tuple(config["mean"]) and enc.std == tuple(config["std"])
    patches = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    out = enc.encode(patches)
    assert out.shape == (2, 192) and torch.isfinite(out).all()
    # the same numbers as the file's model without its head, fed timm's own preprocessing
    x = patches.permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    mean, std = (
        torch.tensor(config["mean"]).view(1, 3, 1, 1),
        torch.tensor(config["std"]).view(1, 3, 1, 1),
    )
    full.eval()
    with torch.no_grad():
        expected = full.forward_head(full.forward_features((x - mean) / std), pre_logits=True)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_timm_errors_name_close_matches_the_file_and_mismatched_weights(tmp_path):
    with pytest.raises(
        ValueError,
        match="timm has no model 'vit_tiny_patch16_22'.*close matches: vit_tiny_patch16_224",
    ):
        get_encoder("timm:vit_tiny_patch16_22", tmp_path / "x.safetensors")
    with pytest.raises(WeightsNotFoundError, match="timm:vit_tiny_patch16_224"):
        get_encoder("timm:vit_tiny_patch16_224", tmp_path / "absent.safetensors")
    path, _ = _timm_weights(tmp_path, "resnet10t")
    with pytest.raises(WeightsMismatchError, match="does not match VisionTransformer"):
        get_encoder("timm:vit_tiny_patch16_224", path)
    with pytest.raises(ValueError, match="or timm:<model name>"):
        get_encoder("uni")
