"""The option groups both commands share (decoding, limits, output), so a reprocessed batch is decoded
and written exactly as the training records were, and the defaults are written once.

Nothing here imports Beam or TensorFlow: the commands parse, and answer `--help`, before loading them."""
from __future__ import annotations

import argparse
import typing

from beam_pipeline.graph.settings import (DEFAULT_BATCH_SIZE, DEFAULT_GZIP_LEVEL, DEFAULT_MIN_CLASS_COUNT, DecodeOptions,
                                          Labelling, WriteOptions)
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


def add_class_source_options(parser: argparse.ArgumentParser) -> None:
    """Where a multi-label run finds each record's classes (both commands; see `labelling`)."""
    parser.add_argument("--dx_from_header", action="store_true",
                        help="multi-label: a record's classes are the SNOMED CT codes of the '# Dx:' line of its WFDB "
                             ".hea header (CinC convention); replaces --labels")
    parser.add_argument("--multi_label", action="store_true",
                        help="multi-label: the labels file lists each record's classes, every field after the id a "
                             "class name or code (e.g. 'A0001<TAB>AF;RBBB'); implied by --classes")


def add_class_options(parser: argparse.ArgumentParser) -> None:
    """Which classes a multi-label training run learns (the main command; reprocessing uses the training's)."""
    parser.add_argument("--classes", metavar="FILE",
                        help="multi-label: the classes to learn, one per line: a name, a tab, one or more "
                             "comma-separated codes that count as it (e.g. 'RBBB<TAB>59118001,713427006'), or a "
                             "single code; other codes are ignored. Without it the classes are learned")
    parser.add_argument("--min_class_count", type=_positive(int), default=DEFAULT_MIN_CLASS_COUNT,
                        help=f"multi-label without --classes: keep the codes of at least this many training "
                             f"records (default {DEFAULT_MIN_CLASS_COUNT})")


def check_class_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors between the label options (exit 2): one source of classes, no 0/1 mapping in a
    multi-label run."""
    if args.dx_from_header and args.labels:
        parser.error("--dx_from_header reads the classes from the headers: give it or --labels, not both")
    if args.normal_labels and (args.dx_from_header or args.multi_label or getattr(args, "classes", None)):
        parser.error(f"{NORMAL_LABELS_OPTION} maps labels to 0/1; it does not apply to a multi-label run")


def labelling(args: argparse.Namespace) -> Labelling:
    """The multi-label settings of `add_class_source_options` (and `add_class_options`); the classes
    file is read by the run, after Beam is loaded."""
    multi = bool(args.dx_from_header or args.multi_label or getattr(args, "classes", None))
    return Labelling(multi_label=multi, from_header=args.dx_from_header,
                     min_class_count=getattr(args, "min_class_count", DEFAULT_MIN_CLASS_COUNT))


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
    add_class_source_options(parser)


def decode_options(args: argparse.Namespace) -> DecodeOptions:
    """The decoding options of `add_record_options` and `add_robustness_options`, as the pipeline takes them."""
    return DecodeOptions(args.sampling_rate, args.pad_short, args.batch_size,
                         DecodeLimits(args.decode_timeout_s, args.decode_memory_mb), args.reject_flagged,
                         labelling(args), geometry=Geometry(args.target_rate_hz, args.window_s, args.leads),
                         window_stride_s=args.window_stride_s)


def write_options(args: argparse.Namespace) -> WriteOptions:
    """The shard options of `add_record_options`, as the pipeline takes them."""
    return WriteOptions(args.num_shards, args.gzip_level)
