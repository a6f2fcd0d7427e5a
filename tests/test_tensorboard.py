"""TensorBoard event files per task: scalars for every history column, validation examples, optional
package, rank 0 only. Event files are read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch

from hpcseg.train import tensorboard as tbmod
from hpcseg.train.tensorboard import TensorBoardLog, colour, panels, scalar_tag

JOBS = Path(__file__).resolve().parent.parent / "jobs"


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_panels_put_input_truth_and_prediction_side_by_side():
    x = torch.randn(6, 16, 8, 10)
    y = torch.randint(-1, 5, (6, 8, 10))
    logits = torch.randn(6, 5, 8, 10)
    out = panels(x, y, logits, "multiclass_segmentation")
    assert out.shape == (4, 3, 8, 30)                     # at most MAX_IMAGES, three panels wide
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    truth = out[:, :, :, 10:20]
    assert torch.equal(truth, colour(y[:4], 5))
    assert (truth.permute(0, 2, 3, 1)[y[:4] < 0] == 0).all()  # unlabelled pixels are black
    assert torch.equal(out[:, :, :, 20:], colour(logits[:4].argmax(1), 5))
    binary = panels(torch.randn(2, 1, 4, 4), torch.randint(0, 2, (2, 1, 4, 4)).float(), torch.randn(2, 1, 4, 4),
                    "binary_segmentation")
    assert binary.shape == (2, 3, 4, 12)
    distinct = colour(torch.arange(8).view(1, 1, 8), 8)[0, :, 0].T
    assert len({tuple(c.tolist()) for c in distinct}) == 8   # every class its own colour


def test_scalar_tags_group_the_history_columns():
    assert [scalar_tag(c) for c in ("train_loss", "val_loss", "val_miou", "lr", "epoch_seconds")] == [
        "loss/train_loss", "loss/val_loss", "val/val_miou", "schedule/lr", "time/epoch_seconds"]


def test_event_files_hold_scalars_and_images_and_a_resume_purges(tmp_path):
    pytest.importorskip("tensorboard")
    tb = TensorBoardLog(tmp_path)
    for epoch in (1, 2, 3):
        tb.epoch(epoch, {"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 2.0, "val_miou": 0.1 * epoch,
                         "lr": 1e-3, "epoch_seconds": 1.5})
        tb.examples(epoch, torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8)), torch.randn(2, 3, 8, 8),
                    "multiclass_segmentation")
        tb.flush()
    tb.close()
    resumed = TensorBoardLog(tmp_path)             # killed after epoch 3's events, resumed from epoch 2's checkpoint
    resumed.epoch(3, {"epoch": 3, "train_loss": 9.0, "val_loss": 2.0, "val_miou": 0.9, "lr": 1e-3,
                      "epoch_seconds": 1.0})
    resumed.close()
    acc = _events(tmp_path / "tensorboard")
    assert set(acc.Tags()["scalars"]) == {"loss/train_loss", "loss/val_loss", "val/val_miou", "schedule/lr",
                                          "time/epoch_seconds"}
    miou = acc.Scalars("val/val_miou")
    assert [e.step for e in miou] == [1, 2, 3] and miou[-1].value == pytest.approx(0.9)   # epoch 3 once, new value
    assert [e.step for e in acc.Images("val/examples")] == [1, 2]                          # purged from step 3 on


def test_disabled_writes_nothing(tmp_path):
    tb = TensorBoardLog(tmp_path, enabled=False)        # a data-parallel rank other than 0
    tb.epoch(1, {"epoch": 1, "train_loss": 1.0})
    tb.close()
    assert not (tmp_path / "tensorboard").exists()


def test_without_the_package_it_warns_once_and_goes_on(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)   # import now raises ImportError
    monkeypatch.setattr(tbmod, "_warned", False)
    caplog.set_level(logging.WARNING, logger="hpcseg.train")
    for task in ("a", "b"):
        tb = TensorBoardLog(tmp_path / task)
        tb.epoch(1, {"epoch": 1, "train_loss": 1.0})
        tb.epoch(2, {"epoch": 2, "train_loss": 0.5})
        assert not tb.enabled
        tb.close()
    warnings = [r for r in caplog.records if "TensorBoard" in r.getMessage()]
    assert len(warnings) == 1 and "hpcseg[tensorboard]" in warnings[0].getMessage()
    assert not any((tmp_path / t / "tensorboard").exists() for t in ("a", "b"))


@pytest.mark.slow
def test_ssmu_quick_training_writes_events_parameters_and_mamba_path(tmp_path):
    """One quick SSMU-Net run: event files with every history column per epoch and validation images;
    train.log and result.json name the parameter count and the Mamba path that ran."""
    pytest.importorskip("tensorboard")
    from hpcseg.cli import main
    from hpcseg.workloads.hyperspectral.synth import make_hyperspectral

    data = make_hyperspectral(tmp_path / "data", n_cores=3, size=40, bands=16, seed=0)["path"]
    out = tmp_path / "task"
    rc = main(["train", str(JOBS / "ssmu_net_overnight.yaml"), "--profile", "quick", "--out", str(out),
               "--set", f"workload.dataset.root={data}", "--set", "training.samples_per_epoch=4",
               "--set", "workload.dataset.image_size=16"])
    log_text = (out / "train.log").read_text()
    assert rc == 0, log_text
    result = json.loads((out / "result.json").read_text())
    assert result["parameters"] == result["params"] > 0
    assert f"{result['parameters']:,} parameters" in log_text
    mamba = result["model_details"]["mamba"]
    assert mamba.startswith("pure-PyTorch selective scan") and f"mamba: {mamba}" in log_text
    header = (out / "history.csv").read_text().splitlines()[0].split(",")
    acc = _events(out / "tensorboard")
    assert {scalar_tag(c) for c in header[1:]} == set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("schedule/lr")] == [1, 2]
    assert [e.value for e in acc.Scalars("schedule/lr")] == pytest.approx([3e-5, 3e-5])  # 2 epochs at 0.1x
    images = acc.Images("val/examples")
    assert [e.step for e in images] == [1, 2] and images[0].width % (3 * images[0].height) == 0   # panels tiled


def test_logs_tensorboard_prints_the_command_for_a_run_and_a_task(tmp_path):
    import shlex
    import subprocess

    try:
        from tests.test_status import PY, REPO, make_run, write_task
    except ImportError:  # pragma: no cover - depends on how pytest was started
        from test_status import PY, REPO, make_run, write_task

    run = make_run(tmp_path / "runs")
    (write_task(run, 1, epochs=1) / "tensorboard").mkdir()
    p = subprocess.run([PY, "-m", "hpcseg", "logs", str(run.dir), "--tensorboard"], capture_output=True, text=True,
                       cwd=REPO)
    assert p.returncode == 0, p.stderr
    cmd = shlex.split(p.stdout.strip())
    assert cmd[:2] == ["tensorboard", "--logdir"] and Path(cmd[2]) == run.dir / "tasks"
    assert all(Path(cmd[2]) in (run.task_dir(k) / "tensorboard").parents for k in range(6))
    p = subprocess.run([PY, "-m", "hpcseg", "logs", str(run.dir), "--task", "1", "--tensorboard"],
                       capture_output=True, text=True, cwd=REPO)
    assert shlex.split(p.stdout.strip()) == ["tensorboard", "--logdir", str(run.task_dir(1) / "tensorboard")]
    assert "no event files" not in p.stderr
    p = subprocess.run([PY, "-m", "hpcseg", "logs", str(run.dir), "--task", "0", "--tensorboard"],
                       capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 0 and "no event files yet" in p.stderr
    p = subprocess.run([PY, "-m", "hpcseg", "logs", str(run.dir), "--task", "9", "--tensorboard"],
                       capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 2 and "tasks 0-5" in p.stderr and p.stderr.count("\n") == 1
