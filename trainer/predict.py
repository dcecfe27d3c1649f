"""`python -m trainer.predict --model_dir MODEL --data_dir OUT --split test --output predictions.csv`.

Scores every record of a split of the pipeline's output with the exported SavedModel (its
`transformed` signature: the TFRecords are already normalized) and labels it with the threshold
chosen on validation at training time (`MODEL/metrics.json`). Writes
`record_id,probability,predicted_label,true_label`, one row per record, sorted by record id;
`true_label` is empty for a record whose split carries no label. When the split carries true labels
(TRAIN, or TEST with answers), the CLI also reports how the predictions score against them.
"""
from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np

from ecg_common.cli import EXIT_OK, CommandLineParser, add_verbose_flag, exit_now, run_command, start_tensorflow
from ecg_common.rejections import ConfigurationError
from ecg_common.schema import (ABNORMAL, CLASS_NAMES, ECG_KEY, LABEL_KEY, NORMAL, RECORD_ID_KEY, TEST_SPLIT,
                               UNKNOWN_LABEL)
from trainer.evaluation import binary_metrics, reliability
from trainer.layout import SERVING_DIR, read_threshold

CSV_HEADER = ("record_id", "probability", "predicted_label", "true_label")
"""Always all four columns, so a reader need not guess; `true_label` is empty when the truth is unknown."""
LEGACY_PREDICTED_COLUMN = "label"
"""What `predicted_label` was called before: `read_csv` still reads such files."""


@dataclasses.dataclass(frozen=True)
class Prediction:
    record_id: str
    probability: float
    predicted_label: int
    """1 (abnormal) when probability >= the threshold chosen on validation."""
    true_label: int = UNKNOWN_LABEL
    """The label the split's example carries, UNKNOWN_LABEL (-1) when it has none."""

    @property
    def label(self) -> int:
        """The predicted label under its former name, for callers of the Python API."""
        return self.predicted_label


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


def _label_cell(label: int) -> str:
    return "" if label == UNKNOWN_LABEL else str(label)


def write_csv(predictions: list[Prediction], path: str) -> None:
    """The CSV contract (`CSV_HEADER`); probabilities in full precision so `predicted_label` can be
    re-derived from them exactly."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        writer.writerows((p.record_id, repr(p.probability), p.predicted_label, _label_cell(p.true_label))
                         for p in predictions)


def read_csv(path: str) -> list[Prediction]:
    """`write_csv`'s file back, also in the former layout `record_id,probability,label` (no truth)."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        predicted = CSV_HEADER[2] if CSV_HEADER[2] in (reader.fieldnames or ()) else LEGACY_PREDICTED_COLUMN
        return [Prediction(row["record_id"], float(row["probability"]), int(row[predicted]),
                           int(row.get("true_label") or UNKNOWN_LABEL)) for row in reader]


def labelled_summary(predictions: list[Prediction]) -> str:
    """A one-line score against the true labels of the records that have one ('' when none has), with
    the class counts it rests on and the caveat when they are too few."""
    known = [p for p in predictions if p.true_label != UNKNOWN_LABEL]
    if not known:
        return ""
    truth = np.array([p.true_label for p in known])
    metrics = binary_metrics(truth, np.array([p.probability for p in known]), threshold=0.0)
    at_threshold = binary_metrics(truth, np.array([p.predicted_label for p in known]), threshold=0.5)  # 0/1
    counts = reliability(metrics["positives"], metrics["negatives"], what="the labelled set")
    line = (f"{len(known)} labelled ({metrics['negatives']} {CLASS_NAMES[NORMAL]}, {metrics['positives']} "
            f"{CLASS_NAMES[ABNORMAL]}): AUC {metrics['auc']:.4f}, accuracy {at_threshold['accuracy']:.4f}, "
            f"precision {at_threshold['precision']:.4f}, recall {at_threshold['recall']:.4f}, "
            f"F1 {at_threshold['f1']:.4f}")
    return line if counts["reliable"] else f"{line}; {counts['caveat']}"


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
