"""Charliecloud: a real container runtime, end to end.

The image is built (or reused from its cache) by singularity/charliecloud/build.sh: Debian 12 + its own
Python 3.11 venv with CPU torch and hpcseg installed from this checkout. A quick job is then submitted
through the local Slurm cluster with ``container.runtime: charliecloud``; the task trains inside the
image, and the outcome is read from outside with ``hpcseg status`` and ``hpcseg collect``. The command
the job really ran (parsed from its job script) is then run again with a probe in place of the trainer,
to show that the dataset is read-only and the run folder writable in the container.

Without the image (no root to install ch-run/mmdebstrap, no Debian mirror or package index) the image
tests skip with the reason; under CI=true they fail instead. HPCSEG_CH_IMAGE=/path/to/image uses an
image built elsewhere. The command-line tests at the top need no image.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcseg.containers import Charliecloud, container_command
from hpcseg.errors import HpcsegError
from hpcseg.spec import find_job, load_job, with_absolute_paths
from hpcseg.workloads.microbead.synth import make_microbeads
from tests.test_schedulers_local import REPO
from tests.test_schedulers_slurm import hpcseg, wait_ended

BUILD = REPO / "singularity" / "charliecloud" / "build.sh"
IMAGE_BIN = "/opt/hpcseg/venv/bin"  # the image's venv (build.sh); the host has no /opt/hpcseg
ONE_MODEL = "workload.models=[{name: unet, arch: unet, channels: [4, 8]}]"


def quick_sets(data: Path, image: Path, *extra: str) -> list[str]:
    """One model, one fold, two epochs on twelve 32-px images, inside the charliecloud image."""
    sets = [f"workload.dataset.root={data}", "workload.dataset.image_size=32", "workload.dataset.expected_count=12",
            "training.epochs=2", "training.batch_size=4", "workload.split.folds=1", ONE_MODEL,
            "resources.cpus=1", "resources.memory=2G", "resources.gpus=0",
            "container.runtime=charliecloud", f"container.image={image}", *extra]
    return sum((["--set", s] for s in sets), [])


def spec_for(data: Path, image: Path, *extra: str):
    flat = quick_sets(data, image, *extra)[1::2]
    return with_absolute_paths(load_job(find_job("microbead_optimized"), "quick", flat).spec)


def fake_image(root: Path) -> Path:
    """An image folder as far as the render-time checks look: /ch/environment and nothing else."""
    (root / "ch").mkdir(parents=True)
    (root / "ch" / "environment").write_text("PATH=/opt/hpcseg/venv/bin:/usr/bin:/bin\n")
    return root


# --------------------------------------------------------------------------------------------- command line


def test_command_remounts_the_dataset_read_only_and_starts_in_the_run_folder(tmp_path):
    image, run = fake_image(tmp_path / "img"), tmp_path / "runs" / "R1"
    data = tmp_path / "data"
    argv = container_command(spec_for(data, image), run)
    assert argv[:5] == ["sh", "-c", Charliecloud.SET_USER, "hpcseg-ch-run", "ch-run"]
    assert {"--uid=0", "--gid=0", "--set-env", f"--cd={run}", "--unset-env=PYTHONPATH"} <= set(argv)
    binds = [argv[i + 1] for i, a in enumerate(argv) if a == "-b"]
    assert binds == [f"{data}:{data}", f"{run}:{run}"]
    inner = argv[argv.index(str(image)):]
    # IMAGE -- sh -c READ_ONLY hpcseg-ro <read-only folders> -- hpcseg train --run RUN
    assert inner[:5] == [str(image), "--", "/bin/sh", "-c", Charliecloud.READ_ONLY]
    assert inner[5:] == ["hpcseg-ro", str(data), "--", "hpcseg", "train", "--run", str(run)]


def test_parents_are_bound_before_children(tmp_path):
    """ch-run mounts in order, and a mount hides what an earlier one put below it."""
    image, run = fake_image(tmp_path / "img"), tmp_path / "runs" / "R1"
    data = tmp_path / "proj" / "deep" / "data"
    argv = container_command(spec_for(data, image, f"container.binds=[{{src: {tmp_path / 'proj'}}}]"), run)
    binds = [argv[i + 1].split(":")[1] for i, a in enumerate(argv) if a == "-b"]
    assert binds.index(str(tmp_path / "proj")) < binds.index(str(data))


def test_a_bind_target_missing_from_the_image_is_refused_by_name(tmp_path):
    image, run = fake_image(tmp_path / "img"), tmp_path / "runs" / "R1"
    spec = spec_for(tmp_path / "data", image, f"container.binds=[{{src: {tmp_path}, dst: /scratch/cache}}]")
    with pytest.raises(HpcsegError) as err:
        container_command(spec, run)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("container.binds.0:") and "no folder /scratch/cache" in msg
    assert f"mkdir -p {image}/scratch/cache" in msg
    (image / "scratch" / "cache").mkdir(parents=True)
    assert f"{tmp_path}:/scratch/cache" in container_command(spec, run)


def test_an_image_without_its_environment_file_is_refused(tmp_path):
    image = tmp_path / "img"
    image.mkdir()
    with pytest.raises(HpcsegError, match=r"^container.image: .* has no /ch/environment .*build.sh"):
        container_command(spec_for(tmp_path / "data", image), tmp_path / "run")


def test_preflight_looks_for_ch_run_not_a_program_called_charliecloud(tmp_path, monkeypatch):
    from hpcseg.preflight import run_preflight

    data, image = tmp_path / "data", fake_image(tmp_path / "img")
    make_microbeads(data, n=12, size=32)
    spec = spec_for(data, image)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    problems = [p.message for p in run_preflight(spec)]
    assert len(problems) == 1 and problems[0].startswith("ch-run not found on PATH"), problems
    (bin_dir / "ch-run").write_text("#!/bin/sh\n")
    (bin_dir / "ch-run").chmod(0o755)
    assert run_preflight(spec) == []


# --------------------------------------------------------------------------------------------- real image


def _unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the charliecloud test must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def ch_image() -> Path:
    """The image folder: HPCSEG_CH_IMAGE, else build.sh's cached build (built here the first time)."""
    given = os.environ.get("HPCSEG_CH_IMAGE")
    if given:
        return Path(given)
    if not sys.platform.startswith("linux"):
        _unavailable("charliecloud runs on Linux only")
    t0 = time.monotonic()
    try:
        p = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=840)
    except subprocess.TimeoutExpired:
        _unavailable("singularity/charliecloud/build.sh did not finish within 840 s")
    if p.returncode != 0 or not p.stdout.strip():
        tail = " | ".join(p.stderr.strip().splitlines()[-3:])
        _unavailable(f"the charliecloud image could not be built (build.sh exit {p.returncode}): {tail}")
    image = Path(p.stdout.strip().splitlines()[-1])
    print(f"charliecloud image {image} ready in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return image


PROBE = r"""
import json, os, sys
from pathlib import Path
data, run = Path(sys.argv[1]), Path(sys.argv[2])
out = {"python": sys.executable, "listing": sorted(os.listdir(data)), "cwd": os.getcwd()}
for key, folder in (("data", data), ("run", run)):
    try:
        (folder / "probe.txt").write_text("written inside the container\n")
        out[key] = 0
    except OSError as e:
        out[key] = e.errno
print(json.dumps(out))
"""


def job_command(script: Path) -> list[str]:
    """The CMD array of a rendered job script, exactly as bash builds it when the job runs."""
    p = subprocess.run(["bash", "-c", 'eval "$(sed -n "/^CMD=(/,/^)/p" "$1")"; printf "%s\\0" "${CMD[@]}"',
                        "cmd", str(script)], capture_output=True, text=True, check=True)
    return p.stdout.split("\0")[:-1]


@pytest.mark.slurm
def test_quick_job_trains_inside_the_image_through_slurm(tmp_path, ch_image, cleanup):
    data = tmp_path / "data"
    make_microbeads(data, n=12, size=32)
    before = sorted(p.name for p in data.iterdir())
    runs = tmp_path / "runs"
    common = ["submit", "microbead_optimized", "--profile", "quick", "--scheduler", "slurm", "--runs-dir"]
    good = hpcseg(*common, str(runs / "good"), *quick_sets(data, ch_image))
    # The node finds 12 images where the job says 13: the trainer exits 2 inside the container.
    bad = hpcseg(*common, str(runs / "bad"), "--no-check",
                 *quick_sets(data, ch_image, "workload.dataset.expected_count=13"))
    assert good.returncode == 0, good.stdout + good.stderr
    assert bad.returncode == 0, bad.stdout + bad.stderr
    run_good, run_bad = (next((runs / k).glob("*/*/manifest.json")).parent for k in ("good", "bad"))
    for r in (run_good, run_bad):
        cleanup += json.loads((r / "manifest.json").read_text())["native_ids"]
    script = run_good / "job.slurm"
    assert "ch-run" in script.read_text() and str(ch_image) in script.read_text()

    from hpcseg.runs import open_run
    tasks, _ = wait_ended(open_run(run_good), timeout=240)
    assert [(t["state"], t["exit_code"], t["epoch"]) for t in tasks] == [("completed", 0, 2)], tasks
    task_dir = run_good / "tasks" / "unet" / "fold_0"
    assert (task_dir / "history.csv").read_text().count("\n") == 3  # header + 2 epochs
    result = json.loads((task_dir / "result.json").read_text())
    # Trained by the image's interpreter, which does not exist outside the container.
    assert str(Path(result["python"]).parent) == IMAGE_BIN and not Path(IMAGE_BIN).exists(), result
    assert result["epochs_run"] == 2
    assert sorted(p.name for p in data.iterdir()) == before  # the dataset was not written

    failed, _ = wait_ended(open_run(run_bad), timeout=240)
    assert [(t["state"], t["exit_code"]) for t in failed] == [("failed", 2)], failed
    assert any("expected_count is 13" in line for line in failed[0]["log_tail"])

    # Seen from outside: status (human form) and collect.
    text = hpcseg("status", str(run_good)).stdout
    assert "completed" in text
    col = hpcseg("collect", str(run_good), "--json")
    assert col.returncode == 0, col.stdout + col.stderr
    assert (run_good / "training_summary.csv").read_text().count("unet") >= 1

    # The very command the job ran, with a probe in place of `hpcseg train --run RUN`.
    argv = job_command(script)
    assert argv[-4:] == ["hpcseg", "train", "--run", str(run_good)]
    probe = subprocess.run([*argv[:-4], "python", "-c", PROBE, str(data), str(run_good)],
                           capture_output=True, text=True, timeout=120, env={**os.environ, "USER": ""})
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert str(Path(seen["python"]).parent) == IMAGE_BIN and seen["cwd"] == str(run_good)
    assert seen["listing"] == before
    assert seen["data"] == errno.EROFS, seen  # the dataset is read-only inside...
    assert not (data / "probe.txt").exists()
    assert seen["run"] == 0 and (run_good / "probe.txt").read_text() == "written inside the container\n"
    (data / "probe.txt").write_text("")  # ...and stays writable outside (the remount is the container's)
