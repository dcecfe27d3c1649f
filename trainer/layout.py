"""The model directory's layout, in one place: what training writes and what predict and the report read.

    MODEL/serving/            the serving SavedModel (raw ECG in, the tf.Transform graph embedded)
    MODEL/model.keras         the trained Keras model
    MODEL/metrics.json        validation metrics, the threshold, the training history
    MODEL/decoding.json       the pipeline's decoding options for the training data (predict --records)
    MODEL/validation_predictions.csv   validation true labels and scores, full precision (the report's ROC)
    MODEL/logs/               scalar summaries (TensorBoard event files)
    MODEL/report/index.html   the training report
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os

import numpy as np

from ecg_common.layout import DEFAULT_SAMPLING_RATE_KEY, PAD_SHORT_KEY
from ecg_common.rejections import ConfigurationError
from ecg_common.schema import SAMPLING_RATE_HZ

SERVING_DIR = "serving"
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
VALIDATION_PREDICTIONS_FILE = "validation_predictions.csv"
VALIDATION_PREDICTIONS_HEADER = ("true_label", "probability")
LEGACY_TRUE_LABEL_COLUMN = "label"
"""The truth column's name before it became `true_label` (older model directories still read)."""
DECODING_FILE = "decoding.json"
RECORDED_KEY = "recorded"
"""`decoding.json`'s flag: false when the training data's `run_summary.json` did not record its options
(an output of an older pipeline version), so the file holds the pipeline's defaults instead."""
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


_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DecodingOptions:
    """How the training data's records were decoded; a raw recording scored later is decoded the same way."""

    default_sampling_rate: float = SAMPLING_RATE_HZ
    """Hz assumed for a record without a WFDB `.hea` header (the pipeline's `--sampling_rate`)."""
    pad_short: bool = False
    """Records shorter than 10 s zero-padded (`--pad_short`) rather than rejected."""
    recorded: bool = True
    """False: nobody recorded them; these are the pipeline's defaults."""


def write_decoding_options(model_dir: str, options: DecodingOptions) -> None:
    with open(os.path.join(model_dir, DECODING_FILE), "w", encoding="utf-8") as handle:
        json.dump({DEFAULT_SAMPLING_RATE_KEY: options.default_sampling_rate, PAD_SHORT_KEY: options.pad_short,
                   RECORDED_KEY: options.recorded}, handle, indent=2)


def read_decoding_options(model_dir: str) -> DecodingOptions:
    """`write_decoding_options`' record; a model trained before it existed gets the pipeline's defaults,
    with a warning (they are right unless its pipeline run was given `--sampling_rate` or `--pad_short`)."""
    path = os.path.join(model_dir, DECODING_FILE)
    if not os.path.exists(path):
        _log.warning("%s not found (a model trained before it was written): decoding with the pipeline's "
                     "defaults, %s Hz without a header and no padding", path, SAMPLING_RATE_HZ)
        return DecodingOptions(recorded=False)
    try:
        with open(path, encoding="utf-8") as handle:
            recorded = json.load(handle)
        return DecodingOptions(float(recorded[DEFAULT_SAMPLING_RATE_KEY]), bool(recorded[PAD_SHORT_KEY]),
                               bool(recorded.get(RECORDED_KEY, True)))
    except (OSError, KeyError, TypeError, ValueError) as error:
        raise ConfigurationError(f"cannot read the decoding options from {path}: {error}") from None


def read_threshold(model_dir: str) -> float:
    """The decision threshold chosen at training time."""
    path = os.path.join(model_dir, METRICS_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            return float(json.load(handle)["threshold"])
    except (OSError, KeyError, ValueError) as error:
        raise ConfigurationError(f"cannot read the threshold from {path}: {error}") from None
