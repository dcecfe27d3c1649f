"""Keras trainer for the pipeline's transformed TFRecords, with a serving export that embeds the transform.

Which Keras is which is decided here, once, before any submodule imports TensorFlow:

- The model is Keras 3, always imported as `import keras`, never reached through `tf.keras`.
- tf.Transform 1.21 builds its `transform_features_layer()` on tf_keras (Keras 2). Importing TFT sets
  `TF_USE_LEGACY_KERAS=1` only if the variable is unset, and warns when it is set to anything else,
  so the value, and with it what `tf.keras` means in this process, would depend on import order
  and on the caller's environment. Setting it to "1" here makes it fixed: TFT gets the Keras 2 it
  was built for, without warnings, and our code never depends on `tf.keras`, so that choice cannot
  change the model.
- The Keras 3 backend must be TensorFlow: the serving export is a TensorFlow SavedModel holding
  both the Keras 3 model and the tf_keras transform layer (see `trainer.export`).
"""
import os

from ecg_common.cli import LEGACY_KERAS, LEGACY_KERAS_VARIABLE  # no TensorFlow: it must not be imported yet

os.environ[LEGACY_KERAS_VARIABLE] = LEGACY_KERAS
os.environ["KERAS_BACKEND"] = "tensorflow"
