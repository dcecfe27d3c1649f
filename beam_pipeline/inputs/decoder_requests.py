"""From a `RecordSource` to what the decoder child is sent, and one record decoded through the sandbox.

The job's DecodeRecordFn and the run report both decode through here, so a file is read within the
same limits and parsed only inside the resource-limited child, wherever it is decoded.
"""
from __future__ import annotations

import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.inputs.discovery import RecordSource
from beam_pipeline.inputs.local_files import is_local
from ecg_common.rejections import DecodeError, Reason, Rejection
from ecg_common.schema import DEFAULT_GEOMETRY, Geometry
from ecg_decode.decoding.wfdb_header import parse_header
from ecg_decode.decoding.wfdb_signal import signal_file_names
from ecg_decode.file_limits import MAX_FILE_BYTES, MAX_HEADER_BYTES, TooLarge, read_at_most
from ecg_decode.pairing import is_wfdb_record
from ecg_decode.sandbox.pool import pool_for
from ecg_decode.sandbox.protocol import DecodeLimits, LocalFile, WfdbBytes


def _read_bytes(path: str, limit: int) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return read_at_most(handle, limit, path)


def _remote_wfdb(source: RecordSource) -> tuple[WfdbBytes, str] | Rejection:
    """A WFDB record on remote storage: its header, then the signal files it names beside it, read
    here within the limits (the header is only split into fields here; the child parses the signal)."""
    try:
        header_text = _read_bytes(source.path, MAX_HEADER_BYTES).decode("utf-8", "replace")
        header = parse_header(header_text)
        if isinstance(header, DecodeError):
            return Rejection(source.record_id, source.path, header.reason, header.detail)
        names = signal_file_names(header)
        if isinstance(names, DecodeError):
            return Rejection(source.record_id, source.path, names.reason, names.detail)
        folder = source.path.rsplit("/", 1)[0]
        files: dict[str, bytes] = {}
        for name in names:
            limit = MAX_FILE_BYTES - sum(map(len, files.values()))
            files[name] = _read_bytes(f"{folder}/{name}", limit)
    except TooLarge as error:
        return Rejection(source.record_id, source.path, Reason.TOO_LARGE, str(error))
    except (OSError, IOError) as error:
        return Rejection(source.record_id, source.path, Reason.UNREADABLE, f"{type(error).__name__}: {error}")
    return WfdbBytes(files), header_text


def decoder_request(source: RecordSource) -> tuple[bytes | LocalFile | WfdbBytes, str | None] | Rejection:
    """What the decoder child needs: a local file's name (it reads the file itself, which saves
    reading it here and copying it through the pipe; for a WFDB record, its `.hea`, and the child
    reads the signal files it names), or else the file's bytes and its header's text read here
    through Beam's FileSystems (`gs://` and the like); or why it cannot be read."""
    if source.size_bytes > MAX_FILE_BYTES:
        return Rejection(source.record_id, source.path, Reason.TOO_LARGE,
                         f"{source.size_bytes} bytes; the limit is {MAX_FILE_BYTES}")
    if is_local(source.path) and (source.header_path is None or is_local(source.header_path)):
        return LocalFile(source.path, source.header_path, MAX_FILE_BYTES, MAX_HEADER_BYTES, source.input_root), None
    if is_wfdb_record(source.path):
        return _remote_wfdb(source)
    try:
        mat_bytes = _read_bytes(source.path, MAX_FILE_BYTES)
        header = (_read_bytes(source.header_path, MAX_HEADER_BYTES).decode("utf-8", "replace")
                  if source.header_path else None)
    except TooLarge as error:
        return Rejection(source.record_id, source.path, Reason.TOO_LARGE, str(error))
    except (OSError, IOError) as error:  # permissions, vanished file, network storage hiccup
        return Rejection(source.record_id, source.path, Reason.UNREADABLE, f"{type(error).__name__}: {error}")
    return mat_bytes, header


def decode_in_sandbox(source: RecordSource, *, default_sampling_rate: float, pad_short: bool,
                      limits: DecodeLimits = DecodeLimits(), geometry: Geometry = DEFAULT_GEOMETRY
                      ) -> np.ndarray | Rejection:
    """One record decoded by a child of this process's pool: the (samples, leads) mV array of its
    first window at `geometry` (the run's rate, window and leads), or why not."""
    request = decoder_request(source)
    if isinstance(request, Rejection):
        return request
    pool = pool_for(limits)
    decoder = pool.acquire()
    try:
        result = decoder.decode(*request, default_sampling_rate=default_sampling_rate, pad_short=pad_short,
                                 geometry=geometry)
    finally:
        pool.release(decoder)
    if isinstance(result, DecodeError):
        return Rejection(source.record_id, source.path, result.reason, result.detail)
    return result
