"""The job's counts, each written once: a Beam counter, which the launcher reads when the job is done,
and the same count as data (a tally), which a last step inside the job reads instead (`finish.py`:
Beam counters cannot be read inside a job, and a job launched as a Flex Template has no launcher
left to read them).

A DoFn that counts derives from `TallyingDoFn` and calls `count(name)`; the bundle's tally leaves as
(name, count) on its TALLY_TAG output when the bundle ends, and `finish.sum_tallies` adds them up.
"""
from __future__ import annotations

import collections

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

METRICS_NAMESPACE = "ecg_pipeline"
TALLY_TAG = "tally"


class BundleTally:
    """Counts of one bundle: each `add` increments the Beam counter of that name and the bundle's own
    count, emitted as (name, count) TALLY_TAG outputs by `outputs` when the bundle ends."""

    def __init__(self) -> None:
        self._counts: collections.Counter[str] = collections.Counter()
        self._counters: dict[str, beam.metrics.metric.Metrics.DelegatingCounter] = {}

    def add(self, name: str, count: int = 1) -> None:
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counters[name] = beam.metrics.Metrics.counter(METRICS_NAMESPACE, name)
        counter.inc(count)
        self._counts[name] += count

    def outputs(self):
        """The bundle's counts as windowed outputs for `finish_bundle`, then forgotten."""
        counts, self._counts = self._counts, collections.Counter()
        for name, count in counts.items():
            yield beam.pvalue.TaggedOutput(TALLY_TAG, GlobalWindows.windowed_value((name, count)))


class TallyingDoFn(beam.DoFn):
    """A DoFn whose counts are tallied (see the module docstring); a subclass that overrides
    `start_bundle` or `finish_bundle` calls these too."""

    def start_bundle(self) -> None:
        self._tally = BundleTally()

    def finish_bundle(self):
        yield from self._tally.outputs()

    def count(self, name: str, value: int = 1) -> None:
        self._tally.add(name, value)
