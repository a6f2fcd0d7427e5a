"""Does the microbead_optimized `quick` profile learn on a CPU? Best validation Jaccard and wall time per model.

Per model: the best hard IoU (val_jaccard, the job's metric), the Keras-style soft Jaccard of that epoch
(val_jaccard_soft, what the seed's jacard_coef reported) and the parameter count.

Synthesises the 73-image microbead set (hpcseg.workloads.microbead.synth, seed 0) unless --data is given, then runs
``hpcseg train microbead_optimized --profile quick`` for the first model (``--all``: every model) on the
CPU, each in its own process, and prints a table. Extra ``--set FIELD=VALUE`` overrides go to every run,
which is how alternative profile values are measured without editing the job file. Target: >= 0.7.

    .venv/bin/python benchmarks/train_microbead_quick.py [--all] [--set training.lr=1e-3 ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from quick_runs import add_common_args, train_task, workdir

TARGET = 0.7


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p, "microbead dataset folder (default: synthesise 73 images into the workdir)")
    p.add_argument("--all", action="store_true", help="every model of the job, not just the first")
    p.add_argument("--models", nargs="*", help="model names to run (default: the first, or all with --all)")
    p.add_argument("--job", default="microbead_optimized")
    args = p.parse_args()

    work = workdir(args, "hpcseg_bench_quick_")
    from hpcseg.spec import find_job, load_job

    data = Path(args.data) if args.data else work / "microbeads"
    if not args.data and not (data / "images").is_dir():
        from hpcseg.workloads.microbead.synth import make_microbeads

        t0 = time.time()
        info = make_microbeads(data, n=73, size=256, seed=0)
        print(f"synthesised {info['n']} images ({info['mean_objects']:.1f} objects/image) in {time.time() - t0:.1f}s")
    job = find_job(args.job)
    overrides = [f"workload.dataset.root={data}", *args.overrides]
    spec = load_job(job, args.profile, overrides).spec
    names = args.models or ([m.name for m in spec.workload.models] if args.all else [spec.workload.models[0].name])
    tr = spec.training
    print(f"job {spec.name} --profile {args.profile} {' '.join('--set ' + o for o in args.overrides)}")
    print(f"  image {spec.workload.dataset.image_size[0]}px, epochs {tr.epochs}, batch {tr.batch_size}, lr {tr.lr:g}, "
          f"loss {dict(tr.loss.components)}, patience {tr.early_stopping.patience}")

    rows = []
    for name in names:
        out = work / "tasks" / f"{name}_{int(time.time())}"
        res, code, wall = train_task(args, job, name, out, overrides)
        rows.append((name, res, wall))
        print(f"  {name:<20} exit {code}  best val_jaccard {res.get('best_value') or 0:.4f} "
              f"@ epoch {res.get('best_epoch')}/{res.get('epochs_run')}  train {res.get('train_seconds', 0):.0f}s  "
              f"wall {wall:.0f}s", flush=True)

    print()
    print(f"{'model':<20} {'params':>9} {'best val_jaccard':>16} {'val_jaccard_soft':>16} {'epoch':>6} {'epochs':>7} "
          f"{'wall s':>7}  target {TARGET}")
    for name, res, wall in rows:
        best = res.get("best_value") or 0.0
        soft = (res.get("best") or {}).get("val_jaccard_soft")
        print(f"{name:<20} {res.get('parameters') or 0:>9,} {best:>16.4f} "
              f"{'-' if soft is None else f'{soft:.4f}':>16} {res.get('best_epoch') or '-':>6} "
              f"{res.get('epochs_run') or 0:>7} {wall:>7.0f}  {'ok' if best >= TARGET else 'BELOW'}")
    print(f"(task folders under {work / 'tasks'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
