#!/usr/bin/env bash
# One command from a fresh clone: install into .venv, run the quick grid on digits locally,
# write the report, and print where the leaderboard and plots are.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup-venv.sh
export PATH="$PWD/.venv/bin:$PATH"
# a failed cell is recorded as failed (and shown in the report); the report is written either way
python -m benchmark sweep grids/quick.yaml --executor local --jobs "${BENCHMARK_JOBS:-2}" --results results/quick "$@" || status=$?
python -m benchmark report --results results/quick --out results/quick-report --quiet
echo
echo "Leaderboard: $PWD/results/quick-report/leaderboard.md"
echo "Plots:       $PWD/results/quick-report/figures/"
exit "${status:-0}"
