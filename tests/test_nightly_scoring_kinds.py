"""Nightly scoring (`reprocess --model_dir`) of the two kinds of data and model beside the binary
whole-record night of tests/test_nightly.py: a windowed base run (`--window_stride_s`), whose batch's
`predictions.csv` has one row per record, the mean over its windows, and a multi-label model, whose
batch's `predictions.csv` has a probability column per class and `labels`. Each is byte for byte what
`trainer.predict --data_dir ROOT/batch-X --split data` writes for the batch."""
from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
from pathlib import Path

import numpy as np
import pytest
from batch_data import LEAD_MEAN, LEAD_STD, save_record

import trainer  # noqa: F401 - sets TF_USE_LEGACY_KERAS / KERAS_BACKEND before TensorFlow is imported
from beam_pipeline.cli.main_command import main as pipeline_main
from beam_pipeline.cli.reprocess_command import main as reprocess_main
from beam_pipeline.synthetic.generator import generate_multilabel_dataset
from ecg_common.cli import EXIT_OK
from ecg_common.layout import BATCH_SPLIT, SUMMARY_FILE
from ecg_common.predictions import PREDICTIONS_FILE
from trainer.__main__ import main as train_main
from trainer.predict import main as predict_main

QUICK = ["--epochs", "2", "--batch_size", "8", "--filters", "8,16", "--seed", "3"]
RECORD_S, STRIDE_S, WINDOWS = 25, 5, 4
"""25 s records cut into the default 10 s windows every 5 s: windows at 0, 5, 10 and 15 s."""


def _quiet(command, argv: list[str]) -> int:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = command(argv)
    assert code == EXIT_OK, err.getvalue()
    return code


def _long_records(folder: Path, rng: np.random.Generator, prefix: str, count: int) -> str:
    """`count` 25 s recordings (500 Hz, 12 leads, mV) in `folder`; their labels file's text (0/1 alternating)."""
    for k in range(count):
        signal = rng.normal(size=(RECORD_S * 500, 12)) * LEAD_STD + LEAD_MEAN + 0.3 * (k % 2)
        save_record(folder, f"{prefix}{k:03d}", signal.astype(np.float32))
    return "".join(f"{prefix}{k:03d}\t{k % 2}\n" for k in range(count))


def _night(work: Path, out: Path, model: Path, incoming: Path, labels: Path, *extra: str) -> Path:
    """One nightly run scoring `incoming` with `model`: its published batch folder."""
    root = work / "root"
    _quiet(reprocess_main, ["--incoming", str(incoming), "--transform_dir", str(out), "--output_root", str(root),
                            "--labels", str(labels), "--model_dir", str(model), *extra])
    (batch,) = glob.glob(str(root / "batch-*"))
    return Path(batch)


def _predict(model: Path, batch: Path, output: Path, *extra: str) -> bytes:
    _quiet(predict_main, ["--model_dir", str(model), "--data_dir", str(batch), "--split", BATCH_SPLIT,
                          "--output", str(output), *extra])
    return output.read_bytes()


def _rows(text: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text.decode("utf-8"), newline="")))


@pytest.fixture(scope="module")
def windowed(tmp_path_factory):
    work = tmp_path_factory.mktemp("nightly_windows")
    rng = np.random.default_rng(5)
    (work / "labels.txt").write_text(_long_records(work / "TRAIN", rng, "T", 16))
    out, model = work / "out", work / "model"
    _quiet(pipeline_main, ["--train_dir", str(work / "TRAIN"), "--labels", str(work / "labels.txt"),
                           "--output_dir", str(out), "--window_stride_s", str(STRIDE_S)])
    _quiet(train_main, ["--data_dir", str(out), "--model_dir", str(model), *QUICK])
    new_labels = _long_records(work / "incoming", rng, "N", 5).splitlines(keepends=True)
    (work / "new.txt").write_text("".join(new_labels[:2]))  # two labelled, three unlabelled
    batch = _night(work, out, model, work / "incoming", work / "new.txt", "--window_stride_s", str(STRIDE_S))
    return work, model, batch


def test_a_windowed_batch_gets_predicts_row_per_record_byte_for_byte(windowed):
    work, model, batch = windowed
    expected = _predict(model, batch, work / "predict.csv")
    assert (batch / PREDICTIONS_FILE).read_bytes() == expected
    rows = _rows(expected)
    assert [row["record_id"] for row in rows] == [f"N{k:03d}" for k in range(5)]  # one row per record, sorted
    assert [row["true_label"] for row in rows] == ["0", "1", "", "", ""]
    assert json.loads((batch / SUMMARY_FILE).read_text())["model"]["records_scored"] == 5


def test_a_windowed_batch_row_is_the_mean_of_its_windows(windowed):
    work, model, batch = windowed
    windows = _rows(_predict(model, batch, work / "windows.csv", "--per_window"))
    assert len(windows) == 5 * WINDOWS
    by_record: dict[str, list[float]] = {}
    for row in windows:
        by_record.setdefault(row["record_id"], []).append(float(row["probability"]))
    for row in _rows((batch / PREDICTIONS_FILE).read_bytes()):
        mean = np.mean(by_record[row["record_id"]])
        assert float(row["probability"]) == pytest.approx(mean, rel=1e-12)
        assert len(set(by_record[row["record_id"]])) > 1  # really several different windows averaged


@pytest.fixture(scope="module")
def multi_label(tmp_path_factory):
    work = tmp_path_factory.mktemp("nightly_multilabel")
    generate_multilabel_dataset(str(work / "gen"), 60, 0, seed=1)
    out, model = work / "out", work / "model"
    _quiet(pipeline_main, ["--train_dir", str(work / "gen" / "TRAIN"), "--labels", str(work / "gen" / "reference.txt"),
                           "--multi_label", "--output_dir", str(out)])
    _quiet(train_main, ["--data_dir", str(out), "--model_dir", str(model), *QUICK])
    generate_multilabel_dataset(str(work / "new"), 6, 0, seed=9)
    batch = _night(work, out, model, work / "new" / "TRAIN", work / "new" / "reference.txt")
    return work, out, model, batch


def test_a_multi_label_model_scores_the_batch_as_predict_does_byte_for_byte(multi_label):
    work, out, model, batch = multi_label
    expected = _predict(model, batch, work / "predict.csv")
    assert (batch / PREDICTIONS_FILE).read_bytes() == expected
    names = (out / "classes.txt").read_text().split()
    rows = _rows(expected)
    assert list(rows[0]) == ["record_id", *names, "labels"] and len(rows) == 6
    ids = sorted(line.split("\t")[0] for line in (work / "new" / "reference.txt").read_text().splitlines())
    assert [row["record_id"] for row in rows] == ids
    for row in rows:
        assert all(0.0 <= float(row[name]) <= 1.0 for name in names)
        assert set(filter(None, row["labels"].split("|"))) <= set(names)
    assert json.loads((batch / SUMMARY_FILE).read_text())["model"]["records_scored"] == 6
