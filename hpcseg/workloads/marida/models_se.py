"""Squeeze-and-excitation U-Net for MARIDA marine debris (seed 003).

The seed's network: an encoder/decoder whose every level is two conv-BatchNorm-ReLU layers followed by
an SE block (global pooling, two FC layers, sigmoid channel gates), dropout throughout, and one extra
3x3 conv before the 1x1 classifier. The number of levels follows ``model.channels``: the last entry is
the bottleneck, the others are the encoder levels (64..1024 gives the seed's 4 levels + bottleneck; the
quick profile's [8, 16, 32] gives 2 + bottleneck). The SE gate is MONAI's ``ChannelSELayer``.

Inputs whose sides are not a multiple of 2**levels are padded and the output cropped back, so odd tile
sizes do not break the skip connections.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import ChannelSELayer, Convolution, UpSample
from torch import nn

from hpcseg.spec import JobSpec, ModelSpec
from hpcseg.train.models import out_channels


class SEConvBlock(nn.Module):
    """conv-BN-ReLU-dropout twice, then squeeze-and-excitation channel gating."""

    def __init__(self, cin: int, cout: int, dropout: float, se_reduction: int = 8):
        super().__init__()
        kw = dict(spatial_dims=2, kernel_size=3, act="RELU", norm="BATCH", dropout=dropout or None,
                  adn_ordering="NDA")
        self.convs = nn.Sequential(Convolution(in_channels=cin, out_channels=cout, **kw),
                                   Convolution(in_channels=cout, out_channels=cout, **kw))
        self.se = ChannelSELayer(spatial_dims=2, in_channels=cout, r=max(1, min(se_reduction, cout // 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.convs(x))


class SEUNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, channels: list[int], dropout: float = 0.0):
        super().__init__()
        if len(channels) < 2:
            raise ValueError("se_unet needs at least two channel counts (one level plus the bottleneck)")
        self.levels = len(channels) - 1
        self.down = nn.ModuleList()
        cin = in_channels
        for c in channels:
            self.down.append(SEConvBlock(cin, c, dropout))
            cin = c
        self.ups = nn.ModuleList()
        self.dec = nn.ModuleList()
        for c_skip, c_deep in zip(reversed(channels[:-1]), reversed(channels[1:]), strict=True):
            self.ups.append(UpSample(2, c_deep, c_skip, scale_factor=2, mode="deconv"))
            self.dec.append(SEConvBlock(2 * c_skip, c_skip, dropout))
        self.head = seed_head(channels[0], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, 2 ** self.levels)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.levels:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, dec, skip in zip(self.ups, self.dec, reversed(skips), strict=True):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.head(x)[..., :h, :w]


def seed_head(width: int, num_classes: int) -> nn.Sequential:
    """Both MARIDA seeds' output: an "additional conv layer before final output" (3x3 conv, BN, ReLU),
    then the 1x1 classifier."""
    return nn.Sequential(Convolution(2, width, width, kernel_size=3, act="RELU", norm="BATCH"),
                         nn.Conv2d(width, num_classes, kernel_size=1))


def pad_to_multiple(x: torch.Tensor, m: int) -> torch.Tensor:
    """Pad H and W at the bottom/right up to a multiple of ``m``, so any tile size survives the poolings
    (the caller crops the output back); reflect where the tile is big enough, else replicate."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
    return x


def build(spec: JobSpec, model: ModelSpec) -> nn.Module:
    return SEUNet(spec.workload.dataset.channels, out_channels(spec), list(model.channels), float(model.dropout))
