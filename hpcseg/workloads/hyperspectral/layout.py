"""The hyperspectral layout: cores/<core>.npy cubes with labels/<core>.npy label maps; no strata."""

from __future__ import annotations

from pathlib import Path

from hpcseg.errors import HpcsegError
from hpcseg.layouts import DatasetIndex
from hpcseg.spec import JobSpec


def index(spec: JobSpec, root: Path, strata: bool) -> DatasetIndex:
    cores, labels = root / "cores", root / "labels"
    for d in (cores, labels):
        if not d.is_dir():
            raise HpcsegError(f"{root}: no {d.name}/ folder; the hyperspectral layout needs cores/ and labels/")
    names = sorted(p.stem for p in cores.glob("*.npy") if not p.name.startswith("."))
    missing = [n for n in names if not (labels / f"{n}.npy").is_file()]
    if missing:
        raise HpcsegError(f"{labels}: {len(missing)} core(s) have no label map", problems=missing[:10])
    return DatasetIndex(names=names, files=[(cores / f"{n}.npy", labels / f"{n}.npy") for n in names])
