"""An Optuna sweep's array element: ask the study for a trial, train it, tell the result, until the
sweep's ``trials`` are done. Every trial of a worker runs in this one process, so torch, MONAI and
torchmetrics are imported once per worker instead of once per trial (benchmarks/sweep_overhead.py).

The study lives in ``RUN/sweep/study.journal`` (Optuna's JournalFileBackend with its open(O_EXCL) lock,
which holds on NFS and needs no database server). A trial's folds train into
``RUN/trials/t<number>/<model>/fold_<k>/`` with the ordinary trainer, so a worker that is requeued,
killed or resubmitted finds the trial it was running in ``current_trial.json``, asks the study for it
by number, and resumes it from its checkpoint: the trial is neither lost nor counted twice. A trial that
fails is told FAIL and does not count towards ``trials``, so another is asked for in its place.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hpcseg.fsutil import write_json_atomic
from hpcseg.sweep.leaderboard import SWEEP_DIR, TRIAL_JSON, TRIALS_DIR
from hpcseg.taskfiles import EXIT_OK, EXIT_REQUEUE, RESULT

log = logging.getLogger("hpcseg.sweep")
JOURNAL = "study.journal"
CURRENT = "current_trial.json"


def study_for(run_dir: Path, spec: Any, worker: int = 0) -> Any:
    """The run's study (created by the first worker to get here; the others load it)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep = spec.sweep
    path = str(Path(run_dir) / SWEEP_DIR / JOURNAL)
    Path(path).parent.mkdir(exist_ok=True)
    storage = optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    pruner: Any = {"median": optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
                   "hyperband": optuna.pruners.HyperbandPruner(min_resource=1, max_resource=spec.training.epochs),
                   "none": optuna.pruners.NopPruner()}[sweep.pruner]
    return optuna.create_study(study_name=spec.slug, storage=storage, load_if_exists=True,
                               direction="maximize" if spec.collection.mode == "max" else "minimize",
                               sampler=optuna.samplers.TPESampler(seed=sweep.seed + worker), pruner=pruner)


def suggest(trial: Any, spec: Any) -> dict[str, Any]:
    """The trial's value for each swept field (a resumed trial gets back what it was given)."""
    out: dict[str, Any] = {}
    for key, p in spec.sweep.params.items():
        if p.choice is not None:
            plain = all(v is None or isinstance(v, bool | int | float | str) for v in p.choice)
            if plain:
                out[key] = trial.suggest_categorical(key, p.choice)
            else:  # lists or mappings: Optuna stores primitives, so the choice's position stands in
                labels = [json.dumps(v, sort_keys=True) for v in p.choice]
                out[key] = p.choice[labels.index(trial.suggest_categorical(key, labels))]
        elif p.int is not None:
            out[key] = trial.suggest_int(key, *p.int)
        else:
            lo, hi = p.uniform or p.log_uniform
            out[key] = trial.suggest_float(key, lo, hi, log=p.log_uniform is not None)
    return out


@contextmanager
def _lock(path: Path):
    """One worker at a time between counting the trials and asking for a new one (flock, NFS-safe)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def next_trial(study: Any, spec: Any, worker_dir: Path) -> Any | None:
    """This worker's unfinished trial if it has one, else a new one while the sweep needs more; None when
    ``trials`` trials have completed, been pruned or are running elsewhere."""
    import optuna
    from optuna.trial import TrialState

    current = worker_dir / CURRENT
    with _lock(worker_dir.parent.parent / SWEEP_DIR / ".ask.lock"):
        try:
            mine = json.loads(current.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            mine = None
        trials = study.get_trials(deepcopy=False)
        if isinstance(mine, dict):
            match = [t for t in trials if t.number == mine.get("number")]
            if match and match[0].state == TrialState.RUNNING:
                log.info("resuming trial %d", match[0].number)
                return optuna.trial.Trial(study, match[0]._trial_id)
        counted = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING,
                                  TrialState.WAITING) for t in trials)
        failed = sum(t.state == TrialState.FAIL for t in trials)
        if counted >= spec.sweep.trials or failed >= spec.sweep.trials:
            current.unlink(missing_ok=True)
            return None
        trial = study.ask()
        write_json_atomic(current, {"number": trial.number})
        return trial


def _record(trial_dir: Path, rec: dict[str, Any]) -> None:
    trial_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(trial_dir / TRIAL_JSON, rec)


def _fold_result(task_dir: Path) -> dict[str, Any]:
    try:
        out = json.loads((task_dir / RESULT).read_text(encoding="utf-8"))
        return out if isinstance(out, dict) else {}
    except (OSError, ValueError):
        return {}


def run_trial(study: Any, trial: Any, plan: Any, spec: Any, run_dir: Path) -> int:
    """Train every fold of one trial and tell the study; returns EXIT_REQUEUE when interrupted (the trial
    stays RUNNING, to be resumed), else EXIT_OK (completed, pruned or failed: all told)."""
    from optuna.trial import TrialState

    from hpcseg.errors import HpcsegError
    from hpcseg.sweep.spec import apply_overrides
    from hpcseg.train.runner import TaskPlan, train

    params = suggest(trial, spec)
    trial_dir = run_dir / TRIALS_DIR / f"t{trial.number:04d}"
    rec = {"number": trial.number, "state": "running", "params": params, "worker": plan.task_index,
           "fold_values": [], "best_epoch": None, "value": None}
    _record(trial_dir, rec)
    try:
        tspec = apply_overrides(plan.spec.model_dump(mode="json"), params, f"trial {trial.number}")
    except HpcsegError as exc:  # check_values tried the ranges' ends; a combination may still be refused
        log.info("trial %d: %s", trial.number, exc.message)
        study.tell(trial, state=TrialState.FAIL)
        _record(trial_dir, rec | {"state": "failed", "reason": exc.message})
        return EXIT_OK
    folds, epochs = tspec.workload.split.folds, tspec.training.epochs
    model = tspec.model(plan.model.name)
    values: list[float | None] = []
    pruned = False
    for f in range(folds):
        def on_epoch(epoch: int, row: dict[str, float], f: int = f) -> bool:
            value = row.get(tspec.collection.metric)
            if value is None or not math.isfinite(value):
                return False
            trial.report(value, f * epochs + epoch)
            return trial.should_prune()

        fold_dir = trial_dir / model.name / f"fold_{f}"
        fplan = TaskPlan(tspec, model, f, fold_dir, run_dir, plan.deadline, task_index=plan.task_index,
                         run_id=plan.run_id, on_epoch=on_epoch)
        result = _fold_result(fold_dir)
        # Pruned before a kill kept the study from hearing it: the pruner's word stands, no more epochs.
        code = EXIT_OK if result.get("reason") == "pruned" else train(fplan)
        result = _fold_result(fold_dir)
        if code == EXIT_REQUEUE:
            return EXIT_REQUEUE
        values.append(result.get("best_value"))
        rec.update(fold_values=values, best_epoch=rec["best_epoch"] or result.get("best_epoch"))
        if code != EXIT_OK or result.get("best_value") is None:
            study.tell(trial, state=TrialState.FAIL)
            _record(trial_dir, rec | {"state": "failed", "reason": result.get("message") or f"exit {code}"})
            return EXIT_OK
        if result.get("reason") == "pruned":
            pruned = True
            break
    mean = sum(values) / len(values)  # type: ignore[arg-type]
    if pruned:
        study.tell(trial, state=TrialState.PRUNED)
        _record(trial_dir, rec | {"state": "pruned", "value": mean})
    else:
        study.tell(trial, mean)
        _record(trial_dir, rec | {"state": "completed", "value": mean})
    log.info("trial %d %s: %s %.4g with %s", trial.number, "pruned" if pruned else "completed",
             tspec.collection.metric, mean, params)
    return EXIT_OK


def run_worker(plan: Any) -> int:
    """The worker's loop (``hpcseg train --run RUN --task K`` of an Optuna sweep); returns the exit code."""
    from hpcseg.runs import open_run
    from hpcseg.train.runner import StopFlag, stop_signals

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    run = open_run(plan.splits_dir)
    spec = run.spec
    worker_dir = plan.task_dir
    worker_dir.mkdir(parents=True, exist_ok=True)
    study = study_for(run.dir, spec, plan.task_index or 0)
    flag = StopFlag()
    done = 0
    with stop_signals(flag):
        while not flag.signal:
            trial = next_trial(study, spec, worker_dir)
            if trial is None:
                break
            if run_trial(study, trial, plan, spec, run.dir) == EXIT_REQUEUE:
                log.info("worker %s: interrupted in trial %d; it resumes when this task runs again",
                         plan.task_index, trial.number)
                return EXIT_REQUEUE
            (worker_dir / CURRENT).unlink(missing_ok=True)
            done += 1
    if flag.signal:
        return EXIT_REQUEUE
    log.info("worker %s: no more trials to run (%d run here)", plan.task_index, done)
    return EXIT_OK
