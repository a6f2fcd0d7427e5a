"""The local backend and ``hpcseg submit``: no cluster needed, so these always run.

Most tests use a stand-in trainer (a tiny script given as the run's entrypoint) so they take a second;
one trains for real (microbead_optimized, quick profile, tiny overrides).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcseg.fsutil import read_json
from hpcseg.runs import Run, open_run
from hpcseg.spec import find_job, load_job, with_absolute_paths
from hpcseg.status import snapshot, task_table
from hpcseg.submit import submit_job

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

# A stand-in for `hpcseg train --run DIR --task K`: writes history.csv/train.log like the trainer,
# fails on tasks listed in FAKE_FAIL, exits 75 on TERM/USR1 (as the trainer does after its checkpoint).
FAKE_TRAINER = r'''
import json, os, signal, sys, time
from pathlib import Path
a = sys.argv[1:]
assert a[0] == "train", a
run = Path(a[a.index("--run") + 1]); k = int(a[a.index("--task") + 1])
m = json.loads((run / "manifest.json").read_text())
d = run / m["tasks"][k]["dir"]; d.mkdir(parents=True, exist_ok=True)
log = open(d / "train.log", "a")
log.write(f"task {k} HPCSEG_CPUS={os.environ.get('HPCSEG_CPUS')}\n"); log.flush()
def term(*_):
    log.write("received SIGTERM: checkpoint saved, exit 75\n"); log.flush(); sys.exit(75)
signal.signal(signal.SIGTERM, term)
signal.signal(signal.SIGUSR1, term)  # the pre-walltime warning: checkpoint and ask to be requeued
epochs = m["spec"]["training"]["epochs"]
delay = float(os.environ.get("FAKE_EPOCH_S", "0.1"))
h = d / "history.csv"
h.write_text("epoch,train_loss,val_loss,val_jaccard,val_dice,val_precision,val_recall,lr,epoch_seconds\n")
for e in range(1, epochs + 1):
    time.sleep(delay)
    if str(k) in os.environ.get("FAKE_FAIL", "").split(","):
        log.write(f"RuntimeError: fake failure in epoch {e}\n"); log.flush(); sys.exit(1)
    with open(h, "a") as f:
        f.write(f"{e},0.5,0.5,{0.1 * e:.3f},0.5,0.5,0.5,0.001,{delay}\n")
    log.write(f"epoch {e}/{epochs}\n"); log.flush()
'''


def tiny_sets(data: Path, *, epochs: int = 2, folds: int = 1, extra: tuple[str, ...] = ()) -> list[str]:
    """The brief's tiny microbead overrides: 32 px, channels [4, 8] for every model, 12 images."""
    sets = [f"workload.dataset.root={data}", "workload.dataset.image_size=32", f"training.epochs={epochs}",
            "workload.dataset.expected_count=12", "training.batch_size=4", f"workload.split.folds={folds}"]
    sets += [f"workload.models.{m}.channels=[4,8]" for m in ("unet", "attention_unet", "attention_resunet")]
    return sets + list(extra)


def load_tiny(data: Path, **kw):
    loaded = load_job(find_job("microbead_optimized"), "quick", tiny_sets(data, **kw))
    loaded.spec = with_absolute_paths(loaded.spec)
    return loaded



@pytest.fixture
def fake_trainer(tmp_path) -> list[str]:
    path = tmp_path / "fake_trainer.py"
    path.write_text(FAKE_TRAINER)
    return [PY, str(path)]


def wait_ended(run: Run, timeout: float = 60.0, poll: float = 0.3):
    """Poll status (bounded) until every task has ended; returns the last task table."""
    deadline = time.monotonic() + timeout
    while True:
        snap = snapshot([run], single=True, reload=True)
        tasks = snap.runs[0][1]
        if all(t.ended for t in tasks):
            return tasks
        if time.monotonic() > deadline:
            pytest.fail(f"tasks not ended after {timeout} s: {[(t.index, t.state, t.detail) for t in tasks]}")
        time.sleep(poll)


def wait_supervisor_gone(run: Run, timeout: float = 30.0) -> None:
    from hpcseg.schedulers.local import _alive

    sup = read_json(run.dir / "local.json")["supervisor"]
    deadline = time.monotonic() + timeout
    while _alive(sup["pid"], sup["start"]):
        assert time.monotonic() < deadline, "local supervisor still alive"
        time.sleep(0.1)


def hpcseg(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "hpcseg", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env={**os.environ, **(env or {})})


# --------------------------------------------------------------------------------------------- tests


def test_local_runs_all_tasks_and_failed_task_shows_log(tmp_path, microbeads, fake_trainer, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "1")
    run = submit_job(load_tiny(microbeads, folds=2), "local", runs_dir=tmp_path / "runs", check=False,
                     max_parallel=2, entrypoint=fake_trainer, then_collect=True)
    assert run.manifest["state"] == "submitted" and run.manifest["scheduler"] == "local"
    assert len(run.manifest["task_ids"]) == 6  # 3 models x 2 folds, one submission
    tasks = wait_ended(run)
    by = {t.index: t for t in tasks}
    assert [by[k].state for k in range(6)] == ["completed", "failed", "completed", "completed", "completed",
                                               "completed"]
    assert by[0].epoch == 2 and by[0].epochs == 2 and by[0].best == pytest.approx(0.2)
    assert by[1].exit_code == 1 and "fake failure" in by[1].log_tail[-1]
    assert by[1].log.endswith("train.log")
    for t in run.manifest["tasks"]:
        assert (run.dir / t["dir"] / "exit_code").read_text().strip() in ("0", "1")
    # The supervisor exported a per-task CPU share: 2 at once on this machine.
    want = max(1, min(36, (os.cpu_count() or 1) // 2))
    assert f"HPCSEG_CPUS={want}" in (run.dir / "tasks/unet/fold_0/train.log").read_text()
    # --then-collect: the supervisor runs `hpcseg collect` once every task has ended, however it ended.
    wait_supervisor_gone(run)
    # At most --max-parallel tasks ran at the same time. Read once the supervisor is gone: a task's
    # exit_code (what status reads) can land before the supervisor has reaped it and written its end.
    st = read_json(run.dir / "local.json")["tasks"]
    spans = [(v["started"], v["ended"]) for v in st.values()]
    for s, _ in spans:
        assert sum(1 for a, b in spans if a <= s < b) <= 2
    collect = read_json(run.dir / "local.json")["collect"]
    assert collect["state"] == "completed", (run.dir / "logs" / "collect.out").read_text()
    assert (run.dir / "training_summary.csv").exists()


def test_submit_cli_returns_at_once_and_status_works_from_another_process(tmp_path, microbeads, fake_trainer):
    # Through the CLI in a child process: the supervisor must outlive it, in its own session.
    runs = tmp_path / "runs"
    code = (f"import sys; from hpcseg.spec import *; from hpcseg.submit import submit_job; "
            f"from tests.test_schedulers_local import load_tiny; from pathlib import Path; "
            f"r = submit_job(load_tiny(Path({str(microbeads)!r}), epochs=3), 'local', runs_dir=Path({str(runs)!r}), "
            f"check=False, entrypoint={fake_trainer!r}); print(r.dir)")
    t0 = time.monotonic()
    p = subprocess.run([PY, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
                       env={**os.environ, "FAKE_EPOCH_S": "0.5"})
    assert p.returncode == 0, p.stderr
    assert time.monotonic() - t0 < 30
    run = open_run(p.stdout.strip())
    sup = read_json(run.dir / "local.json")["supervisor"]
    assert os.getsid(sup["pid"]) != os.getsid(0)
    # A fresh process sees progress while the submitter is long gone.
    out = hpcseg("status", str(run.dir), "--json")
    assert out.returncode == 0, out.stderr
    states = {t["state"] for t in json.loads(out.stdout)["runs"][0]["tasks"]}
    assert states <= {"pending", "running", "completed"}
    wait_ended(run)
    out = json.loads(hpcseg("status", str(run.dir), "--json").stdout)
    assert out["runs"][0]["state"] == "completed"
    assert all(t["epoch"] == 3 for t in out["runs"][0]["tasks"])


def wait_first_task_running(run) -> None:
    """Until the supervisor reports task 0 running, plus a moment for the stand-in's TERM handler."""
    deadline = time.monotonic() + 20
    while read_json(run.dir / "local.json")["tasks"]["0"]["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.5)


def test_cancel_run_stops_running_and_pending_tasks(tmp_path, microbeads, fake_trainer, monkeypatch):
    monkeypatch.setenv("FAKE_EPOCH_S", "5")
    run = submit_job(load_tiny(microbeads, epochs=20), "local", runs_dir=tmp_path / "runs", check=False,
                     max_parallel=1, entrypoint=fake_trainer)
    wait_first_task_running(run)
    p = hpcseg("cancel", str(run.dir))
    assert p.returncode == 0, p.stderr
    tasks = wait_ended(open_run(run.dir), timeout=30)
    assert [t.state for t in tasks] == ["cancelled"] * 3
    assert tasks[0].exit_code == 75  # the trainer checkpointed and said "requeue me"
    assert tasks[1].exit_code is None  # never started
    assert open_run(run.dir).manifest["state"] == "cancelled"
    wait_supervisor_gone(run)


def test_cancel_one_pending_task(tmp_path, microbeads, fake_trainer):
    run = submit_job(load_tiny(microbeads, epochs=3), "local", runs_dir=tmp_path / "runs", check=False,
                     max_parallel=1, entrypoint=fake_trainer)
    p = hpcseg("cancel", str(run.dir), "--task", "2")
    assert p.returncode == 0, p.stderr
    tasks = wait_ended(open_run(run.dir))
    assert [t.state for t in tasks] == ["completed", "completed", "cancelled"]
    assert not (run.dir / "tasks/attention_resunet/fold_0/history.csv").exists()


def test_dead_supervisor_is_noticed(tmp_path, microbeads, fake_trainer, monkeypatch):
    monkeypatch.setenv("FAKE_EPOCH_S", "5")
    run = submit_job(load_tiny(microbeads, epochs=20), "local", runs_dir=tmp_path / "runs", check=False,
                     max_parallel=1, entrypoint=fake_trainer)
    wait_first_task_running(run)
    sup = read_json(run.dir / "local.json")["supervisor"]
    os.kill(sup["pid"], signal.SIGKILL)  # the OOM killer, say: no chance to write anything
    wait_supervisor_gone(run)
    tasks = task_table(open_run(run.dir), snapshot([run]).states)
    # The running task lives on in its own process group; the ones waiting will never start.
    assert [t.state for t in tasks] == ["running", "failed", "failed"]
    assert all("supervisor" in t.detail for t in tasks)
    # cancel still reaches the orphan, and the run then reads cancelled.
    assert hpcseg("cancel", str(run.dir)).returncode == 0
    tasks = wait_ended(open_run(run.dir), timeout=30)
    assert [t.state for t in tasks] == ["cancelled"] * 3


def test_dry_run_writes_everything_and_submits_nothing(tmp_path, microbeads):
    p = hpcseg("submit", "microbead_optimized", "--profile", "quick", *sum((["--set", s] for s in
               tiny_sets(microbeads)), []), "--scheduler", "slurm", "--dry-run", "--runs-dir", str(tmp_path))
    assert p.returncode == 0, p.stderr
    run = open_run(next(tmp_path.glob("*/*/manifest.json")).parent)
    assert run.manifest["state"] == "dry-run" and run.manifest["native_ids"] == []
    assert (run.dir / "job.slurm").read_text().startswith("#!/bin/bash")
    assert (run.dir / "splits.json").exists()
    assert "dry run" in p.stdout
    st = hpcseg("status", str(run.dir), "--json")
    assert st.returncode == 0 and json.loads(st.stdout)["runs"][0]["state"] == "dry-run"


def test_preflight_errors_refuse_and_create_nothing(tmp_path):
    p = hpcseg("submit", "microbead_optimized", "--profile", "quick", "--set",
               f"workload.dataset.root={tmp_path / 'nothing-here'}", "--scheduler", "local",
               "--runs-dir", str(tmp_path / "runs"))
    assert p.returncode == 2
    assert "preflight" in p.stderr and "nothing was created" in p.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("manifest.json"))


def test_submitit_needs_slurm(tmp_path, microbeads):
    p = hpcseg("submit", "microbead_optimized", "--profile", "quick", *sum((["--set", s] for s in
               tiny_sets(microbeads)), []), "--scheduler", "pbs", "--via", "submitit", "--runs-dir", str(tmp_path))
    assert p.returncode == 2 and "submitit has no PBS backend" in p.stderr


def test_local_real_training(tmp_path, microbeads):
    """The real trainer (torch, CPU) through the local supervisor: 3 models x 1 fold, 2 epochs of 32 px."""
    p = hpcseg("submit", "microbead_optimized", "--profile", "quick", *sum((["--set", s] for s in
               tiny_sets(microbeads)), []), "--scheduler", "local", "--max-parallel", "2",
               "--runs-dir", str(tmp_path / "runs"))
    assert p.returncode == 0, p.stderr
    assert "local supervisor pid" in p.stdout
    run = open_run(next((tmp_path / "runs").glob("*/*/manifest.json")).parent)
    tasks = wait_ended(run, timeout=240, poll=1.0)
    assert [t.state for t in tasks] == ["completed"] * 3, [(t.state, t.detail, t.log_tail) for t in tasks]
    for t in tasks:
        assert t.epoch == 2 and t.best is not None
        assert (run.dir / f"tasks/{t.model}/fold_0/history.csv").exists()


def test_interface_table_matches_the_base_class():
    """docs/schedulers.md lists every member of Scheduler (and nothing else), so the page a newcomer
    follows (docs/adding-a-scheduler.md) cannot drift from the code."""
    import inspect
    import re

    from hpcseg.schedulers.base import Scheduler

    text = (REPO / "docs" / "schedulers.md").read_text(encoding="utf-8")
    section = text.split("## The interface", 1)[1].split("\n## ", 1)[0]
    documented = {re.match(r"\| `([a-z_]+)", ln).group(1) for ln in section.splitlines()
                  if re.match(r"\| `[a-z_]+", ln)}
    members = {n for n, _ in inspect.getmembers(Scheduler) if not n.startswith("_")}
    members |= {n for n in Scheduler.__annotations__ if not n.startswith("_")}
    assert documented == members
    for name in members - {"name", "script", "template", "submit_command"}:
        params = [p for p in inspect.signature(getattr(Scheduler, name)).parameters if p != "self"]
        row = next(ln for ln in section.splitlines() if ln.startswith(f"| `{name}("))
        shown = re.match(rf"\| `{name}\(([^)]*)\)", row).group(1)
        assert [p.strip() for p in shown.split(",") if p.strip()] == params, (name, shown, params)
    assert (REPO / "docs" / "adding-a-scheduler.md").exists()
