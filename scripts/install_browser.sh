#!/usr/bin/env bash
# Install what the real-browser dashboard test needs: Debian's Chromium (apt, needs root) and the Playwright
# Python package into .venv. Playwright's own browser download (`playwright install`) is never used: the test
# drives /usr/bin/chromium through `executable_path`. Without these the browser test is reported as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
[ -x .venv/bin/python ] || { echo "no .venv: run scripts/setup.sh first" >&2; exit 1; }
.venv/bin/python -m pip install -q --disable-pip-version-check "playwright>=1.40,<2" 2>&1 | grep -v "is ignored" || true
/usr/bin/chromium --version 2>/dev/null
.venv/bin/python -c "import playwright; from importlib.metadata import version; print('playwright', version('playwright'))"
