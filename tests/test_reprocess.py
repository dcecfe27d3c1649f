"""`python -m beam_pipeline.reprocess` end to end on FnApiRunner: frozen statistics, the ledger across
runs, kill -9, the lock, the drift flag."""
import contextlib
import dataclasses
import glob
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import wfdb
from batch_data import HOUR, ecg, lead_moments, run_base, save_record
from test_pipeline import read_errors, read_examples

from beam_pipeline.cli.reprocess_command import EXIT_DRIFT, EXIT_LOCKED, main
from beam_pipeline.runs.ledger import LEDGER_FILE, MANIFEST_FILE
from beam_pipeline.runs.run_lock import LOCK_FILE
from ecg_common.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from ecg_common.rejections import Reason
from ecg_common.schema import ECG_SHAPE, LEAD_NAMES, NUM_LEADS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILL_TEST_RECORDS = 120
"""Enough records that the run is still transforming when its staging folder appears."""
GIVE_UP_S = 600
"""Only so a broken run cannot hang the suite; no assertion depends on time."""


@dataclasses.dataclass
class Run:
    code: int
    out: str
    err: str


def _reprocess(incoming, root, base, *extra) -> Run:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--incoming", str(incoming), "--transform_dir", str(base), "--output_root", str(root), *extra])
    return Run(code, out.getvalue(), err.getvalue())


def _arrive(incoming, prefix: str, count: int, seed: int, **signal) -> None:
    """`count` new recordings `<prefix>000`, `<prefix>001`, ... in `incoming`."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        save_record(incoming, f"{prefix}{i:03d}", ecg(rng, **signal))


def _reprocess_command(incoming, root, base) -> list[str]:
    return [sys.executable, "-m", "beam_pipeline.reprocess", "--incoming", str(incoming), "--transform_dir",
            str(base), "--output_root", str(root)]


def _batches(root) -> list[str]:
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(root, "batch-*")))


def _summary(batch_dir) -> dict:
    with open(os.path.join(batch_dir, "run_summary.json")) as handle:
        return json.load(handle)


def _consumed(batch_dir) -> set[str]:
    with open(os.path.join(batch_dir, MANIFEST_FILE)) as handle:
        return {os.path.basename(json.loads(line)["path"]) for line in handle if line.strip()}


def _ledger(root) -> dict[str, dict]:
    with open(os.path.join(root, LEDGER_FILE)) as handle:
        _, *rows = [json.loads(line) for line in handle if line.strip()]
    return {os.path.basename(row["path"]): row for row in rows}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """An earlier pipeline run (the deployed model's statistics) and the raw statistics it must hold."""
    return run_base(tmp_path_factory.mktemp("base"), np.random.default_rng(11))


@pytest.fixture(scope="module")
def history(base_run, tmp_path_factory):
    """Three nights on one ROOT: a first batch, a night with nothing new, a night with new, changed,
    touched and still-uploading files. Returns what each night saw."""
    base, _, _ = base_run
    work = tmp_path_factory.mktemp("nights")
    incoming, root = work / "incoming", work / "root"
    rng = np.random.default_rng(12)
    raw = {f"N{i}": ecg(rng, shift_std=0.3) for i in range(101, 106)}
    for rid, sig in raw.items():
        save_record(incoming, rid, sig)
    save_record(incoming, "N900", b"not a MATLAB file")
    (work / "labels.txt").write_text("N101\t1\nN102,0\nT000\t1\n")
    labels = ["--labels", str(work / "labels.txt"), "--max_error_rate", "0.5"]  # N900 is 1 of 6 files

    first = _reprocess(incoming, root, base, *labels)
    first_raw = dict(raw)
    ledger_after_first = (root / LEDGER_FILE).read_bytes()
    second = _reprocess(incoming, root, base, *labels)
    ledger_after_second = (root / LEDGER_FILE).read_bytes()

    raw["N102"] = ecg(rng, shift_std=0.3)            # re-exported: same name, new content
    for rid in ("N106", "N107"):                          # arrived since
        raw[rid] = ecg(rng, shift_std=0.3)
    for rid in ("N102", "N106", "N107"):
        save_record(incoming, rid, raw[rid])
    touched = time.time() - HOUR / 2
    os.utime(incoming / "N103.mat", (touched, touched))  # touched (settled), content unchanged
    save_record(incoming, "N108", ecg(rng), age_s=0)       # still being uploaded
    third = _reprocess(incoming, root, base, *labels, "--min_file_age", "600")
    return dict(root=root, raw=raw, first_raw=first_raw, runs=(first, second, third),
                ledger_after_first=ledger_after_first,
                ledger_after_second=ledger_after_second)


def test_a_batch_is_normalized_with_the_frozen_statistics(base_run, history):
    _, base_mean, base_std = base_run
    root, raw, (first, _, _) = history["root"], history["raw"], history["runs"]
    assert first.code == EXIT_OK, first.err
    (batch,) = _batches(root)[:1]
    examples = read_examples(os.path.join(root, batch), "data")
    assert set(examples) == {"N101", "N102", "N103", "N104", "N105"}
    for rid in ("N101", "N104"):
        np.testing.assert_allclose(examples[rid]["ecg"], (raw[rid] - base_mean) / base_std, atol=1e-4)
    normalized = np.stack([e["ecg"] for e in examples.values()]).reshape(-1, NUM_LEADS)
    assert np.all(normalized.mean(axis=0) > 0.2), "the batch was shifted by 0.3 std: re-analysis would hide it"
    summary = _summary(os.path.join(root, batch))
    np.testing.assert_allclose(summary["lead_statistics"]["mean_mv"], base_mean, rtol=1e-4, atol=1e-5)
    assert summary["transform_dir"] == str(base_run[0])


def test_a_batch_has_its_own_report(history):
    root = history["root"]
    batch = os.path.join(root, _batches(root)[0])
    summary = _summary(batch)
    assert summary["report"]["status"] == "written", summary["report"]
    assert summary["report"]["example"]["record_id"] in {"N101", "N102", "N103", "N104", "N105"}
    page = open(os.path.join(batch, "report", "index.html")).read()
    for png in ("counts.png", "lead_statistics.png", "quality.png", "example_raw.png", "example_normalized.png"):
        assert png in page and os.path.getsize(os.path.join(batch, "report", png)) > 5000


def test_labelled_records_keep_their_labels_and_bad_files_are_accounted_for(history):
    root = history["root"]
    batch = os.path.join(root, _batches(root)[0])
    examples = read_examples(batch, "data")
    assert {rid: e["label"] for rid, e in examples.items()} == {"N101": 1, "N102": 0, "N103": None, "N104": None,
                                                                "N105": None}
    assert read_errors(batch, "data") == {"N900": Reason.NOT_MATLAB}
    assert read_errors(batch, "labels") == {}, "labels of records outside the batch are not findings"
    summary = _summary(batch)
    assert summary["files_found"] == {"data": 6} and summary["reconciled"] is True
    assert os.path.exists(os.path.join(batch, "_SUCCESS"))


def test_the_batch_reports_its_own_statistics_next_to_the_frozen_ones(base_run, history):
    _, base_mean, base_std = base_run
    root, first_raw = history["root"], history["first_raw"]
    summary = _summary(os.path.join(root, _batches(root)[0]))
    batch_mean, batch_std = lead_moments(first_raw.values())
    drift = summary["drift"]
    assert drift["flagged_leads"] == []
    assert drift["samples_per_lead"] == 5 * ECG_SHAPE[0]
    lead = drift["leads"]["V6"]
    assert lead["frozen_mean_mv"] == pytest.approx(base_mean[-1], rel=1e-4)
    assert lead["frozen_std_mv"] == pytest.approx(base_std[-1], rel=1e-4)
    assert lead["mean_shift_std"] == pytest.approx(0.3, abs=0.05)
    assert lead["batch_mean_mv"] == pytest.approx(batch_mean[-1], rel=1e-6)
    assert lead["batch_std_mv"] == pytest.approx(batch_std[-1], rel=1e-6)


def test_a_night_with_nothing_new_writes_nothing(history):
    root, (_, second, _) = history["root"], history["runs"]
    assert second.code == EXIT_OK, second.err
    assert "nothing new" in second.out and "no batch written" in second.out
    assert history["ledger_after_second"] == history["ledger_after_first"]
    assert len(_batches(root)) == 2, "only the first and third nights publish"


def test_exactly_the_new_and_changed_files_are_processed_when_more_arrive(history):
    root, (_, _, third) = history["root"], history["runs"]
    assert third.code == EXIT_OK, third.err
    first, latest = (os.path.join(root, b) for b in _batches(root))
    examples = read_examples(latest, "data")
    assert set(examples) == {"N102", "N106", "N107"}, "touched N103 and still-uploading N108 are left out"
    assert _consumed(latest) == {"N102.mat", "N106.mat", "N107.mat"}
    ledger = _ledger(root)
    assert "N108.mat" not in ledger
    assert {name: row["batch"] for name, row in ledger.items()} == {
        "N101.mat": os.path.basename(first), "N102.mat": os.path.basename(latest),
        "N103.mat": os.path.basename(first), "N104.mat": os.path.basename(first),
        "N105.mat": os.path.basename(first), "N106.mat": os.path.basename(latest),
        "N107.mat": os.path.basename(latest), "N900.mat": os.path.basename(first)}
    assert ledger["N103.mat"]["mtime"] == os.path.getmtime(ledger["N103.mat"]["path"]), "the new time is remembered"
    summary = _summary(latest)
    assert summary["records_unchanged"] == 5 and summary["files_not_settled"] == 1
    assert examples["N102"]["label"] == 0


def test_a_batch_at_five_times_the_gain_is_flagged_and_the_run_says_so(base_run, tmp_path):
    """(A batch in microvolts does not get this far: its records are rejected as implausible_amplitude.)"""
    base, _, _ = base_run
    _arrive(tmp_path / "incoming", "UV", 3, seed=13, scale=5.0)
    run = _reprocess(tmp_path / "incoming", tmp_path / "root", base)
    assert run.code == EXIT_DRIFT
    assert "drift" in run.err and "check the units" in run.err
    (batch,) = _batches(tmp_path / "root")
    drift = _summary(tmp_path / "root" / batch)["drift"]
    assert drift["flagged_leads"] == list(LEAD_NAMES)
    assert drift["leads"]["II"]["std_ratio"] == pytest.approx(5, rel=0.1)
    assert set(_ledger(tmp_path / "root")) == {"UV000.mat", "UV001.mat", "UV002.mat"}, "flagged, yet processed once"


def test_a_night_above_the_error_budget_is_published_and_fails(base_run, tmp_path):
    _arrive(tmp_path / "incoming", "OK", 2, seed=19)
    save_record(tmp_path / "incoming", "BROKEN", b"half a file")
    run = _reprocess(tmp_path / "incoming", tmp_path / "root", base_run[0])
    assert run.code == EXIT_FAILED
    assert "error rate above --max_error_rate 0.1: data 33.3% (1 of 3 files)" in run.err
    (batch,) = _batches(tmp_path / "root")
    assert _consumed(tmp_path / "root" / batch) == {"OK000.mat", "OK001.mat", "BROKEN.mat"}, "recorded: not redone"


def test_kill_9_mid_run_publishes_nothing_and_the_next_run_completes(base_run, tmp_path):
    base, _, _ = base_run
    incoming, root = tmp_path / "incoming", tmp_path / "root"
    _arrive(incoming, "OLD", 2, seed=14)
    assert _reprocess(incoming, root, base).code == EXIT_OK
    batches_before, ledger_before = _batches(root), (root / LEDGER_FILE).read_bytes()
    _arrive(incoming, "NEW", KILL_TEST_RECORDS, seed=114)

    with open(tmp_path / "killed-run.log", "wb") as log:
        process = subprocess.Popen(_reprocess_command(incoming, root, base), cwd=REPO, stdout=log, stderr=log)
        try:
            give_up = time.monotonic() + GIVE_UP_S
            while not glob.glob(str(root / ".batch-*.staging-*")) and process.poll() is None:
                assert time.monotonic() < give_up, "the run never started writing"
                time.sleep(0.02)
            assert process.poll() is None, "the run finished before it could be killed: give it more records"
            os.kill(process.pid, signal.SIGKILL)
        finally:
            process.kill()
            process.wait()
    assert glob.glob(str(root / ".batch-*.staging-*")), "killed while writing, before publishing"
    assert _batches(root) == batches_before
    assert (root / LEDGER_FILE).read_bytes() == ledger_before

    rerun = _reprocess(incoming, root, base)
    assert rerun.code == EXIT_OK, rerun.err
    new_batch = os.path.join(root, _batches(root)[-1])
    assert len(_batches(root)) == len(batches_before) + 1
    assert set(read_examples(new_batch, "data")) == {f"NEW{i:03d}" for i in range(KILL_TEST_RECORDS)}
    assert len(_ledger(root)) == KILL_TEST_RECORDS + 2
    assert not glob.glob(str(root / ".batch-*")), "the killed run's staging folder was cleaned up"


def test_a_run_stopped_between_publishing_and_the_ledger_does_not_publish_twice(base_run, tmp_path):
    base, _, _ = base_run
    incoming, root = tmp_path / "incoming", tmp_path / "root"
    rng = np.random.default_rng(15)
    save_record(incoming, "A", ecg(rng))
    assert _reprocess(incoming, root, base).code == EXIT_OK
    ledger_before = (root / LEDGER_FILE).read_bytes()
    save_record(incoming, "B", ecg(rng))
    assert _reprocess(incoming, root, base).code == EXIT_OK
    (root / LEDGER_FILE).write_bytes(ledger_before)  # as if killed right after the rename

    again = _reprocess(incoming, root, base)
    assert again.code == EXIT_OK and "nothing new" in again.out
    assert len(_batches(root)) == 2
    assert _ledger(root)["B.mat"]["batch"] == _batches(root)[1]


HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, str(os.getpid()).encode())
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_second_run_while_one_holds_the_lock_does_nothing(base_run, tmp_path):
    base, _, _ = base_run
    save_record(tmp_path / "incoming", "A", ecg(np.random.default_rng(16)))
    root = tmp_path / "root"
    root.mkdir()
    (root / LOCK_FILE).touch()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(root / LOCK_FILE)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        run = _reprocess(tmp_path / "incoming", root, base)
    finally:
        holder.kill()
        holder.wait()
    assert run.code == EXIT_LOCKED
    assert "another run holds the lock" in run.err and f"pid {holder.pid}" in run.err
    assert _batches(root) == [] and not (root / LEDGER_FILE).exists()


def test_two_runs_started_together_publish_each_file_once(base_run, tmp_path):
    base, _, _ = base_run
    incoming, root = tmp_path / "incoming", tmp_path / "root"
    _arrive(incoming, "C", 12, seed=17)
    logs = [tmp_path / f"run{i}.log" for i in range(2)]
    runs = []
    for log in logs:
        with open(log, "wb") as handle:
            runs.append(subprocess.Popen(_reprocess_command(incoming, root, base), cwd=REPO, stdout=handle,
                                         stderr=handle))
    outcomes = [(run.wait(), "", log.read_text()) for run, log in zip(runs, logs)]
    codes = sorted(code for code, _, _ in outcomes)
    assert codes in ([EXIT_OK, EXIT_OK], [EXIT_OK, EXIT_LOCKED]), outcomes
    (batch,) = _batches(root)
    assert _consumed(root / batch) == {f"C{i:03d}.mat" for i in range(12)}
    if codes == [EXIT_OK, EXIT_OK]:
        assert any("nothing new" in log for _, _, log in outcomes)
    else:
        assert any("another run holds the lock" in log for _, _, log in outcomes)


def test_a_missing_transform_is_a_configuration_error(tmp_path):
    save_record(tmp_path / "incoming", "A", ecg(np.random.default_rng(18)))
    run = _reprocess(tmp_path / "incoming", tmp_path / "root", tmp_path / "no-such-run")
    assert run.code == EXIT_CONFIG
    assert run.err.strip().splitlines()[-1].startswith("error: no transform_fn/ in")
    assert not (tmp_path / "root").exists()


def _wfdb_record(folder, name: str, signal: np.ndarray) -> tuple[str, str]:
    """`name.hea` + `name.dat` (format 16) holding `signal` (mV), written with `wfdb.wrsamp`, an hour old."""
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(name, fs=500, units=["mV"] * NUM_LEADS, sig_name=list(LEAD_NAMES), p_signal=signal.astype(np.float64),
                fmt=["16"] * NUM_LEADS, adc_gain=[1000.0] * NUM_LEADS, baseline=[0] * NUM_LEADS, write_dir=str(folder))
    paths = str(folder / f"{name}.hea"), str(folder / f"{name}.dat")
    for path in paths:
        os.utime(path, (time.time() - HOUR,) * 2)
    return paths


def test_a_wfdb_record_whose_dat_alone_was_redelivered_is_redone(base_run, tmp_path):
    base, _, _ = base_run
    incoming, root = tmp_path / "incoming", tmp_path / "root"
    rng = np.random.default_rng(21)
    hea, dat = _wfdb_record(incoming, "W1", ecg(rng, shift_std=0.3))
    _wfdb_record(incoming, "W2", ecg(rng, shift_std=0.3))
    os.remove(incoming / "W2.dat")  # a header whose signal file never came
    save_record(incoming, "N1", ecg(rng, shift_std=0.3))
    budget = ("--max_error_rate", "0.5")
    first = _reprocess(incoming, root, base, *budget)
    assert first.code == EXIT_OK, first.err
    (batch_1,) = _batches(root)
    assert set(read_examples(root / batch_1, "data")) == {"W1", "N1"}
    assert read_errors(root / batch_1, "data") == {"W2": Reason.UNREADABLE}
    assert _consumed(root / batch_1) == {"W1.hea", "W1.dat", "W2.hea", "N1.mat"}
    assert _ledger(root)["W1.hea"]["signal_files"] == [dat]

    second = _reprocess(incoming, root, base, *budget)
    assert second.code == EXIT_OK and "nothing new" in second.out, second.err

    header = (os.path.getsize(hea), os.path.getmtime(hea), open(hea, "rb").read())
    _wfdb_record(tmp_path / "redelivered", "W1", ecg(rng, shift_std=0.3))
    os.replace(tmp_path / "redelivered" / "W1.dat", dat)  # a new recording, same header
    assert (os.path.getsize(hea), os.path.getmtime(hea), open(hea, "rb").read()) == header
    third = _reprocess(incoming, root, base, *budget)
    assert third.code == EXIT_OK, third.err
    batch_1, batch_2 = _batches(root)
    assert _consumed(root / batch_2) == {"W1.hea", "W1.dat"}
    redone = read_examples(root / batch_2, "data")
    assert set(redone) == {"W1"}
    assert not np.allclose(redone["W1"]["ecg"], read_examples(root / batch_1, "data")["W1"]["ecg"])
    assert _ledger(root)["W1.dat"]["batch"] == batch_2 and _ledger(root)["N1.mat"]["batch"] == batch_1
