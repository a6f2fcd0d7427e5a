"""Job specifications: the pydantic schema, YAML loading with file:line errors, profiles and overrides.

A job file is validated as a whole and every problem is reported at once, each with the file, line and
field path, because a user who fixes one typo per 12-hour queue wait gives up on the tool.
Profiles and ``--set`` overrides are applied to the raw document *before* validation, so they are typed
and checked by exactly the same schema as the file itself.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import importlib.metadata
import os
import re
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from hpcseg.errors import SpecError
from hpcseg.scalars import real_number, whole_number
from hpcseg.sweep.spec import SweepSpec
from hpcseg.workloads.registry import DEFAULT_LAYOUT, LAYOUTS, WORKLOAD_ARCHS

# --------------------------------------------------------------------------------------------- schema

Int = Annotated[int, BeforeValidator(whole_number)]
Float = Annotated[float, BeforeValidator(real_number)]
Fraction = Annotated[Float, Field(ge=0.0, le=1.0)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]

_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_MEMORY_UNITS_MB = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024 * 1024}
_WALLTIME_RE = re.compile(r"^(\d{1,4}):(\d{2}):(\d{2})$")
MAX_MEMORY_MB = 64 * 1024 * 1024  # 64 TiB: more than any node offers, so larger is a typo
MAX_GPUS = 64
MAX_CPUS = 4096
MAX_NODES = 4096
MAX_WALLTIME_HOURS = 24 * 366


def parse_memory_mb(value: str | int) -> int:
    """Turn "240G", "240gb", "1.5T" or a bare number of MiB into MiB."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 240G or 16000M")
    if isinstance(value, int | float):
        mb = float(value)
    else:
        m = _MEMORY_RE.match(str(value))
        if not m:
            raise ValueError(f"expected a size such as 240G or 16000M, got {value!r}")
        mb = float(m.group(1)) * _MEMORY_UNITS_MB[m.group(2).lower()]
    if mb <= 0:
        raise ValueError("must be more than zero")
    if mb > MAX_MEMORY_MB:
        raise ValueError(f"{value!r} is more than any node has (at most {MAX_MEMORY_MB // 1024 // 1024}T)")
    return int(round(mb))


def parse_walltime(value: str) -> int:
    """HH:MM:SS to seconds; minutes and seconds must be below 60."""
    m = _WALLTIME_RE.match(str(value).strip())
    if not m:
        raise ValueError(f"expected HH:MM:SS such as 12:00:00, got {value!r}")
    h, mi, s = (int(x) for x in m.groups())
    if mi >= 60 or s >= 60:
        raise ValueError(f"minutes and seconds must be below 60 in {value!r}")
    total = h * 3600 + mi * 60 + s
    if total <= 0:
        raise ValueError("must be longer than zero")
    if h > MAX_WALLTIME_HOURS:
        raise ValueError(f"{value!r} is longer than a year")
    return total


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, not silently ignored settings."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class DatasetSpec(Strict):
    root: str = Field(description="Dataset folder; ~ and $VARS expand, relative paths are from the cwd.")
    layout: Literal[LAYOUTS] = DEFAULT_LAYOUT  # type: ignore[valid-type]  # hpcseg/workloads/registry.py
    expected_count: int | None = Field(None, ge=1, description="Images the folder must hold.")
    image_size: tuple[Annotated[Int, Field(ge=8, le=8192)], Annotated[Int, Field(ge=8, le=8192)]] = (256, 256)
    channels: Int = Field(1, ge=1, le=1024)
    num_classes: Int = Field(2, ge=2, le=1000)
    class_names: list[str] | None = None
    metadata: str | None = Field(None, description="Label table inside root (a metadata CSV).")

    @field_validator("image_size", mode="before")
    @classmethod
    def _square(cls, v: Any) -> Any:
        return (v, v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("expected_count", mode="before")
    @classmethod
    def _count(cls, v: Any) -> Any:
        return whole_number(v)  # as the Int fields do: `expected_count: yes` is not one image


# The generic U-Nets (hpcseg/train/models.py) and what each workload adds (hpcseg/workloads/registry.py).
Arch = Literal[("unet", "attention_unet", "attention_res_unet", "residual_unet", *WORKLOAD_ARCHS)]


class ModelSpec(Strict):
    name: Name
    arch: Arch
    channels: list[Annotated[Int, Field(ge=1, le=8192)]] = Field(default_factory=lambda: [64, 128, 256, 512, 1024])
    dropout: Fraction = 0.0
    weights: str | None = Field(None, description="Pretrained weights file; nothing is downloaded on nodes.")
    allow_partial_weights: bool = Field(False, description="Train on when weights fill < 100% of the backbone.")
    options: dict[str, Any] = Field(default_factory=dict, description="Architecture-specific settings.")


class SplitSpec(Strict):
    method: Literal["random", "stratified"] = "stratified"
    val_fraction: Annotated[Float, Field(gt=0.0, lt=1.0)] = 0.15
    folds: Int = Field(1, ge=1, le=50, description="1: one hold-out split; k>1: k-fold cross-validation.")
    density_bins: Int = Field(4, ge=1, le=20)


LossName = Literal["dice", "focal", "ce", "weighted_ce"]
# How weighted_ce weighs the classes when the job gives no list: 1/frequency normalised to mean 1, or
# ENet's 1 / ln(c + frequency) (the marine-debris benchmark's own code uses c = 1.03), both from training pixels.
CLASS_WEIGHT_SCHEMES = ("inverse_frequency", "inverse_log_frequency")


def _class_weights_value(v: Any) -> Any:
    """A scheme name or a list of positive finite weights (one per class; the count is checked in JobSpec)."""
    if isinstance(v, str):
        if v not in CLASS_WEIGHT_SCHEMES:
            raise ValueError(f"{v!r} is not one of {', '.join(CLASS_WEIGHT_SCHEMES)}, or a list of one positive "
                             f"weight per class")
        return v
    if isinstance(v, list | tuple):
        out = []
        for i, w in enumerate(v):
            try:
                checked = real_number(w)  # booleans and NaN/infinity refused in the words of every number
            except ValueError as exc:
                raise ValueError(f"weight {i}: {exc}") from None
            try:
                value = float(checked)
            except (TypeError, ValueError):
                raise ValueError(f"weight {i} is {w!r}, not a number") from None
            if value <= 0:
                raise ValueError(f"weight {i} is {w!r}; every class weight must be a number above 0")
            out.append(value)
        if not out:
            raise ValueError("an empty list; give one positive weight per class, or a scheme name")
        return tuple(out)
    raise ValueError(f"expected {' or '.join(CLASS_WEIGHT_SCHEMES)}, or a list of one positive weight per class, "
                     f"got {v!r}")


class LossSpec(Strict):
    components: dict[LossName, Annotated[Float, Field(gt=0.0)]] = Field(default_factory=lambda: {"dice": 1.0})
    focal_alpha: Fraction | None = 0.25
    focal_gamma: Float = Field(2.0, ge=0.0, le=10.0)
    label_smoothing: Fraction = 0.0
    class_weight_clip: tuple[Float, Float] | None = None
    class_weights: Annotated[str | tuple[float, ...], BeforeValidator(_class_weights_value)] = Field(
        "inverse_frequency", description="weighted_ce's class weights: inverse_frequency, inverse_log_frequency "
                                         "(1/ln(c + f)) or a list of one weight per class.")
    class_weight_c: Float = Field(1.03, gt=1.0, le=100.0, description="c of inverse_log_frequency.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        # `loss: dice` is the common case; `loss: {dice: 0.4, focal: 0.6}` the next most common.
        if isinstance(v, str):
            return {"components": {v: 1.0}}
        if isinstance(v, dict) and v and "components" not in v and set(v) <= set(LossName.__args__):
            return {"components": v}
        return v

    @field_validator("components")
    @classmethod
    def _not_empty(cls, v: dict) -> dict:
        if not v:
            raise ValueError("name at least one loss, e.g. {dice: 1.0}")
        return v

    @model_validator(mode="after")
    def _class_weights_used(self) -> LossSpec:
        # A weight that nothing reads is a setting the user believes in but that does nothing.
        # (by value, not by fields set: a dumped and re-validated spec sets every field)
        if self.class_weights != "inverse_frequency" and "weighted_ce" not in self.components:
            raise ValueError("class_weights: only the weighted_ce component uses class weights; add weighted_ce to "
                             "training.loss.components or drop class_weights")
        if isinstance(self.class_weights, tuple) and self.class_weight_clip is not None:
            raise ValueError("class_weight_clip clips computed weights; with a list of class_weights drop it")
        return self


class AugmentationSpec(Strict):
    hflip: StrictBool = False
    vflip: StrictBool = False
    rotate_degrees: Float = Field(0.0, ge=0.0, le=180.0)
    rot90: StrictBool = False
    color_jitter: Fraction = 0.0


class EarlyStoppingSpec(Strict):
    patience: Int | None = Field(None, ge=1, description="Epochs without improvement before stopping.")
    min_delta: Float = Field(0.0, ge=0.0)


class TrainingSpec(Strict):
    epochs: Int = Field(ge=1, le=100000)
    batch_size: Int = Field(ge=1, le=65536)
    lr: Float = Field(gt=0.0, le=10.0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: Float = Field(0.0, ge=0.0)
    warmup_epochs: Int = Field(0, ge=0, le=100000)
    warmup_factor: Annotated[Float, Field(gt=0.0, le=1.0)] = 0.1
    warmup_mode: Literal["linear", "constant"] = Field(
        "linear", description="linear: ramp from warmup_factor x lr; constant: warmup_factor x lr flat.")
    schedule: Literal["constant", "cosine"] = "constant"
    grad_clip: Float | None = Field(None, gt=0.0)
    early_stopping: EarlyStoppingSpec = Field(default_factory=EarlyStoppingSpec)
    loss: LossSpec = Field(default_factory=LossSpec)
    augmentation: AugmentationSpec = Field(default_factory=AugmentationSpec)
    mixed_precision: StrictBool = Field(False, description="bf16 autocast on CUDA; ignored on CPU.")
    num_workers: Int = Field(0, ge=0, le=256)
    samples_per_epoch: Int | None = Field(None, ge=1, description="Patches drawn per epoch, when sampling.")
    max_requeues: Int = Field(3, ge=0, le=100)
    deterministic: StrictBool = True


class WorkloadSpec(Strict):
    task: Literal["binary_segmentation", "multiclass_segmentation", "classification"]
    dataset: DatasetSpec
    models: list[ModelSpec] = Field(min_length=1)
    split: SplitSpec = Field(default_factory=SplitSpec)
    seed: Int = Field(42, ge=0, le=2**32 - 1, description="numpy and torch take seeds below 2**32.")

    @field_validator("models")
    @classmethod
    def _unique_names(cls, v: list[ModelSpec]) -> list[ModelSpec]:
        # Case-blind, because each model has a folder, and "UNet" and "unet" are one on some disks.
        seen = [m.name.lower() for m in v]
        dupes = sorted({m.name for m in v if seen.count(m.name.lower()) > 1})
        if dupes:
            raise ValueError(f"model names must be unique; repeated: {', '.join(dupes)}")
        return v


class SlurmOptions(Strict):
    gpu_flag: Literal["gres", "gpus"] = "gres"
    gpu_type: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    qos: str | None = None
    constraint: str | None = None
    signal_seconds: Int = Field(300, ge=0, le=86400, description="USR1 this long before the walltime.")
    extra: list[str] = Field(default_factory=list, description="More #SBATCH options, e.g. --exclusive.")


class PbsOptions(Strict):
    flavor: Literal["pro", "torque"] = "pro"
    select: str | None = Field(None, description="Your site's own select statement, replacing ours.")
    account_flag: Literal["-A", "-P"] = "-P"
    extra: list[str] = Field(default_factory=list, description="More #PBS lines' options.")


class ResourcesSpec(Strict):
    gpus: Int = Field(0, ge=0, le=MAX_GPUS, description="GPUs per node; one training process each.")
    cpus: Int = Field(1, ge=1, le=MAX_CPUS, description="CPUs per node, shared by its training processes.")
    nodes: Int = Field(1, ge=1, le=MAX_NODES, description="Nodes per task; more than 1 trains data-parallel.")
    processes_per_node: Int | None = Field(
        None, ge=1, le=MAX_CPUS, description="Training processes per node; default max(gpus, 1). Set it "
                                             "without GPUs to train data-parallel on CPUs (gloo).")
    memory: str | None = Field("8G", description="Per node, e.g. 240G. Leave out when mem_per_gpu is set.")
    mem_per_gpu: str | None = None
    walltime: str = Field(description="HH:MM:SS; required, because a silent default kills jobs.")
    queue: str | None = None
    account: str | None = None
    array_parallelism: Int | None = Field(None, ge=1, le=1_000_000)
    slurm: SlurmOptions = Field(default_factory=SlurmOptions)
    pbs: PbsOptions = Field(default_factory=PbsOptions)

    @field_validator("memory", "mem_per_gpu")
    @classmethod
    def _size(cls, v: str | None) -> str | None:
        if v is not None:
            parse_memory_mb(v)
        return v

    @field_validator("walltime", mode="before")
    @classmethod
    def _sexagesimal(cls, v: Any) -> Any:
        # YAML 1.1 reads an unquoted 12:00:00 as 43200 seconds; take it back to the HH:MM:SS it was.
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return f"{v // 3600:02d}:{v % 3600 // 60:02d}:{v % 60:02d}"
        return v

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, v: str) -> str:
        parse_walltime(v)
        return v

    @model_validator(mode="after")
    def _one_memory_flag(self) -> ResourcesSpec:
        if self.mem_per_gpu is not None:
            if self.gpus == 0:
                raise ValueError("mem_per_gpu needs gpus of at least 1")
            # Slurm rejects --mem together with --mem-per-gpu; the explicit per-GPU request wins.
            object.__setattr__(self, "memory", None)
        elif self.memory is None:
            raise ValueError("set memory (e.g. 240G) or mem_per_gpu")
        return self

    @model_validator(mode="after")
    def _one_process_per_gpu(self) -> ResourcesSpec:
        # The trainer drives cuda:LOCAL_RANK, so processes and GPUs of a node pair up one to one.
        ppn = self.processes_per_node
        if ppn is not None and self.gpus > 0 and ppn != self.gpus:
            raise ValueError(f"processes_per_node {ppn} with gpus {self.gpus}: a node runs one training "
                             f"process per GPU; leave processes_per_node out (or set it to {self.gpus})")
        return self

    @property
    def procs_per_node(self) -> int:
        """Training processes per node: one per GPU, or processes_per_node on CPU nodes."""
        return self.processes_per_node or max(self.gpus, 1)

    @property
    def world_size(self) -> int:
        """Training processes of one task, all nodes together: the global batch divides over these."""
        return self.nodes * self.procs_per_node

    @property
    def data_parallel(self) -> bool:
        """More than one process: the job script starts torchrun (srun/pbsdsh on several nodes)."""
        return self.world_size > 1

    @property
    def walltime_seconds(self) -> int:
        return parse_walltime(self.walltime)

    @property
    def memory_mb(self) -> int | None:
        return parse_memory_mb(self.memory) if self.memory else None

    @property
    def mem_per_gpu_mb(self) -> int | None:
        return parse_memory_mb(self.mem_per_gpu) if self.mem_per_gpu else None


class BindSpec(Strict):
    src: str
    dst: str | None = None
    mode: Literal["rw", "ro"] = "rw"

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, v: Any) -> Any:
        # Accept singularity's own "src[:dst[:ro]]" notation, the form users copy from cluster docs.
        if isinstance(v, str):
            parts = v.split(":")
            if len(parts) > 3 or not parts[0]:
                raise ValueError(f"expected src[:dst[:ro|rw]], got {v!r}")
            out: dict[str, Any] = {"src": parts[0]}
            if len(parts) > 1 and parts[1]:
                out["dst"] = parts[1]
            if len(parts) > 2:
                out["mode"] = parts[2]
            return out
        return v


class ContainerSpec(Strict):
    runtime: Literal["singularity", "apptainer", "charliecloud", "none"] = "singularity"
    image: str | None = None
    binds: list[BindSpec] = Field(default_factory=list)
    gpu: StrictBool = Field(True, description="Pass --nv so the container sees the node's NVIDIA driver.")

    @model_validator(mode="after")
    def _image_needed(self) -> ContainerSpec:
        if self.runtime != "none" and not self.image:
            raise ValueError(f"runtime {self.runtime} needs an image (a .sif file; for charliecloud an "
                             f"image folder), or set runtime: none")
        return self


class CollectionSpec(Strict):
    metric: str = Field("val_jaccard", pattern=r"^[A-Za-z0-9_]+$")
    mode: Literal["max", "min"] = "max"
    baseline: str | None = Field(None, description="Run id, job name or folder of earlier histories.")


class JobSpec(Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    workload: WorkloadSpec
    training: TrainingSpec
    resources: ResourcesSpec
    # No container section means a bare run (CPU laptops, local executor); a runtime then needs its image.
    container: ContainerSpec = Field(default_factory=lambda: ContainerSpec(runtime="none"))
    collection: CollectionSpec = Field(default_factory=CollectionSpec)
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)
    sweep: SweepSpec | None = Field(None, description="Hyperparameter search as array jobs (docs/jobs.md).")

    @model_validator(mode="after")
    def _sweep_parallel(self) -> JobSpec:
        # A grid/random sweep's `parallel` is the array's throttle unless resources already sets one.
        if self.sweep and self.sweep.method != "optuna" and self.sweep.parallel \
                and self.resources.array_parallelism is None:
            self.resources.array_parallelism = self.sweep.parallel
        return self

    @model_validator(mode="after")
    def _global_batch_divides(self) -> JobSpec:
        # Found here, not on the node after the queue wait: every process trains batch_size / world items.
        world = self.resources.world_size
        if self.training.batch_size % world:
            raise ValueError(f"training.batch_size {self.training.batch_size} does not divide over the "
                             f"{world} training processes (resources.nodes x processes per node); the batch "
                             f"is global, so make it a multiple of {world}")
        return self

    @model_validator(mode="after")
    def _one_class_weight_per_class(self) -> JobSpec:
        given = self.training.loss.class_weights
        k = self.workload.dataset.num_classes
        if isinstance(given, tuple) and len(given) != k:
            raise ValueError(f"training.loss.class_weights: {len(given)} weight(s) for {k} classes "
                             f"(workload.dataset.num_classes); give one per class, in class order")
        return self

    @property
    def slug(self) -> str:
        """The name made safe for file names and scheduler job names (the real name stays in the manifest)."""
        return job_slug(self.name)

    def tasks(self) -> list[Task]:
        """The models × folds of the job, in array-index order (model-major, so one model's folds sit together);
        a sweep's configs × models × folds, or its Optuna workers (hpcseg/sweep/expand.py)."""
        if self.sweep is not None:
            from hpcseg.sweep.expand import sweep_tasks

            return sweep_tasks(self)
        folds = self.workload.split.folds
        return [
            Task(index=i * folds + f, model=m.name, fold=f)
            for i, m in enumerate(self.workload.models)
            for f in range(folds)
        ]

    def model(self, name: str) -> ModelSpec:
        for m in self.workload.models:
            if m.name == name:
                return m
        known = ", ".join(m.name for m in self.workload.models)
        raise SpecError(f"job {self.name}: no model named {name!r}; it has {known}")


_PLAIN_NAME = re.compile(r"[a-z0-9](?:[a-z0-9_.-]{0,98}[a-z0-9_])?")
_HASH_LEN = 10
_HASHED_TAIL = re.compile(rf"-[0-9a-f]{{{_HASH_LEN}}}$")


def job_slug(name: str) -> str:
    """The job's folder under runs/ and its scheduler job name; different names never share one.

    A plain name (lower-case ASCII letters, digits, ``_.-``, at most 100 characters) is its own slug, so
    the shipped jobs keep their folders. Any other name loses information when made file-safe ("beads (new
    lr)" and "beads, new lr" both read "beads_new_lr"; "細胞" reads nothing; "Beads" and "beads" are one
    folder on a case-insensitive disk), so its slug is the readable part plus a short hash of the exact
    name. Plain names never end in such a hash (those are hashed too), so the two kinds cannot meet.
    """
    if _PLAIN_NAME.fullmatch(name) and not _HASHED_TAIL.search(name):
        return name
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-")[:60].rstrip("._-") or "job"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LEN]
    return f"{readable}-{digest}"


@dataclass(frozen=True)
class Task:
    """One array element: a model trained on one fold (of one sweep config, when ``config`` is set)."""

    index: int
    model: str
    fold: int
    config: str | None = None
    dir: str | None = None  # a folder of its own (an Optuna worker's), instead of the model/fold one

    @property
    def relpath(self) -> str:
        if self.dir:
            return self.dir
        if self.config:
            return f"tasks/{self.config}/{self.model}/fold_{self.fold}"
        return f"tasks/{self.model}/fold_{self.fold}"

    @property
    def label(self) -> str:
        """The model's name in summaries: ``c003/unet`` for a sweep config, so configs are not pooled."""
        return f"{self.config}/{self.model}" if self.config else self.model


# --------------------------------------------------------------------------------------------- loading


@dataclass
class LoadedJob:
    """A validated spec plus where it came from, which the run manifest records."""

    spec: JobSpec
    path: Path
    profile: str | None = None
    overrides: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    lines: dict[tuple, int] = field(default_factory=dict, repr=False)
    origins: dict[tuple, str] = field(default_factory=dict, repr=False)

    def where(self, dotted: str) -> str:
        """Where a field's value came from: ``--set ...``, ``job.yaml:N (profile p)`` or ``job.yaml:N``.

        For checks made after loading (directive lines, bind paths), so their errors can name the --set or
        profile that wrote the value, as the schema's own errors do.
        """
        return _where(_split_path(dotted), str(self.path), self.lines, self.origins)


def _walk_lines(node: yaml.Node, path: tuple, out: dict[tuple, int], problems: list[str], fname: str,
                seen_nodes: set[int] | None = None) -> None:
    """Record the line of every key (and list item) so validation errors can point at it.

    Each node is visited once: an alias points back at a node already walked, and a self-referencing
    alias (``a: &x [*x]``) would otherwise recurse forever.
    """
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                problems.append(f"{fname}:{key_node.start_mark.line + 1}: {_dotted(path + (key,))}: "
                                f"key given twice; keep one")
            seen.add(key)
            out[path + (key,)] = key_node.start_mark.line + 1
            _walk_lines(value_node, path + (key,), out, problems, fname, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[path + (i,)] = item.start_mark.line + 1
            _walk_lines(item, path + (i,), out, problems, fname, seen_nodes)


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


# A job file is a few hundred values; this many, with every alias and merge key counted at its full size,
# can only be an alias bomb ("billion laughs"), which would otherwise take minutes and gigabytes to expand.
MAX_YAML_VALUES = 50_000
MAX_YAML_DEPTH = 100
_SCALAR_CHARS_PER_VALUE = 100  # a long scalar counts as one value per this many characters


class _YamlTooBig(Exception):
    """Expansion bound or alias cycle, found on the composed node graph before anything is constructed."""

    def __init__(self, message: str, node: yaml.Node) -> None:
        super().__init__(message)
        self.node = node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def check_expansion(root: yaml.Node, limit: int = MAX_YAML_VALUES) -> None:
    """Refuse a node graph whose aliases expand past ``limit`` values, or that contains itself.

    PyYAML shares an aliased node instead of copying it, so loading a bomb is cheap; the cost comes later,
    when merge keys are flattened or the document is validated, copied or written out. Sizes are summed
    over the graph with each node's size computed once, so the check is linear in the file's length
    whatever the expansion. Iterative, so a deeply nested file cannot overflow the stack here.
    """
    sizes: dict[int, int] = {}
    path: set[int] = set()  # nodes whose subtree is being summed: reaching one again is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, summed = stack.pop()
        if summed:
            path.discard(id(node))
            own = 1 + (len(str(node.value)) // _SCALAR_CHARS_PER_VALUE if isinstance(node, yaml.ScalarNode) else 0)
            total = own + sum(sizes[id(c)] for c in _children(node))
            if total > limit:
                raise _YamlTooBig(f"aliases and merge keys expand to more than {limit} values; write the "
                                  f"values out or use fewer aliases", node)
            sizes[id(node)] = total
            continue
        if id(node) in sizes:
            continue
        path.add(id(node))
        stack.append((node, True))
        for child in _children(node):
            if id(child) in path:
                raise _YamlTooBig("an alias refers to a value that contains it (a recursive structure); "
                                  "write the value out", child)
            if id(child) not in sizes:
                stack.append((child, False))


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses nesting deeper than MAX_YAML_DEPTH while composing, before PyYAML's
    recursive composer spends seconds reaching Python's recursion limit."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                event = self.peek_event()
                node = yaml.ScalarNode("tag:yaml.org,2002:null", "", event.start_mark, event.end_mark)
                raise _YamlTooBig(f"values nested more than {MAX_YAML_DEPTH} deep; a job file needs a handful",
                                  node)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml_bounded(text: str, inspect: Callable[[yaml.Node], None] | None = None) -> Any:
    """``yaml.safe_load`` whose nesting and alias expansion are bounded.

    ``inspect`` sees the composed node graph before construction flattens its merge keys in place (line
    numbers are read there). Raises yaml.YAMLError (and PyYAML's plain ValueError/IndexError/TypeError for
    some tags) as PyYAML does, and _YamlTooBig before constructing anything oversized.
    """
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_expansion(node)
        if inspect is not None:
            inspect(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def parse_yaml(text: str, fname: str) -> tuple[dict[str, Any], dict[tuple, int]]:
    """YAML text to a dict plus a key-path → line map; malformed YAML becomes one clear SpecError."""
    last_line = len(text.rstrip().splitlines()) or 1  # errors at end of stream point past the text
    lines: dict[tuple, int] = {}
    problems: list[str] = []
    try:
        data = load_yaml_bounded(text, lambda node: _walk_lines(node, (), lines, problems, fname))
    except _YamlTooBig as exc:
        raise SpecError(f"{fname}:{min(exc.node.start_mark.line + 1, last_line)}: {exc}") from None
    except (ValueError, IndexError, TypeError, RecursionError) as exc:
        # PyYAML's constructors raise plain Python errors for some tags (e.g. a bare `!!int`).
        raise SpecError(f"{fname}: malformed YAML: {type(exc).__name__}: {exc}; fix the syntax") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        context_mark = getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if context_mark is not None and getattr(exc, "context", None):
            # An unclosed bracket or quote is reported at the end of the file; where it opened is more useful.
            problem = f"{exc.context} that starts here: {problem}"
            mark = context_mark
        where = f"{fname}:{min(mark.line + 1, last_line)}" if mark else fname
        raise SpecError(f"{where}: malformed YAML: {problem}; fix the syntax there") from None
    if data is None:
        raise SpecError(f"{fname}: the file is empty; a job needs name, workload, training and resources")
    if not isinstance(data, dict):
        raise SpecError(f"{fname}:1: a job file must be a mapping of sections, not a {type(data).__name__}")
    if problems:
        raise SpecError(f"{fname}: {len(problems)} problem(s)", problems=problems)
    return data, lines


def _split_path(dotted: str) -> tuple:
    return tuple(int(p) if p.isascii() and p.isdigit() else p for p in dotted.split("."))


def _set_path(doc: dict, path: tuple, value: Any, origin: str) -> tuple:
    """Set doc[path] = value; list items may be picked by index or, for models, by name.

    Returns the path with names replaced by list indices, which is how validation errors locate fields.
    """
    cur: Any = doc
    resolved: list = []
    for i, key in enumerate(path[:-1]):
        nxt_key = path[i + 1]
        if isinstance(cur, list):
            idx = _list_index(cur, key, path[: i + 1], origin)
            resolved.append(idx)
            cur = cur[idx]
            continue
        if not isinstance(cur, dict):
            raise SpecError(f"{origin}: {_dotted(path[:i])} is not a section, cannot set {_dotted(path)}")
        if key not in cur or cur[key] is None:
            cur[key] = [] if isinstance(nxt_key, int) else {}
        resolved.append(key)
        cur = cur[key]
    last = path[-1]
    if isinstance(cur, list):
        idx = _list_index(cur, last, path, origin)
        cur[idx] = value
        return tuple(resolved) + (idx,)
    if not isinstance(cur, dict):
        raise SpecError(f"{origin}: {_dotted(path[:-1])} is not a section, cannot set {_dotted(path)}")
    cur[last] = value
    return tuple(resolved) + (last,)


def _list_index(items: list, key: Any, path: tuple, origin: str) -> int:
    if isinstance(key, int):
        if key < len(items):
            return key
        raise SpecError(f"{origin}: {_dotted(path)}: the list has {len(items)} item(s)")
    for i, it in enumerate(items):
        if isinstance(it, dict) and it.get("name") == key:
            return i
    names = [str(it.get("name")) for it in items if isinstance(it, dict)]
    raise SpecError(f"{origin}: {_dotted(path)}: no item named {key!r}; have {', '.join(names)}")


def parse_override(text: str) -> tuple[tuple, Any]:
    """``a.b=c`` → (("a","b"), value); the value is read as YAML and typed later by the schema."""
    if "=" not in text:
        raise SpecError(f"--set {text}: expected FIELD=VALUE, e.g. --set training.lr=5e-5")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise SpecError(f"--set {text}: expected FIELD=VALUE, e.g. --set training.lr=5e-5")
    try:
        value = load_yaml_bounded(raw) if raw.strip() else ""
    except _YamlTooBig as exc:
        raise SpecError(f"--set {text}: the value's {exc}") from None
    except (yaml.YAMLError, ValueError, IndexError, TypeError, RecursionError):
        value = raw  # not YAML: the schema decides whether the plain string will do
    return _split_path(key), value


def _apply_profile(doc: dict, profile: dict, origin: str, lines: dict, line_of: dict, base: tuple) -> None:
    for key, value in profile.items():
        path = _split_path(str(key)) if "." in str(key) else (key,)
        if isinstance(value, dict) and "." not in str(key) and isinstance(doc.get(key), dict):
            _apply_profile(doc[key], value, origin, lines, line_of, base + (key,))
            continue
        resolved = _set_path(doc, path, copy.deepcopy(value), origin)
        line_of[base + resolved] = origin


# Names users bring from Keras/Lightning configs, mapped to ours so the suggestion is useful.
_ALIASES = {
    "learning_rate": "lr", "batch": "batch_size", "num_epochs": "epochs", "max_epochs": "epochs",
    "gpu": "gpus", "ngpus": "gpus", "cpu": "cpus", "ncpus": "cpus", "mem": "memory", "time": "walltime",
    "partition": "queue", "patience": "early_stopping", "img_size": "image_size", "n_classes": "num_classes",
}


def _suggest(bad: str, model: type[BaseModel] | None) -> str:
    if model is None:
        return ""
    fields = list(model.model_fields)
    aliases = {k: v for k, v in _ALIASES.items() if v in fields}
    match = difflib.get_close_matches(bad, fields + list(aliases), n=1, cutoff=0.6)
    if not match:
        return ""
    return f" (did you mean {aliases.get(match[0], match[0])!r}?)"


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model a location's parent belongs to, for close-match key suggestions."""
    model: Any = JobSpec
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        f = getattr(model, "model_fields", {}).get(part)
        if f is None:
            return None
        ann = f.annotation
        model = _unwrap_model(ann)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap_model(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def _format_errors(exc: ValidationError, fname: str, lines: dict[tuple, int], origins: dict[tuple, str]) -> list[str]:
    out = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        # pydantic adds the tag of a union member to loc; drop entries that are not real keys.
        where = _where(tuple(p for p in loc if p != "[key]"), fname, lines, origins)  # "[key]": a dict key's error
        path = _dotted(loc)
        if err["type"] == "extra_forbidden":
            out.append(f"{where}: {path}: unknown key{_suggest(str(loc[-1]), _model_at(loc))}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        field_first = _FIELD_FIRST.match(msg) if not loc else None
        if field_first:  # a whole-job check whose message names its field: point at that field's line
            loc = tuple(field_first.group(1).split("."))
            where, path, msg = _where(loc, fname, lines, origins), field_first.group(1), field_first.group(2)
        if err["type"] == "missing":
            msg = "required but missing"
        given = err.get("input")
        shown = "" if err["type"] == "missing" or isinstance(given, dict | list) else f" (got {given!r})"
        if repr(given) in msg:
            shown = ""
        out.append(f"{where}: {path}: {msg}{shown}")
    return out


_FIELD_FIRST = re.compile(r"((?:workload|training|resources|container|collection)(?:\.[a-z_]+)+): (.+)", re.DOTALL)


def _where(loc: tuple, fname: str, lines: dict[tuple, int], origins: dict[tuple, str]) -> str:
    for n in range(len(loc), -1, -1):
        if loc[:n] in origins:
            return origins[loc[:n]]
    # A section-level error (e.g. "set memory or mem_per_gpu") caused by a --set or profile deeper inside it.
    below = [origin for path, origin in origins.items() if loc and path[:len(loc)] == loc]
    if below:
        return below[-1]
    # A required key missing from a section the file does not have: the --set or profile that made it.
    parent = loc[:-1]
    made = [origin for path, origin in origins.items() if parent and parent not in lines and path[:len(parent)] == parent]
    if made:
        return made[-1]
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return f"{fname}:{lines[loc[:n]]}"
    return fname


def known_profiles(doc: dict) -> list[str]:
    profiles = doc.get("profiles") or {}
    return sorted(str(p) for p in profiles) if isinstance(profiles, dict) else []  # YAML keys need not be text


def load_job(path: str | Path, profile: str | None = None, overrides: list[str] | None = None) -> LoadedJob:
    """Read, merge (file, then profile, then --set) and validate a job; raise SpecError listing every problem."""
    path = Path(path)
    fname = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{fname}: no such job file; `hpcseg jobs` lists the known jobs") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{fname}: cannot read the job file ({exc.__class__.__name__}: {exc})") from None
    doc, lines = parse_yaml(text, fname)
    origins: dict[tuple, str] = {}
    if profile:
        profiles = doc.get("profiles") or {}
        if not isinstance(profiles, dict) or profile not in profiles:
            have = ", ".join(known_profiles(doc)) or "none"
            raise SpecError(f"{fname}: no profile {profile!r} (this job has: {have})")
        body = profiles[profile] or {}
        if not isinstance(body, dict):
            raise SpecError(f"{fname}:{lines.get(('profiles', profile), 1)}: profile {profile!r} must be a mapping")
        line = lines.get(("profiles", profile), 1)
        _apply_profile(doc, body, f"{fname}:{line} (profile {profile})", lines, origins, ())
    for text_override in overrides or []:
        key, value = parse_override(text_override)
        origin = f"--set {text_override}"
        origins[_set_path(doc, key, value, origin)] = origin
    try:
        spec = JobSpec.model_validate(doc)
    except ValidationError as exc:
        problems = _format_errors(exc, fname, lines, origins)
        raise SpecError(f"{fname}: {len(problems)} problem(s) in the job", problems=problems) from None
    if spec.sweep is not None:
        from hpcseg.sweep.spec import check_values

        check_values(spec, fname, lines)
    return LoadedJob(spec=spec, path=path.resolve(), profile=profile, overrides=list(overrides or []), raw=doc,
                     lines=lines, origins=origins)


# --------------------------------------------------------------------------------------------- finding jobs


def job_dirs() -> list[Path]:
    """Where job names are looked up: ./jobs, $HPCSEG_JOBS, then the jobs shipped with hpcseg."""
    dirs = [Path.cwd() / "jobs"]
    dirs += [Path(p) for p in os.environ.get("HPCSEG_JOBS", "").split(os.pathsep) if p]
    dirs.append(shipped_dir("jobs"))
    unique: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def shipped_dir(name: str) -> Path:
    """A top-level folder of the hpcseg source tree (jobs/, templates/, singularity/), wherever hpcseg lives.

    A source or editable checkout reads the repository's own folders, so an edit is seen at once. An
    installed wheel carries them as data files under ``<prefix>/share/hpcseg/`` (setup.cfg), and the
    prefix is not always ``sys.prefix`` (``pip install --user``, ``--prefix``, ``--target``), so the
    installed record of the distribution is asked last. When nothing is found the usual place is
    returned, so the caller's "not found" message names where the folder was expected.
    """
    source = Path(__file__).resolve().parent.parent
    # The marker keeps a stray top-level templates/ folder in some site-packages from being taken for ours.
    if (source / "setup.cfg").is_file() and (source / name).is_dir():
        return source / name
    for share in _share_dirs():
        if (share / name).is_dir():
            return share / name
    return Path(sys.prefix) / "share" / "hpcseg" / name


def _share_dirs() -> list[Path]:
    """Candidate ``share/hpcseg`` folders of an installed wheel, the likeliest first."""
    dirs = [Path(sys.prefix) / "share" / "hpcseg"]
    for scheme in (None, f"{os.name}_user"):
        try:
            data = sysconfig.get_path("data", scheme) if scheme else sysconfig.get_path("data")
        except KeyError:
            continue
        dirs.append(Path(data) / "share" / "hpcseg")
    try:
        files = importlib.metadata.distribution("hpcseg").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        parts = f.parts
        for i in range(len(parts) - 1):
            if parts[i:i + 2] == ("share", "hpcseg"):
                dirs.append(Path(str(f.locate())).resolve().parents[len(parts) - i - 3])
                break
        else:
            continue
        break
    return dirs


def find_job(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if candidate.is_file():
            return candidate
        raise SpecError(f"{name_or_path}: no such job file; `hpcseg jobs` lists the known jobs")
    for d in job_dirs():
        for ext in (".yaml", ".yml"):
            p = d / f"{name_or_path}{ext}"
            if p.is_file():
                return p
    names = sorted({p.stem for d in job_dirs() for p in d.glob("*.y*ml")})
    close = difflib.get_close_matches(name_or_path, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise SpecError(f"job {name_or_path!r} not found{hint}; known jobs: {', '.join(names) or 'none'}")


def list_jobs() -> list[Path]:
    seen: dict[str, Path] = {}
    for d in job_dirs():
        for p in sorted(d.glob("*.y*ml")):
            seen.setdefault(p.stem, p)
    return [seen[k] for k in sorted(seen)]


def resolve_path(value: str | None, base: Path | None = None) -> Path | None:
    """~ and $VARS expanded; relative paths taken from ``base`` (default: the current directory)."""
    if value is None:
        return None
    p = Path(os.path.expandvars(os.path.expanduser(value)))
    return p if p.is_absolute() else (base or Path.cwd()) / p


def with_absolute_paths(spec: JobSpec, base: Path | None = None) -> JobSpec:
    """A copy whose file paths are absolute, so the compute node (another cwd, maybe another mount
    namespace inside the container) reads exactly what preflight checked."""
    data = spec.model_dump()  # not mode="json": that turns a NaN in model options into null unseen

    def absolute(v: str | None) -> str | None:
        p = resolve_path(v, base)
        return None if p is None else str(p)

    data["workload"]["dataset"]["root"] = absolute(data["workload"]["dataset"]["root"])
    for m in data["workload"]["models"]:
        m["weights"] = absolute(m["weights"])
    if data["container"]["image"]:
        data["container"]["image"] = absolute(data["container"]["image"])
    for b in data["container"]["binds"]:
        b["src"] = absolute(b["src"])
    return JobSpec.model_validate(data)
