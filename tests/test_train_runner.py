"""``hpcseg train`` end to end on a tiny dataset: exact resume, signals, kills, corrupt checkpoints,
divergence, early stopping, exit codes and batch mode from a run manifest.

The dataset is 16 images of 48 px resized to 32, channels [4, 8, 16], 3 training batches an epoch, so an
epoch takes a fraction of a second on one core. Subprocess tests (real signals) are marked slow.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

from hpcseg.cli import main  # noqa: E402
from tests.datasets import write_microbead  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METRIC_COLUMNS = ["epoch", "train_loss", "val_loss", "val_jaccard", "val_dice", "val_precision", "val_recall",
                  "train_jaccard_soft", "val_jaccard_soft", "lr"]

JOB = """\
name: tiny_beads
workload:
  task: binary_segmentation
  dataset: {{root: {root}, layout: microbead, image_size: 32, channels: 1, expected_count: 16}}
  models:
    - {{name: unet, arch: unet, channels: [4, 8, 16], dropout: 0.2}}
    - {{name: att, arch: attention_unet, channels: [4, 8, 16], dropout: 0.2}}
    - {{name: attres, arch: attention_res_unet, channels: [4, 8, 16], dropout: 0.2}}
  split: {{method: stratified, val_fraction: 0.25, density_bins: 2}}
  seed: 3
training:
  epochs: {epochs}
  batch_size: 4
  lr: 3.0e-3
  loss: {{dice: 1.0, focal: 1.0}}
  augmentation: {{hflip: true, vflip: true, rotate_degrees: 15}}
resources: {{cpus: 2, memory: 1G, walltime: "00:10:00"}}
container: {{runtime: none}}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The dataset, a 3-epoch and a 5-epoch job file, and the uninterrupted reference runs."""
    base = tmp_path_factory.mktemp("train")
    root = write_microbead(base / "beads", n=16, size=48)
    jobs = {}
    for epochs in (3, 5):
        jobs[epochs] = base / f"job{epochs}.yaml"
        jobs[epochs].write_text(JOB.format(root=root, epochs=epochs))
    refs = {}
    for epochs in (3, 5):
        refs[epochs] = base / f"ref{epochs}"
        assert main(["train", str(jobs[epochs]), "--out", str(refs[epochs])]) == 0
    return {"base": base, "root": root, "jobs": jobs, "refs": refs}


def history(task_dir: Path) -> list[dict[str, str]]:
    with open(task_dir / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def assert_same_history(a: Path, b: Path) -> None:
    ha, hb = history(a), history(b)
    assert [r["epoch"] for r in ha] == [r["epoch"] for r in hb]
    for ra, rb in zip(ha, hb, strict=True):
        for c in METRIC_COLUMNS:
            assert float(ra[c]) == pytest.approx(float(rb[c]), abs=1e-6), (ra["epoch"], c)


def result(task_dir: Path) -> dict:
    return json.loads((task_dir / "result.json").read_text())


def test_reference_run_writes_the_task_folder(world):
    ref = world["refs"][3]
    assert list(history(ref)[0]) == [*METRIC_COLUMNS, "epoch_seconds"]
    assert [r["epoch"] for r in history(ref)] == ["1", "2", "3"]
    for name in ("checkpoint_last.pt", "checkpoint_prev.pt", "checkpoint_best.pt", "splits.json", "train.log"):
        assert (ref / name).is_file(), name
    res = result(ref)
    assert res["reason"] == "completed" and res["exit_code"] == 0 and res["epochs_run"] == 3
    assert res["metric"] == "val_jaccard" and res["best_epoch"] in (1, 2, 3)
    best = max(float(r["val_jaccard"]) for r in history(ref))
    assert res["best_value"] == pytest.approx(best)
    assert res["n_train"] == 12 and res["n_val"] == 4 and res["params"] > 0
    log = (ref / "train.log").read_text()
    assert "thread(s)" in log and "12 train, 4 val" in log and "parameters" in log
    assert log.count("epoch 3/3 ") == 1


# --------------------------------------------------------------------------------------------- in-process resume

_INTERRUPT_AT: set[tuple[int, int]] = set()


def interrupting_build(spec, device):
    """The microbead source, sending this process SIGUSR1 just before chosen (epoch, batch) positions."""
    from hpcseg.workloads.microbead.train import build

    src = build(spec, device)
    batches = src.weighted_batches  # what the trainer reads (plain batches are it without the pixel weights)

    def wrapped(indices, batch_size, *, train, epoch, seed, start_batch=0):
        for b, item in enumerate(batches(indices, batch_size, train=train, epoch=epoch, seed=seed,
                                         start_batch=start_batch), start=start_batch):
            if train and (epoch, b) in _INTERRUPT_AT:
                _INTERRUPT_AT.discard((epoch, b))
                os.kill(os.getpid(), signal.SIGUSR1)
            yield item

    src.weighted_batches = wrapped
    return src


def test_interrupted_at_several_points_resumes_to_the_same_history(world, tmp_path, monkeypatch):
    from hpcseg.train import source

    monkeypatch.setitem(source.SOURCES, "microbead", f"{__name__}:interrupting_build")
    # mid-epoch (after batch 1 of 3), at the end of epoch 2's training part (an epoch boundary), mid epoch 3
    _INTERRUPT_AT.update({(1, 0), (2, 2), (3, 1)})
    out = tmp_path / "task"
    codes = []
    for _ in range(6):
        codes.append(main(["train", str(world["jobs"][3]), "--out", str(out)]))
        if codes[-1] != 75:
            break
    assert codes == [75, 75, 75, 0]
    assert_same_history(out, world["refs"][3])
    log = (out / "train.log").read_text()
    assert "after batch 1/3 of epoch 1" in log and "after epoch 2" in log and "after batch 2/3 of epoch 3" in log
    assert "resuming after epoch 0, batch 1 of epoch 1" in log and "resuming after epoch 2, batch 2" in log
    res = result(out)
    assert res["reason"] == "completed" and res["attempts"] == 4 and res["epochs_run"] == 3


def test_deadline_checkpoints_after_one_batch_and_resumes(world, tmp_path):
    import torch

    out = tmp_path / "task"
    assert main(["train", str(world["jobs"][3]), "--out", str(out), "--deadline", "0"]) == 75
    state = torch.load(out / "checkpoint_last.pt", weights_only=True)
    assert (state["epoch"], state["batch"]) == (0, 1) and state["running"]["seen"] == 4
    assert result(out)["reason"] == "interrupted"
    assert history(out) == []
    assert main(["train", str(world["jobs"][3]), "--out", str(out)]) == 0
    assert_same_history(out, world["refs"][3])


def test_longer_run_resumed_from_a_finished_shorter_one_matches(world, tmp_path):
    """Run 1 epoch (as a 1-epoch job), then resume the same folder as the 3-epoch job."""
    out = tmp_path / "task"
    assert main(["train", str(world["jobs"][3]), "--out", str(out), "--set", "training.epochs=1"]) == 0
    assert len(history(out)) == 1
    assert main(["train", str(world["jobs"][3]), "--out", str(out)]) == 0
    assert_same_history(out, world["refs"][3])


def test_corrupt_last_checkpoint_falls_back_to_previous(world, tmp_path):
    out = tmp_path / "task"
    shutil.copytree(world["refs"][3], out)
    last = out / "checkpoint_last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    assert main(["train", str(world["jobs"][3]), "--out", str(out)]) == 0
    log = (out / "train.log").read_text()
    assert "checkpoint_last.pt is unreadable" in log and "resuming from checkpoint_prev.pt (epoch 2)" in log
    assert_same_history(out, world["refs"][3])  # epoch 3 retrained, recorded once


def test_kill_between_checkpoint_and_history_row_is_healed(world, tmp_path):
    out = tmp_path / "task"
    shutil.copytree(world["refs"][3], out)
    lines = (out / "history.csv").read_text().splitlines(keepends=True)
    (out / "history.csv").write_text("".join(lines[:-1]) + lines[-1][:7])  # row 3 cut mid-line
    assert main(["train", str(world["jobs"][3]), "--out", str(out)]) == 0
    assert "nothing to do" in (out / "train.log").read_text()
    assert_same_history(out, world["refs"][3])


# --------------------------------------------------------------------------------------------- outcomes


def test_divergence_stops_with_exit_4(world, tmp_path):
    out = tmp_path / "task"
    code = main(["train", str(world["jobs"][3]), "--out", str(out), "--set", "training.lr=10",
                 "--set", "training.optimizer=sgd", "--set", "training.loss=ce",
                 "--set", "workload.models.unet.arch=residual_unet"])  # the classic U-Net survives lr 10
    assert code == 4
    res = result(out)
    assert res["reason"] == "diverged" and "nan" in res["message"].lower()
    tail = (out / "train.log").read_text().strip().splitlines()[-2:]
    assert "diverged" in tail[0] and tail[1].endswith("exit 4 (diverged)")


def test_early_stopping_stops_after_patience(world, tmp_path):
    out = tmp_path / "task"
    code = main(["train", str(world["jobs"][5]), "--out", str(out), "--set", "training.early_stopping.patience=1",
                 "--set", "training.early_stopping.min_delta=1.0"])  # nothing can improve by 1.0: flat metric
    assert code == 0
    assert [r["epoch"] for r in history(out)] == ["1", "2"]
    res = result(out)
    assert res["reason"] == "early_stopped" and res["best_epoch"] == 1 and res["epochs_run"] == 2
    assert main(["train", str(world["jobs"][5]), "--out", str(out)]) == 0  # a rerun does not train on
    assert len(history(out)) == 2


def test_bad_data_exits_2_with_the_reason_last(world, tmp_path):
    root = write_microbead(tmp_path / "beads", n=16, size=48)
    (root / "masks" / "bead_004.png").unlink()
    job = tmp_path / "job.yaml"
    job.write_text(JOB.format(root=root, epochs=1))
    out = tmp_path / "task"
    assert main(["train", str(job), "--out", str(out)]) == 2
    lines = (out / "train.log").read_text().strip().splitlines()
    assert "unpaired" in lines[-2] and "failed" in lines[-2] and lines[-1].endswith("exit 2 (failed)")
    assert result(out)["reason"] == "failed"


def test_unknown_collection_metric_is_bad_input(world, tmp_path):
    out = tmp_path / "task"
    assert main(["train", str(world["jobs"][3]), "--out", str(out), "--set", "collection.metric=val_miou"]) == 2


def test_batch_mode_from_a_run_manifest(world, tmp_path):
    from hpcseg.runs import create_run
    from hpcseg.spec import load_job, with_absolute_paths

    loaded = load_job(world["jobs"][3], overrides=["training.epochs=1"])
    loaded.spec = with_absolute_paths(loaded.spec)
    run = create_run(loaded, "local", root=tmp_path / "runs")
    assert main(["train", "--run", str(run.dir), "--task", "2"]) == 0
    task_dir = run.dir / "tasks" / "attres" / "fold_0"
    assert len(history(task_dir)) == 1
    assert (run.dir / "splits.json").is_file() and not (task_dir / "splits.json").exists()
    res = result(task_dir)
    assert res["task_index"] == 2 and res["run_id"] == run.run_id and res["arch"] == "attention_res_unet"
    assert main(["train", "--run", str(run.dir), "--task", "3"]) == 2
    os.environ["SLURM_ARRAY_TASK_ID"] = "1"
    try:
        assert main(["train", "--run", str(run.dir)]) == 0
    finally:
        del os.environ["SLURM_ARRAY_TASK_ID"]
    assert len(history(run.dir / "tasks" / "att" / "fold_0")) == 1


# --------------------------------------------------------------------------------------------- real signals


def _start(job: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "hpcseg", "train", str(job), "--out", str(out)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_rows(proc: subprocess.Popen, out: Path, rows: int, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        path = out / "history.csv"
        if path.exists() and path.read_text().count("\n") >= rows + 1:
            return
        if proc.poll() is not None:
            pytest.fail(f"trainer ended early ({proc.returncode}):\n{proc.stdout.read()}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail("no history row appeared")


@pytest.mark.slow
def test_sigusr1_in_a_subprocess_checkpoints_exits_75_and_resumes_exactly(world, tmp_path):
    import torch

    out = tmp_path / "task"
    proc = _start(world["jobs"][5], out)
    _wait_for_rows(proc, out, 1)
    proc.send_signal(signal.SIGUSR1)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 75, output
    assert "received SIGUSR1" in output
    state = torch.load(out / "checkpoint_last.pt", weights_only=True)
    assert 1 <= state["epoch"] < 5
    rerun = _start(world["jobs"][5], out)
    output = rerun.communicate(timeout=180)[0]
    assert rerun.returncode == 0, output
    assert_same_history(out, world["refs"][5])


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_records_every_epoch_once(world, tmp_path):
    out = tmp_path / "task"
    proc = _start(world["jobs"][5], out)
    _wait_for_rows(proc, out, 1)
    time.sleep(0.15)  # somewhere inside epoch 2 (or later): no handler runs on SIGKILL
    proc.kill()
    proc.communicate(timeout=60)
    rerun = _start(world["jobs"][5], out)
    output = rerun.communicate(timeout=180)[0]
    assert rerun.returncode == 0, output
    assert [r["epoch"] for r in history(out)] == ["1", "2", "3", "4", "5"]
    assert_same_history(out, world["refs"][5])


# --------------------------------------------------------------------------------------------- hooks


from hpcseg.train.loop import Trainer  # noqa: E402


class EvaluatingTrainer(Trainer):
    """A workload's Trainer that adds its own evaluation with the best weights, without touching the loop."""

    def evaluate(self):
        extra = super().evaluate()
        _, metrics = self.validate()  # finish() loaded the best weights
        return {**extra, "best_weights_jaccard": metrics["jaccard"], "epochs_seen": len(self.rows)}


def test_a_workload_adds_its_evaluation_by_overriding_a_hook(world, tmp_path, monkeypatch):
    from hpcseg.train import loop

    monkeypatch.setitem(loop.TRAINERS, "microbead", f"{__name__}:EvaluatingTrainer")
    out = tmp_path / "task"
    assert main(["train", str(world["jobs"][3]), "--out", str(out)]) == 0
    res = result(out)
    assert res["extra"]["epochs_seen"] == 3
    assert res["extra"]["best_weights_jaccard"] == pytest.approx(res["best_value"], abs=1e-6)
    assert_same_history(out, world["refs"][3])
