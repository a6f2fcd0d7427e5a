"""Sweeps (issue 13): the ``sweep:`` section, its expansion, and grid / random / Optuna sweeps run as
array jobs on the real local Slurm (sbatch and submitit), including a worker killed mid-trial and
resubmitted. The schema and expansion tests need no cluster; the Slurm ones are marked ``slurm``."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcseg.errors import SpecError
from hpcseg.runs import Run, open_run
from hpcseg.spec import load_job

PY = sys.executable
REPO = Path(__file__).resolve().parent.parent

JOB = """\
name: {name}
workload:
  task: binary_segmentation
  dataset: {{root: {data}, layout: microbead, image_size: {size}, channels: 1, num_classes: 2}}
  models:
    - {{name: unet, arch: unet, channels: [4, 8], dropout: 0.1}}
  split: {{method: random, val_fraction: 0.25}}
training:
  epochs: {epochs}
  batch_size: 4
  lr: 0.01
resources:
  gpus: 0
  cpus: 1
  memory: 2G
  walltime: "00:10:00"
sweep:
{sweep}
"""

GRID = """\
  method: grid
  params:
    training.lr: {choice: [0.01, 0.001]}
    workload.models.unet.dropout: {choice: [0.0, 0.2]}
"""
RANDOM = """\
  method: random
  trials: 3
  seed: 7
  params:
    training.lr: {log_uniform: [1.0e-4, 1.0e-1]}
    training.batch_size: {choice: [2, 4]}
"""
OPTUNA = """\
  method: optuna
  trials: 6
  parallel: 2
  pruner: median
  params:
    training.lr: {log_uniform: [1.0e-4, 1.0e-1]}
    workload.models.unet.dropout: {uniform: [0.0, 0.5]}
"""


def write_job(tmp: Path, data: Path, sweep: str, name: str = "sw", epochs: int = 2, size: int = 32) -> Path:
    path = tmp / "job.yaml"
    path.write_text(JOB.format(name=name, data=data, sweep=sweep, epochs=epochs, size=size), encoding="utf-8")
    return path


def hpcseg(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "hpcseg", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=dict(os.environ))


# --------------------------------------------------------------------------------------------- schema


def test_grid_expands_configs_x_models_x_folds(tmp_path):
    spec = load_job(write_job(tmp_path, tmp_path, GRID)).spec
    tasks = spec.tasks()
    assert [t.relpath for t in tasks] == [f"tasks/c00{i}/unet/fold_0" for i in range(4)]
    from hpcseg.sweep.expand import configs

    assert configs(spec)["c002"] == {"training.lr": 0.001, "workload.models.unet.dropout": 0.0}


def test_random_is_deterministic_given_the_seed_and_inside_the_ranges(tmp_path):
    from hpcseg.sweep.expand import configs

    a = configs(load_job(write_job(tmp_path, tmp_path, RANDOM)).spec)
    b = configs(load_job(write_job(tmp_path, tmp_path, RANDOM)).spec)
    c = configs(load_job(write_job(tmp_path, tmp_path, RANDOM.replace("seed: 7", "seed: 8"))).spec)
    assert a == b and a != c and len(a) == 3
    for v in a.values():
        assert 1e-4 <= v["training.lr"] <= 1e-1 and v["training.batch_size"] in (2, 4)


@settings(max_examples=40, deadline=None)
@given(lo=st.floats(1e-6, 1.0), span=st.floats(1.01, 9.0), ints=st.tuples(st.integers(1, 50), st.integers(0, 50)),
       trials=st.integers(1, 20), seed=st.integers(0, 2**32 - 1), log=st.booleans())
def test_random_configs_stay_in_range_validate_and_repeat(lo, span, ints, trials, seed, log):
    """Whatever the ranges and seed: every sampled config lies in its ranges, passes the schema as the task
    will apply it, and the same spec gives the same configs."""
    from hpcseg.spec import JobSpec
    from hpcseg.sweep.expand import configs
    from hpcseg.sweep.spec import apply_overrides

    hi = min(lo * span, 10.0)
    e_lo, e_hi = ints[0], ints[0] + ints[1] + 1
    doc = yaml.safe_load(JOB.format(name="h", data="/nonexistent", sweep="  method: random", epochs=2, size=32))
    doc["sweep"] = {"method": "random", "trials": trials, "seed": seed,
                    "params": {"training.lr": {"log_uniform" if log else "uniform": [lo, hi]},
                               "training.epochs": {"int": [e_lo, e_hi]}}}
    spec = JobSpec.model_validate(doc)
    got = configs(spec)
    assert got == configs(JobSpec.model_validate(doc)) and len(got) == trials
    for over in got.values():
        assert lo <= over["training.lr"] <= hi
        assert e_lo <= over["training.epochs"] <= e_hi
        t = apply_overrides(spec.model_dump(mode="json"), over)
        assert t.sweep is None and t.training.epochs == over["training.epochs"]


@pytest.mark.parametrize("sweep, phrase", [
    (GRID.replace("[0.01, 0.001]", "[0.01, 20.0]"),
     "sweep.params.training.lr: 20.0 is refused by the schema: training.lr: Input should be less than or equal to 10"),
    (RANDOM.replace("[1.0e-4, 1.0e-1]", "[1.0e-4, 50.0]"), "sweep.params.training.lr: 50.0 is refused"),
    (GRID.replace("{choice: [0.0, 0.2]}", "{uniform: [0.0, 0.2]}"), "grid needs choice or int"),
    (RANDOM.replace("training.batch_size: {choice: [2, 4]}", "training.batch_size: {uniform: [2, 8]}"),
     "the field takes whole numbers"),
    (RANDOM.replace("training.lr:", "training.learning_rate:"), "training.learning_rate: unknown key"),
    (RANDOM.replace("  trials: 3\n", ""), "method random needs trials"),
    (RANDOM.replace("{log_uniform: [1.0e-4, 1.0e-1]}", "{log_uniform: [0.0, 1.0e-1]}"), "lo must be above 0"),
    (RANDOM.replace("{log_uniform: [1.0e-4, 1.0e-1]}", "{normal: [0, 1]}"), "normal"),
    (RANDOM.replace("training.lr:", "collection.metric:"), "a sweep cannot change collection"),
])
def test_bad_sweep_is_one_clear_error_naming_the_line(tmp_path, sweep, phrase):
    with pytest.raises(SpecError) as err:
        load_job(write_job(tmp_path, tmp_path, sweep))
    text = "\n".join(err.value.lines())
    assert phrase in text and "job.yaml" in text, text


def test_task_applies_its_config_and_best_yaml_is_a_set_file(tmp_path, microbeads):
    """Local scheduler, grid of 4: every task trains its own config; collect writes the leaderboard,
    best.yaml and the plots; best.yaml through --set-file gives a plain job with the best values."""
    job = write_job(tmp_path, microbeads, GRID)
    p = hpcseg("submit", str(job), "--scheduler", "local", "--max-parallel", "2", "--runs-dir",
               str(tmp_path / "runs"))
    assert p.returncode == 0, p.stderr
    run = _run_of(p)
    _wait_files(run, timeout=240)
    for t in run.manifest["tasks"]:
        over = json.loads((run.dir / t["dir"] / "overrides.json").read_text())
        assert over["overrides"] == run.manifest["sweep"]["configs"][t["config"]]
        assert f"lr={over['overrides']['training.lr']:.4f}" in (run.dir / t["dir"] / "train.log").read_text() \
            or (run.dir / t["dir"] / "history.csv").exists()
    p = hpcseg("collect", str(run.dir), "--runs-dir", str(tmp_path / "runs"))
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader((run.dir / "sweep/leaderboard.csv").open()))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    means = [float(r["mean_val_jaccard"]) for r in rows]
    assert means == sorted(means, reverse=True)
    assert (run.dir / "sweep/objective_vs_trial.png").stat().st_size > 1000
    assert (run.dir / "sweep/params_vs_objective.png").stat().st_size > 1000
    best = yaml.safe_load((run.dir / "sweep/best.yaml").read_text())
    assert best["training.lr"] == float(rows[0]["training.lr"]) and best["sweep"] is None
    loaded = load_job(job, overrides=[f"{k}={json.dumps(v)}" for k, v in best.items()])
    assert loaded.spec.sweep is None and loaded.spec.training.lr == best["training.lr"]
    p = hpcseg("check", str(job), "--set-file", str(run.dir / "sweep/best.yaml"))
    assert p.returncode == 0, p.stderr


def _run_of(p: subprocess.CompletedProcess) -> Run:
    folder = [ln.split(":", 1)[1].strip() for ln in p.stdout.splitlines() if "run folder:" in ln]
    return open_run(folder[0])


def _wait_files(run: Run, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all((run.dir / t["dir"] / "exit_code").exists() for t in run.manifest["tasks"]):
        assert time.monotonic() < deadline, "tasks did not end"
        time.sleep(0.5)


# --------------------------------------------------------------------------------------------- Slurm


def _status(run: Run) -> dict:
    p = hpcseg("status", str(run.dir), "--json", timeout=60)
    return json.loads(p.stdout)["runs"][0] if p.stdout.strip() else {}


def _wait_ended(run: Run, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        data = _status(run)
        if data and all(t["ended"] for t in data["tasks"]):
            return data
        assert time.monotonic() < deadline, f"not ended: {data}"
        time.sleep(1)  # each look is a Python start and a sacct call: no shorter, or it slows the training


@pytest.mark.slurm
def test_slurm_grid_of_four_configs_one_fold(tmp_path, microbeads, cleanup):
    p = hpcseg("submit", str(write_job(tmp_path, microbeads, GRID, name="swgrid")), "--scheduler", "slurm",
               "--runs-dir", str(tmp_path / "runs"))
    assert p.returncode == 0, p.stderr
    run = _run_of(p)
    cleanup += run.manifest["native_ids"]
    assert "#SBATCH --array=0-3" in (run.dir / "job.slurm").read_text()
    data = _wait_ended(run)
    assert [t["state"] for t in data["tasks"]] == ["completed"] * 4, data
    assert "4/4 trial(s) done: 4 completed" in data["sweep"] and "best c00" in data["sweep"]
    p = hpcseg("collect", str(run.dir), "--runs-dir", str(tmp_path / "runs"))
    assert p.returncode == 0, p.stderr
    assert len(list(csv.DictReader((run.dir / "sweep/leaderboard.csv").open()))) == 4


@pytest.mark.slurm
def test_pbs_grid_through_the_torque_wrapper(tmp_path, microbeads, cleanup):
    """PBS (Slurm's qsub wrapper): the same grid as one -J array, every task its own config."""
    p = hpcseg("submit", str(write_job(tmp_path, microbeads, GRID, name="swpbs")), "--scheduler", "pbs",
               "--runs-dir", str(tmp_path / "runs"))
    assert p.returncode == 0, p.stderr
    run = _run_of(p)
    cleanup += run.manifest["native_ids"]
    assert "#PBS -J 0-3" in (run.dir / "job.pbs").read_text()
    data = _wait_ended(run)
    assert [t["state"] for t in data["tasks"]] == ["completed"] * 4, data
    assert "4/4 trial(s) done" in data["sweep"]


@pytest.mark.slurm
def test_slurm_random_sweep_through_submitit(tmp_path, microbeads, cleanup):
    p = hpcseg("submit", str(write_job(tmp_path, microbeads, RANDOM, name="swrand")), "--scheduler", "slurm",
               "--via", "submitit", "--runs-dir", str(tmp_path / "runs"))
    assert p.returncode == 0, p.stderr
    run = _run_of(p)
    cleanup += run.manifest["native_ids"]
    data = _wait_ended(run)
    assert [t["state"] for t in data["tasks"]] == ["completed"] * 3, data
    for t in run.manifest["tasks"]:  # each task trained its sampled batch size
        bs = run.manifest["sweep"]["configs"][t["config"]]["training.batch_size"]
        result = json.loads((run.dir / t["dir"] / "result.json").read_text())
        assert result["reason"] == "completed" and bs in (2, 4)


@pytest.mark.slurm
def test_slurm_optuna_worker_killed_mid_trial_and_resubmitted(tmp_path, microbeads, cleanup):
    """2 workers × 6 trials with the median pruner; worker 1 is scancelled while its trial trains and is
    sent again with ``hpcseg resubmit``: it resumes that trial, and the study ends with exactly 6 trials
    completed or pruned, none lost, none counted twice."""
    import optuna

    job = write_job(tmp_path, microbeads, OPTUNA, name="swopt", epochs=4, size=64)
    p = hpcseg("submit", str(job), "--scheduler", "slurm", "--runs-dir", str(tmp_path / "runs"))
    assert p.returncode == 0, p.stderr
    run = _run_of(p)
    cleanup += run.manifest["native_ids"]
    current = run.dir / "workers/worker_1/current_trial.json"
    deadline = time.monotonic() + 240
    killed_trial = None
    while killed_trial is None:
        assert time.monotonic() < deadline, "worker 1 never trained a trial"
        try:
            n = json.loads(current.read_text())["number"]
        except (OSError, ValueError, KeyError):
            time.sleep(0.2)
            continue
        hist = run.dir / f"trials/t{n:04d}/unet/fold_0/history.csv"
        if hist.exists() and 2 <= hist.read_text().count("\n") <= 3:  # 1-2 of 4 epochs done
            subprocess.run(["scancel", run.manifest["task_ids"]["1"]], check=True, timeout=30)
            killed_trial = n
        time.sleep(0.1)
    rec = json.loads((run.dir / f"trials/t{killed_trial:04d}/trial.json").read_text())
    assert rec["state"] == "running"
    data = _wait_ended(run)
    assert data["tasks"][1]["state"] != "completed", data["tasks"]
    p = hpcseg("resubmit", str(run.dir), "--tasks", "1", "--runs-dir", str(tmp_path / "runs"))
    assert p.returncode == 0, p.stderr
    run = open_run(run.dir)
    cleanup += run.manifest["native_ids"]
    data = _wait_ended(run)
    assert [t["state"] for t in data["tasks"]] == ["completed"] * 2, data["tasks"]

    from hpcseg.sweep.worker import study_for

    study = study_for(run.dir, run.spec)
    states = [t.state for t in study.get_trials()]
    finished = [s for s in states if s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 6 and optuna.trial.TrialState.RUNNING not in states, states
    assert study.trials[killed_trial].state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    log = (run.dir / f"trials/t{killed_trial:04d}/unet/fold_0/train.log").read_text()
    assert "resuming after epoch" in log  # the killed trial went on from its checkpoint, not from scratch
    assert "6/6 trial(s) done" in data["sweep"] and "0 running" in data["sweep"]
    p = hpcseg("collect", str(run.dir), "--runs-dir", str(tmp_path / "runs"))
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader((run.dir / "sweep/leaderboard.csv").open()))
    assert len(rows) == 6 and {r["status"] for r in rows} <= {"completed", "pruned"}
