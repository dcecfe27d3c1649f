"""Parsing of WFDB header (`NAME.hea`) files, the sidecar of PhysioNet/CinC `.mat` records.

A PhysioNet/CinC 2020-2021 `.mat` file holds raw integer ADC samples; only its header says how
fast they were sampled and how to turn them into millivolts. This module reads the subset of the
WFDB header format (https://physionet.org/physiotools/wag/header-5.htm) that such records use:

    NAME NSIG [FS[/COUNTERFREQ[(BASE)]] [NSAMP [BASETIME [BASEDATE]]]]
    FILE FMT [GAIN[(BASELINE)][/UNITS] [ADCRES [ADCZERO [INITVAL [CHECKSUM [BLOCKSIZE [DESCRIPTION]]]]]]]
    # comment lines anywhere

Defaults follow the specification: a missing sampling rate is 250 Hz, a missing or zero gain is
200 ADC units per physical unit, a missing baseline equals ADCZERO (itself 0 when missing), and
missing units are millivolts. Multi-segment records (`NAME/NSEG`) are not supported.

Pure Python: no numpy, no Beam. A malformed header is returned as a `DecodeError` (never raised),
so a DoFn can route it to `errors/` like any other bad record.
"""
from __future__ import annotations

import dataclasses
import math
import re

from ecg_common.rejections import DecodeError, Reason

WFDB_DEFAULT_SAMPLING_RATE_HZ = 250.0
"""Sampling rate the WFDB specification assumes when the record line omits it."""

WFDB_DEFAULT_GAIN = 200.0
"""ADC units per physical unit the WFDB specification assumes when the gain is missing or zero."""

MAX_SIGNALS = 1024
"""More signal lines than this is not an ECG header; refusing early keeps parsing cheap."""

_MILLIVOLTS_PER_UNIT = {"mv": 1.0, "uv": 1e-3, "\u00b5v": 1e-3, "\u03bcv": 1e-3, "nv": 1e-6, "v": 1e3}
"""How many millivolts one physical unit is (case-insensitive; both micro signs are accepted)."""

_GAIN_FIELD = re.compile(
    r"""^(?P<gain>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)   # ADC units per physical unit
        (?:\((?P<baseline>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\))?  # optional (baseline)
        (?:/(?P<units>\S+))?$                                 # optional /units""",
    re.VERBOSE,
)


@dataclasses.dataclass(frozen=True)
class WfdbHeader:
    """The parts of a WFDB header the decoder needs, one tuple entry per signal in file order.

    `gains` are as written in the file (ADC units per `units`); `gains_per_mv` converts them so
    that `(adc - baseline) / gain_per_mv` is in millivolts whatever the file's voltage unit.
    `num_samples` is None when the header leaves it unspecified (missing or 0). `comments` are the
    `#` lines in file order, without the `#` and surrounding blanks: where CinC headers keep a
    record's `Age:`, `Sex:` and `Dx:` (read by the modules that need them, not here).
    """

    record_name: str
    num_signals: int
    sampling_rate: float
    num_samples: int | None
    gains: tuple[float, ...]
    baselines: tuple[int | float, ...]
    units: tuple[str, ...]
    lead_names: tuple[str, ...]
    comments: tuple[str, ...] = ()
    file_names: tuple[str, ...] = ()
    """Per signal, the file holding its samples as written (`NAME.dat`; `NAME.mat` for CinC records)."""
    formats: tuple[str, ...] = ()
    """Per signal, the format field as written (`16`, `212`, `16x1+24`: format, samples per frame, offset)."""

    @property
    def gains_per_mv(self) -> tuple[float, ...]:
        """ADC units per millivolt for each signal (a uV gain is per microvolt: x1000 per mV)."""
        return tuple(gain / millivolts_per_unit(unit) for gain, unit in zip(self.gains, self.units))


def millivolts_per_unit(unit: str) -> float:
    """Millivolts in one `unit` (mV -> 1, uV -> 0.001, V -> 1000); KeyError for a non-voltage unit."""
    return _MILLIVOLTS_PER_UNIT[unit.strip().lower()]


def _bad(detail: str) -> DecodeError:
    return DecodeError(Reason.BAD_HEADER, detail)


def _number(token: str) -> float | None:
    """A float from a header token, or None if it is not a number (NaN/Inf are kept for the caller)."""
    try:
        return float(token)
    except ValueError:
        return None


def _parse_record_line(line: str) -> tuple[str, int, float, int | None] | DecodeError:
    """Record name, signal count, sampling rate and samples per signal from the first line.

    The sampling rate is returned as written (even 0 or NaN): judging it is the decoder's job, so
    that a rate from the header and one from the command line go through the same check.
    """
    fields = line.split()
    if len(fields) < 2:
        return _bad(f"record line {line!r} needs at least a record name and a signal count")
    name = fields[0]
    if "/" in name:
        return _bad(f"multi-segment record {name!r} is not supported")
    if not fields[1].isdigit():
        return _bad(f"signal count {fields[1]!r} is not a non-negative integer")
    num_signals = int(fields[1])
    if num_signals > MAX_SIGNALS:
        return _bad(f"{num_signals} signals declared, more than {MAX_SIGNALS}")
    sampling_rate = WFDB_DEFAULT_SAMPLING_RATE_HZ
    if len(fields) >= 3:
        # "FS/COUNTERFREQ(BASE)": only the part before the slash is the sampling rate.
        rate = _number(fields[2].split("/", 1)[0])
        if rate is None:
            return _bad(f"sampling rate {fields[2]!r} is not a number")
        sampling_rate = rate
    num_samples = None
    if len(fields) >= 4:
        if not fields[3].isdigit():
            return _bad(f"samples per signal {fields[3]!r} is not a non-negative integer")
        num_samples = int(fields[3]) or None  # 0 means "not specified" in WFDB
    return name, num_signals, sampling_rate, num_samples


def _parse_signal_line(line: str, index: int) -> tuple[float, int | float, str, str, str, str] | DecodeError:
    """Gain, baseline, units and description (lead name) of one signal line, with WFDB defaults."""
    fields = line.split(maxsplit=8)
    if len(fields) < 2:
        return _bad(f"signal line {index + 1} {line!r} needs at least a file name and a format")
    gain, baseline, units = WFDB_DEFAULT_GAIN, None, "mV"
    if len(fields) >= 3:
        match = _GAIN_FIELD.match(fields[2])
        if match is None:
            return _bad(f"signal line {index + 1}: gain field {fields[2]!r} is not GAIN[(BASELINE)][/UNITS]")
        gain = float(match["gain"])
        if match["baseline"] is not None:
            baseline = _int_if_integral(float(match["baseline"]))
        if match["units"] is not None:
            units = match["units"]
    if not math.isfinite(gain):
        return _bad(f"signal line {index + 1}: gain {gain} is not finite")
    if gain == 0:
        gain = WFDB_DEFAULT_GAIN  # WFDB: a zero gain means "uncalibrated", read with the default
    if units.lower() not in _MILLIVOLTS_PER_UNIT:
        return _bad(f"signal line {index + 1}: unit {units!r} is not a voltage (mV, uV or V)")
    if baseline is None:
        # WFDB: without an explicit baseline, the baseline is ADCZERO (0 when that is missing too).
        adc_zero = _number(fields[4]) if len(fields) >= 5 else 0.0
        if adc_zero is None or not math.isfinite(adc_zero):
            return _bad(f"signal line {index + 1}: ADC zero {fields[4]!r} is not a number")
        baseline = _int_if_integral(adc_zero)
    description = fields[8].strip() if len(fields) >= 9 else ""
    return gain, baseline, units, description, fields[0], fields[1]


def _int_if_integral(value: float) -> int | float:
    """Baselines are integers in WFDB; keep them so when they are, so they compare cleanly."""
    return int(value) if math.isfinite(value) and value == int(value) else value


def parse_header(text: str) -> WfdbHeader | DecodeError:
    """Parses a WFDB header, or returns a `DecodeError` with `Reason.BAD_HEADER` saying what is wrong.

    Comment lines (`#`) and blank lines are ignored anywhere. The number of signal lines must equal
    NSIG: a header that does not describe every signal cannot be trusted to convert any of them.
    """
    if not isinstance(text, str):
        return _bad(f"header is {type(text).__name__}, not text")
    lines = [line.strip() for line in text.lstrip("\ufeff").splitlines()]
    comments = tuple(line[1:].strip() for line in lines if line.startswith("#"))
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        return _bad("header is empty (no record line)")
    record = _parse_record_line(lines[0])
    if isinstance(record, DecodeError):
        return record
    name, num_signals, sampling_rate, num_samples = record
    signal_lines = lines[1:]
    if len(signal_lines) != num_signals:
        return _bad(f"record line declares {num_signals} signals but {len(signal_lines)} signal lines follow")
    signals = []
    for index, line in enumerate(signal_lines):
        signal = _parse_signal_line(line, index)
        if isinstance(signal, DecodeError):
            return signal
        signals.append(signal)
    gains, baselines, units, lead_names, file_names, formats = (
        (tuple(column) for column in zip(*signals)) if signals else ((),) * 6)
    return WfdbHeader(
        record_name=name,
        num_signals=num_signals,
        sampling_rate=sampling_rate,
        num_samples=num_samples,
        gains=gains,
        baselines=baselines,
        units=units,
        lead_names=lead_names,
        comments=comments,
        file_names=file_names,
        formats=formats,
    )
