"""Training throughput: hpcseg's loop against a plain PyTorch loop, same model, data and batch size.

"Plain" is the loop most training scripts have: a DataLoader over a CPU TensorDataset, ``.to(device)``
per batch, ``loss.item()`` per batch for logging, fp32, no augmentation. "hpcseg" is the real runner
(``hpcseg.train.runner.train``) on the same job: data resident on the device, batch augmentation on the
device, one host sync per epoch; its figure is the trainer's own ``train_images_per_second`` from
result.json (training phase only, first epoch left out in both loops). On CUDA the runner is also
measured with bf16 autocast (``training.mixed_precision``) and channels_last.

    .venv/bin/python benchmarks/train_throughput.py [--size 64] [--epochs 6] [--model unet]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def plain_loop(spec, device, x, y, epochs: int) -> float:
    """Images/s of the textbook loop over epochs 2..N."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from hpcseg.train.losses import build_loss
    from hpcseg.train.models import build_model

    torch.manual_seed(0)
    model = build_model(spec, spec.workload.models[0]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=spec.training.lr)
    loss_fn = build_loss(spec)
    loader = DataLoader(TensorDataset(x, y), batch_size=spec.training.batch_size, shuffle=True)
    speeds = []
    for _ in range(epochs):
        model.train()
        t0, n, total = time.perf_counter(), 0, 0.0
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device).long()
            loss = loss_fn(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            n += len(xb)
        if device.type == "cuda":
            torch.cuda.synchronize()
        speeds.append((n, time.perf_counter() - t0))
    use = speeds[1:] or speeds
    return sum(n for n, _ in use) / sum(s for _, s in use)


def ours(spec, out: Path) -> tuple[float, int]:
    from hpcseg.train.runner import TaskPlan, train

    code = train(TaskPlan(spec, spec.workload.models[0], 0, out, out))
    res = json.loads((out / "result.json").read_text())
    return res["train_images_per_second"] or 0.0, code


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=None, help="image size (default: 64 on CPU, 256 on CUDA)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=None, help="batch size (default: 8 on CPU, 32 on CUDA)")
    p.add_argument("--model", default="unet", help="model of microbead_optimized: unet, attention_unet, attention_resunet")
    p.add_argument("--channels", default=None, help="e.g. 8,16,32,64 (default: the quick profile's on CPU, the "
                   "job's on CUDA)")
    p.add_argument("--workdir", help="default: a temporary folder")
    p.add_argument("--cpu-only", action="store_true")
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    import torch

    from hpcseg.spec import find_job, load_job, with_absolute_paths
    from hpcseg.workloads.microbead.synth import make_microbeads

    work = Path(args.workdir or tempfile.mkdtemp(prefix="hpcseg_bench_tp_"))
    data = work / "microbeads"
    if not (data / "images").is_dir():
        make_microbeads(data, n=73, size=256, seed=0)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.cpu_only else [])
    rows = []
    for dev in devices:
        size = args.size or (64 if dev == "cpu" else 256)
        batch = args.batch or (8 if dev == "cpu" else 32)
        sets = [f"workload.dataset.root={data}", f"workload.dataset.image_size={size}",
                f"training.epochs={args.epochs}", f"training.batch_size={batch}",
                "training.early_stopping.patience=null", "training.lr=1e-3"]
        channels = args.channels or ("8,16,32,64" if dev == "cpu" else None)
        if channels:
            sets.append(f"workload.models.{args.model}.channels=[{channels}]")
        base = load_job(find_job("microbead_optimized"), "quick" if dev == "cpu" else None, sets).spec
        base = with_absolute_paths(base)
        model = base.model(args.model)
        base = base.model_copy(update={"workload": base.workload.model_copy(update={"models": [model]})})
        os.environ["HPCSEG_DEVICE"] = dev
        device = torch.device(dev)

        def variant(base=base, **training):
            return base.model_copy(update={"training": base.training.model_copy(update=training)})

        from hpcseg.workloads.microbead.train import build

        src = build(base, torch.device("cpu"))
        label = f"{dev} {size}px b{batch} {args.model}"
        speed, code = ours(variant(), work / f"{dev}_ours_aug")
        threads = torch.get_num_threads()
        rows.append((label, "hpcseg, augmentation on", speed))
        speed_noaug, _ = ours(variant(augmentation=base.training.augmentation.model_copy(
            update={"hflip": False, "vflip": False, "rotate_degrees": 0.0})), work / f"{dev}_ours_noaug")
        rows.append((label, "hpcseg, augmentation off", speed_noaug))
        if dev == "cuda":
            fast = variant(mixed_precision=True, deterministic=False)
            rows.append((label, "hpcseg, bf16 + channels_last, aug on", ours(fast, work / "cuda_bf16")[0]))
        torch.set_num_threads(threads)
        plain = plain_loop(variant(), device, src.x, src.y, args.epochs)
        rows.append((label, "plain DataLoader loop, no aug", plain))
        rows.append((label, "ratio hpcseg(aug off) / plain", speed_noaug / plain if plain else 0.0))
        print(f"{dev}: {threads} thread(s), torch {torch.__version__}, {len(src.names())} images", flush=True)

    print()
    print(f"{'setting':<28} {'loop':<38} {'images/s':>10}")
    for label, what, value in rows:
        unit = f"{value:>9.2f}x" if what.startswith("ratio") else f"{value:>10.1f}"
        print(f"{label:<28} {what:<38} {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
