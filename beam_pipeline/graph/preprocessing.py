"""The tf.Transform `preprocessing_fn`: per-lead z-scoring with whole-training-set statistics.

Pure TensorFlow: it knows nothing of Beam, files or command lines, so it is tested with a dict of
tensors and re-traced unchanged on remote workers.
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from ecg_common.schema import ECG_KEY, ECG_SHAPE, LABEL_KEY, NUM_LEADS, RECORD_ID_KEY


def preprocessing_fn(inputs: dict) -> dict:
    """Normalizes each lead to zero mean and unit variance over all samples of all training records.

    The analyzers see the ECG reshaped to [batch * samples, leads], so they reduce over records *and*
    time and return 12 means and 12 variances (not one per element, not one per record). Only the
    analyzer input is reshaped: every output keeps the batch dimension, as tf.Transform requires.
    Statistics are accumulated in float64; a lead that is constant over the whole set keeps its
    scale (std 1) instead of dividing by zero.
    """
    ecg = inputs[ECG_KEY]
    per_sample = tf.reshape(ecg, [-1, NUM_LEADS])
    mean = tft.mean(per_sample, reduce_instance_dims=False, output_dtype=tf.float64)
    var = tft.var(per_sample, reduce_instance_dims=False, output_dtype=tf.float64)
    std = tf.sqrt(var)
    std = tf.where(std > 0, std, tf.ones_like(std))
    normalized = (tf.cast(ecg, tf.float64) - mean) / std
    return {
        ECG_KEY: tf.ensure_shape(tf.cast(normalized, tf.float32), [None, *ECG_SHAPE]),
        LABEL_KEY: inputs[LABEL_KEY],
        RECORD_ID_KEY: inputs[RECORD_ID_KEY],
    }
