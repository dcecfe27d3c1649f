"""The serving SavedModel: raw ECG in, the saved tf.Transform graph, the model, P(abnormal) out.

TFT 1.21's `transform_features_layer()` is a tf_keras (Keras 2) model: calling it on Keras 3
`keras.Input`s fails ("A KerasTensor cannot be used as input to a TensorFlow function"), so the
two cannot be joined into one Keras model. A plain `tf.Module` can hold both: its `tf.function`s
call the transform layer and the Keras 3 model on ordinary tensors, and `tf.saved_model.save`
tracks the variables and the transform's assets of both. The result loads with
`tf.saved_model.load` alone, without Keras or TFT.

Signatures (both output `{"probability": float32 [batch]}`):
- `serving_default`: `ecg` float32 [batch, 5000, 12] in physical units, before normalization;
- `transformed`: `ecg` already normalized by the pipeline, as in the TFRecords (used by predict).
"""
from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_transform as tft

from ecg_common.schema import ECG_KEY, ECG_SHAPE

SERVING_SIGNATURE = "serving_default"
TRANSFORMED_SIGNATURE = "transformed"
PROBABILITY_KEY = "probability"

_ECG_SPEC = tf.TensorSpec([None, *ECG_SHAPE], tf.float32, name=ECG_KEY)


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
        return self._probability(self.tft_layer({ECG_KEY: ecg})[ECG_KEY])

    @tf.function(input_signature=[_ECG_SPEC])
    def serve_transformed(self, ecg: tf.Tensor) -> dict:
        return self._probability(ecg)


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
