"""Multi-label training on generated data: the stratified validation split, the per-class metrics,
and a run through the pipeline, the trainer, the serving signature and predict that reaches macro
AUC >= 0.9 on held-out records."""
import contextlib
import csv
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from beam_pipeline.cli.main_command import main as pipeline_main
from beam_pipeline.cli.reprocess_command import main as reprocess_main
from beam_pipeline.synthetic.generator import MULTILABEL_CODES, SINUS_CODE, generate_multilabel_dataset
from ecg_common.cli import EXIT_OK
from trainer import export, multilabel
from trainer.config import TrainConfig
from trainer.evaluation import roc_auc
from trainer.predict import main as predict_main
from trainer.report import main as report_main


def _labels(n: int, seed: int, prevalence=(0.5, 0.2, 0.05, 0.3)) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, len(prevalence))) < prevalence).astype(np.int64)


def test_stratified_split_keeps_every_class_on_both_sides_in_proportion():
    labels = _labels(400, 0)
    ids = [f"R{i}" for i in range(len(labels))]
    held_out = multilabel.stratified_validation_ids(ids, labels, 0.25)
    is_val = np.array([i in held_out for i in ids])
    assert abs(is_val.sum() - 100) <= 1
    for k in range(labels.shape[1]):
        positives = labels[:, k].sum()
        assert abs(labels[is_val, k].sum() - 0.25 * positives) <= 1.0, k  # within one record of the share
    order = np.random.default_rng(1).permutation(len(ids))  # file order does not matter
    assert multilabel.stratified_validation_ids([ids[i] for i in order], labels[order], 0.25) == held_out


def test_rare_class_is_in_validation_and_in_training():
    labels = np.zeros((50, 2), np.int64)
    labels[:2, 1] = 1  # two records of a rare class
    labels[2:30, 0] = 1
    ids = [f"R{i}" for i in range(50)]
    held_out = multilabel.stratified_validation_ids(ids, labels, 0.2)
    assert sum(ids[i] in held_out for i in range(2)) == 1


def test_per_class_metrics_thresholds_and_macro_figures():
    rng = np.random.default_rng(3)
    labels = _labels(300, 3, prevalence=(0.5, 0.3, 0.0))
    scores = np.clip(labels * 0.6 + rng.random(labels.shape) * 0.5, 0, 1)
    scores[:, 1] = rng.random(300)  # a class the scores know nothing about
    evaluated = multilabel.per_class_metrics(("A", "B", "C"), labels, scores, "youden")
    a, b = evaluated["per_class"]["A"], evaluated["per_class"]["B"]
    assert a["auc"] == pytest.approx(roc_auc(labels[:, 0], scores[:, 0])) and a["auc"] > 0.95
    assert 0.35 < b["auc"] < 0.65
    assert evaluated["per_class"]["C"]["auc"] is None and evaluated["classes_without_both_outcomes"] == ["C"]
    assert evaluated["macro_auc"] == pytest.approx((a["auc"] + b["auc"]) / 2)
    assert evaluated["macro_f1"] == pytest.approx((a["f1"] + b["f1"]) / 2)
    assert 0.5 < a["threshold"] < 0.7  # chosen in the gap between the two groups of scores


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("multilabel")
    gen = root / "gen"
    generate_multilabel_dataset(str(gen), 320, 120, seed=1)
    (gen / "all.txt").write_text((gen / "reference.txt").read_text() + (gen / "test_answers.txt").read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        code = pipeline_main(["--train_dir", str(gen / "TRAIN"), "--test_dir", str(gen / "TEST"), "--labels",
                              str(gen / "all.txt"), "--multi_label", "--output_dir", str(root / "out")])
    assert code == EXIT_OK
    metrics = multilabel.run(str(root / "out"), str(root / "model"), TrainConfig(epochs=40, patience=10))
    return root, metrics


def test_multi_label_run_reaches_macro_auc_0_9_on_held_out_records(trained):
    root, metrics = trained
    names = (root / "out" / "classes.txt").read_text().split()
    assert sorted(names) == sorted([*MULTILABEL_CODES.values(), SINUS_CODE])
    assert set(metrics["validation"]["per_class"]) == set(names)
    assert all({"auc", "f1", "threshold"} <= set(c) for c in metrics["validation"]["per_class"].values())
    assert json.loads((root / "model" / "metrics.json").read_text())["validation"]["macro_auc"] >= 0.9
    assert metrics["report"]["status"] == "written"  # the training report: per-class ROC and table
    page = (root / "model" / "report" / "index.html").read_text()
    assert (root / "model" / "report" / "roc_per_class.png").is_file() and all(n in page for n in names)
    with contextlib.redirect_stdout(io.StringIO()):
        assert predict_main(["--model_dir", str(root / "model"), "--data_dir", str(root / "out"), "--split", "test",
                             "--output", str(root / "predictions.csv")]) == EXIT_OK
    with open(root / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["record_id", *names, "labels"] and len(rows) == 120
    truth = {line.split("\t")[0]: line.split("\t")[1].strip().split(",")
             for line in (root / "gen" / "test_answers.txt").read_text().splitlines()}
    aucs = [roc_auc(np.array([n in truth[r["record_id"]] for r in rows]), np.array([float(r[n]) for r in rows]))
            for n in names]
    assert np.mean(aucs) >= 0.9, dict(zip(names, aucs))
    thresholds = metrics["thresholds"]
    for row in rows:  # `labels` is each class at its own threshold, joined by |
        assert row["labels"] == "|".join(n for n in names if float(row[n]) >= thresholds[n])


def test_serving_signature_returns_k_probabilities_and_the_class_names_are_beside_it(trained):
    root, metrics = trained
    version_dir = root / "model" / "serving" / str(metrics["serving_version"])
    names = (version_dir / "assets.extra" / "classes.txt").read_text().split()
    assert names == (root / "model" / "classes.txt").read_text().split() == metrics["classes"]
    gen = root / "gen" / "TEST"
    import scipy.io
    ecg = np.stack([scipy.io.loadmat(str(gen / f"TEST{i}.mat"))["data"] for i in (101, 102, 103)]).astype(np.float32)
    loaded = export.load_serving_model(str(version_dir))
    outputs = loaded.signatures[export.SERVING_SIGNATURE](ecg=tf.constant(ecg))
    probabilities = outputs[export.PROBABILITIES_KEY].numpy()
    assert probabilities.shape == (3, len(names)) and ((probabilities >= 0) & (probabilities <= 1)).all()
    expected = probabilities >= np.array([metrics["thresholds"][n] for n in names])
    np.testing.assert_array_equal(outputs[export.LABELS_OUTPUT_KEY].numpy(), expected.astype(np.int64))


def test_predict_records_scores_raw_files_as_the_pipeline_output_and_names_a_bad_one(trained, tmp_path):
    root, _ = trained
    (tmp_path / "BROKEN.mat").write_bytes(b"not a MATLAB file")
    with contextlib.redirect_stdout(io.StringIO()):
        assert predict_main(["--model_dir", str(root / "model"), "--records", str(root / "gen" / "TEST" / "TEST101.mat"),
                             str(root / "gen" / "TEST" / "TEST102.mat"), str(tmp_path / "BROKEN.mat"),
                             "--output", str(tmp_path / "records.csv")]) == EXIT_OK
        assert predict_main(["--model_dir", str(root / "model"), "--data_dir", str(root / "out"), "--split", "test",
                             "--output", str(tmp_path / "output.csv")]) == EXIT_OK
    with open(tmp_path / "records.csv", newline="") as handle:
        rows = {row["record_id"]: row for row in csv.DictReader(handle)}
    with open(tmp_path / "output.csv", newline="") as handle:
        from_output = {row["record_id"]: row for row in csv.DictReader(handle)}
    names = (root / "model" / "classes.txt").read_text().split()
    assert rows["BROKEN"]["error"] == "not_matlab" and rows["BROKEN"]["labels"] == ""
    for rid in ("TEST101", "TEST102"):
        assert rows[rid]["error"] == "" and rows[rid]["labels"] == from_output[rid]["labels"]
        np.testing.assert_allclose([float(rows[rid][n]) for n in names], [float(from_output[rid][n]) for n in names],
                                   atol=1e-5)


def test_report_redraws_from_the_model_directory(trained):
    root, _ = trained
    os.remove(root / "model" / "report" / "roc_per_class.png")
    with contextlib.redirect_stdout(io.StringIO()):
        assert report_main([str(root / "model")]) == EXIT_OK
    assert (root / "model" / "report" / "roc_per_class.png").is_file()


def test_extra_data_batches_join_the_training_set_newest_labels_first(trained, tmp_path):
    """A reprocessed multi-label batch re-delivering 20 training ids with other classes: those ids are
    taken from the batch, with the batch's labels, and keep their side of the split."""
    root, _ = trained
    out = str(root / "out")
    names = (root / "out" / "classes.txt").read_text().split()
    generate_multilabel_dataset(str(tmp_path / "gen"), 20, 0, seed=9)
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        assert reprocess_main(["--incoming", str(tmp_path / "gen" / "TRAIN"), "--transform_dir", out, "--output_root",
                               str(tmp_path / "root"), "--labels", str(tmp_path / "gen" / "reference.txt")]) == 0, (
            err.getvalue())
    before = multilabel.training_set(out, [], len(names), 0.2)
    chosen = multilabel.training_set(out, [str(tmp_path / "root")], len(names), 0.2)
    assert sorted(chosen.ids) == sorted(before.ids)  # the same 320 ids, 20 of them from the batch
    assert [s["used"] for s in chosen.per_source] == [300, 20] and chosen.per_source[0]["superseded"] == 20
    batch = {line.split("\t")[0]: line.split("\t")[1].strip().split(",")
             for line in (tmp_path / "gen" / "reference.txt").read_text().splitlines()}
    by_id, earlier = dict(zip(chosen.ids, chosen.labels.tolist())), dict(zip(before.ids, before.labels.tolist()))
    assert sum(by_id[rid] != earlier[rid] for rid in batch) >= 5  # the batch really relabels them
    for rid, codes in batch.items():
        assert by_id[rid] == [int(n in codes) for n in names]
    assert chosen.held_out == before.held_out  # a re-delivered record keeps its side
