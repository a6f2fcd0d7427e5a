"""The MARIDA layout: patches/**/<id>.tif with <id>_cl.tif beside it; strata: marine debris present."""

from __future__ import annotations

import math
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


# ------------------------------------------------------------------------------------- the official split

SPLIT_FILES = {"train": "train_X.txt", "val": "val_X.txt", "test": "test_X.txt"}


def split_folder(root: Path) -> Path:
    return Path(root) / "splits"


def tile_name(patch_id: str) -> str:
    """A split file's id ("1-12-19_48MYU_0") as the tile's file stem ("S2_1-12-19_48MYU_0")."""
    return patch_id if patch_id.startswith("S2_") else f"S2_{patch_id}"


def read_split_file(path: Path) -> list[str]:
    """The patch ids of one split file, as tile names: one id per line, blank lines and # comments skipped."""
    ids = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.append(tile_name(line))
    return ids


def official_files(root: Path) -> dict[str, Path] | None:
    """The three split files when ``ROOT/splits/`` holds all of them, else None."""
    folder = split_folder(root)
    files = {part: folder / name for part, name in SPLIT_FILES.items()}
    return files if all(f.is_file() for f in files.values()) else None


def official_splits(spec: JobSpec, index: DatasetIndex) -> dict | None:
    """Splits hook (hpcseg/splits.py): MARIDA's own train/val/test lists when ``ROOT/splits/`` has them and
    the job asks for one hold-out (``split.folds: 1``); None otherwise, and the job's own split is made.

    Items listed nowhere are left out; ids without a tile are an error (``hpcseg check`` names them)."""
    files = official_files(Path(spec.workload.dataset.root))
    if files is None or spec.workload.split.folds != 1:
        return None
    parts = {part: read_split_file(path) for part, path in files.items()}
    known = set(index.names)
    for part, names in parts.items():
        gone = [n for n in names if n not in known]
        if gone:
            raise HpcsegError(f"{files[part]}: {len(gone)} id(s) have no tile under patches/ "
                              f"({', '.join(gone[:3])}{', ...' if len(gone) > 3 else ''}); fix the list or the data")
    overlap = sorted(set(parts["train"]) & set(parts["test"]))
    if overlap:
        raise HpcsegError(f"{files['test']}: {len(overlap)} id(s) also in {files['train'].name} "
                          f"({', '.join(overlap[:3])}); a test tile must never be trained on")
    return {part: sorted(set(names)) for part, names in parts.items()} | {
        "source": f"official MARIDA split: {', '.join(str(f) for f in files.values())}"}


# ------------------------------------------------------------------------------------- confidence masks

CONFIDENCE_LEVELS = {"all": 3, "moderate": 2, "high": 1}  # the highest _conf.tif level kept (1 high, 2 moderate, 3 low)
CONFIDENCE_CODES = {"high": 1, "moderate": 2, "low": 3}     # a weight mapping's keys and their _conf.tif levels


def confidence_option(spec: JobSpec) -> str | dict[int, float]:
    """``model.options.confidence`` of the first model that sets it (the data is shared by every model):
    a level name (filter: less sure pixels are ignored) or ``{high: w, moderate: w, low: w}`` (each labelled
    pixel's loss weight by its _conf.tif level; returned as {level: weight}; 0 drops the level)."""
    for m in spec.workload.models:
        if "confidence" in m.options:
            field = f"workload.models.{m.name}.options.confidence"
            value = m.options["confidence"]
            if isinstance(value, dict):
                return confidence_weights(value, field)
            if not isinstance(value, str) or value not in CONFIDENCE_LEVELS:
                raise HpcsegError(f"{field}: {value!r} is not one of {', '.join(CONFIDENCE_LEVELS)}, or a mapping "
                                  f"of weights such as {{high: 1.0, moderate: 0.5, low: 0.25}}")
            return str(value)
    return "all"


def confidence_weights(value: dict, field: str) -> dict[int, float]:
    """``{high: w, moderate: w, low: w}`` as {_conf.tif level: weight}; every level named, weights >= 0."""
    names = ", ".join(CONFIDENCE_CODES)
    unknown = [str(k) for k in value if k not in CONFIDENCE_CODES]
    if unknown:
        raise HpcsegError(f"{field}: unknown level(s) {', '.join(unknown)}; a weight mapping names {names}")
    missing = [k for k in CONFIDENCE_CODES if k not in value]
    if missing:
        raise HpcsegError(f"{field}: no weight for {', '.join(missing)}; give one for each of {names} "
                          f"(0 ignores a level)")
    out = {}
    for name, level in CONFIDENCE_CODES.items():
        w = value[name]
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
            raise HpcsegError(f"{field}.{name}: {w!r} is not a weight; use a finite number >= 0 (0 ignores the level)")
        out[level] = float(w)
    if not any(out.values()):
        raise HpcsegError(f"{field}: every weight is 0, so no pixel would be learnt from; make at least one above 0")
    return out
