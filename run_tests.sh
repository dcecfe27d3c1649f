#!/usr/bin/env bash
# Runs the test suite; sets up .venv with pinned dependencies first if needed.
# Extra arguments go to pytest, e.g. ./run_tests.sh tests/test_labels.py -k bom
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_venv.sh
exec python -m pytest "$@"
