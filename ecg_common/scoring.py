"""Scoring transformed examples with an exported model: what `trainer.predict --data_dir` and nightly
scoring (`beam_pipeline/graph/scoring.py`) both do, so both give the same rows for the same examples.

The examples are parsed with the transformed schema the export carries (`assets.extra/`), with a
dense `label` that defaults to UNKNOWN_LABEL (the pipeline leaves it out of unlabelled examples),
and fed to the export's `transformed` signature, which applies the model and the threshold inside it,
always in calls of SCORING_CHUNK rows (the last one padded with zeros, whose outputs are dropped).
Why: the model's float32 output for a record depends on the size of the batch it is scored in (on
this project's 2-core CPU a batch of 1 gave 1 ulp off for some records, found when nightly scoring's
batches, cut by Beam, first disagreed with predict's by 3e-8), so a score must not depend on how a
caller happened to batch its records. With a fixed call size it depends on the record alone.
Imports TensorFlow (and tf.Transform's metadata reader): import this module only where you score.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import tensorflow as tf
from tensorflow_transform.tf_metadata import metadata_io, schema_utils

from ecg_common.layout import CLASSES_FILE
from ecg_common.model_layout import (EXTRA_ASSETS_DIR, LABELS_OUTPUT_KEY, PREDICTED_LABEL_KEY, PROBABILITIES_KEY,
                                     PROBABILITY_KEY, TRANSFORMED_METADATA_DIR, TRANSFORMED_SIGNATURE)
from ecg_common.predictions import MultiLabelRow, Prediction
from ecg_common.rejections import ConfigurationError
from ecg_common.schema import ECG_KEY, LABEL_KEY, LABELS_KEY, RECORD_ID_KEY, UNKNOWN_LABEL, WINDOW_INDEX_KEY

SCORING_CHUNK = 32
"""Rows per call of the model, always (see the module docstring); predict's default batch is two such calls."""


def parsing_spec(transformed_spec: Mapping) -> dict:
    """The transformed feature spec with a dense `label` that defaults to UNKNOWN_LABEL.

    The pipeline leaves `label` out of examples whose label is not known (unlabelled records). Its
    transformed schema declares `label` a VarLenFeature (0 or 1 value); outputs of earlier versions
    declare it a required FixedLenFeature, which fails on those examples. Either way a reader gets a
    [batch] int64 label with the default where the example has none.
    """
    spec = dict(transformed_spec)
    spec[LABEL_KEY] = tf.io.FixedLenFeature([], spec[LABEL_KEY].dtype, default_value=UNKNOWN_LABEL)
    return spec


def export_feature_spec(export_dir: str) -> dict:
    """The transformed feature spec the export's model was trained on, from its `assets.extra/`."""
    path = os.path.join(export_dir, EXTRA_ASSETS_DIR, TRANSFORMED_METADATA_DIR)
    if not os.path.isdir(path):
        raise ConfigurationError(f"{export_dir} has no {EXTRA_ASSETS_DIR}/{TRANSFORMED_METADATA_DIR}/: "
                                 "it was exported by an older trainer; train again")
    return schema_utils.schema_as_feature_spec(metadata_io.read_metadata(path).schema).feature_spec


def multi_label_parsing_spec(transformed_spec: Mapping, num_classes: int) -> dict:
    """The transformed feature spec with a dense [K] `labels` (UNKNOWN_LABEL where an example has none)."""
    spec = dict(transformed_spec)
    spec[LABELS_KEY] = tf.io.FixedLenFeature([num_classes], tf.int64, default_value=[UNKNOWN_LABEL] * num_classes)
    return spec


def export_class_names(export_dir: str) -> tuple[str, ...] | None:
    """The class names of a multi-label export (its `assets.extra/classes.txt`, in order), None for a binary one."""
    path = os.path.join(export_dir, EXTRA_ASSETS_DIR, CLASSES_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as handle:
        return tuple(line.strip() for line in handle.read().splitlines() if line.strip())


def model_threshold(loaded) -> float:
    """The binary export's threshold (chosen on validation, float64 inside it): what a record's mean over
    its windows is compared with (`predictions.mean_per_record`)."""
    return float(loaded.threshold.numpy())


def model_thresholds(loaded) -> list[float]:
    """A multi-label export's per-class thresholds (float64 inside it): what each class's mean over a
    record's windows is compared with (`predictions.multi_label_rows_per_record`)."""
    return loaded.thresholds.numpy().tolist()


def transformed_scorer(loaded, export_dir: str):
    """The `transformed` signature of a loaded export, refused when the threshold (a binary export's, or a
    multi-label export's per-class thresholds) is not inside it.

    Keep `loaded` referenced while using the signature: a signature does not own the variables.
    """
    score = loaded.signatures[TRANSFORMED_SIGNATURE]
    if not {PREDICTED_LABEL_KEY, LABELS_OUTPUT_KEY} & set(score.structured_outputs):  # binary, multi-label
        raise ConfigurationError(f"{export_dir} was exported by an older trainer, without the threshold inside: "
                                 "train again, or pick another --model_version")
    return score


def _score_in_chunks(score, ecg: tf.Tensor, probability_key: str = PROBABILITY_KEY,
                     label_key: str = PREDICTED_LABEL_KEY) -> tuple[list, list]:
    """(probabilities, predicted labels) of every row of `ecg`, scored SCORING_CHUNK rows per call
    (scalars for a binary export, lists of K for a multi-label one, with its output keys)."""
    probabilities, labels = [], []
    count = int(tf.shape(ecg)[0])
    for start in range(0, count, SCORING_CHUNK):
        chunk = ecg[start:start + SCORING_CHUNK]
        rows = int(tf.shape(chunk)[0])
        padded = tf.pad(chunk, [[0, SCORING_CHUNK - rows], [0, 0], [0, 0]])
        outputs = score(**{ECG_KEY: padded})
        probabilities.extend(outputs[probability_key].numpy()[:rows].tolist())
        labels.extend(outputs[label_key].numpy()[:rows].tolist())
    return probabilities, labels


def score_parsed(score, parsed: Mapping) -> list[Prediction]:
    """One Prediction per example (window) of a parsed batch (`parsing_spec`'s features), in the batch's
    order, with its `window_index` (0 for data not cut into windows): `predictions.mean_per_record`
    turns them into predict's row per record."""
    probabilities, predicted = _score_in_chunks(score, parsed[ECG_KEY])
    ids = parsed[RECORD_ID_KEY].numpy()
    windows = parsed[WINDOW_INDEX_KEY].numpy() if WINDOW_INDEX_KEY in parsed else [0] * len(ids)
    return [Prediction(record_id.decode("utf-8"), float(probability), int(label), int(true_label), window_index=int(w))
            for record_id, probability, label, true_label, w in zip(
                ids, probabilities, predicted, parsed[LABEL_KEY].numpy(), windows)]


def score_parsed_multi_label(score, parsed: Mapping) -> list[MultiLabelRow]:
    """One row (record_id, [K probabilities], [K predicted 0/1]) per example of a parsed batch
    (`multi_label_parsing_spec`'s features), each class thresholded inside the export at its own value."""
    probabilities, predicted = _score_in_chunks(score, parsed[ECG_KEY], PROBABILITIES_KEY, LABELS_OUTPUT_KEY)
    return [(record_id.decode("utf-8"), p, labels)
            for record_id, p, labels in zip(parsed[RECORD_ID_KEY].numpy(), probabilities, predicted)]


def score_serialized(score, spec: Mapping, serialized: list[bytes]) -> list[Prediction]:
    """Predictions for a list of serialized transformed examples, parsed as one batch like predict's."""
    return score_parsed(score, tf.io.parse_example(tf.constant(serialized), spec))


def score_serialized_multi_label(score, spec: Mapping, serialized: list[bytes]) -> list[MultiLabelRow]:
    """`score_serialized` for a multi-label export (`multi_label_parsing_spec`)."""
    return score_parsed_multi_label(score, tf.io.parse_example(tf.constant(serialized), spec))
