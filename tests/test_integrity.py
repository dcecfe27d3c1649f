"""Nothing lost without a word, nothing read that must not be, nothing that hangs (issue 17).

1. Huge but finite values: rejected as `implausible_amplitude`; statistics accumulated in float64;
   non-finite statistics fail the run before anything is published (the hostile set in
   test_hostile_inputs.py runs such records end to end).
2. A directory that cannot be listed is one `unlistable` rejection, counted among the files found.
3. Reprocessing hashes nothing it must not read (FIFOs, devices, links out of INCOMING).
4. A file swapped for a link out of the tree (or a FIFO) after listing is not followed by the decoder.
5. The labels file must be a regular file within MAX_LABELS_BYTES.

Whatever could hang on a regression runs in a subprocess with a timeout. As root, permission bits do
not stop a listing, so an unreadable directory is simulated by making `os.scandir` refuse it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import gzip
import hashlib
import io
import json
import os
import resource
import subprocess
import sys
import threading
from pathlib import Path

import hostile_files as hf
import numpy as np
import pytest
from batch_data import ecg, run_base, save_record
from test_pipeline import read_errors, read_examples
from test_preprocessing import _analyze_and_transform

from beam_pipeline.cli.main_command import main
from beam_pipeline.graph import pipeline as graphs
from beam_pipeline.graph import sources
from beam_pipeline.graph.arrow_batches import DecodedRecord
from beam_pipeline.graph.preprocessing import preprocessing_fn
from beam_pipeline.inputs.discovery import find_records
from beam_pipeline.inputs.labels import MAX_LABELS_BYTES, parse_labels, read_labels
from beam_pipeline.runs.ledger import LEDGER_FILE, MANIFEST_FILE, NOT_HASHED
from ecg_common.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from ecg_common.rejections import ConfigurationError, Reason
from ecg_common.schema import ECG_KEY, ECG_SHAPE, NUM_LEADS, RECORD_ID_KEY, TEST_SPLIT
from ecg_decode.decoding.decode import decode_record
from ecg_decode.decoding.standardize import MAX_ABS_MV
from ecg_decode.opening import Refused, read_local

REPO = Path(__file__).resolve().parents[1]
GIVE_UP_S = 300
"""Only so a regression (a hang) cannot stall the suite; no assertion depends on time."""
SUBPROCESS_MEMORY_BYTES = 6 << 30
"""Address space for a command run in a subprocess (~3 GB once TensorFlow is imported), so a
regression that reads `/dev/zero` fails with MemoryError instead of exhausting the machine."""


@dataclasses.dataclass
class Run:
    code: int
    out: str
    err: str


def _main(*args: str) -> Run:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return Run(code, out.getvalue(), err.getvalue())


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (SUBPROCESS_MEMORY_BYTES, SUBPROCESS_MEMORY_BYTES))


def _command(module: str, *args: str, limit_memory: bool = False) -> Run:
    """`python -m module args` in a subprocess, given up after GIVE_UP_S; `limit_memory` only for a
    command that ends before it decodes (the decoder children set their own, larger limit)."""
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=GIVE_UP_S, preexec_fn=_limit_memory if limit_memory else None)
    return Run(done.returncode, done.stdout, done.stderr)


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def _rows(out: Path, name: str) -> dict[str, dict]:
    with open(out / "errors" / f"{name}.jsonl") as handle:
        return {row["record_id"]: row for row in map(json.loads, handle) if row}


def _labels(path: Path, ids) -> None:
    path.write_text("".join(f"{rid}\t{k % 2}\n" for k, rid in enumerate(ids)))


# 1. Huge values --------------------------------------------------------------------------------

def test_a_value_beyond_the_amplitude_bound_is_rejected_and_a_pacemaker_spike_is_not():
    paced = hf.signal(1)
    paced[100:103, 2] = 25.0  # a pacemaker spike: large, but real
    assert isinstance(decode_record(hf.savemat_bytes({"data": paced})), np.ndarray)
    wrong = hf.signal(1)
    wrong[100, 2] = -1.5 * MAX_ABS_MV
    result = decode_record(hf.savemat_bytes({"data": wrong}))
    assert result.reason == Reason.IMPLAUSIBLE_AMPLITUDE and "150 mV" in result.detail
    int64 = decode_record(hf.huge_int64(2))  # a headerless int64 `val`: divided by 1000, still ~1e15 mV
    assert int64.reason == Reason.IMPLAUSIBLE_AMPLITUDE


def test_statistics_of_huge_float32_values_are_accumulated_without_overflow(tmp_path):
    """Past the decoder (a bound raised by a later change, or records written by other code), the
    analyzers still learn the exact statistics: the squared deviations of 1e20 are inf in float32,
    so they must accumulate in float64 (preprocessing_fn's `output_dtype`, to which tf.Transform
    casts its input). A guard: this already held; the `inf` such a record put into run_summary.json
    came from dominating the statistics (std 1e20), which the amplitude bound now prevents."""
    rng = np.random.default_rng(3)
    records = [DecodedRecord(f"R{k}", k % 2, (rng.normal(size=ECG_SHAPE)).astype(np.float32)) for k in range(3)]
    records.append(DecodedRecord("HUGE", 0, (rng.normal(size=ECG_SHAPE) * 1e20).astype(np.float32)))
    by_id = {}
    for batch in _analyze_and_transform(records, tmp_path, batch_size=2):
        ids = [v.as_py().decode() for v in batch.column(RECORD_ID_KEY).flatten()]
        by_id.update(zip(ids, batch.column(ECG_KEY).flatten().to_numpy().reshape(-1, *ECG_SHAPE)))
    raw = np.stack([r.ecg for r in records]).astype(np.float64).reshape(-1, NUM_LEADS)
    expected = (records[-1].ecg.astype(np.float64) - raw.mean(axis=0)) / raw.std(axis=0)
    assert all(np.isfinite(values).all() for values in by_id.values())
    np.testing.assert_allclose(by_id["HUGE"], expected, rtol=1e-4, atol=1e-4)  # not all 0, as with std inf


def _write_small_set(folder: Path, count: int = 4) -> list[str]:
    ids = [f"G{k}" for k in range(count)]
    for k, rid in enumerate(ids):
        (folder / f"{rid}.mat").write_bytes(hf.contest(k))
    return ids


def test_non_finite_statistics_fail_the_run_before_anything_is_published(tmp_path, monkeypatch):
    """Should statistics ever come out non-finite (here a poisoned preprocessing_fn makes them NaN),
    the run exits 1 with one line, publishes nothing and leaves no staging folder."""
    train = tmp_path / "TRAIN"
    train.mkdir()
    _labels(tmp_path / "labels.txt", _write_small_set(train))
    monkeypatch.setattr(graphs, "preprocessing_fn",
                        lambda inputs: preprocessing_fn({**inputs, ECG_KEY: inputs[ECG_KEY] * np.float32(np.inf)}))
    out = tmp_path / "out"
    run = _main("--train_dir", str(train), "--labels", str(tmp_path / "labels.txt"), "--output_dir", str(out))
    assert run.code == EXIT_FAILED
    [line] = _error_lines(run.err)
    assert line.startswith("error: run failed: NonFiniteStatistics: the learned per-lead statistics are not finite")
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["TRAIN", "labels.txt"], "published or left over"


# 2 and 4. An unlistable directory; files swapped after listing ---------------------------------

def _scandir_refusing(refused: str):
    """`os.scandir` as it behaves for a directory without read permission, for `refused` alone."""
    real_scandir = os.scandir

    def scandir(path="."):
        if not isinstance(path, int) and os.fspath(path) == refused:  # (shutil.rmtree scans descriptors)
            raise PermissionError(errno.EACCES, "Permission denied", refused)
        return real_scandir(path)

    return scandir


@pytest.fixture(scope="module")
def swapped_run(tmp_path_factory):
    """TRAIN: 4 good records; `locked/` that cannot be listed (os.scandir refuses it); and three files
    that are fine when listed and swapped before decoding: SWAP.mat for a link to a record outside
    the tree, SWAP_FIFO.mat for a FIFO, HEA_SWAP.hea (of a good CinC record) for a link to /dev/zero."""
    root = tmp_path_factory.mktemp("swapped")
    train, outside = root / "TRAIN", root / "outside"
    for folder in (train, outside, train / "locked"):
        folder.mkdir()
    good = _write_small_set(train)
    (outside / "SECRET.mat").write_bytes(hf.contest(50))
    (train / "locked" / "L.mat").write_bytes(hf.contest(51))
    for rid in ("SWAP", "SWAP_FIFO"):
        (train / f"{rid}.mat").write_bytes(hf.contest(52))
    (train / "HEA_SWAP.mat").write_bytes(hf.cinc_val(53))
    (train / "HEA_SWAP.hea").write_text(hf.wfdb_header())
    _labels(root / "labels.txt", [*good, "L", "SWAP", "SWAP_FIFO", "HEA_SWAP"])

    def swap_after_listing() -> None:
        (train / "SWAP.mat").unlink()
        os.symlink(outside / "SECRET.mat", train / "SWAP.mat")
        (train / "SWAP_FIFO.mat").unlink()
        os.mkfifo(train / "SWAP_FIFO.mat")
        (train / "HEA_SWAP.hea").unlink()
        os.symlink("/dev/zero", train / "HEA_SWAP.hea")

    real_resolve, swapped, swapping = sources.resolve, [], threading.Lock()

    def resolve(*args, **kwargs):  # inside the job: after every file was listed and checked, before decoding
        with swapping:  # two worker threads resolve at once: one swaps, the other waits for it
            if not swapped:
                swap_after_listing()
                swapped.append(True)
        return real_resolve(*args, **kwargs)

    out = root / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "scandir", _scandir_refusing(str(train / "locked")))
        patch.setattr(sources, "resolve", resolve)
        run = _main("--train_dir", str(train), "--labels", str(root / "labels.txt"), "--output_dir", str(out),
                    "--max_error_rate", "1", "--decode_timeout_s", "20")  # bounds a hang on the FIFO, if any
    return out, good, run


def test_an_unlistable_directory_is_one_rejection_counted_among_the_files_found(swapped_run):
    out, good, run = swapped_run
    assert run.code == EXIT_OK, run.err
    row = _rows(out, "train")["locked/"]
    assert row["reason"] == Reason.UNLISTABLE and row["path"].endswith("TRAIN/locked")
    assert "could not be listed" in row["detail"] and "PermissionError" in row["detail"]
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["files_found"]["train"] == len(good) + 4  # 3 swapped files + the directory
    assert summary["examples_written"]["train"] == len(good)
    assert summary["reconciled"] is True and summary["rejected"]["train"][Reason.UNLISTABLE] == 1


def test_a_file_swapped_after_listing_is_opened_without_following_it(swapped_run):
    out, good, _ = swapped_run
    rows = _rows(out, "train")
    assert read_errors(out, "train") == {"locked/": Reason.UNLISTABLE, "SWAP": Reason.OUTSIDE_INPUT,
                                         "SWAP_FIFO": Reason.UNREADABLE, "HEA_SWAP": Reason.OUTSIDE_INPUT}
    assert "SECRET.mat, outside the input directory" in rows["SWAP"]["detail"]
    assert "a FIFO, not a regular file" in rows["SWAP_FIFO"]["detail"]
    assert rows["HEA_SWAP"]["detail"].startswith("header ") and "/dev/zero" in rows["HEA_SWAP"]["detail"]
    assert set(read_examples(out, "train")) == set(good)


def test_an_input_directory_that_cannot_be_listed_itself_is_a_configuration_error(tmp_path, monkeypatch):
    top = str(tmp_path / "in")
    (tmp_path / "in").mkdir()
    monkeypatch.setattr(os, "scandir", _scandir_refusing(top))
    with pytest.raises(ConfigurationError, match="could not be listed: PermissionError: Permission denied"):
        find_records(top, TEST_SPLIT, parse_labels(""))


def test_a_directory_on_the_way_swapped_for_a_link_while_opening_is_caught_on_the_descriptor(tmp_path, monkeypatch):
    """The window O_NOFOLLOW cannot close (it guards the last component only): the file is resolved
    inside the tree, then a directory on its path becomes a link out of it just before the open."""
    root, outside = tmp_path / "in", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "A.mat").write_bytes(b"inside")
    (outside / "A.mat").write_bytes(b"outside")
    real_open = os.open

    def swap_then_open(path, flags, *args, **kwargs):
        if os.fspath(path) == str(root / "sub" / "A.mat") and (root / "sub").is_dir() and not (root / "sub").is_symlink():
            (root / "sub" / "A.mat").unlink()
            (root / "sub").rmdir()
            os.symlink(outside, root / "sub")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", swap_then_open)
    with pytest.raises(Refused) as refused:
        read_local(str(root / "sub" / "A.mat"), 100, str(root))
    assert refused.value.reason == Reason.OUTSIDE_INPUT and str(outside) in refused.value.detail


# 3. Reprocessing hashes only what it may read --------------------------------------------------

@pytest.fixture(scope="module")
def refused_night(tmp_path_factory):
    """A reprocessing night whose INCOMING holds two good records, a FIFO, a `.hea` linked to
    /dev/zero, a link out of INCOMING and a directory beyond PATH_MAX; run twice, each time as a
    real process (a FIFO hung it forever)."""
    work = tmp_path_factory.mktemp("refused")
    base, _, _ = run_base(work / "base", np.random.default_rng(21))
    incoming, root, outside = work / "incoming", work / "root", work / "outside"
    rng = np.random.default_rng(22)
    for rid in ("OK0", "OK1"):
        save_record(incoming, rid, ecg(rng))
    outside.mkdir()
    save_record(outside, "SECRET", ecg(rng))
    os.mkfifo(incoming / "FIFO.mat")
    save_record(incoming, "ZERO", hf.cinc_val(23))
    os.symlink("/dev/zero", incoming / "ZERO.hea")
    os.symlink(outside / "SECRET.mat", incoming / "LINK_OUT.mat")
    (incoming / "deep").mkdir()
    unlistable, _ = hf.beyond_path_max(incoming / "deep", "DEEP.mat", hf.contest(24))
    args = ("--incoming", str(incoming), "--transform_dir", str(base), "--output_root", str(root),
            "--max_error_rate", "1")
    first = _command("beam_pipeline.reprocess", *args)
    second = _command("beam_pipeline.reprocess", *args)
    secret = hashlib.sha256((outside / "SECRET.mat").read_bytes()).hexdigest()
    return root, f"{os.path.relpath(unlistable, incoming)}/", secret, first, second


def test_reprocessing_refuses_before_reading_and_records_what_it_did_not_hash(refused_night):
    root, unlistable_id, secret, first, _ = refused_night
    assert first.code == EXIT_OK, first.err
    [batch] = [p for p in root.iterdir() if p.name.startswith("batch-")]
    rows = _rows(batch, "data")
    assert {rid: row["reason"] for rid, row in rows.items()} == {
        "FIFO": Reason.UNREADABLE, "ZERO": Reason.OUTSIDE_INPUT, "LINK_OUT": Reason.OUTSIDE_INPUT,
        unlistable_id: Reason.UNLISTABLE}
    assert "not followed" in rows["LINK_OUT"]["detail"]
    assert len(read_examples(batch, "data")) == 2
    ledger_text, manifest_text = (root / LEDGER_FILE).read_text(), (batch / MANIFEST_FILE).read_text()
    assert secret not in ledger_text and secret not in manifest_text, "the file outside INCOMING was read"
    ledger = {os.path.basename(row["path"]): row for row in map(json.loads, ledger_text.splitlines()[1:])}
    for name in ("FIFO.mat", "ZERO.hea", "LINK_OUT.mat"):
        assert ledger[name]["sha256"] == NOT_HASHED, name
    assert all(len(ledger[name]["sha256"]) == 64 for name in ("OK0.mat", "OK1.mat", "ZERO.mat"))
    assert manifest_text.count(f'"sha256": "{NOT_HASHED}"') == 4  # with the unlistable directory


def test_refused_files_are_reported_once_not_every_night(refused_night):
    root, _, _, _, second = refused_night
    assert second.code == EXIT_OK, second.err
    assert "nothing new" in second.out
    assert len([p for p in root.iterdir() if p.name.startswith("batch-")]) == 1


# 5. The labels file ----------------------------------------------------------------------------

@pytest.fixture
def one_record(tmp_path) -> Path:
    train = tmp_path / "TRAIN"
    train.mkdir()
    _write_small_set(train, 1)
    return train


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_a_labels_file_that_is_not_a_regular_file_is_a_one_line_configuration_error(one_record, tmp_path, kind):
    labels = tmp_path / "labels"
    if kind == "fifo":
        os.mkfifo(labels)  # reading it blocked the run until a writer came: forever
    else:
        os.symlink("/dev/zero", labels)  # reading it grew the process past 5.6 GB
    out = tmp_path / "out"
    run = _command("beam_pipeline", "--train_dir", str(one_record), "--labels", str(labels), "--output_dir", str(out),
                   limit_memory=True)
    assert run.code == EXIT_CONFIG
    what = "a FIFO" if kind == "fifo" else "a character device"
    assert _error_lines(run.err) == [f"error: cannot read labels file {labels}: {what}, not a regular file; "
                                     f"not opened"]
    assert not out.exists()


def test_a_labels_file_beyond_the_size_bound_is_refused_unread(tmp_path):
    labels = tmp_path / "labels.txt"
    with open(labels, "wb") as handle:
        handle.truncate(MAX_LABELS_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(ConfigurationError, match=f"holds more than {MAX_LABELS_BYTES} bytes"):
        read_labels(str(labels))


def test_a_compressed_or_linked_labels_file_is_still_read(tmp_path):
    (tmp_path / "labels.txt.gz").write_bytes(gzip.compress(b"A\t1\nB\t0\n"))
    os.symlink(tmp_path / "labels.txt.gz", tmp_path / "link.gz")
    assert read_labels(str(tmp_path / "link.gz")).by_id == {"A": 1, "B": 0}
