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
  dpsd: {iterations: 2, batch_size: 64, student_steps: 5, final_steps: 5, generator_steps: 1}
"""


def test_sweep_twice_then_status_and_report(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    results = tmp_path / "results"
    env = {"BENCHMARK_AUDIT_SETTINGS": "reference_models=1,ref_steps=5,max_records=300"}
    plan = cli("sweep", grid, "--results", results, "--dry-run")  # lists the cells, runs nothing
    assert plan.returncode == 0, plan.stderr
    assert "5 cells to run, 0 already done (dry run, nothing run)" in plan.stdout
    assert "dpsd / digits / eps=10 / seed=0" in plan.stdout and not results.exists()
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
    assert "0 cells to run, 5 already done" in cli("sweep", grid, "--results", results, "--dry-run").stdout
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


PARALLEL_GRID = """
methods: [dp-sgd, rr]
datasets: [digits]
epsilons: [1, 10]
seeds: [0]
overrides:
  dp-sgd: {epochs: 1}
"""


def _content(path):
    r = json.loads(path.read_text())
    for key in ("started_at", "finished_at", "wall_time_s", "cpu_time_s", "peak_memory_mb", "host", "audit"):
        r.pop(key, None)
    r["metrics"].pop("fit_time_s", None)
    return r


def test_parallel_jobs_give_the_same_results_as_one_after_another(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(PARALLEL_GRID)
    env = {"BENCHMARK_AUDIT_SETTINGS": "reference_models=0", "BENCHMARK_THREADS": "1"}
    serial = cli("sweep", grid, "--results", tmp_path / "serial", "--quiet", env=env)
    parallel = cli("sweep", grid, "--results", tmp_path / "parallel", "--quiet", "--jobs", "2", env=env)
    assert serial.returncode == 0 and parallel.returncode == 0, serial.stderr + parallel.stderr
    assert "4 ok, 0 failed" in parallel.stdout
    files = sorted(p.relative_to(tmp_path / "serial") for p in (tmp_path / "serial").rglob("*.json"))
    assert len(files) == 4
    assert files == sorted(p.relative_to(tmp_path / "parallel") for p in (tmp_path / "parallel").rglob("*.json"))
    for rel in files:
        assert _content(tmp_path / "serial" / rel) == _content(tmp_path / "parallel" / rel), rel


def test_jobs_below_one_is_one_clear_error(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(PARALLEL_GRID)
    out = cli("sweep", grid, "--results", tmp_path / "r", "--jobs", "0")
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0 and "--jobs" in out.stderr


def test_killing_a_parallel_sweep_takes_its_workers_with_it(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    grid = tmp_path / "grid.yaml"
    grid.write_text(PARALLEL_GRID.replace("{epochs: 1}", "{epochs: 200}"))
    proc = subprocess.Popen([sys.executable, "-m", "benchmark", "sweep", str(grid), "--results", str(tmp_path / "r"),
                             "--jobs", "2", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "BENCHMARK_THREADS": "1"})

    def descendants(pid=proc.pid):
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        kids = [int(p) for p in out.split()]
        return kids + [d for k in kids for d in descendants(k)]

    # the resource tracker, the fork server and two cell processes (forked from the server)
    deadline = time.monotonic() + 120
    while len(descendants()) < 4 and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(1)
    workers = descendants()
    assert len(workers) >= 4, workers
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while any(os.path.exists(f"/proc/{w}") and "Z" not in open(f"/proc/{w}/stat").read().split()[2]
              for w in workers) and time.monotonic() < deadline:
        time.sleep(0.5)
    alive = [w for w in workers if os.path.exists(f"/proc/{w}") and open(f"/proc/{w}/stat").read().split()[2] != "Z"]
    assert not alive, f"orphaned workers {alive}"
