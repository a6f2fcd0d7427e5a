"""collect against a Keras baseline compares the same Jaccard definition on both sides, and says which."""

from __future__ import annotations

from pathlib import Path

from hpcseg.collect import collect_run, soft_twin
from hpcseg.taskfiles import canonical_metric
from tests.test_collect import make_run, write_task

KERAS_HEADER = "epoch,accuracy,jacard_coef,loss,lr,val_accuracy,val_jacard_coef,val_loss\n"


def keras_folder(tmp_path: Path, values: dict[str, list[float]]) -> Path:
    folder = tmp_path / "keras"
    folder.mkdir()
    for model, vals in values.items():
        rows = [f"{i},0.9,{v},{1 - v},0.001,0.9,{v},{1 - v}" for i, v in enumerate(vals)]
        (folder / f"{model}_history.csv").write_text(KERAS_HEADER + "\n".join(rows) + "\n")
    return folder


def test_keras_jacard_coef_is_read_as_the_soft_jaccard() -> None:
    assert canonical_metric("val_jacard_coef") == "val_jaccard_soft"
    assert canonical_metric("val_jaccard_coef") == "val_jaccard_soft"
    assert canonical_metric("jacard_coef") == "train_jaccard_soft"
    assert canonical_metric("val_jaccard") == "val_jaccard"  # ours: the hard IoU stays the hard IoU
    assert soft_twin("val_jaccard") == "val_jaccard_soft" and soft_twin("val_dice") is None


def test_a_keras_baseline_is_compared_on_our_soft_jaccard_not_the_hard_iou(tmp_path: Path) -> None:
    """Hard IoU 0.80, soft Jaccard 0.55 in this run; the Keras baseline's val_jacard_coef peaks at 0.50.
    Against the hard IoU that would read 1.6x; like with like it is 1.1x."""
    run = make_run(tmp_path / "runs")
    write_task(run, "unet", jaccard=[0.6, 0.8, 0.8], soft=[0.4, 0.55, 0.55])
    result = collect_run(run, against=str(keras_folder(tmp_path, {"unet": [0.3, 0.5, 0.5]})), plots=False)
    assert result["compared_metric"] == {"run": "val_jaccard_soft", "baseline": "val_jaccard_soft"}
    (row,) = result["comparison"]["rows"]
    assert (row["best"], row["baseline_best"]) == (0.55, 0.5)
    assert result["cv"]["best_value"] == 0.8  # the summary keeps the job's metric, the hard IoU
    md = (run.dir / "comparison.md").read_text()
    assert "Metric: `val_jaccard_soft`" in md
    assert "This run: val_jaccard_soft: soft Jaccard (Keras jacard_coef): (Σpt + 1) / (Σp + Σt − Σpt + 1)" in md
    assert "Baseline (Keras history, column `val_jacard_coef`): val_jaccard_soft: soft Jaccard" in md
    assert "like with like" in md and "Not like with like" not in md


def test_a_run_without_the_soft_column_is_compared_but_flagged_as_not_like_with_like(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs")
    write_task(run, "unet", text="epoch,train_loss,val_loss,val_jaccard,lr,epoch_seconds\n1,0.5,0.5,0.7,0.001,1\n")
    result = collect_run(run, against=str(keras_folder(tmp_path, {"unet": [0.3, 0.5]})), plots=False)
    assert result["compared_metric"] == {"run": "val_jaccard", "baseline": "val_jaccard_soft"}
    (row,) = result["comparison"]["rows"]
    assert (row["best"], row["baseline_best"]) == (0.7, 0.5)
    md = (run.dir / "comparison.md").read_text()
    assert "**Not like with like**" in md and "This run: val_jaccard: hard IoU" in md
    assert any("no val_jaccard_soft column" in w for w in result["warnings"])


def test_a_seed_summary_names_its_own_column_and_a_run_baseline_stays_hard(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs")
    write_task(run, "unet", jaccard=[0.6, 0.8], soft=[0.4, 0.6])
    old = tmp_path / "old"
    old.mkdir()
    (old / "training_summary.csv").write_text("model,best_epoch,best_val_jacard,final_val_jacard,train_time\n"
                                              "UNet,35,0.6234,0.6145,2.3h\n")
    result = collect_run(run, against=str(old), plots=False)
    assert result["compared_metric"]["baseline"] == "val_jaccard_soft"
    assert "Baseline (a training_summary.csv, column `best_val_jacard`): val_jaccard_soft: soft" in (run.dir / "comparison.md").read_text()

    later = make_run(tmp_path / "runs")
    write_task(later, "unet", jaccard=[0.7, 0.9], soft=[0.5, 0.65])
    result = collect_run(later, against=str(run.dir), plots=False)
    assert result["compared_metric"] == {"run": "val_jaccard", "baseline": "val_jaccard"}
    (row,) = result["comparison"]["rows"]
    assert (row["best"], row["baseline_best"]) == (0.9, 0.8)
    md = (later.dir / "comparison.md").read_text()
    assert "This run: val_jaccard: hard IoU" in md and "Baseline (an hpcseg run, column `val_jaccard`): val_jaccard: hard IoU" in md
