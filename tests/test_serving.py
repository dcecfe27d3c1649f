"""The closed loop through the real command lines: pipeline -> reprocessed batches -> retraining on the
main output plus the batches -> versioned serving exports -> predict on a main output and on a batch.

The README's examples run as written: its parse snippet (with its two placeholders set to a real
output and split) and its `python -m trainer` / `python -m trainer.predict` commands (placeholders
OUT, ROOT, MODEL, the batch name and the CSV names replaced by real paths, the optional `[...]`
parts dropped, and small-model flags appended so the tests train in seconds).
"""
from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from batch_data import run_base

import trainer  # noqa: F401 - sets TF_USE_LEGACY_KERAS / KERAS_BACKEND before TensorFlow is imported
from beam_pipeline.cli import main_command as pipeline_cli
from beam_pipeline.cli import reprocess_command
from beam_pipeline.synthetic.generator import generate_dataset
from ecg_common.cli import EXIT_CONFIG, EXIT_OK
from ecg_common.layout import BATCH_SPLIT, SUCCESS_MARKER
from ecg_common.schema import ECG_KEY, ECG_SHAPE, LABEL_KEY, RECORD_ID_KEY, TEST_SPLIT, TRAIN_SPLIT
from ecg_decode.decoding.decode import decode_record
from trainer import export, inputs, layout, predict
from trainer.__main__ import main as train_main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
TRAINER_README = REPO / "trainer" / "README.md"
QUICK = ["--epochs", "2", "--batch_size", "8", "--filters", "8,16,16,32", "--seed", "3"]
NUM_TRAIN, NUM_TEST = 24, 8
NEW_LABELLED, NEW_UNLABELLED = 5, 2
REDELIVERED = "TRAIN101"
"""A main-output record delivered again in the batch: the batch's example replaces the main output's."""
UNPUBLISHED = "batch-20000101T000000.000Z"
SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")


# --- the README, as written ---------------------------------------------------------------------


def _code_blocks(language: str = "", readme: Path = README) -> list[str]:
    """A README's fenced code blocks opened with ```<language>, in order."""
    blocks, current, opened = [], None, None
    for line in readme.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.startswith("```"):
            if current is None:
                current, opened = [], line[3:].strip()
            else:
                if opened == language:
                    blocks.append("".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def readme_python(containing: str, readme: Path = README) -> str:
    (block,) = [block for block in _code_blocks("python", readme) if containing in block]
    return block


def readme_command(*containing: str) -> str:
    """The one README command line that starts `python -m` and contains every given fragment."""
    lines = [line for block in _code_blocks() for line in block.splitlines()
             if line.startswith("python -m trainer") and all(part in line for part in containing)]
    assert len(lines) == 1, (containing, lines)
    return lines[0]


def run_readme_command(line: str, paths: dict[str, str], *extra: str) -> int:
    """Runs a README command in this process, placeholders replaced by `paths` (exact tokens; `*.csv`
    and `ROOT/batch-...` by pattern)."""
    words = shlex.split(re.sub(r"\s*\[[^\]]*\]", "", line))
    assert words[:2] == ["python", "-m"]
    module, argv = words[2], words[3:]

    def place(word: str) -> str:
        if re.fullmatch(r"ROOT/batch-[0-9T.]+Z", word):
            return paths["BATCH"]
        if word.endswith(".csv"):
            return os.path.join(paths["CSV_DIR"], word)
        return paths.get(word, word)

    argv = [place(word) for word in argv] + list(extra)
    command = {"trainer": train_main, "trainer.predict": predict.main}[module]
    return command(argv)


# --- the loop -----------------------------------------------------------------------------------


def _deliver(source_dir: Path, incoming: Path, names: dict[str, str]) -> None:
    incoming.mkdir(parents=True, exist_ok=True)
    for old, new in names.items():
        shutil.copy(source_dir / f"{old}.mat", incoming / f"{new}.mat")


def _reference(path: Path) -> dict[str, str]:
    return dict(line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def _reprocess(incoming: Path, root: Path, transform_dir: Path, labels: Path, *allowed: int) -> None:
    code = reprocess_command.main(["--incoming", str(incoming), "--transform_dir", str(transform_dir),
                                   "--output_root", str(root), "--labels", str(labels)])
    assert code in (EXIT_OK, *allowed)


def _batches(root: Path) -> list[str]:
    return sorted(os.path.basename(path) for path in glob.glob(str(root / "batch-*")))


def _tree_digest(folder: str) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    paths = [os.path.join(d, f) for d, _, files in os.walk(folder) for f in files]
    return {os.path.relpath(path, folder): hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in paths}


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """OUT from the main command; under ROOT a labelled night (5 new labelled records, 2 unlabelled, and
    TRAIN101 again), a batch built from another transform (copied in) and an unpublished one; a model trained on
    OUT alone (version 1), then retrained with --extra_data ROOT (version 2), both by the README."""
    work = tmp_path_factory.mktemp("loop")
    data, out, root, model = work / "data", work / "out", work / "root", work / "model"
    generate_dataset(str(data), NUM_TRAIN, NUM_TEST, seed=2)
    assert pipeline_cli.main(["--train_dir", str(data / "TRAIN"), "--labels", str(data / "reference.txt"),
                              "--test_dir", str(data / "TEST"), "--output_dir", str(out)]) == EXIT_OK

    new = work / "new"
    generate_dataset(str(new), NEW_LABELLED + NEW_UNLABELLED, 0, seed=7)
    new_ids = {f"TRAIN{101 + i}": f"NEW{101 + i}" for i in range(NEW_LABELLED + NEW_UNLABELLED)}
    truth = _reference(new / "reference.txt")
    labelled = {new_ids[old]: truth[old] for old in list(new_ids)[:NEW_LABELLED]}
    labelled[REDELIVERED] = _reference(data / "reference.txt")[REDELIVERED]
    _deliver(new / "TRAIN", work / "incoming", new_ids)
    _deliver(data / "TRAIN", work / "incoming", {REDELIVERED: REDELIVERED})
    (work / "labels.txt").write_text("".join(f"{rid}\t{label}\n" for rid, label in labelled.items()))
    _reprocess(work / "incoming", root, out, work / "labels.txt")
    (good,) = _batches(root)

    other_out, _, _ = run_base(work / "other", np.random.default_rng(3), count=4)
    _deliver(new / "TRAIN", work / "incoming-other", {"TRAIN101": "OTHER1", "TRAIN102": "OTHER2"})
    (work / "labels-other.txt").write_text("OTHER1\t0\nOTHER2\t1\n")
    # Records of another distribution than that base's: the drift flag (exit 3) is expected, and harmless here.
    # Reprocessing refuses another transform on this ROOT (test_nightly.py), so the foreign batch is made
    # under a ROOT of its own and copied in, as a hand-copied batch or a ROOT older than that check holds one.
    _reprocess(work / "incoming-other", work / "root-other", other_out, work / "labels-other.txt",
               reprocess_command.EXIT_DRIFT)
    (foreign,) = _batches(work / "root-other")
    shutil.copytree(work / "root-other" / foreign, root / foreign)
    shutil.copytree(root / good, root / UNPUBLISHED)
    os.remove(root / UNPUBLISHED / SUCCESS_MARKER)

    paths = {"OUT": str(out), "ROOT": str(root), "MODEL": str(model), "BATCH": str(root / good),
             "CSV_DIR": str(work)}
    assert run_readme_command(readme_command("trainer --data_dir OUT --model_dir MODEL"), paths, *QUICK) == EXIT_OK
    first = _tree_digest(layout.version_dir(str(model), 1))
    assert run_readme_command(readme_command("--extra_data ROOT"), paths, *QUICK) == EXIT_OK
    return dict(work=work, data=data, out=out, root=root, model=model, good=root / good, foreign=root / foreign,
                labelled=labelled, first_version_digest=first, paths=paths)


def _metrics(model: Path) -> dict:
    with open(model / layout.METRICS_FILE, encoding="utf-8") as handle:
        return json.load(handle)


def _rows(path: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# --- the transformed schema -----------------------------------------------------------------------


@pytest.mark.parametrize("split", [TRAIN_SPLIT, TEST_SPLIT])
def test_readme_parse_snippet_reads_labelled_and_unlabelled_splits(loop, split):
    """`transformed_feature_spec()` as the README uses it parses TEST, whose examples have no label."""
    code = readme_python("transformed_feature_spec()")
    placeholder = 'OUT, SPLIT = "OUT", "test"'
    assert placeholder in code
    namespace: dict = {}
    exec(compile(code.replace(placeholder, f"OUT, SPLIT = {str(loop['out'])!r}, {split!r}"), "README.md", "exec"),
         namespace)
    features, count = namespace["features"], NUM_TRAIN if split == TRAIN_SPLIT else NUM_TEST
    assert tuple(namespace["ecg"].shape) == (count, *ECG_SHAPE)
    assert isinstance(namespace["label"], tf.SparseTensor)
    ids = [rid.decode() for rid in features[RECORD_ID_KEY].numpy()]
    if split == TRAIN_SPLIT:
        rows = namespace["label"].indices.numpy()[:, 0]
        truth = _reference(loop["data"] / "reference.txt")
        assert {ids[row]: str(value) for row, value in zip(rows, namespace["label"].values.numpy())} == truth
    else:
        assert namespace["label"].values.shape == (0,)  # the pipeline never sees test_answers.txt
    assert isinstance(tft.TFTransformOutput(str(loop["out"])).transformed_feature_spec()[LABEL_KEY],
                      tf.io.VarLenFeature)


# --- the export -------------------------------------------------------------------------------------


def test_each_run_adds_a_version_and_keeps_the_older_ones(loop):
    model = str(loop["model"])
    assert layout.export_versions(model) == [1, 2]
    assert _metrics(loop["model"])["serving_version"] == 2
    assert _tree_digest(layout.version_dir(model, 1)) == loop["first_version_digest"]  # untouched by run 2
    # TF Serving's layout: MODEL/serving/ holds only integer-named SavedModel folders (no staging left).
    root = layout.serving_root(model)
    assert sorted(os.listdir(root)) == ["1", "2"]
    umask = os.umask(0)
    os.umask(umask)
    for version in ("1", "2"):
        assert {"saved_model.pb", "variables"} <= set(os.listdir(os.path.join(root, version)))
        assert os.stat(os.path.join(root, version)).st_mode & 0o777 == 0o777 & ~umask  # readable by a server


def test_saved_model_cli_shows_the_signatures(loop):
    shown = subprocess.run([SAVED_MODEL_CLI, "show", "--all", "--dir", layout.resolve_export(str(loop["model"]))],
                           capture_output=True, text=True, check=True).stdout
    signatures = dict(re.findall(r"signature_def\['(\w+)'\]:\n(.*?)Method name is:", shown, flags=re.DOTALL))
    assert {export.SERVING_SIGNATURE, export.EXAMPLES_SIGNATURE, export.TRANSFORMED_SIGNATURE} <= set(signatures)

    def tensors(body: str, kind: str) -> dict[str, tuple[str, str]]:
        return {name: (dtype, shape) for name, dtype, shape in re.findall(
            rf"{kind}\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: ([^\n]+)", body)}

    outputs = {"label": ("DT_INT64", "(-1)"), "probability": ("DT_FLOAT", "(-1)")}
    for name in (export.SERVING_SIGNATURE, export.TRANSFORMED_SIGNATURE):
        assert tensors(signatures[name], "inputs") == {"ecg": ("DT_FLOAT", "(-1, 5000, 12)")}, name
    assert tensors(signatures["serving_examples"], "inputs") == {"examples": ("DT_STRING", "(-1)")}
    for name in (export.SERVING_SIGNATURE, export.EXAMPLES_SIGNATURE, export.TRANSFORMED_SIGNATURE):
        assert tensors(signatures[name], "outputs") == outputs, name
    assert "Method name is: tensorflow/serving/predict" in shown


def _raw_examples(ecgs: np.ndarray) -> tf.Tensor:
    """Serialized tf.train.Examples with the raw `ecg` feature, as a client would send them."""
    return tf.constant([tf.train.Example(features=tf.train.Features(feature={
        ECG_KEY: tf.train.Feature(float_list=tf.train.FloatList(value=ecg.reshape(-1)))})).SerializeToString()
        for ecg in ecgs])


def test_signatures_agree_and_the_threshold_is_inside(loop, tmp_path):
    """Raw ECGs from the TEST .mat files: serving_default == serving_examples == predict (pipeline path),
    and `label` is `probability >= threshold` with the threshold of metrics.json held by the model."""
    data, metrics = loop["data"], _metrics(loop["model"])
    paths = dict(loop["paths"], CSV_DIR=str(tmp_path))
    assert run_readme_command(readme_command("--split test"), paths) == EXIT_OK
    expected = {row["record_id"]: row for row in _rows(str(tmp_path / "predictions.csv"))}
    ids = sorted(expected)
    raw = np.stack([decode_record((data / "TEST" / f"{record_id}.mat").read_bytes()) for record_id in ids])

    loaded = export.load_serving_model(layout.resolve_export(str(loop["model"])))
    assert float(loaded.threshold.numpy()) == metrics["threshold"]
    served = loaded.signatures[export.SERVING_SIGNATURE](**{ECG_KEY: tf.constant(raw)})
    from_examples = loaded.signatures[export.EXAMPLES_SIGNATURE](**{export.EXAMPLES_KEY: _raw_examples(raw)})
    probability = served[export.PROBABILITY_KEY].numpy()
    assert np.ptp(probability) > 0  # a constant model would make the comparisons trivial
    np.testing.assert_array_equal(from_examples[export.PROBABILITY_KEY].numpy(), probability)
    np.testing.assert_array_equal(from_examples[export.PREDICTED_LABEL_KEY].numpy(),
                                  served[export.PREDICTED_LABEL_KEY].numpy())
    np.testing.assert_array_equal(served[export.PREDICTED_LABEL_KEY].numpy(),
                                  (probability.astype(np.float64) >= metrics["threshold"]).astype(np.int64))
    np.testing.assert_allclose(probability, [float(expected[i]["probability"]) for i in ids], rtol=0, atol=1e-5)
    assert [int(expected[i]["predicted_label"]) for i in ids] == served[export.PREDICTED_LABEL_KEY].numpy().tolist()


def test_trainer_readme_serving_snippet_runs_as_written(loop):
    """trainer/README.md's call of a version, with its two placeholder paths set to real ones."""
    code = readme_python("tf.saved_model.load(", TRAINER_README)
    version, record = '"MODEL/serving/1"', '"TEST101.mat"'
    assert version in code and record in code
    namespace: dict = {}
    exec(compile(code.replace(version, repr(layout.version_dir(str(loop["model"]), 1)))
                 .replace(record, repr(str(loop["data"] / "TEST" / "TEST101.mat"))), "trainer/README.md", "exec"),
         namespace)
    p, label, loaded = namespace["p"].numpy(), namespace["label"].numpy(), namespace["loaded"]
    assert p.shape == (1,) and 0.0 <= p[0] <= 1.0
    assert label.tolist() == [int(p[0] >= loaded.threshold.numpy())]


# --- predict --------------------------------------------------------------------------------------


def test_readme_predict_reads_a_batch_folder_with_no_other_flag(loop, tmp_path):
    batch = loop["good"]
    assert not os.path.exists(batch / tft.TFTransformOutput.TRANSFORM_FN_DIR)
    paths = dict(loop["paths"], CSV_DIR=str(tmp_path))
    assert run_readme_command(readme_command("--split data"), paths) == EXIT_OK
    rows = _rows(str(tmp_path / "batch.csv"))
    new_ids = {f"NEW{101 + i}" for i in range(NEW_LABELLED + NEW_UNLABELLED)} | {REDELIVERED}
    assert {row["record_id"] for row in rows} == new_ids
    assert {row["record_id"]: row["true_label"] for row in rows if row["true_label"]} == loop["labelled"]
    threshold = _metrics(loop["model"])["threshold"]
    assert all(int(row["predicted_label"]) == int(float(row["probability"]) >= threshold) for row in rows)


def test_predict_picks_a_version_and_refuses_what_it_cannot_score(loop, tmp_path, capsys):
    model, out = str(loop["model"]), str(loop["out"])
    newest = predict.predict(model, out, TEST_SPLIT)
    first = predict.predict(model, out, TEST_SPLIT, model_version=1)
    assert [p.record_id for p in first] == [p.record_id for p in newest]
    assert [p.probability for p in first] != [p.probability for p in newest]  # two different models
    loaded = export.load_serving_model(layout.version_dir(model, 1))
    assert all(p.predicted_label == int(p.probability >= float(loaded.threshold.numpy())) for p in first)

    def one_line_error(*argv: str) -> str:
        code = predict.main(["--model_dir", model, "--output", str(tmp_path / "p.csv"), *argv])
        assert code == EXIT_CONFIG
        (line,) = capsys.readouterr().err.strip().splitlines()
        return line

    assert "no version 7" in one_line_error("--data_dir", out, "--split", TEST_SPLIT, "--model_version", "7")
    assert "another transform" in one_line_error("--data_dir", str(loop["foreign"]), "--split", BATCH_SPLIT)
    assert not os.path.exists(tmp_path / "p.csv")


# --- retraining -----------------------------------------------------------------------------------


def test_retraining_takes_published_same_transform_batches_and_keeps_the_split(loop):
    data = _metrics(loop["model"])["training_data"]
    main, batch = data["sources"]
    assert (main["path"], batch["path"]) == (str(loop["out"]), str(loop["good"]))
    assert main == dict(main, examples=NUM_TRAIN, used=NUM_TRAIN - 1, superseded=1, unlabelled=0)
    assert batch == dict(batch, examples=NEW_LABELLED + NEW_UNLABELLED + 1, used=NEW_LABELLED + 1, superseded=0,
                         unlabelled=NEW_UNLABELLED)
    refused = {os.path.basename(r["path"]): r["reason"] for r in data["refused"]}
    assert set(refused) == {loop["foreign"].name, UNPUBLISHED}
    assert "another transform" in refused[loop["foreign"].name] and "\n" not in refused[loop["foreign"].name]
    assert SUCCESS_MARKER in refused[UNPUBLISHED]
    counts = _metrics(loop["model"])["class_counts"]
    assert sum(counts["train"].values()) + sum(counts["validation"].values()) == NUM_TRAIN + NEW_LABELLED

    # The main output's records keep the validation split they had without batches.
    scanned = [inputs.scan_records(inputs.split_files(str(loop["out"]), TRAIN_SPLIT)),
               inputs.scan_records(inputs.split_files(str(loop["good"]), BATCH_SPLIT))]
    sources = [inputs.Source(str(loop["out"]), (), is_main=True), inputs.Source(str(loop["good"]), ())]
    alone = inputs.combine(sources[:1], scanned[:1], 0.2).held_out
    together = inputs.combine(sources, scanned, 0.2).held_out
    main_ids = {r.record_id for r in scanned[0]}
    assert together & main_ids == alone == inputs.validation_ids(scanned[0], 0.2)
