"""The run summary (`run_summary.json`): what was found, written and rejected, the statistics applied,
the quality flags, class balance and what the run cost. Both runs write one."""
from __future__ import annotations

import collections
import json
from collections.abc import Callable, Iterable
import resource
import time

from apache_beam.io.filesystems import FileSystems

from beam_pipeline.graph.statistics import lead_statistics
from beam_pipeline.graph.encode import UNLABELLED, label_counter
from beam_pipeline.runs.outcome import DEFAULT_MAX_ERROR_RATE, error_rates, splits_over_budget
from ecg_common.layout import ERRORS_DIR, GEOMETRY_KEY, LABELS_FINDINGS, QUALITY_DIR, SUMMARY_DECODING_KEY, SUMMARY_FILE
from ecg_common.rejections import ConfigurationError
from ecg_common.schema import CLASS_NAMES, DEFAULT_GEOMETRY, Geometry
from ecg_decode.decoding import quality
from ecg_decode.sandbox.pool import decoder_cpu_seconds


def _rejection_counts(out_dir: str, split: str) -> dict[str, int]:
    path = FileSystems.join(out_dir, ERRORS_DIR, f"{split}.jsonl")
    with FileSystems.open(path) as handle:
        reasons = [json.loads(line)["reason"] for line in handle.read().decode("utf-8").splitlines() if line]
    return dict(sorted(collections.Counter(reasons).items()))


def _quality_findings(out_dir: str, split: str) -> list[dict]:
    path = FileSystems.join(out_dir, QUALITY_DIR, f"{split}.jsonl")
    if not FileSystems.exists(path):
        return []
    with FileSystems.open(path) as handle:
        return [json.loads(line) for line in handle.read().decode("utf-8").splitlines() if line]


def _peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process and of its (finished) worker subprocesses, in MB."""
    to_mb = 1 / 1024  # ru_maxrss is in KB on Linux
    return {"driver": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * to_mb, 1),
            "largest_child": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * to_mb, 1)}


def cpu_seconds() -> float:
    """CPU time of this process (all threads), of its finished worker processes (multi_processing)
    and of its live decoder children: with wall time, how many cores the job kept busy."""
    own, finished = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + finished.ru_utime + finished.ru_stime + decoder_cpu_seconds()


class ReconciliationError(RuntimeError):
    """The job's counts do not add up: elements were lost (or duplicated) inside the job. A run that
    cannot account for every file fails: nothing is published."""


def mismatches(summary: dict) -> list[str]:
    """What does not reconcile, one phrase each: per split, files found against examples written plus
    records rejected, and the labels-file findings handed to the job against those it wrote."""
    problems = []
    for split, found in summary["files_found"].items():
        written = summary.get("records_written", summary["examples_written"])[split]
        rejected = summary["rejected_total"][split]
        if found != written + rejected:
            problems.append(f"{split}: {found} files found, {written} written + {rejected} rejected")
    expected = summary["label_file_findings_expected"]
    seen = sum(summary["label_file_findings"].values())
    if expected != seen:
        problems.append(f"labels file: {expected} findings, {seen} written to {ERRORS_DIR}/")
    return problems


def check_reconciled(summary: dict) -> None:
    """Raises ReconciliationError, with the counts, unless every file and finding is accounted for."""
    if problems := mismatches(summary):
        raise ReconciliationError(f"the counts do not reconcile ({'; '.join(problems)}): elements were lost "
                                  "inside the job; nothing was published")


def binary_class_balance(counter: Callable[[str], int], splits: Iterable[str]) -> dict[str, dict[str, int]]:
    """Written records per class name, plus `unlabelled` (test records without a label), per split,
    from the job's counters (`encode.label_counter`)."""
    return {split: {name: counter(label_counter(split, name)) for name in [*CLASS_NAMES.values(), UNLABELLED]}
            for split in splits}


def summarize(found: dict[str, int], out_dir: str, written: dict[str, int], runner: str, started: float,
              transform_dir: str | None = None, max_error_rate: float = DEFAULT_MAX_ERROR_RATE,
              label_findings: int = 0, geometry: Geometry = DEFAULT_GEOMETRY,
              records_written: dict[str, int] | None = None,
              class_balance: dict[str, dict[str, int]] | None = None) -> dict:
    """The run summary of the output in `out_dir`: `found` are the files found per split, as the job
    counted them, `class_balance` the written records per class; `lead_statistics` are those of the transform applied,
    read from `transform_dir` (default: `out_dir`, where the main command writes its transform).
    `error_rate_exceeded` lists the splits above `max_error_rate` (see `outcome.py`); `label_findings`
    is how many labels-file findings the job was given to write (checked by `check_reconciled`).
    `written` counts examples (windows), `records_written` the files they came from (default: the
    same, one window per record); files found = records written + rejected."""
    means, stds = lead_statistics(transform_dir or out_dir)
    splits = list(found)
    rejected = {split: _rejection_counts(out_dir, split) for split in splits}
    rejected_total = {split: sum(counts.values()) for split, counts in rejected.items()}
    rates = error_rates(found, rejected_total)
    label_file_findings = _rejection_counts(out_dir, LABELS_FINDINGS)
    summary = {
        "files_found": found,
        "examples_written": written,
        "records_written": records_written if records_written is not None else dict(written),
        "rejected": rejected,
        "rejected_total": rejected_total,
        "error_rate": rates,
        "max_error_rate": max_error_rate,
        "error_rate_exceeded": splits_over_budget(rates, max_error_rate),
        "quality": {split: quality.summarize(_quality_findings(out_dir, split)) for split in splits},
        "class_balance": class_balance or {},
        "label_file_findings": label_file_findings,
        "label_file_findings_expected": label_findings,
        "lead_statistics": {"leads": list(geometry.lead_names), "mean_mv": means.tolist(), "std_mv": stds.tolist()},
        "signal": {"sampling_rate_hz": geometry.sampling_rate_hz, "num_samples": geometry.num_samples,
                   "leads": list(geometry.lead_names), "crop": f"first {geometry.window_s:g} s"},
        "runner": runner,
        "wall_time_s": round(time.time() - started, 2),
        "peak_rss_mb": _peak_rss_mb(),
    }
    summary["reconciled"] = not mismatches(summary)
    return summary


def passes(wall_s: float, cpu_s: float) -> dict:
    """What the Beam job itself cost (imports, discovery and the report excluded)."""
    return {"wall_s": round(wall_s, 2), "cpu_s": round(cpu_s, 2), "cores_busy": round(cpu_s / max(wall_s, 1e-9), 2)}


def write_summary(output_dir: str, summary: dict) -> None:
    """`summary` as `output_dir`'s `run_summary.json` (indented: people read it too)."""
    with FileSystems.create(FileSystems.join(output_dir, SUMMARY_FILE)) as handle:
        handle.write(json.dumps(summary, indent=2).encode("utf-8"))


def read_summary(output_dir: str) -> dict:
    """`output_dir`'s `run_summary.json`; OSError or ValueError when it is missing or unreadable."""
    with FileSystems.open(FileSystems.join(output_dir, SUMMARY_FILE)) as handle:
        return json.loads(handle.read().decode("utf-8"))


def read_geometry(output_dir: str) -> Geometry:
    """The geometry an earlier main run's output was built with (its `run_summary.json`); the default
    for an output written before geometry was recorded. ConfigurationError when it cannot be read."""
    path = FileSystems.join(output_dir, SUMMARY_FILE)
    if not FileSystems.exists(path):
        return DEFAULT_GEOMETRY
    try:
        decoding = read_summary(output_dir).get(SUMMARY_DECODING_KEY) or {}
        recorded = decoding.get(GEOMETRY_KEY)
        return DEFAULT_GEOMETRY if recorded is None else Geometry.from_json(recorded)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigurationError(f"cannot read the geometry of {output_dir} from {path}: {error}") from None


def check_same_geometry(asked: Geometry, built: Geometry, transform_dir: str) -> None:
    """Reprocessing must cut examples as the transform was built: else one line naming both."""
    if asked != built:
        raise ConfigurationError(f"--transform_dir {transform_dir} was built with {built.describe()}; this run asks "
                                 f"for {asked.describe()}: give the same --target_rate_hz, --window_s and --leads")
