"""The CLI: verbs that do not train must not import torch (so `hpcseg status` starts instantly)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import sys, contextlib, io
from hpcseg.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
    try:
        code = main({argv!r})
    except SystemExit as exc:
        code = exc.code
heavy = sorted(m for m in ("torch", "monai", "torchmetrics", "matplotlib") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
print("CODE=" + str(code))
"""


def run_probe(argv: list[str], cwd: Path) -> tuple[str, str]:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return lines["HEAVY"], lines["CODE"]


@pytest.mark.parametrize("argv", [
    ["jobs"],
    ["render", "microbead_optimized", "--scheduler", "slurm"],
    ["render", "microbead_optimized", "--scheduler", "pbs"],
    ["check", "microbead_optimized"],
    ["status"],
])
def test_verbs_import_no_torch(argv: list[str], tmp_path: Path) -> None:
    heavy, _code = run_probe(argv, REPO)
    assert "torch" not in heavy.split(","), f"hpcseg {' '.join(argv)} imported {heavy}"


def test_bad_input_is_one_line_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nworkload: [1,\n")
    proc = subprocess.run([sys.executable, "-m", "hpcseg", "render", str(bad)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "bad.yaml:2" in proc.stderr


def test_unknown_job_suggests(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "hpcseg", "check", "microbead_optimised"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and "did you mean 'microbead_optimized'" in proc.stderr


def test_jobs_lists_every_shipped_job(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "hpcseg", "jobs"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=60)
    assert proc.returncode == 0
    names = [line.split()[0] for line in proc.stdout.splitlines()]
    assert names == sorted(names) and len(names) == 7
    assert "microbead_optimized" in names and "INVALID" not in proc.stdout
