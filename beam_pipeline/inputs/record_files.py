"""Which signal files a WFDB record is decoded from, found on the driver for reprocessing's ledger,
which must notice a change in any file a record is decoded from, not only in its header.

A `.mat` record is its `.mat` and its `.hea` header if any (`RecordSource.header_path`). A WFDB record
(`pairing.is_wfdb_record`: a `.hea` with no `.mat`) is its `.hea` and the signal files its signal lines
name, beside it, by the decoder's own rule (`wfdb_signal.signal_file_names`). Finding them means
reading the header here: within MAX_HEADER_BYTES, a local one only through `opening.open_local` under
the input root, and only split into fields (`parse_header`, pure text, as `decoder_requests` already
does for a remote WFDB record); no signal is parsed outside the sandboxed child. A header that cannot
be read or parsed names no file: decoding rejects its record with the reason, as before.
"""
from __future__ import annotations

import posixpath
from contextlib import AbstractContextManager
from typing import BinaryIO

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.inputs.local_files import is_local
from ecg_common.rejections import DecodeError
from ecg_decode.decoding.wfdb_header import parse_header
from ecg_decode.decoding.wfdb_signal import signal_file_names
from ecg_decode.file_limits import MAX_HEADER_BYTES, TooLarge, read_at_most
from ecg_decode.opening import Refused, open_local


def _open(path: str, root: str | None) -> AbstractContextManager[BinaryIO]:
    if is_local(path):
        return open_local(path, MAX_HEADER_BYTES, root)
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def signal_files_of(header_path: str, root: str | None = None) -> tuple[str, ...]:
    """The paths of the signal files the WFDB header at `header_path` names (beside it, in header
    order, each once), or () when it cannot be read or parsed or names a file outside its folder.
    `root`: the input directory a local header must resolve into."""
    try:
        with _open(header_path, root) as handle:
            text = read_at_most(handle, MAX_HEADER_BYTES, header_path).decode("utf-8", "replace")
    except (Refused, TooLarge, OSError):
        return ()
    header = parse_header(text)
    if isinstance(header, DecodeError):
        return ()
    names = signal_file_names(header)
    if isinstance(names, DecodeError):
        return ()
    folder = posixpath.dirname(header_path)
    return tuple(posixpath.join(folder, name) for name in names)
