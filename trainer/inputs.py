"""The transformed TFRecords as `tf.data`: shard discovery, the validation split and `input_fn`.

The pipeline writes `OUT/<split>/part-*.tfrecord.gz` (GZIP `tf.train.Example`s of the transformed
features). Reading them is the only place the trainer touches files of examples.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Collection, Iterable

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from ecg_common.layout import (DEFAULT_SAMPLING_RATE_KEY, PAD_SHORT_KEY, SHARD_PREFIX, SUMMARY_DECODING_KEY,
                               SUMMARY_FILE, TFRECORD_SUFFIX)
from ecg_common.rejections import ConfigurationError
from ecg_common.schema import ECG_KEY, LABEL_KEY, RECORD_ID_KEY, UNKNOWN_LABEL, VALID_LABELS
from trainer.layout import DecodingOptions

AUTOTUNE = tf.data.AUTOTUNE
COMPRESSION = "GZIP"
MAX_PARALLEL_SHARDS = 4
"""Shards read at once: enough to keep 2 cores busy decompressing, few enough to bound memory."""
_FINGERPRINTS = 2**62
"""Record ids are compared by 62-bit fingerprint: a collision in a split of 10^5 ids has odds of about 10^-9."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One example's identity, as needed to split, weight and count without reading signals."""

    record_id: str
    label: int


def load_transform_output(data_dir: str) -> tft.TFTransformOutput:
    """The pipeline's transform graph and schemas; a missing or incomplete output is a configuration error."""
    if not tf.io.gfile.isdir(data_dir):
        raise ConfigurationError(f"data dir not found: {data_dir}")
    for needed in (tft.TFTransformOutput.TRANSFORM_FN_DIR, tft.TFTransformOutput.TRANSFORMED_METADATA_DIR):
        if not tf.io.gfile.isdir(os.path.join(data_dir, needed)):
            raise ConfigurationError(f"{data_dir} is not a pipeline output: {needed}/ is missing")
    return tft.TFTransformOutput(data_dir)


_log = logging.getLogger(__name__)


def decoding_options(data_dir: str) -> DecodingOptions:
    """The options the pipeline decoded `data_dir`'s records with (`run_summary.json`'s `decoding`); an
    output of a pipeline version that did not record them gives its defaults, marked as not recorded."""
    path = os.path.join(data_dir, SUMMARY_FILE)
    try:
        with tf.io.gfile.GFile(path, "r") as handle:
            recorded = json.load(handle).get(SUMMARY_DECODING_KEY)
    except (tf.errors.OpError, ValueError, AttributeError) as error:
        _log.warning("cannot read the decoding options from %s (%s): recording the pipeline's defaults", path, error)
        recorded = None
    if not isinstance(recorded, dict):
        return DecodingOptions(recorded=False)
    return DecodingOptions(float(recorded[DEFAULT_SAMPLING_RATE_KEY]), bool(recorded[PAD_SHORT_KEY]))


def split_files(data_dir: str, split: str) -> list[str]:
    """The split's shards in a stable (sorted) order; none is a configuration error, not an empty epoch."""
    pattern = os.path.join(data_dir, split, f"{SHARD_PREFIX}*{TFRECORD_SUFFIX}")
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise ConfigurationError(f"no TFRecord shards match {pattern}")
    return files


def parsing_spec(tft_output: tft.TFTransformOutput) -> dict:
    """The transformed feature spec, with `label` defaulting to UNKNOWN_LABEL.

    The pipeline leaves `label` out of examples whose label is not known (unlabelled test
    records); the schema still declares it required, so without a default parsing them fails.
    """
    spec = dict(tft_output.transformed_feature_spec())
    label = spec[LABEL_KEY]
    spec[LABEL_KEY] = tf.io.FixedLenFeature(label.shape, label.dtype, default_value=UNKNOWN_LABEL)
    return spec


def read_examples(files: list[str], *, shuffle: bool = False, seed: int | None = None,
                  cache: bool = False) -> tf.data.Dataset:
    """Serialized examples, interleaved over shards so several gzip streams are decompressed at once.

    With `cache`, the examples are kept in memory after the first full pass; every dataset built
    on the returned one (training, validation, every epoch) then reads memory, not the shards.
    `shuffle` shuffles the shard order per pass (pointless, and not done, for a cached set).
    """
    shards = tf.data.Dataset.from_tensor_slices(files)
    if shuffle and not cache:
        shards = shards.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    examples = shards.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type=COMPRESSION),
        cycle_length=min(len(files), MAX_PARALLEL_SHARDS),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    return examples.cache() if cache else examples


def fill_cache(examples: tf.data.Dataset) -> int:
    """Reads a cached `read_examples` dataset once, before training, so no epoch waits on the shards."""
    return sum(int(tf.size(batch)) for batch in examples.batch(1024))


def scan_records(files: list[str]) -> list[Record]:
    """Every example's record id and label (UNKNOWN_LABEL when absent), in file order.

    One pass over the shards parsing only the two small features; the split, the class weights
    and the decision to cache need the whole list before training starts.
    """
    spec = {
        RECORD_ID_KEY: tf.io.FixedLenFeature([], tf.string),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=UNKNOWN_LABEL),
    }
    dataset = (read_examples(files)
               .batch(256)
               .map(lambda serialized: tf.io.parse_example(serialized, spec), num_parallel_calls=AUTOTUNE))
    records = []
    for batch in dataset.as_numpy_iterator():
        records.extend(Record(rid.decode("utf-8"), int(label))
                       for rid, label in zip(batch[RECORD_ID_KEY], batch[LABEL_KEY]))
    return records


def _split_key(record_id: str) -> str:
    """A stable pseudo-random rank: unlike Python's `hash`, sha256 is the same in every process."""
    return hashlib.sha256(record_id.encode("utf-8")).hexdigest()


def validation_ids(records: Iterable[Record], fraction: float) -> frozenset[str]:
    """The record ids held out for validation: per class, the `fraction` with the smallest hash.

    Deterministic (it depends only on the ids, not on file order, shard count or seed) and exactly
    stratified: each class contributes round(fraction * n) records, at least one when it has two or
    more, and never all of them, so both sets see every class that has two or more records.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigurationError(f"validation fraction must be in (0, 1), got {fraction}")
    by_class: dict[int, list[str]] = {}
    for record in records:
        by_class.setdefault(record.label, []).append(record.record_id)
    held_out: set[str] = set()
    for ids in by_class.values():
        if len(ids) < 2:
            continue
        count = min(max(round(fraction * len(ids)), 1), len(ids) - 1)
        held_out.update(sorted(ids, key=_split_key)[:count])
    return frozenset(held_out)


def class_counts(records: Iterable[Record]) -> dict[int, int]:
    """Examples per known class (0 for a class that has none)."""
    labels = np.array([record.label for record in records], dtype=np.int64)
    return {label: int(np.sum(labels == label)) for label in VALID_LABELS}


def example_bytes(spec: dict) -> int:
    """Decoded size of one example under `spec`; what caching it in memory costs."""
    size = 0
    for feature in spec.values():
        if feature.dtype != tf.string:
            size += int(np.prod(feature.shape, dtype=np.int64)) * feature.dtype.size
    return size


def fits_in_memory(num_examples: int, spec: dict, budget_fraction: float = 0.25) -> bool:
    """Whether `num_examples` serialized examples fit in `budget_fraction` of physical memory."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return num_examples * example_bytes(spec) <= budget_fraction * physical


def _membership(record_ids: Collection[str], id_spec: dict):
    """A predicate on serialized examples: is the example's record id one of `record_ids`?

    Built from stateless ops only (64-bit fingerprints and a binary search in a sorted constant)
    rather than a `tf.lookup` table: with op determinism enabled, one stateful op in a tf.data
    function makes the whole input pipeline run serially and without prefetching (measured here:
    7.4 instead of 11.1 training steps/s when the examples are not cached).
    """
    if not record_ids:
        return lambda serialized: tf.constant(False)
    fingerprints = tf.sort(tf.strings.to_hash_bucket_fast(tf.constant(sorted(record_ids), tf.string), _FINGERPRINTS))
    last = len(record_ids) - 1

    def keep(serialized: tf.Tensor) -> tf.Tensor:
        record_id = tf.io.parse_single_example(serialized, id_spec)[RECORD_ID_KEY]
        fingerprint = tf.strings.to_hash_bucket_fast(tf.reshape(record_id, [1]), _FINGERPRINTS)
        position = tf.minimum(tf.searchsorted(fingerprints, fingerprint), last)
        return tf.reduce_all(tf.gather(fingerprints, position) == fingerprint)

    return keep


def input_fn(examples: tf.data.Dataset, spec: dict, batch_size: int, *, record_ids: Collection[str] | None = None,
             shuffle: bool = False, seed: int | None = None, shuffle_buffer: int = 1024) -> tf.data.Dataset:
    """Batches of parsed feature dicts from serialized `examples` (see `read_examples`).

    Order of stages, and why:
    - filter by `record_ids` (the train or validation share) on the record id alone, before the
      expensive parse;
    - shuffle (after the cache in `read_examples`), so every epoch gets a new order;
    - batch, then parse whole batches with `tf.io.parse_example` (vectorized, far cheaper than
      one parse per example); prefetch so the next batch is ready while the model trains.
    """
    dataset = examples
    if record_ids is not None:
        dataset = dataset.filter(_membership(record_ids, {RECORD_ID_KEY: spec[RECORD_ID_KEY]}))
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if record_ids is not None:
        # Each id occurs once in a split (the pipeline rejects duplicates): the batch count is known,
        # which lets Keras size its epochs instead of discovering the end by running out of data. It
        # is also asserted, so a fingerprint collision could not silently add an example.
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(-(-len(record_ids) // batch_size)))
    return (dataset
            .map(lambda serialized: tf.io.parse_example(serialized, spec), num_parallel_calls=AUTOTUNE)
            .prefetch(AUTOTUNE))


def to_keras(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """(ecg, label) pairs, the form `keras.Model.fit` takes; the label as float for the sigmoid loss."""
    return dataset.map(lambda batch: (batch[ECG_KEY], tf.cast(batch[LABEL_KEY], tf.float32)),
                       num_parallel_calls=AUTOTUNE)
