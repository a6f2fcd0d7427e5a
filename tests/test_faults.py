"""Reliability (issue 6): tasks interrupted, killed, or orphaned by a daemon restart come back and finish
with every epoch recorded exactly once; requeues and resubmissions are recorded in the run's manifest and
shown by status; a full disk or an unwritable run folder ends in one clear line and a clean state.

The training is real (one U-Net, channels [4, 8], 96 microbead images of 32 px, batch 2, 30-40 epochs of
~0.1-0.2 s each), so a signal sent once the first rows are in history.csv lands mid-training. Cluster
tests (marked ``slurm``) use the local Slurm of scripts/local-slurm.sh; a controller down during
``submit``/``status`` is covered in tests/test_schedulers_slurm.py and not repeated here.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hpcseg.runs import Run, open_run
from tests.test_schedulers_slurm import assert_sacct_completed, hpcseg, sacct_states, status_json, wait_ended

PY = sys.executable
N_IMAGES = 96
JOB = """\
name: faults
workload:
  task: binary_segmentation
  dataset: {{root: {root}, layout: microbead, image_size: 32, channels: 1, expected_count: {n}}}
  models:
{models}
  split: {{method: random, val_fraction: 0.25}}
  seed: 3
training:
  epochs: {epochs}
  batch_size: 2
  lr: 3.0e-3
  max_requeues: {max_requeues}
resources: {{cpus: 1, memory: 1G, walltime: "00:10:00", gpus: 0}}
container: {{runtime: none}}
"""
MODEL = "    - {{name: {name}, arch: unet, channels: [4, 8], dropout: 0.1}}"


# --------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def beads(tmp_path_factory) -> Path:
    from hpcseg.workloads.microbead.synth import make_microbeads

    root = tmp_path_factory.mktemp("fault-beads") / "data"
    make_microbeads(root, n=N_IMAGES, size=32)
    return root


def job_file(where: Path, data: Path, *, epochs: int = 30, models: int = 1, max_requeues: int = 2) -> Path:
    names = ["unet", "unet_b", "unet_c"][:models]
    path = where / "faults.yaml"
    path.write_text(JOB.format(root=data, n=N_IMAGES, epochs=epochs, max_requeues=max_requeues,
                               models="\n".join(MODEL.format(name=n) for n in names)))
    return path


def retrying(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    """``hpcseg ARGS``, again while slurmctld is away: the cluster is shared, and other tests (e.g. the
    controller-down cases of test_schedulers_slurm/test_bad_inputs) stop it for a few seconds."""
    deadline = time.monotonic() + timeout
    while True:
        p = hpcseg(*args)
        if p.returncode != 3 or "Unable to contact slurm controller" not in p.stderr \
                or time.monotonic() > deadline:
            return p
        time.sleep(3)


def submit(tmp_path: Path, job: Path, scheduler: str, *args: str) -> Run:
    p = retrying("submit", str(job), "--scheduler", scheduler, "--runs-dir", str(tmp_path / "runs"), *args)
    assert p.returncode == 0, p.stderr
    folder = next(ln.split(":", 1)[1].strip() for ln in p.stdout.splitlines() if "run folder:" in ln)
    return open_run(folder)


def wait_for(cond: Callable[[], object], timeout: float, what: str, step: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout:.0f} s still waiting for: {what}")
        time.sleep(step)


def epochs_in(task_dir: Path) -> list[int]:
    try:
        with open(task_dir / "history.csv", newline="") as fh:
            return [int(r["epoch"]) for r in csv.DictReader(fh)]
    except OSError:
        return []


def started(task_dir: Path, rows: int = 2) -> Callable[[], bool]:
    return lambda: len(epochs_in(task_dir)) >= rows


# --------------------------------------------------------------------------------------------- Slurm


@pytest.mark.slurm
def test_usr1_mid_training_requeues_resumes_and_is_recorded(tmp_path, beads, cleanup):
    """The walltime warning (USR1 to the batch shell, forwarded): checkpoint, exit 75, the job script
    requeues its element, the next attempt resumes; every epoch once; events.log, manifest and status
    all say "requeued 1×"."""
    run = submit(tmp_path, job_file(tmp_path, beads), "slurm")
    cleanup += run.manifest["native_ids"]
    task = run.task_dir(0)
    wait_for(started(task), 120, "two epochs in history.csv")
    assert len(epochs_in(task)) < 30, "the task finished before the signal: make epochs slower"
    subprocess.run(["scancel", "--batch", "--signal=USR1", run.manifest["task_ids"]["0"]], check=True, timeout=30)
    wait_for(lambda: "requeueing" in (task / "events.log").read_text() if (task / "events.log").exists() else False,
             60, "the job script's requeue in events.log")
    tasks, _ = wait_ended(run, timeout=240)
    assert tasks[0]["state"] == "completed" and tasks[0]["exit_code"] == 0, tasks
    assert tasks[0]["requeues"] == 1 and tasks[0]["resubmits"] == 0
    assert epochs_in(task) == list(range(1, 31))
    log = (task / "train.log").read_text()
    assert "received SIGUSR1" in log and log.count("resuming after epoch") == 1
    assert open_run(run.dir).manifest["requeues"] == {"0": 1}
    assert "completed (requeued 1×)" in hpcseg("status", str(run.dir)).stdout
    assert_sacct_completed(run.manifest["native_ids"][0])


@pytest.mark.slurm
def test_sigkill_mid_epoch_then_resubmit_resumes_from_checkpoint(tmp_path, beads, cleanup):
    """SIGKILL leaves no chance to save: the job script records 137; `hpcseg resubmit --tasks 0` sends the
    task again as a new job, which resumes from the last epoch's checkpoint; every epoch once. The limit
    (training.max_requeues: 1) then refuses a second resubmission."""
    run = submit(tmp_path, job_file(tmp_path, beads, max_requeues=1), "slurm")
    first = run.manifest["native_ids"][0]
    cleanup.append(first)
    task = run.task_dir(0)
    wait_for(started(task), 120, "two epochs in history.csv")
    pid = subprocess.run(["pgrep", "-f", f"hpcseg train --run {run.dir} --task 0"], capture_output=True,
                         text=True).stdout.split()
    assert len(pid) == 1, pid
    os.kill(int(pid[0]), signal.SIGKILL)
    wait_for(lambda: (task / "exit_code").exists(), 60, "the job script's exit_code")
    assert (task / "exit_code").read_text().strip() == "137"
    rc, data = status_json(run)
    assert data["runs"][0]["tasks"][0]["state"] == "failed" and "killed" in data["runs"][0]["tasks"][0]["detail"]
    done_before = len(epochs_in(task))

    nothing = hpcseg("resubmit", str(run.dir))  # the default takes exit 75 only
    assert nothing.returncode == 0 and "nothing to resubmit" in nothing.stderr, nothing
    r = retrying("resubmit", str(run.dir), "--tasks", "0")
    assert r.returncode == 0, r.stderr
    m = open_run(run.dir).manifest
    second = m["native_ids"][1]
    cleanup.append(second)
    assert len(m["native_ids"]) == 2 and m["task_ids"]["0"] == f"{second}_0"
    assert m["resubmissions"][0]["tasks"] == [0] and m["resubmissions"][0]["previous"]["0"]["exit_code"] == 137
    assert "#SBATCH --array=0" in (run.dir / "job.resubmit-1.slurm").read_text()
    tasks, _ = wait_ended(run, timeout=180)
    assert tasks[0]["state"] == "completed" and tasks[0]["resubmits"] == 1, tasks
    assert epochs_in(task) == list(range(1, 31))
    # The checkpoint is written before the history row: a kill between the two resumes one epoch later.
    log = (task / "train.log").read_text()
    assert log.count("resuming after epoch") == 1
    assert f"resuming after epoch {done_before} " in log or f"resuming after epoch {done_before + 1} " in log
    assert "resubmitted as" in (task / "events.log").read_text()
    assert "completed (resubmitted 1×)" in hpcseg("status", str(run.dir)).stdout

    again = hpcseg("resubmit", str(run.dir), "--tasks", "0")
    assert again.returncode == 2 and "training.max_requeues" in again.stderr, again
    assert len(open_run(run.dir).manifest["native_ids"]) == 2


@pytest.mark.slurm
@pytest.mark.cluster_down
def test_slurmd_restart_while_a_task_runs(tmp_path, beads, slurm_cluster, cleanup):
    """On this cluster (Slurm 22.05, no cgroups) slurmstepd outlives a slurmd restart: the task keeps
    training and completes normally, without a restart (documented in docs/schedulers.md)."""
    run = submit(tmp_path, job_file(tmp_path, beads, epochs=40), "slurm")
    cleanup += run.manifest["native_ids"]
    task = run.task_dir(0)
    wait_for(started(task, 1), 120, "the first epoch in history.csv")
    try:
        slurm_cluster.ctl("restart-slurmd")
        assert len(epochs_in(task)) < 40, "the task ended before slurmd was back: make epochs slower"
    finally:
        slurm_cluster.ctl("up")  # idempotent: makes sure every daemon and node is back for other tests
    tasks, _ = wait_ended(run, timeout=180)
    assert tasks[0]["state"] == "completed" and tasks[0]["exit_code"] == 0, tasks
    assert epochs_in(task) == list(range(1, 41))
    assert "resuming" not in (task / "train.log").read_text()
    assert_sacct_completed(run.manifest["native_ids"][0])


@pytest.mark.slurm
def test_pbs_interrupted_task_is_resubmitted_through_qsub(tmp_path, beads, cleanup):
    """PBS has no in-job requeue: exit 75 is written and status says preempted; `hpcseg resubmit`
    (default: the exit-75 tasks) qsubs a script for that task alone, which resumes and completes."""
    run = submit(tmp_path, job_file(tmp_path, beads), "pbs")
    job = run.manifest["native_ids"][0]
    cleanup.append(job)
    task = run.task_dir(0)
    wait_for(started(task), 120, "two epochs in history.csv")
    # Under Slurm's Torque wrapper the qsub id is a Slurm job id: USR1 to the batch shell, forwarded.
    subprocess.run(["scancel", "--batch", "--signal=USR1", job], check=True, timeout=30)
    wait_for(lambda: (task / "exit_code").exists(), 60, "exit_code 75")
    assert (task / "exit_code").read_text().strip() == "75"
    tasks, _ = wait_ended(run, timeout=60)  # "running" until the job script has finished in qstat
    assert tasks[0]["state"] == "preempted", tasks
    r = retrying("resubmit", str(run.dir))
    assert r.returncode == 0, r.stderr
    m = open_run(run.dir).manifest
    assert len(m["native_ids"]) == 2
    cleanup.append(m["native_ids"][1])
    assert m["task_ids"]["0"] == m["native_ids"][1]  # one task: a plain job, not an array
    assert (run.dir / "job.resubmit-1.pbs").exists()
    tasks, _ = wait_ended(run, timeout=180)
    assert tasks[0]["state"] == "completed" and tasks[0]["resubmits"] == 1, tasks
    assert epochs_in(task) == list(range(1, 31))
    assert (task / "train.log").read_text().count("resuming after epoch") == 1


@pytest.mark.slurm
def test_pbs_walltime_deadline_checkpoints_and_exits_75_before_the_limit(tmp_path, beads, cleanup):
    """PBS sends no warning before the walltime, so the job script exports HPCSEG_DEADLINE (walltime minus
    the margin, here min(signal_seconds 30, half of 60 s) = 30 s after the script starts). The trainer
    stops there: checkpoint, exit 75, status `preempted`, well before Slurm's 60 s limit kills it."""
    job = job_file(tmp_path, beads, epochs=2000)
    job.write_text(job.read_text().replace('walltime: "00:10:00", gpus: 0}',
                                           'walltime: "00:01:00", gpus: 0, slurm: {signal_seconds: 30}}'))
    run = submit(tmp_path, job, "pbs")
    cleanup.append(run.manifest["native_ids"][0])
    script = (run.dir / "job.pbs").read_text()
    assert "#PBS -l walltime=00:01:00" in script and "export HPCSEG_DEADLINE=$(( $(date +%s) + 30 ))" in script
    task = run.task_dir(0)
    wait_for(lambda: (task / "exit_code").exists(), 75, "the deadline's exit_code")
    assert (task / "exit_code").read_text().strip() == "75"
    log = (task / "train.log").read_text()
    assert "deadline" in log, log[-2000:]
    assert (task / "checkpoint_last.pt").exists()
    assert 0 < len(epochs_in(task)) < 2000
    result = json.loads((task / "result.json").read_text())
    assert result["exit_code"] == 75, result
    tasks, _ = wait_ended(run, timeout=60)
    assert tasks[0]["state"] == "preempted", tasks
    states = sacct_states(run.manifest["native_ids"][0])
    assert "TIMEOUT" not in states.values(), states


# --------------------------------------------------------------------------------------------- no cluster


def test_local_interrupted_task_is_resubmitted_and_resumes(tmp_path, beads):
    """The local backend: USR1 to the trainer, exit 75, `hpcseg resubmit` starts a second supervisor
    (its own state file) for that task; status follows it to completion; every epoch once."""
    run = submit(tmp_path, job_file(tmp_path, beads, epochs=20), "local")
    task = run.task_dir(0)
    wait_for(started(task), 120, "two epochs in history.csv")
    pid = json.loads((run.dir / "local.json").read_text())["tasks"]["0"]["pid"]
    os.kill(pid, signal.SIGUSR1)
    wait_for(lambda: (task / "exit_code").exists(), 60, "exit_code 75")
    assert (task / "exit_code").read_text().strip() == "75"
    r = hpcseg("resubmit", str(run.dir))
    assert r.returncode == 0, r.stderr
    m = open_run(run.dir).manifest
    assert m["native_ids"] == [str(run.dir), str(run.dir / "local-1.json")]
    assert m["task_ids"]["0"] == f"{run.dir / 'local-1.json'}#0"
    wait_for(lambda: (task / "exit_code").exists(), 120, "the resubmitted task to end")
    _, data = status_json(run)
    t = data["runs"][0]["tasks"][0]
    assert t["state"] == "completed" and t["resubmits"] == 1, t
    assert epochs_in(task) == list(range(1, 21))
    assert (task / "train.log").read_text().count("resuming after") == 1


FAKE_QSUB = """#!/bin/sh
n=$(cat {state} 2>/dev/null || echo 500); n=$((n + 1)); echo $n > {state}
echo "qsub $*" >> {log}; echo "$n.pbs-server"
"""


def test_resubmit_pbs_pro_sends_one_job_per_range_and_honours_the_limit(tmp_path, beads):
    """PBS Pro's -J takes one range: tasks 0 and 2 go as two single-task jobs. A fake qsub/qstat on
    PATH records the calls; exit codes, manifest ids and events.log are checked; the limit is kept."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "qsub.log"
    (bin_dir / "qsub").write_text(FAKE_QSUB.format(state=tmp_path / "n", log=log))
    (bin_dir / "qstat").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    p = hpcseg("submit", str(job_file(tmp_path, beads, models=3, max_requeues=1)), "--scheduler", "pbs",
               "--runs-dir", str(tmp_path / "runs"), env=env)
    assert p.returncode == 0, p.stderr
    run = open_run(next((tmp_path / "runs").glob("faults/*")))
    for k, code in ((0, 75), (1, 0), (2, 75)):
        run.task_dir(k).mkdir(parents=True, exist_ok=True)
        (run.task_dir(k) / "exit_code").write_text(f"{code}\n")
    r = hpcseg("resubmit", str(run.dir), env=env)
    assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()
    assert calls == ["qsub job.pbs", "qsub job.resubmit-1-1.pbs", "qsub job.resubmit-1-2.pbs"], calls
    for name, k in (("job.resubmit-1-1.pbs", 0), ("job.resubmit-1-2.pbs", 2)):
        text = (run.dir / name).read_text()
        assert "#PBS -J" not in text and f"PBS_ARRAYID:-{k}" in text
    m = open_run(run.dir).manifest
    assert m["native_ids"] == ["501.pbs-server", "502.pbs-server", "503.pbs-server"]
    assert m["task_ids"] == {"0": "502.pbs-server", "1": "501.pbs-server[1]", "2": "503.pbs-server"}
    assert not (run.task_dir(0) / "exit_code").exists() and (run.task_dir(1) / "exit_code").exists()
    assert "resubmission 1 of 1; previous exit 75" in (run.task_dir(2) / "events.log").read_text()
    # Interrupted again: the limit (max_requeues 1) is reached, so the default leaves it with a note ...
    (run.task_dir(0) / "exit_code").write_text("75\n")
    again = hpcseg("resubmit", str(run.dir), env=env)
    assert again.returncode == 0 and "limit (training.max_requeues) is 1" in again.stderr, again
    # ... and an explicit request is refused; a task still running is refused too.
    assert hpcseg("resubmit", str(run.dir), "--tasks", "0", env=env).returncode == 2
    busy = hpcseg("resubmit", str(run.dir), "--tasks", "1,2", env=env)
    assert busy.returncode == 2 and "have not ended" in busy.stderr, busy
    assert len(log.read_text().splitlines()) == 3
    # A 75 the scheduler still runs (the script finishing, or the next attempt starting) is no candidate.
    (run.task_dir(2) / "exit_code").write_text("75\n")
    (bin_dir / "qstat").write_text("#!/bin/sh\nprintf 'Job Id: 503.pbs-server\\n    job_state = R\\n'\n")
    running = hpcseg("resubmit", str(run.dir), env=env)
    assert running.returncode == 0 and "task 2: exited 75 but the scheduler still has it (running)" in \
        running.stderr, running
    assert len(log.read_text().splitlines()) == 3


def test_status_folds_events_log_requeues_into_the_manifest(tmp_path, beads):
    """events.log (written on the node) is the source of truth; status records it in the manifest."""
    p = hpcseg("submit", str(job_file(tmp_path, beads, models=2)), "--scheduler", "local", "--dry-run",
               "--runs-dir", str(tmp_path / "runs"))
    assert p.returncode == 0, p.stderr
    run = open_run(next((tmp_path / "runs").glob("faults/*")))
    run.update(state="submitted", native_ids=[str(run.dir)], submitted_ts=time.time())
    task = run.task_dir(1)
    task.mkdir(parents=True)
    (task / "events.log").write_text(
        "2026-01-01T00:00:00Z task=1 interrupted after checkpoint; requeueing 7_1 (restart 1 of 3)\n"
        "2026-01-01T00:10:00Z task=1 interrupted after checkpoint; requeueing 7_1 (restart 2 of 3)\n"
        "2026-01-01T00:10:01Z task=1 scontrol requeue failed; left for resubmission\n")
    (task / "exit_code").write_text("75\n")
    text = hpcseg("status", str(run.dir)).stdout
    assert "preempted (requeued 1×)" in text, text
    assert open_run(run.dir).manifest["requeues"] == {"1": 1}
    rows = {ln.split()[0]: ln for ln in text.splitlines() if ln[:2] in ("0 ", "1 ")}
    assert "requeued" not in rows["0"] and "preempted (requeued 1×)" in rows["1"], text


# --------------------------------------------------------------------------------------------- disk and folders


def _tmpfs(path: Path, *options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def _limit_file_size(limit: int) -> Callable[[], None]:
    def pre() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


def test_disk_full_while_writing_a_checkpoint(tmp_path, beads):
    """Train 1 epoch, then continue to 3 with room for the small best-checkpoint but not the last one:
    a small tmpfs filled up (or, where mounting is not allowed, RLIMIT_FSIZE). After one epoch there is
    no checkpoint_prev.pt yet, whose replacement would free a checkpoint's worth of space. The trainer
    exits 1 with one line naming the file and the full disk, no traceback; checkpoint_last.pt is the
    intact epoch-1 one, no temporary file is left; with space again the task resumes, every epoch once."""
    torch = pytest.importorskip("torch")
    job = job_file(tmp_path, beads, epochs=1)
    base = tmp_path / "base"
    p = subprocess.run([PY, "-m", "hpcseg", "train", str(job), "--out", str(base)], capture_output=True, text=True,
                       timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    mnt = tmp_path / "mnt"
    mounted = _tmpfs(mnt, "size=1m")
    try:
        out = mnt / "task"
        shutil.copytree(base, out)
        preexec = None
        if mounted:
            st = os.statvfs(mnt)
            (mnt / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 40 * 1024))
        else:
            preexec = _limit_file_size(40 * 1024)
        argv = [PY, "-m", "hpcseg", "train", str(job), "--out", str(out), "--set", "training.epochs=3"]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=180, preexec_fn=preexec)
        assert p.returncode == 1, p.stdout + p.stderr
        assert "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr
        last = p.stdout.strip().splitlines()[-2]
        assert "checkpoint_last.pt: cannot write the checkpoint (the previous one is kept): the disk is full" in last
        assert f"{out}/" in last
        state = torch.load(out / "checkpoint_last.pt", map_location="cpu", weights_only=True)
        assert state["epoch"] == 1
        assert sorted(f.name for f in out.iterdir() if f.name.startswith(".")) == []
        assert epochs_in(out) == [1]
        assert json.loads((out / "result.json").read_text())["exit_code"] == 1
        if mounted:
            (mnt / "filler").unlink()
        p = subprocess.run(argv, capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, p.stdout + p.stderr
        assert epochs_in(out) == [1, 2, 3]
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _read_only(path: Path) -> bool:
    """A read-only bind mount of ``path`` over itself (root ignores permission bits, not a ro mount)."""
    if subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode != 0:
        return False
    if subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", str(path)], capture_output=True)
        return False
    return True


def test_runs_dir_not_writable_at_submit(tmp_path, beads):
    """Read-only runs folder (or, without mounts, a regular file in the path): one line, exit 2, nothing made."""
    job = job_file(tmp_path, beads)
    runs = tmp_path / "runs"
    runs.mkdir()
    ro = _read_only(runs)
    try:
        target = runs if ro else tmp_path / "afile" / "runs"
        if not ro:
            (tmp_path / "afile").write_text("a file, not a folder\n")
        p = hpcseg("submit", str(job), "--scheduler", "local", "--runs-dir", str(target))
        assert p.returncode == 2, p
        lines = p.stderr.strip().splitlines()
        why = "Read-only file system" if ro else "Not a directory"
        assert lines == [f"hpcseg submit: {target}: cannot create the run folder ({why}); "
                         f"choose another with --runs-dir or HPCSEG_RUNS"], p.stderr
        assert list(runs.iterdir()) == []
    finally:
        if ro:
            subprocess.run(["umount", str(runs)], capture_output=True)


def test_run_dir_not_writable_on_the_node(tmp_path, beads):
    """The job script and the trainer, each on a run folder the node cannot write: one line on stderr,
    exit 1, nothing written (no exit_code, no train.log)."""
    job = job_file(tmp_path, beads)
    p = hpcseg("submit", str(job), "--scheduler", "slurm", "--dry-run", "--no-check", "--runs-dir",
               str(tmp_path / "runs"))
    assert p.returncode == 0, p.stderr
    run = open_run(next((tmp_path / "runs").glob("faults/*")))
    ro = _read_only(run.dir)
    try:
        if not ro:  # the task folder's parent is a regular file: mkdir fails as on a read-only mount
            (run.dir / "tasks").write_text("in the way\n")
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": "0"}
        s = subprocess.run(["bash", str(run.dir / "job.slurm")], capture_output=True, text=True, env=env,
                           timeout=60)
        assert s.returncode == 1, s
        lines = s.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"hpcseg: the run folder {run.dir} is not writable on "), s.stderr
        t = hpcseg("train", "--run", str(run.dir), "--task", "0")
        assert t.returncode == 1, t
        why = "Read-only file system" if ro else "Not a directory"
        assert t.stderr.strip().splitlines() == [
            f"hpcseg train: {run.task_dir(0)}: cannot write the task folder ({why}); "
            f"the run folder must be writable from this node"], t.stderr
        assert "Traceback" not in t.stdout + t.stderr
    finally:
        if ro:
            subprocess.run(["umount", str(run.dir)], capture_output=True)
    assert not run.task_dir(0).exists() and not list(run.dir.glob("**/exit_code"))
