"""Robust, fast readers for the files training leaves behind.

``collect`` must work on whatever is on disk: a history whose last line was cut when the scheduler killed
the task, a task that never started, a Keras ``CSVLogger`` file from before hpcseg, or an earlier
``training_summary.csv`` (ours or the hand-written seed format). Every reader here returns what it could
read plus human-readable warnings, and never raises on malformed content (only on a missing file), so
one bad task cannot stop the other 999 from being collected.

Histories are parsed with one ``str.split`` and one numpy conversion per file (no per-row Python
objects on the fast path), because a 1000-task cross-validation run must collect in well under a second.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Task statuses, decided from the task's files alone (exit_code, result.json, history.csv).
COMPLETED = "completed"
INTERRUPTED = "interrupted"
DIVERGED = "diverged"
FAILED = "failed"
RUNNING = "running"
PENDING = "pending"
# Outcomes of training that ran to its own end: they count in cross-validation and as baselines.
RESULT_STATUSES = (COMPLETED, DIVERGED)

EXIT_CODE_STATUS = {0: COMPLETED, 75: INTERRUPTED, 4: DIVERGED}


@dataclass
class History:
    """One training history: named float columns, one row per epoch (epochs count from 1)."""

    path: Path
    columns: list[str]
    data: np.ndarray  # shape (epochs, len(columns)), float64; NaN where a cell was empty or unreadable
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def column(self, name: str) -> np.ndarray | None:
        """The column as a 1-D float array, or None when the history has no such column."""
        try:
            return self.data[:, self.columns.index(name)]
        except ValueError:
            return None

    @property
    def epochs(self) -> np.ndarray:
        col = self.column("epoch")
        return col if col is not None else np.arange(1, len(self) + 1, dtype=np.float64)


# --------------------------------------------------------------------------------------------- parsing


def _parse_table(text: str, where: str) -> tuple[list[str], np.ndarray, list[str]]:
    """Header and float matrix of a comma-separated text; a cut last line is dropped with a warning."""
    warnings: list[str] = []
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    header = [h.strip() for h in lines[0].split(",")] if lines and lines[0].strip() else []
    if not header:
        # An empty file is a task that has just opened its history: not worth a warning.
        return [], np.empty((0, 0)), ([] if not text.strip() else [f"{where}: no header"])
    if len(lines) == 1:  # header without its newline: killed while writing the header
        return header, np.empty((0, len(header))), [f"{where}: header only, no epochs yet"]
    body = lines[1:-1]
    tail = lines[-1]
    if tail.strip():
        # No newline at the end: the writer was killed mid-line. The row may look complete but hold a
        # cut number (0.65 for 0.6512), so it is never trusted.
        warnings.append(f"{where}: last line cut off (no newline at the end; the task was killed "
                        f"while writing it): ignored, read the {len([b for b in body if b.strip()])} "
                        f"complete row(s) before it")
    body = [b for b in body if b.strip()]
    ncols = len(header)
    if not body:
        return header, np.empty((0, ncols)), warnings
    commas = ncols - 1
    if all(b.count(",") == commas for b in body):
        try:
            flat = np.array(",".join(body).split(","), dtype=np.float64)
            return header, flat.reshape(len(body), ncols), warnings
        except ValueError:
            pass  # an empty or non-numeric cell somewhere: fall back to the careful path
    rows: list[list[float]] = []
    for i, line in enumerate(body, start=2):
        cells = line.split(",")
        if len(cells) != ncols:
            warnings.append(f"{where}:{i}: {len(cells)} field(s) where the header has {ncols}: row ignored")
            continue
        rows.append([_to_float(c) for c in cells])
    data = np.array(rows, dtype=np.float64) if rows else np.empty((0, ncols))
    return header, data, warnings


def _to_float(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return math.nan


def read_history(path: str | Path, label: str | None = None) -> History:
    """Our ``history.csv`` (docs/formats.md). Raises FileNotFoundError only; everything else is a warning.

    ``label`` names the file in warnings (e.g. a path relative to the run folder) so messages stay short.
    """
    path = Path(path)
    where = label or str(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except IsADirectoryError:
        return History(path, [], np.empty((0, 0)), [f"{where}: is a folder, not a history"])
    columns, data, warnings = _parse_table(text, where)
    return History(path, columns, data, warnings)


# --------------------------------------------------------------------------------------------- metric names

# Keras / segmentation-models spellings of the metrics we log, mapped to our names (docs/formats.md).
_METRIC_ALIASES = {
    "jacard_coef": "jaccard", "jaccard_coef": "jaccard", "jacard": "jaccard", "jaccard": "jaccard",
    "iou": "jaccard", "iou_score": "jaccard", "jaccard_index": "jaccard",
    "dice_coef": "dice", "dice": "dice", "dice_coefficient": "dice", "f1_score": "dice",
    "accuracy": "accuracy", "acc": "accuracy", "binary_accuracy": "accuracy",
    "precision": "precision", "recall": "recall", "loss": "loss",
}


def canonical_metric(name: str) -> str:
    """``val_jacard_coef`` → ``val_jaccard``, ``jacard_coef`` → ``train_jaccard``, ``loss`` → ``train_loss``.

    Our histories hold only validation metrics plus the training loss; a Keras file's un-prefixed
    columns are training-set values, so they get a ``train_`` prefix and never shadow ours.
    """
    n = name.strip().lower()
    if n in ("lr", "learning_rate"):
        return "lr"
    if n == "epoch":
        return "epoch"
    for prefix in ("val_", "train_"):
        if n.startswith(prefix):
            base = n[len(prefix):]
            return prefix + _METRIC_ALIASES.get(base, base)
    return "train_" + _METRIC_ALIASES.get(n, n)


def read_keras_history(path: str | Path, label: str | None = None) -> History:
    """A Keras ``CSVLogger`` file: columns renamed to ours and epochs shifted to count from 1."""
    h = read_history(path, label)
    if not h.columns:
        return h
    h.columns = [canonical_metric(c) for c in h.columns]
    if "epoch" in h.columns and len(h):
        h.data[:, h.columns.index("epoch")] += 1.0  # CSVLogger counts from 0, we count from 1
    return h


def keras_model_name(path: Path) -> str:
    """``attention_unet_history.csv`` → ``attention_unet`` (also ``history_unet.csv`` and ``unet.csv``)."""
    stem = path.stem
    for affix in ("_training_history", "_history", "-history", "_log", "_training"):
        if stem.lower().endswith(affix):
            return stem[: -len(affix)]
    for affix in ("history_", "history-"):
        if stem.lower().startswith(affix):
            return stem[len(affix):]
    return stem


# --------------------------------------------------------------------------------------------- summaries

_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf", re.IGNORECASE)
_DURATION_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0, "d": 86400.0}


def parse_number(text: str | None) -> float | None:
    """The first number in a cell (``0.0 (collapsed)`` → 0.0); None when there is none."""
    if text is None:
        return None
    m = _NUMBER_RE.search(text)
    return float(m.group(0)) if m else None


def parse_duration(text: str | None) -> float | None:
    """Seconds from ``2.3h``, ``12m``, ``45s`` or a bare number of seconds."""
    if text is None or not text.strip():
        return None
    m = re.fullmatch(r"\s*([-+]?\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*", text)
    if not m:
        return None
    unit = m.group(2).lower()
    if unit and unit not in _DURATION_UNITS:
        return None
    return float(m.group(1)) * _DURATION_UNITS.get(unit, 1.0)


@dataclass
class SummaryRow:
    """One row of a ``training_summary.csv``, ours or the seed's, in our names."""

    model: str
    fold: int
    status: str
    best_epoch: int | None
    best: float | None
    final: float | None
    train_time_s: float | None
    flags: list[str] | None  # None: the file has no flags column (the seed format)


def read_summary(path: str | Path, metric: str) -> tuple[list[SummaryRow], list[str]]:
    """Rows of a ``training_summary.csv`` for ``metric`` (e.g. ``val_jaccard``), plus warnings.

    Accepts our columns (``best_val_jaccard``) and the seed's spelling (``best_val_jacard``); a file
    without the metric's columns gives no rows and a warning naming the columns it does have.
    """
    path = Path(path)
    warnings: list[str] = []
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            return [], [f"{path}: empty file"]
        records = list(reader)
    names = {}
    for i, col in enumerate(header):
        c = col.strip().lower()
        for kind in ("best_", "final_"):
            if c.startswith(kind) and c != "best_epoch":
                c = kind + canonical_metric(c[len(kind):])
        names[c] = i
    want = canonical_metric(metric)
    best_i, final_i = names.get(f"best_{want}"), names.get(f"final_{want}")
    if "model" not in names or best_i is None:
        return [], [f"{path}: no model and best_{metric} columns (has: {', '.join(header)})"]

    def cell(rec: list[str], key: str | int | None) -> str | None:
        idx = names.get(key) if isinstance(key, str) else key
        return rec[idx].strip() if idx is not None and idx < len(rec) else None

    rows = []
    for n, rec in enumerate(records, start=2):
        if not rec or not any(x.strip() for x in rec):
            continue
        model = cell(rec, "model")
        if not model:
            warnings.append(f"{path}:{n}: no model name: row ignored")
            continue
        fold = parse_number(cell(rec, "fold"))
        epoch = parse_number(cell(rec, "best_epoch"))
        flags_cell = cell(rec, "flags")
        flags = None if "flags" not in names else [f for f in re.split(r"[;,\s]+", flags_cell or "") if f]
        time_s = parse_number(cell(rec, "train_time_s"))
        if time_s is None:
            t = cell(rec, "train_time")
            time_s = parse_duration(t)
        rows.append(SummaryRow(
            model=model,
            fold=int(fold) if fold is not None and math.isfinite(fold) else 0,
            status=(cell(rec, "status") or COMPLETED).lower(),
            best_epoch=int(epoch) if epoch is not None and math.isfinite(epoch) else None,
            best=parse_number(cell(rec, best_i)),
            final=parse_number(cell(rec, final_i)),
            train_time_s=time_s,
            flags=flags,
        ))
    return rows, warnings


# --------------------------------------------------------------------------------------------- task status


def _read_exit_code(path: Path) -> int | None | str:
    """The integer in an ``exit_code`` file; None when absent; the raw text when it is not an integer."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        return None
    try:
        return int(text)
    except ValueError:
        return text


def _last_log_line(path: Path, limit: int = 4096) -> str | None:
    """Last non-empty line of ``train.log`` (where a failed trainer leaves its reason), read from the end."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            tail = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else None


def _newer(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_mtime_ns > b.stat().st_mtime_ns
    except OSError:
        return False


def _status_from_reason(reason: str) -> str:
    r = reason.lower()
    if "diverg" in r or "nan" in r.split():
        return DIVERGED
    if any(w in r for w in ("interrupt", "signal", "deadline", "preempt", "walltime", "requeue")):
        return INTERRUPTED
    if any(w in r for w in ("fail", "error", "exception", "bad input")):
        return FAILED
    return COMPLETED  # completed, finished, early_stopping, max_epochs, ...


def read_task_status(task_dir: Path, has_history: bool | None = None) -> tuple[str, str | None, int | None]:
    """(status, reason, exit code) of a task from its files alone, so collect needs no scheduler.

    exit_code decides when present (0 completed, 75 interrupted, 4 diverged, anything else failed);
    without it, result.json's exit_code or reason (a trainer run by hand, outside a job script) unless
    history.csv is newer (a requeued attempt at work); then a history means the task is still running;
    nothing at all means it has not started.
    """
    code = _read_exit_code(task_dir / "exit_code")
    reason: str | None = None
    result_code: int | None = None
    try:
        result = json.loads((task_dir / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        result = None
    if isinstance(result, dict):
        # The trainer writes a short reason ("failed", "early_stopped") and the detail in "message".
        parts = [str(result[k]) for k in ("reason", "message") if result.get(k) not in (None, "")]
        reason = ": ".join(dict.fromkeys(parts)) or None
        rc = result.get("exit_code")
        result_code = rc if isinstance(rc, int) and not isinstance(rc, bool) else None
    if code is None and result is not None and _newer(task_dir / "history.csv", task_dir / "result.json"):
        # The job script removes exit_code when a requeued attempt starts, but result.json stays from the
        # attempt before: epochs written after it mean the task is running again.
        result_code, reason, result = None, None, None
    if code is None and result_code is not None:
        code = result_code  # a trainer run by hand: no job script wrote exit_code
    if isinstance(code, int):
        status = EXIT_CODE_STATUS.get(code, FAILED)
        if status == FAILED and reason is None:
            reason = _last_log_line(task_dir / "train.log") or f"exit code {code}"
        return status, reason, code
    if isinstance(code, str):
        return FAILED, reason or f"unreadable exit_code file ({code[:40]!r})", None
    if reason is not None:
        return _status_from_reason(reason), reason, None
    if has_history is None:
        has_history = (task_dir / "history.csv").is_file()
    return (RUNNING if has_history else PENDING), None, None


def task_finished(task_dir: Path) -> bool:
    """True when the task ended with a training result (completed or diverged); reads two small files."""
    return read_task_status(task_dir, has_history=False)[0] in RESULT_STATUSES
