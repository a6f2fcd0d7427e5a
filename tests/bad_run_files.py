"""Damaged run files and odd baselines for docs/bad-inputs.md: the cases of tests/test_bad_inputs.py that
``hpcseg status`` and ``hpcseg collect`` meet after the jobs ran (issue 10: one bad file never stops the
rest; text is shown, never obeyed; baselines are read right or refused).

Each setup writes a real run folder as ``hpcseg submit`` and the job script leave it (manifest.json,
tasks/<model>/fold_<k>/ with history.csv and exit_code), with no scheduler ids, so status judges every
task from its files, and then damages one thing. Kept in its own module so the table of cases in
test_bad_inputs.py only grows by one line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

HEADER = "epoch,train_loss,val_loss,val_jaccard,val_dice,val_precision,val_recall,lr,epoch_seconds\n"
RUN_ID = "20260101-000000-aaaa"


def good_history(epochs: int = 3) -> str:
    return HEADER + "".join(f"{e},0.5,0.5,{0.2 * e:.4f},0.5,0.5,0.5,0.01,2.0\n" for e in range(1, epochs + 1))


def manifest(job: str = "tiny", models: tuple[str, ...] = ("unet",), run_id: str = RUN_ID) -> dict[str, Any]:
    """A manifest with the fields create_run writes that status and collect read."""
    tasks = [{"index": i, "model": m, "fold": 0, "dir": f"tasks/{m}/fold_0"} for i, m in enumerate(models)]
    return {"run_id": run_id, "job": job, "job_slug": "tiny", "scheduler": "local", "native_ids": [],
            "state": "submitted", "created": "2026-01-01T00:00:00+00:00", "created_ts": 1767225600.0,
            "submitted": "2026-01-01T00:00:00+00:00", "submitted_ts": 1767225600.0, "requeues": {},
            "spec": {"name": job, "training": {"epochs": 3},
                     "collection": {"metric": "val_jaccard", "mode": "max"}},
            "tasks": tasks}


def write_run(tmp: Path, m: dict[str, Any] | None = None, history: str | None = None) -> Path:
    """runs/tiny/<run_id>/ with every task ended (exit_code 0) and the same history."""
    m = m or manifest()
    run = tmp / "runs" / "tiny" / m["run_id"]
    for t in m["tasks"]:
        d = run / t["dir"]
        d.mkdir(parents=True, exist_ok=True)
        (d / "history.csv").write_text(good_history() if history is None else history, encoding="utf-8")
        (d / "exit_code").write_text("0\n")
    (run / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    return run


def _task(tmp: Path) -> Path:
    return tmp / "runs" / "tiny" / RUN_ID / "tasks" / "unet" / "fold_0"


def foreign_manifest(tmp: Path) -> None:
    write_run(tmp)
    other = tmp / "runs" / "other" / "notarun"
    other.mkdir(parents=True)
    (other / "manifest.json").write_text("[]")


def garbage_manifest(tmp: Path) -> None:
    write_run(tmp)
    other = tmp / "runs" / "other" / "garbage"
    other.mkdir(parents=True)
    (other / "manifest.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff garbage")


def history_with(text: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        write_run(tmp, history=text)
    return setup


def exit_code_folder(tmp: Path) -> None:
    write_run(tmp)
    (_task(tmp) / "exit_code").unlink()
    (_task(tmp) / "exit_code").mkdir()


def task_folder_is_file(tmp: Path) -> None:
    write_run(tmp, manifest(models=("unet", "attention_unet")))
    d = _task(tmp)
    for f in d.iterdir():
        f.unlink()
    d.rmdir()
    d.write_text("not a folder\n")


def task_folder_loop(tmp: Path) -> None:
    write_run(tmp, manifest(models=("unet", "attention_unet")))
    d = _task(tmp)
    for f in d.iterdir():
        f.unlink()
    d.rmdir()
    os.symlink("fold_0", d)  # fold_0 -> fold_0: every lookup through it loops


def hostile_names(tmp: Path) -> None:
    write_run(tmp, manifest(job="[bold]x[/] \x1b[31mred", models=("[/]unet\x1b[2J",)))


def baseline(text: str | bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        write_run(tmp)
        data = text.encode("utf-8") if isinstance(text, str) else text
        (tmp / "baseline.csv").write_bytes(data)
    return setup


RUN = f"runs/tiny/{RUN_ID}"
TASK = f"<tmp>/runs/tiny/{RUN_ID}/tasks/unet/fold_0"
STATUS = ("status", "--runs-dir", "runs")
COLLECT = ("collect", RUN)
CREATES = (f"{RUN}/training_summary.csv", f"{RUN}/cv_results.json", f"{RUN}/comparison.md", f"{RUN}/plots",
           f"{RUN}/plots/*", f"{RUN}/.manifest.lock", ".cache", ".cache/*", ".config", ".config/*")


def damaged_cases(case: Callable[..., Any]) -> list[Any]:
    """The rows, built with test_bad_inputs.Case (passed in, so neither module imports the other)."""
    return [
        case("foreign-manifest", STATUS, 5,
             "hpcseg status: damaged: <tmp>/runs/other/notarun/manifest.json: not an hpcseg run manifest "
             "(not a JSON object (a list))", setup=foreign_manifest, creates=CREATES),
        case("garbage-manifest", STATUS, 5,
             "hpcseg status: damaged: <tmp>/runs/other/garbage/manifest.json: unreadable manifest (not JSON",
             setup=garbage_manifest, creates=CREATES),
        case("history-bad-cells", STATUS, 5,
             f"hpcseg status: damaged: tiny/{RUN_ID}/tasks/unet/fold_0/history.csv: line 3: val_jaccard is "
             f"'abc', not a number (and 1 more such cell(s)): read as missing",
             setup=history_with(HEADER + "1,0.5,0.5,0.2,0.5,0.5,0.5,0.01,2\n2,0.5,0.5,abc,,0.5,0.5,0.01,2\n"),
             creates=CREATES),
        case("history-repeated-epochs", COLLECT, 5,
             f"hpcseg collect: damaged: tiny/{RUN_ID}/tasks/unet/fold_0/history.csv: epoch(s) 2 written more than "
             f"once: the last row of each kept",
             setup=history_with(HEADER + "1,0.5,0.5,0.2,0.5,0.5,0.5,0.01,2\n2,0.5,0.5,0.9,0.5,0.5,0.5,0.01,2\n"
                                "2,0.5,0.5,0.3,0.5,0.5,0.5,0.01,2\n"), creates=CREATES),
        case("exit-code-folder", STATUS, 5, f"hpcseg status: damaged: {TASK}/exit_code: is a folder, not a file",
             setup=exit_code_folder, creates=CREATES),
        case("task-folder-is-file", COLLECT, 5, f"hpcseg collect: damaged: {TASK}: is a file, not a task folder",
             setup=task_folder_is_file, creates=CREATES),
        case("task-folder-symlink-loop", STATUS, 5, f"hpcseg status: damaged: {TASK}: is a symlink loop",
             setup=task_folder_loop, creates=CREATES),
        case("markup-and-ansi-in-names", ("status", RUN), 0,
             f"tiny/{RUN_ID}  [bold]x[/] \\x1b[31mred  local pid None  state: completed",
             "0     [/]unet\\x1b[2J", setup=hostile_names, stream="stdout", detail_at=3, creates=CREATES),
        case("baseline-bom-percent", (*COLLECT, "--against", "baseline.csv", "--json"), 0, "{",
             '"baseline_best": 0.651', setup=baseline("\ufeffmodel,fold,best_val_jaccard,final_val_jaccard\n"
                                                      "unet,0,65.1%,60%\n"),
             stream="stdout", detail_at=None, creates=CREATES),
        case("baseline-decimal-comma", (*COLLECT, "--against", "baseline.csv", "--json"), 0, "{",
             '"baseline_best": 0.65', setup=baseline("model;fold;best_val_jaccard;final_val_jaccard\n"
                                                     "unet;0;0,65;0,6\n"),
             stream="stdout", detail_at=None, creates=CREATES),
        case("baseline-ambiguous-comma", (*COLLECT, "--against", "baseline.csv"), 0,
             "hpcseg collect: warning: baseline.csv:2: best_val_jaccard: '1,234' could be 1234 or 1.234: "
             "ignored; write it with a decimal point",
             setup=baseline('model,fold,best_val_jaccard,final_val_jaccard\nunet,0,"1,234",0.6\n'),
             creates=CREATES),
        case("baseline-names-differ-in-case", (*COLLECT, "--against", "baseline.csv"), 2,
             "hpcseg collect: baseline: models 'UNet' and 'unet' differ only in case or punctuation, so a "
             "comparison cannot tell which is meant; rename one of them",
             setup=baseline("model,fold,best_val_jaccard,final_val_jaccard\nUNet,0,0.5,0.5\nunet,0,0.7,0.7\n"),
             creates=CREATES),
    ]
