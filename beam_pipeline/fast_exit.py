"""Ending a command's process once its output is written, without the interpreter's teardown."""
from __future__ import annotations

import atexit
import logging
import os
import sys
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    """Runs the atexit hooks (they stop the decoder children and flush what libraries buffer), flushes
    logging and the standard streams, and ends the process with `code`.

    What it skips is CPython's teardown of every imported module and object, which with TensorFlow,
    tf.Transform and Beam loaded takes ~1.4 s (measured at 5,000 records: 8% of the run) and writes
    nothing. Call it only from a `__main__` block, after the command returned its exit code.
    """
    atexit._run_exitfuncs()  # noqa: SLF001 - the interpreter's own hook runner, as at a normal exit
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
