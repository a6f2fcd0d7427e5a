"""Schedulers by name, and ``auto``: Slurm when ``sbatch`` is on PATH, else PBS when ``qsub`` is, else local.

Backends are imported only when asked for, so ``hpcseg status`` loads one small module per scheduler
that its runs used, and none of them imports submitit unless a run was submitted through it.
"""

from __future__ import annotations

import importlib
import shutil

from hpcseg.errors import HpcsegError
from hpcseg.schedulers.base import ENDED, STATES, JobState, Scheduler, Submission

__all__ = ["ENDED", "STATES", "JobState", "Scheduler", "Submission", "detect", "get", "poll_family"]

# name -> (module, class). "submitit" is Slurm reached through submitit; it polls like "slurm".
REGISTRY: dict[str, tuple[str, str]] = {
    "slurm": ("hpcseg.schedulers.slurm", "SlurmScheduler"),
    "submitit": ("hpcseg.schedulers.submitit_slurm", "SubmititSlurmScheduler"),
    "pbs": ("hpcseg.schedulers.pbs", "PbsScheduler"),
    "local": ("hpcseg.schedulers.local", "LocalScheduler"),
}


def detect() -> str:
    """What ``--scheduler auto`` means on this machine."""
    if shutil.which("sbatch"):
        return "slurm"
    if shutil.which("qsub"):
        return "pbs"
    return "local"


def get(name: str) -> Scheduler:
    if name == "auto":
        name = detect()
    if name not in REGISTRY:
        raise HpcsegError(f"unknown scheduler {name!r}; choose one of {', '.join(REGISTRY)}")
    module, cls = REGISTRY[name]
    return getattr(importlib.import_module(module), cls)()


def poll_family(name: str) -> str:
    """Backends whose ids one scheduler command can poll together (sbatch and submitit jobs: one sacct)."""
    return "slurm" if name == "submitit" else name
