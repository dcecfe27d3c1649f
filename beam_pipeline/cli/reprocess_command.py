"""Command line: `python -m beam_pipeline.reprocess --incoming DIR --transform_dir BASE_OUT --output_root ROOT
[--labels FILE] [--model_dir MODEL] [Beam options]`, the command a scheduler runs every night (see `reprocess_job.py`).

Exit codes, chosen so a scheduler can act on them:
  0   a batch was published, or there was nothing new (no batch written)
  1   the run failed (one-line reason on stderr, traceback in the log; nothing was published), or the
      batch was published but more than --max_error_rate of its files were rejected
  2   usage or configuration error (missing directory, no transform_fn in --transform_dir, a --transform_dir
      other than ROOT's transform, a --model_dir without a version of that transform)
  3   a batch was published, but some leads drifted beyond the limits: look before using it
  75  another run holds the lock on ROOT (EX_TEMPFAIL: nothing done, try again later)
  143/130  stopped by SIGTERM/SIGINT: nothing published, staging and temporary folders removed

Arguments that are not the project's go to Beam once Beam's own options recognize every one of them
(`beam_options.py`): a misspelt option is a usage error (2), never a run that ignored it. The run's
modules (TensorFlow, tf.Transform, Beam's runners) are imported after parsing, inside the functions
that use them, so `--help` and usage errors answer at once.
"""
from __future__ import annotations

import argparse
import os
import sys
import typing

from beam_pipeline.cli.beam_options import parse_with_beam_options
from beam_pipeline.cli.exits import EXIT_LOCKED, run_stoppable
from beam_pipeline.cli.options import (add_record_options, add_robustness_options, check_class_options, decode_options,
                                       write_options)
from beam_pipeline.graph.settings import MEAN_SHIFT_LIMIT_STD, STD_RATIO_LIMIT, DriftLimits
from beam_pipeline.runs.outcome import describe_dry_run, describe_excess
from beam_pipeline.runs.runner_defaults import DEFAULT_RUNNER
from ecg_common.cli import (EXIT_FAILED, EXIT_OK, CommandLineParser, configure_logging, libraries_loading,
                            start_tensorflow)

if typing.TYPE_CHECKING:
    from beam_pipeline.runs.reprocess_job import ReprocessConfig, ReprocessResult

EXIT_DRIFT = 3


def build_parser() -> CommandLineParser:
    parser = CommandLineParser(
        prog="python -m beam_pipeline.reprocess",
        description="Turn the ECG .mat files in --incoming that are new or changed since the last run into one "
                    "batch of TFRecords under --output_root, normalized with the frozen statistics of an earlier "
                    "run (--transform_dir). Nothing is re-analyzed; a run with nothing new writes nothing.",
        epilog=f"Any other option must be one of Apache Beam's pipeline options (--runner, default "
               f"{DEFAULT_RUNNER}; ...) and is passed to Beam. Exit codes: 0 batch "
               f"published or nothing new, 1 run failed or too many files rejected, 2 usage or configuration "
               f"error, {EXIT_DRIFT} batch "
               f"published but drift flagged, {EXIT_LOCKED} another run holds the lock.")
    parser.add_argument("--incoming", required=True,
                        help="folder or bucket prefix where new recordings land: *.mat (and .hea) found recursively")
    parser.add_argument("--transform_dir", required=True,
                        help="output directory of an earlier pipeline run: its transform_fn is applied as is")
    parser.add_argument("--output_root", required=True,
                        help="where batch-<UTC time>/ folders, the ledger and the lock live")
    parser.add_argument("--labels", help="optional labels file; labelled records keep their label")
    parser.add_argument("--model_dir",
                        help="optional: the trainer's --model_dir; its newest version scores the batch into "
                             "predictions.csv before it is published")
    parser.add_argument("--publish_in_job", action="store_true",
                        help="the job's last step writes the summary and report, publishes the batch and installs "
                             "the ledger, for launches where nothing runs after submission (Dataflow Flex "
                             "Templates); on Dataflow the command returns once the job is submitted")
    add_record_options(parser)
    add_robustness_options(parser)
    parser.add_argument("--min_file_age", type=float, default=0.0,
                        help="seconds since a file's last modification before it is taken (default 0); set it "
                             "above an upload's duration when writers do not upload atomically")
    parser.add_argument("--drift_mean_shift", type=float, default=MEAN_SHIFT_LIMIT_STD,
                        help=f"flag a lead whose batch mean moved by more than this many frozen stds "
                             f"(default {MEAN_SHIFT_LIMIT_STD})")
    parser.add_argument("--drift_std_ratio", type=float, default=STD_RATIO_LIMIT,
                        help=f"flag a lead whose batch std is more than this factor above or below the frozen std "
                             f"(default {STD_RATIO_LIMIT})")
    return parser


def _config(args: argparse.Namespace) -> ReprocessConfig:
    from beam_pipeline.runs.reprocess_job import ReprocessConfig

    return ReprocessConfig(
        incoming=args.incoming, transform_dir=args.transform_dir, output_root=args.output_root,
        labels_path=args.labels, normal_labels=args.normal_labels,
        decode=decode_options(args),
        write=write_options(args), max_error_rate=args.max_error_rate,
        min_file_age_s=args.min_file_age, drift_limits=DriftLimits(args.drift_mean_shift, args.drift_std_ratio),
        model_dir=args.model_dir, publish_in_job=args.publish_in_job)


def _report(result: ReprocessResult, config: ReprocessConfig) -> int:
    """One line about what happened, and the exit code that says it to a scheduler."""
    from beam_pipeline.runs.reprocess_job import DATA_SPLIT, Outcome
    from beam_pipeline.runs.run_lock import LOCK_FILE, held_message

    if result.outcome is Outcome.LOCKED:
        print(f"error: {held_message(os.path.join(config.output_root, LOCK_FILE))}", file=sys.stderr)
        return EXIT_LOCKED
    if result.outcome is Outcome.NOTHING_NEW:
        print(f"nothing new in {config.incoming}; no batch written")
        return EXIT_OK
    if result.outcome is Outcome.SUBMITTED:
        print(f"submitted; the job publishes {result.batch_dir} itself if it finds anything new")
        return EXIT_OK
    summary = result.summary
    if result.outcome is Outcome.DRY_RUN:
        print(describe_dry_run(summary))
        return EXIT_OK
    scored = (f", scored by {summary['model']['model_dir']} version {summary['model']['version']}"
              if "model" in summary else "")
    print(f"wrote {result.batch_dir}: examples {summary['examples_written'][DATA_SPLIT]}, rejected "
          f"{summary['rejected_total'][DATA_SPLIT]}{scored}, {summary['wall_time_s']} s")
    code = EXIT_OK
    flagged = summary["drift"]["flagged_leads"]
    if flagged:
        print(f"warning: drift: leads {', '.join(flagged)} of {summary['batch']} are beyond the limits "
              f"({summary['drift']['rule']}); check the units before using this batch", file=sys.stderr)
        code = EXIT_DRIFT
    if summary["error_rate_exceeded"]:
        print(f"error: {describe_excess(summary, result.batch_dir)}", file=sys.stderr)
        code = EXIT_FAILED
    return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, beam_args = parse_with_beam_options(parser, argv)
    check_class_options(parser, args)
    configure_logging("beam_pipeline", args.verbose)
    with libraries_loading():
        start_tensorflow(args.verbose, legacy_keras=True)
        from beam_pipeline.runs.reprocess_job import run_reprocess

    config = _config(args)
    code, result = run_stoppable(lambda: run_reprocess(config, beam_args), "beam_pipeline", config.output_root)
    return code if result is None else _report(result, config)
