"""Hyperspectral cubes as instruments export them: NumPy .npy, MATLAB .mat (v5 and v7.3) and ENVI .hdr/.img.

Every reader returns an (H, W, bands) array-like without reading the pixels: cubes run to gigabytes and a
training patch needs only its rows. Where the bytes lie uncompressed in the file (.npy, an uncompressed v5
.mat variable, a contiguous v7.3 dataset, every ENVI file) the result is a ``numpy.memmap`` view; a
compressed .mat variable cannot be mapped, so v5 loads it (scipy) and v7.3 reads only the chunks a slice
touches (h5py). :func:`cube_info` reads headers only, for preflight.

Layout conventions handled here, not left to the user:

* MATLAB stores arrays column-major. A v5 variable is mapped with ``order="F"``; a v7.3 file is HDF5 and
  keeps MATLAB's (H, W, bands) as an HDF5 dataset of shape (bands, W, H), so it is transposed back.
* ENVI's ``interleave`` is bsq (bands, lines, samples), bil (lines, bands, samples) or bip (lines, samples,
  bands); ``byte order`` 0 is little-endian, 1 big-endian; ``header offset`` bytes precede the data.

A .mat file must hold exactly one 3-D numeric variable (other variables, e.g. wavenumbers, are ignored).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpcseg.errors import HpcsegError

#: Cube files in cores/: an ENVI cube is named by its header; the data file is found beside it.
CUBE_SUFFIXES = (".npy", ".mat", ".hdr")
ENVI_DATA_SUFFIXES = (".img", ".dat", ".raw", ".bsq", ".bil", ".bip", "")


class CubeError(HpcsegError):
    """A cube that cannot be read; the message is one line that names the file."""


@dataclass(frozen=True)
class CubeInfo:
    shape: tuple[int, int, int]  # (H, W, bands)
    dtype: np.dtype
    how: str  # "memory-mapped", "loaded", "chunked": how open_cube will read it


def cube_files(folder: Path) -> list[Path]:
    """The cube files of a cores/ folder (hidden files skipped), sorted."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in CUBE_SUFFIXES and not p.name.startswith("."))


def cube_info(path: Path) -> CubeInfo:
    """Shape and dtype from the header alone; a :class:`CubeError` for anything unreadable or inconsistent."""
    cube = open_cube(path)  # every reader below is lazy: opening reads headers, not pixels
    info = CubeInfo(tuple(int(n) for n in cube.shape), np.dtype(cube.dtype), _how(cube))  # type: ignore[arg-type]
    if isinstance(cube, H5Cube):
        cube.close()
    return info


def open_cube(path: Path) -> Any:
    """(H, W, bands) array-like supporting ``shape``, ``ndim``, ``dtype`` and basic slicing."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if path.stat().st_size == 0:
            raise CubeError(f"{path}: empty file (0 bytes); re-copy it from the source")
        if suffix == ".npy":
            cube = np.load(path, mmap_mode="r", allow_pickle=False)
        elif suffix == ".mat":
            cube = _open_mat(path)
        elif suffix == ".hdr":
            cube = _open_envi(path)
        else:
            raise CubeError(f"{path}: not a cube file; use one of {', '.join(CUBE_SUFFIXES)}")
    except CubeError:
        raise
    except Exception as exc:  # truncated files, pickles, bad HDF5: all mean "not a usable cube"
        raise CubeError(f"{path}: cannot read the cube ({exc.__class__.__name__}: {exc}); re-export it") from None
    if cube.ndim != 3:
        raise CubeError(f"{path}: cube has shape {tuple(cube.shape)}; expected (H, W, bands)")
    if not np.issubdtype(cube.dtype, np.number) or np.issubdtype(cube.dtype, np.complexfloating):
        raise CubeError(f"{path}: cube is {cube.dtype}, not real numbers; save it as float32")
    return cube


def _how(cube: Any) -> str:
    if isinstance(cube, np.memmap) or isinstance(getattr(cube, "base", None), np.memmap):
        return "memory-mapped"
    return "chunked" if isinstance(cube, H5Cube) else "loaded"


# ------------------------------------------------------------------------------------------ MATLAB


def _open_mat(path: Path) -> Any:
    with open(path, "rb") as fh:
        head = fh.read(128)
    if len(head) < 128:
        raise CubeError(f"{path}: {len(head)} bytes, shorter than a MAT-file header; re-export it")
    if _is_hdf5(path):  # v7.3: HDF5 after a 512-byte MATLAB user block
        return _open_mat73(path)
    endian = {b"IM": "<", b"MI": ">"}.get(head[126:128])
    if endian is None or struct.unpack(endian + "H", head[124:126])[0] != 0x0100:
        raise CubeError(f"{path}: not a MATLAB v5/v7 or v7.3 MAT-file (a v4 file?); save it with "
                        f"save(..., '-v7') or '-v7.3'")
    return _open_mat5(path, endian)


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as fh:
        for offset in (0, 512, 1024, 2048):
            fh.seek(offset)
            if fh.read(8) == b"\x89HDF\r\n\x1a\n":
                return True
    return False


# MAT v5 data types (miXXX) of a stored real part, and the matrix classes that are numeric arrays.
_MI = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_NUMERIC_CLASSES = set(range(6, 16))  # mxDOUBLE_CLASS .. mxUINT64_CLASS


def _open_mat5(path: Path, endian: str) -> Any:
    """Map the one 3-D numeric variable when it is stored uncompressed (scipy.io.savemat's default);
    a compressed variable (MATLAB's own default for -v7) is loaded with scipy instead."""
    size = path.stat().st_size
    found: list[tuple[str, Any]] = []
    compressed = False
    with open(path, "rb") as fh:
        pos = 128
        while pos + 8 <= size:
            fh.seek(pos)
            mtype, nbytes = struct.unpack(endian + "II", fh.read(8))
            if pos + 8 + nbytes > size:
                raise CubeError(f"{path}: truncated at byte {size} (a variable needs {pos + 8 + nbytes}); "
                                f"re-copy it from the source")
            if mtype == _MI_COMPRESSED:
                compressed = True
            elif mtype == _MI_MATRIX and nbytes:
                var = _mat5_matrix(fh, path, endian, pos + 8)
                if var is not None:
                    found.append(var)
            pos += 8 + nbytes + (0 if mtype == _MI_COMPRESSED else -nbytes % 8)  # zlib streams are unpadded
    if compressed:
        return _load_mat5(path)
    return _one_cube(path, found)[1]


def _mat5_matrix(fh: Any, path: Path, endian: str, start: int) -> tuple[str, Any] | None:
    """(name, memmap) of a 3-D real numeric miMATRIX at ``start``, None for anything else."""
    fh.seek(start)
    _, _, flags, _ = struct.unpack(endian + "IIII", fh.read(16))  # array flags sub-element
    cls, complex_ = flags & 0xFF, bool(flags & 0x0800)
    dtype, nbytes = struct.unpack(endian + "II", fh.read(8))      # dimensions sub-element
    dims = struct.unpack(endian + f"{nbytes // 4}i", fh.read(nbytes))
    fh.read(-nbytes % 8)
    name = _mat5_name(fh, endian)
    if cls not in _NUMERIC_CLASSES or len(dims) != 3:
        return name, None
    if complex_:
        raise CubeError(f"{path}: variable {name!r} is complex; save its real part")
    first = fh.read(8)
    small = struct.unpack(endian + "I", first[:4])[0] >> 16
    if small:  # a tiny array in the small-element form: not a cube worth mapping
        return name, None
    mtype, nbytes = struct.unpack(endian + "II", first)
    if mtype not in _MI:
        raise CubeError(f"{path}: variable {name!r} has MAT data type {mtype}; re-export it")
    dt = np.dtype(endian + _MI[mtype])
    if nbytes != dt.itemsize * int(np.prod(dims)):
        raise CubeError(f"{path}: variable {name!r} holds {nbytes} bytes but its size {'x'.join(map(str, dims))} "
                        f"needs {dt.itemsize * int(np.prod(dims))}; re-export it")
    return name, np.memmap(path, dtype=dt, mode="r", offset=fh.tell(), shape=tuple(dims), order="F")


def _mat5_name(fh: Any, endian: str) -> str:
    first = fh.read(8)
    word = struct.unpack(endian + "I", first[:4])[0]
    if word >> 16:  # small data element: name in the 4 bytes that follow
        return first[4:4 + (word >> 16)].decode("latin-1")
    nbytes = struct.unpack(endian + "I", first[4:])[0]
    name = fh.read(nbytes).decode("latin-1")
    fh.read(-nbytes % 8)
    return name


def _load_mat5(path: Path) -> np.ndarray:
    import scipy.io

    data = scipy.io.loadmat(path)
    found = [(k, v if isinstance(v, np.ndarray) and v.ndim == 3 and np.issubdtype(v.dtype, np.number) else None)
             for k, v in data.items() if not k.startswith("__")]
    return _one_cube(path, found)[1]


def _one_cube(path: Path, found: list[tuple[str, Any]]) -> tuple[str, Any]:
    """The one (name, value) whose value is not None, or a CubeError naming what the file holds."""
    cubes = [(name, arr) for name, arr in found if arr is not None]
    if len(cubes) == 1:
        return cubes[0]
    if not cubes:
        names = ", ".join(name for name, _ in found) or "none"
        raise CubeError(f"{path}: no 3-D numeric variable (H x W x bands) in this MAT-file (variables: {names}); "
                        f"save the cube in it")
    raise CubeError(f"{path}: {len(cubes)} 3-D variables ({', '.join(n for n, _ in cubes)}); keep one cube "
                    f"per file")


class H5Cube:
    """A MATLAB v7.3 variable read lazily through h5py: (H, W, bands) view of the (bands, W, H) dataset.
    Only basic slicing of the first two axes (what patches and band statistics use) is supported."""

    def __init__(self, path: Path, name: str):
        import h5py

        self.path, self.name = path, name
        self._file = h5py.File(path, "r")
        self._ds = self._file[name]
        self.shape = tuple(int(n) for n in self._ds.shape[::-1])
        self.dtype = self._ds.dtype
        self.ndim = 3

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if not all(isinstance(k, slice) for k in key) or len(key) > 3:
            raise TypeError("H5Cube supports slices only")
        key = key + (slice(None),) * (3 - len(key))
        return self._ds[key[::-1]].T

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out.astype(dtype) if dtype is not None else out

    def close(self) -> None:
        self._file.close()

    def __getstate__(self) -> dict:  # h5py handles do not pickle; reopen in the other process
        return {"path": self.path, "name": self.name}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["name"])  # type: ignore[misc]


def _open_mat73(path: Path) -> Any:
    try:
        import h5py
    except ImportError:
        raise CubeError(f"{path}: a MATLAB v7.3 file needs the h5py package (pip install h5py)") from None
    with h5py.File(path, "r") as f:
        found: list[tuple[str, Any]] = []
        for name, ds in f.items():
            if not isinstance(ds, h5py.Dataset) or name.startswith("#"):
                continue
            cls = ds.attrs.get("MATLAB_class", b"")
            cls = cls.decode() if isinstance(cls, bytes) else str(cls)
            numeric = np.issubdtype(ds.dtype, np.number) and cls not in ("char", "logical", "cell", "struct")
            if ds.dtype.names is not None and {"real", "imag"} <= set(ds.dtype.names):
                raise CubeError(f"{path}: variable {name!r} is complex; save its real part")
            if not numeric or ds.ndim != 3 or ds.attrs.get("MATLAB_empty", 0):
                found.append((name, None))
                continue
            offset = ds.id.get_offset()
            contiguous = ds.chunks is None and ds.compression is None and offset is not None
            found.append((name, (offset, ds.shape, ds.dtype) if contiguous else "chunked"))
    name, where = _one_cube(path, [(n, w) for n, w in found])
    if where == "chunked":
        return H5Cube(path, name)
    offset, shape, dtype = where
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape).T  # (bands, W, H) -> (H, W, bands)


# ------------------------------------------------------------------------------------------ ENVI


_ENVI_TYPES = {1: "u1", 2: "i2", 3: "i4", 4: "f4", 5: "f8", 12: "u2", 13: "u4", 14: "i8", 15: "u8"}
_ENVI_COMPLEX = {6, 9}


def read_envi_header(path: Path) -> dict[str, str]:
    """``key = value`` pairs of an ENVI header (keys lower-cased; ``{...}`` values may span lines)."""
    text = path.read_text(encoding="latin-1")
    if not text.lstrip().startswith("ENVI"):
        raise CubeError(f"{path}: not an ENVI header (its first line must be 'ENVI')")
    out: dict[str, str] = {}
    for m in re.finditer(r"^\s*([^=\n]+?)\s*=\s*(\{[^}]*\}|[^\n]*)", text, re.MULTILINE):
        out[m.group(1).strip().lower()] = m.group(2).strip()
    return out


def _envi_int(path: Path, head: dict[str, str], key: str, default: int | None = None, low: int = 1) -> int:
    raw = head.get(key)
    if raw is None:
        if default is not None:
            return default
        raise CubeError(f"{path}: the header has no '{key}' line; add it")
    try:
        value = int(raw)
    except ValueError:
        raise CubeError(f"{path}: '{key} = {raw}' is not a whole number") from None
    if value < low:
        raise CubeError(f"{path}: '{key} = {raw}' must be >= {low}")
    return value


def envi_data_file(hdr: Path) -> Path:
    """The data file beside a header: same name with .img/.dat/.raw/.bsq/.bil/.bip, or no extension."""
    stem = hdr.with_suffix("")
    found = [p for p in (stem.with_name(stem.name + s) for s in ENVI_DATA_SUFFIXES) if p.is_file() and p != hdr]
    if not found:
        raise CubeError(f"{hdr}: no data file beside the header; expected {stem.name}.img (or .dat, .raw, "
                        f".bsq/.bil/.bip, or no extension)")
    if len(found) > 1:
        raise CubeError(f"{hdr}: {len(found)} data files could belong to this header "
                        f"({', '.join(p.name for p in found)}); keep one")
    return found[0]


def _open_envi(hdr: Path) -> np.ndarray:
    head = read_envi_header(hdr)
    samples, lines, bands = (_envi_int(hdr, head, k) for k in ("samples", "lines", "bands"))
    code = _envi_int(hdr, head, "data type")
    if code in _ENVI_COMPLEX:
        raise CubeError(f"{hdr}: 'data type = {code}' is complex; export the real part")
    if code not in _ENVI_TYPES:
        raise CubeError(f"{hdr}: 'data type = {code}' is not an ENVI numeric type "
                        f"({', '.join(map(str, sorted(_ENVI_TYPES)))})")
    order = _envi_int(hdr, head, "byte order", default=0, low=0)
    if order not in (0, 1):
        raise CubeError(f"{hdr}: 'byte order = {order}' must be 0 (little-endian) or 1 (big-endian)")
    offset = _envi_int(hdr, head, "header offset", default=0, low=0)
    interleave = head.get("interleave", "bsq").strip().lower()
    shapes = {"bsq": (bands, lines, samples), "bil": (lines, bands, samples), "bip": (lines, samples, bands)}
    if interleave not in shapes:
        raise CubeError(f"{hdr}: 'interleave = {interleave}' must be bsq, bil or bip")
    dtype = np.dtype(("<" if order == 0 else ">") + _ENVI_TYPES[code])
    data = envi_data_file(hdr)
    need = offset + samples * lines * bands * dtype.itemsize
    have = data.stat().st_size
    if have < need:
        raise CubeError(f"{data}: {have} bytes, but its header says {lines} lines x {samples} samples x {bands} "
                        f"bands of {dtype.name} after {offset} header bytes ({need} bytes); re-copy the pair")
    raw = np.memmap(data, dtype=dtype, mode="r", offset=offset, shape=shapes[interleave])
    axes = {"bsq": (1, 2, 0), "bil": (0, 2, 1), "bip": (0, 1, 2)}[interleave]
    return raw.transpose(axes)  # (lines, samples, bands) = (H, W, bands), still a view of the map


# ------------------------------------------------------------------------------------------ writers

#: ``fmt`` values of :func:`save_cube` (and of synth's ``cube_format``).
FORMATS = ("npy", "mat", "mat73", "envi")
_MATLAB_CLASS = {"f4": "single", "f8": "double", "i1": "int8", "u1": "uint8", "i2": "int16", "u2": "uint16",
                 "i4": "int32", "u4": "uint32", "i8": "int64", "u8": "uint64"}


def save_cube(stem: Path, cube: np.ndarray, fmt: str = "npy", interleave: str = "bsq") -> Path:
    """Write an (H, W, bands) cube as an instrument would: ``stem``.npy, .mat (v5, scipy), .mat (v7.3,
    MATLAB's HDF5 layout: 512-byte header block, the array transposed, a MATLAB_class attribute) or ENVI
    (.hdr + .img, ``interleave`` bsq/bil/bip, little-endian). Returns the path the layout indexes."""
    cube = np.asarray(cube)
    if cube.ndim != 3:
        raise ValueError(f"save_cube needs an (H, W, bands) array, got shape {cube.shape}")
    stem = Path(stem)
    if fmt == "npy":
        path = stem.with_name(stem.name + ".npy")
        np.save(path, cube)
    elif fmt == "mat":
        import scipy.io

        path = stem.with_name(stem.name + ".mat")
        scipy.io.savemat(path, {"cube": cube})
    elif fmt == "mat73":
        import h5py

        path = stem.with_name(stem.name + ".mat")
        with h5py.File(path, "w", userblock_size=512) as f:
            ds = f.create_dataset("cube", data=np.ascontiguousarray(cube.T))  # MATLAB's column-major layout
            ds.attrs["MATLAB_class"] = np.bytes_(_MATLAB_CLASS[cube.dtype.str[1:]])
        text = b"MATLAB 7.3 MAT-file, Platform: hpcseg, Created by: hpcseg synth HDF5 schema 1.00 ."
        with open(path, "r+b") as fh:
            fh.write(text.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02IM")
    elif fmt == "envi":
        code = {v: k for k, v in _ENVI_TYPES.items()}[cube.dtype.str[1:]]
        axes = {"bsq": (2, 0, 1), "bil": (0, 2, 1), "bip": (0, 1, 2)}[interleave]
        path = stem.with_name(stem.name + ".hdr")
        stem.with_name(stem.name + ".img").write_bytes(cube.astype(cube.dtype.newbyteorder("<")).transpose(axes).tobytes())
        h, w, b = cube.shape
        path.write_text(f"ENVI\ndescription = {{hpcseg synth}}\nsamples = {w}\nlines = {h}\nbands = {b}\n"
                        f"header offset = 0\nfile type = ENVI Standard\ndata type = {code}\n"
                        f"interleave = {interleave}\nbyte order = 0\n")
    else:
        raise ValueError(f"cube format {fmt!r}: use one of {', '.join(FORMATS)}")
    return path
