"""hpcseg report: one self-contained HTML file, escaped, complete, and rendered by a real headless Chromium.

The run folders are real ones (create_run + history.csv/exit_code in the documented formats, as in
test_collect.py), with workload evaluation outputs under the eval/ and sweep/ convention of
docs/formats.md. The browser test reads the rendered DOM back and screenshots the page.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpcseg.cli import main
from hpcseg.runs import Run
from tests.test_collect import baseline_run, make_run, optimized_run, write_task

REPO = Path(__file__).resolve().parent.parent
HOSTILE = '<img src=x onerror="document.title=1">'
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--mute-audio"]


def _png(path: Path, seed: int, size: tuple[int, int] = (120, 90)) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(path)


def eval_outputs(run: Run) -> dict[str, int]:
    """What the workloads would write: per-task eval figures and tables, a run-level sweep leaderboard."""
    d = run.dir / "tasks" / "unet" / "fold_0" / "eval"
    _png(d / "confusion_matrix.png", 1)
    _png(d / "reliability.png", 2)
    (d / "per_class.csv").write_text("class,iou\nbead,0.61\nbackground,0.97\n")
    _png(run.dir / "tasks" / "attention_unet" / "fold_0" / "eval" / "gradcam" / "grid.png", 3)
    _png(run.dir / "sweep" / "leaderboard.png", 4)
    (run.dir / "sweep" / "leaderboard.csv").write_text(f"rank,model,val_jaccard\n1,{HOSTILE},0.65\n2,unet,0.6\n")
    (run.dir / "eval" / "notes.txt").parent.mkdir(exist_ok=True)
    (run.dir / "eval" / "notes.txt").write_text("not a figure or table: ignored")
    return {"images": 4, "tables": 2}


@pytest.fixture
def reported(tmp_path):
    """A run with three models, a baseline run, a Keras baseline with a hostile name, eval outputs."""
    root = tmp_path / "runs"
    base = baseline_run(root)
    run = optimized_run(root)
    expected = eval_outputs(run)
    run.update(overrides=[f"training.lr={HOSTILE}"])
    out = tmp_path / "out" / "report.html"
    assert main(["report", str(run.dir), "--against", str(base.dir), "-o", str(out)]) == 0
    return run, out, expected


# --------------------------------------------------------------------------------------------- content


def test_report_is_self_contained_and_complete(reported):
    run, out, expected = reported
    html = out.read_text()
    # Offline: nothing fetched from anywhere, no script at all; every image is inline data.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html, re.I)
    assert "@import" not in html and "url(" not in html and "<script" not in html.lower()
    srcs = re.findall(r'<img src="([^"]*)"', html)
    assert len(srcs) == 4 + expected["images"]  # 3 learning curves + comparison + eval figures
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    # Tables: CV, comparison, every task, plus each eval CSV.
    assert html.count("<table") == 3 + expected["tables"]
    for needle in ("attention_unet: baseline 0.1427 → 0.0 (collapsed); now 0.6512: 4.6× improvement",
                   "unet 0.5 → 0.6: 1.2× improvement", "baseline-collapsed", "@media print",
                   "confusion matrix", "sweep/leaderboard.csv", "tasks/attention_unet/fold_0/eval/gradcam/grid.png",
                   "hard IoU", run.manifest["git"]["commit"] or "unknown", "scheduler job ids",
                   "last task ended", "3 of 3 task(s) ended"):
        assert needle in html, needle
    assert "notes.txt" not in html


def test_user_text_is_escaped(reported):
    _, out, _ = reported
    html = out.read_text()
    assert HOSTILE not in html  # neither from the CSV cell nor from the overrides
    assert html.count("&lt;img src=x onerror=") >= 2


def test_report_escapes_names_from_a_keras_baseline(tmp_path):
    """Baseline model names come from file names, which nothing validates: they are data in the report."""
    run = optimized_run(tmp_path / "runs")
    keras = tmp_path / "keras"
    keras.mkdir()
    header = "epoch,jacard_coef,loss,val_jacard_coef,val_loss\n"
    (keras / f"{HOSTILE.replace('/', '')}_history.csv").write_text(header + "0,0.2,0.8,0.2,0.8\n1,0.3,0.7,0.3,0.7\n")
    (keras / "unet_history.csv").write_text(header + "0,0.2,0.8,0.2,0.8\n1,0.4,0.6,0.4,0.6\n")
    out = tmp_path / "r.html"
    assert main(["report", str(run.dir), "--against", str(keras), "-o", str(out)]) == 0
    html = out.read_text()
    assert "<img src=x" not in html and "&lt;img src=x" in html
    assert "soft Jaccard" in html  # the comparison plot's footnote names the Keras baseline's definition


def test_collect_writes_the_report_too(tmp_path, capsys):
    root = tmp_path / "runs"
    run = make_run(root)
    write_task(run, "unet", jaccard=[0.4])  # one epoch: still a curve with a visible point
    assert main(["collect", str(run.dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    report = Path(out["files"]["report"])
    assert report == run.dir / "report.html" and report.is_file()
    html = report.read_text()
    assert "No baseline" in html and html.count("<img") == 2


def test_report_bad_inputs_one_line_exit_2(tmp_path, capsys):
    run = optimized_run(tmp_path / "runs")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    capsys.readouterr()
    assert main(["report", str(run.dir), "-o", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(folder) in err[0] and "-o" in err[0]
    assert not (folder / "report.html").exists()
    assert main(["report", "no_such_run", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_report_does_not_import_torch(tmp_path):
    run = optimized_run(tmp_path / "runs")
    code = ("import sys; from hpcseg.cli import main; rc = main(['report', sys.argv[1]]); "
            "print('HEAVY=' + ','.join(m for m in ('torch', 'monai', 'torchmetrics') if m in sys.modules)); "
            "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(run.dir)], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY=\n" in proc.stdout or proc.stdout.rstrip().endswith("HEAVY=")
    assert (run.dir / "report.html").is_file()


# --------------------------------------------------------------------------------------------- browser


def chromium() -> str:
    """The browser, or a skip with the reason (a loud failure under CI=true, where run-tests.sh installs it)."""
    found = os.environ.get("HPCSEG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "headless chromium not found (scripts/browser.sh up installs Debian's chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


# Appended to a copy of the report (the report itself has no script): after the load event (every image
# loaded or failed) writes what the browser rendered into the DOM, where --dump-dom reads it back.
PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var r = {images: imgs.length,
           decoded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
           widths: imgs.map(function (i) { return i.naturalWidth; }),
           tables: document.querySelectorAll("table").length,
           rows: document.querySelectorAll("tbody tr").length,
           scripts: document.scripts.length - 1,
           title: document.title,
           headline: (document.getElementById("headline") || {}).textContent || ""};
  var pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(r);
  document.body.appendChild(pre);
});
</script>"""


def test_missing_browser_skips_with_reason_or_fails_under_ci(monkeypatch, tmp_path):
    monkeypatch.delenv("HPCSEG_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no chromium on it
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="scripts/browser.sh up"):
        chromium()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="headless chromium not found"):
        chromium()


def _chromium(browser: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120)


def test_report_renders_in_headless_chromium(reported, tmp_path):
    browser = chromium()
    _, out, expected = reported
    html = out.read_text()
    probe = out.with_name("probe.html")
    probe.write_text(html.replace("</body>", PROBE + "\n</body>"))
    proc = _chromium(browser, tmp_path, "--virtual-time-budget=15000", "--dump-dom", probe.as_uri())
    m = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"no probe result in the DOM (exit {proc.returncode}): {proc.stderr[-800:]}"
    r = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    n_img = 4 + expected["images"]
    assert r["images"] == n_img and r["decoded"] == n_img, r
    assert min(r["widths"]) >= 100, r  # the plots decoded at their real size, not a broken-image icon
    assert r["tables"] == 3 + expected["tables"] and r["rows"] >= 3 + 3 + 3 + 2 + 2, r
    assert r["scripts"] == 0 and r["title"].endswith("hpcseg report"), r  # the hostile cell did not run
    assert "4.6× improvement" in r["headline"] and "unet 0.5 → 0.6" in r["headline"]

    shot = tmp_path / "shot.png"
    proc = _chromium(browser, tmp_path, "--window-size=1280,1800", f"--screenshot={shot}", out.as_uri())
    assert shot.is_file(), proc.stderr[-800:]
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert img.shape == (1800, 1280)
    assert img.std() > 25, f"screenshot looks blank (std {img.std():.1f})"
    assert (img < 200).mean() > 0.05, "screenshot is almost all white"


def test_report_prints_to_pdf(reported, tmp_path):
    """Readable when printed: Chromium's print path lays it out on several pages, nothing cut to one."""
    browser = chromium()
    _, out, _ = reported
    pdf = tmp_path / "report.pdf"
    proc = _chromium(browser, tmp_path, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", out.as_uri())
    assert pdf.is_file(), proc.stderr[-800:]
    data = pdf.read_bytes()
    assert data[:5] == b"%PDF-" and len(data) > 100_000
    pages = len(re.findall(rb"/Type\s*/Page[^s]", data))
    assert pages >= 3, pages
