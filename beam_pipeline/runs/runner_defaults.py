"""The runner a job gets when the command line names none, in a module that imports no Beam: the
command lines name it in `--help` before loading Beam (see `beam_runner.py`, which applies it)."""

DEFAULT_RUNNER = "FnApiRunner"
"""Beam 2.77's DirectRunner first tries to download the Prism binary, which cannot work offline."""

LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")
DEFAULT_LOCAL_RUNNING_MODE = "in_memory"
"""Bundles on one thread per worker (`--direct_num_workers`, default one per core) in this process, with
no gRPC data channel: Beam 2.77's `multi_threading` mode loses elements of large collections through
its data channel's timer flush (docs/beam-multithreading-loss.md), `in_memory` has no such channel and
is as fast here (docs/performance.md). `multi_processing` pays for moving record batches between
processes."""

DATAFLOW_RUNNER = "DataflowRunner"
