"""The isolated decoder (`beam_pipeline.isolation`): same results as in-process decoding, and a file
that hangs, crashes or bloats the decoder costs one rejection, never the worker."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import hostile_files as hf
import numpy as np
import pytest

from ecg_common.rejections import DecodeError, Reason
from ecg_decode.decoding import quality
from ecg_decode.decoding.decode import decode_record
from ecg_decode.decoding.record_info import RecordInfo
from ecg_decode.sandbox import parent as isolation
from ecg_decode.sandbox import protocol
from ecg_decode.sandbox.parent import RESULT_SLOTS, DecoderProcess
from ecg_decode.sandbox.pool import DecoderPool
from ecg_decode.sandbox.protocol import ALLOCATOR_ENV, DecodeLimits, LocalFile

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


def test_the_child_assesses_quality_when_asked_as_the_parent_would(real_ecg_dir):
    decoder = DecoderProcess(DecodeLimits())
    try:
        flagged = {}
        for path in sorted(real_ecg_dir.glob("*/*.mat")):
            header = path.with_suffix(".hea")
            decoder.submit(path.read_bytes(), header.read_text() if header.exists() else None, **OPTIONS,
                           assess_quality=True)
            decoded = decoder.collect_decoded()
            assert decoded.flags == quality.assess(decoded.ecg), path.name
            flagged[path.stem] = decoded.flags
        assert flagged["JS20004"] == {"flat_lead": ("V2", "V4", "V6")}
        decoder.submit(hf.contest(1), None, **OPTIONS)  # not asked: no flags
        assert decoder.collect_decoded().flags is None
    finally:
        decoder.close()


def test_the_parent_refuses_malformed_flags_from_the_child():
    decoder = DecoderProcess(DecodeLimits())
    ecg = bytearray(np.zeros((5000, 12), dtype="<f4").tobytes())
    asked = isolation._Request([], 0, 0.0, None, assess_quality=True)
    response = {"shape": [5000, 12], "info": RecordInfo().to_json()}
    for bad in [None, "x", {"loud": ["I"]}, {"noisy": []}, {"noisy": ["XX"]}, {"noisy": "I"}, {"noisy": [1]}]:
        result = decoder._result({**response, "flags": bad}, ecg, asked)
        assert isinstance(result, DecodeError) and result.reason == Reason.DECODER_CRASHED, bad
    good = decoder._result({**response, "flags": {"noisy": ["V2", "I"], "flat_lead": ["V6"]}}, ecg, asked)
    assert good.flags == {"flat_lead": ("V6",), "noisy": ("I", "V2")}
    assert decoder._result(response, ecg, asked).reason == Reason.DECODER_CRASHED  # asked, none sent
    assert decoder._result({**response, "flags": "x"}, ecg, isolation._Request([], 0, 0.0, None)).flags is None


def test_a_local_file_read_by_the_child_decodes_as_its_bytes_would(tmp_path):
    mat, header = tmp_path / "R.mat", tmp_path / "R.hea"
    mat.write_bytes(hf.cinc_val(2))
    header.write_text(hf.wfdb_header(rate=250, num_samples=5000))
    decoder = DecoderProcess(DecodeLimits())
    try:
        from_file = decoder.decode(LocalFile(str(mat), str(header), 1 << 20, 1 << 20), None, **OPTIONS)
        np.testing.assert_array_equal(from_file, decode_record(mat.read_bytes(), header.read_text()))
        gone = decoder.decode(LocalFile(str(tmp_path / "GONE.mat"), None, 1 << 20, 1 << 20), None, **OPTIONS)
        assert gone.reason == Reason.UNREADABLE and "FileNotFoundError" in gone.detail
        big = decoder.decode(LocalFile(str(mat), None, 1000, 1 << 20), None, **OPTIONS)
        assert big == DecodeError(Reason.TOO_LARGE, f"{mat} holds more than 1000 bytes")
        big_header = decoder.decode(LocalFile(str(mat), str(header), 1 << 20, 10), None, **OPTIONS)
        assert big_header == DecodeError(Reason.TOO_LARGE, f"{header} holds more than 10 bytes")
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
        first, second = pool.acquire(), pool.acquire()
        assert first is not second
        pool.release(first)
        pool.release(second)
        again = pool.acquire()
        assert again in (first, second)  # reused, not a new process
        pool.release(again)
    finally:
        pool.close()


def test_a_decoder_given_back_with_results_pending_is_reset():
    pool = DecoderPool(DecodeLimits())
    try:
        decoder = pool.acquire()
        decoder.submit(hf.contest(1), None, **OPTIONS)
        pool.release(decoder)  # e.g. a bundle failed downstream before collecting
        assert decoder.pending == 0
        np.testing.assert_array_equal(decoder.decode(hf.contest(2), None, **OPTIONS), decode_record(hf.contest(2)))
    finally:
        pool.close()


@pytest.fixture(params=["shared_slots", "pipe_only"])
def queueing_decoder(request, monkeypatch):
    """A decoder whose results come back through shared memory slots, or (where the OS has no memfd)
    through the pipe only."""
    if request.param == "pipe_only":
        monkeypatch.setattr(isolation, "_shared_slots", lambda: None)
    decoder = DecoderProcess(DecodeLimits())
    yield decoder
    decoder.close()


def test_queued_results_come_back_in_order(queueing_decoder, tmp_path):
    files = []
    for seed in range(8):
        path = tmp_path / f"R{seed}.mat"
        path.write_bytes(hf.contest(seed) if seed != 5 else b"garbage")
        files.append(path)
    requests = [LocalFile(str(path), None, 1 << 20, 1 << 20) for path in files] + [hf.contest(9), hf.contest(10)]
    results = []
    for data in requests:
        while not queueing_decoder.has_room(data, None):
            results.append(queueing_decoder.collect())
        queueing_decoder.submit(data, None, **OPTIONS)
        assert queueing_decoder.pending <= queueing_decoder.max_pending
        assert queueing_decoder._queued_bytes == sum(request.size for request in queueing_decoder._pending)
    while queueing_decoder.pending:
        results.append(queueing_decoder.collect())
    assert queueing_decoder._queued_bytes == 0
    expected = [decode_record(path.read_bytes()) for path in files] + [decode_record(hf.contest(9)),
                                                                       decode_record(hf.contest(10))]
    assert len(results) == len(expected)
    for got, want in zip(results, expected):
        if isinstance(want, DecodeError):
            assert got == want
        else:
            np.testing.assert_array_equal(got, want)


def test_requests_queue_while_they_fit_in_the_pipe_and_the_slots(tmp_path):
    path = tmp_path / "R.mat"
    path.write_bytes(hf.contest(1))
    local = LocalFile(str(path), None, 1 << 20, 1 << 20)
    decoder = DecoderProcess(DecodeLimits())
    try:
        assert decoder.max_pending == RESULT_SLOTS
        decoder.submit(hf.contest(1), None, **OPTIONS)
        decoder.submit(hf.contest(2), None, **OPTIONS)  # 2 x 240 kB fit in half the pipe; a third does not
        assert not decoder.has_room(hf.contest(3), None) and decoder.has_room(local, None)
        while decoder.has_room(local, None):
            decoder.submit(local, None, **OPTIONS)
        assert decoder.pending == RESULT_SLOTS
        with pytest.raises(RuntimeError, match="without room"):
            decoder.submit(local, None, **OPTIONS)
        results = [decoder.collect() for _ in range(RESULT_SLOTS)]
        np.testing.assert_array_equal(results[1], decode_record(hf.contest(2)))
        np.testing.assert_array_equal(results[-1], decode_record(hf.contest(1)))
    finally:
        decoder.close()


def test_a_large_header_counts_against_the_pipe_as_json_escapes_it():
    """A remote file's header travels in the request's JSON: a hostile one (control characters grow
    six-fold) must not let a request queue that could block the parent's write."""
    decoder = DecoderProcess(DecodeLimits())
    try:
        decoder.submit(hf.contest(1), None, **OPTIONS)
        hostile_header = "\x01" * 60_000  # 60 kB of text, 360 kB of JSON
        assert decoder.has_room(hf.contest(2), None) and not decoder.has_room(hf.contest(2), hostile_header)
        decoder.collect()
    finally:
        decoder.close()


def test_the_json_length_of_a_name_is_what_json_makes_of_it():
    for text in [None, "", "/data/R1.mat", "/d/r\u00e9c.mat", 'a"b', "a\\b", "tab\there", "\x01" * 3, "\u2028", "~ok~"]:
        assert isolation._json_length(text) == len(json.dumps(text)), repr(text)


def test_the_size_a_request_is_counted_for_covers_its_frame():
    local = LocalFile("/data/r\u00e9c\n.mat", "/data/r\u00e9c.hea", 1 << 20, 1 << 20)
    for data, header in [(local, None), (hf.contest(1), None), (hf.contest(1), hf.wfdb_header() + "\x00\u00e9" * 500)]:
        metadata = {"header": header, "default_sampling_rate": 500.0, "pad_short": True, "slot": isolation.RESULT_SLOTS - 1}
        if isinstance(data, LocalFile):
            metadata.update(dataclasses.asdict(data))
        frame = protocol.pack(metadata, b"" if isinstance(data, LocalFile) else data)
        assert sum(len(part) for part in frame) <= isolation._request_size(data, header)


@pytest.mark.parametrize("payload, reason", [(b"hang", Reason.TIMEOUT), (b"crash", Reason.DECODER_CRASHED)])
def test_the_request_queued_behind_a_hanging_or_crashing_one_is_decoded_by_a_fresh_child(misbehaving, payload,
                                                                                          reason):
    misbehaving.submit(payload, None, **OPTIONS)
    first_child = misbehaving._process.pid
    misbehaving.submit(hf.contest(9), None, **OPTIONS)
    assert misbehaving.collect().reason == reason
    np.testing.assert_array_equal(misbehaving.collect(), decode_record(hf.contest(9)))
    assert misbehaving._process.pid != first_child and misbehaving.pending == 0 and misbehaving._queued_bytes == 0


_RSS_PROBE = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
import hostile_files as hf
from ecg_decode.decoding import quality
from ecg_decode.decoding.decode import decode_record
from ecg_decode.decoding.record_info import RecordInfo
from ecg_decode.sandbox.parent import DecoderProcess
from ecg_decode.sandbox.protocol import DecodeLimits

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


def test_a_decoder_child_starts_without_scipy_signal():
    """Every run waits for its decoder children to start before its first record; scipy.signal was most of
    that start-up (docs/performance.md) and only a record at another rate needs it (imported then)."""
    probe = "import sys; import ecg_decode.sandbox.child; print('scipy.signal' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(TESTS.parent)}).stdout.strip()
    assert loaded == "False"


def test_a_child_imports_scipy_signal_when_a_record_needs_resampling_within_its_memory_limit():
    """The lazy import happens under the child's address-space limit; a 1000 Hz record still decodes there,
    the same as in-process, with the default budget and with a small one."""
    mat = hf.savemat_bytes({"data": hf.signal(4, (10_000, 12)).astype(np.float64)})  # 10 s at 1000 Hz
    expected = decode_record(mat, default_sampling_rate=1000.0)
    for limits in (DecodeLimits(), DecodeLimits(memory_mb=256)):
        decoder = DecoderProcess(limits)
        try:
            first = decoder.decode(mat, None, default_sampling_rate=1000.0, pad_short=False)
            again = decoder.decode(mat, None, default_sampling_rate=1000.0, pad_short=False)
        finally:
            decoder.close()
        np.testing.assert_array_equal(first, expected)
        np.testing.assert_array_equal(again, expected)


def test_a_decoder_child_starts_with_the_allocator_settings():
    """The child reuses each record's buffers (`ecg_common/allocator.py`): its environment carries the settings."""
    decoder = DecoderProcess(DecodeLimits())
    try:
        decoder.decode(hf.contest(1), None, **OPTIONS)
        environ = Path(f"/proc/{decoder._process.pid}/environ").read_bytes().split(b"\0")
    finally:
        decoder.close()
    for name, value in ALLOCATOR_ENV.items():
        assert f"{name}={value}".encode() in environ


_FAULTS_PER_RECORD = """
import json, mmap, os, resource, sys
from ecg_common.schema import DEFAULT_GEOMETRY
from ecg_decode.sandbox import child
from ecg_decode.sandbox.protocol import RESULT_BYTES
path = sys.argv[1]
slots = mmap.mmap(-1, 4 * RESULT_BYTES)
request = {"header": None, "default_sampling_rate": 500.0, "pad_short": False, "geometry": DEFAULT_GEOMETRY.to_json(),
           "path": path, "header_path": None, "max_bytes": 256 << 20, "max_header_bytes": 1 << 20,
           "root": os.path.dirname(path)}
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for slot in range(4):  # warm up: every slot touched once, as a child's first records do
    assert "slot" in child._decode_request({**request, "slot": slot}, b"", slots)[0]
before = faults()
for n in range(200):  # the child's work per record: read the file, decode it, leave it in a slot
    child._decode_request({**request, "slot": n % 4}, b"", slots)
print(json.dumps((faults() - before) / 200))
"""


def _faults_per_record(record: Path, env: dict[str, str]) -> float:
    """Minor page faults per record decoded as a child decodes it, in a fresh process started with
    `env` on top of this one's (without ALLOCATOR_ENV: glibc's defaults)."""
    inherited = {name: value for name, value in os.environ.items() if name not in ALLOCATOR_ENV}
    result = subprocess.run([sys.executable, "-c", _FAULTS_PER_RECORD, str(record)], capture_output=True,
                            text=True, check=True, env={**inherited, "PYTHONPATH": str(TESTS.parent), **env})
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_childs_buffers_are_reused_from_one_record_to_the_next(tmp_path):
    """With ALLOCATOR_ENV (what a child starts with) the buffers of a record come from memory the child
    holds already, instead of fresh mappings faulted in page by page (counted, never timed)."""
    record = tmp_path / "R.mat"
    record.write_bytes(hf.contest(1))  # 5000 x 12 float32, 240 kB
    assert _faults_per_record(record, {}) > 100  # measured 261: every buffer's pages, every record
    assert _faults_per_record(record, ALLOCATOR_ENV) < 10  # measured 0.07
