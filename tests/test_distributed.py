"""Data-parallel training on CPU (gloo), started the way a job script starts it: torchrun, 2 processes.

What is checked: a 2-process run at the same global batch follows the 1-process run within a stated
tolerance; a USR1 to ONE rank stops every rank at the same batch with one checkpoint (world size 2 in
it), and the resumed 2-process run continues to exactly the history of an uninterrupted one; a run of
another world size refuses that checkpoint in one line. The dataset is 16 images of 32 px, so each run
is a few seconds of training (most of the time is two interpreters importing torch).

Tolerance: on CPU, BatchNorm statistics are per process (PyTorch has no SyncBatchNorm for gloo; on CUDA
the trainer converts to SyncBatchNorm), so the 2-process run is not bit-equal to the 1-process run.
Over 3 epochs losses stay within 0.01 and the validation metrics on 4 images within 0.03.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcseg.errors import HpcsegError
from hpcseg.train.distributed import Dist, from_env, per_rank_batch, shard

REPO = Path(__file__).resolve().parents[1]
LOSSES = ["train_loss", "val_loss"]
METRICS = ["val_jaccard", "val_dice", "val_precision", "val_recall"]

JOB = """\
name: ddp_beads
workload:
  task: binary_segmentation
  dataset: {{root: {root}, layout: microbead, image_size: 32, channels: 1, expected_count: 16}}
  models:
    - {{name: unet, arch: unet, channels: [4, 8, 16], dropout: 0.0}}
  split: {{method: stratified, val_fraction: 0.25, density_bins: 2}}
  seed: 3
training:
  epochs: {epochs}
  batch_size: 4
  lr: 3.0e-3
  loss: ce
  augmentation: {{hflip: true, vflip: true, rotate_degrees: 15}}
resources: {{cpus: 2, memory: 1G, walltime: "00:10:00"}}
container: {{runtime: none}}
"""


# --------------------------------------------------------------------------------------------- pure rules


@given(st.integers(0, 200), st.integers(1, 16))
def test_shards_of_a_global_batch_cover_it_without_overlap(n, world):
    parts = [shard(n, r, world) for r in range(world)]
    covered = [i for start, stop in parts for i in range(start, stop)]
    assert covered == list(range(n))  # contiguous, in rank order, each item once
    sizes = [stop - start for start, stop in parts]
    assert max(sizes) - min(sizes) <= 1


def test_global_batch_must_divide_over_the_processes():
    assert per_rank_batch(8, 4) == 2 and per_rank_batch(5, 1) == 5
    with pytest.raises(HpcsegError, match="training.batch_size 6 does not divide over 4 processes"):
        per_rank_batch(6, 4)


def test_rank_comes_from_torchrun_variables():
    assert from_env({}) == Dist()
    d = from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (d.rank, d.world, d.local_rank, d.local_world, d.launched, d.is_main) == (3, 4, 1, 2, True, False)
    with pytest.raises(HpcsegError, match="LOCAL_RANK=''"):
        from_env({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(HpcsegError, match="RANK=2 WORLD_SIZE=2"):
        from_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


# --------------------------------------------------------------------------------------------- torchrun


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    pytest.importorskip("torch")
    from tests.datasets import write_microbead

    base = tmp_path_factory.mktemp("ddp")
    root = write_microbead(base / "beads", n=16, size=48)
    jobs = {}
    for epochs in (3, 6):
        jobs[epochs] = base / f"job{epochs}.yaml"
        jobs[epochs].write_text(JOB.format(root=root, epochs=epochs))
    return {"base": base, "jobs": jobs}


def torchrun(job: Path, out: Path, nproc: int = 2, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("HPCSEG_DEADLINE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "hpcseg", "train", str(job), "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **popen)
    _STARTED.append(proc)
    return proc


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_leftover_launchers():
    """A failed assertion must not leave a launcher and its ranks running (each is its own session)."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def plain(job: Path, out: Path) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "HPCSEG_DEADLINE"):
        env.pop(k, None)
    return subprocess.run([sys.executable, "-m", "hpcseg", "train", str(job), "--out", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300).returncode


def history(task_dir: Path) -> list[dict[str, float]]:
    with open(task_dir / "history.csv", newline="") as fh:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def result(task_dir: Path) -> dict:
    return json.loads((task_dir / "result.json").read_text())


def test_two_processes_follow_one_process_at_the_same_global_batch(world):
    one, two = world["base"] / "one", world["base"] / "two"
    proc = torchrun(world["jobs"][3], two)
    assert plain(world["jobs"][3], one) == 0
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output
    assert "data parallel: 2 process(es) (2 on this node), gloo; global batch 4 = 2 per process" in output
    assert output.count("epoch 3/3 ") == 1  # rank 1 logs nothing of its own
    h1, h2 = history(one), history(two)
    assert [r["epoch"] for r in h2] == [1.0, 2.0, 3.0]
    for r1, r2 in zip(h1, h2, strict=True):
        for c in LOSSES:
            assert r2[c] == pytest.approx(r1[c], abs=0.01), (r1["epoch"], c)
        for c in METRICS:
            assert r2[c] == pytest.approx(r1[c], abs=0.03), (r1["epoch"], c)
    res = result(two)
    assert res["reason"] == "completed" and res["n_train"] == 12 and res["epochs_run"] == 3
    assert sorted(p.name for p in two.iterdir() if p.suffix == ".pt") == [
        "checkpoint_best.pt", "checkpoint_last.pt", "checkpoint_prev.pt"]


def _worker_pid(launcher: subprocess.Popen, rank: int, timeout: float = 120) -> int:
    end = time.time() + timeout
    while time.time() < end:
        for task in Path(f"/proc/{launcher.pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                try:
                    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if f"RANK={rank}".encode() in env:
                    return int(pid)
        time.sleep(0.05)
    raise AssertionError(f"no rank {rank} under the launcher")


def test_usr1_to_one_rank_stops_every_rank_and_the_resumed_run_is_exact(world):
    ref, out = world["base"] / "ref6", world["base"] / "usr1"
    reference = torchrun(world["jobs"][6], ref)
    proc = torchrun(world["jobs"][6], out)
    rank1 = _worker_pid(proc, 1)
    end = time.time() + 240
    while not ((out / "history.csv").exists() and (out / "history.csv").read_text().count("\n") >= 2):
        assert proc.poll() is None and time.time() < end, "no epoch finished"
        time.sleep(0.01)
    os.kill(rank1, signal.SIGUSR1)  # only rank 1 hears it; the stop flag is agreed by all-reduce
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 1, output  # torchrun reports any failed process as 1; the code is in result.json
    res = result(out)
    assert res["exit_code"] == 75 and res["reason"] == "interrupted" and "SIGUSR1" in res["message"], res
    import torch

    state = torch.load(out / "checkpoint_last.pt", weights_only=True)
    assert state["world_size"] == 2 and state["epoch"] < 6
    log = (out / "train.log").read_text()
    assert "checkpoint written, requeue to go on" in log

    # another world size: one line, nothing touched
    before = (out / "history.csv").read_text()
    assert plain(world["jobs"][6], out) == 2
    assert "written by 2 training process(es), this run has 1" in (out / "train.log").read_text().splitlines()[-2]
    assert (out / "history.csv").read_text() == before

    resumed = torchrun(world["jobs"][6], out)
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    assert reference.wait(timeout=300) == 0
    h_ref, h_out = history(ref), history(out)
    assert [r["epoch"] for r in h_out] == [float(e) for e in range(1, 7)]
    for a, b in zip(h_ref, h_out, strict=True):
        for c in LOSSES + METRICS:
            assert b[c] == pytest.approx(a[c], abs=1e-6), (a["epoch"], c)
    assert result(out)["attempts"] == 2


@pytest.mark.slow
def test_gpu_check_runs_its_cpu_path_and_prints_one_table(tmp_path):
    """benchmarks/gpu_check.sh --cpu-smoke: every check's code on CPU (ddp with 2 gloo processes)."""
    pytest.importorskip("torch")
    env = {**os.environ, "PYTHON": sys.executable, "HPCSEG_CPUS": "1"}
    proc = subprocess.run([str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu-smoke", "--workdir", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = proc.stdout[proc.stdout.index("hpcseg gpu_check: CPU smoke"):].splitlines()
    checks = {line.split()[0] for line in table[2:]}
    assert checks == {"mamba", "loop", "epoch", "ddp"}, table
    assert not any(" ERROR " in line for line in table)
    assert any(line.startswith("ddp    scaling ratio") and line.split()[3].endswith("x") for line in table), table
    assert any("100 epochs x 3 models" in line for line in table)
