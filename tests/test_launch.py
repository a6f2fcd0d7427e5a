"""The data-parallel launch (resources.nodes, resources.gpus > 1, resources.processes_per_node).

Render tests: directives, owned options, bash syntax of every new path, and single-process scripts
unchanged. Slurm tests (the local cluster; HPCSEG_SLURM=1): 2 processes on one node, 2 virtual nodes
x 1 process (srun + c10d rendezvous), and a walltime USR1 that requeues and resumes every rank. The
trainer's own side (sharding, all-reduce, exact resume) is tests/test_distributed.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpcseg.errors import HpcsegError
from hpcseg.jobload import load_job
from hpcseg.render import render_script

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
EPOCHS = 25  # 0.2-0.3 s each here: long enough to signal mid-training (the signal lands in < 1 s)

JOB = """\
name: ddp_launch
workload:
  task: binary_segmentation
  dataset: {{root: {root}, layout: microbead, image_size: 32, channels: 1, expected_count: 12}}
  models:
    - {{name: unet, arch: unet, channels: [4, 8], dropout: 0.0}}
  split: {{method: stratified, val_fraction: 0.25, density_bins: 2}}
  seed: 3
training:
  epochs: {epochs}
  batch_size: 4
  lr: 3.0e-3
  loss: ce
resources:
  cpus: 2
  memory: 2G
  walltime: "00:20:00"
{resources}
"""


def job_file(tmp_path: Path, root: Path | str = "/data/beads", epochs: int = 2, resources: str = "",
             name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(JOB.format(root=root, epochs=epochs, resources=resources))
    return path


def render(tmp_path: Path, scheduler: str, resources: str = "", **kw) -> str:
    loaded = load_job(job_file(tmp_path, resources=resources, **kw))
    return render_script(loaded.spec, scheduler, tmp_path / "runs" / "r1")


def bash_n(text: str) -> None:
    p = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr


def directives(text: str, prefix: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(prefix)]


# --------------------------------------------------------------------------------------------- spec


@pytest.mark.parametrize("resources, message", [
    ("  gpus: 2\n  processes_per_node: 3", "one training process per GPU"),
    ("  nodes: 0", "resources.nodes"),
    ("  nodes: 3", "does not divide over the 3 training processes"),
])
def test_bad_launch_settings_are_refused_naming_the_field(tmp_path, resources, message):
    path = job_file(tmp_path, resources=resources)
    with pytest.raises(HpcsegError) as exc:
        load_job(path)
    lines = exc.value.lines()
    assert len(lines) == 2 and message in lines[1], lines  # the file, then one line naming the field


# --------------------------------------------------------------------------------------------- rendering


def test_one_process_jobs_render_without_any_launcher(tmp_path):
    for scheduler in ("slurm", "pbs"):
        text = render(tmp_path, scheduler)
        assert "torchrun" not in text and "srun" not in text and "HPCSEG_DEVICE" not in text
        bash_n(text)
    text = render(tmp_path, "slurm")
    assert "#SBATCH --nodes=1" in text and "#SBATCH --ntasks=1" in text
    assert "ntasks-per-node" not in text


def test_two_processes_on_one_node(tmp_path):
    text = render(tmp_path, "slurm", "  processes_per_node: 2")
    bash_n(text)
    assert directives(text, "#SBATCH --n") == ["#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1"]
    assert "#SBATCH --cpus-per-task=2" in text
    assert "--standalone" in text and "export HPCSEG_DEVICE=cpu" in text
    assert re.search(r"^NPROC=2$", text, re.M)
    # torchrun starts the same entry point the one-process command uses
    assert f"ENTRY=(\n  {PY}\n  -m\n  hpcseg\n  train\n" in text
    assert f"TORCHRUN=(\n  {PY}\n  -m\n  torch.distributed.run\n)" in text
    assert "( trap '' USR1; exec \"$@\" ) &" in text


def test_gpu_nodes_ask_per_node_for_what_the_launch_needs(tmp_path):
    path = job_file(tmp_path, resources="  nodes: 2\n  gpus: 2")
    path.write_text(path.read_text().replace("cpus: 2", "cpus: 16").replace("batch_size: 4", "batch_size: 8"))
    spec = load_job(path).spec
    text = render_script(spec, "slurm", tmp_path / "r")
    bash_n(text)
    assert directives(text, "#SBATCH --n") == ["#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1"]
    assert "#SBATCH --gres=gpu:2" in text and "#SBATCH --cpus-per-task=16" in text
    assert "export HPCSEG_DEVICE=cuda" in text and "srun --nodes=" in text and "--rdzv-backend c10d" in text
    gpus_flag = spec.model_copy(update={"resources": spec.resources.model_copy(
        update={"slurm": spec.resources.slurm.model_copy(update={"gpu_flag": "gpus"})})})
    assert "#SBATCH --gpus-per-node=2" in render_script(gpus_flag, "slurm", tmp_path / "r")
    pbs = render_script(spec, "pbs", tmp_path / "r")
    bash_n(pbs)
    assert "#PBS -l select=2:ncpus=16:ngpus=2:mem=2gb" in pbs and "#PBS -l place=scatter" in pbs
    assert "pbsdsh -n" in pbs and "PBS_NODEFILE" in pbs
    torque = spec.model_copy(update={"resources": spec.resources.model_copy(
        update={"pbs": spec.resources.pbs.model_copy(update={"flavor": "torque"})})})
    text = render_script(torque, "pbs", tmp_path / "r")
    assert "#PBS -l nodes=2:ppn=16:gpus=2,mem=2gb" in text and "place=" not in text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(nodes=st.integers(1, 64), gpus=st.integers(0, 8), ppn=st.none() | st.integers(1, 8),
       flag=st.sampled_from(["gres", "gpus"]), flavor=st.sampled_from(["pro", "torque"]))
def test_directives_follow_nodes_gpus_and_processes(tmp_path, nodes, gpus, ppn, flag, flavor):
    """Whatever the layout: a valid one asks Slurm and PBS for exactly `nodes` nodes with one launcher
    each and `gpus` GPUs per node, and the script launches torchrun iff there is more than one process;
    an invalid one is refused when loaded, naming the field."""
    from pydantic import ValidationError

    from hpcseg.schedulers.pbs import pbs_directives
    from hpcseg.schedulers.slurm import slurm_directives
    from hpcseg.spec import JobSpec

    doc = load_job(job_file(tmp_path)).spec.model_dump()
    r = doc["resources"]
    r.update(nodes=nodes, gpus=gpus, processes_per_node=ppn, cpus=8)
    r["slurm"]["gpu_flag"], r["pbs"]["flavor"] = flag, flavor
    world = nodes * (ppn or max(gpus, 1))
    doc["training"]["batch_size"] = world * 2
    try:
        spec = JobSpec.model_validate(doc)
    except ValidationError as exc:
        assert ppn is not None and gpus > 0 and ppn != gpus, exc
        assert "processes_per_node" in str(exc)
        return
    assert spec.resources.world_size == world
    d = slurm_directives(spec, [0])
    assert d["nodes"] == nodes
    assert d["tasks"] == ("--ntasks-per-node=1" if world > 1 else "--ntasks=1")
    if gpus:
        per_node = "--gres=gpu:" if flag == "gres" else ("--gpus=" if nodes == 1 else "--gpus-per-node=")
        assert d["gpus"] == f"{per_node}{gpus}"
    else:
        assert d["gpus"] is None
    p = pbs_directives(spec, [0])
    first = p["resources"].split(",")[0]
    if flavor == "pro":
        assert first.startswith(f"select={nodes}:ncpus=8") and (f":ngpus={gpus}" in first) == bool(gpus)
        assert p["place"] == ("place=scatter" if nodes > 1 else None)
    else:
        assert first == f"nodes={nodes}:ppn=8" + (f":gpus={gpus}" if gpus else "") and p["place"] is None
    text = render_script(spec, "slurm", tmp_path / "r")
    assert ("torchrun" in text) == (world > 1)


@pytest.mark.parametrize("field, line", [
    ("resources.slurm.extra", "--ntasks-per-node=4"),
    ("resources.slurm.extra", "--ntasks-per-gpu=1"),
    ("resources.slurm.extra", "--nodes=3"),
    ("resources.slurm.extra", "--tres-per-task=gres/gpu:1"),
    ("resources.pbs.extra", "-l place=pack"),
])
def test_extras_cannot_override_what_the_launch_owns(tmp_path, field, line):
    path = job_file(tmp_path, resources=f"  nodes: 2\n  {field.split('.')[1]}: {{extra: [\"{line}\"]}}")
    spec = load_job(path).spec
    with pytest.raises(HpcsegError, match=re.escape(field) + r"\.0: .*hpcseg sets"):
        render_script(spec, field.split(".")[1], tmp_path / "r")


def test_launch_section_keeps_the_exit_code_and_signal_contract(tmp_path):
    """The launcher section, run by bash with a stand-in torchrun: USR1 goes to torchrun's children (not
    torchrun, which ignores it), and the task's code comes from the result.json this attempt wrote."""
    stub = tmp_path / "torchrun"
    # A stand-in torchrun: starts one "trainer" child that writes result.json with exit_code 75 on USR1.
    trainer = ("import os, pathlib, signal, time\n"
               "d = pathlib.Path(os.environ['TASK_DIR'])\n"
               "def stop(*_):\n"
               "    (d / 'result.json').write_text('{\"exit_code\": 75}')\n"
               "    os._exit(75)\n"
               "signal.signal(signal.SIGUSR1, stop)\n"
               "(d / 'started').touch()\n"
               "time.sleep(60)\n")
    (tmp_path / "trainer.py").write_text(trainer)
    stub.write_text(f"#!/bin/bash\n{PY} {tmp_path / 'trainer.py'} &\nwait $!\nexit 1\n")
    stub.chmod(0o755)
    text = render(tmp_path, "slurm", "  processes_per_node: 2")
    run_dir = tmp_path / "runs" / "r1"
    text = re.sub(r"TORCHRUN=\(\n.*?\n\)", f"TORCHRUN=(\n  {stub}\n)", text, flags=re.S)
    script = tmp_path / "job.sh"
    script.write_text(text)
    task = run_dir / "tasks/unet/fold_0"
    run_dir.mkdir(parents=True)
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "0", "TASK_DIR": str(task)}
    env.pop("SLURM_JOB_ID", None)
    proc = subprocess.Popen(["bash", str(script)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while not (task / "started").exists():
        assert time.monotonic() < deadline and proc.poll() is None, f"no stand-in trainer: {proc.communicate()}"
        time.sleep(0.1)
    os.kill(proc.pid, 10)  # USR1 to the job script, as --signal=B:USR1 sends it
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 75, out  # not torchrun's 1
    assert (task / "exit_code").read_text().strip() == "75"  # no SLURM_JOB_ID: no requeue, recorded
    assert "the task's exit code (result.json) is 75" in out


# --------------------------------------------------------------------------------------------- check (#10)


@pytest.mark.parametrize("resources, field", [
    ("  slurm: {extra: [\"--time=99:00:00\"]}", "resources.slurm.extra.0"),
    ("  pbs: {extra: [\"-l walltime=99:00:00\"]}", "resources.pbs.extra.0"),
    ("  slurm: {qos: \"a b\"}", "resources.slurm.qos"),
])
def test_check_finds_what_submit_would_refuse_on_a_directive_line(tmp_path, resources, field):
    path = job_file(tmp_path, resources=resources)
    p = subprocess.run([PY, "-m", "hpcseg", "check", str(path)], capture_output=True, text=True, cwd=REPO,
                       timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    lines = [ln for ln in p.stdout.splitlines() if "[directives]" in ln]
    assert lines and field in lines[0], p.stdout


# --------------------------------------------------------------------------------------------- local Slurm


@pytest.fixture(scope="module")
def beads(tmp_path_factory):
    pytest.importorskip("torch")
    from hpcseg.workloads.microbead.synth import make_microbeads

    root = tmp_path_factory.mktemp("launch") / "data"
    make_microbeads(root, n=12, size=32)
    return root


def submit(tmp_path: Path, beads: Path, resources: str, epochs: int = 2):
    from hpcseg.submit import submit_job

    loaded = load_job(job_file(tmp_path, root=beads, epochs=epochs, resources=resources))
    from hpcseg.spec import with_absolute_paths

    loaded.spec = with_absolute_paths(loaded.spec)
    return submit_job(loaded, "slurm", runs_dir=tmp_path / "runs", check=False)


def wait_done(run, timeout: float = 400) -> Path:
    task = run.dir / "tasks/unet/fold_0"
    deadline = time.monotonic() + timeout
    while not (task / "exit_code").exists():
        if time.monotonic() > deadline:
            logs = "\n".join(p.read_text()[-3000:] for p in sorted((run.dir / "logs").glob("*")))
            pytest.fail(f"task not ended after {timeout} s\n{logs}")
        time.sleep(0.5)
    return task


def logs_of(run) -> str:
    return "\n".join(p.read_text() for p in sorted((run.dir / "logs").glob("*")))


@pytest.mark.slurm
@pytest.mark.parametrize("layout, nodes, here", [("  processes_per_node: 2", 1, 2), ("  nodes: 2", 2, 1)],
                         ids=["1node_x2", "2nodes_x1"])
def test_slurm_data_parallel_task_survives_usr1_and_completes(tmp_path, beads, cleanup, layout, nodes, here):
    """2 processes on one node (torchrun --standalone), or 2 virtual nodes x 1 (srun + c10d rendezvous at
    the first node's NodeAddr), each interrupted mid-training by the walltime warning as
    --signal=B:USR1 sends it: the batch shell passes it to the node's launcher (one node) or to srun
    (two), whose launchers pass it to the trainers, not to torchrun. Every rank checkpoints and exits 75,
    the element requeues itself, and the next attempt resumes both ranks to the last epoch."""
    run = submit(tmp_path, beads, layout, epochs=EPOCHS)
    cleanup += run.manifest["native_ids"]
    task = run.dir / "tasks/unet/fold_0"
    history = task / "history.csv"
    deadline = time.monotonic() + 300
    while not history.exists() or history.read_text().count("\n") < 2:
        assert time.monotonic() < deadline, f"training did not start\n{logs_of(run)}"
        time.sleep(0.5)
    job = run.manifest["task_ids"]["0"]
    subprocess.run(["scancel", "--batch", "--signal=USR1", job], check=True, timeout=30)
    task = wait_done(run, timeout=500)
    out = logs_of(run)
    assert (task / "exit_code").read_text().strip() == "0", out
    assert f"({nodes} node(s) x {here} process(es))" in out
    log = (task / "train.log").read_text()
    assert f"data parallel: 2 process(es) ({here} on this node), gloo" in log
    if nodes > 1:
        assert "rendezvous at " in out
        n = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "NNodes", "-j", job], capture_output=True,
                           text=True, timeout=30).stdout.split()
        assert n and n[0] == str(nodes), n
    events = (task / "events.log").read_text()
    assert "requeueing" in events, events
    assert "the task's exit code (result.json) is 75" in out  # not torchrun's 1
    assert "checkpoint written, requeue to go on" in log and "resum" in log.lower(), log[-3000:]
    result = json.loads((task / "result.json").read_text())
    assert result["exit_code"] == 0 and result["reason"] == "completed", result
    rows = [r.split(",")[0] for r in history.read_text().strip().splitlines()[1:]]
    assert rows == [str(e) for e in range(1, EPOCHS + 1)], rows  # every epoch once (rank 0): resumed


@pytest.mark.slurm
def test_pbs_script_on_two_nodes_through_the_torque_wrapper(tmp_path, beads, cleanup):
    """The PBS script (select=2:..., place=scatter) submitted with Slurm's qsub wrapper: the allocation is
    Slurm's, so the script launches with srun; pbsdsh itself needs a real PBS (rendered and bash -n only)."""
    from hpcseg.spec import with_absolute_paths
    from hpcseg.submit import submit_job

    loaded = load_job(job_file(tmp_path, root=beads, epochs=2, resources="  nodes: 2"))
    loaded.spec = with_absolute_paths(loaded.spec)
    run = submit_job(loaded, "pbs", runs_dir=tmp_path / "runs", check=False)
    cleanup += run.manifest["native_ids"]
    assert "#PBS -l select=2:ncpus=2:mem=2gb" in (run.dir / "job.pbs").read_text()
    task = wait_done(run)
    log = (task / "train.log").read_text()
    assert (task / "exit_code").read_text().strip() == "0", log[-3000:]
    assert "data parallel: 2 process(es) (1 on this node), gloo" in log
    n = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "NNodes", "-j", run.manifest["native_ids"][0]],
                       capture_output=True, text=True, timeout=30).stdout.split()
    assert n and n[0] == "2", n
