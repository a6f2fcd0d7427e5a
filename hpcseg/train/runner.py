"""``hpcseg train``: one model on one fold, resumable at any batch, with the exit codes of docs/formats.md.

The job script runs ``hpcseg train --run RUN_DIR --task K`` on the compute node; people run
``hpcseg train JOB --model M --fold F --out DIR`` by hand. Both end in :func:`train`.

What a task folder holds after each epoch, in this order: checkpoint_last.pt (everything needed to
continue), then one new history.csv row. A kill between the two is healed on resume from the row kept
in the checkpoint, and rows beyond the checkpoint are dropped, so no epoch is ever recorded twice or lost.
A signal (SIGUSR1 before the walltime, SIGTERM on preemption) or the deadline ends the current batch,
writes a mid-epoch checkpoint and exits 75; batch order, augmentation and dropout are pure functions of
(seed, epoch, batch), so the resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcseg.errors import HpcsegError
from hpcseg.fsutil import write_json_atomic
from hpcseg.spec import JobSpec, ModelSpec, TrainingSpec

# The task files (history.csv, result.json, exit codes) have one owner: hpcseg/taskfiles.py.
from hpcseg.taskfiles import (
    EXIT_FAILED,
    EXIT_REQUEUE,
    RESULT,
)
from hpcseg.taskfiles import TRAIN_LOG as LOG

log = logging.getLogger("hpcseg.train")


# --------------------------------------------------------------------------------------------- CLI


@dataclass
class TaskPlan:
    """Everything that says which training to run and where its files go."""

    spec: JobSpec
    model: ModelSpec
    fold: int
    task_dir: Path
    splits_dir: Path
    deadline: float | None = None  # absolute time.time() after which to checkpoint and stop
    task_index: int | None = None
    run_id: str | None = None
    worker: bool = False  # an Optuna sweep's worker: loops over trials (hpcseg/sweep/worker.py)
    # Called after each epoch's checkpoint with (epoch, history row); True stops the task as "pruned".
    on_epoch: Callable[[int, dict[str, float]], bool] | None = None


def cli_train(args: argparse.Namespace) -> int:
    started = time.time()
    plan = plan_from_args(args, started)
    if plan.worker:
        from hpcseg.sweep.worker import run_worker

        return run_worker(plan)
    return train(plan)


def plan_from_args(args: argparse.Namespace, started: float | None = None) -> TaskPlan:
    started = started or time.time()
    deadline = _deadline(getattr(args, "deadline", None), started)
    if getattr(args, "run_dir", None):
        from hpcseg.runs import open_run

        if args.overrides or args.profile or args.job:
            raise HpcsegError("train --run: the run's manifest fixes the job; drop JOB, --profile and --set")
        run = open_run(args.run_dir)
        index = args.task if args.task is not None else _array_index()
        if index is None:
            raise HpcsegError("train --run needs --task K (or SLURM_ARRAY_TASK_ID / PBS_ARRAY_INDEX)")
        tasks = run.tasks
        if not 0 <= index < len(tasks):
            raise HpcsegError(f"{run.dir}: task {index} does not exist; this run has tasks 0..{len(tasks) - 1}")
        task = tasks[index]
        spec = run.spec
        if task.config is not None:  # a sweep's task: its config's overrides, or an Optuna worker
            from hpcseg.sweep.expand import task_spec

            spec = task_spec(run, task)
            if spec is None:
                return TaskPlan(run.spec, run.spec.model(task.model), 0, run.task_dir(task), run.dir, deadline,
                                task_index=index, run_id=run.run_id, worker=True)
        return TaskPlan(spec, spec.model(task.model), task.fold, run.task_dir(task), run.dir, deadline,
                        task_index=index, run_id=run.run_id)
    if not args.job:
        raise HpcsegError("train: give a JOB (interactive) or --run RUN_DIR --task K (batch)")
    from hpcseg.spec import find_job, load_job, with_absolute_paths

    spec = with_absolute_paths(load_job(find_job(args.job), args.profile, args.overrides).spec)
    model = spec.model(args.model) if args.model else spec.workload.models[0]
    if not args.out:
        raise HpcsegError("train: interactive use needs --out DIR (the task folder to write)")
    if not 0 <= args.fold < spec.workload.split.folds:
        raise HpcsegError(f"train: --fold {args.fold} does not exist; the job has "
                          f"{spec.workload.split.folds} fold(s)")
    out = Path(args.out).resolve()
    return TaskPlan(spec, model, args.fold, out, out, deadline)


def _array_index() -> int | None:
    for var in ("SLURM_ARRAY_TASK_ID", "PBS_ARRAY_INDEX", "PBS_ARRAYID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return None


def _deadline(seconds: float | None, started: float) -> float | None:
    """The earlier of --deadline (seconds from start) and $HPCSEG_DEADLINE (absolute epoch time): PBS
    sends no warning signal before the walltime, so the job script exports its end time instead."""
    candidates = []
    if seconds is not None:
        candidates.append(started + seconds)
    env = os.environ.get("HPCSEG_DEADLINE")
    if env:
        try:
            candidates.append(float(env))
        except ValueError:
            raise HpcsegError(f"HPCSEG_DEADLINE={env!r}: expected seconds since the epoch") from None
    return min(candidates) if candidates else None


# --------------------------------------------------------------------------------------------- logging


@contextmanager
def task_logging(task_dir: Path, rank: int = 0):
    """Plain lines to stdout and to task_dir/train.log (appended across resumes).

    A task folder that cannot be made or written (read-only mount, a file in the way, no space) is one
    clear line and exit 1 before anything else is touched, not a traceback from the first write.
    Data-parallel ranks other than 0 write no file and print only warnings and their own failure,
    prefixed with their rank, so the scheduler's log is rank 0's story plus what went wrong elsewhere."""
    if rank:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(f"%(asctime)s rank {rank}: %(message)s", "%Y-%m-%d %H:%M:%S"))
        old_level, old_propagate = log.level, log.propagate
        log.addHandler(handler)
        log.setLevel(logging.WARNING)
        log.propagate = False
        try:
            yield
        finally:
            log.removeHandler(handler)
            log.setLevel(old_level)
            log.propagate = old_propagate
        return
    try:
        task_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(task_dir / LOG, encoding="utf-8")
    except OSError as exc:
        raise HpcsegError(f"{task_dir}: cannot write the task folder ({exc.strerror or exc}); the run folder "
                          f"must be writable from this node", exit_code=EXIT_FAILED) from None
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout), file_handler]
    for h in handlers:
        h.setFormatter(fmt)
        log.addHandler(h)
    old_level, old_propagate = log.level, log.propagate
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield
    finally:
        for h in handlers:
            log.removeHandler(h)
            h.close()
        log.setLevel(old_level)
        log.propagate = old_propagate


class StopFlag:
    """Set by SIGUSR1/SIGTERM; the loop polls it after every batch."""

    def __init__(self) -> None:
        self.signal: str | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.signal is None:
            self.signal = signal.Signals(signum).name
            log.info("received %s: finishing this batch, then checkpoint and exit %d", self.signal, EXIT_REQUEUE)


@contextmanager
def stop_signals(flag: StopFlag):
    previous = {}
    for sig in (signal.SIGUSR1, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, flag)
        except ValueError:  # not the main thread (e.g. called from a test thread): no handlers
            pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------------------------- history


# --------------------------------------------------------------------------------------------- schedule


def lr_at(tr: TrainingSpec, epoch: int) -> float:
    """Learning rate of a (1-based) epoch. Warm-up over warmup_epochs: ``linear`` ramps from
    warmup_factor×lr towards lr; ``constant`` holds warmup_factor×lr flat (seed 000's "2 epochs at 0.1×").
    Then constant or cosine towards zero at the end. A pure function of the epoch, so resume needs no state."""
    w = tr.warmup_epochs
    if w and epoch <= w:
        if tr.warmup_mode == "constant":
            return tr.lr * tr.warmup_factor
        return tr.lr * (tr.warmup_factor + (1.0 - tr.warmup_factor) * (epoch - 1) / w)
    if tr.schedule == "cosine":
        t = (epoch - w - 1) / max(tr.epochs - w, 1)
        return tr.lr * 0.5 * (1.0 + math.cos(math.pi * t))
    return tr.lr


@dataclass
class EarlyStopping:
    mode: str
    patience: int | None
    min_delta: float
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped: bool = False

    def update(self, value: float, epoch: int) -> bool:
        """Record an epoch's metric; True when it is a new best."""
        if math.isnan(value):
            improved = False
        elif self.best is None:
            improved = True
        elif self.mode == "max":
            improved = value > self.best + self.min_delta
        else:
            improved = value < self.best - self.min_delta
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
            if self.patience is not None and self.bad_epochs >= self.patience:
                self.stopped = True
        return improved

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "stopped": self.stopped}


# --------------------------------------------------------------------------------------------- training


@dataclass
class Outcome:
    reason: str
    code: int
    message: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def train(plan: TaskPlan) -> int:
    """Run (or resume) the task; returns the exit code. result.json is written on every way out."""
    from hpcseg.train.distributed import from_env

    started = time.time()
    dist = from_env()
    with task_logging(plan.task_dir, dist.rank):
        info: dict[str, Any] = {}
        flag = StopFlag()  # handlers first: a SIGUSR1 during data loading must not kill the task
        try:
            with stop_signals(flag):
                outcome = _train(plan, info, flag, dist)
        except HpcsegError as exc:
            for line in exc.lines()[1:]:
                log.info("%s", line)
            log.info("failed: %s", exc.message)
            outcome = Outcome("failed", exc.exit_code, exc.message)
        except Exception as exc:  # a bug or a broken node: keep the traceback, end on the reason
            full = _no_space(exc)
            if full is not None:  # a full disk is not a bug: say which file, no traceback
                message = f"{full.filename or plan.task_dir}: cannot write, the disk is full ({full.strerror})"
            else:
                log.info("%s", traceback.format_exc().rstrip())
                message = f"{exc.__class__.__name__}: {exc}"
            log.info("failed: %s", message)
            outcome = Outcome("failed", EXIT_FAILED, message)
        if dist.is_main:
            _write_result(plan, info, outcome, started)
        elif outcome.reason == "failed":
            log.warning("failed: %s", outcome.message)
        if outcome.reason != "failed":
            dist.close()  # every rank got here together; after a failure the launcher ends the others
        log.info("exit %d (%s)", outcome.code, outcome.reason)
        return outcome.code


def _no_space(exc: BaseException) -> OSError | None:
    from hpcseg.train.checkpoint import no_space

    return no_space(exc)


def _write_result(plan: TaskPlan, info: dict[str, Any], outcome: Outcome, started: float) -> None:
    es: EarlyStopping | None = info.get("es")
    rows = info.get("rows") or []
    best_row = next((r for r in rows if es and r["epoch"] == es.best_epoch), None)
    result = {
        "reason": outcome.reason,
        "exit_code": outcome.code,
        "message": outcome.message,
        "job": plan.spec.name,
        "run_id": plan.run_id,
        "task_index": plan.task_index,
        "model": plan.model.name,
        "arch": plan.model.arch,
        "fold": plan.fold,
        "metric": plan.spec.collection.metric,
        "mode": plan.spec.collection.mode,
        "best_epoch": es.best_epoch if es else None,
        "best_value": es.best if es else None,
        "best": best_row,
        "final": rows[-1] if rows else None,
        "epochs_run": len(rows),
        "epochs_planned": plan.spec.training.epochs,
        "train_seconds": round(info.get("train_seconds", 0.0), 3),
        "attempt_seconds": round(time.time() - started, 3),
        "attempts": info.get("attempts", 1),
        "n_train": info.get("n_train"),
        "n_val": info.get("n_val"),
        "params": info.get("params"),
        "parameters": info.get("params"),  # the same count under its full name (issue 12)
        "model_details": info.get("model_details"),  # e.g. which Mamba path ran
        "loss": info.get("loss"),  # what weighs the loss: class weights, pixel weights (Trainer.log_loss_weights)
        "train_images_per_second": _speed(info.get("speed") or []),
        "device": info.get("device"),
        "torch": info.get("torch"),
        "host": socket.gethostname(),
        "python": sys.executable,  # inside a container, the image's interpreter (tests prove where it ran)
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "extra": outcome.extra,
    }
    try:
        write_json_atomic(plan.task_dir / RESULT, result)
    except OSError as exc:
        log.info("could not write %s: %s", RESULT, exc)


def _speed(epochs: list[tuple[int, float]]) -> float | None:
    """Training images per second over this attempt's epochs, the first left out when there are more
    (it pays for allocator warm-up and cuDNN autotuning)."""
    use = epochs[1:] if len(epochs) > 1 else epochs
    seconds = sum(s for _, s in use)
    return round(sum(n for n, _ in use) / seconds, 2) if seconds > 0 else None


def _train(plan: TaskPlan, info: dict[str, Any], flag: StopFlag, dist: Any = None) -> Outcome:
    """The loop itself lives in :mod:`hpcseg.train.loop` as a Trainer with hooks; a workload may register
    its own subclass there (e.g. to add an evaluation at the end)."""
    from hpcseg.train.loop import trainer_class

    trainer = trainer_class(plan.spec.workload.dataset.layout)(plan, info, flag, dist)
    try:
        return trainer.run()
    finally:
        trainer.close()
