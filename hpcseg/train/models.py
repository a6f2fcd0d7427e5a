"""Model registry and the U-Net family (MONAI building blocks).

Output convention, shared by every segmentation builder, loss and metric:

* ``binary_segmentation``: ONE logit channel, (B, 1, H, W); probability = sigmoid(logit); a pixel is
  foreground when logit > 0. One channel, because a second softmax channel only duplicates it.
* ``multiclass_segmentation``: K = dataset.num_classes logit channels, (B, K, H, W); softmax; argmax.
* ``classification``: (B, K) logits; softmax; argmax.

:data:`ARCHS` maps ``model.arch`` to a lazily imported ``"module:function"`` builder (the generic U-Nets
here, and what each workload registers in hpcseg.workloads.registry; hpcseg/archs.py) with the signature
``build(spec: JobSpec, model: ModelSpec) -> torch.nn.Module``, so one workload's heavy dependencies are
imported only by the tasks that use them. :func:`build_model` adds pretrained weights from
``model.weights`` (a local file: compute nodes have no internet, so nothing is ever downloaded).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence

import torch
from torch import nn

from hpcseg.archs import CATALOGUE, UPSAMPLE_VALUES
from hpcseg.errors import HpcsegError
from hpcseg.spec import JobSpec, ModelSpec

log = logging.getLogger("hpcseg.train")

# arch -> "module:function". Keep these names stable: plug-in modules are written against them. The
# torch-free catalogue (hpcseg/archs.py: the U-Nets here plus each workload's) is the one list.
ARCHS: dict[str, str] = {name: arch.target for name, arch in CATALOGUE.items()}
# Archs whose pretrained files in others' layouts (torchvision/timm) load through an explicit key map.
MAPPED_WEIGHTS: dict[str, str] = {name: f"{arch.weights}:load_into" for name, arch in CATALOGUE.items() if arch.weights}


def resolve(target: str, what: str) -> Callable:
    """Import ``"module:function"``; a missing plug-in is a clear error, not an ImportError traceback."""
    module_name, _, func = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise HpcsegError(f"{what}: {module_name} is not installed in this hpcseg", exit_code=1) from None
        raise
    try:
        return getattr(module, func)
    except AttributeError:
        raise HpcsegError(f"{what}: {module_name} has no {func}()", exit_code=1) from None


def out_channels(spec: JobSpec) -> int:
    """Logit channels for the task (see the module docstring): 1 for binary, K otherwise."""
    return 1 if spec.workload.task == "binary_segmentation" else spec.workload.dataset.num_classes


def build_model(spec: JobSpec, model: ModelSpec) -> nn.Module:
    """The registered builder's network, with ``model.weights`` loaded when set."""
    if model.arch not in ARCHS:
        raise HpcsegError(f"model {model.name}: unknown arch {model.arch!r}; known: {', '.join(ARCHS)}")
    net = resolve(ARCHS[model.arch], f"model {model.name} (arch {model.arch})")(spec, model)
    if model.weights and model.arch in MAPPED_WEIGHTS:  # explicit key map, coverage must be 100%
        cov = resolve(MAPPED_WEIGHTS[model.arch], "weights")(net, model.weights, model.arch, model.name,
                                                              model.allow_partial_weights)
        log.info("weights %s: %s", model.weights, cov.summary())
    elif model.weights:  # same names as ours: every tensor but the output layer must fit
        from hpcseg.train.weightfile import load_into

        log.info("weights %s: %s", model.weights, load_into(net, model).summary())
    return net


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# --------------------------------------------------------------------------------------------- U-Nets
#
# Seed 004 trained the three U-Nets of its models.py (DigitalSreeni's 224_225_226_models.py, Keras): two
# 3x3 conv + BN + ReLU per level and dropout once per block, max-pool down, upsample + concatenated skip,
# and for the attention variants an additive attention gate (Oktay et al. 2018) on every skip, with residual
# blocks in the residual variant. The classes below rebuild those from MONAI's Convolution so that a
# researcher from that seed trains the network they know; MONAI's own residual UNet stays available as
# ``residual_unet``. The Keras models end in a BatchNorm on the one output logit: left out here (a BN on
# logits only rescales them; the loss and the 0.5 threshold work on the logit as it is).

UPSAMPLE = UPSAMPLE_VALUES  # model.options.upsample: 2x2 transposed conv (Ronneberger) or the seed's
#                            UpSampling2D (nearest, no weights); hpcseg check refuses any other value


def _check_levels(spec: JobSpec, model: ModelSpec) -> tuple[list[int], tuple[int, ...]]:
    """Channels and strides; the image must halve cleanly at every level so skips line up."""
    channels = list(model.channels)
    if len(channels) < 2:
        raise HpcsegError(f"model {model.name}: channels needs at least 2 levels, got {channels}")
    factor = 2 ** (len(channels) - 1)
    h, w = spec.workload.dataset.image_size
    if h % factor or w % factor:
        raise HpcsegError(f"model {model.name}: image_size {h}x{w} must be divisible by {factor} "
                          f"for {len(channels)} levels; change image_size or channels")
    return channels, (2,) * (len(channels) - 1)


def _conv(cin: int, cout: int, kernel: int = 3, act: str | None = "relu") -> nn.Module:
    """conv (with bias, as Keras Conv2D) -> BatchNorm [-> ReLU]."""
    from monai.networks.blocks import Convolution

    return Convolution(2, cin, cout, kernel_size=kernel, act=act, norm="batch", adn_ordering="NA" if act else "N")


class DoubleConv(nn.Module):
    """The seed's ``conv_block``: (3x3 conv -> BN -> ReLU) twice, then dropout once."""

    def __init__(self, cin: int, cout: int, dropout: float = 0.0):
        super().__init__()
        self.convs = nn.Sequential(_conv(cin, cout), _conv(cout, cout))
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.convs(x))


class ResidualBlock(nn.Module):
    """The seed's ``res_conv_block`` (He et al.'s original unit): 3x3 conv-BN-ReLU, 3x3 conv-BN, dropout,
    plus a 1x1 conv-BN shortcut, then ReLU after the addition."""

    def __init__(self, cin: int, cout: int, dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(_conv(cin, cout), _conv(cout, cout, act=None))
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.shortcut = _conv(cin, cout, kernel=1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.shortcut(x) + self.dropout(self.body(x)))


class AttentionGate(nn.Module):
    """Additive attention gate on a skip (Oktay et al. 2018; the seed's ``gating_signal`` + ``attention_block``).

    The gating signal is the coarser decoder feature, brought to the skip's width by a 1x1 conv-BN-ReLU. The
    skip is sub-sampled by a strided 2x2 conv to the gate's grid (theta), the gate projected by a 1x1 conv
    and a 3x3 transposed conv (phi), and ``sigmoid(psi(relu(theta + phi)))`` is one coefficient per coarse
    pixel, upsampled to the skip and multiplied in; a 1x1 conv-BN mixes the gated skip. The intermediate
    width is the skip's width, as in the seed.
    """

    def __init__(self, skip: int, coarse: int):
        super().__init__()
        self.gating = _conv(coarse, skip, kernel=1)
        self.theta = nn.Conv2d(skip, skip, kernel_size=2, stride=2)
        self.phi = nn.Sequential(nn.Conv2d(skip, skip, kernel_size=1),
                                 nn.ConvTranspose2d(skip, skip, kernel_size=3, padding=1))
        self.psi = nn.Conv2d(skip, 1, kernel_size=1)
        self.out = _conv(skip, skip, kernel=1, act=None)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        coarse = torch.relu(self.theta(x) + self.phi(self.gating(g)))
        alpha = torch.sigmoid(self.psi(coarse))
        alpha = nn.functional.interpolate(alpha, size=x.shape[-2:], mode="nearest")
        return self.out(x * alpha)


class NoGate(nn.Module):
    """The plain U-Net's skip: passed on as it is."""

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x


class UNet2D(nn.Module):
    """The seed's U-Net family: ``block`` per level (DoubleConv or ResidualBlock), max-pool down, upsample
    (``deconv``: 2x2 transposed conv to the skip's width, as Ronneberger et al.; ``nearest``: the seed's
    UpSampling2D), the (optionally attention-gated) skip concatenated, ``block`` again, 1x1 conv head.
    ``channels`` are the widths per level, the last one the bottleneck."""

    def __init__(self, in_channels: int, out_channels: int, channels: Sequence[int], *, residual: bool = False,
                 attention: bool = False, upsample: str = "deconv", dropout: float = 0.0):
        super().__init__()
        if upsample not in UPSAMPLE:
            raise HpcsegError(f"upsample must be one of {', '.join(UPSAMPLE)}, got {upsample!r}")
        block = ResidualBlock if residual else DoubleConv
        self.pool = nn.MaxPool2d(2)
        self.encoders = nn.ModuleList(
            block(in_channels if i == 0 else channels[i - 1], c, dropout) for i, c in enumerate(channels))
        self.ups, self.gates, self.decoders = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in range(len(channels) - 2, -1, -1):
            skip, coarse = channels[i], channels[i + 1]
            if upsample == "deconv":
                self.ups.append(nn.ConvTranspose2d(coarse, skip, kernel_size=2, stride=2))
                up = skip
            else:
                self.ups.append(nn.Upsample(scale_factor=2, mode="nearest"))
                up = coarse
            self.gates.append(AttentionGate(skip, coarse) if attention else NoGate())
            self.decoders.append(block(up + skip, skip, dropout))
        self.head = nn.Conv2d(channels[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, gate, dec in zip(self.ups, self.gates, self.decoders, strict=True):
            x = dec(torch.cat((up(x), gate(skips.pop(), x)), dim=1))
        return self.head(x)


def _unet(spec: JobSpec, model: ModelSpec, *, residual: bool, attention: bool, upsample: str) -> nn.Module:
    channels, _ = _check_levels(spec, model)
    return UNet2D(spec.workload.dataset.channels, out_channels(spec), channels, residual=residual,
                  attention=attention, upsample=str(model.options.get("upsample", upsample)), dropout=model.dropout)


def build_unet(spec: JobSpec, model: ModelSpec) -> nn.Module:
    """Classic U-Net (Ronneberger et al. 2015, with BN as in the seed): up-convolution unless
    ``options.upsample: nearest`` (the seed's Keras UNet exactly)."""
    return _unet(spec, model, residual=False, attention=False, upsample="deconv")


def build_attention_unet(spec: JobSpec, model: ModelSpec) -> nn.Module:
    """Attention U-Net as the seed's ``Attention_UNet``: gated skips, nearest upsampling by default."""
    return _unet(spec, model, residual=False, attention=True, upsample="nearest")


def build_attention_res_unet(spec: JobSpec, model: ModelSpec) -> nn.Module:
    """Attention Residual U-Net as the seed's ``Attention_ResUNet``: residual blocks and gated skips."""
    return _unet(spec, model, residual=True, attention=True, upsample="nearest")


def build_residual_unet(spec: JobSpec, model: ModelSpec) -> nn.Module:
    """MONAI UNet: strided-conv encoder, residual units (``options.num_res_units``, default 2), batch norm.
    What ``unet`` built before it became the classic U-Net."""
    from monai.networks.nets import UNet

    channels, strides = _check_levels(spec, model)
    return UNet(spatial_dims=2, in_channels=spec.workload.dataset.channels, out_channels=out_channels(spec),
                channels=channels, strides=strides, num_res_units=int(model.options.get("num_res_units", 2)),
                norm="batch", dropout=model.dropout)
