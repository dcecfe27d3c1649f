"""Transformed Arrow batches -> serialized `tf.train.Example`s, with tfx_bsl's C++ encoder.

Used instead of `tft_beam.EncodeTransformedDataset`, which fails after `ReadTransformFn` in TFT 1.21
(`'DatasetMetadata' object has no attribute 'deferred_metadata'`); TFX encodes the same way.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from tfx_bsl.public import tfxio

from beam_pipeline.graph import demographics
from beam_pipeline.graph.arrow_batches import drop_unknown_labels, known_labels
from beam_pipeline.graph.counts import TallyingDoFn
from ecg_common.schema import CLASS_NAMES, LABEL_KEY, UNKNOWN_LABEL, WINDOW_INDEX_KEY

UNLABELLED = "unlabelled"
"""The class balance's name for records without a (binary) label: test records the labels file does not name."""


def label_counter(split: str, name: str) -> str:
    """Counter of the written records of `split` with class `name` (a CLASS_NAMES value or UNLABELLED)."""
    return f"{split}_records_labelled/{name}"


class EncodeExamplesFn(TallyingDoFn):
    """(RecordBatch, passthrough) from `TransformDataset` -> serialized examples, counted per split:
    examples (windows) and records (files: each written record has exactly one window 0)."""

    def __init__(self, transformed_schema, split: str):
        self._schema = transformed_schema
        self._split = split

    def setup(self) -> None:
        self._encoder = tfxio.RecordBatchToExamplesEncoder(self._schema)
        self._label_names = {label: label_counter(self._split, name)
                             for label, name in [*CLASS_NAMES.items(), (UNKNOWN_LABEL, UNLABELLED)]}

    def process(self, transformed):
        batch, _ = transformed
        examples = self._encoder.encode(drop_unknown_labels(batch))
        self.count(f"{self._split}_examples_written", len(examples))
        self.count(f"{self._split}_records_written", first_windows(batch))
        if batch.schema.get_field_index(LABEL_KEY) >= 0:  # binary runs; multi-label ones count classes when decoding
            labels = known_labels(batch)[first_window_rows(batch)]
            for label, name in self._label_names.items():
                self.count(name, int(np.count_nonzero(labels == label)))
        for name, count in demographics.count_batch(batch, self._split).items():
            self.count(name, count)
        yield from examples


def first_windows(batch: pa.RecordBatch) -> int:
    """How many rows are the first window of their record (all rows, for a transform without windows)."""
    return int(np.count_nonzero(first_window_rows(batch)))


def first_window_rows(batch: pa.RecordBatch) -> np.ndarray:
    """Which rows are the first window of their record (all, for a transform without windows)."""
    index = batch.schema.get_field_index(WINDOW_INDEX_KEY)
    if index < 0:
        return np.ones(batch.num_rows, dtype=bool)
    return batch.column(index).flatten().to_numpy(zero_copy_only=False) == 0
