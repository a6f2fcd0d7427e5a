"""Data-parallel training: which process this is, and the few collectives the trainer needs.

The launcher is torchrun (``python -m torch.distributed.run``), one per node; it sets RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT for every process. A process started by torchrun
trains data-parallel even when the world is one process (so one GPU exercises the same code path as
eight); a plain ``hpcseg train`` is world 1 and touches no process group at all.

Rules (docs/schedulers.md, "Multi-GPU and multi-node jobs"):

* ``training.batch_size`` is the global batch; each rank trains on its own contiguous slice of every
  global batch (batch_size / world items; the batch size must divide evenly). Every rank draws the same
  global batch (order and augmentation are pure functions of seed, epoch and batch) and keeps its slice,
  so the shards never overlap, are reshuffled every epoch from the run's seed, and together are exactly
  the 1-process batch. The learning rate belongs to the global batch: it is not rescaled.
* NCCL on CUDA, gloo on CPU. The stop flag (signal, deadline, non-finite loss) is agreed every step by
  a MAX all-reduce of three small integers on a gloo group, so no GPU sync is added to a step.
* Only rank 0 writes files; every rank reads the checkpoint on resume. A checkpoint records its world
  size and a run of another size refuses it (a one-line error): the slices, BatchNorm statistics and
  sums would differ from the run that wrote it.
"""

from __future__ import annotations

import datetime
import os
import signal
from dataclasses import dataclass
from typing import Any

from hpcseg.errors import HpcsegError

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass
class Dist:
    """This process's place in the job. Without torchrun: rank 0 of 1, ``launched`` False."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    launched: bool = False
    control: Any = None  # the gloo group for stop-flag agreement, once initialised

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def init(self, device_type: str) -> None:
        """Join the process group (NCCL on CUDA, gloo on CPU). MASTER_ADDR/PORT come from torchrun."""
        if not self.launched:
            return
        import torch.distributed as dist

        backend = "nccl" if device_type == "cuda" else "gloo"
        raw = os.environ.get("HPCSEG_DIST_TIMEOUT", "1800")
        try:
            timeout = datetime.timedelta(seconds=float(raw))
        except ValueError:
            raise HpcsegError(f"HPCSEG_DIST_TIMEOUT={raw!r}: expected seconds, e.g. 1800") from None
        if not dist.is_initialized():
            dist.init_process_group(backend, timeout=timeout)
        self.control = dist.new_group(backend="gloo") if backend == "nccl" else dist.group.WORLD

    def close(self) -> None:
        if self.launched:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    # ------------------------------------------------------------------------------------------ collectives

    def barrier(self) -> None:
        if self.launched:
            import torch.distributed as dist

            dist.barrier(group=self.control)

    def sum_(self, *tensors) -> None:
        """All-reduce (sum) in place; a no-op for world 1 without torchrun."""
        if self.launched:
            import torch.distributed as dist

            for t in tensors:
                dist.all_reduce(t)

    def agree(self, why: str | None, nonfinite: bool) -> tuple[str | None, bool]:
        """Every rank's stop reason and divergence, merged: a signal to any rank stops all of them at
        the same batch. Signals win over the deadline (their name is what the log reports)."""
        if not self.launched:
            return why, nonfinite
        import torch
        import torch.distributed as dist

        signum = signal.Signals[why].value if why and why in signal.Signals.__members__ else 0
        flags = torch.tensor([signum, int(why == "deadline"), int(nonfinite)], dtype=torch.int64)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.control)
        sig, deadline, bad = (int(v) for v in flags)
        merged = signal.Signals(sig).name if sig else ("deadline" if deadline else None)
        return merged, bool(bad)


def from_env(environ: dict[str, str] | None = None) -> Dist:
    """The process's rank from torchrun's variables; none set = a plain single process. Torch-free."""
    env = os.environ if environ is None else environ
    if not any(k in env for k in _ENV):
        return Dist()
    values = {}
    for key in (*_ENV, "LOCAL_WORLD_SIZE"):
        raw = env.get(key, "")
        if key == "LOCAL_WORLD_SIZE" and not raw:
            raw = env.get("WORLD_SIZE", "1")
        if not raw.isdigit():
            raise HpcsegError(f"{key}={raw!r}: expected a whole number; start data-parallel training with "
                              f"torchrun, which sets RANK, WORLD_SIZE and LOCAL_RANK")
        values[key] = int(raw)
    world = values["WORLD_SIZE"]
    if world < 1 or not 0 <= values["RANK"] < world:
        raise HpcsegError(f"RANK={values['RANK']} WORLD_SIZE={world}: the rank must be in 0..WORLD_SIZE-1")
    return Dist(values["RANK"], world, values["LOCAL_RANK"], max(values["LOCAL_WORLD_SIZE"], 1), launched=True)


def per_rank_batch(batch_size: int, world: int) -> int:
    """training.batch_size is global; each rank trains on batch_size / world items of it."""
    if batch_size % world:
        raise HpcsegError(f"training.batch_size {batch_size} does not divide over {world} processes; the batch "
                          f"is global, so make it a multiple of {world} (GPUs × nodes)")
    return batch_size // world


def shard(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous slice of a global batch of n items: sizes differ by at most
    one (a last, short batch), earlier ranks taking the extra items. Slices never overlap."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)
