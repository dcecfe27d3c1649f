"""Signal-quality flags (`quality.py`) on real, synthetic and deliberately damaged records."""
from __future__ import annotations

import io

import numpy as np
import scipy.io

from beam_pipeline.synthetic.generator import synthesize_record
from ecg_common.schema import LEAD_NAMES, NUM_SAMPLES
from ecg_decode.decoding import quality
from ecg_decode.decoding.decode import decode_record


def _decode(path):
    header = path.with_suffix(".hea")
    return decode_record(path.read_bytes(), header.read_text() if header.exists() else None)


def test_real_recordings_flag_only_the_two_with_dead_leads(real_ecg_dir):
    flagged = {path.stem: quality.assess(_decode(path)) for path in sorted(real_ecg_dir.glob("*/*.mat"))}
    flagged = {rid: flags for rid, flags in flagged.items() if flags}
    assert flagged == {"JS20004": {"flat_lead": ("V2", "V4", "V6")}, "JS20008": {"flat_lead": ("V2", "V4", "V6")}}


def test_synthetic_records_raise_no_flag_and_clipping_them_does():
    for seed in range(40):
        ecg, _ = synthesize_record(np.random.default_rng(seed), seed % 2)
        assert quality.assess(ecg) == {}, seed
        clipped = np.clip(ecg, np.percentile(ecg, 3, axis=0), np.percentile(ecg, 97, axis=0))
        assert quality.assess(clipped) == {"clipped": LEAD_NAMES}, seed


def test_cinc_record_saturating_the_int16_adc_is_clipped(real_ecg_dir):
    base = real_ecg_dir / "cinc2021" / "E07500"
    val = np.clip(scipy.io.loadmat(f"{base}.mat")["val"].astype(np.int64) * 40, -32768, 32767).astype(np.int16)
    header = (base.with_suffix(".hea")).read_text().replace("1000.0(0)", "40000.0(0)")
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"val": val}, format="4")
    flags = quality.assess(decode_record(buffer.getvalue(), header))
    assert set(flags) == {"clipped"} and {"V4", "V5", "V6"} <= set(flags["clipped"])


def test_gross_noise_is_flagged_on_the_noisy_leads_only():
    ecg, _ = synthesize_record(np.random.default_rng(3), 0)
    noisy = ecg.copy()
    noisy[:, [1, 7]] += np.random.default_rng(4).normal(scale=0.3, size=(NUM_SAMPLES, 2)).astype(np.float32)
    assert quality.assess(noisy) == {"noisy": ("II", "V2")}
    estimate = quality.high_frequency_noise_mv(noisy)
    assert 0.25 < estimate[1] < 0.35 and estimate[0] < 0.05  # recovers the added 0.3 mV, ignores the waves


def _noisy_by_the_median(leads: np.ndarray) -> np.ndarray:
    """The noisy flag the way the rule states it: the estimate (two medians) against the threshold."""
    return quality._noise_mv(leads) > quality.NOISY_HF_NOISE_MV


def test_the_noisy_flag_by_counting_is_the_flag_by_the_median(real_ecg_dir):
    real = [np.ascontiguousarray(_decode(path).T) for path in sorted(real_ecg_dir.glob("*/*.mat"))]
    rng = np.random.default_rng(5)
    # Noise scales around the threshold, odd and even numbers of differences, float32 and float64.
    synthetic = [rng.normal(scale=scale, size=(12, samples)).astype(dtype)
                 for scale in np.linspace(0.18, 0.24, 25) for samples in (5000, 5001) for dtype in (np.float32, np.float64)]
    flags = []
    for leads in real + synthetic:
        expected = _noisy_by_the_median(leads)
        np.testing.assert_array_equal(quality._noisy(quality._deviations(leads)), expected)
        flags.extend(expected)
    assert 0 < sum(flags) < len(flags)  # both outcomes were exercised


def _stress_leads(rng) -> list[np.ndarray]:
    """Leads whose first differences sit near what `_surely_quiet` counts: noise around the threshold,
    medians shifted to and past the counted step, spikes, odd and even lengths, float32 and float64."""
    step = float(quality._quiet_step("<f4"))
    leads = []
    for dtype in (np.float32, np.float64):
        for samples in (5000, 5001):
            for scale in np.linspace(0.0, 0.3, 16):
                for shift in (0.0, 0.5 * step, step, 1.5 * step, -2 * step):
                    steps = rng.normal(loc=shift, scale=scale, size=(12, samples - 1))
                    steps[::3] *= 1 + 20 * (rng.random(size=(4, samples - 1)) < 0.3)  # spikes on some leads
                    leads.append(np.concatenate([np.zeros((12, 1)), np.cumsum(steps, axis=1)], axis=1).astype(dtype))
    return leads


def test_the_noisy_flag_with_the_quiet_count_is_the_flag_by_the_median(real_ecg_dir):
    real = [np.ascontiguousarray(_decode(path).T) for path in sorted(real_ecg_dir.glob("*/*.mat"))]
    synthetic = [np.ascontiguousarray(synthesize_record(np.random.default_rng(seed), seed % 2)[0].T)
                 for seed in range(20)]
    vouched, flagged, total = 0, 0, 0
    for leads in real + synthetic + _stress_leads(np.random.default_rng(11)):
        expected = _noisy_by_the_median(leads)
        np.testing.assert_array_equal(quality._noisy_leads(leads), expected)
        quiet = quality._surely_quiet(np.diff(leads, axis=1))
        assert not (quiet & expected).any()  # the count never vouches for a lead the medians flag
        vouched, flagged, total = vouched + quiet.sum(), flagged + expected.sum(), total + quiet.size
    assert 0 < vouched < total - flagged  # the count decided many leads, and left quiet ones to the medians too
    assert flagged > 0


def test_the_quiet_count_stops_where_its_proof_does():
    half = 2499
    step = quality._quiet_step("<f4")
    quiet_mad = quality._largest_quiet_mad("<f4")
    beyond = np.nextafter(step, np.float32(np.inf))
    # Just under half the differences beyond the counted step: vouched for, and indeed not noisy.
    vouched = np.concatenate([np.full(half, beyond), np.zeros(half + 1)]).astype(np.float32)[None, :]
    assert quality._surely_quiet(vouched)[0] and not quality._noisy(quality._step_deviations(vouched))[0]
    # One more beyond it: not vouched for (here the median itself is beyond the step).
    one_more = np.concatenate([np.full(half + 1, beyond), np.zeros(half)]).astype(np.float32)[None, :]
    assert not quality._surely_quiet(one_more)[0]
    # The median at the counted step, the rest just past A from it on either side: noisy, not vouched for.
    noisy = np.concatenate([np.full(half, step - 1.01 * quiet_mad), [step], np.full(half, step + 1.01 * quiet_mad)])
    noisy = noisy.astype(np.float32)[None, :]
    assert quality._noisy(quality._step_deviations(noisy))[0] and not quality._surely_quiet(noisy)[0]
    assert not quality._surely_quiet(np.zeros((1, 2 * half), dtype=np.float32))[0]  # even counts: the medians' way


def test_the_noisy_count_flips_exactly_where_the_estimate_crosses_the_threshold():
    for dtype in ("<f4", "<f8"):
        quiet = quality._largest_quiet_mad(dtype)
        loud = np.nextafter(quiet, np.inf)
        assert quality._noise_of_mad(np.array([quiet]))[0] <= quality.NOISY_HF_NOISE_MV < \
            quality._noise_of_mad(np.array([loud]))[0]
        for middle, expected in [(quiet, False), (loud, True)]:
            # 4999 deviations whose median (the 2500th) is `middle`: the count must agree with the median.
            deviations = np.concatenate([np.zeros(2499), [middle], np.full(2499, 1.0)]).astype(dtype)[None, :]
            assert quality._noisy(deviations)[0] == expected
            assert (quality._noise_of_mad(quality._row_medians(deviations)) > quality.NOISY_HF_NOISE_MV)[0] == expected


def test_one_plateau_is_not_clipping():
    ecg = np.random.default_rng(0).normal(size=(NUM_SAMPLES, 12)).astype(np.float32)
    ecg[100:300, 0] = ecg[:, 0].max() + 1  # one long stretch at the top (a single artefact)
    assert quality.CLIPPED not in quality.assess(ecg)  # (white noise of 1 mV is flagged noisy, rightly)


def test_summary_counts_per_lead_and_caps_ids():
    findings = [{"record_id": f"R{k:04d}", "flags": {"flat_lead": ["V1", "V2"] if k % 2 else ["V1"]}}
                for k in range(quality.SUMMARY_MAX_IDS + 5)]
    summary = quality.summarize(findings)
    assert summary["records_flagged"] == quality.SUMMARY_MAX_IDS + 5
    flat = summary["flat_lead"]
    assert flat["records"] == quality.SUMMARY_MAX_IDS + 5 and flat["record_ids_truncated"]
    assert flat["record_ids"] == [f"R{k:04d}" for k in range(quality.SUMMARY_MAX_IDS)]
    assert flat["by_lead"] == {"V1": quality.SUMMARY_MAX_IDS + 5, "V2": (quality.SUMMARY_MAX_IDS + 5) // 2}
    assert summary["clipped"] == {"records": 0, "by_lead": {}, "record_ids": [], "record_ids_truncated": False}


def test_row_medians_equal_numpys_for_odd_and_even_lengths():
    rng = np.random.default_rng(7)
    for length in (1, 2, 7, 8, NUM_SAMPLES - 1, NUM_SAMPLES):
        rows = rng.normal(size=(len(LEAD_NAMES), length)).astype(np.float32)
        rows[0] = 0.25  # ties
        np.testing.assert_array_equal(quality._row_medians(rows), np.median(rows, axis=1).astype(np.float32))
