"""Slurm (sbatch and submitit) and PBS (Slurm's Torque wrapper) backends on the real local cluster.

Every test here submits real jobs that run the real trainer (microbead_optimized, quick profile, 32 px,
channels [4, 8], 2 epochs, 12 images) and reads the outcome back through ``hpcseg status`` in a fresh
process, as a user in another shell would. The tasks ask for 1 CPU, 2 GB and no GPU so the suite packs
onto the three nodes beside other tests; the full quick-profile request is checked with --test-only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcseg.runs import Run, open_run
from tests.test_schedulers_local import REPO, tiny_sets

PY = sys.executable
SMALL = ("resources.cpus=1", "resources.memory=2G", "resources.gpus=0")
pytestmark = pytest.mark.slurm


def hpcseg(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "hpcseg", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env={**os.environ, **(env or {})})


def submit(tmp_path: Path, data: Path, *args: str, sets: tuple[str, ...] = SMALL, folds: int = 1,
           epochs: int = 2) -> tuple[subprocess.CompletedProcess, Run | None]:
    flags = sum((["--set", s] for s in tiny_sets(data, folds=folds, epochs=epochs, extra=sets)), [])
    p = hpcseg("submit", "microbead_optimized", "--profile", "quick", *flags, *args,
               "--runs-dir", str(tmp_path / "runs"))
    folder = [ln.split(":", 1)[1].strip() for ln in p.stdout.splitlines() if "run folder:" in ln]
    if not folder:  # refused or failed: the newest run folder, if one was made
        found = sorted((tmp_path / "runs").glob("*/*/manifest.json"))
        folder = [str(found[-1].parent)] if found else []
    return p, (open_run(folder[0]) if folder else None)


def status_json(run: Run, env: dict | None = None) -> tuple[int, dict]:
    p = hpcseg("status", str(run.dir), "--json", env=env, timeout=60)
    return p.returncode, (json.loads(p.stdout) if p.stdout.strip() else {})


def wait_ended(run: Run, timeout: float = 300, poll: float = 1.0) -> tuple[list[dict], set[str]]:
    """Poll ``hpcseg status --json`` (a fresh process each time) until every task ended; returns the
    last tasks and every state seen on the way. A refresh while another test has the controller down
    (exit 3) is tolerated; the deadline is not. Each poll costs a Python start and one sacct call, so a
    shorter interval would take CPU from the training it waits for."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        rc, data = status_json(run)
        if data:
            tasks = data["runs"][0]["tasks"]
            seen |= {t["state"] for t in tasks}
            if rc == 0 and all(t["ended"] for t in tasks):
                return tasks, seen
        if time.monotonic() > deadline:
            pytest.fail(f"not ended after {timeout} s: rc={rc} {data and [(t['state'], t['detail']) for t in tasks]}")
        time.sleep(poll)


def sacct_states(job: str) -> dict[str, str]:
    p = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", job], capture_output=True, text=True)
    return dict(line.split("|")[:2] for line in p.stdout.split())


def assert_sacct_completed(job: str, timeout: float = 60) -> None:
    """The job script writes exit_code a moment before Slurm (and later accounting) sees the job end:
    status may say completed while sacct still says RUNNING, the more so on a loaded machine."""
    deadline = time.monotonic() + timeout
    while set(states := sacct_states(job).values()) != {"COMPLETED"}:
        assert time.monotonic() < deadline, f"sacct {job}: {states}"
        time.sleep(0.3)



# --------------------------------------------------------------------------------------------- sbatch


def test_sbatch_six_task_array_trains_and_collects(tmp_path, microbeads, cleanup):
    p, run = submit(tmp_path, microbeads, "--scheduler", "slurm", "--then-collect", folds=2)
    assert p.returncode == 0, p.stderr
    m = run.manifest
    cleanup += [*m["native_ids"], m["collect_id"]]
    assert m["state"] == "submitted" and len(m["native_ids"]) == 1 and len(m["task_ids"]) == 6
    job = m["native_ids"][0]
    assert f"slurm array job {job}" in p.stdout and run.run_id in p.stdout
    assert (run.dir / "job.slurm").read_text().count("#SBATCH --array=0-5") == 1
    tasks, seen = wait_ended(run)
    assert [t["state"] for t in tasks] == ["completed"] * 6, tasks
    assert seen & {"pending", "running"}, seen  # the first look came before the end
    for t in tasks:
        assert t["epoch"] == 2 and t["exit_code"] == 0 and t["node"].startswith("node")
        assert (run.dir / f"tasks/{t['model']}/fold_{t['fold']}/history.csv").read_text().count("\n") == 3
    assert_sacct_completed(job)
    # --then-collect: a dependent job (afterany) ran `hpcseg collect` on the finished run.
    deadline = time.monotonic() + 180
    while not (run.dir / "training_summary.csv").exists():
        assert time.monotonic() < deadline, (run.dir / "logs").iterdir()
        time.sleep(0.5)


def test_status_makes_one_sacct_call(tmp_path, microbeads, cleanup):
    """A counting wrapper named sacct on PATH logs each call, then execs the real sacct."""
    runs = []
    for _ in range(3):  # held (pending in sacct): nine real tasks, none of them training beside other tests
        p, run = submit(tmp_path, microbeads, "--scheduler", "slurm", sets=(*SMALL, "resources.slurm.extra=[--hold]"))
        assert p.returncode == 0, p.stderr
        runs.append(run)
        cleanup += run.manifest["native_ids"]
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for name in ("sacct", "squeue", "scontrol", "sinfo"):
        w = bin_dir / name
        w.write_text(f'#!/bin/sh\n# counting wrapper\necho "{name} $*" >> {log}\nexec {shutil.which(name)} "$@"\n')
        w.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    p = hpcseg("status", "--runs-dir", str(tmp_path / "runs"), "--json", env=env)
    assert p.returncode in (0, 3), p.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith("sacct "), calls
    assert all(r.manifest["native_ids"][0] in calls[0] for r in runs)
    assert {r["state"] for r in json.loads(p.stdout)["runs"]} <= {"pending", "running", "completed"}


def test_failing_task_ends_failed_with_its_log_tail(tmp_path, microbeads, cleanup):
    # The node finds 12 images where the job says 13: the trainer exits 2 (bad input).
    p, run = submit(tmp_path, microbeads, "--scheduler", "slurm", "--no-check",
                    sets=(*SMALL, "workload.dataset.expected_count=13"))
    assert p.returncode == 0, p.stderr
    cleanup += run.manifest["native_ids"]
    tasks, _ = wait_ended(run)
    assert {t["state"] for t in tasks} == {"failed"}
    assert all(t["exit_code"] == 2 and "bad input" in t["detail"] for t in tasks)
    assert any("expected_count is 13" in line for line in tasks[0]["log_tail"])
    text = hpcseg("status", str(run.dir)).stdout
    assert "expected_count is 13" in text and "train.log" in text


def test_cancel_ends_cancelled_and_stays_cancelled(tmp_path, microbeads, cleanup):
    p, run = submit(tmp_path, microbeads, "--scheduler", "slurm", epochs=500)
    assert p.returncode == 0, p.stderr
    job = run.manifest["native_ids"][0]
    cleanup.append(job)
    deadline = time.monotonic() + 120
    while True:  # cancel once training is under way (a history row exists)
        if any((run.dir / t["dir"] / "history.csv").exists() for t in run.manifest["tasks"]):
            break
        assert time.monotonic() < deadline, "no task started"
        time.sleep(0.3)
    c = hpcseg("cancel", str(run.dir))
    assert c.returncode == 0, c.stderr
    tasks, _ = wait_ended(run, timeout=120)
    assert {t["state"] for t in tasks} == {"cancelled"}, tasks
    assert open_run(run.dir).manifest["state"] == "cancelled"
    # Nothing of the job may come back to the queue (a requeue on the way out would defeat the cancel).
    # Only the job's own processes could requeue it, and a requeued element waits in squeue as PENDING
    # (BeginTime, AuthInfo=cred_expire) for seconds: so once squeue has let go of every element (no
    # longer running or completing: its processes are gone), a last look and sacct's attempts settle it.
    def queued() -> str:
        return subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", job], capture_output=True, text=True,
                              timeout=30).stdout.strip()
    deadline = time.monotonic() + 60
    while (left := queued()) and "PENDING" not in left:
        assert time.monotonic() < deadline, f"cancelled job {job} still in the queue after 60 s:\n{left}"
        time.sleep(0.5)
    time.sleep(2)
    left = queued()
    assert left == "", f"cancelled job {job} is back in the queue:\n{left}"
    attempts = subprocess.run(["sacct", "-X", "-D", "-n", "-P", "-o", "JobID,State", "-j", job], capture_output=True,
                              text=True, timeout=30).stdout.split()
    assert attempts and not any("REQUEUED" in a for a in attempts), attempts


def test_sbatch_requeue_on_pre_walltime_signal_requeues_only_that_task(tmp_path, microbeads, cleanup,
                                                                       monkeypatch):
    """USR1 before the walltime (--signal=B:USR1): the script forwards it, the trainer saves and exits 75,
    the script requeues *its own element*, which later completes; the other tasks are left alone.
    The last element of an array carries the array's own job id, so it is the one to try."""
    from hpcseg.submit import submit_job
    from tests.test_schedulers_local import FAKE_TRAINER, load_tiny

    trainer = tmp_path / "fake_trainer.py"
    trainer.write_text(FAKE_TRAINER)
    monkeypatch.setenv("FAKE_EPOCH_S", "1.5")
    run = submit_job(load_tiny(microbeads, epochs=5, extra=SMALL), "slurm", runs_dir=tmp_path / "runs",
                     check=False, entrypoint=[PY, str(trainer)])
    cleanup += run.manifest["native_ids"]
    history = run.dir / "tasks/attention_resunet/fold_0/history.csv"
    deadline = time.monotonic() + 120
    while not history.exists() or history.read_text().count("\n") < 2:
        assert time.monotonic() < deadline, "task 2 did not start"
        time.sleep(0.5)
    subprocess.run(["scancel", "--batch", "--signal=USR1", run.manifest["task_ids"]["2"]], check=True, timeout=30)
    tasks, _ = wait_ended(run)
    assert [t["state"] for t in tasks] == ["completed"] * 3, tasks
    assert "requeueing" in (run.dir / "tasks/attention_resunet/fold_0/events.log").read_text()
    starts = {t["index"]: (run.dir / f"tasks/{t['model']}/fold_0/train.log").read_text().count("HPCSEG_CPUS=")
              for t in tasks}
    assert starts == {0: 1, 1: 1, 2: 2}, f"task starts {starts}: a requeue restarted other tasks too"


def test_rendered_slurm_script_passes_test_only(tmp_path, microbeads):
    """The quick profile's own request (36 CPUs, 240G, 1 GPU, gpu partition) as rendered by submit."""
    p, run = submit(tmp_path, microbeads, "--scheduler", "slurm", "--dry-run", sets=())
    assert p.returncode == 0, p.stderr
    t = subprocess.run(["sbatch", "--test-only", "job.slurm"], cwd=run.dir, capture_output=True, text=True,
                       timeout=60)
    assert t.returncode == 0, t.stderr
    assert "to start at" in t.stderr


# --------------------------------------------------------------------------------------------- submitit


def test_submitit_trains_and_status_comes_from_sacct(tmp_path, microbeads, cleanup):
    p, run = submit(tmp_path, microbeads, "--scheduler", "slurm", "--via", "submitit",
                    sets=(*SMALL, "resources.slurm.extra=[--comment=hpcseg-extra, --mail-t=NONE]"))
    assert p.returncode == 0, p.stderr
    m = run.manifest
    cleanup += m["native_ids"]
    assert m["scheduler"] == "submitit" and not (run.dir / "job.slurm").exists()
    job = m["native_ids"][0]
    assert m["task_ids"] == {str(k): f"{job}_{k}" for k in range(3)}
    tasks, _ = wait_ended(run)
    assert [t["state"] for t in tasks] == ["completed"] * 3, tasks
    assert all(t["epoch"] == 2 and t["exit_code"] == 0 for t in tasks)
    assert_sacct_completed(job)
    assert (run.dir / "logs" / "submitit" / f"{job}_0_0_log.out").exists()
    sbatch = next((run.dir / "logs" / "submitit").glob("*submission.sh")).read_text()
    assert "#SBATCH --cpus-per-task=1" in sbatch and "#SBATCH --mem=2048M" in sbatch
    # resources.slurm.extra reaches submitit's script too (abbreviations written in full)
    assert "#SBATCH --comment=hpcseg-extra" in sbatch and "#SBATCH --mail-type=NONE" in sbatch


@pytest.mark.parametrize("via", ["sbatch", "submitit"])
def test_both_slurm_paths_refuse_the_same_extras_before_a_run_folder(tmp_path, microbeads, via):
    """The sbatch and submitit paths apply one directive check: an extra that overrides (or abbreviates)
    an option hpcseg owns, or a value that would break a directive line, is refused by name, exit 2,
    and no run folder is made."""
    for bad, says in (("resources.slurm.extra=[--arr=0-99]", "resources.slurm.extra.0: '--arr=0-99' abbreviates "
                                                             "--array"),
                      ("resources.slurm.extra=[-t5]", "sets --time"),
                      ('resources.walltime="\\n00:10:00"', "resources.walltime: '\\n00:10:00' cannot go on"),
                      ("resources.queue=-x", "resources.queue:")):
        p, run = submit(tmp_path, microbeads, "--scheduler", "slurm", "--via", via, sets=(*SMALL, bad))
        assert p.returncode == 2 and says in p.stderr and "Traceback" not in p.stderr, (bad, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert run is None, f"{bad}: a run folder was left: {run.dir if run else ''}"


def test_submitit_requeues_on_its_pre_timeout_signal(tmp_path, microbeads, cleanup, monkeypatch):
    """submitit's USR2 (what --signal sends before the walltime): TaskRunner has the trainer save (USR1,
    exit 75), submitit requeues the element, no exit_code is written, and the task later completes."""
    from hpcseg.submit import submit_job
    from tests.test_schedulers_local import FAKE_TRAINER, load_tiny

    trainer = tmp_path / "fake_trainer.py"
    trainer.write_text(FAKE_TRAINER)
    monkeypatch.setenv("FAKE_EPOCH_S", "1.5")
    run = submit_job(load_tiny(microbeads, epochs=6, extra=SMALL), "slurm", "submitit", runs_dir=tmp_path / "runs",
                     check=False, entrypoint=[PY, str(trainer)])
    cleanup += run.manifest["native_ids"]
    elem = run.manifest["task_ids"]["0"]
    history = run.dir / "tasks/unet/fold_0/history.csv"
    deadline = time.monotonic() + 120
    while not history.exists() or history.read_text().count("\n") < 2:
        assert time.monotonic() < deadline, "task 0 did not start"
        time.sleep(0.5)
    subprocess.run(["scancel", "--signal=USR2", elem], check=True, timeout=30)
    events = run.dir / "tasks/unet/fold_0/events.log"
    deadline = time.monotonic() + 60
    while not events.exists():
        assert time.monotonic() < deadline, "no requeue recorded"
        time.sleep(0.5)
    assert "submitit requeues" in events.read_text()
    assert "received SIGTERM: checkpoint saved" in (run.dir / "tasks/unet/fold_0/train.log").read_text()
    tasks, _ = wait_ended(run)
    assert [t["state"] for t in tasks] == ["completed"] * 3, tasks
    assert tasks[0]["exit_code"] == 0 and tasks[0]["epoch"] == 6


# --------------------------------------------------------------------------------------------- qsub


def test_qsub_through_the_torque_wrapper(tmp_path, microbeads, cleanup):
    p, run = submit(tmp_path, microbeads, "--scheduler", "pbs", "--then-collect")
    assert p.returncode == 0, p.stderr
    m = run.manifest
    cleanup += [*m["native_ids"], m["collect_id"]]
    assert m["native_ids"][0].isdigit() and m["task_ids"]["2"] == f"{m['native_ids'][0]}[2]"
    assert m["scheduler"] == "pbs" and (run.dir / "job.pbs").exists()
    assert "#PBS -J 0-2" in (run.dir / "job.pbs").read_text()
    tasks, seen = wait_ended(run)
    assert [t["state"] for t in tasks] == ["completed"] * 3, tasks
    assert all(t["epoch"] == 2 for t in tasks)
    assert_sacct_completed(m["native_ids"][0])
    # The collect job waited on the array through `qsub -W depend=afterany:ID`.
    deadline = time.monotonic() + 180
    while not (run.dir / "training_summary.csv").exists():
        assert time.monotonic() < deadline, sorted(p.name for p in (run.dir / "logs").iterdir())
        time.sleep(0.5)


# --------------------------------------------------------------------------------------------- controller down


@pytest.mark.cluster_down
def test_controller_down_submit_fails_cleanly_and_status_says_unreachable(tmp_path, microbeads, slurm_cluster,
                                                                          cleanup):
    # held (pending): status must ask the scheduler about it all the same, and it trains nothing meanwhile
    p, before = submit(tmp_path / "before", microbeads, "--scheduler", "slurm",
                       sets=(*SMALL, "resources.slurm.extra=[--hold]"))
    assert p.returncode == 0, p.stderr
    cleanup += before.manifest["native_ids"]
    slurm_cluster.ctl("stop-ctld")
    try:
        p, run = submit(tmp_path / "during", microbeads, "--scheduler", "slurm")
        assert p.returncode == 3
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "Unable to contact slurm controller" in lines[0], p.stderr
        assert "Traceback" not in p.stderr
        assert run.manifest["state"] == "submit-failed"
        assert "Unable to contact slurm controller" in run.manifest["error"]
        assert sorted(x.name for x in run.dir.iterdir() if not x.name.startswith(".")) == \
            ["job.slurm", "logs", "manifest.json", "splits.json"]
        s = hpcseg("status", str(before.dir))
        assert s.returncode == 3
        assert "unreachable" in s.stderr and len(s.stderr.strip().splitlines()) == 1
        assert "TASK" in s.stdout  # the files are still shown
        assert hpcseg("status", str(run.dir)).returncode == 0  # never submitted: nothing to ask
    finally:
        slurm_cluster.ctl("start-ctld")
    hpcseg("cancel", str(before.dir))
