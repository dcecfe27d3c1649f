"""What nightly scoring adds to a reprocessing run: the same new records reprocessed with and without
`--model_dir`, in one invocation, and the difference per 1,000 records.

Builds everything it needs under WORK (a fresh folder): a base run of generated records, a model
trained on it for one epoch with the trainer's default architecture (scoring time depends on the
model's size, not on how well it was trained), and RECORDS new generated recordings. A small warm-up
night (both ways) comes first, so neither measured run pays for the first TensorFlow start or graph
tracing. Then each repeat runs reprocess without and with `--model_dir`, alternating which goes
first, each into its own new ROOT; the figures are the medians over the repeats.

Usage: python bench/nightly_scoring.py [--records 1000] [--repeats 1] [--work DIR]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import tempfile
import time

import trainer  # noqa: F401 - sets TF_USE_LEGACY_KERAS / KERAS_BACKEND before TensorFlow is imported
from beam_pipeline.cli import main_command as pipeline_cli
from beam_pipeline.cli import reprocess_command
from beam_pipeline.synthetic.generator import generate_dataset
from ecg_common.cli import EXIT_OK
from trainer.__main__ import main as train_main

BASE_RECORDS = 40
WARM_UP_RECORDS = 8


def _quietly(command, argv: list[str]) -> int:
    with contextlib.redirect_stdout(io.StringIO()):
        return command(argv)


def _reprocess_s(incoming: str, transform_dir: str, root: str, model_dir: str | None) -> float:
    """Wall seconds of one reprocess run of everything in `incoming` into the new ROOT `root`."""
    argv = ["--incoming", incoming, "--transform_dir", transform_dir, "--output_root", root]
    if model_dir:
        argv += ["--model_dir", model_dir]
    started = time.perf_counter()
    code = _quietly(reprocess_command.main, argv)
    elapsed = time.perf_counter() - started
    if code != EXIT_OK:
        raise SystemExit(f"reprocess {'with' if model_dir else 'without'} --model_dir exited {code}")
    return elapsed


def _records(folder: str, count: int, seed: int) -> str:
    generate_dataset(folder, count, 0, seed=seed)
    return os.path.join(folder, "TRAIN")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--work", help="a folder to build in (default: a temporary one, removed after)")
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="nightly-scoring-")
    try:
        base = os.path.join(work, "base")
        generate_dataset(base, BASE_RECORDS, 0, seed=1)
        out, model = os.path.join(work, "out"), os.path.join(work, "model")
        assert _quietly(pipeline_cli.main, ["--train_dir", os.path.join(base, "TRAIN"), "--labels",
                                            os.path.join(base, "reference.txt"), "--output_dir", out]) == EXIT_OK
        assert _quietly(train_main, ["--data_dir", out, "--model_dir", model, "--epochs", "1"]) == EXIT_OK

        warm_up = _records(os.path.join(work, "warm-up"), WARM_UP_RECORDS, seed=2)
        for name, model_dir in (("warm-without", None), ("warm-with", model)):
            _reprocess_s(warm_up, out, os.path.join(work, name), model_dir)

        incoming = _records(os.path.join(work, "new"), args.records, seed=3)
        without, with_model = [], []
        for repeat in range(args.repeats):
            runs = [(without, None), (with_model, model)]
            for times, model_dir in (runs if repeat % 2 == 0 else runs[::-1]):
                root = os.path.join(work, f"root-{repeat}-{'with' if model_dir else 'without'}")
                times.append(_reprocess_s(incoming, out, root, model_dir))
                shutil.rmtree(root)
        plain, scored = statistics.median(without), statistics.median(with_model)
        per_1000 = (scored - plain) * 1000 / args.records
        print(f"{args.records} new records, {args.repeats} repeat(s), medians (runs: without "
              f"{', '.join(f'{t:.1f}' for t in without)} s; with {', '.join(f'{t:.1f}' for t in with_model)} s)")
        print(f"reprocess without --model_dir: {plain:.1f} s")
        print(f"reprocess with --model_dir:    {scored:.1f} s")
        print(f"nightly scoring adds {per_1000:.1f} s per 1,000 records ({100 * (scored - plain) / plain:.0f}%)")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
