"""Live status: a stalled task is flagged, ELAPSED and requeues count every attempt, ``--watch`` redraws
one table in place on a terminal.

The stall and elapsed rules are checked on real run folders whose history mtimes are set (the clock the
rule reads); the Slurm case restarts a real training task with ``scontrol requeue`` (what Slurm does
itself after a node failure, without the job script's help); the terminal case runs ``hpcseg status
--watch`` inside a private tmux server and reads the screen back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcseg.schedulers.base import JobState
from hpcseg.schedulers.slurm import parse_sacct
from hpcseg.status import StallRule, task_table
from hpcseg.taskfiles import TaskView, read_task_view
from tests.test_faults import beads, epochs_in, job_file, started, submit, wait_for  # noqa: F401  (beads: fixture)
from tests.test_schedulers_slurm import assert_sacct_completed, hpcseg, status_json, wait_ended
from tests.test_status import make_run, write_task

RUNNING = JobState("running", "RUNNING", "node1", 10.0)


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


# --------------------------------------------------------------------------------------------- stalled


def test_a_task_without_a_new_epoch_for_3x_its_median_is_stalled(tmp_path):
    run = make_run(tmp_path)
    for k in range(3):
        write_task(run, k, epochs=7, secs=10.0)
    _age(run.task_dir(0) / "history.csv", 252)  # > max(60, 3 x 10): stalled
    _age(run.task_dir(1) / "history.csv", 25)   # < 3 x 10: one slow epoch, not a stall
    _age(run.task_dir(2) / "history.csv", 45)   # > 3 x 10 but under the 60 s floor
    states = {f"4242_{k}": RUNNING for k in range(6)}
    tasks = task_table(run, states)
    t0, t1, t2 = tasks[:3]
    assert t0.stalled_s is not None and 250 <= t0.stalled_s < 260, t0
    assert t0.shown_state.startswith("running, stalled 4m1"), t0.shown_state
    assert t0.shown_state.endswith("since epoch 7"), t0.shown_state
    assert t0.eta_s is None, "a stalled task has no honest ETA"
    assert t1.stalled_s is None and t1.eta_s == pytest.approx(30.0) and t1.shown_state == "running"
    assert t2.stalled_s is None
    # the floor and factor are settings: a lower floor flags task 2, a larger factor clears task 0
    assert task_table(run, states, stall=StallRule(min_s=30))[2].stalled_s is not None
    assert task_table(run, states, stall=StallRule(factor=30))[0].stalled_s is None


def test_only_a_running_task_with_an_epoch_can_stall(tmp_path):
    run = make_run(tmp_path)
    write_task(run, 0, epochs=3, exit_code=0)
    write_task(run, 1, epochs=3)
    write_task(run, 2, epochs=0)  # before its first epoch: no epoch time to judge by
    for k in range(3):
        _age(run.task_dir(k) / "history.csv", 3600)
    tasks = task_table(run, {"4242_0": RUNNING, "4242_1": JobState("pending", "PENDING"), "4242_2": RUNNING})
    assert [t.stalled_s for t in tasks[:3]] == [None, None, None], tasks[:3]


@settings(max_examples=200, deadline=None)
@given(secs=st.lists(st.floats(0.01, 1e4), min_size=1, max_size=30), age=st.floats(0, 1e6),
       factor=st.floats(0, 100), floor=st.floats(0, 1e5))
def test_stall_rule_is_the_median_rule(secs, age, factor, floor):
    """Stalled exactly when the time since the last epoch exceeds both the floor and factor x median."""
    s = sorted(secs)
    median = s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2
    now = 0.0  # so that now - mtime is exactly age (no rounding at the threshold)
    v = TaskView(epoch=len(secs), median_epoch_s=median, history_mtime=now - age)
    got = StallRule(factor, floor).stalled_for(v, now)
    assert (got is not None) == (age > max(floor, factor * median))
    if got is not None:
        assert got == pytest.approx(age)


def test_median_epoch_time_comes_from_the_history(tmp_path):
    d = tmp_path / "t"
    d.mkdir()
    (d / "history.csv").write_text("epoch,val_jaccard,epoch_seconds\n1,0.1,2\n2,0.2,100\n3,0.3,4\n")
    v = read_task_view(str(d), "val_jaccard", "max")
    assert v.median_epoch_s == 4 and v.history_mtime == pytest.approx((d / "history.csv").stat().st_mtime)


def test_status_json_and_table_say_stalled(tmp_path):
    run = make_run(tmp_path)
    write_task(run, 0, epochs=7, secs=5.0)
    write_task(run, 1, epochs=2, secs=5.0)
    _age(run.task_dir(0) / "history.csv", 300)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sacct").write_text("#!/bin/sh\nprintf '4242_0|RUNNING|0:0|node2|00:05:30\\n"
                                   "4242_1|RUNNING|0:0|node3|00:00:12\\n'\n")
    (bin_dir / "sacct").chmod(0o755)
    (tmp_path / "slurm.conf").write_text("ClusterName=t\nAccountingStorageType=accounting_storage/slurmdbd\n")
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_CONF": str(tmp_path / "slurm.conf")}
    rc, data = status_json(run, env=env)
    tasks = data["runs"][0]["tasks"]
    assert tasks[0]["stalled"] and 295 < tasks[0]["stalled_s"] < 400 and tasks[0]["eta_s"] is None, tasks[0]
    assert tasks[0]["shown_state"].startswith("running, stalled 5m0"), tasks[0]
    assert not tasks[1]["stalled"] and tasks[1]["stalled_s"] is None
    table = hpcseg("status", str(run.dir), env=env).stdout
    assert "running, stalled 5m0" in table and "since epoch 7" in table, table
    assert "(1 stalled)" in hpcseg("status", "--runs-dir", str(run.dir.parent.parent), env=env).stdout
    quiet = hpcseg("status", str(run.dir), "--json", "--stalled-after", "600", env=env).stdout
    assert not json.loads(quiet)["runs"][0]["tasks"][0]["stalled"]
    bad = hpcseg("status", str(run.dir), "--stalled-after", "nan", env=env)
    want = "hpcseg status: --stalled-after nan: give a number of seconds >= 0, e.g. 120\n"
    assert bad.returncode == 2 and bad.stderr == want, bad.stderr


# --------------------------------------------------------------------------------------------- elapsed


def test_sacct_attempts_are_summed_and_counted():
    text = ("77_0|COMPLETED|0:0|node1|00:01:00\n"
            "77_1|REQUEUED|0:0|node1|00:00:32\n"     # Slurm put it back (node failure, scontrol requeue)
            "77_1|NODE_FAIL|0:0|node2|00:00:08\n"
            "77_1|RUNNING|0:0|node3|00:00:20\n"
            "77_[2-3]|PENDING|0:0|None assigned|00:00:00\n")
    s = parse_sacct(text)
    assert (s["77_0"].elapsed_s, s["77_0"].restarts) == (60, 0)
    assert (s["77_1"].state, s["77_1"].node, s["77_1"].elapsed_s, s["77_1"].restarts) == ("running", "node3", 60, 2)
    assert s["77_2"].restarts == s["77_3"].restarts == 0


def test_an_element_leaving_the_pending_range_is_not_a_requeue():
    """Seen in the demo: while an array starts, sacct lists the pending range (which expands to every
    element) and the element that just started; the range record is no earlier attempt of it."""
    for text in ("985_[0-2]|PENDING|0:0|None assigned|00:00:00\n985_0|RUNNING|0:0|node1|00:00:10\n"
                 "985_[1-2]|PENDING|0:0|None assigned|00:00:00\n",
                 "985_0|RUNNING|0:0|node1|00:00:10\n985_[0-2]|PENDING|0:0|None assigned|00:00:00\n"):
        s = parse_sacct(text)
        assert (s["985_0"].state, s["985_0"].restarts, s["985_0"].elapsed_s) == ("running", 0, 10)
        assert s["985_1"].restarts == s["985_2"].restarts == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=8))
def test_sacct_elapsed_is_the_sum_over_attempts(secs):
    text = "".join(f"9_4|{'REQUEUED' if i < len(secs) - 1 else 'RUNNING'}|0:0|n|{s // 3600}:{s // 60 % 60:02d}:"
                   f"{s % 60:02d}\n" for i, s in enumerate(secs))
    js = parse_sacct(text)["9_4"]
    assert js.elapsed_s == sum(secs) and js.restarts == len(secs) - 1 and js.state == "running"


def test_elapsed_and_requeues_cover_every_attempt(tmp_path):
    run = make_run(tmp_path)
    write_task(run, 0, epochs=4, secs=30.0)   # history: 120 s over both attempts
    write_task(run, 1, epochs=4, secs=30.0)
    (run.task_dir(1) / "events.log").write_text("2026-01-01T00:00:00Z task=1 requeueing 4242_1 (restart 1 of 3)\n")
    states = {"4242_0": JobState("running", "RUNNING", "node1", 95.0, restarts=1),  # sacct: 2 attempts, 95 s
              "4242_1": JobState("running", "RUNNING", "node1", 200.0, restarts=1)}
    t0, t1 = task_table(run, states)[:2]
    assert (t0.elapsed_s, t0.requeues) == (120.0, 1), t0  # a crash mid-epoch: history says more
    assert (t1.elapsed_s, t1.requeues) == (200.0, 1), t1  # the script's own requeue is the scheduler's too
    assert "requeued 1×" in t0.shown_state
    # once ended the run is judged from files alone: the restart Slurm told of is not forgotten
    again = task_table(run.reload(), {})
    assert again[0].requeues == 1 and again[0].elapsed_s == 120.0


def test_exit_75_requeued_by_the_scheduler_is_not_ended(tmp_path):
    """A TERM from ``scontrol requeue`` (or a node-failure requeue) makes the trainer checkpoint and the job
    script write exit 75; Slurm holds the element (BeginTime) before restarting it. Meanwhile the task is
    pending, not ended, so ``--watch`` and scripts keep waiting; without the scheduler's word it stays
    preempted."""
    from hpcseg.status import run_state

    run = make_run(tmp_path)
    write_task(run, 0, epochs=2, exit_code=75)
    back = {"4242_0": JobState("pending", "PENDING", "", 30.0, restarts=1)}
    t = task_table(run, back)[0]
    assert (t.state, t.ended, t.requeues) == ("pending", False, 1) and "requeued" in t.detail, t
    assert run_state(run, task_table(run, back)) == "pending"
    gone = task_table(run, {"4242_0": JobState("failed", "FAILED", "node1", 30.0)})[0]
    assert (gone.state, gone.ended) == ("preempted", True), gone
    assert task_table(run, {})[0].ended
    # The job script is still finishing, accounting has not recorded the requeue yet, or the next attempt
    # runs but has not removed the old file: the scheduler says running, so the task has not ended.
    for native in ("RUNNING", "COMPLETING"):
        busy = task_table(run, {"4242_0": JobState("running", native, "node1", 30.0)})[0]
        assert (busy.state, busy.ended) == ("running", False) and "exit 75" in busy.detail, busy
        assert busy.stalled_s is None
    # an exit 0 or 1 is final whatever the scheduler says yet
    for code, final in ((0, "completed"), (1, "failed")):
        (run.task_dir(0) / "exit_code").write_text(f"{code}\n")
        t = task_table(run, {"4242_0": JobState("running", "RUNNING", "node1", 30.0)})[0]
        assert (t.state, t.ended) == (final, True), t


def test_a_task_that_ends_between_the_file_read_and_the_poll_is_read_again(tmp_path):
    """status reads the task files, then polls the scheduler: a task that ended in between has no
    exit_code in what was read, but the scheduler says it ended, and the job script wrote the file
    before the scheduler saw that end. Its files are read again: completed WITH its code 0, and a failed
    task with its exit code, not 'no exit_code file'."""
    from hpcseg.status import task_views

    run = make_run(tmp_path)
    for k in range(2):
        write_task(run, k, epochs=3)
    before = task_views(run)  # read while both still ran
    for k, code in ((0, 0), (1, 1)):
        (run.task_dir(k) / "exit_code").write_text(f"{code}\n")
    ended = {"4242_0": JobState("completed", "COMPLETED", "node1", 30.0),
             "4242_1": JobState("failed", "FAILED", "node1", 30.0)}
    t0, t1 = task_table(run, ended, views=before)[:2]
    assert (t0.state, t0.exit_code, t0.ended) == ("completed", 0, True), t0
    assert (t1.state, t1.exit_code) == ("failed", 1) and t1.detail.startswith("exit 1"), t1
    # still running by the scheduler's word: what was read stands (no second read for every poll)
    (run.task_dir(0) / "exit_code").unlink()
    again = task_table(run, {"4242_0": RUNNING}, views=task_views(run))[0]
    assert (again.state, again.exit_code) == ("running", None), again


@pytest.mark.slurm
def test_slurm_restart_counts_both_attempts(tmp_path, beads, cleanup):  # noqa: F811
    """``scontrol requeue`` restarts a training element the way Slurm does after a node failure: the job
    script never sees a requeue of its own. Status (ONE sacct call) shows the requeue, and ELAPSED is the
    sum of both attempts' time as sacct records them."""
    run = submit(tmp_path, job_file(tmp_path, beads, epochs=8), "slurm")
    job = run.manifest["native_ids"][0]
    cleanup.append(job)
    wait_for(started(run.task_dir(0), 2), 120, "two epochs in history.csv")
    p = subprocess.run(["scontrol", "requeue", f"{job}_0"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    tasks, seen = wait_ended(run, timeout=240)
    assert tasks[0]["state"] == "completed" and tasks[0]["requeues"] == 1, tasks
    # while Slurm held it (~10 s, BeginTime) after its exit 75: pending, never "preempted" and ended
    assert seen & {"pending", "requeued"} and seen <= {"running", "pending", "requeued", "completed"}, seen
    assert_sacct_completed(job)  # accounting lags the exit_code file: compare times once it has caught up
    rc, data = status_json(run)
    assert data["scheduler"]["calls"] == 1, data["scheduler"]
    attempts = subprocess.run(["sacct", "-X", "-D", "-n", "-P", "-o", "State,ElapsedRaw", "-j", f"{job}_0"],
                              capture_output=True, text=True, timeout=30).stdout.split()
    assert len(attempts) == 2 and attempts[0].startswith("REQUEUED|"), attempts
    raw = [int(a.split("|")[1]) for a in attempts]
    got = data["runs"][0]["tasks"][0]
    assert got["elapsed_s"] >= sum(raw) > max(raw), (got, raw)
    assert got["requeues"] == 1 and "completed (requeued 1×)" in hpcseg("status", str(run.dir)).stdout
    assert epochs_in(run.task_dir(0)) == list(range(1, 9))  # resumed from its checkpoint, every epoch once
    assert not (run.task_dir(0) / "events.log").exists() or "requeueing" not in \
        (run.task_dir(0) / "events.log").read_text(), "the script should not have seen this requeue"


# --------------------------------------------------------------------------------------------- --watch in tmux


def _tmux() -> str:
    found = shutil.which("tmux")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:  # as scripts/browser.sh does
        for step in (["install"], ["update"], ["install"]):  # a fresh machine may have no package lists
            args = ["apt-get", *step, "-y", "-q", *(["--no-install-recommends", "tmux"] if step == ["install"] else [])]
            subprocess.run(args, capture_output=True, timeout=300)
            found = shutil.which("tmux")
            if found:
                break
    if found is None:
        pytest.skip("tmux is not installed and could not be installed with apt-get (needed to see --watch)")
    return found


def test_watch_redraws_one_table_in_place_in_a_terminal(tmp_path, beads):  # noqa: F811
    """In a 160x40 tmux pane, ``hpcseg status RUN --watch`` of a training run shows ONE table whose
    epochs advance (scrollback included: nothing was printed twice), and returns when the task ends; a
    second watch is stopped with Ctrl-C and says so in one line, without a traceback."""
    tmux = _tmux()
    sock = f"hpcseg-test-{os.getpid()}"
    run = submit(tmp_path, job_file(tmp_path, beads, epochs=10), "local")
    hp = f"{sys.executable} -m hpcseg"

    def tm(*args: str) -> str:
        return subprocess.run([tmux, "-L", sock, *args], capture_output=True, text=True, timeout=30,
                              check=True).stdout

    try:
        for name in ("watch", "stop"):
            tm("new-session", "-d", "-s", name, "-x", "160", "-y", "40", "-c", str(Path.cwd()),
               f"{hp} status {run.dir} --watch --interval 0.5; echo WATCH-ENDED rc=$?; sleep 600")
        screens = []
        interrupted = False
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            screen = tm("capture-pane", "-p", "-t", "watch")
            screens.append(screen)
            if "WATCH-ENDED" in screen:
                break
            if not interrupted and "TASK  MODEL" in tm("capture-pane", "-p", "-t", "stop"):
                tm("send-keys", "-t", "stop", "C-c")  # once its table is up: Ctrl-C in the refresh loop
                interrupted = True
            time.sleep(0.7)
        history = tm("capture-pane", "-p", "-S", "-", "-t", "watch")
        stopped = tm("capture-pane", "-p", "-S", "-", "-t", "stop")
    finally:
        subprocess.run([tmux, "-L", sock, "kill-server"], capture_output=True, timeout=30)
    assert "WATCH-ENDED rc=0" in screens[-1], screens[-1]
    assert history.count("TASK  MODEL") == 1 and history.count("folder:") == 1, history
    epochs = {m for s in screens for ln in s.splitlines() if ln.startswith("0 ") for m in re.findall(r"\b\d+/10\b", ln)}
    assert len(epochs) >= 3 and "10/10" in epochs, (epochs, screens)  # redrawn as it progressed
    assert all(s.count("TASK  MODEL") <= 1 for s in screens)
    assert "completed" in screens[-1]
    assert "hpcseg status: interrupted" in stopped and "WATCH-ENDED rc=130" in stopped, stopped
    assert "Traceback" not in stopped and stopped.count("TASK  MODEL") == 1, stopped
