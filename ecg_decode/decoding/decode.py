"""Turns the bytes of one `.mat` ECG file into a (5000, 12) float32 array in millivolts, or a reason why not.

`decode_record` is the entry point; `decode_with_info` returns the same array together with the
record's `RecordInfo` (age, sex, Dx codes from the header's comments or the CPSC struct), which is
what the decoder child sends back. Neither raises: any input,
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
- orientation: the lead axis is the one of length exactly 12 (with a header: its signal count);
  (12, 12) or no such axis is refused;
- leads: those of the geometry (`--leads`, default the 12 standard ones) in its order, by name from
  the header (any case) or by the standard order for a layout without names; a missing one is refused;
- finiteness: NaN or Inf anywhere in the stored array, or a value that overflows float32 after
  applying the gain, is refused;
- sampling rate: anything other than the geometry's rate (default 500 Hz) is resampled to it
  (polyphase, anti-aliased, `resample_poly`);
- length: the first window (default 10 s: samples 0..4999 at 500 Hz) is kept and the rest cropped,
  or with `whole_record` all of it; a record shorter than one window is refused as too short, or
  zero-padded at the end when `pad_short=True`;
- amplitude: a kept value beyond `standardize.MAX_ABS_MV` (100 mV) is refused: it cannot be mV.

Size limits are checked before anything large is allocated: array shapes are read from the
MATLAB variable headers (`whosmat`) or the HDF5 dataset shape, and zlib-compressed v5 variables
are measured by streaming decompression without keeping the output. See `container.MAX_SAMPLES_PER_LEAD`.
An HDF5 dataset's element type and chunk shape are checked too (either can multiply what libhdf5
allocates). What no header declares (e.g. a huge cell array inside a struct) is bounded by running
this module in a memory-limited child process (`sandbox/`); a MemoryError here is `too_large`.
"""
from __future__ import annotations

import numpy as np

from ecg_common.rejections import DecodeError, Reason
from ecg_common.schema import DEFAULT_GEOMETRY, SAMPLING_RATE_HZ, Geometry
from ecg_decode.decoding.container import Signal, load_signal
from ecg_decode.decoding.record_info import Decoded, RecordInfo, from_header_comments
from ecg_decode.decoding.standardize import standardize
from ecg_decode.decoding.wfdb_header import WfdbHeader, parse_header
from ecg_decode.decoding.wfdb_signal import read_signals


def decode_record(
    mat_bytes: bytes,
    header_text: str | None = None,
    *,
    default_sampling_rate: float = SAMPLING_RATE_HZ,
    pad_short: bool = False,
    geometry: Geometry = DEFAULT_GEOMETRY,
    whole_record: bool = False,
) -> np.ndarray | DecodeError:
    """Decodes one `.mat` file to a C-contiguous float32 array of shape `geometry.shape` in mV, or a `DecodeError`.

    `header_text` is the content of the record's WFDB `.hea` file when one sits beside it; its
    sampling rate overrides `default_sampling_rate`. Leads come out in `LEAD_NAMES` order. The
    module docstring lists the layouts and rules. Never raises: any exception escaping the
    parsers is reported as `Reason.NOT_MATLAB` (corrupt file) and a `MemoryError` as
    `Reason.TOO_LARGE`, because one bad file must not fail a pipeline of thousands.
    """
    result = decode_with_info(mat_bytes, header_text, default_sampling_rate=default_sampling_rate,
                              pad_short=pad_short, geometry=geometry, whole_record=whole_record)
    return result if isinstance(result, DecodeError) else result.ecg


def decode_with_info(
    mat_bytes: bytes,
    header_text: str | None = None,
    *,
    default_sampling_rate: float = SAMPLING_RATE_HZ,
    pad_short: bool = False,
    geometry: Geometry = DEFAULT_GEOMETRY,
    whole_record: bool = False,
) -> Decoded | DecodeError:
    """`decode_record` with the record's `RecordInfo` beside the array (same rules, never raises).

    `geometry` is the target rate, window and leads; `whole_record` keeps the record's whole length
    (at least one window) instead of its first window, for the caller to cut windows from."""
    try:
        return _decode(mat_bytes, header_text, default_sampling_rate, pad_short, geometry, whole_record)
    except MemoryError:
        return DecodeError(Reason.TOO_LARGE, "ran out of memory while decoding the file")
    except Exception as error:  # noqa: BLE001 - the contract is "never raise" for any input
        return DecodeError(Reason.NOT_MATLAB, f"could not decode the file: {type(error).__name__}: {error}")


def decode_wfdb_with_info(
    header_text: str,
    signal_files: dict[str, bytes],
    *,
    pad_short: bool = False,
    geometry: Geometry = DEFAULT_GEOMETRY,
    whole_record: bool = False,
) -> Decoded | DecodeError:
    """A record stored the WFDB way (`NAME.hea` and its signal files, `wfdb_signal.py`), decoded by
    the same rules as a `.mat` with its header; never raises."""
    try:
        header = parse_header(header_text)
        if isinstance(header, DecodeError):
            return header
        signal = read_signals(header, signal_files)
        if isinstance(signal, DecodeError):
            return signal
        return _standardized(signal, header, header.sampling_rate, pad_short, geometry, whole_record)
    except MemoryError:
        return DecodeError(Reason.TOO_LARGE, "ran out of memory while decoding the file")
    except Exception as error:  # noqa: BLE001 - the contract is "never raise" for any input
        return DecodeError(Reason.BAD_HEADER, f"could not decode the WFDB record: {type(error).__name__}: {error}")


def _decode(
    mat_bytes: bytes, header_text: str | None, default_sampling_rate: float, pad_short: bool,
    geometry: Geometry, whole_record: bool,
) -> Decoded | DecodeError:
    """`decode_with_info` without the safety net: header first (cheap), then the file, then normalizing."""
    header = None
    if header_text is not None:
        header = parse_header(header_text)
        if isinstance(header, DecodeError):
            return header
    signal = load_signal(bytes(mat_bytes))
    if isinstance(signal, DecodeError):
        return signal
    sampling_rate = header.sampling_rate if header is not None else default_sampling_rate
    return _standardized(signal, header, sampling_rate, pad_short, geometry, whole_record)


def _standardized(signal: Signal, header: WfdbHeader | None, sampling_rate: float, pad_short: bool,
                  geometry: Geometry, whole_record: bool) -> Decoded | DecodeError:
    ecg = standardize(signal, header, sampling_rate, pad_short, geometry, whole_record)
    if isinstance(ecg, DecodeError):
        return ecg
    return Decoded(ecg, record_info(header, signal))


def record_info(header: WfdbHeader | None, signal: Signal) -> RecordInfo:
    """The header's comments when there is a header; what the container says fills what they leave unknown."""
    from_header = from_header_comments(header.comments) if header is not None else RecordInfo()
    stored = signal.info or RecordInfo()
    return RecordInfo(age=from_header.age if from_header.age is not None else stored.age,
                      sex=from_header.sex if from_header.sex is not None else stored.sex,
                      dx_codes=from_header.dx_codes if from_header.dx_codes is not None else stored.dx_codes)
