"""Preflight: every problem with a job's inputs found on the login node, all at once, before the queue.

A job that dies after a 12-hour queue wait because mask 41 of 73 is missing, or because the container
image was never built, costs a day. So preflight reads every file the job will read (in a thread pool:
decoding dominates), checks the container, the weights and the resources, and never stops at the first
problem. ``submit`` calls :func:`run_preflight` too, so this module stays torch-free and quick.

The checks every job gets (container, weights, resources) live here; each workload's dataset checks live
in its own ``checks.py`` (found through hpcseg.workloads.registry) and build on the public helpers below
(:class:`Checks`, :class:`Read`, :func:`check_paired`, ...), which is why those have no leading underscore.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import importlib
import json
import math
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hpcseg.containers import get_runtime
from hpcseg.errors import EXIT_BAD_INPUT
from hpcseg.images import ImageReadError, read_image
from hpcseg.spec import JobSpec
from hpcseg.workloads import registry

Severity = Literal["error", "warning"]

MAX_NAMED = 10  # orphans and the like are named up to this many, then "and N more"
MAX_VALUES_SHOWN = 8
MIN_WALLTIME_SECONDS = 5 * 60
MAX_SANE_CPUS = 256


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


class Checks:
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


def listed(items: Iterable[Any], limit: int = MAX_NAMED) -> str:
    """'a, b, c' or 'a, ..., j and 5 more': long lists stay one readable line."""
    items = [str(i) for i in items]
    shown = ", ".join(items[:limit])
    return f"{shown} and {len(items) - limit} more" if len(items) > limit else shown


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def show_values(levels: np.ndarray) -> str:
    """Distinct values for a message: '0, 3, 255' or, for colours, '(0, 0, 0), (255, 0, 0)'."""
    shown = [str(tuple(int(x) for x in v)) if np.ndim(v) else _num(v) for v in levels[:MAX_VALUES_SHOWN]]
    more = f" ... ({len(levels)} distinct)" if len(levels) > MAX_VALUES_SHOWN else ""
    return ", ".join(shown) + more


def _num(v: Any) -> str:
    f = float(v)
    return str(int(f)) if f.is_integer() else f"{f:g}"


def read_error(exc: ImageReadError, path: Path) -> str:
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


def is_zero(level: Any) -> bool:
    return not np.any(level)


@dataclass
class Read:
    """What preflight keeps of one decoded file: shape facts and distinct values, never the pixels."""

    path: Path
    error: str | None = None
    hw: tuple[int, int] | None = None
    channels: int = 0
    levels: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def read_all(paths: Sequence[Path], summarise: Callable[[Path], Read]) -> list[Read]:
    """``summarise`` every path in a thread pool; results come back in the order of ``paths``."""
    if not paths:
        return []
    workers = min(16, (os.cpu_count() or 1) + 4, len(paths))
    if workers == 1:
        return [summarise(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="preflight") as pool:
        return list(pool.map(summarise, paths))


def summarise_image(path: Path) -> Read:
    try:
        arr = read_image(path)
    except ImageReadError as exc:
        return Read(path, error=read_error(exc, path))
    return Read(path, hw=(int(arr.shape[0]), int(arr.shape[1])), channels=_channels(arr))


def summarise_mask(path: Path) -> Read:
    try:
        arr = read_image(path)
    except ImageReadError as exc:
        return Read(path, error=read_error(exc, path))
    return Read(path, hw=(int(arr.shape[0]), int(arr.shape[1])), channels=_channels(arr), levels=_levels(arr))


def report_read_errors(c: Checks, reads: Iterable[Read]) -> None:
    for r in reads:
        if r.error:
            c.error("dataset", r.path, r.error)


def _by_stem(c: Checks, files: Sequence[Path], folder: Path) -> dict[str, Path]:
    """stem → file; two files of one stem (a.png and a.tif) are ambiguous, so they are a problem."""
    out: dict[str, Path] = {}
    groups: dict[str, list[Path]] = {}
    for f in files:
        groups.setdefault(f.stem, []).append(f)
    for stem, group in groups.items():
        out[stem] = group[0]
        if len(group) > 1:
            c.error("dataset", folder, f"{len(group)} files share the name {stem!r} "
                                       f"({listed(g.name for g in group)}); keep one")
    return out


def check_pairs(c: Checks, left: dict[str, Path], right: dict[str, Path], left_dir: Path, right_dir: Path,
                 left_kind: str, right_kind: str, right_pattern: str) -> list[str]:
    """Report both kinds of orphans (named); return the stems present on both sides, sorted."""
    lonely_left = sorted(set(left) - set(right))
    lonely_right = sorted(set(right) - set(left))
    if lonely_left:
        c.error("dataset", right_dir,
                f"no {right_kind} for {plural(len(lonely_left), left_kind)} in {left_dir.name}/: "
                f"{listed(left[s].name for s in lonely_left)}; add {right_pattern} with the same name, "
                f"or remove the {left_kind}")
    if lonely_right:
        c.error("dataset", left_dir,
                f"no {left_kind} for {plural(len(lonely_right), right_kind)} in {right_dir.name}/: "
                f"{listed(right[s].name for s in lonely_right)}; add the {left_kind} or remove the "
                f"{right_kind}")
    return sorted(set(left) & set(right))


@dataclass
class Side:
    """One folder of a paired layout (images/masks, cores/labels) and how its files are summarised."""

    folder: Path | None
    files: list[Path]
    what: str  # plural, for messages: "images", "label maps"
    kind: str  # singular, for orphan messages: "image", "label map"
    exts: Sequence[str]
    summarise: Callable[[Path], Read]


@dataclass
class Paired:
    pairs: list[str]
    by_left: dict[str, Path]
    by_right: dict[str, Path]
    left_reads: list[Read]
    right_reads: list[Read]


def check_paired(c: Checks, left: Side, right: Side, right_pattern: str, count_as: str) -> Paired:
    """What every two-folder layout needs: stray and missing files, the expected count, orphans on both
    sides, and every file decoded (in a thread pool) with its read errors reported."""
    for side in (left, right):
        if side.folder is None:
            continue
        ignored_files(c, side.folder, side.files, side.what, side.exts)
        if not side.files:
            c.error("dataset", side.folder, f"no {side.what} here ({', '.join(side.exts)})")
    if left.folder is not None and left.files:
        check_expected_count(c, len(left.files), count_as, left.folder)
    c.count("images", len(left.files))
    c.count("masks", len(right.files))
    by_left = _by_stem(c, left.files, left.folder) if left.folder else {}
    by_right = _by_stem(c, right.files, right.folder) if right.folder else {}
    pairs: list[str] = []
    if left.folder and right.folder:
        pairs = check_pairs(c, by_left, by_right, left.folder, right.folder, left.kind, right.kind,
                             right_pattern)
    c.count("pairs", len(pairs))
    left_reads = read_all(left.files, left.summarise)
    right_reads = read_all(right.files, right.summarise)
    c.count("files_read", len(left_reads) + len(right_reads))
    report_read_errors(c, left_reads)
    report_read_errors(c, right_reads)
    return Paired(pairs, by_left, by_right, left_reads, right_reads)


def check_expected_count(c: Checks, found: int, what: str, where: Path) -> None:
    expected = c.spec.workload.dataset.expected_count
    if expected is not None and found != expected:
        c.error("dataset", where,
                f"holds {plural(found, what)} but workload.dataset.expected_count is {expected}; "
                f"copy the missing files, or set --set workload.dataset.expected_count={found} "
                f"if {found} is right")


def check_channels(c: Checks, reads: Sequence[Read], what: str) -> None:
    """One problem per wrong channel count (not per file): 2-channel images are usually all or none."""
    expected = c.spec.workload.dataset.channels
    wrong: dict[int, list[Read]] = {}
    for r in reads:
        if r.error is None and r.channels != expected and {r.channels, expected} != {1, 3}:
            wrong.setdefault(r.channels, []).append(r)
    for got, group in sorted(wrong.items()):
        c.error("dataset", group[0].path.parent,
                f"{plural(len(group), what)} with {got} channel(s) but workload.dataset.channels is "
                f"{expected}: {listed(r.path.name for r in group)}; convert them or set "
                f"workload.dataset.channels")


def check_mixed_sizes(c: Checks, reads: Sequence[Read], folder: Path) -> None:
    """Mixed sizes train fine (everything is resized), but they often mean two exports were mixed up."""
    sizes = Counter(r.hw for r in reads if r.hw is not None)
    if len(sizes) > 1:
        h, w = c.spec.workload.dataset.image_size
        shown = listed(f"{a}x{b}: {n}" for (a, b), n in sizes.most_common())
        c.warn("dataset", folder, f"images come in {len(sizes)} sizes (HxW {shown}); they are resized "
                                  f"to workload.dataset.image_size {h}x{w}")


def train_fraction(spec: JobSpec) -> float:
    split = spec.workload.split
    return (split.folds - 1) / split.folds if split.folds > 1 else 1.0 - split.val_fraction


# --------------------------------------------------------------------------------------------- dataset


def path_problem(path: Path) -> str | None:
    """Why a path the user gave cannot even be looked at (a name longer than the file system allows, a
    symlink loop, no permission), or None when it can (whether or not it exists). pathlib's exists()
    raises on these instead of answering, which would end the check in a traceback."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValueError:  # an embedded NUL byte
        return "the path holds a NUL character; fix it"
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return "a name in this path is longer than the file system allows; shorten it"
        return f"cannot look at it ({exc.strerror or exc}); fix the path or its permissions"
    return None


def _check_dataset(c: Checks) -> None:
    ds = c.spec.workload.dataset
    root = Path(ds.root)
    c.count("dataset", str(root))
    c.count("layout", ds.layout)
    if (why := path_problem(root)) is not None:
        c.error("dataset", root, f"workload.dataset.root: {why}")
        return
    if not root.exists():
        c.error("dataset", root, f"dataset folder not found (workload.dataset.root); copy the data there or "
                                 f"point --set workload.dataset.root=DIR at it (`hpcseg synth "
                                 f"{registry.synth_kind(ds.layout)} DIR` makes a small synthetic one)")
        return
    if not root.is_dir():
        c.error("dataset", root, "workload.dataset.root is a file, not a folder; point it at the dataset folder")
        return
    if ds.class_names is not None and len(ds.class_names) != ds.num_classes:
        c.error("dataset", c.field("workload.dataset.class_names"),
                f"{len(ds.class_names)} class names but num_classes is {ds.num_classes}; make them agree")
    registry.part(ds.layout, "checks").check(c, root)


def subfolder(c: Checks, root: Path, name: str, holds: str) -> Path | None:
    folder = root / name
    if not folder.is_dir():
        c.error("dataset", folder, f"folder missing; the {c.spec.workload.dataset.layout} layout keeps "
                                   f"{holds} in {name}/ (see docs/formats.md)")
        return None
    return folder


def ignored_files(c: Checks, folder: Path, kept: Sequence[Path], what: str, exts: Sequence[str]) -> None:
    """Files the loader will skip: a warning, because a '.TIFF' typo or a zip left there loses data."""
    kept_set = set(kept)
    ignored = sorted(p.name for p in folder.iterdir()
                     if p.is_file() and not p.name.startswith(".") and p not in kept_set)
    if ignored:
        c.warn("dataset", folder, f"{plural(len(ignored), 'file')} ignored, not {what} "
                                  f"({', '.join(exts)}): {listed(ignored)}")


def check_same_size(c: Checks, image: Read, label: Read, kind: str) -> None:
    if image.hw is None or label.hw is None or image.hw == label.hw:
        return
    c.error("dataset", label.path, f"{kind} is {label.hw[0]}x{label.hw[1]} (HxW) but its image "
                                   f"{image.path.name} is {image.hw[0]}x{image.hw[1]}; they must match pixel "
                                   f"for pixel")


# --- shared by the workloads' label checks


def summarise_labels(path: Path) -> Read:
    try:
        arr = read_image(path)
    except ImageReadError as exc:
        return Read(path, error=read_error(exc, path))
    if arr.ndim != 2:
        return Read(path, error=f"label map has shape {tuple(arr.shape)}; expected one band (H, W) of codes")
    extra = {"integral": bool(np.issubdtype(arr.dtype, np.integer) or np.all(np.mod(arr, 1) == 0))}
    return Read(path, hw=(int(arr.shape[0]), int(arr.shape[1])), channels=1, levels=np.unique(arr), extra=extra)


def check_codes(c: Checks, r: Read, low: int, high: int, meaning: str) -> None:
    """Label values outside [low, high] index past the classes and crash (or silently skew) the loss."""
    if r.error is not None or r.levels is None:
        return
    if not r.extra.get("integral", True):
        c.error("dataset", r.path, "label map holds fractional values; labels must be whole class codes")
        return
    bad = r.levels[(r.levels < low) | (r.levels > high)]
    if len(bad):
        c.error("dataset", r.path, f"label values {show_values(bad)} are outside {low}..{high} ({meaning})")


# --------------------------------------------------------------------------------------------- split


def _check_split(c: Checks) -> None:
    """Make the split exactly as submit will (same code, same seed), so what submit or the node would
    refuse (more folds than items, a fold with an empty side, a seed out of range) is found now. Only
    when the dataset itself passed: its problems are reported above and would only repeat here."""
    from hpcseg.errors import HpcsegError
    from hpcseg.layouts import index_dataset
    from hpcseg.splits import SEED_MAX, make_splits

    seed = c.spec.workload.seed
    if not 0 <= seed <= SEED_MAX:
        c.error("split", c.field("workload.seed"), f"{seed} is out of range; use a whole number from 0 to {SEED_MAX}")
        return
    if c.result.errors:
        return
    try:
        stratified = c.spec.workload.split.method == "stratified"  # labels are read only when they matter
        splits = make_splits(c.spec, index_dataset(c.spec, strata=stratified))
    except HpcsegError as exc:
        c.error("split", c.field("workload.split"), exc.message.removeprefix("split: "))
        return
    # A stratified split that cannot be made falls back to random by design (splits.json records why);
    # the checked line says so rather than warning on every small dataset.
    c.count("split", f"{len(splits['folds'])} fold(s), {splits['method_used']}")


# --------------------------------------------------------------------------------------------- container


def _check_container(c: Checks) -> None:
    ct = c.spec.container
    c.count("container", ct.runtime)
    if ct.runtime == "none":
        return
    image = Path(ct.image or "")
    if (why := path_problem(image)) is not None:
        c.error("container", image, f"container.image: {why}")
    elif not image.exists():
        c.error("container", image, "container image not found; build it as docs/containers.md describes, "
                                    "or copy it there; without a container: --set container.runtime=none")
    elif image.is_file() and image.stat().st_size == 0:
        c.error("container", image, "container image is empty (0 bytes); rebuild it (docs/containers.md)")
    exe = get_runtime(ct.runtime).executable or ct.runtime
    if shutil.which(exe) is None:
        other = {"singularity": "apptainer", "apptainer": "singularity"}.get(ct.runtime)
        hint = (f" ({other} is on PATH: --set container.runtime={other})" if other and shutil.which(other) else
                f" (`module load {ct.runtime}` may provide it)")
        c.error("container", c.field("container.runtime"),
                f"{exe} not found on PATH{hint}; login nodes sometimes lack it while compute nodes "
                f"have it; for CPU/local runs use --set container.runtime=none")
    for b in ct.binds:
        if (why := path_problem(Path(b.src))) is not None:
            c.error("container", b.src, f"bind source: {why}")
        elif not Path(b.src).exists():
            c.warn("container", b.src, "bind source does not exist here; the container will fail to start "
                                       "unless it exists on the compute nodes")


# --------------------------------------------------------------------------------------------- weights


def _weights_module(arch: str) -> str | None:
    """The module that maps and checks pretrained files for ``arch`` (a workload's, via the registry)."""
    from hpcseg.archs import CATALOGUE

    entry = CATALOGUE.get(arch)
    return entry.weights if entry is not None else None


def _known_archs() -> set[str]:
    from hpcseg.archs import CATALOGUE

    return set(CATALOGUE)


def _check_weights(c: Checks) -> None:
    named = 0
    for m in c.spec.workload.models:
        if m.weights is None:
            continue
        named += 1
        path = Path(m.weights)
        fix = (f"compute nodes have no internet: copy it to this path first, or train {m.name} from "
               f"scratch with --set workload.models.{m.name}.weights=null")
        if (why := path_problem(path)) is not None:
            c.error("weights", path, f"weights of model {m.name}: {why}")
        elif not path.exists():
            c.error("weights", path, f"weights of model {m.name} not found; {fix}")
        elif not path.is_file():
            c.error("weights", path, f"weights of model {m.name} is a folder, not a file; {fix}")
        elif path.stat().st_size == 0:
            c.error("weights", path, f"weights of model {m.name} is empty (0 bytes); {fix}")
        elif m.arch in _known_archs():  # keys and shapes must fit (imports torch, only here)
            loader = _weights_module(m.arch) or "hpcseg.train.weightfile"
            why = importlib.import_module(loader).refuse_reason(c.spec, m)
            if why:  # the loaders' messages open with the file, which the problem already names
                c.error("weights", path, why.removeprefix(f"{path}: "))
    c.count("weights", named)


# --------------------------------------------------------------------------------------------- resources


def _check_resources(c: Checks) -> None:
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


# --------------------------------------------------------------------------------------------- the job itself


def _check_models(c: Checks) -> None:
    """What the model builder would refuse on the node: unknown arch, unknown options, image sizes."""
    from hpcseg.archs import model_problems

    for m in c.spec.workload.models:
        for where, message in model_problems(c.spec, m):
            c.error("model", c.field(where), message)


def _check_metric(c: Checks) -> None:
    """``collection.metric`` picks the best epoch and compares runs; a name the history lacks would leave
    collect with nothing to compare after the whole run."""
    from hpcseg.columns import columns

    col = c.spec.collection
    have = columns(c.spec.workload.task)[1:-2]  # what the trainer accepts: the losses and the val_ metrics
    if col.metric not in have:
        close = difflib.get_close_matches(col.metric, have, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        c.error("collection", c.field("collection.metric"),
                f"{col.metric!r} is not a history.csv column of a {c.spec.workload.task} task ({hint}columns: "
                f"{', '.join(have)})")
    elif col.metric.endswith("loss") and col.mode == "max":
        c.warn("collection", c.field("collection.mode"), f"{col.metric} is a loss but mode is max; the worst "
                                                         f"epoch would count as best (set mode: min)")


def _check_finite(c: Checks) -> None:
    """NaN or infinity anywhere in the job (YAML's .nan and .inf; model options included) trains nothing
    useful, or diverges after the queue wait; every such number is named."""
    def walk(value: Any, path: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            c.error("job", c.field(path), f"{value} is not a finite number; give a real value")
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(value, list | tuple):
            names = [m.name for m in c.spec.workload.models] if path == "workload.models" else None
            for i, v in enumerate(value):  # models by name, as --set names them
                walk(v, f"{path}.{names[i] if names else i}")

    walk(c.spec.model_dump(exclude={"profiles"}), "")


def _check_paths(c: Checks, runs_dir: Path | None) -> None:
    """Folder names made from the job (its name, model names, a new --runs-dir) must fit the file system
    the run folder goes to; a too-long one fails at mkdir, after the scheduler may have been asked."""
    from hpcseg.runs import runs_root

    root = Path(runs_dir) if runs_dir is not None else runs_root()
    existing = root
    while not os.path.exists(existing) and existing != existing.parent:
        existing = existing.parent
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
        path_max = os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError):  # not a folder (reported by submit), or a file system without limits
        return
    # (where to fix it, the folder name): new folders of the runs path, the job's folder, model folders
    parts = [(f"{root} (--runs-dir or HPCSEG_RUNS)", p) for p in root.relative_to(existing).parts]
    parts.append((c.field("name"), c.spec.slug))
    parts += [(c.field(f"workload.models.{m.name}"), m.name) for m in c.spec.workload.models]
    for where, part in parts:
        size = len(os.fsencode(part))
        if size > name_max:
            shown = part if len(part) <= 40 else f"{part[:37]}..."
            c.error("paths", where, f"the folder name {shown!r} is {size} bytes; the file system of {existing} "
                                    f"allows {name_max}; shorten it")
    longest = max((m.name for m in c.spec.workload.models), key=len)
    deepest = root / c.spec.slug / "20000101-000000-abcd" / "tasks" / longest / "fold_99" / \
        ".checkpoint_last.pt.xxxxxxxx.tmp"
    if len(os.fsencode(str(deepest))) > path_max:
        c.error("paths", str(root), f"run paths would be {len(os.fsencode(str(deepest)))} bytes long, more than "
                                    f"the {path_max} the file system allows; use a shorter runs folder")


# --------------------------------------------------------------------------------------------- entry points


def preflight(spec: JobSpec, job_file: Path | None = None, runs_dir: Path | None = None) -> PreflightResult:
    """All checks, in a fixed order (dataset, split, container, weights, resources, job), with what was
    checked. ``runs_dir``: where the run folder will go (default: $HPCSEG_RUNS or ./runs)."""
    c = Checks(spec, job_file)
    _check_dataset(c)
    _check_split(c)
    _check_container(c)
    _check_weights(c)
    _check_resources(c)
    _check_models(c)
    _check_metric(c)
    _check_finite(c)
    _check_paths(c, runs_dir)
    return c.result


def run_preflight(spec: JobSpec, job_file: Path | None = None, runs_dir: Path | None = None) -> list[Problem]:
    """Every problem with the job's inputs; ``spec`` should have absolute paths (with_absolute_paths)."""
    return preflight(spec, job_file, runs_dir).problems


def summary_line(result: PreflightResult) -> str:
    if not result.problems:
        return "all checks passed"
    n, e, w = len(result.problems), len(result.errors), len(result.warnings)
    return f"{plural(n, 'problem')}: {plural(e, 'error')}, {plural(w, 'warning')}"


def _checked_line(checked: dict[str, Any]) -> str:
    parts = [f"{k} {v}" for k, v in checked.items() if k not in ("dataset", "training_samples")]
    return "checked: " + ", ".join(parts)


def cli_check(args: argparse.Namespace) -> int:
    """``hpcseg check``: print every problem, one line each; exit 2 on any error, 0 on warnings alone."""
    from hpcseg.jobload import load_from_args

    loaded = load_from_args(args)
    runs_dir = getattr(args, "runs_dir", None)
    result = preflight(loaded.spec, loaded.path, Path(runs_dir).expanduser().resolve() if runs_dir else None)
    # What submit refuses on a #SBATCH/#PBS line (a bad owned extra, a value that cannot go there).
    from hpcseg.schedulers import directive_problems

    for where, what in directive_problems(loaded.spec):
        result.problems.append(Problem("directives", f"{loaded.path}: {where}", what))
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
