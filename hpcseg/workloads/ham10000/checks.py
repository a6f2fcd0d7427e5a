"""Preflight of the HAM10000 layout: the metadata CSV, one .jpg per row, and dx values that are known classes."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from hpcseg.images import IMAGE_EXTENSIONS
from hpcseg.preflight import (
    Checks,
    check_channels,
    check_expected_count,
    listed,
    path_problem,
    plural,
    read_all,
    report_read_errors,
    summarise_image,
    train_fraction,
)

HAM_COLUMNS = ("lesion_id", "image_id", "dx")
# What the loader (layout.py) picks up; anything else is skipped there, so it is flagged here.
HAM_SUFFIX = ".jpg"
HAM_DEFAULT_METADATA = "HAM10000_metadata.csv"


def check(c: Checks, root: Path) -> None:
    ds = c.spec.workload.dataset
    meta_path = root / (ds.metadata or HAM_DEFAULT_METADATA)
    rows = _read_metadata(c, meta_path)
    candidates = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                        and not p.name.startswith("."))
    files = [p for p in candidates if p.suffix == HAM_SUFFIX]
    odd = [p for p in candidates if p.suffix != HAM_SUFFIX]
    if odd:
        c.warn("dataset", root, f"{plural(len(odd), 'image')} ignored, only *{HAM_SUFFIX} is read: "
                                f"{listed(p.relative_to(root) for p in odd)}; convert or rename them")
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
    check_expected_count(c, len(rows), "metadata row", meta_path)
    ids = [r["image_id"] for r in rows]
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
    if repeated:
        c.error("dataset", meta_path, f"image_id given more than once: {listed(repeated)}; keep one row each")
    missing = sorted({i for i in ids if i not in by_id})
    if missing and files:
        c.error("dataset", root, f"no image file for {plural(len(missing), 'image_id')} of {meta_path.name}: "
                                 f"{listed(f'{i}.jpg' for i in missing)}; copy them in, or remove their rows")
    unlisted = sorted(set(by_id) - set(ids))
    if unlisted:
        c.warn("dataset", root, f"{plural(len(unlisted), 'image')} not in {meta_path.name}, ignored: "
                                f"{listed(by_id[i][0].name for i in unlisted)}")
    doubled = sorted(i for i in set(ids) if len(by_id.get(i, [])) > 1)
    if doubled:
        c.warn("dataset", root, f"{plural(len(doubled), 'image_id')} found in more than one file, the first "
                                f"is used: {listed(by_id[i][0].relative_to(root) for i in doubled)}")
    _check_ham_classes(c, rows, meta_path)
    used = [by_id[i][0] for i in sorted(set(ids)) if i in by_id]
    _decode_ham(c, used)
    c.count("training_samples", int(len(used) * train_fraction(c.spec)))


def _read_metadata(c: Checks, path: Path) -> list[dict[str, str]] | None:
    """The metadata rows, or None (with a problem) when the table is missing or lacks a column."""
    if (why := path_problem(path)) is not None:
        c.error("dataset", path, f"workload.dataset.metadata: {why}")
        return None
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
        c.error("dataset", path, f"metadata CSV lacks column(s) {', '.join(absent)} (has: {listed(header)}); "
                                 f"it needs {', '.join(HAM_COLUMNS)}")
        return None
    if not rows:
        c.error("dataset", path, "metadata CSV has a header but no rows")
    return rows


def _check_ham_classes(c: Checks, rows: list[dict[str, str]], meta_path: Path) -> None:
    ds = c.spec.workload.dataset
    found = Counter(r["dx"] for r in rows)
    if ds.class_names is None:
        if len(found) != ds.num_classes:
            c.error("dataset", c.field("workload.dataset.num_classes"),
                    f"{meta_path.name} has {len(found)} dx values ({listed(sorted(found))}) but num_classes is "
                    f"{ds.num_classes}; set class_names to fix their order")
        return
    unknown = sorted(set(found) - set(ds.class_names))
    if unknown:
        shown = listed(f"{k} ({found[k]} rows)" for k in unknown)
        c.error("dataset", meta_path, f"dx values not in workload.dataset.class_names: {shown}; add them or "
                                      f"fix the rows")
    absent = [k for k in ds.class_names if k not in found]
    if absent and rows:
        c.warn("dataset", meta_path, f"class(es) with no rows: {listed(absent)}")


def _decode_ham(c: Checks, files: Sequence[Path]) -> None:
    reads = read_all(files, summarise_image)
    c.count("files_read", len(reads))
    report_read_errors(c, reads)
    check_channels(c, [r for r in reads if r.error is None], "image")
