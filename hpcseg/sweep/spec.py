"""The ``sweep:`` section of a job, and the check that every value it can produce passes the job schema.

Parameters are addressed by the same dotted field paths as ``--set`` and applied through the same
machinery, so a swept value is typed and bounded by exactly the schema that checks the file itself: a
learning-rate range reaching past ``training.lr``'s upper bound is refused at ``check``, not on a node.
This module must not import :mod:`hpcseg.spec` at import time (that module imports this one).
"""

from __future__ import annotations

import copy
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from hpcseg.errors import SpecError
from hpcseg.scalars import real_number, whole_number

MAX_CONFIGS = 10_000  # an array this long is a typo in a grid, not a plan
# Sections a sweep may not change: the sweep itself, the names runs are filed under, and the objective.
FORBIDDEN_ROOTS = ("sweep", "profiles", "name", "collection")


def _whole(v: Any) -> Any:
    whole_number(v)
    if isinstance(v, float) and not v.is_integer():
        raise ValueError(f"expected a whole number, got {v!r}")
    return v


Num = Annotated[float, BeforeValidator(real_number)]
Whole = Annotated[int, BeforeValidator(_whole)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class Param(_Strict):
    """One swept field: exactly one of choice, uniform, log_uniform, int."""

    choice: list[Any] | None = Field(None, min_length=1)
    uniform: tuple[Num, Num] | None = None
    log_uniform: tuple[Num, Num] | None = None
    int: tuple[Whole, Whole] | None = None

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            raise ValueError("expected one of {choice: [...]}, {uniform: [lo, hi]}, {log_uniform: [lo, hi]}, "
                             "{int: [lo, hi]}")
        unknown = [str(k) for k in v if k not in ("choice", "uniform", "log_uniform", "int")]
        if unknown:
            raise ValueError(f"unknown distribution {unknown[0]!r}; use choice, uniform, log_uniform or int")
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> Param:
        given = [k for k in ("choice", "uniform", "log_uniform", "int") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of choice, uniform, log_uniform, int (got "
                             f"{', '.join(given) or 'none'})")
        lo_hi = self.uniform or self.log_uniform or self.int
        if lo_hi is not None and not lo_hi[0] < lo_hi[1]:
            raise ValueError(f"{given[0]}: [lo, hi] needs lo < hi (got {list(lo_hi)})")
        if self.log_uniform is not None and self.log_uniform[0] <= 0:
            raise ValueError(f"log_uniform: lo must be above 0 (got {self.log_uniform[0]})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("choice", "uniform", "log_uniform", "int") if getattr(self, k) is not None)

    def corners(self) -> list[Any]:
        """The values that bound what this parameter can produce (every choice; both ends of a range)."""
        if self.choice is not None:
            return list(self.choice)
        lo, hi = self.uniform or self.log_uniform or self.int  # type: ignore[misc]
        return [lo, hi]

    def grid_values(self) -> list[Any] | None:
        """Every value, when the parameter is enumerable (choice, int); None for continuous ranges."""
        if self.choice is not None:
            return list(self.choice)
        if self.int is not None:
            return list(range(self.int[0], self.int[1] + 1))
        return None


class SweepSpec(_Strict):
    method: Literal["grid", "random", "optuna"]
    trials: Annotated[int, BeforeValidator(_whole)] | None = Field(
        None, ge=1, le=MAX_CONFIGS, description="random/optuna: how many; grid: every combination")
    parallel: Annotated[int, BeforeValidator(_whole)] | None = Field(
        None, ge=1, le=10_000, description="array elements at once (optuna: the number of workers)")
    params: dict[str, Param] = Field(min_length=1)
    pruner: Literal["median", "hyperband", "none"] = "median"
    seed: Annotated[int, BeforeValidator(_whole)] = Field(0, ge=0, le=2**32 - 1)

    @field_validator("params")
    @classmethod
    def _paths(cls, v: dict[str, Param]) -> dict[str, Param]:
        for key in v:
            root = key.split(".")[0]
            if root in FORBIDDEN_ROOTS:
                raise ValueError(f"{key}: a sweep cannot change {root} (it names the run or the objective)")
            if any(not p for p in key.split(".")):
                raise ValueError(f"{key}: expected a field path such as training.lr")
        return v

    @model_validator(mode="after")
    def _method_fits(self) -> SweepSpec:
        if self.method == "grid":
            if self.trials is not None:
                raise ValueError("grid runs every combination; leave out trials (or use method: random)")
            ranges = [k for k, p in self.params.items() if p.grid_values() is None]
            if ranges:
                raise ValueError(f"grid needs choice or int for every parameter; {', '.join(ranges)} "
                                 f"is a continuous range (list values with choice: [...], or use method: random)")
            n = math.prod(len(p.grid_values() or []) for p in self.params.values())
            if n > MAX_CONFIGS:
                raise ValueError(f"the grid has {n} combinations, more than {MAX_CONFIGS}; use method: random")
        elif self.trials is None:
            raise ValueError(f"method {self.method} needs trials: how many configurations to try")
        if self.method != "optuna" and self.pruner != "median" and "pruner" in self.model_fields_set:
            raise ValueError("pruner is for method: optuna (grid and random trials all run to the end)")
        return self


def apply_overrides(spec_doc: dict[str, Any], overrides: dict[str, Any], origin: str = "sweep") -> Any:
    """A JobSpec: ``spec_doc`` (a JobSpec dump) with ``overrides`` {field path: value} set as ``--set``
    would set them, validated. Raises SpecError naming the first refused field."""
    from pydantic import ValidationError

    from hpcseg.spec import JobSpec, _format_errors, _set_path, _split_path

    doc = copy.deepcopy(spec_doc)
    doc.pop("sweep", None)
    origins: dict[tuple, str] = {}
    for key, value in overrides.items():
        origins[_set_path(doc, _split_path(key), copy.deepcopy(value), origin)] = origin
    try:
        return JobSpec.model_validate(doc)
    except ValidationError as exc:
        problems = _format_errors(exc, origin, {}, origins)
        raise SpecError(problems[0] if len(problems) == 1 else f"{origin}: {len(problems)} problem(s)",
                        problems=problems if len(problems) > 1 else None) from None


def check_values(spec: Any, fname: str, lines: dict[tuple, int]) -> None:
    """Refuse a sweep any of whose values the schema refuses, with the file and line of the parameter.

    Each parameter's bounding values are tried alone (a range is convex, so its ends bound it), then for
    grid and random every configuration that will be queued is validated whole."""
    sweep = spec.sweep
    if sweep is None:
        return
    base = spec.model_dump(mode="json")
    for key, param in sweep.params.items():
        where = f"{fname}:{lines.get(('sweep', 'params', key), lines.get(('sweep',), 1))}"
        for value in param.corners():
            _try(base, {key: value}, f"{where}: sweep.params.{key}: {value!r}")
        if param.kind == "uniform" or param.kind == "log_uniform":
            _try(base, {key: (param.uniform or param.log_uniform)[0] + 0.5}, None, where, key)  # type: ignore[index]
    if sweep.method == "optuna" and len(spec.workload.models) > 1:
        where = f"{fname}:{lines.get(('sweep', 'method'), 1)}"
        raise SpecError(f"{where}: sweep.method: optuna trains one model per trial, the job has "
                        f"{len(spec.workload.models)}; keep one (e.g. --set-file) or use grid/random")
    if sweep.method in ("grid", "random"):
        from hpcseg.sweep.expand import configs

        for name, overrides in configs(spec).items():
            _try(base, overrides, f"{fname}:{lines.get(('sweep',), 1)}: sweep config {name} {overrides}")


def _try(base: dict, overrides: dict, label: str | None, where: str = "", key: str = "") -> None:
    try:
        apply_overrides(base, overrides, "value")
    except SpecError as exc:
        if label is None:  # a float range on a whole-number field: only the type is wrong, say so
            if "integer" in exc.message:
                raise SpecError(f"{where}: sweep.params.{key}: the field takes whole numbers; use "
                                f"{{int: [lo, hi]}} or {{choice: [...]}}") from None
            return
        detail = exc.message.removeprefix("value: ")
        raise SpecError(f"{label} is refused by the schema: {detail}") from None
