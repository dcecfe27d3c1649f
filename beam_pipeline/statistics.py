"""Reading the learned per-lead statistics back out of a saved transform graph.

tf.Transform bakes the analyzers' results into the transform graph as constants and offers no API
to read them. The transform is z = (x - mean) / std per lead, so applying it to an all-zeros and an
all-ones record recovers them exactly: std = 1 / (z(1) - z(0)) and mean = -z(0) * std. The graph
stays the single source of truth for what training and serving will apply.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from beam_pipeline.schema import ECG_KEY, ECG_SHAPE, LABEL_KEY, RECORD_ID_KEY, UNKNOWN_LABEL


def lead_statistics(transform_output_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """The 12 per-lead means and standard deviations (mV) that the saved transform applies."""
    tft_output = tft.TFTransformOutput(transform_output_dir)
    probe = tf.stack([tf.zeros(ECG_SHAPE), tf.ones(ECG_SHAPE)])
    raw = {ECG_KEY: probe, LABEL_KEY: tf.constant([UNKNOWN_LABEL] * 2, tf.int64),
           RECORD_ID_KEY: tf.constant([b"probe-0", b"probe-1"])}
    z = tft_output.transform_raw_features(raw)[ECG_KEY].numpy().astype(np.float64)
    z0, z1 = z[0, 0], z[1, 0]
    std = 1.0 / (z1 - z0)
    return -z0 * std, std
