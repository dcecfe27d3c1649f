"""`python -m trainer.predict --model_dir MODEL (--data_dir D [--split S] | --records PATH...) --output predictions.csv
[--model_version N]`.

Scores every record of `D/S/part-*.tfrecord.gz` with an exported SavedModel version (the newest, or
`--model_version`), through its `transformed` signature (the TFRecords are already normalized); the
label is the model's own, thresholded inside it at the value chosen on validation when it was
trained. `D` is a main-command output (`--split train|test`) or a reprocessed batch
(`ROOT/batch-X`, `--split data`): the examples are parsed with the transformed schema the export
carries, so `D` needs no `transform_fn/`. When `D`'s `run_summary.json` records lead statistics
other than the model's transform, the examples were normalized differently and predict refuses.
Writes `record_id,probability,predicted_label,true_label` (`ecg_common/predictions.py`, the one writer, shared
with nightly scoring), one row per record, sorted by record id;
`true_label` is empty for a record whose split carries no label. A record cut into several windows
(the pipeline's `--window_stride_s`) gets the mean of its windows' probabilities, thresholded at the
model's threshold; `--per_window` writes one row per window instead, with a `window_index` column. When the split carries true labels
(TRAIN, or TEST with answers), the CLI also reports how the predictions score against them.

`--records` scores raw recordings instead (`.mat` files, with their `.hea` headers, WFDB records given
by their `.hea` or `.dat`, or folders of them: `raw_records`): each is decoded by the pipeline's sandboxed decoder with the options the training data was
decoded with (`MODEL/decoding.json`), checked for millivolt amplitudes (`export.lead_amplitude_problem`)
and scored through the `serving_default` signature, which applies the saved tf.Transform and the threshold itself. The
CSV then has a fifth column, `error`: empty for a scored record, else the reason code of a file that
was not scored (`probability` and `predicted_label` empty). Every file given appears in it.
"""
from __future__ import annotations

import logging
import math
import os

import numpy as np

from ecg_common.cli import EXIT_OK, CommandLineParser, add_verbose_flag, exit_now, run_command, start_tensorflow
from ecg_common.model_layout import export_lead_statistics
from ecg_common.predictions import Prediction, csv_text, mean_per_record, multi_label_csv_text, parse_csv
from ecg_common.rejections import ConfigurationError, Reason, Rejection
from ecg_common.schema import ABNORMAL, CLASS_NAMES, ECG_KEY, NORMAL, TEST_SPLIT, UNKNOWN_LABEL
from ecg_common.transform_fingerprint import same_transform
from trainer import raw_records
from trainer.evaluation import binary_metrics, reliability
from trainer.layout import EXTRA_ASSETS_DIR, read_decoding_options, resolve_export

_log = logging.getLogger(__name__)


def _check_same_transform(export_dir: str, data_dir: str) -> None:
    """Refuses a data folder normalized with another transform than the model's, when both record theirs."""
    from trainer import sources  # TensorFlow: imported when used, so the command parses first

    expected = export_lead_statistics(export_dir)
    recorded = sources.lead_statistics(data_dir)
    if expected is not None and recorded is not None and not same_transform(recorded, expected):
        raise ConfigurationError(f"{data_dir} was normalized with another transform than the model in {export_dir} "
                                 f"(the lead statistics in its run summary differ): its scores would be meaningless")


def predict(model_dir: str, data_dir: str, split: str, batch_size: int = 64,
            model_version: int | None = None, per_window: bool = False) -> list[Prediction]:
    """Predictions for every record of `data_dir/<split>`, sorted by record id (newest export unless
    `model_version`): the mean over a record's windows, or with `per_window` one per window. Parsing
    and scoring are `ecg_common.scoring`'s, shared with nightly scoring."""
    from ecg_common import scoring  # TensorFlow: imported when used, so the command parses first
    from trainer import export, inputs

    export_dir = resolve_export(model_dir, model_version)
    files = inputs.split_files(data_dir, split)
    _check_same_transform(export_dir, data_dir)
    spec = scoring.parsing_spec(scoring.export_feature_spec(export_dir))
    loaded = export.load_serving_model(export_dir)
    score = scoring.transformed_scorer(loaded, export_dir)

    predictions = []
    for batch in inputs.input_fn(inputs.read_examples(files), spec, batch_size):
        predictions.extend(scoring.score_parsed(score, batch))  # one per window, with its window_index
    if per_window:
        return sorted(predictions, key=lambda p: (p.record_id, p.window_index or 0))
    return mean_per_record(predictions, scoring.model_threshold(loaded))


def _not_scored(record_id: str, reason: str, path: str, detail: str) -> Prediction:
    _log.warning("%s (%s) not scored: %s: %s", record_id, path, reason, detail)
    return Prediction(record_id, math.nan, UNKNOWN_LABEL, error=reason)


def predict_records(model_dir: str, paths: list[str], batch_size: int = 64,
                    model_version: int | None = None) -> list[Prediction]:
    """Predictions for the raw recordings `paths` name (files or folders), one per file, sorted by
    record id; a file that does not decode, or whose amplitude is not millivolts, has its reason."""
    from ecg_common import scoring  # TensorFlow: imported when used, so the command parses first
    from trainer import export

    export_dir = resolve_export(model_dir, model_version)
    options = read_decoding_options(model_dir)
    loaded = export.load_serving_model(export_dir)
    scoring.transformed_scorer(loaded, export_dir)  # refuses an export without the threshold inside
    score = loaded.signatures[export.SERVING_SIGNATURE]

    predictions, windows, pending = [], [], []

    def score_pending() -> None:
        if pending:
            batch = np.stack([ecg for _, ecg in pending]).astype(np.float32)
            outputs = score(**{ECG_KEY: batch})
            windows.extend(Prediction(record_id, float(p), int(label)) for (record_id, _), p, label in zip(
                pending, outputs[export.PROBABILITY_KEY].numpy(), outputs[export.PREDICTED_LABEL_KEY].numpy()))
            pending.clear()

    for record in raw_records.find_raw_records(paths):
        decoded = raw_records.decode_raw_windows(record, options)
        if isinstance(decoded, Rejection):
            predictions.append(_not_scored(record.record_id, decoded.reason, decoded.path, decoded.detail))
        elif (problem := next(filter(None, map(export.lead_amplitude_problem, decoded)), None)) is not None:
            predictions.append(_not_scored(record.record_id, Reason.IMPLAUSIBLE_AMPLITUDE, record.path, problem))
        else:
            pending.extend((record.record_id, window) for window in decoded)
            if len(pending) >= batch_size:
                score_pending()
    score_pending()
    # One row per file: the mean over its windows (cut as the training data was), thresholded.
    predictions.extend(mean_per_record(windows, float(loaded.threshold.numpy())))
    return sorted(predictions, key=lambda p: p.record_id)


def write_csv(predictions: list[Prediction], path: str, error_column: bool = False) -> None:
    """The CSV contract (`ecg_common.predictions`, shared with nightly scoring; `ERROR_COLUMN` when asked:
    `--records`); probabilities in full precision so `predicted_label` can be re-derived from them exactly."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        handle.write(csv_text(predictions, error_column))


def read_csv(path: str) -> list[Prediction]:
    """`write_csv`'s file back, also in the former layout `record_id,probability,label` (no truth)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return parse_csv(handle.read())


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


def _multi_label_csv(args) -> tuple[str, int] | None:
    """(the CSV text, records) of a multi-label model (`predictions.multi_label_csv_text`, the writer
    nightly scoring shares), or None for a binary one."""
    from trainer import multilabel  # TensorFlow: imported when used, so the command parses first

    export_dir = resolve_export(args.model_dir, args.model_version)
    if not multilabel.is_multi_label(os.path.join(export_dir, EXTRA_ASSETS_DIR)):
        return None
    if args.records:
        names, rows = multilabel.predict_records_rows(args.model_dir, export_dir, args.records, args.batch_size)
    else:
        names, rows = multilabel.predict_rows(export_dir, args.data_dir, args.split or TEST_SPLIT, args.batch_size)
    return multi_label_csv_text(names, rows), len(rows)


def _write_text(text: str, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        handle.write(text)


def build_parser() -> CommandLineParser:
    parser = CommandLineParser(
        prog="python -m trainer.predict",
        description="Write record_id,probability,predicted_label,true_label for every record of a split of the "
                    "pipeline's output (a record cut into windows: the mean probability over its windows, "
                    "thresholded; --per_window for one row per window), or of raw recordings (--records, with "
                    "an error column).",
        epilog="Exit codes: 0 success, 1 run failed, 2 usage or configuration error.")
    parser.add_argument("--model_dir", required=True, help="the trainer's --model_dir")
    source = parser.add_mutually_exclusive_group()  # one is required: checked in main, after unknown options
    source.add_argument("--data_dir", help="the pipeline's --output_dir")
    source.add_argument("--records", nargs="+", metavar="PATH",
                        help="raw .mat files (with their .hea), WFDB records (.hea with its .dat) or folders of "
                             "them, instead of --data_dir/--split")
    parser.add_argument("--split", help=f"a split folder of data_dir (default {TEST_SPLIT})")
    parser.add_argument("--output", required=True, help="CSV file to write")
    parser.add_argument("--per_window", action="store_true",
                        help="with --data_dir: one row per window (a window_index column) instead of one row per "
                             "record, whose probability is the mean over its windows (the default)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--model_version", type=int, help="the MODEL/serving/<version> to use (default: the newest)")
    add_verbose_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.records and not args.data_dir:
        parser.error("one of the arguments --data_dir --records is required")
    if args.records and args.split is not None:
        parser.error("--split goes with --data_dir, not with --records")

    def work() -> int:
        start_tensorflow(args.verbose)
        if (multi := _multi_label_csv(args)) is not None:
            _write_text(multi[0], args.output)
            print(f"wrote {args.output}: {multi[1]} records, one probability column per class and labels")
            return EXIT_OK
        if args.records:
            predictions = predict_records(args.model_dir, args.records, args.batch_size, args.model_version)
            write_csv(predictions, args.output, error_column=True)
        else:
            predictions = predict(args.model_dir, args.data_dir, args.split or TEST_SPLIT, args.batch_size,
                                  args.model_version, per_window=args.per_window)
            write_csv(predictions, args.output)
        summary = labelled_summary(predictions)
        not_scored = sum(1 for p in predictions if p.error)
        print(f"wrote {args.output}: {len(predictions)} records, {sum(p.label == ABNORMAL for p in predictions)} "
              f"predicted abnormal" + (f", {not_scored} not scored (see its error column)" if not_scored else "")
              + (f"; {summary}" if summary else ""))
        return EXIT_OK

    return run_command(work, "trainer", args.verbose)


if __name__ == "__main__":
    exit_now(main())
