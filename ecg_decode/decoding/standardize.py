"""From the stored signal to the example: orientation, units (WFDB gain and baseline), lead selection
and order, sampling rate and length, with the checks that refuse what cannot be an ECG (see `decode.py`).

The target is a `schema.Geometry` (rate, window length, leads; default 500 Hz, 10 s, the 12 standard
leads). With `whole_record` the record keeps its full length (at least one window: shorter ones are
refused or padded), for the caller to cut windows from; otherwise only the first window is kept."""
from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np

from ecg_common.rejections import DecodeError, Reason
from ecg_common.schema import DEFAULT_GEOMETRY, LEAD_NAMES, MAX_RESULT_VALUES, NUM_LEADS, Geometry, canonical_lead
from ecg_decode.decoding.container import Signal, too_large
from ecg_decode.decoding.wfdb_header import WfdbHeader

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
    signal: Signal, header: WfdbHeader | None, sampling_rate: float, pad_short: bool,
    geometry: Geometry = DEFAULT_GEOMETRY, whole_record: bool = False,
) -> np.ndarray | DecodeError:
    """Validates the raw array and brings it to `geometry` (mV, its rate, its leads in its order): the
    first window, or with `whole_record` all of the record (at least one window)."""
    array, source = signal.array, signal.source
    if (refusal := _check_dtype(array, source)) is not None:
        return refusal
    if array.ndim != 2:
        return DecodeError(Reason.BAD_SHAPE, f"{source} has {array.ndim} dimensions {array.shape}, expected 2")
    if (refusal := too_large(array.shape, source)) is not None:
        return refusal
    if header is not None and (refusal := _check_header_agrees(header, array.shape, source)) is not None:
        return refusal
    lead_axis = _lead_axis(array.shape, source, header.num_signals if header is not None else NUM_LEADS)
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
    rows = _lead_rows(header, leads_first.shape[0], geometry.lead_names, source)
    if isinstance(rows, DecodeError):
        return rows
    up, down = _resample_factors(sampling_rate, geometry.sampling_rate_hz)
    window = geometry.num_samples
    if whole_record and math.ceil(leads_first.shape[1] * up / down) * len(rows) > MAX_RESULT_VALUES:
        return DecodeError(Reason.TOO_LARGE, f"{source} at {geometry.sampling_rate_hz:g} Hz would hold more than "
                                             f"{MAX_RESULT_VALUES} values")
    # Keep only what the first window needs (plus the resampling filter's reach): cheaper, same result.
    needed = leads_first.shape[1] if whole_record else (
        math.ceil(window * down / up) + math.ceil(10 * max(up, down) / up) + 1)
    physical = _to_millivolts(leads_first[rows, :needed], _select_header(header, rows), source)
    if not np.isfinite(physical).all():
        return DecodeError(Reason.NON_FINITE, f"{source} is not finite after applying the header's gain")
    if (up, down) != (1, 1):
        physical = _resample(physical, up, down)
    if not whole_record:
        physical = physical[:, :window]
    num_samples = physical.shape[1]
    if num_samples < window:
        if not pad_short:
            return DecodeError(
                Reason.TOO_SHORT,
                f"{source} lasts {num_samples / geometry.sampling_rate_hz:.3f} s at {geometry.sampling_rate_hz:g} "
                f"Hz, shorter than {geometry.window_s:g} s (padding not requested)",
            )
        physical = np.pad(physical, ((0, 0), (0, window - num_samples)))
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


def _lead_axis(shape: tuple[int, int], source: str, num_leads: int = NUM_LEADS) -> int | DecodeError:
    """The axis holding the leads: the one of length `num_leads` (the header's signal count, else the
    standard 12), which must be unambiguous."""
    rows, cols = shape
    if rows == num_leads and cols == num_leads:
        detail = f"{source} is {shape}: both axes have {num_leads}, orientation is ambiguous"
        return DecodeError(Reason.BAD_SHAPE, detail)
    if rows == num_leads:
        return 0
    if cols == num_leads:
        return 1
    return DecodeError(Reason.BAD_SHAPE, f"{source} has shape {shape}: no axis of exactly {num_leads} leads")


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


def _lead_rows(header: WfdbHeader | None, num_rows: int, wanted: tuple[str, ...], source: str
               ) -> list[int] | DecodeError:
    """Which stored rows make the requested leads, in their order (`missing_lead` when one is not there).

    By name (any case) when the header names leads; by the standard order (LEAD_NAMES) when there is
    no header or its descriptions name no known lead (as in a headerless CinC `val`), which then
    takes the 12 standard leads. Extra leads are dropped."""
    names = [canonical_lead(name).lower() for name in header.lead_names] if header is not None else []
    wanted_lower = [canonical_lead(lead).lower() for lead in wanted]
    known = {lead.lower() for lead in LEAD_NAMES} | set(wanted_lower)
    if not any(name in known for name in names):
        if num_rows != NUM_LEADS:
            return DecodeError(Reason.MISSING_LEAD, f"{source} has {num_rows} unnamed leads; without lead names "
                                                    f"only the {NUM_LEADS} standard leads in their order are known")
        names = [lead.lower() for lead in LEAD_NAMES]
    missing = [lead for lead, lower in zip(wanted, wanted_lower) if lower not in names]
    if missing:
        present = ", ".join(header.lead_names) if header else "the standard 12"
        return DecodeError(Reason.MISSING_LEAD, f"{source} has no lead {', '.join(missing)} (it has {present})")
    return [names.index(lower) for lower in wanted_lower]


def _select_header(header: WfdbHeader | None, rows: list[int]) -> WfdbHeader | None:
    """The header's gains and baselines for the selected rows only (the rest of it is not used after this)."""
    if header is None:
        return None
    return dataclasses.replace(header, gains=tuple(header.gains[k] for k in rows),
                               baselines=tuple(header.baselines[k] for k in rows),
                               units=tuple(header.units[k] for k in rows),
                               lead_names=tuple(header.lead_names[k] for k in rows), num_signals=len(rows))


def _resample_factors(sampling_rate: float, target_rate: float = DEFAULT_GEOMETRY.sampling_rate_hz) -> tuple[int, int]:
    """Integer up/down factors taking `sampling_rate` to `target_rate` (exact for rates with <= 3 decimals)."""
    rate = Fraction(sampling_rate).limit_denominator(RESAMPLE_MAX_DENOMINATOR)
    target = Fraction(target_rate).limit_denominator(RESAMPLE_MAX_DENOMINATOR)
    ratio = (target / rate).limit_denominator(RESAMPLE_MAX_DENOMINATOR)
    return ratio.numerator, ratio.denominator


def _resample(physical: np.ndarray, up: int, down: int) -> np.ndarray:
    """Polyphase, anti-aliased resampling along time (leads first). `scipy.signal` is imported here, at
    the first record that needs it, not with this module: it is about two thirds of a decoder child's
    import time (1.05 of 1.65 s, measured under load), which every run waits for before its first
    record, while records at the target rate (all of a CinC or contest set at 500 Hz) never resample.
    In a decoder child the import counts against the record's `--decode_memory_mb` (~170 MB of
    address space, measured); a 1000 Hz record still decodes in a child limited to 256 MB
    (`tests/test_isolation.py`)."""
    import scipy.signal  # noqa: PLC0415 - deliberately lazy, see above

    return scipy.signal.resample_poly(physical, up, down, axis=1)
