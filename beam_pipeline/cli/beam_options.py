"""The arguments of the two pipeline commands that are Beam's, checked against Beam's own options.

Both commands hand every argument that is not the project's to Beam, and Beam parses them leniently:
an option it does not know is logged (`Unparseable argument`) and dropped, so `--test-dir TEST` for
`--test_dir` used to run without the test split and exit 0. Here they are parsed as Beam parses them,
with the options of every registered `PipelineOptions` subclass (standard, direct, Google Cloud,
worker, setup, portable, Flink, Spark, Prism, test for `--dry_run`, ...; `--opt=value` and
`--opt value`, repeatable `--experiments`), and whatever is left is a usage error naming the nearest
valid option.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import NoReturn

from ecg_common.cli import CommandLineParser, option_names, reject_leftovers, usage_error


def beam_parser() -> argparse.ArgumentParser:
    """A parser of every option Beam knows, built as `PipelineOptions.get_all_options` builds its own
    (the first class of each name, Beam's parser class, no abbreviations), whose errors are one line."""
    # Imported here: the commands answer --help before Beam (2-3 s to import) is loaded.
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    class OneLineErrors(_BeamArgumentParser):
        def error(self, message: str) -> NoReturn:  # e.g. --direct_num_workers=abc
            usage_error(message)

    parser = OneLineErrors(allow_abbrev=False, add_help=False)
    classes: dict[str, type] = {}
    for options_class in PipelineOptions.__subclasses__():
        classes.setdefault(str(options_class), options_class)
    for options_class in classes.values():
        options_class._add_argparse_args(parser)  # noqa: SLF001 - how Beam collects its options
    return parser


def parse_with_beam_options(parser: CommandLineParser,
                            argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The project's options and the Beam arguments (unchanged), once every argument is known to one of
    them. `--help` and the project's own usage errors are answered before Beam is imported."""
    leftovers = parser.leftovers(argv)
    if leftovers:
        beam = beam_parser()
        _, unknown = beam.parse_known_args(leftovers)
        reject_leftovers(unknown, option_names(parser) + option_names(beam), parser.prog)
    return parser.parse_known_args(argv)
