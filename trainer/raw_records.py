"""Raw recordings for `predict --records`: which files were given, and each decoded through the
pipeline's own sandboxed decoder, with the pipeline's options, to the (5000, 12) mV array it scores.

A folder is searched recursively for `.mat` files, each paired with its `.hea` header by the
pipeline's rule (`ecg_decode.pairing`), and for WFDB records (a `.hea` with no `.mat` beside it, and the
signal files it names, e.g. `NAME.dat`), exactly the records the pipeline's discovery finds; a file
given by name is paired with a header beside it. A `.hea` given by name stands for its `.mat`, or, with
no `.mat` beside it, is a WFDB record. A `.dat` given by name stands for the WFDB record of the `.hea`
at the same base (the CSV row names that `.hea`); with no such header (or with a `.mat` there, whose
sidecar that `.hea` is) it is a `not_matlab` row. A WFDB record is sent to the child as the pipeline
sends it (a `LocalFile` of its `.hea`, no separate header): the child reads the signal files the
header names, from the header's folder. The child process opens every file itself, refusing a
link out of the folder given (or, for a file given by name, out of its own folder), a FIFO or a
file over the size limit, exactly as in the pipeline. Every file ends up decoded or with a
`Rejection` (a reason code of `ecg_common/rejections.py`): nothing given is dropped.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from ecg_common.rejections import ConfigurationError, DecodeError, Reason, Rejection
from ecg_decode.file_limits import MAX_FILE_BYTES, MAX_HEADER_BYTES
from ecg_decode.pairing import (HEADER_SUFFIX, MAT_SUFFIX, SIGNAL_SUFFIX, header_for, headers_by_base, is_header,
                                is_record, is_signal_file, wfdb_records)
from ecg_decode.decoding.windows import cut_windows
from ecg_decode.sandbox.pool import pool_for
from ecg_decode.sandbox.protocol import DecodeLimits, LocalFile
from trainer.layout import DecodingOptions


@dataclasses.dataclass(frozen=True)
class RawRecord:
    """One recording to score: its `.mat` (or a WFDB record's `.hea`), its header if any (never for a WFDB
    record), the folder it must stay inside."""

    record_id: str
    path: str
    header_path: str | None
    root: str
    rejection: Rejection | None = None
    """Why it is not scored, known before decoding (a duplicate id, a file that is no recording)."""


def record_id_of(path: str) -> str:
    """The pipeline's record id: the file name without `.mat`, bytes that are not UTF-8 as `\\xNN`."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return os.fsencode(stem).decode("utf-8", "backslashreplace")


def _walk(folder: str) -> tuple[list[str], list[Rejection]]:
    """Every file under `folder` (links to folders not followed, as in the pipeline), sorted, and one
    `unlistable` rejection per subfolder that could not be listed."""
    files, unlistable = [], []

    def refused(error: OSError) -> None:
        where = error.filename or folder
        record_id = record_id_of(os.path.relpath(where, folder)) + "/"
        unlistable.append(Rejection(record_id, where, Reason.UNLISTABLE, f"{type(error).__name__}: {error}"))

    for directory, subdirectories, names in os.walk(folder, onerror=refused):
        subdirectories.sort()
        files += [os.path.join(directory, name) for name in sorted(names)]
    return files, unlistable


def _siblings(path: str) -> list[str]:
    directory = os.path.dirname(path) or "."
    try:
        return [os.path.join(os.path.dirname(path), name) for name in sorted(os.listdir(directory))]
    except OSError:  # the file itself will then fail to open, with its own reason
        return [path]


def _given_file(path: str) -> RawRecord:
    """A file named on the command line: a `.mat`, a `.hea` standing for its `.mat` or for a WFDB record,
    a `.dat` standing for the WFDB record of its `.hea`, or none of these."""
    root = os.path.dirname(os.path.abspath(path))
    siblings = _siblings(path)
    if is_signal_file(path):
        base = path[: -len(SIGNAL_SUFFIX)]
        headers = [p for p in wfdb_records(siblings) if p[: -len(HEADER_SUFFIX)] == base]
        if not headers:
            return RawRecord(record_id_of(path), path, None, root, Rejection(
                record_id_of(path), path, Reason.NOT_MATLAB, "a WFDB signal file without a WFDB header "
                "(NAME.hea, with no NAME.mat) beside it: give the .hea"))
        return RawRecord(record_id_of(headers[0]), headers[0], None, root)
    if is_header(path):
        base = path[: -len(HEADER_SUFFIX)]
        mats = [p for p in siblings if is_record(p) and p[: -len(MAT_SUFFIX)] == base]
        if not mats:  # a WFDB record: its signal files are the ones its header names
            return RawRecord(record_id_of(path), path, None, root)
        path = mats[0]
    elif not is_record(path):
        return RawRecord(record_id_of(path), path, None, root,
                         Rejection(record_id_of(path), path, Reason.NOT_MATLAB, "not a .mat file"))
    return RawRecord(record_id_of(path), path, header_for(path, headers_by_base(siblings)), root)


def find_raw_records(paths: list[str]) -> list[RawRecord]:
    """The recordings named by `paths` (files or folders), in the order given, folders sorted by path.

    The same file named twice counts once; a second file with a record id already seen is rejected
    (`duplicate_id`), as in one split of the pipeline, so every row of the CSV names one file. A
    path that does not exist is a configuration error (exit 2), like a missing input directory.
    """
    found: list[RawRecord] = []
    for given in paths:
        if os.path.isdir(given):
            files, unlistable = _walk(given)
            headers = headers_by_base(files)
            root = os.path.abspath(given)
            found += [RawRecord(r.record_id, r.path, None, root, r) for r in unlistable]
            wfdb = set(wfdb_records(files))
            found += [RawRecord(record_id_of(p), p, None if p in wfdb else header_for(p, headers), root)
                      for p in files if is_record(p) or p in wfdb]
        elif os.path.lexists(given):
            found.append(_given_file(given))
        else:
            raise ConfigurationError(f"--records: no such file or folder: {given}")
    records, seen_files, first_path_of = [], set(), {}
    for record in found:
        identity = os.path.realpath(record.path)
        if identity in seen_files:
            continue
        seen_files.add(identity)
        if record.rejection is None and record.record_id in first_path_of:
            detail = f"record id {record.record_id!r} also at {first_path_of[record.record_id]}"
            record = dataclasses.replace(record, rejection=Rejection(record.record_id, record.path,
                                                                     Reason.DUPLICATE_ID, detail))
        elif record.rejection is None:
            first_path_of[record.record_id] = record.path
        records.append(record)
    return records


def decode_raw(record: RawRecord, options: DecodingOptions,
               limits: DecodeLimits = DecodeLimits()) -> np.ndarray | Rejection:
    """One recording decoded by a sandboxed child, as the pipeline decodes it: its first window
    ((5000, 12) mV by default), or why not."""
    windows = decode_raw_windows(record, options, limits)
    return windows if isinstance(windows, Rejection) else windows[0]


def decode_raw_windows(record: RawRecord, options: DecodingOptions,
                       limits: DecodeLimits = DecodeLimits()) -> list[np.ndarray] | Rejection:
    """One recording decoded and cut as the training data was (geometry and `--window_stride_s`): its
    windows, one without a stride, or why not."""
    if record.rejection is not None:
        return record.rejection
    pool = pool_for(limits)
    decoder = pool.acquire()
    try:
        result = decoder.decode_with_info(LocalFile(record.path, record.header_path, MAX_FILE_BYTES, MAX_HEADER_BYTES,
                                                    record.root), None,
                                          default_sampling_rate=options.default_sampling_rate,
                                          pad_short=options.pad_short, geometry=options.geometry,
                                          whole_record=options.window_stride_s is not None)
    finally:
        pool.release(decoder)
    if isinstance(result, DecodeError):
        return Rejection(record.record_id, record.path, result.reason, result.detail)
    return [window.ecg for window in cut_windows(result.ecg, options.geometry, options.window_stride_s)]
