"""Figures for ``collect``: learning curves per model (folds overlaid) and the model comparison bar chart.

Imported only when plots are wanted, because matplotlib costs a noticeable share of a second to import.
Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot, so no global
backend is switched (a notebook or the demo that imports us keeps its own) and no window can open on a
login node without a display. Each PNG is written atomically like every other collect output.
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


def _save(fig: Any, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return write_bytes_atomic(path, buf.getvalue())


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "model"


def _finite(a: np.ndarray | None) -> np.ndarray | None:
    """Infinite values (a diverged loss) as NaN: matplotlib leaves a gap instead of wrecking the scale."""
    return None if a is None else np.where(np.isfinite(a), a, np.nan)


MANY_FOLDS = 10  # above this, folds are drawn as one translucent bundle plus their mean, not one colour each


def _bundle(tasks: Sequence[TaskResult], col: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All folds' curves of one column as a single NaN-separated line, plus the per-epoch mean over folds.

    One artist instead of one per fold keeps a 50-fold figure as fast to draw as a 1-fold one.
    """
    xs, ys, rows = [], [], []
    for t in tasks:
        h = t.history
        y = None if h is None else _finite(h.column(col))
        if y is None or not len(y):
            continue
        xs += [h.epochs, [np.nan]]
        ys += [y, [np.nan]]
        rows.append((h.epochs.astype(int), y))
    if not rows:
        empty = np.empty(0)
        return empty, empty, empty, empty
    width = max(int(e.max()) for e, _ in rows if len(e))
    grid = np.full((len(rows), width), np.nan)
    for i, (e, y) in enumerate(rows):
        ok = (e >= 1) & (e <= width)
        grid[i, e[ok] - 1] = y[ok]
    counts = np.isfinite(grid).sum(axis=0)
    mean = np.where(counts > 0, np.nansum(grid, axis=0) / np.maximum(counts, 1), np.nan)
    return np.concatenate(xs), np.concatenate(ys), np.arange(1, width + 1), mean


def learning_curves(path: Path, model: str, tasks: Sequence[TaskResult], metric: str) -> Path:
    """Train and val loss (left) and the val metric (right) per epoch, folds overlaid, best epochs dotted."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(11, 4.2))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.84, wspace=0.22)
    ax_loss, ax_metric = fig.subplots(1, 2)
    handles: list[Any] = []
    style = [Line2D([], [], color="0.3", ls="-", label="train loss"),
             Line2D([], [], color="0.3", ls="--", label="val loss")]
    if len(tasks) <= MANY_FOLDS:
        colors = matplotlib.colormaps["tab10"]
        for i, t in enumerate(tasks):
            h = t.history
            if h is None or not len(h):
                continue
            color = colors(i % 10)
            for col, ls in (("train_loss", "-"), ("val_loss", "--")):
                y = _finite(h.column(col))
                if y is not None:
                    ax_loss.plot(h.epochs, y, ls, color=color, lw=1.6, alpha=0.95)
            y = _finite(h.column(metric))
            if y is not None:
                ax_metric.plot(h.epochs, y, "-", color=color, lw=1.6, alpha=0.95)
                if t.best_epoch is not None and t.best is not None:
                    ax_metric.plot([t.best_epoch], [t.best], "o", color=color, ms=5)
            tag = f" ({', '.join(t.flags)})" if t.flags else ("" if t.status == "completed" else f" ({t.status})")
            handles.append(Line2D([], [], color=color, lw=2, label=f"fold {t.fold}{tag}"))
    else:
        for ax, col, ls, color in ((ax_loss, "train_loss", "-", "tab:blue"), (ax_loss, "val_loss", "--", "tab:orange"),
                                   (ax_metric, metric, "-", "tab:green")):
            x, y, mx, my = _bundle(tasks, col)
            if len(x):
                ax.plot(x, y, ls, color=color, lw=0.6, alpha=0.3)
                ax.plot(mx, my, ls, color=color, lw=2.2)
        best = [(t.best_epoch, t.best) for t in tasks if t.best_epoch is not None and t.best is not None]
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
    ax_loss.set(title="loss", xlabel="epoch", ylabel="loss")
    ax_metric.set(title=f"{metric} (dot: best epoch)", xlabel="epoch", ylabel=metric)
    if handles:
        ax_metric.legend(handles=handles, fontsize=8, loc="lower right")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
    done = sum(1 for t in tasks if t.history is not None and len(t.history))
    fig.suptitle(f"{model}: learning curves, {done} of {len(tasks)} fold(s) with epochs")
    return _save(fig, path)


def model_comparison(path: Path, results: Sequence[ModelResult], comp: dict[str, Any] | None, metric: str,
                     mode: str, baseline_label: str | None = None) -> Path:
    """Cross-validated best metric per model (mean ± sample std) with the baseline's value beside each bar."""
    from matplotlib.figure import Figure

    names = [m.model for m in results]
    means = np.array([np.nan if m.best is None else m.best for m in results], dtype=float)
    stds = np.array([0.0 if m.std is None else m.std for m in results], dtype=float)
    rows = {r["model"]: r for r in (comp or {}).get("rows", [])}
    has_base = bool(rows)
    x = np.arange(len(names), dtype=float)
    width = 0.38 if has_base else 0.6
    crowded = len(names) > 12
    fig = Figure(figsize=(min(14.0, max(7.0, 0.9 * len(names) + 2.5)), 4.8 + 0.6 * crowded), layout="constrained")
    label_kw: dict[str, Any] = {"fontsize": 6.5, "rotation": 90} if crowded else {"fontsize": 8}
    ax = fig.subplots()
    ours_x = x - width / 2 if has_base else x
    bars = ax.bar(ours_x, np.nan_to_num(means), width, yerr=stds, capsize=4, color="tab:blue",
                  label="this run")
    top = float(np.nanmax(means + stds)) if np.isfinite(means).any() else 1.0
    for b, m, sd in zip(bars, results, stds, strict=True):
        text = "—" if m.best is None else f"{m.best:.3f}"
        if m.collapsed:
            text += f"\n{m.collapsed}/{m.n_folds} collapsed" if m.n_folds > 1 else "\ncollapsed"
        if m.diverged:
            text += f"\n{m.diverged}/{m.n_folds} diverged" if m.n_folds > 1 else "\ndiverged"
        ax.annotate(text, (b.get_x() + b.get_width() / 2, b.get_height() + sd), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", **label_kw)
    if has_base:
        base = np.array([np.nan if names[i] not in rows or rows[names[i]]["baseline_best"] is None
                         else rows[names[i]]["baseline_best"] for i in range(len(names))], dtype=float)
        bb = ax.bar(x + width / 2, np.nan_to_num(base), width, color="0.75", hatch="//", edgecolor="0.4",
                    label=f"baseline: {baseline_label}" if baseline_label else "baseline")
        if np.isfinite(base).any():
            top = max(top, float(np.nanmax(base)))
        for b, name in zip(bb, names, strict=True):
            r = rows.get(name)
            if r is None or r["baseline_best"] is None:
                text = "no match"
            else:
                text = f"{r['baseline_best']:.3f}" + ("\ncollapsed" if r["baseline_collapsed"] else "")
            ax.annotate(text, (b.get_x() + b.get_width() / 2, b.get_height()), xytext=(0, 3),
                        textcoords="offset points", ha="center", va="bottom", **label_kw)
    ax.set_xticks(x, names, rotation=30 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    better = "higher" if mode != "min" else "lower"
    ax.set(ylabel=f"best {metric} ({better} is better)", title=f"best {metric} per model: mean ± std over folds")
    ax.set_ylim(0, top * (1.45 if crowded else 1.25) if top > 0 else 1.0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def write_plots(out_dir: Path, tasks: Sequence[TaskResult], results: Sequence[ModelResult],
                comp: dict[str, Any] | None, metric: str, mode: str, baseline_label: str | None = None
                ) -> list[Path]:
    """``learning_curves_<model>.png`` for each model with any epochs, then ``model_comparison.png``."""
    out_dir = Path(out_dir)
    written = []
    for m in results:
        own = [t for t in tasks if t.model == m.model]
        if any(t.history is not None and len(t.history) for t in own):
            written.append(learning_curves(out_dir / f"learning_curves_{_safe(m.model)}.png", m.model, own, metric))
    written.append(model_comparison(out_dir / "model_comparison.png", results, comp, metric, mode, baseline_label))
    return written
