#!/usr/bin/env bash
# Create .venv and install the project (idempotent). Sourced by the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/reputation ]; then
  "${PYTHON:-python3}" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[dev]"
fi
