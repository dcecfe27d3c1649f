"""`ecg_common/allocator.py`: with the thresholds applied, a decoder child's buffers are reused from one
record to the next instead of mapped afresh (counted as page faults, never timed), whether applied
with `mallopt` in a running process or with ALLOCATOR_ENV at a process's start, as the child gets it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import hostile_files as hf

from ecg_common.allocator import ALLOCATOR_ENV

REPO = Path(__file__).resolve().parent.parent

_FAULTS_PER_RECORD = """
import json, mmap, os, resource, sys
if sys.argv[1] == "mallopt":
    from ecg_common.allocator import keep_freed_memory
    assert keep_freed_memory()
from ecg_common.schema import DEFAULT_GEOMETRY
from ecg_decode.sandbox import child
from ecg_decode.sandbox.protocol import RESULT_BYTES
path = sys.argv[2]
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


def _faults_per_record(record: Path, how: str, env: dict[str, str]) -> float:
    """Minor page faults per record decoded as a child decodes it, in a fresh process started with `env`
    (glibc's defaults otherwise)."""
    inherited = {name: value for name, value in os.environ.items() if name not in ALLOCATOR_ENV}
    result = subprocess.run([sys.executable, "-c", _FAULTS_PER_RECORD, how, str(record)], capture_output=True,
                            text=True, check=True, env={**inherited, "PYTHONPATH": str(REPO), **env})
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_childs_buffers_are_reused_with_mallopt_and_with_the_environment(tmp_path):
    record = tmp_path / "R.mat"
    record.write_bytes(hf.contest(1))  # 5000 x 12 float32, 240 kB
    assert _faults_per_record(record, "default", {}) > 100  # measured 261: every buffer's pages, every record
    assert _faults_per_record(record, "mallopt", {}) < 10  # measured 0.07
    assert _faults_per_record(record, "environment", ALLOCATOR_ENV) < 10
