"""The trainer on windowed data: the validation split is by record (no window of a validation record is
trained on), predict's row per record is the mean over its windows (`--per_window`: one per window), and
the model and its serving signature take the shape the data was built with (read from the schema)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from real_recordings import real_ecg_path

from beam_pipeline.cli.main_command import main as pipeline_main
from ecg_common.cli import EXIT_OK
from ecg_common.schema import ECG_KEY, LABEL_KEY, RECORD_ID_KEY, WINDOW_INDEX_KEY
from trainer import inputs
from trainer.__main__ import main as train_main
from trainer.config import TrainConfig
from trainer.export import SERVING_SIGNATURE, load_serving_model
from trainer.layout import resolve_export
from trainer.predict import Prediction, main as predict_main, mean_per_record

REAL = real_ecg_path()


def _windowed_records(count: int, windows_of) -> list[inputs.Record]:
    return [inputs.Record(f"R{k:02d}", k % 2) for k in range(count) for _ in range(windows_of(k))]


def test_the_validation_split_counts_records_not_windows():
    records = _windowed_records(20, lambda k: 1 + k % 7)  # 1..7 windows per record
    held_out = inputs.validation_ids(records, 0.2)
    assert len(held_out) == 4  # 2 of the 10 records of each class, however many windows they have
    single = inputs.validation_ids([inputs.Record(r, r_label) for r, r_label in
                                    {(rec.record_id, rec.label) for rec in records}], 0.2)
    assert held_out == single


def _serialized(record_id: str, window: int, label: int) -> bytes:
    feature = {ECG_KEY: tf.train.Feature(float_list=tf.train.FloatList(value=[float(window)] * 4)),
               LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
               RECORD_ID_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[record_id.encode()])),
               WINDOW_INDEX_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[window]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_every_window_of_a_record_lands_on_its_side_of_the_split():
    records = _windowed_records(12, lambda k: 2 + k % 3)
    window_of = {}
    serialized = []
    for record in records:
        window_of[record.record_id] = window_of.get(record.record_id, -1) + 1
        serialized.append(_serialized(record.record_id, window_of[record.record_id], record.label))
    held_out = inputs.validation_ids(records, 0.25)
    train_ids = {r.record_id for r in records} - held_out
    spec = {ECG_KEY: tf.io.FixedLenFeature([2, 2], tf.float32), LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
            RECORD_ID_KEY: tf.io.FixedLenFeature([], tf.string), WINDOW_INDEX_KEY: tf.io.FixedLenFeature([], tf.int64)}
    examples = tf.data.Dataset.from_tensor_slices(serialized)

    def seen(ids):
        n = sum(1 for r in records if r.record_id in ids)
        dataset = inputs.input_fn(examples, spec, 4, record_ids=ids, num_examples=n)
        assert int(dataset.cardinality()) == -(-n // 4)
        return [(rid.decode(), int(w)) for batch in dataset for rid, w in
                zip(batch[RECORD_ID_KEY].numpy(), batch[WINDOW_INDEX_KEY].numpy())]

    train, val = seen(train_ids), seen(held_out)
    assert {rid for rid, _ in train}.isdisjoint({rid for rid, _ in val})
    assert sorted(train + val) == sorted((r, w) for r, last in window_of.items() for w in range(last + 1))


def test_predict_writes_the_mean_of_a_records_windows_thresholded():
    windows = [Prediction("A", 0.2, 0, 1, window_index=0), Prediction("A", 0.6, 1, 1, window_index=1),
               Prediction("B", 0.9, 1, 0, window_index=0), Prediction("C", 0.3, 0, -1, window_index=0),
               Prediction("C", 0.5, 1, -1, window_index=1)]
    rows = mean_per_record(windows, threshold=0.4)
    assert [(p.record_id, p.predicted_label, p.true_label, p.window_index) for p in rows] == [
        ("A", 1, 1, None), ("B", 1, 0, None), ("C", 1, -1, None)]  # C: mean 0.4 >= 0.4
    assert [p.probability for p in rows] == pytest.approx([0.4, 0.9, 0.4])
    assert mean_per_record(windows, threshold=0.41)[2].predicted_label == 0


@pytest.fixture(scope="module")
def windowed_model(tmp_path_factory):
    """The shared CinC records as 5 s windows every 2.5 s (3 per record), 250 Hz, 8 leads; a small model."""
    root = tmp_path_factory.mktemp("trainer_windows")
    out, model = root / "out", root / "model"
    assert pipeline_main(["--train_dir", str(REAL / "cinc2021"), "--labels", str(REAL / "cinc2021" / "labels.txt"),
                          "--test_dir", str(REAL / "cinc2021"), "--output_dir", str(out), "--window_s", "5",
                          "--window_stride_s", "2.5", "--target_rate_hz", "250",
                          "--leads", "I,II,V1,V2,V3,V4,V5,V6"]) == EXIT_OK
    assert train_main(["--data_dir", str(out), "--model_dir", str(model), "--epochs", "1", "--batch_size", "16",
                       "--filters", "8,16", "--seed", "3"]) == EXIT_OK
    return out, model


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_run_report_draws_its_example_at_the_runs_geometry(windowed_model):
    out, _ = windowed_model
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["report"]["status"] == "written", summary["report"]
    page = (out / "report" / "index.html").read_text()
    assert "example_raw.png" in page and "example_normalized.png" in page and "could not be drawn" not in page
    assert "5 s at 250 Hz, leads I,II,V1,V2,V3,V4,V5,V6" in page
    assert (out / "report" / "example_raw.png").stat().st_size > 0


def test_the_windowed_runs_threshold_and_metrics_count_its_validation_records(windowed_model, tmp_path):
    out, model = windowed_model
    metrics = json.loads((model / "metrics.json").read_text())
    validation = metrics["validation"]
    held_out = inputs.validation_ids(inputs.scan_records(inputs.split_files(str(out), "train")),
                                     TrainConfig().val_fraction)
    assert validation["unit"] == "record"
    assert validation["num_records"] == validation["num_examples"] == len(held_out) > 0
    assert validation["num_windows"] == 3 * len(held_out)  # every record is cut into 3 windows
    assert validation["positives"] + validation["negatives"] == len(held_out)
    assert len(_rows(model / "validation_predictions.csv")) == len(held_out)
    # predict's rows per record for the validation records, at the model's threshold, are what was counted.
    assert predict_main(["--model_dir", str(model), "--data_dir", str(out), "--split", "train",
                         "--output", str(tmp_path / "train.csv")]) == EXIT_OK
    rows = [row for row in _rows(tmp_path / "train.csv") if row["record_id"] in held_out]
    assert len(rows) == len(held_out)
    confusion = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    for row in rows:
        predicted, truth = int(row["predicted_label"]), int(row["true_label"])
        confusion[("t" if predicted == truth else "f") + ("p" if predicted else "n")] += 1
    assert confusion == validation["confusion"]


def test_a_model_on_windowed_data_serves_its_shape_and_predicts_per_record(windowed_model, tmp_path):
    out, model = windowed_model
    loaded = load_serving_model(resolve_export(str(model), None))
    signature = loaded.signatures[SERVING_SIGNATURE]
    assert signature.structured_input_signature[1][ECG_KEY].shape.as_list() == [None, 1250, 8]
    probability = signature(ecg=tf.zeros([2, 1250, 8]))["probability"].numpy()
    assert probability.shape == (2,)
    assert predict_main(["--model_dir", str(model), "--data_dir", str(out), "--split", "test",
                         "--output", str(tmp_path / "records.csv")]) == EXIT_OK
    assert predict_main(["--model_dir", str(model), "--data_dir", str(out), "--split", "test", "--per_window",
                         "--output", str(tmp_path / "windows.csv")]) == EXIT_OK
    records, windows = _rows(tmp_path / "records.csv"), _rows(tmp_path / "windows.csv")
    assert len(records) == 50 and len(windows) == 150
    assert {row["window_index"] for row in windows} == {"0", "1", "2"}
    by_record: dict[str, list[float]] = {}
    for row in windows:
        by_record.setdefault(row["record_id"], []).append(float(row["probability"]))
    for row in records:
        assert float(row["probability"]) == pytest.approx(np.mean(by_record[row["record_id"]]), rel=1e-6)
    # Raw recordings are decoded and cut as the training data was (decoding.json), their windows' mean scored.
    raw_paths = [str(REAL / "cinc2021" / f"{rid}.mat") for rid in ("E07500", "HR06000", "JS20000")]
    assert predict_main(["--model_dir", str(model), "--records", *raw_paths,
                         "--output", str(tmp_path / "raw.csv")]) == EXIT_OK
    raw = {row["record_id"]: float(row["probability"]) for row in _rows(tmp_path / "raw.csv")}
    assert set(raw) == {"E07500", "HR06000", "JS20000"}
    for record_id, probability in raw.items():
        assert probability == pytest.approx(np.mean(by_record[record_id]), abs=1e-5)
