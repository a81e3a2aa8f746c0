"""Every registered method honours the contract on tiny data: it runs on digits with its `tiny`
overrides, the result has every required field, private runs end within budget, and epsilon_spent
can be recomputed from the stored ledger events."""
import json
import math

import pytest

from benchmark import registry
from benchmark.privacy.ledger import epsilon_from_events
from benchmark.runner.cells import resolve
from benchmark.runner.execute import run_cell

REQUIRED = ("method", "family", "dataset", "epsilon_target", "delta", "epsilon_spent", "accountant", "privacy_unit",
            "adjacency", "seed", "status", "metrics", "wall_time_s", "cpu_time_s", "peak_memory_mb", "config",
            "config_hash", "git_sha", "versions", "ledger", "started_at", "finished_at", "host", "error")
METHODS = sorted(registry.discover())


@pytest.fixture(autouse=True)
def cheap_audit(monkeypatch):
    monkeypatch.setenv("BENCHMARK_AUDIT_SETTINGS", "reference_models=1,ref_steps=5,max_records=300")


@pytest.mark.parametrize("name", METHODS)
def test_method_contract_on_digits(name, tmp_path):
    cls = registry.load(name)
    private = cls(**cls.tiny).is_private()
    config = resolve(name, "digits", 2.0 if private else None, 0, hparams=dict(cls.tiny))
    result = run_cell(config, tmp_path, quiet=True)
    assert result["status"] == "ok", result["error"]
    for key in REQUIRED:
        assert key in result, key
    json.dumps(result, allow_nan=False)
    acc = result["metrics"]["test_accuracy"]
    assert 0.0 <= acc <= 1.0
    assert result["versions"]["torch"] and "hparams" in result["config"]
    if private:
        assert result["ledger"], "a private method must record its releases"
        assert 0 < result["epsilon_spent"] <= 2.0 * (1 + 1e-9)
        assert epsilon_from_events(result["ledger"], result["delta"]) == pytest.approx(result["epsilon_spent"])
    else:
        assert result["epsilon_target"] is None and result["epsilon_spent"] is None
    if cls.family == "dpsd":  # DPSD also releases its generator: samples and a downstream score
        assert 0.0 <= result["metrics"]["synthetic_downstream_accuracy"] <= 1.0
        assert (tmp_path / "digits" / name / result["artifacts"]["generator_samples"]).exists()
    files = list(tmp_path.rglob("*.json"))
    assert len([f for f in files if not f.name.endswith(".failed.json")]) == 1


def test_declared_resources_only():
    from benchmark.method import Context, ResourceNotDeclared
    from benchmark.privacy.ledger import PrivacyLedger
    ctx = Context(dataset="digits", num_classes=10, input_shape=(1, 8, 8), epsilon=math.inf, delta=1e-5, seed=0,
                  device="cpu", hparams={}, ledger=PrivacyLedger(), artifacts_dir=None,
                  _resources={"private_data": object(), "teacher": object()}, _declared=frozenset({"teacher"}))
    assert ctx.teacher is not None
    with pytest.raises(ResourceNotDeclared):
        _ = ctx.private_data
    with pytest.raises(ResourceNotDeclared):
        _ = ctx.public_data
