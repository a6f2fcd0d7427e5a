"""Slurm through ``sbatch`` of our rendered script; states from ONE ``sacct`` (``squeue`` without accounting).

Hooks (psij-style): submit = ``sbatch --parsable job.slurm`` in the run folder; id = the first field of
its output; status = ``sacct -X -D -n -P -o JobID,State,ExitCode,NodeList,Elapsed -j a,b,c`` for every job
of every run shown; parser = one ``|``-separated line per job or element and attempt (``-D``: a requeued
element keeps one record per attempt, whoever requeued it, so its restarts and the elapsed time of every
attempt come from the same single call; this sacct has no ``Restarts`` field), pending ranges such as
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
from typing import TYPE_CHECKING, Any

from hpcseg.errors import SchedulerError
from hpcseg.fsutil import read_json
from hpcseg.schedulers.base import JobState, Scheduler, hms_seconds, one_line
from hpcseg.schedulers.directives import (
    OptionTable,
    _ranges,
    check_directive_value,
    check_extra,
    job_name,
    memory_mb,
    parse_options,
    walltime_directive,
)

if TYPE_CHECKING:
    from hpcseg.spec import JobSpec

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
    """``JobID|State|ExitCode|NodeList|Elapsed`` lines (sacct -X -D -n -P) to states.

    The last line of an id (its latest attempt) gives state, node and exit code; every earlier line of
    the same id is an attempt the scheduler requeued (``-D``), counted in ``restarts`` and whose elapsed
    time is added, so a task put back after a node failure shows all the time it has run."""
    out: dict[str, JobState] = {}
    attempts: set[str] = set()  # ids whose kept record is an attempt of that element, not a pending range
    for line in text.splitlines():
        f = line.strip().split("|")
        if len(f) < 5 or not f[0]:
            continue
        native = f[1].split()[0] if f[1].strip() else "UNKNOWN"  # "CANCELLED by 0" -> CANCELLED
        node = "" if f[3] in ("None assigned", "(null)") else f[3]
        elapsed = hms_seconds(f[4])
        ids = expand_id(f[0])
        ranged = len(ids) > 1 or "[" in f[0]
        for jid in ids:
            before = out.get(jid)
            if ranged and before is not None:
                continue  # the array's pending remainder never overrides an element's own record
            restarts, total = 0, elapsed
            if before is not None and jid in attempts and before.native != "PENDING":
                # An earlier attempt of this very element (requeued by Slurm or by the script): count it
                # and its time. A pending-range record before the element started is no attempt.
                restarts = before.restarts + 1
                if before.elapsed_s is not None:
                    total = before.elapsed_s + (elapsed or 0.0)
            elif before is not None and jid in attempts:
                restarts = before.restarts
            out[jid] = JobState(STATE_MAP.get(native, "unknown"), native, node, total, f[2], restarts=restarts)
            if not ranged:
                attempts.add(jid)
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


# --------------------------------------------------------------------------------------------- directives

# sbatch's options as its getopt table knows them (sbatch(1) and `sbatch --help` of Slurm 22.05, plus the
# few later releases added): getopt_long takes any unique prefix, so `--arr=0-9` IS --array.
_REQUIRED = """account acctg-freq array batch bb bbf begin chdir cluster-constraint clusters comment constraint
container container-id core-spec cores-per-socket cpu-freq cpus-per-gpu cpus-per-task deadline delay-boot
dependency distribution error exclude export-file extra-node-info gid gpu-bind gpu-freq gpus gpus-per-node
gpus-per-socket gpus-per-task gres gres-flags hint input job-name kill-on-invalid-dep licenses mail-type
mail-user mcs-label mem mem-bind mem-per-cpu mem-per-gpu mincpus network nodefile nodelist nodes ntasks
ntasks-per-core ntasks-per-gpu ntasks-per-node ntasks-per-socket open-mode output partition power prefer
priority profile qos reservation signal sockets-per-node switches thread-spec threads-per-core time time-min
tmp tres-bind tres-per-task uid wait-all-nodes wckey wrap""".split()
_OPTIONAL = "exclusive export get-user-env nice no-kill propagate".split()
_NONE = """contiguous help hold ignore-pbs no-requeue overcommit oversubscribe parsable quiet reboot requeue
spread-job test-only usage use-min-nodes verbose version wait""".split()
_SHORT = {"a": "array", "A": "account", "b": "begin", "B": "extra-node-info", "c": "cpus-per-task",
          "C": "constraint", "d": "dependency", "D": "chdir", "e": "error", "F": "nodefile", "G": "gpus",
          "H": "hold", "h": "help", "i": "input", "J": "job-name", "k": "no-kill", "L": "licenses",
          "M": "clusters", "m": "distribution", "n": "ntasks", "N": "nodes", "o": "output", "O": "overcommit",
          "p": "partition", "q": "qos", "Q": "quiet", "s": "oversubscribe", "S": "core-spec", "t": "time",
          "v": "verbose", "V": "version", "W": "wait", "w": "nodelist", "x": "exclude"}
_LONG: dict[str, Any] = {**dict.fromkeys(_REQUIRED, "required"), **dict.fromkeys(_OPTIONAL, "optional"),
                         **dict.fromkeys(_NONE, "none")}
# What hpcseg writes itself, and where a user changes it. A second copy in extra would override ours (the
# last one wins) or clash (--mem with --mem-per-gpu), so extra may not name, or abbreviate, any of these.
_OWNED = {
    "array": "the job's tasks (resources.array_parallelism)", "time": "resources.walltime",
    "time-min": "resources.walltime", "mem": "resources.memory", "mem-per-cpu": "resources.memory",
    "mem-per-gpu": "resources.mem_per_gpu", "cpus-per-task": "resources.cpus", "cpus-per-gpu": "resources.cpus",
    "mincpus": "resources.cpus", "gpus": "resources.gpus", "gres": "resources.gpus",
    "gpus-per-node": "resources.gpus", "gpus-per-task": "resources.gpus", "gpus-per-socket": "resources.gpus",
    "output": "the run's logs/ folder", "error": "the run's logs/ folder", "open-mode": "the run's logs/ folder",
    "job-name": "the job's name", "signal": "resources.slurm.signal_seconds",
    "requeue": "training.max_requeues", "no-requeue": "training.max_requeues", "partition": "resources.queue",
    "dependency": "hpcseg submit --then-collect", "nodes": "resources.nodes", "ntasks": "resources.nodes",
    "ntasks-per-node": "resources.nodes", "ntasks-per-gpu": "resources.nodes",
    "ntasks-per-socket": "resources.nodes", "ntasks-per-core": "resources.nodes",
    "tres-per-task": "resources.gpus",
    "account": "resources.account", "qos": "resources.slurm.qos", "constraint": "resources.slurm.constraint",
    "chdir": "the run folder", "wrap": "the job script",
}
SBATCH_OPTIONS = OptionTable("sbatch", _LONG, {k: (_LONG[v], v) for k, v in _SHORT.items()}, _OWNED,
                             example="--exclusive or --mail-type=END")


def slurm_directives(spec: JobSpec, indices: list[int]) -> dict[str, Any]:
    """Every value of the #SBATCH block, each checked for its directive line (after profiles and --set)."""
    r, s = spec.resources, spec.resources.slurm
    gpu_type = check_directive_value(s.gpu_type, "gpu_type", "resources.slurm.gpu_type")
    gpus = None
    if r.gpus > 0:
        # --gres counts per node; --gpus counts for the whole job, so several nodes ask --gpus-per-node.
        flag = "--gpus" if r.nodes == 1 else "--gpus-per-node"
        gpus = (f"--gres=gpu:{gpu_type}:{r.gpus}" if gpu_type else f"--gres=gpu:{r.gpus}") \
            if s.gpu_flag == "gres" else (f"{flag}={gpu_type}:{r.gpus}" if gpu_type else f"{flag}={r.gpus}")
    array = _ranges(indices) + (f"%{r.array_parallelism}" if r.array_parallelism else "")
    per_gpu = memory_mb(r.mem_per_gpu, "resources.mem_per_gpu")
    mem = None if per_gpu is not None else memory_mb(r.memory, "resources.memory")
    memory = f"--mem-per-gpu={per_gpu}M" if per_gpu is not None else f"--mem={mem}M"
    return {
        "job_name": job_name(spec.slug),
        "partition": check_directive_value(r.queue, "queue", "resources.queue"),
        "account": check_directive_value(r.account, "account", "resources.account"),
        "qos": check_directive_value(s.qos, "qos", "resources.slurm.qos"),
        "constraint": check_directive_value(s.constraint, "constraint", "resources.slurm.constraint"),
        "time": walltime_directive(r.walltime),
        "cpus": int(r.cpus),
        # Data-parallel: one launcher (torchrun) per node, each with the node's CPUs; else one task.
        "nodes": int(r.nodes),
        "tasks": "--ntasks-per-node=1" if r.data_parallel else "--ntasks=1",
        "memory": memory,
        "mem_mb": mem,
        "mem_per_gpu_mb": per_gpu,
        "gpu_type": gpu_type,
        "gpus": gpus,
        "array": array,
        "signal_seconds": int(s.signal_seconds),
        "extra": check_extra(s.extra, SBATCH_OPTIONS, "resources.slurm.extra"),
    }


_slurm_directives = slurm_directives  # the name render.py used


def extra_parameters(lines: list[str], field_name: str = "resources.slurm.extra") -> dict[str, str | bool]:
    """``resources.slurm.extra`` as submitit's ``additional_parameters`` (long name -> value, True for a
    flag): the same parse and the same refusals as the #SBATCH path, written out in full names."""
    check_extra(lines, SBATCH_OPTIONS, field_name)
    out: dict[str, str | bool] = {}
    for i, line in enumerate(lines):
        for name, value in parse_options(line, SBATCH_OPTIONS, f"{field_name}.{i}"):
            out[name] = True if value is None else value
    return out


class SlurmScheduler(Scheduler):
    name = "slurm"
    script = "slurm"
    template = "slurm.sh.j2"
    submit_command = "sbatch"
    _no_accounting = False

    def directives(self, spec: JobSpec, indices: list[int]) -> dict[str, Any]:
        return slurm_directives(spec, indices)

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
        p = self.run_cmd(["sacct", "-X", "-D", "-n", "-P", "-o", "JobID,State,ExitCode,NodeList,Elapsed", "-j", ids],
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
