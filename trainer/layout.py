"""The model directory's layout, in one place: what training writes and what predict and the report read.

    MODEL/serving/            the serving SavedModel (raw ECG in, the tf.Transform graph embedded)
    MODEL/model.keras         the trained Keras model
    MODEL/metrics.json        validation metrics, the threshold, the training history
    MODEL/validation_predictions.csv   validation true labels and scores, full precision (the report's ROC)
    MODEL/logs/               scalar summaries (TensorBoard event files)
    MODEL/report/index.html   the training report
"""
from __future__ import annotations

import csv
import json
import os

import numpy as np

from ecg_common.rejections import ConfigurationError

SERVING_DIR = "serving"
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
VALIDATION_PREDICTIONS_FILE = "validation_predictions.csv"
VALIDATION_PREDICTIONS_HEADER = ("true_label", "probability")
LEGACY_TRUE_LABEL_COLUMN = "label"
"""The truth column's name before it became `true_label` (older model directories still read)."""
LOGS_DIR = "logs"
REPORT_DIR = "report"


def write_validation_predictions(path: str, labels: np.ndarray, scores: np.ndarray) -> None:
    """The validation records' true labels and scores, full precision, so the ROC can be recomputed exactly."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(VALIDATION_PREDICTIONS_HEADER)
        writer.writerows((int(label), repr(float(score))) for label, score in zip(labels, scores))


def read_validation_predictions(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(true labels, probabilities) from `write_validation_predictions`' file, old (`label`) header or new."""
    true_column, probability_column = VALIDATION_PREDICTIONS_HEADER
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if true_column not in (reader.fieldnames or ()):
            true_column = LEGACY_TRUE_LABEL_COLUMN
        rows = list(reader)
    labels = np.array([int(row[true_column]) for row in rows], dtype=np.int64)
    return labels, np.array([float(row[probability_column]) for row in rows], dtype=np.float64)


def read_threshold(model_dir: str) -> float:
    """The decision threshold chosen at training time."""
    path = os.path.join(model_dir, METRICS_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            return float(json.load(handle)["threshold"])
    except (OSError, KeyError, ValueError) as error:
        raise ConfigurationError(f"cannot read the threshold from {path}: {error}") from None
