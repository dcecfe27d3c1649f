"""The configurable example geometry (`--target_rate_hz`, `--window_s`, `--leads`): resampling against
scipy, lead subsets and reordered headers, missing leads rejected, the same through the sandbox."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

import hostile_files as hf
from ecg_common.rejections import DecodeError, Reason
from ecg_common.schema import DEFAULT_GEOMETRY, LEAD_NAMES, Geometry
from ecg_decode.decoding.decode import decode_record
from ecg_decode.sandbox.parent import DecoderProcess
from ecg_decode.sandbox.protocol import DecodeLimits


def _header(names, num_samples: int, rate: float = 500, gain: float = 1000.0) -> str:
    lines = [f"REC {len(names)} {rate:g} {num_samples}"]
    lines += [f"REC.mat 16x1+24 {gain:g}(0)/mV 16 0 0 0 0 {name}" for name in names]
    return "\n".join(lines + ["# Age: 50", "# Sex: Female"]) + "\n"


def _val(num_leads: int, num_samples: int, seed: int = 3) -> np.ndarray:
    """(leads, samples) int16 ADC units, each lead distinguishable (its own offset)."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(0, 300, (num_leads, num_samples)) + 1000 * np.arange(num_leads)[:, None]
    return signal.astype(np.int16)


def test_a_1000_hz_record_is_resampled_to_500_hz_as_scipy_does():
    signal = hf.signal(4, (10_000, 12)).astype(np.float64)  # 10 s at 1000 Hz
    decoded = decode_record(hf.savemat_bytes({"data": signal}), default_sampling_rate=1000)
    expected = scipy.signal.resample_poly(signal, 1, 2, axis=0)[:5000]
    assert decoded.shape == (5000, 12)
    np.testing.assert_allclose(decoded, expected, rtol=1e-5, atol=1e-6)


def test_a_target_rate_changes_the_shape_and_resamples_from_the_header_rate():
    val = _val(12, 5000)  # 10 s at 500 Hz
    geometry = Geometry(sampling_rate_hz=250)
    decoded = decode_record(hf.savemat_bytes({"val": val}, format="4"), _header(LEAD_NAMES, 5000), geometry=geometry)
    assert decoded.shape == (2500, 12) == geometry.shape
    expected = scipy.signal.resample_poly(val.astype(np.float64) / 1000.0, 1, 2, axis=1).T
    np.testing.assert_allclose(decoded, expected, rtol=1e-5, atol=1e-6)


def test_a_lead_subset_is_taken_by_name_from_a_reordered_header():
    order = [11, 0, 5, 3, 1, 2, 4, 10, 6, 7, 9, 8]
    val = _val(12, 5000)
    names = [LEAD_NAMES[k].upper() for k in order]  # "AVR" names aVR
    geometry = Geometry(lead_names=("V1", "I", "aVR", "II"))
    decoded = decode_record(hf.savemat_bytes({"val": val}, format="4"), _header(names, 5000), geometry=geometry)
    assert decoded.shape == (5000, 4)
    for column, lead in enumerate(geometry.lead_names):
        row = names.index(lead.upper())
        np.testing.assert_allclose(decoded[:, column], val[row] / 1000.0, rtol=1e-6)


def test_records_without_lead_names_give_the_subset_by_the_standard_order():
    signal = hf.signal(5)
    decoded = decode_record(hf.savemat_bytes({"data": signal}), geometry=Geometry(lead_names=("V6", "I")))
    np.testing.assert_allclose(decoded, signal[:, [11, 0]], rtol=1e-6)


def test_a_record_missing_a_lead_is_rejected_and_extra_leads_are_dropped():
    names = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6", "X")  # 9 signals, no III/aVR/aVL/aVF
    val = _val(len(names), 5000)
    mat, header = hf.savemat_bytes({"val": val}, format="4"), _header(names, 5000)
    missing = decode_record(mat, header)  # the default 12 leads
    assert isinstance(missing, DecodeError) and missing.reason == Reason.MISSING_LEAD
    assert "III" in missing.detail
    eight = Geometry(lead_names=("I", "II", "V1", "V2", "V3", "V4", "V5", "V6"))
    decoded = decode_record(mat, header, geometry=eight)
    np.testing.assert_allclose(decoded, val[:8].T / 1000.0, rtol=1e-6)
    unnamed = decode_record(mat, _header([""] * len(names), 5000), geometry=eight)
    assert isinstance(unnamed, DecodeError) and unnamed.reason == Reason.MISSING_LEAD


def test_a_window_length_crops_and_pads_like_the_default():
    signal = hf.signal(6)
    five = decode_record(hf.savemat_bytes({"data": signal}), geometry=Geometry(window_s=5))
    np.testing.assert_array_equal(five, signal[:2500].astype(np.float32))
    short = decode_record(hf.savemat_bytes({"data": signal}), geometry=Geometry(window_s=12))
    assert isinstance(short, DecodeError) and short.reason == Reason.TOO_SHORT
    padded = decode_record(hf.savemat_bytes({"data": signal}), pad_short=True, geometry=Geometry(window_s=12))
    assert padded.shape == (6000, 12) and not padded[5000:].any()


def test_the_sandbox_decodes_with_the_requested_geometry():
    geometry = Geometry(sampling_rate_hz=250, window_s=4, lead_names=("II", "V5"))
    mat = hf.savemat_bytes({"data": hf.signal(7)})
    decoder = DecoderProcess(DecodeLimits())
    try:
        isolated = decoder.decode(mat, None, default_sampling_rate=500.0, pad_short=False, geometry=geometry)
        default = decoder.decode(mat, None, default_sampling_rate=500.0, pad_short=False)
    finally:
        decoder.close()
    np.testing.assert_array_equal(isolated, decode_record(mat, geometry=geometry))
    assert isolated.shape == (1000, 2) and default.shape == DEFAULT_GEOMETRY.shape


@pytest.mark.parametrize("geometry, phrase", [
    (Geometry(sampling_rate_hz=0), "not positive"),
    (Geometry(window_s=0.0001, sampling_rate_hz=500), "whole number"),
    (Geometry(lead_names=("I", "i")), "twice"),
    (Geometry(lead_names=()), "empty"),
])
def test_impossible_geometry_is_named(geometry, phrase):
    assert phrase in geometry.problem()


def test_geometry_round_trips_through_json():
    geometry = Geometry(250.0, 5.0, ("I", "II", "V1"))
    assert Geometry.from_json(geometry.to_json()) == geometry
    assert DEFAULT_GEOMETRY.to_json()["num_samples"] == 5000
