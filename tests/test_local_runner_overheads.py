"""`runs/local_runner_overheads.py`: Beam's answers unchanged, one bundle for a stage of one element.

The replacements are process-wide once applied (as in a run), so every test here applies them; the
million-element test (`test_large_collections.py`) runs through them too.
"""
from __future__ import annotations

import functools

import apache_beam as beam
import pytest
from apache_beam.metrics import Metrics, MetricsFilter
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import core, userstate

from beam_pipeline.runs import local_runner_overheads as overheads
from beam_pipeline.runs.beam_runner import pipeline_options


class _Plain(beam.DoFn):
    def process(self, element, timestamp=beam.DoFn.TimestampParam):
        yield element, timestamp


class _Stateful(beam.DoFn):
    SEEN = userstate.BagStateSpec("seen", beam.coders.VarIntCoder())

    def process(self, element, seen=beam.DoFn.StateParam(SEEN)):
        seen.add(element[1])
        yield element


class _Bundles(beam.DoFn):
    """Counts its bundles (start_bundle calls) in a Beam counter."""

    def __init__(self):
        self._bundles = Metrics.counter("test", "bundles")

    def start_bundle(self):
        self._bundles.inc()

    def process(self, element):
        yield element


def _applied() -> None:
    assert overheads.trim_local_overheads(pipeline_options([]))
    assert core.get_function_args_defaults is overheads.function_args_defaults


def test_arguments_and_defaults_are_beams_own_for_every_kind_of_callable():
    _applied()

    def wrapper(element, side=3):
        return element

    wrapped = functools.wraps(wrapper)(lambda element: element)
    callables = [_Plain().process, _Stateful().process, _Plain().setup, _Bundles().start_bundle,
                 wrapper, wrapped, functools.partial(wrapper, side=1), len, lambda x, y=beam.DoFn.WindowParam: x]
    for f in callables * 2:  # the second round from the cache where there is one
        assert overheads.function_args_defaults(f) == overheads._beam_args_defaults(f), f
    args, defaults = overheads.function_args_defaults(_Plain().process)
    args.append("mutated")  # a caller's lists are its own
    defaults.clear()
    assert overheads.function_args_defaults(_Plain().process) == (["element", "timestamp"], [beam.DoFn.TimestampParam])


def test_a_method_with_an_unhashable_default_goes_beams_way():
    _applied()

    class Listed(beam.DoFn):
        def process(self, element, seen=[], options={}):  # noqa: B006 - the unhashable defaults are the point
            yield element

    assert overheads._cache_key(Listed().process) is None
    assert overheads.function_args_defaults(Listed().process) == (["element", "seen", "options"], [[], {}])
    assert userstate.get_dofn_specs(Listed()) == (set(), set())


def test_a_function_whose_defaults_change_is_inspected_again():
    _applied()

    class Changing(beam.DoFn):
        def process(self, element, timestamp=beam.DoFn.TimestampParam):
            yield element

    assert overheads.function_args_defaults(Changing().process)[1] == [beam.DoFn.TimestampParam]
    Changing.process.__defaults__ = (beam.DoFn.WindowParam,)
    assert overheads.function_args_defaults(Changing().process)[1] == [beam.DoFn.WindowParam]


def test_state_and_timer_specs_are_found_as_before():
    _applied()
    assert userstate.get_dofn_specs(_Stateful()) == ({_Stateful.SEEN}, set())
    assert userstate.get_dofn_specs(_Plain()) == (set(), set())
    assert userstate.is_stateful_dofn(_Stateful()) and not userstate.is_stateful_dofn(_Plain())


def _bundles(elements: list[int]) -> int:
    """Runs `elements` through a counted stage (checking its output); the bundles it ran."""
    pipeline = beam.Pipeline(options=pipeline_options([]))  # in_memory, one worker per core (2 here)
    doubled = (pipeline | beam.Create(elements) | beam.ParDo(_Bundles())  # after Create's shuffle
               | beam.Map(lambda x: x * 2))
    assert_that(doubled, equal_to([2 * x for x in elements]))
    result = pipeline.run()
    result.wait_until_finish()
    [counter] = result.metrics().query(MetricsFilter().with_name("bundles"))["counters"]
    return counter.committed


def test_a_stage_of_one_element_runs_as_one_bundle_and_larger_ones_are_still_split(monkeypatch):
    _applied()
    assert fn_runner.ParallelBundleManager.process_bundle is overheads._process_bundle
    assert _bundles([7]) == 1
    assert _bundles(list(range(1000))) == 2  # split over both workers as before
    monkeypatch.setattr(fn_runner.ParallelBundleManager, "process_bundle", overheads._beam_parallel_bundle)
    assert _bundles([7]) == 2  # Beam's own: a second bundle with nothing in it


def test_nothing_is_replaced_for_remote_runners_or_another_beam(monkeypatch):
    monkeypatch.setattr(core, "get_function_args_defaults", overheads._beam_args_defaults)
    monkeypatch.setattr(fn_runner.ParallelBundleManager, "process_bundle", overheads._beam_parallel_bundle)
    assert not overheads.trim_local_overheads(pipeline_options(["--runner=DataflowRunner"]))
    monkeypatch.setattr(overheads.apache_beam, "__version__", "2.78.0")
    assert not overheads.trim_local_overheads(pipeline_options([]))
    assert core.get_function_args_defaults is overheads._beam_args_defaults
    assert fn_runner.ParallelBundleManager.process_bundle is overheads._beam_parallel_bundle


@pytest.mark.parametrize("workers", [1, 2])
def test_a_grouped_stage_of_one_key_keeps_all_its_values(workers):
    _applied()
    pipeline = beam.Pipeline(options=pipeline_options([f"--direct_num_workers={workers}"]))
    grouped = (pipeline | beam.Create([("k", i) for i in range(50)]) | beam.GroupByKey()
               | beam.MapTuple(lambda key, values: (key, sorted(values))))
    assert_that(grouped, equal_to([("k", list(range(50)))]))
    pipeline.run().wait_until_finish()


def test_a_methods_signature_is_inspected_once_for_every_instance(monkeypatch):
    _applied()
    inspected = []
    beam_own = overheads._beam_args_defaults
    monkeypatch.setattr(overheads, "_beam_args_defaults", lambda f: inspected.append(f) or beam_own(f))
    monkeypatch.setattr(overheads, "_arguments", {})

    class Fresh(beam.DoFn):
        def process(self, element):
            yield element

    for _ in range(3):
        userstate.get_dofn_specs(Fresh())
    assert [f.__func__ for f in inspected].count(Fresh.process) == 1
    assert len(inspected) == len(set(f.__func__ for f in inspected))  # every method once, not once a DoFn
