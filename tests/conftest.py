"""Shared pytest fixtures for hpcseg's tests."""

# --------------------------------------------------------------------------------------- slurm_cluster
# The local Slurm cluster of scripts/local-slurm.sh (see docs/local-slurm.md). scripts/run-tests.sh starts it
# and exports HPCSEG_SLURM=1, or HPCSEG_SLURM_SKIP_REASON when it could not. Tests marked `slurm` get the
# fixture automatically: they skip when the cluster is unavailable, except under CI=true where they fail.
import fcntl
import os
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Two workers and Slurm jobs share two cores: an example's wall time says nothing about the code under
# test, so no property test may fail on hypothesis' 200 ms deadline or its "too slow" health check.
settings.register_profile("hpcseg", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("hpcseg")

_REPO = Path(__file__).resolve().parents[1]
_LOCAL_SLURM = _REPO / "scripts" / "local-slurm.sh"
_USABLE = ("idle", "mix", "alloc", "comp")


@dataclass(frozen=True)
class SlurmCluster:
    """What tests need to know about the running cluster."""

    nodes: tuple          # ("node1", "node2", "node3")
    partition: str        # the default partition ("gpu")
    partitions: tuple     # every partition ("gpu", "debug")
    script: Path = _LOCAL_SLURM

    def ctl(self, verb, *args, timeout=120):
        """Run scripts/local-slurm.sh VERB (stop-ctld, start-ctld, restart-slurmd ...); fail the test on error."""
        proc = subprocess.run(["bash", str(self.script), verb, *args], capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            pytest.fail(f"local-slurm.sh {verb} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc.stdout


def _probe_slurm():
    """(cluster, None) when sinfo answers with usable nodes, else (None, reason)."""
    if shutil.which("sinfo") is None:
        return None, "sinfo is not on PATH (scripts/local-slurm.sh up installs and starts Slurm)"
    try:
        proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N|%P|%t"], capture_output=True, text=True,
                              timeout=20)
    except subprocess.TimeoutExpired:
        return None, "sinfo did not answer within 20 s"
    if proc.returncode != 0:
        return None, f"sinfo failed: {(proc.stderr or proc.stdout).strip()[:300]}"
    nodes, partitions, default = [], [], None
    for line in proc.stdout.split():
        node, part, state = line.split("|")
        if part.endswith("*"):
            part = default = part[:-1]
        if part not in partitions:
            partitions.append(part)
        if state.rstrip("*~#!%$@^-") in _USABLE and not state.endswith("*") and node not in nodes:
            nodes.append(node)
    if not nodes:
        return None, f"sinfo shows no usable node:\n{proc.stdout.strip()}"
    return SlurmCluster(nodes=tuple(sorted(nodes)), partition=default or partitions[0],
                        partitions=tuple(partitions)), None


@pytest.fixture(scope="session")
def slurm_cluster():
    cluster, reason = _probe_slurm()
    if cluster is None:
        told = os.environ.get("HPCSEG_SLURM_SKIP_REASON")
        if os.environ.get("HPCSEG_SLURM") == "1":
            reason = f"HPCSEG_SLURM=1 but the cluster does not answer: {reason}"
        elif told:
            reason = f"{told} ({reason})"
        reason = f"local Slurm cluster unavailable: {reason}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    yield cluster


# Tests run in parallel (pytest-xdist, scripts/run-tests.sh). A test that stops or restarts a Slurm
# daemon (marked `cluster_down`) must not overlap any other test using the cluster, whose sbatch or sacct
# would then fail. A readers-writer lock across the worker processes: every `slurm` test holds it shared,
# a `cluster_down` test exclusive. The turnstile gives the writer priority: without it a steady stream of
# shared holders from the other worker could keep it waiting for the rest of the suite.
_LOCKS = Path(os.environ.get("HPCSEG_TEST_LOCK_DIR", "/tmp"))


@contextmanager
def _flock(path: Path, mode: int):
    with open(path, "a") as f:
        fcntl.flock(f, mode)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def cluster_lock(exclusive: bool, where: Path = _LOCKS):
    """Shared (a test using the cluster) or exclusive (a test taking a daemon down) use of the cluster."""
    turnstile, cluster = where / "hpcseg-tests-turnstile.lock", where / "hpcseg-tests-cluster.lock"
    if exclusive:
        with _flock(turnstile, fcntl.LOCK_EX), _flock(cluster, fcntl.LOCK_EX):
            yield
        return
    with _flock(turnstile, fcntl.LOCK_EX):
        pass  # wait behind a writer that is queued or working
    with _flock(cluster, fcntl.LOCK_SH):
        yield


@pytest.fixture(autouse=True)
def _slurm_marker_needs_cluster(request):
    """Every test marked `slurm` gets (and so skips or fails on) the slurm_cluster fixture, and holds
    the cluster lock for its whole run (exclusively when it is marked `cluster_down`)."""
    if request.node.get_closest_marker("slurm") is None:
        yield
        return
    request.getfixturevalue("slurm_cluster")
    with cluster_lock(exclusive=request.node.get_closest_marker("cluster_down") is not None):
        yield


@pytest.fixture(scope="session")
def microbeads(tmp_path_factory):
    """Twelve 32-px synthetic microbead pairs shared by the scheduler and fault tests (read-only)."""
    from hpcseg.workloads.microbead.synth import make_microbeads

    root = tmp_path_factory.mktemp("microbeads") / "data"
    make_microbeads(root, n=12, size=32)
    return root


@pytest.fixture
def cleanup(slurm_cluster):
    """Job ids to scancel after the test, whatever happened."""
    import subprocess

    ids: list[str] = []
    yield ids
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)
