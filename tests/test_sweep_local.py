"""End to end with the local executor: a grid sweeps, a second sweep recomputes nothing,
status reports it, and report builds from the store alone."""
import json

from conftest import cli

GRID = """
methods: [teacher, dp-sgd, dpsd]
datasets: [digits]
epsilons: [1, 10]
seeds: [0]
overrides:
  dp-sgd: {epochs: 1}
  dpsd: {iterations: 2, batch_size: 64, student_steps: 5, generator_steps: 1}
"""


def test_sweep_twice_then_status_and_report(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    results = tmp_path / "results"
    env = {"BENCHMARK_AUDIT_SETTINGS": "reference_models=1,ref_steps=5,max_records=300"}
    first = cli("sweep", grid, "--results", results, "--quiet", env=env)
    assert first.returncode == 0, first.stderr
    assert "5 ok, 0 failed, 0 already done" in first.stdout
    files = sorted(results.rglob("*.json"))
    assert len(files) == 5
    stamps = {f: f.stat().st_mtime_ns for f in files}
    second = cli("sweep", grid, "--results", results, "--quiet", env=env)
    assert second.returncode == 0, second.stderr
    assert "0 ok, 0 failed, 5 already done" in second.stdout
    assert {f: f.stat().st_mtime_ns for f in sorted(results.rglob("*.json"))} == stamps
    for f in files:
        r = json.loads(f.read_text())
        assert r["status"] == "ok"
        if r["epsilon_target"] is not None:
            assert r["epsilon_spent"] <= r["epsilon_target"]
    status = cli("status", grid, "--results", results)
    assert status.returncode == 0 and "5 done" in status.stdout and "0 missing" in status.stdout
    report = cli("report", "--results", results, "--out", tmp_path / "report", "--quiet")
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report" / "leaderboard.md").exists()
