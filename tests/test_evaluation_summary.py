"""Collect shows what each workload's evaluation wrote into result.json's ``extra``: per model, mean ± std
over the folds that ended with a result, in cv_results.json, eval/evaluation_summary.csv and the report."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from hpcseg.collect import collect_run
from hpcseg.evalsummary import aggregate, flatten
from tests.test_collect import history_text, make_run, read_csv

HAM = "ham10000_comparison"


def _extra(ece_after: float, auc_mel: float, bal: float) -> dict:
    return {"calibration": {"temperature": 1.5, "ece_before": 0.2, "ece_after": ece_after, "bins": 15,
                            "held_out": True, "reliability_after": [[0.1, 0.2]]},
            "evaluation": {"balanced_accuracy": bal, "n": 40,
                           "melanoma": {"sensitivity_at_95_specificity": 0.5},
                           "per_class": [{"class": "mel", "auc": auc_mel, "n_pos": 4},
                                         {"class": "nv", "auc": None}],
                           "confusion": [[1, 2], [3, 4]]}}


def _task(run, model: str, fold: int, extra: dict | None, code: int = 0) -> None:
    d = run.dir / "tasks" / model / f"fold_{fold}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "history.csv").write_text(history_text([0.3, 0.5]))
    (d / "exit_code").write_text(f"{code}\n")
    (d / "result.json").write_text(json.dumps({"reason": "completed", "extra": extra or {}}))


def test_flatten_keeps_float_leaves_and_keys_records_by_class():
    flat = flatten(_extra(0.05, 0.9, 0.7))
    assert flat == {"calibration.temperature": 1.5, "calibration.ece_before": 0.2, "calibration.ece_after": 0.05,
                    "evaluation.balanced_accuracy": 0.7, "evaluation.melanoma.sensitivity_at_95_specificity": 0.5,
                    "evaluation.per_class.mel.auc": 0.9}


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6), min_size=1,
                max_size=6))
def test_aggregate_matches_sample_statistics(values):
    agg = aggregate([("m", "completed", {"k": v}) for v in values] + [("m", "failed", {"k": 1e9})])
    stat = agg["m"]["k"]
    mean = sum(values) / len(values)
    assert stat["n"] == len(values) and math.isclose(stat["mean"], mean, rel_tol=1e-9, abs_tol=1e-9)
    if len(values) == 1:
        assert stat["std"] is None
    else:
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
        assert math.isclose(stat["std"], math.sqrt(var), rel_tol=1e-6, abs_tol=1e-6)


def test_collect_aggregates_evaluations_per_backbone_and_against_a_baseline(tmp_path, capsys):
    root = tmp_path / "runs"
    folds = ["workload.split.folds=2"]
    base = make_run(root, HAM, folds)
    for t in base.tasks:
        _task(base, t.model, t.fold, _extra(0.10, 0.80, 0.60))
    run = make_run(root, HAM, folds)
    models = list(dict.fromkeys(t.model for t in run.tasks))
    for t in run.tasks:
        if t.model == models[0]:
            _task(run, t.model, t.fold, _extra(0.04 + 0.02 * t.fold, 0.9, 0.7))
        elif t.model == models[1] and t.fold == 1:
            _task(run, t.model, t.fold, _extra(0.5, 0.5, 0.5), code=1)  # failed: not counted
        else:
            _task(run, t.model, t.fold, _extra(0.08, 0.85, 0.65))
    out = collect_run(run, str(base.dir), plots=False)
    ev = out["cv"]["models"][models[0]]["evaluation"]
    assert ev["calibration.ece_after"]["n"] == 2
    assert math.isclose(ev["calibration.ece_after"]["mean"], 0.05)
    assert math.isclose(ev["calibration.ece_after"]["std"], math.sqrt(2 * 0.01**2))
    assert out["cv"]["models"][models[1]]["evaluation"]["calibration.ece_after"] == {"mean": 0.08, "std": None,
                                                                                   "n": 1}
    rows = {r["measure"]: r for r in read_csv(run.dir / "eval" / "evaluation_summary.csv")}
    assert rows["calibration.ece_after"][models[0]].startswith("0.05 ± 0.014 (2)")
    assert rows["calibration.ece_after"][f"baseline {models[0]}"] == "0.1 ± 0 (2)"
    assert "evaluation.per_class.mel.auc" in rows and "evaluation.n" not in rows
    on_disk = json.loads((run.dir / "cv_results.json").read_text())
    assert on_disk["models"][models[0]]["evaluation"]["evaluation.balanced_accuracy"]["mean"] == 0.7
