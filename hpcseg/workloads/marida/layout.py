"""The MARIDA layout: patches/**/<id>.tif with <id>_cl.tif beside it; strata: marine debris present."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpcseg.errors import HpcsegError
from hpcseg.images import read_image
from hpcseg.layouts import DatasetIndex, unique_names
from hpcseg.spec import JobSpec


def index(spec: JobSpec, root: Path, strata: bool) -> DatasetIndex:
    base = root / "patches"
    if not base.is_dir():
        raise HpcsegError(f"{root}: no patches/ folder; the marida layout needs patches/**/<id>.tif")
    tiles = sorted(p for p in base.rglob("*.tif")
                   if not p.stem.endswith(("_cl", "_conf")) and not p.name.startswith("."))
    names, files, missing = [], [], []
    for t in tiles:
        cl = t.with_name(f"{t.stem}_cl.tif")
        if not cl.is_file():
            missing.append(t.name)
            continue
        names.append(t.stem)
        files.append((t, cl))
    if missing:
        raise HpcsegError(f"{base}: {len(missing)} tile(s) have no _cl.tif mask beside them",
                          problems=missing[:10])
    unique_names(names, base)
    index = DatasetIndex(names=names, files=files)
    if strata:
        index.strata = np.array([int((read_image(cl) == 1).any()) for _, cl in files], dtype=np.int64)
        index.strata_note = "marine debris (class 1) present"
    return index
