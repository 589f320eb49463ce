#!/usr/bin/env bash
# Create .venv, install the engine (torch 2.13.0 pinned) and run the ICBM152 demo into demo_output/.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0" -e ".[demo,onnx]"
.venv/bin/python -m fagan_engine demo --output demo_output --force
