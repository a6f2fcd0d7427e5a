"""PBS Pro / Torque through ``qsub`` of our rendered script; states from ONE ``qstat -f`` for all ids.

Hooks: submit = ``qsub job.pbs`` in the run folder; id = its output (``123[].server`` on PBS Pro and
Torque, a bare ``123`` from Slurm's Torque wrapper); status = ``qstat -f`` with every id (PBS Pro adds
``-x -t``: finished jobs and array subjobs; Torque ``-t``); parser = ``Job Id:`` blocks of ``key = value``.

Slurm's Torque wrapper (``qstat`` is a Perl script over Slurm) shows array elements under internal job
ids it does not map back to indices, so there the array's own record is reported at array level and
status refines it per task from the task's files (started or not, exit_code).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcseg.errors import HpcsegError, SchedulerError
from hpcseg.fsutil import read_json, write_text_atomic
from hpcseg.schedulers.base import JobState, Scheduler, Submission, hms_seconds, one_line
from hpcseg.schedulers.directives import (
    PBS_NAME_MAX,
    OptionTable,
    _ranges,
    check_directive_value,
    check_extra,
    job_name,
    memory_mb,
    walltime_directive,
)

if TYPE_CHECKING:
    from hpcseg.spec import JobSpec

# job_state letters; F/X/C (ended) are refined by the exit status when there is one.
STATE_MAP = {"Q": "pending", "H": "pending", "W": "pending", "T": "pending", "M": "pending",
             "R": "running", "E": "running", "B": "running", "S": "running", "U": "running",
             "F": "completed", "X": "completed", "C": "completed"}
_BLOCK = re.compile(r"^Job Id:\s*(\S+)\s*$")
_ARRAY = re.compile(r"^(\d+)\[\]((?:\.\S+)?)$")  # 123[] or 123[].server
NO_SUCH = ("unknown job id", "job has finished", "unknown queue destination")


def qstat_flavor() -> str:
    """"slurm" when qstat is Slurm's Torque wrapper (read from the file: no scheduler call), else "pbs"."""
    path = shutil.which("qstat")
    try:
        head = Path(path).read_bytes()[:4096].decode("latin-1") if path else ""
    except OSError:
        head = ""
    return "slurm" if "slurm" in head.lower() else "pbs"


def _ended(code: str) -> str:
    """PBS exit status: 0 ok; >256 killed by signal 256+N (qdel); -29/-11 walltime; else failed."""
    try:
        n = int(code)
    except ValueError:
        return "completed"  # no exit status given: ended, outcome left to the exit_code file
    if n == 0:
        return "completed"
    if n in (-11, -29):
        return "timeout"
    if n > 256:
        return "cancelled"
    return "failed"


def parse_qstat(text: str, array_level: Sequence[str] = ()) -> dict[str, JobState]:
    """``qstat -f`` blocks to states; ids in ``array_level`` are arrays shown only as one record."""
    out: dict[str, JobState] = {}
    blocks: list[tuple[str, dict[str, str]]] = []
    key = ""
    for line in text.splitlines():
        m = _BLOCK.match(line.strip()) if line.startswith("Job Id") else None
        if m:
            blocks.append((m.group(1), {}))
            key = ""
        elif blocks and " = " in line:
            key, _, value = line.strip().partition(" = ")
            blocks[-1][1][key] = value
        elif blocks and key and line.startswith("\t") and line.strip():
            blocks[-1][1][key] += line.strip()  # PBS Pro wraps long values onto tab-indented lines
    for jid, f in blocks:
        letter = f.get("job_state", "?")
        code = f.get("Exit_status", f.get("exit_status", ""))
        state = STATE_MAP.get(letter, "unknown")
        if letter in "FXC" and code:
            state = _ended(code)
        elif letter == "C" and not code:
            state = "unknown"  # the wrapper's C: ended, but not how; the exit_code file tells
        host = f.get("exec_host", "").split("/")[0].split("+")[0]
        native = f"{letter}" + (f" exit {code}" if code else "")
        out[jid] = JobState(state, native, host, hms_seconds(f.get("resources_used.walltime", "")), code,
                            array_level=jid in array_level)
    return out


# --------------------------------------------------------------------------------------------- directives

# qsub's options (PBS Pro and Torque together; getopt, one letter each, bundles and attached values allowed).
_QSUB_REQUIRED = "aAbcCdDeFjJkKlmMNopPqrRStTuvwW"
_QSUB_NONE = "fhInVxXzG"
_QSUB_OWNED = {"J": "the job's tasks (a PBS Pro array)", "t": "the job's tasks (a Torque array)",
               "N": "the job's name", "o": "the run's logs/ folder", "e": "the run's logs/ folder",
               "j": "the run's logs/ folder", "r": "training.max_requeues", "q": "resources.queue",
               "A": "resources.account", "P": "resources.account", "d": "the run folder"}
# -l resources and -W attributes that hpcseg sets: extra may add others (place=, group_list=), not these.
_L_OWNED = {k: v for ks, v in (("walltime", "resources.walltime"), ("select nodes ppn", "resources.nodes/cpus/gpus"),
                              ("ncpus", "resources.cpus"), ("ngpus gpus", "resources.gpus"),
                              ("mem vmem pmem pvmem", "resources.memory")) for k in ks.split()}
QSUB_OPTIONS = OptionTable(
    "qsub", {}, {**{c: ("required", c) for c in _QSUB_REQUIRED}, **{c: ("none", c) for c in _QSUB_NONE}},
    _QSUB_OWNED, {"l": _L_OWNED, "W": {"depend": "hpcseg submit --then-collect"}}, example="-m abe")


def _mem_pbs(mb: int) -> str:
    return f"{mb // 1024}gb" if mb % 1024 == 0 else f"{mb}mb"


def _pbs_pro_range(indices: list[int]) -> str:
    """PBS Pro's -J takes one range with an optional step, not a list."""
    if len({b - a for a, b in zip(indices, indices[1:], strict=False)}) == 1:
        step = indices[1] - indices[0]
        return f"{indices[0]}-{indices[-1]}" + (f":{step}" if step > 1 else "")
    shown = ",".join(map(str, indices))
    raise HpcsegError(f"tasks {shown}: a PBS Pro job array is one range (a-b[:step]); "
                      f"submit these tasks in separate runs")


def pbs_job_name(slug: str) -> str:
    """PBS Pro job names: at most 15 characters, starting with an ASCII letter."""
    name = slug if slug[:1].isascii() and slug[:1].isalpha() else f"j{slug}"
    return name[:PBS_NAME_MAX]


def deadline_margin(spec: JobSpec) -> int:
    """Seconds before the PBS walltime at which the trainer must stop: time to save and exit."""
    return int(spec.resources.slurm.signal_seconds) or 300


def pbs_directives(spec: JobSpec, indices: list[int]) -> dict[str, Any]:
    """Every value of the #PBS block, each checked for its directive line (after profiles and --set)."""
    r, p = spec.resources, spec.resources.pbs
    per_gpu = memory_mb(r.mem_per_gpu, "resources.mem_per_gpu")
    total_mb = per_gpu * r.gpus if per_gpu is not None else memory_mb(r.memory, "resources.memory")
    name = pbs_job_name(job_name(spec.slug))
    place = None
    table = QSUB_OPTIONS
    if r.nodes > 1:
        # One chunk per node (cpus, gpus and memory are per node), each on its own host: the job script
        # starts one launcher per unique host of $PBS_NODEFILE. extra may then not place chunks itself.
        place = "place=scatter"
        table = dataclasses.replace(QSUB_OPTIONS, owned_keys={
            **QSUB_OPTIONS.owned_keys, "l": {**_L_OWNED, "place": "resources.nodes (one chunk per node)"}})
    if p.flavor == "torque":
        nodes = f"nodes={int(r.nodes)}:ppn={int(r.cpus)}" + (f":gpus={int(r.gpus)}" if r.gpus else "")
        place = None  # nodes=M already names M hosts
        resources = f"{nodes},mem={_mem_pbs(total_mb)}"
        array = _ranges(indices) + (f"%{r.array_parallelism}" if r.array_parallelism else "")
        # A file, not the logs/ folder: Torque appends -<index> per array element itself, and Slurm's
        # Torque emulation fails every task whose -o names a directory.
        out, err = f"logs/{name}.out", f"logs/{name}.err"
    else:
        select = check_directive_value(p.select, "select", "resources.pbs.select")
        if select:
            resources = select if select.startswith("select=") else f"select={select}"
        else:
            resources = f"select={int(r.nodes)}:ncpus={int(r.cpus)}" + (f":ngpus={int(r.gpus)}" if r.gpus else "") \
                + f":mem={_mem_pbs(total_mb)}"
        array = None
        out, err = f"logs/{name}.o{indices[0]}", f"logs/{name}.e{indices[0]}"
        if len(indices) > 1:
            array = _pbs_pro_range(indices) + (f"%{r.array_parallelism}" if r.array_parallelism else "")
            # PBS Pro puts the subjob's index where ^array_index^ stands (relative to qsub's cwd).
            out, err = f"logs/{name}.o^array_index^", f"logs/{name}.e^array_index^"
    walltime = walltime_directive(r.walltime)
    h, m, sec = (int(x) for x in walltime.split(":"))
    seconds = h * 3600 + m * 60 + sec
    return {
        "flavor": p.flavor,
        "job_name": name,
        "queue": check_directive_value(r.queue, "queue", "resources.queue"),
        "account": check_directive_value(r.account, "account", "resources.account"),
        "account_flag": p.account_flag,
        "resources": resources,
        "place": place,
        "walltime": walltime,
        "walltime_seconds": seconds,
        # PBS sends no warning before the walltime: the script exports HPCSEG_DEADLINE (start + this) and
        # the trainer checkpoints and exits 75 by then. The margin is the warning Slurm would get
        # (resources.slurm.signal_seconds), at most half the walltime.
        "deadline_seconds": seconds - min(deadline_margin(spec), seconds // 2),
        "array": array,
        "array_flag": "-t" if p.flavor == "torque" else "-J",
        "output": out,
        "error": err,
        "extra": check_extra(p.extra, table, "resources.pbs.extra"),
    }


_pbs_directives = pbs_directives  # the name render.py used


class PbsScheduler(Scheduler):
    name = "pbs"
    script = "pbs"
    template = "pbs.sh.j2"
    submit_command = "qsub"
    _flags: list[str] | None = None  # qstat flags that worked for this PBS, learnt once per process

    def directives(self, spec: JobSpec, indices: list[int]) -> dict[str, Any]:
        return pbs_directives(spec, indices)

    def submit_script(self, script: Path, run_dir: Path) -> str:
        return self._qsub(["qsub", script.name], run_dir)

    def resubmit(self, run_dir: Path, script: Path | None, indices: Sequence[int]) -> Submission:
        """qsub a script rendered for ``indices``; a PBS Pro script for one task has no ``-J`` (not an
        array), so that task is reported under the plain job id."""
        if script is None:
            raise SchedulerError("pbs: no job script to submit")
        job = self._qsub(["qsub", script.name], Path(run_dir))
        array = re.search(r"^#PBS -[Jt] ", script.read_text(), re.MULTILINE) is not None
        return Submission([job], {k: self.task_id(job, k) if array else job for k in indices}, None,
                          str(Path(run_dir) / "logs"))

    def task_id(self, job: str, index: int) -> str:
        m = _ARRAY.match(job)
        return f"{m.group(1)}[{index}]{m.group(2)}" if m else f"{job}[{index}]"

    def _qsub(self, argv: list[str], cwd: Path) -> str:
        p = self.run_cmd(argv, cwd=cwd, timeout=60, what="qsub")
        out = p.stdout.strip()
        # Slurm's wrapper prints sbatch's failure on stdout and still exits 0.
        if p.returncode != 0 or not re.match(r"^\d+(\[\])?(\.\S+)?$", out):
            raise SchedulerError(f"qsub failed: {one_line(p.stderr + chr(10) + out)}")
        return out

    def submit_collect(self, run_dir: Path, after: str) -> str:
        """``hpcseg collect`` after every task ended however it ended (``depend=afterany``)."""
        import shlex
        import sys

        m = read_json(run_dir / "manifest.json")
        r = m["spec"]["resources"]
        flavor = r.get("pbs", {}).get("flavor", "pro")
        res = "select=1:ncpus=1:mem=4gb" if flavor == "pro" else "nodes=1:ppn=1,mem=4gb"
        lines = ["#!/bin/bash", f"#PBS -N collect-{m['run_id'][-6:].replace('-', '')}", f"#PBS -l {res}",
                 "#PBS -l walltime=00:30:00", "#PBS -j oe", "#PBS -o logs/collect.out",
                 *([f"#PBS -q {check_directive_value(r['queue'], 'queue', 'resources.queue')}"]
                   if r.get("queue") else []),
                 f"cd {shlex.quote(str(run_dir))}",
                 f"exec {shlex.join([sys.executable, '-m', 'hpcseg', 'collect', str(run_dir)])}", ""]
        script = write_text_atomic(run_dir / "collect.pbs", "\n".join(lines), mode=0o755)
        return self._qsub(["qsub", "-W", f"depend=afterany:{after}", script.name], run_dir)

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        if not job_ids:
            return {}
        wrapper = qstat_flavor() == "slurm"
        flags = [] if wrapper else (PbsScheduler._flags or ["-x", "-t"])
        p = self.run_cmd(["qstat", "-f", *flags, *job_ids], what="qstat")
        text, err = p.stdout, (p.stderr or "")
        if p.returncode != 0 and not wrapper and PbsScheduler._flags is None and "-x" in flags \
                and ("invalid option" in err.lower() or "usage" in err.lower()):
            PbsScheduler._flags = ["-t"]  # Torque: -x means XML there; -t lists array subjobs
            return self.poll(job_ids)
        if p.returncode != 0:
            # Finished jobs that PBS forgot are not an error: status judges them by their files.
            no_record = (wrapper and p.returncode == 153 and not err.strip()) or any(s in err.lower() for s in NO_SUCH)
            if not no_record:
                raise SchedulerError(f"qstat failed: {one_line(err or text)}")
        if not wrapper:
            PbsScheduler._flags = flags
        return parse_qstat(text, array_level=job_ids if wrapper else ())

    def cancel(self, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        if qstat_flavor() == "slurm" and any("[" in j for j in job_ids):
            raise SchedulerError("Slurm's Torque wrapper (qdel) cannot cancel one array element; "
                                 "cancel the whole run, or submit with --scheduler slurm")
        p = self.run_cmd(["qdel", *job_ids], what="qdel")
        if p.returncode != 0 and not any(s in (p.stderr + p.stdout).lower() for s in NO_SUCH):
            raise SchedulerError(f"qdel failed: {one_line(p.stderr or p.stdout)}")

    def log_paths(self, run_dir: Path, index: int, task_id: str | None) -> list[Path]:
        logs = run_dir / "logs"
        if not logs.is_dir():
            return []
        return sorted(p for p in logs.iterdir()
                      if p.is_file() and re.search(rf"\.[oe]{index}$|\.[oe]\d+[.-]{index}$|[._-]{index}\.(out|err)$",
                                                   p.name))
