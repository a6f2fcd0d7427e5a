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

from hpcseg.archs import CATALOGUE
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
    elif model.weights:
        load_weights(net, model.weights, model.name)
    return net


def load_weights(net: nn.Module, path: str, name: str = "model") -> None:
    """Load a local state dict non-strictly and log what did not match (a new head is expected)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise HpcsegError(f"model {name}: weights file {path} not found; copy it to the cluster first") from None
    except Exception as exc:  # pickle, zip and torch errors all mean "not a usable weights file"
        raise HpcsegError(f"model {name}: cannot read weights {path} ({exc.__class__.__name__}: {exc})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # one of our own checkpoints
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    own = net.state_dict()
    shaped = {k: v for k, v in state.items() if k in own and getattr(v, "shape", None) == own[k].shape}
    mismatched = sorted(k for k in state if k in own and k not in shaped)
    result = net.load_state_dict(shaped, strict=False)
    log.info("weights %s: loaded %d tensors; missing %d%s; unexpected %d%s; shape-mismatched %d%s", path,
             len(shaped), len(result.missing_keys), _few(result.missing_keys), len(result.unexpected_keys),
             _few(result.unexpected_keys), len(mismatched), _few(mismatched))
    if not shaped:
        raise HpcsegError(f"model {name}: no tensor of {path} fits arch (wrong weights file?)")


def _few(keys: Sequence[str], n: int = 4) -> str:
    return f" ({', '.join(list(keys)[:n])}{', ...' if len(keys) > n else ''})" if keys else ""


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# --------------------------------------------------------------------------------------------- U-Nets


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


def build_unet(spec: JobSpec, model: ModelSpec) -> nn.Module:
    """MONAI UNet: strided-conv encoder, residual units (``options.num_res_units``, default 2), batch norm."""
    from monai.networks.nets import UNet

    channels, strides = _check_levels(spec, model)
    return UNet(spatial_dims=2, in_channels=spec.workload.dataset.channels, out_channels=out_channels(spec),
                channels=channels, strides=strides, num_res_units=int(model.options.get("num_res_units", 2)),
                norm="batch", dropout=model.dropout)


def build_attention_unet(spec: JobSpec, model: ModelSpec) -> nn.Module:
    """MONAI AttentionUnet (Oktay et al. 2018): double-conv blocks with attention-gated skips."""
    from monai.networks.nets import AttentionUnet

    channels, strides = _check_levels(spec, model)
    return AttentionUnet(spatial_dims=2, in_channels=spec.workload.dataset.channels,
                         out_channels=out_channels(spec), channels=channels, strides=strides,
                         dropout=model.dropout)


class AttentionResUNet(nn.Module):
    """Attention Residual U-Net: residual units (MONAI ResidualUnit) in encoder and decoder, and an
    attention gate (MONAI's AttentionBlock) on every skip, as in the seed's Attention_ResUNet."""

    def __init__(self, in_channels: int, out_channels: int, channels: Sequence[int], dropout: float = 0.0,
                 subunits: int = 2):
        super().__init__()
        from monai.networks.blocks import Convolution, ResidualUnit
        from monai.networks.nets.attentionunet import AttentionBlock

        def res(cin: int, cout: int, stride: int) -> nn.Module:
            return ResidualUnit(2, cin, cout, strides=stride, subunits=subunits, act="relu", norm="batch",
                                dropout=dropout)

        self.encoders = nn.ModuleList(
            [res(in_channels if i == 0 else channels[i - 1], c, 1 if i == 0 else 2) for i, c in enumerate(channels)]
        )
        self.ups = nn.ModuleList()
        self.gates = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for i in range(len(channels) - 2, -1, -1):
            c = channels[i]
            self.ups.append(Convolution(2, channels[i + 1], c, strides=2, kernel_size=3, act="relu", norm="batch",
                                        is_transposed=True, adn_ordering="NDA"))
            self.gates.append(AttentionBlock(2, f_int=max(c // 2, 1), f_g=c, f_l=c))
            self.decoders.append(res(2 * c, c, 1))
        self.head = nn.Conv2d(channels[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
        x = skips.pop()
        for up, gate, dec in zip(self.ups, self.gates, self.decoders, strict=True):
            skip = skips.pop()
            x = up(x)
            x = dec(torch.cat((gate(g=x, x=skip), x), dim=1))
        return self.head(x)


def build_attention_res_unet(spec: JobSpec, model: ModelSpec) -> nn.Module:
    channels, _ = _check_levels(spec, model)
    return AttentionResUNet(spec.workload.dataset.channels, out_channels(spec), channels, dropout=model.dropout,
                            subunits=int(model.options.get("subunits", 2)))
