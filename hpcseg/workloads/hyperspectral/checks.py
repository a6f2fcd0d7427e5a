"""Preflight of the hyperspectral layout: cubes and label maps paired, bands and codes as the job says.

Cubes are read from the .npy header only (memory-mapped): they run to gigabytes each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpcseg.preflight import (
    Checks,
    Read,
    Side,
    check_codes,
    check_paired,
    check_same_size,
    listed,
    plural,
    subfolder,
    summarise_labels,
    train_fraction,
)
from hpcseg.spec import JobSpec


def _summarise_cube(path: Path) -> Read:
    """Shape and dtype from the .npy header only (memory-mapped): cubes run to gigabytes each."""
    try:
        if path.stat().st_size == 0:
            return Read(path, error="empty file (0 bytes); re-copy it from the source")
        cube = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # a truncated or pickled file; both mean "not a usable cube"
        return Read(path, error=f"cannot read the cube ({exc.__class__.__name__}: {exc}); re-export it")
    if cube.ndim != 3:
        return Read(path, error=f"cube has shape {tuple(cube.shape)}; expected (H, W, bands)")
    extra = {"numeric": bool(np.issubdtype(cube.dtype, np.number))}
    return Read(path, hw=(int(cube.shape[0]), int(cube.shape[1])), channels=int(cube.shape[2]), extra=extra)


def _summarise_label_map(path: Path) -> Read:
    r = summarise_labels(path)
    if r.error is None:
        levels = r.levels if r.levels is not None else np.array([])
        r.extra["has_tissue"] = bool(np.any(levels >= 0))
        r.extra["has_foreground"] = bool(np.any(levels >= 1))
    return r


def check(c: Checks, root: Path) -> None:
    ds = c.spec.workload.dataset
    cores_dir = subfolder(c, root, "cores", "one (H, W, bands) .npy cube per core")
    labels_dir = subfolder(c, root, "labels", "one (H, W) .npy label map per core (same name as the cube)")
    paired = check_paired(c, Side(cores_dir, _npy_files(cores_dir), "cubes", "core", [".npy"], _summarise_cube),
                           Side(labels_dir, _npy_files(labels_dir), "label maps", "label map", [".npy"],
                                 _summarise_label_map),
                           "labels/<core>.npy", "core")
    pairs, by_core, by_label = paired.pairs, paired.by_left, paired.by_right
    cube_reads, label_reads = paired.left_reads, paired.right_reads
    wrong = [r for r in cube_reads if r.error is None and r.channels != ds.channels]
    for got in sorted({r.channels for r in wrong}):
        group = [r for r in wrong if r.channels == got]
        c.error("dataset", cores_dir, f"{plural(len(group), 'cube')} with {got} bands but "
                                      f"workload.dataset.channels is {ds.channels}: "
                                      f"{listed(r.path.name for r in group)}; set workload.dataset.channels")
    for r in cube_reads:
        if r.error is None and not r.extra.get("numeric", True):
            c.error("dataset", r.path, "cube is not numeric; save it as float32")
    for r in label_reads:
        check_codes(c, r, -1, ds.num_classes - 1, "-1 no tissue, 0 background, 1.. tissue classes")
    cube_of = {r.path: r for r in cube_reads}
    label_of = {r.path: r for r in label_reads}
    for stem in pairs:
        _check_core(c, cube_of[by_core[stem]], label_of[by_label[stem]])
    per_core = _patches_per_core(c.spec)
    c.count("training_samples", int(len(pairs) * train_fraction(c.spec)) * per_core)


def _npy_files(folder: Path | None) -> list[Path]:
    if folder is None:
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == ".npy" and not p.name.startswith("."))


def _check_core(c: Checks, cube: Read, label: Read) -> None:
    check_same_size(c, cube, label, "label map")
    size = c.spec.workload.dataset.image_size
    if cube.hw is not None and (cube.hw[0] < size[0] or cube.hw[1] < size[1]):
        c.warn("dataset", cube.path, f"core is {cube.hw[0]}x{cube.hw[1]}, smaller than the "
                                     f"{size[0]}x{size[1]} patches (workload.dataset.image_size)")
    if label.error is None and not label.extra.get("has_foreground", True):
        c.warn("dataset", label.path, "no tissue-class pixel (>= 1) in this core: no patch passes "
                                      "min_foreground, so the core is never sampled")


def _patches_per_core(spec: JobSpec) -> int:
    counts = [m.options.get("patches_per_core", 1) for m in spec.workload.models]
    return max((int(n) for n in counts if isinstance(n, int | float)), default=1)
