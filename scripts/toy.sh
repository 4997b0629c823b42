#!/usr/bin/env bash
# Set up .venv and run the toroid experiment on default settings (configs/toy_toroid.yaml = the built-in defaults).
# Arguments go to neuromf-toy, e.g.: bash scripts/toy.sh --out runs/mine training.steps=2000
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "$#" -eq 0 ]; then
  out="runs/toy-$(date +%Y%m%d-%H%M%S)"
  exec .venv/bin/neuromf-toy --config configs/toy_toroid.yaml --out "$out"
fi
exec .venv/bin/neuromf-toy "$@"
