"""The runner a job gets when the command line names none, in a module that imports no Beam: the
command lines name it in `--help` before loading Beam (see `beam_runner.py`, which applies it)."""

DEFAULT_RUNNER = "FnApiRunner"
"""Beam 2.77's DirectRunner first tries to download the Prism binary, which cannot work offline."""

LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")
DEFAULT_LOCAL_RUNNING_MODE = "multi_threading"
"""Measured fastest on 2 cores (docs/performance.md): zlib and TensorFlow release the GIL, so threads
use both cores, while multi_processing pays for moving record batches between processes."""
