"""``hpcseg demo``: the whole story of seed 004 on this machine, in about ten minutes on two CPU cores.

Synthesise a microbead dataset, fingerprint it, check it, submit the collapsed mitochondria settings and
the recalibrated microbead settings (quick profiles) to whatever scheduler `auto` finds, follow both runs
with live status, then collect the new run against the old one. It uses the same functions as the
individual verbs, so the demo passing means the verbs work together.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hpcseg.errors import EXIT_FAILED, HpcsegError

BASELINE_JOB = "microbead_mitochondria"
MAIN_JOB = "microbead_optimized"


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def ensure_dataset(root: Path) -> None:
    """Reuse a complete synthetic set from an earlier demo; otherwise make one (73 images as in the seed)."""
    from hpcseg.workloads.microbead.synth import make_microbeads

    if (root / "images").is_dir() and len(list((root / "images").iterdir())) == 73:
        print(f"reusing {root} (73 images)")
        return
    if root.exists() and any(root.iterdir()):
        raise HpcsegError(f"{root} holds something other than the demo's 73 images; move it or use --workdir")
    s = make_microbeads(root, n=73, size=256, seed=0)
    print(f"wrote 73 synthetic microbead images to {root}: {s['mean_objects']:.1f} objects per image on average")


def load_quick(job: str, data: Path):
    from hpcseg.spec import find_job, load_job, with_absolute_paths

    loaded = load_job(find_job(job), "quick", [f"workload.dataset.root={data}"])
    loaded.spec = with_absolute_paths(loaded.spec)
    return loaded


def follow(runs: list, interval: float = 5.0, limit_s: float = 1800.0) -> bool:
    """Print the status table whenever it changes until both runs end; True when every task completed."""
    from hpcseg.status import render_plain, snapshot

    deadline = time.monotonic() + limit_s
    last = ""
    while True:
        snap = snapshot(runs)
        progress = "\n".join(render_plain(type(snap)([r], snap.errors, snap.states), single=True)
                             for r in snap.runs)
        if progress != last:
            print(progress, flush=True)
            last = progress
        if snap.ended:
            print(render_plain(snap, single=False), flush=True)
            return all(t.state == "completed" for _, tasks, _ in snap.runs for t in tasks)
        if time.monotonic() > deadline:
            raise HpcsegError(f"the demo runs did not finish within {limit_s:.0f} s; hpcseg status shows where they are",
                              exit_code=EXIT_FAILED)
        time.sleep(interval)


def pick_scheduler(requested: str) -> str:
    """`auto`, except that an installed but stopped Slurm makes the demo run locally instead of failing:
    the demo is the first thing a new user runs, and `make test` leaves Slurm installed."""
    from hpcseg.schedulers import detect

    if requested != "auto":
        return requested
    found = detect()
    if found == "slurm":
        from hpcseg.schedulers.slurm import controller_down

        why = controller_down()
        if why:
            print(f"Slurm is installed but not answering ({why}); running the demo with the local executor "
                  f"(make cluster-up starts the local cluster)")
            return "local"
    return found


def cli_demo(args: argparse.Namespace) -> int:
    from hpcseg.analyze import analyze_dataset, format_table
    from hpcseg.collect import cli_collect
    from hpcseg.preflight import preflight, summary_line
    from hpcseg.submit import submit_job

    work = Path(args.workdir).expanduser().resolve()
    data, runs_dir = work / "data" / "microbeads", work / "runs"
    started = time.monotonic()

    _say("1/5 synthesise a microbead dataset (seed 004: 12-254 beads per image)")
    ensure_dataset(data)

    _say("2/5 fingerprint it against the mitochondria data the old settings were tuned for (3 objects/image)")
    summary = analyze_dataset(data, work / "data" / "analysis", reference=3.0)
    print(format_table(summary["recommendations"]))

    scheduler = pick_scheduler(args.scheduler)
    _say(f"3/5 check and submit both jobs (quick profiles) to the {scheduler} scheduler")
    runs = []
    for job in (BASELINE_JOB, MAIN_JOB):
        loaded = load_quick(job, data)
        result = preflight(loaded.spec, loaded.path)
        print(f"{job}: {summary_line(result)}")
        run = submit_job(loaded, scheduler, runs_dir=runs_dir, check=True, max_parallel=2)
        print(f"{job}: submitted as {run.dir.parent.name}/{run.run_id} ({len(run.tasks)} tasks)")
        runs.append(run)

    _say("4/5 follow them (hpcseg status)")
    all_completed = follow(runs)

    _say(f"5/5 collect {MAIN_JOB} against {BASELINE_JOB} (hpcseg collect)")
    ns = argparse.Namespace(run=str(runs[1].dir), against=str(runs[0].dir), json=False, runs_dir=str(runs_dir))
    code = cli_collect(ns)
    print(f"\nplots:   {runs[1].dir / 'plots'}")
    print(f"summary: {runs[1].dir / 'training_summary.csv'}")
    print(f"demo finished in {time.monotonic() - started:.0f} s")
    if not all_completed:
        print("some tasks did not complete; hpcseg status and hpcseg logs show why", file=sys.stderr)
        return EXIT_FAILED
    return code
