"""The model directory's layout, in one place: what training writes and what predict and the report read
(the serving export's names and version lookup live in `ecg_common.model_layout`, which nightly scoring reads too).

    MODEL/serving/<version>/  one serving SavedModel per training run (raw ECG in, the tf.Transform
                              graph and the decision threshold inside), versions 1, 2, ... in the
                              layout TF Serving loads (`--model_base_path=MODEL/serving`)
    MODEL/serving/<version>/assets.extra/transformed_metadata/   the schema of the examples it was
                              trained on: what predict parses a data folder's TFRecords with
    MODEL/serving/<version>/assets.extra/transform.json          the statistics of that transform
    MODEL/model.keras         the trained Keras model
    MODEL/metrics.json        validation metrics, the threshold, the training history
    MODEL/validation_predictions.csv   validation true labels and scores, full precision (the report's ROC)
    MODEL/decoding.json       how the training data's records were decoded (predict --records decodes alike)
    MODEL/logs/               scalar summaries (TensorBoard event files)
    MODEL/report/index.html   the training report
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import shutil

import numpy as np

from ecg_common import model_layout
from ecg_common.layout import DEFAULT_SAMPLING_RATE_KEY, GEOMETRY_KEY, PAD_SHORT_KEY, WINDOW_STRIDE_KEY
from ecg_common.model_layout import SAVED_MODEL_FILE, serving_root, version_dir
from ecg_common.rejections import ConfigurationError
from ecg_common.schema import DEFAULT_GEOMETRY, SAMPLING_RATE_HZ, Geometry

# The export's names, shared with nightly scoring, under the names the trainer has always used.
SERVING_DIR = model_layout.SERVING_DIR
EXTRA_ASSETS_DIR = model_layout.EXTRA_ASSETS_DIR
TRANSFORMED_METADATA_DIR = model_layout.TRANSFORMED_METADATA_DIR
TRANSFORM_INFO_FILE = model_layout.TRANSFORM_INFO_FILE
export_versions = model_layout.export_versions
resolve_export = model_layout.resolve_export
resolve_version = model_layout.resolve_version
FIRST_VERSION = 1
UNVERSIONED_VERSION = 0
"""Where an export of the former unversioned layout (`MODEL/serving/saved_model.pb`) is moved: below every new one."""
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
VALIDATION_PREDICTIONS_FILE = "validation_predictions.csv"
VALIDATION_PREDICTIONS_HEADER = ("true_label", "probability")
LEGACY_TRUE_LABEL_COLUMN = "label"
"""The truth column's name before it became `true_label` (older model directories still read)."""
MULTILABEL_VALIDATION_PREDICTIONS_FILE = "validation_predictions_multilabel.csv"
"""Multi-label models: `true_<class>` columns, then one probability column per class, per validation record."""
DECODING_FILE = "decoding.json"
RECORDED_KEY = "recorded"
LOGS_DIR = "logs"
REPORT_DIR = "report"

_log = logging.getLogger(__name__)


def next_version(model_dir: str) -> int:
    """One above every version folder present (complete or not), so an older version is never overwritten."""
    root = serving_root(model_dir)
    taken = [int(name) for name in os.listdir(root) if name.isdigit()] if os.path.isdir(root) else []
    return max(taken, default=FIRST_VERSION - 1) + 1


def adopt_unversioned_export(model_dir: str) -> str | None:
    """Moves an export of the former layout (SavedModel files directly in MODEL/serving/) to version 0.

    The trainer used to replace MODEL/serving/ on every run; it now adds a version beside the older
    ones, and TF Serving ignores files that are not in a version folder. Moving the old export into
    `serving/0/` keeps it (servable, below every new version) instead of deleting it. Returns the new
    folder, or None when there was nothing to move.
    """
    root = serving_root(model_dir)
    if not os.path.isfile(os.path.join(root, SAVED_MODEL_FILE)):
        return None
    target = version_dir(model_dir, UNVERSIONED_VERSION)
    if os.path.exists(target):
        raise ConfigurationError(f"{root} holds both an unversioned export and {target}: move one of them away")
    os.makedirs(target)
    for name in os.listdir(root):
        if not name.isdigit():
            shutil.move(os.path.join(root, name), os.path.join(target, name))
    return target


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


def write_multilabel_validation_predictions(path: str, names, labels: np.ndarray, scores: np.ndarray) -> None:
    """A multi-label model's validation truth and probabilities ([N, K] each), full precision."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([f"true_{n}" for n in names] + list(names))
        writer.writerows([*map(int, truth), *(repr(float(p)) for p in score)] for truth, score in zip(labels, scores))


def read_multilabel_validation_predictions(path: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(class names, [N, K] truth, [N, K] probabilities) from `write_multilabel_validation_predictions`."""
    with open(path, newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    k = len(header) // 2
    values = np.array(rows, dtype=np.float64).reshape(-1, 2 * k)
    return header[k:], values[:, :k].astype(np.int64), values[:, k:]


@dataclasses.dataclass(frozen=True)
class DecodingOptions:
    """How the training data's records were decoded; a raw recording scored later is decoded the same way."""

    default_sampling_rate: float = SAMPLING_RATE_HZ
    """Hz assumed for a record without a WFDB `.hea` header (the pipeline's `--sampling_rate`)."""
    pad_short: bool = False
    """Records shorter than 10 s zero-padded (`--pad_short`) rather than rejected."""
    recorded: bool = True
    """False: nobody recorded them; these are the pipeline's defaults."""
    geometry: Geometry = DEFAULT_GEOMETRY
    """The example geometry (rate, window, leads) of the training data (`--target_rate_hz`, ...)."""
    window_stride_s: float | None = None
    """`--window_stride_s` of the training data: a raw recording is cut the same way, its windows' mean scored."""


def decoding_options_from(recorded: dict, is_recorded: bool = True) -> DecodingOptions:
    """DecodingOptions from a `decoding` record (run_summary.json's, or decoding.json); geometry and
    stride default to the pipeline's defaults where an older record has none."""
    geometry = recorded.get(GEOMETRY_KEY)
    stride = recorded.get(WINDOW_STRIDE_KEY)
    return DecodingOptions(float(recorded[DEFAULT_SAMPLING_RATE_KEY]), bool(recorded[PAD_SHORT_KEY]), is_recorded,
                           DEFAULT_GEOMETRY if geometry is None else Geometry.from_json(geometry),
                           None if stride is None else float(stride))


def write_decoding_options(model_dir: str, options: DecodingOptions) -> None:
    with open(os.path.join(model_dir, DECODING_FILE), "w", encoding="utf-8") as handle:
        json.dump({DEFAULT_SAMPLING_RATE_KEY: options.default_sampling_rate, PAD_SHORT_KEY: options.pad_short,
                   RECORDED_KEY: options.recorded, GEOMETRY_KEY: options.geometry.to_json(),
                   WINDOW_STRIDE_KEY: options.window_stride_s}, handle, indent=2)


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
        return decoding_options_from(recorded, bool(recorded.get(RECORDED_KEY, True)))
    except (OSError, KeyError, TypeError, ValueError) as error:
        raise ConfigurationError(f"cannot read the decoding options from {path}: {error}") from None
