"""Per-lead batch moments (merged like tf.Transform's analyzers) and the drift flags."""
import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that

from beam_pipeline.graph.arrow_batches import DecodedRecord, to_record_batch
from beam_pipeline.graph.drift import DriftLimits, LeadMoments, LeadMomentsFn, drift_report
from ecg_common.schema import ECG_SHAPE, LEAD_NAMES, NUM_LEADS

FROZEN_MEAN = np.linspace(-0.5, 0.5, NUM_LEADS)
FROZEN_STD = np.linspace(0.1, 0.4, NUM_LEADS)


def _records(rng, n, scale=1.0):
    return [(rng.normal(size=ECG_SHAPE) * FROZEN_STD + FROZEN_MEAN) * scale for _ in range(n)]


def test_moments_merged_in_any_split_equal_numpy():
    rng = np.random.default_rng(1)
    values = rng.normal(3.0, 0.01, size=(10_001, NUM_LEADS))  # large mean, small spread: cancellation-prone
    merged = LeadMoments.of(values[:17]).merge(LeadMoments.of(values[17:5000])).merge(LeadMoments.of(values[5000:]))
    assert merged.count == len(values)
    np.testing.assert_allclose(merged.mean, values.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(merged.std(), values.std(axis=0), rtol=1e-9)
    with_empty = LeadMoments.empty().merge(merged)
    assert with_empty.count == merged.count
    np.testing.assert_array_equal(with_empty.mean, merged.mean)
    np.testing.assert_array_equal(with_empty.m2, merged.m2)


def test_combiner_over_arrow_batches_in_a_pipeline():
    rng = np.random.default_rng(2)
    signals = [s.astype(np.float32) for s in _records(rng, 5)]
    batches = [to_record_batch([DecodedRecord(f"r{i}", -1, s) for i, s in enumerate(signals[:3])]),
               to_record_batch([DecodedRecord(f"r{i}", -1, s) for i, s in enumerate(signals[3:])])]
    expected = np.concatenate(signals).astype(np.float64)

    def check(outputs):
        (moments,) = outputs
        assert moments.count == len(expected)
        np.testing.assert_allclose(moments.mean, expected.mean(axis=0), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(moments.std(), expected.std(axis=0), rtol=1e-9)

    with beam.Pipeline("FnApiRunner") as pipeline:
        assert_that(pipeline | beam.Create(batches) | beam.CombineGlobally(LeadMomentsFn()), check)


def test_a_batch_like_the_training_data_is_not_flagged():
    batch = LeadMoments.of(np.concatenate(_records(np.random.default_rng(3), 4)))
    report = drift_report(batch, FROZEN_MEAN, FROZEN_STD)
    assert report["flagged_leads"] == []
    assert set(report["leads"]) == set(LEAD_NAMES)
    lead = report["leads"]["V1"]
    assert lead["frozen_std_mv"] == pytest.approx(FROZEN_STD[6]) and lead["batch_std_mv"] == pytest.approx(
        FROZEN_STD[6], rel=0.05)


def test_a_batch_in_microvolts_is_flagged_on_every_lead():
    batch = LeadMoments.of(np.concatenate(_records(np.random.default_rng(4), 2, scale=1000.0)))
    report = drift_report(batch, FROZEN_MEAN, FROZEN_STD)
    assert report["flagged_leads"] == list(LEAD_NAMES)
    assert all(lead["std_ratio"] == pytest.approx(1000, rel=0.05) for lead in report["leads"].values())


def test_limits_apply_on_both_sides_and_to_the_mean():
    base = np.concatenate(_records(np.random.default_rng(5), 2))
    limits = DriftLimits(mean_shift_std=1.0, std_ratio=4.0)
    shrunk = drift_report(LeadMoments.of((base - FROZEN_MEAN) / 5 + FROZEN_MEAN), FROZEN_MEAN, FROZEN_STD, limits)
    assert shrunk["flagged_leads"] == list(LEAD_NAMES), "a std 5x too small is flagged"
    shifted = base.copy()
    shifted[:, 0] += 2 * FROZEN_STD[0]
    assert drift_report(LeadMoments.of(shifted), FROZEN_MEAN, FROZEN_STD, limits)["flagged_leads"] == ["I"]


def test_an_empty_batch_has_no_statistics_and_no_flags():
    report = drift_report(LeadMoments.empty(), FROZEN_MEAN, FROZEN_STD)
    assert report["samples_per_lead"] == 0 and report["leads"] == {} and report["flagged_leads"] == []
