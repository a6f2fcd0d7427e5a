"""Self-attention U-Net for MARIDA marine debris (seed 001, ``arch: attention_unet_sa``).

The seed's "advanced" model: a 4-level encoder/decoder on the 64->128->256->512->1024 progression with
BatchNorm and dropout 0.2 throughout, self-attention blocks at the bottleneck and in the decoder, and an
extra 3x3 conv before the 1x1 classifier, "~15M parameters". The seed gives no code, so the parameter
figure fixes the remaining choices: two full 3x3 convs at a 1024-channel bottleneck alone hold 14.2M, so
the bottleneck follows the bilinear U-Net of the PyTorch reference implementation (bilinear upsampling,
bottleneck width ``channels[-1] // 2``, decoder levels that halve on the way up). At the seed's settings
(11 bands, [64, 128, 256, 512, 1024]) that is 13.9M parameters (tests/test_marida.py asserts 15M ± 10%).
MONAI's AttentionUnet, which the job used before, has attention *gates* on the skips and 31.7M.

Self-attention is SAGAN's non-local block (query/key at C/8, value at C, a learned residual gain that
starts at 0 so the block begins as the identity), computed with ``scaled_dot_product_attention`` so the
(HW)² attention map is never materialised on GPUs with fused kernels. It runs at the bottleneck and at
the ``sa_decoder_levels`` deepest decoder levels (default 2: at 256² input, 16², 32² and 64² tokens);
shallower levels would cost (HW)² for little context the convs do not already have.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from hpcseg.spec import JobSpec, ModelSpec
from hpcseg.train.models import out_channels
from hpcseg.workloads.marida.models_se import pad_to_multiple, seed_head

DEFAULT_SA_DECODER_LEVELS = 2


class SelfAttention2d(nn.Module):
    """SAGAN non-local block: x + gamma * softmax(q k^T / sqrt(d)) v over all pixels."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        inner = max(1, channels // reduction)
        self.q = nn.Conv2d(channels, inner, 1)
        self.k = nn.Conv2d(channels, inner, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.q(x).flatten(2).transpose(1, 2)[:, None]  # (B, 1, HW, d)
        k = self.k(x).flatten(2).transpose(1, 2)[:, None]
        v = self.v(x).flatten(2).transpose(1, 2)[:, None]  # (B, 1, HW, C)
        out = F.scaled_dot_product_attention(q, k, v)[:, 0].transpose(1, 2).reshape(b, c, h, w)
        return x + self.gamma * out


class DoubleConv(nn.Module):
    """(3x3 conv, BatchNorm, dropout, ReLU) twice."""

    def __init__(self, cin: int, cout: int, dropout: float):
        super().__init__()
        kw = dict(spatial_dims=2, kernel_size=3, act="RELU", norm="BATCH", dropout=dropout or None,
                  adn_ordering="NDA")
        self.convs = nn.Sequential(Convolution(in_channels=cin, out_channels=cout, **kw),
                                   Convolution(in_channels=cout, out_channels=cout, **kw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class SelfAttentionUNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, channels: list[int], dropout: float = 0.0,
                 sa_decoder_levels: int = DEFAULT_SA_DECODER_LEVELS):
        super().__init__()
        if len(channels) < 2:
            raise ValueError("attention_unet_sa needs at least two channel counts (one level plus the bottleneck)")
        enc = list(channels[:-1])
        self.levels = len(enc)
        self.down = nn.ModuleList()
        cin = in_channels
        for c in enc:
            self.down.append(DoubleConv(cin, c, dropout))
            cin = c
        width = max(1, channels[-1] // 2)  # bilinear U-Net: the bottleneck at half the last count
        self.bottleneck = nn.Sequential(DoubleConv(enc[-1], width, dropout), SelfAttention2d(width))
        self.dec = nn.ModuleList()
        self.dec_sa = nn.ModuleList()
        deep = width
        for i, skip in enumerate(reversed(enc)):
            out = enc[-i - 2] if i + 1 < len(enc) else enc[0]  # halve on the way up, end at channels[0]
            self.dec.append(DoubleConv(deep + skip, out, dropout))
            self.dec_sa.append(SelfAttention2d(out) if i < sa_decoder_levels else nn.Identity())
            deep = out
        self.head = seed_head(enc[0], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, 2 ** self.levels)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for dec, sa, skip in zip(self.dec, self.dec_sa, reversed(skips), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = sa(dec(torch.cat([x, skip], dim=1)))
        return self.head(x)[..., :h, :w]


def build(spec: JobSpec, model: ModelSpec) -> nn.Module:
    levels = model.options.get("sa_decoder_levels", DEFAULT_SA_DECODER_LEVELS)
    return SelfAttentionUNet(spec.workload.dataset.channels, out_channels(spec), list(model.channels),
                             float(model.dropout), int(levels))
