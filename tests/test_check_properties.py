"""Properties of the checks that find, before the queue, what submit or the node would refuse.

Each class of issue 10's "check finds what submit and the node would refuse" is wide (any item count,
fold count, fraction and seed; any option name; any image size and depth; any number anywhere in the
job; any folder name), so each is a hypothesis property over the code that decides it, with no dataset
on disk: the split over a :class:`DatasetIndex` built in memory, the others over a spec.
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpcseg.archs import CATALOGUE, model_problems
from hpcseg.errors import HpcsegError
from hpcseg.layouts import DatasetIndex
from hpcseg.preflight import Checks, _check_finite, _check_metric, _check_paths
from hpcseg.spec import JobSpec
from hpcseg.splits import SEED_MAX, make_splits

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def job(**parts: Any) -> JobSpec:
    doc: dict[str, Any] = {
        "name": "p",
        "workload": {"task": "binary_segmentation",
                     "dataset": {"root": "/nonexistent", "layout": "microbead", "image_size": 32},
                     "models": [{"name": "m", "arch": "unet", "channels": [4, 8]}]},
        "training": {"epochs": 1, "batch_size": 1, "lr": 1e-3},
        "resources": {"gpus": 0, "cpus": 1, "memory": "1G", "walltime": "00:30:00"},
    }
    for dotted, value in parts.items():
        node = doc
        *head, last = dotted.split("__")
        for key in head:
            node = node.setdefault(key, {})
        node[last] = value
    return JobSpec.model_validate(doc)


# --------------------------------------------------------------------------------------------- the split


@st.composite
def split_cases(draw: st.DrawFn) -> tuple[JobSpec, DatasetIndex]:
    n = draw(st.integers(1, 14))
    grouped = draw(st.booleans())
    strata = np.array(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), dtype=np.int64)
    groups = np.array([f"g{draw(st.integers(0, max(0, n - 1)))}" for _ in range(n)]) if grouped else None
    spec = job(workload__split={"method": draw(st.sampled_from(["random", "stratified"])),
                                "folds": draw(st.integers(1, 16)),
                                "val_fraction": draw(st.floats(0.01, 0.99))},
               workload__seed=draw(st.integers(0, SEED_MAX)))  # out of range: refused by the schema (test_spec)
    return spec, DatasetIndex(names=[f"i{k:02d}" for k in range(n)], strata=strata, groups=groups)


@SETTINGS
@given(split_cases())
def test_a_split_is_made_whole_or_refused_in_one_line(case: tuple[JobSpec, DatasetIndex]) -> None:
    """Whatever the counts, fractions and seed: a clear refusal, or folds that the trainer can use (both
    sides non-empty, disjoint, groups never straddling) -- never a scikit-learn traceback."""
    spec, index = case
    try:
        splits = make_splits(spec, index)
    except HpcsegError as exc:
        assert "\n" not in exc.message and ("workload." in exc.message or "split" in exc.message)
        return
    assert 0 <= spec.workload.seed <= SEED_MAX
    group_of = dict(zip(index.names, index.groups, strict=True)) if index.groups is not None else None
    for fold in splits["folds"]:
        train, val = set(fold["train"]), set(fold["val"])
        assert train and val and not train & val and train | val <= set(index.names)
        if group_of is not None:
            assert not {group_of[n] for n in train} & {group_of[n] for n in val}
    if spec.workload.split.folds > 1:
        assert sorted(n for f in splits["folds"] for n in f["val"]) == sorted(index.names)


# --------------------------------------------------------------------------------------------- models


@SETTINGS
@given(arch=st.sampled_from(sorted(CATALOGUE)),
       options=st.dictionaries(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=14), st.integers(1, 4),
                               max_size=3))
def test_every_option_the_builder_does_not_read_is_named(arch: str, options: dict[str, int]) -> None:
    task = "classification" if arch in ("resnet50", "densenet121", "efficientnet_b3", "vit_b_16") else (
        "multiclass_segmentation" if arch == "ssmu_net" else "binary_segmentation")
    spec = job(workload__task=task, workload__dataset={"root": "/x", "image_size": 64},
               workload__models=[{"name": "m", "arch": arch, "channels": [4, 8], "options": options}])
    named = {w.rsplit(".", 1)[1] for w, _ in model_problems(spec, spec.workload.models[0]) if ".options." in w}
    known = set(CATALOGUE[arch].options)  # the microbead source reads no options
    assert named == {k for k in options if k not in known} - ({"patch_size"} if "patch_size" in known else set())


@SETTINGS
@given(h=st.integers(8, 300), w=st.integers(8, 300), levels=st.integers(1, 7),
       arch=st.sampled_from([a for a, info in CATALOGUE.items() if info.halves]))
def test_image_size_is_refused_exactly_when_a_level_cannot_halve_it(h: int, w: int, levels: int, arch: str) -> None:
    task = "multiclass_segmentation" if arch == "ssmu_net" else "binary_segmentation"
    spec = job(workload__task=task, workload__dataset={"root": "/x", "image_size": [h, w]},
               workload__models=[{"name": "m", "arch": arch, "channels": [4 * 2**i for i in range(levels)]}])
    problems = model_problems(spec, spec.workload.models[0])
    factor = 2 ** (levels - 1)
    expect_size = levels >= 2 and (h % factor != 0 or w % factor != 0)
    assert any(where == "workload.dataset.image_size" for where, _ in problems) == expect_size
    assert any(where.endswith(".channels") for where, _ in problems) == (levels < 2)


@SETTINGS
@given(h=st.integers(8, 300), patch=st.integers(1, 64))
def test_vit_patches_must_tile_the_image(h: int, patch: int) -> None:
    spec = job(workload__task="classification", workload__dataset={"root": "/x", "image_size": h},
               workload__models=[{"name": "v", "arch": "vit_b_16", "options": {"patch_size": patch}}])
    problems = model_problems(spec, spec.workload.models[0])
    assert any(w == "workload.dataset.image_size" for w, _ in problems) == (h % patch != 0)


# --------------------------------------------------------------------------------------------- numbers


FLOAT_FIELDS = ["training__weight_decay", "training__grad_clip", "training__early_stopping__min_delta"]


@SETTINGS
@given(where=st.sampled_from([*FLOAT_FIELDS, "option"]), bad=st.sampled_from([math.inf, -math.inf, math.nan]),
       good=st.floats(0.0, 1e6, allow_nan=False, allow_infinity=False, exclude_min=True))
def test_a_non_finite_number_anywhere_is_named(where: str, bad: float, good: float) -> None:
    def checked(value: float) -> list[str]:
        if where == "option":
            spec = job(workload__models=[{"name": "m", "arch": "residual_unet", "channels": [4, 8],
                                          "options": {"num_res_units": value}}])
        else:
            try:
                spec = job(**{where: value})
            except ValueError:  # the schema itself refuses it: also before the queue, also one line each
                return ["schema"]
        c = Checks(spec, None)
        _check_finite(c)
        return [p.where for p in c.result.errors]

    assert checked(good) == []
    found = checked(bad)
    name = "workload.models.m.options.num_res_units" if where == "option" else where.replace("__", ".")
    assert found in (["schema"], [name])


# --------------------------------------------------------------------------------------------- metric


@SETTINGS
@given(task=st.sampled_from(["binary_segmentation", "multiclass_segmentation", "classification"]),
       metric=st.one_of(st.sampled_from(["val_jaccard", "val_miou", "val_accuracy", "val_loss", "train_loss",
                                         "epoch", "lr", "val_dice", "val_macro_f1"]),
                        st.from_regex(r"\A[A-Za-z0-9_]{1,20}\Z")))
def test_metric_must_be_a_column_the_trainer_accepts(task: str, metric: str) -> None:
    from hpcseg.columns import columns

    spec = job(workload__task=task, collection={"metric": metric, "mode": "min" if "loss" in metric else "max"})
    c = Checks(spec, None)
    _check_metric(c)
    assert bool(c.result.errors) == (metric not in columns(task)[1:-2])


# --------------------------------------------------------------------------------------------- names


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(length=st.integers(1, 400), char=st.sampled_from(["r", "é", "細"]))
def test_folder_names_longer_than_the_file_system_allows_are_named(tmp_path: Path, length: int, char: str) -> None:
    name = char * length
    c = Checks(job(), None)
    _check_paths(c, tmp_path / name / "runs")
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    assert bool(c.result.errors) == (len(name.encode()) > limit)
    assert not (tmp_path / name).exists() if len(name.encode()) <= limit else True


@pytest.mark.parametrize("value,shown", [(".inf", "inf"), (".nan", "nan"), ("-.inf", "-inf")])
def test_check_cli_names_non_finite_option(tmp_path: Path, value: str, shown: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Through the real verb: the line names the option, exit 2, and no traceback."""
    from hpcseg.cli import main
    from tests.datasets import write_microbead

    write_microbead(tmp_path / "data", n=4, size=32)
    (tmp_path / "job.yaml").write_text(
        "name: t\nworkload:\n  task: binary_segmentation\n"
        f"  dataset: {{root: {tmp_path / 'data'}, image_size: 32}}\n"
        f"  models: [{{name: m, arch: residual_unet, channels: [4, 8], options: {{num_res_units: {value}}}}}]\n"
        "  split: {method: random, val_fraction: 0.25}\n"
        "training: {epochs: 1, batch_size: 1, lr: 0.001}\n"
        "resources: {gpus: 0, cpus: 1, memory: 1G, walltime: '00:30:00'}\n", encoding="utf-8")
    rc = main(["check", str(tmp_path / "job.yaml")])
    out = capsys.readouterr().out
    assert rc == 2 and f"workload.models.m.options.num_res_units: {shown} is not a finite number" in out


def test_options_a_workloads_data_source_reads_are_valid_on_any_arch() -> None:
    """The hyperspectral source reads its patch sampling from the model's options, whatever the arch."""
    models = [{"name": "a", "arch": "attention_unet", "channels": [4, 8],
               "options": {"patches_per_core": 4, "min_tissue": 0.5, "min_foregound": 0.1}}]
    spec = job(workload__task="multiclass_segmentation",
               workload__dataset={"root": "/x", "layout": "hyperspectral", "image_size": 32, "num_classes": 3},
               workload__models=models)
    problems = model_problems(spec, spec.workload.models[0])
    assert [w for w, _ in problems] == ["workload.models.a.options.min_foregound"]
    assert "did you mean 'min_foreground'?" in problems[0][1]


# --------------------------------------------------------------------------------------------- submit


@pytest.fixture(scope="module")
def beads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.datasets import write_microbead

    return write_microbead(tmp_path_factory.mktemp("data") / "beads", n=5, size=32)


_EXAMPLE = itertools.count()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(folds=st.integers(1, 8), val=st.floats(0.05, 0.99), seed=st.integers(0, 3),
       extra=st.lists(st.sampled_from(["--exclusive", "--arr=0-9", "--time=1", "--mem=1G", "a b", "--comment=x"]),
                      max_size=2),
       check=st.booleans())
def test_a_submit_refused_with_exit_2_leaves_no_run_folder(beads: Path, tmp_path: Path, folds: int, val: float,
                                                          seed: int, extra: list[str], check: bool) -> None:
    """With or without preflight, whatever refuses the input (the checks, the split, the renderer's
    directive rules): exit 2 means no run folder and no runs/ folder made for it; otherwise a run."""
    from hpcseg.spec import LoadedJob
    from hpcseg.submit import submit_job

    spec = job(workload__dataset={"root": str(beads), "layout": "microbead", "image_size": 32},
               workload__split={"method": "random", "folds": folds, "val_fraction": val}, workload__seed=seed,
               resources__slurm={"extra": extra})
    runs = tmp_path / f"runs-{next(_EXAMPLE)}"  # one per example: tmp_path is shared by all of them
    try:
        run = submit_job(LoadedJob(spec, tmp_path / "job.yaml"), "slurm", runs_dir=runs, dry_run=True, check=check)
    except HpcsegError as exc:
        assert exc.exit_code == 2, exc.message
        assert not runs.exists(), sorted(str(p) for p in runs.rglob("*"))
        return
    assert run.manifest["state"] == "dry-run" and (run.dir / "splits.json").is_file()
