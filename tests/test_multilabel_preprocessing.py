"""The multi-label preprocessing_fn: `labels` multi-hot over a fixed class list, and the class
vocabulary learned by tf.Transform against a numpy count over the training records."""
import collections
import os
import uuid

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam

from beam_pipeline.graph.arrow_batches import DecodedRecord, tensor_adapter_config, to_record_batch
from beam_pipeline.graph.preprocessing import multi_label_preprocessing_fn, vocabulary_fn
from ecg_common.layout import CLASS_VOCABULARY
from ecg_common.schema import CLASSES_KNOWN, ECG_SHAPE, LABELS_KEY, RECORD_ID_KEY, UNKNOWN_LABEL

CODES = ("164889003", "59118001", "426783006", "284470004", "17338001")


def _records(n: int, seed: int = 0) -> list[DecodedRecord]:
    """Records with 0-3 codes each (skewed frequencies), every fourth unlabelled."""
    rng = np.random.default_rng(seed)
    weights = np.array([8, 4, 2, 1, 0.5])
    records = []
    for i in range(n):
        count = int(rng.integers(0, 4))
        names = tuple(rng.choice(CODES, size=count, replace=False, p=weights / weights.sum()))
        known = UNKNOWN_LABEL if i % 4 == 3 else CLASSES_KNOWN
        ecg = rng.normal(size=ECG_SHAPE).astype(np.float32)
        records.append(DecodedRecord(f"R{i}", known, ecg, label_names=() if known == UNKNOWN_LABEL else names))
    return records


def _save_batch(transformed, out_dir: str) -> None:
    batch, _ = transformed
    with pa.OSFile(os.path.join(out_dir, f"{uuid.uuid4().hex}.arrow"), "wb") as sink:
        with pa.ipc.new_file(sink, batch.schema) as writer:
            writer.write_batch(batch)


def _run(fn, records, tmp_path, batch_size=5):
    batches = [to_record_batch(records[i:i + batch_size], multi_label=True)
               for i in range(0, len(records), batch_size)]
    out_dir, tf_dir = tmp_path / "batches", tmp_path / "transform"
    out_dir.mkdir()
    with beam.Pipeline(runner="FnApiRunner") as pipeline, tft_beam.Context(temp_dir=str(tmp_path / "tft")):
        data = pipeline | beam.Create(batches, reshuffle=False)
        (transformed, _), transform_fn = ((data, tensor_adapter_config(multi_label=True))
                                          | tft_beam.AnalyzeAndTransformDataset(fn, output_record_batches=True))
        _ = transformed | beam.Map(_save_batch, str(out_dir))
        _ = transform_fn | tft_beam.WriteTransformFn(str(tf_dir))
    return [pa.ipc.open_file(str(p)).get_batch(0) for p in sorted(out_dir.iterdir())], str(tf_dir)


def test_labels_is_the_multi_hot_of_the_names_in_class_order_and_absent_when_unknown(tmp_path):
    records = _records(13)
    classes = ("59118001", "164889003", "17338001")  # not every code: the others match nothing
    batches, tf_dir = _run(multi_label_preprocessing_fn(classes), records, tmp_path)
    got = {}
    for batch in batches:
        ids = [v.as_py().decode() for v in batch.column(RECORD_ID_KEY).flatten()]
        got.update(zip(ids, batch.column(LABELS_KEY).to_pylist()))
    expected = {r.record_id: [] if r.label == UNKNOWN_LABEL else [int(c in r.label_names) for c in classes]
                for r in records}
    assert got == expected
    assert any(sum(v) == 0 for v in got.values() if v) and any(sum(v) >= 2 for v in got.values())
    spec = tft.TFTransformOutput(tf_dir).transformed_feature_spec()
    assert spec[LABELS_KEY] == tf.io.VarLenFeature(tf.int64)  # unlabelled examples parse too
    assert "label" not in spec


@pytest.mark.parametrize("min_count", [1, 3])
def test_learned_vocabulary_equals_a_count_of_records_over_train(tmp_path, min_count):
    records = _records(40, seed=min_count)
    # a code twice in one record counts once: records list each name once, as map_tokens makes them
    counts = collections.Counter(name for r in records for name in set(r.label_names))
    _, tf_dir = _run(vocabulary_fn(min_count), records, tmp_path)
    learned = [v.decode() for v in tft.TFTransformOutput(tf_dir).vocabulary_by_name(CLASS_VOCABULARY)]
    assert sorted(learned) == sorted(name for name, n in counts.items() if n >= min_count)
    assert [counts[n] for n in learned] == sorted((counts[n] for n in learned), reverse=True)
    if min_count > 1:
        assert any(0 < n < min_count for n in counts.values())  # the threshold really removed something
