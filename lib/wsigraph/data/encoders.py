r"""Patch encoders: RGB patches -> feature vectors, one row per patch.

Which encoder each paper uses:

- **H2-MIL** (Hou et al., AAAI 2022) and **HIGT** (Guo et al., MICCAI 2023) embed every patch
  with **KimiaNet** (Riasatian et al., *Medical Image Analysis* 2021), a DenseNet-121 trained
  on TCGA: 1024-d features (``"kimianet"``).
- **MiCo** follows CLAM and uses an ImageNet **ResNet-50 truncated after layer3**, average
  pooled: 1024-d features (``"resnet50-trunc"``).
- ``"timm:<model name>"``: any timm model (UNI, CONCH's vision tower, Virchow, ...), with its
  weights from a local file and its normalisation and input size from timm's pretrained config.
- ``"demo"`` is **not a learned encoder**: a fixed bank of colour, optical-density and
  Gaussian-derivative filters that runs on two CPU cores with no weights file. It exists so the
  synthetic demo profile runs end to end; numbers obtained with it are demo numbers and say
  nothing about the papers' results.

Learned encoders never download anything: their weights come from a file given as
``weights_path`` and a missing file raises :class:`WeightsNotFoundError` explaining where the
file comes from.

Example::

    encoder = get_encoder("kimianet", weights_path="KimiaNetPyTorchWeights.pth", device="cuda")
    features = encoder.encode(patches)  # [B, H, W, 3] uint8 -> [B, 1024] float32
"""

import itertools
import math
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import densenet121, resnet50

__all__ = [
    "ENCODERS",
    "DemoFilterBank",
    "Encoder",
    "WeightsMismatchError",
    "WeightsNotFoundError",
    "get_encoder",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsNotFoundError(FileNotFoundError):
    """The weights file of a learned encoder is not given or does not exist."""


class WeightsMismatchError(ValueError):
    """A weights file was read but its tensors do not fit the encoder's architecture."""


@dataclass
class Encoder:
    """A patch encoder ready for inference.

    Args:
        name: Registry name, e.g. ``"kimianet"``.
        module: Network in eval mode mapping a normalised float batch ``[B, 3, H, W]`` to
            ``[B, out_dim]``.
        out_dim: Feature dimension.
        mean: Per-channel mean subtracted from RGB in ``[0, 1]``.
        std: Per-channel standard deviation dividing RGB in ``[0, 1]``.
        input_size: Side the module expects; patches are resized to it. ``None``: any size.
    """

    name: str
    module: nn.Module
    out_dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int | None

    @property
    def device(self) -> torch.device:
        """Device of the module's parameters (CPU for a module without tensors)."""
        tensors = itertools.chain(self.module.parameters(), self.module.buffers())
        first = next(tensors, None)
        return torch.device("cpu") if first is None else first.device

    def encode(self, patches_uint8: torch.Tensor) -> torch.Tensor:
        """Embed a batch of RGB patches.

        Resizes to ``input_size`` (bilinear, antialiased) when set, normalises with
        ``mean``/``std`` and runs the module under :func:`torch.inference_mode` on its device.

        Args:
            patches_uint8: RGB patches, ``[B, H, W, 3]`` uint8 (on any device).

        Returns:
            Features ``[B, out_dim]`` float32, on the module's device.
        """
        _check_patches(patches_uint8)
        device = self.device
        if len(patches_uint8) == 0:
            return torch.empty(0, self.out_dim, device=device)
        with torch.inference_mode():
            x = patches_uint8.to(device).permute(0, 3, 1, 2).float() / 255  # [B, 3, H, W]
            size = self.input_size
            if size is not None and tuple(x.shape[-2:]) != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
            mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
            std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
            return self.module((x - mean) / std).float()  # [B, out_dim]


def _check_patches(patches: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``patches`` is a ``[B, H, W, 3]`` uint8 tensor."""
    if patches.dtype != torch.uint8 or patches.ndim != 4 or patches.shape[-1] != 3:
        raise ValueError(
            "patches must be a [B, H, W, 3] uint8 tensor, "
            f"got {tuple(patches.shape)} {patches.dtype}"
        )


# --- weights files ---------------------------------------------------------------------------

_KIMIANET_SOURCE = (
    "KimiaNet weights are distributed by its authors (Kimia Lab, University of Waterloo) and "
    "cannot be downloaded automatically: see the KimiaNet repository "
    "https://github.com/KimiaLabMayo/KimiaNet and "
    "https://kimialab.uwaterloo.ca/kimia/index.php/data-and-code-2/kimia-net/ "
    "(accept the end-user agreement / fill in the request form)."
)
_RESNET50_SOURCE = (
    "This is the torchvision ImageNet ResNet-50 weights file; CLAM used the ImageNet-1k V1 "
    "weights (resnet50-0676ba61.pth, formerly resnet50-19c8e357.pth; V2 is "
    "resnet50-11ad3fa6.pth), downloadable on a machine with internet from "
    "https://download.pytorch.org/models/resnet50-0676ba61.pth."
)


def _missing_weights_message(encoder: str, filename: str, path: Path | None, source: str) -> str:
    """Explain which weights file is expected, where, where it comes from and how to pass it."""
    where = "no weights_path was given" if path is None else f"no such file: {path}"
    return (
        f"Encoder {encoder!r} needs its weights file {filename} ({where}). {source} "
        f'Pass the path with encoder="{encoder}", weights_path="/path/to/{filename}" in the '
        f"notebook's parameters cell, or ./run_all.sh -p weights_path /path/to/{filename}. "
        'To run without weights use encoder="demo" (not a learned encoder).'
    )


def _require_file(path: Path | None, encoder: str, filename: str, source: str) -> Path:
    """Return ``path`` if it is an existing file, else raise :class:`WeightsNotFoundError`."""
    if path is None or not path.is_file():
        raise WeightsNotFoundError(_missing_weights_message(encoder, filename, path, source))
    return path


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict (optionally wrapped under ``state_dict`` or ``model``) from ``path``."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for corrupt or foreign files
        detail = str(err).strip().split("\n", 1)[0]
        raise ValueError(
            f"Could not read weights file {path}: {type(err).__name__}: {detail} "
            "(expected a PyTorch state dict saved with torch.save; is the file truncated?)"
        ) from err
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"Weights file {path} does not hold a state dict of tensors")
    return dict(obj)


def _strip_prefixes(key: str, prefixes: tuple[str, ...]) -> str:
    """Remove any of ``prefixes`` from the front of ``key``, repeatedly."""
    while stripped := next((p for p in prefixes if key.startswith(p)), None):
        key = key[len(stripped) :]
    return key


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """``load_state_dict(strict=True)``, raising :class:`WeightsMismatchError` with every problem."""
    expected = module.state_dict()
    for key in expected:  # files from old PyTorch lack BatchNorm step counters
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, expected[key])
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in state and state[key].shape != expected[key].shape
    ]
    problems = [
        f"{len(items)} {what}: {', '.join(items[:8])}{', ...' if len(items) > 8 else ''}"
        for what, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
        if items
    ]
    if problems:
        raise WeightsMismatchError(
            f"Weights file {path} does not match {type(module).__name__} "
            f"(keys after stripping prefixes): {'; '.join(problems)}"
        )
    module.load_state_dict(state, strict=True)


# --- learned encoders ------------------------------------------------------------------------

# torchvision < 0.4 DenseNet checkpoints name layers "norm.1" instead of "norm1".
_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _kimianet_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map KimiaNet / torchvision DenseNet-121 keys onto ``densenet121().features`` keys.

    The authors' file stores ``DataParallel(fully_connected(Sequential(features, pool)))``,
    i.e. ``module.model.0.<layer>`` plus a 30-class head ``module.fc_4.*``; a torchvision
    DenseNet stores ``features.<layer>`` plus ``classifier.*``. Heads are dropped.
    """
    trunk = {}
    for key, value in state.items():
        key = _strip_prefixes(key, ("module.", "model.", "features.", "0."))
        if re.match(r"(classifier|fc\w*)\.", key):
            continue
        trunk[_OLD_DENSENET_KEY.sub(r"\1\2", key)] = value
    return trunk


def _build_kimianet(weights_path: Path | None) -> Encoder:
    """KimiaNet: DenseNet-121 features -> global average pool, 1024-d.

    Follows the authors' PyTorch and Keras extraction code, which pool the output of the last
    BatchNorm (``norm5``) with no ReLU in between, so features may be negative. Patches are
    resized to 224 px (ImageNet convention); the authors' sample code feeds patches at their
    native size, which ``dataclasses.replace(encoder, input_size=None)`` reproduces.
    """
    path = _require_file(weights_path, "kimianet", "KimiaNetPyTorchWeights.pth", _KIMIANET_SOURCE)
    trunk = densenet121(weights=None).features
    _load_strict(trunk, _kimianet_state(_read_state_dict(path)), path)
    module = nn.Sequential(trunk, nn.AdaptiveAvgPool2d(1), nn.Flatten())  # [B, 1024]
    return Encoder("kimianet", module, 1024, IMAGENET_MEAN, IMAGENET_STD, 224)


def _resnet50_trunk() -> nn.Sequential:
    """ResNet-50 up to and including layer3 (output ``[B, 1024, H/16, W/16]``)."""
    net = resnet50(weights=None)
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")
    return nn.Sequential(OrderedDict((name, getattr(net, name)) for name in names))


def _resnet50_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip ``module.``/``model.`` prefixes and drop the ``fc`` head and ``layer4``."""
    stripped = {_strip_prefixes(key, ("module.", "model.")): value for key, value in state.items()}
    return {k: v for k, v in stripped.items() if not k.startswith(("fc.", "layer4."))}


def _build_resnet50_trunc(weights_path: Path | None) -> Encoder:
    """CLAM's ResNet-50 truncated after layer3 -> global average pool, 1024-d."""
    path = _require_file(weights_path, "resnet50-trunc", "resnet50-0676ba61.pth", _RESNET50_SOURCE)
    trunk = _resnet50_trunk()
    _load_strict(trunk, _resnet50_state(_read_state_dict(path)), path)
    module = nn.Sequential(trunk, nn.AdaptiveAvgPool2d(1), nn.Flatten())  # [B, 1024]
    return Encoder("resnet50-trunc", module, 1024, IMAGENET_MEAN, IMAGENET_STD, 224)


# --- demo encoder ----------------------------------------------------------------------------


def _gaussian_kernels(sigma: float, radius: int) -> torch.Tensor:
    """Sampled 1-D Gaussian, first and second derivative, ``[3, 2 * radius + 1]``.

    Taps beyond ``⌈3σ⌉`` are zero. The Gaussian sums to 1 and both derivatives sum to 0, so a
    flat image gives zero response.
    """
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(t**2) / (2 * sigma**2)) * (t.abs() <= math.ceil(3 * sigma))
    g = g / g.sum()
    dg = -t / sigma**2 * g
    ddg = (t**2 / sigma**4 - 1 / sigma**2) * g
    ddg = torch.where(g > 0, ddg - ddg.sum() / (g > 0).sum(), 0.0)
    return torch.stack([g, dg, ddg]).float()


class DemoFilterBank(nn.Module):
    r"""Fixed, weight-free features for the synthetic demo profile. NOT a learned encoder.

    Input is RGB in :math:`[0, 1]` (the demo encoder's mean is 0 and std 1). With optical
    density :math:`OD_c = -\log((255 I_c + 1) / 256)` per channel, grey OD the channel mean of
    OD and OD sum the channel sum, the 44 features, in order, are:

    - ``0-11`` colour: mean of R, G, B; std of R, G, B; mean of OD R, G, B; std of OD R, G, B.
    - ``12-19`` Laplacian of Gaussian of grey OD (scale-normalised, :math:`\sigma^2 \nabla^2 G`)
      at :math:`\sigma` = 0.5, 1, 2, 4 px: mean absolute response then std, per sigma.
    - ``20-27`` Gaussian-derivative gradient magnitude of grey OD (:math:`\sigma |\nabla G|`)
      at :math:`\sigma` = 0.5, 1, 2, 4 px: mean then std, per sigma.
    - ``28-31`` fraction of pixels whose OD sum exceeds 0.25, 0.5, 1, 2 (tissue vs background,
      then increasingly dark, nuclei-like stain).
    - ``32-43`` 2x2 layout: mean OD of R, G, B in the top-left, top-right, bottom-left,
      bottom-right quadrant (channel-major: R quadrants, then G, then B).

    Stds are population stds. :meth:`feature_names` returns these names. Borders are reflected;
    patches need a side of at least 16 px. Deterministic. Columns have very different scales
    (fractions in [0, 1], OD up to ~5.5), so standardise them before training. The filters
    are applied as banded matrix products, so cost grows with the patch side: 512 patches of
    64 px take ~0.2 s on two CPU cores, of 256 px ~8 s.

    Shapes:
        input ``[B, 3, H, W]`` -> output ``[B, 44]``
    """

    sigmas = (0.5, 1.0, 2.0, 4.0)
    od_thresholds = (0.25, 0.5, 1.0, 2.0)
    radius = 12  # ⌈3 · max(sigmas)⌉
    min_side = 16  # reflected borders need a side > radius
    _chunk_pixels = 2**22  # texture is computed for this many pixels at a time

    def __init__(self) -> None:
        super().__init__()
        kernels = [_gaussian_kernels(sigma, self.radius) for sigma in self.sigmas]
        self.register_buffer("kernels", torch.cat(kernels), persistent=False)  # [12, 2r+1]

    @property
    def out_dim(self) -> int:
        return len(self.feature_names())

    def feature_names(self) -> list[str]:
        """Name of every output column, in order."""
        spaces, stats, quadrants = ("rgb", "od"), ("mean", "std"), ("tl", "tr", "bl", "br")
        colour = [f"{sp}_{st}_{c}" for sp in spaces for st in stats for c in "rgb"]
        log = [f"log_{st}_s{s:g}" for s in self.sigmas for st in ("absmean", "std")]
        grad = [f"grad_{st}_s{s:g}" for s in self.sigmas for st in stats]
        fractions = [f"frac_odsum_gt{t:g}" for t in self.od_thresholds]
        layout = [f"od_mean_{c}_{q}" for c in "rgb" for q in quadrants]
        return colour + log + grad + fractions + layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.min_side:
            raise ValueError(
                f"demo encoder needs patches of side >= {self.min_side}, got {x.shape}"
            )
        od = -torch.log((x * 255 + 1) / 256)  # [B, 3, H, W]
        colour = [t for img in (x, od) for t in _mean_std(img)]  # 4 x [B, 3]
        chunk = max(1, self._chunk_pixels // (x.shape[-2] * x.shape[-1]))  # bounds memory
        texture = torch.cat([self._texture(g) for g in od.mean(1).split(chunk)])  # [B, 16]
        thresholds = torch.tensor(self.od_thresholds, device=x.device).view(1, -1, 1, 1)
        fractions = (od.sum(1, keepdim=True) > thresholds).float().mean((2, 3))  # [B, 4]
        layout = F.adaptive_avg_pool2d(od, 2).flatten(1)  # [B, 12]
        return torch.cat([*colour, texture, fractions, layout], dim=1)  # [B, 44]

    def _axis_filters(self, n: int) -> torch.Tensor:
        """Every 1-D kernel, borders reflected, as a matrix: ``m[k]`` is ``[n, n]``.

        ``x @ m[k]`` filters the last axis of ``x`` (length ``n``) with kernel ``k``; matrix
        products are several times faster than 1-channel ``conv2d`` on CPU.
        """
        eye = torch.eye(n, device=self.kernels.device).unsqueeze(1)  # [n, 1, n]: impulses
        padded = F.pad(eye, (self.radius, self.radius), mode="reflect")  # [n, 1, n+2r]
        return F.conv1d(padded, self.kernels.unsqueeze(1)).transpose(0, 1)  # [12, n, n]

    def _texture(self, grey: torch.Tensor) -> torch.Tensor:
        """LoG (mean |.|, std) then gradient (mean, std) per sigma, ``[B, H, W] -> [B, 16]``."""
        b, h, w = grey.shape
        fx, fy = self._axis_filters(w), self._axis_filters(h)  # [12, W, W], [12, H, H]
        along_x = grey.reshape(b * h, w) @ fx.transpose(0, 1).reshape(w, -1)  # [B*H, 12*W]
        along_x = along_x.view(
            b, h, len(self.kernels), w
        )  # [B, H, 12, W]: per sigma G, G', G'' along x
        log_stats, grad_stats = [], []
        for i, sigma in enumerate(self.sigmas):
            g, d1, d2 = 3 * i, 3 * i + 1, 3 * i + 2
            # G' and G'' along x, then G along y; G along x, then G' and G'' along y
            x_derivs = along_x[:, :, d1 : d2 + 1].reshape(b, h, 2 * w)  # [B, H, 2*W]
            gx, gxx = (fy[g].T @ x_derivs).view(b, h, 2, w).unbind(2)  # [B, H, W] each
            y_filters = torch.cat([fy[d1].T, fy[d2].T])  # [2*H, H]
            gy, gyy = (y_filters @ along_x[:, :, g]).view(b, 2, h, w).unbind(1)
            log = sigma**2 * (gxx + gyy)  # [B, H, W]
            grad = sigma * torch.sqrt(gx**2 + gy**2)  # [B, H, W]
            log_stats += [log.abs().mean((1, 2)), log.std((1, 2), correction=0)]
            grad_stats += [grad.mean((1, 2)), grad.std((1, 2), correction=0)]
        return torch.stack(log_stats + grad_stats, dim=1)  # [B, 16]


def _mean_std(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel spatial mean and population std, ``[B, C, H, W] -> ([B, C], [B, C])``."""
    std, mean = torch.std_mean(images, dim=(2, 3), correction=0)
    return mean, std


def _build_demo(weights_path: Path | None) -> Encoder:
    """The weight-free :class:`DemoFilterBank`; takes RGB in [0, 1] at any size >= 16."""
    if weights_path is not None:
        warnings.warn("the demo encoder has no weights; ignoring weights_path", stacklevel=3)
    module = DemoFilterBank()
    return Encoder("demo", module, module.out_dim, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), None)


# --- timm encoders ---------------------------------------------------------------------------

TIMM_PREFIX = "timm:"


def _read_any_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file (UNI, Virchow and most Hugging Face releases)
    or a PyTorch file (:func:`_read_state_dict`)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise ValueError(f"Could not read safetensors file {path}: {err}") from err
    return _read_state_dict(path)


def _build_timm(model_name: str, weights_path: Path | None) -> Encoder:
    """Any timm model as a patch encoder (``encoder="timm:<model_name>"``): the model with its
    classifier removed (``num_classes=0``, so it returns pooled features), the weights read
    from ``weights_path`` (nothing is downloaded: ``pretrained=False``), and the normalisation
    and input size of the model's pretrained config (:func:`timm.data.resolve_data_config`).

    UNI (``vit_large_patch16_224`` with ``init_values=1e-5``), CONCH's vision tower and Virchow
    are timm models whose weights their authors distribute as files; any keyword they need
    beyond the name is part of the model name's registered config in timm.
    """
    import difflib

    import timm

    known = timm.list_models()
    if model_name not in known:
        close = difflib.get_close_matches(model_name, known, n=5, cutoff=0.6)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise ValueError(f"timm has no model {model_name!r}{hint} (timm.list_models() lists all)")
    name = f"{TIMM_PREFIX}{model_name}"
    path = _require_file(
        weights_path, name, f"{model_name}.safetensors",
        "Weights of timm models come from their authors (for UNI, CONCH or Virchow after "
        "accepting their licence on Hugging Face); download the file once and keep it locally.",
    )  # fmt: skip
    module = timm.create_model(model_name, pretrained=False, num_classes=0)
    state = {
        _strip_prefixes(k, ("module.", "model.")): v for k, v in _read_any_state_dict(path).items()
    }
    head = {
        k
        for k in state
        if k.startswith(("head.", "fc.", "classifier.")) and k not in module.state_dict()
    }
    _load_strict(module, {k: v for k, v in state.items() if k not in head}, path)
    config = timm.data.resolve_data_config({}, model=module)
    size = config["input_size"][-1]
    return Encoder(
        name, module, int(module.num_features), tuple(config["mean"]), tuple(config["std"]),
        int(size),
    )  # fmt: skip


# --- registry --------------------------------------------------------------------------------

ENCODERS: dict[str, Callable[[Path | None], Encoder]] = {
    "kimianet": _build_kimianet,
    "resnet50-trunc": _build_resnet50_trunc,
    "demo": _build_demo,
}


def get_encoder(
    name: str,
    weights_path: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> Encoder:
    """Build a registered encoder in eval mode on ``device``.

    Args:
        name: One of :data:`ENCODERS` (``"kimianet"``, ``"resnet50-trunc"``, ``"demo"``), or
            ``"timm:<model name>"`` for any timm model (:func:`_build_timm`).
        weights_path: Weights file of a learned encoder (ignored by ``"demo"``).
            (default: ``None``)
        device: Where the module runs. (default: ``"cpu"``)

    Raises:
        ValueError: Unknown ``name``, or an unreadable weights file.
        WeightsNotFoundError: A learned encoder's weights file is missing.
        WeightsMismatchError: The weights do not fit the architecture.
    """
    path = None if weights_path is None else Path(weights_path).expanduser()
    if name.startswith(TIMM_PREFIX):
        encoder = _build_timm(name[len(TIMM_PREFIX) :], path)
    elif name not in ENCODERS:
        raise ValueError(
            f"Unknown encoder {name!r}; allowed: {', '.join(ENCODERS)}, or timm:<model name>"
        )
    else:
        encoder = ENCODERS[name](path)
    encoder.module.to(device).eval().requires_grad_(False)
    return encoder
