"""The job's last step, for launches where nothing runs after submission (`--publish_in_job`, e.g. a
Dataflow Flex Template): it waits for every output of the job, then hands the job's own counts
(`tally`) and the report candidates to a `finish` callable, which writes the summary and publishes.

The Beam counters the launcher reads after a job are not readable inside it, so the counts the run
summary needs also travel as data (`counts.py`: every count is a counter and a tally), summed here
per name. The graph only wires this; what `finish` does
(summary, reconciliation, report, publishing) is the runs layer's (`runs/job.py`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import apache_beam as beam


def sum_tallies(tallies: Iterable[beam.PCollection]) -> beam.PCollection:
    """Every (name, count) of `tallies`, summed per name."""
    return tuple(tallies) | "AllTallies" >> beam.Flatten() | "SumTallies" >> beam.CombinePerKey(sum)


class _FinishFn(beam.DoFn):
    def __init__(self, finish: Callable[[Mapping[str, int], list], None]):
        self._finish = finish

    def process(self, _, tally, candidates, *done):
        self._finish(dict(tally), list(candidates))
        yield "finished"


def finish_in_job(root, tally: beam.PCollection, candidates: beam.PCollection, done: list[beam.PCollection],
                  finish: Callable[[Mapping[str, int], list], None]) -> beam.PCollection:
    """Runs `finish(counts, report candidates)` once, after every PCollection of `done` is complete
    (each is a side input of the step, so the step cannot start before them)."""
    return (root | "Finish" >> beam.Create([None])
            | "WriteSummaryAndPublish" >> beam.ParDo(
                _FinishFn(finish), beam.pvalue.AsDict(tally), beam.pvalue.AsSingleton(candidates, default_value=[]),
                *[beam.pvalue.AsList(step) for step in done]))
