"""Property tests for issue 10's "one bad file never stops the rest", with the task-file owner and cache.

Hypothesis generates damaged manifests (wrong JSON shapes, missing keys, wrong types, binary garbage) and
damaged histories (empty, quoted, non-numeric, NaN, inf, ±1e308 cells; repeated, out-of-order and
fractional epochs; rows of the wrong width) and runs the real ``hpcseg status`` (in-process, through
``cli.main``) and ``collect_run`` over them beside a good run or task. The properties: nothing raises;
the exit code is 0 or 5; each damaged file is named in at most one line (exactly one for a damaged
manifest); the good run or task is still shown with its own numbers; every number collect reports is one
that was in the file, and its JSON stays strict (no NaN or Infinity).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpcseg.cli import main
from hpcseg.collect import collect_run
from hpcseg.printable import printable, rich_text
from hpcseg.runs import open_run
from hpcseg.taskcache import TaskCache
from hpcseg.taskfiles import _metric_cell, read_last_rows, read_progress, read_task_view
from tests.bad_run_files import HEADER, RUN_ID, good_history, manifest, write_run

PROPS = settings(max_examples=25, deadline=None, report_multiple_bugs=False,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
REQUIRED = ("run_id", "job", "spec", "tasks")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)


@st.composite
def damaged_manifest(draw: st.DrawFn) -> bytes:
    """Bytes that are certainly not a usable manifest, in one of the ways files get damaged."""
    how = draw(st.sampled_from(["not-object", "missing", "wrong-type", "task-broken", "garbage"]))
    m = manifest(run_id="20250101-000000-dddd")
    if how == "not-object":
        return json.dumps(draw(json_values.filter(lambda v: not isinstance(v, dict)))).encode()
    if how == "missing":
        for k in draw(st.lists(st.sampled_from(REQUIRED), min_size=1, unique=True)):
            del m[k]
    elif how == "wrong-type":
        k = draw(st.sampled_from(REQUIRED))
        want = {"run_id": str, "job": str, "spec": dict, "tasks": list}[k]
        m[k] = draw(json_values.filter(lambda v: not isinstance(v, want) or v in ("", {}, [])))
        if k == "tasks" and m[k] == []:
            m[k] = 0
    elif how == "task-broken":
        t = m["tasks"][0]
        broken = {"index": [None, -1, 1.5, "0", 5, True], "model": [None, 1, [], {}],
                  "fold": [None, -1, 1.5, "0", False], "dir": [None, "", "../../etc", "/abs", 1, "a/../.."]}
        key = draw(st.sampled_from(sorted(broken)))
        t[key] = draw(st.sampled_from(broken[key]))
    else:
        data = draw(st.binary(min_size=1, max_size=40))
        try:
            json.loads(data)
        except ValueError:
            return data
        return b"\x00" + data
    return json.dumps(m).encode()


def _status(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["status", *argv])
    return rc, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def _cache_in(tmp: Path):
    """The status cache in this example's folder (the user's is left alone), restored after."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = before


@PROPS
@given(bad=st.lists(damaged_manifest(), min_size=1, max_size=3))
def test_damaged_manifests_are_one_line_each_and_the_good_run_is_shown(bad: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as d, _cache_in(Path(d)):
        tmp = Path(d)
        write_run(tmp)
        paths = []
        for i, data in enumerate(bad):
            p = tmp / "runs" / ("tiny" if i % 2 else "other") / f"damaged-{i}" / "manifest.json"
            p.parent.mkdir(parents=True)
            p.write_bytes(data)
            paths.append(p)
        rc, out, err = _status("--runs-dir", str(tmp / "runs"), "--last", "0")
        assert rc == 5, (rc, out, err)
        assert f"tiny/{RUN_ID}" in out and "completed" in out
        damaged = [ln for ln in err.splitlines() if "damaged:" in ln]
        assert len(damaged) == len(paths), err
        for p in paths:
            assert sum(str(p) in ln for ln in damaged) == 1, (p, err)
        run = open_run(tmp / "runs" / "tiny" / RUN_ID)
        result = collect_run(run, plots=False)  # damaged siblings are no baseline and stop nothing
        assert result["cv"]["best_model"] == "unet"


cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "nan", "NaN", "inf", "-inf", "1e308", "-1e308", '"0.5"', '" 0.25 "', "abc",
                     "0x1F", "1,5", '"', "1e999"]),
    st.decimals(min_value=-2, max_value=2, places=4, allow_nan=False).map(str))
epochs = st.one_of(st.integers(-2, 8).map(str), st.sampled_from(["1.5", "", "nan", "x", '"3"']))
rows = st.lists(st.tuples(epochs, st.lists(cells, min_size=7, max_size=9)), max_size=12)


def _history_text(body: list[tuple[str, list[str]]], cut: bool) -> str:
    text = HEADER + "".join(",".join([e, *c]) + "\n" for e, c in body)
    return text[:-1] if cut and text.endswith("\n") and body else text


@PROPS
@given(body=rows, cut=st.booleans())
def test_damaged_histories_never_stop_status_or_collect(body: list[tuple[str, list[str]]], cut: bool) -> None:
    with tempfile.TemporaryDirectory() as d, _cache_in(Path(d)):
        tmp = Path(d)
        run_dir = write_run(tmp, manifest(models=("unet", "good")))
        hist = run_dir / "tasks" / "unet" / "fold_0" / "history.csv"
        text = _history_text(body, cut)
        hist.write_text(text, encoding="utf-8")
        rc, out, err = _status(str(run_dir))
        assert rc in (0, 5), (rc, out, err)
        assert sum("unet/fold_0/history.csv" in ln for ln in err.splitlines()) <= 1, err
        assert "good" in out and "0.6000" in out  # the good task's last and best
        result = collect_run(open_run(run_dir), plots=False)
        json.loads(json.dumps(result["cv"], allow_nan=False))  # strict JSON: no NaN, no Infinity
        assert len(result["damaged"]) <= 1
        written = set()
        for line in text.split("\n"):
            parts = next(csv.reader([line])) if '"' in line else line.split(",")  # CSV quoting, as written
            if len(parts) == 9:
                v = _metric_cell(parts[3].strip().strip('"'), "", [])
                if v is not None:
                    written.add(v)
        row = next(r for r in result["summary"] if r["model"] == "unet")
        for key in ("best_val_jaccard", "final_val_jaccard"):
            assert row[key] is None or (math.isfinite(row[key]) and row[key] in written), (key, row, text)
        good = next(r for r in result["summary"] if r["model"] == "good")
        assert good["best_val_jaccard"] == 0.6 and good["final_val_jaccard"] == 0.6


def test_final_is_the_highest_epoch_and_a_repeated_epoch_keeps_its_last_row(tmp_path: Path) -> None:
    p = tmp_path / "history.csv"
    p.write_text(HEADER + "3,1,1,0.30,0,0,0,0,1\n1,1,1,0.90,0,0,0,0,1\n2,1,1,0.10,0,0,0,0,1\n"
                 "2,1,1,0.20,0,0,0,0,1\n")
    t = read_last_rows(p)
    assert [r[0] for r in t.rows] == [1.0, 2.0, 3.0] and t.rows[1][3] == 0.20
    prog = read_progress(p, "val_jaccard", "max")
    assert (prog.epoch, prog.last, prog.best) == (3, 0.30, 0.90)
    assert len(t.damage) == 1 and "epoch(s) 2 written more than once" in t.damage[0] and "out of order" in t.damage[0]


def test_status_reads_a_1gb_history_in_bounded_memory(tmp_path: Path) -> None:
    """A sparse 1 GB history (cheap to make): status reads its header and last 64 kB only."""
    p = tmp_path / "history.csv"
    tail = "".join(f"{e},0.5,0.5,{e / 10**6:.6f},0.5,0.5,0.5,0.01,2.0\n" for e in range(10**6 - 3000, 10**6))
    with open(p, "w") as fh:
        fh.write(HEADER)
        fh.seek(2**30 - len(tail))
        fh.write(tail)
    assert p.stat().st_size == 2**30
    tracemalloc.start()
    t0 = time.perf_counter()
    prog = read_progress(p, "val_jaccard", "max")
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert prog.epoch == 10**6 - 1 and prog.last == 0.999999 and prog.partial and prog.best is None
    assert peak < 4 * 2**20, peak
    assert elapsed < 5  # a sanity bound, not a benchmark: reading 1 GB would take far longer here


def test_the_cache_is_never_trusted_over_the_files(tmp_path: Path) -> None:
    """Entries are used only while the folder and its files keep their stamps: a history appended to, an
    exit_code appearing or a task folder replaced are all seen, however the cache was left."""
    d = tmp_path / "fold_0"
    d.mkdir()
    (d / "history.csv").write_text(good_history(2))
    old = time.time() - 60
    for p in (d / "history.csv", d):
        os.utime(p, (old, old))
    cache = TaskCache(tmp_path / "cache.json")
    v = cache.view(str(d), "val_jaccard", "max")
    assert (v.epoch, v.exit_code, cache.misses) == (2, None, 1)
    cache.save()
    cache = TaskCache(tmp_path / "cache.json")
    assert cache.view(str(d), "val_jaccard", "max").epoch == 2 and cache.hits == 1
    with open(d / "history.csv", "a") as fh:  # appended in place: same inode, same folder mtime
        fh.write("3,0.5,0.5,0.6,0.5,0.5,0.5,0.01,2.0\n")
    os.utime(d / "history.csv", (old, old))
    os.utime(d, (old, old))
    assert cache.view(str(d), "val_jaccard", "max").epoch == 3
    (d / "exit_code").write_text("0\n")  # a new file: the folder's stamp changes
    assert cache.view(str(d), "val_jaccard", "max").exit_code == 0
    assert read_task_view(str(d), "val_jaccard", "max").exit_code == 0


def test_a_damaged_cache_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "cache.json").write_bytes(b'{"version": 1, "tasks": {"x": [1, 2]}}')
    d = tmp_path / "t"
    d.mkdir()
    cache = TaskCache(tmp_path / "cache.json")
    assert cache.view(str(d), "m", "max").epoch is None
    cache.entries[str(d)] = [[None], "m", "max", ["garbage"]]
    assert cache.view(str(d), "m", "max").exit_code is None


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_user_text_is_printed_as_text(text: str) -> None:
    from rich.console import Console

    shown = printable(text)
    assert not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in shown)
    console = Console(record=True, width=10_000, file=io.StringIO(), color_system=None)
    console.print(rich_text(text), end="")
    assert console.export_text() == shown  # no markup parsed, nothing dropped


@settings(max_examples=200, deadline=None)
@given(v=st.decimals(min_value=0, max_value=1, places=4), comma=st.booleans())
def test_percent_and_decimal_comma_cells_read_back_exactly(v, comma: bool) -> None:
    pct = f"{v * 100}%"
    plain = str(v)
    if comma:
        pct, plain = pct.replace(".", ","), plain.replace(".", ",")
    warnings: list[str] = []
    assert _metric_cell(pct, "x", warnings) == float(v)
    got = _metric_cell(plain, "x", warnings)
    assert got == float(v) or (got is None and warnings)  # "1,234"-like cells are refused, never guessed
