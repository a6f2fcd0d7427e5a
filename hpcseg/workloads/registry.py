"""The one list of workloads: ``workload.dataset.layout`` name -> the package that serves it.

Generic modules (spec, layouts, preflight, synth, the trainer) look a workload up here by name and import
its parts by module path only when they use them, so nothing heavy is imported until needed and no generic
module names a workload. A workload package holds ``layout.py`` (``index``), ``checks.py`` (``check``),
``synth.py`` (``DEFAULTS``, ``synthesise``) and ``train.py`` (``build``); docs/adding-a-workload.md.
This module imports nothing from hpcseg, so spec.py can read the names from it at import time.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType


@dataclass(frozen=True)
class Workload:
    layout: str  # the workload.dataset.layout value
    synth: str  # the `hpcseg synth KIND` name
    archs: dict[str, str] = field(default_factory=dict)  # model.arch -> "module:function" in the package

    @property
    def package(self) -> str:
        return f"hpcseg.workloads.{self.layout}"

    def part(self, name: str) -> ModuleType:
        """``layout``, ``checks``, ``synth`` or ``train`` of this workload, imported now."""
        return importlib.import_module(f"{self.package}.{name}")


_CLASSIFIERS = ("resnet50", "densenet121", "efficientnet_b3", "vit_b_16")

WORKLOADS: dict[str, Workload] = {w.layout: w for w in (
    Workload("microbead", synth="microbeads"),
    Workload("marida", synth="marida", archs={"se_unet": "models_se:build"}),
    Workload("hyperspectral", synth="hyperspectral", archs={"ssmu_net": "models_ssmu:build"}),
    Workload("ham10000", synth="ham10000", archs=dict.fromkeys(_CLASSIFIERS, "models:build")),
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


def archs() -> dict[str, str]:
    """model.arch -> "module:function" for the architectures workloads bring beside the generic U-Nets."""
    return {arch: f"{w.package}.{target}" for w in WORKLOADS.values() for arch, target in w.archs.items()}
