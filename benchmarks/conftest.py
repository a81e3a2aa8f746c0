"""pytest-benchmark suite set-up: import this checkout's ``benchmark`` package, one thread unless told."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("BENCHMARK_THREADS", "1")
