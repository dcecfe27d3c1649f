"""Turns the bytes of one `.mat` ECG file into a (5000, 12) float32 array in millivolts, or a reason why not.

`decode_record` is the only entry point (the Beam DoFn calls it). It never raises: any input,
however broken or hostile, becomes either the array or a `DecodeError(reason, detail)` that the
pipeline writes to `errors/`, so every file found is accounted for.

Layouts understood (signal keys are looked up in the order `data`, `val`, `ECG.data`):

1. Contest layout: MATLAB v5, variable `data`, float, (5000, 12) samples x leads, in mV.
2. PhysioNet/CinC 2020-2021: MATLAB v4, variable `val`, int16, (12, N) leads x samples, with a
   sibling WFDB header (`NAME.hea`, passed as `header_text`) giving the sampling rate and, per
   lead, gain and baseline: physical mV = (adc - baseline) / gain. Leads are reordered to the
   standard order when the header names them; otherwise file order is kept.
   Without a header, an integer `val` is divided by 1000, the gain (ADC units per mV) that every
   CinC 2020-2021 record documents; a float `val` is taken as mV already.
3. Original CPSC 2018: MATLAB v5 struct `ECG` with fields `sex`, `age`, `data` ((12, N) in mV).
4. Any of the above saved as MATLAB v7.3 (HDF5 inside, read with h5py from memory). Only hard
   links are followed; external links, virtual datasets and external raw storage are refused so
   a crafted file cannot make a worker read other files.

When a header is given it describes the signal whatever the key, as in WFDB; when it is not, the
sampling rate is `default_sampling_rate` and non-`val` data are taken as mV.

Normalizing rules, in this order:
- orientation: the lead axis is the one of length exactly 12; (12, 12) or no such axis is refused;
- finiteness: NaN or Inf anywhere in the stored array, or a value that overflows float32 after
  applying the gain, is refused;
- sampling rate: anything other than 500 Hz is resampled to 500 Hz (polyphase, `resample_poly`);
- length: the first 10 s are kept (samples 0..4999 at 500 Hz) and the rest is cropped; a shorter
  record is refused as too short, or zero-padded at the end when `pad_short=True`.

Size limits are checked before anything large is allocated: array shapes are read from the
MATLAB variable headers (`whosmat`) or the HDF5 dataset shape, and zlib-compressed v5 variables
are measured by streaming decompression without keeping the output. See `MAX_SAMPLES_PER_LEAD`.
An HDF5 dataset's element type and chunk shape are checked too (either can multiply what libhdf5
allocates). What no header declares (e.g. a huge cell array inside a struct) is bounded by running
this module in a memory-limited child process (`isolation.py`); a MemoryError here is `too_large`.
"""
from __future__ import annotations

import dataclasses
import io
import math
import re
import struct
import zlib
from fractions import Fraction

import h5py
import numpy as np
import scipy.io
import scipy.signal

from beam_pipeline.rejections import DecodeError, Reason
from beam_pipeline.schema import DURATION_S, LEAD_NAMES, NUM_LEADS, NUM_SAMPLES, SAMPLING_RATE_HZ
from beam_pipeline.wfdb_header import WfdbHeader, parse_header

MAX_SAMPLES_PER_LEAD = SAMPLING_RATE_HZ * 3600
"""Most samples per lead accepted as stored (one hour at 500 Hz), whatever the file's rate.

Only the first 10 s are kept, so anything longer is either a mistake or an attempt to exhaust a
worker's memory; the limit applies to every axis and to the total element count (x 12 leads).
"""

MAX_ELEMENTS = NUM_LEADS * MAX_SAMPLES_PER_LEAD
"""Most array elements accepted in the signal variable."""

MAX_DECOMPRESSED_BYTES = MAX_ELEMENTS * np.dtype(np.float64).itemsize + (1 << 20)
"""Most bytes the compressed variables of a v5 file may inflate to (a float64 signal + 1 MiB)."""

CINC_GAIN_PER_MV = 1000.0
"""ADC units per mV documented by every PhysioNet/CinC 2020-2021 header; used for a headerless `val`."""

MIN_SAMPLING_RATE_HZ = 50.0
MAX_SAMPLING_RATE_HZ = 50_000.0
"""Plausible ECG sampling rates; outside them the rate is a typo or garbage, not a recording."""

RESAMPLE_MAX_DENOMINATOR = 1000
"""Bound on the up/down factors of the polyphase resampler, which keeps its filter small."""

SIGNAL_KEYS = ("data", "val", "ECG")
"""Variables searched, in order; `ECG` must be a struct (v7.3: a group) with a `data` field."""

STRUCT_KEY, STRUCT_FIELD = "ECG", "data"

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
class _Signal:
    """The raw signal variable as stored, and where it was found (for error details)."""

    array: object
    source: str


def decode_record(
    mat_bytes: bytes,
    header_text: str | None = None,
    *,
    default_sampling_rate: float = SAMPLING_RATE_HZ,
    pad_short: bool = False,
) -> np.ndarray | DecodeError:
    """Decodes one `.mat` file to a C-contiguous float32 array of shape `ECG_SHAPE` in mV, or a `DecodeError`.

    `header_text` is the content of the record's WFDB `.hea` file when one sits beside it; its
    sampling rate overrides `default_sampling_rate`. Leads come out in `LEAD_NAMES` order. The
    module docstring lists the layouts and rules. Never raises: any exception escaping the
    parsers is reported as `Reason.NOT_MATLAB` (corrupt file) and a `MemoryError` as
    `Reason.TOO_LARGE`, because one bad file must not fail a pipeline of thousands.
    """
    try:
        return _decode(mat_bytes, header_text, default_sampling_rate, pad_short)
    except MemoryError:
        return DecodeError(Reason.TOO_LARGE, "ran out of memory while decoding the file")
    except Exception as error:  # noqa: BLE001 - the contract is "never raise" for any input
        return DecodeError(Reason.NOT_MATLAB, f"could not decode the file: {type(error).__name__}: {error}")


def _decode(
    mat_bytes: bytes, header_text: str | None, default_sampling_rate: float, pad_short: bool
) -> np.ndarray | DecodeError:
    """`decode_record` without the safety net: header first (cheap), then the file, then normalizing."""
    header = None
    if header_text is not None:
        header = parse_header(header_text)
        if isinstance(header, DecodeError):
            return header
    signal = _load_signal(bytes(mat_bytes))
    if isinstance(signal, DecodeError):
        return signal
    sampling_rate = header.sampling_rate if header is not None else default_sampling_rate
    return _standardize(signal, header, sampling_rate, pad_short)


# --- reading the container -------------------------------------------------------------------


def _load_signal(data: bytes) -> _Signal | DecodeError:
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


def _too_large(shape: tuple[int, ...], source: str) -> DecodeError | None:
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


def _load_scipy(data: bytes) -> _Signal | DecodeError:
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
        if (refusal := _too_large(shape, key)) is not None:
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
        return _Signal(value, key)
    return _struct_field(value)


def _struct_field(value: object) -> _Signal | DecodeError:
    """`ECG.data` from a loadmat struct (a structured ndarray, one record per struct element)."""
    source = f"{STRUCT_KEY}.{STRUCT_FIELD}"
    names = getattr(getattr(value, "dtype", None), "names", None)
    if names is None:
        return DecodeError(Reason.NO_SIGNAL, f"{STRUCT_KEY} is not a struct with a {STRUCT_FIELD} field")
    if STRUCT_FIELD not in names:
        return DecodeError(Reason.NO_SIGNAL, f"struct {STRUCT_KEY} has no {STRUCT_FIELD} field; fields: {list(names)}")
    if value.size != 1:
        return DecodeError(Reason.BAD_SHAPE, f"{STRUCT_KEY} is a {value.shape} struct array, not a single struct")
    return _Signal(value.flat[0][STRUCT_FIELD], source)


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


def _load_hdf5(data: bytes) -> _Signal | DecodeError:
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


def _read_hdf5_signal(file: h5py.File) -> _Signal | DecodeError:
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
    if (refusal := _too_large(tuple(target.shape or ()), source)) is not None:
        return refusal
    if target.chunks is not None and (refusal := _too_large(target.chunks, f"{source}'s chunk")) is not None:
        return refusal  # libhdf5 allocates a whole chunk to read any part of it, whatever the dataset's shape
    # MATLAB writes column-major, so HDF5 sees the dimensions reversed: transpose back.
    return _Signal(np.asarray(target[()]).T, source)


# --- normalizing the array -------------------------------------------------------------------


def _standardize(
    signal: _Signal, header: WfdbHeader | None, sampling_rate: float, pad_short: bool
) -> np.ndarray | DecodeError:
    """Validates the raw array and brings it to ECG_SHAPE, mV, 500 Hz, standard lead order."""
    array, source = signal.array, signal.source
    if (refusal := _check_dtype(array, source)) is not None:
        return refusal
    if array.ndim != 2:
        return DecodeError(Reason.BAD_SHAPE, f"{source} has {array.ndim} dimensions {array.shape}, expected 2")
    if (refusal := _too_large(array.shape, source)) is not None:
        return refusal
    if header is not None and (refusal := _check_header_agrees(header, array.shape, source)) is not None:
        return refusal
    lead_axis = _lead_axis(array.shape, source)
    if isinstance(lead_axis, DecodeError):
        return lead_axis
    if header is not None and array.shape[lead_axis] != header.num_signals:
        return DecodeError(
            Reason.BAD_HEADER,
            f"header declares {header.num_signals} signals but {source}'s lead axis has {array.shape[lead_axis]}",
        )
    leads_first = array if lead_axis == 0 else array.T
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        count = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        return DecodeError(Reason.NON_FINITE, f"{source} has {count} NaN or Inf values")
    if not (math.isfinite(sampling_rate) and MIN_SAMPLING_RATE_HZ <= sampling_rate <= MAX_SAMPLING_RATE_HZ):
        return DecodeError(
            Reason.BAD_SAMPLING_RATE,
            f"sampling rate {sampling_rate} Hz is not within {MIN_SAMPLING_RATE_HZ}..{MAX_SAMPLING_RATE_HZ} Hz",
        )
    if leads_first.shape[1] == 0:
        return DecodeError(Reason.TOO_SHORT, f"{source} has no samples")
    up, down = _resample_factors(sampling_rate)
    # Keep only what the first 10 s need (plus the resampling filter's reach): cheaper, same result.
    needed = math.ceil(NUM_SAMPLES * down / up) + math.ceil(10 * max(up, down) / up) + 1
    physical = _to_millivolts(leads_first[:, :needed], header, source)
    if not np.isfinite(physical).all():
        return DecodeError(Reason.NON_FINITE, f"{source} is not finite after applying the header's gain")
    physical = _standard_lead_order(physical, header)
    if (up, down) != (1, 1):
        physical = scipy.signal.resample_poly(physical, up, down, axis=1)
    physical = physical[:, :NUM_SAMPLES]
    num_samples = physical.shape[1]
    if num_samples < NUM_SAMPLES:
        if not pad_short:
            return DecodeError(
                Reason.TOO_SHORT,
                f"{source} lasts {num_samples / SAMPLING_RATE_HZ:.3f} s at {SAMPLING_RATE_HZ} Hz, "
                f"shorter than {DURATION_S} s (padding not requested)",
            )
        physical = np.pad(physical, ((0, 0), (0, NUM_SAMPLES - num_samples)))
    with np.errstate(over="ignore"):
        result = np.ascontiguousarray(physical.T, dtype=np.float32)
    if not np.isfinite(result).all():
        return DecodeError(Reason.NON_FINITE, f"{source} overflows float32 once converted to mV")
    return result


def _check_dtype(array: object, source: str) -> DecodeError | None:
    """Only real integers and floats are signals; sparse, complex, bool, text and objects are refused."""
    if not isinstance(array, np.ndarray):
        return DecodeError(Reason.BAD_DTYPE, f"{source} is a {type(array).__name__}, not a dense array")
    kind = array.dtype.kind
    if array.dtype.names is not None:
        return DecodeError(Reason.BAD_DTYPE, f"{source} is a struct, not a numeric array")
    if kind not in "iuf":
        names = {"b": "boolean", "c": "complex", "U": "string", "S": "string", "O": "object (cell)"}
        return DecodeError(Reason.BAD_DTYPE, f"{source} is {names.get(kind, 'non-numeric')} ({array.dtype})")
    return None


def _check_header_agrees(header: WfdbHeader, shape: tuple[int, ...], source: str) -> DecodeError | None:
    """The header must describe this array: its signal count on one axis, its sample count on the other."""
    nsig, nsamp = header.num_signals, header.num_samples
    agrees = nsig in shape if nsamp is None else shape in ((nsig, nsamp), (nsamp, nsig))
    if not agrees:
        declared = f"{nsig} signals" + ("" if nsamp is None else f" x {nsamp} samples")
        return DecodeError(Reason.BAD_HEADER, f"header declares {declared} but {source} has shape {shape}")
    return None


def _lead_axis(shape: tuple[int, int], source: str) -> int | DecodeError:
    """The axis holding the 12 leads: the one of length 12, which must be unambiguous."""
    rows, cols = shape
    if rows == NUM_LEADS and cols == NUM_LEADS:
        detail = f"{source} is {shape}: both axes have {NUM_LEADS}, orientation is ambiguous"
        return DecodeError(Reason.BAD_SHAPE, detail)
    if rows == NUM_LEADS:
        return 0
    if cols == NUM_LEADS:
        return 1
    return DecodeError(Reason.BAD_SHAPE, f"{source} has shape {shape}: no axis of exactly {NUM_LEADS} leads")


def _to_millivolts(leads_first: np.ndarray, header: WfdbHeader | None, source: str) -> np.ndarray:
    """(leads, samples) float64 in mV: WFDB gain and baseline when a header is given."""
    values = leads_first.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if header is not None:
            baselines = np.asarray(header.baselines, dtype=np.float64)[:, None]
            gains = np.asarray(header.gains_per_mv, dtype=np.float64)[:, None]
            return (values - baselines) / gains
        if source == "val" and np.issubdtype(leads_first.dtype, np.integer):
            return values / CINC_GAIN_PER_MV
    return values


def _standard_lead_order(leads_first: np.ndarray, header: WfdbHeader | None) -> np.ndarray:
    """Reorders rows to LEAD_NAMES when the header names exactly those 12 leads (any case), else keeps them."""
    if header is None:
        return leads_first
    names = [name.lower() for name in header.lead_names]
    standard = [name.lower() for name in LEAD_NAMES]
    if sorted(names) != sorted(standard):
        return leads_first
    return leads_first[[names.index(name) for name in standard]]


def _resample_factors(sampling_rate: float) -> tuple[int, int]:
    """Integer up/down factors taking `sampling_rate` to SAMPLING_RATE_HZ (exact for rates with <= 3 decimals)."""
    rate = Fraction(sampling_rate).limit_denominator(RESAMPLE_MAX_DENOMINATOR)
    ratio = (Fraction(SAMPLING_RATE_HZ) / rate).limit_denominator(RESAMPLE_MAX_DENOMINATOR)
    return ratio.numerator, ratio.denominator
