"""The serving SavedModel: raw ECG in, the saved tf.Transform graph, the model, P(abnormal) out.

TFT 1.21's `transform_features_layer()` is a tf_keras (Keras 2) model: calling it on Keras 3
`keras.Input`s fails ("A KerasTensor cannot be used as input to a TensorFlow function"), so the
two cannot be joined into one Keras model. A plain `tf.Module` can hold both: its `tf.function`s
call the transform layer and the Keras 3 model on ordinary tensors, and `tf.saved_model.save`
tracks the variables and the transform's assets of both. The result loads with
`tf.saved_model.load` alone, without Keras or TFT.

Signatures (both output `{"probability": float32 [batch]}`):
- `serving_default`: `ecg` float32 [batch, 5000, 12] in physical units, before normalization. It
  refuses (InvalidArgumentError naming `MAX_LEAD_STD_MV`) a batch in which any record has a lead whose
  standard deviation is above 50 or not finite: not millivolts (ADC counts without their gain, microvolts),
  which would otherwise score as confidently abnormal;
- both refuse (InvalidArgumentError) an `ecg` of another shape, e.g. leads x samples; a dtype other
  than float32 is refused by the loaded signature itself ("expected to be a float tensor");
- `transformed`: `ecg` already normalized by the pipeline, as in the TFRecords (used by predict).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from ecg_common.schema import ECG_KEY, ECG_SHAPE

SERVING_SIGNATURE = "serving_default"
TRANSFORMED_SIGNATURE = "transformed"
PROBABILITY_KEY = "probability"

_ECG_SPEC = tf.TensorSpec([None, *ECG_SHAPE], tf.float32, name=ECG_KEY)

MAX_LEAD_STD_MV = 50.0
"""The largest per-lead standard deviation (over the 10 s) accepted as millivolts. Real ECG leads are
well under 1 mV; ADC counts (gain 1000 or 200 per mV) or microvolts are hundreds to thousands.
`predict --records` applies the same bound per file before scoring (`lead_amplitude_problem`)."""
WRONG_SHAPE_MESSAGE = (f"ecg must be float32 [batch, {ECG_SHAPE[0]}, {ECG_SHAPE[1]}]: samples x leads, "
                       "10 s at 500 Hz, 12 leads")
IMPLAUSIBLE_AMPLITUDE_MESSAGE = (f"ecg: a lead's standard deviation is above {MAX_LEAD_STD_MV:g} or not finite: "
                                 "not millivolts (ADC counts without their gain, or microvolts?)")


def lead_amplitude_problem(ecg) -> str | None:
    """Why one decoded (5000, 12) record is not plausible as millivolts, or None: the serving check, per file."""
    stds = np.std(np.asarray(ecg, dtype=np.float64), axis=0)
    bad = np.flatnonzero(~(stds <= MAX_LEAD_STD_MV))  # NaN fails the comparison too
    if bad.size == 0:
        return None
    lead = int(bad[0])
    return f"lead {lead + 1} has standard deviation {stds[lead]:.4g}, above {MAX_LEAD_STD_MV:g}: not millivolts"


class ServingModule(tf.Module):
    """Holds the trained Keras 3 model and the tf_keras transform layer for export."""

    def __init__(self, model: keras.Model, tft_output: tft.TFTransformOutput):
        super().__init__(name="ecg_serving")
        self.model = model
        self.tft_layer = tft_output.transform_features_layer()

    def _probability(self, normalized: tf.Tensor) -> dict:
        return {PROBABILITY_KEY: tf.reshape(self.model(normalized, training=False), [-1])}

    @tf.function(input_signature=[_ECG_SPEC])
    def serve_raw(self, ecg: tf.Tensor) -> dict:
        """Only `ecg` is fed: the transform prunes the outputs (label, record_id) it cannot compute."""
        ecg = _checked_shape(ecg)
        with tf.control_dependencies([tf.debugging.assert_less_equal(
                tf.math.reduce_std(ecg, axis=1), MAX_LEAD_STD_MV, message=IMPLAUSIBLE_AMPLITUDE_MESSAGE)]):
            ecg = tf.identity(ecg)
        return self._probability(self.tft_layer({ECG_KEY: ecg})[ECG_KEY])

    @tf.function(input_signature=[_ECG_SPEC])
    def serve_transformed(self, ecg: tf.Tensor) -> dict:
        return self._probability(_checked_shape(ecg))


def _checked_shape(ecg: tf.Tensor) -> tf.Tensor:
    """`ecg`, once its shape is known to be [batch, 5000, 12]. A loaded signature checks the dtype but
    not the shape, and a transposed record would otherwise fail deep inside the graph ("Incompatible
    shapes ... node sub"); the checks run before anything that uses `ecg`."""
    with tf.control_dependencies([tf.debugging.assert_equal(tf.shape(ecg)[1:], tf.constant(ECG_SHAPE),
                                                            message=WRONG_SHAPE_MESSAGE)]):
        return tf.identity(ecg)


def export_serving_model(model: keras.Model, tft_output: tft.TFTransformOutput, export_dir: str) -> None:
    """Writes the SavedModel with both signatures to `export_dir` (replacing what is there)."""
    module = ServingModule(model, tft_output)
    tf.saved_model.save(module, export_dir, signatures={
        SERVING_SIGNATURE: module.serve_raw,
        TRANSFORMED_SIGNATURE: module.serve_transformed,
    })


def load_serving_model(export_dir: str):
    """The exported module; call `loaded.signatures[name](ecg=tensor)[PROBABILITY_KEY]`.

    Keep the returned object referenced while using its signatures: they do not own the variables.
    """
    return tf.saved_model.load(export_dir)
