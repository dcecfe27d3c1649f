"""Decoding in a separate, resource-limited process: a hostile file costs one rejection, never a worker.

Why a process: the parsers (scipy.io, libhdf5) are C code fed bytes that arrive from outside. The
size checks in `decode.py` cover what a file declares at the top level, but a crafted file can still
make a parser allocate gigabytes (a 300-byte v5 struct holding an empty 30000 x 30000 cell array
made scipy allocate 7 GB and take 19 s), loop, or crash (libhdf5 has a history of crashes on
crafted files). A Python thread can be neither stopped nor protected from a segfault; a child
process can be limited (`RLIMIT_AS`), timed out, killed and replaced.

Cost: one child per thread that decodes at the same time (started once, ~0.5 s and ~70 MB, then
reused across records, stages and both passes). Per record, the child gets a local file's name (or
a remote file's bytes) and leaves the 240 kB float32 result in a slot of memory shared with the
parent; it works up to RESULT_SLOTS records ahead of its caller (README, Performance).

Protocol: length-prefixed frames of JSON metadata plus raw bytes, in both directions. Nothing is
pickled, so neither side can make the other run code. The child's real stdout carries only frames:
anything a C library prints goes to stderr.

    python -m beam_pipeline.isolation MEMORY_MB [SLOTS_FD]   # the child; the parent starts it
"""
from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import fcntl
import json
import mmap
import os
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from typing import BinaryIO

import numpy as np

from beam_pipeline.rejections import DecodeError, Reason
from beam_pipeline.schema import ECG_SHAPE

DEFAULT_TIMEOUT_S = 60.0
"""Per-file wall-clock limit. Decoding a real record takes milliseconds and the slowest legitimate
case measured (a one-hour record, or a 31 kHz one resampled) well under a second."""

DEFAULT_MEMORY_MB = 1024
"""Address space one decode may add to the child's own. The largest accepted record (one hour,
float64, `decode.MAX_ELEMENTS`) is 173 MB; parsing it needs a few copies of that."""

STARTUP_TIMEOUT_S = 120.0
"""How long a new child may take to import numpy, scipy and h5py before the environment is deemed broken."""

_FRAME = struct.Struct("<IQ")  # metadata length, payload length
_MAX_METADATA_BYTES = 1 << 20
_RESULT_DTYPE = np.dtype("<f4")
_RESULT_BYTES = int(np.prod(ECG_SHAPE)) * _RESULT_DTYPE.itemsize
_CHILD_ENV = {**{name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")},
              "HDF5_PLUGIN_PRELOAD": "::"}
"""The decoder needs no BLAS threads (each would also reserve address space under the limit), and
`::` tells libhdf5 never to load a filter plugin, so a file naming one cannot load a shared library."""


@dataclasses.dataclass(frozen=True)
class DecodeLimits:
    """What one file's decoding may cost before it is rejected (`timeout`, `too_large`)."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB


class _ChildGone(Exception):
    """The child closed its pipe or died."""


class _Timeout(Exception):
    """The child did not answer within the limit."""


# --- framing (both sides) --------------------------------------------------------------------


def _pack(metadata: dict, payload: bytes | memoryview = b"") -> list[bytes | memoryview]:
    meta = json.dumps(metadata).encode("utf-8")
    return [_FRAME.pack(len(meta), len(payload)), meta, payload]


def _parse_metadata(raw: bytes) -> dict:
    metadata = json.loads(raw.decode("utf-8"))
    if not isinstance(metadata, dict):
        raise ValueError("frame metadata is not a JSON object")
    return metadata


def _slot_view(slots: mmap.mmap, slot: int) -> np.ndarray:
    """Slot `slot` of the shared result memory, as the (samples, leads) float32 array it holds."""
    return np.frombuffer(slots, dtype=_RESULT_DTYPE, count=int(np.prod(ECG_SHAPE)),
                         offset=slot * _RESULT_BYTES).reshape(ECG_SHAPE)


# --- the child -------------------------------------------------------------------------------


def _read_exactly_blocking(stream: BinaryIO, size: int) -> bytes:
    """A buffered read of `size` bytes; EOF (the parent went away) ends the child."""
    data = stream.read(size)
    if data is None or len(data) != size:
        raise _ChildGone("parent closed the pipe")
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
    """A `LocalFile` request: the file and its header, read here within the limits the parent sent."""
    from beam_pipeline.file_limits import TooLarge, read_at_most

    path, header_path = str(metadata["path"]), metadata.get("header_path")
    try:
        with open(path, "rb") as handle:
            payload = read_at_most(handle, int(metadata["max_bytes"]), path)
        if header_path is None:
            return payload, None
        with open(str(header_path), "rb") as handle:
            return payload, read_at_most(handle, int(metadata["max_header_bytes"]), header_path).decode("utf-8", "replace")
    except TooLarge as error:
        return DecodeError(Reason.TOO_LARGE, str(error))
    except OSError as error:  # permissions, vanished file
        return DecodeError(Reason.UNREADABLE, f"{type(error).__name__}: {error}")


def _decode_request(metadata: dict, payload: bytes, slots: mmap.mmap | None = None) -> tuple[dict, bytes]:
    """The response to one request: an error, or the decoded record, in the slot the parent named
    (when it shares them) or else as the response's payload."""
    from beam_pipeline.decode import decode_record

    header = metadata.get("header")
    if "path" in metadata:
        read = _read_local(metadata)
        if isinstance(read, DecodeError):
            return {"reason": read.reason, "detail": read.detail}, b""
        payload, header = read
    try:
        result = decode_record(payload, header,
                               default_sampling_rate=float(metadata["default_sampling_rate"]),
                               pad_short=bool(metadata["pad_short"]))
    except MemoryError:  # decode_record catches its own; this is the last resort around it
        result = DecodeError(Reason.TOO_LARGE, "ran out of memory while decoding the file")
    if isinstance(result, DecodeError):
        return {"reason": result.reason, "detail": result.detail}, b""
    slot = metadata.get("slot")
    if slots is not None and isinstance(slot, int) and 0 <= slot < len(slots) // _RESULT_BYTES:
        _slot_view(slots, slot)[...] = result
        return {"shape": list(result.shape), "slot": slot}, b""
    return {"shape": list(result.shape)}, np.ascontiguousarray(result, dtype=_RESULT_DTYPE).tobytes()


def serve(memory_mb: int, slots_fd: int | None = None) -> None:
    """The child's loop: one request frame in, one response frame out, until the parent goes away.
    `slots_fd`: the parent's shared result slots (see `DecoderProcess`), mapped before the memory limit."""
    from beam_pipeline import decode  # noqa: F401 - import the parsers before measuring the baseline

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash must not drop a core file in the cwd
    requests = os.fdopen(os.dup(0), "rb")
    responses = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints from C libraries go to stderr, never into the protocol
    slots = mmap.mmap(slots_fd, 0) if slots_fd is not None else None
    _limit_address_space(memory_mb)
    responses.writelines(_pack({"ready": True}))
    responses.flush()
    while True:
        try:
            meta_size, payload_size = _FRAME.unpack(_read_exactly_blocking(requests, _FRAME.size))
            metadata = _parse_metadata(_read_exactly_blocking(requests, meta_size))
            payload = _read_exactly_blocking(requests, payload_size)
            response, data = _decode_request(metadata, payload, slots)
            del payload
        except _ChildGone:
            return
        except MemoryError:
            response, data = {"reason": Reason.TOO_LARGE, "detail": "ran out of memory reading the file"}, b""
        responses.writelines(_pack(response, data))
        responses.flush()


# --- the parent ------------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process `pid` has used so far, from /proc (0 once it is gone, or off Linux)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


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


@dataclasses.dataclass(frozen=True)
class LocalFile:
    """A file on this machine's file system, which the child reads itself (within the given limits)
    instead of the parent reading it and copying its bytes through the pipe."""

    path: str
    header_path: str | None
    max_bytes: int
    max_header_bytes: int


@dataclasses.dataclass
class _Request:
    """One pending request: its frame (kept to send it again to a fresh child), its size in the pipe
    (`_request_size`), since when the child may be working on it, and the result slot it will fill."""

    frame: list[bytes | memoryview]
    size: int
    submitted: float
    slot: int | None


def _shared_slots() -> tuple[int, mmap.mmap] | None:
    """RESULT_SLOTS result slots in anonymous shared memory (a file descriptor the child inherits and
    maps); None where the OS has no memfd (results then travel through the pipe, two at a time)."""
    if not hasattr(os, "memfd_create"):
        return None
    fd = os.memfd_create("ecg-decoder-results")
    os.ftruncate(fd, RESULT_SLOTS * _RESULT_BYTES)
    return fd, mmap.mmap(fd, RESULT_SLOTS * _RESULT_BYTES)


_FIXED_METADATA_BYTES = 512
"""More than a request's frame header, JSON keys, numbers and slot take (the rest is measured)."""


def _request_size(data: bytes | LocalFile, header_text: str | None) -> int:
    """At least the bytes the request puts in the pipe: a LocalFile's names or a file's bytes, plus
    its header text, as JSON escapes them (a hostile header may grow several times over)."""
    if isinstance(data, LocalFile):
        variable = len(json.dumps(data.path)) + len(json.dumps(data.header_path))
    else:
        variable = len(data)
    return variable + len(json.dumps(header_text)) + _FIXED_METADATA_BYTES


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
        self._command = command or [sys.executable, "-m", "beam_pipeline.isolation", str(limits.memory_mb)]
        self._process: subprocess.Popen | None = None
        self._can_queue = False
        self._pending: collections.deque[_Request] = collections.deque()
        self._slots = _shared_slots()
        self._free_slots = list(range(RESULT_SLOTS)) if self._slots else []
        if self._slots:
            weakref.finalize(self, os.close, self._slots[0])

    def decode(self, data: bytes | LocalFile, header_text: str | None, *, default_sampling_rate: float,
               pad_short: bool) -> np.ndarray | DecodeError:
        """Decodes one file and waits for it (nothing else may be pending)."""
        if self._pending:
            raise RuntimeError("DecoderProcess.decode with results pending: collect them first")
        self.submit(data, header_text, default_sampling_rate=default_sampling_rate, pad_short=pad_short)
        return self.collect()

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def max_pending(self) -> int:
        """How many requests may be pending at once (with small enough requests)."""
        if self._slots:
            return RESULT_SLOTS
        return 2 if self._can_queue else 1

    def has_room(self, data: bytes | LocalFile, header_text: str | None) -> bool:
        """Whether `data` (and `header_text`) can be submitted now without waiting for a result first."""
        if not self._pending:
            return True
        queued_bytes = sum(request.size for request in self._pending) + _request_size(data, header_text)
        return self._can_queue and len(self._pending) < self.max_pending and queued_bytes <= QUEUEABLE_REQUEST_BYTES

    def submit(self, data: bytes | LocalFile, header_text: str | None, *, default_sampling_rate: float,
               pad_short: bool) -> None:
        """Sends one file (its bytes and header text, or a `LocalFile` for the child to read) to the
        child; its result is what a later `collect` returns in turn."""
        if not self.has_room(data, header_text):
            raise RuntimeError("DecoderProcess.submit without room: collect a pending result first")
        slot = self._free_slots.pop() if self._free_slots else None
        metadata = {"header": header_text, "default_sampling_rate": default_sampling_rate, "pad_short": pad_short,
                    "slot": slot}
        if isinstance(data, LocalFile):
            metadata.update(dataclasses.asdict(data))
        frame = _pack(metadata, b"" if isinstance(data, LocalFile) else data)
        request = _Request(frame, _request_size(data, header_text), time.monotonic(), slot)
        self._send_with_restart(request)
        self._pending.append(request)

    def collect(self) -> np.ndarray | DecodeError:
        """The result of the oldest pending request (a `DecodeError` when the child hung or died on it)."""
        oldest = self._pending[0]
        process = self._process
        try:
            metadata, payload = self._receive(process, oldest.submitted + self._limits.timeout_s)
        except _Timeout:
            return self._lost_oldest(DecodeError(Reason.TIMEOUT, f"decoding took longer than "
                                                                 f"{self._limits.timeout_s:g} s; the decoder was stopped"))
        except _ChildGone:
            self.close(keep_pending=True)  # reaps it, for its exit status
            return self._lost_oldest(DecodeError(Reason.DECODER_CRASHED, f"the decoder process died on this file "
                                                                         f"({_signal_name(process.returncode)})"))
        self._forget(self._pending.popleft())
        if self._pending:  # the child starts on the next one now, so its time limit starts now too
            self._pending[0].submitted = max(self._pending[0].submitted, time.monotonic())
        return self._result(metadata, payload, oldest.slot)

    def _forget(self, request: _Request) -> None:
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
            except _ChildGone:
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
        env = {**os.environ, **_CHILD_ENV}
        shared = (self._slots[0],) if self._slots else ()
        process = subprocess.Popen([*self._command, *map(str, shared)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   env=env, close_fds=True, pass_fds=shared)
        self._process = process
        self._can_queue = _widen_pipes(process)
        try:
            ready, _ = self._receive(process, time.monotonic() + STARTUP_TIMEOUT_S)
        except (_Timeout, _ChildGone):
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
            raise _ChildGone() from None

    @staticmethod
    def _read(fd: int, size: int, deadline: float) -> bytearray:
        """Exactly `size` bytes, read straight into one buffer (no copy per chunk)."""
        data = bytearray(size)
        view, filled = memoryview(data), 0
        while filled < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise _Timeout()
            count = os.readv(fd, [view[filled:]])
            if not count:
                raise _ChildGone()
            filled += count
        return data

    def _receive(self, process: subprocess.Popen, deadline: float) -> tuple[dict, bytearray]:
        fd = process.stdout.fileno()
        meta_size, payload_size = _FRAME.unpack(self._read(fd, _FRAME.size, deadline))
        if meta_size > _MAX_METADATA_BYTES or payload_size > _RESULT_BYTES:
            raise _ChildGone()  # not our protocol: treat the child as broken
        return _parse_metadata(self._read(fd, meta_size, deadline)), self._read(fd, payload_size, deadline)

    def _result(self, metadata: dict, payload: bytearray, slot: int | None) -> np.ndarray | DecodeError:
        """The record in the response's payload, or copied out of its slot (which is then reused)."""
        if "reason" in metadata:
            return DecodeError(str(metadata["reason"]), str(metadata.get("detail", "")))
        malformed = DecodeError(Reason.DECODER_CRASHED, "the decoder process returned a malformed result")
        if tuple(metadata.get("shape", ())) != ECG_SHAPE:
            return malformed
        if metadata.get("slot") is not None:
            if metadata["slot"] != slot or slot is None or payload:
                return malformed
            return _slot_view(self._slots[1], slot).copy()
        if len(payload) != _RESULT_BYTES:
            return malformed
        return np.frombuffer(payload, dtype=_RESULT_DTYPE).reshape(ECG_SHAPE)


class DecoderPool:
    """`DecoderProcess`es shared by the threads of one worker process.

    A thread leases one for a record or a bundle and gives it back, so there are as many children as
    threads that decode at the same time, and they live across bundles, stages and both passes.
    """

    def __init__(self, limits: DecodeLimits):
        self._limits = limits
        self._idle: list[DecoderProcess] = []
        self._all: list[DecoderProcess] = []
        self._lock = threading.Lock()

    def acquire(self) -> DecoderProcess:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            decoder = DecoderProcess(self._limits)
            self._all.append(decoder)
            return decoder

    def release(self, decoder: DecoderProcess) -> None:
        if decoder.pending:  # the borrower stopped half-way (an exception downstream): start clean
            decoder.close()
        with self._lock:
            self._idle.append(decoder)

    def cpu_seconds(self) -> float:
        """CPU time used so far by the children alive now (Linux; 0 elsewhere)."""
        with self._lock:
            decoders = list(self._all)
        return sum(decoder.cpu_seconds() for decoder in decoders)

    def close(self) -> None:
        """Stops every child, leased or idle (at exit, a bundle that failed may not have given its back)."""
        with self._lock:
            decoders, self._idle, self._all = self._all, [], []
        for decoder in decoders:
            decoder.close()


_pools: dict[DecodeLimits, DecoderPool] = {}
_pools_lock = threading.Lock()


def pool_for(limits: DecodeLimits) -> DecoderPool:
    """The process-wide pool for `limits` (children are stopped when the process exits)."""
    with _pools_lock:
        if limits not in _pools:
            _pools[limits] = DecoderPool(limits)
        return _pools[limits]


def decoder_cpu_seconds() -> float:
    """CPU time used so far by this process's live decoder children, all pools."""
    with _pools_lock:
        pools = list(_pools.values())
    return sum(pool.cpu_seconds() for pool in pools)


@atexit.register
def _close_pools() -> None:
    for pool in list(_pools.values()):
        pool.close()


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None)
