"""Image classifiers for the HAM10000 comparison (seed 002): MONAI CNNs and a small PyTorch ViT, no torchvision.

The seed compares ResNet-50, EfficientNet-B3, DenseNet-121 and ViT-B/16. Every builder here is
offline by construction: MONAI's ``pretrained`` flags stay False (compute nodes have no internet), and
ImageNet weights come only from the job's ``weights`` file, copied to the cluster beforehand and loaded
by ``hpcseg.train.models.build_model`` through the explicit key maps of
``hpcseg.workloads.ham10000.weights`` (torchvision and timm layouts for all four; coverage of the
backbone must be 100% unless ``allow_partial_weights``).

``model.options`` may shrink a network for tests and CPU smoke runs; the ViT in particular accepts
``hidden_size``, ``mlp_dim``, ``num_layers``, ``num_heads`` and ``patch_size`` so that the quick profile
(32 px images) does not build an 86M-parameter transformer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from hpcseg.errors import HpcsegError
from hpcseg.spec import JobSpec, ModelSpec


def _geometry(spec: JobSpec) -> tuple[int, int, tuple[int, int]]:
    ds = spec.workload.dataset
    return ds.channels, ds.num_classes, tuple(ds.image_size)  # type: ignore[return-value]


def build_resnet50(spec: JobSpec, model: ModelSpec) -> nn.Module:
    """MONAI ResNet-50 with torchvision's stem (7x7 stride-2 conv + max-pool), so 224 px costs what it should."""
    from monai.networks.nets import resnet50

    cin, k, _ = _geometry(spec)
    # bias_downsample=False: torchvision's (and timm's) downsample convolution has no bias.
    # options.widen_factor (MONAI's) narrows every stage for tests and CPU smoke runs (ImageNet weights
    # then no longer fit, and loading them is refused).
    net = resnet50(spatial_dims=2, n_input_channels=cin, num_classes=k, conv1_t_stride=2, bias_downsample=False,
                   widen_factor=float(model.options.get("widen_factor", 1.0)))
    return net


def build_densenet121(spec: JobSpec, model: ModelSpec) -> nn.Module:
    from monai.networks.nets import DenseNet121

    cin, k, _ = _geometry(spec)
    net = DenseNet121(spatial_dims=2, in_channels=cin, out_channels=k, pretrained=False,
                      dropout_prob=float(model.dropout))
    return net


def build_efficientnet_b3(spec: JobSpec, model: ModelSpec) -> nn.Module:
    """EfficientNet-B3; ``pretrained=False`` always: MONAI would otherwise download on the compute node."""
    from monai.networks.nets import EfficientNetBN

    cin, k, _ = _geometry(spec)
    net = EfficientNetBN("efficientnet-b3", pretrained=False, progress=False, spatial_dims=2,
                         in_channels=cin, num_classes=k)
    return net


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + MHA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, hidden: int, heads: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.ln_2 = nn.LayerNorm(hidden, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(hidden, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, hidden), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.dropout(self.self_attention(y, y, y, need_weights=False)[0])
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    def __init__(self, seq_len: int, layers: int, hidden: int, heads: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq_len, hidden).normal_(std=0.02))
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", EncoderBlock(hidden, heads, mlp_dim, dropout)) for i in range(layers)))
        self.ln = nn.LayerNorm(hidden, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(self.layers(self.dropout(x + self.pos_embedding)))


class ViT(nn.Module):
    """ViT-B/16 (Dosovitskiy et al.) in plain PyTorch: conv patch embedding, class token, learned
    position embedding, pre-norm GELU encoder, linear head on the class token.

    Why not MONAI's ViT: it needs einops, which the hpcseg environment does not ship, and its head ends
    in tanh by default, which bounds the logits that cross-entropy and temperature scaling need free.
    The module and parameter names follow torchvision's ``VisionTransformer`` (conv_proj, class_token,
    encoder.pos_embedding, encoder.layers.encoder_layer_<i>.{ln_1, self_attention, ln_2, mlp}, encoder.ln,
    heads.head), so an ImageNet ``vit_b_16`` state dict saved from torchvision loads through
    ``model.weights`` (all but the 1000-class head) without torchvision being installed here.
    """

    def __init__(self, in_channels: int, img_size: tuple[int, int], num_classes: int, patch_size: int = 16,
                 hidden_size: int = 768, mlp_dim: int = 3072, num_layers: int = 12, num_heads: int = 12,
                 dropout: float = 0.0):
        super().__init__()
        seq_len = (img_size[0] // patch_size) * (img_size[1] // patch_size) + 1
        self.conv_proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.encoder = Encoder(seq_len, num_layers, hidden_size, num_heads, mlp_dim, dropout)
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(hidden_size, num_classes)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.conv_proj(x).flatten(2).transpose(1, 2)                 # (B, patches, hidden)
        t = torch.cat([self.class_token.expand(t.shape[0], -1, -1), t], dim=1)
        return self.heads(self.encoder(t)[:, 0])


def build_vit_b_16(spec: JobSpec, model: ModelSpec) -> nn.Module:
    """ViT-B/16 by default; ``model.options`` (patch_size, hidden_size, mlp_dim, num_layers, num_heads)
    shrink it for tests."""
    cin, k, size = _geometry(spec)
    o: dict[str, Any] = model.options
    patch = int(o.get("patch_size", 16))
    if size[0] % patch or size[1] % patch:
        raise HpcsegError(f"model {model.name}: image_size {size[0]}x{size[1]} is not a multiple of "
                          f"patch_size {patch}; set options.patch_size or image_size")
    net = ViT(cin, size, k, patch_size=patch, hidden_size=int(o.get("hidden_size", 768)),
              mlp_dim=int(o.get("mlp_dim", 3072)), num_layers=int(o.get("num_layers", 12)),
              num_heads=int(o.get("num_heads", 12)), dropout=float(model.dropout))
    return net


BUILDERS: dict[str, Callable[[JobSpec, ModelSpec], nn.Module]] = {
    "resnet50": build_resnet50,
    "densenet121": build_densenet121,
    "efficientnet_b3": build_efficientnet_b3,
    "vit_b_16": build_vit_b_16,
}


def build(spec: JobSpec, model: ModelSpec) -> nn.Module:
    """The ``ARCHS`` entry point for every classifier; ``build_model`` loads ``model.weights`` after."""
    try:
        return BUILDERS[model.arch](spec, model)
    except KeyError:
        raise HpcsegError(f"model {model.name}: {model.arch!r} is not a classifier; "
                          f"known: {', '.join(BUILDERS)}") from None
