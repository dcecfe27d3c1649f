"""How a run ends: the error budget that turns too many rejections into a failed run.

A scheduled job that "succeeds" while rejecting half its input hides a broken export or a wrong
labels file until someone looks at the data. The rule: for each split, rejected files / files
found must not exceed `--max_error_rate`. Per split, because a small test split that is entirely
broken would disappear in the average with a large training split. Every rejected file counts,
whatever the reason (a training record without a label is lost for training just as a corrupt one);
labels-file findings that are not files (`errors/labels.jsonl`) do not. The output and the report
are published either way, so the operator can read why; only the exit status differs.
"""
from __future__ import annotations

DEFAULT_MAX_ERROR_RATE = 0.1
"""10%: a real archive has the odd broken, short or unlabelled file, while a wrong layout, a half-copied
archive or the labels file of another data set rejects far more than one file in ten."""


def error_rates(found: dict[str, int], rejected: dict[str, int]) -> dict[str, float]:
    """Rejected / found per split (0 for a split with no file)."""
    return {split: round(rejected.get(split, 0) / count, 6) if count else 0.0 for split, count in found.items()}


def splits_over_budget(rates: dict[str, float], max_error_rate: float) -> list[str]:
    """The splits whose error rate exceeds the budget, in order."""
    return [split for split, rate in rates.items() if rate > max_error_rate]


def describe_excess(summary: dict, output_dir: str) -> str:
    """The one-line message of a run that finished above its error budget."""
    parts = [f"{split} {summary['error_rate'][split]:.1%} ({summary['rejected_total'][split]} of "
             f"{summary['files_found'][split]} files)" for split in summary["error_rate_exceeded"]]
    return (f"error rate above --max_error_rate {summary['max_error_rate']:g}: {', '.join(parts)} rejected; "
            f"output and report written to {output_dir} (see errors/)")


def describe_dry_run(summary: dict) -> str:
    """The one line both commands print after a dry run."""
    return (f"dry run: built the job ({len(summary['steps'])} steps) on {summary['runner']}; "
            f"pipeline proto {summary['pipeline_proto_bytes']} bytes; nothing written")
