"""The error budget and the one-line failure reasons (`outcome.py`)."""
from __future__ import annotations

import errno

from beam_pipeline.runs import outcome
from ecg_common.cli import describe_failure


def test_error_rate_is_per_split_and_only_above_the_budget_fails():
    rates = outcome.error_rates({"train": 100, "test": 10, "empty": 0}, {"train": 10, "test": 2})
    assert rates == {"train": 0.1, "test": 0.2, "empty": 0.0}
    assert outcome.splits_over_budget(rates, 0.1) == ["test"]  # 10% is within a 10% budget
    assert outcome.splits_over_budget(rates, 0.2) == []


def test_a_full_disk_is_named_whether_the_errno_survives_or_only_its_text():
    direct = OSError(errno.ENOSPC, "No space left on device")
    wrapped = RuntimeError("Pipeline failed")
    wrapped.__cause__ = direct
    as_text = RuntimeError("Error in stage 3: OSError: [Errno 27] File too large")
    for error in (direct, wrapped, as_text):
        assert describe_failure(error).startswith("run failed: the disk is full")
    assert describe_failure(ValueError("boom\nmore")) == "run failed: ValueError: boom"


def test_a_worker_traceback_wrapped_by_beam_is_reduced_to_its_reason():
    wrapped = RuntimeError('Traceback (most recent call last):\n  File "x.py", line 1, in f\n    open(p)\n'
                           "PermissionError: [Errno 13] Permission denied: '/out/part-0'\n\n"
                           "[while running 'Write[train]']")
    assert describe_failure(wrapped) == "run failed: PermissionError: [Errno 13] Permission denied: '/out/part-0'"
