#!/usr/bin/env bash
# Set up .venv and run every test: notebooks in sync with neuromf/ and clean, then the pytest suite
# (tests/ and every notebook executed by nbmake) in one pytest run with one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Chromium for the real-browser dashboard test (Debian package; needs root or sudo). Without it that test is
# reported as skipped with the reason, never passed.
bash scripts/install_browser.sh || echo "warning: Chromium could not be installed; the browser test will be skipped" >&2
.venv/bin/python scripts/check_notebooks.py
exec .venv/bin/python -m pytest tests nbs --nbmake --nbmake-kernel=python3 --nbmake-timeout=600 "$@"
