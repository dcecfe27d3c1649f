"""`python -m trainer.predict --model_dir MODEL --data_dir OUT --split test --output predictions.csv`.

Scores every record of a split of the pipeline's output with the exported SavedModel (its
`transformed` signature: the TFRecords are already normalized) and labels it with the threshold
chosen on validation at training time (`MODEL/metrics.json`). Writes `record_id,probability,label`,
one row per record, sorted by record id. When the split carries true labels (TRAIN, or TEST
with answers), the CLI also reports how the predictions score against them.
"""
from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np

from ecg_common.cli import EXIT_OK, CommandLineParser, add_verbose_flag, exit_now, run_command, start_tensorflow
from ecg_common.rejections import ConfigurationError
from ecg_common.schema import ECG_KEY, LABEL_KEY, RECORD_ID_KEY, TEST_SPLIT, UNKNOWN_LABEL
from trainer.evaluation import binary_metrics
from trainer.layout import SERVING_DIR, read_threshold

CSV_HEADER = ("record_id", "probability", "label")


@dataclasses.dataclass(frozen=True)
class Prediction:
    record_id: str
    probability: float
    label: int
    """Predicted label: 1 (abnormal) when probability >= the threshold."""
    true_label: int = UNKNOWN_LABEL


def predict(model_dir: str, data_dir: str, split: str, batch_size: int = 64) -> list[Prediction]:
    """Predictions for every example of `data_dir/<split>`, sorted by record id."""
    from trainer import export, inputs  # TensorFlow: imported when used, so the command parses first

    serving_dir = os.path.join(model_dir, SERVING_DIR)
    if not os.path.isfile(os.path.join(serving_dir, "saved_model.pb")):
        raise ConfigurationError(f"no exported model at {serving_dir} (run `python -m trainer` first)")
    threshold = read_threshold(model_dir)
    spec = inputs.parsing_spec(inputs.load_transform_output(data_dir))
    files = inputs.split_files(data_dir, split)
    loaded = export.load_serving_model(serving_dir)
    score = loaded.signatures[export.TRANSFORMED_SIGNATURE]

    predictions = []
    for batch in inputs.input_fn(inputs.read_examples(files), spec, batch_size):
        probabilities = score(**{ECG_KEY: batch[ECG_KEY]})[export.PROBABILITY_KEY].numpy()
        for record_id, probability, true_label in zip(batch[RECORD_ID_KEY].numpy(), probabilities,
                                                      batch[LABEL_KEY].numpy()):
            probability = float(probability)
            predictions.append(Prediction(record_id.decode("utf-8"), probability, int(probability >= threshold),
                                          int(true_label)))
    return sorted(predictions, key=lambda p: p.record_id)


def write_csv(predictions: list[Prediction], path: str) -> None:
    """The CSV contract; probabilities in full precision so `label` can be re-derived from them exactly."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        writer.writerows((p.record_id, repr(p.probability), p.label) for p in predictions)


def labelled_summary(predictions: list[Prediction]) -> str:
    """A one-line score against the true labels of the records that have one ('' when none has)."""
    known = [p for p in predictions if p.true_label != UNKNOWN_LABEL]
    if not known:
        return ""
    truth = np.array([p.true_label for p in known])
    metrics = binary_metrics(truth, np.array([p.probability for p in known]), threshold=0.0)
    at_threshold = binary_metrics(truth, np.array([p.label for p in known]), threshold=0.5)  # already 0/1
    return (f"{len(known)} labelled: AUC {metrics['auc']:.4f}, accuracy {at_threshold['accuracy']:.4f}, "
            f"precision {at_threshold['precision']:.4f}, recall {at_threshold['recall']:.4f}, "
            f"F1 {at_threshold['f1']:.4f}")


def build_parser() -> CommandLineParser:
    parser = CommandLineParser(
        prog="python -m trainer.predict",
        description="Write record_id,probability,label for every record of a split of the pipeline's output.",
        epilog="Exit codes: 0 success, 1 run failed, 2 usage or configuration error.")
    parser.add_argument("--model_dir", required=True, help="the trainer's --model_dir")
    parser.add_argument("--data_dir", required=True, help="the pipeline's --output_dir")
    parser.add_argument("--split", default=TEST_SPLIT, help=f"a split folder of data_dir (default {TEST_SPLIT})")
    parser.add_argument("--output", required=True, help="CSV file to write")
    parser.add_argument("--batch_size", type=int, default=64)
    add_verbose_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> int:
        start_tensorflow(args.verbose)
        predictions = predict(args.model_dir, args.data_dir, args.split, args.batch_size)
        write_csv(predictions, args.output)
        summary = labelled_summary(predictions)
        print(f"wrote {args.output}: {len(predictions)} records, {sum(p.label for p in predictions)} predicted "
              f"abnormal" + (f"; {summary}" if summary else ""))
        return EXIT_OK

    return run_command(work, "trainer", args.verbose)


if __name__ == "__main__":
    exit_now(main())
