"""Command line: `python -m beam_pipeline --train_dir DIR --labels FILE [--test_dir DIR] --output_dir DIR [Beam options]`.

The project's own options are parsed here; everything else is handed to Beam untouched, so every
standard pipeline option (--runner, --direct_num_workers, --temp_location, ...) works.
Exit codes: 0 success, 1 the run failed (nothing published) or it rejected more than
--max_error_rate of a split's files (output and report published), 2 usage or configuration error.
"""
from __future__ import annotations

import argparse
import logging
import sys
import typing

from beam_pipeline.isolation import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, DecodeLimits
from beam_pipeline.job import DEFAULT_RUNNER, JobConfig, run_job
from beam_pipeline.pipeline import DecodeOptions, WriteOptions
from beam_pipeline.outcome import DEFAULT_MAX_ERROR_RATE, describe_excess, describe_failure
from beam_pipeline.rejections import ConfigurationError
from beam_pipeline.schema import DURATION_S, SAMPLING_RATE_HZ
from beam_pipeline.tfrecord_sink import DEFAULT_GZIP_LEVEL

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
T = typing.TypeVar("T")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m beam_pipeline",
        description="Decode 12-lead ECG .mat files, normalize every lead with tf.Transform statistics of the "
                    "training set, and write sharded GZIP TFRecords plus the transform graph.",
        epilog=f"Any other option is passed to Apache Beam (default --runner={DEFAULT_RUNNER}). "
               "Exit codes: 0 success, 1 run failed, 2 usage or configuration error.")
    parser.add_argument("--train_dir", required=True,
                        help="labelled records: *.mat found recursively; the record id is the file stem")
    parser.add_argument("--labels", required=True,
                        help="labels file: 'id<sep>label' per line (tab, comma or spaces; 0 normal, 1 abnormal); "
                             "header line, BOM, CRLF and blank lines are tolerated")
    parser.add_argument("--test_dir", help="records transformed with the training statistics; labels optional")
    parser.add_argument("--output_dir", required=True, help="where the output contract is written (replaced atomically)")
    add_record_options(parser)
    add_robustness_options(parser)
    return parser


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _positive(kind: type) -> typing.Callable[[str], float | int]:
    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text} is not positive")
        return value
    return parse


def add_robustness_options(parser: argparse.ArgumentParser) -> None:
    """How much bad input a run tolerates, and what one file's decoding may cost."""
    parser.add_argument("--max_error_rate", type=_fraction, default=DEFAULT_MAX_ERROR_RATE,
                        help=f"fail the run (exit 1, after publishing output and report) when more than this "
                             f"fraction of a split's files is rejected (default {DEFAULT_MAX_ERROR_RATE})")
    parser.add_argument("--reject_flagged", action="store_true",
                        help="reject records with a signal-quality flag (flat lead, clipping, noise) instead of only "
                             "counting them")
    parser.add_argument("--decode_timeout_s", type=_positive(float), default=DEFAULT_TIMEOUT_S,
                        help=f"reject a file whose decoding takes longer (default {DEFAULT_TIMEOUT_S:g} s)")
    parser.add_argument("--decode_memory_mb", type=_positive(int), default=DEFAULT_MEMORY_MB,
                        help=f"reject a file whose decoding needs more memory (default {DEFAULT_MEMORY_MB} MB)")


def add_record_options(parser: argparse.ArgumentParser) -> None:
    """Decoding and output options, shared with `beam_pipeline.reprocess` so a batch is decoded as training was."""
    parser.add_argument("--sampling_rate", type=float, default=SAMPLING_RATE_HZ,
                        help=f"sampling rate (Hz) of records without a WFDB .hea header (default {SAMPLING_RATE_HZ}); "
                             f"other rates are resampled to {SAMPLING_RATE_HZ} Hz")
    parser.add_argument("--pad_short", action="store_true",
                        help=f"zero-pad records shorter than {DURATION_S} s at the end instead of rejecting them. "
                             f"Longer records are cropped to their first {DURATION_S} s")
    parser.add_argument("--num_shards", type=int, default=0,
                        help="TFRecord shards per split; 0 (default) lets the runner decide, which keeps memory "
                             "flat; a fixed count makes Beam group all examples first")
    parser.add_argument("--batch_size", type=int, default=32, help="records per Arrow batch fed to tf.Transform")
    parser.add_argument("--gzip_level", type=int, choices=range(4), default=DEFAULT_GZIP_LEVEL,
                        help=f"ISA-L GZIP level of the TFRecord shards, 0 fastest .. 3 smallest (default "
                             f"{DEFAULT_GZIP_LEVEL})")


def decode_options(args: argparse.Namespace) -> DecodeOptions:
    """The decoding options of `add_record_options` and `add_robustness_options`, as the pipeline takes them."""
    return DecodeOptions(args.sampling_rate, args.pad_short, args.batch_size,
                         DecodeLimits(args.decode_timeout_s, args.decode_memory_mb), args.reject_flagged)


def write_options(args: argparse.Namespace) -> WriteOptions:
    """The shard options of `add_record_options`, as the pipeline takes them."""
    return WriteOptions(args.num_shards, args.gzip_level)


def configure_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("beam_pipeline").setLevel(logging.INFO)


def run_reporting_errors(run: typing.Callable[[], T]) -> tuple[int, T | None]:
    """Runs `run`; a failure becomes its exit code and one line on stderr (the traceback goes to the log).

    Returns (EXIT_OK, result), (EXIT_CONFIG, None) for broken configuration or (EXIT_FAILED, None).
    """
    try:
        return EXIT_OK, run()
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG, None
    except Exception as error:  # noqa: BLE001 - the one-line reason; the traceback is in the log above
        logging.getLogger("beam_pipeline").exception("run failed")
        print(f"error: {describe_failure(error)}", file=sys.stderr)
        return EXIT_FAILED, None


def main(argv: list[str] | None = None) -> int:
    args, beam_args = build_parser().parse_known_args(argv)
    configure_logging()
    config = JobConfig(train_dir=args.train_dir, labels_path=args.labels, output_dir=args.output_dir,
                       test_dir=args.test_dir, decode=decode_options(args), write=write_options(args),
                       max_error_rate=args.max_error_rate)
    code, summary = run_reporting_errors(lambda: run_job(config, beam_args))
    if code != EXIT_OK:
        return code
    if summary.get("dry_run"):
        print(f"dry run: built the job ({len(summary['steps'])} steps) on {summary['runner']}; nothing written")
        return EXIT_OK
    print(f"wrote {args.output_dir}: examples {summary['examples_written']}, rejected {summary['rejected_total']}, "
          f"{summary['wall_time_s']} s, peak RSS {summary['peak_rss_mb']['driver']} MB")
    if summary["error_rate_exceeded"]:
        print(f"error: {describe_excess(summary, args.output_dir)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
