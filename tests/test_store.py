"""The results store: atomic writes, never overwriting a finished result, resume by config hash."""
import json
import os

import pytest

from benchmark.runner.cells import config_hash, resolve
from benchmark.runner.store import ResultStore, StoreError


def _result(config, status="ok", acc=0.5):
    return {"config": config, "config_hash": config_hash(config), "status": status, "metrics": {"test_accuracy": acc}}


def test_atomic_write_and_no_overwrite(tmp_path):
    store = ResultStore(tmp_path)
    cfg = resolve("dp-sgd", "digits", 1.0, 0)
    path = store.write(_result(cfg, acc=0.1))
    assert store.is_done(cfg)
    store.write(_result(cfg, acc=0.9))  # a second writer of the same cell keeps the first result
    assert json.loads(path.read_text())["metrics"]["test_accuracy"] == 0.1
    leftovers = [p for p in path.parent.iterdir() if p.name.startswith(".") and p.suffix == ".tmp"]
    assert not leftovers


def test_failed_then_ok(tmp_path):
    store = ResultStore(tmp_path)
    cfg = resolve("dp-sgd", "digits", 1.0, 0)
    store.write(_result(cfg, status="failed"))
    assert not store.is_done(cfg) and store.failed_path_for(cfg).exists()
    store.write(_result(cfg))
    assert store.is_done(cfg) and not store.failed_path_for(cfg).exists()


def test_config_hash_changes_with_hparams_and_path_differs(tmp_path):
    store = ResultStore(tmp_path)
    a = resolve("dp-sgd", "digits", 1.0, 0)
    b = resolve("dp-sgd", "digits", 1.0, 0, hparams={"epochs": 2})
    assert config_hash(a) != config_hash(b) and store.path_for(a) != store.path_for(b)
    assert config_hash(a) == config_hash(resolve("dp-sgd", "digits", 1.0, 0, data_root="/elsewhere"))


def test_integral_epsilon_is_one_cell_whatever_its_type():
    """`run --epsilon 10` (a float) and a grid's `epsilons: [10]` (an int) must not be two cells."""
    assert config_hash(resolve("dp-sgd", "digits", 10.0, 0)) == config_hash(resolve("dp-sgd", "digits", 10, 0))
    assert resolve("dp-sgd", "digits", 10.0, 0)["epsilon_target"] == 10
    assert resolve("dp-sgd", "digits", 0.5, 0)["epsilon_target"] == 0.5
    assert config_hash(resolve("dp-sgd", "digits", 0.5, 0)) != config_hash(resolve("dp-sgd", "digits", 1, 0))


def test_corrupt_result_is_not_done(tmp_path):
    store = ResultStore(tmp_path)
    cfg = resolve("dp-sgd", "digits", 1.0, 0)
    store.path_for(cfg).parent.mkdir(parents=True)
    store.path_for(cfg).write_text("{not json")
    assert not store.is_done(cfg)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_results_dir_is_a_clear_error(tmp_path):
    store = ResultStore(tmp_path / "ro")
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o500)
    with pytest.raises(StoreError, match="cannot"):
        store.write(_result(resolve("dp-sgd", "digits", 1.0, 0)))
