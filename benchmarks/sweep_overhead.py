"""Per-trial overhead of a sweep: a worker running its trials in one process vs one process per trial.

Overhead is everything a trial costs besides its training epochs (result.json's ``train_seconds``):
process start, imports (torch, MONAI, torchmetrics), data load, model build, checkpoints. It is measured
on a quick trial (tiny microbead set, 2 epochs) in the same run both ways:

- one process per trial: ``hpcseg train JOB --set <the trial's values> --out DIR`` per trial, as a
  sweep that submits every trial as its own job would (Hydra's Optuna sweeper, SEML);
- one worker: ``hpcseg train --run RUN --task 0`` of an Optuna sweep, which asks the study for every
  trial and trains them all in one process (hpcseg/sweep/worker.py).

    .venv/bin/python benchmarks/sweep_overhead.py [--trials 4] [--epochs 2] [--size 32] [--n 12]
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

REPO = Path(__file__).resolve().parents[1]

JOB = """\
name: sweep_overhead
workload:
  task: binary_segmentation
  dataset: {{root: {data}, layout: microbead, image_size: {size}, channels: 1, num_classes: 2}}
  models:
    - {{name: unet, arch: unet, channels: [4, 8], dropout: 0.1}}
  split: {{method: random, val_fraction: 0.25}}
training: {{epochs: {epochs}, batch_size: 4, lr: 0.01}}
resources: {{gpus: 0, cpus: 1, memory: 2G, walltime: "00:30:00"}}
sweep:
  method: optuna
  trials: {trials}
  parallel: 1
  pruner: none
  params:
    training.lr: {{log_uniform: [1.0e-3, 1.0e-1]}}
"""


def run(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def train_seconds(result: Path) -> float:
    return float(json.loads(result.read_text())["train_seconds"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--n", type=int, default=12, help="images in the synthetic set")
    p.add_argument("--workdir")
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    from hpcseg.spec import load_job, with_absolute_paths
    from hpcseg.submit import submit_job
    from hpcseg.workloads.microbead.synth import make_microbeads

    work = Path(args.workdir or tempfile.mkdtemp(prefix="hpcseg_bench_sweep_"))
    data = work / "data"
    if not (data / "images").is_dir():
        make_microbeads(data, n=args.n, size=args.size, seed=0)
    job = work / "job.yaml"
    job.write_text(JOB.format(data=data, size=args.size, epochs=args.epochs, trials=args.trials))
    env = {**os.environ, "HPCSEG_DEVICE": "cpu", "HPCSEG_CPUS": "1", "PYTHONPATH": str(REPO)}
    py = [sys.executable, "-m", "hpcseg"]

    imports = run([sys.executable, "-c", "import torch"], env)
    imports_all = run([sys.executable, "-c", "import hpcseg.train.loop, torch, monai, torchmetrics"], env)

    # one worker, every trial in one process
    loaded = load_job(job)
    loaded.spec = with_absolute_paths(loaded.spec)
    r = submit_job(loaded, "local", runs_dir=work / "runs", dry_run=True, check=False)
    worker_wall = run([*py, "train", "--run", str(r.dir), "--task", "0"], env)
    results = sorted(r.dir.glob("trials/*/unet/fold_0/result.json"))
    assert len(results) == args.trials, results
    worker_train = sum(train_seconds(f) for f in results)
    # inside the worker, what a trial costs besides its epochs: data load, model build, checkpoints, study
    in_worker = sum(float(json.loads(f.read_text())["attempt_seconds"]) for f in results) - worker_train
    lrs = [json.loads((f.parents[2] / "trial.json").read_text())["params"]["training.lr"] for f in results]

    # one process per trial, the same learning rates
    per_wall, per_train = 0.0, 0.0
    for i, lr in enumerate(lrs):
        out = work / f"single/t{i}"
        per_wall += run([*py, "train", str(job), "--set", "sweep=null", "--set", f"training.lr={lr}",
                         "--out", str(out)], env)
        per_train += train_seconds(out / "result.json")

    n = args.trials
    w_over = (worker_wall - worker_train) / n
    p_over = (per_wall - per_train) / n
    print(f"sweep overhead: {n} trials x {args.epochs} epochs, {args.n} images {args.size}px, CPU, 1 thread")
    print(f"  python -c 'import torch':                          {imports:6.2f} s")
    print(f"  python -c 'import hpcseg.train.loop, torch, monai, torchmetrics': {imports_all:6.2f} s "
          f"({imports_all / imports:.2f}x torch alone)")
    print(f"  one process per trial: wall {per_wall:6.2f} s, training {per_train:6.2f} s, "
          f"overhead {p_over:5.2f} s/trial ({p_over / max(per_train / n, 1e-9):.1f}x a trial's training)")
    print(f"  one worker process:    wall {worker_wall:6.2f} s, training {worker_train:6.2f} s, "
          f"overhead {w_over:5.2f} s/trial ({w_over / max(worker_train / n, 1e-9):.1f}x a trial's training)")
    print(f"    of which inside train() per trial (data load, model, checkpoints): {in_worker / n:5.2f} s; "
          f"the rest is the worker's one start and imports, paid once")
    print(f"  per-trial overhead, worker vs process per trial: {w_over / p_over:.2f}x "
          f"(sweep wall time {worker_wall / per_wall:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
