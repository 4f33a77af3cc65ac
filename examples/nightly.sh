#!/usr/bin/env bash
# A scripted week of nightly re-attribution runs over fixture snapshots.
#
# One fixture world (20,000 accounts, seed 9, 51 days) is observed on seven
# consecutive days (as of day 45 .. 51); each "night" loads that day's
# snapshot into one store with `attribution reattribute` and prints the job's
# summary line and the diff counts against the night before.
#
# Usage: examples/nightly.sh [WORK_DIR]   (default: ./nightly-week; reused if present)
# Environment: ACCOUNTS (default 20000), NIGHTS (default 7),
#              ATTRIBUTION (the command, default .venv/bin/attribution, set up with
#              `make setup` when missing), PYTHON (default .venv/bin/python).
# The store is the embedded one in WORK_DIR/store: NEO4J_URI is ignored (a demo must
# not replace the graph of a real database).
set -euo pipefail

cd "$(dirname "$0")/.."
WORK=${1:-nightly-week}
if [[ -z "${ATTRIBUTION:-}" && ! -x .venv/bin/attribution ]]; then
  make -s setup >&2   # a fresh clone: the virtualenv the README's commands use
fi
ATTRIBUTION=${ATTRIBUTION:-.venv/bin/attribution}
PYTHON=${PYTHON:-.venv/bin/python}
ACCOUNTS=${ACCOUNTS:-20000}
NIGHTS=${NIGHTS:-7}
LAST=$((44 + NIGHTS))
STORE="$WORK/store"
unset NEO4J_URI
mkdir -p "$WORK"

# The week's snapshots, in one process (each is the same world cut a day later).
"$PYTHON" - "$WORK" "$ACCOUNTS" "$LAST" <<'PY'
import sys
from pathlib import Path

from fixtures.worldgen import generate_world

work, accounts, last = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for day in range(45, last + 1):
    if not (work / f"day{day}" / "snapshot").is_dir():
        generate_world(work / f"day{day}", accounts=accounts, seed=9, days=max(51, last),
                       as_of_day=day)
PY

for day in $(seq 45 "$LAST"); do
  status=0
  line=$("$ATTRIBUTION" reattribute --store "$STORE" --snapshot "$WORK/day$day/snapshot" \
         --quiet) || status=$?
  case $status in
    0) echo "night $day: $line" ;;
    75) echo "night $day: skipped, another job holds the store"; continue ;;
    *) echo "night $day: failed with status $status" >&2; exit "$status" ;;
  esac
  if [[ $day -gt 45 ]]; then
    echo "  diff: $("$ATTRIBUTION" diff --store "$STORE" --counts)"
  fi
done
echo "history:"
"$ATTRIBUTION" runs --store "$STORE"
