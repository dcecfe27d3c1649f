"""End to end through the real command lines: `.mat` files -> pipeline -> trainer -> predict -> serving.

Small runs (a few epochs) prove the contract between the pipeline and the trainer, and that the
SavedModel fed raw ECGs decoded from the very `.mat` files agrees with predict's path through the
pipeline's normalized TFRecords. Model quality on the full demo set is measured outside the tests.
"""
from __future__ import annotations

import csv
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import trainer  # noqa: F401 - sets TF_USE_LEGACY_KERAS / KERAS_BACKEND before TensorFlow is imported
from beam_pipeline.cli import main_command as pipeline_cli
from beam_pipeline.decoding.decode import decode_record
from beam_pipeline.synthetic.generator import generate_dataset
from ecg_common.schema import ECG_KEY, TEST_SPLIT, TRAIN_SPLIT
from trainer import export, layout, predict
from trainer.__main__ import main as train_main

QUICK = ["--epochs", "3", "--batch_size", "8", "--filters", "8,16,16,32", "--seed", "3"]


def _read_predictions(path: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with open(path, encoding="utf-8") as handle:
        assert handle.readline().strip() == "record_id,probability,predicted_label,true_label"
    return rows


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A small synthetic contest set through all three command lines."""
    root = tmp_path_factory.mktemp("e2e")
    data, out, model = root / "data", root / "out", root / "model"
    generate_dataset(str(data), 40, 12, seed=1)
    assert pipeline_cli.main(["--train_dir", str(data / "TRAIN"), "--labels", str(data / "reference.txt"),
                              "--test_dir", str(data / "TEST"), "--output_dir", str(out)]) == 0
    assert train_main(["--data_dir", str(out), "--model_dir", str(model), *QUICK]) == 0
    predictions = root / "predictions.csv"
    assert predict.main(["--model_dir", str(model), "--data_dir", str(out), "--split", TEST_SPLIT,
                         "--output", str(predictions)]) == 0
    return data, out, model, predictions


def test_demo_pipeline_to_predictions(demo_run):
    data, _, model, predictions = demo_run
    rows = _read_predictions(str(predictions))
    assert sorted(r["record_id"] for r in rows) == sorted(name[:-4] for name in os.listdir(data / "TEST"))
    with open(model / layout.METRICS_FILE, encoding="utf-8") as handle:
        metrics = json.load(handle)
    assert metrics["class_counts"]["train"]["normal"] + metrics["class_counts"]["train"]["abnormal"] == 32
    assert sum(metrics["class_counts"]["validation"].values()) == 8
    assert all(int(r["predicted_label"]) == int(float(r["probability"]) >= metrics["threshold"]) for r in rows)
    assert {r["true_label"] for r in rows} == {""}  # the pipeline never sees test_answers.txt


def test_demo_train_predictions_carry_the_true_labels(demo_run, tmp_path):
    """On the labelled split, true_label is the reference label of each record, and predicted_label is apart."""
    data, out, model, _ = demo_run
    output = tmp_path / "train_predictions.csv"
    assert predict.main(["--model_dir", str(model), "--data_dir", str(out), "--split", TRAIN_SPLIT,
                         "--output", str(output)]) == 0
    with open(data / "reference.txt", encoding="utf-8") as handle:
        truth = dict(line.split() for line in handle if line.strip())
    rows = _read_predictions(str(output))
    assert {r["record_id"]: r["true_label"] for r in rows} == truth


def test_serving_raw_mat_matches_predict(demo_run):
    """Raw ECGs decoded from the TEST .mat files, served, equal predict's probabilities (pipeline path)."""
    data, _, model, predictions = demo_run
    expected = {r["record_id"]: float(r["probability"]) for r in _read_predictions(str(predictions))}
    ids = sorted(expected)
    raw = np.stack([decode_record((data / "TEST" / f"{record_id}.mat").read_bytes()) for record_id in ids])
    loaded = export.load_serving_model(str(model / layout.SERVING_DIR))
    served = loaded.signatures[export.SERVING_SIGNATURE](**{ECG_KEY: tf.constant(raw)})[export.PROBABILITY_KEY]
    np.testing.assert_allclose(served.numpy(), [expected[i] for i in ids], rtol=0, atol=1e-5)
    assert np.ptp(served.numpy()) > 0  # a constant model would make the comparison trivial


def test_real_cinc2021_train_and_predict(real_ecg_dir, tmp_path, monkeypatch):
    """The 50 real PhysioNet/CinC 2021 recordings (11 normal, 39 abnormal) train and predict end to end."""
    source, out, model = real_ecg_dir / "cinc2021", tmp_path / "out", tmp_path / "model"
    assert pipeline_cli.main(["--train_dir", str(source), "--labels", str(source / "labels.txt"),
                              "--output_dir", str(out)]) == 0
    fit_calls = []
    original_fit = keras.Model.fit

    def recording_fit(self, *args, **kwargs):
        fit_calls.append(kwargs.get("class_weight"))
        return original_fit(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    assert train_main(["--data_dir", str(out), "--model_dir", str(model), *QUICK]) == 0
    # Training sees 9 normal / 31 abnormal: balanced weights n / (2 * n_class) reach model.fit.
    assert fit_calls == [pytest.approx({0: 40 / 18, 1: 40 / 62})]
    with open(model / layout.METRICS_FILE, encoding="utf-8") as handle:
        metrics = json.load(handle)
    # Stratified 20% hold-out of 11 / 39, and balanced class weights for the 80% abnormal set.
    assert metrics["class_counts"]["validation"] == {"normal": 2, "abnormal": 8}
    assert metrics["class_weight"]["normal"] > 2 * metrics["class_weight"]["abnormal"]
    output = tmp_path / "predictions.csv"
    assert predict.main(["--model_dir", str(model), "--data_dir", str(out), "--split", TRAIN_SPLIT,
                         "--output", str(output)]) == 0
    rows = _read_predictions(str(output))
    with open(source / "labels.txt", encoding="utf-8") as handle:
        truth = dict(line.split()[:2] for line in handle if line.strip())
    assert {r["record_id"] for r in rows} == set(truth) and len(rows) == 50
    assert {r["record_id"]: r["true_label"] for r in rows} == truth  # the labelled split: the truth, unchanged
    # 2 normal validation records: the small-class caveat is in metrics.json.
    assert metrics["validation"]["reliable"] is False and "only 2 normal" in metrics["validation"]["caveat"]
