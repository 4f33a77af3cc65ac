#!/usr/bin/env bash
# A scripted week of nightly re-attribution runs over fixture snapshots.
#
# One fixture world (20,000 accounts, seed 9, 51 days) is observed on seven
# consecutive days (as of day 45 .. 51); each "night" loads that day's
# snapshot into one store with `attribution reattribute` and prints the job's
# summary line and the diff counts against the night before.
#
# Usage: examples/nightly.sh [WORK_DIR]   (default: ./nightly-week; reused if present)
# Environment: ATTRIBUTION (the command, default .venv/bin/attribution),
#              PYTHON (default .venv/bin/python), ACCOUNTS (default 20000).
set -euo pipefail

cd "$(dirname "$0")/.."
WORK=${1:-nightly-week}
ATTRIBUTION=${ATTRIBUTION:-.venv/bin/attribution}
PYTHON=${PYTHON:-.venv/bin/python}
ACCOUNTS=${ACCOUNTS:-20000}
STORE="$WORK/store"
mkdir -p "$WORK"

for day in $(seq 45 51); do
  if [[ ! -d "$WORK/day$day/snapshot" ]]; then
    "$PYTHON" -m fixtures.worldgen --accounts "$ACCOUNTS" --seed 9 --days 51 \
      --as-of-day "$day" --out "$WORK/day$day" >/dev/null
  fi
done

for day in $(seq 45 51); do
  status=0
  line=$("$ATTRIBUTION" reattribute --store "$STORE" --snapshot "$WORK/day$day/snapshot" \
         --quiet) || status=$?
  case $status in
    0) echo "night $day: $line" ;;
    75) echo "night $day: skipped, another job holds the store"; continue ;;
    *) echo "night $day: failed with status $status" >&2; exit "$status" ;;
  esac
  if [[ $day -gt 45 ]]; then
    "$ATTRIBUTION" diff --store "$STORE" --limit 0 | "$PYTHON" -c '
import json, sys
c = json.load(sys.stdin)["counts"]
keys = ("created", "dissolved", "grown", "shrunk", "unchanged", "merged", "split",
        "attribution_gained", "attribution_lost", "attribution_changed",
        "accounts_joined_fleet", "accounts_left_fleet")
print("  diff: " + " ".join(f"{k}={c[k]}" for k in keys))'
  fi
done
echo "history:"
"$ATTRIBUTION" runs --store "$STORE"
