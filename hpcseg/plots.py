"""Figures for ``collect`` and the report: learning curves per model (folds overlaid) and the comparison bars.

Imported only when plots are wanted, because matplotlib costs a noticeable share of a second to import.
Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot, so no global
backend is switched (a notebook or the demo that imports us keeps its own) and no window can open on a
login node without a display. Each PNG is written atomically like every other collect output.

A figure must not mislead a reader who sees only the PNG: every one names its run, its units and what its
metric is (hard IoU on thresholded masks and a Keras soft Jaccard are different numbers), a one-epoch
series still shows (markers), epoch ticks are whole numbers, and a model with one fold gets no "± std"
bar it does not have. And it must never fail on the numbers it is given: NaN, ±inf and values beyond what
an axis can hold are left out of the drawing and counted in a note on the figure.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpcseg.fsutil import write_bytes_atomic

if TYPE_CHECKING:
    from hpcseg.collect import TaskResult
    from hpcseg.compare import ModelResult

DPI = 110
# Values beyond this magnitude are not drawn: an axis spanning ±1e308 overflows, and a loss of 1e20 is a
# divergence that collect already flags, not a point anyone can read off a scale shared with 0.3.
DRAWABLE = 1e12
MAX_EPOCH = 1_000_000  # epoch numbers beyond this (or below 0) are not epochs: the row is not drawn
MARKER_EPOCHS = 60  # series this short get a marker at every epoch, so one epoch is a visible dot
MANY_FOLDS = 10  # above this, folds are drawn as one translucent bundle plus their mean, not one colour each

_BARE = {"jacard_coef": "jaccard_soft", "jaccard_coef": "jaccard_soft"}
_DEFINITIONS = {
    "jaccard": ("IoU, 0–1", "hard IoU (Jaccard): |P∩T| / |P∪T| of the thresholded prediction P and mask T, "
                "0–1, higher is better"),
    "iou": ("IoU, 0–1", "hard IoU (Jaccard): |P∩T| / |P∪T| of the thresholded prediction P and mask T, "
            "0–1, higher is better"),
    "jaccard_soft": ("soft Jaccard, 0–1", "soft Jaccard (Keras jacard_coef): (Σpt + 1) / (Σp + Σt − Σpt + 1) on "
                     "predicted probabilities p over each batch, not thresholded, averaged over the epoch's batches; "
                     "0–1, higher is better; not comparable 1:1 with hard IoU"),
    "dice": ("Dice, 0–1", "hard Dice (F1): 2|P∩T| / (|P| + |T|) of the thresholded prediction, 0–1, higher is "
             "better"),
    "miou": ("mean IoU, 0–1", "mean hard IoU over classes of the argmax prediction, 0–1, higher is better"),
    "mdice": ("mean Dice, 0–1", "mean hard Dice over classes of the argmax prediction, 0–1, higher is better"),
    "pixel_accuracy": ("fraction, 0–1", "pixel accuracy: fraction of labelled pixels classified correctly, 0–1"),
    "macro_f1": ("F1, 0–1", "macro F1: unweighted mean over classes of per-class F1, 0–1"),
    "accuracy": ("fraction, 0–1", "accuracy: fraction of pixels (or samples) classified correctly, 0–1"),
    "balanced_accuracy": ("fraction, 0–1", "balanced accuracy: mean per-class recall, 0–1"),
    "precision": ("fraction, 0–1", "precision: TP / (TP + FP) of the thresholded prediction, 0–1"),
    "recall": ("fraction, 0–1", "recall: TP / (TP + FN) of the thresholded prediction, 0–1"),
    "f1": ("F1, 0–1", "F1: harmonic mean of precision and recall, 0–1"),
    "auc": ("AUC, 0–1", "area under the ROC curve, 0–1 (0.5: chance)"),
    "roc_auc": ("AUC, 0–1", "area under the ROC curve, 0–1 (0.5: chance)"),
    "ece": ("ECE, 0–1", "expected calibration error: mean |confidence − accuracy| over bins, 0–1, lower is better"),
    "loss": ("loss, unitless", "the job's training loss function (unitless; lower is better)"),
}


def metric_definition(metric: str) -> tuple[str, str]:
    """(short unit for an axis label, one-sentence definition) of a history column such as ``val_jaccard``.

    Our trainer's ``val_jaccard`` / ``val_iou`` are hard IoU on thresholded predictions; a Keras
    ``jacard_coef`` column is a soft Jaccard on probabilities. Unknown names say so instead of guessing.
    """
    n = metric.strip().lower()
    where = ""
    for prefix, said in (("val_", "on the validation fold"), ("train_", "on the training set")):
        if n.startswith(prefix):
            n, where = n[len(prefix):], said
            break
    for suffix in ("_macro", "_mean", "_micro"):
        if n.endswith(suffix) and n[: -len(suffix)] in _DEFINITIONS:
            n = n[: -len(suffix)]
    key = _BARE.get(n, n)
    unit, text = _DEFINITIONS.get(key, ("as logged", f"{metric} as the trainer logged it (no known definition)"))
    return unit, f"{metric}: {text}{'; ' + where if where else ''}"


def run_label(run_dir: Path | str) -> str:
    """``job/run_id`` from a run folder path, the form every other hpcseg output uses."""
    p = Path(run_dir)
    return f"{p.parent.name}/{p.name}"


def _save(fig: Any, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    # A line plot has few colours: a 256-colour palette PNG looks the same at a third of the bytes, which
    # keeps the HTML report (every plot embedded) small enough to mail.
    buf.seek(0)
    out = io.BytesIO()
    Image.open(buf).convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(out, "PNG")
    return write_bytes_atomic(path, out.getvalue())


def _plain(text: str | None) -> str:
    """User text (model names, run labels) drawn literally: a ``$`` would otherwise start mathtext, and a
    name such as ``a$^$b`` from a baseline's file name would fail the whole figure."""
    return "" if text is None else str(text).replace("$", r"\$")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "model"


def _drawable(a: np.ndarray | Sequence[float] | None) -> np.ndarray | None:
    """NaN where a value cannot be drawn (NaN, ±inf, beyond ±DRAWABLE): matplotlib leaves a gap there
    instead of raising or letting one wild value flatten every other point against the axis."""
    if a is None:
        return None
    v = np.asarray(a, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(v) & (np.abs(v) <= DRAWABLE), v, np.nan)


def _undrawn(a: np.ndarray | None) -> int:
    """How many values of a series :func:`_drawable` leaves out (NaN cells count: they are missing)."""
    if a is None:
        return 0
    v = np.asarray(a, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return int((~(np.isfinite(v) & (np.abs(v) <= DRAWABLE))).sum())


def _epochs(h: Any) -> np.ndarray:
    """A history's epoch column with impossible epoch numbers (NaN, negative, astronomically large) as NaN."""
    e = np.asarray(h.epochs, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(e) & (e >= 0) & (e <= MAX_EPOCH), e, np.nan)


def _point(x: float | None, y: float | None) -> bool:
    """A best-epoch marker that can be drawn (an epoch number may be any int, even beyond float64's range)."""
    try:
        fx, fy = float(x), float(y)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return False
    return abs(fx) <= MAX_EPOCH and abs(fy) <= DRAWABLE  # False for NaN and ±inf too


def _marker(n: int) -> str:
    return "o" if n <= MARKER_EPOCHS else ""


def _integer_epochs(ax: Any) -> None:
    """Whole-number epoch ticks (no "epoch 1.5"), and room around a lone epoch so its dot is not on the edge."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    lo, hi = ax.get_xlim()
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi - lo < 2:
        mid = (lo + hi) / 2 if np.isfinite(lo) and np.isfinite(hi) else 1.0
        ax.set_xlim(mid - 1, mid + 1)


def _footnote(fig: Any, lines: Sequence[str]) -> None:
    """Definitions and caveats under the axes, small, so the PNG carries its own legend of terms."""
    text = "\n".join(line for line in lines if line)
    if text:
        fig.text(0.01, 0.01, text, fontsize=7.5, color="0.25", ha="left", va="bottom")


def _bundle(tasks: Sequence[TaskResult], col: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All folds' curves of one column as a single NaN-separated line, plus the per-epoch mean over folds.

    One artist instead of one per fold keeps a 50-fold figure as fast to draw as a 1-fold one.
    """
    xs, ys, rows = [], [], []
    for t in tasks:
        h = t.history
        y = None if h is None else _drawable(h.column(col))
        if y is None or not len(y):
            continue
        e = _epochs(h)
        xs += [e, [np.nan]]
        ys += [y, [np.nan]]
        ok = np.isfinite(e) & (e >= 1)
        rows.append((e[ok].astype(int), y[ok]))
    rows = [(e, y) for e, y in rows if len(e)]
    if not rows:
        empty = np.empty(0)
        return (np.concatenate(xs) if xs else empty, np.concatenate(ys) if ys else empty, empty, empty)
    width = min(max(int(e.max()) for e, _ in rows), 100_000)
    grid = np.full((len(rows), width), np.nan)
    for i, (e, y) in enumerate(rows):
        ok = e <= width
        grid[i, e[ok] - 1] = y[ok]
    counts = np.isfinite(grid).sum(axis=0)
    mean = np.where(counts > 0, np.nansum(grid, axis=0) / np.maximum(counts, 1), np.nan)
    return np.concatenate(xs), np.concatenate(ys), np.arange(1, width + 1), mean


def learning_curves(path: Path, model: str, tasks: Sequence[TaskResult], metric: str,
                    run: str | None = None) -> Path:
    """Train and val loss (left) and the val metric (right) per epoch, folds overlaid, best epochs ringed.

    ``run``: the run's label (``job/run_id``) for the title, so a PNG passed around still says what it is.
    """
    return _save(learning_curves_figure(model, tasks, metric, run), path)


def learning_curves_figure(model: str, tasks: Sequence[TaskResult], metric: str, run: str | None = None) -> Any:
    """The figure of :func:`learning_curves`, unsaved (tests read its artists)."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    unit, definition = metric_definition(metric)
    fig = Figure(figsize=(11, 4.8))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.22, top=0.86, wspace=0.22)
    ax_loss, ax_metric = fig.subplots(1, 2)
    handles: list[Any] = []
    undrawn = 0
    longest = max((len(t.history) for t in tasks if t.history is not None), default=0)
    mk = _marker(longest)
    style = [Line2D([], [], color="0.3", ls="-", marker=mk, ms=3, label="train loss"),
             Line2D([], [], color="0.3", ls="--", marker=mk, ms=3, label="val loss")]
    if len(tasks) <= MANY_FOLDS:
        colors = matplotlib.colormaps["tab10"]
        for i, t in enumerate(tasks):
            h = t.history
            if h is None or not len(h):
                continue
            color = colors(i % 10)
            e = _epochs(h)
            for ax, col, ls in ((ax_loss, "train_loss", "-"), (ax_loss, "val_loss", "--"), (ax_metric, metric, "-")):
                raw = h.column(col)
                if raw is None:
                    continue
                undrawn += _undrawn(raw)
                ax.plot(e, _drawable(raw), ls, marker=mk, ms=3.5, color=color, lw=1.6, alpha=0.95)
            if _point(t.best_epoch, t.best):
                ax_metric.plot([t.best_epoch], [t.best], "o", mfc="none", mec=color, ms=9, mew=1.6)
            tag = f" ({', '.join(t.flags)})" if t.flags else ("" if t.status == "completed" else f" ({t.status})")
            handles.append(Line2D([], [], color=color, lw=2, marker=mk, ms=4, label=f"fold {t.fold}{_plain(tag)}"))
    else:
        for ax, col, ls, color in ((ax_loss, "train_loss", "-", "tab:blue"), (ax_loss, "val_loss", "--", "tab:orange"),
                                   (ax_metric, metric, "-", "tab:green")):
            undrawn += sum(_undrawn(t.history.column(col)) for t in tasks if t.history is not None)
            x, y, mx, my = _bundle(tasks, col)
            if len(x):
                ax.plot(x, y, ls, color=color, lw=0.6, alpha=0.3)
                ax.plot(mx, my, ls, marker=_marker(len(mx)), ms=3, color=color, lw=2.2)
        best = [(t.best_epoch, t.best) for t in tasks if _point(t.best_epoch, t.best)]
        if best:
            ax_metric.plot(*zip(*best, strict=True), "o", color="tab:green", ms=3, alpha=0.6)
        style = [Line2D([], [], color="tab:blue", ls="-", label="train loss"),
                 Line2D([], [], color="tab:orange", ls="--", label="val loss"),
                 Line2D([], [], color="0.3", lw=2.2, label="mean over folds"),
                 Line2D([], [], color="0.3", lw=0.6, alpha=0.5, label="one fold")]
        flagged = [t for t in tasks if t.flags]
        handles = [Line2D([], [], color="tab:green", lw=2.2, label=f"mean of {len(tasks)} folds"),
                   *([Line2D([], [], ls="", label=f"{len(flagged)} fold(s) flagged "
                              f"{', '.join(sorted({f for t in flagged for f in t.flags}))}")] if flagged else [])]
    # Fixed corners: losses fall from the top left, metrics rise from the bottom left. loc="best" would
    # test every data point of every line against the legend, the slowest part of a 50-fold figure.
    ax_loss.legend(handles=style + (handles if len(tasks) <= MANY_FOLDS else []), fontsize=8, loc="upper right")
    ax_loss.set(title="loss", xlabel="epoch", ylabel="loss (unitless)")
    ax_metric.set(title=f"{metric} (ring: each fold's best epoch)", xlabel="epoch", ylabel=f"{metric} ({unit})")
    if handles:
        ax_metric.legend(handles=handles, fontsize=8, loc="lower right")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        _integer_epochs(ax)
    done = sum(1 for t in tasks if t.history is not None and len(t.history))
    fig.suptitle(f"{_plain(run) + ' · ' if run else ''}{_plain(model)}: learning curves, {done} of {len(tasks)} fold(s) with "
                 f"epochs")
    _footnote(fig, [definition + ".", "loss: " + metric_definition("loss")[1].split(": ", 1)[1] + ".",
                    f"{undrawn} value(s) not drawn: missing, NaN, ±inf or beyond ±{DRAWABLE:.0e}." if undrawn else ""])
    return fig


def _bar_text(value: float | None, std: float | None, n: int) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    if abs(value) > DRAWABLE:
        return f"{value:.3g} (off scale)"
    text = f"{value:.3f}"
    if std is not None and n > 1 and np.isfinite(std):
        return f"{text}\n± {std:.3f}, {n} folds"
    return f"{text}\n{n} fold" if n == 1 else text


def model_comparison(path: Path, results: Sequence[ModelResult], comp: dict[str, Any] | None, metric: str,
                     mode: str, baseline_label: str | None = None, run: str | None = None,
                     baseline_kind: str | None = None) -> Path:
    """Cross-validated best metric per model (mean, with ± sample std only where there are ≥ 2 folds)
    and the baseline's value beside each bar, labelled with both runs and the metric's definition."""
    return _save(comparison_figure(results, comp, metric, mode, baseline_label, run, baseline_kind), path)


def comparison_figure(results: Sequence[ModelResult], comp: dict[str, Any] | None, metric: str, mode: str,
                      baseline_label: str | None = None, run: str | None = None,
                      baseline_kind: str | None = None) -> Any:
    """The figure of :func:`model_comparison`, unsaved (tests read its artists)."""
    from matplotlib.figure import Figure

    unit, definition = metric_definition(metric)
    names = [_plain(m.model) for m in results]
    means = _drawable([np.nan if m.best is None else m.best for m in results])
    assert means is not None
    has_std = np.array([m.std is not None and m.n_folds > 1 and bool(np.isfinite(m.std)) for m in results], bool)
    stds = np.array([m.std if h else 0.0 for m, h in zip(results, has_std, strict=True)], dtype=float)
    stds = np.where(np.abs(stds) <= DRAWABLE, np.abs(stds), 0.0)
    rows = {_plain(r["model"]): r for r in (comp or {}).get("rows", [])}
    has_base = bool(rows)
    x = np.arange(len(names), dtype=float)
    width = 0.38 if has_base else 0.6
    crowded = len(names) > 12
    fig = Figure(figsize=(min(14.0, max(7.5, 0.9 * len(names) + 2.5)), 5.2 + 0.6 * crowded))
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.2 + 0.08 * crowded, top=0.9)
    label_kw: dict[str, Any] = {"fontsize": 6.5, "rotation": 90} if crowded else {"fontsize": 8}
    ax = fig.subplots()
    ours_x = x - width / 2 if has_base else x
    ours = f"this run: {_plain(run)}" if run else "this run"
    bars = ax.bar(ours_x, np.nan_to_num(means), width, color="tab:blue", label=ours)
    if has_std.any():
        ax.errorbar(ours_x[has_std], np.nan_to_num(means[has_std]), yerr=stds[has_std], fmt="none", ecolor="0.15",
                    capsize=4, lw=1.2)
    ends = np.concatenate([means + stds, means - stds])
    for b, m, sd in zip(bars, results, stds, strict=True):
        text = _bar_text(m.best, m.std, m.n_folds)
        if m.collapsed:
            text += f"\n{m.collapsed}/{m.n_folds} collapsed" if m.n_folds > 1 else "\ncollapsed"
        if m.diverged:
            text += f"\n{m.diverged}/{m.n_folds} diverged" if m.n_folds > 1 else "\ndiverged"
        h = b.get_height()
        ax.annotate(text, (b.get_x() + b.get_width() / 2, h + sd if h >= 0 else 0), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", **label_kw)
    base_text = ""
    if has_base:
        base = _drawable([np.nan if names[i] not in rows or rows[names[i]]["baseline_best"] is None
                          else rows[names[i]]["baseline_best"] for i in range(len(names))])
        assert base is not None
        bb = ax.bar(x + width / 2, np.nan_to_num(base), width, color="0.75", hatch="//", edgecolor="0.4",
                    label=f"baseline: {_plain(baseline_label)}" if baseline_label else "baseline")
        ends = np.concatenate([ends, base])
        for b, name in zip(bb, names, strict=True):
            r = rows.get(name)
            if r is None or r["baseline_best"] is None:
                text = "no match"
            else:
                text = _bar_text(r["baseline_best"], None, 0) + ("\ncollapsed" if r["baseline_collapsed"] else "")
            ax.annotate(text, (b.get_x() + b.get_width() / 2, max(b.get_height(), 0)), xytext=(0, 3),
                        textcoords="offset points", ha="center", va="bottom", **label_kw)
        base_text = ("baseline: a Keras history; its jacard_coef is a soft Jaccard on probabilities, compared with "
                     "our soft Jaccard of the same formula (comparison.md names both columns)." if baseline_kind == "keras"
                     else
                     "baseline: the same metric, as recorded by that run." if baseline_kind == "run" else
                     "baseline: the metric as recorded in its file.")
    ends = ends[np.isfinite(ends)]
    top = float(ends.max()) if ends.size else 1.0
    bottom = min(0.0, float(ends.min())) if ends.size else 0.0
    top = max(top, 0.0)
    span = top - bottom if top - bottom > 0 else 1.0
    ax.set_ylim(bottom - (0.08 * span if bottom < 0 else 0), top + span * (0.45 if crowded else 0.3))
    ax.set_xticks(x, names, rotation=30 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    better = "higher" if mode != "min" else "lower"
    spread = "mean ± sample std over folds" if has_std.any() else "one fold per model: no spread to show"
    ax.set(ylabel=f"best {metric} ({unit}; {better} is better)", title=f"best {metric} per model: {spread}")
    ax.grid(axis="y", alpha=0.3)
    if len(names):
        ax.legend(fontsize=8, loc="upper left")
    _footnote(fig, [definition + ".",
                    "Per fold: the best epoch's value; bar: mean over folds that finished"
                    + ("; error bar: sample std (ddof=1), only for models with ≥ 2 folds." if has_std.any() else "."),
                    base_text])
    return fig


def write_plots(out_dir: Path, tasks: Sequence[TaskResult], results: Sequence[ModelResult],
                comp: dict[str, Any] | None, metric: str, mode: str, baseline_label: str | None = None,
                run: str | None = None, baseline_kind: str | None = None,
                compared_metric: str | None = None) -> list[Path]:
    """``learning_curves_<model>.png`` for each model with any epochs, then ``model_comparison.png``.

    ``run``: the run's label (``job/run_id``) printed on every figure; ``baseline_kind``: ``run``, ``keras``
    or ``summary`` (what the baseline's numbers are, for the comparison's footnote)."""
    out_dir = Path(out_dir)
    run = run or run_label(out_dir.parent)  # collect writes into RUN/plots
    written = []
    for m in results:
        own = [t for t in tasks if t.model == m.model]
        if any(t.history is not None and len(t.history) for t in own):
            written.append(learning_curves(out_dir / f"learning_curves_{_safe(m.model)}.png", m.model, own, metric,
                                           run=run))
    # the comparison's column: the metric's soft twin when the baseline only has that (collect.like_with_like)
    written.append(model_comparison(out_dir / "model_comparison.png", results, comp, compared_metric or metric, mode,
                                    baseline_label,
                                    run=run, baseline_kind=baseline_kind))
    return written
