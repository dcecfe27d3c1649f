"""Shared pytest fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest
from real_recordings import REAL_ECG_DIR_ENV, real_ecg_path


@pytest.fixture(scope="session")
def real_ecg_dir() -> Path:
    """The read-only folder of real recordings (`real_recordings.py` says where). A missing folder
    fails the tests rather than skipping them, so a broken checkout cannot pass silently."""
    path = real_ecg_path()
    if not path.is_dir():
        pytest.fail(f"real ECG data not found at {path} (set {REAL_ECG_DIR_ENV} to its location)")
    return path
