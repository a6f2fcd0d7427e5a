"""Job specs: every shipped job loads with its real values; every problem is reported with file:line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from hpcseg.errors import SpecError
from hpcseg.spec import (
    JobSpec,
    find_job,
    list_jobs,
    load_job,
    parse_memory_mb,
    parse_walltime,
    with_absolute_paths,
)

REPO = Path(__file__).resolve().parent.parent
SHIPPED = ["microbead_optimized", "microbead_mitochondria", "ssmu_net_overnight", "marida_se_unet",
           "marida_attention_unet", "ham10000_comparison"]

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
    assert spec.slug == "my_job_rm_-rf_x"


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
