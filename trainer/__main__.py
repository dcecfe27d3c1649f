"""`python -m trainer --data_dir OUT --model_dir MODEL [--epochs N] [--batch_size B] [--learning_rate R] [--seed S]`.

Exit codes (as the pipeline's CLI): 0 success, 1 the run failed, 2 usage or configuration error
(an unknown option, a missing data dir, an output that is not the pipeline's, a training set without
both classes). TensorFlow is loaded after parsing, so `--help` and usage errors answer at once.
"""
from __future__ import annotations

import argparse

from ecg_common.cli import EXIT_OK, CommandLineParser, add_verbose_flag, exit_now, run_command, start_tensorflow
from trainer.config import TrainConfig
from trainer.evaluation import THRESHOLD_CRITERIA

_DEFAULTS = TrainConfig()


def _filters(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive filter counts, got {text!r}")
    return values


def build_parser() -> CommandLineParser:
    parser = CommandLineParser(
        prog="python -m trainer",
        description="Train the ECG classifier on the pipeline's output and export a SavedModel that takes raw ECGs.",
        epilog="Writes MODEL/serving/ (SavedModel), MODEL/model.keras, MODEL/metrics.json and MODEL/logs/ "
               "(TensorBoard). Exit codes: 0 success, 1 run failed, 2 usage or configuration error.")
    parser.add_argument("--data_dir", required=True, help="the pipeline's --output_dir")
    parser.add_argument("--model_dir", required=True, help="where the model, metrics and logs are written")
    parser.add_argument("--extra_data", action="append", default=[], metavar="ROOT",
                        help="also train on the batches under this reprocessing root (repeatable; trainer/sources.py)")
    parser.add_argument("--epochs", type=int, default=_DEFAULTS.epochs, help="maximum epochs (early stopping on "
                        f"validation AUC usually ends sooner; default {_DEFAULTS.epochs})")
    parser.add_argument("--batch_size", type=int, default=_DEFAULTS.batch_size)
    parser.add_argument("--learning_rate", type=float, default=_DEFAULTS.learning_rate, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="seeds weights, shuffling and dropout")
    parser.add_argument("--val_fraction", type=float, default=_DEFAULTS.val_fraction,
                        help="share of each class of TRAIN held out for validation (chosen by record id hash)")
    parser.add_argument("--patience", type=int, default=_DEFAULTS.patience,
                        help="epochs without a better validation AUC before stopping")
    parser.add_argument("--filters", type=_filters, default=_DEFAULTS.filters,
                        help="filters of the stride-2 conv blocks, comma-separated "
                             f"(default {','.join(map(str, _DEFAULTS.filters))})")
    parser.add_argument("--kernel_size", type=int, default=_DEFAULTS.kernel_size)
    parser.add_argument("--dropout", type=float, default=_DEFAULTS.dropout)
    parser.add_argument("--threshold_criterion", choices=THRESHOLD_CRITERIA, default=_DEFAULTS.threshold_criterion,
                        help="what the validation-chosen decision threshold maximizes")
    parser.add_argument("--no_determinism", dest="deterministic", action="store_false",
                        help="skip tf.config.experimental.enable_op_determinism (slightly faster, not repeatable)")
    add_verbose_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> int:
        start_tensorflow(args.verbose)
        from trainer import multilabel, train

        # A multi-label output (OUT/classes.txt, `labels` instead of `label`) trains K outputs.
        training = multilabel if multilabel.is_multi_label(args.data_dir) else train

        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                             seed=args.seed, val_fraction=args.val_fraction, patience=args.patience,
                             filters=args.filters, kernel_size=args.kernel_size, dropout=args.dropout,
                             threshold_criterion=args.threshold_criterion, deterministic=args.deterministic)
        metrics = training.run(args.data_dir, args.model_dir, config, extra_data=args.extra_data)
        print(f"wrote {args.model_dir}: {training.summary_line(metrics)}")
        return EXIT_OK

    return run_command(work, "trainer", args.verbose)


if __name__ == "__main__":
    exit_now(main())
