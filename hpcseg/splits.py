"""Train/validation splits, made once per run and persisted in ``splits.json``.

Every task of a run, and every resume of a task, must see the same split, or folds leak into each other
and a requeued task silently trains on different data. So the split is computed from the dataset index
and the seed, written once (atomically: concurrent first tasks never both write), and read back after.
Torch-free: submit writes it on the login node before any task starts.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from hpcseg.errors import HpcsegError
from hpcseg.layouts import DatasetIndex, index_dataset
from hpcseg.spec import JobSpec

SPLITS = "splits.json"
FORMAT = 1
SEED_MAX = 2**32 - 1  # numpy's and scikit-learn's random_state range; the trainer's streams use it too


def _settings(spec: JobSpec) -> dict[str, Any]:
    s = spec.workload.split
    return {"method": s.method, "val_fraction": s.val_fraction, "folds": s.folds,
            "density_bins": s.density_bins, "seed": spec.workload.seed}


def make_splits(spec: JobSpec, index: DatasetIndex) -> dict[str, Any]:
    """Folds of {"train": [names], "val": [names]}, seeded by ``workload.seed``.

    folds == 1: one hold-out of ``val_fraction``; folds > 1: k-fold. ``stratified`` balances
    ``index.strata`` when every stratum is big enough, and otherwise falls back to random with the
    reason recorded; ``index.groups`` (e.g. images of one lesion) never straddle train and validation.
    """
    split, seed = spec.workload.split, spec.workload.seed
    if not 0 <= seed <= SEED_MAX:
        raise HpcsegError(f"workload.seed {seed} is out of range; use a whole number from 0 to {SEED_MAX}")
    n, names = len(index), np.array(index.names)
    positions = np.arange(n)
    strata, groups = index.strata, index.groups
    method, reason = split.method, None
    if method == "stratified":
        reason = _why_not_stratified(strata, split.folds, split.val_fraction, n)
        if reason:
            method = "random"
    y = strata if method == "stratified" else None
    n_groups = len(set(groups.tolist())) if groups is not None else n
    if split.folds > n_groups:
        what = "groups (e.g. lesions)" if groups is not None else "items"
        raise HpcsegError(f"split: workload.split.folds is {split.folds} but the dataset has only {n_groups} "
                          f"{what}; lower folds to at most {n_groups}, or add data")

    try:
        pairs = _pairs(split, seed, positions, y, groups)
    except ValueError as exc:  # scikit-learn's refusal of a split it cannot make (too few items or groups)
        raise HpcsegError(f"split: cannot make {_what(split)} of {n} item(s): {exc}; lower "
                          f"workload.split.folds or val_fraction, or add data") from None
    for k, (tr, va) in enumerate(pairs):
        if len(tr) == 0 or len(va) == 0:
            side = "training" if len(tr) == 0 else "validation"
            raise HpcsegError(f"split: {_what(split)} of {n} item(s) leaves fold {k} without {side} items; "
                              f"lower workload.split.folds or change val_fraction, or add data")

    folds = []
    for tr, va in pairs:
        tr, va = np.sort(tr), np.sort(va)
        fold: dict[str, Any] = {"train": names[tr].tolist(), "val": names[va].tolist()}
        if strata is not None:
            fold["strata"] = {"train": _counts(strata[tr]), "val": _counts(strata[va])}
        folds.append(fold)
    return {
        "format": FORMAT,
        "settings": _settings(spec),
        "method_used": method,
        "fallback_reason": reason,
        "strata": index.strata_note or None,
        "grouped": groups is not None,
        "n_items": n,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "folds": folds,
    }


def _what(split: Any) -> str:
    return f"{split.folds} folds" if split.folds > 1 else f"a hold-out of val_fraction {split.val_fraction}"


def _pairs(split: Any, seed: int, positions: np.ndarray, y: np.ndarray | None,
           groups: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, val) positions per fold from scikit-learn; its ValueError means the split is impossible."""
    from sklearn.model_selection import (
        GroupKFold,
        GroupShuffleSplit,
        KFold,
        StratifiedGroupKFold,
        StratifiedKFold,
        train_test_split,
    )

    pairs: list[tuple[np.ndarray, np.ndarray]]
    if split.folds == 1:
        if groups is not None and y is not None:
            # m of k stratified group chunks, m/k nearest val_fraction (k <= 20, and no more chunks than
            # the largest class has items, which sklearn refuses): 3 of 20 give 15 % where one chunk of
            # k = round(1 / val_fraction) = 7 gave 14.3 %.
            f = split.val_fraction
            n_groups = len(set(groups.tolist()))
            k_max = max(2, min(20, n_groups, max(Counter(y.tolist()).values())))
            k, m = min(((k, min(k - 1, max(1, round(f * k)))) for k in range(2, k_max + 1)),
                       key=lambda km: (abs(km[1] / km[0] - f), -km[0]))
            cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            va = np.concatenate([v for _, v in cv.split(positions, y, groups)][:m])
            pairs = [(np.setdiff1d(positions, va), va)]
        elif groups is not None:
            pairs = [next(GroupShuffleSplit(1, test_size=split.val_fraction, random_state=seed)
                          .split(positions, groups=groups))]
        else:
            tr, va = train_test_split(positions, test_size=split.val_fraction, random_state=seed, stratify=y)
            pairs = [(np.sort(tr), np.sort(va))]
    else:
        if groups is not None:
            cv = (StratifiedGroupKFold(split.folds, shuffle=True, random_state=seed) if y is not None
                  else GroupKFold(split.folds, shuffle=True, random_state=seed))
            pairs = list(cv.split(positions, y, groups))
        else:
            cv = (StratifiedKFold(split.folds, shuffle=True, random_state=seed) if y is not None
                  else KFold(split.folds, shuffle=True, random_state=seed))
            pairs = list(cv.split(positions, y))
    return pairs


def _counts(values: np.ndarray) -> dict[str, int]:
    return {str(k): int(v) for k, v in sorted(Counter(values.tolist()).items())}


def _why_not_stratified(strata: np.ndarray | None, folds: int, val_fraction: float, n: int) -> str | None:
    if strata is None:
        return "this layout has no strata"
    counts = Counter(strata.tolist())
    if len(counts) < 2:
        return "all items fall in one stratum"
    smallest = min(counts.values())
    need = max(2, folds)
    if smallest < need:
        return f"the smallest stratum has {smallest} item(s), fewer than {need}"
    if folds == 1:
        n_val = int(np.ceil(val_fraction * n))
        if n_val < len(counts) or n - n_val < len(counts):
            return f"{n_val} validation items cannot hold all {len(counts)} strata"
    return None


def ensure_splits(run_dir: str | Path, spec: JobSpec, *, names: list[str] | None = None) -> dict[str, Any]:
    """``run_dir/splits.json``: read it if it exists (checking it still fits the dataset), else make
    and write it exactly once, even when several tasks start at the same moment.

    ``names``: the dataset's item names when the caller already has them (saves re-listing the dataset).
    """
    path = Path(run_dir) / SPLITS
    if path.exists():
        splits = read_splits(path)
        _check(splits, spec, names if names is not None else index_dataset(spec, strata=False).names, path)
        return splits
    splits = make_splits(spec, index_dataset(spec))
    if names is not None:
        _check(splits, spec, names, path)
    return _write_once(path, splits)


def read_splits(path: Path) -> dict[str, Any]:
    for attempt in range(50):
        try:
            with open(path, encoding="utf-8") as fh:
                return json.load(fh)
        except json.JSONDecodeError:
            # Only the no-hard-link fallback can expose a file being written; wait for the writer.
            if attempt == 49:
                raise HpcsegError(f"{path}: unreadable splits file; delete it to make a new split") from None
            time.sleep(0.1)
    raise AssertionError("unreachable")


def _write_once(path: Path, splits: dict[str, Any]) -> dict[str, Any]:
    """Publish a complete file with link(2), which fails if the name exists: exactly one writer wins,
    and everyone returns the winner's content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    splits = {**splits, "written_by": f"{socket.gethostname()}:{os.getpid()}"}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(splits, fh, indent=1)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return read_splits(path)
        except OSError:
            # File systems without hard links: O_EXCL claims the name; readers retry on partial JSON.
            try:
                out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return read_splits(path)
            with os.fdopen(out, "w", encoding="utf-8") as fh:
                fh.write(Path(tmp).read_text(encoding="utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
    finally:
        Path(tmp).unlink(missing_ok=True)
    return splits


def _check(splits: dict[str, Any], spec: JobSpec, names: list[str], path: Path) -> None:
    """The persisted split must belong to this spec and this dataset, or results would be mislabelled."""
    want = _settings(spec)
    have = splits.get("settings", {})
    differ = [f"{k}: file {have.get(k)!r}, job {v!r}" for k, v in want.items()
              if k != "density_bins" and have.get(k) != v]
    if differ:
        raise HpcsegError(f"{path} was made with other split settings; delete it or use a new folder",
                          problems=differ)
    known = set(names)
    gone = sorted({n for f in splits["folds"] for n in f["train"] + f["val"]} - known)
    if gone:
        raise HpcsegError(f"{path}: the dataset changed since the split was made: {len(gone)} item(s) are "
                          f"gone ({', '.join(gone[:5])}{', ...' if len(gone) > 5 else ''}); "
                          f"restore them or start a new run")


def fold_indices(splits: dict[str, Any], fold: int, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation positions (into ``names``) of one fold."""
    folds = splits["folds"]
    if not 0 <= fold < len(folds):
        raise HpcsegError(f"fold {fold} does not exist; the split has {len(folds)} fold(s) (0..{len(folds) - 1})")
    pos = {n: i for i, n in enumerate(names)}
    tr = np.array([pos[n] for n in folds[fold]["train"]], dtype=np.int64)
    va = np.array([pos[n] for n in folds[fold]["val"]], dtype=np.int64)
    return tr, va
