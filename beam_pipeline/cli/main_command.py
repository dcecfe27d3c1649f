"""Command line: `python -m beam_pipeline --train_dir DIR --labels FILE [--test_dir DIR] --output_dir DIR [Beam options]`.

The project's own options are parsed here; the other arguments go to Beam unchanged once Beam's own
options recognize every one of them (`beam_options.py`), so every standard pipeline option
(--runner, --direct_num_workers, --temp_location, ...) works and a misspelt one stops the run.
TensorFlow, tf.Transform and Beam's runners are loaded only after parsing, so `--help` and usage
errors answer at once.
Exit codes: 0 success, 1 the run failed (nothing published) or it rejected more than
--max_error_rate of a split's files (output and report published), 2 usage or configuration error
(an --output_dir that is not new or an earlier output included), 75 another run holds the output's
lock, 143/130 stopped by SIGTERM/SIGINT (see `exits.py`).
"""
from __future__ import annotations

import sys

from beam_pipeline.cli.beam_options import parse_with_beam_options
from beam_pipeline.cli.exits import run_stoppable
from beam_pipeline.cli.options import (add_class_options, add_record_options, add_robustness_options,
                                       check_class_options, decode_options, write_options)
from beam_pipeline.runs.outcome import describe_dry_run, describe_excess
from beam_pipeline.runs.runner_defaults import DEFAULT_RUNNER
from ecg_common.cli import (EXIT_FAILED, EXIT_OK, CommandLineParser, configure_logging, libraries_loading,
                            start_tensorflow)


def build_parser() -> CommandLineParser:
    parser = CommandLineParser(
        prog="python -m beam_pipeline",
        description="Decode 12-lead ECG .mat files, normalize every lead with tf.Transform statistics of the "
                    "training set, and write sharded GZIP TFRecords plus the transform graph.",
        epilog=f"Any other option must be one of Apache Beam's pipeline options (--runner, default "
               f"{DEFAULT_RUNNER}; --direct_num_workers, --temp_location, ...) and is passed to Beam. "
               "Exit codes: 0 success, 1 run failed, 2 usage or configuration error, 75 another run holds the "
               "output's lock, 143/130 stopped by SIGTERM/SIGINT.")
    parser.add_argument("--train_dir", required=True,
                        help="labelled records: *.mat found recursively; the record id is the file stem")
    parser.add_argument("--labels",
                        help="labels file: 'id<sep>label' per line (tab, comma or spaces; 0 normal, 1 abnormal); "
                             "header line, BOM, CRLF and blank lines are tolerated; required unless --dx_from_header")
    parser.add_argument("--test_dir", help="records transformed with the training statistics; labels optional")
    parser.add_argument("--output_dir", required=True,
                        help="where the output contract is written: a new path, or an earlier output of this "
                             "pipeline (replaced atomically); anything else is refused")
    parser.add_argument("--publish_in_job", action="store_true",
                        help="the job's last step writes the summary and report and publishes the output, for "
                             "launches where nothing runs after submission (Dataflow Flex Templates); on Dataflow "
                             "the command returns once the job is submitted")
    add_record_options(parser)
    add_class_options(parser)
    add_robustness_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, beam_args = parse_with_beam_options(parser, argv)
    if args.labels is None and not args.dx_from_header:
        parser.error("the following arguments are required: --labels (or --dx_from_header)")
    check_class_options(parser, args)
    configure_logging("beam_pipeline", args.verbose)
    with libraries_loading():
        start_tensorflow(args.verbose, legacy_keras=True)
        from beam_pipeline.runs.job import JobConfig, run_job  # after parsing: loads tf.Transform and Beam's runners

    config = JobConfig(train_dir=args.train_dir, labels_path=args.labels, output_dir=args.output_dir,
                       test_dir=args.test_dir, decode=decode_options(args), write=write_options(args),
                       max_error_rate=args.max_error_rate, normal_labels=args.normal_labels,
                       classes_path=args.classes, publish_in_job=args.publish_in_job)
    code, summary = run_stoppable(lambda: run_job(config, beam_args), "beam_pipeline", args.output_dir)
    if code != EXIT_OK:
        return code
    if summary.get("dry_run"):
        print(describe_dry_run(summary))
        return EXIT_OK
    if summary.get("submitted"):
        print(f"submitted to {summary['runner']}: the job publishes {args.output_dir} itself when it is done")
        return EXIT_OK
    print(f"wrote {args.output_dir}: examples {summary['examples_written']}, rejected {summary['rejected_total']}, "
          f"{summary['wall_time_s']} s, peak RSS {summary['peak_rss_mb']['driver']} MB")
    if summary["error_rate_exceeded"]:
        print(f"error: {describe_excess(summary, args.output_dir)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
