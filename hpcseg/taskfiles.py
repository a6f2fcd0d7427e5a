"""The one owner of the files a task leaves behind: ``history.csv``, ``exit_code``, ``result.json``,
``events.log``, and the exit codes that give them meaning.

The trainer writes these files; status, collect, compare and the trainer's own resume read them, all
through this module, so a history is parsed one way everywhere. Everything on disk may be damaged: a
history whose last line was cut when the scheduler killed the task, cells that are empty, quoted, NaN or
1e308, epochs written twice or out of order, an ``exit_code`` that is a folder, a task folder that is a
file or a symlink loop. Readers here never raise on content: they return what they could read plus one
line per damaged file, so one bad task cannot stop the other 999 from being shown or collected.

Rows are keyed by epoch: a repeated epoch keeps its last-written row, rows are put in epoch order, and
"final" means the row of the highest epoch. Status reads only a history's last rows when it is large
(:func:`read_last_rows`), so a 1 GB file costs the same as a small one. Nothing here imports numpy at
import time (``hpcseg status`` never needs it); torch is never imported.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

# --------------------------------------------------------------------------------------------- names & codes

HISTORY, RESULT, EXIT_CODE, EVENTS, TRAIN_LOG = "history.csv", "result.json", "exit_code", "events.log", "train.log"

# Exit codes of ``hpcseg train`` (docs/formats.md); the job script writes the trainer's code to exit_code.
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_REQUEUE = 0, 1, 2, 4, 75
# ``hpcseg status`` / ``collect``: everything readable was shown, but some files were damaged (one line each).
EXIT_DAMAGED = 5
EXIT_MEANING = {EXIT_OK: "finished", EXIT_FAILED: "failed", EXIT_BAD_INPUT: "bad input", EXIT_DIVERGED: "diverged",
                EXIT_REQUEUE: "interrupted after checkpoint; hpcseg resubmit resumes it", 127: "command not found",
                137: "killed (KILL)", 143: "terminated (TERM)"}

# Task statuses, decided from the task's files alone (exit_code, result.json, history.csv).
COMPLETED = "completed"
INTERRUPTED = "interrupted"
DIVERGED = "diverged"
FAILED = "failed"
RUNNING = "running"
PENDING = "pending"
# Outcomes of training that ran to its own end: they count in cross-validation and as baselines.
RESULT_STATUSES = (COMPLETED, DIVERGED)

EXIT_CODE_STATUS = {EXIT_OK: COMPLETED, EXIT_REQUEUE: INTERRUPTED, EXIT_DIVERGED: DIVERGED}

# events.log lines that mean "this element went back to the queue": the job script's own requeue and
# submitit's; a requeue that scontrol refused is logged as failed and taken back off the count.
REQUEUE_MARKS = ("requeueing ", "submitit requeues")
REQUEUE_FAILED = "scontrol requeue failed"

TAIL_LINES = 5
# Status reads a history whole up to this size, and only its last TAIL_BYTES above it (bounded time and
# memory whatever is on disk; a real history of 1000 epochs is about 100 kB).
WHOLE_READ_MAX = 1 << 20
TAIL_BYTES = 1 << 16


def why_unreadable(exc: OSError) -> str:
    """A file that exists but cannot be read as one, in words a user can act on."""
    if isinstance(exc, IsADirectoryError):
        return "is a folder, not a file"
    if isinstance(exc, NotADirectoryError):
        return "a folder on its path is a file"
    if exc.errno == errno.ELOOP:
        return "is a symlink loop"
    if isinstance(exc, PermissionError):
        return "cannot be read (permission denied)"
    return f"cannot be read ({exc.strerror or exc})"


# --------------------------------------------------------------------------------------------- history.csv


@dataclass
class Table:
    """A history as read: float rows in epoch order (one per epoch), and what was wrong with the file.

    ``damage`` holds one line per kind of damage (cells, rows, epochs); ``notes`` what is normal on a
    cluster (a last line cut by a kill). ``partial``: only the file's last rows were read."""

    columns: list[str]
    rows: list[list[float]]
    damage: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    partial: bool = False

    def col(self, name: str) -> int | None:
        try:
            return self.columns.index(name)
        except ValueError:
            return None


def _cell(text: str) -> float | None:
    """A cell as a number: surrounding blanks and one pair of double quotes are allowed; None when empty
    or not a number. NaN and inf are numbers (a diverged loss is written as ``nan``)."""
    c = text.strip()
    if len(c) >= 2 and c[0] == c[-1] == '"':
        c = c[1:-1].strip()
    try:
        return float(c) if c else None
    except ValueError:
        return None


def _short(text: str, n: int = 24) -> str:
    return repr(text if len(text) <= n else text[:n] + "…")


def _fast_matrix(header: list[str], body: list[tuple[int, str]], np: Any) -> Any:
    """The clean case in one numpy conversion (collect reads 1000 histories): every row of the right
    width, every cell a plain number, epochs whole and increasing. None: take the careful path."""
    lines = [ln for _, ln in body if ln.strip()]
    commas = len(header) - 1
    if not lines or any(ln.count(",") != commas or '"' in ln for ln in lines):
        return None
    try:
        data = np.array(",".join(lines).split(","), dtype=np.float64).reshape(len(lines), len(header))
    except ValueError:
        return None
    if "epoch" in header:
        e = data[:, header.index("epoch")]
        if not (np.all(np.isfinite(e)) and np.all(e == np.floor(e)) and np.all(np.diff(e) > 0)):
            return None
    return data


def _rows(header: list[str], body: Iterable[tuple[int, str]], where: str, numbered: bool, np: Any = None
          ) -> tuple[list[list[float]], list[str]]:
    """Float rows in epoch order and what was damaged (one phrase per kind); the one place a history's
    body is parsed."""
    ncols = len(header)
    rows: list[list[float]] = []
    damage: list[str] = []
    if np is not None and isinstance(body, list):
        fast = _fast_matrix(header, body, np)
        if fast is not None:
            return fast, damage
    width: tuple[int, int, int] | None = None  # (count, first line, its fields)
    cells: tuple[int, int, str, str] | None = None  # (count, first line, column, text)

    def at(n: int) -> str:
        return f"line {n}: " if numbered else ""

    for n, line in body:
        if not line.strip():
            continue
        parts = line.split(",") if '"' not in line else next(csv.reader([line]))
        if len(parts) != ncols:
            width = (width[0] + 1, width[1], width[2]) if width else (1, n, len(parts))
            continue
        try:
            row = [float(c) for c in parts]
        except ValueError:
            row = []
            for j, c in enumerate(parts):
                v = _cell(c)
                if v is None:
                    cells = (cells[0] + 1, *cells[1:]) if cells else (1, n, header[j], c)
                    v = math.nan
                row.append(v)
        rows.append(row)
    if width:
        damage.append(f"{at(width[1])}{width[2]} field(s) where the header has {ncols}"
                      f"{f' (and {width[0] - 1} more such row(s))' if width[0] > 1 else ''}: row(s) ignored")
    if cells:
        damage.append(f"{at(cells[1])}{cells[2]} is {_short(cells[3])}, not a number"
                      f"{f' (and {cells[0] - 1} more such cell(s))' if cells[0] > 1 else ''}: read as missing")
    ie = header.index("epoch") if "epoch" in header else None
    if ie is None or not rows:
        return rows, damage
    epochs = [r[ie] for r in rows]
    if all(e.is_integer() for e in epochs) and all(a < b for a, b in zip(epochs, epochs[1:], strict=False)):
        return rows, damage  # the normal case: whole, increasing epochs
    by_epoch: dict[float, list[float]] = {}
    repeated: list[int] = []
    bad, disordered, top = 0, False, -math.inf
    for r in rows:
        e = r[ie]
        if not e.is_integer():
            bad += 1
            continue
        if e in by_epoch:
            repeated.append(int(e))
        elif e < top:
            disordered = True
        top = max(top, e)
        by_epoch[e] = r  # the last-written row of an epoch wins
    if bad:
        damage.append(f"{bad} row(s) whose epoch is not a whole number: ignored")
    if repeated:
        shown = ", ".join(str(e) for e in sorted(set(repeated))[:5])
        damage.append(f"epoch(s) {shown}{' ...' if len(set(repeated)) > 5 else ''} written more than "
                      f"once: the last row of each kept")
    if disordered:
        damage.append("epochs out of order: read in epoch order (final = the highest epoch)")
    return [by_epoch[e] for e in sorted(by_epoch)], damage


def parse_history(text: str, where: str, *, numbered: bool = True, np: Any = None) -> Table:
    """Header and rows of a comma-separated history text; a cut last line is dropped with a note.

    ``numbered``: line numbers in messages are the file's own (False for the tail of a large file)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    header = [h.strip().strip('"').strip() for h in lines[0].split(",")] if lines[0].strip() else []
    if not header:
        # An empty file is a task that has just opened its history: not worth a warning.
        return Table([], [], [] if not text.strip() else [f"{where}: no header line"])
    if len(lines) == 1:  # header without its newline: killed while writing the header
        return Table(header, [], notes=[f"{where}: header only, no epochs yet"])
    body, tail = lines[1:-1], lines[-1]
    notes = []
    if tail.strip():
        # No newline at the end: the writer was killed mid-line. The row may look complete but hold a
        # cut number (0.65 for 0.6512), so it is never trusted.
        notes.append(f"{where}: last line cut off (no newline at the end; the task was killed while writing "
                     f"it): ignored, read the {sum(1 for b in body if b.strip())} complete row(s) before it")
    damage = [] if "epoch" in header else [f"no epoch column in its header ({_short(lines[0], 60)})"]
    rows, d = _rows(header, list(enumerate(body, start=2)) if np is not None else enumerate(body, start=2),
                    where, numbered, np)
    damage += d
    # One damaged file, one line: what is wrong with it, part by part.
    return Table(header, rows, [f"{where}: {'; '.join(damage)}"] if damage else [], notes)


def read_last_rows(path: str | Path, where: str | None = None, *, whole_max: int = WHOLE_READ_MAX,
                   tail_bytes: int = TAIL_BYTES, np: Any = None) -> Table:
    """The history, or for a file above ``whole_max`` bytes its header and last ``tail_bytes`` only
    (``partial``): status needs the latest epochs, and must not read a 1 GB file to show them.

    Raises FileNotFoundError when there is no history; any other unreadable file is one damage line."""
    where = where or str(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size <= whole_max:
                return parse_history(fh.read().decode("utf-8", errors="replace"), where, np=np)
            head = fh.read(min(tail_bytes, size))
            if b"\n" not in head:
                return Table([], [], [f"{where}: no header line in its first {len(head)} bytes"], partial=True)
            fh.seek(size - tail_bytes)
            chunk = fh.read(tail_bytes)
    except FileNotFoundError:
        raise
    except OSError as exc:
        return Table([], [], [f"{where}: {why_unreadable(exc)}"])
    header = head.split(b"\n", 1)[0]
    chunk = chunk.split(b"\n", 1)[1] if b"\n" in chunk else b""  # the first line is cut by the seek
    t = parse_history((header + b"\n" + chunk).decode("utf-8", errors="replace"), where, numbered=False)
    t.partial = True
    return t


def read_table(path: str | Path, where: str | None = None, np: Any = None) -> Table:
    """The whole history (collect, compare, the trainer's resume). Raises FileNotFoundError only.
    ``np``: numpy, for the clean case in one conversion (rows are then a float matrix)."""
    return read_last_rows(path, where, whole_max=1 << 62, np=np)


@dataclass
class History:
    """One training history for collect and plots: named float columns, one row per epoch (from 1)."""

    path: Path
    columns: list[str]
    data: np.ndarray  # shape (epochs, len(columns)), float64; NaN where a cell was empty or unreadable
    warnings: list[str] = field(default_factory=list)  # damage and notes, for the user
    damage: list[str] = field(default_factory=list)  # the damaged part of the warnings

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
        import numpy as np

        col = self.column("epoch")
        return col if col is not None else np.arange(1, len(self) + 1, dtype=np.float64)


def read_history(path: str | Path, label: str | None = None) -> History:
    """Our ``history.csv`` (docs/formats.md) as arrays. Raises FileNotFoundError only.

    ``label`` names the file in warnings (e.g. a path relative to the run folder) so messages stay short.
    """
    import numpy as np

    path = Path(path)
    t = read_table(path, label or str(path), np)
    data = np.asarray(t.rows, dtype=np.float64).reshape(len(t.rows), len(t.columns))
    return History(path, t.columns, data, t.damage + t.notes, list(t.damage))


def history_rows(path: Path, columns: list[str]) -> list[dict[str, float]]:
    """The trainer's resume: this task's complete rows as dicts, in epoch order (an unreadable cell is NaN,
    as a diverged loss is). Raises HpcsegError when the columns are another task's."""
    from hpcseg.errors import HpcsegError

    try:
        t = read_table(path)
    except FileNotFoundError:
        return []
    if t.columns and t.columns != columns:
        raise HpcsegError(f"{path}: its columns ({','.join(t.columns)}) are not this task's ({','.join(columns)}); "
                          f"was the task folder reused for another job? move it away")
    return [dict(zip(columns, r, strict=True)) for r in t.rows]


def format_row(row: dict[str, float], columns: list[str]) -> str:
    out = []
    for c in columns:
        v = row[c]
        if c == "epoch":
            out.append(str(int(v)))
        elif c == "epoch_seconds":
            out.append(f"{v:.3f}")
        else:
            out.append(repr(float(v)))
    return ",".join(out) + "\n"


def rewrite_history(path: Path, rows: list[dict[str, float]], columns: list[str]) -> None:
    """Replace the history atomically (resume drops rows beyond the checkpoint)."""
    from hpcseg.fsutil import write_text_atomic

    write_text_atomic(path, ",".join(columns) + "\n" + "".join(format_row(r, columns) for r in rows))


def append_history(path: Path, row: dict[str, float], columns: list[str]) -> None:
    """One epoch's row, flushed to disk before the trainer goes on (status reads it from another node)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(format_row(row, columns))
        fh.flush()
        os.fsync(fh.fileno())


# --------------------------------------------------------------------------------------------- progress


@dataclass
class Progress:
    """What status shows of a history: the latest epoch, its metric, the best, the time per epoch."""

    epoch: int | None = None
    last: float | None = None
    best: float | None = None  # None when only the file's last rows were read (partial)
    mean_epoch_s: float | None = None
    total_s: float = 0.0
    partial: bool = False
    damage: list[str] = field(default_factory=list)
    median_epoch_s: float | None = None  # of the rows read: one slow epoch does not hide a stall


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _median(xs: list[float]) -> float:
    """Without ``statistics`` (its import costs status more than this sort of a few rows)."""
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else s[mid - 1] / 2 + s[mid] / 2


def progress_of(t: Table, metric: str, mode: str) -> Progress:
    out = Progress(partial=t.partial, damage=list(t.damage))
    if not t.rows:
        return out
    ie, im, isec = t.col("epoch"), t.col(metric), t.col("epoch_seconds")
    last = t.rows[-1]
    if ie is not None:
        out.epoch = int(last[ie])
    elif not t.partial:
        out.epoch = len(t.rows)
    if im is not None:
        out.last = _finite(last[im])
        vals = [r[im] for r in t.rows if math.isfinite(r[im])]
        if vals and not t.partial:
            out.best = max(vals) if mode == "max" else min(vals)
    if isec is not None:
        secs = [r[isec] for r in t.rows if math.isfinite(r[isec]) and r[isec] >= 0]
        if secs:
            total = sum(x / len(secs) for x in secs) * len(secs)  # no overflow to inf for 1e308 cells
            out.mean_epoch_s = _finite(total / len(secs))
            out.total_s = 0.0 if t.partial or not math.isfinite(total) else total
            out.median_epoch_s = _finite(_median(secs))
    return out


def read_progress(path: Path, metric: str, mode: str, where: str | None = None) -> Progress:
    """Latest epoch, last and best metric and epoch time of a history; reads only the end of a big file."""
    try:
        t = read_last_rows(path, where)
    except OSError:
        return Progress()
    return progress_of(t, metric, mode)


def tail(path: Path, n: int = TAIL_LINES) -> list[str]:
    """Last ``n`` non-empty lines of a (possibly large) log, reading only its end."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [ln.rstrip() for ln in data.splitlines() if ln.strip()][-n:]


# --------------------------------------------------------------------------------------------- exit_code, task folder


def check_task_dir(task_dir: Path) -> str | None:
    """Why a task folder cannot be one (a file, a symlink loop, unreadable); None when fine or not yet made."""
    try:
        st = os.stat(task_dir)
    except FileNotFoundError:
        return None  # not started yet (or a dangling link: nothing there either)
    except OSError as exc:
        return f"{task_dir}: {why_unreadable(exc)}"
    import stat

    if not stat.S_ISDIR(st.st_mode):
        return f"{task_dir}: is a file, not a task folder"
    return None


def exit_code_of(task_dir: Path) -> tuple[int | None, str | None]:
    """(the integer in ``exit_code``, None) ; (None, None) when absent; (None, one line) when damaged."""
    path = Path(task_dir) / EXIT_CODE
    try:
        with open(path, "rb") as fh:
            raw = fh.read(64)
    except (FileNotFoundError, NotADirectoryError):
        return None, None  # a task folder that is a file is said once, by check_task_dir
    except OSError as exc:
        return None, f"{path}: {why_unreadable(exc)}"
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        return int(text), None
    except ValueError:
        return None, f"{path}: holds {_short(text)}, not an exit code"


def read_exit_code(task_dir: Path) -> int | None:
    """The task's exit code, or None when it has none (yet) or the file is damaged."""
    return exit_code_of(task_dir)[0]


def _raw_exit_code(path: Path) -> int | None | str:
    """The integer in an ``exit_code`` file; None when absent; the raw text when it is not an integer."""
    code, problem = exit_code_of(path.parent)
    if problem is None:
        return code
    return problem.split(": ", 1)[-1]


# --------------------------------------------------------------------------------------------- events.log


def count_requeues(task_dir: Path) -> int:
    """In-job requeues of one task, from its events.log: the job script appends a line on the node for
    each requeue (it must not rewrite the shared manifest there), so this file is the source of truth."""
    try:
        with open(Path(task_dir) / EVENTS, "rb") as fh:
            text = fh.read(1 << 20).decode("utf-8", errors="replace")
    except OSError:
        return 0
    lines = text.splitlines()
    n = sum(1 for ln in lines if any(mark in ln for mark in REQUEUE_MARKS))
    return max(0, n - sum(1 for ln in lines if REQUEUE_FAILED in ln))

# --------------------------------------------------------------------------------------------- metric names

# Keras / segmentation-models spellings of the metrics we log, mapped to our names (docs/formats.md). The
# seeds' Keras jacard_coef is a soft Jaccard on probabilities: our jaccard_soft, not the hard jaccard.
_METRIC_ALIASES = {
    "jacard_coef": "jaccard_soft", "jaccard_coef": "jaccard_soft", "jacard": "jaccard_soft", "jaccard": "jaccard",
    "iou": "jaccard", "iou_score": "jaccard", "jaccard_index": "jaccard",
    "dice_coef": "dice", "dice": "dice", "dice_coefficient": "dice", "f1_score": "dice",
    "accuracy": "accuracy", "acc": "accuracy", "binary_accuracy": "accuracy",
    "precision": "precision", "recall": "recall", "loss": "loss",
}


def canonical_metric(name: str) -> str:
    """``val_jacard_coef`` → ``val_jaccard_soft``, ``jacard_coef`` → ``train_jaccard_soft``, ``loss`` →
    ``train_loss``.

    Our histories hold validation metrics, the training loss and ``train_jaccard_soft``; a Keras file's
    un-prefixed columns are training-set values, so they get a ``train_`` prefix and never shadow ours.
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


_PERCENT_RE = re.compile(r"\s*([-+]?(?:\d+(?:[.,]\d*)?|[.,]\d+))\s*%")
_COMMA_RE = re.compile(r"\s*([-+]?\d+),(\d+)(?:\s.*)?")


def _metric_cell(text: str | None, where: str, warnings: list[str]) -> float | None:
    """A metric value as a fraction, read the ways spreadsheets write it: ``0.651``, ``65.1%`` (a
    percentage: 0.651), ``0,651`` (a decimal comma), ``0.0 (collapsed)``. A cell that could mean two
    numbers (``1,234``: a thousands separator or a decimal comma?) is refused with a warning: never a
    silently wrong number."""
    if text is None or not text.strip():
        return None
    m = _PERCENT_RE.match(text)
    if m:
        from decimal import Decimal  # 65.1% is 0.651 exactly as written, not 0.6509999999999999

        return float(Decimal(m.group(1).replace(",", ".")) / 100)
    m = _COMMA_RE.fullmatch(text)
    if m:
        whole, frac = m.group(1), m.group(2)
        if len(frac) == 3 and whole.lstrip("+-") not in ("0", ""):
            warnings.append(f"{where}: {text.strip()!r} could be {whole}{frac} or {whole}.{frac}: ignored; "
                            f"write it with a decimal point")
            return None
        return float(f"{whole}.{frac}")
    return parse_number(text)


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
    # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name.
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        first = fh.readline()
        fh.seek(0)
        # Excel in a decimal-comma locale writes ``;`` between cells and ``0,65`` in them.
        delimiter = ";" if first.count(";") > first.count(",") else ","
        reader = csv.reader(fh, delimiter=delimiter)
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
            best=_metric_cell(cell(rec, best_i), f"{path}:{n}: best_{metric}", warnings),
            final=_metric_cell(cell(rec, final_i), f"{path}:{n}: final_{metric}", warnings),
            train_time_s=time_s,
            flags=flags,
        ))
    return rows, warnings


# --------------------------------------------------------------------------------------------- task status


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
    code = _raw_exit_code(task_dir / EXIT_CODE)
    reason: str | None = None
    result_code: int | None = None
    try:
        result = json.loads((task_dir / RESULT).read_text(encoding="utf-8"))
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
        return FAILED, reason or f"unreadable exit_code file ({code[:60]})", None
    if reason is not None:
        return _status_from_reason(reason), reason, None
    if has_history is None:
        has_history = (task_dir / "history.csv").is_file()
    return (RUNNING if has_history else PENDING), None, None


def read_result(task_dir: Path) -> dict[str, Any] | None:
    """result.json as a dict, or None when it is absent, unreadable or not an object (task_damage says why)."""
    try:
        with open(task_dir / RESULT, "rb") as fh:
            data = json.loads(fh.read(1 << 22).decode("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def task_finished(task_dir: Path) -> bool:
    """True when the task ended with a training result (completed or diverged); reads two small files."""
    return read_task_status(task_dir, has_history=False)[0] in RESULT_STATUSES


def task_damage(task_dir: Path) -> list[str]:
    """One line per damaged file of a task that its status alone would not show (history damage is told
    by the history's reader): the folder itself, exit_code, result.json."""
    problem = check_task_dir(task_dir)
    if problem:
        return [problem]
    out = [p for p in [exit_code_of(task_dir)[1]] if p]
    path = task_dir / RESULT
    try:
        with open(path, "rb") as fh:
            data = fh.read(1 << 20)
    except FileNotFoundError:
        return out
    except OSError as exc:
        return [*out, f"{path}: {why_unreadable(exc)}"]
    try:
        ok = isinstance(json.loads(data.decode("utf-8")), dict)
    except ValueError:
        ok = False
    if not ok:
        out.append(f"{path}: not a JSON object as the trainer writes it: ignored")
    return out


# --------------------------------------------------------------------------------------------- results


@dataclass
class TaskResult:
    """One model × fold, as read from its folder (collect's row, plots' curves)."""

    index: int
    model: str
    fold: int
    status: str
    reason: str | None = None
    exit_code: int | None = None
    best_epoch: int | None = None
    best: float | None = None
    final: float | None = None
    epochs_run: int = 0
    train_time_s: float | None = None
    flags: list[str] = field(default_factory=list)
    history: History | None = None  # kept in memory for the plots; never serialised

    def row(self, metric: str) -> dict[str, Any]:
        """The JSON form (NaN and inf become None, as JSON has neither)."""
        return {
            "model": self.model, "fold": self.fold, "index": self.index, "status": self.status,
            "best_epoch": self.best_epoch, f"best_{metric}": _json_num(self.best),
            f"final_{metric}": _json_num(self.final), "epochs_run": self.epochs_run,
            "train_time": _json_num(self.train_time_s), "train_time_human": human_duration(self.train_time_s),
            "flags": list(self.flags), "reason": self.reason, "exit_code": self.exit_code,
        }


def _json_num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def human_duration(seconds: float | None) -> str:
    """45s, 12.5m, 2.3h: the seed's ``train_time`` column."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


# --------------------------------------------------------------------------------------------- one task, for status


@dataclass
class TaskView:
    """What ``hpcseg status`` needs from a task's files, in one read (and one cache entry)."""

    exit_code: int | None = None
    epoch: int | None = None
    last: float | None = None
    best: float | None = None
    mean_epoch_s: float | None = None
    total_s: float = 0.0
    partial: bool = False
    requeues: int = 0
    damage: list[str] = field(default_factory=list)
    median_epoch_s: float | None = None
    history_mtime: float | None = None  # when the last epoch was appended (history.csv has no clock column)

    @property
    def progress(self) -> Progress:
        return Progress(self.epoch, self.last, self.best, self.mean_epoch_s, self.total_s, self.partial,
                        median_epoch_s=self.median_epoch_s)


def read_task_view(task_dir: str, metric: str, mode: str, label: str | None = None) -> TaskView:
    """Exit code, progress, requeues and damage of one task folder; never raises on what is on disk."""
    problem = check_task_dir(Path(task_dir))
    if problem:
        return TaskView(damage=[problem])
    code, bad_code = exit_code_of(Path(task_dir))
    label = label or task_dir
    history = os.path.join(task_dir, HISTORY)
    try:
        mtime: float | None = os.stat(history).st_mtime  # before the read: a row appended meanwhile looks older
    except OSError:
        mtime = None  # read_last_rows says what is wrong with it
    try:
        t = read_last_rows(history, f"{label}/{HISTORY}")
        prog = progress_of(t, metric, mode)
    except FileNotFoundError:
        prog = Progress()
    return TaskView(code, prog.epoch, prog.last, prog.best, prog.mean_epoch_s, prog.total_s, prog.partial,
                    count_requeues(Path(task_dir)), [p for p in [bad_code] if p] + prog.damage,
                    prog.median_epoch_s, mtime)
