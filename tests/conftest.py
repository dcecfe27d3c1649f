"""Shared pytest fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL_ECG_DIR_ENV = "ECG_REAL_DATA_DIR"


@pytest.fixture(scope="session")
def real_ecg_dir() -> Path:
    """The read-only folder of real recordings (`cinc2021/`, `cpsc2018/`); never write into it.

    It lives in `shared/data/real-ecg` beside the repository (the repo root's parent), locally and
    in CI; `ECG_REAL_DATA_DIR` overrides that. A missing folder fails the tests rather than
    skipping them, so a broken checkout cannot pass silently.
    """
    override = os.environ.get(REAL_ECG_DIR_ENV)
    repo_root = Path(__file__).resolve().parents[1]
    path = Path(override) if override else repo_root.parent / "shared" / "data" / "real-ecg"
    if not path.is_dir():
        pytest.fail(f"real ECG data not found at {path} (set {REAL_ECG_DIR_ENV} to its location)")
    return path
