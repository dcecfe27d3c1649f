"""`python -m beam_pipeline.report OUT`: redraw a published output's report (see `build.py`).

The command parses before importing `build` (Beam's file systems, and TensorFlow for the normalized
example), so `--help` and usage errors answer at once."""
from __future__ import annotations

from ecg_common.cli import EXIT_OK, CommandLineParser, add_verbose_flag, exit_now, run_command, start_tensorflow


def build_parser() -> CommandLineParser:
    parser = CommandLineParser(prog="python -m beam_pipeline.report",
                               description="Redraw OUT/report/ from OUT/run_summary.json.",
                               epilog="Exit codes: 0 success, 1 the report could not be drawn, 2 usage error.")
    parser.add_argument("output_dir", help="a pipeline --output_dir")
    add_verbose_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> int:
        start_tensorflow(args.verbose)
        from beam_pipeline.report.build import rebuild

        print(f"wrote {rebuild(args.output_dir)}")
        return EXIT_OK

    return run_command(work, "beam_pipeline", args.verbose)


if __name__ == "__main__":
    exit_now(main())
