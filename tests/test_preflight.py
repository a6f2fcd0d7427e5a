"""Preflight on real files: each broken input yields exactly the problem that names it, and nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import yaml
from PIL import Image

from hpcseg.cli import main
from hpcseg.preflight import Problem, preflight, run_preflight
from hpcseg.spec import JobSpec, with_absolute_paths

try:  # tests/ as a package (rootdir on sys.path) or as a plain folder (pytest puts tests/ on sys.path)
    from tests.datasets import (
        HAM_METADATA,
        save_image,
        write_ham10000,
        write_hyperspectral,
        write_marida,
        write_microbead,
    )
except ImportError:  # pragma: no cover - depends on how pytest was started
    from datasets import (
        HAM_METADATA,
        save_image,
        write_ham10000,
        write_hyperspectral,
        write_marida,
        write_microbead,
    )

REPO = Path(__file__).resolve().parent.parent
JOBS = REPO / "jobs"


# --------------------------------------------------------------------------------------------- helpers


def job_doc(root: Path, layout: str = "microbead", **dataset: Any) -> dict[str, Any]:
    """A small valid job: no container, one model, tiny resources; dataset fields overridable."""
    task = {"ham10000": "classification", "hyperspectral": "multiclass_segmentation"}.get(
        layout, "binary_segmentation")
    ds: dict[str, Any] = {"root": str(root), "layout": layout, "image_size": 32, "channels": 1}
    ds.update(dataset)
    return {
        "name": "t",
        "workload": {"task": task, "dataset": ds, "models": [{"name": "unet", "arch": "unet"}]},
        "training": {"epochs": 1, "batch_size": 1, "lr": 1e-3},
        "resources": {"gpus": 0, "cpus": 1, "memory": "1G", "walltime": "00:30:00"},
        "container": {"runtime": "none"},
        "collection": {"metric": {"classification": "val_accuracy", "multiclass_segmentation": "val_miou"}.get(
            task, "val_jaccard")},
    }


def spec_of(doc: dict[str, Any]) -> JobSpec:
    return with_absolute_paths(JobSpec.model_validate(doc))


def check(root: Path, layout: str = "microbead", **dataset: Any) -> list[Problem]:
    return run_preflight(spec_of(job_doc(root, layout, **dataset)))


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]


def write_job(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.fixture
def beads(tmp_path: Path) -> Path:
    return write_microbead(tmp_path / "beads", n=4)


# --------------------------------------------------------------------------------------------- microbead


def test_clean_microbead_passes(beads: Path) -> None:
    result = preflight(spec_of(job_doc(beads, expected_count=4)))
    assert result.problems == []
    assert result.checked["pairs"] == 4 and result.checked["files_read"] == 8


def test_missing_root(tmp_path: Path) -> None:
    p = only(check(tmp_path / "nowhere"))
    assert p.where == str(tmp_path / "nowhere") and "not found" in p.message and p.severity == "error"


def test_root_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert "not a folder" in only(check(tmp_path / "f")).message


def test_missing_masks_folder(beads: Path) -> None:
    for f in (beads / "masks").iterdir():
        f.unlink()
    (beads / "masks").rmdir()
    p = only(check(beads))
    assert p.where == str(beads / "masks") and "folder missing" in p.message


def test_count_mismatch_names_both_numbers(beads: Path) -> None:
    p = only(check(beads, expected_count=73))
    assert p.where == str(beads / "images")
    assert "4 images" in p.message and "73" in p.message


def test_image_without_mask(beads: Path) -> None:
    (beads / "masks" / "bead_002.png").unlink()
    p = only(check(beads))
    assert "bead_002.png" in p.message and "no mask" in p.message and p.where == str(beads / "masks")


def test_mask_without_image(beads: Path) -> None:
    (beads / "images" / "bead_001.png").unlink()
    p = only(check(beads))
    assert "bead_001.png" in p.message and "no image" in p.message and p.where == str(beads / "images")


def test_many_orphans_are_capped(tmp_path: Path) -> None:
    root = write_microbead(tmp_path / "b", n=14)
    for i in range(13):
        (root / "masks" / f"bead_{i:03d}.png").unlink()
    p = only(check(root))
    assert "13 images" in p.message and "bead_009.png" in p.message
    assert "bead_010.png" not in p.message and "and 3 more" in p.message


def test_masks_may_have_another_extension(tmp_path: Path) -> None:
    root = write_microbead(tmp_path / "b", n=3, mask_format="tif")
    assert check(root) == []


@pytest.mark.parametrize("content", [b"", b"this is not a png\n", None], ids=["empty", "text", "truncated"])
def test_undecodable_image_is_named(beads: Path, content: bytes | None) -> None:
    bad = beads / "images" / "bead_003.png"
    content = bad.read_bytes()[:60] if content is None else content
    bad.write_bytes(content)
    p = only(check(beads))
    assert p.where == str(bad) and p.severity == "error"
    assert ("empty file" in p.message) == (content == b"")


def test_undecodable_mask_is_named(beads: Path) -> None:
    bad = beads / "masks" / "bead_000.png"
    bad.write_text("<html>404</html>")
    p = only(check(beads))
    assert p.where == str(bad) and "cannot decode" in p.message


def test_non_binary_mask_lists_values(beads: Path) -> None:
    path = beads / "masks" / "bead_001.png"
    mask = np.asarray(Image.open(path)).copy()
    mask[0, :3] = 3
    Image.fromarray(mask).save(path)
    p = only(check(beads))
    assert p.where == str(path) and "values 0, 3, 255" in p.message


def test_two_levels_without_zero_background(beads: Path) -> None:
    path = beads / "masks" / "bead_001.png"
    mask = np.asarray(Image.open(path)).copy()
    Image.fromarray(np.where(mask > 0, 200, 100).astype(np.uint8)).save(path)
    p = only(check(beads))
    assert p.where == str(path) and "100, 200" in p.message


@pytest.mark.parametrize("values", [(0, 1), (0, 255), (0, 65535)])
def test_binary_mask_levels_accepted(tmp_path: Path, values: tuple[int, int]) -> None:
    root = write_microbead(tmp_path / "b", n=2, mask_values=values, mask_format="tif")
    assert check(root) == []


def test_image_mask_size_mismatch(beads: Path) -> None:
    save_image(beads / "masks" / "bead_002.png", np.zeros((40, 32), np.uint8) + np.eye(40, 32, dtype=np.uint8))
    p = only(check(beads))
    assert p.where == str(beads / "masks" / "bead_002.png")
    assert "40x32" in p.message and "32x32" in p.message and "bead_002.png" in p.message


def test_mixed_image_sizes_are_only_a_warning(tmp_path: Path) -> None:
    root = write_microbead(tmp_path / "b", n=2, size=32)
    write_microbead(root, size=48, names=["big_a", "big_b", "big_c"])
    p = only(check(root))
    assert p.severity == "warning" and "2 sizes" in p.message and "48x48: 3" in p.message


def test_16bit_tiff_images_with_8bit_png_masks(tmp_path: Path) -> None:
    root = write_microbead(tmp_path / "b", n=3, bit_depth=16, image_format="tif", mask_format="png")
    assert tifffile.imread(root / "images" / "bead_000.tif").dtype == np.uint16
    assert check(root) == []


def test_rgb_images_accepted_for_grayscale_job(tmp_path: Path) -> None:
    root = write_microbead(tmp_path / "b", n=2, rgb=True)
    assert check(root, channels=1) == []


def test_two_channel_images_rejected(beads: Path) -> None:
    gray_alpha = np.zeros((32, 32, 2), np.uint8)
    Image.fromarray(gray_alpha, mode="LA").save(beads / "images" / "bead_000.png")
    p = only(check(beads))
    assert "2 channel" in p.message and "bead_000.png" in p.message


def test_names_with_spaces_and_non_ascii(tmp_path: Path) -> None:
    names = ["bead 01 µ", "Zellkern_ä", "顕微鏡 2"]
    root = write_microbead(tmp_path / "dir with space ü", names=names)
    assert check(root) == []
    (root / "masks" / "bead 01 µ.png").unlink()
    (root / "images" / "顕微鏡 2.png").write_bytes(b"")
    problems = check(root)
    assert len(problems) == 2
    assert "bead 01 µ.png" in problems[0].message
    assert problems[1].where.endswith("顕微鏡 2.png")


def test_duplicate_stems_are_ambiguous(beads: Path) -> None:
    save_image(beads / "images" / "bead_000.tif", np.zeros((32, 32), np.uint8))
    p = only(check(beads))
    assert "bead_000.png" in p.message and "bead_000.tif" in p.message


def test_jpeg_masks_are_not_read(beads: Path) -> None:
    mask = beads / "masks" / "bead_001.png"
    Image.open(mask).convert("L").save(beads / "masks" / "bead_001.jpg")
    mask.unlink()
    ignored, orphan = check(beads)
    assert ignored.severity == "warning" and "bead_001.jpg" in ignored.message
    assert orphan.severity == "error" and "no mask" in orphan.message and "bead_001.png" in orphan.message


def test_non_image_files_warned(beads: Path) -> None:
    (beads / "images" / "notes.txt").write_text("hi")
    p = only(check(beads))
    assert p.severity == "warning" and "notes.txt" in p.message


def test_several_problems_listed_in_a_stable_order(tmp_path: Path) -> None:
    root = write_microbead(tmp_path / "b", n=8)
    (root / "masks" / "bead_001.png").unlink()
    (root / "images" / "bead_004.png").write_bytes(b"")
    (root / "images" / "bead_006.png").write_text("nope")
    path = root / "masks" / "bead_007.png"
    Image.fromarray(np.arange(32 * 32, dtype=np.uint8).reshape(32, 32) % 5).save(path)
    doc = job_doc(root, expected_count=9)
    doc["workload"]["models"][0]["weights"] = str(tmp_path / "w.pth")
    doc["resources"]["walltime"] = "00:01:00"
    first = run_preflight(spec_of(doc))
    assert [(p.check, Path(p.where).name, p.severity) for p in first] == [
        ("dataset", "images", "error"),        # 8 images, expected 9
        ("dataset", "masks", "error"),         # bead_001 has no mask
        ("dataset", "bead_004.png", "error"),  # empty
        ("dataset", "bead_006.png", "error"),  # not a png: file order, not message order
        ("dataset", "bead_007.png", "error"),  # values 0..4
        ("weights", "w.pth", "error"),
        ("resources", "resources.walltime", "warning"),
    ]
    assert run_preflight(spec_of(doc)) == first


# --------------------------------------------------------------------------------------------- container, weights


def container_doc(root: Path, image: Path, runtime: str = "singularity") -> dict[str, Any]:
    doc = job_doc(root)
    doc["container"] = {"runtime": runtime, "image": str(image)}
    return doc


def test_missing_container_image_and_runtime(beads: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    image = tmp_path / "hpcseg.sif"
    image_problem, runtime_problem = run_preflight(spec_of(container_doc(beads, image)))
    assert image_problem.where == str(image) and "docs/containers.md" in image_problem.message
    assert "singularity not found on PATH" in runtime_problem.message
    assert "container.runtime=none" in runtime_problem.message


def test_container_present_passes_and_other_runtime_is_suggested(
        beads: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "apptainer"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    image = tmp_path / "hpcseg.sif"
    image.write_bytes(b"SIF")
    assert run_preflight(spec_of(container_doc(beads, image, "apptainer"))) == []
    p = only(run_preflight(spec_of(container_doc(beads, image, "singularity"))))
    assert "--set container.runtime=apptainer" in p.message


def test_weights_missing_empty_or_folder(beads: Path, tmp_path: Path) -> None:
    doc = job_doc(beads)
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "dir.pth").mkdir()
    (tmp_path / "junk.pth").write_bytes(b"\x80weights")
    doc["workload"]["models"] = [
        {"name": f"m{i}", "arch": "unet" if f == "junk.pth" else "resnet50", "weights": str(tmp_path / f)}
        for i, f in enumerate(["missing.pth", "empty.pth", "dir.pth", "junk.pth"])
    ]
    problems = run_preflight(spec_of(doc))
    assert [Path(p.where).name for p in problems] == ["missing.pth", "empty.pth", "dir.pth", "junk.pth"]
    assert all(p.check == "weights" and "no internet" in p.message for p in problems[:3])
    # Every arch's file is opened: bytes that are no checkpoint are refused, naming the file.
    assert "cannot read the weights of model m3" in problems[3].message
    doc["workload"]["models"] = [{"name": "m", "arch": "resnet50", "weights": str(tmp_path / "junk.pth")}]
    (problem,) = run_preflight(spec_of(doc))
    assert problem.check == "weights" and "cannot read the weights of model m" in problem.message


@pytest.mark.parametrize("wrapped", [False, True])
def test_unet_weights_must_fit_all_but_the_output_layer(beads: Path, tmp_path: Path, wrapped: bool) -> None:
    """A U-Net file: its own checkpoint fits (even with another class count); one of other widths is
    refused before the queue, naming the first tensor that does not fit, unless partial is allowed."""
    import torch

    from hpcseg.train.models import build_model

    doc = job_doc(beads)
    spec = spec_of(doc)
    model = spec.workload.models[0]
    own = build_model(spec, model).state_dict()
    if wrapped:  # hpcseg's own checkpoint, saved from DDP
        torch.save({"model": {f"module.{k}": v for k, v in own.items()}, "epoch": 3}, tmp_path / "own.pth")
    else:
        torch.save(own, tmp_path / "own.pth")
    doc["workload"]["models"][0]["weights"] = str(tmp_path / "own.pth")
    assert run_preflight(spec_of(doc)) == []
    doc["workload"]["dataset"]["num_classes"] = 3  # another head: the output layer alone is replaced
    doc["workload"]["task"] = "multiclass_segmentation"
    assert [p for p in run_preflight(spec_of(doc)) if p.check == "weights"] == []

    doc = job_doc(beads)
    wider = spec_of(doc).workload.models[0].model_copy(update={"channels": [c * 2 for c in model.channels]})
    torch.save(build_model(spec, wider).state_dict(), tmp_path / "wider.pth")
    doc["workload"]["models"][0]["weights"] = str(tmp_path / "wider.pth")
    (problem,) = run_preflight(spec_of(doc))
    assert problem.check == "weights" and Path(problem.where).name == "wider.pth"
    assert "another architecture or other channels" in problem.message and "\n" not in problem.message
    doc["workload"]["models"][0]["allow_partial_weights"] = True  # nothing fits: refused all the same
    (problem,) = run_preflight(spec_of(doc))
    assert "no tensor of model unet (unet) is in this file with its shape" in problem.message

    partial = {k: v for k, v in own.items() if not k.startswith("decoders.0.")}  # a decoder block lost
    torch.save(partial, tmp_path / "partial.pth")
    doc = job_doc(beads)
    doc["workload"]["models"][0]["weights"] = str(tmp_path / "partial.pth")
    (problem,) = run_preflight(spec_of(doc))
    assert "missing decoders.0." in problem.message
    doc["workload"]["models"][0]["allow_partial_weights"] = True
    assert run_preflight(spec_of(doc)) == []


# --------------------------------------------------------------------------------------------- resources


def test_resource_warnings(beads: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "singularity").write_text("#!/bin/sh\n")
    (bin_dir / "singularity").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    (tmp_path / "c.sif").write_bytes(b"SIF")
    doc = container_doc(beads, tmp_path / "c.sif")
    doc["container"]["gpu"] = False
    doc["resources"].update(gpus=1, cpus=300, walltime="00:04:59")
    doc["training"]["batch_size"] = 16
    problems = run_preflight(spec_of(doc))
    assert all(p.severity == "warning" for p in problems)
    assert [p.where for p in problems] == ["container.gpu", "resources.cpus", "resources.walltime",
                                           "training.batch_size"]


# --------------------------------------------------------------------------------------------- other layouts


def test_marida_clean_and_band_first(tmp_path: Path) -> None:
    assert check(write_marida(tmp_path / "a", n=3), "marida", channels=11, expected_count=3) == []
    assert check(write_marida(tmp_path / "b", n=2, band_axis="first"), "marida", channels=11) == []


def test_marida_problems(tmp_path: Path) -> None:
    root = write_marida(tmp_path / "m", n=4)
    scene = next((root / "patches").iterdir())
    tiles = sorted(p for p in scene.glob("*.tif") if not p.stem.endswith(("_cl", "_conf")))
    (scene / f"{tiles[0].stem}_cl.tif").unlink()
    tifffile.imwrite(tiles[1], np.zeros((32, 32, 5), np.float32), photometric="minisblack")
    tifffile.imwrite(scene / f"{tiles[2].stem}_cl.tif", np.full((32, 32), 17, np.uint8))
    problems = check(root, "marida", channels=11)
    assert len(problems) == 3, problems
    assert tiles[0].name in problems[0].message and "no label" in problems[0].message
    assert problems[1].where == str(tiles[1]) and "11 bands" in problems[1].message
    assert "17" in problems[2].message and problems[2].where.endswith(f"{tiles[2].stem}_cl.tif")


def test_marida_names_must_be_unique_across_scenes(tmp_path: Path) -> None:
    root = write_marida(tmp_path / "m", n=2, with_conf=False)
    scene = next((root / "patches").iterdir())
    other = root / "patches" / "S2_other"
    other.mkdir()
    for f in scene.glob("*_0*.tif"):
        (other / f.name).write_bytes(f.read_bytes())
    p = only(check(root, "marida", channels=11))
    assert "repeat" in p.message and f"{scene.name}_0" in p.message


def test_hyperspectral_clean_and_problems(tmp_path: Path) -> None:
    root = write_hyperspectral(tmp_path / "h", n=3, size=40, bands=16)
    assert check(root, "hyperspectral", channels=16, num_classes=8) == []
    assert "16 bands" in only(check(root, "hyperspectral", channels=128, num_classes=8)).message
    (root / "labels" / "core_01.npy").unlink()
    np.save(root / "labels" / "core_02.npy", np.full((40, 40), 9, np.int16))
    problems = check(root, "hyperspectral", channels=16, num_classes=8)
    assert "core_01.npy" in problems[0].message and "no label map" in problems[0].message
    assert problems[1].where.endswith("core_02.npy") and "-1..7" in problems[1].message
    assert len(errors(problems)) == 2


def test_ham10000_clean_and_problems(tmp_path: Path) -> None:
    classes = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    kw: dict[str, Any] = {"channels": 3, "num_classes": 7, "class_names": classes, "metadata": HAM_METADATA}
    root = write_ham10000(tmp_path / "ham", n=14)
    assert check(root, "ham10000", expected_count=14, **kw) == []
    meta = root / HAM_METADATA
    lines = meta.read_text().splitlines()
    lines.append(lines[1].replace("ISIC_0024306", "ISIC_0099999").replace(",akiec,", ",melanoma,"))
    meta.write_text("\n".join(lines) + "\n")
    (root / "images" / "ISIC_0024307.jpg").write_bytes(b"")
    problems = check(root, "ham10000", **kw)
    assert len(problems) == 3, problems
    assert "ISIC_0099999.jpg" in problems[0].message
    assert "melanoma (1 rows)" in problems[1].message
    assert problems[2].where.endswith("ISIC_0024307.jpg")
    meta.write_text("image,label\nISIC_0024306,nv\n")
    problems = check(root, "ham10000", **kw)
    assert [Path(p.where).name for p in problems] == [HAM_METADATA, "ISIC_0024307.jpg"]
    assert "lesion_id, image_id, dx" in problems[0].message


# --------------------------------------------------------------------------------------------- CLI


def test_cli_exit_codes_and_json(beads: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = write_job(tmp_path, job_doc(beads, expected_count=4))
    assert main(["check", str(job)]) == 0
    assert capsys.readouterr().out.strip().endswith("all checks passed")

    assert main(["check", str(job), "--set", "resources.walltime=00:01:00"]) == 0  # a warning alone
    out = capsys.readouterr().out
    assert "resources.walltime" in out and "1 problem: 0 errors, 1 warning" in out

    (beads / "masks" / "bead_003.png").unlink()
    assert main(["check", str(job)]) == 2
    out = capsys.readouterr().out
    assert "bead_003.png" in out and out.strip().endswith("1 problem: 1 error, 0 warnings")

    assert main(["check", str(job), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["job"] == "t" and report["ok"] is False
    assert report["checked"]["images"] == 4 and report["checked"]["masks"] == 3
    assert [p["check"] for p in report["problems"]] == ["dataset"]
    assert set(report["problems"][0]) == {"check", "where", "message", "severity"}


def test_cli_bad_job_file_is_exit_2(beads: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = job_doc(beads)
    doc["training"]["learning_rate"] = 0.1
    assert main(["check", str(write_job(tmp_path, doc))]) == 2
    assert "training.learning_rate: unknown key" in capsys.readouterr().err


def test_import_does_not_pull_in_torch() -> None:
    code = "import sys, hpcseg.preflight; print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------- shipped jobs

SHIPPED = {
    "microbead_optimized": (lambda r: write_microbead(r, n=10), ["--set", "workload.dataset.expected_count=10"]),
    "microbead_mitochondria": (lambda r: write_microbead(r, n=10), ["--set", "workload.dataset.expected_count=10"]),
    "marida_se_unet": (lambda r: write_marida(r, n=6), []),
    "marida_attention_unet": (lambda r: write_marida(r, n=6), []),
    "marida_multiclass": (lambda r: write_marida(r, n=6), []),
    "ssmu_net_overnight": (lambda r: write_hyperspectral(r, n=3, size=40, bands=16), []),
    "ham10000_comparison": (lambda r: write_ham10000(r, n=14), []),
}


def test_every_shipped_job_is_covered() -> None:
    assert {p.stem for p in JOBS.glob("*.yaml")} == set(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_job_quick_profile_passes(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    make, extra = SHIPPED[name]
    root = make(tmp_path / "data")
    argv = ["check", str(JOBS / f"{name}.yaml"), "--profile", "quick", "--json",
            "--set", f"workload.dataset.root={root}", *extra]
    rc = main(argv)
    report = json.loads(capsys.readouterr().out)
    assert report["problems"] == [] and rc == 0
    assert report["checked"]["files_read"] > 0


def test_ham10000_full_profile_reports_missing_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    root = write_ham10000(tmp_path / "data", n=14)
    argv = ["check", str(JOBS / "ham10000_comparison.yaml"), "--json", "--set", f"workload.dataset.root={root}",
            "--set", "workload.dataset.expected_count=14", "--set", "container.runtime=none"]
    assert main(argv) == 2
    report = json.loads(capsys.readouterr().out)
    weights = [p for p in report["problems"] if p["check"] == "weights"]
    assert [Path(p["where"]).name for p in weights] == [
        "resnet50_imagenet.pth", "efficientnet_b3_imagenet.pth", "densenet121_imagenet.pth", "vit_b_16_imagenet.pth"]
    assert all(Path(p["where"]).parent == tmp_path / "weights" for p in weights)
    assert [p for p in report["problems"] if p["severity"] == "error"] == weights
