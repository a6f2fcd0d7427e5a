"""Slurm through submitit: the same array job, for sites and users who already live in submitit.

submitit writes its own sbatch script, so the job-script duties move into :class:`TaskRunner`, the
small picklable callable each array element runs: export ``HPCSEG_CPUS``, run ``hpcseg train --run DIR
--task K`` as a child (inside the container when ``python=`` wraps one), and write ``exit_code`` on
every way out except a requeue. On submitit's pre-timeout signal it forwards USR1 to the trainer, which
checkpoints and exits 75, and asks submitit to requeue the element. Status does NOT use submitit's
watcher: it polls these ids with the same single ``sacct`` as the sbatch backend.
"""

from __future__ import annotations

import math
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpcseg.errors import SchedulerError
from hpcseg.fsutil import read_json, write_text_atomic
from hpcseg.schedulers.base import CALLS, Submission, one_line
from hpcseg.schedulers.slurm import SlurmScheduler


def _ignore_usr2() -> None:
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


class TaskRunner:
    """Runs one task in the Slurm job. A class (not a function) so submitit treats it as Checkpointable."""

    def __init__(self) -> None:
        self._child: subprocess.Popen[bytes] | None = None
        self._requeued = False
        self._signal_s = 90

    def __getstate__(self) -> dict[str, Any]:
        return {}  # a fresh runner after requeue; the trainer resumes from its own checkpoint

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    def __call__(self, run_dir: str, index: int) -> int:
        m = read_json(Path(run_dir) / "manifest.json")
        task = next(t for t in m["tasks"] if t["index"] == index)
        task_dir = Path(run_dir) / task["dir"]
        task_dir.mkdir(parents=True, exist_ok=True)
        (task_dir / "exit_code").unlink(missing_ok=True)
        entry = m.get("entrypoint") or [sys.executable, "-m", "hpcseg"]
        cpus = os.environ.get("SLURM_CPUS_PER_TASK") or str(m["spec"]["resources"]["cpus"])
        env = dict(os.environ, HPCSEG_CPUS=cpus)
        self._signal_s = int(m["spec"]["resources"]["slurm"].get("signal_seconds") or 90)
        rc = 1
        try:
            # Slurm signals every process of the step: the trainer must not die of submitit's USR2.
            self._child = subprocess.Popen([*entry, "train", "--run", run_dir, "--task", str(index)],
                                           cwd=run_dir, env=env, preexec_fn=_ignore_usr2)
            rc = self._child.wait()
            rc = 128 - rc if rc < 0 else rc
        finally:
            if not self._requeued:
                write_text_atomic(task_dir / "exit_code", f"{rc}\n")
        if rc != 0:
            raise RuntimeError(f"task {index} exited {rc}; see {task_dir / 'train.log'}")
        return rc

    def checkpoint(self, run_dir: str, index: int) -> Any:
        """submitit's pre-timeout/preemption hook: let the trainer save, then requeue this element."""
        import submitit

        # This runs in a signal handler that interrupted Popen.wait(), which holds the Popen's lock:
        # use the pid directly, and watch /proc rather than reaping (the interrupted wait does that).
        from hpcseg.schedulers.local import _alive, _proc_start

        child = self._child
        if child is not None:
            start = _proc_start(child.pid)
            try:
                os.kill(child.pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + max(10, self._signal_s - 15)
            while _alive(child.pid, start) and time.monotonic() < deadline:
                time.sleep(0.2)
        self._requeued = True
        # As the job script does: events.log says why this task went back to the queue (status reads it).
        m = read_json(Path(run_dir) / "manifest.json")
        task_dir = Path(run_dir) / next(t["dir"] for t in m["tasks"] if t["index"] == index)
        with open(task_dir / "events.log", "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} task={index} interrupted after "
                     f"checkpoint; submitit requeues {os.environ.get('SLURM_ARRAY_JOB_ID', '')}_{index}\n")
        return submitit.helpers.DelayedSubmission(TaskRunner(), run_dir, index)


def python_command(spec: Any, run_dir: Path, entrypoint: list[str] | None) -> str:
    """submitit's ``python=``: this interpreter, or the container wrap with the image's ``python``."""
    from hpcseg.containers import container_prefix

    if spec.container.runtime == "none":
        return shlex.quote(entrypoint[0] if entrypoint else sys.executable)
    return shlex.join([*container_prefix(spec, run_dir), "python"])


def parameters(spec: Any, indices: list[int]) -> dict[str, Any]:
    """Our resources in submitit's (SlurmExecutor's) names: one table, like submitit's own.

    Built from the very directive block the sbatch path renders (schedulers/slurm.py), so the same
    values are checked the same way, and ``resources.slurm.extra`` goes in as ``additional_parameters``
    (submitit writes each as ``#SBATCH --name=value``) after the same parse and refusals."""
    from hpcseg.schedulers.directives import walltime_seconds
    from hpcseg.schedulers.slurm import extra_parameters, slurm_directives

    d = slurm_directives(spec, indices)
    r, s = spec.resources, spec.resources.slurm
    p: dict[str, Any] = {
        "job_name": d["job_name"], "time": math.ceil(walltime_seconds(r.walltime) / 60), "nodes": 1,
        "ntasks_per_node": 1, "cpus_per_task": d["cpus"], "signal_delay_s": d["signal_seconds"] or 90,
        "array_parallelism": r.array_parallelism or len(indices),
    }
    for key, name in (("partition", "partition"), ("account", "account"), ("qos", "qos"),
                      ("constraint", "constraint")):
        if d[key]:
            p[name] = d[key]
    additional: dict[str, Any] = extra_parameters(list(s.extra))
    if r.gpus:
        typed = f"{d['gpu_type']}:{r.gpus}" if d["gpu_type"] else str(r.gpus)
        if s.gpu_flag == "gres":
            p["gres"] = f"gpu:{typed}"
        else:
            additional["gpus"] = typed
    if additional:
        p["additional_parameters"] = additional
    if d["mem_per_gpu_mb"] is not None:
        p["mem_per_gpu"] = f"{d['mem_per_gpu_mb']}M"
    else:
        p["mem"] = f"{d['mem_mb']}M"
    return p


class SubmititSlurmScheduler(SlurmScheduler):
    name = "submitit"
    script = None  # submitit writes its own sbatch file (under logs/submitit/)

    def submit(self, run_dir: Path, script: Path | None, *, then_collect: bool = False,
               max_parallel: int | None = None) -> Submission:
        run_dir = Path(run_dir)
        indices = [t["index"] for t in read_json(run_dir / "manifest.json")["tasks"]]
        sub = self._map(run_dir, indices)
        sub.collect_id = self.submit_collect(run_dir, sub.job_ids[0]) if then_collect else None
        return sub

    def resubmit(self, run_dir: Path, script: Path | None, indices: Sequence[int]) -> Submission:
        """A new submitit array of just ``indices`` (``hpcseg resubmit``)."""
        return self._map(Path(run_dir), list(indices))

    def _map(self, run_dir: Path, indices: list[int]) -> Submission:
        import submitit

        from hpcseg.spec import JobSpec

        m = read_json(run_dir / "manifest.json")
        spec = JobSpec.model_validate(m["spec"])
        folder = run_dir / "logs" / "submitit"
        params = parameters(spec, indices)  # bad values: one line naming the field (exit 2), not a sbatch error
        try:
            ex = submitit.SlurmExecutor(folder=folder, python=python_command(spec, run_dir, m.get("entrypoint")),
                                        max_num_timeout=spec.training.max_requeues)
            ex.update_parameters(**params)
            CALLS["sbatch"] += 1
            jobs = ex.map_array(TaskRunner(), [str(run_dir)] * len(indices), indices)
        except Exception as exc:  # submitit wraps sbatch's failure in its own exception types
            raise SchedulerError(f"sbatch (via submitit) failed: {one_line(str(exc))}") from None
        array = jobs[0].job_id.split("_")[0]
        return Submission([array], {k: j.job_id for k, j in zip(indices, jobs, strict=True)}, None, str(folder))

    def log_paths(self, run_dir: Path, index: int, task_id: str | None) -> list[Path]:
        folder = run_dir / "logs" / "submitit"
        return [folder / f"{task_id}_0_log.out", folder / f"{task_id}_0_log.err"] if task_id else []
