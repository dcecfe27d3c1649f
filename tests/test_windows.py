"""Windows (`--window_s`, `--window_stride_s`): one file -> N examples with exact sample boundaries,
through the decoder child (results beyond one slot included) and the whole pipeline on the shared
real records, with a lead subset; age and sex ride along; reprocessing refuses other geometry."""
from __future__ import annotations

import contextlib
import glob
import io
import json
from pathlib import Path

import hostile_files as hf
import numpy as np
import pytest
import scipy.io
import tensorflow as tf
import tensorflow_transform as tft
from real_recordings import real_ecg_path

from beam_pipeline.cli.main_command import main
from beam_pipeline.cli.reprocess_command import main as reprocess_main
from beam_pipeline.graph.arrow_batches import DecodedRecord, DecodedRecordCoder
from beam_pipeline.graph.read import DecodeRecordFn
from beam_pipeline.inputs.discovery import RecordSource
from ecg_common.cli import EXIT_CONFIG, EXIT_OK
from ecg_common.schema import (AGE_KEY, ECG_KEY, RECORD_ID_KEY, SEX_KEY, WINDOW_INDEX_KEY, WINDOW_START_KEY,
                               Geometry)
from ecg_decode.decoding.decode import decode_record
from ecg_decode.decoding.windows import cut_windows, stride_problem
from ecg_decode.sandbox.protocol import RESULT_BYTES, DecodeLimits

REAL = real_ecg_path()
EIGHT_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


def _record(seconds: float, seed: int = 1) -> np.ndarray:
    return hf.signal(seed, (int(seconds * 500), 12)).astype(np.float32)


@pytest.mark.parametrize("stride_s, starts", [(10, [0, 10, 20]), (5, [0, 5, 10, 15, 20, 25]), (None, [0])])
def test_a_35_s_record_gives_its_windows_with_exact_sample_boundaries(stride_s, starts):
    signal = _record(35)
    whole = decode_record(hf.savemat_bytes({"data": signal}), whole_record=stride_s is not None)
    assert whole.shape == ((17_500 if stride_s else 5000), 12)
    windows = cut_windows(whole, Geometry(), stride_s)
    assert [w.start_s for w in windows] == starts and [w.index for w in windows] == list(range(len(starts)))
    for window in windows:
        first = int(window.start_s * 500)
        np.testing.assert_array_equal(window.ecg, signal[first:first + 5000])


def test_short_records_and_impossible_strides():
    signal = _record(7)
    assert cut_windows(decode_record(hf.savemat_bytes({"data": signal}), pad_short=True, whole_record=True),
                       Geometry(), 5)[0].ecg.shape == (5000, 12)
    assert decode_record(hf.savemat_bytes({"data": signal}), whole_record=True).reason == "too_short"
    assert "whole number" in stride_problem(Geometry(), 0.0001)
    assert stride_problem(Geometry(), 2.5) is None


def _decode_fn_outputs(source: RecordSource, stride_s: float | None, geometry: Geometry = Geometry()):
    fn = DecodeRecordFn(500.0, False, DecodeLimits(), geometry=geometry, window_stride_s=stride_s)
    fn.setup()
    fn.start_bundle()
    outputs = list(fn.process(source)) + [value.value for value in fn.finish_bundle()]
    fn.teardown()
    return [output for output in outputs if isinstance(output, DecodedRecord)], outputs


@pytest.mark.parametrize("seconds", [35, 125])  # 125 s is 3 MB: beyond one result slot, through the pipe
def test_the_decode_step_cuts_windows_from_the_whole_record_decoded_in_the_child(tmp_path, seconds):
    signal = _record(seconds, seed=seconds)
    assert (signal.nbytes > RESULT_BYTES) == (seconds == 125)
    path = tmp_path / "LONG.mat"
    scipy.io.savemat(path, {"data": signal})
    source = RecordSource(str(path), "LONG", "train", 1, path.stat().st_size, input_root=str(tmp_path))
    records, _ = _decode_fn_outputs(source, 5.0)
    assert len(records) == (seconds - 10) // 5 + 1
    for k, record in enumerate(records):
        assert (record.record_id, record.label, record.window_index, record.window_start_s) == ("LONG", 1, k, 5.0 * k)
        np.testing.assert_array_equal(record.ecg, signal[k * 2500:k * 2500 + 5000])
    back = DecodedRecordCoder().decode(DecodedRecordCoder().encode(records[-1]))
    assert (back.window_index, back.window_start_s) == (records[-1].window_index, records[-1].window_start_s)
    single, _ = _decode_fn_outputs(source, None)
    assert len(single) == 1 and single[0].window_index == 0
    np.testing.assert_array_equal(single[0].ecg, signal[:5000])


def test_a_30_minute_record_is_cut_within_the_decoder_limits(tmp_path):
    """30 min of int16 CinC `val` (43 MB as float32 once decoded) under the default 1024 MB child limit."""
    seconds, rate = 1800, 500
    val = (np.random.default_rng(2).normal(0, 300, (12, seconds * rate))).astype(np.int16)
    scipy.io.savemat(tmp_path / "HOLTER.mat", {"val": val}, format="4")
    names = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
    lines = [f"HOLTER 12 {rate} {seconds * rate}"] + [f"HOLTER.mat 16 1000(0)/mV 16 0 0 0 0 {n}" for n in names]
    (tmp_path / "HOLTER.hea").write_text("\n".join(lines + ["# Age: 61", "# Sex: Male"]) + "\n")
    mat = tmp_path / "HOLTER.mat"
    source = RecordSource(str(mat), "HOLTER", "train", 0, mat.stat().st_size, str(tmp_path / "HOLTER.hea"),
                          input_root=str(tmp_path))
    records, outputs = _decode_fn_outputs(source, 10.0, Geometry(lead_names=EIGHT_LEADS))
    assert len(records) == 180, outputs[:1]
    assert records[-1].window_start_s == 1790.0 and records[-1].ecg.shape == (5000, 8)
    np.testing.assert_allclose(records[-1].ecg[:, 2], val[6, 1790 * rate:] / 1000.0, rtol=1e-6)
    assert records[0].info.age == 61.0 and records[0].info.sex == 1


def _examples(out: Path, split: str) -> list[dict]:
    files = sorted(glob.glob(str(out / split / "part-*.tfrecord.gz")))
    spec = tft.TFTransformOutput(str(out)).transformed_feature_spec()
    rows = []
    for serialized in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        parsed = tf.io.parse_single_example(serialized, spec)
        rows.append({key: (tf.sparse.to_dense(value) if isinstance(value, tf.SparseTensor) else value).numpy()
                     for key, value in parsed.items()})
    return rows


@pytest.fixture(scope="module")
def windowed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("windows") / "out"
    code = main(["--train_dir", str(REAL / "cpsc2018"), "--labels", str(REAL / "cpsc2018" / "labels.txt"),
                 "--test_dir", str(REAL / "cinc2021"), "--output_dir", str(out),
                 "--window_stride_s", "5", "--leads", ",".join(EIGHT_LEADS)])
    assert code == EXIT_OK
    return out


def test_the_shared_real_records_go_through_with_windows_and_eight_leads(windowed_run):
    out = windowed_run
    summary = json.loads((out / "run_summary.json").read_text())
    durations = {path.stem: scipy.io.loadmat(path)["ECG"]["data"][0, 0].shape[1] / 500
                 for path in sorted((REAL / "cpsc2018").glob("*.mat"))}
    expected = {rid: int((d - 10) // 5) + 1 for rid, d in durations.items()}
    assert summary["files_found"] == {"train": 10, "test": 50}
    assert summary["records_written"] == {"train": 10, "test": 50} and summary["reconciled"]
    assert summary["examples_written"] == {"train": sum(expected.values()), "test": 50}
    assert summary["decoding"]["geometry"]["leads"] == list(EIGHT_LEADS)
    assert summary["decoding"]["window_stride_s"] == 5.0
    assert summary["lead_statistics"]["leads"] == list(EIGHT_LEADS)
    train = _examples(out, "train")
    by_record: dict[str, list] = {}
    for row in train:
        assert row[ECG_KEY].shape == (5000, 8)
        by_record.setdefault(row[RECORD_ID_KEY].decode(), []).append(row)
    assert {rid: len(rows) for rid, rows in by_record.items()} == expected
    for rid, rows in by_record.items():
        rows.sort(key=lambda row: int(row[WINDOW_INDEX_KEY]))
        assert [float(row[WINDOW_START_KEY]) for row in rows] == [5.0 * k for k in range(expected[rid])]
        struct = scipy.io.loadmat(REAL / "cpsc2018" / f"{rid}.mat")["ECG"][0, 0]
        assert list(rows[0][AGE_KEY]) == [float(struct["age"].reshape(-1)[0])]
        assert list(rows[0][SEX_KEY]) == [{"Male": 1, "Female": 0}[str(struct["sex"].reshape(-1)[0])]]
    # Statistics over all training windows: the normalized training windows have mean 0, std 1 per lead.
    stacked = np.concatenate([row[ECG_KEY] for row in train])
    np.testing.assert_allclose(stacked.mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(stacked.std(axis=0), 1, atol=1e-3)
    test = _examples(out, "test")
    assert len(test) == 50 and all(len(row[AGE_KEY]) == 1 for row in test)


def test_reprocessing_with_other_geometry_is_one_configuration_error(windowed_run, tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = reprocess_main(["--incoming", str(incoming), "--transform_dir", str(windowed_run),
                               "--output_root", str(tmp_path / "root"), "--window_stride_s", "5"])
    assert code == EXIT_CONFIG
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and "--leads" in lines[0] and "I,II,V1" in lines[0]


def test_the_run_counts_age_and_sex_and_the_report_shows_them(windowed_run):
    summary = json.loads((windowed_run / "run_summary.json").read_text())
    structs = [scipy.io.loadmat(path)["ECG"][0, 0] for path in sorted((REAL / "cpsc2018").glob("*.mat"))]
    sexes = [str(struct["sex"].reshape(-1)[0]) for struct in structs]
    assert summary["demographics"]["train"]["sex"] == {"female": sexes.count("Female"), "male": sexes.count("Male"),
                                                       "unknown": 0}
    ages = [int(struct["age"].reshape(-1)[0]) for struct in structs]
    train_ages = summary["demographics"]["train"]["age_years"]
    assert sum(train_ages.values()) == 10 and train_ages["unknown"] == 0
    assert train_ages["50-59"] == sum(50 <= age < 60 for age in ages)
    cinc_sexes = [line.split(":", 1)[1].strip() for path in (REAL / "cinc2021").glob("*.hea")
                  for line in path.read_text().splitlines() if line.startswith("# Sex:")]
    assert summary["demographics"]["test"]["sex"]["female"] == cinc_sexes.count("Female") == 27
    page = (windowed_run / "report" / "index.html").read_text()
    assert "Age and sex of the records written" in page and "90+" in page
