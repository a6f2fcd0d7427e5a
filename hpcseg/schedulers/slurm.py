"""Slurm through ``sbatch`` of our rendered script; states from ONE ``sacct`` (``squeue`` without accounting).

Hooks (psij-style): submit = ``sbatch --parsable job.slurm`` in the run folder; id = the first field of
its output; status = ``sacct -X -n -P -o JobID,State,ExitCode,NodeList,Elapsed -j a,b,c`` for every job
of every run shown; parser = one ``|``-separated line per job or element, pending ranges such as
``123_[0-5%2]`` expanded; state map below. Jobs not yet in accounting, or gone from ``squeue``, are
judged by status from their exit_code files.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from hpcseg.errors import SchedulerError
from hpcseg.fsutil import read_json
from hpcseg.schedulers.base import JobState, Scheduler, hms_seconds, one_line

STATE_MAP = {
    "PENDING": "pending", "CONFIGURING": "pending", "REQUEUE_HOLD": "pending", "REQUEUE_FED": "pending",
    "RESV_DEL_HOLD": "pending", "SPECIAL_EXIT": "failed",
    "RUNNING": "running", "COMPLETING": "running", "SUSPENDED": "running", "STOPPED": "running",
    "RESIZING": "running", "SIGNALING": "running", "STAGE_OUT": "running",
    "COMPLETED": "completed",
    "FAILED": "failed", "NODE_FAIL": "failed", "BOOT_FAIL": "failed", "OUT_OF_MEMORY": "failed",
    "CANCELLED": "cancelled", "REVOKED": "cancelled",
    "TIMEOUT": "timeout", "DEADLINE": "timeout",
    "PREEMPTED": "preempted", "REQUEUED": "requeued",
}
# sacct errors after which squeue (the controller) is asked instead: no accounting, or slurmdbd down.
ACCOUNTING_OFF = ("accounting storage is disabled", "not running a supported accounting_storage",
                  "problem talking to the database", "slurmdbd")
_RANGE = re.compile(r"^(\d+)_\[([0-9,\-]+)(?:%\d+)?\]$")
COLLECT_RESOURCES = ["--ntasks=1", "--cpus-per-task=1", "--mem=4G", "--time=00:30:00"]


def expand_id(job_id: str) -> list[str]:
    """``123_[0-2,5%2]`` -> 123_0 123_1 123_2 123_5; any other id as it is."""
    m = _RANGE.match(job_id)
    if not m:
        return [job_id]
    out = []
    for part in m.group(2).split(","):
        lo, _, hi = part.partition("-")
        out += [f"{m.group(1)}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def parse_sacct(text: str) -> dict[str, JobState]:
    """``JobID|State|ExitCode|NodeList|Elapsed`` lines (sacct -X -n -P) to states; the last line of an id wins."""
    out: dict[str, JobState] = {}
    for line in text.splitlines():
        f = line.strip().split("|")
        if len(f) < 5 or not f[0]:
            continue
        native = f[1].split()[0] if f[1].strip() else "UNKNOWN"  # "CANCELLED by 0" -> CANCELLED
        node = "" if f[3] in ("None assigned", "(null)") else f[3]
        js = JobState(STATE_MAP.get(native, "unknown"), native, node, hms_seconds(f[4]), f[2])
        for jid in expand_id(f[0]):
            out[jid] = js
    return out


def parse_squeue(text: str) -> dict[str, JobState]:
    """``%i|%T|%N|%M`` lines (squeue -h -r) to states."""
    out: dict[str, JobState] = {}
    for line in text.splitlines():
        f = line.strip().split("|")
        if len(f) < 4:
            continue
        js = JobState(STATE_MAP.get(f[1], "unknown"), f[1], f[2], hms_seconds(f[3]))
        for jid in expand_id(f[0]):
            out[jid] = js
    return out


class SlurmScheduler(Scheduler):
    name = "slurm"
    script = "slurm"
    submit_command = "sbatch"
    _no_accounting = False

    def submit_script(self, script: Path, run_dir: Path) -> str:
        return self._sbatch(["sbatch", "--parsable", script.name], run_dir)

    def task_id(self, job: str, index: int) -> str:
        return f"{job}_{index}"

    def _sbatch(self, argv: list[str], cwd: Path) -> str:
        # sbatch retries an unreachable controller for a while; give it longer than a status query.
        p = self.run_cmd(argv, cwd=cwd, timeout=60, what="sbatch")
        if p.returncode != 0:
            raise SchedulerError(f"sbatch failed: {one_line(p.stderr or p.stdout)}")
        job = p.stdout.strip().split(";")[0].strip()
        if not job.isdigit():
            raise SchedulerError(f"sbatch printed no job id: {one_line(p.stdout + p.stderr)}")
        return job

    def submit_collect(self, run_dir: Path, after: str) -> str:
        """A one-CPU job that runs ``hpcseg collect`` after every task has ended, however it ended."""
        manifest = read_json(run_dir / "manifest.json")
        part = manifest["spec"]["resources"].get("queue")
        cmd = shlex.join([sys.executable, "-m", "hpcseg", "collect", str(run_dir)])
        argv = ["sbatch", "--parsable", f"--dependency=afterany:{after}", f"--job-name={manifest['job_slug']}-collect",
                *COLLECT_RESOURCES, "--output=logs/collect_%j.out", *([f"--partition={part}"] if part else []),
                f"--wrap={cmd}"]
        return self._sbatch(argv, run_dir)

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        if not job_ids:
            return {}
        ids = ",".join(job_ids)
        if accounting_enabled() is False or SlurmScheduler._no_accounting:
            return self._squeue(ids)
        p = self.run_cmd(["sacct", "-X", "-n", "-P", "-o", "JobID,State,ExitCode,NodeList,Elapsed", "-j", ids],
                         what="sacct")
        if p.returncode == 0:
            states = parse_sacct(p.stdout)
            # sacct asks slurmdbd, which answers while slurmctld is down; a TCP connect to the controller's
            # port (not a scheduler command) tells whether those states can still change.
            where = controller_down()
            if where:
                exc = SchedulerError(f"slurmctld ({where}) is not answering: the states shown come from "
                                     f"accounting and may be stale, and nothing new will start")
                exc.states = states  # type: ignore[attr-defined]
                raise exc
            return states
        msg = p.stderr or p.stdout
        if not any(s in msg.lower() for s in ACCOUNTING_OFF):
            raise SchedulerError(f"sacct failed: {one_line(msg)}")
        if "accounting storage is disabled" in msg.lower():
            SlurmScheduler._no_accounting = True  # go straight to squeue next time
        return self._squeue(ids)

    def _squeue(self, ids: str) -> dict[str, JobState]:
        """Without accounting squeue knows queued and running jobs; ended ones are judged by exit_code files."""
        q = self.run_cmd(["squeue", "-h", "-r", "-o", "%i|%T|%N|%M", "-j", ids], what="squeue")
        if q.returncode != 0 and "invalid job id" not in (q.stderr or "").lower():
            raise SchedulerError(f"squeue failed: {one_line(q.stderr or q.stdout)}")
        return parse_squeue(q.stdout)

    def cancel(self, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        # scancel sends TERM; the trainer checkpoints and exits 75, and the job script would requeue it
        # (scontrol requeue works even on a cancelled job). Turning requeue off first makes that fail.
        for jid in job_ids:
            self.run_cmd(["scontrol", "update", f"JobId={jid}", "Requeue=0"], what="scontrol update")
        p = self.run_cmd(["scancel", *job_ids], what="scancel")
        err = (p.stderr or "").lower()
        if p.returncode != 0 and "already completing or completed" not in err and "invalid job id" not in err:
            raise SchedulerError(f"scancel failed: {one_line(p.stderr or p.stdout)}")

    def log_paths(self, run_dir: Path, index: int, task_id: str | None) -> list[Path]:
        job = (task_id or "").split("_")[0]
        logs = run_dir / "logs"
        found = sorted(logs.glob(f"*_{job}_{index}.*")) if job and logs.is_dir() else []
        return found or super().log_paths(run_dir, index, task_id)


def _conf_text() -> str | None:
    try:
        return Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text(errors="replace")
    except OSError:
        return None  # configless, or elsewhere


def controller_down(timeout: float = 2.0) -> str | None:
    """``host:port`` when no slurmctld named in slurm.conf accepts a connection; None when one does
    (or when slurm.conf cannot be read, so nothing can be said)."""
    text = _conf_text()
    if text is None:
        return None
    hosts = [m.group(2) or m.group(1) for m in re.finditer(
        r"^\s*(?:SlurmctldHost|ControlMachine)\s*=\s*([^\s(#]+)(?:\(([^)\s]+)\))?", text, re.M | re.I)]
    port_m = re.search(r"^\s*SlurmctldPort\s*=\s*(\d+)", text, re.M | re.I)
    port = int(port_m.group(1)) if port_m else 6817
    for host in hosts:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return None
        except OSError:
            continue
    return f"{', '.join(hosts)}:{port}" if hosts else None


def accounting_enabled() -> bool | None:
    """From slurm.conf (a file read, not a scheduler call): is there accounting for sacct to ask?"""
    text = _conf_text()
    if text is None:
        return None  # try sacct, fall back on its error
    m = re.search(r"^\s*AccountingStorageType\s*=\s*(\S+)", text, re.MULTILINE | re.IGNORECASE)
    return bool(m) and "none" not in m.group(1).lower()
