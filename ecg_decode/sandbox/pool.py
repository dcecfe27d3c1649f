"""The decoder children of one worker process: one per thread that decodes at the same time, kept
across bundles, stages and both passes, and stopped when the process exits."""
from __future__ import annotations

import atexit
import threading

from ecg_decode.sandbox.parent import DecoderProcess
from ecg_decode.sandbox.protocol import DecodeLimits


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
