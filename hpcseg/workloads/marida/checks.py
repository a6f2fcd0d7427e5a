"""Preflight of the MARIDA layout: every tile has its _cl.tif label, bands and class codes as the job says."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from hpcseg.errors import HpcsegError
from hpcseg.images import ImageReadError, read_image
from hpcseg.preflight import (
    Checks,
    Read,
    check_codes,
    check_expected_count,
    check_pairs,
    check_same_size,
    listed,
    plural,
    read_all,
    read_error,
    report_read_errors,
    subfolder,
    summarise_labels,
    train_fraction,
)
from hpcseg.workloads.marida.layout import SPLIT_FILES, confidence_option, read_split_file, split_folder

MARIDA_MAX_CODE = 15  # MARIDA v1: 0 unlabelled, 1 marine debris, ..., 15 mixed water
MARIDA_DEBRIS = 1
# What the loader (layout.py) picks up; anything else is skipped there, so it is flagged here.
MARIDA_SUFFIX = ".tif"


def _marida_summariser(bands: int) -> Callable[[Path], Read]:
    def summarise(path: Path) -> Read:
        try:
            arr = read_image(path)
        except ImageReadError as exc:
            return Read(path, error=read_error(exc, path))
        if arr.ndim == 3 and arr.shape[-1] == bands:
            return Read(path, hw=(int(arr.shape[0]), int(arr.shape[1])), channels=bands)
        if arr.ndim == 3 and arr.shape[0] == bands:
            return Read(path, hw=(int(arr.shape[1]), int(arr.shape[2])), channels=bands)
        return Read(path, error=f"tile has shape {tuple(arr.shape)}: expected {bands} bands "
                                 f"(workload.dataset.channels) as (H, W, {bands}) or ({bands}, H, W)")
    return summarise


def check(c: Checks, root: Path) -> None:
    patches = subfolder(c, root, "patches", "the <id>.tif tiles and <id>_cl.tif labels")
    if patches is None:
        return
    found = sorted(p for p in patches.rglob("*") if p.is_file() and not p.name.startswith("."))
    tifs = [p for p in found if p.suffix == MARIDA_SUFFIX]
    odd = [p for p in found if p.suffix.lower() in (".tif", ".tiff") and p.suffix != MARIDA_SUFFIX]
    if odd:
        c.warn("dataset", patches, f"{plural(len(odd), 'file')} ignored, only *{MARIDA_SUFFIX} is read: "
                                   f"{listed(p.name for p in odd)}; rename them")
    labels = {_key(p, "_cl"): p for p in tifs if p.stem.endswith("_cl")}
    tiles = {_key(p, ""): p for p in tifs if not p.stem.endswith(("_cl", "_conf"))}
    c.count("images", len(tiles))
    c.count("masks", len(labels))
    if not tiles and not labels:
        c.error("dataset", patches, "no .tif tiles here or below; expected <id>.tif with <id>_cl.tif beside it")
        return
    check_expected_count(c, len(tiles), "tile", patches)
    stems = Counter(p.stem for p in tiles.values())
    repeated = sorted(s for s, n in stems.items() if n > 1)
    if repeated:
        c.error("dataset", patches, f"tile names repeat across scene folders: {listed(repeated)}; items are "
                                    f"named by file name, so names must be unique")
    pairs = check_pairs(c, tiles, labels, patches, patches, "tile", "label", "<id>_cl.tif")
    c.count("pairs", len(pairs))
    tile_reads = read_all(sorted(tiles.values()), _marida_summariser(c.spec.workload.dataset.channels))
    label_reads = read_all(sorted(labels.values()), summarise_labels)
    c.count("files_read", len(tile_reads) + len(label_reads))
    report_read_errors(c, tile_reads)
    report_read_errors(c, label_reads)
    binary = c.spec.workload.task == "binary_segmentation"
    high = MARIDA_MAX_CODE if binary else c.spec.workload.dataset.num_classes  # codes 1..K are classes 0..K-1
    meaning = "MARIDA class codes" if binary else "workload.dataset.num_classes"
    for r in label_reads:
        check_codes(c, r, 0, high, meaning)
    tile_of = {r.path: r for r in tile_reads}
    label_of = {r.path: r for r in label_reads}
    for key in pairs:
        check_same_size(c, tile_of[tiles[key]], label_of[labels[key]], "label")
    if binary and label_reads and not any(
            r.levels is not None and MARIDA_DEBRIS in r.levels for r in label_reads):
        c.warn("dataset", patches, "no label holds code 1 (marine debris): the positive class never appears")
    c.count("training_samples", int(len(pairs) * train_fraction(c.spec)))
    check_split_files(c, root, {Path(k).name for k in pairs})
    try:
        confidence = confidence_option(c.spec)
    except HpcsegError as exc:
        field, _, message = exc.message.partition(": ")
        c.error("dataset", c.field(field), message)
        return
    if confidence != "all":
        shown = confidence if isinstance(confidence, str) else "weights"
        no_conf = sorted(Path(k).name for k in pairs if not Path(f"{k}_conf.tif").is_file())
        if no_conf:
            c.error("dataset", patches, f"{plural(len(no_conf), 'tile')} without <id>_conf.tif, needed by "
                                        f"options.confidence {shown}: {listed(no_conf)}")
    if isinstance(confidence, dict) and "dice" in c.spec.training.loss.components:
        c.warn("dataset", c.field("training.loss.components"),
               "dice counts every labelled pixel once: options.confidence weights reach only ce, weighted_ce "
               "and focal")


def check_split_files(c: Checks, root: Path, tiles: set[str]) -> None:
    """MARIDA's official ``splits/{train,val,test}_X.txt``: every id names a tile, no tile sits in two lists
    (a test tile that is trained on makes the test score meaningless), and the set is complete."""
    folder = split_folder(root)
    if not folder.is_dir():
        return
    present = {part: folder / name for part, name in SPLIT_FILES.items() if (folder / name).is_file()}
    if not present:
        return
    missing = [SPLIT_FILES[p] for p in SPLIT_FILES if p not in present]
    if missing:
        c.warn("dataset", folder, f"{listed(missing)} missing: the official split is used only when all three "
                                  f"files exist; the job's own split is made instead")
    ids: dict[str, list[str]] = {}
    for part, path in present.items():
        try:
            ids[part] = read_split_file(path)
        except OSError as exc:
            c.error("dataset", path, f"cannot read: {exc.strerror or exc}")
            continue
        if not ids[part]:
            c.error("dataset", path, "lists no patch ids; one id per line, e.g. 1-12-19_48MYU_0")
        unknown = sorted(set(ids[part]) - tiles)
        if unknown:
            c.error("dataset", path, f"{plural(len(unknown), 'id')} with no tile (and _cl.tif) under patches/: "
                                     f"{listed(unknown)}; fix the list or restore the tiles")
    for a, b in (("train", "test"), ("val", "test"), ("train", "val")):
        both = sorted(set(ids.get(a, [])) & set(ids.get(b, [])))
        if both:
            c.error("dataset", present[b], f"{plural(len(both), 'id')} also in {SPLIT_FILES[a]}: {listed(both)}; "
                                           f"each tile belongs to one split")
    if len(present) == len(SPLIT_FILES) and c.spec.workload.split.folds != 1:
        c.warn("dataset", folder, f"workload.split.folds is {c.spec.workload.split.folds}: the official split is "
                                  f"one hold-out, so it is not used; set folds: 1 to use it")


def _key(path: Path, suffix: str) -> str:
    """A tile's identity: its path below patches/ without the suffix, so scenes may reuse names."""
    stem = path.stem[: len(path.stem) - len(suffix)] if suffix else path.stem
    return str(path.with_name(stem))
