"""End-to-end runs of `python -m beam_pipeline` on FnApiRunner: small generated sets and real files."""
import glob
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
import tensorflow as tf
import tensorflow_transform as tft

from beam_pipeline.cli.main_command import main
from ecg_common.cli import EXIT_CONFIG, EXIT_OK
from ecg_common.rejections import Reason
from ecg_common.schema import (AGE_KEY, ECG_KEY, ECG_SHAPE, LABEL_KEY, NUM_LEADS, NUM_SAMPLES, RECORD_ID_KEY, SEX_KEY,
                               WINDOW_INDEX_KEY, WINDOW_START_KEY)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_examples(out_dir, split) -> dict[str, dict]:
    """record_id -> {'ecg': (5000, 12) array, 'label': int or None} from the GZIP shards."""
    examples = {}
    files = sorted(glob.glob(os.path.join(out_dir, split, "part-*.tfrecord.gz")))
    assert files, f"no shards for {split}"
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        features = tf.train.Example.FromString(record.numpy()).features.feature
        label = list(features[LABEL_KEY].int64_list.value) if LABEL_KEY in features else None
        examples[features[RECORD_ID_KEY].bytes_list.value[0].decode()] = {
            "ecg": np.array(features[ECG_KEY].float_list.value, np.float32).reshape(ECG_SHAPE),
            "label": label[0] if label else None,
        }
    return examples


def read_errors(out_dir, name) -> dict[str, str]:
    with open(os.path.join(out_dir, "errors", f"{name}.jsonl")) as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    assert all(set(row) == {"record_id", "path", "reason", "detail"} for row in rows)
    return {row["record_id"]: row["reason"] for row in rows}


def _signal(rng, record: int) -> np.ndarray:
    """(5000, 12) mV with a different mean and scale per lead, so normalization is visible."""
    lead_mean = np.linspace(-1.0, 2.0, NUM_LEADS) + 0.1 * record
    lead_std = np.linspace(0.2, 1.5, NUM_LEADS)
    return (rng.normal(size=ECG_SHAPE) * lead_std + lead_mean).astype(np.float32)


@pytest.fixture(scope="module")
def contest_set(tmp_path_factory):
    """A small contest-layout set with the first layer of bad inputs mixed in."""
    root = tmp_path_factory.mktemp("contest")
    rng = np.random.default_rng(7)
    raw = {}
    lines = ["id\tlabel"]
    for i in range(20):
        rid = f"TRAIN{101 + i}"
        folder = root / "TRAIN" / ("a" if i % 2 else "b")  # nested: found recursively
        folder.mkdir(parents=True, exist_ok=True)
        raw[rid] = _signal(rng, i)
        stored = raw[rid].T if i % 5 == 0 else raw[rid]  # some stored leads x samples
        scipy.io.savemat(folder / f"{rid}.mat", {"data": stored})
        lines.append(f"{rid}\t{i % 2}")
    (root / "TEST").mkdir()
    for i in range(5):
        rid = f"TEST{101 + i}"
        raw[rid] = _signal(rng, 40 + i)
        scipy.io.savemat(root / "TEST" / f"{rid}.mat", {"data": raw[rid]})
    lines.append("TEST101,1")  # a test record whose label is known
    bad = {
        "TRAIN901": ("garbage", Reason.NOT_MATLAB),
        "TRAIN902": ({"data": np.full(ECG_SHAPE, np.nan)}, Reason.NON_FINITE),
        "TRAIN903": ({"data": np.zeros((NUM_SAMPLES, 3))}, Reason.BAD_SHAPE),
        "TRAIN904": ({"data": np.zeros((NUM_SAMPLES, NUM_LEADS))}, Reason.MISSING_LABEL),
        "TRAIN905": ({"data": np.zeros((NUM_SAMPLES, NUM_LEADS))}, Reason.INVALID_LABEL),
        "TRAIN906": ({"data": np.zeros((1000, NUM_LEADS))}, Reason.TOO_SHORT),
    }
    for rid, (content, _) in bad.items():
        path = root / "TRAIN" / f"{rid}.mat"
        if isinstance(content, str):
            path.write_bytes(content.encode())
        else:
            scipy.io.savemat(path, content)
        if rid not in ("TRAIN904", "TRAIN905"):
            lines.append(f"{rid}\t1")
    lines += ["TRAIN905\t2", "GHOST\t0", ""]
    (root / "reference.txt").write_text("\r\n".join(lines), encoding="utf-8-sig")
    return root, raw, {rid: reason for rid, (_, reason) in bad.items()}


@pytest.fixture(scope="module")
def contest_run(contest_set, tmp_path_factory):
    root, raw, bad = contest_set
    out = tmp_path_factory.mktemp("run") / "out"
    code = main(["--train_dir", str(root / "TRAIN"), "--labels", str(root / "reference.txt"),
                 "--test_dir", str(root / "TEST"), "--output_dir", str(out),
                 "--max_error_rate", "0.5"])  # 6 of 26 training files are bad on purpose
    assert code == EXIT_OK
    return out, raw, bad


def test_output_contract_is_complete(contest_run):
    out, _, _ = contest_run
    tft_output = tft.TFTransformOutput(str(out))
    assert set(tft_output.raw_feature_spec()) == {ECG_KEY, LABEL_KEY, RECORD_ID_KEY, WINDOW_INDEX_KEY,
                                                  WINDOW_START_KEY, AGE_KEY, SEX_KEY}
    assert tft_output.transformed_feature_spec()[ECG_KEY].shape == list(ECG_SHAPE)
    assert os.path.exists(out / "_SUCCESS")
    with gzip.open(glob.glob(str(out / "train" / "part-*.tfrecord.gz"))[0]) as handle:
        assert handle.read(16)  # really GZIP
    assert not glob.glob(str(out.parent / ".out.staging-*")), "staging folder left behind"


def test_train_is_normalized_per_lead_over_the_whole_set(contest_run):
    out, raw, _ = contest_run
    train = read_examples(out, "train")
    expected_ids = {f"TRAIN{101 + i}" for i in range(20)}
    assert set(train) == expected_ids
    assert {rid: e["label"] for rid, e in train.items()} == {f"TRAIN{101 + i}": i % 2 for i in range(20)}
    values = np.stack([e["ecg"] for e in train.values()]).reshape(-1, NUM_LEADS).astype(np.float64)
    np.testing.assert_allclose(values.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(values.std(axis=0), 1.0, atol=1e-4)
    stacked = np.stack([raw[rid] for rid in sorted(expected_ids)]).astype(np.float64)
    mean, std = stacked.reshape(-1, NUM_LEADS).mean(axis=0), stacked.reshape(-1, NUM_LEADS).std(axis=0)
    np.testing.assert_allclose(train["TRAIN101"]["ecg"], (raw["TRAIN101"] - mean) / std, atol=1e-4)  # transposed file
    summary = json.loads((out / "run_summary.json").read_text())
    np.testing.assert_allclose(summary["lead_statistics"]["mean_mv"], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(summary["lead_statistics"]["std_mv"], std, rtol=1e-4)


def test_test_split_uses_training_statistics_and_keeps_known_labels(contest_run):
    out, raw, _ = contest_run
    test = read_examples(out, "test")
    assert set(test) == {f"TEST{101 + i}" for i in range(5)}
    train_raw = np.stack([raw[f"TRAIN{101 + i}"] for i in range(20)]).astype(np.float64).reshape(-1, NUM_LEADS)
    expected = (raw["TEST103"] - train_raw.mean(axis=0)) / train_raw.std(axis=0)
    np.testing.assert_allclose(test["TEST103"]["ecg"], expected, atol=1e-4)
    assert test["TEST101"]["label"] == 1
    assert all(test[f"TEST{101 + i}"]["label"] is None for i in range(1, 5))


def test_every_file_is_accounted_for(contest_run):
    out, _, bad = contest_run
    assert read_errors(out, "train") == bad
    assert read_errors(out, "test") == {}
    assert read_errors(out, "labels") == {"GHOST": Reason.LABEL_WITHOUT_FILE, "TRAIN905": Reason.INVALID_LABEL}
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["files_found"] == {"train": 26, "test": 5}
    assert summary["examples_written"] == {"train": 20, "test": 5}
    assert summary["rejected_total"] == {"train": 6, "test": 0}
    assert summary["reconciled"] is True
    assert summary["runner"] == f"FnApiRunner (in_memory, {os.cpu_count()} workers)"


@pytest.mark.parametrize("layout", ["cinc2021", "cpsc2018"])
def test_real_recordings_go_through_the_pipeline(real_ecg_dir, layout, tmp_path):
    folder = real_ecg_dir / layout
    out = tmp_path / "out"
    assert main(["--train_dir", str(folder), "--labels", str(folder / "labels.txt"), "--output_dir", str(out)]) == EXIT_OK
    expected = dict(line.split("\t") for line in (folder / "labels.txt").read_text().split("\n") if line.strip())
    train = read_examples(out, "train")
    assert set(train) == set(expected)
    assert {rid: e["label"] for rid, e in train.items()} == {rid: int(v) for rid, v in expected.items()}
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["rejected_total"]["train"] == 0
    assert all(0.01 < s < 5 for s in summary["lead_statistics"]["std_mv"]), "leads should be in mV"


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "beam_pipeline", *args], cwd=REPO, capture_output=True, text=True)


def test_broken_configuration_exits_2_with_one_line(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("A\t1\n")
    result = _run_cli("--train_dir", str(tmp_path / "missing"), "--labels", str(labels), "--output_dir", str(tmp_path / "o"))
    assert result.returncode == EXIT_CONFIG
    assert result.stderr.strip().splitlines()[-1] == f"error: input directory not found: {tmp_path / 'missing'}"
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_no_valid_training_record_exits_2(tmp_path):
    (tmp_path / "TRAIN").mkdir()
    (tmp_path / "TRAIN" / "A.mat").write_bytes(b"not a mat file")
    (tmp_path / "labels.txt").write_text("A\t1\n")
    result = _run_cli("--train_dir", str(tmp_path / "TRAIN"), "--labels", str(tmp_path / "labels.txt"),
                      "--output_dir", str(tmp_path / "o"))
    assert result.returncode == EXIT_CONFIG
    assert "could be decoded" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "o").exists()


def test_help_documents_the_project_options():
    result = _run_cli("--help")
    assert result.returncode == 0
    for option in ("--train_dir", "--labels", "--test_dir", "--output_dir", "--sampling_rate", "--pad_short",
                   "--num_shards", "first 10 s"):
        assert option in result.stdout


def test_long_runs_log_progress(contest_set, tmp_path, monkeypatch, caplog):
    import beam_pipeline.graph.progress

    monkeypatch.setattr(beam_pipeline.graph.progress, "PROGRESS_INTERVAL_S", 0.0)  # every file is "seconds later"
    root, _, _ = contest_set
    with caplog.at_level("INFO", logger="beam_pipeline.graph.progress"):
        assert main(["--train_dir", str(root / "TRAIN"), "--labels", str(root / "reference.txt"),
                     "--output_dir", str(tmp_path / "out"), "--max_error_rate", "0.5"]) == EXIT_OK
    found = json.loads((tmp_path / "out" / "run_summary.json").read_text())["files_found"]["train"]
    for pass_name in ("analyze", "transform"):
        lines = [m for m in caplog.messages if m.startswith(f"{pass_name} train: ")]
        done = [int(m.split()[2]) for m in lines]
        assert done == sorted(done) and done[-1] == found, lines  # rejected files are done too
        assert lines[0] == f"{pass_name} train: 1 of {found} files", lines
        assert all(f" of {found} files (" in m and " files/s, " in m and " s left)" in m for m in lines[1:]), lines
