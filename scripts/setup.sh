#!/usr/bin/env bash
# Create .venv with a Python >= 3.12 and install hdi_lab into it (idempotent).
# Usage: bash scripts/setup.sh [extras]   (default extras: dev)
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-dev}
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
  py=$(bash scripts/find-python)
  echo "setup: creating .venv with $py ($("$py" -V 2>&1))" >&2
  rm -rf .venv
  "$py" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -U pip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"
echo "setup: hdi_lab installed in .venv ($(.venv/bin/python -V))" >&2
