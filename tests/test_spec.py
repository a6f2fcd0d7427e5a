"""Job specs: every shipped job loads with its real values; every problem is reported with file:line."""

from __future__ import annotations

import re
import textwrap
import time
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from hpcseg.errors import SpecError
from hpcseg.spec import (
    MAX_YAML_VALUES,
    JobSpec,
    find_job,
    job_slug,
    list_jobs,
    load_job,
    parse_memory_mb,
    parse_walltime,
    with_absolute_paths,
)

REPO = Path(__file__).resolve().parent.parent
SHIPPED = ["microbead_optimized", "microbead_mitochondria", "ssmu_net_overnight", "marida_se_unet",
           "marida_attention_unet", "marida_multiclass", "ham10000_comparison"]

MINIMAL = textwrap.dedent("""\
    name: tiny
    workload:
      task: binary_segmentation
      dataset: {root: data}
      models:
        - {name: a, arch: unet}
    training:
      epochs: 2
      batch_size: 4
      lr: 0.001
    resources:
      walltime: "01:00:00"
    container: {runtime: none}
""")


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def problems_of(path: Path, **kw) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_job(path, **kw)
    return info.value.lines()


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("profile", [None, "quick"])
def test_every_shipped_job_loads(name: str, profile: str | None) -> None:
    spec = load_job(REPO / "jobs" / f"{name}.yaml", profile).spec
    assert spec.name == name
    assert spec.tasks(), "a job without tasks submits nothing"
    if profile == "quick":
        assert spec.container.runtime == "none"


def test_microbead_optimized_has_the_seed_values() -> None:
    spec = load_job(REPO / "jobs/microbead_optimized.yaml").spec
    assert [m.arch for m in spec.workload.models] == ["unet", "attention_unet", "attention_res_unet"]
    assert spec.training.lr == pytest.approx(1e-4)
    assert spec.training.batch_size == 32
    assert {m.dropout for m in spec.workload.models} == {0.3}
    assert spec.training.loss.components == {"dice": 1.0}
    assert spec.workload.split.method == "stratified" and spec.workload.split.val_fraction == 0.15
    assert spec.training.epochs == 100 and spec.training.early_stopping.patience == 20
    aug = spec.training.augmentation
    assert aug.hflip and aug.vflip and aug.rotate_degrees == 15
    assert spec.workload.dataset.image_size == (256, 256) and spec.workload.dataset.channels == 1
    assert spec.workload.dataset.expected_count == 73
    r = spec.resources
    assert (r.gpus, r.cpus, r.memory_mb, r.walltime_seconds) == (1, 36, 240 * 1024, 12 * 3600)


def test_mitochondria_baseline_has_the_settings_that_collapsed() -> None:
    spec = load_job(REPO / "jobs/microbead_mitochondria.yaml").spec
    assert spec.training.lr == pytest.approx(1e-3) and spec.training.batch_size == 8
    assert spec.training.loss.components == {"focal": 1.0}
    assert spec.workload.split.method == "random" and spec.workload.split.val_fraction == pytest.approx(0.1)
    assert {m.dropout for m in spec.workload.models} == {0.0}


def test_tasks_are_models_times_folds_model_major() -> None:
    spec = load_job(REPO / "jobs/microbead_optimized.yaml", overrides=["workload.split.folds=2"]).spec
    assert [(t.index, t.model, t.fold) for t in spec.tasks()] == [
        (0, "unet", 0), (1, "unet", 1), (2, "attention_unet", 0), (3, "attention_unet", 1),
        (4, "attention_resunet", 0), (5, "attention_resunet", 1)]


def test_all_problems_reported_at_once_with_lines(tmp_path: Path) -> None:
    bad = MINIMAL.replace("lr: 0.001", "lerning_rate: 0.001").replace("batch_size: 4", "batch_size: -4")
    bad = bad.replace('walltime: "01:00:00"', 'walltime: "25:99"\n  gpus: -1')
    lines = problems_of(write(tmp_path, bad))
    text = "\n".join(lines)
    assert "5 problem(s)" in lines[0]
    assert "job.yaml:10: training.lerning_rate: unknown key (did you mean 'lr'?)" in text
    assert "job.yaml:9: training.batch_size: Input should be greater than or equal to 1" in text
    assert "training.lr: required but missing" in text
    assert "resources.walltime: expected HH:MM:SS" in text and "'25:99'" in text
    assert "resources.gpus: Input should be greater than or equal to 0" in text


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    lines = problems_of(write(tmp_path, "name: x\nworkload: [1,\n"))
    assert len(lines) == 1 and "job.yaml:" in lines[0] and "malformed YAML" in lines[0]


@pytest.mark.parametrize("text,needle", [
    ("", "the file is empty"),
    ("- a\n- b\n", "must be a mapping"),
    ("name: a\nname: b\n", "key given twice"),
])
def test_degenerate_files(tmp_path: Path, text: str, needle: str) -> None:
    assert needle in "\n".join(problems_of(write(tmp_path, text)))


def test_fraction_above_one_is_rejected(tmp_path: Path) -> None:
    text = "\n".join(problems_of(write(tmp_path, MINIMAL), overrides=["workload.models.a.dropout=1.5"]))
    assert "--set workload.models.a.dropout=1.5: workload.models.0.dropout" in text


def test_override_is_typed_by_the_schema(tmp_path: Path) -> None:
    job = load_job(write(tmp_path, MINIMAL), overrides=["training.lr=5e-5", "training.epochs=7",
                                                        "training.augmentation.hflip=true"])
    assert job.spec.training.lr == pytest.approx(5e-5) and isinstance(job.spec.training.lr, float)
    assert job.spec.training.epochs == 7 and job.spec.training.augmentation.hflip is True
    assert job.overrides == ["training.lr=5e-5", "training.epochs=7", "training.augmentation.hflip=true"]


@pytest.mark.parametrize("override,needle", [
    ("training.lr=abc", "--set training.lr=abc: training.lr: Input should be a valid number"),
    ("training.nope=1", "--set training.nope=1: training.nope: unknown key"),
    ("training.lr", "expected FIELD=VALUE"),
    ("workload.models.zzz.dropout=0.1", "no item named 'zzz'"),
])
def test_bad_overrides(tmp_path: Path, override: str, needle: str) -> None:
    assert needle in "\n".join(problems_of(write(tmp_path, MINIMAL), overrides=[override]))


def test_profile_applies_and_unknown_profile_is_named(tmp_path: Path) -> None:
    spec = load_job(REPO / "jobs/microbead_optimized.yaml", "quick").spec
    assert spec.workload.dataset.image_size == (64, 64)
    assert spec.model("unet").channels == [8, 16, 32, 64]
    text = "\n".join(problems_of(REPO / "jobs/microbead_optimized.yaml", profile="huge"))
    assert "no profile 'huge'" in text and "quick" in text


def test_override_beats_profile() -> None:
    spec = load_job(REPO / "jobs/microbead_optimized.yaml", "quick", ["training.epochs=3"]).spec
    assert spec.training.epochs == 3


def test_memory_flags_are_exclusive(tmp_path: Path) -> None:
    spec = load_job(write(tmp_path, MINIMAL), overrides=["resources.gpus=2", "resources.mem_per_gpu=80G"]).spec
    assert spec.resources.memory is None and spec.resources.mem_per_gpu_mb == 80 * 1024
    text = "\n".join(problems_of(write(tmp_path, MINIMAL), overrides=["resources.mem_per_gpu=80G"]))
    assert "mem_per_gpu needs gpus" in text


@pytest.mark.parametrize("value,mb", [("240G", 245760), ("240gb", 245760), ("16000M", 16000), ("1.5T", 1572864),
                                      (512, 512)])
def test_memory_parsing(value, mb) -> None:
    assert parse_memory_mb(value) == mb


@pytest.mark.parametrize("value", ["lots", "-5G", "0", "999999T", True])
def test_memory_rejects(value) -> None:
    with pytest.raises(ValueError):
        parse_memory_mb(value)


@pytest.mark.parametrize("value,secs", [("12:00:00", 43200), ("00:30:00", 1800), ("100:00:00", 360000)])
def test_walltime_parsing(value, secs) -> None:
    assert parse_walltime(value) == secs


@pytest.mark.parametrize("value", ["25:99", "12:60:00", "00:00:00", "1 day", "12:00", "-1:00:00"])
def test_walltime_rejects(value) -> None:
    with pytest.raises(ValueError):
        parse_walltime(value)


def test_container_needs_image_unless_none(tmp_path: Path) -> None:
    text = "\n".join(problems_of(write(tmp_path, MINIMAL), overrides=["container.runtime=singularity"]))
    assert "needs an image" in text


def test_bind_string_notation(tmp_path: Path) -> None:
    spec = load_job(write(tmp_path, MINIMAL), overrides=["container.binds=['/scratch:/data:ro', '/home/me']"]).spec
    assert [(b.src, b.dst, b.mode) for b in spec.container.binds] == [("/scratch", "/data", "ro"),
                                                                       ("/home/me", None, "rw")]


def test_absolute_paths_are_resolved_from_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MYDATA", "/srv/data")
    spec = load_job(write(tmp_path, MINIMAL), overrides=["workload.dataset.root=$MYDATA/beads"]).spec
    assert with_absolute_paths(spec).workload.dataset.root == "/srv/data/beads"
    spec = load_job(write(tmp_path, MINIMAL)).spec
    assert with_absolute_paths(spec).workload.dataset.root == str(tmp_path / "data")


def test_duplicate_model_names(tmp_path: Path) -> None:
    text = MINIMAL.replace("- {name: a, arch: unet}", "- {name: a, arch: unet}\n    - {name: a, arch: unet}")
    assert "model names must be unique" in "\n".join(problems_of(write(tmp_path, text)))


def test_slug_is_safe_for_files_and_schedulers() -> None:
    spec = load_job(REPO / "jobs/microbead_optimized.yaml", overrides=["name=my job $(rm -rf /); 'x'"]).spec
    assert spec.name == "my job $(rm -rf /); 'x'"
    assert re.fullmatch(r"my_job_rm_-rf_x-[0-9a-f]{10}", spec.slug), spec.slug


@pytest.mark.parametrize("name", SHIPPED + ["tiny", "beads_new_lr", "a.b-c_1"])
def test_plain_names_are_their_own_slug(name: str) -> None:
    assert job_slug(name) == name


@pytest.mark.parametrize("names", [
    ("beads (new lr)", "beads, new lr", "beads_new_lr", "beads new lr"),  # the reported pair, and kin
    ("細胞", "細胞2", "スフェロイド", "job"),  # nothing readable survives: the hash keeps them apart
    ("Beads", "beads", "BEADS"),  # one folder on a case-insensitive disk otherwise
    ("x", "x-" + job_slug("x y").rsplit("-", 1)[1], "x y"),  # a name that reads like another's slug
])
def test_different_names_never_share_a_folder(names: tuple[str, ...]) -> None:
    slugs = [job_slug(n) for n in names]
    assert len(set(slugs)) == len(names), dict(zip(names, slugs, strict=True))
    assert len({s.lower() for s in slugs}) == len(names), slugs


SLUG_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


@settings(max_examples=300, deadline=None)
@given(a=st.text(min_size=1, max_size=200), b=st.text(min_size=1, max_size=200))
@example(a="beads (new lr)", b="beads, new lr")
@example(a="x", b="x-0123456789")
def test_slug_is_injective_and_file_safe(a: str, b: str) -> None:
    """Distinct names, distinct slugs (also ignoring case); every slug is one safe path component."""
    sa, sb = job_slug(a), job_slug(b)
    for s in (sa, sb):
        assert SLUG_SAFE.fullmatch(s) and s not in (".", ".."), s
    if a != b:
        assert sa.lower() != sb.lower(), (a, b, sa)


def test_runs_of_lookalike_names_go_to_their_own_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the run registry: two jobs whose names differ only in punctuation get separate folders, and
    each name finds its own latest run."""
    from hpcseg.runs import create_run, find_run

    monkeypatch.chdir(tmp_path)
    runs = {}
    for name in ("beads (new lr)", "beads, new lr"):
        loaded = load_job(write(tmp_path, MINIMAL), overrides=[f"name={name}"])
        runs[name] = create_run(loaded, "local", tmp_path / "runs")
    dirs = {name: run.dir.parent for name, run in runs.items()}
    assert len(set(dirs.values())) == 2, dirs
    for name, run in runs.items():
        assert find_run(name, tmp_path / "runs").dir == run.dir


def test_find_job_by_name_and_suggests(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_job("microbead_optimized").name == "microbead_optimized.yaml"
    with pytest.raises(SpecError, match="did you mean 'microbead_optimized'"):
        find_job("microbead_optimised")
    assert {p.stem for p in list_jobs()} >= set(SHIPPED)


def test_every_field_is_documented_or_obvious() -> None:
    """The schema is the reference: fields users must set are required, never silently defaulted."""
    assert JobSpec.model_fields["resources"].is_required()
    from hpcseg.spec import ResourcesSpec

    assert ResourcesSpec.model_fields["walltime"].is_required()


def test_missing_sections_are_all_reported(tmp_path: Path) -> None:
    text = "\n".join(problems_of(write(tmp_path, "name: x\n")))
    for section in ("workload", "training", "resources"):
        assert f"{section}: required but missing" in text
    assert "needs an image" not in text


def test_no_container_section_means_a_bare_run(tmp_path: Path) -> None:
    spec = load_job(write(tmp_path, MINIMAL.replace("container: {runtime: none}\n", ""))).spec
    assert spec.container.runtime == "none"


# --------------------------------------------------------------------------------------------- strict scalars


def _numeric_fields(model: type[BaseModel] = JobSpec, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted path, "int"/"float", shape) of every number in the schema; shape says how to write one:
    "scalar", "list" (list or tuple of numbers) or "dict" (numbers as values). Models in lists are
    addressed as item ``a``, MINIMAL's model."""
    out: list[tuple[str, str, str]] = []

    def kinds(ann: Any) -> list[tuple[str, str]]:
        if ann is bool or typing.get_origin(ann) is typing.Literal:
            return []
        if ann in (int, float):
            return [(ann.__name__, "scalar")]
        origin, args = typing.get_origin(ann), typing.get_args(ann)
        if origin is typing.Annotated:
            return kinds(args[0])
        if origin in (list, tuple):
            return [(k, "list") for arg in args if arg is not Ellipsis for k, _ in kinds(arg)][:1]
        if origin is dict:
            return [(k, "dict") for k, _ in kinds(args[1])][:1]
        return [kd for arg in args for kd in kinds(arg)][:1]

    for name, f in model.model_fields.items():
        path = f"{prefix}{name}"
        out += [(path, kind, shape) for kind, shape in kinds(f.annotation)]
        subs = [a for a in (f.annotation, *typing.get_args(f.annotation))
                if isinstance(a, type) and issubclass(a, BaseModel)]
        for sub in subs:
            origin = typing.get_origin(f.annotation)  # models in a dict (sweep.params) by the key ``x``
            head = f"{path}.a." if origin is list else f"{path}.x." if origin is dict else f"{path}."
            out += _numeric_fields(sub, head)
    return sorted(set(out))


NUMERIC_FIELDS = _numeric_fields()


def _written(shape: str, value: str, path: str) -> str:
    if shape == "list":
        return f"[{value}, {value}]"
    if shape == "dict":
        return f"{{{'dice' if path.endswith('components') else 'x'}: {value}}}"
    return value


def test_the_schema_walk_finds_the_numbers() -> None:
    paths = {p for p, _, _ in NUMERIC_FIELDS}
    assert {"resources.gpus", "training.epochs", "training.batch_size", "training.lr", "workload.split.folds",
            "workload.dataset.image_size", "workload.models.a.channels", "training.loss.components",
            "workload.models.a.dropout", "workload.seed"} <= paths, sorted(paths)
    assert len(paths) >= 30


@pytest.mark.parametrize("path, kind, shape", NUMERIC_FIELDS, ids=[p for p, _, _ in NUMERIC_FIELDS])
@pytest.mark.parametrize("word", ["true", "yes", "on", "off"])
def test_no_number_takes_a_yaml_boolean(tmp_path: Path, path: str, kind: str, shape: str, word: str) -> None:
    """``gpus: yes`` is not one GPU: every int and float of the schema refuses YAML 1.1's booleans, and the
    --set that wrote it is named."""
    override = f"{path}={_written(shape, word, path)}"
    text = "\n".join(problems_of(write(tmp_path, MINIMAL), overrides=[override]))
    want = "expected a whole number, not" if kind == "int" else "expected a number, not"
    assert f"--set {override}: " in text and want in text, text


@pytest.mark.parametrize("path, kind, shape", [f for f in NUMERIC_FIELDS if f[1] == "float"],
                         ids=[p for p, k, _ in NUMERIC_FIELDS if k == "float"])
@pytest.mark.parametrize("word", [".nan", ".inf", "-.inf", "nan", "1e999"])
def test_no_float_takes_a_non_finite_value(tmp_path: Path, path: str, kind: str, shape: str, word: str) -> None:
    override = f"{path}={_written(shape, word, path)}"
    text = "\n".join(problems_of(write(tmp_path, MINIMAL), overrides=[override]))
    assert f"--set {override}: " in text and "must be a finite number" in text, text


def test_booleans_are_strict_too(tmp_path: Path) -> None:
    text = "\n".join(problems_of(write(tmp_path, MINIMAL), overrides=["training.augmentation.hflip=1"]))
    assert "training.augmentation.hflip: Input should be a valid boolean" in text
    spec = load_job(write(tmp_path, MINIMAL), overrides=["training.augmentation.hflip=yes"]).spec
    assert spec.training.augmentation.hflip is True  # YAML's yes is a boolean where a boolean is wanted


def test_plain_numbers_still_load(tmp_path: Path) -> None:
    spec = load_job(write(tmp_path, MINIMAL), overrides=["training.lr=1e-4", "resources.gpus=2",
                                                         "workload.dataset.image_size=64"]).spec
    assert spec.training.lr == pytest.approx(1e-4) and spec.resources.gpus == 2
    assert spec.workload.dataset.image_size == (64, 64)


# --------------------------------------------------------------------------------------------- YAML bounds


@pytest.fixture(scope="module")
def specdir(tmp_path_factory) -> Path:
    """A folder for hypothesis tests, whose examples must not share a function-scoped tmp_path."""
    return tmp_path_factory.mktemp("spec")


def _alias_bomb(width: int, depth: int, merge: bool) -> str:
    """A flow mapping of ``depth`` levels, each ``width`` aliases of the level below, and ``top`` aliasing
    the last: about width**depth values once expanded."""
    if merge:
        items = ["l0: &l0 {k: 1}"]
        items += [f"l{i}: &l{i} {{<<: [{', '.join([f'*l{i - 1}'] * width)}], k{i}: 1}}" for i in range(1, depth)]
    else:
        items = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
        items += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, depth)]
    return "{" + ", ".join([*items, f"top: *l{depth - 1}"]) + "}"


@settings(max_examples=40, deadline=None)
@given(width=st.integers(2, 30), depth=st.integers(2, 12), merge=st.booleans(),
       where=st.sampled_from(["file", "set", "profile"]))
@example(width=10, depth=9, merge=False, where="file")  # the classic billion laughs
@example(width=4, depth=30, merge=True, where="file")  # merge keys keep every duplicate while flattening
def test_alias_bombs_are_refused_at_once(specdir: Path, width: int, depth: int, merge: bool, where: str) -> None:
    """A document that expands past the bound is refused before it is built, naming the file (or --set);
    a small one still loads. The bomb sits in a model's free-form options, where any value is allowed.
    The wall-clock bound is a hang guard (unbounded, these take minutes and gigabytes), not a speed target."""
    bomb = _alias_bomb(width, depth, merge)
    path, kw, origin = specdir / "job.yaml", {}, f"{specdir / 'job.yaml'}:"
    if where == "file":
        write(specdir, MINIMAL.replace("- {name: a, arch: unet}", f"- {{name: a, arch: unet, options: {bomb}}}"))
    elif where == "profile":
        write(specdir, MINIMAL + f"profiles:\n  big:\n    workload.models.a.options: {bomb}\n")
        kw = {"profile": "big"}
    else:
        write(specdir, MINIMAL)
        kw, origin = {"overrides": [f"workload.models.a.options={bomb}"]}, "--set workload.models.a.options="
    start = time.perf_counter()
    try:
        load_job(path, **kw)
        lines = None
    except SpecError as exc:
        lines = exc.lines()
    took = time.perf_counter() - start
    assert took < 5, f"{took:.1f}s"
    # At least this many values once expanded (lists: the leaves; merges: 3 nodes per copy of {k: 1}),
    # and fewer than 8 times as many.
    least = width ** depth if not merge else 3 * width ** (depth - 1)
    if least > MAX_YAML_VALUES:
        assert lines is not None and lines[0].startswith(origin), lines
        assert "aliases and merge keys expand to more than" in lines[0], lines
    elif least * 8 < MAX_YAML_VALUES:
        assert lines is None, lines  # a modest use of aliases is fine


@pytest.mark.parametrize("text, needle", [
    ("name: &a [*a]\n", "job.yaml:1: an alias refers to a value that contains it"),
    ("a: &a {b: *a}\n", "job.yaml:1: an alias refers to a value that contains it"),
    ("a: " + "[" * 3000 + "]" * 3000 + "\n", "job.yaml:1: values nested more than 100 deep"),
])
def test_recursive_or_deep_yaml_is_one_clear_line(tmp_path: Path, text: str, needle: str) -> None:
    lines = problems_of(write(tmp_path, text))
    assert len(lines) == 1 and needle in lines[0], lines


# --------------------------------------------------------------------------------------------- origins


FIELD_WORDS = sorted({p for path, _, _ in NUMERIC_FIELDS for p in path.split(".")}
                     | {"resources", "slurm", "pbs", "extra", "memory", "mem_per_gpu", "container", "runtime",
                        "binds", "name", "collection", "metric", "profiles", "0", "1", "a", "unet", "nope"})
VALUES = ["yes", "on", "abc", "-1", "1e999", ".nan", "null", "[]", "{}", "[1, 2]", "{a: 1}", "''", "~",
          "12:00:00", "999T", "{x: {y: [yes]}}", "--arr=0-9", "!!int", "&a [*a]"]


@settings(max_examples=150, deadline=None)
@given(sets=st.lists(st.tuples(st.lists(st.sampled_from(FIELD_WORDS) | st.text(max_size=4), min_size=1,
                                        max_size=6).map(".".join),
                               st.sampled_from(VALUES) | st.text(max_size=8)), min_size=1, max_size=3))
@example(sets=[("workload.models.unet.dropout", "abc")])
@example(sets=[("resources.slurm.extra", "{a: 1}")])
@example(sets=[("resources.memory", "null")])
@example(sets=[("container.runtime", "singularity")])
def test_every_error_from_a_set_names_that_set(specdir: Path, sets: list[tuple[str, str]]) -> None:
    """The file is valid, so whatever fails at whatever depth, every problem line points at a --set."""
    overrides = [f"{k}={v}" for k, v in sets]
    try:
        load_job(write(specdir, MINIMAL), overrides=overrides)
    except SpecError as exc:
        lines = exc.lines()
        assert all("\n" not in ln for ln in lines)
        named = [ln for ln in (lines[1:] or lines) if not ln.strip().startswith("--set ")]
        assert named == [], lines


profile_values = st.recursive(st.sampled_from([True, False, None, 1, -1, 1.5, float("nan"), "abc", "12:00:00"]),
                              lambda kids: st.dictionaries(st.sampled_from(FIELD_WORDS), kids, max_size=3)
                              | st.lists(kids, max_size=2), max_leaves=6)


@settings(max_examples=100, deadline=None)
@given(body=st.dictionaries(st.lists(st.sampled_from(FIELD_WORDS), min_size=1, max_size=4).map(".".join),
                            profile_values, min_size=1, max_size=3))
@example(body={"training": {"early_stopping": {"patience": "abc"}}})
@example(body={"resources": {"slurm": {"extra": {"a": 1}}}})
@example(body={"workload.models.a.dropout": True})
def test_every_error_from_a_profile_names_that_profile(specdir: Path, body: dict) -> None:
    import yaml

    text = MINIMAL + yaml.safe_dump({"profiles": {"p": body}}, sort_keys=False)
    try:
        load_job(write(specdir, text), profile="p")
    except SpecError as exc:
        lines = exc.lines()
        named = [ln for ln in (lines[1:] or lines) if "(profile p)" not in ln]
        assert named == [], lines


def test_loaded_job_says_where_each_field_came_from(tmp_path: Path) -> None:
    """For checks made after loading: the --set, the profile line or the file line that wrote a field."""
    text = MINIMAL + "profiles:\n  p: {training: {early_stopping: {patience: 3}}}\n"
    loaded = load_job(write(tmp_path, text), "p", ["resources.queue=a b", "workload.models.a.dropout=0.1"])
    assert loaded.where("resources.queue") == "--set resources.queue=a b"
    assert loaded.where("workload.models.0.dropout") == "--set workload.models.a.dropout=0.1"
    assert loaded.where("training.early_stopping.patience") == f"{tmp_path / 'job.yaml'}:15 (profile p)"
    assert loaded.where("training.lr") == f"{tmp_path / 'job.yaml'}:10"


# --------------------------------------------------------------------------------------------- class weights

@settings(max_examples=60, deadline=None)
@given(num_classes=st.integers(2, 20),
       weights=st.lists(st.floats(min_value=-5, max_value=50, allow_nan=False), min_size=1, max_size=22))
def test_class_weights_are_one_positive_weight_per_class(specdir: Path, num_classes: int, weights: list[float]) -> None:
    """Any list is accepted exactly when it has num_classes weights, all above 0; otherwise one line names
    training.loss.class_weights and says what to give."""
    path = write(specdir, MINIMAL, "cw.yaml")
    sets = [f"workload.dataset.num_classes={num_classes}", "training.loss={components: {weighted_ce: 1.0}}",
            f"training.loss.class_weights={weights!r}"]
    good = len(weights) == num_classes and all(w > 0 for w in weights)
    if good:
        assert list(load_job(path, overrides=sets).spec.training.loss.class_weights) == pytest.approx(weights)
        return
    summary, *lines = problems_of(path, overrides=sets)
    assert summary.endswith("1 problem(s) in the job") and len(lines) == 1, lines
    assert "training.loss.class_weights: " in lines[0] and "\n" not in lines[0], lines
    assert ("above 0" in lines[0]) if any(w <= 0 for w in weights) else f"for {num_classes} classes" in lines[0]
