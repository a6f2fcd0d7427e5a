"""What the train_*_quick benchmarks share: their common options, a work folder, and one real training task.

Each benchmark runs ``python -m hpcseg train`` in a subprocess, exactly as a compute node would, and reads
the task's result.json; only the data it synthesises and the figures it prints differ. Imported by the
scripts beside it (``python benchmarks/train_x_quick.py`` puts this folder first on sys.path).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def add_common_args(p: argparse.ArgumentParser, data_help: str) -> None:
    p.add_argument("--data", help=data_help)
    p.add_argument("--workdir", help="where data and task folders go (default: a temporary folder)")
    p.add_argument("--profile", default="quick")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--threads", type=int, help="HPCSEG_CPUS for the runs (default: every core)")


def workdir(args: argparse.Namespace, prefix: str) -> Path:
    """The work folder (``--workdir`` or a new temporary one); hpcseg importable from this checkout."""
    sys.path.insert(0, str(REPO))
    work = Path(args.workdir or tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    return work


def train_task(args: argparse.Namespace, job: Path, model: str, out: Path,
               overrides: list[str]) -> tuple[dict[str, Any], int, float]:
    """One ``hpcseg train`` task on the CPU: (result.json, or a failed stand-in; exit code; wall seconds).
    A task that wrote no result.json has its output tails printed, so a broken run is not a silent zero."""
    env = {**os.environ, "HPCSEG_DEVICE": "cpu", "PYTHONPATH": str(REPO)}
    if args.threads:
        env["HPCSEG_CPUS"] = str(args.threads)
    cmd = [sys.executable, "-m", "hpcseg", "train", str(job), "--profile", args.profile, "--model", model,
           "--out", str(out), *(x for o in overrides for x in ("--set", o))]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    try:
        res = json.loads((out / "result.json").read_text())
    except OSError:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        res = {"reason": "failed", "exit_code": proc.returncode}
    return res, proc.returncode, wall
