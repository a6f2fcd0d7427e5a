"""hpcseg collect: summaries, CV statistics, baselines, verdicts, collapse/divergence, plots, CLI.

Every run folder here is built by hand (create_run + history.csv/exit_code/result.json written in the
documented formats) with values whose answers are known, so each assertion can fail.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hpcseg.cli import main
from hpcseg.collect import collect_run
from hpcseg.compare import (
    BASELINE_COLLAPSED,
    COLLAPSED,
    IMPROVED,
    REGRESSED,
    UNCHANGED,
    ModelResult,
    detect_collapse,
    detect_divergence,
    fmt_ratio,
    fmt_value,
    normalize_name,
    verdict,
)
from hpcseg.runs import Run, create_run
from hpcseg.spec import load_job, with_absolute_paths
from hpcseg.taskfiles import canonical_metric, read_history, read_keras_history, read_summary

REPO = Path(__file__).resolve().parent.parent
COLUMNS = ["epoch", "train_loss", "val_loss", "val_jaccard", "val_dice", "val_precision", "val_recall",
           "train_jaccard_soft", "val_jaccard_soft", "lr", "epoch_seconds"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------- helpers


def make_run(root: Path, job: str = "microbead_optimized", overrides: list[str] | None = None) -> Run:
    loaded = load_job(REPO / "jobs" / f"{job}.yaml", "quick", overrides or [])
    loaded.spec = with_absolute_paths(loaded.spec)
    return create_run(loaded, "local", root=root)


def history_text(jaccard: list[float], *, train_loss: list[float] | None = None,
                 val_loss: list[float] | None = None, seconds: float = 100.0, soft: list[float] | None = None) -> str:
    """``soft``: the train_/val_jaccard_soft values (default: those of ``jaccard``)."""
    n = len(jaccard)
    train_loss = train_loss or [1.0 - 0.5 * j for j in jaccard]
    val_loss = val_loss or [1.0 - j for j in jaccard]
    soft = soft or jaccard
    lines = [",".join(COLUMNS)]
    for i in range(n):
        row = [i + 1, train_loss[i], val_loss[i], jaccard[i], min(1.0, 2 * jaccard[i] / (1 + jaccard[i])),
               0.5, 0.5, soft[i], soft[i], 1e-4, seconds]
        lines.append(",".join(repr(float(v)) if not isinstance(v, int) else str(v) for v in row))
    return "\n".join(lines) + "\n"


def write_task(run: Run, model: str, fold: int = 0, jaccard: list[float] | None = None, *,
               code: int | None = 0, reason: str | None = None, text: str | None = None, log: str | None = None,
               **kw) -> Path:
    d = run.dir / "tasks" / model / f"fold_{fold}"
    d.mkdir(parents=True, exist_ok=True)
    if text is not None:
        (d / "history.csv").write_text(text)
    elif jaccard is not None:
        (d / "history.csv").write_text(history_text(jaccard, **kw))
    if code is not None:
        (d / "exit_code").write_text(f"{code}\n")
    if reason is not None:
        (d / "result.json").write_text(json.dumps({"reason": reason}))
    if log is not None:
        (d / "train.log").write_text(log)
    return d


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


COLLAPSING = [0.05, 0.1, 0.1427, 0.02, 0.0, 0.0, 0.0]  # seed 004: peaked at 0.14, then ~0.0


def baseline_run(root: Path) -> Run:
    """microbead_mitochondria: attention_unet collapsed at 0.1427; unet 0.5 and attention_resunet 0.6 stable."""
    run = make_run(root, "microbead_mitochondria")
    write_task(run, "unet", jaccard=[0.3, 0.45, 0.5, 0.5])
    write_task(run, "attention_unet", jaccard=COLLAPSING)
    write_task(run, "attention_resunet", jaccard=[0.4, 0.6, 0.59, 0.6])
    return run


def optimized_run(root: Path) -> Run:
    run = make_run(root)
    write_task(run, "unet", jaccard=[0.4, 0.55, 0.6, 0.6])
    write_task(run, "attention_unet", jaccard=[0.3, 0.5, 0.6512, 0.6489])
    write_task(run, "attention_resunet", jaccard=[0.4, 0.6, 0.605, 0.604])
    return run


# --------------------------------------------------------------------------------------------- detection


def test_collapse_seed_series_is_collapsed():
    assert detect_collapse([0.05, 0.14, 0.0, 0.0, 0.0, 0.0])
    assert detect_collapse(COLLAPSING)
    assert detect_collapse([0.05, 0.14, 0.01])  # one epoch after the peak: k = min(3, 1)


def test_plateau_and_recovering_dip_are_not_collapse():
    assert not detect_collapse([0.3, 0.5, 0.6, 0.6, 0.6, 0.6])
    assert not detect_collapse([0.5, 0.6, 0.1, 0.05, 0.55, 0.6])  # late dip that recovers
    assert not detect_collapse([0.5, 0.6, 0.6, 0.6, 0.1, 0.1])  # only 2 low epochs at the end: k = 3
    assert not detect_collapse([0.0, 0.0, 0.0])  # never learned: nothing to collapse from
    assert not detect_collapse([0.1, 0.2, 0.3])  # peak at the last epoch
    assert not detect_collapse([0.4, 0.6, 0.2, 0.2, 0.2])  # 0.2 is a third of the peak, not below a quarter


def test_collapse_min_mode_is_inverted():
    assert detect_collapse([1.0, 0.3, 0.9, 0.95, 0.9], mode="min")
    assert not detect_collapse([1.0, 0.5, 0.3, 0.3, 0.3], mode="min")
    assert not detect_collapse([1.0, 0.3, 0.9, 0.35, 0.3], mode="min")


def test_divergence_detection():
    assert detect_divergence([0.5, float("nan")], [0.4, 0.3])
    assert detect_divergence([0.5, 0.4], [0.4, float("inf")])
    assert detect_divergence([0.5], exit_code=4)
    assert not detect_divergence([0.5, 0.4], [0.4, 0.3], exit_code=0)
    assert not detect_divergence(None, np.array([]))


def test_verdicts():
    def m(best, final=None, collapsed=0, diverged=0):
        return ModelResult("x", best, best if final is None else final, None, 1, collapsed, diverged)

    assert verdict(m(0.6512), m(0.1427, 0.0, collapsed=1)) == BASELINE_COLLAPSED
    assert verdict(m(0.70), m(0.60)) == IMPROVED
    assert verdict(m(0.50), m(0.60)) == REGRESSED
    assert verdict(m(0.605), m(0.60)) == UNCHANGED  # |diff| < 0.01
    assert verdict(m(0.515), m(0.50)) == IMPROVED  # 0.015 is above both 0.01 and 2 % of 0.5
    assert verdict(m(1.515), m(1.50)) == UNCHANGED  # 0.015 < 2 % of 1.5 = 0.03
    assert verdict(m(0.70, 0.0, collapsed=1), m(0.60)) == COLLAPSED
    assert verdict(m(0.50), m(0.60), mode="min") == IMPROVED
    assert normalize_name("Attention_ResUNet") == normalize_name("attention_resunet")
    assert normalize_name("Attention_UNet") == normalize_name("attention_unet")


# --------------------------------------------------------------------------------------------- readers


def test_truncated_last_line_warns_and_keeps_rows_before(tmp_path):
    full = history_text([0.2, 0.3, 0.4])
    cut = full + "4,0.5,0.5,0.6"  # killed mid-row: looks numeric but is not complete
    p = tmp_path / "history.csv"
    p.write_text(cut)
    h = read_history(p)
    assert len(h) == 3
    assert list(h.column("val_jaccard")) == [0.2, 0.3, 0.4]
    assert len(h.warnings) == 1 and "cut" in h.warnings[0]

    run = make_run(tmp_path / "runs")
    write_task(run, "unet", text=cut, code=None)
    result = collect_run(run, plots=False)
    row = result["summary"][0]
    assert (row["status"], row["epochs_run"], row["best_val_jaccard"], row["best_epoch"]) == ("running", 3, 0.4, 3)
    assert any("tasks/unet/fold_0/history.csv" in w and "cut" in w for w in result["warnings"])


def test_history_reader_tolerates_empty_cells_and_bad_rows(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("epoch,train_loss,val_loss,val_jaccard\n1,0.5,,0.2\n2,0.4,0.3\n3,nan,0.2,0.4\n")
    h = read_history(p)
    assert len(h) == 2 and math.isnan(h.column("val_loss")[0]) and math.isnan(h.column("train_loss")[1])
    assert any("line 3:" in w for w in h.warnings) and len(h.damage) == 1


def test_keras_reader_renames_and_counts_from_one(tmp_path):
    p = tmp_path / "unet_history.csv"
    p.write_text("epoch,accuracy,jacard_coef,loss,lr,val_accuracy,val_jacard_coef,val_loss\n"
                 "0,0.9,0.1,0.8,0.001,0.9,0.12,0.7\n1,0.92,0.2,0.6,0.001,0.91,0.1427,0.65\n")
    h = read_keras_history(p)
    assert h.columns == ["epoch", "train_accuracy", "train_jaccard_soft", "train_loss", "lr", "val_accuracy",
                         "val_jaccard_soft", "val_loss"]  # Keras jacard_coef: the soft Jaccard
    assert list(h.epochs) == [1.0, 2.0]
    assert canonical_metric("val_iou") == "val_jaccard" and canonical_metric("dice_coef") == "train_dice"
    assert canonical_metric("val_acc") == "val_accuracy"


def test_seed_summary_reader(tmp_path):
    p = tmp_path / "training_summary.csv"
    p.write_text("model,best_epoch,best_val_jacard,final_val_jacard,train_time\n"
                 "UNet,35,0.6234,0.6145,2.3h\nAttention_UNet,42,0.1427,0.0,3.1h\n")
    rows, warnings = read_summary(p, "val_jaccard_soft")  # the seed's jacard: Keras' soft Jaccard
    assert not warnings
    assert [(r.model, r.best_epoch, r.best, r.final) for r in rows] == [
        ("UNet", 35, 0.6234, 0.6145), ("Attention_UNet", 42, 0.1427, 0.0)]
    assert rows[0].train_time_s == pytest.approx(2.3 * 3600)
    assert rows[0].flags is None and rows[0].status == "completed"


# --------------------------------------------------------------------------------------------- summary and CV


def test_summary_values_exact(tmp_path):
    run = make_run(tmp_path / "runs")
    write_task(run, "unet", jaccard=[0.3, 0.5, 0.62, 0.6], seconds=100.0)
    write_task(run, "attention_unet", jaccard=[0.2, 0.4], seconds=3000.0)
    write_task(run, "attention_resunet", jaccard=[0.1, 0.2, 0.25, 0.25, 0.25], seconds=2000.0)
    collect_run(run, plots=False)
    rows = read_csv(run.dir / "training_summary.csv")
    assert list(rows[0]) == ["model", "fold", "status", "best_epoch", "best_val_jaccard", "final_val_jaccard",
                             "epochs_run", "train_time", "train_time_human", "flags", "reason"]
    assert rows[0] == {"model": "unet", "fold": "0", "status": "completed", "best_epoch": "3",
                       "best_val_jaccard": "0.62", "final_val_jaccard": "0.6", "epochs_run": "4",
                       "train_time": "400.0", "train_time_human": "6.7m", "flags": "", "reason": ""}
    assert (rows[1]["train_time"], rows[1]["train_time_human"]) == ("6000.0", "1.7h")
    assert rows[2]["best_epoch"] == "3"  # the first epoch reaching the best value (the best checkpoint)
    assert [r["model"] for r in rows] == ["unet", "attention_unet", "attention_resunet"]


def test_cv_mean_std_over_three_folds(tmp_path):
    run = make_run(tmp_path / "runs", overrides=["workload.split.folds=3"])
    for fold, best in enumerate([0.6, 0.7, 0.8]):
        write_task(run, "unet", fold, [0.1, best, best - 0.01])
    for fold, best in enumerate([0.5, 0.5, 0.8]):
        write_task(run, "attention_unet", fold, [0.2, best])
    for fold, best in enumerate([0.9, 0.1, 0.2]):
        write_task(run, "attention_resunet", fold, [0.05, best])
    result = collect_run(run, plots=False)
    cv = json.loads((run.dir / "cv_results.json").read_text())
    assert cv == result["cv"]
    u = cv["models"]["unet"]
    assert u["mean"] == pytest.approx(0.7) and u["std"] == pytest.approx(0.1)  # ddof=1
    assert (u["min"], u["max"], u["n_folds"], u["folds"]) == (0.6, 0.8, 3, [0.6, 0.7, 0.8])
    assert cv["std_ddof"] == 1
    assert cv["models"]["attention_unet"]["std"] == pytest.approx(np.std([0.5, 0.5, 0.8], ddof=1))
    assert cv["best_model"] == "unet" and cv["best_value"] == pytest.approx(0.7)
    assert len(result["summary"]) == 9


def test_cv_best_model_respects_mode_min(tmp_path):
    run = make_run(tmp_path / "runs", overrides=["collection.metric=val_loss", "collection.mode=min"])
    write_task(run, "unet", jaccard=[0.5, 0.6], val_loss=[0.5, 0.3])
    write_task(run, "attention_unet", jaccard=[0.5, 0.6], val_loss=[0.5, 0.2])
    write_task(run, "attention_resunet", jaccard=[0.5, 0.6], val_loss=[0.5, 0.4])
    cv = collect_run(run, plots=False)["cv"]
    assert cv["best_model"] == "attention_unet" and cv["best_value"] == 0.2


def test_divergence_and_collapse_flagged_in_summary(tmp_path):
    run = make_run(tmp_path / "runs")
    write_task(run, "unet", jaccard=[0.3, 0.4, 0.4], train_loss=[0.7, float("nan"), float("nan")], code=4,
               reason="diverged: loss is nan at epoch 2")
    write_task(run, "attention_unet", jaccard=COLLAPSING)
    write_task(run, "attention_resunet", jaccard=[0.3, 0.4, 0.45], val_loss=[0.6, float("inf"), 0.5])
    collect_run(run, plots=False)
    rows = {r["model"]: r for r in read_csv(run.dir / "training_summary.csv")}
    assert rows["unet"]["status"] == "diverged" and rows["unet"]["flags"] == "diverged"
    assert rows["unet"]["reason"] == "diverged: loss is nan at epoch 2"
    assert rows["attention_unet"]["flags"] == "collapsed"
    assert (rows["attention_unet"]["best_val_jaccard"], rows["attention_unet"]["final_val_jaccard"]) == ("0.1427", "0.0")
    assert rows["attention_resunet"]["status"] == "completed" and rows["attention_resunet"]["flags"] == "diverged"


def test_partial_run_rows_carry_status(tmp_path):
    run = make_run(tmp_path / "runs")
    write_task(run, "unet", jaccard=[0.2, 0.3], code=None)  # running: history, no exit_code
    # attention_unet: nothing at all -> pending
    write_task(run, "attention_resunet", jaccard=[0.1], code=1, log="epoch 1 done\nRuntimeError: CUDA error\n")
    rc = main(["collect", str(run.dir), "--json"])
    assert rc == 0
    rows = {r["model"]: r for r in read_csv(run.dir / "training_summary.csv")}
    assert rows["unet"]["status"] == "running" and rows["unet"]["best_val_jaccard"] == "0.3"
    assert rows["attention_unet"]["status"] == "pending" and rows["attention_unet"]["epochs_run"] == "0"
    assert rows["attention_resunet"]["status"] == "failed"
    assert rows["attention_resunet"]["reason"] == "RuntimeError: CUDA error"
    cv = json.loads((run.dir / "cv_results.json").read_text())
    assert cv["best_model"] is None and cv["models"]["unet"]["n_folds"] == 0


def test_status_from_exit_codes_and_result_json(tmp_path):
    run = make_run(tmp_path / "runs", overrides=["workload.split.folds=2"])
    write_task(run, "unet", 0, [0.2, 0.3], code=75)
    write_task(run, "unet", 1, [0.2, 0.3], code=None, reason="early_stopped")  # run by hand: no exit_code
    write_task(run, "attention_unet", 0, [0.2], code=137)
    d = write_task(run, "attention_unet", 1, [0.2], code=1)
    (d / "result.json").write_text(json.dumps({"reason": "failed", "exit_code": 1, "message": "ValueError: bad mask"}))
    d = write_task(run, "attention_resunet", 0, [0.2, 0.1], code=None)
    (d / "result.json").write_text(json.dumps({"reason": "diverged", "exit_code": 4, "message": "loss is nan"}))
    d = write_task(run, "attention_resunet", 1, code=None)
    (d / "exit_code").write_text("garbage")
    rows = collect_run(run, plots=False)["summary"]
    assert [r["status"] for r in rows] == ["interrupted", "completed", "failed", "failed", "diverged", "failed"]
    assert rows[3]["reason"] == "failed: ValueError: bad mask"
    assert rows[4]["flags"] == ["diverged"] and rows[4]["exit_code"] == 4
    assert "unreadable exit_code" in rows[5]["reason"]


def test_requeued_task_with_stale_result_json_is_running(tmp_path):
    """The job script removes exit_code when a requeued attempt starts; result.json is from the last one."""
    run = make_run(tmp_path / "runs")
    d = write_task(run, "unet", jaccard=[0.2, 0.3, 0.4], code=None)
    (d / "result.json").write_text(json.dumps({"reason": "interrupted", "exit_code": 75}))
    stat = (d / "result.json").stat()
    os.utime(d / "history.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # an epoch written since
    d2 = write_task(run, "attention_unet", jaccard=[0.2], code=None)
    (d2 / "result.json").write_text(json.dumps({"reason": "interrupted", "exit_code": 75}))
    os.utime(d2 / "history.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns - 10**9))  # nothing since
    rows = collect_run(run, plots=False)["summary"]
    assert [r["status"] for r in rows[:2]] == ["running", "interrupted"]


def test_ratio_formatting():
    assert fmt_ratio(0.6512 / 0.1427) == "4.6×"
    assert fmt_ratio(1.048) == "1.05×"  # never "1.0× improvement"
    assert fmt_ratio(None) == "—"
    assert fmt_value(0.0) == "0.0" and fmt_value(0.1427) == "0.1427" and fmt_value(0.65) == "0.65"


# --------------------------------------------------------------------------------------------- comparison


SEED_LINE = "attention_unet: baseline 0.1427 → 0.0 (collapsed); now 0.6512: 4.6× improvement"


def test_comparison_against_job_ratio_and_verdicts(tmp_path, capsys):
    root = tmp_path / "runs"
    base = baseline_run(root)
    run = optimized_run(root)
    result = collect_run(run, against="microbead_mitochondria", plots=False)
    assert result["baseline"] == {"kind": "run", "label": f"microbead_mitochondria/{base.run_id}"}
    rows = {r["model"]: r for r in result["comparison"]["rows"]}
    a = rows["attention_unet"]
    assert a["ratio"] == pytest.approx(0.6512 / 0.1427) and f"{a['ratio']:.1f}" == "4.6"
    assert a["diff"] == pytest.approx(0.6512 - 0.1427)
    assert (a["baseline_best"], a["baseline_final"], a["baseline_collapsed"]) == (0.1427, 0.0, True)
    assert a["verdict"] == "baseline-collapsed" and a["change"] == "improved"
    assert rows["unet"]["verdict"] == "improved"
    assert rows["attention_resunet"]["verdict"] == "unchanged"
    assert result["headline"].split(" | also: ")[0] == SEED_LINE
    md = (run.dir / "comparison.md").read_text()
    assert SEED_LINE in md and "| attention_unet | 0.1427 | 0.0 (collapsed) | 0.6512 |" in md
    assert "4.6×" in md

    # No --against: the job's collection.baseline (microbead_mitochondria) is used.
    assert collect_run(run, plots=False)["headline"].split(" | also: ")[0] == SEED_LINE
    # The CLI prints the same line in its table output.
    assert main(["collect", f"microbead_optimized/{run.run_id}", "--runs-dir", str(root)]) == 0
    assert "4.6× improvement" in capsys.readouterr().out


def test_baseline_keras_csvlogger_folder(tmp_path):
    run = optimized_run(tmp_path / "runs")
    keras = tmp_path / "microscope_training_20251008_074915"
    keras.mkdir()
    header = "epoch,accuracy,jacard_coef,loss,lr,val_accuracy,val_jacard_coef,val_loss\n"

    def write(name: str, vals: list[float]) -> None:
        rows = [f"{i},0.9,{v},{1 - v},0.001,0.9,{v},{1 - v}" for i, v in enumerate(vals)]
        (keras / name).write_text(header + "\n".join(rows) + "\n")

    write("unet_history.csv", [0.3, 0.5, 0.5])
    write("attention_unet_history.csv", COLLAPSING)
    write("Attention_ResUNet_history.csv", [0.4, 0.7, 0.7])
    write("segnet_history.csv", [0.2, 0.3, 0.3])
    result = collect_run(run, against=str(keras), plots=False)
    assert result["baseline"]["kind"] == "keras"
    rows = {r["model"]: r for r in result["comparison"]["rows"]}
    assert rows["attention_resunet"]["baseline_model"] == "Attention_ResUNet"
    assert rows["attention_resunet"]["verdict"] == "regressed"  # 0.605 vs 0.7
    assert rows["attention_unet"]["baseline_collapsed"] and rows["attention_unet"]["verdict"] == "baseline-collapsed"
    assert result["comparison"]["only_in_baseline"] == ["segnet"]
    assert result["headline"].split(" | also: ")[0] == SEED_LINE


def test_baseline_seed_format_training_summary(tmp_path):
    run = optimized_run(tmp_path / "runs")
    old = tmp_path / "old_results"
    old.mkdir()
    (old / "training_summary.csv").write_text(
        "model,best_epoch,best_val_jacard,final_val_jacard,train_time\n"
        "UNet,35,0.6234,0.6145,2.3h\nAttention_UNet,42,0.1427,0.0,3.1h\nSegNet,10,0.3,0.3,1.0h\n")
    result = collect_run(run, against=str(old), plots=False)
    assert result["baseline"]["kind"] == "summary"
    rows = {r["model"]: r for r in result["comparison"]["rows"]}
    assert rows["unet"]["verdict"] == "regressed"  # 0.6 vs 0.6234: diff 0.0234 > 0.01 and > 2 %
    assert rows["attention_unet"]["baseline_collapsed"]  # final 0.0 < 25 % of best 0.1427
    assert result["headline"].split(" | also: ")[0] == SEED_LINE
    assert result["comparison"]["only_in_run"] == ["attention_resunet"]
    assert result["comparison"]["only_in_baseline"] == ["SegNet"]
    md = (run.dir / "comparison.md").read_text()
    assert "Only in this run (no baseline to compare): attention_resunet" in md


def test_baseline_our_own_training_summary_file(tmp_path):
    root = tmp_path / "runs"
    base = baseline_run(root)
    collect_run(base, plots=False)
    run = optimized_run(root)
    result = collect_run(run, against=str(base.dir / "training_summary.csv"), plots=False)
    assert result["headline"].split(" | also: ")[0] == SEED_LINE


def test_previous_picks_earlier_finished_run_not_current(tmp_path):
    root = tmp_path / "runs"
    first = make_run(root)
    write_task(first, "unet", jaccard=[0.2, 0.4])
    unfinished = make_run(root)
    write_task(unfinished, "unet", jaccard=[0.9], code=None)  # running: not a baseline
    current = make_run(root)
    write_task(current, "unet", jaccard=[0.3, 0.5])
    later = make_run(root)
    write_task(later, "unet", jaccard=[0.7, 0.8])  # created after the current run: not "previous"
    result = collect_run(current, against="previous", plots=False)
    assert result["baseline"]["label"] == f"microbead_optimized/{first.run_id}"
    row = result["comparison"]["rows"][0]
    assert (row["model"], row["baseline_best"], row["best"], row["verdict"]) == ("unet", 0.4, 0.5, "improved")
    # The first run has no earlier one: nothing to compare, not an error.
    r0 = collect_run(first, against="previous", plots=False)
    assert r0["comparison"] is None and "no earlier finished run" in r0["baseline_note"]
    assert "No baseline" in (first.dir / "comparison.md").read_text()


def test_bad_input_exit_2(tmp_path, capsys):
    root = tmp_path / "runs"
    run = optimized_run(root)
    assert main(["collect", "no_such_run", "--runs-dir", str(root)]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing here")
    capsys.readouterr()
    assert main(["collect", str(run.dir), "--against", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(empty) in err[0]
    assert main(["collect", str(run.dir), "--against", "no_such_baseline", "--runs-dir", str(root)]) == 2


# --------------------------------------------------------------------------------------------- outputs


def test_rerun_is_byte_identical(tmp_path):
    root = tmp_path / "runs"
    baseline_run(root)
    run = make_run(root, overrides=["workload.split.folds=3"])
    for fold in range(3):
        write_task(run, "unet", fold, [0.1 * (fold + 1), 0.6 + 0.01 * fold, 0.61])
        write_task(run, "attention_unet", fold, [0.2, 0.6512 - 0.001 * fold])
    write_task(run, "attention_resunet", 0, [0.1], code=None)
    names = ["training_summary.csv", "cv_results.json", "comparison.md"]
    collect_run(run)
    first = {n: (run.dir / n).read_bytes() for n in names}
    collect_run(run)
    assert {n: (run.dir / n).read_bytes() for n in names} == first
    assert not list(run.dir.glob(".*.tmp")) and not list((run.dir / "plots").glob(".*.tmp"))


def test_plots_are_valid_pngs(tmp_path):
    root = tmp_path / "runs"
    baseline_run(root)
    run = make_run(root, overrides=["workload.split.folds=3"])
    rng = np.random.default_rng(0)
    for m, top in (("unet", 0.6), ("attention_unet", 0.65), ("attention_resunet", 0.62)):
        for fold in range(3):
            curve = list(np.round(top * (1 - np.exp(-np.arange(1, 16) / 4)) + rng.normal(0, 0.01, 15), 4))
            write_task(run, m, fold, curve)
    result = collect_run(run)
    plots = sorted(Path(p).name for p in result["files"]["plots"])
    assert plots == ["learning_curves_attention_resunet.png", "learning_curves_attention_unet.png",
                     "learning_curves_unet.png", "model_comparison.png"]
    for p in result["files"]["plots"]:
        data = Path(p).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 10_000


def test_importing_collect_does_not_import_torch_or_matplotlib():
    code = ("import sys, hpcseg.collect, hpcseg.compare, hpcseg.taskfiles; "
            "bad = [m for m in ('torch', 'matplotlib') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    code = "import sys, hpcseg.plots; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_json_output(tmp_path, capsys):
    root = tmp_path / "runs"
    baseline_run(root)
    run = optimized_run(root)
    capsys.readouterr()
    assert main(["collect", f"microbead_optimized/{run.run_id}", "--runs-dir", str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"summary", "cv", "comparison", "headline"}
    assert out["headline"].split(" | also: ")[0] == SEED_LINE and out["cv"]["best_model"] == "attention_unet"
