"""Workload evaluations across folds and models: what each task's result.json ``extra`` measured.

A workload's evaluation hook (calibration and operating points for classifiers, threshold tuning for
binary segmentation, ...) writes numbers into result.json's ``extra``. Collect should show them without
knowing any workload, so this module flattens every *float* leaf of ``extra`` into a dotted key
(``calibration.ece_after``, ``evaluation.melanoma.sensitivity_at_95_specificity``; a list of records with a
``class`` or ``name`` field is keyed by it: ``evaluation.per_class.mel.auc``) and aggregates each key per
model over the folds that ended with a result. Integers are left out on purpose: they are counts (n, tp,
bins), not measurements to average. Torch-free: collect and status import it.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from typing import Any

from hpcseg.taskfiles import RESULT_STATUSES, read_result

MAX_DEPTH = 6  # deeper structures are tables (reliability bins, curves), not summary numbers
EVAL_SUMMARY_CSV = "evaluation_summary.csv"  # under the run's eval/, where the HTML report embeds it


def flatten(extra: Mapping[str, Any], prefix: str = "", depth: int = 0) -> dict[str, float]:
    """Every finite float leaf of ``extra`` as ``dotted.key -> value``."""
    out: dict[str, float] = {}
    if depth > MAX_DEPTH:
        return out
    for key, value in extra.items():
        name = f"{prefix}{key}"
        if isinstance(value, float) and math.isfinite(value):
            out[name] = value
        elif isinstance(value, Mapping):
            out.update(flatten(value, name + ".", depth + 1))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for item in value:
                label = item.get("class", item.get("name"))
                if isinstance(label, str) and label:
                    out.update(flatten({k: v for k, v in item.items() if k not in ("class", "name")},
                                       f"{name}.{label}.", depth + 1))
    return out


def task_measures(task_dir: Any) -> dict[str, float]:
    """The flattened ``extra`` of one task (empty when it has none or result.json is unreadable)."""
    result = read_result(task_dir)
    extra = result.get("extra") if result else None
    return flatten(extra) if isinstance(extra, Mapping) else {}


def _stats(values: list[float]) -> dict[str, float | int | None]:
    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "n": n}


def aggregate(per_task: Iterable[tuple[str, str, dict[str, float]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``(model, status, measures)`` per task -> model -> key -> {mean, std (ddof=1; None for one fold), n}.

    Only tasks with a training result count, as for the CV statistics; keys keep first-seen order."""
    values: dict[str, dict[str, list[float]]] = {}
    for model, status, measures in per_task:
        if status not in RESULT_STATUSES:
            continue
        own = values.setdefault(model, {})
        for key, v in measures.items():
            own.setdefault(key, []).append(v)
    return {model: {key: _stats(vs) for key, vs in keys.items()} for model, keys in values.items() if keys}


def keys_of(summary: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for keys in summary.values() for k in keys))


def cell(stat: Mapping[str, Any] | None) -> str:
    """``0.0581 ± 0.0040 (3)``; one fold has no spread to show."""
    if not stat:
        return ""
    text = f"{stat['mean']:.4g}"
    if stat.get("std") is not None:
        text += f" ± {stat['std']:.2g}"
    return f"{text} ({stat['n']})"


def summary_csv(summary: Mapping[str, Mapping[str, Any]], baseline: Mapping[str, Mapping[str, Any]] | None = None
                ) -> str:
    """One row per measure, one column per model (mean ± std (folds)), so backbones read side by side;
    with a baseline run's summary, a ``baseline <model>`` column follows each model that has one."""
    models = list(summary)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = ["measure"]
    for m in models:
        head.append(m)
        if baseline and m in baseline:
            head.append(f"baseline {m}")
    w.writerow(head)
    for key in keys_of(summary):
        row = [key]
        for m in models:
            row.append(cell(summary[m].get(key)))
            if baseline and m in baseline:
                row.append(cell(baseline[m].get(key)))
        w.writerow(row)
    return buf.getvalue()
