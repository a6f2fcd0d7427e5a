"""``hpcseg collect``: one answer after the jobs end: which model is best, by how much, better than last time?

Reads every task's files (never the scheduler, which may have forgotten the job), and writes into the run
folder ``training_summary.csv`` (one row per model and fold), ``cv_results.json`` (statistics over folds),
``comparison.md`` (against a baseline) and ``plots/``. Unfinished tasks are rows with their status, not
errors, so collect can run at any time; every write is atomic and nothing in the CSV/JSON/MD depends on
the clock, so running it twice gives the same bytes.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from hpcseg.columns import SOFT_JACCARD
from hpcseg.compare import (
    ABS_TOL,
    REL_TOL,
    BaselineRef,
    ModelResult,
    _header,
    aggregate,
    collapsed_from_endpoints,
    compare_results,
    detect_collapse,
    detect_divergence,
    fmt_diff,
    fmt_ratio,
    fmt_value,
    headline,
    resolve_baseline,
)
from hpcseg.errors import EXIT_FAILED, HpcsegError
from hpcseg.evalsummary import EVAL_SUMMARY_CSV, keys_of, task_measures
from hpcseg.evalsummary import aggregate as aggregate_evaluation
from hpcseg.evalsummary import cell as eval_cell
from hpcseg.evalsummary import summary_csv as evaluation_csv
from hpcseg.fsutil import write_text_atomic
from hpcseg.printable import printable, rich_text
from hpcseg.runs import Run, find_run, runs_root
from hpcseg.spec import Task
from hpcseg.taskfiles import (
    EXIT_DAMAGED,
    RESULT_STATUSES,
    History,
    TaskResult,
    _json_num,
    canonical_metric,
    human_duration,
    keras_model_name,
    read_history,
    read_keras_history,
    read_summary,
    read_task_status,
    task_damage,
)

SUMMARY_CSV = "training_summary.csv"
CV_JSON = "cv_results.json"
COMPARISON_MD = "comparison.md"
PLOTS_DIR = "plots"
STD_DDOF = 1  # sample standard deviation over folds: the folds are a sample of possible splits


# --------------------------------------------------------------------------------------------- per task


def best_index(values: np.ndarray, mode: str) -> int | None:
    """Index of the best finite value (the first, on ties: the epoch the best checkpoint was saved)."""
    finite = np.isfinite(values)
    if not finite.any():
        return None
    if mode == "min":
        return int(np.argmin(np.where(finite, values, np.inf)))
    return int(np.argmax(np.where(finite, values, -np.inf)))


def summarize_history(h: History, metric: str, mode: str, exit_code: int | None = None
                      ) -> tuple[dict[str, Any], list[str]]:
    """Best/final metric, epochs, time and flags of one history (ours or a Keras one)."""
    out: dict[str, Any] = {"best_epoch": None, "best": None, "final": None, "epochs_run": len(h),
                           "train_time_s": None, "flags": []}
    warnings: list[str] = []
    secs = h.column("epoch_seconds")
    if secs is not None and len(h):
        with np.errstate(over="ignore", invalid="ignore"):
            total = float(np.nansum(secs))
        out["train_time_s"] = total if math.isfinite(total) else None
    diverged = detect_divergence(h.column("train_loss"), h.column("val_loss"), exit_code=exit_code)
    values = h.column(metric)
    if values is None:
        if len(h):
            warnings.append(f"{h.path}: no {metric} column (has: {', '.join(h.columns)})")
    elif len(h):
        i = best_index(values, mode)
        if i is not None:
            out["best_epoch"] = int(h.epochs[i])
            out["best"] = float(values[i])
        out["final"] = float(values[-1])
        if detect_collapse(values, mode):
            out["flags"].append("collapsed")
    if diverged:
        out["flags"].append("diverged")
    return out, warnings


def summarize_task(run: Run, task: Task, metric: str, mode: str, damaged: list[str] | None = None
                   ) -> tuple[TaskResult, list[str]]:
    """Status from the exit_code/result.json files, numbers from history.csv; nothing here raises.

    ``damaged`` collects one line per damaged file of the task (also among the returned warnings)."""
    d = run.task_dir(task)
    hist_path = d / "history.csv"
    h: History | None = None
    bad = task_damage(d)
    warnings: list[str] = list(bad)
    if not bad and hist_path.is_file():
        h = read_history(hist_path, label=f"{task.relpath}/history.csv")
        warnings += h.warnings
        bad += h.damage
    elif not bad and hist_path.exists():
        bad.append(f"{task.relpath}/history.csv: is not a regular file")
        warnings += bad[-1:]
    if damaged is not None:
        damaged += [f"{run.dir.parent.name}/{run.run_id}/{b}" if not b.startswith("/") else b for b in bad]
    status, reason, code = read_task_status(d, has_history=h is not None)
    t = TaskResult(task.index, task.label, task.fold, status, reason=reason, exit_code=code, history=h)
    if h is not None:
        h.path = Path(f"{task.relpath}/history.csv")  # short, run-relative name in messages
        vals, w = summarize_history(h, metric, mode, exit_code=code)
        warnings += w
        for k, v in vals.items():
            setattr(t, k, v)
    elif code == 4:
        t.flags.append("diverged")
    return t, warnings


def summarize_run(run: Run, metric: str, mode: str, damaged: list[str] | None = None
                  ) -> tuple[list[TaskResult], list[str]]:
    """Every task of the run, in array-index order (models in spec order, folds ascending)."""
    results, warnings = [], []
    tasks = run.tasks
    if (run.manifest.get("sweep") or {}).get("method") == "optuna":  # the trials, not the workers
        from hpcseg.sweep.leaderboard import trial_tasks

        tasks = trial_tasks(run)
    for task in sorted(tasks, key=lambda t: t.index):
        r, w = summarize_task(run, task, metric, mode, damaged)
        results.append(r)
        warnings += w
    return results, warnings


def model_order(tasks: list[TaskResult]) -> list[str]:
    return list(dict.fromkeys(t.model for t in tasks))


def model_results(tasks: list[TaskResult]) -> list[ModelResult]:
    """Per model, over the folds whose training ended with a result (completed or diverged)."""
    out = []
    for model in model_order(tasks):
        done = [t for t in tasks if t.model == model and t.status in RESULT_STATUSES]
        m = aggregate(model, [t.best for t in done], [t.final for t in done],
                      ["collapsed" in t.flags for t in done], ["diverged" in t.flags for t in done])
        m.folds = [t.best if t.status in RESULT_STATUSES else None for t in tasks if t.model == model]
        out.append(m)
    return out


# --------------------------------------------------------------------------------------------- outputs


def _num(v: float | None) -> str:
    """Shortest exact text of a float (history values come back exactly as written); empty for none."""
    if v is None:
        return ""
    return repr(float(v)) if math.isfinite(v) else str(float(v))


def summary_csv(tasks: list[TaskResult], metric: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "fold", "status", "best_epoch", f"best_{metric}", f"final_{metric}", "epochs_run",
                "train_time", "train_time_human", "flags", "reason"])
    for t in tasks:
        w.writerow([t.model, t.fold, t.status, "" if t.best_epoch is None else t.best_epoch, _num(t.best),
                    _num(t.final), t.epochs_run,
                    "" if t.train_time_s is None else f"{t.train_time_s:.1f}", human_duration(t.train_time_s),
                    ";".join(t.flags), " ".join((t.reason or "").split())])
    return buf.getvalue()


def cv_results(run: Run, tasks: list[TaskResult], results: list[ModelResult], metric: str, mode: str
               ) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for m in results:
        own = [t for t in tasks if t.model == m.model]
        vals = [v for v in m.folds if v is not None]
        models[m.model] = {
            "mean": _json_num(m.best), "std": _json_num(m.std),
            "min": min(vals) if vals else None, "max": max(vals) if vals else None,
            "n_folds": m.n_folds, "n_tasks": len(own),
            "folds": [_json_num(v) for v in m.folds],
            "final_mean": _json_num(m.final),
            "collapsed_folds": m.collapsed, "diverged_folds": m.diverged,
            "statuses": dict(sorted(Counter(t.status for t in own).items())),
        }
    ranked = [m for m in results if m.best is not None]
    best = None
    if ranked:
        best = (min if mode == "min" else max)(ranked, key=lambda m: m.best)  # first wins a tie
    return {
        "run_id": run.run_id, "job": run.job, "metric": metric, "mode": mode,
        "statistic": f"per fold: the best {metric} over epochs; over folds: mean, std, min, max of those",
        "std_ddof": STD_DDOF,
        "folds_counted": "tasks that ended with a training result (status completed or diverged)",
        "models": models,
        "best_model": best.model if best else None,
        "best_value": _json_num(best.best) if best else None,
    }


def comparison_md(run: Run, metric: str, mode: str, baseline: BaselineRef | None, comp: dict[str, Any] | None,
                  line: str | None, note: str | None, definitions: list[str] | None = None) -> str:
    label = f"{run.dir.parent.name}/{run.run_id}"
    if baseline is None or comp is None:
        return f"# Comparison: {label}\n\nNo baseline: {note or 'none given'}.\n"
    better = "higher" if mode != "min" else "lower"
    out = [
        f"# Comparison: {label} vs {baseline.label}",
        "",
        f"Metric: `{metric}` ({better} is better). Per model: the mean over finished folds of each fold's best "
        f"epoch (best) and last epoch (final). Unchanged: |difference| < {ABS_TOL} or < {REL_TOL:.0%} of the "
        f"baseline. Ratio: how many times better than the baseline.",
        "",
    ]
    if definitions:
        out += [*(f"- {d}" for d in definitions), ""]
    if line:
        out += [f"**{line}**", ""]
    out += ["| model | baseline best | baseline final | best | final | ratio | difference | verdict |",
            "|---|---|---|---|---|---|---|---|"]
    for r in comp["rows"]:
        bfinal = fmt_value(r["baseline_final"]) + (" (collapsed)" if r["baseline_collapsed"] else "")
        final = fmt_value(r["final"]) + (" (collapsed)" if r["collapsed"] else "") + \
            (" (diverged)" if r["diverged"] else "")
        best = fmt_value(r["best"]) + (f" ± {fmt_value(r['std'])}" if r["std"] is not None else "")
        out.append(f"| {r['model']} | {fmt_value(r['baseline_best'])} | {bfinal} | {best} | {final} | "
                   f"{fmt_ratio(r['ratio'])} | {fmt_diff(r['diff'])} | {r['verdict']} |")
    if comp["only_in_run"]:
        out += ["", f"Only in this run (no baseline to compare): {', '.join(comp['only_in_run'])}"]
    if comp["only_in_baseline"]:
        out += ["", f"Only in the baseline: {', '.join(comp['only_in_baseline'])}"]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------- baselines


def soft_twin(metric: str) -> str | None:
    """``val_jaccard`` → ``val_jaccard_soft``: the Keras ``jacard_coef`` definition of the same metric."""
    for prefix in ("val_", "train_"):
        if metric == f"{prefix}jaccard":
            return f"{prefix}{SOFT_JACCARD}"
    return None


def _has_values(results: list[ModelResult]) -> bool:
    return any(r.best is not None for r in results)


def like_with_like(run: Run, ref: BaselineRef, metric: str, mode: str, ours: list[ModelResult]
                   ) -> tuple[str, list[ModelResult], str, list[ModelResult], list[str]]:
    """(our column, our results, the baseline's column, its results, warnings): the same definition on
    both sides where the data allow it.

    A Keras history's ``val_jacard_coef`` is a soft Jaccard on probabilities (taskfiles reads it as
    ``val_jaccard_soft``), not our hard ``val_jaccard``: when the baseline lacks the job's metric but has
    its soft twin, both sides are compared on the twin. A run of ours recorded before hpcseg logged the
    soft Jaccard has no such column: then the hard values stand against the soft ones, and the caller
    says so.
    """
    base, warnings = load_baseline(ref, metric, mode)
    twin = soft_twin(metric)
    if _has_values(base) or twin is None:
        return metric, ours, metric, base, warnings
    twin_base, twin_warnings = load_baseline(ref, twin, mode)
    if not _has_values(twin_base):
        return metric, ours, metric, base, warnings
    twin_ours = model_results(summarize_run(run, twin, mode)[0])  # its warnings were given for `metric`
    if _has_values(twin_ours):
        return twin, twin_ours, twin, twin_base, twin_warnings
    return metric, ours, twin, twin_base, [*twin_warnings, f"this run has no {twin} column (recorded before hpcseg "
                                                           f"logged it): its {metric} is compared with the "
                                                           f"baseline's {twin}, a different definition"]


def _source_columns(ref: BaselineRef, column: str) -> list[str]:
    """The baseline's own column names that were read as ``column`` (``val_jacard_coef`` for a Keras file)."""
    if ref.kind == "run":
        return [column]
    found: dict[str, None] = {}
    for f in ref.files:
        try:
            head = _header(Path(f))
        except OSError:
            continue
        for c in head:
            if ref.kind == "summary":  # best_<metric> and final_<metric>: the best_ one names it
                if not c.startswith("best_"):
                    continue
                bare = c[len("best_"):]
            else:
                bare = c
            if canonical_metric(bare) == column:
                found[c] = None
    return list(found) or [column]


def definitions(ref: BaselineRef, metric: str, ours: str, theirs: str) -> list[str]:
    """comparison.md's statement of what each side's numbers mean."""
    from hpcseg.plots import metric_definition

    what = {"run": "an hpcseg run", "keras": "Keras history", "summary": "a training_summary.csv"}[ref.kind]
    cols = ", ".join(f"`{c}`" for c in _source_columns(ref, theirs))
    lines = [f"This run: {metric_definition(ours)[1]}.",
             f"Baseline ({what}, column {cols}): {metric_definition(theirs)[1]}."]
    if ours == theirs != metric:
        lines.append(f"The baseline has no `{metric}` (the job's collection.metric), so both sides are compared on "
                     f"`{ours}`: like with like.")
    elif ours != theirs:
        lines.append(f"**Not like with like**: this run has no `{theirs}` column (it was recorded before hpcseg "
                     f"logged it), so its `{ours}` stands against the baseline's `{theirs}`; retrain to compare "
                     f"the same definition.")
    return lines


def load_baseline(ref: BaselineRef, metric: str, mode: str) -> tuple[list[ModelResult], list[str]]:
    """The baseline's per-model results, the same way ours are computed, whatever it was stored as."""
    if ref.kind == "run":
        assert ref.run is not None
        tasks, warnings = summarize_run(ref.run, metric, mode)
        warnings = [f"baseline {ref.label}: {w}" for w in warnings]
        results = [m for m in model_results(tasks) if m.n_folds]
        return results, warnings
    if ref.kind == "keras":
        results, warnings = [], []
        for f in ref.files:
            h = read_keras_history(f)
            warnings += h.warnings
            s, w = summarize_history(h, metric, mode)
            warnings += w
            results.append(aggregate(keras_model_name(f), [s["best"]], [s["final"]],
                                     ["collapsed" in s["flags"]], ["diverged" in s["flags"]]))
        return results, warnings
    rows, warnings = read_summary(ref.files[0], metric)
    results = []
    for model in dict.fromkeys(r.model for r in rows):
        own = [r for r in rows if r.model == model and r.status in RESULT_STATUSES]
        collapsed = [("collapsed" in r.flags) if r.flags is not None
                     else collapsed_from_endpoints(r.best, r.final, mode) for r in own]
        diverged = [r.flags is not None and "diverged" in r.flags for r in own]
        results.append(aggregate(model, [r.best for r in own], [r.final for r in own], collapsed, diverged))
    return results, warnings


def collection_settings(run: Run) -> tuple[str, str, str | None]:
    """(metric, mode, baseline) from the manifest's recorded spec, read as plain data: a run recorded by an
    older hpcseg whose spec no longer validates can still be collected."""
    spec = run.manifest.get("spec") or {}
    coll = spec.get("collection") or {} if isinstance(spec, dict) else {}
    mode = coll.get("mode") if coll.get("mode") in ("max", "min") else "max"
    return str(coll.get("metric") or "val_jaccard"), mode, coll.get("baseline") or None


def _baseline(run: Run, against: str | None, root: Path) -> tuple[BaselineRef | None, str | None, list[str]]:
    """Resolve --against (errors are the user's to fix) or the spec's / previous run (missing: a note)."""
    if against:
        ref = resolve_baseline(against, run, root)
        return ref, (None if ref else f"no earlier finished run of {run.job}"), []
    wanted = collection_settings(run)[2]
    if wanted:
        try:
            ref = resolve_baseline(wanted, run, root)
        except HpcsegError as exc:
            return None, f"the job's collection.baseline: {exc.message}", [exc.message]
        return ref, (None if ref else f"no earlier finished run of {run.job}"), []
    ref = resolve_baseline("previous", run, root)
    return ref, (None if ref else f"no earlier finished run of {run.job}"), []


# --------------------------------------------------------------------------------------------- entry points


def collect_run(run: Run, against: str | None = None, *, plots: bool = True, root: Path | None = None
                ) -> dict[str, Any]:
    """Collect one run: write summary, CV statistics, comparison and plots into its folder; return them all.

    ``against``: ``previous``, a run id, run folder, job name or a folder of earlier histories; None uses
    the job's ``collection.baseline``, else the previous run (silently nothing when there is none).
    ``root``: the runs registry for baseline look-ups (default: the one the run lives in).
    Raises HpcsegError only for an ``against`` that names nothing readable.
    """
    metric, mode, _ = collection_settings(run)
    root = Path(root) if root else run.dir.parent.parent
    damaged: list[str] = []
    tasks, warnings = summarize_run(run, metric, mode, damaged)
    results = model_results(tasks)
    cv = cv_results(run, tasks, results, metric, mode)

    ref, note, w = _baseline(run, against, root)
    warnings += w
    evaluation = run_evaluation(run, tasks)
    base_evaluation = run_evaluation(ref.run) if ref is not None and ref.kind == "run" and ref.run else None
    for model, measures in evaluation.items():
        if model in cv["models"]:
            cv["models"][model]["evaluation"] = measures
    comp, line, defs = None, None, None
    compared = {"run": metric, "baseline": metric}
    plotted = results
    if ref is not None:
        try:
            ours_col, plotted, base_col, base, w = like_with_like(run, ref, metric, mode,
                                                                  _sweep_best(run, results, tasks, mode))
            compared = {"run": ours_col, "baseline": base_col}
            defs = definitions(ref, metric, ours_col, base_col)
            comp = compare_results(plotted, base, mode)
        except HpcsegError as exc:
            if against:
                raise  # the user named this baseline: refusing it is the answer
            warnings.append(exc.message)
            ref, note, comp, w = None, exc.message, None, []
            base, plotted, defs = [], results, None
        warnings += w
        if ref is not None and not any(b.best is not None for b in base):
            warnings.append(f"baseline {ref.label}: no {compared['baseline']} values in it")
        if comp is not None:
            line = _headline(comp, cv["best_model"])

    files = {"summary": run.dir / SUMMARY_CSV, "cv": run.dir / CV_JSON, "comparison": run.dir / COMPARISON_MD}
    sweep = None
    try:
        if run.manifest.get("sweep"):
            from hpcseg.sweep.leaderboard import write_sweep

            sweep = write_sweep(run, tasks, metric, mode, plots=plots)
        write_text_atomic(files["summary"], summary_csv(tasks, metric))
        write_text_atomic(files["cv"], json.dumps(cv, indent=2) + "\n")
        write_text_atomic(files["comparison"], comparison_md(run, compared["run"], mode, ref, comp, line, note,
                                                             defs))
        if evaluation:
            files["evaluation"] = run.dir / "eval" / EVAL_SUMMARY_CSV
            files["evaluation"].parent.mkdir(exist_ok=True)
            write_text_atomic(files["evaluation"], evaluation_csv(evaluation, base_evaluation))
        plot_files: list[Path] = []
        if plots:
            from hpcseg.plots import write_plots

            plot_files = write_plots(run.dir / PLOTS_DIR, tasks, plotted, comp, metric, mode,
                                     baseline_label=ref.label if ref else None, baseline_kind=ref.kind if ref else None,
                                     compared_metric=compared["run"])
    except PermissionError as exc:
        raise HpcsegError(f"{run.dir}: cannot write the results ({exc.strerror})", exit_code=EXIT_FAILED) from None
    return {
        "run_id": run.run_id, "job": run.job, "run_dir": str(run.dir), "metric": metric, "mode": mode,
        "summary": [t.row(metric) for t in tasks],
        "cv": cv,
        "baseline": None if ref is None else {"kind": ref.kind, "label": ref.label},
        "baseline_note": note,
        "compared_metric": compared,  # the column compared on each side (like with like where possible)
        "comparison": comp,
        "headline": line,
        "evaluation": evaluation,
        "baseline_evaluation": base_evaluation,
        "warnings": warnings,
        "damaged": damaged,
        "sweep": sweep,
        "files": {**{k: str(v) for k, v in files.items()}, "plots": [str(p) for p in plot_files]},
    }


def run_evaluation(run: Run, tasks: list[TaskResult] | None = None) -> dict[str, dict[str, Any]]:
    """Per model, each number the workload's evaluation wrote into result.json (hpcseg/evalsummary.py),
    over the folds that ended with a result; ``tasks`` (already summarised) saves reading statuses again."""
    status = {t.index: t.status for t in tasks} if tasks is not None else None
    rows = []
    for task in sorted(run.tasks, key=lambda t: t.index):
        d = run.task_dir(task)
        st = status.get(task.index) if status is not None else read_task_status(d, has_history=False)[0]
        rows.append((task.model, st or "", task_measures(d)))
    return aggregate_evaluation(rows)


def _sweep_best(run: Run, results: list[ModelResult], tasks: list[TaskResult], mode: str) -> list[ModelResult]:
    """For a sweep, the comparison is the leaderboard's best configuration against the baseline, under
    the model's own name (``c003/unet`` -> ``unet``), so it lines up with an ordinary run of the job."""
    if not run.manifest.get("sweep"):
        return results
    from hpcseg.sweep.leaderboard import best_label

    label = best_label(run, tasks, mode)
    return [_renamed(r, r.model.partition("/")[2] or r.model) for r in results if r.model == label]


def _renamed(r: ModelResult, model: str) -> ModelResult:
    import dataclasses

    return dataclasses.replace(r, model=model)


def _headline(comp: dict[str, Any], best_model: str | None) -> str | None:
    """The seed's line for the best model; if it has no baseline, for the best model that has one."""
    rows = [r for r in comp["rows"] if r["best"] is not None]
    if not rows:
        return None
    pick = next((r for r in rows if r["model"] == best_model), None)
    return headline(pick or rows[0], comp["rows"])


def print_report(result: dict[str, Any], console: Any = None, max_task_rows: int = 40) -> None:
    """The tables a person reads: tasks (or per-model CV when there are many), comparison, the headline.

    Every piece of user text (job, model and file names, reasons) goes in as a Rich ``Text``: shown as
    written, never parsed as markup, its control characters escaped."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    T = rich_text  # noqa: N806

    def row(tbl: Table, *cells: Any) -> None:
        tbl.add_row(*(T(c) for c in cells))

    if console is None:
        console = Console()
        if not console.is_terminal:  # piped or logged: do not squeeze the tables into 80 columns
            console = Console(width=140)
    metric, cv = result["metric"], result["cv"]
    tasks = result["summary"]
    if len(tasks) <= max_task_rows:
        t = Table(title=T(f"{result['job']} / {result['run_id']}: {len(tasks)} task(s)"))
        for c in ("model", "fold", "status", "best epoch", f"best {metric}", f"final {metric}", "epochs",
                  "time", "flags"):
            t.add_column(T(c), justify="right" if c not in ("model", "status", "flags") else "left")
        for r in tasks:
            row(t, r["model"], str(r["fold"]), r["status"], str(r["best_epoch"] or "—"),
                fmt_value(r[f"best_{metric}"]), fmt_value(r[f"final_{metric}"]), str(r["epochs_run"]),
                r["train_time_human"] or "—", ",".join(r["flags"]) or (r["reason"] or "")[:40])
        console.print(t)
    t = Table(title=T(f"cross-validated best {metric} (std ddof={cv['std_ddof']})"))
    for c in ("model", "mean", "std", "min", "max", "folds", "statuses"):
        t.add_column(c)
    for name, m in cv["models"].items():
        star = " *" if name == cv["best_model"] else ""
        row(t, name + star, fmt_value(m["mean"]), fmt_value(m["std"]), fmt_value(m["min"]),
            fmt_value(m["max"]), f"{m['n_folds']}/{m['n_tasks']}",
            ", ".join(f"{k} {v}" for k, v in m["statuses"].items()))
    console.print(t)
    comp = result["comparison"]
    if comp is None:
        console.print(T(f"no baseline: {result['baseline_note'] or 'none'}"))
    else:
        t = Table(title=T(f"vs {result['baseline']['label']}"))
        for c in ("model", "baseline best", "baseline final", "best", "final", "ratio", "diff", "verdict"):
            t.add_column(c)
        for r in comp["rows"]:
            row(t, r["model"], fmt_value(r["baseline_best"]),
                fmt_value(r["baseline_final"]) + (" (collapsed)" if r["baseline_collapsed"] else ""),
                fmt_value(r["best"]), fmt_value(r["final"]), fmt_ratio(r["ratio"]), fmt_diff(r["diff"]),
                r["verdict"])
        console.print(t)
        if comp["only_in_run"]:
            console.print(T(f"only in this run: {', '.join(comp['only_in_run'])}"))
        if comp["only_in_baseline"]:
            console.print(T(f"only in the baseline: {', '.join(comp['only_in_baseline'])}"))
        if result["headline"]:
            console.print(T(result["headline"], style="bold"))
    _print_evaluation(console, result.get("evaluation") or {}, result.get("baseline_evaluation"))
    if cv["best_model"]:
        console.print(Text.assemble("best model: ", T(cv["best_model"], style="bold"),
                                    f" ({printable(metric)} {fmt_value(cv['best_value'])})"))
    if result.get("sweep"):
        from hpcseg.sweep.leaderboard import print_sweep

        print_sweep(result["sweep"], console)
    console.print(T(f"wrote {result['files']['summary']}, {CV_JSON}, {COMPARISON_MD}"
                    + (f", {len(result['files']['plots'])} plot(s)" if result["files"]["plots"] else "")))


SHOWN_MEASURES = 14  # the console shows the top-level measures; the CSV and cv_results.json have them all


def _print_evaluation(console: Any, evaluation: dict[str, dict[str, Any]],
                      baseline: dict[str, dict[str, Any]] | None) -> None:
    """Workload evaluations side by side per model (calibration, operating points, thresholds ...)."""
    if not evaluation:
        return
    from rich.table import Table

    keys = [k for k in keys_of(evaluation) if k.count(".") <= 1 or k.endswith("_at_95_specificity")]
    t = Table(title=rich_text("evaluation with the best weights: mean ± std (folds)"
                              + ("; [baseline]" if baseline else "")))
    t.add_column("measure")
    for model in evaluation:
        t.add_column(rich_text(model))
    for key in keys[:SHOWN_MEASURES]:
        cells = []
        for model, measures in evaluation.items():
            text = eval_cell(measures.get(key))
            if baseline and model in baseline and baseline[model].get(key):
                text += f" [{eval_cell(baseline[model][key])}]"
            cells.append(rich_text(text))
        t.add_row(rich_text(key), *cells)
    console.print(t)
    if len(keys_of(evaluation)) > SHOWN_MEASURES:
        console.print(rich_text(f"all {len(keys_of(evaluation))} measures: eval/{EVAL_SUMMARY_CSV}"))


def cli_collect(args: argparse.Namespace) -> int:
    """``hpcseg collect RUN [--against ...] [--json]``: 0 when collected (even with failed tasks), 2 for bad
    input, 5 when collected but some task files were damaged (each named in one line on stderr)."""
    root = runs_root(getattr(args, "runs_dir", None))
    run = find_run(args.run, root)
    from hpcseg.runs import record_requeues

    record_requeues(run)  # events.log -> the manifest's `requeues`, as status does
    result = collect_run(run, getattr(args, "against", None),
                         root=root if getattr(args, "runs_dir", None) else None)
    from hpcseg.report import write_report  # the HTML report beside the CSV/JSON/MD (docs/report.md)

    result["files"]["report"] = str(write_report(run, result))
    damaged = set(result["damaged"])
    for d in result["damaged"]:
        print(f"hpcseg collect: damaged: {printable(d)}", file=sys.stderr)
    shown = [w for w in result["warnings"] if w not in damaged and not any(w in d for d in damaged)]
    for w in shown[:20]:
        print(f"hpcseg collect: warning: {printable(w)}", file=sys.stderr)
    if len(shown) > 20:
        print(f"hpcseg collect: ... and {len(shown) - 20} more warning(s)", file=sys.stderr)
    if getattr(args, "json", False):
        out = {k: v for k, v in result.items() if k != "warnings"} | {"warnings": result["warnings"]}
        print(json.dumps(out, indent=2))
    else:
        print_report(result)
        print(f"report: {printable(result['files']['report'])}")
    return EXIT_DAMAGED if result["damaged"] else 0
