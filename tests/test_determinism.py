"""Determinism: the same cell with the same seed on the CPU gives the same result.

Each cell runs twice in separate processes, with separate result stores; accuracy,
ledger, epsilon_spent, config hash and the privacy audit must be identical. A third run
with another seed must differ, so the comparison can fail. The second run gets a *copy*
of the first run's teacher cache; teacher training itself is checked on its own
(``test_teacher_training_is_deterministic``), so a cached teacher hides nothing.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHEAP_AUDIT = "ref_steps=20,reference_models=2"

CELLS = {  # one method trained on private data (Opacus), one through a teacher (teacher cache, generator)
    "dp-sgd": ["--epsilon", "1", "--set", "epochs=2"],
    "dpsd": ["--epsilon", "1", "--set", "iterations=3", "--set", "batch_size=256", "--set", "student_steps=20", "--set", "final_steps=20"],
}


def run_cell(tmp_path: Path, method: str, seed: int, tag: str, cache: str) -> dict:
    res, cache = tmp_path / f"res-{tag}", tmp_path / f"teachers-{cache}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "BENCHMARK_TEACHER_CACHE": str(cache), "BENCHMARK_AUDIT_SETTINGS": CHEAP_AUDIT}
    args = [sys.executable, "-m", "benchmark", "run", "--method", method, "--dataset", "digits", "--seed", str(seed),
            "--results", str(res), "--device", "cpu", "--quiet", *CELLS[method]]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())
    assert result["status"] == "ok"
    return result


def comparable(result: dict) -> dict:
    audit = {k: v for k, v in (result.get("audit") or {}).items() if k != "audit_time_s"}
    metrics = {k: v for k, v in result["metrics"].items() if not k.endswith("time_s")}
    return {"metrics": metrics, "ledger": result["ledger"], "epsilon_spent": result["epsilon_spent"],
            "config_hash": result["config_hash"], "audit": audit}


@pytest.mark.parametrize("method", list(CELLS))
def test_same_cell_same_seed_same_result(method, tmp_path):
    a = comparable(run_cell(tmp_path, method, seed=0, tag="a", cache="a"))
    if (tmp_path / "teachers-a").exists():
        shutil.copytree(tmp_path / "teachers-a", tmp_path / "teachers-b")
    b = comparable(run_cell(tmp_path, method, seed=0, tag="b", cache="b"))
    assert a["audit"], "the audit must run for a method that touched private data"
    assert a == b
    c = comparable(run_cell(tmp_path, method, seed=1, tag="c", cache="a"))
    assert c["config_hash"] != a["config_hash"]
    assert (c["metrics"], c["audit"]) != (a["metrics"], a["audit"]), "another seed gave the very same run"


def test_teacher_training_is_deterministic(tmp_path, monkeypatch):
    """The runner's teacher trainer gives the same weights whatever the process's RNG state was."""
    import torch

    from benchmark.data import get_dataset
    from benchmark.runner.cells import resolve
    from benchmark.runner.execute import make_teacher_trainer
    from benchmark.training import teachers

    monkeypatch.setitem(teachers.TEACHER_RECIPE, "min_steps", 5)
    config = resolve("dpsd", "digits", 1.0, 0)
    splits = get_dataset("digits")
    states = []
    for run in range(2):
        monkeypatch.setenv("BENCHMARK_TEACHER_CACHE", str(tmp_path / f"cache{run}"))
        torch.manual_seed(1234 + run)  # whatever happened in the process before
        model = make_teacher_trainer(config, splits, "cpu")(splits.private, "teacher")
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
