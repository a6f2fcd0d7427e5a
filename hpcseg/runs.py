"""The run registry: ``runs/<job>/<run_id>/`` folders that outlive the scheduler's memory.

A run folder holds everything needed to know what was asked for and what happened: the resolved spec
in ``manifest.json``, the script exactly as submitted, and per task the history, checkpoints and the
exit-code file written by the job script. Run ids sort by time and are created with an exclusive
``mkdir``, so two submissions in the same second still get different folders and nothing is overwritten.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcseg.errors import HpcsegError
from hpcseg.fsutil import read_json, write_json_atomic
from hpcseg.taskfiles import EVENTS, count_requeues  # noqa: F401  (EVENTS: re-exported for submit)

if TYPE_CHECKING:  # imported lazily: `hpcseg status` reads manifests as JSON and need not build the schema
    from hpcseg.spec import JobSpec, LoadedJob, Task

MANIFEST = "manifest.json"



def runs_root(override: str | None = None) -> Path:
    return Path(override or os.environ.get("HPCSEG_RUNS") or Path.cwd() / "runs").resolve()


def _git_state() -> dict[str, Any]:
    """Commit and dirtiness of the tree hpcseg runs from, so a result can be traced to its code."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain"], capture_output=True,
                               text=True, timeout=5).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Run:
    dir: Path
    manifest: dict[str, Any]

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    @property
    def job(self) -> str:
        return self.manifest["job"]

    @property
    def spec(self) -> JobSpec:
        from hpcseg.spec import JobSpec

        return JobSpec.model_validate(self.manifest["spec"])

    @property
    def tasks(self) -> list[Task]:
        from hpcseg.spec import Task

        return [Task(t["index"], t["model"], t["fold"]) for t in self.manifest["tasks"]]

    def task_dir(self, task: Task | int) -> Path:
        if isinstance(task, int):
            task = self.tasks[task]
        return self.dir / task.relpath

    def update(self, **fields: Any) -> None:
        """Merge fields into the manifest and rewrite it atomically."""
        self.manifest.update(fields)
        write_json_atomic(self.dir / MANIFEST, self.manifest)

    def reload(self) -> Run:
        self.manifest = read_manifest(self.dir / MANIFEST)
        return self

    def modify(self, change: Callable[[dict[str, Any]], bool | None]) -> bool:
        """Read-modify-write the manifest under the run's lock: status, collect, cancel and resubmit may
        run at once in different shells, and a plain update would drop what another wrote meanwhile.
        ``change`` edits the fresh manifest in place and returns False when nothing changed (no write)."""
        with manifest_lock(self.dir):
            self.reload()
            if change(self.manifest) is False:
                return False
            write_json_atomic(self.dir / MANIFEST, self.manifest)
        return True


@contextmanager
def manifest_lock(run_dir: Path) -> Iterator[None]:
    """An exclusive lock on ``run_dir/.manifest.lock`` (flock: released by the kernel if we die)."""
    fd = os.open(run_dir / ".manifest.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def record_requeues(run: Run) -> dict[str, int]:
    """Fold every task's events.log into the manifest's ``requeues`` {task_index: count} (tasks never
    requeued are left out) and return it."""
    counts = {str(t["index"]): n for t in run.manifest.get("tasks", [])
              if (n := count_requeues(run.dir / t["dir"]))}
    return store_requeues(run, counts)


def store_requeues(run: Run, counts: dict[str, int]) -> dict[str, int]:
    """Write ``counts`` as the manifest's ``requeues``: atomically under the lock, and only when it changed;
    a run folder this user cannot write keeps its old record (status still shows the counts)."""
    if counts != (run.manifest.get("requeues") or {}):
        def change(m: dict[str, Any]) -> bool:
            if (m.get("requeues") or {}) == counts:
                return False
            m["requeues"] = counts
            return True
        try:
            run.modify(change)
        except (OSError, HpcsegError):
            run.manifest["requeues"] = counts
    return counts


def resubmit_counts(manifest: dict[str, Any]) -> dict[int, int]:
    """How often ``hpcseg resubmit`` has sent each task again (from the manifest's ``resubmissions``)."""
    out: dict[int, int] = {}
    for entry in manifest.get("resubmissions") or []:
        for k in entry.get("tasks", []):
            out[int(k)] = out.get(int(k), 0) + 1
    return out


def new_run_dir(job_dir: Path) -> tuple[str, Path]:
    """A fresh, never-before-used run folder; the id is UTC time plus a counter on collision."""
    job_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    import secrets

    for _ in range(1000):
        # The random suffix keeps ids unique across jobs too, so a bare run id is never ambiguous.
        run_id = f"{stamp}-{secrets.token_hex(2)}"
        path = job_dir / run_id
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return run_id, path
    raise HpcsegError(f"{job_dir}: could not create a new run folder")


def create_run(loaded: LoadedJob, scheduler: str, root: Path | None = None) -> Run:
    """Make the run folder and its manifest; the spec recorded is the resolved one the tasks will read."""
    import getpass
    import socket

    spec = loaded.spec
    root = root or runs_root()
    try:
        run_id, path = new_run_dir(root / spec.slug)
    except OSError as exc:  # not writable, read-only, a regular file on the way, full disk ...
        raise HpcsegError(f"{root}: cannot create the run folder ({exc.strerror or exc}); "
                          f"choose another with --runs-dir or HPCSEG_RUNS") from None
    manifest = {
        "run_id": run_id,
        "job": spec.name,
        "job_slug": spec.slug,
        "job_file": str(loaded.path),
        "profile": loaded.profile,
        "overrides": loaded.overrides,
        "spec": spec.model_dump(mode="json"),
        "tasks": [{"index": t.index, "model": t.model, "fold": t.fold, "dir": t.relpath} for t in spec.tasks()],
        "git": _git_state(),
        "host": socket.gethostname(),
        "user": getpass.getuser(),
        "created": now_iso(),
        "created_ts": time.time(),
        "scheduler": scheduler,
        "native_ids": [],
        "submitted": None,
        "state": "created",
        "requeues": {},
    }
    try:
        write_json_atomic(path / MANIFEST, manifest)
    except OSError as exc:  # the folder was made but cannot be written (full disk, quota): leave nothing
        _remove_empty(path)
        raise HpcsegError(f"{path}: cannot write the run's {MANIFEST} ({exc.strerror or exc}); "
                          f"choose another folder with --runs-dir or HPCSEG_RUNS") from None
    return Run(path, manifest)


def _remove_empty(path: Path) -> None:
    """Remove a run folder that holds nothing but leftovers of a failed first write."""
    try:
        for leftover in path.iterdir():
            leftover.unlink()
        path.rmdir()
    except OSError:
        pass


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def manifest_problem(m: Any) -> str | None:
    """Why ``m`` is not a run manifest hpcseg wrote (a foreign or damaged file), in a few words; None if it
    is one. Checks exactly what status and collect read, so a manifest that passes cannot make them fail."""
    if not isinstance(m, dict):
        return f"not a JSON object (a {type(m).__name__})"
    for key in ("run_id", "job"):
        if not isinstance(m.get(key), str) or not m[key]:
            return f"no {key} text"
    for key, kind in (("native_ids", list), ("task_ids", dict), ("requeues", dict), ("cancelled_tasks", list),
                      ("resubmissions", list)):
        if m.get(key) is not None and not isinstance(m[key], kind):
            return f"{key} is not a {kind.__name__}"
    if any(not isinstance(i, str) for i in m.get("native_ids") or []):
        return "native_ids holds something other than text"
    for key in ("state", "scheduler", "submitted", "created", "collect_id", "error"):
        if m.get(key) is not None and not isinstance(m[key], str):
            return f"{key} is not text"
    for key in ("created_ts", "submitted_ts"):
        v = m.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v != v):
            return f"{key} is not a number"
    spec = m.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("training"), dict):
        return "no spec with a training section"
    tr = spec["training"]
    if not _is_int(tr.get("epochs")) or tr["epochs"] < 0:
        return "spec.training.epochs is not a whole number"
    if tr.get("early_stopping") is not None and not isinstance(tr["early_stopping"], dict):
        return "spec.training.early_stopping is not a mapping"
    coll = spec.get("collection")
    if coll is not None:
        if not isinstance(coll, dict):
            return "spec.collection is not a mapping"
        if coll.get("metric") is not None and not isinstance(coll["metric"], str):
            return "spec.collection.metric is not text"
        if coll.get("mode") is not None and coll["mode"] not in ("max", "min"):
            return "spec.collection.mode is not max or min"
    tasks = m.get("tasks")
    if not isinstance(tasks, list):
        return "no tasks list"
    for i, t in enumerate(tasks):
        if not isinstance(t, dict) or t.get("index") != i or not _is_int(t.get("index")):
            return f"tasks[{i}] is not task {i}"
        if not isinstance(t.get("model"), str) or not _is_int(t.get("fold")) or t["fold"] < 0:
            return f"tasks[{i}] has no model name or fold number"
        d = t.get("dir")
        if not isinstance(d, str) or not d or d.startswith("/") or ".." in d.split("/") or "\x00" in d:
            return f"tasks[{i}].dir is not a folder inside the run"
    return None


def read_manifest(path: Path | str) -> dict[str, Any]:
    """A run's manifest, checked; raises HpcsegError with one line naming the file and what is wrong."""
    try:
        m = read_json(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        from hpcseg.taskfiles import why_unreadable

        raise HpcsegError(f"{path}: {why_unreadable(exc)}") from None
    except (ValueError, RecursionError) as exc:
        raise HpcsegError(f"{path}: unreadable manifest (not JSON: {str(exc)[:80]})") from None
    problem = manifest_problem(m)
    if problem:
        raise HpcsegError(f"{path}: not an hpcseg run manifest ({problem})")
    return m


def open_run(path: str | Path) -> Run:
    path = Path(path)
    try:
        return Run(path.resolve(), read_manifest(path / MANIFEST))
    except (FileNotFoundError, NotADirectoryError):
        raise HpcsegError(f"{path}: not a run folder (no {MANIFEST})") from None


def list_runs(root: Path | None = None, job: str | None = None) -> list[Run]:
    """All runs under the registry, oldest first (run ids sort by time); damaged manifests left out."""
    return scan_runs(root, job)[0]


def scan_runs(root: Path | None = None, job: str | None = None) -> tuple[list[Run], list[str]]:
    """All runs under the registry, oldest first, and one line per manifest.json that is not one of ours
    (foreign, damaged, unreadable): status and collect say so and go on with the rest."""
    root = root or runs_root()
    if not root.is_dir():
        return [], []
    runs, problems = [], []
    try:
        jobs = [job] if job else sorted(n for n in os.listdir(root) if not n.startswith("."))
    except OSError as exc:
        return [], [f"{root}: cannot list the runs folder ({exc.strerror or exc})"]
    for j in jobs:
        job_dir = os.path.join(root, j)
        try:
            ids = os.listdir(job_dir)
        except OSError:  # a file, a dangling link, a loop or unreadable: not a job folder
            continue
        for rid in ids:
            if rid.startswith("."):
                continue  # as glob("*") did: hidden entries are not runs
            mpath = f"{job_dir}/{rid}/{MANIFEST}"  # strings, not Paths: 200 runs are read on every status
            try:
                m = read_manifest(mpath)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except HpcsegError as exc:
                problems.append(exc.message)
                continue
            runs.append(Run(Path(job_dir, rid), m))
    runs.sort(key=lambda r: (float(r.manifest.get("created_ts") or 0), r.run_id))
    return runs, problems


def find_run(ref: str, root: Path | None = None) -> Run:
    """A run by folder path, by run id, or by job name (its latest run)."""
    p = Path(ref)
    if (p / MANIFEST).is_file():
        return open_run(p)
    runs = list_runs(root)
    by_id = [r for r in runs if r.run_id == ref or f"{r.dir.parent.name}/{r.run_id}" == ref]
    if len(by_id) == 1:
        return by_id[0]
    if len(by_id) > 1:
        names = ", ".join(f"{r.dir.parent.name}/{r.run_id}" for r in by_id)
        raise HpcsegError(f"run id {ref!r} is ambiguous: {names}; give JOB/RUN_ID")
    # The exact name first: a folder name is a slug, and another job's name may read like it.
    by_job = [r for r in runs if r.job == ref] or [r for r in runs if r.dir.parent.name == ref]
    if by_job:
        return by_job[-1]
    recent = ", ".join(f"{r.dir.parent.name}/{r.run_id}" for r in runs[-5:]) or "none yet"
    raise HpcsegError(f"unknown run {ref!r} under {root or runs_root()}; recent runs: {recent}")
