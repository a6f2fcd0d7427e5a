"""Job specifications: the pydantic schema, YAML loading with file:line errors, profiles and overrides.

A job file is validated as a whole and every problem is reported at once, each with the file, line and
field path, because a user who fixes one typo per 12-hour queue wait gives up on the tool.
Profiles and ``--set`` overrides are applied to the raw document *before* validation, so they are typed
and checked by exactly the same schema as the file itself.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hpcseg.errors import SpecError

# --------------------------------------------------------------------------------------------- schema

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]

_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_MEMORY_UNITS_MB = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024 * 1024}
_WALLTIME_RE = re.compile(r"^(\d{1,4}):(\d{2}):(\d{2})$")
MAX_MEMORY_MB = 64 * 1024 * 1024  # 64 TiB: more than any node offers, so larger is a typo
MAX_GPUS = 64
MAX_CPUS = 4096
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
    layout: Literal["microbead", "marida", "hyperspectral", "ham10000"] = "microbead"
    expected_count: int | None = Field(None, ge=1, description="Images the folder must hold.")
    image_size: tuple[Annotated[int, Field(ge=8, le=8192)], Annotated[int, Field(ge=8, le=8192)]] = (256, 256)
    channels: int = Field(1, ge=1, le=1024)
    num_classes: int = Field(2, ge=2, le=1000)
    class_names: list[str] | None = None
    metadata: str | None = Field(None, description="Label table inside root (HAM10000 metadata CSV).")

    @field_validator("image_size", mode="before")
    @classmethod
    def _square(cls, v: Any) -> Any:
        return (v, v) if isinstance(v, int) and not isinstance(v, bool) else v


Arch = Literal[
    "unet", "attention_unet", "attention_res_unet", "se_unet", "ssmu_net",
    "resnet50", "densenet121", "efficientnet_b3", "vit_b_16",
]


class ModelSpec(Strict):
    name: Name
    arch: Arch
    channels: list[Annotated[int, Field(ge=1, le=8192)]] = Field(default_factory=lambda: [64, 128, 256, 512, 1024])
    dropout: Fraction = 0.0
    weights: str | None = Field(None, description="Pretrained weights file; nothing is downloaded on nodes.")
    allow_partial_weights: bool = Field(False, description="Train on when weights fill < 100% of the backbone.")
    options: dict[str, Any] = Field(default_factory=dict, description="Architecture-specific settings.")


class SplitSpec(Strict):
    method: Literal["random", "stratified"] = "stratified"
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.15
    folds: int = Field(1, ge=1, le=50, description="1: one hold-out split; k>1: k-fold cross-validation.")
    density_bins: int = Field(4, ge=1, le=20)


LossName = Literal["dice", "focal", "ce", "weighted_ce"]


class LossSpec(Strict):
    components: dict[LossName, Annotated[float, Field(gt=0.0)]] = Field(default_factory=lambda: {"dice": 1.0})
    focal_alpha: Fraction | None = 0.25
    focal_gamma: float = Field(2.0, ge=0.0, le=10.0)
    label_smoothing: Fraction = 0.0
    class_weight_clip: tuple[float, float] | None = None

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


class AugmentationSpec(Strict):
    hflip: bool = False
    vflip: bool = False
    rotate_degrees: float = Field(0.0, ge=0.0, le=180.0)
    rot90: bool = False
    color_jitter: Fraction = 0.0


class EarlyStoppingSpec(Strict):
    patience: int | None = Field(None, ge=1, description="Epochs without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0.0)


class TrainingSpec(Strict):
    epochs: int = Field(ge=1, le=100000)
    batch_size: int = Field(ge=1, le=65536)
    lr: float = Field(gt=0.0, le=10.0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_epochs: int = Field(0, ge=0)
    warmup_factor: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1
    schedule: Literal["constant", "cosine"] = "constant"
    grad_clip: float | None = Field(None, gt=0.0)
    early_stopping: EarlyStoppingSpec = Field(default_factory=EarlyStoppingSpec)
    loss: LossSpec = Field(default_factory=LossSpec)
    augmentation: AugmentationSpec = Field(default_factory=AugmentationSpec)
    mixed_precision: bool = Field(False, description="bf16 autocast on CUDA; ignored on CPU.")
    num_workers: int = Field(0, ge=0, le=256)
    samples_per_epoch: int | None = Field(None, ge=1, description="Patches drawn per epoch, when sampling.")
    max_requeues: int = Field(3, ge=0, le=100)
    deterministic: bool = True


class WorkloadSpec(Strict):
    task: Literal["binary_segmentation", "multiclass_segmentation", "classification"]
    dataset: DatasetSpec
    models: list[ModelSpec] = Field(min_length=1)
    split: SplitSpec = Field(default_factory=SplitSpec)
    seed: int = 42

    @field_validator("models")
    @classmethod
    def _unique_names(cls, v: list[ModelSpec]) -> list[ModelSpec]:
        seen = [m.name for m in v]
        dupes = sorted({n for n in seen if seen.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique; repeated: {', '.join(dupes)}")
        return v


class SlurmOptions(Strict):
    gpu_flag: Literal["gres", "gpus"] = "gres"
    gpu_type: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    qos: str | None = None
    constraint: str | None = None
    signal_seconds: int = Field(300, ge=0, le=86400, description="USR1 this long before the walltime.")
    extra: list[str] = Field(default_factory=list, description="More #SBATCH options, e.g. --exclusive.")


class PbsOptions(Strict):
    flavor: Literal["pro", "torque"] = "pro"
    select: str | None = Field(None, description="Your site's own select statement, replacing ours.")
    account_flag: Literal["-A", "-P"] = "-P"
    extra: list[str] = Field(default_factory=list, description="More #PBS lines' options.")


class ResourcesSpec(Strict):
    gpus: int = Field(0, ge=0, le=MAX_GPUS)
    cpus: int = Field(1, ge=1, le=MAX_CPUS)
    memory: str | None = Field("8G", description="Per node, e.g. 240G. Leave out when mem_per_gpu is set.")
    mem_per_gpu: str | None = None
    walltime: str = Field(description="HH:MM:SS; required, because a silent default kills jobs.")
    queue: str | None = None
    account: str | None = None
    array_parallelism: int | None = Field(None, ge=1)
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
    runtime: Literal["singularity", "apptainer", "none"] = "singularity"
    image: str | None = None
    binds: list[BindSpec] = Field(default_factory=list)
    gpu: bool = Field(True, description="Pass --nv so the container sees the node's NVIDIA driver.")

    @model_validator(mode="after")
    def _image_needed(self) -> ContainerSpec:
        if self.runtime != "none" and not self.image:
            raise ValueError(f"runtime {self.runtime} needs an image (a .sif file), or set runtime: none")
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

    @property
    def slug(self) -> str:
        """The name made safe for file names and scheduler job names (the real name stays in the manifest)."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name).strip("._") or "job"

    def tasks(self) -> list[Task]:
        """The models × folds of the job, in array-index order (model-major, so one model's folds sit together)."""
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


@dataclass(frozen=True)
class Task:
    """One array element: a model trained on one fold."""

    index: int
    model: str
    fold: int

    @property
    def relpath(self) -> str:
        return f"tasks/{self.model}/fold_{self.fold}"


# --------------------------------------------------------------------------------------------- loading


@dataclass
class LoadedJob:
    """A validated spec plus where it came from, which the run manifest records."""

    spec: JobSpec
    path: Path
    profile: str | None = None
    overrides: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


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


def parse_yaml(text: str, fname: str) -> tuple[dict[str, Any], dict[tuple, int]]:
    """YAML text to a dict plus a key-path → line map; malformed YAML becomes one clear SpecError."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
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
        last_line = len(text.rstrip().splitlines()) or 1  # errors at end of stream point past the text
        where = f"{fname}:{min(mark.line + 1, last_line)}" if mark else fname
        raise SpecError(f"{where}: malformed YAML: {problem}; fix the syntax there") from None
    if data is None:
        raise SpecError(f"{fname}: the file is empty; a job needs name, workload, training and resources")
    if not isinstance(data, dict):
        raise SpecError(f"{fname}:1: a job file must be a mapping of sections, not a {type(data).__name__}")
    lines: dict[tuple, int] = {}
    problems: list[str] = []
    _walk_lines(node, (), lines, problems, fname)
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
        value = yaml.safe_load(raw) if raw.strip() else ""
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
        where = _where(loc, fname, lines, origins)
        path = _dotted(loc)
        if err["type"] == "extra_forbidden":
            out.append(f"{where}: {path}: unknown key{_suggest(str(loc[-1]), _model_at(loc))}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required but missing"
        given = err.get("input")
        shown = "" if err["type"] == "missing" or isinstance(given, dict | list) else f" (got {given!r})"
        if repr(given) in msg:
            shown = ""
        out.append(f"{where}: {path}: {msg}{shown}")
    return out


def _where(loc: tuple, fname: str, lines: dict[tuple, int], origins: dict[tuple, str]) -> str:
    for n in range(len(loc), -1, -1):
        if loc[:n] in origins:
            return origins[loc[:n]]
        if loc[:n] in lines:
            return f"{fname}:{lines[loc[:n]]}"
    return fname


def known_profiles(doc: dict) -> list[str]:
    profiles = doc.get("profiles") or {}
    return sorted(profiles) if isinstance(profiles, dict) else []


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
    return LoadedJob(spec=spec, path=path.resolve(), profile=profile, overrides=list(overrides or []), raw=doc)


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
    """A top-level folder of the hpcseg source tree (jobs/, templates/), wherever the package lives."""
    here = Path(__file__).resolve().parent.parent / name
    if here.is_dir():
        return here
    import sys

    return Path(sys.prefix) / "share" / "hpcseg" / name


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
    data = spec.model_dump(mode="json")

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
