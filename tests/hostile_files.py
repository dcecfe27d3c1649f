"""Builders of valid and hostile `.mat` files (as bytes), shared by the robustness tests.

Each builder makes the smallest file that shows one problem; `v5_claiming`, `zip_bomb` and
`cell_bomb` are the pathological ones: tiny on disk, huge if a parser believed them.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import scipy.io

from ecg_common.schema import ECG_SHAPE, LEAD_NAMES, NUM_LEADS, NUM_SAMPLES, SAMPLING_RATE_HZ

V73_TEXT = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 ."
_MI_INT8, _MI_INT32, _MI_UINT32, _MI_MATRIX, _MI_COMPRESSED = 1, 5, 6, 14, 15
_MX_CELL, _MX_STRUCT, _MX_DOUBLE = 1, 2, 6


def signal(seed: int = 0, shape: tuple[int, int] = ECG_SHAPE) -> np.ndarray:
    """A plausible mV signal that raises no quality flag: a ~1 mV wave at 1.2 Hz with a random phase
    per lead, 0.05 mV of noise, a different offset per lead. `shape` may be (samples, leads) or transposed."""
    rng = np.random.default_rng(seed)
    time_axis = 0 if shape[0] >= shape[-1] else 1
    t = np.arange(shape[time_axis]) / 500.0
    t = t[:, None] if time_axis == 0 else t[None, :]
    leads = shape[1 - time_axis]
    phase = rng.uniform(0, 2 * np.pi, size=leads)
    phase = phase[None, :] if time_axis == 0 else phase[:, None]
    offset = np.arange(leads) * 0.1
    offset = offset[None, :] if time_axis == 0 else offset[:, None]
    return np.sin(2 * np.pi * 1.2 * t + phase) + rng.normal(0.0, 0.05, size=shape) + offset


def savemat_bytes(variables: dict, **kwargs) -> bytes:
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables, **kwargs)
    return buffer.getvalue()


def contest(seed: int = 0) -> bytes:
    return savemat_bytes({"data": signal(seed).astype(np.float32)})


def v73(fill) -> bytes:
    """A MATLAB v7.3 file (HDF5 behind MATLAB's 512-byte text header) filled by `fill(h5py.File)`."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", userblock_size=512) as file:
        fill(file)
    data = bytearray(buffer.getvalue())
    data[:128] = V73_TEXT.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    return bytes(data)


def v73_dataset(group: h5py.Group, name: str, array: np.ndarray, matlab_class: str = "double") -> None:
    dataset = group.create_dataset(name, data=np.ascontiguousarray(np.asarray(array).T))
    dataset.attrs["MATLAB_class"] = np.bytes_(matlab_class)


def wfdb_header(num_samples: int = NUM_SAMPLES, rate: object = SAMPLING_RATE_HZ, gain: str = "1000(0)/mV") -> str:
    lines = [f"REC {NUM_LEADS} {rate} {num_samples}"]
    lines += [f"REC.mat 16x1+24 {gain} 16 0 0 0 0 {name}" for name in LEAD_NAMES]
    return "\n".join(lines) + "\n"


def cinc_val(seed: int = 0) -> bytes:
    """PhysioNet/CinC layout: MATLAB v4, int16 `val`, (12, 5000), 1000 ADC units per mV."""
    return savemat_bytes({"val": np.round(signal(seed).T * 1000).astype(np.int16)}, format="4")


def _tag(data_type: int, payload: bytes) -> bytes:
    return struct.pack("<II", data_type, len(payload)) + payload + b"\x00" * (-len(payload) % 8)


def _matrix(matlab_class: int, dims: list[int], name: bytes, body: bytes) -> bytes:
    flags = _tag(_MI_UINT32, struct.pack("<II", matlab_class, 0))
    return _tag(_MI_MATRIX, flags + _tag(_MI_INT32, struct.pack(f"<{len(dims)}i", *dims)) + _tag(_MI_INT8, name) + body)


_V5_HEADER = b"MATLAB 5.0 MAT-file, test".ljust(116, b" ") + b"\x00" * 8 + struct.pack("<H", 0x0100) + b"IM"


def v5_claiming(dims: list[int]) -> bytes:
    """A v5 file whose `data` variable declares `dims` (e.g. terabytes) but holds 8 bytes."""
    return _V5_HEADER + _matrix(_MX_DOUBLE, dims, b"data", _tag(9, b"\x00" * 8))


def zip_bomb(inflated_bytes: int) -> bytes:
    """A v5 file whose compressed `data` variable declares a proper (5000, 12) double array but
    inflates to `inflated_bytes` (a few hundred kB on disk for hundreds of MB)."""
    flags = _tag(_MI_UINT32, struct.pack("<II", _MX_DOUBLE, 0))
    header = flags + _tag(_MI_INT32, struct.pack("<2i", NUM_SAMPLES, NUM_LEADS)) + _tag(_MI_INT8, b"data")
    element = header + struct.pack("<II", 9, inflated_bytes)  # miDOUBLE, then zeros
    compressor = zlib.compressobj(9)
    compressed = [compressor.compress(struct.pack("<II", _MI_MATRIX, len(element) - 8 + inflated_bytes) + element)]
    chunk = bytes(1 << 20)
    compressed += [compressor.compress(chunk) for _ in range(inflated_bytes >> 20)]
    compressed.append(compressor.flush())
    payload = b"".join(compressed)
    return _V5_HEADER + struct.pack("<II", _MI_COMPRESSED, len(payload)) + payload  # compressed data is not padded


def cell_bomb(side: int = 30_000) -> bytes:
    """A ~300-byte v5 struct `ECG` whose field is an empty `side` x `side` cell array: scipy allocates
    side^2 object pointers (30000: 7 GB) before noticing the data is missing."""
    names = b"".join(name.ljust(32, b"\x00") for name in (b"age", b"data"))
    body = _tag(_MI_INT32, struct.pack("<i", 32)) + _tag(_MI_INT8, names) + _matrix(_MX_CELL, [side, side], b"", b"")
    return _V5_HEADER + _matrix(_MX_STRUCT, [1, 1], b"ECG", body)


def hdf5_elsewhere(path: Path) -> None:
    """A valid signal in a plain HDF5 file outside the input tree: what links would point to."""
    with h5py.File(path, "w") as file:
        file["data"] = np.ascontiguousarray(signal(99).T)


def external_link(target: Path) -> bytes:
    return v73(lambda f: f.__setitem__("data", h5py.ExternalLink(str(target), "/data")))


def virtual_dataset(target: Path) -> bytes:
    def fill(file: h5py.File) -> None:
        layout = h5py.VirtualLayout(shape=(NUM_LEADS, NUM_SAMPLES), dtype="f8")
        layout[:] = h5py.VirtualSource(str(target), "data", shape=(NUM_LEADS, NUM_SAMPLES))
        file.create_virtual_dataset("data", layout)

    return v73(fill)


def huge_float32(seed: int = 0) -> bytes:
    """Contest layout whose float32 values are finite but around 1e20: passes every finiteness check,
    and its squared deviations overflow float32 statistics."""
    return savemat_bytes({"data": (signal(seed) * 1e20).astype(np.float32)})


def huge_int64(seed: int = 0) -> bytes:
    """A headerless int64 `val` around 2**61 ADC units: about 2e15 mV at the CinC 1000 units per mV."""
    return savemat_bytes({"val": (signal(seed).T / 4 * 2.0**62).astype(np.int64)})


def beyond_path_max(parent: Path, name: str, content: bytes, component: int = 200) -> tuple[Path, Path]:
    """`content` as `name` at the end of a chain of directories under `parent` so deep that the path
    of the deeper ones exceeds PATH_MAX (which no full-path call accepts, not even root's); built with
    directory descriptors, which have no such limit. Returns (the first directory whose path is
    beyond PATH_MAX, the file)."""
    path_max = os.pathconf("/", "PC_PATH_MAX")
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    path, first_beyond = parent, None
    try:
        for depth in range(path_max // component + 2):
            part = f"{depth:03d}".ljust(component, "d")
            os.mkdir(part, dir_fd=fd)
            deeper = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd, path = deeper, path / part
            if first_beyond is None and len(os.fsencode(path)) >= path_max:
                first_beyond = path
        out = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        try:
            os.write(out, content)
        finally:
            os.close(out)
    finally:
        os.close(fd)
    return first_beyond, path / name
