"""Schedulers by name, and ``auto``: Slurm when ``sbatch`` is on PATH, else PBS when ``qsub`` is, else local.

Backends are imported only when asked for, so ``hpcseg status`` loads one small module per scheduler
that its runs used, and none of them imports submitit unless a run was submitted through it.
"""

from __future__ import annotations

import importlib
import shutil
from typing import TYPE_CHECKING

from hpcseg.errors import HpcsegError
from hpcseg.schedulers.base import ENDED, STATES, JobState, Scheduler, Submission

__all__ = ["ENDED", "STATES", "JobState", "Scheduler", "Submission", "detect", "directive_problems", "get",
           "poll_family"]

if TYPE_CHECKING:
    from hpcseg.spec import JobSpec

# The backends that write a job script (submitit's extras are parsed by the Slurm rules too).
SCRIPT_BACKENDS = ("slurm", "pbs")

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


def directive_problems(spec: JobSpec, names: tuple[str, ...] = SCRIPT_BACKENDS) -> list[tuple[str, str]]:
    """(field, what to do) for each thing ``submit`` would refuse on a directive line of any script
    backend (``Scheduler.check_spec``), so ``hpcseg check`` finds it before a run folder exists. A
    problem of a field both backends write (the walltime) is named once."""
    out: list[tuple[str, str]] = []
    for name in names:
        try:
            get(name).check_spec(spec)
        except HpcsegError as exc:
            where, sep, what = exc.message.partition(": ")
            item = (where, what) if sep and " " not in where else ("resources", exc.message)
            if item not in out:
                out.append(item)
    return out
