r"""UNet for nuclei segmentation (Ronneberger et al. 2015, "U-Net: Convolutional Networks for
Biomedical Image Segmentation", MICCAI).

The nuclei-graph GCN paper (Sec. III.B) detects nuclei "using a UNet [23]" and gives no other
detail; this is the standard encoder-decoder: ``depth`` levels of two 3x3 convolutions
(each followed by BatchNorm and ReLU, Ioffe & Szegedy 2015 -- the original has no BatchNorm),
2x2 max-pooling down, 2x2 transposed convolutions up, and the encoder features of the same
level concatenated onto the upsampled ones (the skip connections). Convolutions are padded
("same"), unlike the original's valid convolutions, so the output has the input's size.

Output classes
    ``out_channels = 3``: background / nucleus interior / nucleus boundary. Touching nuclei
    share no interior pixels once their boundary rings are a class of their own, so instances
    can be separated by a watershed seeded from the interior (the usual 3-class formulation,
    e.g. Kumar et al. 2017, IEEE TMI, the MoNuSeg paper). Targets and post-processing are in
    :mod:`wsigraph.data.nuclei_seg`.

Input size
    Any ``H, W``. Each pooling halves the sides, so the network itself needs multiples of
    ``2 ** depth``; other sizes are reflect-padded at the bottom/right up to the next multiple
    and the logits are cropped back to ``H x W``.

Training code lives in :func:`wsigraph.data.nuclei_seg.train_unet`, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class UNetConfig:
    """Args:
    in_channels: input channels, RGB (default ``3``).
    base: channels of the first level; level ``k`` has ``base * 2**k`` (default ``16``; the
        original uses 64, too slow on CPU).
    depth: number of poolings (default ``4``, as in the original).
    out_channels: classes; background / interior / boundary (default ``3``).
    """

    in_channels: int = 3
    base: int = 16
    depth: int = 4
    out_channels: int = 3


class DoubleConv(nn.Sequential):
    """(3x3 conv -> BatchNorm -> ReLU) x 2, "same" padding."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    r"""UNet (Ronneberger et al. 2015) with BatchNorm and "same" convolutions.

    Args:
        config: a :class:`UNetConfig` (default ``UNetConfig()``).

    Shapes:
        - input: ``[B, in_channels, H, W]`` float in ``[0, 1]`` (any ``H, W``).
        - output: logits ``[B, out_channels, H, W]``.
    """

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = c = config or UNetConfig()
        widths = [c.base * 2**k for k in range(c.depth + 1)]  # e.g. 16, 32, 64, 128, 256
        self.down = nn.ModuleList(
            [DoubleConv(c.in_channels, widths[0])]
            + [DoubleConv(widths[k - 1], widths[k]) for k in range(1, c.depth + 1)]
        )
        self.upsample = nn.ModuleList(
            [nn.ConvTranspose2d(widths[k + 1], widths[k], 2, stride=2) for k in range(c.depth)]
        )
        # After concatenation with the skip: 2 * widths[k] channels in.
        self.up = nn.ModuleList([DoubleConv(2 * widths[k], widths[k]) for k in range(c.depth)])
        self.head = nn.Conv2d(widths[0], c.out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        m = 2**self.config.depth
        ph, pw = -H % m, -W % m
        if ph or pw:
            # reflect needs pad < side; replicate covers tiny inputs
            mode = "reflect" if ph < H and pw < W else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)  # [B, C, H', W'], multiples of 2**depth
        x = (x - 0.5) / 0.25  # roughly centred input
        skips = []
        for k, block in enumerate(self.down):
            if k:
                x = F.max_pool2d(x, 2)
            x = block(x)  # [B, base * 2**k, H' / 2**k, W' / 2**k]
            skips.append(x)
        x = skips.pop()  # bottleneck [B, base * 2**depth, H' / 2**depth, W' / 2**depth]
        for k in reversed(range(self.config.depth)):
            x = self.upsample[k](x)  # [B, base * 2**k, H' / 2**k, W' / 2**k]
            x = self.up[k](torch.cat([skips.pop(), x], dim=1))
        return self.head(x)[..., :H, :W]  # [B, out_channels, H, W]
