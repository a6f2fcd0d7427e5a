"""The one list of workloads: ``workload.dataset.layout`` name -> the package that serves it.

Generic modules (spec, layouts, preflight, synth, the trainer) look a workload up here by name and import
its parts by module path only when they use them, so nothing heavy is imported until needed and no generic
module names a workload. A workload package holds ``layout.py`` (``index``), ``checks.py`` (``check``),
``synth.py`` (``DEFAULTS``, ``synthesise``) and ``train.py`` (``build``); docs/adding-a-workload.md.
This module imports nothing from hpcseg, so spec.py can read the names from it at import time.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from types import ModuleType


@dataclass(frozen=True)
class Arch:
    """What ``hpcseg check`` must know of a ``model.arch`` without importing torch: its builder, the
    ``model.options`` keys it reads (any other key is a typo), and what the image size must divide by."""

    target: str  # "module:function"; for a workload's arch, the module is relative to its package
    options: tuple[str, ...] = ()
    halves: bool = True  # U-Net-like: the image halves once per level of model.channels
    patch: tuple[str, int] | None = None  # (option, default): the image is cut into square patches
    weights: str | None = None  # module with load_into/refuse_reason for pretrained files in others' layouts


@dataclass(frozen=True)
class Workload:
    layout: str  # the workload.dataset.layout value
    synth: str  # the `hpcseg synth KIND` name
    archs: dict[str, Arch] = field(default_factory=dict)  # the model.arch names this workload adds
    source_options: tuple[str, ...] = ()  # model.options keys its data source reads (valid on any arch)

    @property
    def package(self) -> str:
        return f"hpcseg.workloads.{self.layout}"

    def part(self, name: str) -> ModuleType:
        """``layout``, ``checks``, ``synth`` or ``train`` of this workload, imported now."""
        return importlib.import_module(f"{self.package}.{name}")


_CNN = Arch("models:build", halves=False, weights="weights")  # global pooling: any image size
_SSMU_OPTIONS = ("sinc_filters", "embed_dim", "mamba_layers", "pooling", "sinc_kernel", "spectral_stride",
                 "d_state")
_VIT = Arch("models:build", ("patch_size", "hidden_size", "mlp_dim", "num_layers", "num_heads"), halves=False,
            patch=("patch_size", 16), weights="weights")

WORKLOADS: dict[str, Workload] = {w.layout: w for w in (
    Workload("microbead", synth="microbeads"),
    Workload("marida", synth="marida", archs={"se_unet": Arch("models_se:build"),
                                              "attention_unet_sa": Arch("models_sa:build", ("sa_decoder_levels",))},
             source_options=("confidence",)),  # how _conf.tif weighs pixels (docs/formats.md)
    Workload("hyperspectral", synth="hyperspectral", archs={"ssmu_net": Arch("models_ssmu:build", _SSMU_OPTIONS)},
             source_options=("patches_per_core", "min_tissue", "min_foreground")),  # patch sampling
    Workload("ham10000", synth="ham10000", archs={"resnet50": replace(_CNN, options=("widen_factor",)), "densenet121": _CNN, "efficientnet_b3": _CNN,
                                                  "vit_b_16": _VIT}),
)}
LAYOUTS: tuple[str, ...] = tuple(WORKLOADS)
DEFAULT_LAYOUT = "microbead"  # what a job file without workload.dataset.layout means
WORKLOAD_ARCHS: tuple[str, ...] = tuple(arch for w in WORKLOADS.values() for arch in w.archs)


def part(layout: str, name: str) -> ModuleType:
    """One part of the workload serving ``layout`` (a KeyError names an unknown layout)."""
    return WORKLOADS[layout].part(name)


def synth_kinds() -> list[str]:
    return [w.synth for w in WORKLOADS.values()]


def synth_module(kind: str) -> ModuleType:
    """The generator behind ``hpcseg synth KIND``; KeyError when no workload has that kind."""
    by_kind = {w.synth: w for w in WORKLOADS.values()}
    return by_kind[kind].part("synth")


def synth_kind(layout: str) -> str:
    return WORKLOADS[layout].synth


def sources() -> dict[str, str]:
    """layout -> "module:function" building the training data source (torch is imported only on use)."""
    return {w.layout: f"{w.package}.train:build" for w in WORKLOADS.values()}


def archs() -> dict[str, Arch]:
    """model.arch -> its :class:`Arch` (target made absolute) for what workloads bring beside the U-Nets."""
    return {name: replace(a, target=f"{w.package}.{a.target}",
                          weights=a.weights and f"{w.package}.{a.weights}")
            for w in WORKLOADS.values() for name, a in w.archs.items()}
