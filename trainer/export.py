"""The serving SavedModel: raw ECG in, the saved tf.Transform graph, the model, the threshold; P(abnormal)
and the predicted label out. One new version folder per training run.

TFT 1.21's `transform_features_layer()` is a tf_keras (Keras 2) model: calling it on Keras 3
`keras.Input`s fails ("A KerasTensor cannot be used as input to a TensorFlow function"), so the
two cannot be joined into one Keras model. A plain `tf.Module` can hold both: its `tf.function`s
call the transform layer and the Keras 3 model on ordinary tensors, and `tf.saved_model.save`
tracks the variables and the transform's assets of both. The result loads with
`tf.saved_model.load` alone, without Keras or TFT.

Signatures (all output `probability` float32 [batch], P(abnormal), and `label` int64 [batch], 1 when
`probability` >= the threshold chosen on validation, which the model holds as the variable `threshold`):
- `serving_default`: `ecg` float32 [batch, 5000, 12] in physical units (mV), before normalization. It
  refuses (InvalidArgumentError naming `MAX_LEAD_STD_MV`) a batch in which any record has a lead whose
  standard deviation is above 50 or not finite: not millivolts (ADC counts without their gain,
  microvolts), which would otherwise score as confidently abnormal (`serving_examples` too);
- every signature refuses (InvalidArgumentError) an `ecg` of another shape, e.g. leads x samples; a
  dtype other than float32 is refused by the loaded signature itself ("expected to be a float tensor");
- `serving_examples`: `examples`, serialized `tf.train.Example`s holding the raw `ecg` feature
  (60,000 floats, as in the pipeline's raw schema); other features are ignored;
- `transformed`: `ecg` already normalized by the pipeline, as in the TFRecords (used by predict).

A multi-label model (`trainer/multilabel.py`) has the same signatures and checks, returning instead
`probabilities` float32 [batch, K] and `labels` int64 [batch, K] (each class at its own threshold,
the variable `thresholds`); its class names are `assets.extra/classes.txt`.

Beside the SavedModel, `assets.extra/` (ignored by TensorFlow and TF Serving) holds the transformed
schema of the training examples, so predict can read any data folder normalized with the same
transform without its `transform_fn/`, and the transform's lead statistics (`transform.json`), so
predict can tell when a data folder was normalized with another one.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform.tf_metadata import metadata_io

from ecg_common import model_layout, scoring
from ecg_common.layout import CLASSES_FILE
from ecg_common.model_layout import (EXAMPLES_KEY, EXAMPLES_SIGNATURE, LABELS_OUTPUT_KEY, PREDICTED_LABEL_KEY,
                                     PROBABILITIES_KEY, PROBABILITY_KEY, SERVING_SIGNATURE, TRANSFORMED_SIGNATURE)
from ecg_common.schema import ECG_KEY, ECG_SHAPE
from trainer import layout

STAGING_PREFIX = ".export-"
"""A version is written under this hidden name and renamed into place: TF Serving never sees half of one."""

_EXAMPLES_SPEC = tf.TensorSpec([None], tf.string, name=EXAMPLES_KEY)

MAX_LEAD_STD_MV = 50.0
"""The largest per-lead standard deviation (over the 10 s) accepted as millivolts. Real ECG leads are
well under 1 mV; ADC counts (gain 1000 or 200 per mV) or microvolts are hundreds to thousands.
`predict --records` applies the same bound per file before scoring (`lead_amplitude_problem`)."""
WRONG_SHAPE_MESSAGE = (f"ecg must be float32 [batch, {ECG_SHAPE[0]}, {ECG_SHAPE[1]}]: samples x leads, "
                       "10 s at 500 Hz, 12 leads")
"""The message for the default geometry; a model built with another one names its shape (`wrong_shape_message`)."""


def wrong_shape_message(shape: tuple[int, int]) -> str:
    if tuple(shape) == ECG_SHAPE:
        return WRONG_SHAPE_MESSAGE
    return f"ecg must be float32 [batch, {shape[0]}, {shape[1]}]: samples x leads, as the training data was built"
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


def _checked_shape(ecg: tf.Tensor, shape: tuple[int, int] = ECG_SHAPE) -> tf.Tensor:
    """`ecg`, once its shape is known to be [batch, *shape] (default [batch, 5000, 12]). A loaded
    signature checks the dtype but not the shape, and a transposed record would otherwise fail deep
    inside the graph ("Incompatible shapes ... node sub"); the checks run before anything that uses `ecg`."""
    with tf.control_dependencies([tf.debugging.assert_equal(tf.shape(ecg)[1:], tf.constant(shape),
                                                            message=wrong_shape_message(shape))]):
        return tf.identity(ecg)


def _checked_millivolts(ecg: tf.Tensor, shape: tuple[int, int] = ECG_SHAPE) -> tf.Tensor:
    """`ecg` of the right shape, once every lead's standard deviation is known to be plausible for mV."""
    ecg = _checked_shape(ecg, shape)
    with tf.control_dependencies([tf.debugging.assert_less_equal(
            tf.math.reduce_std(ecg, axis=1), MAX_LEAD_STD_MV, message=IMPLAUSIBLE_AMPLITUDE_MESSAGE)]):
        return tf.identity(ecg)


class ServingModule(tf.Module):
    """Holds the trained Keras 3 model, the tf_keras transform layer and the threshold for export.

    The signatures take `ecg` of the shape the training data was built with (the transform's raw
    `ecg`: [N, window_s x rate, leads], default [N, 5000, 12]), read from the schema, not assumed."""

    def __init__(self, model: keras.Model, tft_output: tft.TFTransformOutput, threshold: float,
                 thresholds: list[float] | None = None):
        super().__init__(name="ecg_serving")
        self.model = model
        self.tft_layer = tft_output.transform_features_layer()
        # float64, as chosen: comparing in float32 could flip a probability equal to the rounded threshold.
        self.threshold = tf.Variable(threshold, dtype=tf.float64, trainable=False, name="threshold")
        self._multi_label = thresholds is not None
        if self._multi_label:  # one threshold per class, in the order of the model's outputs
            self.thresholds = tf.Variable(thresholds, dtype=tf.float64, trainable=False, name="thresholds")
        self._raw_ecg = tft_output.raw_feature_spec()[ECG_KEY]
        self._shape = tuple(self._raw_ecg.shape)
        ecg_spec = tf.TensorSpec([None, *self._shape], tf.float32, name=ECG_KEY)
        self.serve_raw = tf.function(self._serve_raw, input_signature=[ecg_spec])
        self.serve_examples = tf.function(self._serve_examples, input_signature=[_EXAMPLES_SPEC])
        self.serve_transformed = tf.function(self._serve_transformed, input_signature=[ecg_spec])

    def _outputs(self, normalized: tf.Tensor) -> dict:
        if self._multi_label:
            probabilities = self.model(normalized, training=False)
            labels = tf.cast(tf.cast(probabilities, tf.float64) >= self.thresholds, tf.int64)
            return {PROBABILITIES_KEY: probabilities, LABELS_OUTPUT_KEY: labels}
        probability = tf.reshape(self.model(normalized, training=False), [-1])
        label = tf.cast(tf.cast(probability, tf.float64) >= self.threshold, tf.int64)
        return {PROBABILITY_KEY: probability, PREDICTED_LABEL_KEY: label}

    def _normalize(self, ecg: tf.Tensor) -> tf.Tensor:
        """Only `ecg` is fed: the transform prunes the outputs (label, record_id) it cannot compute."""
        return self.tft_layer({ECG_KEY: _checked_millivolts(ecg, self._shape)})[ECG_KEY]

    def _serve_raw(self, ecg: tf.Tensor) -> dict:
        return self._outputs(self._normalize(ecg))

    def _serve_examples(self, examples: tf.Tensor) -> dict:
        parsed = tf.io.parse_example(examples, {ECG_KEY: self._raw_ecg})
        return self._outputs(self._normalize(parsed[ECG_KEY]))

    def _serve_transformed(self, ecg: tf.Tensor) -> dict:
        return self._outputs(_checked_shape(ecg, self._shape))


def _write_sidecar(export_dir: str, tft_output: tft.TFTransformOutput, transform_info: dict) -> None:
    extra = os.path.join(export_dir, layout.EXTRA_ASSETS_DIR)
    metadata_io.write_metadata(tft_output.transformed_metadata, os.path.join(extra, layout.TRANSFORMED_METADATA_DIR))
    with open(os.path.join(extra, layout.TRANSFORM_INFO_FILE), "w", encoding="utf-8") as handle:
        json.dump(transform_info, handle, indent=2)


def export_serving_model(model: keras.Model, tft_output: tft.TFTransformOutput, threshold: float, model_dir: str,
                         transform_info: dict | None = None, thresholds: list[float] | None = None,
                         class_names: tuple[str, ...] | None = None) -> tuple[int, str]:
    """Writes a new version `MODEL/serving/<n>/` (n = one above every existing version) and returns (n, path).

    The SavedModel and its `assets.extra/` are written into a hidden staging folder beside the versions
    and renamed into place, so a version folder is either complete or absent, and an existing one is
    never written into (a rename onto a non-empty folder fails; the next number is tried).
    A multi-label model gives `thresholds` (one per class) and `class_names`, written to
    `assets.extra/classes.txt`.
    """
    root = layout.serving_root(model_dir)
    os.makedirs(root, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root)
    try:
        module = ServingModule(model, tft_output, threshold, thresholds)
        tf.saved_model.save(module, staging, signatures={
            SERVING_SIGNATURE: module.serve_raw,
            EXAMPLES_SIGNATURE: module.serve_examples,
            TRANSFORMED_SIGNATURE: module.serve_transformed,
        })
        _write_sidecar(staging, tft_output, transform_info or {})
        if class_names is not None:
            with open(os.path.join(staging, layout.EXTRA_ASSETS_DIR, CLASSES_FILE), "w", encoding="utf-8") as handle:
                handle.writelines(f"{name}\n" for name in class_names)
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700 would hide the version from a server run as another user
        return _publish_version(staging, model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_version(staging: str, model_dir: str) -> tuple[int, str]:
    """Renames `staging` to the next free version; a number another run took meanwhile is skipped."""
    tried = set()
    while True:
        version = layout.next_version(model_dir)
        target = layout.version_dir(model_dir, version)
        try:
            os.rename(staging, target)
            return version, target
        except OSError:
            if version in tried or not os.path.exists(target):
                raise  # not a race on the number: a real failure
            tried.add(version)


def load_serving_model(export_dir: str):
    """The exported module; call `loaded.signatures[name](ecg=tensor)[PROBABILITY_KEY]`.

    Keep the returned object referenced while using its signatures: they do not own the variables.
    """
    return tf.saved_model.load(export_dir)


def transformed_feature_spec(export_dir: str) -> dict:
    """The transformed feature spec the export's model was trained on, from its `assets.extra/`."""
    return scoring.export_feature_spec(export_dir)


def transform_info(export_dir: str) -> dict:
    """What the export recorded about its transform (`transform.json`); empty when it recorded nothing."""
    return model_layout.transform_info(export_dir)
