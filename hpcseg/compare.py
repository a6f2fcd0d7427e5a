"""Is this run better than the last one? Baselines, per-model comparison, verdicts, collapse and divergence.

The seed's question (004) was not "what is the Jaccard" but "did the new settings fix the collapse, and by
how much": 0.1427 → 0.0 (collapsed) before, 0.6512 now, 4.6×. So a comparison needs more than two
numbers: it must notice that the baseline collapsed (its best epoch is not what it ended with) and that
ours did not. Detection works on a metric series alone, so it applies to our histories and to Keras
``CSVLogger`` files alike. Everything here except :func:`resolve_baseline` is a pure function.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpcseg.errors import HpcsegError
from hpcseg.runs import MANIFEST, Run, list_runs, open_run
from hpcseg.taskfiles import task_finished

# A run whose validation metric ends below a quarter of its peak, for at least the last 3 epochs, has
# collapsed (seed 004: 0.14 → 0.0). A dip that recovers, or a plateau, is not a collapse.
COLLAPSE_FRACTION = 0.25
COLLAPSE_EPOCHS = 3
# Differences smaller than this are noise between two trainings, not an improvement: |diff| below
# ABS_TOL, or below REL_TOL of the baseline's value, is "unchanged".
ABS_TOL = 0.01
REL_TOL = 0.02

IMPROVED, REGRESSED, UNCHANGED = "improved", "regressed", "unchanged"
COLLAPSED, BASELINE_COLLAPSED, DIVERGED = "collapsed", "baseline-collapsed", "diverged"
NO_RESULT, NO_BASELINE_VALUE = "no-result", "no-baseline-value"


# --------------------------------------------------------------------------------------------- detection


def detect_collapse(values: Sequence[float] | np.ndarray, mode: str = "max",
                    fraction: float = COLLAPSE_FRACTION, k: int = COLLAPSE_EPOCHS) -> bool:
    """True when the metric reached a peak, then fell far from it and stayed there to the end.

    mode ``max`` (scores such as Jaccard, where 0 means useless): the last ``min(k, epochs after the
    peak)`` values are all below ``fraction`` × peak. mode ``min`` (losses, errors: no natural zero): the
    last values all gave back more than ``1 - fraction`` of the improvement made since the first epoch.
    NaN epochs count as collapsed (a NaN score is no score). A series that never improved cannot collapse.
    """
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    if v.size < 2 or not finite.any():
        return False
    if mode == "min":
        best_i = int(np.nanargmin(np.where(finite, v, np.inf)))
        start = v[finite][0]
        gain = start - v[best_i]
        if not gain > 0:
            return False
        worst_allowed = v[best_i] + (1.0 - fraction) * gain
        bad = ~finite | (v > worst_allowed)
    else:
        best_i = int(np.nanargmax(np.where(finite, v, -np.inf)))
        peak = v[best_i]
        if not peak > 0:
            return False
        bad = ~finite | (v < fraction * peak)
    remaining = v.size - best_i - 1
    if remaining <= 0:
        return False
    tail = min(k, remaining)
    return bool(bad[-tail:].all())


def detect_divergence(*losses: np.ndarray | Sequence[float] | None, exit_code: int | None = None) -> bool:
    """True when any loss value is NaN or infinite, or the trainer said so (exit code 4)."""
    if exit_code == 4:
        return True
    for loss in losses:
        if loss is not None and len(loss) and not np.isfinite(np.asarray(loss, dtype=np.float64)).all():
            return True
    return False


def collapsed_from_endpoints(best: float | None, final: float | None, mode: str = "max",
                             fraction: float = COLLAPSE_FRACTION) -> bool:
    """Collapse judged from best and final alone, for summaries that kept no curve (the seed's CSV)."""
    if best is None or final is None or not math.isfinite(best):
        return False
    if not math.isfinite(final):
        return True
    if mode == "min":
        return best > 0 and final > best / fraction
    return best > 0 and final < fraction * best


# --------------------------------------------------------------------------------------------- aggregates


@dataclass
class ModelResult:
    """One model's result over the folds that finished: the thing two runs are compared on."""

    model: str
    best: float | None  # mean over folds of each fold's best metric
    final: float | None  # mean over folds of each fold's last-epoch metric
    std: float | None  # sample standard deviation (ddof=1) of the folds' best; None for fewer than 2
    n_folds: int
    collapsed: int = 0  # folds flagged collapsed
    diverged: int = 0  # folds flagged diverged
    folds: list[float | None] = field(default_factory=list)


def _finite(xs: Iterable[float | None]) -> list[float]:
    return [float(x) for x in xs if x is not None and math.isfinite(x)]


def _scale(xs: list[float]) -> float:
    """A power of two near the largest magnitude: dividing by it is exact and keeps sums of values
    like 1e308 from overflowing to inf."""
    top = max(abs(x) for x in xs)
    return math.ldexp(1.0, math.frexp(top)[1] - 1) if top > 1e300 else 1.0


def _mean(xs: list[float]) -> float | None:
    if not xs:
        return None
    k = _scale(xs)
    m = float(np.mean([x / k for x in xs])) * k
    return m if math.isfinite(m) else None


def _std(xs: list[float]) -> float | None:
    """Sample standard deviation (ddof=1); None for fewer than 2 values or when it exceeds a float."""
    if len(xs) < 2:
        return None
    k = _scale(xs)
    sd = float(np.std([x / k for x in xs], ddof=1)) * k
    return sd if math.isfinite(sd) else None


def aggregate(model: str, bests: Sequence[float | None], finals: Sequence[float | None],
              collapsed: Sequence[bool] = (), diverged: Sequence[bool] = ()) -> ModelResult:
    """Mean, sample std and counts over a model's folds; folds without a finite value are left out."""
    b, f = _finite(bests), _finite(finals)
    return ModelResult(
        model=model,
        best=_mean(b),
        final=_mean(f),
        std=_std(b),
        n_folds=len(b),
        collapsed=int(sum(bool(c) for c in collapsed)),
        diverged=int(sum(bool(d) for d in diverged)),
        folds=[None if x is None or not math.isfinite(x) else float(x) for x in bests],
    )


# --------------------------------------------------------------------------------------------- comparison


def normalize_name(name: str) -> str:
    """``Attention_ResUNet`` and ``attention_resunet`` (and ``attention-res-unet``) are one model."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def ratio(ours: float | None, base: float | None, mode: str = "max") -> float | None:
    """How many times better ours is: ours/base for max metrics, base/ours for min ones."""
    if ours is None or base is None or not (math.isfinite(ours) and math.isfinite(base)):
        return None
    num, den = (ours, base) if mode != "min" else (base, ours)
    return num / den if den > 0 and num >= 0 else None


def change(ours: float, base: float, mode: str = "max", abs_tol: float = ABS_TOL,
           rel_tol: float = REL_TOL) -> str:
    """improved / regressed / unchanged from the two values alone, with the noise tolerance."""
    diff = ours - base
    if abs(diff) < abs_tol or abs(diff) < rel_tol * abs(base):
        return UNCHANGED
    better = diff > 0 if mode != "min" else diff < 0
    return IMPROVED if better else REGRESSED


def verdict(ours: ModelResult | None, base: ModelResult | None, mode: str = "max") -> str:
    """One word per model; a collapse or divergence outranks any difference in the numbers."""
    if ours is None or ours.best is None:
        return NO_RESULT
    if ours.collapsed:
        return COLLAPSED
    if ours.diverged:
        return DIVERGED
    if base is None or base.best is None:
        return NO_BASELINE_VALUE
    if base.collapsed:
        return BASELINE_COLLAPSED
    return change(ours.best, base.best, mode)


def check_distinct(names: Iterable[str], where: str) -> None:
    """Refuse a baseline whose model names differ only in case or punctuation (``UNet`` and ``unet``):
    models are matched by :func:`normalize_name`, so either could be the one compared, silently."""
    seen: dict[str, str] = {}
    for name in names:
        key = normalize_name(name)
        if key in seen and seen[key] != name:
            raise HpcsegError(f"{where}: models {seen[key]!r} and {name!r} differ only in case or punctuation, "
                              f"so a comparison cannot tell which is meant; rename one of them")
        seen.setdefault(key, name)


def compare_results(ours: Sequence[ModelResult], base: Sequence[ModelResult], mode: str = "max") -> dict[str, Any]:
    """Per-model rows in our model order, plus the models found on one side only. Raises HpcsegError for
    baseline models that differ only in case (see :func:`check_distinct`)."""
    check_distinct((b.model for b in base), "baseline")
    by_name: dict[str, ModelResult] = {}
    for b in base:
        by_name.setdefault(normalize_name(b.model), b)
    matched: set[str] = set()
    rows, only_run = [], []
    for o in ours:
        key = normalize_name(o.model)
        b = by_name.get(key)
        if b is None:
            only_run.append(o.model)
            continue
        matched.add(key)
        diff = None if o.best is None or b.best is None else o.best - b.best
        diff = diff if diff is None or math.isfinite(diff) else None  # 1e308 - -1e308: no honest number
        rows.append({
            "model": o.model,
            "baseline_model": b.model,
            "baseline_best": b.best,
            "baseline_final": b.final,
            "baseline_collapsed": bool(b.collapsed),
            "baseline_n_folds": b.n_folds,
            "best": o.best,
            "final": o.final,
            "std": o.std,
            "n_folds": o.n_folds,
            "collapsed": bool(o.collapsed),
            "diverged": bool(o.diverged),
            "ratio": ratio(o.best, b.best, mode),
            "diff": diff,
            "change": None if diff is None else change(o.best, b.best, mode),  # type: ignore[arg-type]
            "verdict": verdict(o, b, mode),
        })
    only_base = [b.model for b in base if normalize_name(b.model) not in matched]
    return {"rows": rows, "only_in_run": only_run, "only_in_baseline": only_base}


# --------------------------------------------------------------------------------------------- formatting


def fmt_value(v: float | None) -> str:
    """0.1427 → "0.1427", 0.0 → "0.0", None → "—": four decimals at most, like the seed's report."""
    if v is None:
        return "—"
    if not math.isfinite(v):
        return str(v)
    s = f"{v:.4f}".rstrip("0")
    return s + "0" if s.endswith(".") else s


def fmt_ratio(r: float | None) -> str:
    """How many times better, as text that never rounds a change away.

    At or above 1: one decimal as in the seed (4.5634 → "4.6×"), two near 1 (1.048 → "1.05×") so
    "1.0× improvement" never appears. Below 1: two significant digits (0.063 → "0.063×", 0.94 → "0.94×"),
    more when two would round up to "1" (0.996 → "0.996×"): a regression is never shown as 0.1× or 1.0×.
    """
    if r is None:
        return "—"
    if not math.isfinite(r):
        return f"{r}×"
    if 0 < r < 1:
        for digits in range(2, 8):
            s = f"{r:#.{digits}g}"  # '#': keep trailing zeros, 0.5 → "0.50"
            if float(s) < 1:
                return f"{s}×"
        return f"{r!r}×"
    s = f"{r:.1f}"
    return f"{r:.2f}×" if s == "1.0" else f"{s}×"


def fmt_diff(d: float | None) -> str:
    return "—" if d is None else f"{d:+.4f}"


_CHANGE_WORDS = {IMPROVED: "improvement", REGRESSED: "regression", UNCHANGED: "unchanged"}


def _short_change(row: dict[str, Any]) -> str:
    """``unet 0.5 → 0.6: 1.2× improvement``: one other model's change, for the headline's second half."""
    word = _CHANGE_WORDS.get(row["change"] or "", "no comparison")
    if row["collapsed"]:
        word = "collapsed" + (f", {word}" if row["change"] else "")
    elif row["diverged"]:
        word = "diverged" + (f", {word}" if row["change"] else "")
    elif row["baseline_collapsed"] and row["change"]:
        word += " over a collapsed baseline"
    r = row["ratio"]
    if row["best"] is None:
        return f"{row['model']}: no result"
    tail = f"{fmt_ratio(r)} {word}" if r is not None and row["change"] != UNCHANGED else word
    if row["change"] == UNCHANGED and r is not None:
        tail += f" ({fmt_ratio(r)})"
    return f"{row['model']} {fmt_value(row['baseline_best'])} → {fmt_value(row['best'])}: {tail}"


def headline(row: dict[str, Any], others: Sequence[dict[str, Any]] = ()) -> str:
    """The seed's one line for ``row``, then every other compared model's change in short.

    ``baseline 0.1427 → 0.0 (collapsed); now 0.6512: 4.6× improvement`` alone would hide a second model
    that regressed in the same run, so ``others`` (the comparison's rows; ``row`` itself is skipped)
    are named after it: ``... | also: unet 0.5 → 0.6: 1.2× improvement; segnet 0.4 → 0.3: 0.75× regression``.
    """
    base = f"baseline {fmt_value(row['baseline_best'])} → {fmt_value(row['baseline_final'])}"
    if row["baseline_collapsed"]:
        base += " (collapsed)"
    now = f"now {fmt_value(row['best'])}"
    if row["collapsed"]:
        now += f" → {fmt_value(row['final'])} (collapsed)"
    elif row["diverged"]:
        now += " (diverged)"
    word = _CHANGE_WORDS.get(row["change"] or "", "no comparison")
    r = row["ratio"]
    tail = f"{fmt_ratio(r)} {word}" if r is not None else word
    line = f"{row['model']}: {base}; {now}: {tail}"
    rest = [_short_change(o) for o in others if o["model"] != row["model"]]
    return f"{line} | also: {'; '.join(rest)}" if rest else line


# --------------------------------------------------------------------------------------------- baselines


@dataclass
class BaselineRef:
    """Where the baseline's numbers come from; collect reads it (a run, Keras histories or a summary)."""

    kind: str  # "run" | "keras" | "summary"
    label: str  # shown to the user: a run id or a path
    run: Run | None = None
    files: list[Path] = field(default_factory=list)


def _run_key(r: Run) -> tuple[float, str]:
    return (float(r.manifest.get("created_ts", 0) or 0), r.run_id)


def run_finished(run: Run) -> bool:
    """At least one task ended with a training result: enough to compare against."""
    return any(task_finished(run.task_dir(t)) for t in run.tasks)


def _run_label(r: Run) -> str:
    return f"{r.dir.parent.name}/{r.run_id}"


def previous_run(current: Run, root: Path) -> Run | None:
    """The latest run of the same job created before ``current`` that has a finished task."""
    # Same job by name too: runs made before slugs were unique may share a folder with another job.
    runs = [r for r in list_runs(root, current.dir.parent.name) if r.manifest.get("job") == current.manifest.get("job")]
    key = _run_key(current)
    for r in reversed(runs):
        if r.dir.resolve() != current.dir.resolve() and _run_key(r) < key and run_finished(r):
            return r
    return None


def _header(path: Path) -> list[str]:
    """A CSV's column names, lower-cased: a byte-order mark and ``;`` separators (Excel) allowed."""
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        line = fh.readline(65536)
    sep = ";" if line.count(";") > line.count(",") else ","
    return [c.strip().strip('"').strip().lower() for c in line.split(sep)]


def _looks_like_keras(path: Path) -> bool:
    try:
        head = _header(path)
    except OSError:
        return False
    return "epoch" in head and any(c.startswith("val_") for c in head)


def _from_path(p: Path, current: Run, root: Path) -> BaselineRef:
    if p.is_file():
        if p.suffix.lower() == ".csv":
            try:
                head = _header(p)
            except OSError as exc:
                raise HpcsegError(f"baseline {p}: cannot be read ({exc.strerror or exc})") from None
            if "model" in head:
                return BaselineRef("summary", str(p), files=[p])
            if _looks_like_keras(p):
                return BaselineRef("keras", str(p), files=[p])
        raise HpcsegError(f"baseline {p}: not a training_summary.csv or a Keras history CSV")
    if (p / MANIFEST).is_file():
        run = open_run(p)
        if run.dir == current.dir:
            raise HpcsegError(f"baseline {p}: is the run being collected; name an earlier run or 'previous'")
        return BaselineRef("run", _run_label(run), run=run)
    keras = sorted(f for f in p.glob("*.csv") if f.name != "training_summary.csv" and _looks_like_keras(f))
    if keras:
        return BaselineRef("keras", str(p), files=keras)
    if (p / "training_summary.csv").is_file():
        return BaselineRef("summary", str(p), files=[p / "training_summary.csv"])
    runs = [r for r in list_runs(p.parent, p.name) if r.dir != current.dir and run_finished(r)] \
        if any(p.glob(f"*/{MANIFEST}")) else []
    if runs:  # a job folder of the registry: its latest finished run
        return BaselineRef("run", _run_label(runs[-1]), run=runs[-1])
    raise HpcsegError(f"baseline {p}: holds nothing readable (no manifest.json, no Keras *_history.csv with "
                      f"val_ columns, no training_summary.csv)")


def resolve_baseline(against: str, current: Run, root: Path) -> BaselineRef | None:
    """``previous`` | run id | run folder | job name (its latest finished run) | folder or file of histories.

    Returns None only for ``previous`` when no earlier finished run exists (nothing to compare is not an
    error). Raises HpcsegError (exit 2) for anything named that cannot be found or read.
    """
    if against == "previous":
        prev = previous_run(current, root)
        return BaselineRef("run", _run_label(prev), run=prev) if prev else None
    p = Path(against).expanduser()
    if p.exists():
        return _from_path(p, current, root)
    runs = list_runs(root)
    by_id = [r for r in runs if r.run_id == against or _run_label(r) == against]
    if len(by_id) > 1:
        raise HpcsegError(f"baseline run id {against!r} is ambiguous: "
                          f"{', '.join(_run_label(r) for r in by_id)}; give JOB/RUN_ID")
    if by_id:
        if by_id[0].dir == current.dir:
            raise HpcsegError(f"baseline {against}: is the run being collected; name an earlier run or 'previous'")
        return BaselineRef("run", _run_label(by_id[0]), run=by_id[0])
    by_job = ([r for r in runs if r.job == against and r.dir != current.dir]
              or [r for r in runs if r.dir.parent.name == against and r.dir != current.dir])
    if by_job:
        done = [r for r in by_job if run_finished(r)]
        if not done:
            raise HpcsegError(f"baseline job {against!r}: none of its {len(by_job)} run(s) has a finished task yet")
        return BaselineRef("run", _run_label(done[-1]), run=done[-1])
    raise HpcsegError(f"baseline {against!r}: not a run id, job with runs under {root}, or existing path")
