"""The synthetic contest-layout data set: layout, determinism, reuse, and physiological sanity."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import scipy.io
import scipy.signal

from beam_pipeline.synthetic import generator as synthetic
from ecg_common.schema import ABNORMAL, LEAD_NAMES, NORMAL, NUM_LEADS, NUM_SAMPLES, SAMPLING_RATE_HZ

LEAD = {name: i for i, name in enumerate(LEAD_NAMES)}
SPLIT_FILES = {"TRAIN": "reference.txt", "TEST": "test_answers.txt"}


def _load(path: str) -> np.ndarray:
    return scipy.io.loadmat(path)["data"]


def _read_labels(path: str) -> dict[str, int]:
    with open(path) as f:
        lines = f.read().splitlines()
    for line in lines:
        assert re.fullmatch(r"(TRAIN|TEST)\d+\t[01]", line), line
    labels = dict(line.split("\t") for line in lines)
    assert len(labels) == len(lines), "duplicate record ids"
    return {record_id: int(label) for record_id, label in labels.items()}


def _arrays(out: str) -> dict[str, bytes]:
    return {
        name: _load(os.path.join(out, split, name)).tobytes()
        for split in SPLIT_FILES
        for name in sorted(os.listdir(os.path.join(out, split)))
    }


def _record(seed: int, label: int, abnormality: str | None = None) -> np.ndarray:
    ecg, _ = synthetic.synthesize_record(np.random.default_rng(seed), label, abnormality=abnormality)
    return ecg


def _r_peaks(ecg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """R peaks of lead II (sample indices) and the baseline-free lead they were found on."""
    b, a = scipy.signal.butter(2, 0.5, btype="highpass", fs=SAMPLING_RATE_HZ)
    lead_ii = scipy.signal.filtfilt(b, a, ecg[:, LEAD["II"]].astype(float))
    min_distance = int(0.3 * SAMPLING_RATE_HZ)  # 200 bpm
    peaks, _ = scipy.signal.find_peaks(lead_ii, height=0.5 * lead_ii.max(), distance=min_distance)
    return peaks, lead_ii


def _rr_cv(ecg: np.ndarray) -> float:
    rr = np.diff(_r_peaks(ecg)[0])
    return float(rr.std() / rr.mean())


def _qrs_width_ms(ecg: np.ndarray) -> float:
    """Median width of the R waves of lead II at half their height."""
    peaks, lead_ii = _r_peaks(ecg)
    widths = scipy.signal.peak_widths(lead_ii, peaks, rel_height=0.5)[0]
    return float(np.median(widths) * 1000 / SAMPLING_RATE_HZ)


# --- Layout --------------------------------------------------------------------------------------


def test_generate_dataset_writes_the_contest_layout(tmp_path):
    out = str(tmp_path / "data")
    synthetic.generate_dataset(out, n_train=6, n_test=4, seed=3)

    expected = ["TRAIN", "TEST", "reference.txt", "test_answers.txt", "_generator.json"]
    assert sorted(os.listdir(out)) == sorted(expected)
    for split, n in (("TRAIN", 6), ("TEST", 4)):
        expected_ids = [f"{split}{101 + i}" for i in range(n)]
        assert sorted(os.listdir(os.path.join(out, split))) == sorted(f"{i}.mat" for i in expected_ids)
        for record_id in expected_ids:
            ecg = _load(os.path.join(out, split, f"{record_id}.mat"))
            assert ecg.shape == (NUM_SAMPLES, NUM_LEADS)
            assert ecg.dtype == np.float32
            assert np.isfinite(ecg).all()
            assert 0.2 < np.ptp(ecg[:, LEAD["II"]]) < 10  # millivolts, not volts or ADC counts
        labels = _read_labels(os.path.join(out, SPLIT_FILES[split]))
        assert sorted(labels) == sorted(expected_ids)
        assert set(labels.values()) == {NORMAL, ABNORMAL}


def test_abnormal_fraction_sets_the_label_counts(tmp_path):
    synthetic.generate_dataset(str(tmp_path), n_train=10, n_test=4, abnormal_fraction=0.3)
    assert sum(_read_labels(str(tmp_path / "reference.txt")).values()) == 3
    assert sum(_read_labels(str(tmp_path / "test_answers.txt")).values()) == 1  # round(1.2)


@pytest.mark.parametrize("kwargs", [{"n_train": -1}, {"abnormal_fraction": 1.5}, {"seed": -2}])
def test_invalid_parameters_are_rejected(tmp_path, kwargs):
    with pytest.raises(ValueError):
        synthetic.generate_dataset(str(tmp_path), **{"n_train": 2, "n_test": 2, **kwargs})


# --- Determinism and reuse -------------------------------------------------------------------------


def test_same_seed_gives_identical_arrays_and_another_seed_differs(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        synthetic.generate_dataset(str(tmp_path / name), n_train=3, n_test=2, seed=seed)
    a, b, c = (_arrays(str(tmp_path / name)) for name in "abc")
    assert a == b
    assert (tmp_path / "a" / "reference.txt").read_text() == (tmp_path / "b" / "reference.txt").read_text()
    assert all(a[name] != c[name] for name in a)


def test_a_second_call_with_the_same_parameters_reuses_the_files(tmp_path, capsys):
    out = str(tmp_path)
    assert synthetic.main(["--output_dir", out, "--train", "3", "--test", "2", "--seed", "1"]) == 0
    assert "Wrote" in capsys.readouterr().out
    files = [os.path.join(root, f) for root, _, names in os.walk(out) for f in names]
    old = 1_000_000_000
    for f in files:
        os.utime(f, ns=(old, old))

    assert synthetic.main(["--output_dir", out, "--train", "3", "--test", "2", "--seed", "1"]) == 0
    assert "Reusing" in capsys.readouterr().out
    assert all(os.stat(f).st_mtime_ns == old for f in files)

    synthetic.generate_dataset(out, n_train=3, n_test=2, seed=1)  # the Python API reuses too
    assert all(os.stat(f).st_mtime_ns == old for f in files)


def test_different_parameters_regenerate(tmp_path):
    out = str(tmp_path)
    synthetic.generate_dataset(out, n_train=4, n_test=2, seed=1)
    before = _arrays(out)

    synthetic.generate_dataset(out, n_train=4, n_test=2, seed=2)
    after = _arrays(out)
    assert after.keys() == before.keys() and all(after[k] != before[k] for k in after)
    with open(os.path.join(out, "_generator.json")) as f:
        assert json.load(f)["seed"] == 2

    synthetic.generate_dataset(out, n_train=2, n_test=2, seed=2)  # a smaller set leaves no stale records
    assert sorted(os.listdir(os.path.join(out, "TRAIN"))) == ["TRAIN101.mat", "TRAIN102.mat"]
    assert len(_read_labels(os.path.join(out, "reference.txt"))) == 2


def test_an_incomplete_set_is_regenerated(tmp_path):
    out = str(tmp_path)
    synthetic.generate_dataset(out, n_train=3, n_test=2)
    os.remove(os.path.join(out, "TEST", "TEST102.mat"))
    synthetic.generate_dataset(out, n_train=3, n_test=2)
    assert os.path.isfile(os.path.join(out, "TEST", "TEST102.mat"))


# --- Classes and physiology ------------------------------------------------------------------------


def test_labels_map_to_classes():
    rng = np.random.default_rng(0)
    assert {synthetic.synthesize_record(rng, NORMAL)[1] for _ in range(3)} == {synthetic.NORMAL_CLASS}
    kinds = {synthetic.synthesize_record(rng, ABNORMAL)[1] for _ in range(40)}
    assert kinds == set(synthetic.ABNORMAL_CLASSES)
    with pytest.raises(ValueError):
        synthetic.synthesize_record(rng, 2)


@pytest.mark.parametrize("kind", [None, *synthetic.ABNORMAL_CLASSES])
def test_limb_leads_obey_einthoven_and_goldberger(kind):
    ecg = _record(11, NORMAL if kind is None else ABNORMAL, kind).astype(float)
    i, ii = ecg[:, LEAD["I"]], ecg[:, LEAD["II"]]
    np.testing.assert_allclose(ecg[:, LEAD["III"]], ii - i, atol=1e-5)
    np.testing.assert_allclose(ecg[:, LEAD["aVR"]], -(i + ii) / 2, atol=1e-5)
    np.testing.assert_allclose(ecg[:, LEAD["aVL"]], i - ii / 2, atol=1e-5)
    np.testing.assert_allclose(ecg[:, LEAD["aVF"]], ii - i / 2, atol=1e-5)
    assert np.std(ecg[:, LEAD["III"]]) > 0.01  # not trivially satisfied by flat leads


def test_leads_differ_plausibly():
    ecg = _record(2, NORMAL)
    assert len(np.unique(np.round(ecg.std(axis=0), 3))) == NUM_LEADS
    assert len(np.unique(np.round(ecg.mean(axis=0), 3))) == NUM_LEADS
    r = _r_peaks(ecg)[0][2]
    qrs = ecg[r - 30 : r + 30] - ecg[r - 75]  # QRS relative to the PR segment
    # aVR looks at the heart from the upper right, V1 from the right front: mostly negative QRS (QS, rS);
    # II and V6 look along the main ventricular depolarization: mostly positive (qR).
    for lead, sign in (("aVR", -1), ("V1", -1), ("II", 1), ("V6", 1)):
        deflection = qrs[:, LEAD[lead]]
        assert sign * deflection[np.argmax(np.abs(deflection))] > 0, lead


@pytest.mark.parametrize("seed", range(8))
def test_normal_heart_rate_is_55_to_100_bpm(seed):
    peaks, _ = _r_peaks(_record(seed, NORMAL))
    duration_s = NUM_SAMPLES / SAMPLING_RATE_HZ
    assert 55 * duration_s / 60 - 1.5 <= len(peaks) <= 100 * duration_s / 60 + 1.5
    bpm = 60 * SAMPLING_RATE_HZ / np.median(np.diff(peaks))
    assert 50 <= bpm <= 105


def test_atrial_fibrillation_has_irregular_rr_intervals():
    normal = [_rr_cv(_record(seed, NORMAL)) for seed in range(6)]
    af = [_rr_cv(_record(seed, ABNORMAL, "atrial_fibrillation")) for seed in range(6)]
    assert max(normal) < 0.08
    assert np.mean(af) > 0.12
    assert np.mean(af) > 3 * np.mean(normal)


def test_wide_qrs_is_wider_than_normal():
    normal = [_qrs_width_ms(_record(seed, NORMAL)) for seed in range(6)]
    wide = [_qrs_width_ms(_record(seed, ABNORMAL, "wide_qrs")) for seed in range(6)]
    assert max(normal) < 40
    assert min(wide) > 45
    assert np.mean(wide) > 1.6 * np.mean(normal)


def test_st_elevation_raises_the_st_segment_in_some_leads():
    def max_st_shift(ecg):  # mean (ST at J + 60 ms) - (PR segment) over beats, the largest over leads
        peaks = _r_peaks(ecg)[0][1:-1]
        st = ecg[peaks + int(0.1 * SAMPLING_RATE_HZ)].mean(axis=0)
        pr = ecg[peaks - int(0.06 * SAMPLING_RATE_HZ)].mean(axis=0)
        return float(np.max(np.abs(st - pr)))

    normal = [max_st_shift(_record(seed, NORMAL)) for seed in range(6)]
    st = [max_st_shift(_record(seed, ABNORMAL, "st_elevation")) for seed in range(6)]
    assert np.mean(st) > 2 * np.mean(normal)

