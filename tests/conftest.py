"""Shared test set-up: offline data from ../shared/data, a per-run results dir, quiet logs."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("BENCHMARK_NO_REEXEC", "1")
if SHARED_DATA.is_dir():
    os.environ.setdefault("BENCHMARK_DATA_ROOT", str(SHARED_DATA))


@pytest.fixture
def results_dir(tmp_path):
    return tmp_path / "results"


def cli(*args, env=None, timeout=600):
    """Run `python -m benchmark ARGS` in a subprocess; returns CompletedProcess."""
    import subprocess
    import sys
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "benchmark", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, env=full_env, timeout=timeout)
