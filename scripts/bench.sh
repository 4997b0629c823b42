#!/bin/bash
# Full benchmark of a MeanFlow training step against flow matching (neuromf-bench --suite full):
# CPU: the toy MLP (batch 512) and the MAISI UNet small preset at 4x16^3 (batch 4) and 4x32^3 (batch 2);
# with a GPU also the rflow preset at 4x48^3. Timings side by side in one process, peak memory of each case in a
# fresh process. Writes bench_results/cpu.json (bench_results/gpu.json when CUDA is available) and prints the table.
# Extra arguments go to neuromf-bench, e.g. `scripts/bench.sh --only mlp --no-memory`; THREADS=2 to change threads.
# An existing results file is never replaced silently: pass --force to replace it, or --out another file.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
exec "$PY" -m neuromf.bench --suite full --threads "${THREADS:-1}" "$@"
