"""Preflight of the hyperspectral layout: cubes and label maps paired, bands and codes as the job says.

Cubes (.npy, .mat, ENVI .hdr/.img) are read from their headers only: they run to gigabytes each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpcseg.errors import HpcsegError
from hpcseg.preflight import (
    Checks,
    Paired,
    Read,
    Side,
    check_codes,
    check_expected_count,
    check_pairs,
    check_same_size,
    ignored_files,
    listed,
    plural,
    read_all,
    report_read_errors,
    subfolder,
    summarise_labels,
    train_fraction,
)
from hpcseg.spec import JobSpec
from hpcseg.workloads.hyperspectral.cubes import CUBE_SUFFIXES, ENVI_DATA_SUFFIXES, cube_files, cube_info


def _summarise_cube(path: Path) -> Read:
    """Shape and dtype from the header only (.npy header, MAT variable tags, HDF5 metadata, ENVI .hdr):
    cubes run to gigabytes each. Inconsistent headers (an ENVI data file shorter than its header says,
    a .mat without exactly one 3-D numeric variable) are one-line errors naming the file."""
    try:
        info = cube_info(path)
    except HpcsegError as exc:
        message = exc.message
        prefix = f"{path}: "
        return Read(path, error=message[len(prefix):] if message.startswith(prefix) else message)
    return Read(path, hw=info.shape[:2], channels=info.shape[2], extra={"numeric": True, "how": info.how})


def _summarise_label_map(path: Path) -> Read:
    r = summarise_labels(path)
    if r.error is None:
        levels = r.levels if r.levels is not None else np.array([])
        r.extra["has_tissue"] = bool(np.any(levels >= 0))
        r.extra["has_foreground"] = bool(np.any(levels >= 1))
    return r


def check(c: Checks, root: Path) -> None:
    ds = c.spec.workload.dataset
    cores_dir = subfolder(c, root, "cores", "one (H, W, bands) cube per core (.npy, .mat or ENVI .hdr + .img)")
    labels_dir = subfolder(c, root, "labels", "one (H, W) .npy label map per core (same name as the cube)")
    paired = _check_paired(c, Side(cores_dir, _cube_files(cores_dir), "cubes", "core", CUBE_SUFFIXES,
                                   _summarise_cube),
                           Side(labels_dir, _npy_files(labels_dir), "label maps", "label map", [".npy"],
                                _summarise_label_map))
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


def _cube_files(folder: Path | None) -> list[Path]:
    return cube_files(folder) if folder is not None else []


def _check_paired(c: Checks, cores: Side, labels: Side) -> Paired:
    """preflight.check_paired, except that the data file beside each ENVI header (core.img next to
    core.hdr) is part of that cube: neither a stray file nor a second cube of the same name."""
    for side in (cores, labels):
        if side.folder is None:
            continue
        kept = list(side.files)
        if side is cores:
            kept += [d for f in side.files if f.suffix.lower() == ".hdr" for d in _envi_data(f)]
        ignored_files(c, side.folder, kept, side.what, side.exts)
        if not side.files:
            c.error("dataset", side.folder, f"no {side.what} here ({', '.join(side.exts)})")
    if cores.folder is not None and cores.files:
        check_expected_count(c, len(cores.files), "core", cores.folder)
    c.count("images", len(cores.files))
    c.count("masks", len(labels.files))
    by_core = _by_stem(c, cores)
    by_label = _by_stem(c, labels)
    pairs: list[str] = []
    if cores.folder and labels.folder:
        pairs = check_pairs(c, by_core, by_label, cores.folder, labels.folder, cores.kind, labels.kind,
                            "labels/<core>.npy")
    c.count("pairs", len(pairs))
    core_reads, label_reads = read_all(cores.files, cores.summarise), read_all(labels.files, labels.summarise)
    c.count("files_read", len(core_reads) + len(label_reads))
    report_read_errors(c, core_reads)
    report_read_errors(c, label_reads)
    return Paired(pairs, by_core, by_label, core_reads, label_reads)


def _envi_data(hdr: Path) -> list[Path]:
    stem = hdr.with_suffix("")
    return [p for p in (stem.with_name(stem.name + s) for s in ENVI_DATA_SUFFIXES if s) if p.is_file()] + \
        ([stem] if stem.is_file() else [])


def _by_stem(c: Checks, side: Side) -> dict[str, Path]:
    """stem -> file; a core exported twice (core.npy and core.mat) is ambiguous, so it is an error."""
    groups: dict[str, list[Path]] = {}
    for f in side.files:
        groups.setdefault(f.stem, []).append(f)
    for stem, group in groups.items():
        if len(group) > 1 and side.folder is not None:
            c.error("dataset", side.folder, f"{len(group)} files share the name {stem!r} "
                                            f"({listed(g.name for g in group)}); keep one")
    return {stem: group[0] for stem, group in groups.items()}


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
