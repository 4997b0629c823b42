#!/usr/bin/env bash
# Create .venv (if needed) and install NeuroMF with its dev tools. torch goes first, pinned to the
# local CPU build (torch==2.13.0), so the package's torch requirement is already satisfied.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import torch, neuromf; print(f'neuromf {neuromf.__version__}, torch {torch.__version__}')"
