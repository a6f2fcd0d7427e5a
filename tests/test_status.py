"""``hpcseg status`` / ``logs``: judging tasks, progress, ONE scheduler call, an unreachable scheduler.

No cluster needed: runs are real run folders (runs.create_run) with fake histories, and the scheduler
commands are PATH stand-ins. The stand-in ``sacct``/``squeue`` here are *counting wrappers*: each call
appends its argv to a log and prints canned output, so a test can count the scheduler calls exactly.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcseg.runs import Run, create_run, open_run
from hpcseg.schedulers.base import JobState
from hpcseg.schedulers.pbs import parse_qstat
from hpcseg.schedulers.slurm import expand_id, parse_sacct
from hpcseg.status import read_progress, run_state, task_table
from tests.test_schedulers_local import REPO, load_tiny

PY = sys.executable
HEADER = "epoch,train_loss,val_loss,val_jaccard,val_dice,val_precision,val_recall,lr,epoch_seconds\n"


def make_run(root: Path, *, native: str = "4242", scheduler: str = "slurm", folds: int = 2,
             submitted_ago: float = 3600.0) -> Run:
    """A submitted run of 6 tasks whose ids are ``<native>_<k>``; no task files yet."""
    run = create_run(load_tiny(root / "no-data-needed", folds=folds, epochs=10), scheduler, root)
    n = len(run.manifest["tasks"])
    run.update(state="submitted", native_ids=[native], task_ids={str(k): f"{native}_{k}" for k in range(n)},
               submitted_ts=time.time() - submitted_ago)
    return run


def write_task(run: Run, k: int, *, epochs: int = 0, exit_code: int | None = None, log: str = "",
               secs: float = 2.0) -> Path:
    d = run.task_dir(k)
    d.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{e},0.5,0.5,{0.1 * e:.2f},0,0,0,0.001,{secs}\n" for e in range(1, epochs + 1))
    (d / "history.csv").write_text(HEADER + rows)
    if log:
        (d / "train.log").write_text(log)
    if exit_code is not None:
        (d / "exit_code").write_text(f"{exit_code}\n")
    return d


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """Counting stand-ins for sacct/squeue on PATH, and a slurm.conf with accounting and no controller
    to probe. Returns a helper: set_output(sacct=..., rc=..., squeue=...) and calls() -> list of argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    for name in ("sacct", "squeue"):
        script = bin_dir / name
        script.write_text(
            "#!/bin/sh\n"
            f"# counting wrapper: logs every call, then answers from {tmp_path}/{name}.out\n"
            f'echo "{name} $*" >> {calls}\n'
            f'[ -f {tmp_path}/{name}.sleep ] && sleep "$(cat {tmp_path}/{name}.sleep)"\n'
            f"cat {tmp_path}/{name}.out 2>/dev/null\n"
            f"cat {tmp_path}/{name}.err 1>&2 2>/dev/null\n"
            f'exit "$(cat {tmp_path}/{name}.rc 2>/dev/null || echo 0)"\n')
        script.chmod(0o755)
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=test\nAccountingStorageType=accounting_storage/slurmdbd\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_CONF", str(conf))

    class Fake:
        def set(self, name: str = "sacct", out: str = "", rc: int = 0, err: str = "", sleep: float = 0) -> None:
            (tmp_path / f"{name}.out").write_text(out)
            (tmp_path / f"{name}.err").write_text(err)
            (tmp_path / f"{name}.rc").write_text(str(rc))
            if sleep:
                (tmp_path / f"{name}.sleep").write_text(str(sleep))

        def calls(self) -> list[str]:
            return calls.read_text().splitlines() if calls.exists() else []

        conf_path = conf

    return Fake()


def status(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "hpcseg", "status", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, env=os.environ.copy())


# --------------------------------------------------------------------------------------------- judging


def test_exit_code_file_wins_over_the_scheduler(tmp_path):
    run = make_run(tmp_path)
    write_task(run, 0, epochs=10, exit_code=0)                    # sacct still says RUNNING
    write_task(run, 1, epochs=3, exit_code=1, log="loading\nValueError: bad mask\n")  # sacct: COMPLETED
    write_task(run, 2, epochs=0)                                  # sacct: CANCELLED, no exit_code
    write_task(run, 3, epochs=4)                                  # sacct: RUNNING, on node2
    (run.task_dir(4)).mkdir(parents=True)                         # not listed, submitted long ago
    write_task(run, 5, epochs=1, log="epoch 1\n")                 # sacct lags: PENDING, but log written
    states = {"4242_0": JobState("running", "RUNNING"), "4242_1": JobState("completed", "COMPLETED"),
              "4242_2": JobState("cancelled", "CANCELLED"), "4242_3": JobState("running", "RUNNING", "node2", 65.0),
              "4242_5": JobState("pending", "PENDING")}
    tasks = task_table(run, states)
    assert [t.state for t in tasks] == ["completed", "failed", "cancelled", "running", "unknown", "running"]
    assert tasks[1].log_tail[-1] == "ValueError: bad mask" and tasks[1].log.endswith("train.log")
    assert "exit 1" in tasks[1].detail
    assert "no exit_code" in tasks[2].detail
    assert tasks[3].node == "node2" and tasks[3].elapsed_s == 65.0
    assert tasks[3].eta_s == pytest.approx(12.0) and tasks[3].eta_at_most  # 6 epochs x 2 s, early stopping on
    assert run_state(run, tasks) == "running"


def test_not_yet_listed_is_pending_and_cancelled_wins_for_unstarted(tmp_path):
    run = make_run(tmp_path, submitted_ago=5)
    assert {t.state for t in task_table(run, {})} == {"pending"}
    run.update(cancelled_tasks=[0])
    tasks = task_table(run, {"4242_0": JobState("pending", "PENDING")})
    assert tasks[0].state == "cancelled"


def test_history_progress_ignores_a_cut_last_line(tmp_path):
    p = tmp_path / "history.csv"
    p.write_text(HEADER + "1,1,1,0.30,0,0,0,0.1,4\n2,1,1,0.50,0,0,0,0.1,6\n3,1,1,0.40,0,0,0,0.1,5\n4,1,1,0.9")
    prog = read_progress(p, "val_jaccard", "max")
    assert (prog.epoch, prog.last, prog.best, prog.mean_epoch_s) == (3, 0.40, 0.50, 5.0)
    assert read_progress(p, "val_jaccard", "min").best == 0.30
    assert read_progress(tmp_path / "missing.csv", "val_jaccard", "max").epoch is None


def test_parsers_expand_arrays_and_map_states():
    out = parse_sacct("77_0|COMPLETED|0:0|node1|00:01:02\n77_1|CANCELLED by 0|0:15|node2|00:00:30\n"
                      "77_[2-4%2]|PENDING|0:0|None assigned|00:00:00\n78|REQUEUED|0:0|node3|1-00:00:01\n"
                      "79_5|TIMEOUT|0:0|node1|12:00:00\n80_0|NODE_FAIL|0:0|node1|00:00:01\n")
    assert out["77_0"] == JobState("completed", "COMPLETED", "node1", 62.0, "0:0")
    assert out["77_1"].state == "cancelled" and out["77_1"].native == "CANCELLED"
    assert [out[f"77_{k}"].state for k in (2, 3, 4)] == ["pending"] * 3 and out["77_2"].node == ""
    assert out["78"].state == "requeued" and out["78"].elapsed_s == 86401.0
    assert out["79_5"].state == "timeout" and out["80_0"].state == "failed"
    assert expand_id("9_[0,3-4]") == ["9_0", "9_3", "9_4"]
    q = parse_qstat("Job Id: 12[].pbs\n\tjob_state = B\nJob Id: 12[0].pbs\n\tjob_state = F\n\tExit_status = 0\n"
                    "\texec_host = n1/0*36\n\tresources_used.walltime = 00:10:00\n"
                    "Job Id: 12[1].pbs\n\tjob_state = X\n\tExit_status = 271\n"
                    "Job Id: 12[2].pbs\n\tjob_state = Q\nJob Id: 12[3].pbs\n\tjob_state = F\n\tExit_status = 2\n")
    assert q["12[0].pbs"] == JobState("completed", "F exit 0", "n1", 600.0, "0")
    assert [q[f"12[{k}].pbs"].state for k in (1, 2, 3)] == ["cancelled", "pending", "failed"]
    assert q["12[].pbs"].state == "running"


# --------------------------------------------------------------------------------------------- one call


def test_one_scheduler_call_for_many_runs(tmp_path, fake_slurm):
    runs = [make_run(tmp_path / "runs", native=str(1000 + i)) for i in range(25)]
    for r in runs[:5]:  # finished runs: every task has its exit_code, no need to ask the scheduler
        for k in range(6):
            write_task(r, k, epochs=10, exit_code=0)
    lines = [f"{1000 + i}_[0-5]|PENDING|0:0|None assigned|00:00:00" for i in range(5, 25)]
    fake_slurm.set("sacct", "\n".join(lines) + "\n")
    p = status("--runs-dir", str(tmp_path / "runs"), "--last", "0", "--json")
    assert p.returncode == 0, p.stderr
    calls = fake_slurm.calls()
    assert len(calls) == 1, calls
    asked = calls[0].split("-j ")[1].split(",")
    assert sorted(asked) == sorted(str(1000 + i) for i in range(5, 25))
    data = json.loads(p.stdout)
    assert data["scheduler"] == {"ok": True, "errors": [], "calls": 1}
    assert [r["state"] for r in data["runs"]] == ["completed"] * 5 + ["pending"] * 20
    # One run in detail: one call too (asked even when ended, for nodes and times); plain text output.
    p = status(str(runs[0].dir), "--runs-dir", str(tmp_path / "runs"))
    assert p.returncode == 0 and len(fake_slurm.calls()) == 2
    assert "state: completed" in p.stdout and "10/10" in p.stdout


def test_watch_refreshes_until_all_ended_one_call_each(tmp_path, fake_slurm):
    run = make_run(tmp_path / "runs")
    fake_slurm.set("sacct", "4242_[0-5]|RUNNING|0:0|node1|00:00:05\n")
    proc = subprocess.Popen([PY, "-m", "hpcseg", "status", str(run.dir), "--watch", "--interval", "0.5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    time.sleep(2.0)
    for k in range(6):
        write_task(run, k, epochs=10, exit_code=0)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    refreshes = out.count("--- ")
    assert refreshes >= 2 and "state: running" in out and out.rstrip().endswith("-")  # last table, all ended
    assert "state: completed" in out.split("--- ")[-1]
    assert len(fake_slurm.calls()) == refreshes  # one scheduler call per refresh


def test_accounting_off_falls_back_to_squeue(tmp_path, fake_slurm):
    run = make_run(tmp_path / "runs")
    fake_slurm.set("sacct", "", rc=1, err="sacct: error: Slurm accounting storage is disabled\n")
    fake_slurm.set("squeue", "4242_0|RUNNING|node1|1:05\n4242_1|PENDING||0:00\n")
    write_task(run, 2, epochs=10, exit_code=0)
    p = status(str(run.dir), "--json")
    assert p.returncode == 0, p.stderr
    tasks = json.loads(p.stdout)["runs"][0]["tasks"]
    assert [t["state"] for t in tasks[:3]] == ["running", "pending", "completed"]
    assert tasks[0]["elapsed_s"] == 65.0


# --------------------------------------------------------------------------------------------- unreachable


def test_scheduler_error_says_so_in_one_line_and_still_shows_files(tmp_path, fake_slurm):
    run = make_run(tmp_path / "runs")
    write_task(run, 0, epochs=7, log="epoch 7\n")
    write_task(run, 1, epochs=10, exit_code=0)
    fake_slurm.set("sacct", "", rc=1, err="sacct: error: Unable to contact slurm controller (connect failure)\n")
    p = status(str(run.dir))
    assert p.returncode == 3
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert "slurm unreachable: sacct failed: sacct: error: Unable to contact slurm controller" in p.stderr
    assert "7/10" in p.stdout and "completed" in p.stdout  # what the files know


def test_scheduler_timeout_is_unreachable(tmp_path, fake_slurm, monkeypatch):
    make_run(tmp_path / "runs")
    fake_slurm.set("sacct", "", sleep=20)
    monkeypatch.setenv("HPCSEG_SCHEDULER_TIMEOUT", "1")
    t0 = time.monotonic()
    p = status("--runs-dir", str(tmp_path / "runs"), "--json")
    assert time.monotonic() - t0 < 15
    assert p.returncode == 3 and "no answer from slurm within 1 s" in p.stderr
    assert json.loads(p.stdout)["scheduler"]["ok"] is False


def test_controller_down_with_accounting_up_is_unreachable(tmp_path, fake_slurm):
    """sacct answers from slurmdbd while slurmctld is down: say so, keep the states, exit 3."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    fake_slurm.conf_path.write_text(f"AccountingStorageType=accounting_storage/slurmdbd\n"
                                    f"SlurmctldHost=here(127.0.0.1)\nSlurmctldPort={port}\n")
    run = make_run(tmp_path / "runs")
    fake_slurm.set("sacct", "4242_[0-5]|RUNNING|0:0|node1|00:00:05\n")
    p = status(str(run.dir), "--json")
    assert p.returncode == 3
    assert "slurmctld (127.0.0.1:" in p.stderr and "not answering" in p.stderr
    assert {t["state"] for t in json.loads(p.stdout)["runs"][0]["tasks"]} == {"running"}


# --------------------------------------------------------------------------------------------- misc


def test_status_and_logs_never_import_torch(tmp_path, fake_slurm):
    run = make_run(tmp_path / "runs")
    write_task(run, 0, epochs=2, log="hello\n")
    fake_slurm.set("sacct", "")
    code = ("import sys; from hpcseg.cli import main; "
            f"rc = main(['status', {str(run.dir)!r}, '--json']); "
            f"main(['logs', {str(run.dir)!r}, '--task', '0']); "
            "bad = [m for m in ('torch', 'numpy', 'pandas', 'matplotlib', 'submitit') if m in sys.modules]; "
            "print('HEAVY', bad, file=sys.stderr); sys.exit(1 if bad else rc)")
    p = subprocess.run([PY, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert p.returncode == 0 and "HEAVY []" in p.stderr, p.stderr


def test_logs_lists_paths_and_prints_a_task_log(tmp_path):
    run = make_run(tmp_path / "runs")
    write_task(run, 1, epochs=1, exit_code=1, log="line one\nline two\nBoom\n")
    (run.dir / "logs").mkdir()
    (run.dir / "logs" / "microbead_optimized_4242_1.err").write_text("slurmstepd: error: oops\n")
    p = subprocess.run([PY, "-m", "hpcseg", "logs", str(run.dir)], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 0
    assert f"task 1 (unet fold 1): {run.task_dir(1) / 'train.log'}" in p.stdout
    assert "microbead_optimized_4242_1.err" in p.stdout and "(not yet)" in p.stdout
    p = subprocess.run([PY, "-m", "hpcseg", "logs", str(run.dir), "--task", "1", "-n", "2"], capture_output=True,
                       text=True, cwd=REPO)
    assert p.stdout.splitlines()[-2:] == ["line two", "Boom"]
    assert "slurmstepd: error: oops" in p.stdout
    p = subprocess.run([PY, "-m", "hpcseg", "logs", str(run.dir), "--task", "9"], capture_output=True, text=True,
                       cwd=REPO)
    assert p.returncode == 2 and "tasks 0-5" in p.stderr
    assert open_run(run.dir).manifest["state"] == "submitted"


def test_logs_follow_prints_new_lines_until_the_task_ends(tmp_path):
    run = make_run(tmp_path / "runs")
    d = write_task(run, 0, epochs=1, log="first\n")
    proc = subprocess.Popen([PY, "-m", "hpcseg", "logs", str(run.dir), "--task", "0", "--follow"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    time.sleep(1.5)
    with open(d / "train.log", "a") as fh:
        fh.write("second\n")
    time.sleep(1.5)
    (d / "exit_code").write_text("0\n")
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out.index("first") < out.index("second") < out.index("(task ended: exit 0)")
