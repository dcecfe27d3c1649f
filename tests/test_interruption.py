"""A run killed at any moment, or stopped by a full disk, leaves no partial output at --output_dir.

The job writes into a hidden staging sibling and renames it into place after `_SUCCESS`
(`publish.py`); these tests kill real `python -m beam_pipeline` processes with SIGKILL at several
points, fill a small tmpfs, and cap the file size with RLIMIT_FSIZE.
"""
from __future__ import annotations

import filecmp
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import hostile_files as hf
import numpy as np
import pytest
from test_pipeline import read_examples

from beam_pipeline.cli.main_command import main
from ecg_common.cli import EXIT_FAILED, EXIT_OK

REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 600
NUM_TRAIN, NUM_TEST = 60, 10


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """60 training and 10 test records of incompressible noise (about 13 MB of shards)."""
    root = tmp_path_factory.mktemp("data")
    (root / "TRAIN").mkdir()
    (root / "TEST").mkdir()
    labels = []
    for k in range(NUM_TRAIN):
        (root / "TRAIN" / f"T{k:03d}.mat").write_bytes(hf.contest(k))
        labels.append(f"T{k:03d}\t{k % 2}")
    for k in range(NUM_TEST):
        (root / "TEST" / f"S{k:03d}.mat").write_bytes(hf.contest(1000 + k))
    (root / "labels.txt").write_text("\n".join(labels) + "\n")
    return root


def _args(dataset: Path, out: Path) -> list[str]:
    return ["--train_dir", str(dataset / "TRAIN"), "--labels", str(dataset / "labels.txt"),
            "--test_dir", str(dataset / "TEST"), "--output_dir", str(out)]


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "out"
    assert main(_args(dataset, out)) == EXIT_OK
    return out


def _decoder_children(pid: int) -> list[int]:
    """Children started by any thread of `pid` (each thread lists its own) that are decoder processes."""
    pids = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            pids += [int(p) for p in children.read_text().split()]
        except OSError:
            continue  # the thread ended meanwhile
    return [p for p in pids if _cmdline(p).find(b"ecg_decode.sandbox.child") >= 0]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _staging(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.staging-*"))


EVENTS = {
    "decoding (analyze pass)": lambda proc, out: bool(_decoder_children(proc.pid)),
    "transform graph written": lambda proc, out: any((s / "transform_fn" / "saved_model.pb").exists()
                                                     for s in _staging(out)),
    "shards being written": lambda proc, out: any((s / "train").is_dir() and any((s / "train").iterdir())
                                                  for s in _staging(out)),
}


def _kill_at(event: str, dataset: Path, out: Path) -> list[int]:
    """Starts a run, SIGKILLs it as soon as `event` is seen; returns its decoder children's pids."""
    proc = subprocess.Popen([sys.executable, "-m", "beam_pipeline", *_args(dataset, out)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, children = time.monotonic() + RUN_TIMEOUT_S, []
    try:
        while not EVENTS[event](proc, out):
            assert proc.poll() is None, f"the run ended before '{event}' was seen"
            assert time.monotonic() < deadline, f"'{event}' not seen within {RUN_TIMEOUT_S} s"
            time.sleep(0.005)
        children = _decoder_children(proc.pid)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return children


def _assert_children_exit(children: list[int]) -> None:
    """Decoder children notice their parent is gone (their pipe closes) and exit on their own."""
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in children):
        assert time.monotonic() < deadline, f"decoder processes outlived the killed run: {children}"
        time.sleep(0.05)


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("event", list(EVENTS))
def test_sigkill_keeps_the_previous_output_intact(dataset, reference, tmp_path, event):
    out = tmp_path / "out"
    subprocess.run(["cp", "-a", str(reference), str(out)], check=True)
    before = _snapshot(out)
    children = _kill_at(event, dataset, out)
    assert _snapshot(out) == before, "the published output changed under a killed run"
    _assert_children_exit(children)


def test_sigkill_leaves_nothing_and_a_rerun_writes_the_same_examples(dataset, reference, tmp_path):
    out = tmp_path / "out"
    _kill_at("shards being written", dataset, out)
    assert not out.exists(), "a killed first run left a partial --output_dir"
    assert _staging(out), "expected the killed run's staging folder (hidden, beside --output_dir)"
    assert main(_args(dataset, out)) == EXIT_OK
    assert (out / "_SUCCESS").exists()
    for split in ("train", "test"):
        expected, rerun = read_examples(reference, split), read_examples(out, split)
        assert set(rerun) == set(expected) and len(rerun) == {"train": NUM_TRAIN, "test": NUM_TEST}[split]
        for rid, example in expected.items():
            np.testing.assert_array_equal(rerun[rid]["ecg"], example["ecg"])
            assert rerun[rid]["label"] == example["label"]
    assert filecmp.cmp(out / "errors" / "train.jsonl", reference / "errors" / "train.jsonl", shallow=False)


def _assert_failed_cleanly(out: Path, stderr: str) -> None:
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: run failed: the disk is full"), last
    assert not out.exists(), "partial output published"
    assert not _staging(out), "staging folder left behind"


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs (mounting needs root, which this project's CI and dev machines are)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; test_file_size_limit_fails_cleanly covers the same path")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_full_disk_fails_cleanly(dataset, small_disk, capsys):
    out = small_disk / "out"
    assert main(_args(dataset, out)) == EXIT_FAILED
    _assert_failed_cleanly(out, capsys.readouterr().err)
    assert os.listdir(small_disk) == []


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))  # writes past 2 MB fail with EFBIG


def test_file_size_limit_fails_cleanly(dataset, tmp_path):
    """The same guarantee without root: RLIMIT_FSIZE makes the one 13 MB shard fail with EFBIG."""
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "beam_pipeline", *_args(dataset, out), "--num_shards", "1"],
                            cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                            preexec_fn=_limit_file_size)
    assert result.returncode == EXIT_FAILED, result.stderr[-2000:]
    _assert_failed_cleanly(out, result.stderr)
