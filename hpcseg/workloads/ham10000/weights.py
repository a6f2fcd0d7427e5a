"""ImageNet checkpoints in the layouts people have (torchvision, timm) loaded into our classifiers by an
EXPLICIT key map, with coverage that is checked, not logged.

Why: matching tensors by name alone loaded 29 of DenseNet-121's 727 tensors from a torchvision file
(MONAI nests each dense layer's modules under ``layers.``) and nothing of EfficientNet-B3 (MONAI keeps the
``_blocks``/``_bn0`` names of the original TensorFlow port), and training went on from random weights
with one log line. Here every source key is renamed by the rules of its architecture, shapes are
compared, and the share of the backbone's tensors (the classifier head excluded: it is replaced) that
got a value is the coverage. Below 100 % is an error naming the file and what fits, unless the model
says ``allow_partial_weights: true``.

Layouts understood (renames are pure string functions, tested for full coverage against torchvision's
exact names and shapes in tests/fixtures/torchvision_state_dicts.json):

* resnet50: torchvision and timm share our (MONAI's) names; MONAI is built with ``bias_downsample=False``
  to have torchvision's bias-free downsample convolution.
* densenet121: torchvision/timm ``denselayerN.norm1`` -> ours ``denselayerN.layers.norm1``; the old
  torchvision files' ``norm.1``/``conv.1`` keys are read too.
* efficientnet_b3: torchvision ``features.S.B.block.I.J`` and timm ``blocks.S.B.conv_dw``... -> MONAI's
  ``_blocks.S.G._depthwise_conv``... (G counts blocks over all stages).
* vit_b_16: torchvision has our names; timm ``patch_embed.proj``/``blocks.i.attn.qkv``/``mlp.fc1``... are
  renamed (timm's fused qkv is nn.MultiheadAttention's in_proj, same order q, k, v).

Files are read by :func:`hpcseg.train.weightfile.read_state_dict` (safetensors, or torch ``weights_only``; a ``module.`` prefix
removed; a dict holding the weights under ``model``, ``state_dict`` or ``model_state_dict`` unwrapped).
The timm names were checked against timm's source (``densenet.py``; ``_efficientnet_blocks.py``:
DepthwiseSeparableConv ``conv_dw/bn1/se/conv_pw/bn2``, InvertedResidual ``conv_pw/bn1/conv_dw/bn2/se/
conv_pwl/bn3``; ``vision_transformer.py``: ``blocks.i.norm1/attn.qkv/attn.proj/norm2/mlp.fc1/mlp.fc2``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hpcseg.errors import HpcsegError
from hpcseg.train.weightfile import read_state_dict

# Our own (MONAI / hpcseg ViT) head: excluded from coverage, never loaded from an ImageNet file.
HEADS: dict[str, tuple[str, ...]] = {
    "resnet50": ("fc.",),
    "densenet121": ("class_layers.",),
    "efficientnet_b3": ("_fc.",),
    "vit_b_16": ("heads.",),
}
# Their heads (torchvision, timm): dropped before mapping.
SOURCE_HEADS: dict[str, tuple[str, ...]] = {
    "resnet50": ("fc.",),
    "densenet121": ("classifier.",),
    "efficientnet_b3": ("classifier.",),
    "vit_b_16": ("heads.", "head."),
}
# A key that tells which architecture a file was saved from (for the error message only).
SIGNATURES: tuple[tuple[str, str], ...] = (
    ("denseblock", "densenet121"), ("encoder_layer_", "vit_b_16"), ("blocks.0.attn", "vit_b_16"),
    ("_blocks.", "efficientnet_b3"), (".block.0.", "efficientnet_b3"), ("conv_dw", "efficientnet_b3"),
    ("layer4.", "resnet50"),
)
_SKIP = ("num_batches_tracked",)


# --------------------------------------------------------------------------------------------- renames


def _densenet(key: str) -> str:
    # Old torchvision files: denselayerN.norm.1.weight -> denselayerN.norm1.weight (torchvision's own fix).
    key = re.sub(r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.", r"\1\2.", key)
    return re.sub(r"(denselayer\d+)\.(norm[12]|conv[12])\.", r"\1.layers.\2.", key)


# EfficientNet-B3 blocks per stage (torchvision's features.1..7; MONAI's _blocks.0..6).
B3_DEPTHS = (2, 3, 3, 5, 5, 6, 2)
_B3_FIRST = tuple(sum(B3_DEPTHS[:i]) for i in range(len(B3_DEPTHS)))
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"


def _effnet_block(stage: int, block: int) -> str:
    return f"_blocks.{stage}.{_B3_FIRST[stage] + block}."


def _efficientnet(key: str) -> str:
    """torchvision (features.*) and timm (conv_stem, blocks.*) EfficientNet-B3 -> MONAI EfficientNetBN."""
    tv_top = {"features.0.0.": "_conv_stem.", "features.0.1.": "_bn0.", "features.8.0.": "_conv_head.",
              "features.8.1.": "_bn1.", "conv_stem.": "_conv_stem.", "bn1.": "_bn0.", "conv_head.": "_conv_head.",
              "bn2.": "_bn1."}
    for a, b in tv_top.items():
        if key.startswith(a):
            return b + key[len(a):]
    m = re.match(r"features\.([1-7])\.(\d+)\.block\.(\d)\.(.*)$", key)
    if m:  # torchvision MBConv: [expand (0)], depthwise, SE, project
        stage, block, part, rest = int(m[1]) - 1, int(m[2]), int(m[3]), m[4]
        parts = (["_depthwise_conv|_bn1", "se", "_project_conv|_bn2"] if stage == 0 else
                 ["_expand_conv|_bn0", "_depthwise_conv|_bn1", "se", "_project_conv|_bn2"])
        what = parts[part] if part < len(parts) else None
        prefix = _effnet_block(stage, block)
        if what == "se":
            return prefix + rest.replace("fc1.", "_se_reduce.").replace("fc2.", "_se_expand.")
        if what:
            conv, bn = what.split("|")
            if rest.startswith("0."):
                return prefix + conv + "." + rest[2:]
            if rest.startswith("1."):
                return prefix + bn + "." + rest[2:]
        return key
    m = re.match(r"blocks\.(\d)\.(\d+)\.(.*)$", key)
    if m:  # timm: DepthwiseSeparable (stage 0) and InvertedResidual blocks
        stage, block, rest = int(m[1]), int(m[2]), m[3]
        names = ({"conv_dw.": "_depthwise_conv.", "bn1.": "_bn1.", "conv_pw.": "_project_conv.", "bn2.": "_bn2."}
                 if stage == 0 else
                 {"conv_pw.": "_expand_conv.", "bn1.": "_bn0.", "conv_dw.": "_depthwise_conv.", "bn2.": "_bn1.",
                  "conv_pwl.": "_project_conv.", "bn3.": "_bn2."})
        names.update({"se.conv_reduce.": "_se_reduce.", "se.conv_expand.": "_se_expand."})
        for a, b in names.items():
            if rest.startswith(a):
                return _effnet_block(stage, block) + b + rest[len(a):]
    return key


def _vit(key: str) -> str:
    """timm ViT-B/16 -> torchvision's (= our) names; torchvision keys pass unchanged."""
    fixed = {"cls_token": "class_token", "pos_embed": "encoder.pos_embedding", "norm.weight": "encoder.ln.weight",
             "norm.bias": "encoder.ln.bias"}
    if key in fixed:
        return fixed[key]
    if key.startswith("patch_embed.proj."):
        return "conv_proj." + key[len("patch_embed.proj."):]
    m = re.match(r"blocks\.(\d+)\.(.*)$", key)
    if m:
        rest = m[2]
        for a, b in (("norm1.", "ln_1."), ("norm2.", "ln_2."), ("attn.qkv.weight", "self_attention.in_proj_weight"),
                     ("attn.qkv.bias", "self_attention.in_proj_bias"), ("attn.proj.", "self_attention.out_proj."),
                     ("mlp.fc1.", "mlp.0."), ("mlp.fc2.", "mlp.3.")):
            if rest.startswith(a):
                return f"encoder.layers.encoder_layer_{m[1]}.{b}{rest[len(a):]}"
    return key


RENAMES: dict[str, Callable[[str], str]] = {
    "resnet50": lambda k: k,
    "densenet121": _densenet,
    "efficientnet_b3": _efficientnet,
    "vit_b_16": _vit,
}


def rename(arch: str, key: str) -> str | None:
    """Our key for a source key, or None for the source's classifier head (never loaded)."""
    key = key[len("module."):] if key.startswith("module.") else key
    if key.startswith(SOURCE_HEADS[arch]):
        return None
    return RENAMES[arch](key)


# --------------------------------------------------------------------------------------------- coverage


@dataclass
class Coverage:
    """Which of our backbone tensors a file fills; ``mapped`` is ours -> the file's key, shape-checked."""

    arch: str
    mapped: dict[str, str] = field(default_factory=dict)
    backbone: int = 0                       # tensors in our backbone (head and BN counters excluded)
    backbone_numel: int = 0
    loaded_numel: int = 0
    missing: list[str] = field(default_factory=list)        # ours, with no source tensor
    mismatched: list[str] = field(default_factory=list)     # "ours: file (shape) vs model (shape)"
    unused: list[str] = field(default_factory=list)         # source keys that map to nothing of ours

    @property
    def fraction(self) -> float:
        return self.loaded_numel / self.backbone_numel if self.backbone_numel else 0.0

    @property
    def complete(self) -> bool:
        return self.backbone > 0 and not self.missing and not self.mismatched

    def summary(self) -> str:
        loaded = len([k for k in self.mapped if not k.endswith(_SKIP)])
        return (f"{loaded}/{self.backbone} backbone tensors, {100 * self.fraction:.1f}% of its values "
                f"({len(self.missing)} missing, {len(self.mismatched)} shape-mismatched, "
                f"{len(self.unused)} unused in the file; head excluded)")


def _is_head(arch: str, key: str) -> bool:
    return key.startswith(HEADS[arch])


def coverage(arch: str, source: Mapping[str, tuple[int, ...]], ours: Mapping[str, tuple[int, ...]]) -> Coverage:
    """Match a file's tensor shapes (``source``: key -> shape) against our model's (``ours``)."""
    if arch not in RENAMES:
        raise HpcsegError(f"{arch}: no weight-key map; known: {', '.join(RENAMES)}")
    cov = Coverage(arch)
    by_ours: dict[str, str] = {}
    for key in source:
        new = rename(arch, key)
        if new is None:
            continue
        if new in ours and not _is_head(arch, new):
            by_ours[new] = key
        else:
            cov.unused.append(key)
    for key, shape in ours.items():
        if _is_head(arch, key) or key.endswith(_SKIP):
            continue
        n = _numel(shape)
        cov.backbone += 1
        cov.backbone_numel += n
        src = by_ours.get(key)
        if src is None:
            cov.missing.append(key)
        elif tuple(source[src]) != tuple(shape):
            cov.mismatched.append(f"{key}: file {tuple(source[src])} vs model {tuple(shape)}")
        else:
            cov.mapped[key] = src
            cov.loaded_numel += n
    for key, src in by_ours.items():  # BN counters come along when present, but do not count
        if key.endswith(_SKIP) and tuple(source[src]) == tuple(ours[key]):
            cov.mapped[key] = src
    return cov


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def guess_arch(keys: list[str]) -> str | None:
    """Which architecture a file looks saved from, by a characteristic key (for error messages)."""
    for marker, arch in SIGNATURES:
        if any(marker in k for k in keys):
            return arch
    return None


def refusal(path: str, model_name: str, cov: Coverage, keys: list[str]) -> str:
    """The one-line error for a file that does not fit."""
    guess = guess_arch(keys)
    looks = f"; the file looks like {guess} weights" if guess and guess != cov.arch else ""
    first = (cov.mismatched or [f"missing {k}" for k in cov.missing] or ["nothing"])[0]
    return (f"{path}: weights fit {cov.summary()} of model {model_name} ({cov.arch}), e.g. {first}{looks}; "
            f"use a {cov.arch} file in torchvision or timm layout, or set "
            f"workload.models.{model_name}.allow_partial_weights: true to train anyway")


# --------------------------------------------------------------------------------------------- torch side


def check_file(path: str, arch: str, model_name: str, ours: Mapping[str, tuple[int, ...]],
               allow_partial: bool) -> tuple[Coverage, dict[str, Any]]:
    """Read and match a file; raise the one-line refusal unless it fits (or partial is allowed)."""
    state = read_state_dict(path, model_name)
    cov = coverage(arch, {k: tuple(v.shape) for k, v in state.items()}, ours)
    if not cov.mapped or (not cov.complete and not allow_partial):
        raise HpcsegError(refusal(path, model_name, cov, list(state)))
    return cov, state


def load_into(net: Any, path: str, arch: str, model_name: str, allow_partial: bool = False) -> Coverage:
    """Load ``path`` into ``net`` through the key map; returns the coverage (logged by the caller)."""
    own = net.state_dict()
    cov, state = check_file(path, arch, model_name, {k: tuple(v.shape) for k, v in own.items()}, allow_partial)
    values = {ours: state[src] for ours, src in cov.mapped.items()}
    result = net.load_state_dict(values, strict=False)
    not_loaded = [k for k in result.missing_keys if not _is_head(arch, k) and not k.endswith(_SKIP)]
    if not_loaded and not allow_partial:  # cannot happen when coverage is complete; a guard, not a path
        raise HpcsegError(f"{path}: {len(not_loaded)} backbone tensors were not loaded into model {model_name}")
    return cov


def refuse_reason(spec: Any, model: Any) -> str | None:
    """For ``hpcseg check``: why ``model.weights`` would be refused at training time, or None if it fits.

    Builds the model on torch's meta device to learn its tensor shapes (torch is imported here, only when
    a weights file must be inspected, so the CLI still starts without it)."""
    import torch

    from hpcseg.workloads.ham10000.models import build

    with torch.device("meta"):  # shapes only: no memory, no initialisation (ViT-B/16 has 86M values)
        net = build(spec, model)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    try:
        check_file(str(model.weights), model.arch, model.name, ours, bool(model.allow_partial_weights))
    except HpcsegError as exc:
        return exc.message
    return None
