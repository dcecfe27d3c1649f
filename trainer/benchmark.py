"""`python -m trainer.benchmark --data_dir OUT`: is the input pipeline ever what training waits on?

Measures on the training split, each alone:
- input, from the shards: examples/s of the training `input_fn` (filter, shuffle, batch, parse,
  prefetch) reading and decompressing the GZIP shards, as every epoch does when the set does not
  fit in memory (and as `fill_cache` does once, before training, when it does);
- input, cached: the same from memory, as every epoch of a set that fits;
- model: training steps/s of the default model on one batch held in memory (free input).
Input examples/s must exceed the model's examples/s (steps/s x batch size).
TensorFlow is imported inside the measurements, so the command parses (and answers `--help`) first.
"""
from __future__ import annotations

import json
import sys
import time

from ecg_common.cli import EXIT_OK, CommandLineParser, add_verbose_flag, run_command, start_tensorflow
from ecg_common.schema import TRAIN_SPLIT
from trainer.config import TrainConfig


def input_examples_per_second(data_dir: str, batch_size: int, seed: int = 0) -> dict[str, float]:
    """Examples/s of the training input alone: one pass from the shards, then the best of 3 from the cache."""
    import tensorflow as tf

    from trainer import inputs

    files = inputs.split_files(data_dir, TRAIN_SPLIT)
    spec = inputs.parsing_spec(inputs.load_transform_output(data_dir))
    records = inputs.scan_records(files)
    train_ids = {r.record_id for r in records} - inputs.validation_ids(records, TrainConfig.val_fraction)

    def rate(examples: tf.data.Dataset) -> float:
        dataset = inputs.to_keras(inputs.input_fn(examples, spec, batch_size, record_ids=train_ids, shuffle=True,
                                                  seed=seed, shuffle_buffer=min(len(train_ids), 1024)))
        start, count = time.perf_counter(), 0
        for ecg, _label in dataset:
            count += int(ecg.shape[0])
        return count / (time.perf_counter() - start)

    from_shards = rate(inputs.read_examples(files, shuffle=True, seed=seed))
    cached = inputs.read_examples(files, cache=True)
    inputs.fill_cache(cached)
    return {"shards": from_shards, "cached": max(rate(cached) for _ in range(3))}


def model_steps_per_second(batch_size: int, steps: int = 40, config: TrainConfig = TrainConfig()) -> float:
    """Training steps/s of the model on a batch already in memory: its speed with a free input."""
    import tensorflow as tf

    from trainer.model import build_model

    model = build_model(config.filters, config.kernel_size, config.dropout, config.learning_rate)
    ecg = tf.random.stateless_normal([batch_size, *model.input_shape[1:]], seed=[1, 2])
    label = tf.cast(tf.range(batch_size) % 2, tf.float32)
    batch = tf.data.Dataset.from_tensors((ecg, label)).cache()
    model.fit(batch.repeat(5), verbose=0, shuffle=False)  # trace and warm up
    start = time.perf_counter()
    model.fit(batch.repeat(steps), verbose=0, shuffle=False)
    return steps / (time.perf_counter() - start)


def measure(data_dir: str, batch_size: int) -> dict:
    input_rates = input_examples_per_second(data_dir, batch_size)
    steps = model_steps_per_second(batch_size)
    model_rate = steps * batch_size
    return {
        "batch_size": batch_size,
        "input_examples_per_second_from_shards": round(input_rates["shards"], 1),
        "input_examples_per_second_cached": round(input_rates["cached"], 1),
        "model_train_steps_per_second": round(steps, 2),
        "model_train_examples_per_second": round(model_rate, 1),
        "input_headroom_from_shards": round(input_rates["shards"] / model_rate, 2),
        "input_headroom_cached": round(input_rates["cached"] / model_rate, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = CommandLineParser(prog="python -m trainer.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True, help="the pipeline's --output_dir")
    parser.add_argument("--batch_size", type=int, default=TrainConfig.batch_size)
    add_verbose_flag(parser)
    args = parser.parse_args(argv)

    def work() -> int:
        start_tensorflow(args.verbose)
        print(json.dumps(measure(args.data_dir, args.batch_size), indent=2))
        return EXIT_OK

    return run_command(work, "trainer", args.verbose)


if __name__ == "__main__":
    sys.exit(main())
