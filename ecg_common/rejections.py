"""Record-level failures as values: a reason code plus a human-readable detail.

A bad input file never raises out of a DoFn; it becomes a `Rejection` that the pipeline writes to
`OUT/errors/` so every file found is accounted for (written + rejected = found). Exceptions are
kept for broken configuration (see `ConfigurationError`).
"""
from __future__ import annotations

import dataclasses
import json


class Reason:
    """Reason codes written to `errors/*.jsonl`. Short, stable, documented in the README (reason-code table)."""

    UNREADABLE = "unreadable"                # the file could not be opened or read
    UNLISTABLE = "unlistable"                # a directory under the input that could not be listed
    NOT_MATLAB = "not_matlab"                # not a MATLAB v4/v5/v7.3 file, or truncated/corrupt
    NO_SIGNAL = "no_signal"                  # none of the known keys (data, val, ECG.data)
    BAD_DTYPE = "bad_dtype"                  # complex, boolean, string, object or struct signal
    BAD_SHAPE = "bad_shape"                  # not 2-D, or no axis of exactly 12 leads
    NON_FINITE = "non_finite"                # NaN or Inf anywhere in the signal
    IMPLAUSIBLE_AMPLITUDE = "implausible_amplitude"  # a value beyond standardize.MAX_ABS_MV: not mV
    TOO_SHORT = "too_short"                  # shorter than one window (--window_s) and padding not requested
    MISSING_LEAD = "missing_lead"            # a lead of --leads is not in the record
    BAD_HEADER = "bad_header"                # WFDB .hea unparsable or disagreeing with the array
    BAD_SAMPLING_RATE = "bad_sampling_rate"  # zero, negative or absurd sampling rate
    TOO_LARGE = "too_large"                  # declared size beyond the per-file limit, or the memory limit hit
    TIMEOUT = "timeout"                      # decoding took longer than the per-file time limit
    DECODER_CRASHED = "decoder_crashed"      # the isolated decoder process died on this file
    OUTSIDE_INPUT = "outside_input"          # a symbolic link leading out of the input directory (not followed)
    POOR_QUALITY = "poor_quality"            # a signal-quality flag, rejected only with --reject_flagged
    MISSING_LABEL = "missing_label"          # a training record with no label in the labels file
    DUPLICATE_ID = "duplicate_id"            # the same record id found twice in one split
    INVALID_LABEL = "invalid_label"          # labels file: value other than 0/1, or conflicting
    LABEL_WITHOUT_FILE = "label_without_file"  # labels file: id with no .mat file in the train dir
    BAD_DX_CODE = "bad_dx_code"              # --dx_from_header: a Dx code that is not a positive integer


@dataclasses.dataclass(frozen=True)
class DecodeError:
    """Why a `.mat` file could not become an example; the decoder returns it instead of raising."""

    reason: str
    detail: str


@dataclasses.dataclass(frozen=True)
class Rejection:
    """One input that did not become an example, as written to `OUT/errors/*.jsonl`."""

    record_id: str
    path: str
    reason: str
    detail: str

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


class ConfigurationError(Exception):
    """The run cannot start or finish as configured (missing directory, no valid training record).

    The CLI turns it into a one-line message and exit code 2; it is never used for one bad record.
    """
