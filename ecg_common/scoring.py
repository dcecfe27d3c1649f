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

from ecg_common.model_layout import (EXTRA_ASSETS_DIR, PREDICTED_LABEL_KEY, PROBABILITY_KEY,
                                     TRANSFORMED_METADATA_DIR, TRANSFORMED_SIGNATURE)
from ecg_common.predictions import Prediction
from ecg_common.rejections import ConfigurationError
from ecg_common.schema import ECG_KEY, LABEL_KEY, RECORD_ID_KEY, UNKNOWN_LABEL

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


def transformed_scorer(loaded, export_dir: str):
    """The `transformed` signature of a loaded export, refused when the threshold is not inside it.

    Keep `loaded` referenced while using the signature: a signature does not own the variables.
    """
    score = loaded.signatures[TRANSFORMED_SIGNATURE]
    if PREDICTED_LABEL_KEY not in score.structured_outputs:
        raise ConfigurationError(f"{export_dir} was exported by an older trainer, without the threshold inside: "
                                 "train again, or pick another --model_version")
    return score


def _score_in_chunks(score, ecg: tf.Tensor) -> tuple[list[float], list[int]]:
    """(probabilities, predicted labels) of every row of `ecg`, scored SCORING_CHUNK rows per call."""
    probabilities, labels = [], []
    count = int(tf.shape(ecg)[0])
    for start in range(0, count, SCORING_CHUNK):
        chunk = ecg[start:start + SCORING_CHUNK]
        rows = int(tf.shape(chunk)[0])
        padded = tf.pad(chunk, [[0, SCORING_CHUNK - rows], [0, 0], [0, 0]])
        outputs = score(**{ECG_KEY: padded})
        probabilities.extend(outputs[PROBABILITY_KEY].numpy()[:rows].tolist())
        labels.extend(outputs[PREDICTED_LABEL_KEY].numpy()[:rows].tolist())
    return probabilities, labels


def score_parsed(score, parsed: Mapping) -> list[Prediction]:
    """One Prediction per example of a parsed batch (`parsing_spec`'s features), in the batch's order."""
    probabilities, predicted = _score_in_chunks(score, parsed[ECG_KEY])
    return [Prediction(record_id.decode("utf-8"), float(probability), int(label), int(true_label))
            for record_id, probability, label, true_label in zip(
                parsed[RECORD_ID_KEY].numpy(), probabilities, predicted, parsed[LABEL_KEY].numpy())]


def score_serialized(score, spec: Mapping, serialized: list[bytes]) -> list[Prediction]:
    """Predictions for a list of serialized transformed examples, parsed as one batch like predict's."""
    return score_parsed(score, tf.io.parse_example(tf.constant(serialized), spec))
