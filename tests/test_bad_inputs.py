"""Every bad input of docs/bad-inputs.md, run through the real CLI exactly as a user would meet it.

Each case runs ``python -m hpcseg ...`` in a subprocess whose working directory is a fresh temporary folder
(the ``<tmp>`` of the doc), with a controlled PATH and no HPCSEG_*/SLURM_* variables leaking in, so what
is asserted is what a user sees: the exit code, no traceback, the documented first line (and, where the
first line is a summary, the line under it that names the file or field), and that a refused command left
nothing half-written behind. The doc stays human-written; ``test_doc_table_matches_cases`` keeps the
table and the cases below from drifting apart (names, exit codes and key phrases).

Where the CLI misbehaves, the case states the RIGHT behaviour and fails until the code is fixed.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests.bad_run_files import damaged_cases
from tests.datasets import blob_mask, gray_image, save_image, write_microbead
from tests.test_render import make_bin

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "bad-inputs.md"

# A tiny valid job: four 32x32 microbead pairs in ./data, no container, one small U-Net. Cases break
# one thing each (a line of this text, an override, the dataset, PATH) and leave the rest valid.
BASE_JOB = """\
name: tiny
workload:
  task: binary_segmentation
  dataset: {root: data, layout: microbead, image_size: 32, channels: 1, num_classes: 2}
  models:
    - {name: unet, arch: unet, channels: [4, 8], dropout: 0.1}
  split: {method: random, val_fraction: 0.25}
training:
  epochs: 1
  batch_size: 2
  lr: 0.01
  optimizer: adam
resources:
  gpus: 0
  cpus: 1
  memory: 1G
  walltime: "00:10:00"
container:
  runtime: none
profiles:
  quick: {training.epochs: 1}
"""

SUBMIT = ("submit", "job.yaml", "--scheduler", "local", "--dry-run")  # a refused submit must create nothing


# --------------------------------------------------------------------------------------------- setups


def job_file(tmp: Path, *edits: tuple[str, str], text: str | None = None) -> None:
    """Write tmp/job.yaml: BASE_JOB with each (old, new) replaced once, or ``text`` as it is."""
    body = BASE_JOB
    for old, new in edits:
        assert old in body, old
        body = body.replace(old, new, 1)
    (tmp / "job.yaml").write_text(body if text is None else text, encoding="utf-8")


def dataset(tmp: Path, **kw) -> Path:
    return write_microbead(tmp / "data", n=kw.pop("n", 4), size=kw.pop("size", 32), **kw)


def valid(tmp: Path) -> None:
    """The base job and its dataset, both fine."""
    job_file(tmp)
    dataset(tmp)


def edited(*edits: tuple[str, str]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        job_file(tmp, *edits)
        dataset(tmp)
    return setup


def with_text(text: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        job_file(tmp, text=text)
        dataset(tmp)
    return setup


def data_then(change: Callable[[Path], None]) -> Callable[[Path], None]:
    """The valid job, then ``change(dataset_root)``."""
    def setup(tmp: Path) -> None:
        valid(tmp)
        change(tmp / "data")
    return setup


# Opening a weights file builds the model (torch, MONAI), and MONAI imports matplotlib, which caches its
# font list under $HOME: not our output, so not a half-written leftover.
MPL_CACHE = (".cache", ".cache/*", ".config", ".config/*")


def weights_file(kind: str) -> Callable[[Path], None]:
    """The valid job and a weights/unet.pth that is no checkpoint, or ResNet-50 tensors (another arch)."""
    def setup(tmp: Path) -> None:
        valid(tmp)
        (tmp / "weights").mkdir()
        if kind == "text":
            (tmp / "weights" / "unet.pth").write_text("not a checkpoint\n")
            return
        import torch

        torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "layer4.2.conv3.weight": torch.zeros(2048, 512, 1, 1),
                    "fc.weight": torch.zeros(1000, 2048)}, tmp / "weights" / "unet.pth")
    return setup


def no_dataset(tmp: Path) -> None:
    job_file(tmp)


def non_binary_mask(root: Path) -> None:
    m = np.zeros((32, 32), np.uint8)
    m[:8] = 3
    m[16:] = 255
    save_image(root / "masks" / "bead_001.png", m)


def mixed_sizes(root: Path) -> None:
    save_image(root / "images" / "bead_001.png", gray_image(48, 1))
    save_image(root / "masks" / "bead_001.png", blob_mask(48, 1) * 255)


def odd_names(tmp: Path) -> None:
    job_file(tmp)
    write_microbead(tmp / "data", size=32, names=["bead one", "perle ä ñ", "細胞 3", "it's $(x)"])


def stand_in_runtime(tmp: Path) -> None:
    """A stand-in ``singularity`` on PATH (tests/test_render.py), so only the image can be missing."""
    valid(tmp)
    make_bin(tmp)


def image_but_no_runtime(tmp: Path) -> None:
    valid(tmp)
    (tmp / "img").mkdir()
    (tmp / "img" / "hpcseg.sif").write_bytes(b"not empty")


def runs_under_a_file(tmp: Path) -> None:
    valid(tmp)
    (tmp / "afile").write_text("a regular file, so afile/runs cannot be a folder (root ignores chmod)\n")


def dry_run_then_break(tmp: Path) -> None:
    """A run recorded by a dry-run submit, then its dataset loses an image's bytes (the file is rewritten)."""
    valid(tmp)
    proc = cli(tmp, *SUBMIT, "--runs-dir", "runs")
    assert proc.returncode == 0, proc.stderr
    (tmp / "data" / "images" / "bead_002.png").write_bytes(b"this is no longer a PNG")


BOMB = ("{a: &a [x,x,x,x,x,x,x,x,x,x], b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], "
        "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], "
        "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d], f: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]}")  # 10**6 values expanded
MERGE_BOMB = ("{a: &a {k: 1}, b: &b {<<: [*a,*a,*a,*a,*a,*a,*a,*a]}, c: &c {<<: [*b,*b,*b,*b,*b,*b,*b,*b]}, "
              "d: &d {<<: [*c,*c,*c,*c,*c,*c,*c,*c]}, e: &e {<<: [*d,*d,*d,*d,*d,*d,*d,*d]}, "
              "f: {<<: [*e,*e,*e,*e,*e,*e,*e,*e]}}")  # merge keys keep every duplicate: 8**5 pairs
MODEL = "- {name: unet, arch: unet, channels: [4, 8], dropout: 0.1}"


def with_options(bomb: str) -> Callable[[Path], None]:
    """The model's free-form ``options`` (any value goes) carry ``bomb``."""
    return edited((MODEL, MODEL[:-1] + f", options: {bomb}}}"))


def with_sweep(body: str) -> Callable[[Path], None]:
    """The valid job with a ``sweep:`` section (line 22) of ``body`` added at its end."""
    def setup(tmp: Path) -> None:
        job_file(tmp, text=BASE_JOB + "sweep:\n" + body)
        dataset(tmp)
    return setup


def with_file(name: str, text: str) -> Callable[[Path], None]:
    """The valid job and dataset, and ``name`` holding ``text`` beside them."""
    def setup(tmp: Path) -> None:
        valid(tmp)
        (tmp / name).write_text(text, encoding="utf-8")
    return setup


def first_lookalike_run(tmp: Path) -> None:
    """A dry run of "beads (new lr)" exists; the case then submits "beads, new lr"."""
    valid(tmp)
    proc = cli(tmp, *SUBMIT, "--set", "name=beads (new lr)")
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------------------------- cases


def link_onto(kind: str) -> Callable[[Path], None]:
    """A valid job, and job.slurm already there as something that is not a regular file."""
    def setup(tmp: Path) -> None:
        valid(tmp)
        (tmp / "precious").write_text("keep me\n")
        if kind == "symlink":
            (tmp / "job.slurm").symlink_to(tmp / "precious")
        else:
            os.mkfifo(tmp / "job.slurm")
    return setup


def own_templates(mode: int) -> Callable[[Path], None]:
    """A valid job with a site template beside it, in a templates/ folder of the given mode."""
    def setup(tmp: Path) -> None:
        valid(tmp)
        (tmp / "templates").mkdir()
        (tmp / "templates" / "slurm.sh.j2").write_text("#!/bin/bash\n#SBATCH --job-name={{ d.job_name }}\n"
                                                       "{% include 'body.sh.j2' %}")
        (tmp / "templates").chmod(mode)
    return setup


@dataclass(frozen=True)
class Case:
    """One row of docs/bad-inputs.md.

    ``first`` must be in the first line of ``stream`` and ``detail`` (when given) in line ``detail_at``
    (None: any line), after the temporary folder is replaced by ``<tmp>``. ``creates`` lists the paths
    the command may leave under <tmp> (globs); anything else new is a half-written leftover.
    """

    id: str
    argv: tuple[str, ...]
    exit: int
    first: str
    detail: str | None = None
    setup: Callable[[Path], None] = valid
    stream: str = "stderr"
    detail_at: int | None = 1
    path: str = "stand-in"  # "stand-in": <tmp>/bin then the system PATH; "empty": <tmp>/emptybin only
    creates: tuple[str, ...] = ()
    marks: tuple = field(default=())


SPEC_FIRST = "hpcseg render: job.yaml: 1 problem(s) in the job"

CASES: list[Case] = [
    # --- the job file
    Case("malformed-yaml", ("render", "job.yaml"), 2,
         "hpcseg render: job.yaml:4: malformed YAML: while parsing a flow mapping that starts here",
         setup=edited(("num_classes: 2}", "num_classes: 2"))),
    Case("unknown-key", ("render", "job.yaml"), 2, SPEC_FIRST,
         "job.yaml:12: training.optimiser: unknown key (did you mean 'optimizer'?)",
         setup=edited(("optimizer: adam", "optimiser: adam"))),
    Case("wrong-type", ("render", "job.yaml"), 2, SPEC_FIRST,
         "job.yaml:11: training.lr: Input should be a valid number",
         setup=edited(("lr: 0.01", "lr: fast"))),
    Case("walltime-25:99", ("render", "job.yaml"), 2, SPEC_FIRST,
         "job.yaml:17: resources.walltime: expected HH:MM:SS such as 12:00:00, got '25:99'",
         setup=edited(('"00:10:00"', '"25:99"'))),
    Case("walltime-12:60:00", ("render", "job.yaml"), 2, SPEC_FIRST,
         "job.yaml:17: resources.walltime: minutes and seconds must be below 60 in '12:60:00'",
         setup=edited(('"00:10:00"', '"12:60:00"'))),
    Case("negative-gpus", ("render", "job.yaml"), 2, SPEC_FIRST,
         "job.yaml:14: resources.gpus: Input should be greater than or equal to 0 (got -1)",
         setup=edited(("gpus: 0", "gpus: -1"))),
    Case("huge-gpus", ("render", "job.yaml"), 2, SPEC_FIRST,
         "job.yaml:14: resources.gpus: Input should be less than or equal to 64 (got 1000)",
         setup=edited(("gpus: 0", "gpus: 1000"))),
    Case("huge-memory", ("render", "job.yaml"), 2, SPEC_FIRST,
         "job.yaml:16: resources.memory: '999T' is more than any node has (at most 64T)",
         setup=edited(("memory: 1G", "memory: 999T"))),
    Case("huge-cpus", ("render", "job.yaml"), 2, SPEC_FIRST,
         "job.yaml:15: resources.cpus: Input should be less than or equal to 4096 (got 100000)",
         setup=edited(("cpus: 1", "cpus: 100000"))),
    Case("dropout-above-1", ("render", "job.yaml"), 2, SPEC_FIRST,
         "job.yaml:6: workload.models.0.dropout: Input should be less than or equal to 1 (got 1.5)",
         setup=edited(("dropout: 0.1", "dropout: 1.5"))),
    Case("class-weights-wrong-count", ("render", "job.yaml"), 2, SPEC_FIRST,
         "job.yaml:13: training.loss.class_weights: 3 weight(s) for 2 classes (workload.dataset.num_classes); "
         "give one per class, in class order",
         setup=edited(("  optimizer: adam\n", "  optimizer: adam\n  loss: {components: {weighted_ce: 1.0}, "
                                                "class_weights: [1.0, 2.0, 3.0]}\n"))),
    Case("class-weights-without-weighted-ce", ("render", "job.yaml"), 2, SPEC_FIRST,
         "job.yaml:13: training.loss: class_weights: only the weighted_ce component uses class weights; add "
         "weighted_ce to training.loss.components or drop class_weights",
         setup=edited(("  optimizer: adam\n", "  optimizer: adam\n  loss: {components: {dice: 1.0}, "
                                                "class_weights: inverse_log_frequency}\n"))),
    Case("empty-job-file", ("render", "job.yaml"), 2,
         "hpcseg render: job.yaml: the file is empty; a job needs name, workload, training and resources",
         setup=with_text("")),
    Case("unknown-profile", ("render", "job.yaml", "--profile", "quik"), 2,
         "hpcseg render: job.yaml: no profile 'quik' (this job has: quick)"),
    Case("set-without-equals", ("render", "job.yaml", "--set", "training.lr"), 2,
         "hpcseg render: --set training.lr: expected FIELD=VALUE, e.g. --set training.lr=5e-5"),
    Case("set-unknown-field", ("render", "job.yaml", "--set", "training.learning_rate=1e-3"), 2, SPEC_FIRST,
         "--set training.learning_rate=1e-3: training.learning_rate: unknown key (did you mean 'lr'?)"),
    Case("set-wrong-type", ("render", "job.yaml", "--set", "training.epochs=many"), 2, SPEC_FIRST,
         "--set training.epochs=many: training.epochs: Input should be a valid integer"),
    # sweeps (docs/jobs.md): every value a sweep can produce is checked by the schema before anything runs
    Case("sweep-range-out-of-bounds", ("render", "job.yaml"), 2,
         "hpcseg render: job.yaml:25: sweep.params.training.lr: 20.0 is refused by the schema: training.lr: "
         "Input should be less than or equal to 10 (got 20.0)",
         setup=with_sweep("  method: grid\n  params:\n    training.lr: {choice: [0.01, 20.0]}\n")),
    Case("sweep-grid-continuous", ("render", "job.yaml"), 2, SPEC_FIRST,
         "job.yaml:22: sweep: grid needs choice or int for every parameter; training.lr is a continuous range",
         setup=with_sweep("  method: grid\n  params:\n    training.lr: {uniform: [0.001, 0.1]}\n")),
    Case("sweep-unknown-distribution", ("render", "job.yaml"), 2, SPEC_FIRST,
         "job.yaml:26: sweep.params.training.lr: unknown distribution 'normal'; use choice, uniform, "
         "log_uniform or int",
         setup=with_sweep("  method: random\n  trials: 2\n  params:\n    training.lr: {normal: [0, 1]}\n")),
    Case("sweep-float-range-on-whole-number", ("render", "job.yaml"), 2,
         "hpcseg render: job.yaml:26: sweep.params.training.batch_size: the field takes whole numbers; use "
         "{int: [lo, hi]} or {choice: [...]}",
         setup=with_sweep("  method: random\n  trials: 2\n  params:\n    training.batch_size: {uniform: [2, 8]}\n")),
    Case("sweep-optuna-without-trials", ("render", "job.yaml"), 2, SPEC_FIRST,
         "job.yaml:22: sweep: method optuna needs trials: how many configurations to try",
         setup=with_sweep("  method: optuna\n  params:\n    training.lr: {log_uniform: [1.0e-4, 0.1]}\n")),
    Case("set-file-missing", ("render", "job.yaml", "--set-file", "best.yaml"), 2,
         "hpcseg render: --set-file best.yaml: no such file"),
    Case("set-file-not-a-mapping", ("render", "job.yaml", "--set-file", "best.yaml"), 2,
         "hpcseg render: --set-file best.yaml: expected a mapping of field paths to values, e.g. 'training.lr: 0.001'",
         setup=with_file("best.yaml", "- training.lr\n- 0.001\n")),
    # YAML: expansion is bounded, scalars are strict, and what a --set or profile broke is named
    Case("yaml-alias-bomb", ("render", "job.yaml"), 2,
         "hpcseg render: job.yaml:6: aliases and merge keys expand to more than 50000 values; write the values "
         "out or use fewer aliases", setup=with_options(BOMB)),
    Case("yaml-merge-bomb", ("render", "job.yaml"), 2,
         "hpcseg render: job.yaml:6: aliases and merge keys expand to more than 50000 values",
         setup=with_options(MERGE_BOMB)),
    Case("yaml-recursive-alias", ("render", "job.yaml"), 2,
         "hpcseg render: job.yaml:6: an alias refers to a value that contains it (a recursive structure); "
         "write the value out", setup=with_options("&loop [*loop]")),
    Case("gpus-yes", ("render", "job.yaml"), 2, SPEC_FIRST,
         "job.yaml:14: resources.gpus: expected a whole number, not true (YAML reads true/yes/on and "
         "false/no/off as booleans)", setup=edited(("gpus: 0", "gpus: yes"))),
    Case("epochs-on", ("render", "job.yaml"), 2, SPEC_FIRST,
         "job.yaml:9: training.epochs: expected a whole number, not true", setup=edited(("epochs: 1", "epochs: on"))),
    Case("lr-nan", ("render", "job.yaml"), 2, SPEC_FIRST,
         "job.yaml:11: training.lr: must be a finite number, not NaN or infinity",
         setup=edited(("lr: 0.01", "lr: .nan"))),
    Case("set-alias-bomb", ("render", "job.yaml", "--set", f"workload.models.unet.options={BOMB}"), 2,
         "hpcseg render: --set workload.models.unet.options={a: &a",
         ": the value's aliases and merge keys expand to more than 50000 values", detail_at=0),
    Case("set-deep-wrong-type", ("render", "job.yaml", "--set", "workload.models.unet.dropout=abc"), 2, SPEC_FIRST,
         "--set workload.models.unet.dropout=abc: workload.models.0.dropout: Input should be a valid number"),
    Case("set-breaks-a-section-rule", ("render", "job.yaml", "--set", "resources.memory=null"), 2, SPEC_FIRST,
         "--set resources.memory=null: resources: set memory (e.g. 240G) or mem_per_gpu"),
    Case("set-refused-after-loading", ("render", "job.yaml", "--set", "resources.queue=a b"), 2,
         "hpcseg render: --set resources.queue=a b: resources.queue: "),
    Case("profile-deep-wrong-type", ("render", "job.yaml", "--profile", "quick"), 2, SPEC_FIRST,
         "job.yaml:21 (profile quick): training.early_stopping.patience: Input should be a valid integer",
         setup=edited(("quick: {training.epochs: 1}", "quick: {training: {early_stopping: {patience: soon}}}"))),
    # identity: names that read alike still get their own runs folder
    Case("lookalike-job-names", (*SUBMIT, "--set", "name=beads, new lr"), 0,
         "beads_new_lr-b9033ea652/", "dry run, nothing submitted", setup=first_lookalike_run, stream="stdout",
         detail_at=0, creates=("runs/beads_new_lr-b9033ea652", "runs/beads_new_lr-b9033ea652/*")),
    Case("unknown-job-name", ("render", "microbead_optimised"), 2,
         "hpcseg render: job 'microbead_optimised' not found (did you mean 'microbead_optimized'?)"),
    # --- the dataset (preflight, through a submit that must refuse and create nothing)
    Case("dataset-root-missing", SUBMIT, 2, "hpcseg submit: tiny: preflight found 1 error(s); nothing was created",
         "ERROR [dataset] <tmp>/data: dataset folder not found (workload.dataset.root)", setup=no_dataset),
    Case("images-folder-missing", SUBMIT, 2, "hpcseg submit: tiny: preflight found 1 error(s)",
         "ERROR [dataset] <tmp>/data/images: folder missing",
         setup=data_then(lambda r: shutil.rmtree(r / "images"))),
    Case("masks-folder-missing", SUBMIT, 2, "hpcseg submit: tiny: preflight found 1 error(s)",
         "ERROR [dataset] <tmp>/data/masks: folder missing",
         setup=data_then(lambda r: shutil.rmtree(r / "masks"))),
    Case("image-without-mask", SUBMIT, 2, "hpcseg submit: tiny: preflight found 1 error(s)",
         "ERROR [dataset] <tmp>/data/masks: no mask for 1 image in images/: bead_000.png",
         setup=data_then(lambda r: (r / "masks" / "bead_000.png").unlink())),
    Case("mask-without-image", SUBMIT, 2, "hpcseg submit: tiny: preflight found 1 error(s)",
         "ERROR [dataset] <tmp>/data/images: no image for 1 mask in masks/: bead_000.png",
         setup=data_then(lambda r: (r / "images" / "bead_000.png").unlink())),
    Case("corrupt-image", SUBMIT, 2, "hpcseg submit: tiny: preflight found 1 error(s)",
         "ERROR [dataset] <tmp>/data/images/bead_001.png: cannot decode image",
         setup=data_then(lambda r: (r / "images" / "bead_001.png").write_bytes(b"GIF89a, or rather not"))),
    Case("empty-file", SUBMIT, 2, "hpcseg submit: tiny: preflight found 1 error(s)",
         "ERROR [dataset] <tmp>/data/masks/bead_001.png: empty file (0 bytes)",
         setup=data_then(lambda r: (r / "masks" / "bead_001.png").write_bytes(b""))),
    Case("mask-not-binary", SUBMIT, 2, "hpcseg submit: tiny: preflight found 1 error(s)",
         "ERROR [dataset] <tmp>/data/masks/bead_001.png: mask is not binary: values 0, 3, 255",
         setup=data_then(non_binary_mask)),
    Case("mask-size-mismatch", SUBMIT, 2, "hpcseg submit: tiny: preflight found 1 error(s)",
         "ERROR [dataset] <tmp>/data/masks/bead_001.png: mask is 40x40 (HxW) but its image bead_001.png is 32x32",
         setup=data_then(lambda r: save_image(r / "masks" / "bead_001.png", blob_mask(40)))),
    Case("mixed-image-sizes", ("check", "job.yaml"), 0, "hpcseg check tiny: <tmp>/job.yaml",
         "warn  [dataset] <tmp>/data/images: images come in 2 sizes (HxW 32x32: 3, 48x48: 1)",
         setup=data_then(mixed_sizes), stream="stdout"),
    Case("odd-file-names", ("check", "job.yaml"), 0, "hpcseg check tiny: <tmp>/job.yaml",
         "all checks passed", setup=odd_names, stream="stdout", detail_at=None),
    # --- container and weights
    Case("container-image-missing",
         (*SUBMIT, "--set", "container.runtime=singularity", "--set", "container.image=img/hpcseg.sif"), 2,
         "hpcseg submit: tiny: preflight found 1 error(s)",
         "ERROR [container] <tmp>/img/hpcseg.sif: container image not found", setup=stand_in_runtime),
    Case("runtime-not-on-path",
         (*SUBMIT, "--set", "container.runtime=singularity", "--set", "container.image=img/hpcseg.sif"), 2,
         "hpcseg submit: tiny: preflight found 1 error(s)",
         "ERROR [container] <tmp>/job.yaml: container.runtime: singularity not found on PATH",
         setup=image_but_no_runtime, path="empty"),
    Case("weights-missing", (*SUBMIT, "--set", "workload.models.unet.weights=weights/unet.pth"), 2,
         "hpcseg submit: tiny: preflight found 1 error(s)",
         "ERROR [weights] <tmp>/weights/unet.pth: weights of model unet not found"),
    Case("weights-not-a-checkpoint", (*SUBMIT, "--set", "workload.models.unet.weights=weights/unet.pth"), 2,
         "hpcseg submit: tiny: preflight found 1 error(s)",
         "ERROR [weights] <tmp>/weights/unet.pth: cannot read the weights of model unet (not a file torch.save wrote)",
         setup=weights_file("text"), creates=MPL_CACHE),
    Case("weights-of-another-arch", (*SUBMIT, "--set", "workload.models.unet.weights=weights/unet.pth"), 2,
         "hpcseg submit: tiny: preflight found 1 error(s)",
         "ERROR [weights] <tmp>/weights/unet.pth: no tensor of model unet (unet) is in this file with its shape",
         setup=weights_file("resnet"), creates=MPL_CACHE),
    # --- what the node would refuse, found before the queue
    Case("more-folds-than-items", (*SUBMIT, "--set", "workload.split.folds=5"), 2,
         "hpcseg submit: tiny: preflight found 1 error(s)",
         "ERROR [split] <tmp>/job.yaml: workload.split: workload.split.folds is 5 but the dataset has only 4 items"),
    Case("val-fraction-empties-a-side", (*SUBMIT, "--set", "workload.split.val_fraction=0.99"), 2,
         "hpcseg submit: tiny: preflight found 1 error(s)",
         "ERROR [split] <tmp>/job.yaml: workload.split: cannot make a hold-out of val_fraction 0.99 of 4 item(s)"),
    Case("infeasible-split-no-check", (*SUBMIT, "--no-check", "--set", "workload.split.val_fraction=0.99"), 2,
         "hpcseg submit: split: cannot make a hold-out of val_fraction 0.99 of 4 item(s)",
         "nothing was created or submitted", detail_at=0),
    Case("seed-out-of-range", (*SUBMIT, "--set", "workload.seed=-1"), 2,
         "hpcseg submit: job.yaml: 1 problem(s) in the job",
         "--set workload.seed=-1: workload.seed: Input should be greater than or equal to 0 (got -1)"),
    Case("metric-not-a-column", (*SUBMIT, "--set", "collection.metric=val_iou"), 2,
         "hpcseg submit: tiny: preflight found 1 error(s)",
         "ERROR [collection] <tmp>/job.yaml: collection.metric: 'val_iou' is not a history.csv column"),
    Case("image-size-not-divisible", (*SUBMIT, "--set", "workload.dataset.image_size=33"), 2,
         "hpcseg submit: tiny: preflight found 1 error(s)",
         "ERROR [model] <tmp>/job.yaml: workload.dataset.image_size: 33x33 must be divisible by 2"),
    Case("unknown-model-option", (*SUBMIT, "--set", "workload.models.unet.options={upsampling: nearest}"), 2,
         "hpcseg submit: tiny: preflight found 1 error(s)",
         "workload.models.unet.options.upsampling: unet has no option 'upsampling' (did you mean "
         "'upsample'?"),
    Case("unknown-arch", (*SUBMIT, "--set", "workload.models.unet.arch=unet3d"), 2,
         "hpcseg submit: job.yaml: 1 problem(s) in the job",
         "--set workload.models.unet.arch=unet3d: workload.models.0.arch: Input should be 'unet'"),
    Case("non-finite-number", (*SUBMIT, "--set", "training.weight_decay=.inf"), 2,
         "hpcseg submit: job.yaml: 1 problem(s) in the job",
         "--set training.weight_decay=.inf: training.weight_decay: must be a finite number, not NaN or infinity"),
    Case("folder-name-too-long", (*SUBMIT, "--runs-dir", "r" * 300), 2,
         "hpcseg submit: tiny: preflight found 1 error(s)",
         "(--runs-dir or HPCSEG_RUNS): the folder name 'rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr...' is 300 bytes"),
    Case("dataset-name-too-long", (*SUBMIT, "--set", "workload.dataset.root=" + "d" * 300), 2,
         "hpcseg submit: tiny: preflight found 1 error(s)",
         "workload.dataset.root: a name in this path is longer than the file system allows; shorten it"),
    # --- the scheduler
    Case("scheduler-missing", ("submit", "job.yaml", "--scheduler", "slurm", "--runs-dir", "runs"), 3,
         "hpcseg submit: sbatch: command not found", path="empty"),
    Case("scheduler-down", ("submit", "job.yaml", "--scheduler", "slurm", "--runs-dir", "runs"), 3,
         "hpcseg submit: sbatch failed: sbatch: error: Batch job submission failed: Unable to contact slurm "
         "controller", path="system",
         creates=("runs", "runs/*"), marks=(pytest.mark.slurm,)),
    # --- runs
    Case("unknown-run-status", ("status", "nope"), 2,
         "hpcseg status: unknown run 'nope' under <tmp>/runs; recent runs: none yet"),
    Case("unknown-run-collect", ("collect", "nope"), 2,
         "hpcseg collect: unknown run 'nope' under <tmp>/runs; recent runs: none yet"),
    Case("unknown-run-logs", ("logs", "nope"), 2,
         "hpcseg logs: unknown run 'nope' under <tmp>/runs; recent runs: none yet"),
    Case("stalled-after-nan", ("status", "--stalled-after", "nan"), 2,
         "hpcseg status: --stalled-after nan: give a number of seconds >= 0, e.g. 120"),
    Case("runs-dir-not-writable", (*SUBMIT, "--runs-dir", "afile/runs"), 2,
         "hpcseg submit: <tmp>/afile/runs: cannot create the run folder", setup=runs_under_a_file),
    # --- directive lines and the files hpcseg writes
    Case("walltime-leading-newline", ("render", "job.yaml", "--scheduler", "slurm"), 2,
         "resources.walltime: '\\n00:10:00' cannot go on a scheduler directive line",
         setup=edited(('"00:10:00"', '"\\n00:10:00"'))),
    Case("walltime-non-ascii-digits", ("render", "job.yaml", "--scheduler", "pbs"), 2,
         "resources.walltime: '٠٠:١٠:٠٠' cannot go on a scheduler directive line",
         setup=edited(('"00:10:00"', '"٠٠:١٠:٠٠"'))),
    Case("extra-abbreviates-owned", ("render", "job.yaml", "--scheduler", "slurm",
                                     "--set", "resources.slurm.extra=[--arr=0-99]"), 2,
         "resources.slurm.extra.0: '--arr=0-99' abbreviates --array, which hpcseg sets itself"),
    Case("extra-bundled-short", ("render", "job.yaml", "--scheduler", "slurm",
                                 "--set", "resources.slurm.extra=[-Ha0-9]"), 2,
         "resources.slurm.extra.0: '-Ha0-9' sets --array, which hpcseg sets itself"),
    Case("pbs-extra-walltime", ("render", "job.yaml", "--scheduler", "pbs",
                                "--set", "resources.pbs.extra=[-l walltime=99:00:00]"), 2,
         "resources.pbs.extra.0: '-l walltime=99:00:00' sets -l walltime, which hpcseg sets "
         "itself from resources.walltime"),
    Case("pbs-select-adds-resource", ("render", "job.yaml", "--scheduler", "pbs",
                                      "--set", "resources.pbs.select=1:ncpus=2,walltime=99:00:00"), 2,
         "resources.pbs.select: '1:ncpus=2,walltime=99:00:00' cannot go on a scheduler directive "
         "line"),
    Case("queue-leading-dash", ("render", "job.yaml", "--scheduler", "pbs", "--set", "resources.queue=-x"), 2,
         "resources.queue: '-x' cannot go on a scheduler directive line"),
    Case("submit-extra-owned", ("submit", "job.yaml", "--scheduler", "slurm", "--dry-run", "--runs-dir", "runs",
                                "--set", "resources.slurm.extra=[--mem=1G]"), 2,
         "resources.slurm.extra.0: '--mem=1G' sets --mem, which hpcseg sets itself from "
         "resources.memory"),
    Case("render-o-symlink", ("render", "job.yaml", "--scheduler", "slurm", "-o", "job.slurm"), 2,
         "hpcseg render: -o job.slurm: is a symbolic link, not a regular file; hpcseg replaces only regular files",
         setup=link_onto("symlink")),
    Case("render-o-fifo", ("render", "job.yaml", "--scheduler", "slurm", "-o", "job.slurm"), 2,
         "hpcseg render: -o job.slurm: is a FIFO, not a regular file", setup=link_onto("fifo")),
    Case("template-not-shipped", ("render", "job.yaml", "--scheduler", "slurm"), 0,
         "hpcseg render: not the shipped template: <tmp>/templates/slurm.sh.j2", setup=own_templates(0o755)),
    Case("templates-world-writable", ("render", "job.yaml", "--scheduler", "slurm"), 2,
         "hpcseg render: <tmp>/templates: this templates folder beside the job file is writable by every user",
         setup=own_templates(0o777)),
    # --- on the node
    Case("train-dataset-unreadable", ("train", "--run", "RUN_DIR", "--task", "0"), 2,
         "hpcseg train: job tiny, model unet (unet), fold 0",
         "failed: <tmp>/data/images/bead_002.png: cannot decode image",
         setup=dry_run_then_break, stream="stdout", detail_at=None,
         creates=("runs/tiny/*/tasks", "runs/tiny/*/tasks/unet", "runs/tiny/*/tasks/unet/fold_0",
                  "runs/tiny/*/tasks/unet/fold_0/train.log", "runs/tiny/*/tasks/unet/fold_0/result.json")),
]
CASES += damaged_cases(Case)  # damaged run files and odd baselines: tests/bad_run_files.py


# --------------------------------------------------------------------------------------------- running


def cli(tmp: Path, *argv: str, path: str = "stand-in", timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m hpcseg ARGV`` in ``tmp`` with a clean environment, as a user's shell would run it."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HPCSEG_", "SLURM_", "PBS_", "SBATCH_", "PYTEST", "COV_"))}
    system = env.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    if path == "empty":
        (tmp / "emptybin").mkdir(exist_ok=True)
        env["PATH"] = str(tmp / "emptybin")
    elif path == "stand-in":
        env["PATH"] = f"{tmp / 'bin'}{os.pathsep}{system}"
    env.update(HOME=str(tmp), LANG="C.UTF-8", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-m", "hpcseg", *argv], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=timeout)


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _allowed(rel: str, globs: tuple[str, ...]) -> bool:
    """fnmatch globs, whose ``*`` also matches ``/``."""
    return any(fnmatch.fnmatchcase(rel, g) for g in globs)


def _lines(text: str, tmp: Path) -> list[str]:
    """Output lines with the temporary folder shown as <tmp> and log timestamps dropped."""
    text = text.replace(str(tmp), "<tmp>")
    return [re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", "", ln) for ln in text.splitlines()]


def _run_case(case: Case, tmp: Path) -> subprocess.CompletedProcess:
    case.setup(tmp)
    argv = case.argv
    if "RUN_DIR" in argv:
        (run_dir,) = [m.parent for m in (tmp / "runs").glob("*/*/manifest.json")]
        argv = tuple(str(run_dir) if a == "RUN_DIR" else a for a in argv)
    before = snapshot(tmp)
    proc = cli(tmp, *argv, path=case.path)
    new = sorted(p for p in snapshot(tmp) - before if not p.startswith("emptybin"))
    leftovers = [p for p in new if not _allowed(p, case.creates)]
    assert leftovers == [], f"{case.id}: the command left {leftovers} behind"
    return proc


def check(case: Case, proc: subprocess.CompletedProcess, tmp: Path) -> None:
    out = proc.stdout if case.stream == "stdout" else proc.stderr
    shown = f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, shown
    assert proc.returncode == case.exit, shown
    lines = _lines(out, tmp)
    assert lines, f"{case.id}: nothing on {case.stream}\n{shown}"
    assert case.first in lines[0], f"{case.id}: first line {lines[0]!r} lacks {case.first!r}\n{shown}"
    if case.detail is not None:
        where = lines if case.detail_at is None else lines[case.detail_at:case.detail_at + 1]
        assert any(case.detail in ln for ln in where), f"{case.id}: no {case.detail!r}\n{shown}"


PLAIN = [c for c in CASES if c.id != "scheduler-down"]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in PLAIN])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    proc = _run_case(case, tmp_path)
    check(case, proc, tmp_path)
    if case.id == "train-dataset-unreadable":
        task = next((tmp_path / "runs").glob("tiny/*/tasks/unet/fold_0"))
        result = json.loads((task / "result.json").read_text())
        assert result["reason"] == "failed" and result["exit_code"] == 2, result
        assert "bead_002.png" in (task / "train.log").read_text().splitlines()[-2]
    if case.id == "lookalike-job-names":
        folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
        assert len(folders) == 2 and all(f.startswith("beads_new_lr-") for f in folders), folders
        for folder in folders:
            (manifest,) = (tmp_path / "runs" / folder).glob("*/manifest.json")
            assert json.loads(manifest.read_text())["job"] in ("beads (new lr)", "beads, new lr")


@pytest.mark.slurm
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES if c.id == "scheduler-down"])
@pytest.mark.cluster_down
def test_bad_input_scheduler_down(case: Case, tmp_path: Path, slurm_cluster) -> None:
    """slurmctld stopped: sbatch's refusal reaches the user in one line, exit 3; the controller is always
    restarted, because other tests (and other people's jobs) share the cluster."""
    case.setup(tmp_path)
    before = snapshot(tmp_path)
    stop = getattr(slurm_cluster, "ctl", None) or (
        lambda verb: subprocess.run(["bash", str(REPO / "scripts" / "local-slurm.sh"), verb], check=True,
                                    capture_output=True, timeout=120))
    stop("stop-ctld")
    try:
        proc = cli(tmp_path, *case.argv, path=case.path, timeout=240)
    finally:
        stop("start-ctld")
    check(case, proc, tmp_path)
    # sbatch was tried, so a run record may exist, but only one that says it was never submitted
    manifests = list((tmp_path / "runs").glob("tiny/*/manifest.json"))
    for m in manifests:
        data = json.loads(m.read_text())
        assert data["state"] == "submit-failed" and data["native_ids"] == [], data
        assert f"marked submit-failed: {m.parent}" in proc.stderr
    new = snapshot(tmp_path) - before
    assert all(_allowed(p, case.creates) for p in new), sorted(new)


# --------------------------------------------------------------------------------------------- the doc


def doc_rows() -> dict[str, dict[str, str]]:
    """The table of docs/bad-inputs.md: row id (the bold name opening the input cell) -> cells."""
    rows: dict[str, dict[str, str]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| **"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 4, line
        m = re.match(r"\*\*([^*]+)\*\*", cells[0])
        assert m, line
        assert m.group(1) not in rows, f"row {m.group(1)} twice"
        rows[m.group(1)] = {"input": cells[0], "command": cells[1], "message": cells[2], "exit": cells[3]}
    return rows


def test_doc_table_matches_cases() -> None:
    """The doc and the cases name the same inputs, with the same exit codes and key phrases."""
    rows = doc_rows()
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert sorted(set(ids) - set(rows)) == [], "cases missing from docs/bad-inputs.md"
    assert sorted(set(rows) - set(ids)) == [], "doc rows without a case in tests/test_bad_inputs.py"
    for c in CASES:
        row = rows[c.id]
        assert row["exit"].strip("` ") == str(c.exit), (c.id, row["exit"])
        message = row["message"].replace("\\|", "|")
        for phrase in (c.first, c.detail):
            if phrase is not None:
                assert phrase in message, f"{c.id}: the doc's message lacks {phrase!r}"
