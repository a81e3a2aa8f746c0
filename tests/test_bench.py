"""`python -m benchmark bench --quick`: the table has every row, with finite positive values.
No timing assertions (speeds belong in benchmarks/test_benchmarks.py)."""
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, cli

ROWS = ["dpsd annotation placement: private / off", "dpsd annotation mechanism: share of an iteration",
        "dpsd gradient placement: private / off", "dpsd gradient placement: student update private / off",
        "dp-sgd step (Opacus)", "dp-gan critic step (DP)", "data-free synthesizer step", "teacher queries",
        "ledger record(), 50 events", "ledger epsilon(), 50 events", "epsilon_from_events, 50 events",
        "result store write", "report over 60 result files"]


def test_bench_quick_prints_every_row():
    proc = cli("bench", "--quick", "--repeats", "1", "--quiet",
               env={"BENCHMARK_THREADS": "1", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["quantity", "value", "unit", "detail"]
    for row in ROWS:
        (line,) = [ln for ln in lines if ln.strip().startswith(row)]
        value = float(line.strip()[len(row):].split()[0].replace(",", ""))
        assert math.isfinite(value) and value > 0, line
    assert len(lines) == 1 + len(ROWS), proc.stdout


def test_bench_rejects_bad_repeats():
    proc = cli("bench", "--quick", "--repeats", "0")
    assert proc.returncode == 2
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == ["error: --repeats must be at least 1 (got 0)"]


@pytest.mark.parametrize("placement", ["annotation", "gradient"])
def test_dpsd_loop_releases_only_when_private(placement):
    """The mechanism switch is real: the private loop records releases, the other none."""
    from benchmark.bench import QUICK, DPSDLoop
    on, off = DPSDLoop(QUICK, placement, private=True), DPSDLoop(QUICK, placement, private=False)
    before = [p.detach().clone() for p in off.student.parameters()]
    on.iteration()
    off.iteration()
    releases = 1 if placement == "annotation" else QUICK.dpsd_student_steps
    assert on.ctx.ledger.events[-1]["steps"] == releases and off.ctx.ledger.events == []
    assert any(not torch.equal(a, b) for a, b in zip(before, off.student.parameters()))  # the student trains


def test_pytest_benchmark_suite_runs_at_quick_sizes():
    """benchmarks/ is outside the test run (it times things); this keeps it from rotting unseen."""
    env = {**os.environ, "BENCH_QUICK": "1", "BENCHMARK_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider",
                           "--benchmark-disable"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout, proc.stdout[-2000:]
