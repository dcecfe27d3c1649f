"""The transformed TFRecords as `tf.data`: shard discovery, the training set (one example per record
id over the main output and batches), the validation split and `input_fn`.

The pipeline writes `OUT/<split>/part-*.tfrecord.gz` and reprocessing `ROOT/batch-*/data/part-*.tfrecord.gz`
(GZIP `tf.train.Example`s of the transformed features). Reading them is the only place the trainer
touches files of examples.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from ecg_common import scoring
from ecg_common.layout import SHARD_PREFIX, SUMMARY_DECODING_KEY, SUMMARY_FILE, TFRECORD_SUFFIX
from ecg_common.rejections import ConfigurationError
from ecg_common.schema import ECG_KEY, LABEL_KEY, RECORD_ID_KEY, UNKNOWN_LABEL, VALID_LABELS
from trainer.layout import DecodingOptions, decoding_options_from

AUTOTUNE = tf.data.AUTOTUNE
COMPRESSION = "GZIP"
MAX_PARALLEL_SHARDS = 4
"""Shards read at once: enough to keep 2 cores busy decompressing, few enough to bound memory."""
CACHE_MEMORY_FRACTION = 0.25
"""Share of physical memory the examples may take when cached; a larger set is streamed from the shards."""
_FINGERPRINTS = 2**62
"""Record ids are compared by 62-bit fingerprint: a collision in a split of 10^5 ids has odds of about 10^-9."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One example's identity, as needed to split, weight and count without reading signals."""

    record_id: str
    label: int


@dataclasses.dataclass(frozen=True)
class Source:
    """One folder of transformed shards: the main output's train split, or a batch's `data` split."""

    path: str
    """The output or batch folder (what metrics.json names)."""
    files: tuple[str, ...]
    is_main: bool = False


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
    return decoding_options_from(recorded)


def _shard_pattern(folder: str, split: str) -> str:
    return os.path.join(folder, split, f"{SHARD_PREFIX}*{TFRECORD_SUFFIX}")


def shard_files(folder: str, split: str) -> list[str]:
    """The split's shards in a stable (sorted) order, possibly none."""
    return sorted(tf.io.gfile.glob(_shard_pattern(folder, split)))


def split_files(data_dir: str, split: str) -> list[str]:
    """The split's shards in a stable (sorted) order; none is a configuration error, not an empty epoch."""
    if not tf.io.gfile.isdir(data_dir):
        raise ConfigurationError(f"data dir not found: {data_dir}")
    files = shard_files(data_dir, split)
    if not files:
        raise ConfigurationError(f"no TFRecord shards match {_shard_pattern(data_dir, split)}")
    return files


def parsing_spec(transformed: tft.TFTransformOutput | Mapping) -> dict:
    """The transformed feature spec (of a transform output, or as given), with a dense `label` that
    defaults to UNKNOWN_LABEL (`ecg_common.scoring.parsing_spec`, shared with nightly scoring)."""
    return scoring.parsing_spec(transformed.transformed_feature_spec() if isinstance(transformed, tft.TFTransformOutput)
                                else transformed)


def read_examples(files: Sequence[str], *, shuffle: bool = False, seed: int | None = None, cache: bool = False,
                  file_sources: Sequence[int] | None = None,
                  exclude: Collection[tuple[int, str]] = frozenset()) -> tf.data.Dataset:
    """Serialized examples, interleaved over shards so several gzip streams are decompressed at once.

    With `cache`, the examples are kept in memory after the first full pass; every dataset built
    on the returned one (training, validation, every epoch) then reads memory, not the shards.
    `shuffle` shuffles the shard order per pass (pointless, and not done, for a cached set).
    `exclude` names (source index, record id) occurrences to leave out, `file_sources` the source
    index of each file: how a record that a newer batch supersedes is read once, not twice.
    """
    indices = list(file_sources) if file_sources is not None else [0] * len(files)
    shards = tf.data.Dataset.from_tensor_slices((list(files), tf.constant(indices, tf.int64)))
    if shuffle and not cache:
        shards = shards.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    excluded = _excluded_occurrences(exclude)

    def read(path: tf.Tensor, index: tf.Tensor) -> tf.data.Dataset:
        examples = tf.data.TFRecordDataset(path, compression_type=COMPRESSION)
        return examples.filter(lambda serialized: tf.logical_not(excluded(serialized, index))) if exclude else examples

    examples = shards.interleave(read, cycle_length=min(len(files), MAX_PARALLEL_SHARDS), num_parallel_calls=AUTOTUNE,
                                 deterministic=True)
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
    more, and never all of them, so both sets see every class that has two or more records. Records
    are counted once however many windows (examples) they have: the split is by record, so no window
    of a validation record is trained on.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigurationError(f"validation fraction must be in (0, 1), got {fraction}")
    by_class: dict[int, set[str]] = {}
    for record in records:
        by_class.setdefault(record.label, set()).add(record.record_id)
    held_out: set[str] = set()
    for ids in by_class.values():
        if len(ids) < 2:
            continue
        count = min(max(round(fraction * len(ids)), 1), len(ids) - 1)
        held_out.update(sorted(ids, key=_split_key)[:count])
    return frozenset(held_out)


def held_out_by_id(record_id: str, fraction: float) -> bool:
    """Whether a record outside the main output validates: its id's sha256, as a share of 2^256, is below
    `fraction`. It depends on the id alone, so no record moves as more records arrive."""
    return int(_split_key(record_id), 16) < fraction * 2**256


@dataclasses.dataclass(frozen=True)
class TrainingSet:
    """The labelled examples a run trains and validates on, each record id once, and how they were chosen."""

    records: list[Record]
    """Every example used (training and validation), each record id once."""
    held_out: frozenset[str]
    """The validation record ids."""
    exclude: frozenset[tuple[int, str]]
    """(source index, record id) occurrences not read: another occurrence of the id is used instead."""
    per_source: list[dict]
    """Per source, in order: `path`, `examples`, `unlabelled` (left out), `superseded` (left out: a newer
    source has the record), `used`."""

    @property
    def examples_read(self) -> int:
        """Every example of the folders read: what a cache of them holds at most (an unlabelled example
        whose id no other folder has is read, and cached, though never used)."""
        return sum(counts["examples"] for counts in self.per_source)


def combine(sources: Sequence[Source], scanned: Sequence[Sequence[Record]], fraction: float) -> TrainingSet:
    """One labelled example per record id over `sources` (the main output first, then batches oldest
    first), and the validation ids.

    - A record id in several sources is taken from the newest one that labels it: a re-delivered
      recording (reprocessing redoes a changed file) replaces its earlier version. An unlabelled
      example is never used and never replaces a labelled one.
    - The split stays by record id as batches arrive: the main output's records are split as they
      always were (`validation_ids`, exactly stratified, on the main output alone, which batches do
      not change), and every other record by `held_out_by_id`. A record keeps its side (training
      or validation) in every later run, whichever source its example comes from.
    """
    newest: dict[str, int] = {}
    for index, records in enumerate(scanned):
        for record in records:
            if record.label != UNKNOWN_LABEL:
                newest[record.record_id] = index
    used, exclude, per_source = [], set(), []
    for index, (source, records) in enumerate(zip(sources, scanned)):
        counts = {"path": source.path, "examples": len(records), "unlabelled": 0, "superseded": 0, "used": 0}
        for record in records:
            labelled = record.label != UNKNOWN_LABEL
            if labelled and newest[record.record_id] == index:
                used.append(record)
                counts["used"] += 1
                continue
            counts["unlabelled" if not labelled else "superseded"] += 1
            if record.record_id in newest:  # the id is read from another source: leave this occurrence out
                exclude.add((index, record.record_id))
        per_source.append(counts)
    main = [record for source, records in zip(sources, scanned) if source.is_main for record in records]
    main_ids = {record.record_id for record in main}
    main_held_out = validation_ids(main, fraction)
    held_out = frozenset(record.record_id for record in used
                         if (record.record_id in main_held_out if record.record_id in main_ids
                             else held_out_by_id(record.record_id, fraction)))
    return TrainingSet(used, held_out, frozenset(exclude), per_source)


def class_counts(records: Iterable[Record]) -> dict[int, int]:
    """Examples per known class (0 for a class that has none)."""
    labels = np.array([record.label for record in records], dtype=np.int64)
    return {label: int(np.sum(labels == label)) for label in VALID_LABELS}


def example_bytes(spec: dict) -> int:
    """Decoded size of one example under `spec`; what caching it in memory costs."""
    size = 0
    for feature in spec.values():
        if feature.dtype != tf.string:  # a VarLenFeature (age, sex, label) holds at most one value here
            values = int(np.prod(feature.shape, dtype=np.int64)) if hasattr(feature, "shape") else 1
            size += values * feature.dtype.size
    return size


def cache_budget_bytes(fraction: float = CACHE_MEMORY_FRACTION) -> int:
    """What the example cache may hold: `fraction` of physical memory (the rest is the model, TensorFlow,
    the shuffle buffer and whatever else runs on the machine)."""
    return int(fraction * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def fits_in_memory(num_examples: int, spec: dict, budget_bytes: int | None = None) -> bool:
    """Whether `num_examples` examples fit in `budget_bytes` (default `cache_budget_bytes()`).

    When they do not, the trainer streams every epoch from the shards instead of caching: its memory
    is then the shuffle buffer, the interleaved gzip readers and the prefetched batches, whatever the
    number of examples (measured in docs/performance.md, "Scale: 50,000 records end to end").
    """
    budget = cache_budget_bytes() if budget_bytes is None else budget_bytes
    return num_examples * example_bytes(spec) <= budget


_ID_SPEC = {RECORD_ID_KEY: tf.io.FixedLenFeature([], tf.string)}


def _fingerprint_set(keys: Collection[str]):
    """A predicate on a scalar string: is it one of `keys`?

    Built from stateless ops only (64-bit fingerprints and a binary search in a sorted constant)
    rather than a `tf.lookup` table: with op determinism enabled, one stateful op in a tf.data
    function makes the whole input pipeline run serially and without prefetching (measured here:
    7.4 instead of 11.1 training steps/s when the examples are not cached).
    """
    if not keys:
        return lambda key: tf.constant(False)
    fingerprints = tf.sort(tf.strings.to_hash_bucket_fast(tf.constant(sorted(keys), tf.string), _FINGERPRINTS))
    last = len(keys) - 1

    def contains(key: tf.Tensor) -> tf.Tensor:
        fingerprint = tf.strings.to_hash_bucket_fast(tf.reshape(key, [1]), _FINGERPRINTS)
        position = tf.minimum(tf.searchsorted(fingerprints, fingerprint), last)
        return tf.reduce_all(tf.gather(fingerprints, position) == fingerprint)

    return contains


def _record_id(serialized: tf.Tensor) -> tf.Tensor:
    return tf.io.parse_single_example(serialized, _ID_SPEC)[RECORD_ID_KEY]


def _membership(record_ids: Collection[str]):
    """A predicate on serialized examples: is the example's record id one of `record_ids`?"""
    contains = _fingerprint_set(record_ids)
    return lambda serialized: contains(_record_id(serialized))


def _occurrence_key(index, record_id):
    return tf.strings.join([tf.strings.as_string(index), record_id], separator="/")


def _excluded_occurrences(exclude: Collection[tuple[int, str]]):
    """A predicate on (serialized example, source index): is this occurrence one of `exclude`?"""
    contains = _fingerprint_set([f"{index}/{record_id}" for index, record_id in exclude])
    return lambda serialized, index: contains(_occurrence_key(index, _record_id(serialized)))


def input_fn(examples: tf.data.Dataset, spec: dict, batch_size: int, *, record_ids: Collection[str] | None = None,
             shuffle: bool = False, seed: int | None = None, shuffle_buffer: int = 1024,
             num_examples: int | None = None) -> tf.data.Dataset:
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
        dataset = dataset.filter(_membership(record_ids))
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if record_ids is not None:
        # The examples of these records are counted (`num_examples`: one per window; default one per
        # id, as the pipeline rejects duplicate ids in a split): the batch count is known, which lets
        # Keras size its epochs instead of discovering the end by running out of data. It is also
        # asserted, so a fingerprint collision could not silently add an example.
        count = len(record_ids) if num_examples is None else num_examples
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(-(-count // batch_size)))
    return (dataset
            .map(lambda serialized: tf.io.parse_example(serialized, spec), num_parallel_calls=AUTOTUNE)
            .prefetch(AUTOTUNE))


def to_keras(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """(ecg, label) pairs, the form `keras.Model.fit` takes; the label as float for the sigmoid loss."""
    return dataset.map(lambda batch: (batch[ECG_KEY], tf.cast(batch[LABEL_KEY], tf.float32)),
                       num_parallel_calls=AUTOTUNE)
