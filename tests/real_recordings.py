"""Where the read-only folder of real recordings is (`cinc2021/`, `cpsc2018/`); never write into it.

It lives in `shared/data/real-ecg` beside the repository (the repo root's parent), locally and in CI;
`ECG_REAL_DATA_DIR` overrides that. One rule for the `real_ecg_dir` fixture and for the modules that
need the path at import time (parametrized ids, module constants).
"""
from __future__ import annotations

import os
from pathlib import Path

REAL_ECG_DIR_ENV = "ECG_REAL_DATA_DIR"


def real_ecg_path() -> Path:
    """The folder's path (it may not exist: the fixture fails the tests then, rather than skipping them)."""
    override = os.environ.get(REAL_ECG_DIR_ENV)
    repo_root = Path(__file__).resolve().parents[1]
    return Path(override) if override else repo_root.parent / "shared" / "data" / "real-ecg"
