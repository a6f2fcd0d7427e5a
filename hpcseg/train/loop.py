"""The training loop as a :class:`Trainer` with small hooks, in the manner of nnU-Net's trainer.

:meth:`Trainer.run` is the fixed order of things (setup, resume, then per epoch train_epoch, validate,
checkpoint; finish at the end); each step is a method a workload may override without copying the loop.
A workload that wants its own evaluation with the best weights overrides :meth:`Trainer.evaluate` (its
return value lands in result.json's ``extra``) and names it ``Trainer`` in its ``train`` module, where
:func:`trainer_class` finds it through the workload registry; by default ``evaluate`` asks the source's
``extra_results``.

The guarantees of :mod:`hpcseg.train.runner` hold here: batch order, augmentation and dropout are pure
functions of (seed, epoch, batch), a stop (signal or deadline) is honoured at the next batch boundary
with a mid-epoch checkpoint, and checkpoint_last.pt is written before the epoch's history row.
"""

from __future__ import annotations

import logging
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from typing import Any

import numpy as np

from hpcseg.errors import HpcsegError
from hpcseg.spec import JobSpec, TrainingSpec
from hpcseg.taskfiles import EXIT_DIVERGED, EXIT_OK, EXIT_REQUEUE, HISTORY, append_history, rewrite_history
from hpcseg.taskfiles import history_rows as read_history
from hpcseg.train.distributed import Dist, per_rank_batch, shard
from hpcseg.train.runner import EarlyStopping, Outcome, StopFlag, TaskPlan, lr_at
from hpcseg.train.tensorboard import TensorBoardLog

log = logging.getLogger("hpcseg.train")

#: ``dataset.layout`` -> ``"module:Class"``: overrides for tests and plug-ins, looked at before the registry.
TRAINERS: dict[str, str] = {}


def trainer_class(layout: str) -> type[Trainer]:
    """The layout's trainer: a registered override, else the ``Trainer`` its workload's ``train`` module
    defines (the module is imported for the data source anyway), else :class:`Trainer` itself."""
    target = TRAINERS.get(layout)
    if target is not None:
        from hpcseg.train.models import resolve

        return resolve(target, f"trainer for dataset layout {layout}")
    from hpcseg.workloads import registry

    if layout not in registry.WORKLOADS:
        return Trainer
    custom = getattr(registry.part(layout, "train"), "Trainer", None)
    return custom if isinstance(custom, type) and issubclass(custom, Trainer) else Trainer


class Diverged(Exception):  # noqa: N818 - a control-flow signal, not an error to report
    """Raised by a hook when a loss stops being finite; :meth:`Trainer.run` turns it into exit 4."""


class Trainer:
    """One model on one fold. ``info`` is shared with the runner, which writes result.json from it."""

    def __init__(self, plan: TaskPlan, info: dict[str, Any], flag: StopFlag, dist: Dist | None = None):
        self.plan, self.info, self.flag = plan, info, flag
        self.dist = dist or Dist()
        self.spec, self.mspec, self.tr = plan.spec, plan.model, plan.spec.training
        self.task = self.spec.workload.task
        self.metric = self.spec.collection.metric
        self.seed = self.spec.workload.seed
        self.hist_path = plan.task_dir / HISTORY
        self.rows: list[dict[str, float]] = []
        self.done_epochs, self.start_batch = 0, 0
        self.running: dict[str, Any] = {"loss_sum": 0.0, "seen": 0, "seconds": 0.0}
        self.tensorboard = TensorBoardLog(plan.task_dir, enabled=self.dist.is_main)
        self.train_metrics: dict[str, float] = {}  # train_<metric> columns of the epoch (hpcseg.columns)
        self.train_soft = None  # a SoftJaccardMean while a binary task trains an epoch

    # ------------------------------------------------------------------------------------------ the order

    def run(self) -> Outcome:
        self.setup()
        done = self.resume()
        if done is not None:
            return done
        why, _ = self.dist.agree(self.flag.signal, False)
        if why:
            log.info("stopped (%s) before training; nothing new to save", why)
            return Outcome("interrupted", EXIT_REQUEUE, f"{why} before training")
        try:
            for epoch in range(self.done_epochs + 1, self.tr.epochs + 1):
                self.t0 = time.time()
                resumed = epoch == self.done_epochs + 1
                self.prior_seconds = self.running["seconds"] if resumed else 0.0
                stopped = self.train_epoch(epoch)
                if stopped is not None:
                    return stopped
                val_loss, metrics = self.validate()
                if not math.isfinite(val_loss):
                    raise Diverged(f"validation loss became {val_loss} in epoch {epoch}")
                self.info["train_seconds"] += time.time() - self.t0
                row = {"epoch": epoch, "train_loss": self.train_loss, "val_loss": val_loss,
                       **{f"val_{k}": v for k, v in metrics.items()}, **self.train_metrics, "lr": self.lr,
                       "epoch_seconds": self.prior_seconds + time.time() - self.t0}
                improved = self.es.update(row[self.metric], epoch)
                self.checkpoint(epoch, row, improved)
                self.log_epoch(epoch, row, improved)
                self.epoch_end(epoch, row)
                if self.plan.on_epoch is not None and self.plan.on_epoch(epoch, row):  # a sweep's pruner
                    log.info("pruned after epoch %d (the sweep's pruner stopped this trial)", epoch)
                    return self.finish("pruned")
                if self.es.stopped:
                    log.info("early stopping: no %s improvement over %d epoch(s)", self.metric, self.es.patience)
                    return self.finish("early_stopped")
                why, _ = self.dist.agree(self.should_stop(0.0), False)
                if why and epoch < self.tr.epochs:
                    log.info("stopped (%s) after epoch %d; checkpoint written, requeue to go on", why, epoch)
                    return Outcome("interrupted", EXIT_REQUEUE, f"{why} after epoch {epoch}")
        except Diverged as exc:
            log.info("diverged: %s; stopping (lower training.lr or set training.grad_clip)", exc)
            return Outcome("diverged", EXIT_DIVERGED, str(exc))
        return self.finish("completed")

    # ------------------------------------------------------------------------------------------ hooks

    def setup(self) -> None:
        """Device, data, split, model, optimizer, loss and early stopping."""
        from hpcseg.splits import ensure_splits, fold_indices
        from hpcseg.train.losses import build_loss, needs_class_counts
        from hpcseg.train.metrics import columns
        from hpcseg.train.models import build_model, count_parameters
        from hpcseg.train.source import build as build_source

        spec, mspec, tr, plan, info = self.spec, self.mspec, self.tr, self.plan, self.info
        dist = self.dist
        torch, device, threads = setup_torch(spec, dist)
        self.torch, self.device = torch, device
        dist.init(device.type)
        per_rank_batch(tr.batch_size, dist.world)
        self.cols = cols = columns(self.task)
        if self.metric not in cols[1:-2]:
            raise HpcsegError(f"collection.metric {self.metric!r} is not a history column for {self.task}; "
                              f"choose one of {', '.join(cols[1:-2])}")
        gpu_name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
        info.update(device=f"{device}{f' ({gpu_name})' if gpu_name else ''}", torch=torch.__version__)
        log.info("hpcseg train: job %s, model %s (%s), fold %d -> %s", spec.name, mspec.name, mspec.arch,
                 plan.fold, plan.task_dir)
        log.info("torch %s on %s, %d thread(s), deterministic=%s", torch.__version__, info["device"], threads,
                 tr.deterministic)
        if dist.launched:
            log.info("data parallel: %d process(es) (%d on this node), %s; global batch %d = %d per process",
                     dist.world, dist.local_world, "nccl" if device.type == "cuda" else "gloo", tr.batch_size,
                     tr.batch_size // dist.world)

        self.source = source = build_source(spec, device)
        names = source.names()
        if not dist.is_main:
            dist.barrier()  # rank 0 writes splits.json first; the others read it
        splits = ensure_splits(plan.splits_dir, spec, names=names)
        if dist.is_main:
            dist.barrier()
        self.train_idx, self.val_idx = fold_indices(splits, plan.fold, names)
        info.update(n_train=len(self.train_idx), n_val=len(self.val_idx))
        source.prepare(self.train_idx)
        log.info("data: %s; split %s (%s), fold %d: %d train, %d val", source.describe(),
                 splits.get("method_used"), splits.get("fallback_reason") or "as asked", plan.fold,
                 len(self.train_idx), len(self.val_idx))
        if len(self.train_idx) == 0 or len(self.val_idx) == 0:
            raise HpcsegError(f"fold {plan.fold} has {len(self.train_idx)} training and {len(self.val_idx)} "
                              f"validation items")

        self.cuda = self.channels_last = device.type == "cuda"
        model = build_model(spec, mspec).to(device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self._bare = model
        info["params"] = count_parameters(model)
        log.info("model: %s, %s parameters", type(model).__name__, f"{info['params']:,}")
        if dist.launched:
            from torch.nn.parallel import DistributedDataParallel

            if self.cuda:  # statistics over the global batch, as on one GPU (gloo has no SyncBatchNorm)
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
                self._bare = model
            model = DistributedDataParallel(model, device_ids=[device.index] if self.cuda else None)
        self.model = model
        self.optimizer = make_optimizer(torch, model.parameters(), tr, device)
        counts = source.class_counts(self.train_idx) if needs_class_counts(spec) else None
        self.loss_fn = build_loss(spec, counts)
        self.log_loss_weights(source)
        self.es = info["es"] = EarlyStopping(spec.collection.mode, tr.early_stopping.patience,
                                             tr.early_stopping.min_delta)
        self.amp = (torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda and tr.mixed_precision
                    else nullcontext())

    def log_loss_weights(self, source) -> None:
        """What weighs the loss, in train.log and result.json (``loss``): weighted_ce's class weights and
        whether the source gives pixel weights, and to which components they apply."""
        cfg, names = self.tr.loss, self.spec.workload.dataset.class_names
        out: dict[str, Any] = {}
        if self.loss_fn.class_weights is not None:
            scheme = "given in the job" if not isinstance(cfg.class_weights, str) else cfg.class_weights
            if cfg.class_weights == "inverse_log_frequency":
                scheme += f" (1/ln({cfg.class_weight_c:g} + f))"
            out.update(class_weights=self.loss_fn.class_weights, class_weight_scheme=scheme)
            shown = ", ".join(f"{names[i] if names and i < len(names) else i}={w:.4g}"
                              for i, w in enumerate(self.loss_fn.class_weights))
            log.info("loss: weighted_ce class weights (%s): %s", scheme, shown)
        if source.has_pixel_weights():
            from hpcseg.train.losses import PIXEL_WEIGHTED

            applied = [c for c in cfg.components if c in PIXEL_WEIGHTED]
            out["pixel_weights"] = {"applied_to": applied,
                                    "not_applied_to": [c for c in cfg.components if c not in PIXEL_WEIGHTED]}
            log.info("loss: per-pixel weights from the data apply to %s%s", ", ".join(applied) or "no component",
                     "; dice counts every labelled pixel once" if "dice" in cfg.components else "")
        if out:
            self.info["loss"] = out

    def resume(self) -> Outcome | None:
        """Restore the newest readable checkpoint and heal history.csv to match it; an Outcome when the
        task has nothing left to do."""
        from hpcseg.train import checkpoint as ckpt

        plan, info, es, cols = self.plan, self.info, self.es, self.cols
        state = ckpt.load_resume(plan.task_dir)
        if state is not None:
            if state.get("arch") != self.mspec.arch or state.get("model_name") != self.mspec.name:
                raise HpcsegError(f"{plan.task_dir}: its checkpoint is for model {state.get('model_name')} "
                                  f"({state.get('arch')}), not {self.mspec.name} ({self.mspec.arch}); "
                                  f"use another folder")
            self.check_resume(state)
            self.bare_model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            ckpt.set_rng_state(state["rng"])
            self.done_epochs, self.start_batch = int(state["epoch"]), int(state["batch"])
            self.running = dict(state["running"])
            for k, v in state["early_stopping"].items():
                setattr(es, k, v)
            info["train_seconds"] = float(state.get("train_seconds", 0.0))
            info["attempts"] = int(state.get("attempts", 1)) + 1
            rows = [r for r in read_history(self.hist_path, cols) if r["epoch"] <= self.done_epochs]
            if state.get("last_row") and (not rows or rows[-1]["epoch"] < self.done_epochs):
                rows.append(dict(state["last_row"]))  # killed between checkpoint and history row
            self.write_history(rows)
            log.info("resuming after epoch %d%s (attempt %d)", self.done_epochs,
                     f", batch {self.start_batch} of epoch {self.done_epochs + 1}" if self.start_batch else "",
                     info["attempts"])
        else:
            rows = []
            self.write_history(rows)
        self.rows = info["rows"] = rows
        info.setdefault("train_seconds", 0.0)
        info.setdefault("attempts", 1)
        if es.stopped or self.done_epochs >= self.tr.epochs:
            log.info("nothing to do: the task had already finished")
            return Outcome("early_stopped" if es.stopped else "completed", EXIT_OK)
        return None

    def check_resume(self, state: dict[str, Any]) -> None:
        """Refuse a checkpoint this run cannot continue exactly (subclasses add their own checks)."""
        written = int(state.get("world_size", 1))
        if written != self.dist.world:
            raise HpcsegError(f"{self.plan.task_dir}: its checkpoint was written by {written} training "
                              f"process(es), this run has {self.dist.world}; resume with the same GPUs x nodes, "
                              f"or train into a new folder")

    def train_epoch(self, epoch: int) -> Outcome | None:
        """Train one epoch (from the resumed batch if it is the first); sets ``self.train_loss``. Returns
        the Outcome of a stop (signal or deadline, checkpoint written), None when the epoch is complete."""
        from hpcseg.train import checkpoint as ckpt

        torch, tr = self.torch, self.tr
        resumed = epoch == self.done_epochs + 1
        self.lr = lr_at(tr, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        carry = resumed and self.dist.is_main  # the saved partial sums are global: counted once, by rank 0
        loss_sum = torch.tensor(self.running["loss_sum"] if carry else 0.0, dtype=torch.float64,
                                device=self.device)
        seen = int(self.running["seen"]) if carry else 0
        first = self.start_batch if resumed else 0
        n_batches = self.num_batches()
        from hpcseg.train.metrics import SoftJaccardMean

        # Keras-style train metric over the epoch's batches; a mid-epoch resume carries the saved sums
        self.train_soft = SoftJaccardMean(self.device) if "train_jaccard_soft" in self.cols else None
        if self.train_soft is not None and carry and "soft" in self.running:
            self.train_soft.sums += torch.tensor(self.running["soft"], dtype=torch.float64, device=self.device)
        check_every = 16 if self.cuda else 1
        progress = _Progress(n_batches) if sys.stdout.isatty() and self.is_main else None
        self.model.train()
        last_batch_time = time.time()
        for b, (x, y, pixel_weight, weight) in enumerate(self.train_batches(epoch, first), start=first):
            loss, n = self.train_step(epoch, b, x, y, weight, pixel_weight)
            loss_sum += loss
            seen += n
            nonfinite = (b + 1) % check_every == 0 and not math.isfinite(float(loss_sum))
            now = time.time()
            batch_seconds, last_batch_time = now - last_batch_time, now
            why = self.should_stop(batch_seconds) if b + 1 < n_batches else None
            why, nonfinite = self.dist.agree(why, nonfinite)
            if nonfinite:
                raise Diverged(f"train loss became {_nonfinite(loss_sum)} in epoch {epoch} by batch {b + 1}")
            if progress:
                progress.update(epoch, b + 1)
            if why:
                total, total_seen = self.epoch_sums(loss_sum, seen)
                if not math.isfinite(total):
                    raise Diverged(f"train loss became {total} in epoch {epoch}")
                self.info["train_seconds"] += now - self.t0
                run = {"loss_sum": total, "seen": total_seen, "seconds": self.prior_seconds + now - self.t0}
                if self.train_soft is not None:
                    self.dist.sum_(self.train_soft.sums)
                    run["soft"] = self.train_soft.sums.tolist()
                self.save(ckpt.LAST, self.checkpoint_state(epoch - 1, b + 1, run, None))
                log.info("stopped (%s) after batch %d/%d of epoch %d; checkpoint written, requeue to go on",
                         why, b + 1, n_batches, epoch)
                return Outcome("interrupted", EXIT_REQUEUE, f"{why} in epoch {epoch}")
        total, total_seen = self.epoch_sums(loss_sum, seen)  # the epoch's one host sync
        self.train_loss = total / max(total_seen, 1)
        if self.train_soft is not None:
            self.dist.sum_(self.train_soft.sums)  # a no-op without data parallelism
            self.train_metrics = {"train_jaccard_soft": self.train_soft.compute()}
        self.info.setdefault("speed", []).append(
            (total_seen - (int(self.running["seen"]) if resumed else 0), time.time() - self.t0))
        if not math.isfinite(self.train_loss):
            raise Diverged(f"train loss became {self.train_loss} in epoch {epoch}")
        return None

    def train_step(self, epoch: int, b: int, x, y, weight: float = 1.0, pixel_weight=None) -> tuple[Any, int]:
        """One optimiser step; returns (loss × items as a float64 device tensor, items). ``weight`` scales
        the gradient so that the ranks' average is the global batch's mean (1.0 except for a short last
        batch; 0.0 for a rank whose slice is empty and that trains on a stand-in item). ``pixel_weight``:
        the source's per-pixel loss weights (hpcseg/train/source.py), or None."""
        from hpcseg.train.source import batch_seed

        torch = self.torch
        torch.manual_seed(batch_seed(self.seed, epoch, b) + self.dist.rank)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.amp:
            logits = self.model(x)
        loss = self.loss_fn(logits, y, pixel_weight)
        if self.train_soft is not None and weight:
            self.train_soft.update(logits.detach(), y)
        self.optimizer.zero_grad(set_to_none=True)
        (loss * weight if weight != 1.0 else loss).backward()
        if self.tr.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tr.grad_clip)
        self.optimizer.step()
        n = x.shape[0] if weight else 0
        return loss.detach().double() * n, n

    def validate(self) -> tuple[float, dict[str, float]]:
        """Validation loss and metrics over the fold's validation items."""
        from hpcseg.train.metrics import ConfusionMeter

        torch, model = self.torch, self.bare_model  # no DDP wrapper: validation has no gradients to share
        model.eval()
        meter = ConfusionMeter(self.task, self.source.num_classes, self.device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        seen = 0
        with torch.inference_mode():
            for x, y, pixel_weight in self.val_batches():
                if self.channels_last and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                with self.amp:
                    logits = model(x)
                logits = logits.float()
                loss_sum += self.loss_fn(logits, y, pixel_weight).double() * x.shape[0]
                seen += x.shape[0]
                meter.update(logits, y)
        return self.reduce_validation(loss_sum, seen, meter)

    def checkpoint(self, epoch: int, row: dict[str, float], improved: bool) -> None:
        """End of an epoch: the best weights if improved, then checkpoint_last.pt, then the history row
        (in this order: a kill between the two is healed on resume from the row kept in the checkpoint)."""
        from hpcseg.train import checkpoint as ckpt

        if improved:
            self.save(ckpt.BEST, {"model": self.bare_model.state_dict(), "epoch": epoch, "metric": self.metric,
                                  "value": row[self.metric], "arch": self.mspec.arch,
                                  "model_name": self.mspec.name})
        self.save(ckpt.LAST, self.checkpoint_state(epoch, 0, {"loss_sum": 0.0, "seen": 0, "seconds": 0.0}, row))
        if self.is_main:
            append_history(self.hist_path, row, self.cols)
        self.rows.append(row)

    def epoch_end(self, epoch: int, row: dict[str, float]) -> None:
        """After the epoch's history row: TensorBoard scalars (every column) and, for segmentation, a few
        validation examples. Rank 0 only. Event files are a convenience: a failure there is one warning,
        never the end of a long training."""
        tb = self.tensorboard
        if not tb.enabled:
            return
        try:
            tb.epoch(epoch, row)
            if tb.enabled and self.task.endswith("segmentation"):
                example = self.example_batch()
                if example is not None:
                    tb.examples(epoch, *example, self.task)
            tb.flush()
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.warning("TensorBoard: stopped writing event files (%s: %s)", exc.__class__.__name__, exc)
            tb.enabled = False

    def example_batch(self) -> tuple[Any, Any, Any] | None:
        """(x, y, logits) of the first few validation items, with the current weights."""
        from hpcseg.train.tensorboard import MAX_IMAGES

        batches = self.source.batches(self.val_idx, min(self.tr.batch_size, MAX_IMAGES), train=False, epoch=0,
                                      seed=0)
        first = next(iter(batches), None)
        if first is None:
            return None
        x, y = first
        model = self.bare_model
        model.eval()
        with self.torch.inference_mode(), self.amp:
            logits = model(x)
        return x, y, logits

    def close(self) -> None:
        """Release what the trainer holds open (event files); called once the task ends, however it ends."""
        self.tensorboard.close()

    def evaluate(self) -> dict[str, Any]:
        """Workload extras for result.json's ``extra``, with the best weights loaded and the model in eval
        mode. The default asks the source (e.g. a classifier's calibration) and, for binary segmentation,
        tunes the probability threshold on validation (hpcseg/train/threshold.py: ``extra.threshold``);
        a workload's Trainer overrides it (calling this one to keep both)."""
        extra = self.source.extra_results(self.bare_model, self.val_idx, self.tr.batch_size,
                                          out_dir=self.plan.task_dir) or {}
        if self.task == "binary_segmentation":
            from hpcseg.train.threshold import tune

            extra["threshold"] = tune(self)
        return extra

    def wants_evaluation(self) -> bool:
        """Whether :meth:`evaluate` does anything (so the best weights are loaded only when needed)."""
        from hpcseg.train.source import Source

        return (type(self).evaluate is not Trainer.evaluate or self.task == "binary_segmentation"
                or type(self.source).extra_results is not Source.extra_results)

    def finish(self, reason: str) -> Outcome:
        """Workload evaluation with the best weights, then the final outcome."""
        extra: dict[str, Any] = {}
        if self.is_main and self.wants_evaluation():
            best = self.plan.task_dir / "checkpoint_best.pt"
            if best.exists():
                state = self.torch.load(best, map_location=self.device, weights_only=True)
                self.bare_model.load_state_dict(state["model"])
            self.model.eval()
            extra = self.evaluate()
        log.info("finished (%s)", reason)
        return Outcome(reason, EXIT_OK, None, extra)

    # ------------------------------------------------------------------------------------------ helpers

    @property
    def is_main(self) -> bool:
        """The process that writes files: rank 0 (always, without data parallelism)."""
        return self.dist.is_main

    @property
    def bare_model(self):
        """The model without the DDP wrapper (what checkpoints store and validation runs)."""
        return self._bare

    def num_batches(self) -> int:
        return self.source.num_batches(self.train_idx, self.tr.batch_size, train=True)

    def train_batches(self, epoch: int, first: int):
        """(x, y, pixel weights or None, gradient weight) per step: the global batch, or this rank's slice."""
        batches = self.source.weighted_batches(self.train_idx, self.tr.batch_size, train=True, epoch=epoch,
                                               seed=self.seed, start_batch=first)
        if not self.dist.launched:
            return ((x, y, pw, 1.0) for x, y, pw in batches)
        return self._slices(batches, train=True)

    def val_batches(self):
        """(x, y, pixel weights or None): the validation loss weighs pixels as the training loss does."""
        batches = self.source.weighted_batches(self.val_idx, self.tr.batch_size, train=False, epoch=0, seed=0)
        if not self.dist.launched:
            return batches
        return ((x, y, pw) for x, y, pw, w in self._slices(batches, train=False) if w)

    def _slices(self, batches, train: bool):
        """This rank's slice of every global batch, weighted so that DDP's average of the ranks' mean
        losses is the global batch's mean. A rank left without items (a last batch shorter than the world)
        trains on item 0 with weight 0, because every rank must join every gradient all-reduce."""
        world, rank = self.dist.world, self.dist.rank
        for x, y, pw in batches:
            n = x.shape[0]
            start, stop = shard(n, rank, world)
            if stop > start:
                yield x[start:stop], y[start:stop], None if pw is None else pw[start:stop], (stop - start) * world / n
            elif train:
                yield x[:1], y[:1], None if pw is None else pw[:1], 0.0

    def epoch_sums(self, loss_sum, seen: int) -> tuple[float, int]:
        """(sum of loss × items, items) over every rank: one host sync (and one all-reduce)."""
        if not self.dist.launched:
            return float(loss_sum), seen
        t = self.torch.stack([loss_sum.double(), self.torch.tensor(float(seen), dtype=self.torch.float64,
                                                                   device=loss_sum.device)])
        self.dist.sum_(t)
        return float(t[0]), int(round(float(t[1])))

    def reduce_validation(self, loss_sum, seen: int, meter) -> tuple[float, dict[str, float]]:
        """Every rank ends with the same numbers: sums and the confusion matrix are all-reduced."""
        if self.dist.launched:
            total, seen = self.epoch_sums(loss_sum, seen)
            self.dist.sum_(meter.matrix)
            self.dist.sum_(meter.soft.sums)
            return total / max(seen, 1), meter.compute()
        return float(loss_sum) / max(seen, 1), meter.compute()

    def should_stop(self, batch_seconds: float) -> str | None:
        """A reason to stop now: a signal, or the deadline within one more batch."""
        if self.flag.signal:
            return self.flag.signal
        if self.plan.deadline is not None and time.time() + batch_seconds >= self.plan.deadline:
            return "deadline"
        return None

    def checkpoint_state(self, epoch_done: int, batch: int, run: dict[str, Any], last_row: dict | None) -> dict:
        from hpcseg.train import checkpoint as ckpt

        return {
            "format": 1, "arch": self.mspec.arch, "model_name": self.mspec.name, "fold": self.plan.fold,
            "model": self.bare_model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "epoch": epoch_done, "batch": batch, "running": run, "lr": lr_at(self.tr, epoch_done + 1),
            "rng": ckpt.rng_state(), "early_stopping": self.es.state(), "last_row": last_row,
            "train_seconds": self.info["train_seconds"], "attempts": self.info["attempts"],
            "world_size": self.dist.world,
        }

    def save(self, name: str, state: dict[str, Any]) -> None:
        from hpcseg.train import checkpoint as ckpt

        if not self.is_main:
            return
        if name == ckpt.LAST:
            ckpt.save_last(self.plan.task_dir, state)
        else:
            ckpt.save_atomic(state, self.plan.task_dir / name)

    def write_history(self, rows: list[dict[str, float]]) -> None:
        if self.is_main:
            rewrite_history(self.hist_path, rows, self.cols)

    def log_epoch(self, epoch: int, row: dict[str, float], improved: bool) -> None:
        es = self.es
        log.info("epoch %d/%d %s best %s=%s@%s%s", epoch, self.tr.epochs,
                 " ".join(f"{c}={_fmt(row[c])}" for c in self.cols[1:]), self.metric,
                 "-" if es.best is None else _fmt(es.best), es.best_epoch, " *" if improved else "")


def setup_torch(spec: JobSpec, dist: Dist | None = None):
    """Device, threads, determinism and seeds. Imported here so the CLI stays light for other verbs."""
    import torch

    want = os.environ.get("HPCSEG_DEVICE", "").strip().lower()
    if want and want != "cpu" and not torch.cuda.is_available():
        raise HpcsegError(f"HPCSEG_DEVICE={want} but torch sees no CUDA device on this node")
    device = torch.device(want or ("cuda" if torch.cuda.is_available() else "cpu"))
    dist = dist or Dist()
    if device.type == "cuda" and dist.launched:  # one GPU per process, by its rank on this node
        if dist.local_rank >= torch.cuda.device_count():
            raise HpcsegError(f"LOCAL_RANK={dist.local_rank} but this node shows {torch.cuda.device_count()} "
                              f"GPU(s); start at most one process per GPU (torchrun --nproc-per-node)")
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
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
    # the node's share is split between the processes torchrun started on it
    threads = max(1, min(granted, cores, ceiling, os.cpu_count() or 1) // dist.local_world)
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


def make_optimizer(torch, params, tr: TrainingSpec, device):
    fused = {"fused": True} if device.type == "cuda" else {}
    if tr.optimizer == "adam":
        return torch.optim.Adam(params, lr=tr.lr, weight_decay=tr.weight_decay, **fused)
    if tr.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=tr.lr, weight_decay=tr.weight_decay, **fused)
    return torch.optim.SGD(params, lr=tr.lr, momentum=0.9, nesterov=True, weight_decay=tr.weight_decay)


def _nonfinite(loss_sum) -> str:
    value = float(loss_sum)
    return str(value) if not math.isfinite(value) else "nan on another process"


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e-3 and v != 0 else f"{v:.4f}"


class _Progress:
    """A one-line batch counter for interactive terminals (batch logs get one line per epoch only)."""

    def __init__(self, total: int):
        self.total = total

    def update(self, epoch: int, batch: int) -> None:
        text = f"  epoch {epoch}: batch {batch}/{self.total}"
        sys.stdout.write("\r" + (text if batch < self.total else " " * len(text)) + "\r")
        sys.stdout.flush()
