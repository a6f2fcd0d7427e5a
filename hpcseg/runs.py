"""The run registry: ``runs/<job>/<run_id>/`` folders that outlive the scheduler's memory.

A run folder holds everything needed to know what was asked for and what happened: the resolved spec
in ``manifest.json``, the script exactly as submitted, and per task the history, checkpoints and the
exit-code file written by the job script. Run ids sort by time and are created with an exclusive
``mkdir``, so two submissions in the same second still get different folders and nothing is overwritten.
"""

from __future__ import annotations

import getpass
import os
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcseg.errors import HpcsegError
from hpcseg.fsutil import read_json, write_json_atomic

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
        self.manifest = read_json(self.dir / MANIFEST)
        return self


def new_run_dir(job_dir: Path) -> tuple[str, Path]:
    """A fresh, never-before-used run folder; the id is UTC time plus a counter on collision."""
    job_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
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
    spec = loaded.spec
    root = root or runs_root()
    try:
        run_id, path = new_run_dir(root / spec.slug)
    except PermissionError as exc:
        raise HpcsegError(f"{root}: cannot create the run folder ({exc.strerror}); "
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
    write_json_atomic(path / MANIFEST, manifest)
    return Run(path, manifest)


def open_run(path: str | Path) -> Run:
    path = Path(path)
    try:
        return Run(path.resolve(), read_json(path / MANIFEST))
    except FileNotFoundError:
        raise HpcsegError(f"{path}: not a run folder (no {MANIFEST})") from None
    except ValueError as exc:
        raise HpcsegError(f"{path / MANIFEST}: unreadable manifest ({exc})") from None


def list_runs(root: Path | None = None, job: str | None = None) -> list[Run]:
    """All runs under the registry, oldest first (run ids sort by time)."""
    root = root or runs_root()
    if not root.is_dir():
        return []
    pattern = f"{job}/*/{MANIFEST}" if job else f"*/*/{MANIFEST}"
    runs = []
    for m in root.glob(pattern):
        try:
            runs.append(Run(m.parent, read_json(m)))
        except (OSError, ValueError):
            continue
    return sorted(runs, key=lambda r: (r.manifest.get("created_ts", 0), r.run_id))


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
    by_job = [r for r in runs if r.job == ref or r.dir.parent.name == ref]
    if by_job:
        return by_job[-1]
    recent = ", ".join(f"{r.dir.parent.name}/{r.run_id}" for r in runs[-5:]) or "none yet"
    raise HpcsegError(f"unknown run {ref!r} under {root or runs_root()}; recent runs: {recent}")
