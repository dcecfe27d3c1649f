"""The tf.Transform `preprocessing_fn`: per-lead z-scoring with whole-training-set statistics.

Pure TensorFlow: it knows nothing of Beam, files or command lines, so it is tested with a dict of
tensors and re-traced unchanged on remote workers.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import tensorflow as tf
import tensorflow_transform as tft

from ecg_common.layout import CLASS_VOCABULARY
from ecg_common.schema import (AGE_KEY, ECG_KEY, LABEL_KEY, LABEL_NAMES_KEY, LABELS_KEY, RECORD_ID_KEY, SEX_KEY,
                               UNKNOWN_LABEL, WINDOW_INDEX_KEY, WINDOW_START_KEY)

PASSTHROUGH_KEYS = (RECORD_ID_KEY, WINDOW_INDEX_KEY, WINDOW_START_KEY, AGE_KEY, SEX_KEY)
"""Raw features the transform copies unchanged (age and sex stay sparse: absent when unknown)."""


def preprocessing_fn(inputs: dict) -> dict:
    """Normalizes each lead to zero mean and unit variance over all samples of all training examples.

    The statistics reduce over examples *and* time: one mean and one variance per lead (not one per
    element, not one per example), `lead_moments`. The geometry (samples and leads) is the input's
    static shape (`raw_feature_spec(geometry)`); every output keeps the batch dimension, as
    tf.Transform requires. Statistics are accumulated in float64; a lead that is constant over the
    whole set keeps its scale (std 1) instead of dividing by zero. `record_id`, the window's index and start, age and
    sex pass through (those present in `inputs`); `label` leaves as the known labels only
    (`known_labels`), so the transformed schema declares it optional.
    """
    return {
        ECG_KEY: normalized_ecg(inputs[ECG_KEY]),
        LABEL_KEY: known_labels(inputs[LABEL_KEY]),
        **passthrough(inputs),
    }


def multi_label_preprocessing_fn(classes: Sequence[str]) -> Callable[[dict], dict]:
    """The `preprocessing_fn` of a multi-label run over `classes` (in output order): the ECG as in
    `preprocessing_fn`, `record_id`, and `labels`, the multi-hot of the record's `label_names`
    (`multi_hot`) instead of `label`. The class list is a constant of the graph, so reprocessing maps
    a batch with the training classes whatever codes it holds."""
    return functools.partial(_multi_label_outputs, classes=tuple(classes))


def _multi_label_outputs(inputs: dict, classes: tuple[str, ...]) -> dict:
    return {
        ECG_KEY: normalized_ecg(inputs[ECG_KEY]),
        LABELS_KEY: multi_hot(inputs[LABEL_NAMES_KEY], inputs[LABEL_KEY], classes),
        **passthrough(inputs),
    }


def vocabulary_fn(min_class_count: int) -> Callable[[dict], dict]:
    """A `preprocessing_fn` that only learns the classes: the names seen in at least `min_class_count`
    training records, most frequent first (`CLASS_VOCABULARY`). A record lists each of its names
    once (`inputs/classes.map_tokens`), so tf.Transform's occurrence count is a count of records."""
    return functools.partial(_vocabulary_outputs, min_class_count=min_class_count)


def _vocabulary_outputs(inputs: dict, min_class_count: int) -> dict:
    names = inputs[LABEL_NAMES_KEY]
    vocabulary = tft.vocabulary(names, frequency_threshold=min_class_count if min_class_count > 1 else None,
                                vocab_filename=CLASS_VOCABULARY)
    return {RECORD_ID_KEY: inputs[RECORD_ID_KEY], LABELS_KEY: tft.apply_vocabulary(names, vocabulary)}


def multi_hot(names: tf.SparseTensor, known: tf.Tensor, classes: tuple[str, ...]) -> tf.SparseTensor:
    """[batch, None] class names -> a [batch, K] SparseTensor holding all K 0/1 values of each row whose
    `known` (the raw `label`) is not UNKNOWN_LABEL and nothing for the other rows.

    As with `known_labels`, a sparse output makes the transformed schema declare `labels` a
    `VarLenFeature`: a labelled example has K values, an unlabelled one none, and both parse with
    `transformed_feature_spec()`. Names outside `classes` were dropped before (and counted); one
    that is left anyway matches no class."""
    dense = tf.sparse.to_dense(names, default_value=b"")  # [batch, names of the longest row]
    hits = tf.reduce_any(tf.equal(dense[:, :, tf.newaxis], tf.constant(classes)[tf.newaxis, tf.newaxis, :]), axis=1)
    rows = tf.where(tf.not_equal(known, UNKNOWN_LABEL))[:, 0]  # [known]
    width = len(classes)
    indices = tf.stack([tf.repeat(rows, width), tf.tile(tf.range(width, dtype=tf.int64), tf.shape(rows)[:1])], axis=1)
    values = tf.reshape(tf.cast(tf.gather(hits, rows), tf.int64), [-1])
    return tf.SparseTensor(indices, values, tf.stack([tf.shape(known, out_type=tf.int64)[0], width]))


def normalized_ecg(ecg: tf.Tensor) -> tf.Tensor:
    """The per-lead z-score of `preprocessing_fn`, with the training set's statistics."""
    shape = ecg.shape[1:].as_list()  # the geometry the run was built with (`raw_feature_spec(geometry)`)
    mean, var = lead_moments(ecg)
    std = tf.sqrt(var)
    std = tf.where(std > 0, std, tf.ones_like(std))
    normalized = (tf.cast(ecg, tf.float64) - mean) / std
    return tf.ensure_shape(tf.cast(normalized, tf.float32), [None, *shape])


def lead_moments(ecg: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The per-lead mean and (population) variance over every sample of every training example, in float64.

    Every example has the same number of samples (the geometry's), so the whole set's mean is the
    mean of the examples' means and its variance is the mean of their variances plus the variance of
    their means (the law of total variance). The analyzers therefore see two [batch, leads] tensors
    instead of [batch * samples, leads]: tf.Transform's `tft.var` on the samples costs about 4x more
    TensorFlow per batch (it masks non-finite values and counts in int64 over every sample), and
    decoding has already refused non-finite records. The result matches numpy's over all samples to
    ~1e-15 (tests/test_preprocessing.py).
    """
    samples = tf.cast(ecg, tf.float64)
    example_mean = tf.reduce_mean(samples, axis=1)  # [batch, leads]
    example_var = tf.reduce_mean(tf.math.squared_difference(samples, example_mean[:, tf.newaxis, :]), axis=1)
    mean = tft.mean(example_mean, reduce_instance_dims=False, output_dtype=tf.float64)
    var = (tft.mean(example_var, reduce_instance_dims=False, output_dtype=tf.float64)
           + tft.var(example_mean, reduce_instance_dims=False, output_dtype=tf.float64))
    return mean, var


def passthrough(inputs: dict) -> dict:
    """The raw features copied unchanged (PASSTHROUGH_KEYS), those present in `inputs` (a transform
    saved before windows had only `record_id`)."""
    return {key: inputs[key] for key in PASSTHROUGH_KEYS if key in inputs}


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
