"""The ledger (what is new or changed, reconciling with published batches), the run lock, the selection
of records: plain files, no Beam."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import wfdb

from beam_pipeline.inputs.discovery import list_file_metadata
from beam_pipeline.inputs.labels import Labels
from ledger_files import Ledger, read_ledger, write_ledger
from selection_run import scan, select

from beam_pipeline.runs.ledger import LEDGER_FILE, MANIFEST_FILE, FileState, sha256_of
from beam_pipeline.runs.run_lock import LOCK_FILE, try_lock
from ecg_common.rejections import Reason
from ecg_common.schema import LEAD_NAMES

NO_LABELS = Labels({}, ())
HOUR = 3600


def _write(path, content: bytes, age_s: float = HOUR) -> str:
    """A file whose modification time is `age_s` in the past (so tests need no sleeping)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    mtime = path.stat().st_mtime - age_s
    os.utime(path, (mtime, mtime))
    return str(path)


def _published(tmp_path, contents: dict[str, bytes], batch="batch-1") -> Ledger:
    """The ledger after `batch` consumed files with these names and contents."""
    paths = [_write(tmp_path / "in" / name, data) for name, data in contents.items()]
    states = scan(list_file_metadata(str(tmp_path / "in")), Ledger(), float("inf")).states
    return Ledger().with_batch(batch, [states[p] for p in paths])


def test_scan_finds_new_and_changed_files_and_hashes_only_what_moved(tmp_path):
    ledger = _published(tmp_path, {"a.mat": b"A", "b.mat": b"B", "c.mat": b"C"})
    _write(tmp_path / "in" / "b.mat", b"B2")            # changed content
    _write(tmp_path / "in" / "c.mat", b"C", age_s=60)   # touched: new time, same content
    _write(tmp_path / "in" / "d.mat", b"D")             # new
    result = scan(list_file_metadata(str(tmp_path / "in")), ledger, float("inf"))
    assert {os.path.basename(p) for p in result.changed} == {"b.mat", "d.mat"}
    assert [os.path.basename(s.path) for s in result.touched] == ["c.mat"]
    assert result.touched[0].batch == "batch-1", "a touched file stays in the batch that consumed it"
    assert result.states[str(tmp_path / "in" / "b.mat")].sha256 == sha256_of(str(tmp_path / "in" / "b.mat"))


def test_scan_trusts_size_and_time_without_reading_the_file(tmp_path):
    ledger = _published(tmp_path, {"a.mat": b"A"})
    path = str(tmp_path / "in" / "a.mat")
    forged = ledger.with_states([FileState(path, 1, ledger.files[path].mtime, "not-the-hash", "batch-1")])
    result = scan(list_file_metadata(str(tmp_path / "in")), forged, float("inf"))
    assert not result.changed and result.states[path].sha256 == "not-the-hash"


def test_scan_leaves_files_modified_too_recently(tmp_path):
    _write(tmp_path / "in" / "old.mat", b"old")
    _write(tmp_path / "in" / "uploading.mat", b"partial", age_s=0)
    settled_before = os.stat(tmp_path / "in" / "uploading.mat").st_mtime - 60
    result = scan(list_file_metadata(str(tmp_path / "in")), Ledger(), settled_before)
    assert {os.path.basename(p) for p in result.changed} == {"old.mat"}
    assert {os.path.basename(p) for p in result.unsettled} == {"uploading.mat"}


def test_ledger_round_trips_and_is_replaced_whole(tmp_path):
    ledger = _published(tmp_path, {"a.mat": b"A", "b.mat": b"B"})
    write_ledger(str(tmp_path), ledger)
    assert read_ledger(str(tmp_path)) == ledger
    lines = (tmp_path / LEDGER_FILE).read_text().splitlines()
    assert json.loads(lines[0])["batches"] == ["batch-1"]
    assert [json.loads(line)["path"] for line in lines[1:]] == sorted(ledger.files)
    assert sorted(os.listdir(tmp_path)) == ["in", LEDGER_FILE], "no temporary file left beside the ledger"


def test_a_published_batch_the_ledger_missed_is_rolled_forward_from_its_manifest(tmp_path):
    ledger = _published(tmp_path, {"a.mat": b"A"})
    later = _published(tmp_path, {"a.mat": b"A2", "b.mat": b"B"}, batch="batch-2")
    (tmp_path / "root" / "batch-2").mkdir(parents=True)
    (tmp_path / "root" / "batch-2" / MANIFEST_FILE).write_text(
        "".join(dataclasses.replace(s, batch="").to_json() + "\n" for s in later.files.values()))
    selection = select(tmp_path / "in", ledger, root=tmp_path / "root", rolled_forward=("batch-2",))
    assert selection.sources == [], "what batch-2 consumed is not taken again"
    assert {os.path.basename(p): s.batch for p, s in selection.next_ledger.files.items()} == {
        "a.mat": "batch-2", "b.mat": "batch-2"}
    assert selection.next_ledger.batches == ("batch-1", "batch-2")


def test_a_deleted_batch_is_forgotten_so_its_files_are_redone(tmp_path):
    ledger = _published(tmp_path, {"a.mat": b"A"}).with_batch("batch-2", [])
    selection = select(tmp_path / "in", ledger, dropped=("batch-1",))
    assert [os.path.basename(s.path) for s in selection.sources] == ["a.mat"]
    assert selection.next_ledger.batches == ("batch-2", "batch-new")
    assert [s.batch for s in selection.next_ledger.files.values()] == ["batch-new"]


def test_a_changed_header_reselects_its_record_and_both_files_are_recorded(tmp_path):
    incoming = tmp_path / "in"
    _write(incoming / "r1.mat", b"signal-1")
    _write(incoming / "r1.hea", b"header-1")
    _write(incoming / "r2.mat", b"signal-2")
    _write(incoming / "notes.txt", b"not an input")
    first = select(incoming, Ledger())
    assert [s.record_id for s in first.sources] == ["r1", "r2"]
    assert {os.path.basename(s.path) for s in first.consumed} == {"r1.mat", "r1.hea", "r2.mat"}
    ledger = Ledger().with_batch("batch-1", first.consumed)
    assert select(incoming, ledger).sources == []
    _write(incoming / "r1.hea", b"header-1, corrected gain")
    again = select(incoming, ledger)
    assert [s.record_id for s in again.sources] == ["r1"] and again.unchanged == 1


HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


def test_lock_is_exclusive_and_released_when_its_holder_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / LOCK_FILE)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert try_lock(str(tmp_path)) is None
    finally:
        holder.kill()
        holder.wait()
    lock = try_lock(str(tmp_path))
    assert lock is not None
    assert try_lock(str(tmp_path)) is None, "a second taker in the same process is refused too"
    lock.release()
    taken_again = try_lock(str(tmp_path))
    assert taken_again is not None
    taken_again.release()


@pytest.mark.parametrize("path", ["gs://bucket/root"])
def test_object_store_root_runs_unlocked(path):
    assert try_lock(path) is not None


def _wfdb_record(folder, name: str, seed: int) -> tuple[str, str]:
    """A 12-lead WFDB record `name.hea` + `name.dat` (format 16) in `folder`, both an hour old."""
    folder.mkdir(parents=True, exist_ok=True)
    signal = np.random.default_rng(seed).normal(0, 0.4, (5000, 12))
    wfdb.wrsamp(name, fs=500, units=["mV"] * 12, sig_name=list(LEAD_NAMES), p_signal=signal, fmt=["16"] * 12,
                adc_gain=[200.0] * 12, baseline=[0] * 12, write_dir=str(folder))
    paths = str(folder / f"{name}.hea"), str(folder / f"{name}.dat")
    for path in paths:
        os.utime(path, (os.path.getmtime(path) - HOUR,) * 2)
    return paths


def _redeliver_signal(dat: str, seed: int) -> None:
    """`dat` rewritten with other samples of the same size (so only its content and time tell)."""
    size = os.path.getsize(dat)
    with open(dat, "wb") as handle:
        handle.write(np.random.default_rng(seed).integers(-500, 500, size // 2, dtype="<i2").tobytes())
    assert os.path.getsize(dat) == size


def test_a_wfdb_record_is_its_header_and_its_signal_file_and_a_new_dat_alone_redoes_it(tmp_path):
    incoming = tmp_path / "in"
    hea, dat = _wfdb_record(incoming, "W1", seed=1)
    _write(incoming / "r2.mat", b"signal-2")
    first = select(incoming, Ledger())
    assert [s.record_id for s in first.sources] == ["W1", "r2"]
    assert {os.path.basename(s.path) for s in first.consumed} == {"W1.hea", "W1.dat", "r2.mat"}
    assert next(s for s in first.consumed if s.path == hea).signal_files == (dat,)
    root = tmp_path / "root"
    root.mkdir()
    write_ledger(str(root), Ledger().with_batch("batch-1", first.consumed))
    ledger = read_ledger(str(root))
    assert ledger.files[hea].signal_files == (dat,) and ledger.files[dat].batch == "batch-1"
    unchanged = select(incoming, ledger)
    assert unchanged.sources == [] and unchanged.unchanged == 2 and unchanged.touched == ()
    _redeliver_signal(dat, seed=2)
    again = select(incoming, ledger)
    assert [s.record_id for s in again.sources] == ["W1"] and again.unchanged == 1
    assert {s.path for s in again.consumed} == {hea, dat}
    assert next(s for s in again.consumed if s.path == dat).sha256 != ledger.files[dat].sha256


def test_a_missing_signal_file_is_not_recorded_and_its_arrival_redoes_the_record(tmp_path):
    incoming = tmp_path / "in"
    hea, dat = _wfdb_record(incoming, "W1", seed=1)
    os.remove(dat)
    first = select(incoming, Ledger())
    assert [s.path for s in first.sources] == [hea] and [s.path for s in first.consumed] == [hea]
    ledger = Ledger().with_batch("batch-1", first.consumed)
    assert select(incoming, ledger).sources == []
    _wfdb_record(incoming, "W1", seed=1)  # the same header, now with its signal file
    os.utime(hea, (ledger.files[hea].mtime,) * 2)
    arrived = select(incoming, ledger)
    assert [s.path for s in arrived.sources] == [hea] and {s.path for s in arrived.consumed} == {hea, dat}


def test_a_ledger_from_before_signal_files_adopts_them_without_redoing_the_record(tmp_path):
    incoming = tmp_path / "in"
    hea, dat = _wfdb_record(incoming, "W1", seed=1)
    root = tmp_path / "root"
    root.mkdir()
    header_only = scan(list_file_metadata(str(incoming)), Ledger(), float("inf")).states[hea]
    old_line = {k: v for k, v in json.loads(header_only.to_json()).items() if k != "signal_files"}
    (root / LEDGER_FILE).write_text(json.dumps({"format": "ecg-reprocess-ledger/1", "batches": ["batch-1"]}) + "\n"
                                    + json.dumps({**old_line, "batch": "batch-1"}) + "\n")
    ledger = read_ledger(str(root))
    assert ledger.files[hea].signal_files is None
    selection = select(incoming, ledger)
    assert selection.sources == []
    adopted = {s.path: s for s in selection.touched}
    assert adopted[hea].signal_files == (dat,) and adopted[dat].batch == "batch-1"
    ledger = ledger.with_states(selection.touched)
    _redeliver_signal(dat, seed=2)
    assert [s.path for s in select(incoming, ledger).sources] == [hea], "from then on the .dat is watched"


def test_a_changed_mat_under_an_unchanged_header_redoes_the_record(tmp_path):
    incoming = tmp_path / "in"
    _write(incoming / "r1.mat", b"signal-1")
    _write(incoming / "r1.hea", b"header-1")
    ledger = Ledger().with_batch("batch-1", select(incoming, Ledger()).consumed)
    _write(incoming / "r1.mat", b"signal-2")
    again = select(incoming, ledger)
    assert [s.record_id for s in again.sources] == ["r1"]
    assert {os.path.basename(s.path) for s in again.consumed} == {"r1.mat", "r1.hea"}
    assert all(s.signal_files is None for s in again.consumed), "a .mat record's files name no signal files"


def test_a_wfdb_record_waits_while_its_signal_file_is_still_being_written(tmp_path):
    incoming = tmp_path / "in"
    hea, dat = _wfdb_record(incoming, "W1", seed=1)
    os.utime(dat)  # written just now: maybe still uploading
    settled_before = os.path.getmtime(dat) - 60
    waiting = select(incoming, Ledger(), settled_before=settled_before)
    assert waiting.sources == [] and waiting.unsettled == 1 and waiting.consumed == []
    assert waiting.unchanged == 0, "a record that waits is not unchanged either"
    settled = select(incoming, Ledger(), settled_before=os.path.getmtime(dat) + 1)
    assert [s.path for s in settled.sources] == [hea] and {s.path for s in settled.consumed} == {hea, dat}


def test_a_labels_finding_is_reported_with_its_records_batch_only(tmp_path):
    incoming = tmp_path / "in"
    _write(incoming / "r1.mat", b"signal-1")
    _write(incoming / "r2.mat", b"signal-2")
    labels = tmp_path / "labels.txt"
    labels.write_text("r1\tmaybe\nr2\t1\nr3\t0\n")  # r1's label is unusable; r3 has no file
    first = select(incoming, Ledger(), labels_path=str(labels))
    assert [(s.record_id, s.label) for s in first.sources] == [("r1", -1), ("r2", 1)]
    assert [(f.record_id, f.reason) for f in first.findings] == [("r1", Reason.INVALID_LABEL)]
    _write(incoming / "r2.mat", b"signal-2, re-exported")
    again = select(incoming, Ledger().with_batch("batch-1", first.consumed), labels_path=str(labels))
    assert [s.record_id for s in again.sources] == ["r2"] and again.findings == [], "r1's finding was reported once"
