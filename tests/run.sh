#!/usr/bin/env bash
# The test command: installs what the tests need (Python packages; as root on Debian/Ubuntu also
# Slurm, MariaDB and Fashion-MNIST from apt), starts a single-node Slurm cluster, runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
export PATH="$PWD/.venv/bin:$PATH"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
      || echo "warning: could not install dataset-fashion-mnist" >&2
  fi
  if [ -x slurm/local-cluster.sh ]; then
    bash slurm/local-cluster.sh start
    trap 'bash slurm/local-cluster.sh stop || true' EXIT
  fi
fi
python -m pytest "$@"
