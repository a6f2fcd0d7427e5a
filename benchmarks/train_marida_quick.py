"""Do the MARIDA `quick` profiles learn on a CPU? Best validation Jaccard against the all-debris base rate.

Synthesises MARIDA tiles (hpcseg.workloads.marida.synth, seed 0; 64 tiles of 32 px unless --n/--size say
otherwise) unless --data is given, then runs ``hpcseg train JOB --profile quick`` for marida_se_unet and
marida_attention_unet on the CPU, each in its own process, and prints a table: best val_jaccard, the
Jaccard of predicting debris everywhere on the same validation tiles (the base rate the untrained
profiles sat at, 0.047), and the tuned-threshold F1/IoU from result.json's ``extra.threshold``.
``--set FIELD=VALUE`` overrides go to every run (how profile values are tried without editing the jobs).

    .venv/bin/python benchmarks/train_marida_quick.py [--jobs marida_se_unet] [--set training.epochs=40 ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from quick_runs import add_common_args, train_task, workdir

JOBS = ("marida_se_unet", "marida_attention_unet")


def base_rate(data: Path, val_names: list[str], size: int) -> float:
    """Jaccard of 'debris everywhere' over the labelled pixels of the validation tiles (centre-cropped)."""
    from hpcseg.images import read_image

    debris = labelled = 0
    for name in val_names:
        (cl,) = list((data / "patches").rglob(f"{name}_cl.tif"))
        codes = read_image(cl)
        h, w = codes.shape
        r, c = (h - size) // 2, (w - size) // 2
        codes = codes[r:r + size, c:c + size]
        debris += int((codes == 1).sum())
        labelled += int((codes > 0).sum())
    return debris / max(labelled, 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p, "MARIDA dataset folder (default: synthesise into the workdir)")
    p.add_argument("--jobs", nargs="*", default=list(JOBS))
    p.add_argument("--n", type=int, default=64, help="synthetic tiles")
    p.add_argument("--size", type=int, default=32, help="synthetic tile side")
    args = p.parse_args()

    work = workdir(args, "hpcseg_bench_marida_")
    from hpcseg.spec import find_job, load_job

    data = Path(args.data) if args.data else work / "marida"
    if not args.data and not (data / "patches").is_dir():
        from hpcseg.workloads.marida.synth import make_marida

        t0 = time.time()
        info = make_marida(data, n=args.n, size=args.size, seed=0)
        print(f"synthesised {info['n']} tiles {args.size}px ({info['tiles_with_debris']} with debris) "
              f"in {time.time() - t0:.1f}s")
    overrides = [f"workload.dataset.root={data}", *args.overrides]
    rows = []
    for job_name in args.jobs:
        job = find_job(job_name)
        spec = load_job(job, args.profile, overrides).spec
        model = spec.workload.models[0]
        tr = spec.training
        print(f"job {spec.name} --profile {args.profile}: {model.arch} {list(model.channels)}, "
              f"image {spec.workload.dataset.image_size[0]}px, epochs {tr.epochs}, batch {tr.batch_size}, "
              f"lr {tr.lr:g}, loss {dict(tr.loss.components)}")
        out = work / "tasks" / f"{spec.name}_{int(time.time())}"
        res, code, wall = train_task(args, job, model.name, out, overrides)
        base = float("nan")
        splits = out.parent / "splits.json" if (out.parent / "splits.json").exists() else out / "splits.json"
        if splits.exists():
            val = json.loads(splits.read_text())["folds"][0]["val"]
            base = base_rate(data, val, spec.workload.dataset.image_size[0])
        thr = (res.get("extra") or {}).get("threshold") or {}
        rows.append((spec.name, res, base, thr, wall))
        print(f"  exit {code}, best val_jaccard {res.get('best_value') or 0:.4f} @ epoch "
              f"{res.get('best_epoch')}/{res.get('epochs_run')}, params {res.get('params')}, wall {wall:.0f}s",
              flush=True)

    print()
    print(f"{'job':<24} {'params':>9} {'best val_jaccard':>16} {'base rate':>9} {'ratio':>6} "
          f"{'thr':>5} {'F1@thr':>7} {'IoU@thr':>7} {'wall s':>7}")
    for name, res, base, thr, wall in rows:
        best = res.get("best_value") or 0.0
        ratio = best / base if base and np.isfinite(base) else float("nan")
        print(f"{name:<24} {res.get('params') or 0:>9} {best:>16.4f} {base:>9.4f} {ratio:>6.1f} "
              f"{thr.get('best_threshold', float('nan')):>5.2f} {thr.get('f1', float('nan')):>7.4f} "
              f"{thr.get('iou', float('nan')):>7.4f} {wall:>7.0f}")
    print(f"(task folders under {work / 'tasks'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
