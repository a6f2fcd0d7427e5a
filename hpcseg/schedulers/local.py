"""The local backend: a detached supervisor runs the tasks on this machine, at most N at once.

``submit`` starts ``python -m hpcseg.schedulers.local RUN_DIR`` in its own session and returns at once;
the submitting shell can close. The supervisor plays the job script's part for every task: it exports
``HPCSEG_CPUS``, runs the training command with ``--task K`` and writes ``exit_code`` atomically on
every way out (including a kill it sees), and it records what it is doing in ``local.json`` (atomic
rewrites), so ``hpcseg status`` from any shell reads that file, checks the supervisor is alive, and
trusts the exit_code files. Cancelling signals the supervisor, which forwards TERM to its tasks (the
trainer checkpoints and exits 75) and, if they linger, kills the whole process group.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpcseg.errors import SchedulerError
from hpcseg.fsutil import read_json, write_json_atomic, write_text_atomic
from hpcseg.schedulers.base import JobState, Scheduler, Submission

STATE_FILE = "local.json"
GRACE_S = float(os.environ.get("HPCSEG_LOCAL_GRACE", "60"))  # after TERM, before KILL


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks: together with the pid it names one process for good."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int | None, start: str | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _proc_start(pid)
    if now is not None and start is not None and now != start:
        return False  # the pid was reused by another process
    try:  # a zombie (our own dead child, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _signal_task(pid: int, sig: int) -> None:
    """Signal a task's process group (each task leads its own), else the process alone."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _cancel_marker(run_dir: Path, index: int) -> Path:
    return run_dir / "logs" / f".cancel-{index}"


def _state_path(job: str) -> Path:
    """A local job id is the run folder (its first supervisor writes local.json) or, for a supervisor
    started by ``hpcseg resubmit``, the path of that supervisor's own state file."""
    p = Path(job)
    return p if p.suffix == ".json" else p / STATE_FILE


def _run_dir(job: str) -> Path:
    return _state_path(job).parent


class LocalScheduler(Scheduler):
    name = "local"
    script = None

    def submit(self, run_dir: Path, script: Path | None, *, then_collect: bool = False,
               max_parallel: int | None = None) -> Submission:
        run_dir = Path(run_dir).resolve()
        tasks = [t["index"] for t in read_json(run_dir / "manifest.json")["tasks"]]
        extra = ["--then-collect"] if then_collect else []
        pid = self._start(run_dir, run_dir / STATE_FILE, [*extra, "--max-parallel", str(max(1, max_parallel or 1))])
        job = str(run_dir)
        return Submission(job_ids=[job], task_ids={k: f"{job}#{k}" for k in tasks},
                          logs=str(run_dir / "logs"), extra={"pid": pid})

    def resubmit(self, run_dir: Path, script: Path | None, indices: Sequence[int]) -> Submission:
        """A second supervisor for just ``indices``, with its own state file (the first one may still be
        running other tasks and owns local.json); its path is the new job id."""
        run_dir = Path(run_dir).resolve()
        n = 1
        while (run_dir / f"local-{n}.json").exists():
            n += 1
        state = run_dir / f"local-{n}.json"
        for k in indices:  # an explicit resubmission overrides an earlier cancel of the task
            _cancel_marker(run_dir, k).unlink(missing_ok=True)
        max_parallel = int(read_json(run_dir / "manifest.json").get("max_parallel") or 1)
        pid = self._start(run_dir, state, ["--tasks", ",".join(map(str, indices)), "--state", state.name,
                                           "--max-parallel", str(max_parallel)])
        return Submission(job_ids=[str(state)], task_ids={k: f"{state}#{k}" for k in indices},
                          logs=str(run_dir / "logs"), extra={"pid": pid})

    def _start(self, run_dir: Path, state: Path, args: list[str]) -> int:
        """Start a detached supervisor and wait until it has written ``state``; returns its pid."""
        (run_dir / "logs").mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "hpcseg.schedulers.local", str(run_dir), *args]
        log = run_dir / "logs" / "local-supervisor.log"
        with open(log, "ab") as out:
            try:
                proc = subprocess.Popen(argv, cwd=run_dir, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                        start_new_session=True, close_fds=True)
            except OSError as exc:
                raise SchedulerError(f"cannot start the local supervisor: {exc}") from None
        # Wait until it has written its state (a fraction of a second), so a crash is reported here.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None and not state.exists():
                tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
                raise SchedulerError(f"the local supervisor exited at once ({proc.returncode}): {tail[0]}")
            if state.exists():
                break
            time.sleep(0.05)
        return proc.pid

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        """Reads each run's local.json; no scheduler command at all."""
        out: dict[str, JobState] = {}
        host = socket.gethostname()
        for job in job_ids:
            try:
                st = read_json(_state_path(job))
            except (OSError, ValueError):
                continue
            sup = st.get("supervisor", {})
            alive = _alive(sup.get("pid"), sup.get("start"))
            now = time.time()
            for k, t in st.get("tasks", {}).items():
                state = t.get("state", "unknown")
                native = state
                if state in ("pending", "running") and not alive:
                    orphan = state == "running" and _alive(t.get("pid"), t.get("start"))
                    native = f"{state}; supervisor {sup.get('pid')} is gone"
                    cancelled = _cancel_marker(_run_dir(job), int(k)).exists()
                    state = "running" if orphan else ("cancelled" if cancelled else "failed")
                started, ended = t.get("started"), t.get("ended")
                elapsed = (ended or now) - started if started else None
                out[f"{job}#{k}"] = JobState(state, native, host if started else "", elapsed,
                                             str(t.get("exit_code", "")))
            if "collect" in st:
                c = st["collect"]
                out[f"{job}#collect"] = JobState(c.get("state", "unknown"), c.get("state", ""), host)
        return out

    def cancel(self, job_ids: Sequence[str]) -> None:
        for job in job_ids:
            base, _, index = job.partition("#")
            run_dir_p = _run_dir(base)
            try:
                st = read_json(_state_path(base))
            except (OSError, ValueError):
                raise SchedulerError(f"{base}: no {_state_path(base).name}; was this run started locally?") from None
            sup = st.get("supervisor", {})
            if index:
                # Marker first (a pending task is then never started), then TERM to a running one.
                write_text_atomic(_cancel_marker(run_dir_p, int(index)), "cancel\n")
                t = st.get("tasks", {}).get(index, {})
                if t.get("state") == "running" and _alive(t.get("pid"), t.get("start")):
                    _signal_task(t["pid"], signal.SIGTERM)
                continue
            if _alive(sup.get("pid"), sup.get("start")):
                os.kill(sup["pid"], signal.SIGTERM)  # it forwards to its tasks, then kills stragglers
                continue
            # The supervisor is gone but tasks it started may not be: stop those still alive.
            for k, t in st.get("tasks", {}).items():
                write_text_atomic(_cancel_marker(run_dir_p, int(k)), "cancel\n")
                if t.get("state") == "running" and _alive(t.get("pid"), t.get("start")):
                    _signal_task(t["pid"], signal.SIGTERM)

    def log_paths(self, run_dir: Path, index: int, task_id: str | None) -> list[Path]:
        logs = run_dir / "logs"
        return [logs / f"local_{index}.out", logs / f"local_{index}.err"]


# --------------------------------------------------------------------------------------------- supervisor


class _Supervisor:
    def __init__(self, run_dir: Path, max_parallel: int, then_collect: bool, only: list[int] | None = None,
                 state_file: str = STATE_FILE):
        from hpcseg.containers import container_command
        from hpcseg.spec import JobSpec

        self.run_dir = run_dir
        self.manifest = read_json(run_dir / "manifest.json")
        spec = JobSpec.model_validate(self.manifest["spec"])
        self.command = container_command(spec, run_dir, self.manifest.get("entrypoint"))
        self.max_parallel = max(1, max_parallel)
        # The spec asks for a node's worth of CPUs; here N tasks share this machine's cores.
        self.cpus = max(1, min(spec.resources.cpus, (os.cpu_count() or 1) // self.max_parallel))
        self.then_collect = then_collect
        self.cancelling = False
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.state_path = run_dir / state_file
        self.tasks: dict[int, dict[str, Any]] = {t["index"]: {"state": "pending", "dir": t["dir"]}
                                                 for t in self.manifest["tasks"]
                                                 if only is None or t["index"] in only}
        self.state: dict[str, Any] = {
            "supervisor": {"pid": os.getpid(), "start": _proc_start(os.getpid()), "host": socket.gethostname()},
            "max_parallel": self.max_parallel, "cpus_per_task": self.cpus, "state": "running",
            "started": time.time(), "ended": None, "command": self.command,
            "tasks": {str(k): v for k, v in self.tasks.items()},
        }

    def save(self) -> None:
        write_json_atomic(self.state_path, self.state)

    def _on_term(self, signum: int, _frame: Any) -> None:
        self.cancelling = True

    def launch(self, k: int) -> None:
        t = self.tasks[k]
        task_dir = self.run_dir / t["dir"]
        task_dir.mkdir(parents=True, exist_ok=True)
        (task_dir / "exit_code").unlink(missing_ok=True)  # a stale one would read as "ended"
        env = dict(os.environ, HPCSEG_CPUS=str(self.cpus))
        logs = self.run_dir / "logs"
        t.update(state="running", started=time.time())
        with open(logs / f"local_{k}.out", "ab") as out, open(logs / f"local_{k}.err", "ab") as err:
            out.write(f"hpcseg: task {k} -> {task_dir} on {socket.gethostname()} (local)\n".encode())
            out.flush()
            try:
                # Its own process group: a signal reaches the trainer and anything it started.
                p = subprocess.Popen([*self.command, "--task", str(k)], cwd=self.run_dir, env=env,
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
            except OSError as exc:
                err.write(f"hpcseg: cannot start task {k}: {exc}\n".encode())
                self.finish(k, 127)
                return
        self.procs[k] = p
        t.update(pid=p.pid, start=_proc_start(p.pid))

    def finish(self, k: int, rc: int) -> None:
        rc = 128 - rc if rc < 0 else rc  # killed by signal N: 128+N, as a shell reports it
        t = self.tasks[k]
        write_text_atomic(self.run_dir / t["dir"] / "exit_code", f"{rc}\n")
        cancelled = self.cancelling or _cancel_marker(self.run_dir, k).exists()
        t.update(state="cancelled" if cancelled and rc != 0 else ("completed" if rc == 0 else "failed"),
                 exit_code=rc, ended=time.time())
        self.procs.pop(k, None)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the submitting terminal may close
        pending = sorted(self.tasks)
        self.save()
        term_sent = kill_at = None
        while pending or self.procs:
            changed = False
            if self.cancelling:
                for k in pending:
                    self.tasks[k].update(state="cancelled", ended=time.time())
                pending, changed = [], True
                if term_sent is None:
                    for p in self.procs.values():
                        _signal_task(p.pid, signal.SIGTERM)
                    term_sent, kill_at = time.monotonic(), time.monotonic() + GRACE_S
                elif kill_at is not None and time.monotonic() > kill_at:
                    for p in self.procs.values():
                        _signal_task(p.pid, signal.SIGKILL)
                    kill_at = None
            while pending and len(self.procs) < self.max_parallel:
                k = pending.pop(0)
                if _cancel_marker(self.run_dir, k).exists():
                    self.tasks[k].update(state="cancelled", ended=time.time())
                else:
                    self.launch(k)
                changed = True
            for k, p in list(self.procs.items()):
                rc = p.poll()
                if rc is not None:
                    self.finish(k, rc)
                    changed = True
            if changed:
                self.save()
            time.sleep(0.2)
        self.state["state"] = "cancelled" if self.cancelling else "ended"
        if self.then_collect and not self.cancelling:
            self.collect()
        self.state["ended"] = time.time()
        self.save()
        return 0

    def collect(self) -> None:
        """``--then-collect``: like Slurm's afterany dependency, after every task has ended however it ended."""
        self.state["collect"] = {"state": "running", "started": time.time()}
        self.save()
        with open(self.run_dir / "logs" / "collect.out", "ab") as out:
            rc = subprocess.call([sys.executable, "-m", "hpcseg", "collect", str(self.run_dir)],
                                 cwd=self.run_dir, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        self.state["collect"].update(state="completed" if rc == 0 else "failed", exit_code=rc, ended=time.time())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpcseg.schedulers.local", description="local task supervisor")
    p.add_argument("run_dir")
    p.add_argument("--max-parallel", type=int, default=1)
    p.add_argument("--then-collect", action="store_true")
    p.add_argument("--tasks", help="only these task indices, e.g. 2,5 (hpcseg resubmit)")
    p.add_argument("--state", default=STATE_FILE, help="state file name in the run folder")
    a = p.parse_args(argv)
    only = [int(k) for k in a.tasks.split(",")] if a.tasks else None
    return _Supervisor(Path(a.run_dir).resolve(), a.max_parallel, a.then_collect, only, a.state).run()


if __name__ == "__main__":
    sys.exit(main())
