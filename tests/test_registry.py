"""The workload registry: every workload is one package, found by name, and nothing generic names one.

These are the promises docs/adding-a-workload.md makes to a newcomer: a new workload is one folder plus
one registry line, its parts have the functions the generic modules call, and the generic modules stay
torch-free and never import a workload until a job uses it.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from hpcseg.spec import DatasetSpec
from hpcseg.workloads import registry

PACKAGE = Path(registry.__file__).resolve().parent.parent  # hpcseg/
# Modules allowed to name a workload besides its own folder and the registry (the microbead demo).
ALSO_ALLOWED = {"microbead": {"demo.py", "analyze.py"}}
# What each part must offer the generic modules (the signatures docs/adding-a-workload.md gives).
PARTS = {"layout": ("index",), "checks": ("check",), "synth": ("DEFAULTS", "synthesise")}


@pytest.mark.parametrize("layout", registry.LAYOUTS)
def test_each_workload_has_its_parts(layout: str) -> None:
    for part, names in PARTS.items():
        module = registry.part(layout, part)
        for name in names:
            assert hasattr(module, name), f"{module.__name__} lacks {name}"
    assert list(inspect.signature(registry.part(layout, "layout").index).parameters) == ["spec", "root", "strata"]
    assert list(inspect.signature(registry.part(layout, "checks").check).parameters) == ["c", "root"]
    n, size = registry.part(layout, "synth").DEFAULTS
    assert n >= 1 and size >= 8
    # the training part is only located, never imported here: importing it would pull in torch
    assert importlib.util.find_spec(f"{registry.WORKLOADS[layout].package}.train") is not None


def test_registry_names_are_what_the_job_file_accepts() -> None:
    assert DatasetSpec.model_fields["layout"].annotation.__args__ == registry.LAYOUTS
    assert DatasetSpec.model_fields["layout"].default == registry.DEFAULT_LAYOUT in registry.LAYOUTS
    kinds = registry.synth_kinds()
    assert len(set(kinds)) == len(kinds)
    for layout in registry.LAYOUTS:
        assert registry.synth_module(registry.synth_kind(layout)) is registry.part(layout, "synth")


def test_arch_and_source_targets_point_inside_their_workload() -> None:
    for layout, target in registry.sources().items():
        assert target == f"hpcseg.workloads.{layout}.train:build"
    for arch, info in registry.archs().items():
        module, _, func = info.target.partition(":")
        owner = [w for w in registry.WORKLOADS.values() if arch in w.archs]
        assert len(owner) == 1 and module.startswith(owner[0].package + "."), arch
        assert importlib.util.find_spec(module) is not None and func


@pytest.mark.parametrize("layout", registry.LAYOUTS)
def test_no_generic_module_names_a_workload(layout: str) -> None:
    """Adding or removing a workload touches its folder and the registry only (issue 9's criterion)."""
    own = PACKAGE / "workloads" / layout
    allowed = {PACKAGE / "workloads" / "registry.py"} | {PACKAGE / f for f in ALSO_ALLOWED.get(layout, ())}
    naming = [p.relative_to(PACKAGE) for p in sorted(PACKAGE.rglob("*.py"))
              if own not in p.parents and p not in allowed
              and layout.lower() in p.read_text(encoding="utf-8").lower()]
    assert naming == [], f"{layout} is named outside its own folder: {naming}"


def test_generic_modules_import_no_workload_and_no_torch() -> None:
    code = ("import sys, hpcseg.spec, hpcseg.layouts, hpcseg.preflight, hpcseg.synth, hpcseg.splits, hpcseg.cli; "
            "print(sorted(m for m in sys.modules if m.startswith('hpcseg.workloads.') and m != "
            "'hpcseg.workloads.registry'), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] False"


@pytest.mark.parametrize("layout", registry.LAYOUTS)
def test_torch_free_parts_stay_torch_free(layout: str) -> None:
    parts = ", ".join(f"{registry.WORKLOADS[layout].package}.{p}" for p in PARTS)
    code = f"import sys, {parts}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_unknown_synth_kind_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hpcseg.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["synth", "no_such_kind", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
