"""``hpcseg report``: one self-contained HTML file a collaborator can open without the cluster.

Everything ``collect`` computed (summary, CV statistics, comparison, headline, plots) plus each workload's
own evaluation figures and tables and the run's facts from its manifest, in one file: CSS inline, images
as base64 ``data:`` URIs, no script and no link to anything outside the file, so it opens offline, can be
mailed, and prints. All text that came from a user (job, model and file names, overrides, CSV cells) goes
through Jinja2's autoescape: a model called ``<script>`` is shown, never run.

Evaluation convention (docs/formats.md): every ``*.png``/``*.jpg`` and ``*.csv`` under a task's ``eval/``
folder, and under the run's ``eval/`` and ``sweep/`` folders, is embedded with its path as caption.
"""

from __future__ import annotations

import argparse
import base64
import csv
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hpcseg.errors import EXIT_FAILED, HpcsegError
from hpcseg.fsutil import write_text_atomic
from hpcseg.runs import Run, count_requeues, find_run, resubmit_counts, runs_root

REPORT_HTML = "report.html"
TEMPLATE = "report.html.j2"  # in the shipped templates/ folder, beside the job-script templates
EVAL_DIRS = ("eval", "sweep")  # run-level folders; tasks have eval/ only
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
MAX_IMAGE_BYTES = 3_000_000  # one figure bigger than this is listed, not embedded: the report stays mailable
MAX_TOTAL_IMAGE_BYTES = 40_000_000
MAX_TABLE_ROWS = 200
MAX_TABLE_COLS = 40


@dataclass
class Figure:
    """One embedded image: caption, where it came from, and the data URI (None when too big to embed)."""

    caption: str
    source: str
    uri: str | None
    note: str | None = None


@dataclass
class CsvTable:
    caption: str
    source: str
    header: list[str]
    rows: list[list[str]]
    note: str | None = None


@dataclass
class Section:
    """The evaluation outputs of one folder: a task's eval/, or the run's eval/ or sweep/."""

    title: str
    figures: list[Figure] = field(default_factory=list)
    tables: list[CsvTable] = field(default_factory=list)


class _Budget:
    """Total bytes of images embedded so far, so a run with a thousand Grad-CAM grids still yields a file
    a browser opens: past the budget, figures are listed by path instead."""

    def __init__(self, limit: int = MAX_TOTAL_IMAGE_BYTES) -> None:
        self.left = limit

    def figure(self, path: Path, caption: str, source: str) -> Figure:
        try:
            size = path.stat().st_size
            if size > MAX_IMAGE_BYTES:
                return Figure(caption, source, None, f"not embedded: {size / 1e6:.1f} MB is over "
                                                     f"{MAX_IMAGE_BYTES / 1e6:.0f} MB; open {source}")
            if size > self.left:
                return Figure(caption, source, None, f"not embedded: the report's image budget is used up; open {source}")
            data = path.read_bytes()
        except OSError as exc:
            return Figure(caption, source, None, f"unreadable: {exc.strerror or exc}")
        self.left -= len(data)
        mime = IMAGE_TYPES[path.suffix.lower()]
        return Figure(caption, source, f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}")


def _caption(path: Path) -> str:
    """``confusion_matrix_fold0.png`` → ``confusion matrix fold0``: the file name is the caption."""
    return path.stem.replace("_", " ").replace("-", " ").strip() or path.name


def read_csv_table(path: Path, source: str) -> CsvTable:
    """A CSV shown as a table, cut to MAX_TABLE_ROWS × MAX_TABLE_COLS with a note saying so."""
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, csv.Error) as exc:
        return CsvTable(_caption(path), source, [], [], f"unreadable: {exc}")
    if not rows:
        return CsvTable(_caption(path), source, [], [], "empty file")
    header, body = rows[0], rows[1:]
    notes = []
    if len(body) > MAX_TABLE_ROWS:
        notes.append(f"first {MAX_TABLE_ROWS} of {len(body)} rows")
        body = body[:MAX_TABLE_ROWS]
    if len(header) > MAX_TABLE_COLS:
        notes.append(f"first {MAX_TABLE_COLS} of {len(header)} columns")
    width = min(MAX_TABLE_COLS, max(len(header), *(len(r) for r in body)) if body else len(header))
    header = (header + [""] * width)[:width]
    body = [(r + [""] * width)[:width] for r in body]
    return CsvTable(_caption(path), source, header, body, "; ".join(notes) or None)


def eval_sections(run: Run, budget: _Budget | None = None) -> list[Section]:
    """Every evaluation output under the convention, run-level folders first, then tasks in index order."""
    budget = budget or _Budget()
    folders: list[tuple[str, Path]] = [(f"run: {name}/", run.dir / name) for name in EVAL_DIRS]
    for t in sorted(run.manifest.get("tasks", []), key=lambda t: t["index"]):
        folders.append((f"{t['model']}, fold {t['fold']}: {t['dir']}/eval/", run.dir / t["dir"] / "eval"))
    sections = []
    for title, folder in folders:
        if not folder.is_dir():
            continue
        sec = Section(title)
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = str(f.relative_to(run.dir))
            if f.suffix.lower() in IMAGE_TYPES:
                sec.figures.append(budget.figure(f, _caption(f), rel))
            elif f.suffix.lower() == ".csv":
                sec.tables.append(read_csv_table(f, rel))
        if sec.figures or sec.tables:
            sections.append(sec)
    return sections


def _fmt(v: Any) -> str:
    from hpcseg.compare import fmt_value

    if v is None:
        return "—"
    if isinstance(v, float):
        return fmt_value(v) if math.isfinite(v) else str(v)
    return str(v)


def run_facts(run: Run) -> list[tuple[str, str]]:
    """(label, value) rows of what was asked for and what happened, straight from manifest.json."""
    m = run.manifest
    spec = m.get("spec") if isinstance(m.get("spec"), dict) else {}
    res = spec.get("resources") or {}
    git = m.get("git") or {}
    resub = resubmit_counts(m)
    requeues = {str(t["index"]): count_requeues(run.dir / t["dir"]) for t in m.get("tasks", [])}
    requeues = {k: n for k, n in requeues.items() if n} or {str(k): int(v) for k, v in (m.get("requeues") or {}).items()}
    commit = git.get("commit")
    facts = [
        ("job", f"{m.get('job')} ({m.get('job_file') or 'no file recorded'})"),
        ("profile", m.get("profile") or "none"),
        ("overrides", ", ".join(m.get("overrides") or []) or "none"),
        ("workload", f"{(spec.get('workload') or {}).get('task', '—')}, "
                     f"{len(m.get('tasks', []))} task(s): models × folds"),
        ("resources", ", ".join(f"{k} {res[k]}" for k in ("gpus", "cpus", "memory", "walltime", "queue", "account")
                                if res.get(k) not in (None, "")) or "—"),
        ("scheduler", str(m.get("scheduler") or "—")),
        ("scheduler job ids", ", ".join(map(str, m.get("native_ids") or [])) or "none (not submitted)"),
        ("collect job", str(m.get("collect_id") or "none")),
        ("state", str(m.get("state") or "—")),
        ("requeues", ", ".join(f"task {k}: {n}" for k, n in sorted(requeues.items(), key=lambda kv: int(kv[0])))
         or "none"),
        ("resubmissions", ", ".join(f"task {k}: {n}" for k, n in sorted(resub.items())) or "none"),
        ("git commit", (commit or "unknown") + (" (uncommitted changes)" if git.get("dirty") else "")),
        ("host, user", f"{m.get('host', '—')}, {m.get('user', '—')}"),
        ("created", str(m.get("created") or "—")),
        ("submitted", str(m.get("submitted") or "—")),
        ("last task ended", _last_end(run, m)),
    ]
    return facts


def _last_end(run: Run, m: dict[str, Any]) -> str:
    """When the last ``exit_code`` was written (the job script writes it as a task ends), and how long after
    submission: the wall-clock time the whole run took, queueing and requeues included."""
    ends = []
    for t in m.get("tasks", []):
        try:
            ends.append((run.dir / t["dir"] / "exit_code").stat().st_mtime)
        except OSError:
            continue
    if not ends:
        return "no task has ended"
    last = max(ends)
    text = datetime.fromtimestamp(last, timezone.utc).isoformat(timespec="seconds")
    start = m.get("submitted_ts") or m.get("created_ts")
    if isinstance(start, (int, float)) and last >= start:
        text += f" ({_human(last - start)} after {'submission' if m.get('submitted_ts') else 'creation'}; " \
                f"{len(ends)} of {len(m.get('tasks', []))} task(s) ended)"
    return text


def _plot_figures(run: Run, result: dict[str, Any], budget: _Budget) -> tuple[list[Figure], Figure | None]:
    """collect's PNGs: learning curves (one per model) and the comparison bars."""
    curves, comparison = [], None
    for p in map(Path, result.get("files", {}).get("plots") or []):
        if not p.is_file():
            continue
        rel = str(p.relative_to(run.dir)) if p.is_relative_to(run.dir) else str(p)
        if p.name == "model_comparison.png":
            comparison = budget.figure(p, "best metric per model, this run and the baseline", rel)
        else:
            model = p.stem.removeprefix("learning_curves_")
            curves.append(budget.figure(p, f"learning curves: {model}", rel))
    return curves, comparison


def build_context(run: Run, result: dict[str, Any], generated: str | None = None) -> dict[str, Any]:
    """Everything the template shows, as plain data: the template only lays it out."""
    from hpcseg.compare import fmt_diff, fmt_ratio, fmt_value
    from hpcseg.plots import metric_definition

    budget = _Budget()
    metric = result["metric"]
    curves, comparison = _plot_figures(run, result, budget)
    times = [r["train_time"] for r in result["summary"] if r.get("train_time") is not None]
    return {
        "title": f"{result['job']} / {result['run_id']}",
        "label": f"{run.dir.parent.name}/{run.run_id}",
        "metric": metric,
        "metric_definition": metric_definition(metric)[1],
        "better": "higher" if result["mode"] != "min" else "lower",
        "headline": result.get("headline"),
        "summary": result["summary"],
        "cv": result["cv"],
        "comparison": result.get("comparison"),
        "baseline": result.get("baseline"),
        "baseline_note": result.get("baseline_note"),
        "curves": curves,
        "comparison_plot": comparison,
        "sections": eval_sections(run, budget),
        "facts": run_facts(run),
        "total_train_time": _human(sum(times)) if times else "—",
        "warnings": result.get("warnings") or [],
        "generated": generated or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fmt": fmt_value, "fmt_ratio": fmt_ratio, "fmt_diff": fmt_diff, "fmt_any": _fmt,
    }


def _human(seconds: float) -> str:
    from hpcseg.collect import human_duration

    return human_duration(seconds)


def render_report(run: Run, result: dict[str, Any], generated: str | None = None) -> str:
    """The HTML text. Autoescape is on for every value: names and CSV cells are data, never markup."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    from hpcseg.spec import shipped_dir

    env = Environment(loader=FileSystemLoader(str(shipped_dir("templates"))), autoescape=select_autoescape(default=True,
                      default_for_string=True), undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template(TEMPLATE).render(**build_context(run, result, generated))


def write_report(run: Run, result: dict[str, Any], path: Path | str | None = None,
                 generated: str | None = None) -> Path:
    """Write the report atomically (default RUN/report.html) from what ``collect_run`` returned."""
    out = Path(path) if path else run.dir / REPORT_HTML
    html = render_report(run, result, generated)
    try:
        return write_text_atomic(out, html)
    except OSError as exc:
        raise HpcsegError(f"{out}: cannot write the report ({exc.strerror or exc}); choose another path with -o",
                          exit_code=EXIT_FAILED) from None


def cli_report(args: argparse.Namespace) -> int:
    """``hpcseg report RUN [--against B] [-o PATH]``: collect (plots included) and write the HTML report."""
    from hpcseg.collect import collect_run
    from hpcseg.runs import record_requeues

    root = runs_root(getattr(args, "runs_dir", None))
    run = find_run(args.run, root)
    out = Path(args.output).expanduser() if getattr(args, "output", None) else None
    if out is not None and out.is_dir():
        raise HpcsegError(f"-o {out}: is a folder; give a file name such as {out / REPORT_HTML}")
    record_requeues(run)
    result = collect_run(run, getattr(args, "against", None), root=root if getattr(args, "runs_dir", None) else None)
    written = write_report(run, result, out)
    print(f"wrote {written}")
    return 0
