#!/usr/bin/env bash
# Create .venv with Python 3.11+ and install the project with its test extras (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import benchmark, torch, torchvision, opacus, submitit, pandas, matplotlib, sklearn, pytest" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch 2.14.1 / torchvision 0.29.1 are a matching pair (see shared notes); pip resolves the rest
  .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" 2>/dev/null \
    || .venv/bin/python -m pip install -q torch torchvision
  .venv/bin/python -m pip install -q -e ".[test,lint]"
  touch .venv/.installed
fi
