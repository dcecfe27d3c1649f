"""The whole night, through the real command lines: base run -> training (version 1) -> two nightly
reprocessing runs that score their batch (`--model_dir`) -> retraining on the archive plus the batches
(`--extra_data ROOT`, version 2) -> a third night scored by version 2. Then the refusals: a ROOT fed
another transform, a ledger from before the transform was recorded, a `--model_dir` without a version
or of another transform, and a model that fails to score (nothing published).

The nightly command is the README's, as written (placeholders replaced by real paths).
"""
from __future__ import annotations

import contextlib
import glob
import io
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
from batch_data import run_base

import trainer  # noqa: F401 - sets TF_USE_LEGACY_KERAS / KERAS_BACKEND before TensorFlow is imported
from beam_pipeline.cli import main_command as pipeline_cli
from beam_pipeline.cli import reprocess_command
from beam_pipeline.runs.ledger import LEDGER_FILE, LedgerHead, TransformClaim
from beam_pipeline.runs.reprocess_job import claim_transform
from beam_pipeline.synthetic.generator import generate_dataset
from ecg_common import model_layout
from ecg_common.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, option_names
from ecg_common.layout import BATCH_SPLIT, SUMMARY_FILE
from ecg_common.predictions import CSV_HEADER, PREDICTIONS_FILE
from ecg_common.rejections import ConfigurationError
from ecg_common.transform_fingerprint import LEAD_STATISTICS_KEY, fingerprint
from trainer import layout, predict
from trainer.__main__ import main as train_main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
QUICK = ["--epochs", "2", "--batch_size", "8", "--filters", "8,16,16,32", "--seed", "3"]
NUM_TRAIN = 24
NIGHTS = (("A", 5, 2), ("B", 4, 1), ("C", 3, 0))
"""(id prefix, labelled records, unlabelled records) delivered each night."""


def readme_nightly_command() -> str:
    """The README's one nightly scoring command line."""
    lines = [line for line in README.read_text(encoding="utf-8").splitlines()
             if line.startswith("python -m beam_pipeline.reprocess") and "--model_dir MODEL" in line]
    assert len(lines) == 1, lines
    return lines[0]


def run_reprocess(paths: dict[str, str], *extra: str, separate_process: bool = False) -> tuple[int, str, str]:
    """The README's nightly command (optional `[...]` parts dropped), in this process or, with
    `separate_process`, as a command line in a fresh interpreter that never imports the trainer:
    (code, stdout, stderr)."""
    words = shlex.split(re.sub(r"\s*\[[^\]]*\]", "", readme_nightly_command()))
    assert words[:3] == ["python", "-m", "beam_pipeline.reprocess"]
    argv = [paths.get(word, word) for word in words[3:]] + list(extra)
    if separate_process:
        done = subprocess.run([sys.executable, "-m", "beam_pipeline.reprocess", *argv], cwd=REPO,
                              capture_output=True, text=True)
        return done.returncode, done.stdout, done.stderr
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = reprocess_command.main(argv)
    return code, out.getvalue(), err.getvalue()


def _batches(root: Path) -> list[str]:
    return sorted(os.path.basename(path) for path in glob.glob(str(root / "batch-*")))


def _summary(folder: Path) -> dict:
    return json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8"))


def _deliver(source: Path, incoming: Path, prefix: str, labelled: int, unlabelled: int, labels: Path) -> None:
    """The night's recordings (renamed `<prefix>NNN`) into `incoming`, the labelled ones appended to `labels`."""
    incoming.mkdir(parents=True, exist_ok=True)
    truth = dict(line.split() for line in (source / "reference.txt").read_text().splitlines() if line.strip())
    with labels.open("a", encoding="utf-8") as handle:
        for k, old in enumerate(sorted(truth)[:labelled + unlabelled]):
            shutil.copy(source / "TRAIN" / f"{old}.mat", incoming / f"{prefix}{k:03d}.mat")
            if k < labelled:
                handle.write(f"{prefix}{k:03d}\t{truth[old]}\n")


def reprocess_without_model(incoming: Path, root: Path, transform_dir: Path) -> tuple[int, str, str]:
    """The reprocess command without --model_dir: (code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = reprocess_command.main(["--incoming", str(incoming), "--transform_dir", str(transform_dir),
                                       "--output_root", str(root)])
    return code, out.getvalue(), err.getvalue()


def _one_line(err: str) -> str:
    (line,) = err.strip().splitlines()
    return line


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    work = tmp_path_factory.mktemp("night")
    data, out, root, model = work / "data", work / "out", work / "root", work / "model"
    generate_dataset(str(data), NUM_TRAIN, 0, seed=2)
    assert pipeline_cli.main(["--train_dir", str(data / "TRAIN"), "--labels", str(data / "reference.txt"),
                              "--output_dir", str(out)]) == EXIT_OK
    assert train_main(["--data_dir", str(out), "--model_dir", str(model), *QUICK]) == EXIT_OK
    labels = work / "labels.txt"
    labels.write_text("")
    paths = {"DIR": str(work / "incoming"), "BASE_OUT": str(out), "ROOT": str(root), "MODEL": str(model),
             "FILE": str(labels)}

    nights = []
    for index, (prefix, labelled, unlabelled) in enumerate(NIGHTS):
        if index == 2:  # retraining between the second and the third night
            assert train_main(["--data_dir", str(out), "--extra_data", str(root), "--model_dir", str(model),
                               *QUICK]) == EXIT_OK
        generate_dataset(str(work / f"new-{prefix}"), labelled + unlabelled, 0, seed=10 + index)
        _deliver(work / f"new-{prefix}", work / "incoming", prefix, labelled, unlabelled, labels)
        before = set(_batches(root)) if root.exists() else set()
        # The third night runs as a scheduler would start it: its own process, no trainer imported.
        code, stdout, err = run_reprocess(paths, "--labels", str(labels), separate_process=index == 2)
        assert code == EXIT_OK, err
        (batch,) = set(_batches(root)) - before
        nights.append(dict(batch=root / batch, stdout=stdout, ids={f"{prefix}{k:03d}" for k in range(labelled + unlabelled)},
                           labelled=labelled))
    return dict(work=work, out=out, root=root, model=model, labels=labels, paths=paths, nights=nights)


# --- the night ------------------------------------------------------------------------------------


def test_each_scored_batch_holds_what_predict_writes_for_it(night, tmp_path):
    """Byte for byte: same rows, same columns, same probabilities (repr), same order."""
    for index, scored in enumerate(night["nights"]):
        batch = scored["batch"]
        version = 1 if index < 2 else 2
        expected = tmp_path / f"{batch.name}.csv"
        assert predict.main(["--model_dir", str(night["model"]), "--data_dir", str(batch), "--split", BATCH_SPLIT,
                             "--model_version", str(version), "--output", str(expected)]) == EXIT_OK
        assert (batch / PREDICTIONS_FILE).read_bytes() == expected.read_bytes()
        rows = predict.read_csv(str(batch / PREDICTIONS_FILE))
        assert {p.record_id for p in rows} == scored["ids"]
        assert sum(p.true_label >= 0 for p in rows) == scored["labelled"]


def test_the_run_summary_records_the_model_version_and_the_transform(night):
    for index, scored in enumerate(night["nights"]):
        summary = _summary(scored["batch"])
        version = 1 if index < 2 else 2  # the third night, after retraining, is scored by the new version
        assert summary["model"] == {"model_dir": str(night["model"]), "version": version,
                                    "export_dir": layout.version_dir(str(night["model"]), version),
                                    "predictions": PREDICTIONS_FILE, "records_scored": len(scored["ids"])}
        assert f"scored by {night['model']} version {version}" in scored["stdout"]
        assert summary["transform_fingerprint"] == fingerprint(summary[LEAD_STATISTICS_KEY])
    header = json.loads((night["root"] / LEDGER_FILE).read_text().splitlines()[0])
    assert header["transform"] == {"fingerprint": summary["transform_fingerprint"],
                                   "transform_dir": str(night["out"])}


def test_retraining_took_the_scored_batches_with_the_same_transform(night):
    metrics = json.loads((night["model"] / layout.METRICS_FILE).read_text())
    data = metrics["training_data"]
    assert [source["path"] for source in data["sources"]] == [str(night["out"])] + [
        str(scored["batch"]) for scored in night["nights"][:2]]
    assert data["refused"] == []
    counts = metrics["class_counts"]
    assert (sum(counts["train"].values()) + sum(counts["validation"].values())
            == NUM_TRAIN + sum(labelled for _, labelled, _ in NIGHTS[:2]))
    assert layout.export_versions(str(night["model"])) == [1, 2]


def test_predict_uses_the_new_version_by_default(night, tmp_path):
    batch = str(night["nights"][1]["batch"])
    model = str(night["model"])
    assert predict.main(["--model_dir", model, "--data_dir", batch, "--split", BATCH_SPLIT,
                         "--output", str(tmp_path / "default.csv")]) == EXIT_OK
    newest = predict.read_csv(str(tmp_path / "default.csv"))
    assert newest == predict.predict(model, batch, BATCH_SPLIT, model_version=2)
    # The batch's own predictions.csv was written by version 1, before retraining: a different model.
    assert [p.probability for p in newest] != [p.probability for p in predict.read_csv(
        os.path.join(batch, PREDICTIONS_FILE))]


def test_without_model_dir_nothing_is_scored(night, tmp_path):
    """The same command without --model_dir: a batch as before, no predictions.csv, no `model` in the summary."""
    root = tmp_path / "root"
    shutil.copytree(night["work"] / "new-A" / "TRAIN", tmp_path / "incoming")
    assert reprocess_without_model(tmp_path / "incoming", root, night["out"])[0] == EXIT_OK
    (batch,) = _batches(root)
    assert not (root / batch / PREDICTIONS_FILE).exists()
    assert "model" not in _summary(root / batch)


# --- refusals -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_transform(tmp_path_factory):
    """The output of another base run: other records, so other lead statistics."""
    out, _, _ = run_base(tmp_path_factory.mktemp("other"), np.random.default_rng(5), count=4)
    return out


def _copy_root(night, tmp_path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(night["root"], root)
    return root


def test_a_root_refuses_another_transform_naming_both(night, other_transform, tmp_path):
    root = _copy_root(night, tmp_path)
    before = sorted(os.listdir(root)), (root / LEDGER_FILE).read_bytes()
    (tmp_path / "incoming").mkdir()
    shutil.copy(night["work"] / "new-A" / "TRAIN" / "TRAIN101.mat", tmp_path / "incoming" / "Z001.mat")
    code, _, err = reprocess_without_model(tmp_path / "incoming", root, other_transform)
    assert code == EXIT_CONFIG
    line = _one_line(err)
    assert str(night["out"]) in line and str(other_transform) in line and "new --output_root" in line
    assert (sorted(os.listdir(root)), (root / LEDGER_FILE).read_bytes()) == before  # nothing done


def test_claim_transform_adopts_refuses_and_keeps(tmp_path):
    """The rule itself: a ledger without a transform adopts the run's; another fingerprint is refused,
    with the same folder refitted worded as such; the same one passes unchanged."""
    one, two = {"mean_mv": [0.5] * 12, "std_mv": [1.0] * 12}, {"mean_mv": [0.5] * 12, "std_mv": [1.25] * 12}
    adopted = claim_transform(str(tmp_path), LedgerHead(), one, "/base/a")
    assert adopted.transform == TransformClaim(fingerprint(one), "/base/a")
    assert claim_transform(str(tmp_path), adopted, one, "/base/a") is adopted
    with pytest.raises(ConfigurationError, match=r"belongs to the transform of /base/a .* /base/b is another"):
        claim_transform(str(tmp_path), adopted, two, "/base/b")
    with pytest.raises(ConfigurationError, match=r"/base/a now holds another transform .* refitted"):
        claim_transform(str(tmp_path), adopted, two, "/base/a")
    assert fingerprint(one) != fingerprint(two) and fingerprint(one) == fingerprint(json.loads(json.dumps(one)))


def test_a_ledger_without_a_transform_adopts_the_runs_unless_its_batches_disagree(night, other_transform, tmp_path):
    root = _copy_root(night, tmp_path)
    ledger = root / LEDGER_FILE
    header, *rows = ledger.read_text().splitlines()
    old = json.loads(header)
    del old["transform"]
    ledger.write_text("\n".join([json.dumps(old), *rows]) + "\n")  # as written before this version
    empty = tmp_path / "incoming"
    empty.mkdir()
    code, _, err = reprocess_without_model(empty, root, other_transform)
    assert code == EXIT_CONFIG and "was normalized with another transform" in _one_line(err)
    assert "transform" not in json.loads(ledger.read_text().splitlines()[0])
    code, stdout, _ = reprocess_without_model(empty, root, night["out"])
    assert code == EXIT_OK and "nothing new" in stdout
    assert json.loads(ledger.read_text().splitlines()[0])["transform"]["transform_dir"] == str(night["out"])


def _one_version_model(night, tmp_path) -> Path:
    """A copy of the model directory holding only version 1 (so it is the newest)."""
    model = tmp_path / "model"
    shutil.copytree(night["model"], model)
    shutil.rmtree(layout.version_dir(str(model), 2))
    return model


@pytest.mark.parametrize("case", ["no version", "another transform"])
def test_a_model_dir_that_cannot_score_this_root_is_a_configuration_error(night, tmp_path, case):
    model = _one_version_model(night, tmp_path)
    if case == "no version":
        shutil.rmtree(layout.serving_root(str(model)))
        expected = "no exported model in"
    else:
        info_path = Path(layout.version_dir(str(model), 1), model_layout.EXTRA_ASSETS_DIR,
                         model_layout.TRANSFORM_INFO_FILE)
        info = json.loads(info_path.read_text())
        info[LEAD_STATISTICS_KEY]["std_mv"][0] *= 1.5
        info_path.write_text(json.dumps(info))
        expected = "was trained with another transform than --transform_dir"
    root = tmp_path / "new-root"
    code, _, err = run_reprocess(dict(night["paths"], ROOT=str(root), MODEL=str(model)))
    assert code == EXIT_CONFIG and expected in _one_line(err)
    assert not root.exists()  # before any work


def test_a_model_that_fails_to_score_publishes_nothing(night, tmp_path):
    model = _one_version_model(night, tmp_path)
    variables = Path(layout.version_dir(str(model), 1), "variables")
    for path in variables.iterdir():
        path.write_bytes(b"damaged")
    root = _copy_root(night, tmp_path)
    before = _batches(root), (root / LEDGER_FILE).read_bytes()
    incoming = tmp_path / "incoming"
    shutil.copytree(night["work"] / "new-A" / "TRAIN", incoming)
    code, _, err = run_reprocess(dict(night["paths"], DIR=str(incoming), ROOT=str(root), MODEL=str(model)))
    assert code == EXIT_FAILED and _one_line(err).startswith("error:")
    assert (_batches(root), (root / LEDGER_FILE).read_bytes()) == before
    assert not [name for name in os.listdir(root) if ".staging-" in name]


def test_every_reprocess_option_is_in_the_documented_option_table():
    """docs/reprocessing.md's option table names every option of the parser (--model_dir included)."""
    section = (REPO / "docs" / "reprocessing.md").read_text(encoding="utf-8").split("## Options")[1].split("\n## ")[0]
    documented = {name for line in section.splitlines() if line.startswith("| `")
                  for name in re.findall(r"`(--\w+)`", line.split(" | ")[0])}
    options = {name for name in option_names(reprocess_command.build_parser()) if name.startswith("--")}
    assert "--model_dir" in options
    assert options - {"--help"} == documented


def test_a_batch_of_rejected_files_is_published_with_its_empty_predictions(night, tmp_path):
    """Every published batch has its predictions.csv, even when no file became an example (exit 1: the
    error budget, as without --model_dir)."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "BROKEN1.mat").write_bytes(b"not a MATLAB file")
    root = tmp_path / "root"
    code, _, _ = run_reprocess(dict(night["paths"], DIR=str(incoming), ROOT=str(root)))
    assert code == EXIT_FAILED
    (batch,) = _batches(root)
    assert (root / batch / PREDICTIONS_FILE).read_bytes() == (",".join(CSV_HEADER) + "\r\n").encode()
    assert _summary(root / batch)["model"]["records_scored"] == 0
