"""Every command line is strict and quiet (`ecg_common/cli.py`, `beam_pipeline/cli/beam_options.py`).

Strict: an option that is neither the command's own nor (for the two pipeline commands) one of Beam's
pipeline options is a usage error, exit 2 and one line naming the nearest valid option, instead of a
run that ignored it and exited 0. Quiet: `--help` loads neither TensorFlow nor Beam, and a run shows
its progress and results without TensorFlow's start-up and CUDA lines.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from batch_data import write_training_set

from beam_pipeline.cli import main_command, reprocess_command
from beam_pipeline.cli.beam_options import parse_with_beam_options
from beam_pipeline.graph.settings import DEFAULT_BATCH_SIZE, DEFAULT_GZIP_LEVEL, MEAN_SHIFT_LIMIT_STD
from beam_pipeline.report import __main__ as run_report_command
from beam_pipeline.runs.runner_defaults import DEFAULT_RUNNER
from beam_pipeline.synthetic import generator
from ecg_common import cli
from ecg_common.cli import EXIT_CONFIG, EXIT_OK, TF_LOG_LEVEL_VARIABLE
from trainer import __main__ as train_command
from trainer import benchmark, predict
from trainer import report as training_report
from trainer.config import TrainConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ("beam_pipeline", "beam_pipeline.reprocess", "beam_pipeline.report", "beam_pipeline.synthetic",
            "trainer", "trainer.predict", "trainer.report", "trainer.benchmark")
HEAVY_MODULES = ("tensorflow", "tensorflow_transform", "apache_beam")
PROGRESS_LINE = re.compile(r"^\S+ \S+ INFO beam_pipeline\.[\w.]+: ")
"""A log line of the job's own logger at info level, in `ecg_common.cli.LOG_FORMAT`."""


def _usage_error(capsys, main, argv: list[str]) -> str:
    """What `main(argv)` said, asserting that it was a usage error of one line (exit 2)."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == EXIT_CONFIG
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    return err.strip()


def _pipeline_args(tmp_path) -> list[str]:
    return ["--train_dir", str(tmp_path / "TRAIN"), "--labels", str(tmp_path / "labels.txt"),
            "--output_dir", str(tmp_path / "out")]


def _reprocess_args(tmp_path) -> list[str]:
    return ["--incoming", str(tmp_path / "incoming"), "--transform_dir", str(tmp_path / "base"),
            "--output_root", str(tmp_path / "root")]


def _quiet_environment() -> dict[str, str]:
    """The environment of a fresh command: this process may have set TensorFlow's log level already."""
    env = {name: value for name, value in os.environ.items() if name != TF_LOG_LEVEL_VARIABLE}
    env["PYTHONPATH"] = os.pathsep.join([REPO, os.path.join(REPO, "tests")])
    return env


# --- strict: unknown options ---------------------------------------------------------------------------

@pytest.mark.parametrize("command, argv, wanted", [
    (main_command.main, ["--train_dir", "T", "--labels", "L", "--test-dir", "TEST", "--output_dir", "O"],
     "--test-dir (did you mean --test_dir?)"),
    (reprocess_command.main, ["--incoming", "I", "--transform_dir", "B", "--output-root", "R"],
     "--output-root (did you mean --output_root?)"),
    (run_report_command.main, ["OUT", "--verbos"], "--verbos (did you mean --verbose?)"),
    (generator.main, ["--output-dir", "D"], "--output-dir (did you mean --output_dir?)"),
    (train_command.main, ["--data_dir", "D", "--model_dir", "M", "--epoch", "3"], "--epoch (did you mean --epochs?)"),
    (predict.main, ["--model_dir", "M", "--data-dir", "D", "--output", "p.csv"],
     "--data-dir (did you mean --data_dir?)"),
    (training_report.main, ["MODEL", "--verbse"], "--verbse (did you mean --verbose?)"),
    (benchmark.main, ["--data_dir", "D", "--batch-size", "8"], "--batch-size (did you mean --batch_size?)"),
], ids=COMMANDS)
def test_a_misspelt_option_stops_every_command_naming_the_valid_one(capsys, command, argv, wanted):
    """A misspelt required option (`--data-dir`, `--output-root`) is named as misspelt, not as missing."""
    assert _usage_error(capsys, command, argv) == f"error: unknown option {wanted}"


@pytest.mark.parametrize("command, args", [(main_command.main, _pipeline_args),
                                           (reprocess_command.main, _reprocess_args)], ids=COMMANDS[:2])
@pytest.mark.parametrize("beam_arguments, wanted", [
    (["--runer=DataflowRunner"], "--runer (did you mean --runner?)"),
    (["--direct-num-workers", "2"], "--direct-num-workers (did you mean --direct_num_workers?)"),
    (["--dryrun=True"], "--dryrun (did you mean --dry_run?)"),
])
def test_an_option_beam_does_not_know_is_not_passed_to_beam(tmp_path, capsys, command, args, beam_arguments,
                                                           wanted):
    assert _usage_error(capsys, command, args(tmp_path) + beam_arguments) == f"error: unknown option {wanted}"


def test_a_stray_argument_or_a_bad_beam_value_is_a_usage_error(tmp_path, capsys):
    assert _usage_error(capsys, main_command.main, _pipeline_args(tmp_path) + ["TEST"]) == (
        "error: unexpected argument 'TEST' (see python -m beam_pipeline --help)")
    assert _usage_error(capsys, main_command.main, _pipeline_args(tmp_path) + ["--direct_num_workers=two"]) == (
        "error: argument --direct_num_workers: invalid int value: 'two'")
    assert _usage_error(capsys, training_report.main, ["--model_dir", "M"]) == (
        "error: unknown option --model_dir (see python -m trainer.report --help)")


def test_abbreviations_are_not_guessed(capsys):
    assert _usage_error(capsys, generator.main, ["--output_dir", "D", "--abnormal", "0.5"]) == (
        "error: unknown option --abnormal (did you mean --abnormal_fraction?)")


def test_beam_options_reach_beam_unchanged_in_both_forms():
    """Standard, direct, worker, Google Cloud, setup, portable, Flink, Prism and test options; `--opt=value`
    and `--opt value`; a repeated `--experiments`; a JSON value."""
    beam_arguments = ["--runner=FlinkRunner", "--direct_num_workers", "2", "--direct_running_mode=multi_threading",
                      "--experiments", "a", "--experiments=b", "--num_workers", "3", "--project", "p",
                      "--temp_location=gs://bucket/tmp", "--setup_file", "./setup.py", "--environment_type",
                      "PROCESS", "--environment_config", '{"command": "/opt/apache/beam/boot"}',
                      "--flink_master", "host:8081", "--prism_location", "/opt/prism", "--dry_run=True"]
    args, passed = parse_with_beam_options(main_command.build_parser(), ["--train_dir", "T", "--labels", "L",
                                                                        "--output_dir", "O", *beam_arguments])
    assert passed == beam_arguments
    assert (args.train_dir, args.labels, args.output_dir, args.batch_size) == ("T", "L", "O", DEFAULT_BATCH_SIZE)


def test_argparse_errors_keep_their_reason_in_one_line(capsys):
    """A missing option or a bad value: argparse's reason, without its usage block."""
    assert _usage_error(capsys, main_command.main, ["--labels", "L", "--output_dir", "O"]) == (
        "error: the following arguments are required: --train_dir (see python -m beam_pipeline --help)")
    assert _usage_error(capsys, train_command.main, ["--data_dir", "D", "--model_dir", "M", "--epochs", "many"]) == (
        "error: argument --epochs: invalid int value: 'many' (see python -m trainer --help)")


# --- quiet: --help and runs ----------------------------------------------------------------------------

_HELP_PROBE = """
import contextlib, io, json, runpy, sys
results = {}
for command in sys.argv[1:]:
    sys.argv = [command, "--help"]
    shown = io.StringIO()
    try:
        with contextlib.redirect_stdout(shown):
            runpy.run_module(command, run_name="__main__", alter_sys=True)
        code = None
    except SystemExit as stopped:
        code = stopped.code
    results[command] = {"code": code, "help": shown.getvalue(),
                        "loaded": [name for name in %r if name in sys.modules]}
print(json.dumps(results))
""" % (HEAVY_MODULES,)


def test_help_answers_without_loading_tensorflow_or_beam():
    """Each command's --help, run in turn in one fresh interpreter: none loads TensorFlow, tf.Transform or
    Beam (so none can have loaded them for a later one), and the defaults shown are the named constants."""
    result = subprocess.run([sys.executable, "-c", _HELP_PROBE, *COMMANDS], cwd=REPO, env=_quiet_environment(),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == ""
    results = json.loads(result.stdout)
    for command in COMMANDS:
        assert results[command]["code"] == EXIT_OK, command
        assert results[command]["help"].startswith(f"usage: python -m {command}"), command
        assert results[command]["loaded"] == [], command
        assert "--verbose" in results[command]["help"], command
    shown = {command: " ".join(results[command]["help"].split()) for command in COMMANDS}
    assert f"(default {DEFAULT_BATCH_SIZE})" in shown["beam_pipeline"]
    assert f"(default {DEFAULT_GZIP_LEVEL})" in shown["beam_pipeline"]
    assert f"default {DEFAULT_RUNNER}" in shown["beam_pipeline.reprocess"]
    assert f"(default {MEAN_SHIFT_LIMIT_STD})" in shown["beam_pipeline.reprocess"]
    assert f"default {TrainConfig().epochs}" in shown["trainer"]


def test_a_run_shows_its_progress_and_result_and_nothing_of_tensorflow(tmp_path):
    """The main command on 4 records, as a user starts it: TensorFlow looks for a GPU there (the `cuInit`
    error on a machine without one), yet stderr holds only the job's progress lines."""
    write_training_set(tmp_path, np.random.default_rng(3), 4)
    result = subprocess.run([sys.executable, "-m", "beam_pipeline", *_pipeline_args(tmp_path),
                             "--direct_num_workers", "1"], cwd=REPO, env=_quiet_environment(), capture_output=True,
                            text=True)
    assert result.returncode == EXIT_OK, result.stderr[-3000:]
    assert result.stdout.startswith(f"wrote {tmp_path / 'out'}: examples {{'train': 4}}")
    lines = result.stderr.splitlines()
    assert [line for line in lines if not PROGRESS_LINE.match(line)] == [], result.stderr[-3000:]
    assert any("files found: {'train': 4}" in line for line in lines)
    assert any("transform train: 4 of 4 files" in line for line in lines)  # the progress of a pass


def test_a_trainer_error_is_its_one_line(tmp_path):
    """The trainer loads TensorFlow before it finds the data missing; its start-up lines do not show."""
    result = subprocess.run([sys.executable, "-m", "trainer", "--data_dir", str(tmp_path / "missing"),
                             "--model_dir", str(tmp_path / "model")], cwd=REPO, env=_quiet_environment(),
                            capture_output=True, text=True)
    assert result.returncode == EXIT_CONFIG
    assert result.stderr == f"error: data dir not found: {tmp_path / 'missing'}\n"


def test_only_the_start_up_lines_are_dropped(capfd):
    """What else reaches file descriptor 2 while TensorFlow loads (a warning, a library's error) is kept, in order."""
    with cli._native_startup_lines_hidden():  # noqa: SLF001 - the filter itself, without TensorFlow
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1796156257.239934    5877 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with "
                    b"the appropriate compiler flags.\n")
        os.write(2, b"a warning of a library\n")
        os.write(2, b"E0000 00:00:1796156266.707773    5877 some_lib.cc:52] a real error\n")
    assert capfd.readouterr().err == ("a warning of a library\n"
                                      "E0000 00:00:1796156266.707773    5877 some_lib.cc:52] a real error\n")


_KERAS_PROBE = """
import os, sys
os.environ.pop("TF_USE_LEGACY_KERAS", None)
from ecg_common.cli import start_tensorflow
start_tensorflow(legacy_keras=sys.argv[1] == "legacy")
import tensorflow as tf
import tensorflow_transform
print("keras" in sys.modules, tf.keras.__name__.startswith("tf_keras"))
"""


@pytest.mark.parametrize("how, keras_3_loaded", [("legacy", "False"), ("default", "True")])
def test_the_pipeline_commands_start_tensorflow_without_keras_3(how, keras_3_loaded):
    """`start_tensorflow(legacy_keras=True)`, as both pipeline commands call it, sets what tf.Transform would
    set anyway, before TensorFlow loads: Keras 3 is not imported, and tf.keras is tf_keras either way."""
    result = subprocess.run([sys.executable, "-c", _KERAS_PROBE, how], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": REPO}, timeout=300)
    assert result.stdout.split() == [keras_3_loaded, "True"]


_COLLECTIONS_PROBE = """
import gc, sys
from ecg_common.cli import libraries_loading
full = []
gc.callbacks.append(lambda phase, info: full.append(1) if phase == "start" and info["generation"] == 2 else None)
with libraries_loading():
    import tensorflow, tensorflow_transform, apache_beam
print(len(full), gc.get_freeze_count() > 100_000, gc.isenabled())
"""


def test_the_libraries_load_without_garbage_collection_and_are_frozen_afterwards():
    """`libraries_loading` (around both pipeline commands' imports): no full collection while TensorFlow,
    tf.Transform and Beam load (7 otherwise, 0.57 s), what they allocated frozen, the collector on again."""
    result = subprocess.run([sys.executable, "-c", _COLLECTIONS_PROBE], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": REPO}, timeout=300)
    assert result.stdout.split() == ["0", "True", "True"]
