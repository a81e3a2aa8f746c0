"""Real methods checkpoint through ``ctx.checkpointer`` (docs/slurm.md, "Preemption").

A cell is killed mid-training a few steps after its last save, as a preempted Slurm job
is, and then run again with the same checkpoint file, as the requeued job is. The resumed
run must redo the lost steps and end with the result of an uninterrupted run: same
accuracy, same ledger (each step counted once) and same epsilon. No Slurm needed.
"""
from __future__ import annotations

import pytest

from benchmark.runner.cells import resolve
from benchmark.runner.checkpoint import Checkpointer
from benchmark.runner.execute import run_cell

#: DP-SGD on digits' 1,197 private records, B = 256: 5 steps per epoch, 15 in all
EPOCHS, STEPS_PER_EPOCH = 3, 5


class Preempted(BaseException):
    """Stands for the signal that kills a job (not an Exception: run_cell must not catch it)."""


class PreemptingCheckpointer(Checkpointer):
    """Saves only before step ``save_at`` and kills the run before step ``stop_at``."""

    def __init__(self, path, save_at: int, stop_at: int):
        super().__init__(path, interval_s=0)
        self.save_at, self.stop_at, self.seen = save_at, stop_at, []

    def maybe_save(self, step, **state):
        self.seen.append(step)
        if step == self.stop_at:
            raise Preempted(step)
        if step == self.save_at:
            self.save_step(step, **state)
            return True
        return False


@pytest.fixture(autouse=True)
def cheap_audit(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCHMARK_AUDIT_SETTINGS", "reference_models=0")
    monkeypatch.setenv("BENCHMARK_TEACHER_CACHE", str(tmp_path / "teachers"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """method -> (config, result of an uninterrupted run); each method runs once per module."""
    runs = {}

    def get(method):
        if method not in runs:
            config = resolve(method, "digits", 1.0, 0, hparams={"epochs": EPOCHS, "batch_size": 256})
            result = run_cell(config, tmp_path_factory.mktemp("reference"), quiet=True)
            assert result["status"] == "ok", result["error"]
            assert result["ledger"][-1]["steps"] == EPOCHS * STEPS_PER_EPOCH
            runs[method] = config, result
        return runs[method]
    return get


def comparable(result: dict) -> dict:
    metrics = {k: v for k, v in result["metrics"].items() if not k.endswith("time_s")}
    return {"status": result["status"], "metrics": metrics, "ledger": result["ledger"],
            "epsilon_spent": result["epsilon_spent"]}


def interrupt(config, path, save_at: int, lost: int = 3) -> PreemptingCheckpointer:
    killed = PreemptingCheckpointer(path, save_at=save_at, stop_at=save_at + lost)
    with pytest.raises(Preempted):
        run_cell(config, path.parent / "run", quiet=True, checkpointer=killed)
    assert killed.seen == list(range(save_at + lost + 1))  # asked at every step boundary, in order
    return killed


@pytest.mark.parametrize("method, save_at", [("dp-sgd", STEPS_PER_EPOCH), ("dp-sgd", STEPS_PER_EPOCH + 2),
                                             ("dp-sgd-tanh", STEPS_PER_EPOCH + 2),
                                             ("dp-scatternet", 2 * STEPS_PER_EPOCH + 1)],
                         ids=["dp-sgd-epoch-boundary", "dp-sgd-mid-epoch", "dp-sgd-tanh", "dp-scatternet"])
def test_interrupted_and_resumed_run_equals_uninterrupted(method, save_at, uninterrupted, tmp_path):
    config, reference = uninterrupted(method)
    killed = interrupt(config, tmp_path / "ckpt.pt", save_at)
    saved = killed.load()
    assert saved["step"] == save_at and saved["ledger"]["events"][-1]["steps"] == save_at

    requeued = Checkpointer(tmp_path / "ckpt.pt", interval_s=3600)
    resumed = run_cell(config, tmp_path / "run", quiet=True, checkpointer=requeued)
    assert requeued.resumed_from == save_at
    assert comparable(resumed) == comparable(reference)


def test_resume_restores_the_sampler_not_just_the_model(uninterrupted, tmp_path):
    """A checkpoint whose Poisson-sampler state is rewound to the run's start gives another
    run: the comparison above can fail."""
    import torch
    config, reference = uninterrupted("dp-sgd")
    ck = interrupt(config, tmp_path / "ckpt.pt", save_at=STEPS_PER_EPOCH + 2)
    state = ck.load()
    state["objects"]["sampler"] = {"generator": torch.Generator().manual_seed(0).get_state()}
    ck.save(state)
    resumed = run_cell(config, tmp_path / "run", quiet=True, checkpointer=Checkpointer(ck.path, interval_s=3600))
    assert resumed["ledger"] == reference["ledger"]  # the accounting does not depend on the draws
    assert comparable(resumed)["metrics"] != comparable(reference)["metrics"]
