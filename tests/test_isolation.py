"""The isolated decoder (`beam_pipeline.isolation`): same results as in-process decoding, and a file
that hangs, crashes or bloats the decoder costs one rejection, never the worker."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hostile_files as hf
from beam_pipeline.decode import decode_record
from beam_pipeline.isolation import DecodeLimits, DecoderPool, DecoderProcess
from beam_pipeline.rejections import DecodeError, Reason

TESTS = Path(__file__).resolve().parent
MISBEHAVING = [sys.executable, str(TESTS / "misbehaving_decoder.py")]
OPTIONS = dict(default_sampling_rate=500.0, pad_short=False)


@pytest.fixture
def misbehaving():
    decoder = DecoderProcess(DecodeLimits(timeout_s=5, memory_mb=512), command=[*MISBEHAVING, "512"])
    yield decoder
    decoder.close()


def test_same_result_as_in_process():
    decoder = DecoderProcess(DecodeLimits())
    try:
        for mat, header in [(hf.contest(1), None), (hf.cinc_val(2), hf.wfdb_header(rate=250, num_samples=5000)),
                            (hf.cinc_val(3), hf.wfdb_header()), (b"garbage", None)]:
            isolated = decoder.decode(mat, header, **OPTIONS)
            local = decode_record(mat, header)
            if isinstance(local, DecodeError):
                assert isolated == local
            else:
                np.testing.assert_array_equal(isolated, local)
    finally:
        decoder.close()


def test_a_hanging_decode_is_rejected_and_the_decoder_replaced(misbehaving):
    result = misbehaving.decode(b"hang", None, **OPTIONS)
    assert isinstance(result, DecodeError) and result.reason == Reason.TIMEOUT
    assert result.detail.startswith("decoding took longer than 5 s")
    assert isinstance(misbehaving.decode(hf.contest(4), None, **OPTIONS), np.ndarray)  # a fresh child


def test_a_crashing_decode_is_rejected_and_the_decoder_replaced(misbehaving):
    result = misbehaving.decode(b"crash", None, **OPTIONS)
    assert result == DecodeError(Reason.DECODER_CRASHED, "the decoder process died on this file (SIGSEGV)")
    assert isinstance(misbehaving.decode(hf.contest(5), None, **OPTIONS), np.ndarray)


def test_an_allocation_beyond_the_memory_limit_is_too_large(misbehaving):
    result = misbehaving.decode(b"allocate", None, **OPTIONS)
    assert isinstance(result, DecodeError) and result.reason == Reason.TOO_LARGE
    assert isinstance(misbehaving.decode(hf.contest(6), None, **OPTIONS), np.ndarray)  # the same child lives on


def test_a_child_that_died_between_records_is_restarted_without_rejecting(misbehaving):
    assert isinstance(misbehaving.decode(hf.contest(7), None, **OPTIONS), np.ndarray)
    os.kill(misbehaving._process.pid, signal.SIGKILL)  # e.g. the kernel's OOM killer
    misbehaving._process.wait()
    assert isinstance(misbehaving.decode(hf.contest(8), None, **OPTIONS), np.ndarray)


def test_the_pool_lends_one_decoder_per_concurrent_user():
    pool = DecoderPool(DecodeLimits())
    try:
        with pool.lease() as first, pool.lease() as second:
            assert first is not second
        with pool.lease() as again:
            assert again in (first, second)  # reused, not a new process
    finally:
        pool.close()


_RSS_PROBE = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
import hostile_files as hf
from beam_pipeline.decode import decode_record
from beam_pipeline.isolation import DecodeLimits, DecoderProcess

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

files = {"terabytes_v5": hf.v5_claiming([2**31 - 1, 2**31 - 1]), "terabytes_v5_12": hf.v5_claiming([12, 2**31 - 1]),
         "zip_bomb": hf.zip_bomb(1 << 30),
         "hdf5_array_dtype": hf.v73(lambda f: f.create_dataset("data", shape=(12, 5000), dtype=("f8", (100, 100)))),
         "hdf5_huge_chunk": hf.v73(lambda f: f.create_dataset("data", shape=(12, 5000), maxshape=(None, None),
                                                               dtype="f8", chunks=(12, 2**22), compression="gzip",
                                                               data=hf.signal(1).T)),
         "huge_resample_ratio": hf.cinc_val(1)}
header = {"huge_resample_ratio": hf.wfdb_header(rate=50.0011, num_samples=5000)}
baseline = peak_mb()
reasons = {name: getattr(decode_record(mat, header.get(name)), "reason", "decoded") for name, mat in files.items()}
in_process = peak_mb() - baseline
decoder = DecoderProcess(DecodeLimits(memory_mb=1024))
cell = decoder.decode(hf.cell_bomb(40_000), None, default_sampling_rate=500.0, pad_short=False)
with open(f"/proc/{decoder._process.pid}/status") as status:  # the child's own peak (getrusage's
    child = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:")) / 1024  # would count the fork)
decoder.close()
print(json.dumps({"reasons": reasons, "in_process_growth_mb": in_process, "cell_bomb": cell.reason,
                  "child_peak_mb": child}))
"""


def test_pathological_files_are_refused_with_bounded_memory():
    """In a fresh process: files declaring terabytes, a 1 GB zip bomb, an HDF5 element type or chunk that
    multiplies the allocation, a resampling ratio near the limit, and a v5 struct whose empty cell array
    scipy would allocate at 12.8 GB. Peak RSS: getrusage in-process, the child's VmHWM; a hang fails on the timeout."""
    result = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(TESTS)], capture_output=True, text=True,
                            timeout=300, check=True)
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["reasons"] == {"terabytes_v5": Reason.TOO_LARGE, "terabytes_v5_12": Reason.TOO_LARGE,
                                "zip_bomb": Reason.TOO_LARGE, "hdf5_array_dtype": Reason.BAD_DTYPE,
                                "hdf5_huge_chunk": Reason.TOO_LARGE, "huge_resample_ratio": "decoded"}
    assert probe["in_process_growth_mb"] < 100, probe  # refused before allocating
    assert probe["cell_bomb"] == Reason.TOO_LARGE
    assert probe["child_peak_mb"] < 400, probe  # the 12.8 GB allocation was refused by RLIMIT_AS
