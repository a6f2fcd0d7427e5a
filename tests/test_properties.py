"""Property tests: the spec loader never crashes, and no generated string ever runs as shell code.

1. Whatever YAML or ``--set`` a user writes (random documents, shipped jobs with keys dropped, retyped or
   added, random walltimes and sizes, random dotted paths), ``load_job`` either succeeds or raises
   ``SpecError`` whose every line is non-empty and one line long; anything else is a bug a user meets as a
   traceback. A few go through ``hpcseg render`` in-process too: exit 0 or 2, never a traceback.
2. Hostile strings (quotes, ``$(``, backticks, ``;``, ``|``, ``&``, newlines, globs, backslashes, unicode,
   mixed with canary payloads that ``touch CANARY``) are put into every free-text field that reaches a job
   script, and into the run folder's real name; each script (Slurm and PBS) is executed with bash and a
   stand-in container runtime that records its argv. Nothing but the stand-in may run, the stand-in must
   receive the strings verbatim, and the exit_code file must be written. A directive field may refuse a
   string instead (HpcsegError), as long as the message is one clean line naming the field.

Example counts are modest so the file runs in about a minute on two cores. Inputs that once failed are
kept as ``@example``s, and through the CLI in ``CRASHERS``, so a regression fails at once and by name.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import typing
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from hpcseg.cli import main
from hpcseg.containers import container_command
from hpcseg.errors import HpcsegError, SpecError
from hpcseg.render import render_script
from hpcseg.spec import JobSpec, load_job, with_absolute_paths
from tests.test_render import STAND_IN, clean_env, header, make_bin, read_argv

REPO = Path(__file__).resolve().parent.parent
JOBS = sorted((REPO / "jobs").glob("*.yaml"))
RAW_JOBS = {p.stem: yaml.safe_load(p.read_text()) for p in JOBS}
SCHEDULERS = ("slurm", "pbs")

# report_multiple_bugs=False: one failure is shrunk and shown, not every distinct one (that takes minutes).
SPEC_SETTINGS = settings(max_examples=200, deadline=None, report_multiple_bugs=False,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CLI_SETTINGS = settings(max_examples=40, deadline=None, report_multiple_bugs=False,
                        suppress_health_check=[HealthCheck.too_slow])
SHELL_SETTINGS = settings(max_examples=60, deadline=None, report_multiple_bugs=False,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --------------------------------------------------------------------------------------------- schema paths


def _models_in(ann: Any) -> list[type[BaseModel]]:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return [m for arg in typing.get_args(ann) for m in _models_in(arg)]


def schema_paths(model: type[BaseModel] = JobSpec, prefix: str = "") -> list[str]:
    """Every dotted field path of the schema; list items addressed by index and, for models, by name."""
    out: list[str] = []
    for name, f in model.model_fields.items():
        path = f"{prefix}{name}"
        out.append(path)
        for sub in _models_in(f.annotation):
            listy = typing.get_origin(f.annotation) is list
            heads = [f"{path}.0.", f"{path}.unet.", f"{path}.nope."] if listy else [f"{path}."]
            for head in heads:
                out += schema_paths(sub, head)
    return sorted(set(out))


SCHEMA_PATHS = schema_paths()
FIELD_NAMES = sorted({p.rsplit(".", 1)[-1] for p in SCHEMA_PATHS})

# --------------------------------------------------------------------------------------------- strategies

TRICKY_STRINGS = ["12:00:00", "25:99", "12:60:00", "0:00:00", "99999:00:00", "9999:00:00\n", "999T", "64T",
                  "1e400", "240G", "-1G", "0", "1.5T\n", "2024-01-01", "~", "$HOME", "null", "yes", "on",
                  "", " ", "\n", "\t", "'", '"', "{", "[", "&a", "*a", "!!python/object:os.system", "<<",
                  "\x00", "\u2028", "é", "細胞"]
scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
           | st.text(max_size=20) | st.sampled_from(TRICKY_STRINGS))
keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=12) | st.integers(-3, 3) | st.sampled_from(TRICKY_STRINGS)
values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(keys, kids, max_size=4),
                      max_leaves=16)
YAML_BITS = [": ", "- ", "{", "}", "[", "]", ", ", "&a ", "*a", "!!str ", "!!int ", "? ", "'", '"', "\n",
             "\n  ", "\t", "#", "|", ">", "name", "workload", "training", "resources", "x", "1", "---\n", "...",
             "<<: *a", "%YAML 1.1\n", "\\", "\x00", "\ufeff"]
yaml_noise = st.lists(st.sampled_from(YAML_BITS) | st.text(max_size=4), max_size=30).map("".join)


def dump(doc: Any) -> str:
    try:
        return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    except yaml.YAMLError:
        return repr(doc)  # not representable (e.g. a lone surrogate): still a text to feed the loader


def walk_path(data: st.DataObject, doc: Any) -> tuple:
    """A random existing path into ``doc`` (possibly empty), drawn step by step."""
    path: list = []
    cur = doc
    while isinstance(cur, dict | list) and cur and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(list(cur) if isinstance(cur, dict) else list(range(len(cur)))))
        path.append(key)
        cur = cur[key]
    return tuple(path)


def get_at(doc: Any, path: tuple) -> Any:
    for k in path:
        doc = doc[k]
    return doc


def mutate(data: st.DataObject, doc: dict) -> dict:
    """A shipped job with a few random edits: drop a key, retype a value, add an unknown key, bad sizes."""
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["drop", "retype", "insert", "walltime", "memory", "resource"]))
        if kind in ("walltime", "memory") and isinstance(doc.get("resources"), dict):
            doc["resources"][kind] = data.draw(st.text(max_size=12) | st.sampled_from(TRICKY_STRINGS) | scalars)
            continue
        if kind == "resource" and isinstance(doc.get("resources"), dict):
            key = data.draw(st.sampled_from(["gpus", "cpus", "array_parallelism", "mem_per_gpu", "queue"]))
            doc["resources"][key] = data.draw(scalars)
            continue
        path = walk_path(data, doc)
        if not path:
            continue
        parent = get_at(doc, path[:-1])
        if kind == "drop":
            del parent[path[-1]]
        elif kind == "retype":
            parent[path[-1]] = data.draw(values)
        else:
            target = get_at(doc, path)
            if isinstance(target, dict):
                target[data.draw(keys)] = data.draw(values)
    return doc


override_paths = st.sampled_from(SCHEMA_PATHS) | st.lists(st.sampled_from(FIELD_NAMES) | st.text(max_size=6),
                                                           min_size=1, max_size=5).map(".".join)
override_values = (values.map(lambda v: json.dumps(v, default=str, allow_nan=True)) | st.text(max_size=20)
                   | st.sampled_from(TRICKY_STRINGS))
overrides = st.lists(
    st.tuples(override_paths, override_values).map(lambda kv: f"{kv[0]}={kv[1]}") | st.text(max_size=15),
    max_size=4)
profiles = st.none() | st.sampled_from(["quick", "nope", ""]) | st.text(max_size=5)


# --------------------------------------------------------------------------------------------- property 1


def assert_loads_or_clean_error(path: Path, profile: str | None, sets: list[str]) -> None:
    """The property: success (and the CLI's path resolution works), or a SpecError of clean lines."""
    try:
        loaded = load_job(path, profile, sets)
    except SpecError as exc:
        lines = exc.lines()
        assert lines and all(ln.strip() for ln in lines), lines
        assert all("\n" not in ln and "\r" not in ln for ln in lines), lines
        return
    with_absolute_paths(loaded.spec)
    loaded.spec.tasks()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("properties")


@SPEC_SETTINGS
@given(doc=st.dictionaries(keys, values, max_size=6) | values, profile=profiles, sets=overrides)
@example(doc={"resources": {"memory": "999T\n"}}, profile=None, sets=[])  # a newline in a size message
@example(doc={}, profile=None, sets=['resources.walltime="9999:00:00\\n"'])  # and in a walltime message
@example(doc={"\n": None}, profile=None, sets=[])  # a key holding a newline, echoed in "unknown key"
def test_random_documents_load_or_fail_cleanly(workdir, doc, profile, sets):
    path = workdir / "random.yaml"
    path.write_text(dump(doc), encoding="utf-8")
    assert_loads_or_clean_error(path, profile, sets)


@SPEC_SETTINGS
@given(text=yaml_noise)
@example(text="name: &a [*a]\n")  # a self-referencing alias: RecursionError
@example(text="a: &a {b: *a}\n")
@example(text="!!int \n")  # PyYAML raises IndexError, not YAMLError
@example(text="name: x\n!!int ;: 1\n")  # ... and ValueError
def test_malformed_yaml_fails_cleanly(workdir, text):
    path = workdir / "noise.yaml"
    path.write_text(text, encoding="utf-8")
    assert_loads_or_clean_error(path, None, [])


@SPEC_SETTINGS
@given(data=st.data(), job=st.sampled_from(sorted(RAW_JOBS)), profile=profiles, sets=overrides)
def test_mutated_shipped_jobs_load_or_fail_cleanly(workdir, data, job, profile, sets):
    path = workdir / f"{job}.yaml"
    path.write_text(dump(mutate(data, RAW_JOBS[job])), encoding="utf-8")
    assert_loads_or_clean_error(path, profile, sets)


@SPEC_SETTINGS
@given(job=st.sampled_from(JOBS), profile=st.sampled_from([None, "quick"]), sets=overrides)
@example(job=JOBS[0], profile=None, sets=["²=1"])  # "²".isdigit() is True, int("²") raises ValueError
@example(job=JOBS[0], profile=None, sets=["training.lr=!!int"])  # PyYAML's IndexError
@example(job=JOBS[0], profile=None, sets=["collection=\n"])  # the --set text echoed with its newline
def test_random_overrides_on_shipped_jobs_load_or_fail_cleanly(job, profile, sets):
    assert_loads_or_clean_error(job, profile, sets)


@CLI_SETTINGS
@given(data=st.data(), job=st.sampled_from(sorted(RAW_JOBS)), sets=overrides, scheduler=st.sampled_from(SCHEDULERS))
def test_cli_render_exits_0_or_2_without_traceback(workdir, data, job, sets, scheduler):
    """What a user really runs: ``hpcseg render FILE --set ...``; a traceback is a bug whatever the input."""
    doc = mutate(data, RAW_JOBS[job]) if data.draw(st.booleans()) else RAW_JOBS[job]
    path = workdir / f"cli_{job}.yaml"
    path.write_text(dump(doc), encoding="utf-8")
    argv = ["render", str(path), "--scheduler", scheduler, "--run-dir", str(workdir / "run")]
    argv += [f"--set={s}" for s in sets]  # the = form, so argparse never reads a value like "-x" as an option
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)  # anything but HpcsegError propagates here, with its traceback: the test fails
    assert rc in (0, 2), err.getvalue()
    assert "Traceback" not in err.getvalue()
    if rc == 2:
        first = err.getvalue().splitlines()[0]
        assert first.startswith("hpcseg render: ") and first.removeprefix("hpcseg render: ").strip()
    else:
        assert out.getvalue().startswith("#!/bin/bash\n")


# Inputs the properties above once found, through the real CLI: each must be exit 2 and one clean message.
CRASHERS = {
    "self-referencing-alias": ("name: &a [*a]\n", []),
    "yaml-int-tag-without-value": ("!!int \n", []),
    "yaml-int-tag-on-a-key": ("name: x\n!!int ;: 1\n", []),
    "set-superscript-digit": (None, ["²=1"]),
    "set-int-tag-without-value": (None, ["training.lr=!!int"]),
    "set-size-with-newline": (None, ['resources.memory="999T\\n"']),
    "set-text-with-newline": (None, ["collection=\n"]),
}


@pytest.mark.parametrize("text, sets", list(CRASHERS.values()), ids=list(CRASHERS))
def test_cli_render_found_inputs_fail_cleanly(tmp_path, text, sets):
    path = REPO / "jobs" / "microbead_optimized.yaml"
    if text is not None:
        path = tmp_path / "job.yaml"
        path.write_text(text, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["render", str(path), *(f"--set={s}" for s in sets)])
    lines = err.getvalue().splitlines()
    assert rc == 2 and lines[0].startswith("hpcseg render: "), err.getvalue()
    # one message, then only its indented problem lines: nothing split by a newline inside a value
    assert all(ln.startswith("  ") and ln.strip() for ln in lines[1:]), lines


# --------------------------------------------------------------------------------------------- property 2

PAYLOADS = ["$(touch CANARY)", "`touch CANARY`", "; touch CANARY", "| touch CANARY", "&& touch CANARY",
            "& touch CANARY &", "\ntouch CANARY\n", "'$(touch CANARY)'", "\"$(touch CANARY)\"", "$'\\n'",
            "${IFS}touch${IFS}CANARY", "\\$(touch CANARY)", "'\"'\"'", "*", "?[ab]", "~", "$HOME", "\\",
            "\n#SBATCH --wrap=touch CANARY\n", "\n#PBS -W x\n", "<(touch CANARY)", ">(touch CANARY)",
            "$((1+1))", "!!", "%x_%A", "\r", "\t", " -- ", "-B /:/x", "@CANARY_ABS@"]
SHELL_ALPHABET = st.sampled_from(list("'\"$`;|&<>()[]{}*?~!#\\\n\t -=:,.%^@+") + ["é", "ß", "細", "🙂", "\u2028"]) \
    | st.characters(blacklist_categories=("Cs",))
hostile = st.lists(st.text(SHELL_ALPHABET, max_size=8) | st.sampled_from(PAYLOADS), min_size=1, max_size=5) \
    .map("".join)
directive_value = st.from_regex(r"[A-Za-z0-9_.,@+-]{1,12}", fullmatch=True) | hostile

FIELDS = ("name", "dataset_root", "image", "bind_src", "bind_dst", "weights", "queue", "account", "run_dir", "all")
ERROR_FIELDS = {"dataset_root": "workload.dataset.root", "image": "container.image", "bind_src": "container.binds.0",
                "bind_dst": "container.binds.0", "weights": "workload.models.unet.weights",
                "queue": "resources.queue", "account": "resources.account", "run_dir": "--run-dir"}


def norm(path: str) -> str:
    """What a path looks like after pathlib (``//`` and ``/./`` collapse); ``..`` stays as written."""
    return str(PurePosixPath(path))


def path_text(s: str, field: str) -> str:
    """``s`` as it goes into paths: as generated for one field; for "all" without the ':' and ',' that
    singularity -B cannot take (refusing them is tested field by field), so the script still runs."""
    return s.replace(":", "_").replace(",", "_") if field == "all" else s


@functools.cache
def _quick_microbead() -> dict:
    """The quick microbead job as JSON, loaded once (parsing the YAML for each of ~1,200 specs took ~15 s)."""
    return with_absolute_paths(load_job(REPO / "jobs" / "microbead_optimized.yaml", "quick").spec) \
        .model_dump(mode="json")


def hostile_spec(s: str, q: str, field: str, runtime: str) -> JobSpec:
    """The quick microbead job (three models) with ``s`` in ``field`` (or all of them), ``q`` for directives."""
    every = field == "all"
    if every:
        q = q if re.fullmatch(r"[A-Za-z0-9_.-]+", q) else "gpu"
    s_name, s = s, path_text(s, field)
    data = copy.deepcopy(_quick_microbead())
    if every or field == "name":
        data["name"] = (s_name or "x")[:200]
    if every or field == "dataset_root":
        data["workload"]["dataset"]["root"] = "/data/" + s
    data["container"].update(runtime=runtime, image="/img/" + s + ".sif" if every or field == "image" else "/i.sif",
                             binds=[{"src": "/b/" + s if every or field == "bind_src" else "/b",
                                     "dst": "/inside/" + s if every or field == "bind_dst" else "/inside",
                                     "mode": "ro"}])
    if every or field == "weights":
        data["workload"]["models"][0]["weights"] = "/w/" + s + "/unet.pth"
    if every or field == "queue":
        data["resources"]["queue"] = q
    if every or field == "account":
        data["resources"]["account"] = q
    data["resources"]["gpus"] = 1
    return JobSpec.model_validate(data)


@pytest.fixture(scope="module")
def shell_root(tmp_path_factory) -> Iterator[Path]:
    """Where the ~1,200 run folders of the shell test come and go: in memory (/dev/shm) where there is one,
    since on the CI's disk creating and removing their ~15,000 folders took ~30 s of the test's time."""
    shm = Path("/dev/shm")
    memory = shm.is_dir() and os.access(shm, os.W_OK)
    root = Path(tempfile.mkdtemp(dir=shm, prefix="hpcseg-shell-")) if memory else tmp_path_factory.mktemp("shell")
    bindir = make_bin(root)
    (bindir / "hpcseg").write_text(STAND_IN.format(name="hpcseg"))  # the entrypoint when runtime is none
    (bindir / "hpcseg").chmod(0o755)
    yield root
    if memory:
        shutil.rmtree(root, ignore_errors=True)


def canaries(*roots: Path) -> list[Path]:
    return [p for r in roots if r.exists() for p in r.rglob("*CANARY*") if p.name in ("CANARY", "CANARY_ABS")]


@SHELL_SETTINGS
@given(s=hostile, q=directive_value, runtime=st.sampled_from(["singularity", "apptainer", "none"]))
@example(s="$(touch CANARY)`touch CANARY`'\"; x", q="gpu", runtime="singularity")
@example(s="\n#SBATCH --wrap=touch CANARY\n", q="a b", runtime="none")
def test_hostile_strings_never_run_as_code(shell_root, s, q, runtime):
    """Each field on its own (so one refusal does not hide the others), then all of them at once.

    An example's scripts (every field, both schedulers) run side by side, each in its own folder with its
    own environment and run folder: one after the other, these 1,200 bash runs made this the slowest test
    of the suite."""
    bindir = shell_root / "bin"
    cases: list[Path] = []
    started: list[tuple[Path, str, _Started]] = []
    try:
        for field in FIELDS:
            for scheduler in SCHEDULERS:
                case = Path(tempfile.mkdtemp(dir=shell_root, prefix="case"))
                cases.append(case)
                hs = s.replace("@CANARY_ABS@", f"$(touch {case}/CANARY_ABS)")
                one = _start_hostile(case, bindir, hs, q, field, runtime, scheduler)
                if one is not None:
                    started.append((case, field, one))
        for case, field, one in started:
            _check_hostile(case, one, field, runtime)
    finally:
        for _, _, one in started:
            if one.proc.poll() is None:
                one.proc.kill()
                one.proc.wait()
        for case in cases:
            shutil.rmtree(case, ignore_errors=True)


class _Started(typing.NamedTuple):
    proc: subprocess.Popen
    spec: JobSpec
    expected: list[str]
    run_dir: Path
    s: str


def _start_hostile(case: Path, bindir: Path, s: str, q: str, field: str, runtime: str,
                   scheduler: str) -> _Started | None:
    """Render one field's script for one scheduler and start it; None when the field is refused."""
    # The run folder really exists and its name holds the string, as far as a file name can; a container
    # cannot bind a path holding ':' or ',' (refused, tested when field is "run_dir"), so those go too.
    name = "run " + s.replace("/", "_").replace("\0", "_")
    if runtime != "none" and field != "run_dir":
        name = name.replace(":", "_").replace(",", "_")
    name = name.encode()[:200].decode("utf-8", "ignore")
    run_dir = case / "runs" / name
    run_dir.mkdir(parents=True)
    entry = [str(bindir / "hpcseg")] if runtime == "none" else None
    try:
        spec = hostile_spec(s, q, field, runtime)
        script = render_script(spec, scheduler, run_dir, entrypoint=entry)
        expected = container_command(spec, run_dir, entry)
    except HpcsegError as exc:
        # Refusing is fine; the message must be one clean line that says which field to fix.
        assert exc.message.strip() and "\n" not in exc.message and "\r" not in exc.message, exc.message
        # A NUL is refused by the q filter, which knows the value (shown) but not the field.
        assert any(exc.message.startswith(f) for f in ERROR_FIELDS.values()) or (
            "NUL" in exc.message and "\0" in s), exc.message
        event(f"refused: {exc.message.split(':')[0]}")
        return None
    event(f"ran {field} with runtime {runtime}")
    _check_directives(script, spec, scheduler)
    (case / "job.sh").write_text(script, encoding="utf-8")
    cwd = case / "cwd"
    cwd.mkdir()
    env = clean_env(case, bindir, SLURM_ARRAY_TASK_ID="0")
    proc = subprocess.Popen(["bash", str(case / "job.sh")], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    return _Started(proc, spec, expected, run_dir, s)


def _check_hostile(case: Path, one: _Started, field: str, runtime: str) -> None:
    _, err = one.proc.communicate(timeout=30)
    assert canaries(case) == [] and not (Path.cwd() / "CANARY").exists(), err
    assert one.proc.returncode == 0, err.decode(errors="replace")
    got = read_argv(case / "argv.bin")
    assert got == one.expected[1:] + ["--task", "0"]
    _check_verbatim(got, one.spec, one.s, field, runtime, one.run_dir)
    assert (one.run_dir / "tasks" / "unet" / "fold_0" / "exit_code").read_text() == "0\n"


def _check_directives(script: str, spec: JobSpec, scheduler: str) -> None:
    """The directive block is intact: every line one option, and the queue/account exactly as given."""
    head = header(script)
    assert head and all(re.fullmatch(r"#(SBATCH|PBS) -{1,2}[A-Za-z][^\s'\"$`;\\]*( [^\s'\"$`;\\]+)?", ln)
                        for ln in head), head
    r = spec.resources
    if r.queue:
        assert (f"#SBATCH --partition={r.queue}" if scheduler == "slurm" else f"#PBS -q {r.queue}") in head
    if r.account:
        assert (f"#SBATCH --account={r.account}" if scheduler == "slurm" else f"#PBS -P {r.account}") in head


def _check_verbatim(got: list[str], spec: JobSpec, s: str, field: str, runtime: str, run_dir: Path) -> None:
    """The generated strings reach the runtime unchanged, in the argument where they belong."""
    every = field == "all"
    s = path_text(s, field)
    assert got[got.index("--run") + 1] == str(run_dir)
    if runtime == "none":
        assert got[:2] == ["train", "--run"]
        return
    binds = [got[i + 1] for i, a in enumerate(got) if a == "-B"]
    assert f"{run_dir}:{run_dir}" in binds
    if every or field == "dataset_root":
        assert f"{norm('/data/' + s)}:{norm('/data/' + s)}:ro" in binds
    if every or field == "weights":
        parent = str(PurePosixPath(norm("/w/" + s + "/unet.pth")).parent)
        assert f"{parent}:{parent}:ro" in binds
    if every or field in ("bind_src", "bind_dst"):
        src = norm("/b/" + s) if every or field == "bind_src" else "/b"
        dst = "/inside/" + s if every or field == "bind_dst" else "/inside"
        assert f"{src}:{dst}:ro" in binds
    image = norm("/img/" + s + ".sif") if every or field == "image" else "/i.sif"
    assert got[got.index("train") - 2] == image  # ... IMAGE hpcseg train
    assert os.path.basename(got[got.index("train") - 1]) == "hpcseg"


# --------------------------------------------------------------------------------------------- directive block
#
# Issue 10: whatever a job file, profile or --set puts in a directive field or an extra option, the rendered
# block says exactly what hpcseg meant: no line broken (a newline ends the block), none added, and no option
# hpcseg owns set twice. The oracle is Python's own getopt (an independent implementation of the same
# long-prefix and short-bundle rules sbatch and qsub use), run over every directive line of the script.

import getopt  # noqa: E402

from hpcseg.schedulers.pbs import _QSUB_NONE, _QSUB_REQUIRED  # noqa: E402
from hpcseg.schedulers.slurm import _LONG, _OWNED, _SHORT  # noqa: E402

DIRECTIVE_SETTINGS = settings(max_examples=250, deadline=None, report_multiple_bugs=False,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_HOSTILE = list("0123456789:;\n\r\t -=,@&|()[]!*.+_%/~^aAzZkKmMgGtT#$'\"\\") + ["٠", "١", "１", "é", "\x00", "\x0b",
                                                                              "\u2028", "\x1b"]
hostile = st.text(alphabet=st.sampled_from(_HOSTILE), max_size=14)
_LONG_NAMES = sorted(_LONG)
_OPT_NAMES = _LONG_NAMES + [n[:k] for n in _LONG_NAMES for k in (2, 3, 4, 6) if k < len(n)]


def field_value(valid: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(valid) | hostile | st.builds(lambda a, b: a + b, st.sampled_from(valid), hostile)


slurm_extra = st.builds(
    lambda dash, name, sep, val: f"{dash}{name}{sep}{val}",
    st.sampled_from(["--", "-", "---", ""]),
    st.sampled_from(_OPT_NAMES) | st.sampled_from(sorted(_SHORT)) | st.text("aAtHJpcmoe", min_size=1, max_size=4),
    st.sampled_from(["", "=", " ", "  ", "\n#SBATCH "]),
    field_value(["0-9", "END", "x", "-a", "--array=1", "1G", "user"]))
pbs_extra = st.builds(
    lambda name, sep, val: f"-{name}{sep}{val}",
    st.text(_QSUB_REQUIRED + _QSUB_NONE, min_size=1, max_size=3),
    st.sampled_from(["", " ", "  ", "\n#PBS "]),
    field_value(["walltime=99:00:00", "place=scatter", "abe", "mem=1gb", "depend=afterok:1", "ncpus=4,x=y",
                 "group_list=g", "select=2", "n", "oe", "-N"]))


def _getopt_slurm(words: list[str]) -> list[tuple[str, str]]:
    """Python's getopt over sbatch's table; optional-argument options take a value only after '='."""
    optional = {n for n, kind in _LONG.items() if kind == "optional"}
    longopts = [n if kind != "required" else f"{n}=" for n, kind in _LONG.items()]
    shorts = "".join(c + ("" if _LONG[n] == "none" or n in optional else ":") for c, n in _SHORT.items())
    out: list[tuple[str, str]] = []
    pending = list(words)
    while pending:
        w = pending.pop(0)
        if w.startswith("--") and not any(n.startswith(w[2:].split("=", 1)[0]) for n in _LONG):
            out.append((w[2:].split("=", 1)[0], w.partition("=")[2]))  # a site plugin's option: not sbatch's
            continue
        if w.startswith("--") and "=" in w:
            name = w[2:].split("=", 1)[0]
            try:
                _, full = getopt.long_has_args(name, longopts)
            except getopt.GetoptError:
                full = name
            if full in optional:
                out.append((full, w.split("=", 1)[1]))
                continue
        opts, rest = getopt.getopt([w, *pending], shorts, longopts)
        for o, v in opts:
            out.append((_SHORT[o[1]] if len(o) == 2 else o[2:], v))
        pending = rest
        if rest and not rest[0].startswith("-"):
            raise AssertionError(f"a stray word on a directive line: {rest}")
    return out


def directive_block(script: str, prefix: str) -> list[str]:
    """The directive lines as the scheduler reads them: every ``#SBATCH``/``#PBS`` line before the first
    line that is neither a comment nor blank."""
    lines = []
    for line in script.splitlines()[1:]:
        if line.strip() and not line.startswith("#"):
            break
        if line.startswith(prefix + " ") or line == prefix:
            lines.append(line[len(prefix) + 1:])
    return lines


def _render_or_refuse(data: dict, scheduler: str) -> str | None:
    try:
        spec = JobSpec.model_validate(data)
        return render_script(spec, scheduler, Path("/runs/r"))  # type: ignore[arg-type]
    except (SpecError, HpcsegError) as exc:
        message = exc.message if isinstance(exc, HpcsegError) else str(exc)
        assert all(ln.strip() for ln in [message]), message
        return None
    except ValueError:  # pydantic's ValidationError: the spec itself refused it
        return None


def _base() -> dict:
    return with_absolute_paths(load_job(REPO / "jobs" / "microbead_optimized.yaml", "quick").spec) \
        .model_dump(mode="json")


SLURM_FIELDS = {"walltime": ["12:00:00", "00:10:00", "100:00:00"],
                "memory": ["240G", "1K", "0.1G", "16000MB", "1.5T", "1Ki"],
                "per_gpu": [None, "1K", "10G", "0.001G", "80GiB"], "queue": [None, "gpu", "gpu,long"],
                "account": [None, "proj1"], "qos": [None, "normal"], "constraint": [None, "a100&ib", "[r1|r2]"],
                "gpu_type": [None, "a100"]}
PBS_FIELDS = {"walltime": ["12:00:00", "00:10:00"], "memory": ["240G", "1K", "0.1G"],
              "queue": [None, "workq", "workq@server"], "account": [None, "proj1"],
              "select": [None, "1:ncpus=8:ngpus=1:mem=64gb", "select=2:ncpus=4+1:ngpus=1"]}
plausible_slurm_extra = st.builds(lambda n, v: f"--{n}={v}" if _LONG[n] != "none" else f"--{n}",
                                  st.sampled_from(_LONG_NAMES), st.sampled_from(["END", "x", "0-9", "1G", "user"]))
plausible_pbs_extra = st.sampled_from(["-m abe", "-l place=scatter", "-W group_list=g", "-V", "-M a@b", "-h",
                                       "-l walltime=1:00:00", "-Nx", "-hNx", "-lmem=1gb", "-r n", "-a 2359"])


def draw_fields(data: st.DataObject, fields: dict[str, list]) -> dict[str, Any]:
    """Valid values everywhere but one field (or none), which gets hostile text: most examples then
    reach the rendered script instead of stopping at the first refusal."""
    target = data.draw(st.sampled_from([None, *fields]))
    return {k: data.draw(field_value([v for v in valid if v is not None]) if k == target
                         else st.sampled_from(valid)) for k, valid in fields.items()}


@DIRECTIVE_SETTINGS
@given(data=st.data(), gpu_flag=st.sampled_from(["gres", "gpus"]),
       extra=st.lists(plausible_slurm_extra | slurm_extra, max_size=3))
def test_slurm_directive_block_cannot_be_broken_added_to_or_overridden(data, gpu_flag, extra):
    f = draw_fields(data, SLURM_FIELDS)
    walltime, memory, per_gpu, queue, account = f["walltime"], f["memory"], f["per_gpu"], f["queue"], f["account"]
    qos, constraint, gpu_type = f["qos"], f["constraint"], f["gpu_type"]
    doc = _base()
    r = doc["resources"]
    r.update(walltime=walltime, memory=memory, mem_per_gpu=per_gpu, queue=queue, account=account, gpus=1)
    r["slurm"].update(qos=qos, constraint=constraint, gpu_type=gpu_type, gpu_flag=gpu_flag, extra=extra)
    script = _render_or_refuse(doc, "slurm")
    event(f"rendered, {len(extra)} extra" if script is not None else "refused")
    if script is None:
        return
    spec = JobSpec.model_validate(doc)
    lines = directive_block(script, "#SBATCH")
    for line in lines:
        assert line.isascii() and line.isprintable() and "\t" not in line, line
    ours = lines[: len(lines) - len(extra)]
    assert lines[len(ours):] == extra  # every extra on its own line, verbatim, after ours
    parsed = [p for ln in ours for p in _getopt_slurm(ln.split())]
    theirs = [p for ln in extra for p in _getopt_slurm(ln.split())]
    assert not {name for name, _ in theirs} & set(_OWNED), (extra, theirs)
    got = dict(parsed)
    assert len(got) == len(parsed), parsed  # hpcseg sets each option once
    secs = spec.resources.walltime_seconds
    assert got["time"] == f"{secs // 3600:02d}:{secs % 3600 // 60:02d}:{secs % 60:02d}"
    mem_key = "mem-per-gpu" if per_gpu is not None else "mem"
    assert set(got) & {"mem", "mem-per-gpu", "mem-per-cpu"} == {mem_key}
    assert re.fullmatch(r"[1-9][0-9]*M", got[mem_key]), got  # never 0 (the whole node), never None
    assert got.get("partition") == queue and got.get("account") == account and got.get("qos") == qos
    assert got.get("constraint") == constraint
    assert got["array"] == "0-2" and got["job-name"] == spec.slug


@DIRECTIVE_SETTINGS
@given(data=st.data(), flavor=st.sampled_from(["pro", "torque"]),
       extra=st.lists(plausible_pbs_extra | pbs_extra, max_size=3))
def test_pbs_directive_block_cannot_be_broken_added_to_or_overridden(data, flavor, extra):
    f = draw_fields(data, PBS_FIELDS)
    walltime, memory, queue, account, select = f["walltime"], f["memory"], f["queue"], f["account"], f["select"]
    doc = _base()
    r = doc["resources"]
    r.update(walltime=walltime, memory=memory, queue=queue, account=account)
    r["pbs"].update(select=select, flavor=flavor, extra=extra)
    script = _render_or_refuse(doc, "pbs")
    event(f"rendered, {len(extra)} extra" if script is not None else "refused")
    if script is None:
        return
    lines = directive_block(script, "#PBS")
    for line in lines:
        assert line.isascii() and line.isprintable() and "\t" not in line, line
    assert lines[len(lines) - len(extra):] == extra
    shorts = "".join(c + ":" for c in _QSUB_REQUIRED) + _QSUB_NONE

    def opts(block: list[str]) -> list[tuple[str, str]]:
        out = []
        for ln in block:
            found, rest = getopt.getopt(ln.split(), shorts)
            assert rest == [], ln
            out += [(o[1], v) for o, v in found]
        return out

    ours, theirs = opts(lines[: len(lines) - len(extra)]), opts(extra)
    owned = {"J", "t", "N", "o", "e", "j", "r", "q", "A", "P", "d"}
    assert not {o for o, _ in theirs} & owned, theirs
    their_keys = {k.split("=")[0].lower() for o, v in theirs if o == "l" for k in re.split(r"[,:+]", v)}
    assert not their_keys & {"walltime", "select", "nodes", "ncpus", "ngpus", "mem", "vmem", "pmem", "pvmem"}
    walltimes = [v for o, v in ours if o == "l" and v.startswith("walltime=")]
    assert len(walltimes) == 1 and re.fullmatch(r"walltime=[0-9]{2,4}:[0-5][0-9]:[0-5][0-9]", walltimes[0])
    resources = [v for o, v in ours if o == "l" and not v.startswith("walltime=")]
    assert len(resources) == 1 and "walltime" not in resources[0].lower()
    assert not re.search(r"mem=0[mg]b", resources[0]), resources
    assert [o for o, _ in ours].count("N") == 1
