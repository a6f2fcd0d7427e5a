"""Preflight: every problem with a job's inputs found on the login node, all at once, before the queue.

A job that dies after a 12-hour queue wait because mask 41 of 73 is missing, or because the container
image was never built, costs a day. So preflight reads every file the job will read (in a thread pool:
decoding dominates), checks the container, the weights and the resources, and never stops at the first
problem. ``submit`` calls :func:`run_preflight` too, so this module stays torch-free and quick.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hpcseg.errors import EXIT_BAD_INPUT
from hpcseg.images import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image
from hpcseg.spec import JobSpec

Severity = Literal["error", "warning"]

MAX_NAMED = 10  # orphans and the like are named up to this many, then "and N more"
MAX_VALUES_SHOWN = 8
MIN_WALLTIME_SECONDS = 5 * 60
MAX_SANE_CPUS = 256
MARIDA_MAX_CODE = 15  # MARIDA v1: 0 unlabelled, 1 marine debris, ..., 15 mixed water
MARIDA_DEBRIS = 1
HAM_COLUMNS = ("lesion_id", "image_id", "dx")
# What the loaders (hpcseg.layouts) pick up; anything else is skipped there, so it is flagged here.
MASK_EXTENSIONS = (".png", ".tif", ".tiff")  # lossy .jpg masks are never binary
MARIDA_SUFFIX = ".tif"
HAM_SUFFIX = ".jpg"
HAM_DEFAULT_METADATA = "HAM10000_metadata.csv"
SYNTH_HINT = {
    "microbead": "microbeads", "marida": "marida", "hyperspectral": "hyperspectral", "ham10000": "ham10000",
}


@dataclass
class Problem:
    """One thing to fix (error) or to know (warning): which check, where (file, folder or field), what to do."""

    check: str
    where: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        label = "ERROR" if self.severity == "error" else "warn "
        return f"{label} [{self.check}] {self.where}: {self.message}"


@dataclass
class PreflightResult:
    """The problems in a stable order plus what was looked at, so "all checks passed" has a scope."""

    problems: list[Problem] = field(default_factory=list)
    checked: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors


class _Checks:
    """Collects problems and counts while the checks run; every check appends, none raises."""

    def __init__(self, spec: JobSpec, job_file: Path | None) -> None:
        self.spec = spec
        self.job_file = job_file
        self.result = PreflightResult()

    def error(self, check: str, where: str | Path, message: str) -> None:
        self.result.problems.append(Problem(check, str(where), message, "error"))

    def warn(self, check: str, where: str | Path, message: str) -> None:
        self.result.problems.append(Problem(check, str(where), message, "warning"))

    def field(self, dotted: str) -> str:
        """Where a spec field lives: 'jobs/x.yaml: resources.cpus' when the file is known."""
        return f"{self.job_file}: {dotted}" if self.job_file else dotted

    def count(self, key: str, value: Any) -> None:
        self.result.checked[key] = value


# --------------------------------------------------------------------------------------------- helpers


def _names(items: Iterable[Any], limit: int = MAX_NAMED) -> str:
    """'a, b, c' or 'a, ..., j and 5 more': long lists stay one readable line."""
    items = [str(i) for i in items]
    shown = ", ".join(items[:limit])
    return f"{shown} and {len(items) - limit} more" if len(items) > limit else shown


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _values(levels: np.ndarray) -> str:
    """Distinct values for a message: '0, 3, 255' or, for colours, '(0, 0, 0), (255, 0, 0)'."""
    shown = [str(tuple(int(x) for x in v)) if np.ndim(v) else _num(v) for v in levels[:MAX_VALUES_SHOWN]]
    more = f" ... ({len(levels)} distinct)" if len(levels) > MAX_VALUES_SHOWN else ""
    return ", ".join(shown) + more


def _num(v: Any) -> str:
    f = float(v)
    return str(int(f)) if f.is_integer() else f"{f:g}"


def _read_error(exc: ImageReadError, path: Path) -> str:
    """The reader's message without its leading path, since the problem's ``where`` already names it."""
    msg = exc.message
    prefix = f"{path}: "
    return msg[len(prefix):] if msg.startswith(prefix) else msg


def _channels(arr: np.ndarray) -> int:
    return 1 if arr.ndim == 2 else int(arr.shape[-1])


def _levels(arr: np.ndarray) -> np.ndarray:
    """The distinct values of a mask; colour masks with equal channels count as gray, others by colour."""
    if arr.ndim == 3:
        if all(np.array_equal(arr[..., 0], arr[..., c]) for c in range(1, arr.shape[-1])):
            return np.unique(arr[..., 0])
        return np.unique(arr.reshape(-1, arr.shape[-1]), axis=0)
    return np.unique(arr)


def _is_zero(level: Any) -> bool:
    return not np.any(level)


@dataclass
class _Read:
    """What preflight keeps of one decoded file: shape facts and distinct values, never the pixels."""

    path: Path
    error: str | None = None
    hw: tuple[int, int] | None = None
    channels: int = 0
    levels: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _read_all(paths: Sequence[Path], summarise: Callable[[Path], _Read]) -> list[_Read]:
    """``summarise`` every path in a thread pool; results come back in the order of ``paths``."""
    if not paths:
        return []
    workers = min(16, (os.cpu_count() or 1) + 4, len(paths))
    if workers == 1:
        return [summarise(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="preflight") as pool:
        return list(pool.map(summarise, paths))


def _summarise_image(path: Path) -> _Read:
    try:
        arr = read_image(path)
    except ImageReadError as exc:
        return _Read(path, error=_read_error(exc, path))
    return _Read(path, hw=(int(arr.shape[0]), int(arr.shape[1])), channels=_channels(arr))


def _summarise_mask(path: Path) -> _Read:
    try:
        arr = read_image(path)
    except ImageReadError as exc:
        return _Read(path, error=_read_error(exc, path))
    return _Read(path, hw=(int(arr.shape[0]), int(arr.shape[1])), channels=_channels(arr), levels=_levels(arr))


def _report_read_errors(c: _Checks, reads: Iterable[_Read]) -> None:
    for r in reads:
        if r.error:
            c.error("dataset", r.path, r.error)


def _by_stem(c: _Checks, files: Sequence[Path], folder: Path) -> dict[str, Path]:
    """stem → file; two files of one stem (a.png and a.tif) are ambiguous, so they are a problem."""
    out: dict[str, Path] = {}
    groups: dict[str, list[Path]] = {}
    for f in files:
        groups.setdefault(f.stem, []).append(f)
    for stem, group in groups.items():
        out[stem] = group[0]
        if len(group) > 1:
            c.error("dataset", folder, f"{len(group)} files share the name {stem!r} "
                                       f"({_names(g.name for g in group)}); keep one")
    return out


def _check_pairs(c: _Checks, left: dict[str, Path], right: dict[str, Path], left_dir: Path, right_dir: Path,
                 left_kind: str, right_kind: str, right_pattern: str) -> list[str]:
    """Report both kinds of orphans (named); return the stems present on both sides, sorted."""
    lonely_left = sorted(set(left) - set(right))
    lonely_right = sorted(set(right) - set(left))
    if lonely_left:
        c.error("dataset", right_dir,
                f"no {right_kind} for {_plural(len(lonely_left), left_kind)} in {left_dir.name}/: "
                f"{_names(left[s].name for s in lonely_left)}; add {right_pattern} with the same name, "
                f"or remove the {left_kind}")
    if lonely_right:
        c.error("dataset", left_dir,
                f"no {left_kind} for {_plural(len(lonely_right), right_kind)} in {right_dir.name}/: "
                f"{_names(right[s].name for s in lonely_right)}; add the {left_kind} or remove the "
                f"{right_kind}")
    return sorted(set(left) & set(right))


@dataclass
class _Side:
    """One folder of a paired layout (images/masks, cores/labels) and how its files are summarised."""

    folder: Path | None
    files: list[Path]
    what: str  # plural, for messages: "images", "label maps"
    kind: str  # singular, for orphan messages: "image", "label map"
    exts: Sequence[str]
    summarise: Callable[[Path], _Read]


@dataclass
class _Paired:
    pairs: list[str]
    by_left: dict[str, Path]
    by_right: dict[str, Path]
    left_reads: list[_Read]
    right_reads: list[_Read]


def _check_paired(c: _Checks, left: _Side, right: _Side, right_pattern: str, count_as: str) -> _Paired:
    """What every two-folder layout needs: stray and missing files, the expected count, orphans on both
    sides, and every file decoded (in a thread pool) with its read errors reported."""
    for side in (left, right):
        if side.folder is None:
            continue
        _ignored_files(c, side.folder, side.files, side.what, side.exts)
        if not side.files:
            c.error("dataset", side.folder, f"no {side.what} here ({', '.join(side.exts)})")
    if left.folder is not None and left.files:
        _check_expected_count(c, len(left.files), count_as, left.folder)
    c.count("images", len(left.files))
    c.count("masks", len(right.files))
    by_left = _by_stem(c, left.files, left.folder) if left.folder else {}
    by_right = _by_stem(c, right.files, right.folder) if right.folder else {}
    pairs: list[str] = []
    if left.folder and right.folder:
        pairs = _check_pairs(c, by_left, by_right, left.folder, right.folder, left.kind, right.kind,
                             right_pattern)
    c.count("pairs", len(pairs))
    left_reads = _read_all(left.files, left.summarise)
    right_reads = _read_all(right.files, right.summarise)
    c.count("files_read", len(left_reads) + len(right_reads))
    _report_read_errors(c, left_reads)
    _report_read_errors(c, right_reads)
    return _Paired(pairs, by_left, by_right, left_reads, right_reads)


def _check_expected_count(c: _Checks, found: int, what: str, where: Path) -> None:
    expected = c.spec.workload.dataset.expected_count
    if expected is not None and found != expected:
        c.error("dataset", where,
                f"holds {_plural(found, what)} but workload.dataset.expected_count is {expected}; "
                f"copy the missing files, or set --set workload.dataset.expected_count={found} "
                f"if {found} is right")


def _check_channels(c: _Checks, reads: Sequence[_Read], what: str) -> None:
    """One problem per wrong channel count (not per file): 2-channel images are usually all or none."""
    expected = c.spec.workload.dataset.channels
    wrong: dict[int, list[_Read]] = {}
    for r in reads:
        if r.error is None and r.channels != expected and {r.channels, expected} != {1, 3}:
            wrong.setdefault(r.channels, []).append(r)
    for got, group in sorted(wrong.items()):
        c.error("dataset", group[0].path.parent,
                f"{_plural(len(group), what)} with {got} channel(s) but workload.dataset.channels is "
                f"{expected}: {_names(r.path.name for r in group)}; convert them or set "
                f"workload.dataset.channels")


def _check_mixed_sizes(c: _Checks, reads: Sequence[_Read], folder: Path) -> None:
    """Mixed sizes train fine (everything is resized), but they often mean two exports were mixed up."""
    sizes = Counter(r.hw for r in reads if r.hw is not None)
    if len(sizes) > 1:
        h, w = c.spec.workload.dataset.image_size
        shown = _names(f"{a}x{b}: {n}" for (a, b), n in sizes.most_common())
        c.warn("dataset", folder, f"images come in {len(sizes)} sizes (HxW {shown}); they are resized "
                                  f"to workload.dataset.image_size {h}x{w}")


def _train_fraction(spec: JobSpec) -> float:
    split = spec.workload.split
    return (split.folds - 1) / split.folds if split.folds > 1 else 1.0 - split.val_fraction


# --------------------------------------------------------------------------------------------- dataset


def _check_dataset(c: _Checks) -> None:
    ds = c.spec.workload.dataset
    root = Path(ds.root)
    c.count("dataset", str(root))
    c.count("layout", ds.layout)
    if not root.exists():
        c.error("dataset", root, f"dataset folder not found (workload.dataset.root); copy the data there or "
                                 f"point --set workload.dataset.root=DIR at it (`hpcseg synth "
                                 f"{SYNTH_HINT[ds.layout]} DIR` makes a small synthetic one)")
        return
    if not root.is_dir():
        c.error("dataset", root, "workload.dataset.root is a file, not a folder; point it at the dataset folder")
        return
    if ds.class_names is not None and len(ds.class_names) != ds.num_classes:
        c.error("dataset", c.field("workload.dataset.class_names"),
                f"{len(ds.class_names)} class names but num_classes is {ds.num_classes}; make them agree")
    LAYOUTS[ds.layout](c, root)


def _subfolder(c: _Checks, root: Path, name: str, holds: str) -> Path | None:
    folder = root / name
    if not folder.is_dir():
        c.error("dataset", folder, f"folder missing; the {c.spec.workload.dataset.layout} layout keeps "
                                   f"{holds} in {name}/ (see docs/formats.md)")
        return None
    return folder


def _ignored_files(c: _Checks, folder: Path, kept: Sequence[Path], what: str, exts: Sequence[str]) -> None:
    """Files the loader will skip: a warning, because a '.TIFF' typo or a zip left there loses data."""
    kept_set = set(kept)
    ignored = sorted(p.name for p in folder.iterdir()
                     if p.is_file() and not p.name.startswith(".") and p not in kept_set)
    if ignored:
        c.warn("dataset", folder, f"{_plural(len(ignored), 'file')} ignored, not {what} "
                                  f"({', '.join(exts)}): {_names(ignored)}")


def _check_microbead(c: _Checks, root: Path) -> None:
    images_dir = _subfolder(c, root, "images", "the images")
    masks_dir = _subfolder(c, root, "masks", "the masks (same file names as the images)")
    images = list_images(images_dir) if images_dir else []
    masks = [p for p in list_images(masks_dir) if p.suffix.lower() in MASK_EXTENSIONS] if masks_dir else []
    paired = _check_paired(c, _Side(images_dir, images, "images", "image", IMAGE_EXTENSIONS, _summarise_image),
                           _Side(masks_dir, masks, "masks", "mask", MASK_EXTENSIONS, _summarise_mask),
                           "masks/<name>.png or .tif", "image")
    pairs, by_image, by_mask = paired.pairs, paired.by_left, paired.by_right
    image_reads, mask_reads = paired.left_reads, paired.right_reads
    for r in mask_reads:
        _check_binary(c, r)
    img_of = {r.path: r for r in image_reads}
    mask_of = {r.path: r for r in mask_reads}
    for stem in pairs:
        _check_same_size(c, img_of[by_image[stem]], mask_of[by_mask[stem]], "mask")
    good = [r for r in image_reads if r.error is None]
    _check_channels(c, good, "image")
    if images_dir is not None:
        _check_mixed_sizes(c, good, images_dir)
    c.count("training_samples", int(len(pairs) * _train_fraction(c.spec)))


def _check_binary(c: _Checks, r: _Read) -> None:
    """Foreground is "above 0", so the background must be 0 and there must be at most one other level."""
    if r.error is not None or r.levels is None:
        return
    levels = r.levels
    if len(levels) > 2:
        c.error("dataset", r.path, f"mask is not binary: values {_values(levels)}; expected two levels with "
                                   f"background 0 (0/255 or 0/1); re-export it as a binary mask")
    elif len(levels) == 2 and not _is_zero(levels[0]):
        c.error("dataset", r.path, f"mask values {_values(levels)} have no 0 background, so every pixel "
                                   f"would be foreground; re-export it with background 0")
    elif len(levels) == 1 and not _is_zero(levels[0]):
        c.warn("dataset", r.path, f"mask is foreground everywhere (only value {_values(levels)})")


def _check_same_size(c: _Checks, image: _Read, label: _Read, kind: str) -> None:
    if image.hw is None or label.hw is None or image.hw == label.hw:
        return
    c.error("dataset", label.path, f"{kind} is {label.hw[0]}x{label.hw[1]} (HxW) but its image "
                                   f"{image.path.name} is {image.hw[0]}x{image.hw[1]}; they must match pixel "
                                   f"for pixel")


# --- marida


def _marida_summariser(bands: int) -> Callable[[Path], _Read]:
    def summarise(path: Path) -> _Read:
        try:
            arr = read_image(path)
        except ImageReadError as exc:
            return _Read(path, error=_read_error(exc, path))
        if arr.ndim == 3 and arr.shape[-1] == bands:
            return _Read(path, hw=(int(arr.shape[0]), int(arr.shape[1])), channels=bands)
        if arr.ndim == 3 and arr.shape[0] == bands:
            return _Read(path, hw=(int(arr.shape[1]), int(arr.shape[2])), channels=bands)
        return _Read(path, error=f"tile has shape {tuple(arr.shape)}: expected {bands} bands "
                                 f"(workload.dataset.channels) as (H, W, {bands}) or ({bands}, H, W)")
    return summarise


def _summarise_labels(path: Path) -> _Read:
    try:
        arr = read_image(path)
    except ImageReadError as exc:
        return _Read(path, error=_read_error(exc, path))
    if arr.ndim != 2:
        return _Read(path, error=f"label map has shape {tuple(arr.shape)}; expected one band (H, W) of codes")
    extra = {"integral": bool(np.issubdtype(arr.dtype, np.integer) or np.all(np.mod(arr, 1) == 0))}
    return _Read(path, hw=(int(arr.shape[0]), int(arr.shape[1])), channels=1, levels=np.unique(arr), extra=extra)


def _check_codes(c: _Checks, r: _Read, low: int, high: int, meaning: str) -> None:
    """Label values outside [low, high] index past the classes and crash (or silently skew) the loss."""
    if r.error is not None or r.levels is None:
        return
    if not r.extra.get("integral", True):
        c.error("dataset", r.path, "label map holds fractional values; labels must be whole class codes")
        return
    bad = r.levels[(r.levels < low) | (r.levels > high)]
    if len(bad):
        c.error("dataset", r.path, f"label values {_values(bad)} are outside {low}..{high} ({meaning})")


def _check_marida(c: _Checks, root: Path) -> None:
    patches = _subfolder(c, root, "patches", "the <id>.tif tiles and <id>_cl.tif labels")
    if patches is None:
        return
    found = sorted(p for p in patches.rglob("*") if p.is_file() and not p.name.startswith("."))
    tifs = [p for p in found if p.suffix == MARIDA_SUFFIX]
    odd = [p for p in found if p.suffix.lower() in (".tif", ".tiff") and p.suffix != MARIDA_SUFFIX]
    if odd:
        c.warn("dataset", patches, f"{_plural(len(odd), 'file')} ignored, only *{MARIDA_SUFFIX} is read: "
                                   f"{_names(p.name for p in odd)}; rename them")
    labels = {_key(p, "_cl"): p for p in tifs if p.stem.endswith("_cl")}
    tiles = {_key(p, ""): p for p in tifs if not p.stem.endswith(("_cl", "_conf"))}
    c.count("images", len(tiles))
    c.count("masks", len(labels))
    if not tiles and not labels:
        c.error("dataset", patches, "no .tif tiles here or below; expected <id>.tif with <id>_cl.tif beside it")
        return
    _check_expected_count(c, len(tiles), "tile", patches)
    stems = Counter(p.stem for p in tiles.values())
    repeated = sorted(s for s, n in stems.items() if n > 1)
    if repeated:
        c.error("dataset", patches, f"tile names repeat across scene folders: {_names(repeated)}; items are "
                                    f"named by file name, so names must be unique")
    pairs = _check_pairs(c, tiles, labels, patches, patches, "tile", "label", "<id>_cl.tif")
    c.count("pairs", len(pairs))
    tile_reads = _read_all(sorted(tiles.values()), _marida_summariser(c.spec.workload.dataset.channels))
    label_reads = _read_all(sorted(labels.values()), _summarise_labels)
    c.count("files_read", len(tile_reads) + len(label_reads))
    _report_read_errors(c, tile_reads)
    _report_read_errors(c, label_reads)
    binary = c.spec.workload.task == "binary_segmentation"
    high = MARIDA_MAX_CODE if binary else c.spec.workload.dataset.num_classes - 1
    meaning = "MARIDA class codes" if binary else "workload.dataset.num_classes"
    for r in label_reads:
        _check_codes(c, r, 0, high, meaning)
    tile_of = {r.path: r for r in tile_reads}
    label_of = {r.path: r for r in label_reads}
    for key in pairs:
        _check_same_size(c, tile_of[tiles[key]], label_of[labels[key]], "label")
    if binary and label_reads and not any(
            r.levels is not None and MARIDA_DEBRIS in r.levels for r in label_reads):
        c.warn("dataset", patches, "no label holds code 1 (marine debris): the positive class never appears")
    c.count("training_samples", int(len(pairs) * _train_fraction(c.spec)))


def _key(path: Path, suffix: str) -> str:
    """A tile's identity: its path below patches/ without the suffix, so scenes may reuse names."""
    stem = path.stem[: len(path.stem) - len(suffix)] if suffix else path.stem
    return str(path.with_name(stem))


# --- hyperspectral


def _summarise_cube(path: Path) -> _Read:
    """Shape and dtype from the .npy header only (memory-mapped): cubes run to gigabytes each."""
    try:
        if path.stat().st_size == 0:
            return _Read(path, error="empty file (0 bytes); re-copy it from the source")
        cube = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # a truncated or pickled file; both mean "not a usable cube"
        return _Read(path, error=f"cannot read the cube ({exc.__class__.__name__}: {exc}); re-export it")
    if cube.ndim != 3:
        return _Read(path, error=f"cube has shape {tuple(cube.shape)}; expected (H, W, bands)")
    extra = {"numeric": bool(np.issubdtype(cube.dtype, np.number))}
    return _Read(path, hw=(int(cube.shape[0]), int(cube.shape[1])), channels=int(cube.shape[2]), extra=extra)


def _summarise_label_map(path: Path) -> _Read:
    r = _summarise_labels(path)
    if r.error is None:
        levels = r.levels if r.levels is not None else np.array([])
        r.extra["has_tissue"] = bool(np.any(levels >= 0))
        r.extra["has_foreground"] = bool(np.any(levels >= 1))
    return r


def _check_hyperspectral(c: _Checks, root: Path) -> None:
    ds = c.spec.workload.dataset
    cores_dir = _subfolder(c, root, "cores", "one (H, W, bands) .npy cube per core")
    labels_dir = _subfolder(c, root, "labels", "one (H, W) .npy label map per core (same name as the cube)")
    paired = _check_paired(c, _Side(cores_dir, _npy_files(cores_dir), "cubes", "core", [".npy"], _summarise_cube),
                           _Side(labels_dir, _npy_files(labels_dir), "label maps", "label map", [".npy"],
                                 _summarise_label_map),
                           "labels/<core>.npy", "core")
    pairs, by_core, by_label = paired.pairs, paired.by_left, paired.by_right
    cube_reads, label_reads = paired.left_reads, paired.right_reads
    wrong = [r for r in cube_reads if r.error is None and r.channels != ds.channels]
    for got in sorted({r.channels for r in wrong}):
        group = [r for r in wrong if r.channels == got]
        c.error("dataset", cores_dir, f"{_plural(len(group), 'cube')} with {got} bands but "
                                      f"workload.dataset.channels is {ds.channels}: "
                                      f"{_names(r.path.name for r in group)}; set workload.dataset.channels")
    for r in cube_reads:
        if r.error is None and not r.extra.get("numeric", True):
            c.error("dataset", r.path, "cube is not numeric; save it as float32")
    for r in label_reads:
        _check_codes(c, r, -1, ds.num_classes - 1, "-1 no tissue, 0 background, 1.. tissue classes")
    cube_of = {r.path: r for r in cube_reads}
    label_of = {r.path: r for r in label_reads}
    for stem in pairs:
        _check_core(c, cube_of[by_core[stem]], label_of[by_label[stem]])
    per_core = _patches_per_core(c.spec)
    c.count("training_samples", int(len(pairs) * _train_fraction(c.spec)) * per_core)


def _npy_files(folder: Path | None) -> list[Path]:
    if folder is None:
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == ".npy" and not p.name.startswith("."))


def _check_core(c: _Checks, cube: _Read, label: _Read) -> None:
    _check_same_size(c, cube, label, "label map")
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


# --- ham10000


def _check_ham10000(c: _Checks, root: Path) -> None:
    ds = c.spec.workload.dataset
    meta_path = root / (ds.metadata or HAM_DEFAULT_METADATA)
    rows = _read_metadata(c, meta_path)
    candidates = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                        and not p.name.startswith("."))
    files = [p for p in candidates if p.suffix == HAM_SUFFIX]
    odd = [p for p in candidates if p.suffix != HAM_SUFFIX]
    if odd:
        c.warn("dataset", root, f"{_plural(len(odd), 'image')} ignored, only *{HAM_SUFFIX} is read: "
                                f"{_names(p.relative_to(root) for p in odd)}; convert or rename them")
    by_id: dict[str, list[Path]] = {}
    for p in files:
        by_id.setdefault(p.stem, []).append(p)
    c.count("images", len(files))
    if not files:
        c.error("dataset", root, "no images found here or below (<image_id>.jpg in images/ or "
                                 "HAM10000_images_part_1/2)")
    if rows is None:
        _decode_ham(c, files)
        return
    c.count("metadata_rows", len(rows))
    _check_expected_count(c, len(rows), "metadata row", meta_path)
    ids = [r["image_id"] for r in rows]
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
    if repeated:
        c.error("dataset", meta_path, f"image_id given more than once: {_names(repeated)}; keep one row each")
    missing = sorted({i for i in ids if i not in by_id})
    if missing and files:
        c.error("dataset", root, f"no image file for {_plural(len(missing), 'image_id')} of {meta_path.name}: "
                                 f"{_names(f'{i}.jpg' for i in missing)}; copy them in, or remove their rows")
    unlisted = sorted(set(by_id) - set(ids))
    if unlisted:
        c.warn("dataset", root, f"{_plural(len(unlisted), 'image')} not in {meta_path.name}, ignored: "
                                f"{_names(by_id[i][0].name for i in unlisted)}")
    doubled = sorted(i for i in set(ids) if len(by_id.get(i, [])) > 1)
    if doubled:
        c.warn("dataset", root, f"{_plural(len(doubled), 'image_id')} found in more than one file, the first "
                                f"is used: {_names(by_id[i][0].relative_to(root) for i in doubled)}")
    _check_ham_classes(c, rows, meta_path)
    used = [by_id[i][0] for i in sorted(set(ids)) if i in by_id]
    _decode_ham(c, used)
    c.count("training_samples", int(len(used) * _train_fraction(c.spec)))


def _read_metadata(c: _Checks, path: Path) -> list[dict[str, str]] | None:
    """The metadata rows, or None (with a problem) when the table is missing or lacks a column."""
    if not path.is_file():
        c.error("dataset", path, "metadata CSV not found (workload.dataset.metadata, inside the dataset root); "
                                 "copy HAM10000_metadata.csv there")
        return None
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in reader.fieldnames or []]
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        c.error("dataset", path, f"cannot read the metadata CSV ({exc.__class__.__name__}: {exc})")
        return None
    absent = [col for col in HAM_COLUMNS if col not in header]
    if absent:
        c.error("dataset", path, f"metadata CSV lacks column(s) {', '.join(absent)} (has: {_names(header)}); "
                                 f"it needs {', '.join(HAM_COLUMNS)}")
        return None
    if not rows:
        c.error("dataset", path, "metadata CSV has a header but no rows")
    return rows


def _check_ham_classes(c: _Checks, rows: list[dict[str, str]], meta_path: Path) -> None:
    ds = c.spec.workload.dataset
    found = Counter(r["dx"] for r in rows)
    if ds.class_names is None:
        if len(found) != ds.num_classes:
            c.error("dataset", c.field("workload.dataset.num_classes"),
                    f"{meta_path.name} has {len(found)} dx values ({_names(sorted(found))}) but num_classes is "
                    f"{ds.num_classes}; set class_names to fix their order")
        return
    unknown = sorted(set(found) - set(ds.class_names))
    if unknown:
        shown = _names(f"{k} ({found[k]} rows)" for k in unknown)
        c.error("dataset", meta_path, f"dx values not in workload.dataset.class_names: {shown}; add them or "
                                      f"fix the rows")
    absent = [k for k in ds.class_names if k not in found]
    if absent and rows:
        c.warn("dataset", meta_path, f"class(es) with no rows: {_names(absent)}")


def _decode_ham(c: _Checks, files: Sequence[Path]) -> None:
    reads = _read_all(files, _summarise_image)
    c.count("files_read", len(reads))
    _report_read_errors(c, reads)
    _check_channels(c, [r for r in reads if r.error is None], "image")


LAYOUTS: dict[str, Callable[[_Checks, Path], None]] = {
    "microbead": _check_microbead,
    "marida": _check_marida,
    "hyperspectral": _check_hyperspectral,
    "ham10000": _check_ham10000,
}


# --------------------------------------------------------------------------------------------- container


def _check_container(c: _Checks) -> None:
    ct = c.spec.container
    c.count("container", ct.runtime)
    if ct.runtime == "none":
        return
    image = Path(ct.image or "")
    if not image.exists():
        c.error("container", image, "container image not found; build it as docs/containers.md describes, "
                                    "or copy it there; without a container: --set container.runtime=none")
    elif image.is_file() and image.stat().st_size == 0:
        c.error("container", image, "container image is empty (0 bytes); rebuild it (docs/containers.md)")
    if shutil.which(ct.runtime) is None:
        other = "apptainer" if ct.runtime == "singularity" else "singularity"
        hint = (f" ({other} is on PATH: --set container.runtime={other})" if shutil.which(other) else
                f" (`module load {ct.runtime}` may provide it)")
        c.error("container", c.field("container.runtime"),
                f"{ct.runtime} not found on PATH{hint}; login nodes sometimes lack it while compute nodes "
                f"have it; for CPU/local runs use --set container.runtime=none")
    for b in ct.binds:
        if not Path(b.src).exists():
            c.warn("container", b.src, "bind source does not exist here; the container will fail to start "
                                       "unless it exists on the compute nodes")


# --------------------------------------------------------------------------------------------- weights


MAPPED_WEIGHT_ARCHS = ("resnet50", "densenet121", "efficientnet_b3", "vit_b_16")


def _check_weights(c: _Checks) -> None:
    named = 0
    for m in c.spec.workload.models:
        if m.weights is None:
            continue
        named += 1
        path = Path(m.weights)
        fix = (f"compute nodes have no internet: copy it to this path first, or train {m.name} from "
               f"scratch with --set workload.models.{m.name}.weights=null")
        if not path.exists():
            c.error("weights", path, f"weights of model {m.name} not found; {fix}")
        elif not path.is_file():
            c.error("weights", path, f"weights of model {m.name} is a folder, not a file; {fix}")
        elif path.stat().st_size == 0:
            c.error("weights", path, f"weights of model {m.name} is empty (0 bytes); {fix}")
        elif m.arch in MAPPED_WEIGHT_ARCHS:  # open it: keys and shapes must fit the model (imports torch)
            from hpcseg.workloads.ham10000.weights import refuse_reason

            why = refuse_reason(c.spec, m)
            if why:
                c.error("weights", path, why)
    c.count("weights", named)


# --------------------------------------------------------------------------------------------- resources


def _check_resources(c: _Checks) -> None:
    spec = c.spec
    res = spec.resources
    if res.gpus > 0 and spec.container.runtime != "none" and not spec.container.gpu:
        c.warn("resources", c.field("container.gpu"), f"{res.gpus} GPU(s) requested but container.gpu is false, "
                                                      f"so the container cannot see them (no --nv)")
    if res.cpus > MAX_SANE_CPUS:
        c.warn("resources", c.field("resources.cpus"), f"{res.cpus} CPUs per task is more than most nodes have")
    if res.walltime_seconds < MIN_WALLTIME_SECONDS:
        c.warn("resources", c.field("resources.walltime"),
               f"{res.walltime} is under 5 minutes: container start-up and data loading alone may use it up")
    if spec.training.num_workers > res.cpus:
        c.warn("resources", c.field("training.num_workers"),
               f"{spec.training.num_workers} data-loader workers on {res.cpus} CPU(s) oversubscribe the node")
    samples = c.result.checked.get("training_samples")
    if samples and spec.training.batch_size > samples:
        c.warn("resources", c.field("training.batch_size"),
               f"batch_size {spec.training.batch_size} is larger than the ~{samples} training samples; "
               f"each epoch is one partial batch")


# --------------------------------------------------------------------------------------------- entry points


def preflight(spec: JobSpec, job_file: Path | None = None) -> PreflightResult:
    """All checks, in a fixed order (dataset, container, weights, resources), with what was checked."""
    c = _Checks(spec, job_file)
    _check_dataset(c)
    _check_container(c)
    _check_weights(c)
    _check_resources(c)
    return c.result


def run_preflight(spec: JobSpec, job_file: Path | None = None) -> list[Problem]:
    """Every problem with the job's inputs; ``spec`` should have absolute paths (with_absolute_paths)."""
    return preflight(spec, job_file).problems


def summary_line(result: PreflightResult) -> str:
    if not result.problems:
        return "all checks passed"
    n, e, w = len(result.problems), len(result.errors), len(result.warnings)
    return f"{_plural(n, 'problem')}: {_plural(e, 'error')}, {_plural(w, 'warning')}"


def _checked_line(checked: dict[str, Any]) -> str:
    parts = [f"{k} {v}" for k, v in checked.items() if k not in ("dataset", "training_samples")]
    return "checked: " + ", ".join(parts)


def cli_check(args: argparse.Namespace) -> int:
    """``hpcseg check``: print every problem, one line each; exit 2 on any error, 0 on warnings alone."""
    from hpcseg.jobload import load_from_args

    loaded = load_from_args(args)
    result = preflight(loaded.spec, loaded.path)
    if getattr(args, "json", False):
        print(json.dumps({
            "job": loaded.spec.name, "job_file": str(loaded.path), "profile": loaded.profile,
            "ok": result.ok, "problems": [asdict(p) for p in result.problems], "checked": result.checked,
        }, indent=2))
    else:
        profile = f" (profile {loaded.profile})" if loaded.profile else ""
        print(f"hpcseg check {loaded.spec.name}{profile}: {loaded.path}")
        for p in result.problems:
            print(f"  {p}")
        print(_checked_line(result.checked))
        print(summary_line(result))
    return EXIT_BAD_INPUT if result.errors else 0
