"""Tests of `beam_pipeline.decode` and `beam_pipeline.wfdb_header`.

Real recordings (read-only, see the `real_ecg_dir` fixture) prove the decoder reads the formats found
in the wild; generated files in `tmp_path` cover each layout and each rejection reason exactly.
"""
from __future__ import annotations

import io
import struct
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.signal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecg_common.rejections import DecodeError, Reason
from ecg_common.schema import ECG_SHAPE, LEAD_NAMES, NUM_LEADS, NUM_SAMPLES, SAMPLING_RATE_HZ
from ecg_decode.decoding import container, decode
from ecg_decode.decoding.container import MAX_SAMPLES_PER_LEAD
from ecg_decode.decoding.decode import decode_record
from ecg_decode.decoding.wfdb_header import WfdbHeader, parse_header

RNG_SEED = 20240611


# --- helpers ---------------------------------------------------------------------------------


def savemat_bytes(variables: dict, **kwargs) -> bytes:
    """A .mat file (v5 unless `format="4"`) as bytes, the way the DoFn receives it."""
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables, **kwargs)
    return buffer.getvalue()


def v73_bytes(tmp_path: Path, fill) -> bytes:
    """A MATLAB v7.3 file: HDF5 behind a 512-byte user block holding MATLAB's text header."""
    path = tmp_path / "record_v73.mat"
    with h5py.File(path, "w", userblock_size=512) as file:
        fill(file)
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 ."
    with open(path, "r+b") as handle:
        handle.write(text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")
    return path.read_bytes()


def matlab_dataset(group: h5py.Group, name: str, array: np.ndarray, matlab_class: str = "double") -> None:
    """Stores `array` as MATLAB does in v7.3: dimensions reversed (column-major) plus a class attribute."""
    dataset = group.create_dataset(name, data=np.ascontiguousarray(np.asarray(array).T))
    dataset.attrs["MATLAB_class"] = np.bytes_(matlab_class)


def wfdb_header(
    num_samples: int | None = NUM_SAMPLES,
    sampling_rate: object = SAMPLING_RATE_HZ,
    gain_fields: list[str] | None = None,
    names: tuple[str, ...] = LEAD_NAMES,
    num_signals: int | None = None,
) -> str:
    """A CinC-style header; `gain_fields` replaces the `1000.0(0)/mV` column per signal."""
    gain_fields = gain_fields or ["1000.0(0)/mV"] * len(names)
    nsig = len(names) if num_signals is None else num_signals
    record = f"REC {nsig} {sampling_rate}" + ("" if num_samples is None else f" {num_samples}")
    lines = [record] + [f"REC.mat 16x1+24 {gain} 16 0 0 0 0 {name}" for gain, name in zip(gain_fields, names)]
    return "\n".join(lines + ["# Dx: 426783006"]) + "\n"


def leads_signal(num_samples: int = NUM_SAMPLES, seed: int = RNG_SEED) -> np.ndarray:
    """(leads, samples) float64 in plausible mV, each lead distinct so a mix-up shows."""
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 0.5, size=(NUM_LEADS, num_samples)) + np.arange(NUM_LEADS)[:, None]


def sine_leads(sampling_rate: float, num_samples: int, frequency: float = 5.0) -> np.ndarray:
    """(leads, samples) 5 Hz sines scaled per lead (lead k has amplitude k + 1 mV)."""
    t = np.arange(num_samples) / sampling_rate
    return np.sin(2 * np.pi * frequency * t)[None, :] * (np.arange(NUM_LEADS) + 1.0)[:, None]


def assert_ecg(result: object) -> np.ndarray:
    assert isinstance(result, np.ndarray), result
    assert result.shape == ECG_SHAPE
    assert result.dtype == np.float32
    assert result.flags["C_CONTIGUOUS"]
    assert np.isfinite(result).all()
    return result


def assert_rejected(result: object, reason: str) -> DecodeError:
    assert isinstance(result, DecodeError), f"expected {reason}, got an array"
    assert result.reason == reason, result
    assert result.detail  # a human-readable explanation, never empty
    return result


def read_labels_ids(folder: Path) -> list[str]:
    return [line.split("\t")[0] for line in (folder / "labels.txt").read_text().splitlines() if line.strip()]


# --- real recordings -------------------------------------------------------------------------


def test_all_cinc2021_records_decode(real_ecg_dir: Path) -> None:
    folder = real_ecg_dir / "cinc2021"
    mats = sorted(folder.glob("*.mat"))
    assert len(mats) == 50
    assert sorted(path.stem for path in mats) == sorted(read_labels_ids(folder))
    for mat in mats:
        result = decode_record(mat.read_bytes(), mat.with_suffix(".hea").read_text())
        assert_ecg(result)
        assert np.abs(result).max() < 20, mat.name  # mV, not raw ADC units


def test_all_cpsc2018_records_decode(real_ecg_dir: Path) -> None:
    folder = real_ecg_dir / "cpsc2018"
    mats = sorted(folder.glob("*.mat"))
    assert len(mats) == 10
    for mat in mats:
        result = decode_record(mat.read_bytes())
        assert_ecg(result)
        assert np.abs(result).max() < 20, mat.name


def _independent_wfdb_gains(header_text: str) -> list[tuple[float, float]]:
    """(gain, baseline) per signal, parsed here without the module under test."""
    lines = [line for line in header_text.splitlines() if line.strip() and not line.startswith("#")]
    pairs = []
    for line in lines[1:]:
        field = line.split()[2]  # e.g. 1000.0(0)/mV
        gain, rest = field.split("(")
        pairs.append((float(gain), float(rest.split(")")[0])))
    return pairs


def test_cinc_record_is_in_physical_millivolts(real_ecg_dir: Path) -> None:
    mat = real_ecg_dir / "cinc2021" / "HR06000.mat"  # a PTB-XL record with the lower-case "mv" unit
    header_text = mat.with_suffix(".hea").read_text()
    val = scipy.io.loadmat(mat)["val"]
    assert val.dtype == np.int16 and val.shape == (NUM_LEADS, NUM_SAMPLES)
    decoded = assert_ecg(decode_record(mat.read_bytes(), header_text))
    for lead, (gain, baseline) in enumerate(_independent_wfdb_gains(header_text)):
        expected = (val[lead, :NUM_SAMPLES].astype(np.float64) - baseline) / gain
        np.testing.assert_allclose(decoded[:, lead], expected, rtol=1e-6, atol=1e-7)
    assert 0.05 < np.abs(decoded).max() < 20


def test_headerless_cinc_val_uses_the_documented_gain_of_1000(real_ecg_dir: Path) -> None:
    mat = real_ecg_dir / "cinc2021" / "E07500.mat"
    with_header = decode_record(mat.read_bytes(), mat.with_suffix(".hea").read_text())
    without_header = decode_record(mat.read_bytes())
    np.testing.assert_array_equal(assert_ecg(without_header), assert_ecg(with_header))


def test_cpsc_record_longer_than_10_s_keeps_the_first_10_s(real_ecg_dir: Path) -> None:
    mat = real_ecg_dir / "cpsc2018" / "A1988.mat"
    data = scipy.io.loadmat(mat)["ECG"][0, 0]["data"]
    assert data.shape[1] > 2 * NUM_SAMPLES  # 27157 samples: really longer than 10 s
    decoded = assert_ecg(decode_record(mat.read_bytes()))
    np.testing.assert_array_equal(decoded, data[:, :NUM_SAMPLES].T.astype(np.float32))


# --- layouts ---------------------------------------------------------------------------------


def test_contest_layout_samples_by_leads() -> None:
    signal = leads_signal().T  # (5000, 12)
    decoded = assert_ecg(decode_record(savemat_bytes({"data": signal})))
    np.testing.assert_array_equal(decoded, signal.astype(np.float32))


def test_transposed_layout_leads_by_samples() -> None:
    signal = leads_signal()
    decoded = assert_ecg(decode_record(savemat_bytes({"data": signal})))
    np.testing.assert_array_equal(decoded, signal.T.astype(np.float32))


def test_integer_data_without_header_is_taken_as_millivolts() -> None:
    signal = np.arange(NUM_SAMPLES * NUM_LEADS, dtype=np.int16).reshape(ECG_SHAPE) % 7
    decoded = assert_ecg(decode_record(savemat_bytes({"data": signal})))
    np.testing.assert_array_equal(decoded, signal.astype(np.float32))


def test_cpsc_style_struct() -> None:
    signal = leads_signal(6000)
    mat = savemat_bytes({"ECG": {"sex": "Male", "age": 63, "data": signal}}, do_compression=True)
    decoded = assert_ecg(decode_record(mat))
    np.testing.assert_array_equal(decoded, signal[:, :NUM_SAMPLES].T.astype(np.float32))


def test_v4_val_with_header_gain_and_baseline_per_lead() -> None:
    val = (leads_signal() * 100).astype(np.int16)
    gains = [100.0 + 10 * k for k in range(NUM_LEADS)]
    baselines = [k - 6 for k in range(NUM_LEADS)]
    fields = [f"{g}({b})/mV" for g, b in zip(gains, baselines)]
    decoded = assert_ecg(decode_record(savemat_bytes({"val": val}, format="4"), wfdb_header(gain_fields=fields)))
    expected = (val.astype(np.float64) - np.array(baselines)[:, None]) / np.array(gains)[:, None]
    np.testing.assert_allclose(decoded, expected.T, rtol=1e-6)


def test_header_lead_names_reorder_leads_case_insensitively() -> None:
    order = [11, 0, 5, 3, 1, 2, 4, 10, 6, 7, 9, 8]
    standard = (leads_signal() * 1000).astype(np.int16)
    names = tuple(LEAD_NAMES[k].upper() for k in order)  # "AVR" must match "aVR"
    mat = savemat_bytes({"val": standard[order]}, format="4")
    decoded = assert_ecg(decode_record(mat, wfdb_header(names=names)))
    np.testing.assert_allclose(decoded, standard.T / 1000.0, rtol=1e-6)


def test_unknown_lead_names_keep_file_order() -> None:
    val = (leads_signal() * 1000).astype(np.int16)
    names = tuple(f"ch{k}" for k in range(NUM_LEADS))
    decoded = assert_ecg(decode_record(savemat_bytes({"val": val}, format="4"), wfdb_header(names=names)))
    np.testing.assert_allclose(decoded, val.T / 1000.0, rtol=1e-6)


def test_microvolt_header_units_are_converted_to_millivolts() -> None:
    val = (leads_signal() * 1000).astype(np.int16)  # ADC units, 1 per uV
    header = wfdb_header(gain_fields=["1(5)/uV"] * NUM_LEADS)
    decoded = assert_ecg(decode_record(savemat_bytes({"val": val}, format="4"), header))
    np.testing.assert_allclose(decoded, (val.T - 5.0) / 1000.0, rtol=1e-6)


def test_missing_gain_defaults_to_200_and_baseline_to_adc_zero() -> None:
    val = (leads_signal() * 200).astype(np.int16)
    lines = ["REC 12 500 5000"] + ["REC.mat 16x1+24" for _ in LEAD_NAMES]  # no gain, no names
    decoded = assert_ecg(decode_record(savemat_bytes({"val": val}, format="4"), "\n".join(lines)))
    np.testing.assert_allclose(decoded, val.T / 200.0, rtol=1e-6)
    lines = ["REC 12 500 5000"] + [f"REC.mat 16 1000 16 7 0 0 0 {name}" for name in LEAD_NAMES]
    decoded = assert_ecg(decode_record(savemat_bytes({"val": val}, format="4"), "\n".join(lines)))
    np.testing.assert_allclose(decoded, (val.T - 7.0) / 1000.0, rtol=1e-6)


def test_v73_data(tmp_path: Path) -> None:
    signal = leads_signal().T  # MATLAB (5000, 12): HDF5 sees (12, 5000)
    mat = v73_bytes(tmp_path, lambda f: matlab_dataset(f, "data", signal))
    assert mat[512:520] == b"\x89HDF\r\n\x1a\n"
    with h5py.File(io.BytesIO(mat), "r") as file:
        assert file["data"].shape == (NUM_LEADS, NUM_SAMPLES)
    decoded = assert_ecg(decode_record(mat))
    np.testing.assert_array_equal(decoded, signal.astype(np.float32))


def test_v73_struct_group(tmp_path: Path) -> None:
    signal = leads_signal(7000)  # CPSC orientation (12, N), longer than 10 s

    def fill(file: h5py.File) -> None:
        group = file.create_group("ECG")
        group.attrs["MATLAB_class"] = np.bytes_("struct")
        matlab_dataset(group, "age", np.array([[63.0]]))
        matlab_dataset(group, "data", signal)

    decoded = assert_ecg(decode_record(v73_bytes(tmp_path, fill)))
    np.testing.assert_array_equal(decoded, signal[:, :NUM_SAMPLES].T.astype(np.float32))


def test_v73_val_with_and_without_header(tmp_path: Path) -> None:
    val = (leads_signal() * 1000).astype(np.int16)
    mat = v73_bytes(tmp_path, lambda f: matlab_dataset(f, "val", val, "int16"))
    np.testing.assert_allclose(assert_ecg(decode_record(mat)), val.T / 1000.0, rtol=1e-6)
    decoded = assert_ecg(decode_record(mat, wfdb_header(gain_fields=["500(10)/mV"] * 12)))
    np.testing.assert_allclose(decoded, (val.T - 10.0) / 500.0, rtol=1e-6)


def test_resamples_250_hz_20_s_to_500_hz_preserving_a_5_hz_sine() -> None:
    signal = sine_leads(250, 250 * 20)
    decoded = assert_ecg(decode_record(savemat_bytes({"data": signal}), default_sampling_rate=250))
    expected = sine_leads(SAMPLING_RATE_HZ, NUM_SAMPLES)
    np.testing.assert_allclose(decoded, expected.T, atol=0.02 * NUM_LEADS)
    interior = slice(100, NUM_SAMPLES)  # away from the filter's start-up transient
    np.testing.assert_allclose(decoded[interior], expected.T[interior], atol=2e-3 * NUM_LEADS)


def test_resamples_1000_hz_from_the_header() -> None:
    val = np.round(sine_leads(1000, 12_000) * 1000).astype(np.int16)  # 12 s, 1000 ADC units per mV
    header = wfdb_header(num_samples=12_000, sampling_rate=1000)
    decoded = assert_ecg(decode_record(savemat_bytes({"val": val}, format="4"), header))
    expected = sine_leads(SAMPLING_RATE_HZ, NUM_SAMPLES)
    interior = slice(100, NUM_SAMPLES)
    np.testing.assert_allclose(decoded[interior], expected.T[interior], atol=3e-3 * NUM_LEADS)


def test_cropping_before_resampling_matches_resampling_the_whole_record() -> None:
    signal = leads_signal(1000 * 60)  # 60 s at 1000 Hz: the decoder only resamples the first ~10 s
    decoded = assert_ecg(decode_record(savemat_bytes({"data": signal}), default_sampling_rate=1000))
    whole = scipy.signal.resample_poly(signal, 1, 2, axis=1)[:, :NUM_SAMPLES]
    np.testing.assert_allclose(decoded, whole.T, rtol=1e-5, atol=1e-5)


def test_pad_short_zero_pads_at_the_end() -> None:
    signal = leads_signal(4000)
    mat = savemat_bytes({"data": signal})
    assert_rejected(decode_record(mat), Reason.TOO_SHORT)
    decoded = assert_ecg(decode_record(mat, pad_short=True))
    np.testing.assert_array_equal(decoded[:4000], signal.T.astype(np.float32))
    assert not decoded[4000:].any()


# --- rejections ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mat_bytes",
    [
        b"",
        np.random.default_rng(RNG_SEED).bytes(4096),
        b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n",
        b"MATLAB 7.3 MAT-file" + b" " * 600,  # claims v7.3 but holds no HDF5
    ],
    ids=["empty", "random", "html", "fake-v73"],
)
def test_not_matlab(mat_bytes: bytes) -> None:
    assert_rejected(decode_record(mat_bytes), Reason.NOT_MATLAB)


def test_truncated_v5_is_not_matlab() -> None:
    mat = savemat_bytes({"data": leads_signal().T})
    assert_rejected(decode_record(mat[: len(mat) // 2]), Reason.NOT_MATLAB)


def test_no_known_key_lists_the_keys_seen() -> None:
    error = assert_rejected(decode_record(savemat_bytes({"signal": leads_signal()})), Reason.NO_SIGNAL)
    assert "signal" in error.detail


def test_struct_without_data_field() -> None:
    mat = savemat_bytes({"ECG": {"sex": "Female", "age": 40}})
    error = assert_rejected(decode_record(mat), Reason.NO_SIGNAL)
    assert "age" in error.detail


def test_v73_group_without_data_field(tmp_path: Path) -> None:
    mat = v73_bytes(tmp_path, lambda f: matlab_dataset(f.create_group("ECG"), "age", np.array([[1.0]])))
    assert_rejected(decode_record(mat), Reason.NO_SIGNAL)


@pytest.mark.parametrize(
    "shape", [(NUM_SAMPLES, 1), (NUM_SAMPLES, 3), (15, NUM_SAMPLES), (NUM_LEADS, NUM_LEADS)],
    ids=["1-lead", "3-leads", "15-leads", "12x12"],
)
def test_bad_shape(shape: tuple[int, int]) -> None:
    assert_rejected(decode_record(savemat_bytes({"data": np.ones(shape)})), Reason.BAD_SHAPE)


@pytest.mark.parametrize("shape", [(NUM_SAMPLES,), (2, NUM_SAMPLES, NUM_LEADS)], ids=["1-D", "3-D"])
def test_v73_not_two_dimensional_is_bad_shape(tmp_path: Path, shape: tuple[int, ...]) -> None:
    # MATLAB v4/v5 variables are always at least 2-D; HDF5 datasets need not be.
    mat = v73_bytes(tmp_path, lambda f: matlab_dataset(f, "data", np.ones(shape)))
    error = assert_rejected(decode_record(mat), Reason.BAD_SHAPE)
    assert str(shape) in error.detail  # reported as MATLAB sees it (HDF5 stores it reversed)


def test_too_short() -> None:
    error = assert_rejected(decode_record(savemat_bytes({"data": leads_signal(4999)})), Reason.TOO_SHORT)
    assert "10 s" in error.detail


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", [10, NUM_SAMPLES + 100], ids=["kept-part", "cropped-part"])
def test_non_finite_anywhere(bad: float, where: int) -> None:
    signal = leads_signal(NUM_SAMPLES + 500)
    signal[3, where] = bad
    assert_rejected(decode_record(savemat_bytes({"data": signal})), Reason.NON_FINITE)


def test_integer_overflow_after_gain_is_non_finite() -> None:
    val = np.full((NUM_LEADS, NUM_SAMPLES), 32767, dtype=np.int16)
    header = wfdb_header(gain_fields=["1e-40(0)/mV"] * NUM_LEADS)  # 3e44 mV: finite in float64, not float32
    assert_rejected(decode_record(savemat_bytes({"val": val}, format="4"), header), Reason.NON_FINITE)


@pytest.mark.parametrize(
    "value",
    [
        np.ones(ECG_SHAPE, dtype=np.complex128),
        np.ones(ECG_SHAPE, dtype=bool),
        "not a signal",
        np.array([np.ones(3), "x"], dtype=object),
    ],
    ids=["complex", "bool", "string", "cell"],
)
def test_bad_dtype(value: object) -> None:
    assert_rejected(decode_record(savemat_bytes({"data": value})), Reason.BAD_DTYPE)


@pytest.mark.parametrize("matlab_class", ["logical", "char"])
def test_v73_non_numeric_class_is_bad_dtype(tmp_path: Path, matlab_class: str) -> None:
    mat = v73_bytes(tmp_path, lambda f: matlab_dataset(f, "data", np.ones(ECG_SHAPE, dtype=np.uint8), matlab_class))
    assert_rejected(decode_record(mat), Reason.BAD_DTYPE)


def test_v73_complex_is_bad_dtype(tmp_path: Path) -> None:
    compound = np.dtype([("real", "<f8"), ("imag", "<f8")])
    mat = v73_bytes(tmp_path, lambda f: f.create_dataset("data", data=np.zeros((NUM_LEADS, NUM_SAMPLES), compound)))
    assert_rejected(decode_record(mat), Reason.BAD_DTYPE)


@pytest.mark.parametrize("rate", ["0", "-500", "nan", "inf", "1"])
def test_header_with_bad_sampling_rate(rate: str) -> None:
    mat = savemat_bytes({"val": np.zeros((NUM_LEADS, NUM_SAMPLES), np.int16)}, format="4")
    assert_rejected(decode_record(mat, wfdb_header(sampling_rate=rate)), Reason.BAD_SAMPLING_RATE)


def test_bad_default_sampling_rate() -> None:
    mat = savemat_bytes({"data": leads_signal()})
    assert_rejected(decode_record(mat, default_sampling_rate=0.0), Reason.BAD_SAMPLING_RATE)
    assert_rejected(decode_record(mat, default_sampling_rate=float("nan")), Reason.BAD_SAMPLING_RATE)


@pytest.mark.parametrize(
    "header",
    [
        wfdb_header(num_samples=4000),  # NSAMP disagrees with the array
        wfdb_header(names=LEAD_NAMES[:11]),  # 11 signals declared and described, 12 in the array
        wfdb_header(num_signals=13),  # NSIG disagrees with the number of signal lines
        "REC twelve 500 5000\n",
        "",
        "# only a comment\n",
        "REC/3 12 500 5000\n",  # multi-segment
        wfdb_header(gain_fields=["1000(0)/mmHg"] * NUM_LEADS),  # not a voltage
        wfdb_header(gain_fields=["lots"] * NUM_LEADS),
    ],
    ids=["nsamp", "nsig", "line-count", "nsig-text", "empty", "comment-only", "multi-segment", "mmHg", "gain-text"],
)
def test_bad_header(header: str) -> None:
    mat = savemat_bytes({"val": np.zeros((NUM_LEADS, NUM_SAMPLES), np.int16)}, format="4")
    assert_rejected(decode_record(mat, header), Reason.BAD_HEADER)


def test_v73_external_link_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.h5"
    with h5py.File(outside, "w") as file:
        file["data"] = leads_signal()
    mat = v73_bytes(tmp_path, lambda f: f.__setitem__("data", h5py.ExternalLink(str(outside), "/data")))
    error = assert_rejected(decode_record(mat), Reason.NOT_MATLAB)
    assert "ExternalLink" in error.detail


def test_v73_external_link_inside_struct_is_refused(tmp_path: Path) -> None:
    def fill(file: h5py.File) -> None:
        file.create_group("ECG")["data"] = h5py.ExternalLink("/etc/hostname", "/data")

    assert_rejected(decode_record(v73_bytes(tmp_path, fill)), Reason.NOT_MATLAB)


def test_v73_virtual_dataset_is_refused(tmp_path: Path) -> None:
    def fill(file: h5py.File) -> None:
        layout = h5py.VirtualLayout(shape=(NUM_LEADS, NUM_SAMPLES), dtype="f8")
        layout[:] = h5py.VirtualSource(str(tmp_path / "elsewhere.h5"), "data", shape=(NUM_LEADS, NUM_SAMPLES))
        file.create_virtual_dataset("data", layout)

    error = assert_rejected(decode_record(v73_bytes(tmp_path, fill)), Reason.NOT_MATLAB)
    assert "virtual" in error.detail


def test_v73_dataset_with_external_raw_storage_is_refused(tmp_path: Path) -> None:
    raw = tmp_path / "raw.bin"
    leads_signal().tofile(raw)

    def fill(file: h5py.File) -> None:
        external = [(str(raw), 0, h5py.h5f.UNLIMITED)]
        file.create_dataset("data", shape=(NUM_LEADS, NUM_SAMPLES), dtype="<f8", external=external)

    error = assert_rejected(decode_record(v73_bytes(tmp_path, fill)), Reason.NOT_MATLAB)
    assert "external" in error.detail


def test_v4_header_claiming_huge_dimensions_is_too_large() -> None:
    # A v4 variable header (mopt 30 = little-endian int16) claiming 12 x 10^8 samples, with 64 bytes of data.
    mat = struct.pack("<5i", 30, NUM_LEADS, 10**8, 0, 4) + b"val\x00" + b"\x00" * 64
    assert scipy.io.whosmat(io.BytesIO(mat)) == [("val", (NUM_LEADS, 10**8), "double")]
    assert_rejected(decode_record(mat), Reason.TOO_LARGE)


def test_v73_dataset_with_huge_shape_is_too_large(tmp_path: Path) -> None:
    # Chunked and never written: a few KiB on disk, but 12 x (limit + 1) float64 if read.
    shape = (MAX_SAMPLES_PER_LEAD + 1, NUM_LEADS)
    mat = v73_bytes(tmp_path, lambda f: f.create_dataset("data", shape=shape, dtype="f8", chunks=(1024, NUM_LEADS)))
    assert len(mat) < 100_000
    assert_rejected(decode_record(mat), Reason.TOO_LARGE)


def test_compressed_struct_inflating_beyond_the_limit_is_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    # whosmat only says "ECG is a 1x1 struct"; the inflate guard is what bounds it. A lower limit keeps the test fast.
    mat = savemat_bytes({"ECG": {"data": np.zeros((NUM_LEADS, 20_000))}}, do_compression=True)
    assert len(mat) < 10_000
    assert_ecg(decode_record(mat))
    monkeypatch.setattr(container, "MAX_DECOMPRESSED_BYTES", 100_000)
    assert_rejected(decode_record(mat), Reason.TOO_LARGE)


_SEEDS = [
    savemat_bytes({"data": leads_signal().T}),
    savemat_bytes({"ECG": {"age": 1, "data": leads_signal(5100)}}, do_compression=True),
    savemat_bytes({"val": (leads_signal() * 1000).astype(np.int16)}, format="4"),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(range(len(_SEEDS))),
    cut=st.integers(min_value=0, max_value=10**6),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=16),
    garbage=st.binary(max_size=256),
)
def test_never_raises_on_corrupted_files(seed: int, cut: int, flips: list[tuple[int, int]], garbage: bytes) -> None:
    mat = bytearray(_SEEDS[seed][: max(1, cut % (len(_SEEDS[seed]) + 1))])
    for position, value in flips:
        mat[position % len(mat)] = value
    for candidate in (bytes(mat), bytes(mat) + garbage, garbage):
        result = decode_record(candidate, None if seed != 2 else wfdb_header())
        assert isinstance(result, (np.ndarray, DecodeError))
        if isinstance(result, np.ndarray):
            assert_ecg(result)


# --- WFDB header parsing ---------------------------------------------------------------------


def test_parse_cinc_header(real_ecg_dir: Path) -> None:
    header = parse_header((real_ecg_dir / "cinc2021" / "HR06000.hea").read_text())
    assert isinstance(header, WfdbHeader)
    assert (header.record_name, header.num_signals) == ("HR06000", 12)
    assert (header.sampling_rate, header.num_samples) == (500, 5000)
    assert header.gains == (1000.0,) * 12 and header.baselines == (0,) * 12
    assert header.units == ("mv",) * 12 and header.gains_per_mv == (1000.0,) * 12
    assert header.lead_names == LEAD_NAMES


def test_parse_header_defaults_and_units() -> None:
    text = (
        "\ufeff# leading comment\nREC 4\r\n"  # byte-order mark, CRLF, no sampling rate nor sample count
        "r.mat 16\n"  # no gain at all
        "r.mat 16 2000(-3)/uV 16 0\n"
        "\n"
        "r.mat 16 0.5/V 16 9 0 0 0 lead with spaces\n"  # baseline from ADC zero
        "r.mat 16 0(4)/mV\n"  # zero gain
    )
    header = parse_header(text)
    assert isinstance(header, WfdbHeader)
    assert header.sampling_rate == 250.0 and header.num_samples is None  # WFDB defaults
    assert header.gains == (200.0, 2000.0, 0.5, 200.0)  # missing or zero gain: 200
    assert header.baselines == (0, -3, 9, 4)  # explicit baseline, else ADC zero
    assert header.gains_per_mv == (200.0, 2_000_000.0, 0.0005, 200.0)
    assert header.lead_names == ("", "", "lead with spaces", "")


def test_decode_imports_neither_tensorflow_nor_beam() -> None:
    code = "import sys, ecg_decode.decoding.decode, ecg_decode.decoding.quality; print(sorted({'tensorflow', 'apache_beam'} & set(sys.modules)))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


@pytest.mark.parametrize(
    "error, reason",
    [(MemoryError(), Reason.TOO_LARGE), (RuntimeError("boom"), Reason.NOT_MATLAB)],
    ids=["memory", "other"],
)
def test_unexpected_exceptions_become_decode_errors(
    monkeypatch: pytest.MonkeyPatch, error: BaseException, reason: str
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(decode, "standardize", explode)
    assert_rejected(decode_record(savemat_bytes({"data": leads_signal().T})), reason)
