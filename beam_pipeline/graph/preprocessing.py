"""The tf.Transform `preprocessing_fn`: per-lead z-scoring with whole-training-set statistics.

Pure TensorFlow: it knows nothing of Beam, files or command lines, so it is tested with a dict of
tensors and re-traced unchanged on remote workers.
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from ecg_common.schema import (AGE_KEY, ECG_KEY, LABEL_KEY, RECORD_ID_KEY, SEX_KEY, UNKNOWN_LABEL, WINDOW_INDEX_KEY,
                               WINDOW_START_KEY)

PASSTHROUGH_KEYS = (RECORD_ID_KEY, WINDOW_INDEX_KEY, WINDOW_START_KEY, AGE_KEY, SEX_KEY)
"""Raw features the transform copies unchanged (age and sex stay sparse: absent when unknown)."""


def preprocessing_fn(inputs: dict) -> dict:
    """Normalizes each lead to zero mean and unit variance over all samples of all training examples.

    The analyzers see the ECG reshaped to [batch * samples, leads], so they reduce over examples *and*
    time and return one mean and one variance per lead (not one per element, not one per example).
    The geometry (samples and leads) is the input's static shape (`raw_feature_spec(geometry)`). Only the
    analyzer input is reshaped: every output keeps the batch dimension, as tf.Transform requires.
    Statistics are accumulated in float64; a lead that is constant over the whole set keeps its
    scale (std 1) instead of dividing by zero. `record_id`, the window's index and start, age and
    sex pass through (those present in `inputs`); `label` leaves as the known labels only
    (`known_labels`), so the transformed schema declares it optional.
    """
    ecg = inputs[ECG_KEY]
    shape = ecg.shape[1:].as_list()
    per_sample = tf.reshape(ecg, [-1, shape[-1]])
    mean = tft.mean(per_sample, reduce_instance_dims=False, output_dtype=tf.float64)
    var = tft.var(per_sample, reduce_instance_dims=False, output_dtype=tf.float64)
    std = tf.sqrt(var)
    std = tf.where(std > 0, std, tf.ones_like(std))
    normalized = (tf.cast(ecg, tf.float64) - mean) / std
    return {
        ECG_KEY: tf.ensure_shape(tf.cast(normalized, tf.float32), [None, *shape]),
        LABEL_KEY: known_labels(inputs[LABEL_KEY]),
        **{key: inputs[key] for key in PASSTHROUGH_KEYS if key in inputs},
    }


def known_labels(labels: tf.Tensor) -> tf.SparseTensor:
    """The [batch] labels as a [batch, 1] SparseTensor holding only the known ones (not UNKNOWN_LABEL).

    tf.Transform infers the transformed schema from the outputs' types: a dense tensor becomes a
    required `FixedLenFeature`, which no unlabelled example can satisfy, and the schema has no way
    to state a default. A 2-D SparseTensor becomes a `VarLenFeature`, which `tf.io.parse_example`
    reads from every example, with its label (one value) or without (none). So
    `TFTransformOutput(OUT).transformed_feature_spec()` parses labelled and unlabelled splits alike.
    """
    rows = tf.where(tf.not_equal(labels, UNKNOWN_LABEL))  # [known, 1]
    return tf.SparseTensor(indices=tf.concat([rows, tf.zeros_like(rows)], axis=1),
                           values=tf.gather_nd(labels, rows),
                           dense_shape=tf.stack([tf.shape(labels, out_type=tf.int64)[0], 1]))
