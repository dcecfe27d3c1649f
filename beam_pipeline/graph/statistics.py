"""Reading the learned per-lead statistics back out of a saved transform graph.

tf.Transform bakes the analyzers' results into the transform graph as constants and offers no API
to read them. The transform is z = (x - mean) / std per lead, so applying it to an all-zeros and an
all-ones record recovers them exactly: std = 1 / (z(1) - z(0)) and mean = -z(0) * std. The graph
stays the single source of truth for what training and serving will apply.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from ecg_common.schema import ECG_KEY, LABEL_KEY, LEAD_NAMES, RECORD_ID_KEY, UNKNOWN_LABEL


def transform_ecgs(transform_output_dir: str, ecgs: np.ndarray) -> np.ndarray:
    """A batch of raw (n, 5000, 12) mV records through the saved transform graph: what the TFRecords hold."""
    tft_output = tft.TFTransformOutput(transform_output_dir)
    count = len(ecgs)
    raw = {ECG_KEY: tf.constant(ecgs, tf.float32), LABEL_KEY: tf.constant([UNKNOWN_LABEL] * count, tf.int64),
           RECORD_ID_KEY: tf.constant([f"probe-{k}".encode() for k in range(count)])}
    return tft_output.transform_raw_features(raw)[ECG_KEY].numpy()


def lead_statistics(transform_output_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """The per-lead means and standard deviations (mV) that the saved transform applies, one per lead
    of the geometry it was built with (the shape of its raw `ecg`)."""
    shape = tuple(tft.TFTransformOutput(transform_output_dir).raw_feature_spec()[ECG_KEY].shape)
    probe = np.stack([np.zeros(shape, np.float32), np.ones(shape, np.float32)])
    z = transform_ecgs(transform_output_dir, probe).astype(np.float64)
    z0, z1 = z[0, 0], z[1, 0]
    std = 1.0 / (z1 - z0)
    return -z0 * std, std


class NonFiniteStatistics(RuntimeError):
    """The learned statistics hold NaN or Inf: every example normalized with them would be garbage."""


def require_finite_statistics(means: Sequence[float], stds: Sequence[float],
                              leads: Sequence[str] = LEAD_NAMES) -> None:
    """Raises NonFiniteStatistics when a lead's learned mean or std (as `lead_statistics` reads them) is
    not finite.

    Decoding refuses non-finite and implausibly large values and the analyzers accumulate in
    float64, so this should never fire; it is the last check before a run publishes examples that
    would all be constant (or NaN) without it."""
    bad = [f"{lead} (mean {mean:g} mV, std {std:g} mV)" for lead, mean, std in zip(leads, means, stds)
           if not (np.isfinite(mean) and np.isfinite(std))]
    if bad:
        raise NonFiniteStatistics(f"the learned per-lead statistics are not finite: {', '.join(bad)}")
