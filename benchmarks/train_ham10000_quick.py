"""Does the ham10000_comparison `quick` profile learn the synthetic lesions? Balanced accuracy vs chance.

Synthesises a HAM10000-layout dataset (``hpcseg synth ham10000``: metadata CSV + JPEGs, several images
per lesion, the class decided by the lesion's look) unless --data is given, then runs
``hpcseg train ham10000_comparison --profile quick`` for the chosen models on the CPU, each in its own
process, and prints the best validation balanced accuracy next to chance (1 / classes), the calibration
figures from result.json (ECE/NLL after scaling are cross-fitted: held out from the temperature) and
the melanoma sensitivity at 95 % specificity. Extra ``--set FIELD=VALUE`` overrides go to every run.
Target: balanced accuracy >= 3x chance.

    .venv/bin/python benchmarks/train_ham10000_quick.py [--models resnet50 densenet121] [--n 420]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from quick_runs import add_common_args, train_task, workdir

TARGET_RATIO = 3.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p, "HAM10000-layout folder (default: synthesise --n images into the workdir)")
    p.add_argument("--n", type=int, default=420, help="images to synthesise (default 420)")
    p.add_argument("--size", type=int, default=64, help="synthetic image side in pixels (default 64)")
    p.add_argument("--models", nargs="*", default=["resnet50"], help="model names (default: resnet50)")
    p.add_argument("--job", default="ham10000_comparison")
    args = p.parse_args()

    work = workdir(args, "hpcseg_bench_ham_")
    from hpcseg.spec import find_job, load_job

    data = Path(args.data) if args.data else work / "ham10000"
    if not args.data and not (data / "HAM10000_metadata.csv").is_file():
        from hpcseg.workloads.ham10000.synth import make_ham10000

        t0 = time.time()
        info = make_ham10000(data, n=args.n, size=args.size, seed=0)
        print(f"synthesised {info['n']} images of {info['lesions']} lesions in {time.time() - t0:.1f}s; "
              f"per class {info['per_class']}")
    job = find_job(args.job)
    overrides = [f"workload.dataset.root={data}", *args.overrides]
    spec = load_job(job, args.profile, overrides).spec
    k = spec.workload.dataset.num_classes
    chance = 1.0 / k
    tr = spec.training
    print(f"job {spec.name} --profile {args.profile} {' '.join('--set ' + o for o in args.overrides)}")
    print(f"  image {spec.workload.dataset.image_size[0]}px, epochs {tr.epochs}, batch {tr.batch_size}, "
          f"lr {tr.lr:g}, {k} classes (chance balanced accuracy {chance:.3f})")

    rows = []
    for name in args.models:
        out = work / "tasks" / f"{name}_{int(time.time())}"
        res, code, wall = train_task(args, job, name, out, overrides)
        best = res.get("best") or {}
        bacc = float(best.get("val_balanced_accuracy") or 0.0)
        cal = (res.get("extra") or {}).get("calibration") or {}
        mel = ((res.get("extra") or {}).get("evaluation") or {}).get("melanoma") or {}
        cal = {**cal, "mel_sens": mel.get("sensitivity_at_95_specificity")}
        rows.append((name, res, bacc, cal, wall))
        print(f"  {name:<16} exit {code}  best val_balanced_accuracy {bacc:.3f} "
              f"@ epoch {res.get('best_epoch')}/{res.get('epochs_run')}  wall {wall:.0f}s", flush=True)

    print()
    print(f"{'model':<16} {'bal.acc':>8} {'x chance':>9} {'T':>6} {'ECE before':>11} {'ECE after':>10} "
          f"{'NLL before':>11} {'NLL after':>10} {'mel sens@95spec':>15} {'val n':>6} {'wall s':>7}")
    for name, _res, bacc, cal, wall in rows:
        def f(key: str, cal: dict = cal) -> str:
            v = cal.get(key)
            return "-" if v is None else f"{v:.3f}"
        print(f"{name:<16} {bacc:>8.3f} {bacc / chance:>9.2f} {f('temperature'):>6} {f('ece_before'):>11} "
              f"{f('ece_after'):>10} {f('nll_before'):>11} {f('nll_after'):>10} {f('mel_sens'):>15} {cal.get('n', '-')!s:>6} "
              f"{wall:>7.0f}  {'ok' if bacc >= TARGET_RATIO * chance else 'BELOW'}")
    print(f"(task folders under {work / 'tasks'}; target balanced accuracy >= {TARGET_RATIO:g}x chance)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
