"""Two fixed costs of Beam 2.77's local runner (FnApiRunner), removed for local runs.

Neither depends on the number of records; together they were ~1-2 s of a 5,000-record run's ~17 s
Beam job, all of it on one core (docs/performance.md, "Sixth round"):

- **Signatures inspected again and again.** Beam asks every DoFn whether it uses state or timers
  (`userstate.get_dofn_specs`) when a ParDo is built, translated and set up on a worker: each time it
  runs `inspect.signature` on each of the ~30 methods of the DoFn, nearly all of them `DoFn`'s own
  (`setup`, `display_data`, ...). 1,603 such calls took 1.1 s of CPU in one run. The arguments and
  defaults of a plain function's bound method depend only on the function (its code and defaults,
  which are part of the cache key), so `get_function_args_defaults` keeps them per function here. A
  function whose signature is overridden or wrapped (`__signature__`, `__wrapped__`) or that has
  keyword-only defaults goes Beam's way every time; so does anything that is not a bound method of a
  plain function (Map's user callables, builtins, partials).
- **Two bundles for one element.** With N workers the runner splits every stage's input into N parts
  and runs N bundles, each building its own bundle processor (unpickling and setting up every DoFn of
  the stage), even when the stage holds one element and N-1 parts are empty: ~45 of the job's 52
  stages (file sinks' set-up and finalization, tf.Transform's single-element steps, the listing).
  Measured on a Create -> Map stage: 27-36 ms with two workers, 16 ms with one. A stage whose parts
  past the first would all be empty (and that fires no timers) runs here as the single bundle Beam
  runs with one worker (`BundleManager.process_bundle`, the same path); any stage with more than one
  part of work is split as before.

Both replace private Beam functions, so they are applied only on the pinned Beam version
(`PINNED_BEAM_VERSION`) and only for local runners; elsewhere Beam runs unchanged. Results are the
same either way (`tests/test_local_runner_overheads.py`; the million-element test runs with them).
"""
from __future__ import annotations

import types

import apache_beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.transforms import core

from beam_pipeline.runs.runner_defaults import LOCAL_RUNNERS

PINNED_BEAM_VERSION = "2.77.0"
"""The Beam version these replacements were written and measured against (setup.py pins it)."""

_beam_args_defaults = core.get_function_args_defaults
_beam_parallel_bundle = fn_runner.ParallelBundleManager.process_bundle
_arguments: dict[tuple, tuple[list[str], list]] = {}


def trim_local_overheads(options: PipelineOptions) -> bool:
    """Applies both replacements for a local run on the pinned Beam; True when they are in place.
    Call it before the graph is built (ParDos inspect their DoFns as they are applied)."""
    if apache_beam.__version__ != PINNED_BEAM_VERSION:
        return False
    if str(options.view_as(StandardOptions).runner) not in LOCAL_RUNNERS:
        return False
    core.get_function_args_defaults = function_args_defaults
    fn_runner.ParallelBundleManager.process_bundle = _process_bundle
    return True


def function_args_defaults(f) -> tuple[list[str], list]:
    """`core.get_function_args_defaults`, kept per function for bound methods of plain functions."""
    key = _cache_key(f)
    if key is None:
        return _beam_args_defaults(f)
    if (known := _arguments.get(key)) is None:
        known = _arguments[key] = _beam_args_defaults(f)
    args, defaults = known
    return list(args), list(defaults)  # callers get lists of their own, as from Beam


def _cache_key(f) -> tuple | None:
    """What a bound method's arguments and defaults depend on; None when they may depend on more."""
    if not isinstance(f, types.MethodType) or type(f.__func__) is not types.FunctionType:
        return None
    function = f.__func__
    if function.__kwdefaults__ or "__signature__" in vars(function) or "__wrapped__" in vars(function):
        return None
    key = function, function.__code__, function.__defaults__
    try:
        hash(key)
    except TypeError:  # a default that cannot be a key (a list, a dict): Beam's way
        return None
    return key


def _process_bundle(self, inputs, expected_outputs, fired_timers, expected_output_timers, dry_run=False):
    """`ParallelBundleManager.process_bundle`, as one bundle when only the first part would have work."""
    if not fired_timers and _only_first_part_has_work(inputs, self._num_workers):
        return fn_runner.BundleManager.process_bundle(self, inputs, expected_outputs, fired_timers,
                                                      expected_output_timers, dry_run)
    return _beam_parallel_bundle(self, inputs, expected_outputs, fired_timers, expected_output_timers, dry_run)


def _only_first_part_has_work(inputs, parts: int) -> bool:
    """Whether splitting `inputs` into `parts` the runner's way leaves every part but the first empty.
    (The runner keeps a buffer's partition, so splitting it here costs the split it would make anyway.)"""
    return all(not any(len(chunk) for part in buffer.partition(parts)[1:] for chunk in part)
               for buffer in inputs.values())
