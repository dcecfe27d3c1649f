"""The same job beyond the laptop, checked offline: a Dataflow dry run of both commands, the portable
(Flink-style) path through a local job service and an external worker pool, object-store paths, and
the packaging the workers install."""
import contextlib
import dataclasses
import glob
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import time

import apache_beam as beam
import fake_object_store
import numpy as np
import pytest
from batch_data import ecg, lead_moments, run_base, save_record, write_training_set
from tensorflow_transform import __version__ as tft_version
from test_pipeline import read_examples

from beam_pipeline.cli.main_command import main as pipeline_main
from beam_pipeline.cli.reprocess_command import main as reprocess_main
from beam_pipeline.runs.job import JobConfig, run_job
from beam_pipeline.inputs.file_states import STORE_CHECKSUM_PREFIX
from beam_pipeline.runs.ledger import LEDGER_FILE
from beam_pipeline.runs.reprocess_job import Outcome, ReprocessConfig, run_reprocess
from ecg_common.cli import EXIT_OK
from ecg_common.schema import ECG_SHAPE, NUM_LEADS, TEST_SPLIT, TRAIN_SPLIT

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATAFLOW_DRY_RUN = ["--runner", "DataflowRunner", "--dry_run=True", "--project", "fake-project",
                    "--region", "europe-west1", "--temp_location", "gs://fake-bucket/tmp",
                    "--setup_file", os.path.join(REPO, "setup.py")]
SERVICE_START_GIVE_UP_S = 120
"""Only so a service that never listens cannot hang the suite; no assertion depends on time."""
WORKER_STARTED = "Starting worker with command"


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    return run_base(tmp_path_factory.mktemp("base"), np.random.default_rng(21), count=4)


# --- Dataflow ----------------------------------------------------------------------------------------

def test_main_command_builds_its_whole_job_on_a_dataflow_dry_run(tmp_path, capsys):
    """Both passes, for the train and test splits, with the options parsing the main command uses."""
    write_training_set(tmp_path, np.random.default_rng(22), 3)
    args = ["--train_dir", str(tmp_path / "TRAIN"), "--test_dir", str(tmp_path / "TRAIN"),
            "--labels", str(tmp_path / "labels.txt"), "--output_dir", str(tmp_path / "out"), *DATAFLOW_DRY_RUN]
    assert pipeline_main(args) == EXIT_OK
    printed = re.search(r"dry run: built the job \(\d+ steps\) on DataflowRunner; pipeline proto (\d+) bytes",
                        capsys.readouterr().out)
    assert printed and int(printed.group(1)) > 10_000
    summary = run_job(JobConfig(str(tmp_path / "TRAIN"), str(tmp_path / "labels.txt"), str(tmp_path / "out"),
                                test_dir=str(tmp_path / "TRAIN")), DATAFLOW_DRY_RUN)
    assert {"Analyze", "WriteTransformFn"} | {f"{step}[{split}]" for step in ("Transform", "Encode", "Write", "Errors")
                                              for split in (TRAIN_SPLIT, TEST_SPLIT)} <= set(summary["steps"])
    assert not (tmp_path / "out").exists()


def test_reprocess_builds_its_whole_job_on_a_dataflow_dry_run(base_run, tmp_path):
    base, _, _ = base_run
    save_record(tmp_path / "incoming", "N1", ecg(np.random.default_rng(24)))
    root = tmp_path / "root"
    result = run_reprocess(ReprocessConfig(str(tmp_path / "incoming"), str(base), str(root)), DATAFLOW_DRY_RUN)
    assert result.outcome is Outcome.DRY_RUN
    assert {"Transform[data]", "Encode[data]", "Write[data]", "Errors[data]", "BatchStatistics"} <= set(
        result.summary["steps"])
    assert os.listdir(root) == [".lock"], "a dry run publishes nothing and leaves the ledger alone"


# --- Object stores -----------------------------------------------------------------------------------

@pytest.fixture
def object_store(tmp_path):
    """A `fakestore://` bucket in a local folder (no directories, only objects, no open() on its paths)."""
    fake_object_store.FakeObjectStore.root = str(tmp_path / "bucket")
    return tmp_path / "bucket"


def test_reprocess_reads_and_writes_an_object_store_only_through_beam_filesystems(base_run, object_store):
    base, mean, std = base_run
    raw = {f"N{i}": ecg(np.random.default_rng(25 + i)) for i in range(2)}
    for rid, signal_mv in raw.items():
        save_record(object_store / "incoming", rid, signal_mv)
    args = ["--incoming", f"{fake_object_store.PREFIX}incoming", "--transform_dir", str(base),
            "--output_root", f"{fake_object_store.PREFIX}root"]
    assert reprocess_main(args) == EXIT_OK
    (batch,) = glob.glob(str(object_store / "root" / "batch-*"))
    assert os.path.exists(os.path.join(batch, "_SUCCESS")) and (object_store / "root" / LEDGER_FILE).exists()
    examples = read_examples(batch, "data")
    np.testing.assert_allclose(examples["N1"]["ecg"], (raw["N1"] - mean) / std, atol=1e-4)
    ledger_lines = [json.loads(line) for line in (object_store / "root" / LEDGER_FILE).read_text().splitlines()[1:]]
    assert sorted(row["path"].rsplit("/", 1)[1] for row in ledger_lines) == ["N0.mat", "N1.mat"]
    assert all(row["sha256"] == STORE_CHECKSUM_PREFIX + hashlib.md5(
        (object_store / row["path"][len(fake_object_store.PREFIX):]).read_bytes()).hexdigest()
        for row in ledger_lines), "the store's own checksums, no file read to hash it"
    assert reprocess_main(args) == EXIT_OK
    assert len(glob.glob(str(object_store / "root" / "batch-*"))) == 1, "the ledger on the bucket was read back"
    save_record(object_store / "incoming", "N1", ecg(np.random.default_rng(99)))  # re-exported
    assert reprocess_main(args) == EXIT_OK
    newest = sorted(glob.glob(str(object_store / "root" / "batch-*")))[-1]
    assert list(read_examples(newest, "data")) == ["N1"], "a changed checksum redoes the record"


def test_main_command_finds_its_inputs_on_an_object_store(object_store, tmp_path):
    """An object store has no folder objects: `exists(gs://bucket/TRAIN)` is False for a real bucket."""
    train = write_training_set(object_store, np.random.default_rng(27), 3)
    out = tmp_path / "out"
    assert pipeline_main(["--train_dir", f"{fake_object_store.PREFIX}TRAIN",
                          "--labels", f"{fake_object_store.PREFIX}labels.txt", "--output_dir", str(out)]) == EXIT_OK
    assert set(read_examples(out, TRAIN_SPLIT)) == set(train)


# --- Portable runner (the path Flink takes) ----------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PortableServices:
    job_endpoint: str
    worker_pool: str
    worker_pool_log: str

    def beam_args(self) -> list[str]:
        return ["--runner", "PortableRunner", "--job_endpoint", self.job_endpoint,
                "--environment_type", "EXTERNAL", "--environment_config", self.worker_pool]

    def workers_started(self) -> int:
        with open(self.worker_pool_log, encoding="utf-8", errors="replace") as handle:
            return handle.read().count(WORKER_STARTED)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def _wait_until_listening(port: int, process: subprocess.Popen, log) -> None:
    give_up = time.monotonic() + SERVICE_START_GIVE_UP_S
    while True:
        assert process.poll() is None, f"service exited:\n{log.read_text()[-3000:]}"
        with contextlib.suppress(OSError), socket.create_connection(("localhost", port), timeout=1):
            return
        assert time.monotonic() < give_up, f"service never listened on {port}:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def portable_services(tmp_path_factory):
    """Beam's local job service and an external worker pool, as separate processes on free ports.

    The worker pool starts SDK workers with `python` from PATH, so the venv's bin goes first. Each
    service runs in its own process group, so teardown kills it and the workers it started by id.
    """
    logs = tmp_path_factory.mktemp("portable")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    job_port, pool_port = _free_port(), _free_port()
    services = [("job_service", "apache_beam.runners.portability.local_job_service_main", ["--port", str(job_port)],
                 job_port),
                ("worker_pool", "apache_beam.runners.worker.worker_pool_main", ["--service_port", str(pool_port)],
                 pool_port)]
    started = []
    try:
        for name, module, args, port in services:
            log = logs / f"{name}.log"
            with open(log, "wb") as handle:
                started.append(subprocess.Popen([sys.executable, "-m", module, *args], stdout=handle,
                                                stderr=subprocess.STDOUT, env=env, start_new_session=True))
            _wait_until_listening(port, started[-1], log)
        yield PortableServices(f"localhost:{job_port}", f"localhost:{pool_port}", str(logs / "worker_pool.log"))
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def portable_base(portable_services, tmp_path_factory):
    """The main command (one pipeline, both passes) run through the portable runner."""
    return run_base(tmp_path_factory.mktemp("portable-base"), np.random.default_rng(28), count=4,
                    beam_args=tuple(portable_services.beam_args()))


def test_main_command_runs_on_a_portable_runner_with_an_external_worker_pool(portable_services, portable_base):
    out, _, _ = portable_base
    examples = read_examples(out, TRAIN_SPLIT)
    values = np.stack([e["ecg"] for e in examples.values()]).reshape(-1, NUM_LEADS).astype(np.float64)
    np.testing.assert_allclose(values.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(values.std(axis=0), 1.0, atol=1e-4)
    with open(out / "run_summary.json") as handle:
        summary = json.load(handle)
    assert summary["runner"] == "PortableRunner"
    assert summary["examples_written"] == {TRAIN_SPLIT: 4} and summary["reconciled"] is True
    assert portable_services.workers_started() >= 1, "the job ran in the external worker pool"


def test_reprocess_runs_on_a_portable_runner_with_an_external_worker_pool(portable_services, portable_base, tmp_path):
    base, mean, std = portable_base
    raw = {f"N{i}": ecg(np.random.default_rng(29 + i), shift_std=0.3) for i in range(2)}
    for rid, signal_mv in raw.items():
        save_record(tmp_path / "incoming", rid, signal_mv)
    workers_before = portable_services.workers_started()
    assert reprocess_main(["--incoming", str(tmp_path / "incoming"), "--transform_dir", str(base),
                           "--output_root", str(tmp_path / "root"), *portable_services.beam_args()]) == EXIT_OK
    (batch,) = glob.glob(str(tmp_path / "root" / "batch-*"))
    examples = read_examples(batch, "data")
    np.testing.assert_allclose(examples["N0"]["ecg"], (raw["N0"] - mean) / std, atol=1e-4)
    with open(os.path.join(batch, "run_summary.json")) as handle:
        drift = json.load(handle)["drift"]
    batch_mean, _ = lead_moments(raw.values())
    assert drift["samples_per_lead"] == 2 * ECG_SHAPE[0]
    np.testing.assert_allclose([drift["leads"][lead]["batch_mean_mv"] for lead in drift["leads"]], batch_mean,
                               rtol=1e-6)
    assert portable_services.workers_started() > workers_before


# --- Packaging ---------------------------------------------------------------------------------------

def test_the_sdist_workers_install_carries_every_module_but_the_demo_generator(tmp_path):
    """`--setup_file` makes Beam run `python setup.py sdist` (this environment has no `build` module) and
    install the result on every worker; a module missing from it fails only there, at import time. The
    demo data generator is not needed there and is left out."""
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(tmp_path)], cwd=REPO, check=True,
                   capture_output=True)
    (tarball,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(tarball) as archive:
        packaged = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    modules = {os.path.relpath(path, REPO) for package in ("ecg_common", "ecg_decode", "beam_pipeline", "trainer")
               for path in glob.glob(os.path.join(REPO, package, "**", "*.py"), recursive=True)}
    demo = {m for m in modules if m.startswith("beam_pipeline/synthetic/")}
    assert "beam_pipeline/runs/reprocess_job.py" in modules and "trainer/__init__.py" in modules
    assert "ecg_common/schema.py" in modules and demo
    assert modules - demo - packaged == set()
    assert not demo & packaged
    assert "setup.py" in packaged


def test_the_worker_image_is_pinned_to_this_environment():
    with open(os.path.join(REPO, "deploy", "Dockerfile")) as handle:
        dockerfile = handle.read()
    base_images = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM ")]
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert base_images == [f"apache/beam_python{python}_sdk:{beam.__version__}"]
    assert re.search(r"pip install .*-c /tmp/constraints\.txt", dockerfile), "the image installs with the pins"
    with open(os.path.join(REPO, "requirements", "constraints.txt")) as handle:
        constraints = set(handle.read().split())
    assert {f"apache-beam=={beam.__version__}", f"tensorflow-transform=={tft_version}"} <= constraints
