#!/usr/bin/env bash
# Training speed of the toy at two commits, run side by side (1 thread each, so both see the same machine state),
# twice with the start order swapped. Prints the wall time of each run (start-up + training + a tiny evaluation).
#   bash scripts/ab_speed.sh 05aa08f^ HEAD            # the commit before the engine vs now
#   STEPS=4000 bash scripts/ab_speed.sh main~3 main model.hidden_dim=256   # extra args: overrides for both runs
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: ab_speed.sh COMMIT_A COMMIT_B [key=value ...]" >&2; exit 2; }
A=$1; B=$2; shift 2
PY=$PWD/.venv/bin/python; STEPS=${STEPS:-10000}; TMP=$(mktemp -d /tmp/neuromf-ab.XXXX)
trap 'git worktree remove --force "$TMP/a" 2>/dev/null; git worktree remove --force "$TMP/b" 2>/dev/null; rm -rf "$TMP"' EXIT
git worktree add -q --detach "$TMP/a" "$A"; git worktree add -q --detach "$TMP/b" "$B"
run() { local name=$1 dir=$2; shift 2; local s=$(date +%s.%N)
  (cd "$dir" && PYTHONPATH="$dir" "$PY" -m neuromf.toy --out "$TMP/run_$name" --no-progress --no-figures training.steps=$STEPS \
     training.threads=1 eval.n_samples=100 eval.sample_steps=[1] "$@" > "$TMP/$name.log" 2>&1) || { echo "$name failed: $(tail -1 "$TMP/$name.log")" >&2; exit 1; }
  echo "$name ($(git rev-parse --short "$( [ "$name" = "${name#a}" ] && echo "$B" || echo "$A")")) $STEPS steps: $(python3 -c "print(round($(date +%s.%N)-$s,1))") s"; }
run a1 "$TMP/a" "$@" & run b1 "$TMP/b" "$@" & wait
run b2 "$TMP/b" "$@" & run a2 "$TMP/a" "$@" & wait
