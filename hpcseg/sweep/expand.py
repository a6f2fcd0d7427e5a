"""Grid and random sweeps expanded at submit into the array: configs × models × folds.

The expansion is a pure function of the spec (and ``sweep.seed``), so ``render``, ``check`` and
``submit`` agree on every configuration, and the same job file gives the same array tomorrow.
Optuna sweeps expand instead into ``parallel`` workers, each of which asks the study for trials.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

CONFIG_DIGITS = 3


def config_name(i: int) -> str:
    return f"c{i:0{CONFIG_DIGITS}d}"


def worker_name(k: int) -> str:
    return f"worker_{k}"


def _sig(v: float) -> float:
    """Sampled floats kept to 6 significant digits: readable in the leaderboard and best.yaml, and exact
    in YAML/JSON round trips, while far finer than any hyperparameter matters."""
    return float(f"{v:.6g}")


def configs(spec: Any) -> dict[str, dict[str, Any]]:
    """{config name: {field path: value}} of a grid or random sweep, in array order."""
    sweep = spec.sweep
    if sweep is None or sweep.method == "optuna":
        return {}
    keys = list(sweep.params)
    if sweep.method == "grid":
        combos = itertools.product(*(sweep.params[k].grid_values() for k in keys))
        return {config_name(i): dict(zip(keys, combo, strict=True)) for i, combo in enumerate(combos)}
    rng = random.Random(sweep.seed)
    out: dict[str, dict[str, Any]] = {}
    for i in range(sweep.trials):
        out[config_name(i)] = {k: sample(sweep.params[k], rng) for k in keys}
    return out


def sample(param: Any, rng: random.Random) -> Any:
    if param.choice is not None:
        return param.choice[rng.randrange(len(param.choice))]
    if param.int is not None:
        return rng.randint(*param.int)
    if param.uniform is not None:
        lo, hi = param.uniform
        x = rng.uniform(lo, hi)
    else:
        lo, hi = param.log_uniform
        x = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    return min(max(_sig(x), lo), hi)  # rounding never leaves the range (whose ends the schema checked)


def sweep_tasks(spec: Any) -> list[Any]:
    """The array of a sweep: grid/random configs × models × folds (config-major), or optuna's workers."""
    from hpcseg.spec import Task

    sweep = spec.sweep
    if sweep.method == "optuna":
        model = spec.workload.models[0].name
        return [Task(k, model, 0, config=worker_name(k), dir=f"workers/{worker_name(k)}")
                for k in range(sweep.parallel or 1)]
    folds = spec.workload.split.folds
    out = []
    for name in configs(spec):
        for m in spec.workload.models:
            for f in range(folds):
                out.append(Task(len(out), m.name, f, config=name))
    return out


def manifest_entry(spec: Any) -> dict[str, Any]:
    """What the manifest records of a sweep: the method and, for grid/random, every config's overrides."""
    sweep = spec.sweep
    return {"method": sweep.method, "trials": sweep.trials, "parallel": sweep.parallel, "pruner": sweep.pruner,
            "seed": sweep.seed, "params": list(sweep.params), "configs": configs(spec)}


def write_task_overrides(run_dir: Any, manifest: dict[str, Any]) -> None:
    """Each grid/random task folder gets ``overrides.json``: what it trains is readable beside its history."""
    from pathlib import Path

    from hpcseg.fsutil import write_json_atomic

    cfgs = (manifest.get("sweep") or {}).get("configs") or {}
    for t in manifest["tasks"]:
        if t.get("config") in cfgs:
            d = Path(run_dir) / t["dir"]
            d.mkdir(parents=True, exist_ok=True)
            write_json_atomic(d / "overrides.json", {"config": t["config"], "overrides": cfgs[t["config"]]})


def task_spec(run: Any, task: Any) -> Any:
    """The spec a grid/random task trains (the run's, with its config's overrides); None for a worker."""
    from hpcseg.errors import HpcsegError
    from hpcseg.sweep.spec import apply_overrides

    sweep = run.manifest.get("sweep") or {}
    if sweep.get("method") == "optuna":
        return None
    cfgs = sweep.get("configs") or {}
    if task.config not in cfgs:
        raise HpcsegError(f"{run.dir}: task {task.index} names sweep config {task.config!r}, which the "
                          f"manifest's sweep does not record")
    return apply_overrides(run.manifest["spec"], cfgs[task.config], f"sweep config {task.config}")
