#!/usr/bin/env bash
# Set up .venv and run every test: notebooks in sync with neuromf/ and clean, then the pytest suite
# (tests/ and every notebook executed by nbmake) in one pytest run with one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python scripts/check_notebooks.py
exec .venv/bin/python -m pytest tests nbs --nbmake --nbmake-kernel=python3 --nbmake-timeout=600 "$@"
