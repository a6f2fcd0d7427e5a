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
import io
import logging
import math
import os
import random
import signal
import socket
import sys
import time
import traceback
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpcseg.errors import HpcsegError
from hpcseg.fsutil import write_json_atomic, write_text_atomic
from hpcseg.spec import JobSpec, ModelSpec, TrainingSpec

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_REQUEUE = 0, 1, 2, 4, 75
HISTORY, RESULT, LOG = "history.csv", "result.json", "train.log"

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


def cli_train(args: argparse.Namespace) -> int:
    started = time.time()
    plan = plan_from_args(args, started)
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
def task_logging(task_dir: Path):
    """Plain lines to stdout and to task_dir/train.log (appended across resumes).

    A task folder that cannot be made or written (read-only mount, a file in the way, no space) is one
    clear line and exit 1 before anything else is touched, not a traceback from the first write."""
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


def read_history(path: Path, columns: list[str]) -> list[dict[str, float]]:
    """Complete rows only (a last line cut by a kill is skipped)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    if not lines:
        return []
    header = lines[0].split(",")
    if header != columns:
        raise HpcsegError(f"{path}: its columns ({','.join(header)}) are not this task's ({','.join(columns)}); "
                          f"was the task folder reused for another job? move it away")
    complete = lines[1:] if text.endswith("\n") else lines[1:-1]
    rows = []
    for line in complete:
        parts = line.split(",")
        if len(parts) != len(columns):
            continue
        try:
            rows.append({c: float(v) for c, v in zip(columns, parts, strict=True)})
        except ValueError:
            continue
    return rows


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
    buf = io.StringIO()
    buf.write(",".join(columns) + "\n")
    for r in rows:
        buf.write(format_row(r, columns))
    write_text_atomic(path, buf.getvalue())


def append_history(path: Path, row: dict[str, float], columns: list[str]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(format_row(row, columns))
        fh.flush()
        os.fsync(fh.fileno())


# --------------------------------------------------------------------------------------------- schedule


def lr_at(tr: TrainingSpec, epoch: int) -> float:
    """Learning rate of a (1-based) epoch: linear warm-up from warmup_factor×lr over warmup_epochs, then
    constant or cosine towards zero at the end. A pure function of the epoch, so resume needs no state."""
    w = tr.warmup_epochs
    if w and epoch <= w:
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
    started = time.time()
    with task_logging(plan.task_dir):
        info: dict[str, Any] = {}
        flag = StopFlag()  # handlers first: a SIGUSR1 during data loading must not kill the task
        try:
            with stop_signals(flag):
                outcome = _train(plan, info, flag)
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
        _write_result(plan, info, outcome, started)
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
        "train_images_per_second": _speed(info.get("speed") or []),
        "device": info.get("device"),
        "torch": info.get("torch"),
        "host": socket.gethostname(),
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


def _setup_torch(spec: JobSpec):
    """Device, threads, determinism and seeds. Imported here so the CLI stays light for other verbs."""
    import torch

    want = os.environ.get("HPCSEG_DEVICE", "").strip().lower()
    if want and want != "cpu" and not torch.cuda.is_available():
        raise HpcsegError(f"HPCSEG_DEVICE={want} but torch sees no CUDA device on this node")
    device = torch.device(want or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    try:
        granted = int(os.environ.get("HPCSEG_CPUS", spec.resources.cpus))
    except ValueError:
        granted = spec.resources.cpus
    # HPCSEG_MAX_THREADS: a site's (or the local test cluster's TaskProlog) word on the real share of cores,
    # for nodes that advertise more CPUs than they have; oversubscribed spinning threads cost 5x here.
    try:
        ceiling = int(os.environ.get("HPCSEG_MAX_THREADS", "0")) or cores
    except ValueError:
        ceiling = cores
    threads = max(1, min(granted, cores, ceiling, os.cpu_count() or 1))
    torch.set_num_threads(threads)
    seed = spec.workload.seed
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if device.type == "cuda":
        # Bit-exact resume is a CPU guarantee; on a GPU `deterministic` pins cuDNN's algorithm choice (same
        # kernels before and after a requeue) without forcing slow deterministic fallbacks everywhere.
        torch.backends.cudnn.benchmark = not spec.training.deterministic
        torch.backends.cudnn.deterministic = spec.training.deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif spec.training.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch, device, threads


def _make_optimizer(torch, params, tr: TrainingSpec, device):
    fused = {"fused": True} if device.type == "cuda" else {}
    if tr.optimizer == "adam":
        return torch.optim.Adam(params, lr=tr.lr, weight_decay=tr.weight_decay, **fused)
    if tr.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=tr.lr, weight_decay=tr.weight_decay, **fused)
    return torch.optim.SGD(params, lr=tr.lr, momentum=0.9, nesterov=True, weight_decay=tr.weight_decay)


def _train(plan: TaskPlan, info: dict[str, Any], flag: StopFlag) -> Outcome:
    spec, mspec, tr = plan.spec, plan.model, plan.spec.training
    task = spec.workload.task
    torch, device, threads = _setup_torch(spec)
    from hpcseg.splits import ensure_splits, fold_indices
    from hpcseg.train import checkpoint as ckpt
    from hpcseg.train.losses import build_loss
    from hpcseg.train.metrics import ConfusionMeter, columns
    from hpcseg.train.models import build_model, count_parameters
    from hpcseg.train.source import batch_seed
    from hpcseg.train.source import build as build_source

    cols = columns(task)
    metric = spec.collection.metric
    if metric not in cols[1:-2]:
        raise HpcsegError(f"collection.metric {metric!r} is not a history column for {task}; "
                          f"choose one of {', '.join(cols[1:-2])}")
    gpu_name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    info.update(device=f"{device}{f' ({gpu_name})' if gpu_name else ''}", torch=torch.__version__)
    log.info("hpcseg train: job %s, model %s (%s), fold %d -> %s", spec.name, mspec.name, mspec.arch, plan.fold,
             plan.task_dir)
    log.info("torch %s on %s, %d thread(s), deterministic=%s", torch.__version__, info["device"], threads,
             tr.deterministic)

    source = build_source(spec, device)
    names = source.names()
    splits = ensure_splits(plan.splits_dir, spec, names=names)
    train_idx, val_idx = fold_indices(splits, plan.fold, names)
    info.update(n_train=len(train_idx), n_val=len(val_idx))
    source.prepare(train_idx)
    log.info("data: %s; split %s (%s), fold %d: %d train, %d val", source.describe(), splits.get("method_used"),
             splits.get("fallback_reason") or "as asked", plan.fold, len(train_idx), len(val_idx))
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise HpcsegError(f"fold {plan.fold} has {len(train_idx)} training and {len(val_idx)} validation items")

    model = build_model(spec, mspec).to(device)
    cuda = device.type == "cuda"
    channels_last = cuda
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    info["params"] = count_parameters(model)
    log.info("model: %s, %s parameters", type(model).__name__, f"{info['params']:,}")
    optimizer = _make_optimizer(torch, model.parameters(), tr, device)
    counts = source.class_counts(train_idx) if "weighted_ce" in tr.loss.components else None
    loss_fn = build_loss(spec, counts)
    es = EarlyStopping(spec.collection.mode, tr.early_stopping.patience, tr.early_stopping.min_delta)
    info["es"] = es

    # ---- resume
    hist_path = plan.task_dir / HISTORY
    state = ckpt.load_resume(plan.task_dir)
    done_epochs, start_batch, running = 0, 0, {"loss_sum": 0.0, "seen": 0, "seconds": 0.0}
    if state is not None:
        if state.get("arch") != mspec.arch or state.get("model_name") != mspec.name:
            raise HpcsegError(f"{plan.task_dir}: its checkpoint is for model {state.get('model_name')} "
                              f"({state.get('arch')}), not {mspec.name} ({mspec.arch}); use another folder")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        ckpt.set_rng_state(state["rng"])
        done_epochs, start_batch = int(state["epoch"]), int(state["batch"])
        running = dict(state["running"])
        for k, v in state["early_stopping"].items():
            setattr(es, k, v)
        info["train_seconds"] = float(state.get("train_seconds", 0.0))
        info["attempts"] = int(state.get("attempts", 1)) + 1
        rows = [r for r in read_history(hist_path, cols) if r["epoch"] <= done_epochs]
        if state.get("last_row") and (not rows or rows[-1]["epoch"] < done_epochs):
            rows.append(dict(state["last_row"]))  # killed between checkpoint and history row
        rewrite_history(hist_path, rows, cols)
        log.info("resuming after epoch %d%s (attempt %d)", done_epochs,
                 f", batch {start_batch} of epoch {done_epochs + 1}" if start_batch else "", info["attempts"])
    else:
        rows = []
        rewrite_history(hist_path, rows, cols)
    info["rows"] = rows
    info.setdefault("train_seconds", 0.0)
    info.setdefault("attempts", 1)
    if es.stopped or done_epochs >= tr.epochs:
        log.info("nothing to do: the task had already finished")
        return Outcome("early_stopped" if es.stopped else "completed", EXIT_OK)

    # ---- loop
    seed = spec.workload.seed
    bs = tr.batch_size
    n_batches = source.num_batches(train_idx, bs, train=True)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and tr.mixed_precision else nullcontext()
    check_every = 16 if cuda else 1
    if flag.signal:
        log.info("stopped (%s) before training; nothing new to save", flag.signal)
        return Outcome("interrupted", EXIT_REQUEUE, f"{flag.signal} before training")
    progress = _Progress(n_batches) if sys.stdout.isatty() else None

    def checkpoint_state(epoch_done: int, batch: int, run: dict[str, Any], last_row: dict | None) -> dict:
        return {
            "format": 1, "arch": mspec.arch, "model_name": mspec.name, "fold": plan.fold,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "epoch": epoch_done, "batch": batch, "running": run, "lr": lr_at(tr, epoch_done + 1),
            "rng": ckpt.rng_state(), "early_stopping": es.state(), "last_row": last_row,
            "train_seconds": info["train_seconds"], "attempts": info["attempts"],
        }

    def should_stop(batch_seconds: float) -> str | None:
        if flag.signal:
            return flag.signal
        if plan.deadline is not None and time.time() + batch_seconds >= plan.deadline:
            return "deadline"
        return None

    for epoch in range(done_epochs + 1, tr.epochs + 1):
        lr = lr_at(tr, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        t0 = time.time()
        prior_seconds = running["seconds"] if epoch == done_epochs + 1 else 0.0
        loss_sum = torch.tensor(running["loss_sum"] if epoch == done_epochs + 1 else 0.0,
                                dtype=torch.float64, device=device)
        seen = int(running["seen"]) if epoch == done_epochs + 1 else 0
        first = start_batch if epoch == done_epochs + 1 else 0
        model.train()
        b = first
        last_batch_time = time.time()
        batch_seconds = 0.0
        for b, (x, y) in enumerate(source.batches(train_idx, bs, train=True, epoch=epoch, seed=seed,
                                                  start_batch=first), start=first):
            torch.manual_seed(batch_seed(seed, epoch, b))
            if channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with amp:
                logits = model(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tr.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tr.grad_clip)
            optimizer.step()
            loss_sum += loss.detach().double() * x.shape[0]
            seen += x.shape[0]
            if (b + 1) % check_every == 0 and not math.isfinite(float(loss_sum)):
                return _diverged(f"train loss became {float(loss_sum)} in epoch {epoch} by batch {b + 1}")
            now = time.time()
            batch_seconds, last_batch_time = now - last_batch_time, now
            if progress:
                progress.update(epoch, b + 1)
            why = should_stop(batch_seconds) if b + 1 < n_batches else None
            if why:
                if not math.isfinite(float(loss_sum)):
                    return _diverged(f"train loss became {float(loss_sum)} in epoch {epoch}")
                info["train_seconds"] += now - t0
                run = {"loss_sum": float(loss_sum), "seen": seen, "seconds": prior_seconds + now - t0}
                ckpt.save_last(plan.task_dir, checkpoint_state(epoch - 1, b + 1, run, None))
                log.info("stopped (%s) after batch %d/%d of epoch %d; checkpoint written, requeue to go on",
                         why, b + 1, n_batches, epoch)
                return Outcome("interrupted", EXIT_REQUEUE, f"{why} in epoch {epoch}")
        train_loss = float(loss_sum) / max(seen, 1)  # the epoch's one host sync
        info.setdefault("speed", []).append((seen - (int(running["seen"]) if epoch == done_epochs + 1 else 0),
                                             time.time() - t0))
        if not math.isfinite(train_loss):
            return _diverged(f"train loss became {train_loss} in epoch {epoch}")

        val_loss, metrics = _validate(torch, model, source, val_idx, bs, loss_fn, task, device, channels_last,
                                      amp, ConfusionMeter)
        if not math.isfinite(val_loss):
            return _diverged(f"validation loss became {val_loss} in epoch {epoch}")
        seconds = prior_seconds + time.time() - t0
        info["train_seconds"] += time.time() - t0
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
               **{f"val_{k}": v for k, v in metrics.items()}, "lr": lr, "epoch_seconds": seconds}
        improved = es.update(row[metric], epoch)
        if improved:
            ckpt.save_atomic({"model": model.state_dict(), "epoch": epoch, "metric": metric,
                              "value": row[metric], "arch": mspec.arch, "model_name": mspec.name},
                             plan.task_dir / ckpt.BEST)
        ckpt.save_last(plan.task_dir, checkpoint_state(epoch, 0, {"loss_sum": 0.0, "seen": 0, "seconds": 0.0},
                                                       row))
        append_history(hist_path, row, cols)
        rows.append(row)
        log.info("epoch %d/%d %s best %s=%s@%s%s", epoch, tr.epochs,
                 " ".join(f"{c}={_fmt(row[c])}" for c in cols[1:]), metric,
                 "-" if es.best is None else _fmt(es.best), es.best_epoch, " *" if improved else "")
        if es.stopped:
            log.info("early stopping: no %s improvement over %d epoch(s)", metric, es.patience)
            return _finish(torch, plan, model, source, val_idx, "early_stopped", device)
        why = should_stop(0.0)
        if why and epoch < tr.epochs:
            log.info("stopped (%s) after epoch %d; checkpoint written, requeue to go on", why, epoch)
            return Outcome("interrupted", EXIT_REQUEUE, f"{why} after epoch {epoch}")
    return _finish(torch, plan, model, source, val_idx, "completed", device)


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e-3 and v != 0 else f"{v:.4f}"


def _diverged(message: str) -> Outcome:
    log.info("diverged: %s; stopping (lower training.lr or set training.grad_clip)", message)
    return Outcome("diverged", EXIT_DIVERGED, message)


def _validate(torch, model, source, val_idx, bs, loss_fn, task, device, channels_last, amp, meter_cls):
    model.eval()
    meter = meter_cls(task, source.num_classes, device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    with torch.inference_mode():
        for x, y in source.batches(val_idx, bs, train=False, epoch=0, seed=0):
            if channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with amp:
                logits = model(x)
            logits = logits.float()
            loss_sum += loss_fn(logits, y).double() * x.shape[0]
            seen += x.shape[0]
            meter.update(logits, y)
    return float(loss_sum) / max(seen, 1), meter.compute()


def _finish(torch, plan: TaskPlan, model, source, val_idx, reason: str, device) -> Outcome:
    """Workload extras (e.g. calibration) with the best weights, then the final outcome."""
    extra: dict[str, Any] = {}
    best = plan.task_dir / "checkpoint_best.pt"
    if type(source).extra_results is not _base_extra():
        if best.exists():
            model.load_state_dict(torch.load(best, map_location=device, weights_only=True)["model"])
        model.eval()
        extra = source.extra_results(model, val_idx, plan.spec.training.batch_size, out_dir=plan.task_dir) or {}
    log.info("finished (%s)", reason)
    return Outcome(reason, EXIT_OK, None, extra)


def _base_extra():
    from hpcseg.train.source import Source

    return Source.extra_results


class _Progress:
    """A one-line batch counter for interactive terminals (batch logs get one line per epoch only)."""

    def __init__(self, total: int):
        self.total = total

    def update(self, epoch: int, batch: int) -> None:
        text = f"  epoch {epoch}: batch {batch}/{self.total}"
        sys.stdout.write("\r" + (text if batch < self.total else " " * len(text)) + "\r")
        sys.stdout.flush()
