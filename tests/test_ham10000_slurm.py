"""Seed 002 end to end on the local Slurm: the quick HAM10000 job trains every backbone, each task writes
its evaluation (held-out calibration, operating points, confusion matrices, Grad-CAM) and collect shows
it per backbone."""

from __future__ import annotations

import json

import pytest

from hpcseg.workloads.ham10000.synth import make_ham10000
from tests.test_schedulers_slurm import hpcseg, wait_ended

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

EVAL_FILES = ("metrics.json", "confusion_counts.csv", "confusion_normalised.csv", "operating_points.csv",
              "roc.csv", "reliability.csv", "roc.png", "reliability.png", "confusion.png", "gradcam.png")


def test_quick_ham10000_on_slurm_evaluates_every_backbone_and_collect_shows_it(tmp_path, cleanup):
    data = tmp_path / "ham10000"
    make_ham10000(data, n=56, size=32, seed=0)
    sets = [f"workload.dataset.root={data}", "training.epochs=1", "resources.cpus=1", "resources.memory=2G",
            "resources.gpus=0", "workload.models.resnet50.options.widen_factor=0.25"]
    p = hpcseg("submit", "ham10000_comparison", "--profile", "quick", "--scheduler", "slurm",
               *sum((["--set", s] for s in sets), []), "--runs-dir", str(tmp_path / "runs"), timeout=180)
    assert p.returncode == 0, p.stderr
    run_dir = next(ln.split(":", 1)[1].strip() for ln in p.stdout.splitlines() if "run folder:" in ln)
    from hpcseg.runs import open_run

    run = open_run(run_dir)
    cleanup += [str(j) for j in run.manifest.get("native_ids", [])]
    tasks, _ = wait_ended(run, timeout=600)
    assert {t["state"] for t in tasks} == {"completed"}, [(t["model"], t["state"], t["detail"]) for t in tasks]

    models = [t.model for t in run.tasks]
    for task in run.tasks:
        d = run.task_dir(task)
        missing = [f for f in EVAL_FILES if not (d / "eval" / f).is_file()]
        assert not missing, f"{task.model}: no {missing}"
        extra = json.loads((d / "result.json").read_text())["extra"]
        cal = extra["calibration"]
        assert cal["held_out"] is True and 0 <= cal["ece_after"] <= 1 and cal["temperature"] > 0
        assert 0 <= extra["evaluation"]["balanced_accuracy"] <= 1

    c = hpcseg("collect", run_dir, "--runs-dir", str(tmp_path / "runs"), timeout=300)
    assert c.returncode == 0, c.stderr
    assert "evaluation with the best weights" in c.stdout and "calibration.ece_after" in c.stdout
    cv = json.loads((run.dir / "cv_results.json").read_text())
    for m in models:
        ev = cv["models"][m]["evaluation"]
        assert {"calibration.ece_before", "calibration.ece_after", "calibration.nll_before",
                "calibration.nll_after", "calibration.temperature", "evaluation.balanced_accuracy",
                "evaluation.macro_f1"} <= set(ev)
    table = (run.dir / "eval" / "evaluation_summary.csv").read_text().splitlines()
    assert table[0].split(",")[1:] == models
    report = (run.dir / "report.html").read_text()
    assert "evaluation_summary.csv" in report and report.count("gradcam.png") >= len(models)
