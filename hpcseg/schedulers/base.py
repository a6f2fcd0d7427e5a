"""The scheduler interface: submit a run as one array job, poll many jobs in one call, cancel, find logs.

After psij-python: a backend is a handful of hooks, not a framework. Everything a backend does not
need to know (rendering, containers, splits, the manifest) stays in ``hpcseg.submit``; everything the
run files already know (exit_code, history) stays in ``hpcseg.status``, which trusts those files over
the scheduler, because schedulers forget finished jobs and accounting may be off.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hpcseg.errors import SchedulerError
from hpcseg.fsutil import read_json

if TYPE_CHECKING:
    from hpcseg.spec import JobSpec

# The normalised states every backend maps its own vocabulary onto.
STATES = ("pending", "running", "completed", "failed", "cancelled", "timeout", "preempted", "requeued", "unknown")
ENDED = frozenset({"completed", "failed", "cancelled", "timeout"})
TIMEOUT_S = float(os.environ.get("HPCSEG_SCHEDULER_TIMEOUT", "10"))
# Scheduler commands run by this process, per command name: status's one-call promise is tested on it.
CALLS: Counter[str] = Counter()


@dataclass(frozen=True)
class JobState:
    """One job or array element as the scheduler sees it; ``native`` keeps the scheduler's own word."""

    state: str
    native: str = ""
    node: str = ""
    elapsed_s: float | None = None
    exit_code: str = ""
    array_level: bool = False  # the whole array's record, when the scheduler cannot show elements
    restarts: int = 0  # times the scheduler put it back in the queue (its own requeues, e.g. after a node failure)


@dataclass
class Submission:
    """What ``submit`` returns: ids to poll/cancel, and the id each task will be reported under."""

    job_ids: list[str]
    task_ids: dict[int, str]
    collect_id: str | None = None
    logs: str = ""
    extra: dict = field(default_factory=dict)


class Scheduler(ABC):
    """A backend. ``poll`` must make at most ONE scheduler call however many ids it is given."""

    name: ClassVar[str]
    script: ClassVar[str | None]  # "slurm" | "pbs": which script render_script writes; None: none
    template: ClassVar[str | None] = None  # the script's template in templates/ (with body.sh.j2)
    submit_command: ClassVar[str | None] = None  # checked on PATH before anything is written

    def directives(self, spec: JobSpec, indices: list[int]) -> dict[str, Any]:
        """Hook: every value of the script's directive block (``d`` in the template), each checked for
        its directive line (schedulers/directives.py). Backends without a script have none."""
        raise NotImplementedError(f"{self.name} renders no job script")

    def check_spec(self, spec: JobSpec) -> None:
        """Refuse, before a run folder exists, what this backend could not submit as written (raises
        HpcsegError naming the field). Script backends build their directive block and drop it."""
        if self.template:
            self.directives(spec, [t.index for t in spec.tasks()])

    def missing_command(self) -> str | None:
        """Why submitting cannot work here, found before a run folder exists (nothing half-written)."""
        if self.submit_command and shutil.which(self.submit_command) is None:
            return (f"{self.submit_command}: command not found; is {self.name} installed here? "
                    f"(--scheduler local runs without one)")
        return None

    def submit(self, run_dir: Path, script: Path | None, *, then_collect: bool = False,
               max_parallel: int | None = None) -> Submission:
        """Submit every task of the run as one array job; raise SchedulerError with the scheduler's words.

        Script-based backends only supply the hooks below (psij's shape); others override this."""
        if script is None:
            raise SchedulerError(f"{self.name}: no job script to submit")
        run_dir = Path(run_dir)
        (run_dir / "logs").mkdir(exist_ok=True)
        job = self.submit_script(script, run_dir)
        tasks = [t["index"] for t in read_json(run_dir / "manifest.json")["tasks"]]
        collect = self.submit_collect(run_dir, job) if then_collect else None
        return Submission([job], {k: self.task_id(job, k) for k in tasks}, collect, str(run_dir / "logs"))

    def submit_script(self, script: Path, run_dir: Path) -> str:
        """Hook: submit the rendered script from the run folder; return the job id."""
        raise NotImplementedError(f"{self.name} submits without a script")

    def task_id(self, job: str, index: int) -> str:
        """Hook: the id array element ``index`` of ``job`` is reported under."""
        raise NotImplementedError(f"{self.name} names no array elements")

    def submit_collect(self, run_dir: Path, after: str) -> str:
        """Hook: a job that runs ``hpcseg collect`` once ``after`` has ended, however it ended."""
        raise NotImplementedError(f"{self.name} has no dependent collect job")

    def resubmit(self, run_dir: Path, script: Path | None, indices: Sequence[int]) -> Submission:
        """Submit ``script``, rendered for ``indices`` only, as a new job of the same run (``hpcseg
        resubmit``); ``task_ids`` names just those tasks. Backends whose element ids follow from the job
        id and the index (Slurm's ``123_4``, PBS's ``123[4]``) need nothing more than ``submit``."""
        sub = self.submit(run_dir, script)
        return Submission(sub.job_ids, {k: v for k, v in sub.task_ids.items() if k in set(indices)}, None,
                          sub.logs, sub.extra)

    @abstractmethod
    def poll(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        """States of all array elements of ``job_ids``, keyed as ``Submission.task_ids`` names them."""

    @abstractmethod
    def cancel(self, job_ids: Sequence[str]) -> None:
        """Cancel jobs or single elements (ids as in ``task_ids``)."""

    def log_paths(self, run_dir: Path, index: int, task_id: str | None) -> list[Path]:
        """The scheduler's stdout/stderr files of one task (existing ones first)."""
        logs = run_dir / "logs"
        found = sorted(p for p in logs.glob(f"*_{index}.*") if p.is_file()) if logs.is_dir() else []
        return found

    def run_cmd(self, argv: list[str], *, cwd: Path | None = None, timeout: float = TIMEOUT_S,
                what: str = "") -> subprocess.CompletedProcess[str]:
        """Run one scheduler command; a missing binary or a timeout becomes a one-line SchedulerError."""
        CALLS[Path(argv[0]).name] += 1
        try:
            return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise SchedulerError(f"{argv[0]}: command not found; is {self.name} installed here?") from None
        except subprocess.TimeoutExpired:
            raise SchedulerError(f"{what or argv[0]}: no answer from {self.name} within {timeout:.0f} s "
                                 f"(is the controller down?)") from None


def one_line(text: str) -> str:
    """A scheduler's message as one line (first non-empty lines joined), for stderr and the manifest."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[:3])[:500] or "(no message)"


def hms_seconds(text: str) -> float | None:
    """Slurm/PBS durations ``[D-]HH:MM:SS`` or ``MM:SS`` to seconds."""
    text = text.strip()
    if not text or text in ("INVALID", "UNLIMITED", "--"):
        return None
    days = 0
    if "-" in text:
        d, _, text = text.partition("-")
        days = int(d) if d.isdigit() else 0
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        return None
    secs = 0.0
    for p in parts:
        secs = secs * 60 + p
    return days * 86400 + secs
