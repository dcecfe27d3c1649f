"""Decoded records <-> Arrow record batches, the input format tf.Transform is fast with.

tf.Transform's TFXIO path takes `pyarrow.RecordBatch`es plus a `TensorAdapterConfig` that says how
columns become tensors. Both are derived here from the one raw feature spec in `schema.py`, and the
float32 signal is handed to Arrow without a per-value Python loop (one concatenate per batch).
"""
from __future__ import annotations

import json
import struct
import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
from tensorflow_transform.tf_metadata import schema_utils
from tfx_bsl.public import tfxio

from ecg_common.schema import (AGE_KEY, DEFAULT_GEOMETRY, ECG_KEY, LABEL_KEY, LABEL_NAMES_KEY, LABELS_KEY, NUM_LEADS,
                               RECORD_ID_KEY, SEX_KEY, UNKNOWN_LABEL, WINDOW_INDEX_KEY, WINDOW_START_KEY, Geometry,
                               raw_feature_spec)
from ecg_decode.decoding.record_info import RecordInfo


class DecodedRecord(typing.NamedTuple):
    """One example ready for tf.Transform: float32 (samples, leads) signal in mV, label (or UNKNOWN_LABEL),
    what the record says about its patient (`RecordInfo`, from the decoder child), and which window of
    its record it is (0 and 0.0 for the single window of a run without `--window_stride_s`).

    Multi-label runs: `label` is CLASSES_KNOWN or UNKNOWN_LABEL and `label_names` the record's classes."""

    record_id: str
    label: int
    ecg: np.ndarray
    info: RecordInfo = RecordInfo()
    label_names: tuple[str, ...] = ()
    window_index: int = 0
    window_start_s: float = 0.0


# --- coders -----------------------------------------------------------------------------------
# Beam estimates the byte size of a sample of every step's outputs by encoding them, and for a type
# without a coder that means pickling it: with small bundles nearly every batch of 32 records was
# pickled, twice (1.4 GB for 1,000 records, measured), holding the GIL. These coders estimate the
# size from the arrays instead; they encode only when an element really crosses processes.


class DecodedRecordCoder(beam.coders.Coder):
    """Label, id, the record's info as JSON and the raw float32 signal (no pickle: nothing decoded
    here can run code), for the rare times a record crosses processes; a size estimate that does not
    copy it."""

    _HEADER = struct.Struct("<qIIIIqd")  # label; lengths of the id, the info JSON, the class names; leads; window

    def encode(self, record: DecodedRecord) -> bytes:
        record_id = record.record_id.encode("utf-8")
        info = json.dumps(record.info.to_json()).encode("utf-8")
        names = "\t".join(record.label_names).encode("utf-8")  # a class name holds no tab (inputs/classes.py)
        signal = np.ascontiguousarray(record.ecg, dtype="<f4").tobytes()
        header = self._HEADER.pack(record.label, len(record_id), len(info), len(names), record.ecg.shape[-1],
                                   record.window_index, record.window_start_s)
        return header + record_id + info + names + signal

    def decode(self, data: bytes) -> DecodedRecord:
        label, id_length, info_length, names_length, leads, window_index, window_start_s = \
            self._HEADER.unpack_from(data)
        start = self._HEADER.size + id_length
        info = RecordInfo.from_json(json.loads(bytes(data[start:start + info_length]).decode("utf-8")))
        names = bytes(data[start + info_length:start + info_length + names_length]).decode("utf-8")
        ecg = np.frombuffer(data, dtype="<f4", offset=start + info_length + names_length).reshape(-1, leads)
        return DecodedRecord(bytes(data[self._HEADER.size:start]).decode("utf-8"), label, ecg, info,
                             tuple(names.split("\t")) if names else (), window_index, window_start_s)

    def estimate_size(self, record: DecodedRecord) -> int:
        return record.ecg.nbytes + len(record.record_id) + self._HEADER.size + sum(map(len, record.label_names))

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return DecodedRecord


class RecordBatchCoder(beam.coders.Coder):
    """Arrow IPC for the rare times a batch crosses processes; its size estimate is `nbytes`."""

    def encode(self, batch: pa.RecordBatch) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        return sink.getvalue().to_pybytes()

    def decode(self, data: bytes) -> pa.RecordBatch:
        return pa.ipc.open_stream(data).read_next_batch()

    def estimate_size(self, batch: pa.RecordBatch) -> int:
        return batch.nbytes

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return pa.RecordBatch


# Registered on import: this module is imported wherever the graph is built (`pipeline.py`), and the
# chosen coders travel with the job to the workers.
beam.coders.registry.register_coder(DecodedRecord, DecodedRecordCoder)
beam.coders.registry.register_coder(pa.RecordBatch, RecordBatchCoder)


def raw_schema(geometry: Geometry = DEFAULT_GEOMETRY, multi_label: bool = False):
    """The raw data's `tensorflow_metadata` Schema (what `OUT/metadata/` holds)."""
    return schema_utils.schema_from_feature_spec(raw_feature_spec(geometry, multi_label))


def tensor_adapter_config(geometry: Geometry = DEFAULT_GEOMETRY, multi_label: bool = False) -> tfxio.TensorAdapterConfig:
    """Arrow schema + tensor representations matching `raw_schema()` (dense `ecg` of `geometry.shape`; in
    multi-label runs also `label_names`, a [batch, None] SparseTensor of class names)."""
    source = tfxio.TFExampleBeamRecord(physical_format="inmem", schema=raw_schema(geometry, multi_label),
                                       telemetry_descriptors=["ecg_beam_pipeline"])
    return source.TensorAdapterConfig()


def _list_column(values: pa.Array, per_row: int, rows: int) -> pa.LargeListArray:
    offsets = pa.array(np.arange(rows + 1, dtype=np.int64) * per_row)
    return pa.LargeListArray.from_arrays(offsets, values)


def _optional_column(values: list, dtype: np.dtype) -> pa.LargeListArray:
    """One value per row where known, an empty list where None (a VarLenFeature: absent when unknown)."""
    known = [value for value in values if value is not None]
    offsets = np.concatenate([[0], np.cumsum([value is not None for value in values])]).astype(np.int64)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(np.array(known, dtype=dtype)))


def to_record_batch(records: typing.Sequence[DecodedRecord], multi_label: bool = False) -> pa.RecordBatch:
    """Packs records into one RecordBatch with the column types of `tensor_adapter_config(multi_label=...)`."""
    rows = len(records)
    signal = np.concatenate([r.ecg.reshape(-1) for r in records]).astype(np.float32, copy=False)
    labels = np.array([r.label for r in records], dtype=np.int64)
    ids = pa.array([r.record_id.encode("utf-8") for r in records], type=pa.large_binary())
    window_index = np.array([r.window_index for r in records], dtype=np.int64)
    window_start = np.array([r.window_start_s for r in records], dtype=np.float32)
    columns = {ECG_KEY: _list_column(pa.array(signal), records[0].ecg.size, rows),
               LABEL_KEY: _list_column(pa.array(labels), 1, rows),
               RECORD_ID_KEY: _list_column(ids, 1, rows),
               WINDOW_INDEX_KEY: _list_column(pa.array(window_index), 1, rows),
               WINDOW_START_KEY: _list_column(pa.array(window_start), 1, rows),
               AGE_KEY: _optional_column([r.info.age for r in records], np.float32),
               SEX_KEY: _optional_column([r.info.sex for r in records], np.int64)}
    if multi_label:
        columns[LABEL_NAMES_KEY] = pa.array([[n.encode("utf-8") for n in r.label_names] for r in records],
                                            type=pa.large_list(pa.large_binary()))
    names = sorted(columns)  # the adapter's Arrow schema lists the features by name
    return pa.RecordBatch.from_arrays([columns[name] for name in names], names)


def signal_samples(batch: pa.RecordBatch, num_leads: int = NUM_LEADS) -> np.ndarray:
    """The batch's raw `ecg` column as (records * samples, leads) float32, without copying it."""
    values = batch.column(batch.schema.get_field_index(ECG_KEY)).flatten().to_numpy(zero_copy_only=False)
    return values.reshape(-1, num_leads)


def known_labels(batch: pa.RecordBatch) -> np.ndarray:
    """Each row's binary label, UNKNOWN_LABEL where it has none (an empty list, a null, or UNKNOWN_LABEL
    passed through by a transform saved before `preprocessing.known_labels`)."""
    column = batch.column(batch.schema.get_field_index(LABEL_KEY))
    offsets = column.offsets.to_numpy(zero_copy_only=False)
    offsets = offsets - offsets[0]
    values = column.flatten().to_numpy(zero_copy_only=False)
    has_value = np.diff(offsets) > 0
    first = np.full(len(column), UNKNOWN_LABEL, dtype=np.int64)
    first[has_value] = values[offsets[:-1][has_value]]
    first[column.is_null().to_numpy(zero_copy_only=False)] = UNKNOWN_LABEL
    return first


def drop_unknown_labels(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Turns a row without a known label into a missing value, so the example encoder omits `label` there.

    A transformed example then has a `label` feature exactly when its label is known. The transform
    leaves an empty list where the label is unknown (`preprocessing.known_labels`); a transform saved
    before that passed UNKNOWN_LABEL through. An empty list would be encoded as a `label` feature with
    no value, which a reader expecting one value (or its default when the feature is absent) rejects.
    """
    index = batch.schema.get_field_index(LABEL_KEY)
    if index < 0:  # a multi-label run: `labels` instead (`drop_unknown_classes`)
        return drop_unknown_classes(batch)
    column = batch.column(index)
    offsets = column.offsets.to_numpy(zero_copy_only=False)
    offsets = offsets - offsets[0]  # relative to `flatten()`, which (unlike `values`) honours a slice
    unknown = known_labels(batch) == UNKNOWN_LABEL
    if not unknown.any():
        return batch
    masked = pa.LargeListArray.from_arrays(pa.array(offsets), column.flatten(), mask=pa.array(unknown))
    return batch.set_column(index, LABEL_KEY, masked)


def drop_unknown_classes(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Multi-label runs: a row whose `labels` list is empty (classes unknown) becomes a missing value,
    so the example encoder omits `labels` there, as `drop_unknown_labels` does for `label`."""
    index = batch.schema.get_field_index(LABELS_KEY)
    if index < 0:
        return batch
    column = batch.column(index)
    empty = (column.value_lengths().fill_null(0).to_numpy(zero_copy_only=False) == 0)
    if not empty.any():
        return batch
    offsets = column.offsets.to_numpy(zero_copy_only=False)
    offsets = offsets - offsets[0]
    masked = type(column).from_arrays(pa.array(offsets), column.flatten(), mask=pa.array(empty))
    return batch.set_column(index, LABELS_KEY, masked)
