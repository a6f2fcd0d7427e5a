"""Hyperspectral cubes in the formats instruments export: MATLAB .mat (v5 and v7.3) and ENVI .hdr/.img.

Every file here is written by a real writer (scipy.io.savemat, h5py with MATLAB's v7.3 layout, an ENVI
header plus raw bytes) and read back through the workload's reader, its preflight and its data source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcseg.preflight import run_preflight
from hpcseg.spec import JobSpec, with_absolute_paths
from hpcseg.workloads.hyperspectral.cubes import CubeError, cube_info, open_cube, save_cube


def _cube(h: int = 7, w: int = 5, b: int = 4, dtype: Any = np.float32, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(h, w, b)) * 100).astype(dtype)


def _mat73(path: Path, arrays: dict[str, np.ndarray], chunked: bool = False) -> Path:
    """A v7.3 MAT-file as MATLAB writes it: HDF5 after a 512-byte header block, every array transposed
    (column-major), a MATLAB_class attribute; written here independently of save_cube."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        for name, arr in arrays.items():
            kw = {"chunks": True, "compression": "gzip"} if chunked else {}
            ds = f.create_dataset(name, data=np.ascontiguousarray(arr.T), **kw)
            ds.attrs["MATLAB_class"] = np.bytes_({"float32": "single", "float64": "double"}.get(str(arr.dtype),
                                                                                              "uint16"))
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Tue Dec  1 12:00:00 2026 HDF5 schema "
                 b"1.00 .".ljust(116) + b"\0" * 8 + b"\x00\x02IM")
    return path


def _envi(stem: Path, cube: np.ndarray, interleave: str = "bsq", big: bool = False, offset: int = 0,
          data_suffix: str = ".img", **header: Any) -> Path:
    axes = {"bsq": (2, 0, 1), "bil": (0, 2, 1), "bip": (0, 1, 2)}[interleave]
    code = {"uint8": 1, "int16": 2, "int32": 3, "float32": 4, "float64": 5, "uint16": 12}[str(cube.dtype)]
    h, w, b = cube.shape
    fields = {"samples": w, "lines": h, "bands": b, "header offset": offset, "file type": "ENVI Standard",
              "data type": code, "interleave": interleave, "byte order": int(big), **header}
    text = "ENVI\ndescription = {a test cube,\n  two lines}\n" + "".join(
        f"{k} = {v}\n" for k, v in fields.items() if v is not None)
    text += "wavelength = {" + ",\n ".join(str(900 + 10 * i) for i in range(b)) + "}\n"
    stem.with_suffix(".hdr").write_text(text)
    raw = cube.astype(cube.dtype.newbyteorder(">" if big else "<")).transpose(axes).tobytes()
    stem.with_name(stem.name + data_suffix).write_bytes(b"\xab" * offset + raw)
    return stem.with_suffix(".hdr")


# --------------------------------------------------------------------------------------------- round trips


def test_mat_v5_uncompressed_is_memory_mapped(tmp_path):
    cube = _cube()
    scipy.io.savemat(tmp_path / "a.mat", {"wavenumbers": np.arange(4.0), "cube": cube, "note": "FTIR"})
    got = open_cube(tmp_path / "a.mat")
    assert isinstance(got, np.memmap) and got.shape == (7, 5, 4)
    np.testing.assert_array_equal(np.asarray(got), cube)
    np.testing.assert_array_equal(got[2:5, 1:3], cube[2:5, 1:3])
    assert cube_info(tmp_path / "a.mat").how == "memory-mapped"


def test_mat_v5_compressed_is_loaded(tmp_path):
    cube = _cube(dtype=np.float64)
    scipy.io.savemat(tmp_path / "a.mat", {"cube": cube, "wn": np.arange(4.0)}, do_compression=True)
    np.testing.assert_array_equal(open_cube(tmp_path / "a.mat"), cube)
    assert cube_info(tmp_path / "a.mat").how == "loaded"


@pytest.mark.parametrize("chunked", [False, True])
def test_mat_v73_in_matlab_layout(tmp_path, chunked):
    cube = _cube(9, 6, 5)
    path = _mat73(tmp_path / "a.mat", {"cube": cube, "wn": np.arange(5.0)[None, :]}, chunked=chunked)
    got = open_cube(path)
    assert got.shape == (9, 6, 5)                          # MATLAB's (H, W, bands), not HDF5's (bands, W, H)
    np.testing.assert_array_equal(np.asarray(got), cube)
    np.testing.assert_array_equal(np.asarray(got[3:7, 2:5]), cube[3:7, 2:5])
    assert cube_info(path).how == ("chunked" if chunked else "memory-mapped")


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["bsq", "bil", "bip"]), st.booleans(), st.integers(0, 64),
       st.sampled_from(["float32", "float64", "int16", "uint16", "uint8"]),
       st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 5)))
def test_envi_every_interleave_byte_order_and_offset(interleave, big, offset, dtype, shape):
    import tempfile

    cube = _cube(*shape, dtype=dtype, seed=sum(shape))
    with tempfile.TemporaryDirectory() as d:
        hdr = _envi(Path(d) / "core", cube, interleave, big, offset)
        got = open_cube(hdr)
        assert isinstance(got.base, np.memmap) or isinstance(got, np.memmap)
        assert got.shape == shape and got.dtype == np.dtype(dtype).newbyteorder(">" if big else "<")
        np.testing.assert_array_equal(np.asarray(got), cube)
        del got


@pytest.mark.parametrize("fmt", ["npy", "mat", "mat73", "envi"])
def test_save_cube_round_trips(tmp_path, fmt):
    cube = _cube(8, 3, 6)
    path = save_cube(tmp_path / "c", cube, fmt)
    np.testing.assert_array_equal(np.asarray(open_cube(path)), cube)
    if fmt == "mat":
        np.testing.assert_array_equal(scipy.io.loadmat(path)["cube"], cube)   # what MATLAB's load sees


# --------------------------------------------------------------------------------------------- bad files


def _bad_envi(tmp_path: Path, **kw: Any) -> Path:
    return _envi(tmp_path / "core", _cube(), **kw)


@pytest.mark.parametrize("make,needle", [
    (lambda p: _bad_envi(p, offset=0, lines=9), "bytes, but its header says 9 lines"),
    (lambda p: _bad_envi(p, bands=None), "no 'bands' line"),
    (lambda p: _bad_envi(p, interleave="bsq", **{"data type": 6}), "complex"),
    (lambda p: _bad_envi(p, **{"data type": 7}), "not an ENVI numeric type"),
    (lambda p: _bad_envi(p, **{"byte order": 2}), "byte order = 2"),
    (lambda p: _bad_envi(p, samples="five"), "'samples = five' is not a whole number"),
    (lambda p: _bad_envi(p, data_suffix=".tiff"), "no data file beside the header"),
    (lambda p: _write(p / "core.hdr", b"samples = 3\n"), "not an ENVI header"),
    (lambda p: scipy.io.savemat(p / "core.mat", {"a": _cube(), "b": _cube()}) or p / "core.mat", "2 3-D variables"),
    (lambda p: scipy.io.savemat(p / "core.mat", {"wn": np.arange(3.0)}) or p / "core.mat", "no 3-D numeric"),
    (lambda p: _write(p / "core.mat", b"\0" * 200), "not a MATLAB v5/v7 or v7.3"),
    (lambda p: scipy.io.savemat(p / "core.mat", {"c": _cube() + 1j}) or p / "core.mat", "complex"),
    (lambda p: _truncated_mat(p), "truncated"),
    (lambda p: _write(p / "core.npy", b""), "empty file"),
])
def test_bad_cubes_are_one_line_naming_the_file(tmp_path, make, needle):
    path = make(tmp_path)
    with pytest.raises(CubeError) as info:
        open_cube(path)
    message = info.value.message
    assert needle in message and "\n" not in message
    assert message.startswith(str(path)) or message.startswith(str(tmp_path / "core.img"))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated_mat(p: Path) -> Path:
    scipy.io.savemat(p / "core.mat", {"cube": _cube(30, 30, 8)})
    data = (p / "core.mat").read_bytes()
    (p / "core.mat").write_bytes(data[: len(data) // 2])
    return p / "core.mat"


# --------------------------------------------------------------------------------------------- preflight, source


def _spec(root: Path, channels: int = 16) -> JobSpec:
    return with_absolute_paths(JobSpec.model_validate({
        "name": "t",
        "workload": {"task": "multiclass_segmentation",
                     "dataset": {"root": str(root), "layout": "hyperspectral", "image_size": 16, "channels": channels,
                                 "num_classes": 8},
                     "models": [{"name": "unet", "arch": "unet"}]},
        "training": {"epochs": 1, "batch_size": 2, "lr": 1e-3},
        "resources": {"gpus": 0, "cpus": 1, "memory": "1G", "walltime": "00:30:00"},
        "container": {"runtime": "none"},
        "collection": {"metric": "val_miou"},
    }))


def _mixed(root: Path) -> Path:
    """Six synthetic cores, then cores 1..3 rewritten as v5 .mat, v7.3 .mat and ENVI."""
    from hpcseg.workloads.hyperspectral.synth import make_hyperspectral

    make_hyperspectral(root, n_cores=6, size=32, bands=16, seed=3)
    for i, fmt in ((1, "mat"), (2, "mat73"), (3, "envi")):
        npy = root / "cores" / f"core_{i:03d}.npy"
        save_cube(npy.with_suffix(""), np.load(npy), fmt)
        npy.unlink()
    return root


def test_preflight_accepts_mixed_formats_without_stray_warnings(tmp_path):
    root = _mixed(tmp_path / "h")
    assert sorted(p.suffix for p in (root / "cores").iterdir()) == [".hdr", ".img", ".mat", ".mat", ".npy",
                                                                   ".npy", ".npy"]
    assert run_preflight(_spec(root)) == []
    problems = run_preflight(_spec(root, channels=12))
    assert len(problems) == 1 and "6 cubes with 16 bands" in problems[0].message


def test_preflight_names_bad_headers_and_mismatched_label_maps(tmp_path):
    root = _mixed(tmp_path / "h")
    hdr = root / "cores" / "core_003.hdr"
    hdr.write_text(hdr.read_text().replace("lines = 32", "lines = 40"))
    np.save(root / "labels" / "core_002.npy", np.zeros((31, 32), np.int64))
    (root / "cores" / "core_004.mat").write_bytes(b"MATLAB 5.0 MAT-file".ljust(200, b"\0"))
    problems = [p for p in run_preflight(_spec(root)) if p.severity == "error"]
    text = "\n".join(f"{p.where}: {p.message}" for p in problems)
    assert any(p.where.endswith("core_003.hdr") and "header says 40 lines" in p.message for p in problems), text
    assert any(p.where.endswith("core_002.npy") and "31x32" in p.message and "core_002.mat" in p.message
               for p in problems), text
    assert any("core_004" in p.message and "2 files share the name" in p.message for p in problems), text
    assert all("\n" not in p.message for p in problems)


def test_source_reads_every_format_like_npy(tmp_path):
    """The same cores as .npy and in the instrument formats give the very same batches."""
    import torch

    from hpcseg.workloads.hyperspectral.synth import make_hyperspectral
    from hpcseg.workloads.hyperspectral.train import build

    plain = make_hyperspectral(tmp_path / "npy", n_cores=6, size=32, bands=16, seed=3)["path"]
    mixed = _mixed(tmp_path / "mixed")
    out = []
    for root in (plain, mixed):
        src = build(_spec(Path(root)), torch.device("cpu"))
        src.prepare(np.arange(4))
        out.append([(x.clone(), y.clone()) for x, y in src.batches(np.arange(6), 4, train=True, epoch=1, seed=0)])
    assert len(out[0]) == len(out[1]) > 0
    for (xa, ya), (xb, yb) in zip(*out, strict=True):
        torch.testing.assert_close(xa, xb)
        assert torch.equal(ya, yb)
