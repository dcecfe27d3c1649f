"""Reading the MATLAB container: finds the signal variable in a v4, v5 or v7.3 (HDF5) `.mat` file,
with every size checked before anything large is allocated (see `decode.py` for the layouts)."""
from __future__ import annotations

import dataclasses
import io
import math
import re
import struct
import zlib

import h5py
import numpy as np
import scipy.io

from ecg_common.rejections import DecodeError, Reason
from ecg_common.schema import NUM_LEADS, SAMPLING_RATE_HZ
from ecg_decode.decoding.record_info import RecordInfo, from_struct_fields

MAX_SAMPLES_PER_LEAD = SAMPLING_RATE_HZ * 3600
"""Most samples per lead accepted as stored (one hour at 500 Hz), whatever the file's rate.

Only the first 10 s are kept, so anything longer is either a mistake or an attempt to exhaust a
worker's memory; the limit applies to every axis and to the total element count (x 12 leads).
"""

MAX_ELEMENTS = NUM_LEADS * MAX_SAMPLES_PER_LEAD
"""Most array elements accepted in the signal variable."""

MAX_DECOMPRESSED_BYTES = MAX_ELEMENTS * np.dtype(np.float64).itemsize + (1 << 20)
"""Most bytes the compressed variables of a v5 file may inflate to (a float64 signal + 1 MiB)."""

SIGNAL_KEYS = ("data", "val", "ECG")
"""Variables searched, in order; `ECG` must be a struct (v7.3: a group) with a `data` field."""

STRUCT_KEY, STRUCT_FIELD = "ECG", "data"
STRUCT_AGE_FIELD, STRUCT_SEX_FIELD = "age", "sex"
"""The CPSC 2018 struct's metadata fields (read from v5 files; a v7.3 struct's are not read)."""

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAT73_USERBLOCK_SIZE = 512
"""MATLAB v7.3 files are HDF5 files behind a 512-byte MATLAB text header (an HDF5 user block)."""

_NUMERIC_MATLAB_CLASSES = frozenset(
    {"double", "single", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"}
)
"""MATLAB classes a signal may have; `logical` must be refused here because loadmat yields uint8 for it."""

_MATLAB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INFLATE_CHUNK = 1 << 20
_V5_HEADER_SIZE = 128
_MI_COMPRESSED = 15


@dataclasses.dataclass(frozen=True)
class Signal:
    """The raw signal variable as stored, where it was found (for error details), and what the
    container itself says about the record (the CPSC struct's age and sex; None elsewhere)."""

    array: object
    source: str
    info: RecordInfo | None = None


def load_signal(data: bytes) -> Signal | DecodeError:
    """Finds and reads the signal variable, dispatching on the container format."""
    if not data:
        return DecodeError(Reason.NOT_MATLAB, "file is empty")
    if _is_hdf5(data):
        return _load_hdf5(data)
    return _load_scipy(data)


def _is_hdf5(data: bytes) -> bool:
    """MATLAB v7.3 (or plain HDF5): scipy cannot read these, h5py can."""
    return (
        data[MAT73_USERBLOCK_SIZE : MAT73_USERBLOCK_SIZE + len(HDF5_SIGNATURE)] == HDF5_SIGNATURE
        or data.startswith(HDF5_SIGNATURE)
        or data.startswith(b"MATLAB 7.3")
    )


def too_large(shape: tuple[int, ...], source: str) -> DecodeError | None:
    """Refuses a declared shape beyond the limits, before its data are read."""
    if any(dim > MAX_SAMPLES_PER_LEAD for dim in shape) or math.prod(shape) > MAX_ELEMENTS:
        return DecodeError(
            Reason.TOO_LARGE,
            f"{source} has shape {tuple(shape)}, beyond the limit of {MAX_SAMPLES_PER_LEAD} samples per lead",
        )
    return None


def _no_signal(names: list[str]) -> DecodeError:
    wanted = ", ".join(SIGNAL_KEYS[:-1]) + f", {STRUCT_KEY}.{STRUCT_FIELD}"
    return DecodeError(Reason.NO_SIGNAL, f"none of the keys {wanted} found; keys present: {sorted(names)}")


def _load_scipy(data: bytes) -> Signal | DecodeError:
    """MATLAB v4/v5: list variables from their headers, check them, then load only the one needed.

    The inflate guard comes first: even listing a compressed variable makes scipy inflate a whole
    128 kB block of it at once, which a zip bomb turns into 130 MB."""
    if _is_v5(data) and _v5_inflated_bytes(data, MAX_DECOMPRESSED_BYTES) > MAX_DECOMPRESSED_BYTES:
        return DecodeError(
            Reason.TOO_LARGE, f"compressed variables inflate to more than {MAX_DECOMPRESSED_BYTES} bytes"
        )
    try:
        variables = scipy.io.whosmat(io.BytesIO(data))
    except Exception as error:  # noqa: BLE001 - scipy raises many types for garbage
        return DecodeError(Reason.NOT_MATLAB, f"not a readable MATLAB v4/v5/v7.3 file: {type(error).__name__}: {error}")
    declared = {name: (tuple(shape), matlab_class) for name, shape, matlab_class in variables}
    key = next((k for k in SIGNAL_KEYS if k in declared), None)
    if key is None:
        if not declared or not all(_MATLAB_NAME.match(name) for name in declared):
            # Garbage that happens to start like a v4 file yields "variables" with binary names.
            return DecodeError(Reason.NOT_MATLAB, "not a MATLAB file: no valid variable found")
        return _no_signal(list(declared))
    shape, matlab_class = declared[key]
    if key == STRUCT_KEY:
        if matlab_class != "struct":
            return DecodeError(Reason.NO_SIGNAL, f"{key} is a {matlab_class}, not a struct with a {STRUCT_FIELD} field")
        if math.prod(shape) != 1:  # refused before loadmat allocates a struct array of that size
            return DecodeError(Reason.BAD_SHAPE, f"{STRUCT_KEY} is a {shape} struct array, not a single struct")
    else:
        if (refusal := too_large(shape, key)) is not None:
            return refusal
        if matlab_class not in _NUMERIC_MATLAB_CLASSES:
            return DecodeError(Reason.BAD_DTYPE, f"{key} is a MATLAB {matlab_class}, not a numeric array")
    try:
        loaded = scipy.io.loadmat(
            io.BytesIO(data), variable_names=[key], squeeze_me=False, struct_as_record=True, mat_dtype=False
        )
    except MemoryError:
        raise  # a size declared inside a struct: `decode_record` reports it as too_large
    except Exception as error:  # noqa: BLE001 - truncated or corrupt data surface here
        return DecodeError(Reason.NOT_MATLAB, f"corrupt or truncated MATLAB file: {type(error).__name__}: {error}")
    if key not in loaded:
        return DecodeError(Reason.NOT_MATLAB, f"{key} is listed in the file but could not be read")
    value = loaded[key]
    if key != STRUCT_KEY:
        return Signal(value, key)
    return _struct_field(value)


def _struct_field(value: object) -> Signal | DecodeError:
    """`ECG.data` from a loadmat struct (a structured ndarray, one record per struct element)."""
    source = f"{STRUCT_KEY}.{STRUCT_FIELD}"
    names = getattr(getattr(value, "dtype", None), "names", None)
    if names is None:
        return DecodeError(Reason.NO_SIGNAL, f"{STRUCT_KEY} is not a struct with a {STRUCT_FIELD} field")
    if STRUCT_FIELD not in names:
        return DecodeError(Reason.NO_SIGNAL, f"struct {STRUCT_KEY} has no {STRUCT_FIELD} field; fields: {list(names)}")
    if value.size != 1:
        return DecodeError(Reason.BAD_SHAPE, f"{STRUCT_KEY} is a {value.shape} struct array, not a single struct")
    record = value.flat[0]
    info = from_struct_fields(record[STRUCT_AGE_FIELD] if STRUCT_AGE_FIELD in names else None,
                              record[STRUCT_SEX_FIELD] if STRUCT_SEX_FIELD in names else None)
    return Signal(record[STRUCT_FIELD], source, info)


def _is_v5(data: bytes) -> bool:
    """scipy's own test (a v4 file has a zero among its first four bytes, a v5 file does not), plus
    the v5 header's endian indicator, so that random bytes are not measured as v5 variables."""
    return len(data) >= _V5_HEADER_SIZE and 0 not in data[:4] and data[126:128] in (b"IM", b"MI")


def _v5_inflated_bytes(data: bytes, limit: int) -> int:
    """Total size of the top-level v5 variables once inflated, counting no further than `limit`.

    loadmat inflates a compressed variable fully before looking at its size, so a tiny "zip bomb"
    could exhaust memory; counting with a bounded buffer first costs one extra inflate of a
    legitimate record (milliseconds) and nothing for uncompressed files.
    """
    endian = "<" if data[126:128] == b"IM" else ">"
    position, total = _V5_HEADER_SIZE, 0
    view = memoryview(data)
    while position + 8 <= len(data) and total <= limit:
        data_type, byte_count = struct.unpack_from(endian + "II", data, position)
        position += 8
        if data_type == _MI_COMPRESSED:
            total += _inflated_size(view[position : position + byte_count], limit - total)
        else:
            total += min(byte_count, len(data) - position)  # only what the file holds; loadmat refuses the rest
        position += byte_count
    return total


def _inflated_size(compressed: memoryview, limit: int) -> int:
    """Size of zlib data once inflated, stopping just past `limit`; output is discarded chunk by chunk."""
    inflater = zlib.decompressobj()
    size = len(inflater.decompress(compressed, _INFLATE_CHUNK))
    while not inflater.eof and size <= limit:
        chunk = inflater.decompress(inflater.unconsumed_tail, _INFLATE_CHUNK)
        if not chunk and not inflater.unconsumed_tail:
            break  # truncated stream: loadmat will report it
        size += len(chunk)
    return size


def _load_hdf5(data: bytes) -> Signal | DecodeError:
    """MATLAB v7.3: read the signal dataset with h5py from memory, following hard links only."""
    try:
        with h5py.File(io.BytesIO(data), "r") as file:
            return _read_hdf5_signal(file)
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - h5py raises OSError, KeyError, ValueError... for garbage
        detail = f"not a readable MATLAB v7.3 (HDF5) file: {type(error).__name__}: {error}"
        return DecodeError(Reason.NOT_MATLAB, detail)


def _hard_link_target(group: h5py.Group, name: str, source: str) -> object | DecodeError:
    """The object at `group[name]` if it is reached by a hard link; other links could leave the file."""
    link = group.get(name, getlink=True)
    if not isinstance(link, h5py.HardLink):
        kind = type(link).__name__
        detail = f"{source} is a {kind}; only hard links are followed (MATLAB writes no others)"
        return DecodeError(Reason.NOT_MATLAB, detail)
    return group[name]


def _read_hdf5_signal(file: h5py.File) -> Signal | DecodeError:
    key = next((k for k in SIGNAL_KEYS if file.get(k, getlink=True) is not None), None)
    if key is None:
        return _no_signal(list(file.keys()))
    target = _hard_link_target(file, key, key)
    if isinstance(target, DecodeError):
        return target
    source = key
    if key == STRUCT_KEY:
        source = f"{STRUCT_KEY}.{STRUCT_FIELD}"
        if not isinstance(target, h5py.Group):
            return DecodeError(Reason.NO_SIGNAL, f"{STRUCT_KEY} is not a struct with a {STRUCT_FIELD} field")
        if target.get(STRUCT_FIELD, getlink=True) is None:
            return DecodeError(
                Reason.NO_SIGNAL, f"struct {STRUCT_KEY} has no {STRUCT_FIELD} field; fields: {sorted(target.keys())}"
            )
        target = _hard_link_target(target, STRUCT_FIELD, source)
        if isinstance(target, DecodeError):
            return target
    if not isinstance(target, h5py.Dataset):
        return DecodeError(Reason.BAD_DTYPE, f"{source} is a {type(target).__name__} (struct or object), not an array")
    if target.is_virtual:
        return DecodeError(Reason.NOT_MATLAB, f"{source} is a virtual dataset; refused because it reads other files")
    if target.external:
        return DecodeError(Reason.NOT_MATLAB, f"{source} keeps its data in external files; refused")
    matlab_class = target.attrs.get("MATLAB_class")
    if isinstance(matlab_class, bytes):
        matlab_class = matlab_class.decode("ascii", "replace")
    if matlab_class is not None and matlab_class not in _NUMERIC_MATLAB_CLASSES:
        return DecodeError(Reason.BAD_DTYPE, f"{source} is a MATLAB {matlab_class}, not a numeric array")
    if target.dtype.names is not None:
        what = "complex" if set(target.dtype.names) == {"real", "imag"} else "compound"
        return DecodeError(Reason.BAD_DTYPE, f"{source} has a {what} dtype {target.dtype}")
    if target.dtype.subdtype is not None or target.dtype.kind not in "iuf":
        # Checked before reading: an array element type (f8 x 100 x 100) multiplies what h5py allocates.
        return DecodeError(Reason.BAD_DTYPE, f"{source} has dtype {target.dtype}, not a real number per element")
    if (refusal := too_large(tuple(target.shape or ()), source)) is not None:
        return refusal
    if target.chunks is not None and (refusal := too_large(target.chunks, f"{source}'s chunk")) is not None:
        return refusal  # libhdf5 allocates a whole chunk to read any part of it, whatever the dataset's shape
    # MATLAB writes column-major, so HDF5 sees the dimensions reversed: transpose back.
    return Signal(np.asarray(target[()]).T, source)
