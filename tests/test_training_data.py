"""Which examples a training run uses (main output plus batches, one example per record id, a split that
never moves a record) and the model directory's version layout, on small files built here (no Beam,
no training)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import trainer  # noqa: F401 - sets TF_USE_LEGACY_KERAS / KERAS_BACKEND before TensorFlow is imported
from ecg_common.layout import BATCH_SPLIT, SUCCESS_MARKER, SUMMARY_FILE
from ecg_common.rejections import ConfigurationError
from ecg_common.schema import ABNORMAL, LABEL_KEY, NORMAL, RECORD_ID_KEY, TRAIN_SPLIT, UNKNOWN_LABEL
from trainer import inputs, layout, predict, sources
from trainer.inputs import Record, Source

STATISTICS = {"leads": ["I"], "mean_mv": [0.1, -0.25], "std_mv": [0.3, 1.5]}


def _records(prefix: str, count: int, labelled: bool = True) -> list[Record]:
    return [Record(f"{prefix}{i:04d}", (i % 2) if labelled else UNKNOWN_LABEL) for i in range(count)]


def _sides(training_set: inputs.TrainingSet) -> dict[str, bool]:
    return {r.record_id: r.record_id in training_set.held_out for r in training_set.records}


# --- combining sources ------------------------------------------------------------------------------


def test_the_newest_labelled_occurrence_of_a_record_is_used():
    main = [Record("a", NORMAL), Record("b", ABNORMAL), Record("c", NORMAL)]
    first = [Record("b", NORMAL), Record("d", ABNORMAL), Record("e", UNKNOWN_LABEL)]
    second = [Record("a", UNKNOWN_LABEL), Record("d", NORMAL)]  # an unlabelled "a" does not replace the labelled one
    srcs = [Source("OUT", (), is_main=True), Source("b1", ()), Source("b2", ())]
    combined = inputs.combine(srcs, [main, first, second], 0.2)
    assert sorted(combined.records, key=lambda r: r.record_id) == [
        Record("a", NORMAL), Record("b", NORMAL), Record("c", NORMAL), Record("d", NORMAL)]
    assert combined.exclude == {(0, "b"), (1, "d"), (2, "a")}
    assert [(c["used"], c["superseded"], c["unlabelled"]) for c in combined.per_source] == [(2, 1, 0), (1, 1, 1),
                                                                                          (1, 0, 1)]


def test_no_record_moves_between_training_and_validation_as_batches_arrive():
    main = _records("m", 200)
    night1 = _records("n", 120)
    night2 = _records("p", 120) + [Record(r.record_id, 1 - r.label) for r in main[:15] + night1[:10]]  # re-delivered
    srcs = [Source("OUT", (), is_main=True), Source("b1", ()), Source("b2", ())]
    before = _sides(inputs.combine(srcs[:1], [main], 0.2))
    one = _sides(inputs.combine(srcs[:2], [main, night1], 0.2))
    two = _sides(inputs.combine(srcs, [main, night1, night2], 0.2))
    assert {rid: side for rid, side in one.items() if rid in before} == before
    assert {rid: side for rid, side in two.items() if rid in one} == one
    # The main output's split is exactly the one without batches (stratified); batch records go by id.
    assert {rid for rid, held in before.items() if held} == inputs.validation_ids(main, 0.2)
    assert all(held == inputs.held_out_by_id(rid, 0.2) for rid, held in two.items() if rid[0] in "np")


def test_held_out_by_id_holds_out_the_fraction_and_depends_on_the_id_alone():
    ids = [f"r{i}" for i in range(20000)]
    share = np.mean([inputs.held_out_by_id(rid, 0.2) for rid in ids])
    assert 0.19 < share < 0.21
    assert inputs.held_out_by_id("r1", 0.2) == inputs.held_out_by_id("r1", 0.2)
    assert not any(inputs.held_out_by_id(rid, 1e-9) for rid in ids[:100])


# --- reading each record once -------------------------------------------------------------------------


def _write_shard(path: str, records: list[Record]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for record in records:
            record_id = tf.train.BytesList(value=[record.record_id.encode()])
            feature = {RECORD_ID_KEY: tf.train.Feature(bytes_list=record_id)}
            if record.label != UNKNOWN_LABEL:
                feature[LABEL_KEY] = tf.train.Feature(int64_list=tf.train.Int64List(value=[record.label]))
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def test_read_examples_leaves_out_superseded_occurrences(tmp_path):
    main = [Record(f"m{i}", i % 2) for i in range(6)]
    batch = [Record("m1", NORMAL), Record("m4", ABNORMAL), Record("x0", NORMAL), Record("x1", UNKNOWN_LABEL)]
    files = [str(tmp_path / "out" / TRAIN_SPLIT / f"part-{k}.tfrecord.gz") for k in (0, 1)]
    files.append(str(tmp_path / "b" / BATCH_SPLIT / "part-0.tfrecord.gz"))
    _write_shard(files[0], main[:3])
    _write_shard(files[1], main[3:])
    _write_shard(files[2], batch)
    srcs = [Source("out", tuple(files[:2]), is_main=True), Source("b", tuple(files[2:]))]
    combined = inputs.combine(srcs, [inputs.scan_records(list(s.files)) for s in srcs], 0.2)
    examples = inputs.read_examples(files, file_sources=[0, 0, 1], exclude=combined.exclude, cache=True)
    spec = {RECORD_ID_KEY: tf.io.FixedLenFeature([], tf.string),
            LABEL_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=UNKNOWN_LABEL)}
    read = {}
    for serialized in examples:
        parsed = tf.io.parse_single_example(serialized, spec)
        record_id = parsed[RECORD_ID_KEY].numpy().decode()
        assert record_id not in read, f"{record_id} read twice"
        read[record_id] = int(parsed[LABEL_KEY])
    assert {rid: label for rid, label in read.items() if label != UNKNOWN_LABEL} == {
        r.record_id: r.label for r in combined.records}
    assert read["m1"] == NORMAL and read["m4"] == ABNORMAL  # the batch's versions
    # Through input_fn, with the ids of the whole set, the cardinality Keras is told holds.
    ids = {r.record_id for r in combined.records}
    parsed = list(inputs.input_fn(examples, spec, 4, record_ids=ids))
    assert sorted(rid.decode() for b in parsed for rid in b[RECORD_ID_KEY].numpy()) == sorted(ids)


def test_the_exclusion_filter_is_stateless():
    """Like the record-id filter: a stateful op would serialize the input pipeline under op determinism."""
    excluded = inputs._excluded_occurrences({(1, "a")})  # noqa: SLF001
    graph = tf.function(excluded).get_concrete_function(tf.TensorSpec([], tf.string),
                                                        tf.TensorSpec([], tf.int64)).graph
    assert not [op.type for op in graph.get_operations() if op._is_stateful]  # noqa: SLF001


# --- checking batches -------------------------------------------------------------------------------


def _folder(path, statistics: dict | None = STATISTICS, published: bool = True, shards: bool = True,
            transform_dir: str = "BASE") -> str:
    os.makedirs(path, exist_ok=True)
    if statistics is not None:
        (path / SUMMARY_FILE).write_text(json.dumps({"lead_statistics": statistics, "transform_dir": transform_dir}))
    if published:
        (path / SUCCESS_MARKER).write_text("")
    if shards:
        _write_shard(str(path / BATCH_SPLIT / "part-00000-of-00001.tfrecord.gz"), [Record("z", NORMAL)])
    return str(path)


def test_only_published_batches_with_the_main_outputs_statistics_are_taken(tmp_path, caplog):
    out = _folder(tmp_path / "out")
    root = tmp_path / "root"
    good = _folder(root / "batch-20260102T000000.000Z")
    other = dict(STATISTICS, mean_mv=[0.1, np.nextafter(-0.25, 0.0)])  # one lead, one ulp away
    _folder(root / "batch-20260101T000000.000Z", statistics=other, transform_dir="/data/other-out")
    _folder(root / "batch-20260103T000000.000Z", published=False)
    _folder(root / "batch-20260104T000000.000Z", statistics=None)
    _folder(root / "batch-20260105T000000.000Z", shards=False)
    (root / "ledger.jsonl").write_text("")
    _folder(root / "not-a-batch")
    accepted, refused = sources.extra_sources([str(root)], out)
    assert [s.path for s in accepted] == [good] and not accepted[0].is_main
    reasons = {os.path.basename(r.path): r.reason for r in refused}
    assert list(reasons) == [f"batch-2026010{d}T000000.000Z" for d in (1, 3, 4, 5)]  # in the order they were made
    assert "another transform" in reasons["batch-20260101T000000.000Z"]
    assert "/data/other-out" in reasons["batch-20260101T000000.000Z"]
    assert SUCCESS_MARKER in reasons["batch-20260103T000000.000Z"]
    assert "lead_statistics" in reasons["batch-20260104T000000.000Z"]
    assert "no TFRecord shards" in reasons["batch-20260105T000000.000Z"]
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelname == "WARNING"]
    assert len(warnings) == 4 and all("\n" not in w and "not used" in w for w in warnings)


def test_extra_data_needs_a_folder_and_a_main_output_with_statistics(tmp_path):
    out = _folder(tmp_path / "out")
    with pytest.raises(ConfigurationError, match="not a folder"):
        sources.extra_sources([str(tmp_path / "missing")], out)
    with pytest.raises(ConfigurationError, match="run_summary.json"):
        sources.extra_sources([str(tmp_path)], _folder(tmp_path / "bare", statistics=None))
    assert sources.extra_sources([], str(tmp_path / "bare")) == ([], [])


def test_same_transform_means_the_same_numbers_exactly():
    assert sources.same_transform(dict(STATISTICS), STATISTICS)
    assert not sources.same_transform(dict(STATISTICS, std_mv=[0.3, 1.5000000000000002]), STATISTICS)
    assert not sources.same_transform(None, STATISTICS) and not sources.same_transform(STATISTICS, None)
    assert not sources.same_transform({}, {})


# --- the version layout -----------------------------------------------------------------------------


def _fake_export(folder) -> None:
    os.makedirs(folder / "variables", exist_ok=True)
    (folder / layout.SAVED_MODEL_FILE).write_bytes(b"not really a SavedModel")


def test_versions_count_only_complete_integer_folders_and_never_reuse_a_number(tmp_path):
    model = tmp_path / "model"
    serving = model / layout.SERVING_DIR
    assert layout.export_versions(str(model)) == [] and layout.next_version(str(model)) == 1
    for name in ("1", "3", "10"):
        _fake_export(serving / name)
    os.makedirs(serving / "11")           # a folder without a SavedModel is no version, but its number is taken
    os.makedirs(serving / ".export-abc")  # staging
    os.makedirs(serving / "notes")
    assert layout.export_versions(str(model)) == [1, 3, 10]
    assert layout.next_version(str(model)) == 12
    assert layout.resolve_export(str(model)) == str(serving / "10")
    assert layout.resolve_export(str(model), 3) == str(serving / "3")
    with pytest.raises(ConfigurationError, match="no version 2 .*versions: 1, 3, 10"):
        layout.resolve_export(str(model), 2)


def test_an_unversioned_export_of_an_older_trainer_becomes_version_0(tmp_path, capsys):
    model = tmp_path / "model"
    serving = model / layout.SERVING_DIR
    _fake_export(serving)
    (serving / "fingerprint.pb").write_bytes(b"x")
    with pytest.raises(ConfigurationError, match="older trainer"):
        layout.resolve_export(str(model))
    assert layout.adopt_unversioned_export(str(model)) == str(serving / "0")
    assert sorted(os.listdir(serving)) == ["0"]
    assert sorted(os.listdir(serving / "0")) == ["fingerprint.pb", layout.SAVED_MODEL_FILE, "variables"]
    assert layout.adopt_unversioned_export(str(model)) is None
    # predict refuses it with one line: it has neither the schema nor the threshold inside.
    _write_shard(str(tmp_path / "data" / "test" / "part-0.tfrecord.gz"), [Record("z", NORMAL)])
    code = predict.main(["--model_dir", str(model), "--data_dir", str(tmp_path / "data"), "--split", "test",
                         "--output", str(tmp_path / "p.csv"), "--model_version", "0"])
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "older trainer" in line
