"""Rendering of Slurm/PBS job scripts: directives, templates, container argv, and scripts that really run.

The security tests execute the rendered scripts with bash. The container runtime is replaced by a
stand-in executable named ``singularity`` (its first comment says so) that records its argv, so what
is compared is exactly what the real runtime would have received. Nothing here is mocked in Python.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcseg.cli import main
from hpcseg.containers import container_command
from hpcseg.errors import HpcsegError
from hpcseg.render import render_script
from hpcseg.schedulers.pbs import pbs_job_name
from hpcseg.spec import JobSpec, load_job, with_absolute_paths

REPO = Path(__file__).resolve().parent.parent
JOBS = sorted((REPO / "jobs").glob("*.yaml"))
SCHEDULERS = ("slurm", "pbs")

STAND_IN = """#!/bin/bash
# TEST STAND-IN for the {name} binary (tests/test_render.py): records its argv, NUL-separated,
# and exits with $STUB_EXIT; with STUB_WAIT_SIGNAL set it waits for USR1 or TERM and exits 75 like the trainer.
printf '%s\\0' "$@" > "$HPCSEG_TEST_ARGV"
if [[ -n "${{STUB_WAIT_SIGNAL:-}}" ]]; then
  trap 'exit 75' USR1 TERM
  : > "$STUB_READY"
  while :; do sleep 0.05; done
fi
exit "${{STUB_EXIT:-0}}"
"""

SCONTROL_STAND_IN = """#!/bin/bash
# TEST STAND-IN for the scontrol binary (tests/test_render.py): records its argv, NUL-separated.
printf '%s\\0' "$@" > "$HPCSEG_TEST_SCONTROL"
exit 0
"""


# --------------------------------------------------------------------------------------------- helpers


def load(name: str, *overrides: str, profile: str | None = None) -> JobSpec:
    return with_absolute_paths(load_job(REPO / "jobs" / f"{name}.yaml", profile, list(overrides)).spec)


def directive_lines(script: str) -> list[str]:
    return [ln for ln in script.splitlines() if ln.startswith(("#SBATCH", "#PBS"))]


def header(script: str) -> list[str]:
    """The directive lines at the top of a script, up to the first line that is not one."""
    out = []
    for ln in script.splitlines()[1:]:
        if not ln.startswith(("#SBATCH", "#PBS")):
            break
        out.append(ln)
    return out


def evil(sentinel: Path | str) -> str:
    """A string that runs `touch sentinel` in many ways if a shell ever treats it as code."""
    s = str(sentinel)
    return (f"we'ird \"dq\" $(touch {s}) `touch {s}` ; touch {s} && touch {s} | touch {s} "
            f"* ?[ab] \\\n touch {s}\nline2")


def make_bin(tmp: Path) -> Path:
    b = tmp / "bin"
    b.mkdir()
    for name in ("singularity", "apptainer"):
        (b / name).write_text(STAND_IN.format(name=name))
        (b / name).chmod(0o755)
    (b / "scontrol").write_text(SCONTROL_STAND_IN)
    (b / "scontrol").chmod(0o755)
    return b


def clean_env(tmp: Path, bindir: Path, **extra: str) -> dict[str, str]:
    """A fresh environment: no SLURM_*/PBS_* leaks in from wherever the tests run."""
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": str(tmp),
           "LANG": "C.UTF-8", "HPCSEG_TEST_ARGV": str(tmp / "argv.bin"),
           "HPCSEG_TEST_SCONTROL": str(tmp / "scontrol.bin")}
    env.update(extra)
    return env


def read_argv(path: Path) -> list[str]:
    data = path.read_bytes()
    assert data.endswith(b"\0")
    return [a.decode() for a in data[:-1].split(b"\0")]


def pwned(tmp: Path, cwd: Path) -> list[Path]:
    return [p for root in (tmp, cwd) for p in root.rglob("PWNED")]


def evil_spec(tmp: Path) -> tuple[JobSpec, str]:
    """microbead_optimized with hostile strings everywhere the schema lets a user put text or paths."""
    e = evil(tmp / "PWNED")
    overrides = [
        f"name={json.dumps(evil('PWNED'))}",  # relative: the name field is short
        f"description={json.dumps(e)}",
        f"workload.dataset.root={json.dumps('/data/' + e)}",
        f"container.image={json.dumps('/img/' + e + '.sif')}",
        f"container.binds={json.dumps([{'src': '/b/' + e, 'dst': '/inside', 'mode': 'ro'}, '/c/' + e])}",
        f"workload.models.unet.weights={json.dumps('/w/' + e + '/unet.pth')}",
    ]
    return load_job(REPO / "jobs" / "microbead_optimized.yaml", None, overrides).spec, e


@pytest.fixture
def weird_run_dir(tmp_path: Path) -> Path:
    d = tmp_path / "runs" / "run $(touch PWNED) 'q\" x"
    d.mkdir(parents=True)
    return d


def run_script(script: str, tmp: Path, env: dict[str, str], name: str = "job.sh") -> subprocess.CompletedProcess:
    path = tmp / name
    path.write_text(script)
    cwd = tmp / "cwd"
    cwd.mkdir(exist_ok=True)
    return subprocess.run(["bash", str(path)], cwd=cwd, env=env, capture_output=True, text=True, timeout=30)


# --------------------------------------------------------------------------------------------- security


INDEX_VARS = ("SLURM_ARRAY_TASK_ID", "PBS_ARRAY_INDEX", "PBS_ARRAYID")


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("index_var", INDEX_VARS)
@pytest.mark.parametrize("stub_exit", [0, 1, 75])
def test_hostile_values_pass_literally_and_exit_code_is_recorded(tmp_path, weird_run_dir, scheduler,
                                                                 index_var, stub_exit):
    spec, e = evil_spec(tmp_path)
    bindir = make_bin(tmp_path)
    script = render_script(spec, scheduler, weird_run_dir)
    expected = container_command(spec, weird_run_dir)
    assert expected[0] == "singularity"
    # the hostile strings really are in the argv, unchanged
    assert f"/data/{e}:/data/{e}:ro" in expected and f"/b/{e}:/inside:ro" in expected
    assert f"/w/{e}:/w/{e}:ro" in expected and f"/img/{e}.sif" in expected

    env = clean_env(tmp_path, bindir, STUB_EXIT=str(stub_exit), **{index_var: "2"})
    proc = run_script(script, tmp_path, env)

    assert pwned(tmp_path, tmp_path / "cwd") == []
    assert proc.returncode == stub_exit, proc.stderr
    assert read_argv(tmp_path / "argv.bin") == expected[1:] + ["--task", "2"]
    task_dir = weird_run_dir / "tasks" / "attention_resunet" / "fold_0"
    assert (task_dir / "exit_code").read_text() == f"{stub_exit}\n"
    assert not (tmp_path / "scontrol.bin").exists()
    assert [p.name for p in task_dir.iterdir() if p.name.startswith(".exit_code")] == []


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_hostile_values_never_reach_directive_lines(tmp_path, weird_run_dir, scheduler):
    spec, _ = evil_spec(tmp_path)
    script = render_script(spec, scheduler, weird_run_dir)
    head = header(script)
    assert head and all(re.fullmatch(r"#(SBATCH|PBS) -{1,2}[A-Za-z][^\s'\"$`;]*( [^\s'\"$`;]+)?", ln)
                        for ln in head), head
    # every directive sits in the top block; none appears further down where a value could have put it
    assert directive_lines(script) == head
    # nothing user-written lands in a comment either, where a newline would end it
    comments = [ln for ln in script.splitlines() if ln.lstrip().startswith("#") and ln not in head]
    assert comments and not any("touch " in ln or "PWNED)" in ln for ln in comments)


def test_constructed_spec_with_hostile_paths_runs_literally(tmp_path, weird_run_dir):
    """Specs built directly (not from YAML), runtime apptainer, hostile run and bind paths."""
    e = evil(tmp_path / "PWNED")
    data = load("microbead_optimized").model_dump(mode="json")
    data["name"] = evil("PWNED")
    data["container"].update(runtime="apptainer", image=f"/i/{e}.sif", gpu=True,
                             binds=[{"src": f"/s/{e}", "dst": None, "mode": "rw"}])
    data["workload"]["dataset"]["root"] = f"/d/{e}"
    spec = JobSpec.model_validate(data)
    bindir = make_bin(tmp_path)
    expected = container_command(spec, weird_run_dir)
    assert expected[:3] == ["apptainer", "exec", "--nv"]
    assert f"/s/{e}:/s/{e}" in expected
    for scheduler in SCHEDULERS:
        (tmp_path / "argv.bin").unlink(missing_ok=True)
        proc = run_script(render_script(spec, scheduler, weird_run_dir), tmp_path,
                          clean_env(tmp_path, bindir, PBS_ARRAY_INDEX="0"), name=f"{scheduler}.sh")
        assert proc.returncode == 0, proc.stderr
        assert read_argv(tmp_path / "argv.bin") == expected[1:] + ["--task", "0"]
    assert pwned(tmp_path, tmp_path / "cwd") == []


@pytest.mark.parametrize("bad", ["3; touch PWNED", "a[$(touch PWNED)]", "7", "-1"])
def test_bad_array_index_is_refused_before_use(tmp_path, bad):
    spec = load("microbead_optimized")
    bindir = make_bin(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = run_script(render_script(spec, "slurm", run_dir), tmp_path,
                      clean_env(tmp_path, bindir, SLURM_ARRAY_TASK_ID=bad))
    assert proc.returncode == 2
    assert "not a task of this run" in proc.stderr
    assert pwned(tmp_path, tmp_path / "cwd") == []
    assert not (tmp_path / "argv.bin").exists()


def test_missing_array_index_fails_clearly(tmp_path):
    spec = load("microbead_optimized")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = run_script(render_script(spec, "slurm", run_dir), tmp_path, clean_env(tmp_path, make_bin(tmp_path)))
    assert proc.returncode == 2
    assert "no array index" in proc.stderr


def test_single_task_pbs_pro_job_needs_no_index(tmp_path):
    """PBS Pro gets no -J for one task, so the script falls back to that task's index."""
    spec = load("marida_se_unet")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    script = render_script(spec, "pbs", run_dir)
    assert not any(ln.startswith("#PBS -J") for ln in directive_lines(script))
    proc = run_script(script, tmp_path, clean_env(tmp_path, make_bin(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    assert read_argv(tmp_path / "argv.bin")[-2:] == ["--task", "0"]
    assert (run_dir / "tasks/se_unet/fold_0/exit_code").read_text() == "0\n"


# --------------------------------------------------------------------------------------------- requeue


def _start_waiting(tmp_path: Path, scheduler: str, **env_extra: str) -> tuple[subprocess.Popen, Path]:
    spec = load("microbead_optimized")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (tmp_path / "job.sh").write_text(render_script(spec, scheduler, run_dir))
    (tmp_path / "cwd").mkdir()
    env = clean_env(tmp_path, make_bin(tmp_path), STUB_WAIT_SIGNAL="1", STUB_READY=str(tmp_path / "ready"),
                    **env_extra)
    proc = subprocess.Popen(["bash", str(tmp_path / "job.sh")], cwd=tmp_path / "cwd", env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not (tmp_path / "ready").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the stand-in never started"
        time.sleep(0.02)
    return proc, run_dir / "tasks/attention_unet/fold_0"


def test_usr1_is_forwarded_and_slurm_requeues_without_exit_code(tmp_path):
    proc, task_dir = _start_waiting(tmp_path, "slurm", SLURM_ARRAY_TASK_ID="1", SLURM_JOB_ID="4242",
                                    SLURM_ARRAY_JOB_ID="4240", SLURM_RESTART_COUNT="1")
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 75, err
    # Only this element: requeueing SLURM_JOB_ID could be the whole array's id.
    assert read_argv(tmp_path / "scontrol.bin") == ["requeue", "4240_1"]
    assert not (task_dir / "exit_code").exists()
    events = (task_dir / "events.log").read_text()
    assert "requeueing 4240_1 (restart 2 of 3)" in events


def test_slurm_term_is_never_requeued(tmp_path):
    """TERM is a cancel (which must not come back) or a preemption (Slurm requeues those itself)."""
    proc, task_dir = _start_waiting(tmp_path, "slurm", SLURM_ARRAY_TASK_ID="1", SLURM_JOB_ID="4242",
                                    SLURM_ARRAY_JOB_ID="4240", SLURM_RESTART_COUNT="0")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode == 75
    assert not (tmp_path / "scontrol.bin").exists()
    assert (task_dir / "exit_code").read_text() == "75\n"


def test_requeue_limit_reached_writes_exit_code_75(tmp_path):
    proc, task_dir = _start_waiting(tmp_path, "slurm", SLURM_ARRAY_TASK_ID="1", SLURM_JOB_ID="4242",
                                    SLURM_RESTART_COUNT="3")
    proc.send_signal(signal.SIGUSR1)
    proc.communicate(timeout=20)
    assert proc.returncode == 75
    assert not (tmp_path / "scontrol.bin").exists()
    assert (task_dir / "exit_code").read_text() == "75\n"
    assert "requeue limit (3) reached" in (task_dir / "events.log").read_text()


def test_pbs_term_is_forwarded_and_75_recorded(tmp_path):
    proc, task_dir = _start_waiting(tmp_path, "pbs", PBS_ARRAY_INDEX="1")
    proc.send_signal(signal.SIGTERM)  # PBS sends TERM at the walltime and on qdel
    proc.communicate(timeout=20)
    assert proc.returncode == 75
    assert (task_dir / "exit_code").read_text() == "75\n"
    assert not (tmp_path / "scontrol.bin").exists()


def test_stale_exit_code_is_removed_at_start(tmp_path):
    proc, task_dir = _start_waiting(tmp_path, "pbs", PBS_ARRAY_INDEX="1")
    try:
        assert not (task_dir / "exit_code").exists()
    finally:
        proc.send_signal(signal.SIGUSR1)
        proc.communicate(timeout=20)
    # and a leftover from before is gone once a new attempt starts
    (task_dir / "exit_code").write_text("1\n")
    (tmp_path / "ready").unlink()
    env = clean_env(tmp_path, tmp_path / "bin", STUB_WAIT_SIGNAL="1", STUB_READY=str(tmp_path / "ready"),
                    PBS_ARRAY_INDEX="1")
    p2 = subprocess.Popen(["bash", str(tmp_path / "job.sh")], cwd=tmp_path / "cwd", env=env)
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "ready").exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert not (task_dir / "exit_code").exists()
    finally:
        p2.send_signal(signal.SIGUSR1)
        p2.wait(timeout=20)


# --------------------------------------------------------------------------------------------- syntax


@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.stem)
@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("profile", [None, "quick"])
def test_every_shipped_job_renders_valid_bash(tmp_path, job, scheduler, profile):
    spec = with_absolute_paths(load_job(job, profile).spec)
    script = render_script(spec, scheduler, tmp_path / "run", job_file=job)
    path = tmp_path / "job.sh"
    path.write_text(script)
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert script.startswith("#!/bin/bash\n") and "set -euo pipefail" in script
    assert '--task "$IDX"' in script


# --------------------------------------------------------------------------------------------- directives


def test_slurm_directives_default(tmp_path):
    d = directive_lines(render_script(load("microbead_optimized"), "slurm", tmp_path))
    for line in ["#SBATCH --job-name=microbead_optimized", "#SBATCH --partition=gpu", "#SBATCH --time=12:00:00",
                 "#SBATCH --nodes=1", "#SBATCH --ntasks=1", "#SBATCH --cpus-per-task=36",
                 "#SBATCH --mem=245760M", "#SBATCH --gres=gpu:1", "#SBATCH --array=0-2",
                 "#SBATCH --signal=B:USR1@300", "#SBATCH --requeue", "#SBATCH --open-mode=append",
                 "#SBATCH --output=logs/%x_%A_%a.out", "#SBATCH --error=logs/%x_%A_%a.err"]:
        assert line in d
    assert not any("--account" in ln or "--qos" in ln or "--constraint" in ln for ln in d)


def test_job_name_is_the_slug_never_the_raw_name(tmp_path):
    spec = load("microbead_optimized", 'name="my job: v2 (test)"')
    assert f"#SBATCH --job-name={spec.slug}" in directive_lines(render_script(spec, "slurm", tmp_path))
    assert spec.slug.startswith("my_job_v2_test-")  # plus a hash of the exact name (spec.job_slug)
    assert f"#PBS -N {pbs_job_name(spec.slug)}" in directive_lines(render_script(spec, "pbs", tmp_path))
    assert pbs_job_name(spec.slug).startswith("my_job_v2_test")


def test_mem_and_mem_per_gpu_are_exclusive(tmp_path):
    d = directive_lines(render_script(load("microbead_optimized", "resources.mem_per_gpu=20G"), "slurm", tmp_path))
    assert "#SBATCH --mem-per-gpu=20480M" in d
    assert [ln for ln in d if ln.startswith("#SBATCH --mem")] == ["#SBATCH --mem-per-gpu=20480M"]
    d = directive_lines(render_script(load("microbead_optimized"), "slurm", tmp_path))
    assert [ln for ln in d if ln.startswith("#SBATCH --mem")] == ["#SBATCH --mem=245760M"]
    # PBS has one mem= per chunk: per-GPU memory times GPUs
    d = directive_lines(render_script(load("microbead_optimized", "resources.mem_per_gpu=20G",
                                           "resources.gpus=2"), "pbs", tmp_path))
    assert "#PBS -l select=1:ncpus=36:ngpus=2:mem=40gb" in d


@pytest.mark.parametrize("overrides, want", [
    ((), ["#SBATCH --gres=gpu:1"]),
    (("resources.slurm.gpu_type=a100",), ["#SBATCH --gres=gpu:a100:1"]),
    (("resources.slurm.gpu_flag=gpus", "resources.gpus=2"), ["#SBATCH --gpus=2"]),
    (("resources.slurm.gpu_flag=gpus", "resources.slurm.gpu_type=h100"), ["#SBATCH --gpus=h100:1"]),
    (("resources.gpus=0",), []),
])
def test_gres_or_gpus(tmp_path, overrides, want):
    d = directive_lines(render_script(load("microbead_optimized", *overrides), "slurm", tmp_path))
    assert [ln for ln in d if ln.startswith(("#SBATCH --gres", "#SBATCH --gpus"))] == want


def test_nv_only_with_gpus_and_gpu_enabled(tmp_path):
    assert "--nv" in container_command(load("microbead_optimized"), tmp_path)
    assert "--nv" not in container_command(load("microbead_optimized", "resources.gpus=0"), tmp_path)
    assert "--nv" not in container_command(load("microbead_optimized", "container.gpu=false"), tmp_path)


def test_array_parallelism_and_no_signal(tmp_path):
    spec = load("microbead_optimized", "resources.array_parallelism=2", "resources.slurm.signal_seconds=0")
    d = directive_lines(render_script(spec, "slurm", tmp_path))
    assert "#SBATCH --array=0-2%2" in d
    assert not any("--signal" in ln for ln in d)
    assert "#PBS -J 0-2%2" in directive_lines(render_script(spec, "pbs", tmp_path))
    torque = load("microbead_optimized", "resources.array_parallelism=2", "resources.pbs.flavor=torque")
    assert "#PBS -t 0-2%2" in directive_lines(render_script(torque, "pbs", tmp_path))


def test_task_subsets(tmp_path):
    spec = load("ham10000_comparison")  # 4 tasks
    assert "#SBATCH --array=0-1,3" in directive_lines(render_script(spec, "slurm", tmp_path, task_indices=[3, 0, 1]))
    assert "#PBS -J 0-2:2" in directive_lines(render_script(spec, "pbs", tmp_path, task_indices=[0, 2]))
    with pytest.raises(HpcsegError, match="one range"):
        render_script(spec, "pbs", tmp_path, task_indices=[0, 1, 3])
    with pytest.raises(HpcsegError, match="tasks 0-3"):
        render_script(spec, "slurm", tmp_path, task_indices=[9])
    script = render_script(spec, "slurm", tmp_path, task_indices=[3])
    assert "[3]=tasks/vit_b_16/fold_0" in script and "[0]=" not in script


def test_pbs_pro_directives(tmp_path):
    spec = load("microbead_optimized", "resources.account=proj42", "resources.pbs.extra=[-m abe, -W group_list=lab]")
    d = directive_lines(render_script(spec, "pbs", tmp_path))
    assert d == ["#PBS -N microbead_optim", "#PBS -q gpu", "#PBS -P proj42",
                 "#PBS -l select=1:ncpus=36:ngpus=1:mem=240gb", "#PBS -l walltime=12:00:00", "#PBS -J 0-2",
                 "#PBS -o logs/microbead_optim.o^array_index^", "#PBS -e logs/microbead_optim.e^array_index^",
                 "#PBS -r y", "#PBS -m abe", "#PBS -W group_list=lab"]
    spec = load("microbead_optimized", "resources.account=proj42", "resources.pbs.account_flag=-A",
                "resources.pbs.select=2:ncpus=4:host=n1")
    d = directive_lines(render_script(spec, "pbs", tmp_path))
    assert "#PBS -A proj42" in d and "#PBS -l select=2:ncpus=4:host=n1" in d
    spec = load("microbead_optimized", "resources.pbs.select=select=1:ncpus=2")
    assert "#PBS -l select=1:ncpus=2" in directive_lines(render_script(spec, "pbs", tmp_path))


def test_torque_flavor(tmp_path):
    spec = load("microbead_optimized", "resources.pbs.flavor=torque", "resources.memory=1500M")
    d = directive_lines(render_script(spec, "pbs", tmp_path))
    assert "#PBS -l nodes=1:ppn=36:gpus=1,mem=1500mb" in d
    assert "#PBS -t 0-2" in d
    assert "#PBS -o logs/microbead_optim.out" in d and "#PBS -e logs/microbead_optim.err" in d
    assert not any(ln.startswith("#PBS -J") or "select=" in ln for ln in d)


@pytest.mark.parametrize("slug, want", [("microbead_optimized", "microbead_optim"), ("123abc", "j123abc"),
                                        ("_x", "j_x"), ("short", "short")])
def test_pbs_job_name(slug, want):
    assert pbs_job_name(slug) == want


def test_slurm_extra_and_qos_constraint_account(tmp_path):
    spec = load("microbead_optimized", "resources.account=lab-1", "resources.slurm.qos=high",
                "resources.slurm.constraint=a100&ib", 'resources.slurm.extra=["--exclusive", "--mail-type=END,FAIL"]')
    d = directive_lines(render_script(spec, "slurm", tmp_path))
    for line in ["#SBATCH --account=lab-1", "#SBATCH --qos=high", "#SBATCH --constraint=a100&ib",
                 "#SBATCH --exclusive", "#SBATCH --mail-type=END,FAIL"]:
        assert line in d


@pytest.mark.parametrize("overrides, slurm, pbs", [
    (("resources.memory=1K",), "--mem=1M", "mem=1mb"),  # rounded up: --mem=0 is the whole node on Slurm
    (("resources.memory=0.1G",), "--mem=103M", "mem=103mb"),
    (("resources.memory=1.5T",), "--mem=1572864M", "mem=1536gb"),
    (("resources.mem_per_gpu=1K", "resources.gpus=2"), "--mem-per-gpu=1M", "mem=2mb"),
    (("resources.mem_per_gpu=80GiB", "resources.gpus=1"), "--mem-per-gpu=81920M", "mem=80gb"),
])
def test_memory_is_rounded_up_and_never_none(tmp_path, overrides, slurm, pbs):
    spec = load("microbead_optimized", *overrides)
    assert f"#SBATCH {slurm}" in directive_lines(render_script(spec, "slurm", tmp_path))
    assert any(ln.endswith(f":{pbs}") for ln in directive_lines(render_script(spec, "pbs", tmp_path)))


def test_walltime_is_written_from_ascii_digits(tmp_path):
    spec = load("microbead_optimized", "resources.walltime=1:05:00")
    assert "#SBATCH --time=01:05:00" in directive_lines(render_script(spec, "slurm", tmp_path))
    for bad in ('"\\n12:00:00"', '"١٢:00:00"', '"12:00:00 "'):
        try:
            spec = load("microbead_optimized", f"resources.walltime={bad}")
        except HpcsegError:
            continue  # the schema refused it already
        with pytest.raises(HpcsegError, match="^resources.walltime: .* cannot go on a scheduler directive line"):
            render_script(spec, "slurm", tmp_path)


def test_pbs_script_exports_the_deadline(tmp_path):
    text = render_script(load("microbead_optimized", "resources.walltime=01:00:00"), "pbs", tmp_path)
    assert "export HPCSEG_DEADLINE=$(( $(date +%s) + 3300 ))" in text  # 3600 - signal_seconds (300)
    short = render_script(load("microbead_optimized", "resources.walltime=00:04:00"), "pbs", tmp_path)
    assert "export HPCSEG_DEADLINE=$(( $(date +%s) + 120 ))" in short  # the margin is at most half
    assert "HPCSEG_DEADLINE" not in render_script(load("microbead_optimized"), "slurm", tmp_path)


@pytest.mark.parametrize("scheduler, override, field", [
    ("slurm", 'resources.queue="gpu\\n#SBATCH --wrap=x"', "resources.queue"),
    ("pbs", 'resources.queue="gpu\\rq"', "resources.queue"),
    ("slurm", 'resources.account="a\\nb"', "resources.account"),
    ("pbs", 'resources.account="a b"', "resources.account"),
    ("slurm", 'resources.slurm.qos="q;x"', "resources.slurm.qos"),
    ("slurm", 'resources.slurm.constraint="a\\u0000b"', "resources.slurm.constraint"),
    ("slurm", 'resources.slurm.extra=["--exclusive\\n#SBATCH --uid=0"]', "resources.slurm.extra.0"),
    ("slurm", 'resources.slurm.extra=["--comment=$(id)"]', "resources.slurm.extra.0"),
    ("slurm", 'resources.slurm.extra=["--exclusive", "--mem=1G"]', "resources.slurm.extra.1"),
    ("pbs", 'resources.pbs.extra=["-m abe\\n#PBS -l select=99"]', "resources.pbs.extra.0"),
    ("pbs", 'resources.pbs.extra=["-J 0-9"]', "resources.pbs.extra.0"),
    ("pbs", 'resources.pbs.select="1:ncpus=2\\n#PBS -q x"', "resources.pbs.select"),
    ("slurm", 'resources.slurm.extra=["--arr=0-99"]', "resources.slurm.extra.0"),
    ("slurm", 'resources.slurm.extra=["-t5"]', "resources.slurm.extra.0"),
    ("slurm", 'resources.slurm.extra=["--exclusive --array=1"]', "resources.slurm.extra.0"),
    ("slurm", 'resources.slurm.extra=["--no-req"]', "resources.slurm.extra.0"),
    ("slurm", 'resources.slurm.extra=["--ex"]', "resources.slurm.extra.0"),
    ("pbs", 'resources.pbs.extra=["-hNname"]', "resources.pbs.extra.0"),
    ("pbs", 'resources.pbs.extra=["-l place=scatter,walltime=99:00:00"]', "resources.pbs.extra.0"),
    ("pbs", 'resources.pbs.extra=["-W depend=afterok:1"]', "resources.pbs.extra.0"),
    ("pbs", 'resources.queue="gpu\u0661"', "resources.queue"),
])
def test_directive_injection_is_refused(tmp_path, scheduler, override, field):
    spec = load("microbead_optimized", override)
    with pytest.raises(HpcsegError) as info:
        render_script(spec, scheduler, tmp_path)
    assert info.value.message.startswith(f"{field}:")
    assert "\n" not in info.value.message


# --------------------------------------------------------------------------------------------- container


def test_container_command_binds_and_dedup(tmp_path):
    data = load("ham10000_comparison").model_dump(mode="json")
    root = data["workload"]["dataset"]["root"]
    data["container"]["binds"] = [{"src": root, "dst": None, "mode": "rw"},
                                  {"src": "/scratch/cache", "dst": "/cache", "mode": "ro"}]
    spec = JobSpec.model_validate(data)
    argv = container_command(spec, tmp_path / "r")
    binds = [argv[i + 1] for i, a in enumerate(argv) if a == "-B"]
    weights = str(Path(spec.workload.models[0].weights).parent)
    # four models share one weights folder: bound once; the dataset asked rw by the user becomes rw
    assert binds == [f"{root}:{root}", f"{tmp_path / 'r'}:{tmp_path / 'r'}", f"{weights}:{weights}:ro",
                     "/scratch/cache:/cache:ro"]
    assert argv[:3] == ["singularity", "exec", "--nv"]
    assert argv[-4:] == ["hpcseg", "train", "--run", str(tmp_path / "r")]
    assert argv[-5] == spec.container.image


def test_container_command_entrypoint_and_runtime_none(tmp_path):
    spec = load("microbead_optimized", profile="quick")
    assert container_command(spec, tmp_path) == [sys.executable, "-m", "hpcseg", "train", "--run", str(tmp_path)]
    assert container_command(spec, tmp_path, ["/opt/x/hpcseg"]) == ["/opt/x/hpcseg", "train", "--run", str(tmp_path)]
    inside = container_command(load("microbead_optimized"), tmp_path, ["python", "-m", "hpcseg"])
    assert inside[-6:] == ["python", "-m", "hpcseg", "train", "--run", str(tmp_path)]


def test_runtime_none_script_runs_the_entrypoint(tmp_path):
    spec = load("microbead_optimized", profile="quick")
    bindir = make_bin(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    script = render_script(spec, "pbs", run_dir, entrypoint=[str(bindir / "singularity")])
    proc = run_script(script, tmp_path, clean_env(tmp_path, bindir, PBS_ARRAYID="0", STUB_EXIT="4"))
    assert proc.returncode == 4
    assert read_argv(tmp_path / "argv.bin") == ["train", "--run", str(run_dir), "--task", "0"]
    assert (run_dir / "tasks/unet/fold_0/exit_code").read_text() == "4\n"
    assert "export HPCSEG_CPUS=36" in script


@pytest.mark.parametrize("override, field", [
    ("workload.dataset.root=/data/a:b", "workload.dataset.root"),
    ("container.binds=[{src: /x, dst: /y}, {src: /z, dst: /y}]", "container.binds.1"),
    ("container.binds=[{src: /x, dst: rel}]", "container.binds.0"),
    ("container.binds=[{src: '/x,y'}]", "container.binds.0"),
])
def test_unbindable_paths_are_refused(tmp_path, override, field):
    with pytest.raises(HpcsegError) as info:
        container_command(load("microbead_optimized", override), tmp_path)
    assert info.value.message.startswith(f"{field}:")


def test_each_runtime_builds_its_own_command_line():
    """One class per runtime: the same image, binds, GPU flag and environment in each one's own words."""
    from hpcseg.containers import RUNTIMES, Bind, get_runtime

    binds = [Bind("/data", "/data", "ro", "d"), Bind("/runs/r", "/runs/r", "rw", "r")]
    env = {"HPCSEG_CPUS": "4"}
    argv = ["hpcseg", "train"]
    assert set(RUNTIMES) == {"singularity", "apptainer", "charliecloud", "none"}
    assert get_runtime("singularity").command("/i.sif", binds, True, env, argv) == [
        "singularity", "exec", "--nv", "--env", "HPCSEG_CPUS=4", "-B", "/data:/data:ro", "-B", "/runs/r:/runs/r",
        "/i.sif", "hpcseg", "train"]
    assert get_runtime("apptainer").command("/i.sif", binds, False, {}, argv)[:2] == ["apptainer", "exec"]
    ch = get_runtime("charliecloud").command("/img", binds, True, env, argv)  # tests/test_charliecloud.py
    assert ch[4] == "ch-run" and "--nv" not in ch and "--set-env=HPCSEG_CPUS=4" in ch
    assert ch[ch.index("-b"):ch.index("/img")] == ["-b", "/data:/data", "-b", "/runs/r:/runs/r"]
    assert ch[-5:] == ["hpcseg-ro", "/data", "--", "hpcseg", "train"]  # /data remounted read-only
    assert get_runtime("none").command("", binds, True, {}, argv) == argv
    with pytest.raises(HpcsegError, match="container.runtime: unknown runtime 'docker'"):
        get_runtime("docker")


def test_charliecloud_wraps_the_training_command(tmp_path):
    from hpcseg.containers import container_command as cc

    spec = load("microbead_optimized")
    # spec.py's runtime list gains charliecloud with the Charliecloud image work; the class works already
    spec = JobSpec.model_construct(**{**spec.__dict__, "container": spec.container.model_copy(
        update={"runtime": "charliecloud"})})
    argv = cc(spec, tmp_path)
    assert argv[4] == "ch-run" and "--nv" not in argv
    assert argv[argv.index("--") - 1] == spec.container.image
    assert argv[-4:] == ["hpcseg", "train", "--run", str(tmp_path)]
    assert f"{tmp_path}:{tmp_path}" in argv


def test_colon_in_dataset_is_fine_without_container(tmp_path):
    spec = load("microbead_optimized", "workload.dataset.root=/data/a:b", profile="quick")
    assert container_command(spec, tmp_path)[-3:] == ["train", "--run", str(tmp_path)]


# --------------------------------------------------------------------------------------------- templates


def _job_copy(where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    job = where / "microbead_optimized.yaml"
    shutil.copy(REPO / "jobs" / "microbead_optimized.yaml", job)
    return job


def test_templates_come_only_from_the_job_folder_or_templates_and_are_reported(tmp_path):
    """Shipped set, --templates DIR, or templates/ in the job file's own folder; never one further up
    (issue 10: a templates/ two levels up, even a world-writable /tmp/templates, was used silently)."""
    job = _job_copy(tmp_path / "proj" / "jobs")
    (tmp_path / "proj" / "templates").mkdir()
    (tmp_path / "proj" / "templates" / "slurm.sh.j2").write_text("#!/bin/bash\n# SITE TEMPLATE (parent)\n")
    spec = load_job(job).spec
    heard: list[list[Path]] = []
    script = render_script(spec, "slurm", tmp_path / "r", job_file=job, on_template=heard.append)
    assert "(parent)" not in script and "set -euo pipefail" in script and heard == []
    # a templates/ folder right next to the job file is used, can include shipped parts, and is reported
    beside = job.parent / "templates"
    beside.mkdir()
    (beside / "slurm.sh.j2").write_text(
        "#!/bin/bash\n#SBATCH --job-name={{ d.job_name }}\n# SITE TEMPLATE (beside)\n{% include 'body.sh.j2' %}")
    script = render_script(spec, "slurm", tmp_path / "r", job_file=job, on_template=heard.append)
    assert "(beside)" in script and "set -euo pipefail" in script
    assert heard == [[beside / "slurm.sh.j2"]]
    # the PBS template was not overridden: the shipped one is used, and nothing is reported
    heard.clear()
    assert "#PBS -r y" in render_script(spec, "pbs", tmp_path / "r", job_file=job, on_template=heard.append)
    assert heard == []
    # --templates beats it
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "slurm.sh.j2").write_text("#!/bin/bash\n# MINE {{ d.array }}\n")
    assert render_script(spec, "slurm", tmp_path / "r", job_file=job, templates=mine) == "#!/bin/bash\n# MINE 0-2\n"
    # a world-writable templates/ beside the job is refused (anyone could rewrite the job script)
    beside.chmod(0o777)
    with pytest.raises(HpcsegError, match="writable by every user"):
        render_script(spec, "slurm", tmp_path / "r", job_file=job)


def test_cli_render_says_when_a_template_is_not_shipped(tmp_path, capsys):
    job = _job_copy(tmp_path / "proj")
    (job.parent / "templates").mkdir()
    (job.parent / "templates" / "pbs.sh.j2").write_text("#!/bin/bash\n# SITE\n")
    assert main(["render", str(job), "--scheduler", "pbs"]) == 0
    out, err = capsys.readouterr()
    assert out == "#!/bin/bash\n# SITE\n"
    assert err.splitlines() == [f"hpcseg render: not the shipped template: {job.parent / 'templates' / 'pbs.sh.j2'}"]


@pytest.mark.parametrize("kind", ["symlink", "fifo", "dangling", "folder"])
def test_cli_render_o_replaces_only_regular_files(tmp_path, capsys, kind):
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    out = tmp_path / "job.slurm"
    if kind == "symlink":
        out.symlink_to(target)
    elif kind == "dangling":
        out.symlink_to(tmp_path / "nowhere")
    elif kind == "fifo":
        os.mkfifo(out)
    else:
        out.mkdir()
    assert main(["render", "microbead_optimized", "--scheduler", "slurm", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(rf"hpcseg render: -o {re.escape(str(out))}: is a (symbolic link|FIFO|folder), not a "
                        r"regular file; .*\n", err), err
    assert target.read_text() == "keep me\n"
    assert out.is_symlink() or out.is_fifo() or out.is_dir()
    # a regular file is replaced as before
    (tmp_path / "plain").write_text("old")
    assert main(["render", "microbead_optimized", "--scheduler", "slurm", "-o", str(tmp_path / "plain")]) == 0
    assert (tmp_path / "plain").read_text().startswith("#!/bin/bash")


def test_undefined_template_variable_is_a_clean_error(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "slurm.sh.j2").write_text("#!/bin/bash\n\n# {{ d.job_name }}\n#SBATCH --x={{ no_such_var }}\n")
    with pytest.raises(HpcsegError) as info:
        render_script(load("microbead_optimized"), "slurm", tmp_path, templates=mine)
    msg = info.value.message
    assert "no_such_var" in msg and f"{mine / 'slurm.sh.j2'}:4" in msg and "\n" not in msg


def test_template_syntax_error_names_file_and_line(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "pbs.sh.j2").write_text("#!/bin/bash\n{% if %}\n")
    with pytest.raises(HpcsegError, match=re.escape(f"{mine / 'pbs.sh.j2'}:2: template syntax error")):
        render_script(load("microbead_optimized"), "pbs", tmp_path, templates=mine)
    with pytest.raises(HpcsegError, match="no such folder"):
        render_script(load("microbead_optimized"), "pbs", tmp_path, templates=tmp_path / "nope")


# --------------------------------------------------------------------------------------------- CLI


def test_cli_render_writes_executable_script(tmp_path, capsys):
    out = tmp_path / "o" / "job.pbs"
    rc = main(["render", str(REPO / "jobs" / "marida_se_unet.yaml"), "--scheduler", "pbs",
               "--run-dir", str(tmp_path / "run"), "-o", str(out)])
    assert rc == 0
    assert out.stat().st_mode & 0o777 == 0o755
    text = out.read_text()
    assert text.startswith("#!/bin/bash\n#PBS -N marida_se_unet\n")
    assert f"RUN_DIR={tmp_path / 'run'}" in text


def test_cli_render_prints_with_default_run_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = main(["render", str(REPO / "jobs" / "microbead_optimized.yaml"), "--profile", "quick",
               "--set", "training.epochs=3"])
    assert rc == 0
    text = capsys.readouterr().out
    assert f"RUN_DIR={tmp_path}/runs/microbead_optimized/DRY-RUN" in text
    assert text.startswith("#!/bin/bash\n#SBATCH")


def test_cli_render_error_is_one_line_and_exit_2(tmp_path, capsys):
    rc = main(["render", str(REPO / "jobs" / "microbead_optimized.yaml"), "--set", "resources.queue=a b"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("hpcseg render: --set resources.queue=a b: resources.queue:") and err.count("\n") == 1


# --------------------------------------------------------------------------------------------- image


def test_singularity_definition_sections():
    text = (REPO / "singularity" / "hpcseg.def").read_text()
    header_lines = dict(re.findall(r"^(Bootstrap|From):\s*(\S+)", text, re.M))
    assert header_lines["Bootstrap"] == "docker"
    assert re.fullmatch(r"(pytorch/pytorch:[\w.]+-cuda[\d.]+-cudnn\d+-devel|nvcr\.io/nvidia/pytorch:[\w.-]+)",
                        header_lines["From"])
    sections = {m.group(1): m.group(2) for m in re.finditer(r"^%(\w+)\n(.*?)(?=^%\w+|\Z)", text, re.M | re.S)}
    assert {"labels", "files", "post", "environment", "runscript", "test"} <= set(sections)
    post = sections["post"]
    assert "mamba-ssm" in post and "MAX_JOBS" in post
    assert re.search(r"pip install[^\n]*--no-deps /opt/hpcseg/src", post)
    assert post.index("mamba-ssm") < post.index("--no-deps /opt/hpcseg/src")
    assert "hpcseg" in sections["files"] and "exec hpcseg" in sections["runscript"]
    assert all(m in sections["test"] for m in ("import torch", "hpcseg", "mamba_ssm", "torch.cuda.is_available()"))


# --------------------------------------------------------------------------------------------- Slurm


@pytest.mark.slurm
def test_sbatch_accepts_rendered_scripts(tmp_path, request):
    if shutil.which("sbatch") is None:
        pytest.skip("sbatch is not on PATH (start the local cluster: scripts/local-slurm.sh up)")
    try:
        request.getfixturevalue("slurm_cluster")
    except pytest.FixtureLookupError:
        pytest.skip("no slurm_cluster fixture in tests/conftest.py yet")
    for job in JOBS:
        spec = load(job.stem, "resources.gpus=0", "resources.queue=null", "resources.cpus=1",
                    "resources.memory=100M", profile="quick")
        run_dir = tmp_path / job.stem
        (run_dir / "logs").mkdir(parents=True)
        (run_dir / "job.slurm").write_text(render_script(spec, "slurm", run_dir))
        proc = subprocess.run(["sbatch", "--test-only", "job.slurm"], cwd=run_dir, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, f"{job.stem}: {proc.stderr}"
