"""Nothing of the user's is replaced, moved or deleted: only an earlier output of this project is.

`--output_dir` (and reprocessing's `--output_root`) are checked before anything is created: a folder
that is not an earlier output, a regular file, an input or a folder holding one is refused with
exit 2 and left as it was. A second run on the same output exits 75 while the first holds the lock;
a read-only location says why in one line; SIGTERM and SIGINT stop a run cleanly (143, 130); what a
SIGKILLed run left is removed by the next run, and only what is provably ours.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import fake_object_store
import hostile_files as hf
import numpy as np
import pytest
from batch_data import ecg, save_record
from test_pipeline import read_examples

from beam_pipeline.cli.main_command import main
from beam_pipeline.cli.reprocess_command import main as reprocess_main
from ecg_common.cli import EXIT_CONFIG, EXIT_OK

REPO = Path(__file__).resolve().parents[1]
MARKER = "_ECG_PIPELINE_OUTPUT"
"""The marker's documented name (docs/output-contract.md), spelled out so the test pins it."""
EXIT_LOCKED = 75
GIVE_UP_S = 600
"""Only so a broken run cannot hang the suite; no assertion depends on time."""
NUM_LONG_RUN = 60
"""Records of the runs that are stopped or killed: enough that they are still writing when seen."""


def _write_set(root: Path, prefix: str, count: int, seed: int) -> Path:
    (root / "TRAIN").mkdir(parents=True)
    for k in range(count):
        (root / "TRAIN" / f"{prefix}{k:03d}.mat").write_bytes(hf.contest(seed + k))
    (root / "labels.txt").write_text("".join(f"{prefix}{k:03d}\t{k % 2}\n" for k in range(count)))
    return root


@pytest.fixture(scope="module")
def long_set(tmp_path_factory) -> Path:
    return _write_set(tmp_path_factory.mktemp("long"), "L", NUM_LONG_RUN, 0)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    return _write_set(tmp_path_factory.mktemp("small"), "S", 6, 500)


@pytest.fixture(scope="module")
def earlier(tmp_path_factory) -> Path:
    """An earlier output of this project (ids E000-E005), to be copied where a test needs one."""
    data = _write_set(tmp_path_factory.mktemp("earlier"), "E", 6, 900)
    out = data / "out"
    assert main(_args(data, out)) == EXIT_OK
    return out


def _args(data: Path, out: Path | str) -> list[str]:
    return ["--train_dir", str(data / "TRAIN"), "--labels", str(data / "labels.txt"), "--output_dir", str(out)]


def _tree(root: Path) -> dict[str, object]:
    """Everything under `root`, hidden entries included: kind and content of each path."""
    entries: dict[str, object] = {}
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(parent, name)
            key = str(path.relative_to(root))
            if path.is_symlink():
                entries[key] = ("link", os.readlink(path))
            elif path.is_dir():
                entries[key] = "dir"
            elif path.is_file():
                entries[key] = path.read_bytes()
            else:
                entries[key] = "special"
    return entries


def _copy(output: Path, to: Path) -> Path:
    shutil.copytree(output, to, symlinks=True)
    return to


def _beside(out: Path) -> list[str]:
    """Hidden entries beside `out` that belong to it: staging folders, set-aside outputs, its lock file."""
    return sorted(p.name for p in out.parent.glob(f".{out.name}.*"))


def _one_error_line(err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err[-3000:]
    assert err.strip().splitlines()[-1] == errors[0]
    return errors[0]


def _marker(kind: str) -> str:
    return json.dumps({"written_by": "ecg-beam-pipeline", "format": 1, "kind": kind})


# --- what --output_dir may be ---------------------------------------------------------------------

OUTPUT_CASES = {
    "documents": lambda data, tmp: tmp / "documents",
    "train_dir": lambda data, tmp: data / "TRAIN",
    "parent_of_train_dir_and_labels": lambda data, tmp: data,
    "inside_train_dir": lambda data, tmp: data / "TRAIN" / "out",
    "labels_file": lambda data, tmp: data / "labels.txt",
    "regular_file": lambda data, tmp: tmp / "results.csv",
    "empty_folder": lambda data, tmp: tmp / "empty",
    "reprocessing_root": lambda data, tmp: tmp / "batches",
}
OUTPUT_REASONS = {
    "documents": "exists and is not an earlier output of this pipeline",
    "train_dir": "is --train_dir itself",
    "parent_of_train_dir_and_labels": "contains --train_dir",
    "inside_train_dir": "is inside --train_dir",
    "labels_file": "is --labels itself",
    "regular_file": "exists and is not a folder",
    "empty_folder": "is an empty folder",
    "reprocessing_root": "is a reprocessing root",
}


@pytest.mark.parametrize("case", list(OUTPUT_CASES))
def test_an_output_dir_that_is_not_an_earlier_output_is_refused_and_left_untouched(case, tmp_path, capsys):
    data = _write_set(tmp_path / "data", "D", 3, 40)
    (tmp_path / "documents").mkdir()
    (tmp_path / "documents" / "thesis.txt").write_text("five years of work")
    (tmp_path / "results.csv").write_text("id,score\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "batches").mkdir()
    (tmp_path / "batches" / MARKER).write_text(_marker("reprocess_root"))
    (tmp_path / "batches" / "ledger.jsonl").write_text('{"format": "ecg-reprocess-ledger/1", "batches": []}\n')
    before = _tree(tmp_path)

    code = main(_args(data, OUTPUT_CASES[case](data, tmp_path)))

    line = _one_error_line(capsys.readouterr().err)
    assert code == EXIT_CONFIG
    assert line.startswith("error: --output_dir ") and OUTPUT_REASONS[case] in line, line
    assert _tree(tmp_path) == before, "something was created, moved or removed"


def test_an_earlier_output_without_the_marker_is_still_replaced(earlier, small_set, tmp_path):
    """Outputs of versions from before the marker (`_SUCCESS`, `run_summary.json`, `transform_fn/`) stay ours."""
    out = _copy(earlier, tmp_path / "out")
    (out / MARKER).unlink(missing_ok=True)
    assert main(_args(small_set, out)) == EXIT_OK
    assert set(read_examples(out, "train")) == {f"S{k:03d}" for k in range(6)}
    assert json.loads((out / MARKER).read_text()) == json.loads(_marker("output"))
    assert _beside(out) == [], "no staging folder, set-aside output or lock file is left beside the output"


def test_a_failed_rerun_leaves_the_earlier_output_intact(earlier, tmp_path, capsys):
    out = _copy(earlier, tmp_path / "out")
    before = _tree(out)
    bad = tmp_path / "bad"
    (bad / "TRAIN").mkdir(parents=True)
    for k in range(3):
        (bad / "TRAIN" / f"B{k}.mat").write_bytes(b"not a MATLAB file")
    (bad / "labels.txt").write_text("B0\t0\nB1\t1\nB2\t0\n")

    code = main(_args(bad, out))  # fails after the Beam job: no training file could be decoded

    assert code == EXIT_CONFIG and "could be decoded" in _one_error_line(capsys.readouterr().err)
    assert _tree(out) == before
    assert _beside(out) == []


# --- one run at a time ----------------------------------------------------------------------------

def test_a_second_run_on_the_same_output_exits_75_and_touches_nothing(earlier, small_set, tmp_path, capsys):
    out = _copy(earlier, tmp_path / "out")
    live_staging = tmp_path / ".out.staging-0123456789ab"  # the first run's, being written
    live_staging.mkdir()
    (live_staging / MARKER).write_text(_marker("output"))
    lock_path = tmp_path / ".out.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())
        before = _tree(tmp_path)
        code = main(_args(small_set, out))
        line = _one_error_line(capsys.readouterr().err)
        after = _tree(tmp_path)
    finally:
        os.close(fd)
    assert code == EXIT_LOCKED
    assert line == f"error: another run holds the lock on {lock_path} (pid {os.getpid()}); nothing done"
    assert after == before, "the second run changed something while the first held the lock"


# --- a read-only location -------------------------------------------------------------------------

@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody may write into: a read-only tmpfs for root (whom permissions do not stop), else mode 555."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], check=True)
        try:
            yield folder
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)


def test_a_read_only_output_location_gives_the_real_reason_in_one_line(small_set, read_only_folder, capsys):
    out = read_only_folder / "out"
    code = main(_args(small_set, out))
    err = capsys.readouterr().err
    assert code == EXIT_CONFIG
    assert _one_error_line(err) in (f"error: cannot write to {out}: Read-only file system",
                                    f"error: cannot write to {out}: Permission denied")
    assert "Traceback" not in err


# --- stopped and killed runs ----------------------------------------------------------------------

def _staging_of(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.staging-*"))


def _start(data: Path, out: Path, log: Path, temp: Path) -> subprocess.Popen:
    with open(log, "wb") as handle:
        return subprocess.Popen([sys.executable, "-m", "beam_pipeline", *_args(data, out)], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=handle, env={**os.environ, "TMPDIR": str(temp)})


def _wait_for(proc: subprocess.Popen, seen, what: str) -> None:
    give_up = time.monotonic() + GIVE_UP_S
    while not seen():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < give_up, f"{what} not seen within {GIVE_UP_S} s"
        time.sleep(0.005)


def _transforming(out: Path) -> bool:
    """The analyze pass is done (the transform graph is in the staging folder): Beam is writing shards."""
    return any((s / "transform_fn" / "saved_model.pb").exists() for s in _staging_of(out))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_mid_run_cleans_up_says_so_and_exits_128_plus_n(earlier, long_set, tmp_path, signum):
    out = _copy(earlier, tmp_path / "out")
    before = _tree(out)
    temp, log = tmp_path / "tmp", tmp_path / "run.log"
    temp.mkdir()
    proc = _start(long_set, out, log, temp)
    try:
        _wait_for(proc, lambda: _transforming(out), "the transform pass")
        proc.send_signal(signum)
        proc.wait(timeout=GIVE_UP_S)
    finally:
        proc.kill()
        proc.wait()
    line = _one_error_line(log.read_text(errors="replace"))
    assert proc.returncode == 128 + signum
    assert line.startswith(f"error: stopped by {signal.Signals(signum).name}: nothing was published")
    assert _beside(out) == [], "staging folder or lock file left"
    assert os.listdir(temp) == [], "tf.Transform's (ecg-tft-*) or Beam's temporary folder left"
    assert _tree(out) == before


def test_what_a_killed_run_left_is_removed_by_the_next_run_and_nothing_else(earlier, long_set, small_set, tmp_path):
    out = _copy(earlier, tmp_path / "out")
    look_alike = tmp_path / ".out.staging-0123456789ab"  # named like ours, but no marker: not provably ours
    look_alike.mkdir()
    (look_alike / "notes.txt").write_text("mine")
    other_output = tmp_path / ".other.staging-abcdefabcdef"  # ours, but another output's (its run may be live)
    other_output.mkdir()
    (other_output / MARKER).write_text(_marker("output"))
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = _start(long_set, out, tmp_path / "killed.log", temp)
    try:
        _wait_for(proc, lambda: _transforming(out), "the transform pass")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    (killed,) = set(_staging_of(out)) - {look_alike}

    assert main(_args(small_set, out)) == EXIT_OK

    assert not killed.exists(), "the killed run's staging folder is still there"
    assert _beside(out) == [look_alike.name] and (look_alike / "notes.txt").read_text() == "mine"
    assert (other_output / MARKER).exists()
    assert set(read_examples(out, "train")) == {f"S{k:03d}" for k in range(6)}, "the earlier output was replaced"


# --- reprocessing's --output_root -----------------------------------------------------------------

ROOT_CASES = {
    "documents": lambda t: t / "documents",
    "incoming": lambda t: t / "incoming",
    "inside_incoming": lambda t: t / "incoming" / "batches",
    "above_incoming": lambda t: t / "archive",
    "transform_dir": lambda t: t / "base",
    "inside_transform_dir": lambda t: t / "base" / "batches",
    "containing_labels": lambda t: t / "meta",
    "regular_file": lambda t: t / "results.csv",
    "main_output": lambda t: t / "other-output",
}
ROOT_REASONS = {
    "documents": "is a folder that is not a reprocessing root",
    "incoming": "is --incoming itself",
    "inside_incoming": "is inside --incoming",
    "above_incoming": "contains --incoming",
    "transform_dir": "is --transform_dir itself",
    "inside_transform_dir": "is inside --transform_dir",
    "containing_labels": "contains --labels",
    "regular_file": "exists and is not a folder",
    "main_output": "is an output of the main command",
}


@pytest.mark.parametrize("case", list(ROOT_CASES))
def test_an_output_root_that_is_not_a_reprocessing_root_is_refused_and_left_untouched(case, earlier, tmp_path,
                                                                                      capsys):
    base = _copy(earlier, tmp_path / "base")
    _copy(earlier, tmp_path / "other-output")
    incoming = tmp_path / "archive" / "incoming"
    save_record(incoming, "N1", ecg(np.random.default_rng(1)))
    (tmp_path / "incoming").symlink_to(incoming)
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "labels.txt").write_text("N1\t1\n")
    (tmp_path / "documents").mkdir()
    (tmp_path / "documents" / "thesis.txt").write_text("five years of work")
    (tmp_path / "results.csv").write_text("id,score\n")
    before = _tree(tmp_path)

    code = reprocess_main(["--incoming", str(tmp_path / "incoming"), "--transform_dir", str(base),
                           "--labels", str(tmp_path / "meta" / "labels.txt"),
                           "--output_root", str(ROOT_CASES[case](tmp_path))])

    line = _one_error_line(capsys.readouterr().err)
    assert code == EXIT_CONFIG
    assert line.startswith("error: --output_root ") and ROOT_REASONS[case] in line, line
    assert _tree(tmp_path) == before, "something was created, moved or removed"


def test_an_older_root_is_accepted_and_only_its_own_leftovers_are_removed(earlier, tmp_path):
    incoming, root = tmp_path / "incoming", tmp_path / "root"
    root.mkdir()  # an existing empty folder is a new root
    save_record(incoming, "A", hf.contest(950))  # recordings like the earlier output's: no drift
    command = ["--incoming", str(incoming), "--transform_dir", str(earlier), "--output_root", str(root)]
    assert reprocess_main(command) == EXIT_OK
    assert json.loads((root / MARKER).read_text()) == json.loads(_marker("reprocess_root"))

    (root / MARKER).unlink()  # as a root of a version from before the marker
    killed = root / ".batch-20260101T000000.000Z.staging-0123456789ab"
    killed.mkdir()
    (killed / MARKER).write_text(_marker("batch"))
    (killed / "inputs.jsonl").write_text("")
    look_alike = root / ".batch-mine.staging-abcdefabcdef"
    look_alike.mkdir()
    (look_alike / "notes.txt").write_text("mine")
    save_record(incoming, "B", hf.contest(951))
    assert reprocess_main(command) == EXIT_OK

    assert len(list(root.glob("batch-*"))) == 2
    assert not killed.exists(), "a killed run's staging folder (with the marker) is removed"
    assert (look_alike / "notes.txt").read_text() == "mine", "a folder without the marker is left alone"


# --- object stores --------------------------------------------------------------------------------

@pytest.fixture
def object_store(tmp_path):
    fake_object_store.FakeObjectStore.root = str(tmp_path / "bucket")
    return tmp_path / "bucket"


def test_a_foreign_object_store_prefix_is_refused_as_output_dir_and_output_root(object_store, small_set, earlier,
                                                                               tmp_path, capsys):
    (object_store / "reports").mkdir(parents=True)
    (object_store / "reports" / "q3.pdf").write_bytes(b"%PDF")
    before = _tree(object_store)
    prefix = f"{fake_object_store.PREFIX}reports"

    assert main(_args(small_set, prefix)) == EXIT_CONFIG
    assert "is not an earlier output of this pipeline" in _one_error_line(capsys.readouterr().err)
    save_record(tmp_path / "incoming", "N1", ecg(np.random.default_rng(3)))
    assert reprocess_main(["--incoming", str(tmp_path / "incoming"), "--transform_dir", str(earlier),
                           "--output_root", prefix]) == EXIT_CONFIG
    assert "is a folder that is not a reprocessing root" in _one_error_line(capsys.readouterr().err)
    assert _tree(object_store) == before


def test_the_marker_object_makes_an_object_store_prefix_ours(object_store, small_set):
    from beam_pipeline.runs.output_guard import Kind, check_output_dir, is_earlier_output, write_marker

    prefix = f"{fake_object_store.PREFIX}out"
    (object_store / "out" / "train").mkdir(parents=True)
    (object_store / "out" / "train" / "part-00000-of-00001.tfrecord.gz").write_bytes(b"")
    assert not is_earlier_output(prefix)
    write_marker(prefix, Kind.OUTPUT)
    assert is_earlier_output(prefix)
    inputs = {"--train_dir": str(small_set / "TRAIN"), "--labels": str(small_set / "labels.txt")}
    assert check_output_dir(prefix, inputs) == prefix
