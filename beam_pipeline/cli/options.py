"""The option groups both commands share (decoding, limits, output), so a reprocessed batch is decoded
and written exactly as the training records were, and the defaults are written once.

Nothing here imports Beam or TensorFlow: the commands parse, and answer `--help`, before loading them."""
from __future__ import annotations

import argparse
import typing

from beam_pipeline.graph.settings import DEFAULT_BATCH_SIZE, DEFAULT_GZIP_LEVEL, DecodeOptions, WriteOptions
from beam_pipeline.inputs.option_names import NORMAL_LABELS_OPTION
from beam_pipeline.runs.outcome import DEFAULT_MAX_ERROR_RATE
from ecg_common.cli import add_verbose_flag
from ecg_common.schema import DURATION_S, LEAD_NAMES, SAMPLING_RATE_HZ, Geometry, canonical_lead
from ecg_decode.sandbox.protocol import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, DecodeLimits


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
    add_verbose_flag(parser)
    parser.add_argument("--decode_memory_mb", type=_positive(int), default=DEFAULT_MEMORY_MB,
                        help=f"reject a file whose decoding needs more memory (default {DEFAULT_MEMORY_MB} MB)")


def _class_values(text: str) -> tuple[str, ...]:
    values = tuple(value.strip() for value in text.split(","))
    if not all(values):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of label values")
    return values


def add_label_options(parser: argparse.ArgumentParser) -> None:
    """How the labels file's values become 0/1 (read as `args.normal_labels`, a tuple, empty by default)."""
    parser.add_argument(NORMAL_LABELS_OPTION, type=_class_values, default=(), metavar="VALUES",
                        help="the labels file holds class names or numbers instead of 0/1 (e.g. CPSC 2018 "
                             "REFERENCE.csv, where 1 is Normal: --normal_labels 1): these values, comma-separated, "
                             "mean normal (0), every other value abnormal (1); only the first label column counts")


def _lead_list(text: str) -> tuple[str, ...]:
    """`I,II,V1` -> ('I', 'II', 'V1'), standard names spelled as in LEAD_NAMES (`avr` -> `aVR`)."""
    leads = tuple(canonical_lead(lead) for lead in text.split(","))
    if not all(leads):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of lead names")
    if len({lead.lower() for lead in leads}) != len(leads):
        raise argparse.ArgumentTypeError(f"{text!r} names a lead twice")
    return leads


def add_record_options(parser: argparse.ArgumentParser) -> None:
    """Decoding, labels and output options, shared with `beam_pipeline.reprocess` so a batch is decoded (and its
    labels read) as training was."""
    parser.add_argument("--sampling_rate", type=float, default=SAMPLING_RATE_HZ,
                        help=f"sampling rate (Hz) of records without a WFDB .hea header (default {SAMPLING_RATE_HZ}); "
                             f"other rates are resampled to --target_rate_hz")
    parser.add_argument("--target_rate_hz", type=_positive(float), default=SAMPLING_RATE_HZ,
                        help=f"every record is resampled to this rate (polyphase, anti-aliased; default "
                             f"{SAMPLING_RATE_HZ}), so ecg has shape [window_s x rate, leads]")
    parser.add_argument("--window_s", type=_positive(float), default=DURATION_S,
                        help=f"seconds per example (default {DURATION_S}); a record shorter than this is rejected "
                             f"(too_short) unless --pad_short")
    parser.add_argument("--window_stride_s", type=_positive(float), default=None,
                        help="cut every window of --window_s seconds starting at 0, T, 2T, ... (a record of D s "
                             "gives floor((D - S) / T) + 1 examples, each with record_id, window_index and "
                             "window_start_s); default: one window per record, its first")
    parser.add_argument("--leads", type=_lead_list, default=LEAD_NAMES, metavar="I,II,...",
                        help=f"the leads ecg holds, in this order, by name from the header (any case; by the standard "
                             f"order for records without names); a record missing one is rejected (missing_lead), "
                             f"extra leads are dropped (default {','.join(LEAD_NAMES)})")
    parser.add_argument("--pad_short", action="store_true",
                        help="zero-pad records shorter than one window at the end instead of rejecting them. "
                             f"Longer records are cropped to their first window (first {DURATION_S} s by default) "
                             "unless --window_stride_s")
    parser.add_argument("--num_shards", type=int, default=0,
                        help="TFRecord shards per split; 0 (default) lets the runner decide, which keeps memory "
                             "flat; a fixed count makes Beam group all examples first")
    parser.add_argument("--batch_size", type=_positive(int), default=DEFAULT_BATCH_SIZE,
                        help=f"records per Arrow batch fed to tf.Transform (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--gzip_level", type=int, choices=range(4), default=DEFAULT_GZIP_LEVEL,
                        help=f"ISA-L GZIP level of the TFRecord shards, 0 fastest .. 3 smallest (default "
                             f"{DEFAULT_GZIP_LEVEL})")
    add_label_options(parser)


def decode_options(args: argparse.Namespace) -> DecodeOptions:
    """The decoding options of `add_record_options` and `add_robustness_options`, as the pipeline takes them."""
    return DecodeOptions(args.sampling_rate, args.pad_short, args.batch_size,
                         DecodeLimits(args.decode_timeout_s, args.decode_memory_mb), args.reject_flagged,
                         Geometry(args.target_rate_hz, args.window_s, args.leads), args.window_stride_s)


def write_options(args: argparse.Namespace) -> WriteOptions:
    """The shard options of `add_record_options`, as the pipeline takes them."""
    return WriteOptions(args.num_shards, args.gzip_level)
