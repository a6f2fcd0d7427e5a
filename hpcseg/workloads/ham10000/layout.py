"""The HAM10000 layout: a metadata CSV and <image_id>.jpg files; strata: dx class; groups: lesions."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from hpcseg.errors import HpcsegError
from hpcseg.layouts import DatasetIndex, unique_names
from hpcseg.spec import JobSpec


def index(spec: JobSpec, root: Path, strata: bool) -> DatasetIndex:
    ds = spec.workload.dataset
    meta = root / (ds.metadata or "HAM10000_metadata.csv")
    if not meta.is_file():
        raise HpcsegError(f"{meta}: metadata table not found (set dataset.metadata)")
    with open(meta, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    need = {"lesion_id", "image_id", "dx"}
    if not rows or not need <= set(rows[0]):
        raise HpcsegError(f"{meta}: needs the columns {', '.join(sorted(need))}")
    classes = ds.class_names or sorted({r["dx"] for r in rows})
    unknown = sorted({r["dx"] for r in rows} - set(classes))
    if unknown:
        raise HpcsegError(f"{meta}: dx values {', '.join(unknown)} are not in dataset.class_names")
    images = {p.stem: p for p in root.rglob("*.jpg") if not p.name.startswith(".")}
    rows.sort(key=lambda r: r["image_id"])
    missing = [r["image_id"] for r in rows if r["image_id"] not in images]
    if missing:
        raise HpcsegError(f"{root}: {len(missing)} image(s) listed in {meta.name} are missing",
                          problems=[f"{m}.jpg" for m in missing[:10]])
    names = [r["image_id"] for r in rows]
    unique_names(names, meta)
    return DatasetIndex(
        names=names,
        strata=np.array([classes.index(r["dx"]) for r in rows], dtype=np.int64),
        groups=np.array([r["lesion_id"] for r in rows]),
        files=[(images[n],) for n in names],
        strata_note="dx class",
    )
