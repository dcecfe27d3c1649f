"""`python -m trainer.predict --records`: raw recordings scored through the pipeline's own decoder.

One small model is trained on the real PhysioNet/CinC 2021 records (TEST: the CPSC 2018 struct files)
through the real command lines, with `--pad_short`; the tests then score the same raw files and
altered copies of them, and compare with the pipeline + predict path.
"""
from __future__ import annotations

import csv
import json
import re
import shutil

import numpy as np
import pytest
import scipy.io
import tensorflow as tf

import trainer  # noqa: F401 - sets TF_USE_LEGACY_KERAS / KERAS_BACKEND before TensorFlow is imported
from beam_pipeline.cli import main_command as pipeline_cli
from ecg_common.schema import DEFAULT_GEOMETRY, ECG_KEY, ECG_SHAPE, TEST_SPLIT, TRAIN_SPLIT
from trainer import export, layout, predict
from trainer.__main__ import main as train_main

QUICK = ["--epochs", "3", "--batch_size", "8", "--filters", "8,16,16,32", "--seed", "3"]
RECORD = "E07500"
"""A cinc2021 record whose doubled int16 values still fit int16 (peak 2254 ADC units)."""


def _rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _probabilities(path) -> dict[str, float]:
    return {row["record_id"]: float(row["probability"]) for row in _rows(path)}


@pytest.fixture(scope="module")
def trained(real_ecg_dir, tmp_path_factory):
    """(real data dir, pipeline output, model dir, pipeline-path probabilities of TRAIN and TEST)."""
    root = tmp_path_factory.mktemp("records")
    cinc, out, model = real_ecg_dir / "cinc2021", root / "out", root / "model"
    assert pipeline_cli.main(["--train_dir", str(cinc), "--labels", str(cinc / "labels.txt"),
                              "--test_dir", str(real_ecg_dir / "cpsc2018"), "--output_dir", str(out),
                              "--pad_short"]) == 0
    assert train_main(["--data_dir", str(out), "--model_dir", str(model), *QUICK]) == 0
    expected = {}
    for split in (TRAIN_SPLIT, TEST_SPLIT):
        csv_path = root / f"{split}.csv"
        assert predict.main(["--model_dir", str(model), "--data_dir", str(out), "--split", split,
                             "--output", str(csv_path)]) == 0
        expected.update(_probabilities(csv_path))
    return real_ecg_dir, out, model, expected


def _predict_records(model, paths, output) -> list[dict]:
    assert predict.main(["--model_dir", str(model), "--records", *map(str, paths), "--output", str(output)]) == 0
    with open(output, encoding="utf-8") as handle:
        assert handle.readline().strip() == "record_id,probability,predicted_label,true_label,error"
    return _rows(output)


def _copy_with_gain(source_dir, target_dir, record: str, factor: int) -> None:
    """`record` with its int16 values multiplied by `factor` and its `.hea` gains too: the same mV."""
    val = scipy.io.loadmat(source_dir / f"{record}.mat")["val"]
    scaled = val.astype(np.int32) * factor
    assert np.abs(scaled).max() < np.iinfo(np.int16).max
    scipy.io.savemat(target_dir / f"{record}.mat", {"val": scaled.astype(np.int16)}, format="4")
    header = (source_dir / f"{record}.hea").read_text()
    # `16x1+24 1000.0(0)/mV`: the gain before the baseline and the unit. (The first-sample and checksum
    # fields are left as they were: the decoder does not check them.)
    changed, count = re.subn(r"(\s)(\d+(?:\.\d+)?)(\(-?\d+\))?/mV",
                             lambda m: f"{m[1]}{float(m[2]) * factor:g}{m[3] or ''}/mV", header)
    assert count == 12
    (target_dir / f"{record}.hea").write_text(changed)


def test_raw_records_equal_the_pipeline_path(trained, tmp_path):
    """Every cinc2021 (.mat + .hea, int16 with gain) and cpsc2018 (struct, longer than 10 s) record,
    scored from its raw file, gets the probability of the pipeline + predict path."""
    real, _, model, expected = trained
    rows = _predict_records(model, [real / "cinc2021", real / "cpsc2018"], tmp_path / "raw.csv")
    assert [r["error"] for r in rows] == [""] * 60
    got = {r["record_id"]: float(r["probability"]) for r in rows}
    assert sorted(got) == sorted(expected) and len(got) == 60
    ids = sorted(got)
    np.testing.assert_allclose([got[i] for i in ids], [expected[i] for i in ids], rtol=0, atol=1e-5)
    assert np.ptp(list(got.values())) > 1e-3  # a constant model would make the comparison trivial
    threshold = export.load_serving_model(layout.resolve_export(str(model))).threshold.numpy()
    assert all(int(r["predicted_label"]) == int(float(r["probability"]) >= threshold) for r in rows)


def test_a_header_with_gain_2000_scores_as_the_original(trained, tmp_path):
    """Doubled ADC values with a doubled gain are the same millivolts, so the same probability (a
    decoder that ignored the header would assume gain 1000 and score a signal twice as large)."""
    real, _, model, expected = trained
    copy = tmp_path / "gain2000"
    copy.mkdir()
    _copy_with_gain(real / "cinc2021", copy, RECORD, 2)
    [row] = _predict_records(model, [copy / f"{RECORD}.mat"], tmp_path / "gain.csv")
    assert row["error"] == "" and float(row["probability"]) == pytest.approx(expected[RECORD], abs=1e-5)


def test_a_hea_named_alone_stands_for_its_record(trained, tmp_path):
    real, _, model, expected = trained
    [row] = _predict_records(model, [real / "cinc2021" / f"{RECORD}.hea"], tmp_path / "hea.csv")
    assert row["record_id"] == RECORD and float(row["probability"]) == pytest.approx(expected[RECORD], abs=1e-5)


def test_amplitudes_that_are_not_millivolts_are_refused(trained, tmp_path):
    """A file of ADC counts stored as floats (no gain to apply) is refused by the decoder; a lead std
    above 50 within the decoder's 100 mV bound is refused by predict's own check; the exported
    serving_default refuses ADC counts fed to it directly; millivolts pass all of them."""
    real, _, model, _ = trained
    counts = scipy.io.loadmat(real / "cinc2021" / f"{RECORD}.mat")["val"].T.astype(np.float32)
    scipy.io.savemat(tmp_path / "counts.mat", {"data": counts})
    loud = np.where(np.arange(ECG_SHAPE[0])[:, None] % 2 == 0, 80.0, -80.0) * np.ones(ECG_SHAPE)
    scipy.io.savemat(tmp_path / "loud.mat", {"data": loud.astype(np.float32)})
    rows = _predict_records(model, [tmp_path / "counts.mat", tmp_path / "loud.mat"], tmp_path / "loud.csv")
    assert [(r["record_id"], r["error"], r["probability"], r["predicted_label"]) for r in rows] == [
        ("counts", "implausible_amplitude", "", ""), ("loud", "implausible_amplitude", "", "")]

    loaded = export.load_serving_model(layout.resolve_export(str(model)))
    serve = loaded.signatures[export.SERVING_SIGNATURE]
    rng = np.random.default_rng(0)
    millivolts = (rng.standard_normal((2, *ECG_SHAPE)) * 0.3).astype(np.float32)
    assert serve(**{ECG_KEY: tf.constant(millivolts)})[export.PROBABILITY_KEY].shape == (2,)
    adc_counts = millivolts * 1000  # gain 1000 ADC units per mV, not applied
    with pytest.raises(tf.errors.InvalidArgumentError, match="not millivolts"):
        serve(**{ECG_KEY: tf.constant(adc_counts)})
    assert export.lead_amplitude_problem(adc_counts[0]) is not None
    assert export.lead_amplitude_problem(millivolts[0]) is None


def test_the_serving_signature_refuses_a_wrong_shape_or_dtype(trained):
    _, _, model, _ = trained
    serve = export.load_serving_model(layout.resolve_export(str(model))).signatures[export.SERVING_SIGNATURE]
    with pytest.raises(tf.errors.InvalidArgumentError, match="samples x leads"):
        serve(**{ECG_KEY: tf.zeros((1, ECG_SHAPE[1], ECG_SHAPE[0]), tf.float32)})  # leads x samples
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a float tensor"):
        serve(**{ECG_KEY: tf.zeros((1, *ECG_SHAPE), tf.float64)})


def test_files_that_do_not_decode_are_rows_with_their_reason(trained, tmp_path):
    """Garbage, a file that is no recording and a lone header (a WFDB record, here with no signal
    lines): each a row with its reason, exit 0."""
    real, _, model, expected = trained
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "garbage.mat").write_bytes(b"not a MATLAB file at all" * 10)
    shutil.copy(real / "cinc2021" / f"{RECORD}.mat", folder)
    shutil.copy(real / "cinc2021" / f"{RECORD}.hea", folder)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "lonely.hea").write_text("lonely 12 500 5000\n")
    rows = _predict_records(model, [folder, tmp_path / "notes.txt", tmp_path / "lonely.hea"], tmp_path / "p.csv")
    assert {r["record_id"]: r["error"] for r in rows} == {
        "garbage": "not_matlab", RECORD: "", "notes": "not_matlab", "lonely": "bad_header"}
    scored = next(r for r in rows if r["record_id"] == RECORD)
    assert float(scored["probability"]) == pytest.approx(expected[RECORD], abs=1e-5)
    back = {p.record_id: p for p in predict.read_csv(str(tmp_path / "p.csv"))}
    assert back["garbage"].error == "not_matlab" and np.isnan(back["garbage"].probability)


def test_decoding_options_are_those_of_the_training_run(trained, tmp_path):
    """The pipeline ran with --pad_short: the model records it, and a 9 s record is scored (padded);
    with the record saying no padding, the same file is `too_short`."""
    real, out, model, _ = trained
    with open(out / "run_summary.json", encoding="utf-8") as handle:
        decoding = json.load(handle)["decoding"]
        assert decoding == {"default_sampling_rate_hz": 500, "pad_short": True, "window_stride_s": None,
                            "geometry": DEFAULT_GEOMETRY.to_json()}
    with open(model / layout.DECODING_FILE, encoding="utf-8") as handle:
        assert json.load(handle) == {"default_sampling_rate_hz": 500, "pad_short": True, "recorded": True,
                                     "geometry": DEFAULT_GEOMETRY.to_json(), "window_stride_s": None}
    short = tmp_path / "short"
    short.mkdir()
    val = scipy.io.loadmat(real / "cinc2021" / f"{RECORD}.mat")["val"][:, :4500]
    scipy.io.savemat(short / f"{RECORD}.mat", {"val": val}, format="4")
    header = (real / "cinc2021" / f"{RECORD}.hea").read_text().splitlines()
    header[0] = header[0].replace(" 5000", " 4500")
    (short / f"{RECORD}.hea").write_text("\n".join(header) + "\n")
    [row] = _predict_records(model, [short], tmp_path / "padded.csv")
    assert row["error"] == "" and 0.0 <= float(row["probability"]) <= 1.0

    unpadded = tmp_path / "model_without_padding"
    shutil.copytree(model, unpadded)
    (unpadded / layout.DECODING_FILE).write_text(json.dumps({"default_sampling_rate_hz": 500, "pad_short": False}))
    [row] = _predict_records(unpadded, [short], tmp_path / "unpadded.csv")
    assert row["error"] == "too_short"


def test_records_and_a_split_do_not_mix(trained, tmp_path):
    real, out, model, _ = trained
    with pytest.raises(SystemExit) as exited:
        predict.main(["--model_dir", str(model), "--records", str(real / "cpsc2018"), "--split", TEST_SPLIT,
                      "--output", str(tmp_path / "x.csv")])
    assert exited.value.code == 2
    with pytest.raises(SystemExit) as exited:
        predict.main(["--model_dir", str(model), "--records", str(real / "cpsc2018"), "--data_dir", str(out),
                      "--output", str(tmp_path / "x.csv")])
    assert exited.value.code == 2
    assert predict.main(["--model_dir", str(model), "--records", str(tmp_path / "missing"),
                         "--output", str(tmp_path / "x.csv")]) == 2


def _as_wfdb(source_dir, target_dir, record: str, prefix: str = "W") -> str:
    """`record` (a CinC `.mat` + `.hea`) stored the WFDB way under the id `prefix + record`: the same
    int16 samples interleaved in `ID.dat` (format 16), the header naming it, no `.mat`. Returns the id."""
    new_id = prefix + record
    val = scipy.io.loadmat(source_dir / f"{record}.mat")["val"]
    (target_dir / f"{new_id}.dat").write_bytes(val.T.astype("<i2").tobytes())
    header = (source_dir / f"{record}.hea").read_text()
    header, count = re.subn(rf"^{record}\.mat 16x1\+24 ", f"{new_id}.dat 16 ", header, flags=re.MULTILINE)
    assert count == 12
    (target_dir / f"{new_id}.hea").write_text(re.sub(rf"^{record} ", f"{new_id} ", header))
    return new_id


def test_wfdb_records_equal_the_pipeline_path_on_the_same_records(trained, tmp_path):
    """The cinc2021 records stored as WFDB `.hea` + `.dat`: scored from the raw files (a folder, a `.hea`
    and a `.dat` named alone), each gets the probability the pipeline + predict path gives the same
    WFDB files, and that of the `.mat` they were made from (same samples, same gains)."""
    real, _, model, expected = trained
    wfdb_dir = tmp_path / "wfdb"
    wfdb_dir.mkdir()
    ids = {_as_wfdb(real / "cinc2021", wfdb_dir, p.stem): p.stem for p in sorted((real / "cinc2021").glob("*.mat"))}
    out = tmp_path / "out"
    cinc = real / "cinc2021"
    assert pipeline_cli.main(["--train_dir", str(cinc), "--labels", str(cinc / "labels.txt"), "--test_dir",
                              str(wfdb_dir), "--output_dir", str(out), "--pad_short"]) == 0
    assert predict.main(["--model_dir", str(model), "--data_dir", str(out), "--split", TEST_SPLIT,
                         "--output", str(tmp_path / "pipeline.csv")]) == 0
    pipeline = _probabilities(tmp_path / "pipeline.csv")
    assert sorted(pipeline) == sorted(ids)

    rows = _predict_records(model, [wfdb_dir], tmp_path / "raw.csv")
    assert [r["error"] for r in rows] == [""] * len(ids)
    got = {r["record_id"]: float(r["probability"]) for r in rows}
    assert sorted(got) == sorted(ids)
    order = sorted(ids)
    np.testing.assert_allclose([got[i] for i in order], [pipeline[i] for i in order], rtol=0, atol=1e-5)
    np.testing.assert_allclose([got[i] for i in order], [expected[ids[i]] for i in order], rtol=0, atol=1e-5)
    assert np.ptp(list(got.values())) > 1e-3

    one = "W" + RECORD
    rows = _predict_records(model, [wfdb_dir / f"{one}.hea"], tmp_path / "hea.csv")
    assert [(r["record_id"], r["error"]) for r in rows] == [(one, "")]
    assert float(rows[0]["probability"]) == pytest.approx(pipeline[one], abs=1e-5)
    rows = _predict_records(model, [wfdb_dir / f"{one}.dat", wfdb_dir / f"{one}.hea"], tmp_path / "dat.csv")
    assert [(r["record_id"], r["error"]) for r in rows] == [(one, "")], "the .dat stands for its .hea: one row"
    assert float(rows[0]["probability"]) == pytest.approx(pipeline[one], abs=1e-5)


def test_a_dat_without_its_wfdb_header_is_a_row_with_its_reason(trained, tmp_path):
    real, _, model, _ = trained
    (tmp_path / "orphan.dat").write_bytes(b"\0" * 120000)
    shutil.copy(real / "cinc2021" / f"{RECORD}.mat", tmp_path)
    shutil.copy(real / "cinc2021" / f"{RECORD}.hea", tmp_path)
    (tmp_path / f"{RECORD}.dat").write_bytes(b"\0" * 120000)  # beside a .mat record's sidecar header
    rows = _predict_records(model, [tmp_path / "orphan.dat", tmp_path / f"{RECORD}.dat"], tmp_path / "p.csv")
    assert sorted((r["record_id"], r["error"], r["probability"]) for r in rows) == [
        (RECORD, "not_matlab", ""), ("orphan", "not_matlab", "")]
