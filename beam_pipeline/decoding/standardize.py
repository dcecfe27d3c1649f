"""From the stored signal to the example: orientation, units (WFDB gain and baseline), lead order,
sampling rate and length, with the checks that refuse what cannot be an ECG (see `decode.py`)."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import scipy.signal

from beam_pipeline.decoding.container import Signal, too_large
from beam_pipeline.decoding.wfdb_header import WfdbHeader
from ecg_common.rejections import DecodeError, Reason
from ecg_common.schema import DURATION_S, LEAD_NAMES, NUM_LEADS, NUM_SAMPLES, SAMPLING_RATE_HZ

CINC_GAIN_PER_MV = 1000.0
"""ADC units per mV documented by every PhysioNet/CinC 2020-2021 header; used for a headerless `val`."""

MIN_SAMPLING_RATE_HZ = 50.0
MAX_SAMPLING_RATE_HZ = 50_000.0
"""Plausible ECG sampling rates; outside them the rate is a typo or garbage, not a recording."""

MAX_ABS_MV = 100.0
"""The largest |value| (mV, after the gain) a record may hold. A surface ECG stays within a few mV (a
QRS complex rarely reaches 5 mV), pacemaker spikes within about 20 mV, and the CinC int16 format at
1000 units per mV cannot exceed 32.8 mV. Anything beyond is not a recording in mV (microvolts, ADC
units without their gain, garbage); one such record would otherwise dominate the per-lead
statistics learned over the whole training set (float32 1e20: a std of 1e20, which normalizes every
other example to a constant)."""

RESAMPLE_MAX_DENOMINATOR = 1000
"""Bound on the up/down factors of the polyphase resampler, which keeps its filter small."""


def standardize(
    signal: Signal, header: WfdbHeader | None, sampling_rate: float, pad_short: bool
) -> np.ndarray | DecodeError:
    """Validates the raw array and brings it to ECG_SHAPE, mV, 500 Hz, standard lead order."""
    array, source = signal.array, signal.source
    if (refusal := _check_dtype(array, source)) is not None:
        return refusal
    if array.ndim != 2:
        return DecodeError(Reason.BAD_SHAPE, f"{source} has {array.ndim} dimensions {array.shape}, expected 2")
    if (refusal := too_large(array.shape, source)) is not None:
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
    return _check_amplitude(result, source)


def _check_amplitude(record: np.ndarray, source: str) -> np.ndarray | DecodeError:
    """The record as is when every value is within MAX_ABS_MV, else why it cannot be in mV."""
    peak = max(float(record.max()), -float(record.min()))
    if peak > MAX_ABS_MV:
        return DecodeError(Reason.IMPLAUSIBLE_AMPLITUDE,
                           f"{source} reaches {peak:.4g} mV after the gain; an ECG stays within "
                           f"{MAX_ABS_MV:g} mV (wrong units, a missing gain, or not a signal)")
    return record


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
