"""Issue 4 methods (dp-sgd-tanh, dp-scatternet, pate, pate-gnmax, private-knn) on tiny synthetic data."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from benchmark import registry
from benchmark.method import Context
from benchmark.privacy import knn as K
from benchmark.privacy import ledger as L
from benchmark.training import train_classifier

torch.set_num_threads(1)


def _tiny(n, seed):
    """Two easy classes of 1x8x8 images: a bright left half or a bright right half, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.2 * torch.rand(n, 1, 8, 8, generator=g)
    for i in range(n):
        x[i, 0, :, :4] += 0.7 if y[i] == 0 else 0.0
        x[i, 0, :, 4:] += 0.7 if y[i] == 1 else 0.0
    return x.clamp(0, 1), y


def _quick_teacher(dataset, tag, min_steps=None):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    return train_classifier(model, dataset, epochs=20, batch_size=16, lr=0.05)


def _ctx(method_name, epsilon, tmp_path, **overrides):
    cls = registry.load(method_name)
    method = cls(**overrides)
    x, y = _tiny(160, 0)
    pub, _ = _tiny(40, 1)
    ctx = Context(dataset="tiny", num_classes=2, input_shape=(1, 8, 8), epsilon=epsilon, delta=1e-5, seed=0,
                  device=torch.device("cpu"), hparams=dict(method.config), ledger=L.PrivacyLedger(epsilon, 1e-5),
                  artifacts_dir=Path(tmp_path), quiet=True,
                  _resources={"private_data": TensorDataset(x, y), "public_data": TensorDataset(pub)},
                  _declared=frozenset(cls.needs), _teacher_trainer=_quick_teacher)
    return method, ctx


STUDENT = {"student_epochs": 1, "student_min_steps": 5}


def test_all_five_are_registered():
    found = registry.discover()
    for name in ("dp-sgd-tanh", "dp-scatternet", "pate", "pate-gnmax", "private-knn"):
        assert name in found and found[name].family == "dp-training"


def test_pate_answers_within_budget_and_records_counts(tmp_path):
    method, ctx = _ctx("pate", 1.0, tmp_path, teachers=5, gamma=0.3, **STUDENT)
    model, _ = method.execute(ctx)
    assert isinstance(model, torch.nn.Module)
    assert ctx.ledger.epsilon() <= 1.0 + 1e-9
    ev = [e for e in ctx.ledger.events if e["mechanism"] == "pate_data_dependent"]
    asked = ctx.metrics["queries_asked"]
    assert ctx.metrics["queries_answered"] == asked and 0 < asked <= 40
    assert len(ev) == 1 and ev[0]["queries"] == asked and "not itself differentially private" in ev[0]["note"]
    # a larger budget answers the whole pool; a tiny one answers fewer queries
    method, big = _ctx("pate", 1e4, tmp_path, teachers=5, gamma=0.3, **STUDENT)
    method.execute(big)
    method, small = _ctx("pate", 0.05, tmp_path, teachers=5, gamma=0.3, **STUDENT)
    method.execute(small)
    assert big.metrics["queries_answered"] == 40
    assert small.metrics["queries_answered"] < asked


def test_pate_recorded_rdp_equals_sum_of_per_query_bounds(tmp_path):
    method, ctx = _ctx("pate-gnmax", 5.0, tmp_path, teachers=5, threshold=3.0, sigma1=3.0, sigma2=3.0, **STUDENT)
    method.execute(ctx)
    ev = ctx.ledger.events[0]
    n = ctx.metrics["queries_asked"]
    assert 0 < n < 40  # the budget, not the pool, stops the queries
    assert ev["queries_asked"] == n and ev["queries_answered"] == ctx.metrics["queries_answered"] <= n
    # never more than the data-independent bound of n threshold steps and the answered GNMax steps
    orders = np.asarray(ev["orders"])
    assert np.all(np.asarray(ev["rdp"]) <= n * orders / 18 + ev["queries_answered"] * orders / 9 + 1e-9)
    assert ctx.ledger.epsilon() <= 5.0 + 1e-9


def test_confident_gnmax_with_unreachable_threshold_answers_nothing(tmp_path):
    method, ctx = _ctx("pate-gnmax", 10.0, tmp_path, teachers=5, threshold=1e3, sigma1=1.0, **STUDENT)
    method.execute(ctx)
    assert ctx.metrics["queries_answered"] == 0 and ctx.metrics["queries_asked"] == 40


def test_private_knn_accounting_matches_queries(tmp_path):
    method, ctx = _ctx("private-knn", 1.0, tmp_path, k=5, gamma=0.3, queries=30, chunk=10, threshold_frac=0.5,
                       **STUDENT)
    method.execute(ctx)
    ev = ctx.ledger.events
    s1, s2 = ctx.metrics["sigma1"], ctx.metrics["sigma2"]
    screened = sum(e["steps"] for e in ev if math.isclose(e["noise_multiplier"], s1))
    aggregated = sum(e["steps"] for e in ev if math.isclose(e["noise_multiplier"], s2 / math.sqrt(2)))
    assert screened == ctx.metrics["queries_asked"] == 30
    assert aggregated == ctx.metrics["queries_answered"] <= 30
    assert all(e["sample_rate"] == 0.3 for e in ev)
    assert ctx.ledger.epsilon() <= 1.0 + 1e-9


def test_subsampled_knn_votes():
    x, y = _tiny(100, 0)
    f = K.features(x, "pixels")
    g = torch.Generator().manual_seed(0)
    full = K.subsampled_knn_votes(f[:10], f, y, 2, 7, 1.0, g)
    d = torch.cdist(f[:10], f)
    exact = torch.stack([torch.bincount(y[d[i].argsort()[:7]], minlength=2) for i in range(10)])
    assert torch.equal(full, exact)
    sparse = K.subsampled_knn_votes(f[:50], f, y, 2, 7, 0.03, g)
    assert sparse.sum(1).float().mean() < 7  # subsamples of ~3 records cannot give 7 votes


def test_hog_is_a_per_image_function():
    x, _ = _tiny(20, 0)
    h = K.hog(x)
    assert h.shape[0] == 20 and torch.isfinite(h).all()
    assert torch.allclose(K.hog(x[3:4]), h[3:4], atol=1e-6)  # no batch statistics
    assert K.hog(torch.ones(1, 1, 8, 8)).abs().max() < 1e-3  # flat image: no gradients


def test_dp_channel_stats():
    from benchmark.models.scatter import dp_channel_stats
    f = torch.rand(50, 3, 2, 2)
    m, v = dp_channel_stats(f, 100.0, 100.0, 0.0)
    flat = f.reshape(50, 3, -1)
    assert torch.allclose(m, flat.mean((0, 2)), atol=1e-6)
    assert torch.allclose(v, (flat**2).mean((0, 2)) - m**2, atol=1e-6)
    # one added example moves the noiseless sums by at most the clip norm
    big = torch.full((1, 3, 2, 2), 50.0)
    m2, _ = dp_channel_stats(torch.cat([f, big]), 0.5, 0.5, 0.0)
    m1, _ = dp_channel_stats(f, 0.5, 0.5, 0.0)
    assert (m2 * 51 - m1 * 50).norm() <= 0.5 + 1e-5


def test_dp_scatternet_records_normalisation_and_stays_in_budget(tmp_path):
    pytest.importorskip("kymatio")
    method, ctx = _ctx("dp-scatternet", 1.0, tmp_path, epochs=1, batch_size=32)
    model, _ = method.execute(ctx)
    assert ctx.ledger.events[0] == L.gaussian(method.config["norm_noise"], steps=2)
    assert ctx.ledger.events[1]["mechanism"] == "subsampled_gaussian"
    assert ctx.ledger.epsilon() <= 1.0 + 1e-9
    assert model(torch.rand(4, 1, 8, 8)).shape == (4, 2)
    method, ctx = _ctx("dp-scatternet", 1.0, tmp_path, epochs=1, batch_size=32, norm="group")
    method.execute(ctx)
    assert all(e["mechanism"] == "subsampled_gaussian" for e in ctx.ledger.events)


def test_dp_sgd_tanh_uses_tempered_sigmoids(tmp_path):
    method, ctx = _ctx("dp-sgd-tanh", 1.0, tmp_path, epochs=1, batch_size=32)
    model, _ = method.execute(ctx)
    kinds = {type(m).__name__ for m in model.modules()}
    assert "TemperedSigmoid" in kinds and "ReLU" not in kinds and "Tanh" not in kinds
    act = next(m for m in model.modules() if type(m).__name__ == "TemperedSigmoid")
    z = torch.linspace(-4, 4, 17)
    assert torch.allclose(act(z), torch.tanh(z), atol=1e-6)  # s=2, T=2, o=1 is tanh
    assert ctx.ledger.epsilon() <= 1.0 + 1e-9 and ctx.ledger.events[0]["mechanism"] == "subsampled_gaussian"
