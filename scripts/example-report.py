"""Regenerate docs/example-report.html and docs/report-screenshot.png (what the README shows).

A real run folder built the way tests build them (create_run + history.csv + exit_code in the documented
formats, no training): microbead_optimized, 3 models x 3 folds, against a microbead_mitochondria baseline
whose attention_unet collapsed, with one model regressed so the headline has to say so, and workload
evaluation outputs under the eval/ and sweep/ convention. Then `hpcseg report` and a headless Chromium
screenshot.

    .venv/bin/python scripts/example-report.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hpcseg.cli import main  # noqa: E402
from hpcseg.runs import Run, create_run  # noqa: E402
from hpcseg.spec import load_job, with_absolute_paths  # noqa: E402

COLUMNS = ["epoch", "train_loss", "val_loss", "val_jaccard", "val_dice", "lr", "epoch_seconds"]


def make_run(root: Path, job: str) -> Run:
    loaded = load_job(REPO / "jobs" / f"{job}.yaml", "quick", ["workload.split.folds=3"])
    loaded.spec = with_absolute_paths(loaded.spec)
    return create_run(loaded, "slurm", root=root)


def write_task(run: Run, model: str, fold: int, jaccard: np.ndarray, rng: np.random.Generator) -> Path:
    d = run.dir / "tasks" / model / f"fold_{fold}"
    d.mkdir(parents=True, exist_ok=True)
    lines = [",".join(COLUMNS)]
    for i, j in enumerate(jaccard):
        tl = 0.9 * np.exp(-i / 6) + 0.25 + rng.normal(0, 0.01)
        vl = 1.0 - j + rng.normal(0, 0.01)
        lines.append(f"{i + 1},{tl:.4f},{vl:.4f},{j:.4f},{2 * j / (1 + j):.4f},0.0001,{rng.uniform(40, 50):.1f}")
    (d / "history.csv").write_text("\n".join(lines) + "\n")
    (d / "exit_code").write_text("0\n")
    return d


def curve(top: float, epochs: int, rng: np.random.Generator, rate: float = 4.0) -> np.ndarray:
    x = np.arange(1, epochs + 1)
    return np.clip(top * (1 - np.exp(-x / rate)) + rng.normal(0, 0.008, epochs), 0, 1)


def eval_figures(run: Run) -> None:
    """What a workload's evaluation writes: a confusion matrix, a reliability diagram, a per-class table."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    d = run.dir / "tasks" / "attention_unet" / "fold_0" / "eval"
    d.mkdir(parents=True, exist_ok=True)
    cm = np.array([[0.96, 0.04], [0.19, 0.81]])
    fig = Figure(figsize=(4.0, 3.2))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v > 0.5 else "black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["background", "bead"], yticklabels=["background", "bead"],
           xlabel="predicted", ylabel="true", title="confusion matrix\n(rows: true class, normalised)")
    fig.tight_layout()
    fig.savefig(d / "confusion_matrix.png", dpi=80)
    fig = Figure(figsize=(4.0, 3.2))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    conf = np.linspace(0.55, 0.95, 9)
    ax.plot([0, 1], [0, 1], ":", color="0.5", label="perfect")
    ax.plot(conf, conf - 0.06 * np.sin(conf * 3), "o-", label="model")
    ax.set(xlim=(0.5, 1), ylim=(0.5, 1), xlabel="confidence", ylabel="accuracy", title="reliability (ECE 0.031)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(d / "reliability.png", dpi=80)
    (d / "per_class.csv").write_text("class,iou,dice,pixels\nbackground,0.974,0.987,15204112\nbead,0.652,0.789,1573104\n")
    sweep = run.dir / "sweep"
    sweep.mkdir(exist_ok=True)
    (sweep / "leaderboard.csv").write_text("rank,model,lr,batch,val_jaccard\n1,attention_unet,1e-4,8,0.655\n"
                                           "2,unet,1e-4,8,0.611\n3,attention_resunet,3e-4,8,0.583\n")


def main_() -> int:
    rng = np.random.default_rng(4)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        base = make_run(root, "microbead_mitochondria")
        for f in range(3):
            write_task(base, "unet", f, curve(0.52 + 0.01 * f, 12, rng), rng)
            collapsing = np.concatenate([curve(0.15, 5, rng, 2.0), np.zeros(7) + rng.uniform(0, 0.01, 7)])
            write_task(base, "attention_unet", f, collapsing, rng)
            write_task(base, "attention_resunet", f, curve(0.62, 12, rng), rng)
        run = make_run(root, "microbead_optimized")
        for f in range(3):
            write_task(run, "unet", f, curve(0.60 + 0.01 * f, 15, rng), rng)
            write_task(run, "attention_unet", f, curve(0.65 - 0.008 * f, 15, rng), rng)
            write_task(run, "attention_resunet", f, curve(0.575 + 0.01 * f, 15, rng, 5.0), rng)
        (run.dir / "tasks" / "unet" / "fold_1" / "events.log").write_text("2025-10-08T07:49:15 requeueing after SIGUSR1\n")
        run.update(state="submitted", native_ids=["4242"], collect_id="4243", submitted=run.manifest["created"],
                   git={"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False},
                   host="login01", user="researcher",
                   job_file="jobs/microbead_optimized.yaml", overrides=["workload.split.folds=3"])
        base.update(state="submitted", native_ids=["4200"])
        t0 = run.manifest["created_ts"]
        run.update(submitted_ts=t0 + 4)
        for i, t in enumerate(run.manifest["tasks"]):  # tasks ended over the afternoon, 3 at a time on 3 GPUs
            end = t0 + 700 * (1 + i // 3) + 37 * i
            os.utime(run.dir / t["dir"] / "exit_code", (end, end))
        eval_figures(run)
        out = REPO / "docs" / "example-report.html"
        code = main(["report", str(run.dir), "--against", str(base.dir), "-o", str(out)])
        if code:
            return code
        text = out.read_text().replace(str(root), "runs")
        out.write_text(text)
        browser = subprocess.run(["bash", str(REPO / "scripts" / "browser.sh"), "path"], capture_output=True,
                                 text=True).stdout.strip()
        if not browser:
            print("no chromium: screenshot not taken (scripts/browser.sh up)", file=sys.stderr)
            return 1
        shot = REPO / "docs" / "report-screenshot.png"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        "--hide-scrollbars", f"--user-data-dir={tmp}/profile", "--window-size=1280,1500",
                        f"--screenshot={shot}", out.as_uri()], capture_output=True, timeout=120, check=True)
        from PIL import Image

        img = Image.open(shot).convert("RGB")
        img = img.resize((960, round(img.height * 960 / img.width)), Image.LANCZOS)
        img.save(shot, optimize=True)
        print(json.dumps({"report": str(out), "bytes": out.stat().st_size, "screenshot": str(shot),
                          "screenshot_bytes": shot.stat().st_size}))
    return 0


if __name__ == "__main__":
    sys.exit(main_())
