"""The decoder child: reads requests from stdin, decodes, answers on stdout, under a memory limit.

Started by `parent.DecoderProcess`, never by hand:

    python -m ecg_decode.sandbox.child MEMORY_MB [SLOTS_FD]

The child's real stdout carries only frames: anything a C library prints goes to stderr.
"""
from __future__ import annotations

import mmap
import os
import resource
import sys
from typing import BinaryIO

import numpy as np

from ecg_common.rejections import DecodeError, Reason
from ecg_decode.decoding.decode import decode_wfdb_with_info, decode_with_info
from ecg_decode.decoding.quality import assess
from ecg_decode.decoding.record_info import Decoded
from ecg_decode.decoding.wfdb_header import parse_header
from ecg_decode.decoding.wfdb_signal import signal_file_names
from ecg_decode.pairing import is_header
from ecg_decode.opening import Refused, read_local
from ecg_common.schema import DEFAULT_GEOMETRY, Geometry
from ecg_decode.sandbox.protocol import (FRAME, RESULT_BYTES, RESULT_DTYPE, ChildGone, fits_in_slot, pack,
                                         parse_metadata, slot_view)


def _read_exactly_blocking(stream: BinaryIO, size: int) -> bytes:
    """A buffered read of `size` bytes; EOF (the parent went away) ends the child."""
    data = stream.read(size)
    if data is None or len(data) != size:
        raise ChildGone("parent closed the pipe")
    return data


def _limit_address_space(memory_mb: int) -> None:
    """RLIMIT_AS = what the child uses now (interpreter + libraries) + `memory_mb`, so an
    allocation beyond it fails with MemoryError (-> `too_large`) instead of swapping the host."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            vm_kb = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError):
        return  # not Linux: the wall-clock limit still applies
    limit = (vm_kb << 10) + (memory_mb << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _read_local(metadata: dict) -> tuple[bytes, str | None] | DecodeError:
    """A `LocalFile` request: the file and its header, read here within the limits the parent sent,
    each opened without following a link out of the input root and only if it is a regular file
    (the file may have been swapped since it was listed)."""
    path, header_path = str(metadata["path"]), metadata.get("header_path")
    root = str(metadata.get("root") or os.path.dirname(os.path.abspath(path)))
    try:
        payload = read_local(path, int(metadata["max_bytes"]), root)
    except Refused as refused:
        return DecodeError(refused.reason, refused.detail)
    if header_path is None:
        return payload, None
    try:
        header = read_local(str(header_path), int(metadata["max_header_bytes"]), root)
    except Refused as refused:  # say it is the header, unless the detail names it already
        detail = refused.detail if str(header_path) in refused.detail else f"header {header_path}: {refused.detail}"
        return DecodeError(refused.reason, detail)
    return payload, header.decode("utf-8", "replace")


def _read_wfdb_local(metadata: dict) -> tuple[str, dict[str, bytes]] | DecodeError:
    """A `LocalFile` request for a WFDB record (its path is the `.hea`): the header, then each signal
    file it names, from the header's own folder, each within the limit and the input root; together
    no more than `max_bytes`."""
    path = str(metadata["path"])
    folder = os.path.dirname(os.path.abspath(path))
    root = str(metadata.get("root") or folder)
    limit = int(metadata["max_bytes"])
    try:
        text = read_local(path, int(metadata["max_header_bytes"]), root).decode("utf-8", "replace")
    except Refused as refused:
        return DecodeError(refused.reason, refused.detail)
    header = parse_header(text)
    if isinstance(header, DecodeError):
        return header
    names = signal_file_names(header)
    if isinstance(names, DecodeError):
        return names
    files: dict[str, bytes] = {}
    for name in names:
        try:
            files[name] = read_local(os.path.join(folder, name), limit - sum(map(len, files.values())), root)
        except Refused as refused:
            detail = refused.detail if name in refused.detail else f"signal file {name}: {refused.detail}"
            return DecodeError(refused.reason, detail)
    return text, files


def _decode_wfdb(metadata: dict, payload: bytes, geometry: Geometry) -> Decoded | DecodeError:
    """A WFDB record: read here (`LocalFile` of its `.hea`), or sent as the header text plus its signal
    files' bytes one after the other in the payload (`signal_files`: names and sizes)."""
    if "path" in metadata:
        read = _read_wfdb_local(metadata)
        if isinstance(read, DecodeError):
            return read
        header, files = read
    else:
        header, files, start = str(metadata["header"]), {}, 0
        for name, size in metadata["signal_files"]:
            files[str(name)] = payload[start:start + int(size)]
            start += int(size)
    return decode_wfdb_with_info(header, files, pad_short=bool(metadata["pad_short"]), geometry=geometry,
                                 whole_record=bool(metadata.get("whole_record", False)))


def _decode_mat(metadata: dict, payload: bytes, geometry: Geometry) -> Decoded | DecodeError:
    """A `.mat` record (with its header text, if any): read here (`LocalFile`) or sent as its bytes."""
    header = metadata.get("header")
    if "path" in metadata:
        read = _read_local(metadata)
        if isinstance(read, DecodeError):
            return read
        payload, header = read
    return decode_with_info(payload, header, default_sampling_rate=float(metadata["default_sampling_rate"]),
                            pad_short=bool(metadata["pad_short"]), geometry=geometry,
                            whole_record=bool(metadata.get("whole_record", False)))


def _geometry(metadata: dict) -> Geometry:
    return Geometry.from_json(metadata["geometry"]) if metadata.get("geometry") else DEFAULT_GEOMETRY


def _is_wfdb(metadata: dict) -> bool:
    return "signal_files" in metadata or ("path" in metadata and is_header(str(metadata["path"])))


def _decode_request(metadata: dict, payload: bytes, slots: mmap.mmap | None = None) -> tuple[dict, bytes]:
    """The response to one request: an error, or the decoded record, in the slot the parent named
    (when it shares them) or else as the response's payload, with its `RecordInfo` in the metadata
    and, when the request says `assess`, its quality flags. The flags are computed here on the float32
    record the parent receives, so its threads (which share one interpreter lock) do not spend
    ~1.4 ms a record on them (docs/performance.md, "Fifth round")."""
    geometry = _geometry(metadata)
    try:
        decode = _decode_wfdb if _is_wfdb(metadata) else _decode_mat
        result = decode(metadata, payload, geometry)
    except MemoryError:  # decode_record catches its own; this is the last resort around it
        result = DecodeError(Reason.TOO_LARGE, "ran out of memory while decoding the file")
    if isinstance(result, DecodeError):
        return {"reason": result.reason, "detail": result.detail}, b""
    ecg = np.asarray(result.ecg, dtype=RESULT_DTYPE)
    response = {"shape": list(ecg.shape), "info": result.info.to_json()}
    if metadata.get("assess"):
        response["flags"] = {flag: list(leads) for flag, leads in assess(ecg, geometry.lead_names).items()}
    slot = metadata.get("slot")
    fits = fits_in_slot(ecg.shape)
    if slots is not None and fits and isinstance(slot, int) and 0 <= slot < len(slots) // RESULT_BYTES:
        slot_view(slots, slot, ecg.shape)[...] = ecg
        return {**response, "slot": slot}, b""
    return response, np.ascontiguousarray(ecg).tobytes()


def serve(memory_mb: int, slots_fd: int | None = None) -> None:
    """The child's loop: one request frame in, one response frame out, until the parent goes away.
    `slots_fd`: the parent's shared result slots (see `DecoderProcess`), mapped before the memory limit."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash must not drop a core file in the cwd
    requests = os.fdopen(os.dup(0), "rb")
    responses = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints from C libraries go to stderr, never into the protocol
    slots = mmap.mmap(slots_fd, 0) if slots_fd is not None else None
    _limit_address_space(memory_mb)
    responses.writelines(pack({"ready": True}))
    responses.flush()
    while True:
        try:
            meta_size, payload_size = FRAME.unpack(_read_exactly_blocking(requests, FRAME.size))
            metadata = parse_metadata(_read_exactly_blocking(requests, meta_size))
            payload = _read_exactly_blocking(requests, payload_size)
            response, data = _decode_request(metadata, payload, slots)
            del payload
        except ChildGone:
            return
        except MemoryError:
            response, data = {"reason": Reason.TOO_LARGE, "detail": "ran out of memory reading the file"}, b""
        responses.writelines(pack(response, data))
        responses.flush()


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None)
