"""How long does ``hpcseg collect`` take on a 1000-task cross-validation run? Target: under 2 s without plots.

Builds, in a temporary folder, a run of 20 models × 50 folds (the schema allows at most 50 folds) with
100 epochs of history.csv per task, plus an earlier run of the same job to compare against, then times
``collect_run`` without plots (with and without the baseline) and with plots, and measures peak Python
heap (tracemalloc, in a separate pass so it does not slow the timed ones) and the process's peak RSS.

    .venv/bin/python benchmarks/collect_1000.py [--models 20] [--folds 50] [--epochs 100] [--no-plots] [--keep DIR]
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hpcseg.collect import collect_run  # noqa: E402
from hpcseg.runs import Run, create_run  # noqa: E402
from hpcseg.spec import JobSpec, LoadedJob, load_job, with_absolute_paths  # noqa: E402

HEADER = "epoch,train_loss,val_loss,val_jaccard,val_dice,val_precision,val_recall,lr,epoch_seconds\n"


def make_spec(models: int, folds: int, epochs: int) -> LoadedJob:
    loaded = load_job(REPO / "jobs" / "microbead_optimized.yaml", "quick")
    data = with_absolute_paths(loaded.spec).model_dump(mode="json")
    template = data["workload"]["models"][0]
    data["workload"]["models"] = [{**template, "name": f"model_{i:02d}"} for i in range(models)]
    data["workload"]["split"]["folds"] = folds
    data["training"]["epochs"] = epochs
    data["collection"]["baseline"] = None  # compare against the previous run of the same job
    loaded.spec = JobSpec.model_validate(data)
    return loaded


def fill_run(run: Run, epochs: int, seed: int) -> None:
    """A plausible history per task: rising metric with noise, falling losses, ~60 s per epoch."""
    rng = np.random.default_rng(seed)
    e = np.arange(1, epochs + 1, dtype=float)
    for t in run.tasks:
        top = 0.5 + 0.2 * rng.random()
        jac = np.clip(top * (1 - np.exp(-e / 10)) + rng.normal(0, 0.01, epochs), 0, 1)
        cols = np.column_stack([e, 1 - 0.6 * jac, 1 - jac + rng.normal(0, 0.01, epochs), jac,
                                2 * jac / (1 + jac), jac + 0.1, jac + 0.05, np.full(epochs, 1e-4),
                                60 + rng.random(epochs)])
        body = "\n".join(",".join(f"{v:.6g}" for v in row) for row in cols)
        d = run.task_dir(t)
        d.mkdir(parents=True, exist_ok=True)
        (d / "history.csv").write_text(HEADER + body + "\n")
        (d / "exit_code").write_text("0\n")


def timed(label: str, fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    print(f"{label:<44} {best:7.3f} s (best of {repeats})")
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--folds", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--keep", metavar="DIR", help="build the runs in DIR and keep them (default: a temp folder)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp) / "runs"
        loaded = make_spec(args.models, args.folds, args.epochs)
        t0 = time.perf_counter()
        earlier = create_run(loaded, "local", root=root)
        fill_run(earlier, args.epochs, seed=1)
        run = create_run(loaded, "local", root=root)
        fill_run(run, args.epochs, seed=2)
        n = len(run.tasks)
        print(f"generated 2 runs × {n} tasks ({args.models} models × {args.folds} folds) × {args.epochs} epochs "
              f"in {time.perf_counter() - t0:.1f} s")

        t_nobase = timed("collect_run, no plots, no baseline", lambda: _collect_without_baseline(run))
        t_base = timed("collect_run, no plots, vs previous run", lambda: collect_run(run, "previous", plots=False))
        result = collect_run(run, "previous", plots=False)
        assert len(result["summary"]) == n and result["comparison"] is not None

        tracemalloc.start()
        collect_run(run, "previous", plots=False)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"{'peak Python heap (tracemalloc), vs previous':<44} {peak / 2**20:7.1f} MiB")

        t_plots = None
        if not args.no_plots:
            t_plots = timed("collect_run, with plots, vs previous run",
                            lambda: collect_run(run, "previous", plots=True), repeats=1)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        print(f"{'peak RSS of this process (all passes)':<44} {rss:7.1f} MiB")
        target = 2.0
        verdict = "OK" if max(t_nobase, t_base) < target else "SLOWER THAN TARGET"
        print(f"target < {target:.0f} s without plots: {verdict} "
              f"({t_nobase * 1000 / n:.2f} ms per task alone, {t_base * 1000 / n:.2f} ms with its baseline)"
              + (f"; plots add {t_plots - t_base:.1f} s" if t_plots is not None else ""))
    return 0


def _collect_without_baseline(run: Run) -> dict:
    """The run as its own first run: the 'previous' look-up finds nothing earlier, so nothing is compared."""
    spec_baseline = run.manifest["spec"]["collection"]
    assert spec_baseline["baseline"] is None
    from hpcseg import collect

    original = collect._baseline
    collect._baseline = lambda *a, **k: (None, "benchmark: baseline skipped", [])
    try:
        return collect_run(run, plots=False)
    finally:
        collect._baseline = original


if __name__ == "__main__":
    sys.exit(main())
