"""The preprocessing_fn against numpy: 12 per-lead statistics over all samples of all records."""
import os
import uuid

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf
import tensorflow_transform.beam as tft_beam

from beam_pipeline.graph.arrow_batches import DecodedRecord, tensor_adapter_config, to_record_batch
from beam_pipeline.graph.preprocessing import lead_moments, preprocessing_fn
from ecg_common.schema import ECG_KEY, ECG_SHAPE, LABEL_KEY, NUM_LEADS, RECORD_ID_KEY, UNKNOWN_LABEL


def _records(n: int, seed: int = 0) -> list[DecodedRecord]:
    """Records whose per-record and per-element statistics differ from the per-lead ones."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        offset = np.arange(NUM_LEADS) * 0.5 + i  # each record has its own offset per lead
        scale = np.linspace(0.1, 3.0, NUM_LEADS) * (1 + i % 3)
        ecg = (rng.normal(size=ECG_SHAPE) * scale + offset).astype(np.float32)
        ecg[:, 3] = 7.0  # a lead that is constant over the whole set
        ecg[: 2500, 5] += 4.0  # time-dependent: per-element stats would differ
        records.append(DecodedRecord(f"R{i}", UNKNOWN_LABEL if i % 3 == 2 else i % 2, ecg))
    return records


def _save_batch(transformed, out_dir: str) -> None:
    """Workers run on pickled copies of closures, so results leave the pipeline through files."""
    batch, _ = transformed
    with pa.OSFile(os.path.join(out_dir, f"{uuid.uuid4().hex}.arrow"), "wb") as sink:
        with pa.ipc.new_file(sink, batch.schema) as writer:
            writer.write_batch(batch)


def _analyze_and_transform(records, tmp_path, batch_size, fn=preprocessing_fn):
    batches = [to_record_batch(records[i:i + batch_size]) for i in range(0, len(records), batch_size)]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with beam.Pipeline(runner="FnApiRunner") as pipeline, tft_beam.Context(temp_dir=str(tmp_path / "tft")):
        data = pipeline | beam.Create(batches, reshuffle=False)
        (transformed, _), _ = ((data, tensor_adapter_config())
                               | tft_beam.AnalyzeAndTransformDataset(fn, output_record_batches=True))
        _ = transformed | beam.Map(_save_batch, str(out_dir))
    return [pa.ipc.open_file(str(path)).get_batch(0) for path in sorted(out_dir.iterdir())]


@pytest.fixture(scope="module")
def transformed_and_raw(tmp_path_factory):
    records = _records(7)
    return _analyze_and_transform(records, tmp_path_factory.mktemp("tft"), batch_size=3), records


def test_each_lead_is_normalized_with_whole_set_statistics(transformed_and_raw):
    batches, records = transformed_and_raw
    raw = np.stack([r.ecg for r in records]).astype(np.float64)
    by_id = {}
    for batch in batches:
        ids = [v.as_py() for v in batch.column(RECORD_ID_KEY).flatten()]
        values = batch.column(ECG_KEY).flatten().to_numpy().reshape(-1, *ECG_SHAPE)
        by_id.update(zip(ids, values))
    got = np.stack([by_id[r.record_id.encode()] for r in records])
    mean = raw.reshape(-1, NUM_LEADS).mean(axis=0)
    std = raw.reshape(-1, NUM_LEADS).std(axis=0)
    std[std == 0] = 1.0
    np.testing.assert_allclose(got, (raw - mean) / std, atol=1e-5, rtol=1e-5)
    flat = got.reshape(-1, NUM_LEADS).astype(np.float64)
    varying = [lead for lead in range(NUM_LEADS) if lead != 3]
    np.testing.assert_allclose(flat.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(flat.std(axis=0)[varying], 1.0, atol=1e-5)
    np.testing.assert_allclose(got[..., 3], 0.0, atol=1e-6)  # constant lead: centred, not divided by 0


def test_label_and_record_id_pass_through_and_an_unknown_label_is_left_out(transformed_and_raw):
    """A known label leaves the transform as a one-value list, an unknown one as an empty list (a
    VarLenFeature in the transformed schema, which parses examples with and without a label)."""
    batches, records = transformed_and_raw
    labels = {}
    for batch in batches:
        ids = [v.as_py().decode() for v in batch.column(RECORD_ID_KEY).flatten()]
        labels.update(zip(ids, batch.column(LABEL_KEY).to_pylist()))
    assert labels == {r.record_id: [] if r.label == UNKNOWN_LABEL else [r.label] for r in records}
    assert [] in labels.values() and [0] in labels.values() and [1] in labels.values()


def _moments_fn(inputs: dict) -> dict:
    """The learned moments themselves, one copy per example (tf.Transform's outputs keep the batch
    dimension), their float64 bits as int64 (an output feature cannot be float64)."""
    mean, var = lead_moments(inputs[ECG_KEY])
    rows = tf.zeros([tf.shape(inputs[ECG_KEY])[0], 1], tf.float64)
    return {"mean": tf.bitcast(rows + mean[tf.newaxis, :], tf.int64),
            "var": tf.bitcast(rows + var[tf.newaxis, :], tf.int64), RECORD_ID_KEY: inputs[RECORD_ID_KEY]}


def test_the_moments_are_those_of_every_sample_of_every_record_in_float64(tmp_path):
    """The analyzers see each example's own mean and variance (`lead_moments`); combined over the set
    they must equal numpy's over all samples, with records of different offsets and scales in batches
    of unequal size."""
    records = _records(11, seed=3)
    batches = _analyze_and_transform(records, tmp_path, batch_size=4, fn=_moments_fn)
    flat = np.stack([r.ecg for r in records]).astype(np.float64).reshape(-1, NUM_LEADS)
    mean, var = (batches[0].column(name).flatten().to_numpy()[:NUM_LEADS].view(np.float64) for name in ("mean", "var"))
    np.testing.assert_allclose(mean, flat.mean(axis=0), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(var, flat.var(axis=0), rtol=1e-12, atol=1e-13)
    assert var[3] == 0.0  # the constant lead: exactly zero, so it keeps std 1
