"""The wheel works on its own: built from the repository, installed into a fresh environment outside it,
``hpcseg jobs``, ``render`` and ``submit --dry-run`` find the shipped jobs and templates.

The fresh environment sees this test environment's dependencies (torch, pydantic, ...) through a ``.pth``
file listing their folders. A ``.pth`` line adds a folder without running that folder's own ``.pth``
files, so the repository's editable install stays invisible; the test checks that hpcseg really is
imported from the fresh environment, so it cannot pass by reading the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.datasets import write_microbead

REPO = Path(__file__).resolve().parent.parent
# What a build needs; copied, so the build leaves no build/ or *.egg-info in the checkout.
SOURCES = ("hpcseg", "templates", "jobs", "singularity", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md")
SHIPPED = {
    "templates": sorted(p.name for p in (REPO / "templates").glob("*.j2")),
    "jobs": sorted(p.name for p in (REPO / "jobs").glob("*.yaml")),
}


def _run(argv: list, cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{argv}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy2)(
            REPO / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                        if (REPO / name).is_dir() else {}))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", tmp / "dist", src], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("hpcseg-*.whl")
    return wheel


def _dependency_dirs() -> list[str]:
    """This interpreter's package folders that do not hold hpcseg itself (the repository, pytest's rootdir)."""
    base = Path(sys.base_prefix).resolve()
    out = []
    for p in sys.path:
        path = Path(p or ".").resolve()
        if not path.is_dir() or (path / "hpcseg").exists() or path == REPO or path.is_relative_to(base):
            continue
        if str(path) not in out:
            out.append(str(path))
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict]:
    """A fresh venv with only the wheel installed into it; returns (venv, env for running its hpcseg)."""
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(tmp)
    names = zipfile.ZipFile(wheel).namelist()
    for folder, files in SHIPPED.items():
        for f in files:
            assert f"hpcseg-0.1.0.data/data/share/hpcseg/{folder}/{f}" in names, (f, names)

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    py = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q", wheel], cwd=tmp)
    (site,) = (venv / "lib").glob("python*/site-packages")
    (site / "zz_test_dependencies.pth").write_text("\n".join(_dependency_dirs()) + "\n")

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HPCSEG_", "SLURM_", "PBS_", "SBATCH_", "PYTEST", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}", HOME=str(tmp),
               LANG="C.UTF-8", PYTHONDONTWRITEBYTECODE="1")
    where = _run([py, "-c", "import hpcseg, hpcseg.spec as s; print(hpcseg.__file__); "
                  "print(s.shipped_dir('templates')); print(s.shipped_dir('jobs'))"], cwd=tmp, env=env)
    module, templates, jobs = where.stdout.splitlines()
    assert Path(module).is_relative_to(site), f"hpcseg came from {module}, not the fresh venv {site}"
    assert Path(templates) == venv / "share" / "hpcseg" / "templates", templates
    assert Path(jobs) == venv / "share" / "hpcseg" / "jobs", jobs
    assert (venv / "bin" / "hpcseg").is_file()
    return venv, env


def test_wheel_lists_renders_and_submits_from_an_unrelated_folder(installed, tmp_path: Path) -> None:
    venv, env = installed
    hpcseg = venv / "bin" / "hpcseg"
    work = tmp_path / "elsewhere"
    work.mkdir()

    listed = _run([hpcseg, "jobs"], cwd=work, env=env).stdout
    for job in SHIPPED["jobs"]:
        assert Path(job).stem in listed, listed

    script = _run([hpcseg, "render", "microbead_optimized"], cwd=work, env=env).stdout
    assert script.startswith("#!/bin/bash\n#SBATCH --job-name=microbead_optimized\n"), script[:200]
    assert "#SBATCH --array=0-2" in script and "Generated by hpcseg" in script, script
    pbs = _run([hpcseg, "render", "microbead_optimized", "--scheduler", "pbs"], cwd=work, env=env).stdout
    assert "#PBS -J 0-2" in pbs, pbs

    write_microbead(work / "data" / "microbeads", n=4, size=32)  # the job's relative dataset root
    out = _run([hpcseg, "submit", "microbead_optimized", "--scheduler", "slurm", "--dry-run", "--no-check"],
               cwd=work, env=env).stdout
    assert "dry run, nothing submitted (3 task(s), slurm)" in out, out
    (run,) = (work / "runs" / "microbead_optimized").iterdir()
    written = (run / "job.slurm").read_text()
    assert "#SBATCH --array=0-2" in written and f"RUN_DIR={run}" in written, written[:800]
    assert (run / "manifest.json").is_file()
