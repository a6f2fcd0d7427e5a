"""The ``hpcseg`` command: argument parsing and one small dispatch per verb.

Each verb's module is imported only when that verb runs, so ``hpcseg status`` never pays for torch,
pandas or matplotlib. Only ``train`` (and the benchmarks) import torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hpcseg.errors import EXIT_BAD_INPUT, EXIT_FAILED, HpcsegError
from hpcseg.workloads import registry

# verb -> (module, function). The function takes the parsed arguments and returns an exit code.
VERBS: dict[str, tuple[str, str]] = {
    "jobs": ("hpcseg.cli", "cli_jobs"),
    "render": ("hpcseg.render", "cli_render"),
    "check": ("hpcseg.preflight", "cli_check"),
    "submit": ("hpcseg.submit", "cli_submit"),
    "status": ("hpcseg.status", "cli_status"),
    "cancel": ("hpcseg.submit", "cli_cancel"),
    "resubmit": ("hpcseg.submit", "cli_resubmit"),
    "logs": ("hpcseg.status", "cli_logs"),
    "collect": ("hpcseg.collect", "cli_collect"),
    "report": ("hpcseg.report", "cli_report"),
    "train": ("hpcseg.train.runner", "cli_train"),
    "analyze": ("hpcseg.analyze", "cli_analyze"),
    "synth": ("hpcseg.synth", "cli_synth"),
    "demo": ("hpcseg.demo", "cli_demo"),
}


def _job_args(p: argparse.ArgumentParser, job_required: bool = True) -> None:
    p.add_argument("job", nargs=None if job_required else "?", help="job name (jobs/NAME.yaml) or path to a YAML file")
    p.add_argument("--profile", help="named profile from the job file, e.g. quick")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any field, typed by the schema, e.g. --set training.lr=5e-5 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpcseg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    sub.add_parser("jobs", help="list the known jobs, one line each")

    p = sub.add_parser("render", help="print or write the PBS/Slurm script for a job")
    _job_args(p)
    p.add_argument("--scheduler", choices=["slurm", "pbs"], default="slurm")
    p.add_argument("--templates", help="folder of your own templates (slurm.sh.j2, pbs.sh.j2)")
    p.add_argument("--run-dir", help="run folder the script should use (default: a placeholder path)")
    p.add_argument("-o", "--output", help="write the script here instead of printing it")

    p = sub.add_parser("check", help="preflight: dataset, container, weights and resources, all problems at once")
    _job_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--runs-dir", help="where submit will record runs (default: $HPCSEG_RUNS or ./runs)")

    p = sub.add_parser("submit", help="check, render, record and submit the models x folds as one array job")
    _job_args(p)
    p.add_argument("--scheduler", choices=["auto", "slurm", "pbs", "local"], default="auto")
    p.add_argument("--via", choices=["submitit", "sbatch"], default="sbatch",
                   help="on Slurm: submit our rendered script with sbatch, or through submitit")
    p.add_argument("--templates", help="folder of your own templates")
    p.add_argument("--dry-run", action="store_true", help="write the run folder and script, submit nothing")
    p.add_argument("--no-check", action="store_true", help="skip the preflight checks")
    p.add_argument("--then-collect", action="store_true", help="add a dependent job that runs hpcseg collect")
    p.add_argument("--runs-dir", help="where runs are recorded (default: $HPCSEG_RUNS or ./runs)")
    p.add_argument("--max-parallel", type=int, help="local executor: tasks at once (default: 1)")

    p = sub.add_parser("status", help="scheduler state and training progress of every task of a run")
    p.add_argument("run", nargs="?", help="run id, run folder or job name (latest run); none: recent runs")
    p.add_argument("--watch", action="store_true", help="refresh until every task has ended")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between refreshes with --watch")
    p.add_argument("--json", action="store_true")
    p.add_argument("--runs-dir")
    p.add_argument("--last", type=int, default=20, metavar="N",
                   help="with no RUN: how many recent runs to show (0: all)")

    p = sub.add_parser("cancel", help="cancel a run, or one task of it")
    p.add_argument("run")
    p.add_argument("--task", type=int)
    p.add_argument("--runs-dir")

    p = sub.add_parser("resubmit", help="send interrupted (exit 75) or listed tasks again; they resume")
    p.add_argument("run")
    p.add_argument("--tasks", metavar="K,...", help="these tasks (ended ones) instead of those that exited 75")
    p.add_argument("--runs-dir")

    p = sub.add_parser("logs", help="print (or follow) a task's log")
    p.add_argument("run")
    p.add_argument("--task", type=int, default=None)
    p.add_argument("--follow", "-f", action="store_true")
    p.add_argument("--lines", "-n", type=int, default=50)
    p.add_argument("--runs-dir")

    p = sub.add_parser("collect", help="training_summary.csv, CV statistics, plots and a comparison")
    p.add_argument("run", help="run id, run folder or job name (latest run)")
    p.add_argument("--against", help="baseline: previous, a run id, a job name or a folder of histories")
    p.add_argument("--json", action="store_true")
    p.add_argument("--runs-dir")

    p = sub.add_parser("report", help="one self-contained HTML report of a run (collects it first)")
    p.add_argument("run", help="run id, run folder or job name (latest run)")
    p.add_argument("--against", help="baseline, as for collect")
    p.add_argument("-o", "--output", help="HTML file to write (default: RUN/report.html)")
    p.add_argument("--runs-dir")

    p = sub.add_parser("train", help="train one model on one fold (what the job script runs)")
    p.add_argument("job", nargs="?", help="job name or file (interactive use)")
    p.add_argument("--run", dest="run_dir", help="run folder written by submit (batch use)")
    p.add_argument("--task", type=int, help="array index: models x folds, model-major")
    p.add_argument("--model", help="model name (interactive use)")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--out", help="task folder (interactive use)")
    p.add_argument("--profile")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--deadline", type=float, help="seconds from start after which to checkpoint and stop")

    p = sub.add_parser("analyze", help="dataset fingerprint, plots and recommended settings")
    p.add_argument("dataset", help="folder with images/ and masks/")
    p.add_argument("--out", help="output folder (default: DATASET/analysis)")
    p.add_argument("--reference", help="reference objects per image (a number) or a summary.json")
    p.add_argument("--reference-lr", type=float, default=1e-3, help="learning rate that suited the reference")
    p.add_argument("--reference-batch", type=int, default=8)

    p = sub.add_parser("synth", help="generate synthetic datasets for tests and demos")
    p.add_argument("kind", choices=registry.synth_kinds())
    p.add_argument("out")
    p.add_argument("--n", type=int, help="items (images, tiles or cores); default: the kind's own")
    p.add_argument("--size", type=int, help="image side in pixels; default: the kind's own")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("demo", help="synthesise data, run the two demo jobs (baseline and tuned), follow them and compare")
    p.add_argument("--scheduler", choices=["auto", "slurm", "pbs", "local"], default="auto")
    p.add_argument("--workdir", default=".", help="where data/ and runs/ go")
    return parser


def cli_jobs(args: argparse.Namespace) -> int:
    from hpcseg.spec import list_jobs, load_job

    for path in list_jobs():
        try:
            spec = load_job(path).spec
        except HpcsegError as exc:
            print(f"{path.stem:<26} INVALID: {exc.message}")
            continue
        models = ", ".join(m.name for m in spec.workload.models)
        folds = spec.workload.split.folds
        profiles = f" profiles: {', '.join(spec.profiles)}" if spec.profiles else ""
        print(f"{path.stem:<26} {spec.workload.task:<24} {len(spec.tasks())} task(s) [{models}"
              f"{f' x {folds} folds' if folds > 1 else ''}]{profiles}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module, func = VERBS[args.verb]
    try:
        handler = getattr(importlib.import_module(module), func)
        return int(handler(args) or 0)
    except HpcsegError as exc:
        if "hpcseg.jobload" in sys.modules:  # a job was loaded: name where a refused field was written
            exc = sys.modules["hpcseg.jobload"].name_origin(exc)
        from hpcseg.printable import printable  # names and paths in messages are shown, never obeyed

        for i, line in enumerate(exc.lines()):
            print(printable(f"hpcseg {args.verb}: {line}" if i == 0 else line), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"hpcseg {args.verb}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_FAILED
    except OSError as exc:  # a path the user gave: too long, not permitted, a loop, a full disk
        where = exc.filename or "a file"
        print(f"hpcseg {args.verb}: {where}: {exc.strerror or exc}".replace("\n", "\\n"), file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
