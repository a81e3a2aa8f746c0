#!/usr/bin/env bash
# Called by .ci/run (as root, CI=true, no stdin): install and start the local
# single-node Slurm cluster that tests/test_slurm_cluster.py submits to.
set -euo pipefail
cd "$(dirname "$0")/.."
exec slurm/local-cluster.sh start </dev/null
