"""Decoding in a separate, resource-limited process: a hostile file costs one rejection, never a worker.

Why a process: the parsers (scipy.io, libhdf5) are C code fed bytes that arrive from outside. The
size checks in `decoding/container.py` cover what a file declares at the top level, but a crafted file can still
make a parser allocate gigabytes (a 300-byte v5 struct holding an empty 30000 x 30000 cell array
made scipy allocate 7 GB and take 19 s), loop, or crash (libhdf5 has a history of crashes on
crafted files). A Python thread can be neither stopped nor protected from a segfault; a child
process can be limited (`RLIMIT_AS`), timed out, killed and replaced.

Cost: one child per thread that decodes at the same time (started once, ~0.5 s and ~70 MB, then
reused across records, stages and both passes). Per record, the child gets a local file's name (or
a remote file's bytes) and leaves the float32 result (240 kB for a default window) in a slot of memory
shared with the parent (a whole long record, decoded for windows, comes through the pipe instead); it works up to RESULT_SLOTS records ahead of its caller (docs/performance.md).

The wire is `protocol.py`, the child `child.py`, the per-process pool `pool.py`.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import json
import math
import mmap
import os
import select
import signal
import subprocess
import sys
import time
import weakref

import numpy as np

from ecg_common.cpu_time import process_cpu_seconds
from ecg_common.rejections import DecodeError, Reason
from ecg_common.schema import DEFAULT_GEOMETRY, Geometry
from ecg_decode.decoding.quality import FLAGS
from ecg_decode.decoding.record_info import Decoded, RecordInfo
from ecg_decode.sandbox.protocol import (CHILD_ENV, FRAME, MAX_METADATA_BYTES, MAX_RESULT_BYTES, RESULT_BYTES,
                                         RESULT_DTYPE, STARTUP_TIMEOUT_S, ChildGone, DecodeLimits, LocalFile, Timeout,
                                         WfdbBytes, fits_in_slot, pack, parse_metadata, slot_view)


def _signal_name(returncode: int | None) -> str:
    if returncode is None or returncode >= 0:
        return f"exit status {returncode}"
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


PIPE_BYTES = 1 << 20
"""Pipe capacity asked for (Linux's default limit for unprivileged processes): a whole request (a file
of a few hundred kB) or result (240 kB) then fits in one write, instead of 64 kB at a time with a
context switch each. It is also what lets a second request wait in the pipe (see `DecoderProcess`)."""

QUEUEABLE_REQUEST_BYTES = PIPE_BYTES // 2
"""Requests may wait behind another only while all of them fit in the request pipe together, so the
parent's write never blocks on a child that is still busy (a hang would then block the parent,
timeout and all). A `LocalFile` request is a few hundred bytes; a file's bytes (remote storage) are
a few hundred kB, so those queue two deep at most."""

RESULT_SLOTS = 64
"""Decoded records the child may be ahead of its caller: results go to slots of memory shared with
the parent (64 x 240 kB), not through the pipe (which holds four). Deeper than a batch (32), so the
child keeps decoding while its thread takes a whole batch through tf.Transform and the writer."""


def _widen_pipes(process: subprocess.Popen) -> bool:
    """Best effort; True when both pipes hold PIPE_BYTES. Where the OS refuses (another OS, a lower
    limit), the default pipes still work, one request at a time."""
    widened = True
    for stream in (process.stdin, process.stdout):
        try:
            widened &= fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES) >= PIPE_BYTES
        except (OSError, AttributeError):
            widened = False
    return widened

@dataclasses.dataclass
class _Request:
    """One pending request: its frame (kept to send it again to a fresh child), its size in the pipe
    (`_request_size`), since when the child may be working on it, and the result slot it will fill."""

    frame: list[bytes | memoryview]
    size: int
    submitted: float
    slot: int | None
    geometry: Geometry = DEFAULT_GEOMETRY
    whole_record: bool = False
    """What the result must look like: `geometry.shape`, or with `whole_record` at least one window long."""
    assess_quality: bool = False
    """Whether the result must carry the record's quality flags."""


def _shared_slots() -> tuple[int, mmap.mmap] | None:
    """RESULT_SLOTS result slots in anonymous shared memory (a file descriptor the child inherits and
    maps); None where the OS has no memfd (results then travel through the pipe, two at a time)."""
    if not hasattr(os, "memfd_create"):
        return None
    fd = os.memfd_create("ecg-decoder-results")
    os.ftruncate(fd, RESULT_SLOTS * RESULT_BYTES)
    return fd, mmap.mmap(fd, RESULT_SLOTS * RESULT_BYTES)


_FIXED_METADATA_BYTES = 512
"""More than a request's frame header, JSON keys, numbers and slot take (the rest is measured)."""


def _json_length(text: str | None) -> int:
    """len(json.dumps(text)), without encoding the common case: printable ASCII JSON leaves as it is."""
    if text is None:
        return 4
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return len(text) + 2
    return len(json.dumps(text))


def _request_size(data: bytes | LocalFile | WfdbBytes, header_text: str | None) -> int:
    """At least the bytes the request puts in the pipe: a LocalFile's names or a file's bytes, plus
    its header text, as JSON escapes them (a hostile header may grow several times over)."""
    if isinstance(data, LocalFile):
        variable = _json_length(data.path) + _json_length(data.header_path) + _json_length(data.root)
    elif isinstance(data, WfdbBytes):
        variable = sum(_json_length(name) + len(content) + 24 for name, content in data.files.items())
    else:
        variable = len(data)
    return variable + _json_length(header_text) + _FIXED_METADATA_BYTES


class DecoderProcess:
    """One child process; `decode` is the in-process `decode_record`, with a time and memory limit.

    `submit` and `collect` split `decode` in two, so the child decodes the next files while the
    caller does something else (takes earlier records down the rest of their path): requests queue
    in the pipe (`has_room`) and results wait in shared memory slots. Results come back in
    submission order. When the child hangs or dies, the request it was decoding is the oldest
    pending one: that one is rejected, and the requests queued behind it are sent again to a fresh
    child.

    Not thread-safe: a `DecoderPool` lends each one to one thread at a time. The child is started
    on first use and again after it was killed or died.
    """

    def __init__(self, limits: DecodeLimits, command: list[str] | None = None):
        self._limits = limits
        self._command = command or [sys.executable, "-m", "ecg_decode.sandbox.child", str(limits.memory_mb)]
        self._process: subprocess.Popen | None = None
        self._can_queue = False
        self._pending: collections.deque[_Request] = collections.deque()
        self._queued_bytes = 0
        """The sizes of the pending requests, together (`submit` adds, `_forget` takes away)."""
        self._slots = _shared_slots()
        self._free_slots = list(range(RESULT_SLOTS)) if self._slots else []
        if self._slots:
            weakref.finalize(self, os.close, self._slots[0])

    def decode(self, data: bytes | LocalFile | WfdbBytes, header_text: str | None, *, default_sampling_rate: float,
               pad_short: bool, geometry: Geometry = DEFAULT_GEOMETRY) -> np.ndarray | DecodeError:
        """Decodes one file and waits for it (nothing else may be pending)."""
        result = self.decode_with_info(data, header_text, default_sampling_rate=default_sampling_rate,
                                       pad_short=pad_short, geometry=geometry)
        return result if isinstance(result, DecodeError) else result.ecg

    def decode_with_info(self, data: bytes | LocalFile | WfdbBytes, header_text: str | None, *,
                         default_sampling_rate: float, pad_short: bool, geometry: Geometry = DEFAULT_GEOMETRY,
                         whole_record: bool = False) -> Decoded | DecodeError:
        """`decode` with the record's `RecordInfo` beside the array (and, with `whole_record`, all of it)."""
        if self._pending:
            raise RuntimeError("DecoderProcess.decode with results pending: collect them first")
        self.submit(data, header_text, default_sampling_rate=default_sampling_rate, pad_short=pad_short,
                    geometry=geometry, whole_record=whole_record)
        return self.collect_decoded()

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def max_pending(self) -> int:
        """How many requests may be pending at once (with small enough requests)."""
        if self._slots:
            return RESULT_SLOTS
        return 2 if self._can_queue else 1

    def has_room(self, data: bytes | LocalFile | WfdbBytes, header_text: str | None) -> bool:
        """Whether `data` (and `header_text`) can be submitted now without waiting for a result first."""
        if not self._pending:
            return True
        if not (self._can_queue and len(self._pending) < self.max_pending):
            return False
        return self._queued_bytes + _request_size(data, header_text) <= QUEUEABLE_REQUEST_BYTES

    def submit(self, data: bytes | LocalFile | WfdbBytes, header_text: str | None, *, default_sampling_rate: float,
               pad_short: bool, geometry: Geometry = DEFAULT_GEOMETRY, whole_record: bool = False,
               assess_quality: bool = False) -> None:
        """Sends one file (its bytes and header text, or a `LocalFile` for the child to read) to the
        child; its result is what a later `collect` returns in turn: `geometry.shape`, or with
        `whole_record` the whole record (at least one window; through the pipe when beyond a slot).
        With `assess_quality` the child also assesses the (whole) record: `Decoded.flags`."""
        if not self.has_room(data, header_text):
            raise RuntimeError("DecoderProcess.submit without room: collect a pending result first")
        slot = self._free_slots.pop() if self._free_slots else None
        metadata = {"header": header_text, "default_sampling_rate": default_sampling_rate, "pad_short": pad_short,
                    "slot": slot, "geometry": geometry.to_json(), "whole_record": whole_record,
                    "assess": assess_quality}
        if isinstance(data, LocalFile):
            metadata.update(vars(data))  # its fields are strings and numbers: no deep copy (dataclasses.asdict)
        if isinstance(data, WfdbBytes):
            metadata["signal_files"] = data.manifest()
        payload = b"" if isinstance(data, LocalFile) else data.payload() if isinstance(data, WfdbBytes) else data
        frame = pack(metadata, payload)
        request = _Request(frame, _request_size(data, header_text), time.monotonic(), slot, geometry, whole_record,
                           assess_quality)
        self._send_with_restart(request)
        self._pending.append(request)
        self._queued_bytes += request.size

    def collect(self) -> np.ndarray | DecodeError:
        """The result of the oldest pending request (a `DecodeError` when the child hung or died on it)."""
        result = self.collect_decoded()
        return result if isinstance(result, DecodeError) else result.ecg

    def collect_decoded(self) -> Decoded | DecodeError:
        """`collect` with the record's `RecordInfo` (sent by the child in the result's metadata)."""
        oldest = self._pending[0]
        process = self._process
        try:
            metadata, payload = self._receive(process, oldest.submitted + self._limits.timeout_s)
        except Timeout:
            return self._lost_oldest(DecodeError(Reason.TIMEOUT, f"decoding took longer than "
                                                                 f"{self._limits.timeout_s:g} s; the decoder was stopped"))
        except ChildGone:
            self.close(keep_pending=True)  # reaps it, for its exit status
            return self._lost_oldest(DecodeError(Reason.DECODER_CRASHED, f"the decoder process died on this file "
                                                                         f"({_signal_name(process.returncode)})"))
        self._forget(self._pending.popleft())
        if self._pending:  # the child starts on the next one now, so its time limit starts now too
            self._pending[0].submitted = max(self._pending[0].submitted, time.monotonic())
        return self._result(metadata, payload, oldest)

    def _forget(self, request: _Request) -> None:
        self._queued_bytes -= request.size
        if request.slot is not None:
            self._free_slots.append(request.slot)

    def _lost_oldest(self, error: DecodeError) -> DecodeError:
        """The child was stopped or died on the oldest request: reject it, resend the others to a fresh child."""
        self.close(keep_pending=True)
        self._forget(self._pending.popleft())
        queued, self._pending = list(self._pending), collections.deque()
        for request in queued:
            request.submitted = time.monotonic()
            self._send_with_restart(request)
            self._pending.append(request)
        return error

    def _send_with_restart(self, request: _Request) -> None:
        for attempt in range(2):
            process = self._running()
            try:
                self._send(process, request.frame)
                return
            except ChildGone:
                if self._pending:
                    # It died on a pending request: `collect` finds out, rejects that one and resends this.
                    return
                # It died between records (not this record's doing): start a fresh one, once.
                self.close()
                if attempt == 1:
                    raise RuntimeError(f"the decoder process keeps dying ({_signal_name(process.returncode)})") from None

    def close(self, keep_pending: bool = False) -> None:
        """Stops the child (it is started again on the next `submit`); forgets pending requests unless
        `keep_pending` (the caller resends them)."""
        if not keep_pending:
            while self._pending:
                self._forget(self._pending.popleft())
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            with contextlib.suppress(OSError):
                stream.close()

    def cpu_seconds(self) -> float:
        """User + system CPU time of the current child (0 when there is none, or off Linux)."""
        return process_cpu_seconds(self._process.pid) if self._process is not None else 0.0

    def _running(self) -> subprocess.Popen:
        if self._process is not None and self._process.poll() is None:
            return self._process
        self.close(keep_pending=True)
        env = {**os.environ, **CHILD_ENV}
        shared = (self._slots[0],) if self._slots else ()
        process = subprocess.Popen([*self._command, *map(str, shared)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   env=env, close_fds=True, pass_fds=shared)
        self._process = process
        self._can_queue = _widen_pipes(process)
        try:
            ready, _ = self._receive(process, time.monotonic() + STARTUP_TIMEOUT_S)
        except (Timeout, ChildGone):
            self.close()
            raise RuntimeError(f"the decoder process did not start: {' '.join(self._command)}") from None
        if not ready.get("ready"):
            self.close()
            raise RuntimeError("the decoder process started but did not report ready")
        return process

    @staticmethod
    def _send(process: subprocess.Popen, frame: list[bytes | memoryview]) -> None:
        fd = process.stdin.fileno()
        try:
            for part in frame:
                view = memoryview(part)
                while view:
                    view = view[os.write(fd, view):]
        except (BrokenPipeError, ConnectionResetError, ValueError):
            raise ChildGone() from None

    @staticmethod
    def _read(fd: int, size: int, deadline: float) -> bytearray:
        """Exactly `size` bytes, read straight into one buffer (no copy per chunk)."""
        data = bytearray(size)
        view, filled = memoryview(data), 0
        while filled < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise Timeout()
            count = os.readv(fd, [view[filled:]])
            if not count:
                raise ChildGone()
            filled += count
        return data

    def _receive(self, process: subprocess.Popen, deadline: float) -> tuple[dict, bytearray]:
        fd = process.stdout.fileno()
        meta_size, payload_size = FRAME.unpack(self._read(fd, FRAME.size, deadline))
        if meta_size > MAX_METADATA_BYTES or payload_size > MAX_RESULT_BYTES:
            raise ChildGone()  # not our protocol: treat the child as broken
        return parse_metadata(self._read(fd, meta_size, deadline)), self._read(fd, payload_size, deadline)

    def _result(self, metadata: dict, payload: bytearray, request: _Request) -> Decoded | DecodeError:
        """The record in the response's payload, or copied out of its slot (which is then reused),
        with the `RecordInfo` and the flags of the response's metadata (checked: the child is not trusted)."""
        if "reason" in metadata:
            return DecodeError(str(metadata["reason"]), str(metadata.get("detail", "")))
        malformed = DecodeError(Reason.DECODER_CRASHED, "the decoder process returned a malformed result")
        info = RecordInfo.from_json(metadata.get("info"))
        shape = _expected_shape(metadata.get("shape"), request)
        flags = _expected_flags(metadata.get("flags"), request) if request.assess_quality else None
        if shape is None or info is None or (request.assess_quality and flags is None):
            return malformed
        if metadata.get("slot") is not None:
            slot = request.slot
            if metadata["slot"] != slot or slot is None or payload or not fits_in_slot(shape):
                return malformed
            return Decoded(slot_view(self._slots[1], slot, shape).copy(), info, flags)
        if len(payload) != math.prod(shape) * RESULT_DTYPE.itemsize:
            return malformed
        return Decoded(np.frombuffer(payload, dtype=RESULT_DTYPE).reshape(shape), info, flags)


def _expected_flags(flags: object, request: _Request) -> dict[str, tuple[str, ...]] | None:
    """The quality flags as `quality.assess` gives them (flag -> lead names, in the geometry's order),
    or None when `flags` is not such a mapping of known flags to leads of the request's geometry."""
    if not isinstance(flags, dict) or not set(flags) <= set(FLAGS):
        return None
    names = request.geometry.lead_names
    checked = {}
    for flag in FLAGS:
        leads = flags.get(flag)
        if leads is None:
            continue
        if not (isinstance(leads, list) and leads and all(isinstance(lead, str) and lead in names for lead in leads)):
            return None
        checked[flag] = tuple(lead for lead in names if lead in leads)
    return checked


def _expected_shape(shape: object, request: _Request) -> tuple[int, int] | None:
    """The result's (samples, leads) when it is what `request` asked for, else None."""
    if not (isinstance(shape, list) and len(shape) == 2 and all(type(n) is int for n in shape)):
        return None
    samples, leads = shape
    window, num_leads = request.geometry.shape
    if leads != num_leads or (samples != window if not request.whole_record else samples < window):
        return None
    return samples, leads
