"""A decoder child for tests: the real one, except for three magic payloads that hang it, crash it
(SIGSEGV, as a libhdf5 bug would) or make it allocate 8 GB. Started by `DecoderProcess(command=...)`."""
import os
import signal
import sys
import time

from ecg_decode.sandbox import child as isolation

_real = isolation._decode_request


def _misbehaving(metadata: dict, payload: bytes, slots=None):
    if payload == b"hang":
        time.sleep(3600)
    if payload == b"crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    if payload == b"allocate":
        bytearray(8 << 30)
    return _real(metadata, payload, slots)


isolation._decode_request = _misbehaving
isolation.serve(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None)
