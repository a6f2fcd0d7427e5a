"""Everything that needs CUDA, measured in one run and printed as one table (run by gpu_check.sh).

1. mamba: mamba_ssm's fused kernels against the pure-PyTorch selective scan (hpcseg.workloads.hyperspectral.models_ssmu) on
   the same module and input: max |difference| of the outputs, and milliseconds per forward+backward step.
2. loop: hpcseg's training loop (bf16 autocast, channels_last, data resident on the GPU, one host sync per
   epoch) against a plain DataLoader fp32 loop on the same model, data and batch: images/s and the ratio.
3. epoch: one epoch of microbead_optimized at full size (its own image size, batch and models; 73
   synthetic images like the real set), per model, timed, and extrapolated to 100 epochs x 3 models.
4. ddp: torchrun on all visible GPUs against torchrun on one GPU, same global batch: training images/s
   and the scaling ratio (ideal = number of GPUs). With one GPU it still runs the data-parallel path
   (NCCL, SyncBatchNorm, DDP) at world size 1 and says that no ratio exists.

``--cpu-smoke`` runs the same code on CPU with tiny sizes (gloo, 2 processes for ddp; mamba kernels
skipped) so the script is tested where no GPU is (tests/test_distributed.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

Row = tuple[str, str, str, str]  # check, measure, value, note


def _ms_per_step(fn, x, reps: int, cuda: bool) -> float:
    import torch

    for _ in range(min(reps, 2)):  # warm-up: allocator, kernel selection
        fn(x).float().sum().backward()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn(x).float().sum().backward()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps * 1000


def check_mamba(smoke: bool) -> list[Row]:
    import torch

    from hpcseg.workloads.hyperspectral import models_ssmu
    from hpcseg.workloads.hyperspectral.models_ssmu import MambaRef, mamba_reference_forward

    cuda = torch.cuda.is_available() and not smoke
    dev = torch.device("cuda" if cuda else "cpu")
    n, length, d = (16, 8, 16) if smoke else (4096, 128, 32)  # pixels x bands x embedding
    torch.manual_seed(0)
    x = torch.randn(n, length, d, device=dev, requires_grad=True)
    rows: list[Row] = []
    kernel_cls = models_ssmu._CudaMamba
    if cuda and kernel_cls is not None:
        m = kernel_cls(d_model=d, d_state=16).to(dev)
        with torch.no_grad():
            diff = (m(x) - mamba_reference_forward(m, x)).abs().max().item()
        rows.append(("mamba", "max |kernel - reference|", f"{diff:.2e}", f"N={n} L={length} d={d}, fp32"))
        rows.append(("mamba", "kernel ms/step (fwd+bwd)", f"{_ms_per_step(m, x, 20, True):.2f}", ""))
    else:
        why = "no CUDA" if not cuda else "mamba_ssm not importable"
        m = MambaRef(d_model=d, d_state=16).to(dev)
        rows.append(("mamba", "kernel", "skipped", why))
    ref_ms = _ms_per_step(lambda t: mamba_reference_forward(m, t), x, 1 if smoke else 10, cuda)
    rows.append(("mamba", "reference scan ms/step", f"{ref_ms:.2f}", f"on {dev.type}"))
    if cuda and kernel_cls is not None:
        kernel_ms = float(rows[1][2])
        rows.append(("mamba", "speed-up kernel/reference", f"{ref_ms / kernel_ms:.1f}x", ""))
    return rows


def _spec(data: Path, smoke: bool, *sets: str):
    from hpcseg.spec import find_job, load_job, with_absolute_paths

    base = [f"workload.dataset.root={data}", "training.early_stopping.patience=null"]
    if smoke:
        base += ["workload.dataset.image_size=32", "workload.dataset.expected_count=16", "training.batch_size=4",
                 "workload.models.unet.channels=[4,8,16]", "workload.models.attention_unet.channels=[4,8,16]",
                 "workload.models.attention_resunet.channels=[4,8,16]"]
    return with_absolute_paths(load_job(find_job("microbead_optimized"), "quick" if smoke else None,
                                        [*base, *sets]).spec)


def _one_model(spec, name: str):
    model = spec.model(name)
    return spec.model_copy(update={"workload": spec.workload.model_copy(update={"models": [model]})})


def check_loop(data: Path, work: Path, smoke: bool) -> list[Row]:
    import torch
    import train_throughput as tt

    cuda = not smoke
    epochs = 1 if smoke else 5
    spec = _one_model(_spec(data, smoke, f"training.epochs={epochs}"), "unet")
    fast = spec.model_copy(update={"training": spec.training.model_copy(
        update={"mixed_precision": cuda, "deterministic": False})})
    os.environ["HPCSEG_DEVICE"] = "cuda" if cuda else "cpu"
    ours, code = tt.ours(fast, work / "loop_ours")
    if code != 0:
        raise RuntimeError(f"the runner exited {code}; see {work / 'loop_ours' / 'train.log'}")
    from hpcseg.workloads.microbead.train import build

    src = build(spec, torch.device("cpu"))
    plain = tt.plain_loop(spec, torch.device("cuda" if cuda else "cpu"), src.x, src.y, epochs)
    size = spec.workload.dataset.image_size[0]
    what = "bf16+channels_last, resident data" if cuda else "fp32 on CPU (smoke)"
    return [("loop", f"hpcseg images/s ({what})", f"{ours:.1f}", f"unet {size}px b{spec.training.batch_size}"),
            ("loop", "plain DataLoader fp32 images/s", f"{plain:.1f}", "no augmentation"),
            ("loop", "ratio hpcseg / plain", f"{ours / plain:.2f}x" if plain else "n/a", "hpcseg augments, plain not")]


def check_epoch(data: Path, work: Path, smoke: bool) -> list[Row]:
    from hpcseg.train.runner import TaskPlan, train

    spec = _spec(data, smoke, f"training.epochs={1 if smoke else 2}")
    os.environ["HPCSEG_DEVICE"] = "cpu" if smoke else "cuda"
    rows: list[Row] = []
    total = 0.0
    for m in spec.workload.models[:1] if smoke else spec.workload.models:  # smoke: the code, not the figures
        out = work / f"epoch_{m.name}"
        code = train(TaskPlan(_one_model(spec, m.name), m, 0, out, out, deadline=time.time() + 150))
        lines = (out / "history.csv").read_text().splitlines()[1:]
        if not lines:
            raise RuntimeError(f"{m.name}: no epoch finished (exit {code}); see {out / 'train.log'}")
        seconds = float(lines[-1].split(",")[-1])  # the last epoch: the first pays for cuDNN autotuning
        total += seconds
        rows.append(("epoch", f"{m.name} s/epoch", f"{seconds:.2f}", f"epoch {len(lines)}, train+val"))
    size = spec.workload.dataset.image_size[0]
    total *= len(spec.workload.models) / len(rows)
    rows.append(("epoch", "100 epochs x 3 models (h)", f"{total * 100 / 3600:.2f}",
                 f"{size}px b{spec.training.batch_size}; seed estimated 6-10 h"))
    return rows


def _torchrun(nproc: int, data: Path, out: Path, smoke: bool) -> float:
    sets = [f"workload.dataset.root={data}", "training.early_stopping.patience=null",
            f"training.epochs={1 if smoke else 4}"]
    if smoke:
        sets += ["workload.dataset.image_size=32", "workload.dataset.expected_count=16", "training.batch_size=4",
                 "workload.models.unet.channels=[4,8,16]"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "hpcseg", "train", "microbead_optimized", "--model", "unet", "--out", str(out)]
    if smoke:
        cmd += ["--profile", "quick"]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HPCSEG_DEVICE": "cpu" if smoke else "cuda",
           "OMP_NUM_THREADS": "1" if smoke else os.environ.get("OMP_NUM_THREADS", "4")}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun x{nproc} exited {proc.returncode}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return json.loads((out / "result.json").read_text())["train_images_per_second"] or 0.0


def check_ddp(data: Path, work: Path, smoke: bool) -> list[Row]:
    import torch

    n = 2 if smoke else torch.cuda.device_count()
    kind = "CPU process(es), gloo" if smoke else "GPU(s), nccl"
    one = _torchrun(1, data, work / "ddp_1", smoke)
    rows: list[Row] = [("ddp", f"images/s, 1 {kind.split(',')[0]}", f"{one:.1f}", "torchrun, world 1")]
    if n < 2:
        rows.append(("ddp", "scaling ratio", "n/a", "one GPU visible: the DDP path ran at world 1 only"))
        return rows
    many = _torchrun(n, data, work / f"ddp_{n}", smoke)
    rows.append(("ddp", f"images/s, {n} {kind}", f"{many:.1f}", "same global batch"))
    rows.append(("ddp", "scaling ratio", f"{many / one:.2f}x" if one else "n/a", f"ideal {n}x"))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on CPU: checks the script, measures nothing")
    p.add_argument("--workdir", help="default: a temporary folder")
    p.add_argument("--only", default="mamba,loop,epoch,ddp", help="comma-separated checks to run")
    args = p.parse_args()
    import torch

    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device; use --cpu-smoke to test the script on CPU", file=sys.stderr)
        return 2
    from hpcseg.workloads.microbead.synth import make_microbeads

    work = Path(args.workdir or tempfile.mkdtemp(prefix="hpcseg_gpu_check_"))
    data = work / "microbeads"
    if not (data / "images").is_dir():
        make_microbeads(data, n=16 if smoke else 73, size=48 if smoke else 256, seed=0)
    checks = {"mamba": lambda: check_mamba(smoke), "loop": lambda: check_loop(data, work, smoke),
              "epoch": lambda: check_epoch(data, work, smoke), "ddp": lambda: check_ddp(data, work, smoke)}
    rows: list[Row] = []
    failed = 0
    started = time.time()
    for name in [c.strip() for c in args.only.split(",") if c.strip()]:
        t0 = time.time()
        try:
            rows += checks[name]()
        except Exception as exc:  # one broken check must not hide the others' figures
            failed += 1
            traceback.print_exc()
            rows.append((name, "ERROR", exc.__class__.__name__, str(exc).splitlines()[0][:80] if str(exc) else ""))
        print(f"gpu_check: {name} done in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not smoke else "CPU smoke"
    print(f"\nhpcseg gpu_check: {gpu}, torch {torch.__version__}, {time.time() - started:.0f} s in all")
    print(f"{'check':<6} {'measure':<44} {'value':>10}  note")
    for check, measure, value, note in rows:
        print(f"{check:<6} {measure:<44} {value:>10}  {note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
