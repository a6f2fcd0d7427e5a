"""The hyperspectral layout: cores/<core>.{npy,mat,hdr} cubes with labels/<core>.npy label maps; no strata.

A cube is a NumPy .npy, a MATLAB .mat (v5/v7 or v7.3) or an ENVI header (.hdr, its data file beside it);
see :mod:`hpcseg.workloads.hyperspectral.cubes`. Labels stay .npy (H, W) integer maps.
"""

from __future__ import annotations

from pathlib import Path

from hpcseg.errors import HpcsegError
from hpcseg.layouts import DatasetIndex
from hpcseg.spec import JobSpec
from hpcseg.workloads.hyperspectral.cubes import cube_files


def index(spec: JobSpec, root: Path, strata: bool) -> DatasetIndex:
    cores, labels = root / "cores", root / "labels"
    for d in (cores, labels):
        if not d.is_dir():
            raise HpcsegError(f"{root}: no {d.name}/ folder; the hyperspectral layout needs cores/ and labels/")
    files = cube_files(cores)
    stems: dict[str, list[Path]] = {}
    for f in files:
        stems.setdefault(f.stem, []).append(f)
    twice = [f"{s} ({', '.join(p.name for p in group)})" for s, group in stems.items() if len(group) > 1]
    if twice:
        raise HpcsegError(f"{cores}: {len(twice)} core(s) have more than one cube file; keep one each",
                          problems=twice[:10])
    names = sorted(stems)
    missing = [n for n in names if not (labels / f"{n}.npy").is_file()]
    if missing:
        raise HpcsegError(f"{labels}: {len(missing)} core(s) have no label map", problems=missing[:10])
    return DatasetIndex(names=names, files=[(stems[n][0], labels / f"{n}.npy") for n in names])
