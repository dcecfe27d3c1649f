"""Trainer tests on a tiny pipeline output built here: raw ECGs -> tf.Transform (Beam) -> GZIP TFRecords.

The fixture writes the output contract the pipeline produces (`transform_fn/`, `transformed_metadata/`,
`metadata/`, `train|test/part-*.tfrecord.gz`, unlabelled test examples without `label`) with
`beam_pipeline.graph.preprocessing.preprocessing_fn`, and keeps the raw signals so the serving export can
be checked against them.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shutil

import apache_beam as beam
import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

import trainer  # noqa: F401 - sets TF_USE_LEGACY_KERAS / KERAS_BACKEND before TensorFlow is imported
from beam_pipeline.graph.preprocessing import preprocessing_fn
from ecg_common.layout import SHARD_PREFIX, TFRECORD_SUFFIX
from ecg_common.schema import (ABNORMAL, ECG_KEY, ECG_SHAPE, LABEL_KEY, NORMAL, NUM_SAMPLES, RECORD_ID_KEY,
                               SAMPLING_RATE_HZ, TEST_SPLIT, TRAIN_SPLIT, UNKNOWN_LABEL, raw_feature_spec)
from trainer import evaluation, export, inputs, layout, predict, train
from trainer.__main__ import main as train_main

NUM_TRAIN = 48
NUM_TEST = 16  # half of them labelled
NUM_SHARDS = 2
BATCH = 8
TINY_CONFIG = train.TrainConfig(epochs=4, batch_size=BATCH, filters=(8, 16, 16, 32), patience=10, seed=7)


def _raw_ecg(rng: np.random.Generator, label: int) -> np.ndarray:
    """Noise with a different offset and scale per lead (so normalization matters); abnormal adds an 8 Hz wave."""
    t = np.arange(NUM_SAMPLES) / SAMPLING_RATE_HZ
    offsets = np.linspace(-2.0, 3.0, ECG_SHAPE[1])
    scales = np.linspace(0.1, 1.5, ECG_SHAPE[1])
    signal = rng.normal(size=ECG_SHAPE)
    if label == ABNORMAL:
        signal += 1.5 * np.sin(2 * np.pi * 8.0 * t + rng.uniform(0, 2 * np.pi))[:, None]
    return (offsets + scales * signal).astype(np.float32)


def _raw_split(rng: np.random.Generator, prefix: str, count: int, labelled: int) -> list[dict]:
    rows = []
    for index in range(count):
        label = index % 2
        rows.append({ECG_KEY: _raw_ecg(rng, label),
                     LABEL_KEY: label if index < labelled else UNKNOWN_LABEL,
                     RECORD_ID_KEY: f"{prefix}{index:03d}".encode(),
                     "_truth": label})
    return rows


def _encode(instance: dict) -> bytes:
    """A transformed instance -> tf.train.Example, leaving `label` out when unknown (as the pipeline does).

    The transform outputs the label as a list holding the known value (empty when unknown);
    `test_record_id_filter_is_stateless` passes a scalar, possibly UNKNOWN_LABEL."""
    feature = {
        ECG_KEY: tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(instance[ECG_KEY]).reshape(-1))),
        RECORD_ID_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[instance[RECORD_ID_KEY]])),
    }
    labels = [int(label) for label in np.asarray(instance[LABEL_KEY]).reshape(-1) if label != UNKNOWN_LABEL]
    if labels:
        feature[LABEL_KEY] = tf.train.Feature(int64_list=tf.train.Int64List(value=labels))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@dataclasses.dataclass
class PipelineOutput:
    path: str
    raw: dict  # split -> list of raw instances (with "_truth")


def build_pipeline_output(out_dir: str, temp_dir: str, seed: int = 0) -> PipelineOutput:
    """Analyze on train, transform train and test with the same transform_fn, write the output contract."""
    rng = np.random.default_rng(seed)
    raw = {TRAIN_SPLIT: _raw_split(rng, "tr", NUM_TRAIN, NUM_TRAIN),
           TEST_SPLIT: _raw_split(rng, "te", NUM_TEST, NUM_TEST // 2)}
    # The features these instances have: an output built before windows, age and sex (the trainer reads both).
    spec = {key: feature for key, feature in raw_feature_spec().items() if key in (ECG_KEY, LABEL_KEY, RECORD_ID_KEY)}
    metadata = dataset_metadata.DatasetMetadata.from_feature_spec(spec)
    beam_input = {split: [{k: v for k, v in row.items() if k != "_truth"} for row in rows]
                  for split, rows in raw.items()}
    with beam.Pipeline(runner="FnApiRunner") as pipeline, tft_beam.Context(temp_dir=temp_dir):
        train_data = pipeline | "CreateTrain" >> beam.Create(beam_input[TRAIN_SPLIT])
        (transformed, _), transform_fn = ((train_data, metadata)
                                          | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn))
        test_data = pipeline | "CreateTest" >> beam.Create(beam_input[TEST_SPLIT])
        test_transformed, _ = (((test_data, metadata), transform_fn) | tft_beam.TransformDataset())
        for split, data in ((TRAIN_SPLIT, transformed), (TEST_SPLIT, test_transformed)):
            _ = (data | f"Encode{split}" >> beam.Map(_encode)
                 | f"Write{split}" >> beam.io.WriteToTFRecord(os.path.join(out_dir, split, SHARD_PREFIX),
                                                             file_name_suffix=TFRECORD_SUFFIX, num_shards=NUM_SHARDS))
        _ = transform_fn | tft_beam.WriteTransformFn(out_dir)
    metadata_io.write_metadata(metadata, os.path.join(out_dir, "metadata"))
    return PipelineOutput(out_dir, raw)


@pytest.fixture(scope="session")
def pipeline_output(tmp_path_factory) -> PipelineOutput:
    root = tmp_path_factory.mktemp("pipeline")
    return build_pipeline_output(str(root / "out"), str(root / "tmp"))


@pytest.fixture(scope="session")
def trained(pipeline_output, tmp_path_factory) -> tuple[str, dict]:
    """One short training run through the CLI, shared by the export and predict tests."""
    model_dir = str(tmp_path_factory.mktemp("model"))
    code = train_main(["--data_dir", pipeline_output.path, "--model_dir", model_dir, "--epochs", "4",
                       "--batch_size", str(BATCH), "--seed", "7", "--filters", "8,16,16,32"])
    assert code == 0
    with open(os.path.join(model_dir, layout.METRICS_FILE), encoding="utf-8") as handle:
        return model_dir, json.load(handle)


# --- inputs -----------------------------------------------------------------------------------------


def test_input_fn_shapes_and_dtypes(pipeline_output):
    tft_output = inputs.load_transform_output(pipeline_output.path)
    spec = inputs.parsing_spec(tft_output)
    files = inputs.split_files(pipeline_output.path, TRAIN_SPLIT)
    assert len(files) == NUM_SHARDS
    dataset = inputs.input_fn(inputs.read_examples(files, shuffle=True, seed=1), spec, BATCH, shuffle=True, seed=1)
    batches = list(dataset)
    assert sum(int(b[ECG_KEY].shape[0]) for b in batches) == NUM_TRAIN
    first = batches[0]
    assert first[ECG_KEY].dtype == tf.float32 and tuple(first[ECG_KEY].shape) == (BATCH, *ECG_SHAPE)
    assert first[LABEL_KEY].dtype == tf.int64 and tuple(first[LABEL_KEY].shape) == (BATCH,)
    assert first[RECORD_ID_KEY].dtype == tf.string
    ecg, label = next(iter(inputs.to_keras(dataset)))
    assert tuple(ecg.shape) == (BATCH, *ECG_SHAPE) and label.dtype == tf.float32
    # The pipeline's per-lead z-score: every lead of the training set has mean 0 and std 1.
    stacked = np.concatenate([b[ECG_KEY].numpy() for b in batches]).reshape(-1, ECG_SHAPE[1]).astype(np.float64)
    np.testing.assert_allclose(stacked.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(stacked.std(axis=0), 1.0, atol=1e-4)


def test_input_fn_reads_unlabelled_examples_and_filters_by_id(pipeline_output):
    spec = inputs.parsing_spec(inputs.load_transform_output(pipeline_output.path))
    files = inputs.split_files(pipeline_output.path, TEST_SPLIT)
    records = inputs.scan_records(files)
    by_id = {r.record_id: r.label for r in records}
    expected = {row[RECORD_ID_KEY].decode(): row[LABEL_KEY] for row in pipeline_output.raw[TEST_SPLIT]}
    assert by_id == expected and list(by_id.values()).count(UNKNOWN_LABEL) == NUM_TEST // 2
    wanted = {"te001", "te004", "te011"}
    batches = list(inputs.input_fn(inputs.read_examples(files), spec, BATCH, record_ids=wanted))
    got = {rid.decode(): int(label) for b in batches for rid, label in zip(b[RECORD_ID_KEY].numpy(),
                                                                           b[LABEL_KEY].numpy())}
    assert got == {rid: expected[rid] for rid in wanted}


def test_record_id_filter_is_stateless():
    """A stateful op in a tf.data function serializes the pipeline and disables prefetch under op determinism."""
    keep = inputs._membership({"a", "b", "c"})
    graph = tf.function(keep).get_concrete_function(tf.TensorSpec([], tf.string)).graph
    assert not [op.type for op in graph.get_operations() if op._is_stateful]  # noqa: SLF001

    def example(record_id):
        return _encode({ECG_KEY: np.zeros(ECG_SHAPE, np.float32), RECORD_ID_KEY: record_id.encode(),
                        LABEL_KEY: UNKNOWN_LABEL})
    assert [bool(keep(tf.constant(example(i)))) for i in ("a", "c", "d", "")] == [True, True, False, False]


def test_input_fn_shuffles_deterministically_with_seed(pipeline_output):
    spec = inputs.parsing_spec(inputs.load_transform_output(pipeline_output.path))
    files = inputs.split_files(pipeline_output.path, TRAIN_SPLIT)

    def ids(dataset):
        return [rid.decode() for b in dataset for rid in b[RECORD_ID_KEY].numpy()]

    def order(seed):
        return ids(inputs.input_fn(inputs.read_examples(files, cache=True), spec, BATCH, shuffle=True, seed=seed))

    assert order(3) == order(3)
    assert order(3) != order(4)
    assert sorted(order(3)) == sorted(order(4))
    # Examples are shuffled, not only shards: the records of one shard leave it in a new order.
    first_shard = ids(inputs.input_fn(inputs.read_examples(files[:1]), spec, BATCH))
    assert [rid for rid in order(3) if rid in set(first_shard)] != first_shard
    # And every epoch gets a new order.
    dataset = inputs.input_fn(inputs.read_examples(files, cache=True), spec, BATCH, shuffle=True, seed=3)
    assert ids(dataset) != ids(dataset)


def test_cached_examples_are_read_from_the_shards_once(pipeline_output, tmp_path):
    """After fill_cache, training and validation (any number of epochs) read memory, not the files."""
    spec = inputs.parsing_spec(inputs.load_transform_output(pipeline_output.path))
    copies = []
    for path in inputs.split_files(pipeline_output.path, TRAIN_SPLIT):
        copies.append(str(tmp_path / os.path.basename(path)))
        shutil.copy(path, copies[-1])
    examples = inputs.read_examples(copies, shuffle=True, seed=0, cache=True)
    assert inputs.fill_cache(examples) == NUM_TRAIN
    for path in copies:
        os.remove(path)
    ids = sorted(row[RECORD_ID_KEY].decode() for row in pipeline_output.raw[TRAIN_SPLIT])
    train_ids, val_ids = set(ids[:40]), set(ids[40:])
    for _ in range(2):
        seen = [rid.decode() for subset in (train_ids, val_ids)
                for b in inputs.input_fn(examples, spec, BATCH, record_ids=subset, shuffle=True, seed=1)
                for rid in b[RECORD_ID_KEY].numpy()]
        assert sorted(seen) == ids


def test_the_cache_decision_refuses_a_set_larger_than_the_budget(pipeline_output):
    """The examples are cached only when all of them fit the budget; the default budget is the stated
    share of physical memory, so 50,000 examples of the pipeline's geometry (12 GB) stream here."""
    spec = inputs.parsing_spec(inputs.load_transform_output(pipeline_output.path))
    one = inputs.example_bytes(spec)
    assert one >= int(np.prod(ECG_SHAPE)) * 4  # the float32 signal at least
    assert inputs.fits_in_memory(NUM_TRAIN, spec, budget_bytes=NUM_TRAIN * one)
    assert not inputs.fits_in_memory(NUM_TRAIN, spec, budget_bytes=NUM_TRAIN * one - 1)
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert inputs.cache_budget_bytes() == int(inputs.CACHE_MEMORY_FRACTION * physical)
    fitting = inputs.cache_budget_bytes() // one
    assert inputs.fits_in_memory(fitting, spec) and not inputs.fits_in_memory(fitting + 1, spec)


def test_training_streams_from_the_shards_when_the_examples_exceed_the_budget(pipeline_output, trained, tmp_path,
                                                                             monkeypatch):
    """A budget one example short of the training folder's examples: the run does not cache (and
    still trains on every record); the same data under the default budget is cached."""
    spec = inputs.parsing_spec(inputs.load_transform_output(pipeline_output.path))
    monkeypatch.setattr(inputs, "cache_budget_bytes", lambda: NUM_TRAIN * inputs.example_bytes(spec) - 1)
    metrics = train.run(pipeline_output.path, str(tmp_path), dataclasses.replace(TINY_CONFIG, epochs=1))
    assert metrics["cached_in_memory"] is False
    assert sum(sum(counts.values()) for counts in metrics["class_counts"].values()) == NUM_TRAIN
    assert trained[1]["cached_in_memory"] is True


def test_split_is_stable_stratified_and_independent_of_order():
    records = [inputs.Record(f"r{i:04d}", ABNORMAL if i % 5 else NORMAL) for i in range(500)]  # 80% abnormal
    held_out = inputs.validation_ids(records, 0.2)
    assert held_out == inputs.validation_ids(list(reversed(records)), 0.2)
    assert held_out == inputs.validation_ids(records[::2] + records[1::2], 0.2)
    val = [r for r in records if r.record_id in held_out]
    assert inputs.class_counts(val) == {NORMAL: 20, ABNORMAL: 80}
    # Pseudo-random, not the first ids of each class.
    assert sorted(held_out) != sorted(r.record_id for r in records)[:100]
    # A fixed, known assignment (sha256 ranks per class): a change of hash would silently change
    # every model's validation set, and with it the comparability of runs.
    ten = [inputs.Record(f"r{i:02d}", i % 2) for i in range(10)]
    assert inputs.validation_ids(ten, 0.2) == {"r01", "r04"}
    # Adding records to one class does not move the other class's validation records.
    more = records + [inputs.Record(f"x{i}", ABNORMAL) for i in range(50)]
    assert ({r for r in held_out if r.startswith("r") and int(r[1:]) % 5 == 0}
            == {r for r in inputs.validation_ids(more, 0.2) if r.startswith("r") and int(r[1:]) % 5 == 0})
    # Tiny classes: at least one held out when there are two, none when there is one.
    small = [inputs.Record("a", NORMAL), inputs.Record("b", NORMAL), inputs.Record("c", ABNORMAL)]
    assert inputs.class_counts([r for r in small if r.record_id in inputs.validation_ids(small, 0.2)]) == {
        NORMAL: 1, ABNORMAL: 0}


# --- evaluation ---------------------------------------------------------------------------------


def test_auc_and_threshold():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.3, 0.6, 0.5, 0.8, 0.9, 0.95])
    assert evaluation.roc_auc(labels, scores) == pytest.approx(11 / 12)
    assert evaluation.roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    # Youden: J(0.7) = 3/4 + 1 - 1 beats J(0.4) = 1 + 2/3 - 1; F1 prefers the lower cut (8/9 against 6/7).
    youden = evaluation.choose_threshold(labels, scores, "youden")
    assert youden == pytest.approx(0.7)
    assert evaluation.choose_threshold(labels, scores, "f1") == pytest.approx(0.4)
    metrics = evaluation.binary_metrics(labels, scores, youden)
    assert metrics["confusion"] == {"tp": 3, "fp": 0, "tn": 3, "fn": 1}
    assert metrics["f1"] == pytest.approx(6 / 7) and metrics["accuracy"] == pytest.approx(6 / 7)
    # Separable scores: the threshold falls in the gap between the classes.
    assert 0.4 < evaluation.choose_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.6, 0.9]), "f1") < 0.6


def _separating_scores(rng: np.random.Generator, n_normal: int, n_abnormal: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping scores (AUC about 0.9): every metric is strictly between 0 and 1, so intervals have width."""
    labels = np.array([NORMAL] * n_normal + [ABNORMAL] * n_abnormal)
    return labels, np.clip(rng.normal(0.35 + 0.3 * labels, 0.18), 0.0, 1.0)


def test_bootstrap_resamples_score_exactly_like_binary_metrics():
    """The vectorized resample metrics (draw counts, cumulative negatives) equal `binary_metrics` on the
    resample written out record by record, ties included."""
    rng = np.random.default_rng(4)
    labels, scores = _separating_scores(rng, 23, 31)
    scores = np.round(scores, 1)  # many ties
    positive, negative = scores[labels == ABNORMAL], scores[labels == NORMAL]
    resampled = evaluation._resampled_metrics(positive, negative, 0.5, np.random.default_rng(9), 5)  # noqa: SLF001
    replay = np.random.default_rng(9)
    pos_counts = evaluation._resample_counts(replay, len(positive), 5)  # noqa: SLF001
    neg_counts = evaluation._resample_counts(replay, len(negative), 5)  # noqa: SLF001
    for b in range(5):
        drawn_pos, drawn_neg = np.repeat(positive, pos_counts[b]), np.repeat(np.sort(negative), neg_counts[b])
        expected = evaluation.binary_metrics(np.r_[np.ones(len(drawn_pos)), np.zeros(len(drawn_neg))],
                                             np.r_[drawn_pos, drawn_neg], 0.5)
        for name in evaluation.INTERVAL_METRICS:
            assert resampled[name][b] == pytest.approx(expected[name], abs=1e-12), (name, b)


def test_bootstrap_interval_contains_the_estimate_narrows_with_data_and_is_seeded():
    rng = np.random.default_rng(5)
    small, large = _separating_scores(rng, 30, 30), _separating_scores(rng, 3000, 3000)
    widths = {}
    for size, (labels, scores) in (("small", small), ("large", large)):
        point = evaluation.binary_metrics(labels, scores, 0.5)
        intervals = evaluation.bootstrap_intervals(labels, scores, 0.5)
        assert set(intervals) == set(evaluation.INTERVAL_METRICS)
        for name, (low, high) in intervals.items():
            assert 0.0 <= low <= point[name] <= high <= 1.0, (size, name, low, point[name], high)
            assert high > low, (size, name)
        widths[size] = {name: high - low for name, (low, high) in intervals.items()}
    for name in evaluation.INTERVAL_METRICS:  # 100 times the records: about a tenth of the width
        assert widths["large"][name] < 0.3 * widths["small"][name], name
    labels, scores = small
    assert evaluation.bootstrap_intervals(labels, scores, 0.5, seed=3) == evaluation.bootstrap_intervals(
        labels, scores, 0.5, seed=3)
    assert evaluation.bootstrap_intervals(labels, scores, 0.5, seed=3) != evaluation.bootstrap_intervals(
        labels, scores, 0.5, seed=4)
    assert set(evaluation.bootstrap_intervals(labels[labels == ABNORMAL], scores[labels == ABNORMAL], 0.5).values()) == {
        None}  # one class only: no interval rather than a made-up one


def test_validation_metrics_carry_counts_and_flag_a_small_class():
    rng = np.random.default_rng(6)
    labels, scores = _separating_scores(rng, 1, 9)  # the case of the issue: one normal validation record
    small = evaluation.validation_metrics(labels, scores, 0.5)
    assert (small["positives"], small["negatives"], small["num_examples"]) == (9, 1, 10)
    assert sum(small["confusion"].values()) == 10
    assert small["reliable"] is False
    assert "1 normal and 9 abnormal" in small["caveat"] and "specificity by 100%" in small["caveat"]
    assert small["min_reliable_class_count"] == evaluation.MIN_RELIABLE_CLASS_COUNT
    assert small["bootstrap"] == {"method": evaluation.BOOTSTRAP_METHOD, "resamples": evaluation.BOOTSTRAP_RESAMPLES,
                                  "seed": evaluation.BOOTSTRAP_SEED, "level": evaluation.INTERVAL_LEVEL}
    assert set(small["interval_95"]) == set(evaluation.INTERVAL_METRICS)
    edge = evaluation.MIN_RELIABLE_CLASS_COUNT
    assert evaluation.validation_metrics(*_separating_scores(rng, edge - 1, 200), 0.5)["reliable"] is False
    large = evaluation.validation_metrics(*_separating_scores(rng, edge, edge), 0.5)
    assert large["reliable"] is True and large["caveat"] is None
    json.dumps(large, allow_nan=False)  # what metrics.json holds is plain JSON


def test_console_summary_carries_intervals_counts_and_the_caveat():
    rng = np.random.default_rng(7)
    base = {"threshold": 0.5, "epochs_run": 3, "training_seconds": 1.5}
    small = train.summary_line(dict(base, validation=evaluation.validation_metrics(*_separating_scores(rng, 2, 8), 0.5)))
    assert "unreliable: validation holds only 2 normal and 8 abnormal records" in small
    assert re.search(r"AUC \d\.\d{4} \[\d\.\d\d, \d\.\d\d\]", small), small
    large = train.summary_line(dict(base, validation=evaluation.validation_metrics(*_separating_scores(rng, 50, 50), 0.5)))
    assert "unreliable" not in large and "from 50 normal and 50 abnormal records" in large


# --- model and training -------------------------------------------------------------------------


def test_short_training_run_learns(pipeline_output, tmp_path):
    """Loss falls on the separable set, and the run writes the promised artifacts."""
    metrics = train.run(pipeline_output.path, str(tmp_path), TINY_CONFIG)
    losses = metrics["history"]["loss"]
    assert losses[-1] < 0.6 * losses[0], losses
    assert metrics["validation"]["auc"] >= 0.9, metrics["validation"]
    assert metrics["class_counts"] == {"train": {"normal": 19, "abnormal": 19},
                                       "validation": {"normal": 5, "abnormal": 5}}
    assert metrics["epochs_run"] == TINY_CONFIG.epochs
    # 5 + 5 validation records: counts, intervals and the caveat reach metrics.json.
    with open(tmp_path / layout.METRICS_FILE, encoding="utf-8") as handle:
        validation = json.load(handle)["validation"]
    assert (validation["negatives"], validation["positives"]) == (5, 5)
    # One window per record: the figures count records, each of its one window.
    assert (validation["unit"], validation["num_records"], validation["num_windows"]) == ("record", 10, 10)
    assert validation["reliable"] is False and "5 normal and 5 abnormal" in validation["caveat"]
    assert validation["interval_95"]["auc"][0] <= validation["auc"] <= validation["interval_95"]["auc"][1]
    for key in ("accuracy", "auc", "precision", "recall", "f1"):
        assert 0.0 <= metrics["validation"][key] <= 1.0
    assert 0.0 <= metrics["threshold"] <= 1.0
    assert os.path.isfile(tmp_path / layout.MODEL_FILE)
    events = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / layout.LOGS_DIR) for f in fs]
    tags = {value.tag for path in events for event in tf.compat.v1.train.summary_iterator(path)
            for value in event.summary.value}
    assert {"epoch_loss", "epoch_auc"} <= tags


# --- export ---------------------------------------------------------------------------------------


def test_serving_raw_matches_model_on_transformed_examples(pipeline_output, trained):
    """The SavedModel applied to raw ECGs == the Keras model applied to the pipeline's transformed examples."""
    model_dir, _ = trained
    spec = inputs.parsing_spec(inputs.load_transform_output(pipeline_output.path))
    transformed = {}
    for split in (TRAIN_SPLIT, TEST_SPLIT):
        examples = inputs.read_examples(inputs.split_files(pipeline_output.path, split))
        for batch in inputs.input_fn(examples, spec, 64):
            transformed.update(zip((r.decode() for r in batch[RECORD_ID_KEY].numpy()), batch[ECG_KEY].numpy()))
    rows = pipeline_output.raw[TRAIN_SPLIT][:10] + pipeline_output.raw[TEST_SPLIT][:6]
    raw = np.stack([row[ECG_KEY] for row in rows])
    normalized = np.stack([transformed[row[RECORD_ID_KEY].decode()] for row in rows])

    model = keras.saving.load_model(os.path.join(model_dir, layout.MODEL_FILE))
    expected = model.predict(normalized, verbose=0).reshape(-1)
    loaded = export.load_serving_model(layout.resolve_export(model_dir))
    served = loaded.signatures[export.SERVING_SIGNATURE](**{ECG_KEY: tf.constant(raw)})[export.PROBABILITY_KEY]
    assert served.shape == (len(rows),)
    np.testing.assert_allclose(served.numpy(), expected, rtol=0, atol=1e-5)
    via_transformed = loaded.signatures[export.TRANSFORMED_SIGNATURE](**{ECG_KEY: tf.constant(normalized)})
    np.testing.assert_allclose(via_transformed[export.PROBABILITY_KEY].numpy(), expected, rtol=0, atol=1e-5)
    # The model is not constant: the check above would pass trivially for a dead model.
    assert np.ptp(expected) > 0.1


# --- predict and CLI ------------------------------------------------------------------------------


def test_predict_writes_one_row_per_record(pipeline_output, trained, tmp_path):
    model_dir, metrics = trained
    output = tmp_path / "predictions.csv"
    code = predict.main(["--model_dir", model_dir, "--data_dir", pipeline_output.path, "--split", TEST_SPLIT,
                         "--output", str(output)])
    assert code == 0
    with open(output, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header, rows = next(reader), list(reader)
    assert header == ["record_id", "probability", "predicted_label", "true_label"]
    assert sorted(r[0] for r in rows) == sorted(row[RECORD_ID_KEY].decode() for row in pipeline_output.raw[TEST_SPLIT])
    for record_id, probability, predicted_label, _ in rows:
        assert 0.0 <= float(probability) <= 1.0
        assert int(predicted_label) == int(float(probability) >= metrics["threshold"])
    truth = {row[RECORD_ID_KEY].decode(): row["_truth"] for row in pipeline_output.raw[TEST_SPLIT]}
    accuracy = np.mean([int(predicted_label) == truth[rid] for rid, _, predicted_label, _ in rows])
    assert accuracy >= 0.8, accuracy
    # true_label is the split's label where the example has one (half of TEST here), empty elsewhere.
    carried = {row[RECORD_ID_KEY].decode(): row[LABEL_KEY] for row in pipeline_output.raw[TEST_SPLIT]}
    assert {rid: true_label for rid, _, _, true_label in rows} == {
        rid: "" if label == UNKNOWN_LABEL else str(label) for rid, label in carried.items()}
    assert [p.true_label for p in predict.read_csv(str(output))] == [carried[r[0]] for r in rows]


def test_read_csv_reads_the_former_predictions_layout(tmp_path):
    old = tmp_path / "old.csv"
    old.write_text("record_id,probability,label\nTEST101,0.75,1\nTEST102,0.25,0\n", encoding="utf-8")
    assert predict.read_csv(str(old)) == [predict.Prediction("TEST101", 0.75, 1), predict.Prediction("TEST102", 0.25, 0)]
    new = tmp_path / "new.csv"
    predict.write_csv([predict.Prediction("a", 0.75, 1, NORMAL), predict.Prediction("b", 0.25, 0)], str(new))
    assert new.read_text(encoding="utf-8").splitlines() == [
        "record_id,probability,predicted_label,true_label", "a,0.75,1,0", "b,0.25,0,"]
    assert predict.read_csv(str(new))[0].true_label == NORMAL


def test_labelled_summary_counts_and_caveat():
    few = [predict.Prediction(f"r{i}", 0.9 if i % 2 else 0.1, i % 2, i % 2) for i in range(8)]
    assert "8 labelled (4 normal, 4 abnormal)" in predict.labelled_summary(few)
    assert "unreliable: the labelled set holds only 4 normal" in predict.labelled_summary(few)
    many = [predict.Prediction(f"r{i}", 0.9 if i % 2 else 0.1, i % 2, i % 2) for i in range(40)]
    assert "unreliable" not in predict.labelled_summary(many)
    assert predict.labelled_summary([predict.Prediction("x", 0.5, 1)]) == ""


def test_predict_uses_the_threshold_inside_the_model(pipeline_output, trained, tmp_path):
    """A version exported with the threshold at the median probability flips exactly the records below it;
    metrics.json's threshold is not what predict reads (an older version has its own)."""
    model_dir, metrics = trained
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    probabilities = sorted(p.probability for p in predict.predict(str(copy), pipeline_output.path, TRAIN_SPLIT))
    median = (probabilities[NUM_TRAIN // 2 - 1] + probabilities[NUM_TRAIN // 2]) / 2
    model = keras.saving.load_model(os.path.join(copy, layout.MODEL_FILE))
    tft_output = inputs.load_transform_output(pipeline_output.path)
    version, _ = export.export_serving_model(model, tft_output, median, str(copy))
    assert version == metrics["serving_version"] + 1
    (copy / layout.METRICS_FILE).write_text(json.dumps(dict(metrics, threshold=0.0)), encoding="utf-8")
    predictions = predict.predict(str(copy), pipeline_output.path, TRAIN_SPLIT)
    assert sum(p.predicted_label for p in predictions) == NUM_TRAIN // 2
    assert all(p.predicted_label == int(p.probability >= median) for p in predictions)
    # The earlier version, asked for by number, still applies its own threshold.
    earlier = predict.predict(str(copy), pipeline_output.path, TRAIN_SPLIT, model_version=metrics["serving_version"])
    assert all(p.predicted_label == int(p.probability >= metrics["threshold"]) for p in earlier)


def test_cli_fails_with_one_line_message(tmp_path, capsys):
    code = train_main(["--data_dir", str(tmp_path / "missing"), "--model_dir", str(tmp_path / "model")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing" in err
    code = predict.main(["--model_dir", str(tmp_path / "nomodel"), "--data_dir", str(tmp_path), "--split",
                         TEST_SPLIT, "--output", str(tmp_path / "p.csv")])
    assert code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
