"""``hpcseg submit`` and ``hpcseg cancel``: check, record, render and submit a run as ONE array job.

The order matters: preflight before anything is created (a refused job leaves no folder behind), the
run folder and its split before the script (the script names the folder, every task shares the split),
the script on disk before the scheduler sees it (``job.slurm`` is what was submitted, byte for byte),
and the manifest says what happened on every way out: ``submitted`` with the native ids, ``dry-run``,
or ``submit-failed`` with the scheduler's own message. A refusal of the *input* (exit 2: a split that
cannot be made, a directive the renderer refuses, also with ``--no-check``) happens before the scheduler
is asked, so the half-made run folder is removed: a refused submit leaves no run folder, ever.

``hpcseg resubmit`` sends tasks of an existing run again (PBS cannot requeue one array element from inside
the job, so tasks that checkpointed and exited 75 wait for it; a killed task can be sent again by hand):
a new job of just those indices on the run's scheduler, recorded in the same manifest, so status follows
the new attempt and the trainer resumes from the task's own checkpoint.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpcseg import schedulers
from hpcseg.errors import EXIT_BAD_INPUT, HpcsegError, SchedulerError
from hpcseg.fsutil import write_text_atomic
from hpcseg.runs import EVENTS, Run, create_run, find_run, now_iso, resubmit_counts, runs_root
from hpcseg.spec import LoadedJob


def _backend_name(scheduler: str, via: str) -> str:
    name = schedulers.detect() if scheduler == "auto" else scheduler
    if via == "submitit":
        if name != "slurm":
            raise HpcsegError(f"--via submitit needs Slurm, but the scheduler is {name}: submitit has no "
                              f"PBS backend, so PBS jobs go through qsub (drop --via submitit)")
        return "submitit"
    return name


def _preflight(loaded: LoadedJob, runs_dir: Path | None) -> None:
    from hpcseg.preflight import run_preflight

    problems = run_preflight(loaded.spec, loaded.path, runs_dir)
    for p in problems:
        if p.severity != "error":
            print(f"hpcseg submit: {p}", file=sys.stderr)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise HpcsegError(f"{loaded.spec.name}: preflight found {len(errors)} error(s); nothing was created "
                          f"or submitted (hpcseg check shows them; --no-check skips)",
                          problems=[str(p) for p in errors], exit_code=EXIT_BAD_INPUT)


def submit_job(loaded: LoadedJob, scheduler: str = "auto", via: str = "sbatch", *, runs_dir: Path | None = None,
               dry_run: bool = False, check: bool = True, then_collect: bool = False,
               max_parallel: int | None = None, templates: Path | None = None,
               entrypoint: list[str] | None = None) -> Run:
    """Submit every model x fold of ``loaded`` as one array job and return the recorded run.

    ``entrypoint`` replaces ``python -m hpcseg`` in the training command (tests use a stand-in trainer);
    it is recorded in the manifest so every backend runs the same command.
    """
    name = _backend_name(scheduler, via)
    backend = schedulers.get(name)
    if check:
        _preflight(loaded, runs_dir)
    backend.check_spec(loaded.spec)  # directive values and extras: refused before a run folder exists
    missing = None if dry_run else backend.missing_command()
    if missing:
        raise SchedulerError(f"{missing}; nothing was created")
    job_dir = (runs_dir or runs_root()) / loaded.spec.slug
    made_from = _first_missing(job_dir)  # the folders create_run makes on the way, removed on a refusal
    run = create_run(loaded, name, runs_dir)
    try:
        from hpcseg.splits import ensure_splits

        ensure_splits(run.dir, loaded.spec)
        if loaded.spec.sweep is not None:
            from hpcseg.sweep.expand import write_task_overrides

            write_task_overrides(run.dir, run.manifest)
        script: Path | None = None
        if backend.script:
            from hpcseg.render import render_script

            text = render_script(loaded.spec, backend.script, run.dir,  # type: ignore[arg-type]
                                 job_file=loaded.path, templates=templates, entrypoint=entrypoint)
            script = write_text_atomic(run.dir / f"job.{backend.script}", text, mode=0o755)
        (run.dir / "logs").mkdir(exist_ok=True)
        run.update(entrypoint=entrypoint, then_collect=then_collect, max_parallel=max_parallel,
                   script=script.name if script else None,
                   templates=str(Path(templates).resolve()) if templates else None)  # resubmit renders again
        if dry_run:
            run.update(state="dry-run")
            return run
        sub = backend.submit(run.dir, script, then_collect=then_collect, max_parallel=max_parallel)
    except BaseException as exc:
        if isinstance(exc, HpcsegError) and exc.exit_code == EXIT_BAD_INPUT:
            _discard(run, job_dir, made_from)
            if "nothing was created" not in exc.message:
                exc.message = f"{exc.message}; nothing was created or submitted"
            raise
        message = exc.message if isinstance(exc, HpcsegError) else f"{type(exc).__name__}: {exc}"
        run.update(state="submit-failed", error=message, failed=now_iso())
        if isinstance(exc, SchedulerError):
            raise SchedulerError(f"{message} (run {run.run_id} marked submit-failed: {run.dir})") from None
        raise
    run.update(state="submitted", native_ids=sub.job_ids, task_ids={str(k): v for k, v in sub.task_ids.items()},
               collect_id=sub.collect_id, submitted=now_iso(), submitted_ts=time.time(), logs=sub.logs,
               **sub.extra)
    return run


def _first_missing(path: Path) -> Path | None:
    """The topmost folder of ``path`` that does not exist yet (None when ``path`` exists)."""
    missing = None
    while not os.path.isdir(path) and path != path.parent:
        missing, path = path, path.parent
    return missing


def _discard(run: Run, job_dir: Path, made_from: Path | None) -> None:
    """Remove a run folder whose input was refused before any scheduler saw it, and the empty folders
    this submit made above it (runs/, runs/<job>/): a record of a job that never existed only misleads."""
    shutil.rmtree(run.dir, ignore_errors=True)
    if made_from is None:
        return
    folder = job_dir
    while True:
        try:
            folder.rmdir()
        except OSError:  # another run appeared meanwhile: it is not ours to remove
            return
        if folder == made_from:
            return
        folder = folder.parent


def cli_submit(args: argparse.Namespace) -> int:
    from hpcseg.jobload import load_from_args

    loaded = load_from_args(args)
    runs_dir = runs_root(args.runs_dir) if args.runs_dir else None
    templates = Path(args.templates).expanduser() if args.templates else None
    if args.max_parallel is not None and args.max_parallel < 1:
        raise HpcsegError("--max-parallel must be at least 1")
    run = submit_job(loaded, args.scheduler, args.via, runs_dir=runs_dir, dry_run=args.dry_run,
                     check=not args.no_check, then_collect=args.then_collect, max_parallel=args.max_parallel,
                     templates=templates)
    m = run.manifest
    n = len(m["tasks"])
    ref = f"{run.dir.parent.name}/{run.run_id}"
    if m["state"] == "dry-run":
        script = f"; script {run.dir / m['script']}" if m.get("script") else ""
        print(f"{ref}: dry run, nothing submitted ({n} task(s), {m['scheduler']}){script}")
        print(f"  run folder: {run.dir}")
        return 0
    if m["scheduler"] == "local":
        native = f"local supervisor pid {m.get('pid')}"
    else:
        native = f"{m['scheduler']} array job {', '.join(m['native_ids'])}"
    collect = f", collect job {m['collect_id']}" if m.get("collect_id") else ""
    print(f"{ref}: submitted {n} task(s) as {native}{collect}")
    print(f"  run folder: {run.dir}")
    print(f"  logs:       {m.get('logs') or run.dir / 'logs'}  (hpcseg logs {ref} --task K)")
    print(f"  status:     hpcseg status {ref}")
    return 0


def cli_cancel(args: argparse.Namespace) -> int:
    run = find_run(args.run, runs_root(args.runs_dir) if args.runs_dir else None)
    m = run.manifest
    if not m.get("native_ids"):
        raise HpcsegError(f"{run.run_id}: nothing to cancel, the run was never submitted (state {m['state']})")
    backend = schedulers.get(m["scheduler"])
    if args.task is not None:
        ids = m.get("task_ids", {})
        if str(args.task) not in ids:
            raise HpcsegError(f"--task {args.task}: the run has tasks 0-{len(m['tasks']) - 1}")
        backend.cancel([ids[str(args.task)]])
        run.modify(lambda m: m.update(cancelled_tasks=sorted({*m.get("cancelled_tasks", []), args.task})))
        print(f"{run.run_id}: cancelled task {args.task} ({ids[str(args.task)]})")
        return 0
    backend.cancel([*m["native_ids"], *([m["collect_id"]] if m.get("collect_id") else [])])
    run.modify(lambda m: m.update(state="cancelled", cancelled=now_iso()))
    print(f"{run.run_id}: cancelled {', '.join(m['native_ids'])}")
    return 0


# --------------------------------------------------------------------------------------------- resubmit


def _groups(indices: list[int], contiguous: bool) -> list[list[int]]:
    """One group, or (PBS Pro: ``-J`` takes one range) one group per run of consecutive indices."""
    if not contiguous:
        return [indices]
    out: list[list[int]] = []
    for k in indices:
        if out and k == out[-1][-1] + 1:
            out[-1].append(k)
        else:
            out.append([k])
    return out


def _choose(run: Run, wanted: Sequence[int] | None) -> tuple[list[int], dict[int, int | None], list[str]]:
    """(tasks to send, their exit codes, notes). Default: every task that checkpointed, exited 75 and has
    ended (cancelled ones excluded); listed tasks must have ended, since a second copy of a running task would
    write the same folder. Each task may be resubmitted ``training.max_requeues`` times."""
    from hpcseg.status import snapshot

    m = run.manifest
    table = {t.index: t for t in snapshot([run], single=True).runs[0][1]}
    limit = int(m["spec"]["training"].get("max_requeues", 3))
    done = resubmit_counts(m)
    notes: list[str] = []
    if wanted is None:
        chosen = [k for k, t in sorted(table.items()) if t.exit_code == 75 and t.state != "cancelled"]
        back = [k for k in chosen if not table[k].ended]  # the scheduler is bringing it back, or not done
        notes += [f"task {k}: exited 75 but the scheduler still has it ({table[k].state}); it resumes there, "
                  f"not resubmitted" for k in back]
        chosen = [k for k in chosen if k not in back]
        over = [k for k in chosen if done.get(k, 0) >= limit]
        notes += [f"task {k}: resubmitted {done[k]} time(s) already, the limit (training.max_requeues) is "
                  f"{limit}; left as it is" for k in over]
        chosen = [k for k in chosen if k not in over]
    else:
        chosen = sorted(set(wanted))
        bad = [k for k in chosen if k not in table]
        if bad:
            raise HpcsegError(f"--tasks {','.join(map(str, bad))}: the run has tasks 0-{len(table) - 1}")
        busy = [f"{k} ({table[k].state})" for k in chosen if not table[k].ended]
        if busy:
            raise HpcsegError(f"task(s) {', '.join(busy)} have not ended: a second copy would write the same "
                              f"folder; wait, or cancel first (hpcseg cancel RUN --task K)")
        over = [k for k in chosen if done.get(k, 0) >= limit]
        if over:
            raise HpcsegError(f"task(s) {', '.join(map(str, over))} were resubmitted {limit} time(s) already, "
                              f"the limit set by training.max_requeues; nothing was submitted")
    return chosen, {k: table[k].exit_code for k in chosen}, notes


def resubmit_tasks(run: Run, wanted: Sequence[int] | None = None) -> tuple[dict[str, Any] | None, list[str]]:
    """Send tasks of ``run`` again as a new job of just those indices; returns the manifest's new
    ``resubmissions`` entry (None when there was nothing to send) and notes for the user."""
    m = run.manifest
    if not m.get("native_ids") or m.get("state") not in ("submitted", "cancelled"):
        raise HpcsegError(f"{run.run_id}: nothing to resubmit, the run was never submitted (state {m.get('state')})")
    chosen, codes, notes = _choose(run, wanted)
    if not chosen:
        return None, notes or ["nothing to resubmit: no task ended with exit 75 (checkpointed, interrupted)"]
    backend = schedulers.get(m["scheduler"])
    round_no = len(m.get("resubmissions") or []) + 1
    flavor = m["spec"]["resources"].get("pbs", {}).get("flavor", "pro")
    groups = _groups(chosen, contiguous=backend.name == "pbs" and flavor == "pro")
    # The old exit_code would read as "ended" until the new attempt starts; put it back if submission fails.
    for k in chosen:
        (run.task_dir(k) / "exit_code").unlink(missing_ok=True)
    subs, scripts = [], []
    failure: BaseException | None = None
    try:
        for i, group in enumerate(groups):
            script = None
            if backend.script:
                from hpcseg.render import render_script

                suffix = f"{round_no}" + (f"-{i + 1}" if len(groups) > 1 else "")
                text = render_script(run.spec, backend.script, run.dir,  # type: ignore[arg-type]
                                     job_file=Path(m["job_file"]) if m.get("job_file") else None,
                                     templates=Path(m["templates"]) if m.get("templates") else None,
                                     entrypoint=m.get("entrypoint"), task_indices=group)
                script = write_text_atomic(run.dir / f"job.resubmit-{suffix}.{backend.script}", text, mode=0o755)
                scripts.append(script.name)
            subs.append((group, backend.resubmit(run.dir, script, group)))
    except BaseException as exc:
        sent = {k for g, _ in subs for k in g}
        for k in chosen:
            if k not in sent and codes[k] is not None:
                write_text_atomic(run.task_dir(k) / "exit_code", f"{codes[k]}\n")
        if not subs:
            raise
        failure = exc  # some jobs were submitted: record them first, then report the error
        chosen = sorted(sent)
    entry = {"round": round_no, "tasks": chosen, "native_ids": [j for _, s in subs for j in s.job_ids],
             "task_ids": {str(k): v for _, s in subs for k, v in s.task_ids.items()}, "scripts": scripts,
             "previous": {str(k): {"task_id": m.get("task_ids", {}).get(str(k)), "exit_code": codes[k]}
                          for k in chosen},
             "submitted": now_iso()}

    def change(mf: dict[str, Any]) -> None:
        mf["native_ids"] = [*mf.get("native_ids", []), *entry["native_ids"]]
        mf["task_ids"] = {**mf.get("task_ids", {}), **entry["task_ids"]}
        mf["resubmissions"] = [*(mf.get("resubmissions") or []), entry]
        if mf.get("state") == "cancelled":  # the others stay cancelled, these are running again
            mf["state"] = "submitted"
            mf["cancelled_tasks"] = sorted({*mf.get("cancelled_tasks", []),
                                            *(t["index"] for t in mf["tasks"] if t["index"] not in chosen)})
        else:
            mf["cancelled_tasks"] = [k for k in mf.get("cancelled_tasks", []) if k not in chosen]

    run.modify(change)
    limit = int(m["spec"]["training"].get("max_requeues", 3))
    counts = resubmit_counts(run.manifest)
    for k in chosen:  # events.log tells the task's whole story in one place (and marks the new attempt)
        line = (f"{now_iso()} task={k} resubmitted as {entry['task_ids'].get(str(k))} by hpcseg resubmit "
                f"(resubmission {counts.get(k, 0)} of {limit}; previous exit {codes[k]})\n")
        try:
            with open(run.task_dir(k) / EVENTS, "a", encoding="utf-8") as fh:
                fh.write(line)
        except OSError:
            pass
    if failure is not None:
        sent = ",".join(map(str, chosen))
        if isinstance(failure, HpcsegError):
            raise type(failure)(f"{failure.message} (task(s) {sent} were resubmitted before it; "
                                f"see hpcseg status)") from None
        raise failure
    return entry, notes


def _task_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(k) for k in text.replace(" ", "").split(",") if k]
    except ValueError:
        raise HpcsegError(f"--tasks {text!r}: expected task indices such as 2 or 0,3,4") from None


def cli_resubmit(args: argparse.Namespace) -> int:
    run = find_run(args.run, runs_root(args.runs_dir) if args.runs_dir else None)
    entry, notes = resubmit_tasks(run, _task_list(args.tasks))
    for note in notes:
        print(f"hpcseg resubmit: {note}", file=sys.stderr)
    if entry is None:
        return 0
    ref = f"{run.dir.parent.name}/{run.run_id}"
    tasks = ",".join(map(str, entry["tasks"]))
    print(f"{ref}: resubmitted task(s) {tasks} as {run.manifest['scheduler']} job {', '.join(entry['native_ids'])}")
    print(f"  status:     hpcseg status {ref}")
    return 0
