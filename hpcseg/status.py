"""``hpcseg status`` and ``hpcseg logs``: the truth about runs, from any shell, with one scheduler call.

A task's state is judged in this order: its ``exit_code`` file (written by the job script on every way
out, so it outlives the scheduler's memory and wins over it), then the scheduler's word from ONE
batched query for every run shown, then what the files alone can say. Progress (epoch k/N, last and
best metric, ETA) comes from ``history.csv``. When the scheduler cannot be reached the files are still
shown, the problem is said in one line, and the exit code is 3.

Nothing here imports torch, numpy or pydantic models beyond the run registry, and rich is only loaded
for a terminal, so a status of hundreds of runs stays well under half a second.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hpcseg.errors import EXIT_SCHEDULER, HpcsegError, SchedulerError
from hpcseg.printable import printable, rich_text
from hpcseg.runs import Run, find_run, resubmit_counts, runs_root, scan_runs, store_requeues
from hpcseg.schedulers.base import ENDED, JobState
from hpcseg.taskcache import TaskCache, cache_file
from hpcseg.taskfiles import (  # noqa: F401  (Progress, TAIL_LINES: re-exported for older callers)
    EXIT_DAMAGED,
    EXIT_MEANING,
    TAIL_LINES,
    Progress,
    TaskView,
    read_exit_code,
    read_progress,
    read_task_view,
    tail,
)

RECENT = 20
# A running task whose history.csv has not grown for STALL_FACTOR x its median epoch time, and at least
# STALL_MIN_S, is flagged "stalled": a dead node keeps its tasks "running" for minutes before Slurm notices.
STALL_FACTOR = 3.0
STALL_MIN_S = 60.0
# States in which a task that exited 75 is on its way back: the scheduler requeued it (node failure,
# `scontrol requeue`, preemption); the next attempt's job script removes the stale exit_code.
BACK_IN_QUEUE = ("pending", "requeued")
# ...or not gone yet: the job script is still finishing after the trainer's exit 75, accounting has not
# recorded the requeue, or the next attempt runs but has not removed the old exit_code. Calling it ended
# then would let `--watch` stop and `resubmit` send a second copy of a task Slurm is bringing back.
NOT_OVER_AFTER_75 = (*BACK_IN_QUEUE, "running")
# A job can take a few seconds to reach accounting; until then "not listed" means "not started yet".
LISTING_GRACE_S = 300


@dataclass
class TaskStatus:
    """One row of ``hpcseg status``: the task's state and progress as the files and scheduler tell it."""

    index: int
    model: str
    fold: int
    state: str
    detail: str = ""
    native_id: str | None = None
    node: str = ""
    elapsed_s: float | None = None
    epoch: int | None = None
    epochs: int = 0
    metric: str = ""
    last: float | None = None
    best: float | None = None
    eta_s: float | None = None
    eta_at_most: bool = False
    exit_code: int | None = None
    log: str | None = None
    log_tail: list[str] = field(default_factory=list)
    requeues: int = 0   # in-job requeues (events.log, folded into the manifest's `requeues`)
    resubmits: int = 0  # `hpcseg resubmit` rounds (the manifest's `resubmissions`)
    stalled_s: float | None = None  # running, but no epoch for this long (see STALL_FACTOR)

    @property
    def shown_state(self) -> str:
        """The state with a stall and how often the task went back to the queue, e.g.
        ``running, stalled 4m12s since epoch 7 (requeued 1×)``."""
        state = self.state
        if self.stalled_s is not None:
            state += f", stalled {_short_dur(self.stalled_s)} since epoch {self.epoch or 0}"
        again = [f"{w} {n}×" for w, n in (("requeued", self.requeues), ("resubmitted", self.resubmits)) if n]
        return f"{state} ({', '.join(again)})" if again else state

    @property
    def ended(self) -> bool:
        """An exit_code ends a task, unless it is a 75 the scheduler still holds (requeued, or running)."""
        return (self.exit_code is not None and self.state not in NOT_OVER_AFTER_75) or self.state in ENDED


TASK_FIELDS = [f.name for f in fields(TaskStatus)]

# --------------------------------------------------------------------------------------------- files


def _backend(name: str) -> Any:
    from hpcseg import schedulers

    return schedulers.get(name)


def scheduler_logs(run: Run, index: int) -> list[Path]:
    m = run.manifest
    try:
        backend = _backend(m.get("scheduler") or "local")
    except HpcsegError:
        return []
    return backend.log_paths(run.dir, index, m.get("task_ids", {}).get(str(index)))


# --------------------------------------------------------------------------------------------- judging


def _judge(run: Run, index: int, ec: int | None, js: JobState | None, note: str | None) -> tuple[str, str]:
    """(state, detail) of one task; the exit_code file wins, then the scheduler, then the run's record."""
    m = run.manifest
    cancelled = m.get("state") == "cancelled" or index in m.get("cancelled_tasks", [])
    if ec is not None:
        meaning = f"exit {ec}: {EXIT_MEANING.get(ec, 'failed')}"
        if ec == 75 and not cancelled and js is not None and js.state in NOT_OVER_AFTER_75:
            how = "still runs the job" if js.state == "running" else "has requeued it"
            return js.state, f"exit 75 (checkpoint kept); the scheduler {how} ({js.native or js.state})"
        if ec == 0:
            return "completed", ""
        if cancelled or (js and js.state == "cancelled"):
            return "cancelled", meaning
        if js and js.state == "timeout":
            return "timeout", meaning
        if ec == 75:
            return "preempted", meaning
        return "failed", meaning
    if js is not None:
        if cancelled and js.state in ("pending", "requeued"):
            return "cancelled", f"cancel requested; the scheduler still says {js.native or js.state}"
        if js.state == "pending" and _started(run, index):
            return "running", f"the scheduler still says {js.native or 'pending'}; the task's log is being written"
        if js.state in ENDED and js.state != "completed":
            return js.state, f"{js.native or js.state}, no exit_code file (ended before the job script could write it)"
        return js.state, js.native if js.native.lower() != js.state else ""
    state = m.get("state")
    if state in ("dry-run", "submit-failed", "created"):
        return "unknown", f"not submitted ({state})"
    if cancelled:
        return "cancelled", "cancelled before it started"
    if note:
        return "unknown", note
    if time.time() - float(m.get("submitted_ts") or 0) < LISTING_GRACE_S:
        return "pending", "submitted; not listed by the scheduler yet"
    return "unknown", "the scheduler has no record of it and it left no exit_code file"


def _started(run: Run, index: int) -> bool:
    """Accounting lags the controller by seconds: a train.log written since submission (and since any
    requeue, which events.log records) means the task is running, whatever sacct says yet."""
    task_dir = run.dir / run.manifest["tasks"][index]["dir"]
    try:
        written = (task_dir / "train.log").stat().st_mtime
    except OSError:
        return False
    try:
        requeued = (task_dir / "events.log").stat().st_mtime
    except OSError:
        requeued = 0.0
    return written > max(float(run.manifest.get("submitted_ts") or 0), requeued)


def _settings(m: dict[str, Any]) -> tuple[int, str, str, bool]:
    """(epochs, metric, mode, early stopping) from a checked manifest's spec."""
    spec = m["spec"]
    coll = spec.get("collection") or {}
    es = spec["training"].get("early_stopping") or {}
    return (int(spec["training"]["epochs"]), coll.get("metric") or "val_jaccard", coll.get("mode") or "max",
            bool(es.get("patience")))


def task_views(run: Run, cache: TaskCache | None = None) -> list[TaskView]:
    """What each task's files say, in task order (from the cache while the files are unchanged)."""
    _, metric, mode, _ = _settings(run.manifest)
    base = f"{run.dir}/"
    ref = f"{_ref(run)}/"
    if cache is None:
        return [read_task_view(base + t["dir"], metric, mode, ref + t["dir"]) for t in run.manifest["tasks"]]
    return [cache.view(base + t["dir"], metric, mode, ref, t["dir"]) for t in run.manifest["tasks"]]


@dataclass(frozen=True)
class StallRule:
    """When a running task counts as stalled: no new epoch for ``factor`` x its median epoch time, and
    for at least ``min_s`` seconds (short epochs jitter; a checkpoint write can double one)."""

    factor: float = STALL_FACTOR
    min_s: float = STALL_MIN_S

    def stalled_for(self, v: TaskView, now: float) -> float | None:
        """Seconds since the task's last epoch when that is too long, else None. Before its first epoch a
        task has no epoch time to judge by, and is never flagged."""
        if v.history_mtime is None or not v.median_epoch_s or not v.epoch:
            return None
        since = max(0.0, now - v.history_mtime)
        return since if since > max(self.min_s, self.factor * v.median_epoch_s) else None


def _task_native(m: dict[str, Any], k: int) -> str | None:
    native = (m.get("task_ids") or {}).get(str(k))
    return native if isinstance(native, str) else None


def _requeue_counts(run: Run, views: list[TaskView], states: Mapping[str, JobState] | None) -> dict[str, int]:
    """Requeues per task: those the job script made (events.log) or the scheduler counted (a restart after
    a node failure, which the script never sees; the script's own requeues are among the scheduler's
    too, so the larger count is right). Never fewer than recorded: an ended run is judged without asking
    the scheduler, and must not forget the restarts it was told of."""
    m = run.manifest
    stored = m.get("requeues") or {}
    out = {}
    for t, v in zip(m["tasks"], views, strict=True):
        k = str(t["index"])
        native = _task_native(m, t["index"])
        js = states.get(native) if states and native else None
        old = stored.get(k) if isinstance(stored, dict) else None
        n = max(v.requeues, js.restarts if js else 0, old if isinstance(old, int) else 0)
        if n:
            out[k] = n
    return out


def task_table(run: Run, states: Mapping[str, JobState] | None, note: str | None = None,
               views: list[TaskView] | None = None, stall: StallRule | None = None,
               now: float | None = None) -> list[TaskStatus]:
    """Every task of ``run`` judged from its files and ``states`` (from one poll of all runs shown).

    ``note`` says why ``states`` may be empty (e.g. the scheduler is unreachable); ``views``: the task
    files already read (by :func:`snapshot`), else they are read here; ``stall``: when a running task is
    flagged stalled (default :class:`StallRule`), judged at ``now`` (default: the clock).
    """
    m = run.manifest
    epochs, metric, mode, early = _settings(m)
    views = views if views is not None else task_views(run)
    requeues = store_requeues(run, _requeue_counts(run, views, states))
    resubmits = resubmit_counts(m)
    stall = stall or StallRule()
    now = time.time() if now is None else now
    out = []
    for t, v in zip(m["tasks"], views, strict=True):
        k = t["index"]
        native = _task_native(m, k)
        js = states.get(native) if states and native else None
        if js is None and states:
            js = _array_level(states, m.get("native_ids") or [], run.dir / t["dir"], native)
        if v.exit_code is None and js is not None and js.state in ENDED:
            # The files were read before the poll, so a task may have ended in between: the scheduler
            # saw the end after the job script wrote exit_code, so a second read now finds it.
            v = read_task_view(f"{run.dir}/{t['dir']}", metric, mode, f"{_ref(run)}/{t['dir']}")
        ec = v.exit_code
        state, detail = _judge(run, k, ec, js, note)
        if v.damage and ec is None and not detail.startswith("exit"):
            detail = v.damage[0]
        label = f"{t['config']}/{t['model']}" if t.get("config") else t["model"]  # a sweep config's task
        ts = TaskStatus(k, label, t["fold"], state, detail, native, js.node if js else "",
                        _elapsed(js, v), v.epoch, epochs, metric, v.last, v.best, exit_code=ec,
                        requeues=requeues.get(str(k), 0), resubmits=resubmits.get(k, 0))
        if state == "running" and ec is None:
            ts.stalled_s = stall.stalled_for(v, now)
        if state == "running" and ts.stalled_s is None and v.mean_epoch_s is not None and v.epoch is not None:
            ts.eta_s = v.mean_epoch_s * max(0, epochs - v.epoch)  # a stalled task has no honest ETA
            ts.eta_at_most = early
        if state in ("failed", "timeout", "preempted"):
            ts.log, ts.log_tail = _failure_log(run, k, run.dir / t["dir"])
        out.append(ts)
    return out


def _elapsed(js: JobState | None, v: TaskView) -> float | None:
    """Time the task has run over ALL its attempts: the scheduler's sum over its records (sacct -D keeps
    one per attempt) or the history's epoch times (which span every attempt, the resumed ones too),
    whichever is larger; either alone may miss an attempt (accounting purged, or a crash mid-epoch)."""
    sched = js.elapsed_s if js is not None else None
    files = v.total_s or None
    if sched is None or files is None:
        return sched if sched is not None else files
    return max(sched, files)


def _array_level(states: Mapping[str, JobState], job_ids: list[str], task_dir: Path,
                 native: str | None = None) -> JobState | None:
    """A task's state from its array's single record (Slurm's Torque wrapper): started or not is
    told by the task's own files; an ended array leaves the verdict to exit_code. After a resubmission
    the run has several arrays: the one the task's id belongs to (``123[4]`` -> ``123``) speaks for it."""
    own = [jid for jid in job_ids if native and native.startswith(f"{jid}[")]
    for jid in own or job_ids:
        a = states.get(jid)
        if a is None or not a.array_level or a.state not in ("pending", "running"):
            continue
        started = (task_dir / "train.log").exists() or (task_dir / "history.csv").exists()
        return JobState("running" if started else "pending", f"array {jid}: {a.native}")
    return None


def _failure_log(run: Run, index: int, task_dir: Path) -> tuple[str | None, list[str]]:
    """The trainer's log when it has something to say, else the scheduler's stderr/stdout."""
    candidates = [task_dir / "train.log"]
    logs = scheduler_logs(run, index)
    candidates += [p for p in logs if p.suffix == ".err" or ".e" in p.name] + logs
    for p in candidates:
        lines = tail(p)
        if lines:
            return str(p), lines
    return (str(candidates[0]) if candidates else None), []


def run_state(run: Run, tasks: list[TaskStatus]) -> str:
    """One word for the whole run."""
    m = run.manifest
    if m.get("state") in ("dry-run", "submit-failed", "created"):
        return m["state"]
    c = Counter(t.state for t in tasks)
    if c["running"]:
        return "running"
    if any(not t.ended and t.state in ("pending", "requeued", "preempted") for t in tasks):
        return "pending"
    if all(t.ended for t in tasks):
        if c["completed"] == len(tasks):
            return "completed"
        if c["cancelled"]:
            return "cancelled"
        return "failed"
    return "unknown"


# --------------------------------------------------------------------------------------------- polling


def _needs_poll(run: Run, skip_ended: bool = True, views: list[TaskView] | None = None) -> bool:
    """Runs whose every task has an exit_code file are judged from files alone: no scheduler call
    (unless ``skip_ended`` is off: one run's view asks anyway, for nodes and elapsed times)."""
    m = run.manifest
    if not m.get("native_ids"):
        return False
    if not skip_ended:
        return True
    if m.get("scheduler") == "local":
        return True  # reads local.json: no scheduler command, and it knows node and elapsed
    if m.get("collect_id") and not (run.dir / "training_summary.csv").exists():
        return True
    if views is not None:
        return any(v.exit_code is None for v in views)
    return any(read_exit_code(run.dir / t["dir"]) is None for t in m["tasks"])


def poll_runs(runs: Iterable[Run], skip_ended: bool = True, views: Mapping[Path, list[TaskView]] | None = None
              ) -> tuple[dict[str, JobState], list[str]]:
    """ONE scheduler command per scheduler kind for all the runs' ids (sbatch and submitit share one)."""
    from hpcseg.schedulers import poll_family

    ids: dict[str, list[str]] = defaultdict(list)
    for run in runs:
        if _needs_poll(run, skip_ended, (views or {}).get(run.dir)):
            m = run.manifest
            fam = poll_family(m.get("scheduler") or "local")
            ids[fam] += [*m["native_ids"], *([m["collect_id"]] if m.get("collect_id") else [])]
    states: dict[str, JobState] = {}
    errors: list[str] = []
    for fam, job_ids in ids.items():
        try:
            states.update(_backend(fam).poll(list(dict.fromkeys(job_ids))))
        except SchedulerError as exc:
            states.update(getattr(exc, "states", None) or {})  # partial answers still count
            errors.append(f"{fam} unreachable: {exc.message}")
    return states, errors


@dataclass
class Snapshot:
    runs: list[tuple[Run, list[TaskStatus], str]]
    errors: list[str]
    states: dict[str, JobState]
    damaged: list[str] = field(default_factory=list)  # one line per damaged file; the rest was shown

    @property
    def ended(self) -> bool:
        return all(all(t.ended for t in tasks) or rs in ("dry-run", "submit-failed", "created")
                   for _, tasks, rs in self.runs)


def snapshot(runs: list[Run], single: bool = False, reload: bool = False, cache: TaskCache | None = None,
             damaged: list[str] | None = None, stall: StallRule | None = None) -> Snapshot:
    """One refresh: the task files read (or taken from ``cache`` while unchanged), one poll for all
    ``runs``, then every task judged. ``reload``: re-read manifests (a refresh of --watch; the first look
    uses what was just read). ``damaged``: lines already found (e.g. foreign manifests); ``stall``: when a
    running task counts as stalled."""
    bad = list(damaged or [])
    if reload:
        kept = []
        for r in runs:
            try:
                kept.append(r.reload())
            except (OSError, HpcsegError) as exc:
                bad.append(getattr(exc, "message", None) or f"{r.dir}: {exc}")
        runs = kept
    views = {r.dir: task_views(r, cache) for r in runs}
    states, errors = poll_runs(runs, skip_ended=not single, views=views)
    note = "; ".join(errors) if errors else None
    out = []
    for r in runs:
        tasks = task_table(r, states, note, views[r.dir], stall)
        out.append((r, tasks, run_state(r, tasks)))
        bad += [d for v in views[r.dir] for d in v.damage]
    if cache is not None:
        cache.save()
    return Snapshot(out, errors, states, bad)


# --------------------------------------------------------------------------------------------- output


def _short_dur(s: float) -> str:
    """``4m12s``, ``1h03m``, ``45s``: the stall in the state column, short enough to read at a glance."""
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _dur(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    mi, sec = divmod(rem, 60)
    return f"{h}:{mi:02d}:{sec:02d}" if h < 48 else f"{h // 24}d{h % 24:02d}h"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _ref(run: Run) -> str:
    return f"{run.dir.parent.name}/{run.run_id}"


def _summary(tasks: list[TaskStatus]) -> str:
    """``3 running, 2 completed (1 stalled)``: a stalled task is still counted as running, and said."""
    c = Counter(t.state for t in tasks)
    text = ", ".join(f"{n} {s}" for s, n in sorted(c.items(), key=lambda kv: -kv[1]))
    stalled = sum(t.stalled_s is not None for t in tasks)
    return f"{text} ({stalled} stalled)" if stalled else text


def _task_rows(tasks: list[TaskStatus]) -> tuple[list[str], list[list[str]]]:
    metric = tasks[0].metric if tasks else "metric"
    head = ["TASK", "MODEL", "FOLD", "STATE", "NODE", "ELAPSED", "EPOCH", f"{metric} LAST", "BEST", "ETA"]
    rows = []
    for t in tasks:
        eta = "-" if t.eta_s is None else ("≤" if t.eta_at_most else "") + _dur(t.eta_s)
        epoch = f"{t.epoch or 0}/{t.epochs}"
        rows.append([str(t.index), t.model, str(t.fold), t.shown_state, t.node or "-", _dur(t.elapsed_s), epoch,
                     _num(t.last), _num(t.best), eta])
    return head, rows


def _run_rows(snap: Snapshot) -> tuple[list[str], list[list[str]]]:
    head = ["RUN", "SCHEDULER", "JOB ID", "STATE", "TASKS", "EPOCHS", "SUBMITTED"]
    rows = []
    for run, tasks, rs in snap.runs:
        m = run.manifest
        done = sum(t.epoch or 0 for t in tasks)
        total = sum(t.epochs for t in tasks)
        ids = ",".join(m.get("native_ids") or []) if m.get("scheduler") != "local" else f"pid {m.get('pid', '-')}"
        rows.append([_ref(run), m.get("scheduler") or "-", ids or "-", rs, _summary(tasks), f"{done}/{total}",
                     (m.get("submitted") or m.get("created") or "-")[:19].replace("T", " ")])
    return head, rows


def _plain(head: list[str], rows: list[list[str]]) -> str:
    rows = [[printable(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in [head, *rows])


def _run_header(run: Run, tasks: list[TaskStatus], rs: str) -> str:
    m = run.manifest
    sched = m.get("scheduler")
    native = f"pid {m.get('pid')}" if sched == "local" else ", ".join(m.get("native_ids") or []) or "-"
    extra = f" ({m.get('error')})" if rs == "submit-failed" and m.get("error") else ""
    head = (f"{_ref(run)}  {m.get('job')}  {sched} {native}  state: {rs}{extra}  [{_summary(tasks)}]"
            f"\n  folder: {run.dir}")
    return head + (f"\n  {sweep}" if (sweep := _sweep_line(run, tasks)) else "")


def _sweep_line(run: Run, tasks: list[TaskStatus]) -> str | None:
    """A sweep's trials done/running/pruned/failed and its best so far (hpcseg/sweep/leaderboard.py)."""
    if not run.manifest.get("sweep"):
        return None
    from hpcseg.sweep.leaderboard import status_line

    return status_line(run.manifest, run.dir, tasks)


def _failures(tasks: list[TaskStatus]) -> list[str]:
    out = []
    for t in tasks:
        if t.log is None and not t.log_tail:
            continue
        out.append(f"task {t.index} ({t.model} fold {t.fold}) {t.shown_state}: {t.detail}")
        out.append(f"  log: {t.log}")
        out += [f"  | {ln}" for ln in t.log_tail]
    return out


def render_plain(snap: Snapshot, single: bool) -> str:
    parts: list[str] = [printable(f"! {e}") for e in snap.errors]
    parts += [printable(f"! damaged: {d}") for d in snap.damaged]
    if single:
        for run, tasks, rs in snap.runs:
            parts += [printable(ln) for ln in _run_header(run, tasks, rs).split("\n")]
            parts.append(_plain(*_task_rows(tasks)))
            parts += [printable(ln) for ln in _failures(tasks)]
    elif snap.runs:
        parts.append(_plain(*_run_rows(snap)))
    else:
        parts.append("no runs yet")
    return "\n".join(parts)


def render_rich(snap: Snapshot, single: bool) -> Any:
    from rich.console import Group
    from rich.table import Table

    Text = rich_text  # noqa: N806  (user text: never parsed as markup, controls escaped)

    colors = {"completed": "green", "running": "cyan", "pending": "yellow", "failed": "red", "timeout": "red",
              "cancelled": "magenta", "requeued": "yellow", "preempted": "yellow", "unknown": "dim"}

    def table(head: list[str], rows: list[list[str]], state_col: int) -> Table:
        tbl = Table(box=None, header_style="bold", pad_edge=False)
        for h in head:
            tbl.add_column(h, no_wrap=True)
        for r in rows:
            r = list(r)
            word = r[state_col].split(" ")[0].rstrip(",")  # "running, stalled ... (requeued 1×)" -> running
            style = "bold yellow" if ", stalled " in r[state_col] else colors.get(word, "")
            tbl.add_row(*map(Text, r[:state_col]), Text(r[state_col], style=style), *map(Text, r[state_col + 1:]))
        return tbl

    items: list[Any] = [Text(f"! {e}", style="bold red") for e in snap.errors]
    items += [Text(f"! damaged: {d}", style="red") for d in snap.damaged]
    if single:
        for run, tasks, rs in snap.runs:
            items += [Text(ln, style="bold") for ln in _run_header(run, tasks, rs).split("\n")]
            items.append(table(*_task_rows(tasks), 3))
            items += [Text(line, style="red" if not line.startswith("  ") else "") for line in _failures(tasks)]
    else:
        items.append(table(*_run_rows(snap), 3) if snap.runs else Text("no runs yet"))
    return Group(*items)


def to_json(snap: Snapshot) -> dict[str, Any]:
    from hpcseg.schedulers.base import CALLS

    return {
        "scheduler": {"ok": not snap.errors, "errors": snap.errors, "calls": sum(CALLS.values())},
        "damaged": snap.damaged,
        "runs": [{
            "run": _ref(run), "run_id": run.run_id, "job": run.manifest.get("job"), "dir": str(run.dir),
            "scheduler": run.manifest.get("scheduler"), "native_ids": run.manifest.get("native_ids", []),
            "collect_id": run.manifest.get("collect_id"), "state": rs, "manifest_state": run.manifest.get("state"),
            "tasks": [{f: getattr(t, f) for f in TASK_FIELDS}
                      | {"ended": t.ended, "stalled": t.stalled_s is not None, "shown_state": t.shown_state}
                      for t in tasks],
            "sweep": _sweep_line(run, tasks),
        } for run, tasks, rs in snap.runs],
    }


def _select(args: argparse.Namespace) -> tuple[list[Run], bool, list[str], Path]:
    """(runs, one run in detail, damaged manifests, the runs folder for the cache)."""
    root = runs_root(args.runs_dir) if getattr(args, "runs_dir", None) else None
    if args.run:
        run = find_run(args.run, root)
        return [run], True, [], run.dir.parent.parent
    runs, damaged = scan_runs(root)
    last = getattr(args, "last", RECENT)
    return (runs[-last:] if last else runs), False, damaged, root or runs_root()


def _exit(snap: Snapshot, prog: str = "hpcseg status") -> int:
    """Scheduler problems and damaged files, one line each on stderr; the exit code that says which."""
    for e in snap.errors:
        print(f"{prog}: {printable(e)}", file=sys.stderr)
    for d in snap.damaged:
        print(f"{prog}: damaged: {printable(d)}", file=sys.stderr)
    return EXIT_SCHEDULER if snap.errors else EXIT_DAMAGED if snap.damaged else 0


def _stall_rule(args: argparse.Namespace) -> StallRule:
    factor = getattr(args, "stall_factor", None)
    least = getattr(args, "stalled_after", None)
    for name, v, what in (("--stall-factor", factor, "a factor >= 0, e.g. 3"),
                          ("--stalled-after", least, "a number of seconds >= 0, e.g. 120")):
        if v is not None and not (v >= 0 and v < float("inf")):
            raise HpcsegError(f"{name} {v}: give {what}")
    return StallRule(STALL_FACTOR if factor is None else factor, STALL_MIN_S if least is None else least)


def cli_status(args: argparse.Namespace) -> int:
    stall = _stall_rule(args)
    runs, single, damaged, root = _select(args)
    cache = TaskCache(cache_file(root))
    if not args.watch:
        snap = snapshot(runs, single, cache=cache, damaged=damaged, stall=stall)
        if args.json:
            print(json.dumps(to_json(snap)))
        elif sys.stdout.isatty():
            from rich.console import Console

            Console().print(render_rich(snap, single))
        else:
            print(render_plain(snap, single))
        return _exit(snap)
    return _watch(runs, single, args, cache, damaged, stall)  # Ctrl-C: cli.main says "interrupted", exit 130


def _watch(runs: list[Run], single: bool, args: argparse.Namespace, cache: TaskCache | None = None,
           damaged: list[str] | None = None, stall: StallRule | None = None) -> int:
    """Refresh until every task has ended. On a terminal ONE table is redrawn in place (rich's Live);
    otherwise (a pipe, a log file) each refresh is printed after a ``--- HH:MM:SS`` line."""
    interval = max(0.5, float(getattr(args, "interval", 10.0)))
    if sys.stdout.isatty() and not args.json:
        from rich.console import Console
        from rich.live import Live

        console = Console()
        # Live draws below what is on screen and moves the cursor up over its own last drawing to redraw;
        # a table taller than the screen is cut ("...") rather than scrolled, which would leave copies.
        with Live(console=console, auto_refresh=False, vertical_overflow="ellipsis") as live:
            while True:
                snap = snapshot(runs, single, reload=True, cache=cache, damaged=damaged, stall=stall)
                live.update(render_rich(snap, single), refresh=True)
                if snap.ended:
                    break
                time.sleep(interval)
    else:
        while True:
            snap = snapshot(runs, single, reload=True, cache=cache, damaged=damaged, stall=stall)
            stamp = time.strftime("%H:%M:%S")
            print(json.dumps(to_json(snap)) if args.json else f"--- {stamp}\n{render_plain(snap, single)}",
                  flush=True)
            if snap.ended:
                break
            time.sleep(interval)
    return _exit(snap)


# --------------------------------------------------------------------------------------------- logs


def cli_logs(args: argparse.Namespace) -> int:
    run = find_run(args.run, runs_root(args.runs_dir) if args.runs_dir else None)
    tasks = run.manifest["tasks"]
    if getattr(args, "tensorboard", False):
        return _tensorboard(run, tasks, args.task)
    if args.task is None:
        print(f"{_ref(run)}: {run.dir}")
        for t in tasks:
            paths = [run.dir / t["dir"] / "train.log", *scheduler_logs(run, t["index"])]
            shown = "  ".join(f"{p}{'' if p.exists() else ' (not yet)'}" for p in paths)
            print(f"task {t['index']} ({t['model']} fold {t['fold']}): {shown}")
        return 0
    match = [t for t in tasks if t["index"] == args.task]
    if not match:
        raise HpcsegError(f"--task {args.task}: the run has tasks 0-{len(tasks) - 1}")
    t = match[0]
    task_dir = run.dir / t["dir"]
    train_log = task_dir / "train.log"
    for p in scheduler_logs(run, args.task):
        lines = tail(p, args.lines)
        if lines:
            print(f"==> {p} <==")
            print("\n".join(lines))
    print(f"==> {train_log} <==")
    if not args.follow:
        if not train_log.exists():
            print("(no train.log yet: the task has not started)")
        else:
            print("\n".join(tail(train_log, args.lines)))
        return 0
    return _follow(train_log, task_dir, args.lines)


def _tensorboard(run: Run, tasks: list[dict], task: int | None) -> int:
    """``logs --tensorboard``: the command that opens the run's (or one task's) TensorBoard event files.
    Every task writes its own ``tensorboard/`` folder; pointing TensorBoard at the tasks' common parent
    shows each model and fold as its own run, side by side."""
    import os
    import shlex
    import shutil

    chosen = tasks if task is None else [t for t in tasks if t["index"] == task]
    if not chosen:
        raise HpcsegError(f"--task {task}: the run has tasks 0-{len(tasks) - 1}")
    folders = [run.dir / t["dir"] / "tensorboard" for t in chosen]
    logdir = folders[0] if task is not None else Path(os.path.commonpath([f.parent for f in folders]))
    print(f"tensorboard --logdir {shlex.quote(str(logdir))}")
    written = sum(f.is_dir() for f in folders)
    if not written:
        print(f"# no event files yet ({len(folders)} task folder(s) without tensorboard/: not started, or trained "
              f"without the tensorboard package)", file=sys.stderr)
    if shutil.which("tensorboard") is None:
        print("# tensorboard is not installed here: pip install 'hpcseg[tensorboard]' (or tensorboard)",
              file=sys.stderr)
    print("# on a cluster: add --port 6006 on the login node, then ssh -L 6006:localhost:6006 LOGIN_NODE and "
          "open http://localhost:6006", file=sys.stderr)
    return 0


def _follow(path: Path, task_dir: Path, lines: int) -> int:
    """Print new lines as they are written, until the task's exit_code appears (then print the rest)."""
    pos = 0
    if path.exists():
        print("\n".join(tail(path, lines)), flush=True)
        pos = path.stat().st_size

    def more(pos: int) -> int:
        try:
            size = path.stat().st_size
        except OSError:
            return pos
        if size < pos:
            pos = 0  # truncated or replaced
        if size > pos:
            with open(path, "rb") as fh:
                fh.seek(pos)
                sys.stdout.write(fh.read(size - pos).decode("utf-8", errors="replace"))
                sys.stdout.flush()
        return size

    while True:
        ec = read_exit_code(task_dir)
        pos = more(pos)
        if ec is not None:
            print(f"(task ended: exit {ec})")
            return 0
        time.sleep(1.0)
