"""What both command lines share: logging set-up and turning failures into one line and an exit code."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from beam_pipeline.rejections import ConfigurationError

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true", help="log debug detail, with the traceback of a failure")


def run_cli(work: Callable[[], int], verbose: bool = False) -> int:
    """Runs `work`; a ConfigurationError exits 2 and anything else 1, each with a single stderr line.

    The traceback of an unexpected failure is logged only with --verbose: the user gets one line
    saying what failed, a developer asks for the rest.
    """
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("trainer").setLevel(logging.DEBUG if verbose else logging.INFO)
    try:
        return work()
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as error:  # noqa: BLE001 - one line for the user; the traceback is in the debug log
        logging.getLogger("trainer").debug("run failed", exc_info=True)
        detail = str(error).splitlines()[0] if str(error) else ""
        print(f"error: run failed: {type(error).__name__}: {detail}", file=sys.stderr)
        return EXIT_FAILED
