"""What a sweep's user reads: the leaderboard, ``best.yaml`` and the plots under ``RUN/sweep/``, and the
one-line summary ``hpcseg status`` shows.

Everything is read from files (task histories for grid/random, each Optuna trial's ``trial.json``), never
from the scheduler or the study's database, so it works after the scheduler has forgotten the job and
``hpcseg status`` needs no optuna import.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SWEEP_DIR = "sweep"
LEADERBOARD = "leaderboard.csv"
BEST_YAML = "best.yaml"
TRIAL_JSON = "trial.json"
TRIALS_DIR = "trials"
#: trial states, as status counts them
STATES = ("completed", "running", "pruned", "failed", "pending")


@dataclass
class Trial:
    """One configuration of a sweep (a grid/random config × model, or an Optuna trial)."""

    name: str
    model: str
    params: dict[str, Any]
    values: list[float | None] = field(default_factory=list)  # the objective per fold (None: no result)
    status: str = "pending"
    best_epoch: int | None = None
    order: int = 0

    @property
    def mean(self) -> float | None:
        vals = [v for v in self.values if v is not None and math.isfinite(v)]
        return sum(vals) / len(vals) if vals else None

    @property
    def std(self) -> float | None:
        vals = [v for v in self.values if v is not None and math.isfinite(v)]
        if len(vals) < 2:
            return 0.0 if vals else None
        m = sum(vals) / len(vals)
        return math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def _fold_status(statuses: list[str]) -> str:
    if statuses and all(s == "completed" for s in statuses):
        return "completed"
    for s in ("running", "failed", "diverged", "interrupted", "pending", "cancelled"):
        if s in statuses:
            return s
    return statuses[0] if statuses else "pending"


def grid_trials(manifest: dict[str, Any], tasks: list[Any]) -> list[Trial]:
    """Grid/random trials from collect's TaskResults (labelled ``config/model``)."""
    cfgs = (manifest.get("sweep") or {}).get("configs") or {}
    by_key: dict[tuple[str, str], list[Any]] = {}
    for t in tasks:
        config, _, model = t.model.partition("/")
        by_key.setdefault((config, model), []).append(t)
    out = []
    for i, ((config, model), ts) in enumerate(by_key.items()):
        ts.sort(key=lambda t: t.fold)
        done = [t for t in ts if t.best is not None]
        best_fold = done[0] if done else None
        out.append(Trial(config, model, dict(cfgs.get(config, {})), [t.best for t in ts],
                         _fold_status([t.status for t in ts]), best_fold.best_epoch if best_fold else None, i))
    return out


def read_trial_records(run_dir: Path) -> list[dict[str, Any]]:
    """Every ``trials/<n>/trial.json`` an Optuna worker wrote, in trial order (damaged ones skipped)."""
    root = Path(run_dir) / TRIALS_DIR
    out = []
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    for d in entries:
        try:
            rec = json.loads((d / TRIAL_JSON).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and isinstance(rec.get("number"), int):
            out.append(rec)
    return sorted(out, key=lambda r: r["number"])


def optuna_trials(manifest: dict[str, Any], run_dir: Path) -> list[Trial]:
    model = manifest["tasks"][0]["model"] if manifest.get("tasks") else ""
    return [Trial(f"t{r['number']:04d}", model, dict(r.get("params") or {}), list(r.get("fold_values") or []),
                  str(r.get("state") or "running"), r.get("best_epoch"), r["number"])
            for r in read_trial_records(run_dir)]


def ranked(trials: list[Trial], mode: str) -> list[Trial]:
    """Best first; trials without a value last, in their own order. Pruned trials rank after finished ones
    (their value is from fewer epochs)."""
    def key(t: Trial) -> tuple:
        m = t.mean
        if m is None:
            return (2, 0.0, t.order)
        return (1 if t.status == "pruned" else 0, -m if mode == "max" else m, t.order)
    return sorted(trials, key=key)


def best_trial(trials: list[Trial], mode: str) -> Trial | None:
    done = [t for t in trials if t.status == "completed" and t.mean is not None]
    return ranked(done, mode)[0] if done else None


def leaderboard_csv(trials: list[Trial], params: list[str], metric: str, mode: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", "config", "model", *params, f"mean_{metric}", f"std_{metric}", "folds", "best_epoch",
                "status"])
    for i, t in enumerate(ranked(trials, mode), start=1):
        m, s = t.mean, t.std
        w.writerow([i, t.name, t.model, *(_cell(t.params.get(p)) for p in params),
                    "" if m is None else repr(m), "" if s is None else repr(s),
                    f"{sum(v is not None for v in t.values)}/{len(t.values)}",
                    "" if t.best_epoch is None else t.best_epoch, t.status])
    return buf.getvalue()


def _cell(v: Any) -> str:
    return "" if v is None else (repr(v) if isinstance(v, float) else str(v))


def best_overlay(best: Trial, metric: str, mode: str) -> str:
    """``best.yaml``: the best configuration's field paths and values, which ``--set-file`` applies."""
    head = (f"# hpcseg sweep: best configuration {best.name} ({best.model}), {metric} ({mode}) "
            f"mean {best.mean!r} over {len(best.values)} fold(s)\n"
            f"# apply with: hpcseg submit JOB --set-file best.yaml (sweep: null makes it one ordinary run)\n")
    return head + yaml.safe_dump({**best.params, "sweep": None}, sort_keys=False, default_flow_style=False)


def trials_of(run: Any, tasks: list[Any] | None) -> list[Trial]:
    m = run.manifest
    if (m.get("sweep") or {}).get("method") == "optuna":
        return optuna_trials(m, run.dir)
    return grid_trials(m, tasks or [])


def write_sweep(run: Any, tasks: list[Any], metric: str, mode: str, plots: bool = True) -> dict[str, Any]:
    """Write ``sweep/leaderboard.csv``, ``sweep/best.yaml`` and the plots; return what collect reports."""
    from hpcseg.fsutil import write_text_atomic

    sweep = run.manifest.get("sweep") or {}
    params = list(sweep.get("params") or [])
    trials = trials_of(run, tasks)
    out_dir = run.dir / SWEEP_DIR
    out_dir.mkdir(exist_ok=True)
    files = [write_text_atomic(out_dir / LEADERBOARD, leaderboard_csv(trials, params, metric, mode))]
    best = best_trial(trials, mode)
    if best is not None:
        files.append(write_text_atomic(out_dir / BEST_YAML, best_overlay(best, metric, mode)))
    if plots and trials:
        from hpcseg.sweep.plots import write_sweep_plots

        files += write_sweep_plots(out_dir, trials, params, metric, mode)
    counts = {s: sum(t.status == s for t in trials) for s in STATES}
    return {"method": sweep.get("method"), "trials": len(trials), "counts": counts,
            "best": None if best is None else {"config": best.name, "model": best.model, "params": best.params,
                                               "mean": best.mean, "std": best.std},
            "files": [str(f) for f in files]}


def status_line(manifest: dict[str, Any], run_dir: Path, views: list[Any] | None = None) -> str | None:
    """``sweep: 4/6 trials done (1 running, 1 pruned, 0 failed); best c002 0.81 {training.lr: 0.001}``.

    Grid/random trials come from status's own task views (state and best value per task), Optuna's from
    the trial records; nothing else is read."""
    sweep = manifest.get("sweep")
    if not sweep:
        return None
    mode = ((manifest.get("spec") or {}).get("collection") or {}).get("mode") or "max"
    if sweep.get("method") == "optuna":
        trials = optuna_trials(manifest, run_dir)
        planned = sweep.get("trials") or len(trials)
    else:
        cfgs = sweep.get("configs") or {}
        groups: dict[tuple[str, str], list[Any]] = {}
        for t, v in zip(manifest["tasks"], views or [], strict=False):
            groups.setdefault((t.get("config"), t["model"]), []).append(v)
        trials = []
        for i, ((config, model), vs) in enumerate(groups.items()):
            states = [_view_state(v) for v in vs]
            trials.append(Trial(config, model, dict(cfgs.get(config, {})), [_view_best(v) for v in vs],
                                _fold_status(states), None, i))
        planned = len(trials)
    c = {s: sum(t.status == s for t in trials) for s in STATES}
    failed = sum(t.status not in STATES for t in trials) + c["failed"]
    done = c["completed"] + c["pruned"] + failed
    text = (f"sweep ({sweep.get('method')}): {done}/{planned} trial(s) done: {c['completed']} completed, "
            f"{c['running']} running, {c['pruned']} pruned, {failed} failed")
    best = best_trial(trials, mode)
    if best is not None:
        params = ", ".join(f"{k}={_cell(v)}" for k, v in best.params.items())
        text += f"; best {best.name} {best.mean:.4g} ({params})"
    return text


def _view_state(v: Any) -> str:
    s = getattr(v, "state", None) or "pending"
    return "running" if s in ("running", "requeued", "preempted") else s


def _view_best(v: Any) -> float | None:
    b = getattr(v, "best", None)
    return float(b) if isinstance(b, int | float) and not isinstance(b, bool) else None


def print_sweep(sweep: dict[str, Any], console: Any) -> None:
    """collect's lines for a sweep: the counts, the best configuration and where the files are."""
    from hpcseg.printable import rich_text

    c = sweep["counts"]
    console.print(rich_text(f"sweep ({sweep['method']}): {sweep['trials']} trial(s): "
                            + ", ".join(f"{v} {k}" for k, v in c.items() if v)))
    if sweep["best"]:
        b = sweep["best"]
        console.print(rich_text(f"best config {b['config']} ({b['model']}): mean {b['mean']:.4g} ± "
                                f"{(b['std'] or 0):.2g}; {b['params']}", style="bold"))
    for f in sweep["files"]:
        console.print(rich_text(f"  {f}"))


def trial_tasks(run: Any) -> list[Any]:
    """An Optuna run's trial folds as tasks (``t0003/unet`` fold k), which collect summarises instead of
    the workers: each trial's histories are then in training_summary.csv, cv_results.json and the plots."""
    from hpcseg.spec import Task

    out: list[Any] = []
    for rec in read_trial_records(run.dir):
        name = f"t{rec['number']:04d}"
        for model_dir in sorted((run.dir / TRIALS_DIR / name).glob("*/fold_*")):
            try:
                fold = int(model_dir.name.removeprefix("fold_"))
            except ValueError:
                continue
            rel = f"{TRIALS_DIR}/{name}/{model_dir.parent.name}/{model_dir.name}"
            out.append(Task(len(out), model_dir.parent.name, fold, config=name, dir=rel))
    return out


def best_label(run: Any, tasks: list[Any], mode: str) -> str | None:
    """``config/model`` of the leaderboard's best completed configuration (what the comparison uses)."""
    best = best_trial(trials_of(run, tasks), mode)
    return None if best is None else f"{best.name}/{best.model}"
