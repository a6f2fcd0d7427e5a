"""``hpcseg submit`` and ``hpcseg cancel``: check, record, render and submit a run as ONE array job.

The order matters: preflight before anything is created (a refused job leaves no folder behind), the
run folder and its split before the script (the script names the folder, every task shares the split),
the script on disk before the scheduler sees it (``job.slurm`` is what was submitted, byte for byte),
and the manifest says what happened on every way out: ``submitted`` with the native ids, ``dry-run``,
or ``submit-failed`` with the scheduler's own message.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hpcseg import schedulers
from hpcseg.errors import EXIT_BAD_INPUT, HpcsegError, SchedulerError
from hpcseg.fsutil import write_text_atomic
from hpcseg.runs import Run, create_run, find_run, now_iso, runs_root
from hpcseg.spec import LoadedJob


def _backend_name(scheduler: str, via: str) -> str:
    name = schedulers.detect() if scheduler == "auto" else scheduler
    if via == "submitit":
        if name != "slurm":
            raise HpcsegError(f"--via submitit needs Slurm, but the scheduler is {name}: submitit has no "
                              f"PBS backend, so PBS jobs go through qsub (drop --via submitit)")
        return "submitit"
    return name


def _preflight(loaded: LoadedJob) -> None:
    from hpcseg.preflight import run_preflight

    problems = run_preflight(loaded.spec, loaded.path)
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
        _preflight(loaded)
    run = create_run(loaded, name, runs_dir)
    try:
        from hpcseg.splits import ensure_splits

        ensure_splits(run.dir, loaded.spec)
        script: Path | None = None
        if backend.script:
            from hpcseg.render import render_script

            text = render_script(loaded.spec, backend.script, run.dir,  # type: ignore[arg-type]
                                 job_file=loaded.path, templates=templates, entrypoint=entrypoint)
            script = write_text_atomic(run.dir / f"job.{backend.script}", text, mode=0o755)
        (run.dir / "logs").mkdir(exist_ok=True)
        run.update(entrypoint=entrypoint, then_collect=then_collect, max_parallel=max_parallel,
                   script=script.name if script else None)
        if dry_run:
            run.update(state="dry-run")
            return run
        sub = backend.submit(run.dir, script, then_collect=then_collect, max_parallel=max_parallel)
    except BaseException as exc:
        message = exc.message if isinstance(exc, HpcsegError) else f"{type(exc).__name__}: {exc}"
        run.update(state="submit-failed", error=message, failed=now_iso())
        if isinstance(exc, SchedulerError):
            raise SchedulerError(f"{message} (run {run.run_id} marked submit-failed: {run.dir})") from None
        raise
    run.update(state="submitted", native_ids=sub.job_ids, task_ids={str(k): v for k, v in sub.task_ids.items()},
               collect_id=sub.collect_id, submitted=now_iso(), submitted_ts=time.time(), logs=sub.logs,
               **sub.extra)
    return run


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
        run.reload().update(cancelled_tasks=sorted({*run.manifest.get("cancelled_tasks", []), args.task}))
        print(f"{run.run_id}: cancelled task {args.task} ({ids[str(args.task)]})")
        return 0
    backend.cancel([*m["native_ids"], *([m["collect_id"]] if m.get("collect_id") else [])])
    run.reload().update(state="cancelled", cancelled=now_iso())
    print(f"{run.run_id}: cancelled {', '.join(m['native_ids'])}")
    return 0
