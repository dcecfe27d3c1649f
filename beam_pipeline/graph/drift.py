"""Does a new batch look like the data the frozen statistics were learned on?

Reprocessing applies the deployed model's statistics as they are, so a batch in other units (a
file exported in volts instead of millivolts, or with a wrong gain) would be normalized into values
1000 times too small (or too large) without any error; microvolts never get this far, since
decoding refuses values beyond `standardize.MAX_ABS_MV`. The batch's own per-lead mean and standard deviation are therefore
computed in the same Beam pass, over the raw decoded signal (mV, after gain, resampling and
cropping), and compared with the frozen ones. Per-lead moments are merged with Chan's parallel
formula in float64, like tf.Transform's own analyzers, so the figures are comparable.

A lead is flagged when its batch mean moves by more than MEAN_SHIFT_LIMIT_STD frozen standard
deviations, or its batch std is outside [1 / STD_RATIO_LIMIT, STD_RATIO_LIMIT] times the frozen std
(the limits live in `settings.py`, with the other settings the command lines give).
The limits come from the 60 real recordings in `shared/data/real-ecg`: with all CinC 2021 records as
the frozen set, a batch of one source's records (Georgia, Hefei, Ningbo, and CPSC 2018) moved a lead's
mean by at most 0.03 std and kept its std within 0.4x-1.5x, while single records moved the mean up to
0.32 std and the std from 0x (a flat lead) to 4.4x. Unit mistakes are factors of 1000 (uV for mV) or
of an ADC gain (200, 1000), far outside either limit; a one-record batch with a flat lead can trip
the std limit, which deserves a look as well.
"""
from __future__ import annotations

import json
import typing

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.graph.arrow_batches import signal_samples
from beam_pipeline.graph.settings import DriftLimits
from ecg_common.schema import LEAD_NAMES, NUM_LEADS


class LeadMoments(typing.NamedTuple):
    """Count, mean and sum of squared deviations per lead: mergeable without losing precision."""

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, num_leads: int = NUM_LEADS) -> LeadMoments:
        return cls(0, np.zeros(num_leads), np.zeros(num_leads))

    @classmethod
    def of(cls, samples: np.ndarray) -> LeadMoments:
        """Moments of (samples, leads) values, two-pass in float64."""
        values = samples.astype(np.float64)
        mean = values.mean(axis=0) if len(values) else np.zeros(values.shape[-1])
        return cls(len(values), mean, ((values - mean) ** 2).sum(axis=0))

    def merge(self, other: LeadMoments) -> LeadMoments:
        """Chan et al.'s pairwise update: exact for any split of the data."""
        count = self.count + other.count
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / count)
        m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / count)
        return LeadMoments(count, mean, m2)

    def std(self) -> np.ndarray:
        """Population standard deviation, as tf.Transform's `tft.var` computes it."""
        return np.sqrt(self.m2 / self.count)


class LeadMomentsFn(beam.CombineFn):
    """Raw Arrow record batches -> LeadMoments of their `ecg` signal over records and time."""

    def __init__(self, num_leads: int = NUM_LEADS):
        super().__init__()
        self._num_leads = num_leads

    def create_accumulator(self) -> LeadMoments:
        return LeadMoments.empty(self._num_leads)

    def add_input(self, accumulator: LeadMoments, batch) -> LeadMoments:
        return accumulator.merge(LeadMoments.of(signal_samples(batch, self._num_leads)))

    def merge_accumulators(self, accumulators) -> LeadMoments:
        merged = LeadMoments.empty(self._num_leads)
        for accumulator in accumulators:
            merged = merged.merge(accumulator)
        return merged

    def extract_output(self, accumulator: LeadMoments) -> LeadMoments:
        return accumulator


def _to_json(moments: LeadMoments) -> str:
    return json.dumps({"count": moments.count, "mean": moments.mean.tolist(), "m2": moments.m2.tolist()})


@beam.ptransform_fn
def WriteLeadMoments(record_batches, path: str, num_leads: int = NUM_LEADS):  # noqa: N802 (a PTransform)
    """Raw record batches -> one JSON line at `path` with their per-lead moments (count 0 when empty)."""
    return (record_batches
            | "Moments" >> beam.CombineGlobally(LeadMomentsFn(num_leads))
            | "ToJson" >> beam.Map(_to_json)
            | "Write" >> beam.io.WriteToText(path, shard_name_template=""))


def read_lead_moments(path: str) -> LeadMoments:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        row = json.loads(handle.read().decode("utf-8"))
    return LeadMoments(row["count"], np.array(row["mean"]), np.array(row["m2"]))


def drift_report(batch: LeadMoments, frozen_mean: np.ndarray, frozen_std: np.ndarray,
                 limits: DriftLimits = DriftLimits(), leads: tuple[str, ...] = LEAD_NAMES) -> dict:
    """Per lead: the batch's mean and std next to the frozen ones (mV), and whether it is flagged."""
    report = {
        "rule": f"a lead is flagged when |batch mean - frozen mean| > {limits.mean_shift_std} x frozen std, or "
                f"batch std / frozen std is outside [1/{limits.std_ratio}, {limits.std_ratio}]",
        "mean_shift_limit_std": limits.mean_shift_std,
        "std_ratio_limit": limits.std_ratio,
        "samples_per_lead": batch.count,
        "leads": {},
        "flagged_leads": [],
    }
    if batch.count == 0:
        return report
    batch_std = batch.std()
    shift = np.abs(batch.mean - frozen_mean) / frozen_std
    ratio = batch_std / frozen_std
    flagged = (shift > limits.mean_shift_std) | (ratio > limits.std_ratio) | (ratio < 1 / limits.std_ratio)
    for i, lead in enumerate(leads):
        report["leads"][lead] = {
            "batch_mean_mv": float(batch.mean[i]), "batch_std_mv": float(batch_std[i]),
            "frozen_mean_mv": float(frozen_mean[i]), "frozen_std_mv": float(frozen_std[i]),
            "mean_shift_std": float(shift[i]), "std_ratio": float(ratio[i]), "flagged": bool(flagged[i]),
        }
    report["flagged_leads"] = [lead for lead, bad in zip(leads, flagged) if bad]
    return report
