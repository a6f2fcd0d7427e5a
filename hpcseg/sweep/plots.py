"""The sweep's two plots: the objective against trial (with the running best) and each parameter against
the objective. Built on ``matplotlib.figure.Figure`` with the Agg canvas, as hpcseg/plots.py does, so no
global backend is switched."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from hpcseg.fsutil import write_bytes_atomic

COLORS = {"completed": "tab:blue", "pruned": "tab:orange", "failed": "tab:red", "running": "tab:gray"}


def _save(fig: Any, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return write_bytes_atomic(path, buf.getvalue())


def write_sweep_plots(out_dir: Path, trials: list[Any], params: list[str], metric: str, mode: str) -> list[Path]:
    from matplotlib.figure import Figure

    scored = [t for t in sorted(trials, key=lambda t: t.order) if t.mean is not None]
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    best, xs, ys = None, [], []
    for i, t in enumerate(scored):
        ax.scatter([i], [t.mean], color=COLORS.get(t.status, "tab:purple"), zorder=3)
        if t.status == "completed":
            best = t.mean if best is None else (max if mode == "max" else min)(best, t.mean)
        if best is not None:
            xs.append(i)
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="black", linewidth=1, label="best so far")
        ax.legend(loc="best")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{metric} (mean over folds)")
    ax.set_title(f"objective vs trial ({', '.join(f'{k}: {v}' for k, v in COLORS.items())})", fontsize=8)
    files = [_save(fig, out_dir / "objective_vs_trial.png")]

    if params and scored:
        fig = Figure(figsize=(4 * len(params), 3.5))
        for j, p in enumerate(params):
            ax = fig.add_subplot(1, len(params), j + 1)
            vals = [t.params.get(p) for t in scored]
            numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals)
            if numeric:
                x = [float(v) for v in vals]
                if min(x) > 0 and max(x) / min(x) >= 100:
                    ax.set_xscale("log")
            else:
                cats = list(dict.fromkeys(str(v) for v in vals))
                x = [cats.index(str(v)) for v in vals]
                ax.set_xticks(range(len(cats)), cats)
            ax.scatter(x, [t.mean for t in scored], c=[COLORS.get(t.status, "tab:purple") for t in scored])
            ax.set_xlabel(p)
            if j == 0:
                ax.set_ylabel(metric)
        fig.tight_layout()
        files.append(_save(fig, out_dir / "params_vs_objective.png"))
    return files
