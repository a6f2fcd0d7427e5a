"""The local Slurm cluster (scripts/local-slurm.sh) behaves as the scheduler backends expect.

Real daemons, real jobs: these tests submit with sbatch/qsub and read back with sacct/squeue/qstat.
The formats checked here are the ones written down in docs/local-slurm.md.
"""
import re
import subprocess
import time

import pytest

pytestmark = pytest.mark.slurm

SACCT_FIELDS = ("JobID", "JobIDRaw", "State", "ExitCode", "NodeList", "AllocTRES", "Timelimit")
SEED_REQUEST = ["--cpus-per-task=36", "--mem=245760M", "--gres=gpu:1", "--time=12:00:00"]
WAIT = 180  # seconds; full-node jobs queue behind whatever else runs on the 3 nodes


def sh(*cmd, cwd=None, check=True, timeout=60):
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} -> {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


def sacct(job_id):
    """One dict per array element (sacct -X -P), keyed by SACCT_FIELDS; State without 'by <uid>'."""
    out = sh("sacct", "-X", "-n", "-P", "-o", ",".join(SACCT_FIELDS), "-j", str(job_id)).stdout
    rows = [dict(zip(SACCT_FIELDS, line.split("|"), strict=True)) for line in out.splitlines() if line.strip()]
    for row in rows:
        row["State"] = row["State"].split()[0] if row["State"] else ""
    return rows


def wait_for(what, probe, timeout=WAIT):
    """Poll probe() every 0.5 s until it returns (ok, value) with ok true; fail with the last value."""
    deadline = time.monotonic() + timeout
    while True:
        ok, value = probe()
        if ok:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}; last seen: {value!r}")
        time.sleep(0.5)


def wait_elements(job_id, n, states, timeout=WAIT):
    """Wait until sacct lists n array elements (JobID like '123_4'), all in one of `states`."""
    def probe():
        every = sacct(job_id)
        rows = [r for r in every if re.fullmatch(rf"{job_id}_\d+", r["JobID"])]
        return len(rows) == n and all(r["State"] in states for r in rows), rows or every
    return wait_for(f"{n} elements of job {job_id} in {states}", probe, timeout)


@pytest.fixture
def cleanup_jobs():
    ids = []
    yield ids
    for job_id in ids:
        subprocess.run(["scancel", str(job_id)], capture_output=True, timeout=30)


def test_fixture_describes_three_gpu_nodes(slurm_cluster):
    assert slurm_cluster.nodes == ("node1", "node2", "node3")
    assert slurm_cluster.partition == "gpu"
    assert "debug" in slurm_cluster.partitions
    out = sh("scontrol", "show", "node", "node1").stdout
    assert "CPUTot=36" in out and "RealMemory=245760" in out and "Gres=gpu:1" in out


def test_sbatch_array_runs_one_task_per_node(tmp_path, cleanup_jobs):
    script = tmp_path / "array.sh"
    script.write_text("#!/bin/bash\n"
                      'echo "$SLURM_ARRAY_TASK_ID $SLURMD_NODENAME $CUDA_VISIBLE_DEVICES $SLURM_CPUS_PER_TASK"'
                      ' > "task_$SLURM_ARRAY_TASK_ID.txt"\nsleep 2\n')
    proc = sh("sbatch", "--parsable", "--array=0-2", *SEED_REQUEST, "--signal=B:USR1@300", "--requeue",
              "-o", "slurm-%A_%a.out", str(script), cwd=tmp_path)
    job_id = proc.stdout.strip().split(";")[0]
    assert job_id.isdigit(), proc.stdout
    cleanup_jobs.append(job_id)

    rows = wait_elements(job_id, 3, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"})
    assert sorted(r["JobID"] for r in rows) == [f"{job_id}_{i}" for i in range(3)]
    assert all(r["State"] == "COMPLETED" and r["ExitCode"] == "0:0" for r in rows), rows
    assert sorted(r["NodeList"] for r in rows) == ["node1", "node2", "node3"], rows  # 36 CPUs: one per node
    for r in rows:
        assert {"cpu=36", "mem=240G", "gres/gpu=1"} <= set(r["AllocTRES"].split(",")), r
        assert r["Timelimit"] == "12:00:00"
    seen = sorted((tmp_path / f"task_{i}.txt").read_text().split() for i in range(3))
    assert [s[0] for s in seen] == ["0", "1", "2"]
    assert all(s[2] == "0" and s[3] == "36" for s in seen), seen  # CUDA_VISIBLE_DEVICES=0, 36 CPUs


def test_qsub_pbs_array_honours_select_and_walltime(tmp_path, cleanup_jobs):
    script = tmp_path / "job.pbs"
    script.write_text("#!/bin/bash\n"
                      "#PBS -N hpcseg_pbs_test\n"
                      "#PBS -q gpu\n"
                      "#PBS -l select=1:ncpus=36:ngpus=1:mem=240gb\n"
                      "#PBS -l walltime=12:00:00\n"
                      "#PBS -J 0-1\n"
                      "#PBS -r y\n"
                      'IDX=${PBS_ARRAY_INDEX:-${PBS_ARRAYID:-$SLURM_ARRAY_TASK_ID}}\n'
                      'echo "$IDX" > "pbs_task_$IDX.txt"\n')
    proc = sh("qsub", script.name, cwd=tmp_path)
    job_id = proc.stdout.strip()
    assert re.fullmatch(r"\d+", job_id), f"qsub should print a bare job id, got {proc.stdout!r}"
    cleanup_jobs.append(job_id)

    rows = wait_elements(job_id, 2, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"})
    assert all(r["State"] == "COMPLETED" for r in rows), rows
    for r in rows:
        tres = set(r["AllocTRES"].split(","))
        assert {"cpu=36", "mem=240G"} <= tres, r
        assert r["Timelimit"] == "12:00:00", r
    assert sorted(p.read_text().strip() for p in tmp_path.glob("pbs_task_*.txt")) == ["0", "1"]

    # qstat -f knows the array job (by its raw id) until MinJobAge passes
    full = sh("qstat", "-f", job_id).stdout
    assert f"Job Id:\t{job_id}" in full and "job_state = C" in full and "Job_Name = hpcseg_pbs_test" in full
    assert "Resource_List.walltime = 12:00:00" in full


def test_sbatch_test_only_accepts_seed_request_and_rejects_impossible(tmp_path):
    script = tmp_path / "seed.sh"
    script.write_text("#!/bin/bash\n"
                      + "".join(f"#SBATCH {flag}\n" for flag in SEED_REQUEST)
                      + "#SBATCH --array=0-2\n#SBATCH --signal=B:USR1@300\n#SBATCH --requeue\ntrue\n")
    ok = sh("sbatch", "--test-only", str(script), cwd=tmp_path, check=False)
    assert ok.returncode == 0, ok.stderr
    assert re.search(r"Job \d+ to start at \S+ using 36 processors on nodes node\d in partition gpu", ok.stderr)

    debug = sh("sbatch", "--test-only", "-p", "debug", str(script), cwd=tmp_path, check=False)
    assert debug.returncode == 0 and "in partition debug" in debug.stderr, debug.stderr

    too_many = sh("sbatch", "--test-only", "--cpus-per-task=64", str(script), cwd=tmp_path, check=False)
    assert too_many.returncode != 0
    assert "Requested node configuration is not available" in too_many.stderr

    too_long = sh("sbatch", "--test-only", "--time=48:00:00", str(script), cwd=tmp_path, check=False)
    assert too_long.returncode != 0
    assert "time limit" in too_long.stderr.lower(), too_long.stderr

    no_part = sh("sbatch", "--test-only", "-p", "nosuchpartition", str(script), cwd=tmp_path, check=False)
    assert no_part.returncode != 0 and "invalid partition" in no_part.stderr.lower()


def test_scancel_and_qdel_cancel_arrays(tmp_path, cleanup_jobs):
    script = tmp_path / "sleep.sh"
    script.write_text("#!/bin/bash\nsleep 300\n")
    sbatch_id = sh("sbatch", "--parsable", "--array=0-2", "--cpus-per-task=1", "--mem=100M", "--time=00:10:00",
                   str(script), cwd=tmp_path).stdout.strip().split(";")[0]
    cleanup_jobs.append(sbatch_id)
    qsub_id = sh("qsub", "-l", "walltime=00:10:00", "-J", "0-1", script.name, cwd=tmp_path).stdout.strip()
    assert qsub_id.isdigit()
    cleanup_jobs.append(qsub_id)

    def running(job_id, n):
        def probe():
            out = sh("squeue", "-h", "-r", "-o", "%i|%T", "-j", job_id).stdout.split()
            return sum(line.endswith("|RUNNING") for line in out) == n, out
        return probe
    wait_for(f"job {sbatch_id} running", running(sbatch_id, 3))
    wait_for(f"job {qsub_id} running", running(qsub_id, 2))

    sh("scancel", sbatch_id)
    sh("qdel", qsub_id)
    cancelled = wait_elements(sbatch_id, 3, {"CANCELLED"}, timeout=60)
    assert all(r["ExitCode"] == "0:0" or r["ExitCode"].endswith(":15") for r in cancelled), cancelled
    wait_elements(qsub_id, 2, {"CANCELLED"}, timeout=60)
    assert sh("squeue", "-h", "-j", f"{sbatch_id},{qsub_id}", check=False).stdout.strip() == ""


def test_scontrol_requeue_one_array_element(tmp_path, cleanup_jobs):
    script = tmp_path / "requeue.sh"
    # first run of element 1 blocks until requeued; its second run (SLURM_RESTART_COUNT=1) finishes
    script.write_text("#!/bin/bash\n"
                      'echo "$SLURM_ARRAY_TASK_ID ${SLURM_RESTART_COUNT:-0}" >> runs.txt\n'
                      'if [ "$SLURM_ARRAY_TASK_ID" = 1 ] && [ "${SLURM_RESTART_COUNT:-0}" = 0 ]; then sleep 300; fi\n')
    job_id = sh("sbatch", "--parsable", "--array=0-1", "--requeue", "--cpus-per-task=1", "--mem=100M",
                "--time=00:10:00", str(script), cwd=tmp_path).stdout.strip().split(";")[0]
    cleanup_jobs.append(job_id)

    def element_running():
        out = sh("squeue", "-h", "-o", "%i|%T", "-j", f"{job_id}_1").stdout.strip()
        return out == f"{job_id}_1|RUNNING", out
    wait_for(f"{job_id}_1 running", element_running)
    sh("scontrol", "requeue", f"{job_id}_1")
    # requeued elements wait AuthInfo=cred_expire (6 s here, 120 s by default) before they start again
    rows = wait_elements(job_id, 2, {"COMPLETED"}, timeout=WAIT)
    assert all(r["ExitCode"] == "0:0" for r in rows), rows
    runs = sorted((tmp_path / "runs.txt").read_text().splitlines())
    assert runs == ["0 0", "1 0", "1 1"], runs


def test_submitit_autoexecutor_uses_slurm(tmp_path):
    submitit = pytest.importorskip("submitit")
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit" / "%j")
    assert executor.cluster == "slurm"
    executor.update_parameters(slurm_partition="gpu", timeout_min=5, cpus_per_task=1, mem_gb=1)
    job = executor.submit(pow, 3, 4)
    try:
        assert job.result() == 81
    finally:
        job.cancel(check=False)
