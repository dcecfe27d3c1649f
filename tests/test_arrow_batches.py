"""Decoded records and Arrow batches: their coders round-trip, estimate sizes without encoding, and
are the ones Beam picks for the pipeline's typed steps."""
import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.coders import registry

from beam_pipeline.graph import pipeline as graphs
from beam_pipeline.graph.arrow_batches import (DecodedRecord, DecodedRecordCoder, RecordBatchCoder, drop_unknown_labels,
                                               to_record_batch)
from ecg_common.schema import ECG_SHAPE, LABEL_KEY, UNKNOWN_LABEL


def _records(count: int) -> list[DecodedRecord]:
    rng = np.random.default_rng(5)
    return [DecodedRecord(f"R{k}-é", k % 2, rng.normal(size=ECG_SHAPE).astype(np.float32)) for k in range(count)]


def test_record_and_batch_coders_round_trip():
    record = _records(1)[0]
    back = DecodedRecordCoder().decode(DecodedRecordCoder().encode(record))
    assert back.record_id == record.record_id and back.label == record.label
    np.testing.assert_array_equal(back.ecg, record.ecg)
    batch = to_record_batch(_records(3))
    assert RecordBatchCoder().decode(RecordBatchCoder().encode(batch)).equals(batch)


def test_size_estimates_come_from_the_arrays_not_from_encoding(monkeypatch):
    records = _records(32)
    batch = to_record_batch(records)

    def refuse(*_):
        raise AssertionError("estimating a size must not encode")

    monkeypatch.setattr(DecodedRecordCoder, "encode", refuse)
    monkeypatch.setattr(RecordBatchCoder, "encode", refuse)
    list_impl = registry.get_coder(beam.typehints.List[DecodedRecord]).get_impl()
    assert list_impl.estimate_size(records) >= 32 * records[0].ecg.nbytes
    assert registry.get_coder(pa.RecordBatch).get_impl().estimate_size(batch) == batch.nbytes


def test_the_batching_steps_are_typed_so_beam_uses_these_coders():
    pipeline = beam.Pipeline()
    batches = (pipeline | beam.Create([]) | graphs.DecodeAndBatch(graphs.DecodeOptions(500.0, False, 32))).batches
    assert isinstance(registry.get_coder(batches.element_type), RecordBatchCoder)
    lists = registry.get_coder(batches.producer.inputs[0].element_type)  # BatchElements' output
    assert isinstance(lists, beam.coders.ListCoder)
    assert [type(c) for c in lists._get_component_coders()] == [DecodedRecordCoder]


def test_drop_unknown_labels_leaves_no_empty_or_unknown_label():
    """The transform's empty list (label unknown) and an older transform's UNKNOWN_LABEL both become a
    missing value, which the example encoder omits; known labels stay; a sliced batch works too."""
    offsets = pa.array([0, 1, 1, 2, 3, 4], pa.int64())
    labels = pa.LargeListArray.from_arrays(offsets, pa.array([1, 0, UNKNOWN_LABEL, 1], pa.int64()))
    batch = pa.RecordBatch.from_arrays([labels], [LABEL_KEY])
    assert drop_unknown_labels(batch).column(0).to_pylist() == [[1], None, [0], None, [1]]
    assert drop_unknown_labels(batch.slice(1, 3)).column(0).to_pylist() == [None, [0], None]
    known = pa.RecordBatch.from_arrays([pa.LargeListArray.from_arrays(pa.array([0, 1, 2], pa.int64()),
                                                                      pa.array([0, 1], pa.int64()))], [LABEL_KEY])
    assert drop_unknown_labels(known) is known
