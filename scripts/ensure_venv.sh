#!/usr/bin/env bash
# Creates .venv with the pinned, verified dependency set on first use; later calls reuse it.
# Sourced by run_local.sh and run_tests.sh. Reinstalls when setup.py or the constraints change.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv"
python_bin="${PYTHON:-$(command -v python3.11 || command -v python3)}"
stamp="$venv/.installed-$(cat "$repo_root/setup.py" "$repo_root/requirements/constraints.txt" | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  echo "Setting up $venv (first run: about 3 GB of pinned packages, a few minutes)..." >&2
  "$python_bin" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 10) else 1)' \
    || { echo "error: Python >= 3.10 needed (verified on 3.11); set PYTHON=/path/to/python3.11" >&2; exit 2; }
  [[ -x "$venv/bin/python" ]] || "$python_bin" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade "pip>=24" >&2
  "$venv/bin/python" -m pip install --quiet -c "$repo_root/requirements/constraints.txt" -e "$repo_root[test]" >&2
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
