"""Tests of the membership-inference audit (benchmark/privacy/audit.py).

Statistics are checked against scipy/sklearn and against a mechanism whose true
epsilon is known in closed form (Gaussian differential privacy); the full audit
is checked on a model that memorises its members (must be flagged) and on one
that never saw them (must not be).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.stats import binomtest, norm
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import TensorDataset

from benchmark.privacy import audit as A


def test_clopper_pearson_matches_scipy_exact_interval():
    for k, n in [(0, 150), (3, 150), (75, 150), (150, 150), (7, 20)]:
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        # a two-sided 95% exact interval = two one-sided 97.5% bounds
        assert A.cp_lower(k, n, 0.025) == pytest.approx(ci.low, abs=1e-9)
        assert A.cp_upper(k, n, 0.025) == pytest.approx(ci.high, abs=1e-9)
    assert A.cp_upper(0, 150, 0.025) == pytest.approx(1 - 0.025 ** (1 / 150))


def test_auc_and_tpr_at_fpr():
    rng = np.random.default_rng(0)
    s_in = np.round(rng.normal(1, 1, 300), 1)   # rounding creates ties
    s_out = np.round(rng.normal(0, 1, 200), 1)
    y = np.r_[np.ones(300), np.zeros(200)]
    assert A.roc_auc(s_in, s_out) == pytest.approx(roc_auc_score(y, np.r_[s_in, s_out]))
    # perfect separation: all members flagged at zero false positives
    assert A.tpr_at_fpr(np.arange(10.0) + 100, np.arange(10.0), 0.01) == 1.0
    # TPR@1%FPR never uses a threshold with more than 1% false positives
    t = A.tpr_at_fpr(s_in, s_out, 0.01)
    thr = np.sort(s_in)[::-1][int(round(t * 300)) - 1] if t > 0 else np.inf
    assert (s_out >= thr).mean() <= 0.01


def test_max_detectable_epsilon_is_perfect_attack_and_grows_with_records():
    small = A.max_detectable_epsilon(150, 150, 1e-5)
    # perfect attack: TPR_lo = .025^(1/n), FPR_hi = 1 - .025^(1/n)
    q = 0.025 ** (1 / 150)
    assert small == pytest.approx(math.log((q - 1e-5) / (1 - q)))
    assert 3.5 < small < 4.0
    assert A.max_detectable_epsilon(2500, 2500, 1e-5) > small + 2


def _gdp_epsilon(mu: float, delta: float) -> float:
    """Exact epsilon of mu-GDP at delta (Dong, Roth & Su 2022, Cor. 2.13)."""
    def f(e):
        return norm.cdf(-e / mu + mu / 2) - math.exp(e) * norm.cdf(-e / mu - mu / 2) - delta
    return brentq(f, 0.0, 100.0)


@pytest.mark.parametrize("mu", [0.5, 1.0, 2.0, 4.0])
def test_bound_is_sound_against_gaussian_dp(mu):
    """Scores of members ~ N(mu,1), non-members ~ N(0,1) is exactly a mu-GDP test:
    no threshold test can show more than the true epsilon, so the 95% bound must
    stay below it (checked over 20 seeds; at most 2 misses allowed at 95%)."""
    delta = 1e-5
    true_eps = _gdp_epsilon(mu, delta)
    misses, bounds = 0, []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        s_in, s_out = rng.normal(mu, 1, 2000), rng.normal(0, 1, 2000)
        r = A.select_and_bound({"g": (s_in, s_out)}, delta, seed=seed)
        bounds.append(r["epsilon_lower_bound"])
        misses += r["epsilon_lower_bound"] > true_eps
    assert misses <= 2
    if mu >= 1.0:  # and the audit has power: it finds a clearly positive epsilon
        ceiling = A.max_detectable_epsilon(1000, 1000, delta)
        assert np.median(bounds) > 0.25 * min(true_eps, ceiling)


def test_no_leak_gives_no_bound():
    """Identically distributed scores (epsilon = 0): the bound is 0 in >= 18/20 seeds."""
    zero = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        r = A.select_and_bound({"a": (rng.normal(size=1000), rng.normal(size=300)),
                                "b": (rng.normal(size=1000), rng.normal(size=300))}, 1e-5, seed=seed)
        zero += r["epsilon_lower_bound"] == 0.0
    assert zero >= 18


def test_lower_tail_test_is_used():
    """A model that is always right on members and wrong on 10% of non-members leaks:
    the bound comes from TNR <= e^eps FNR + delta (high loss => non-member)."""
    s_in = np.zeros(1000)
    s_out = np.r_[np.zeros(270), -np.ones(30)]
    r = A.select_and_bound({"loss": (s_in, s_out)}, 1e-5, seed=0)
    assert r["epsilon_lower_bound"] > 1.0


def test_scaled_logit_and_loss_scores():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 5.0, -1.0]])
    y = torch.tensor([0, 2])
    p = torch.softmax(logits.double(), 1)
    exp = [math.log(p[0, 0] / (1 - p[0, 0])), math.log(p[1, 2] / (1 - p[1, 2]))]
    assert A.scaled_logit(logits, y) == pytest.approx(exp)
    assert A.loss_scores(logits, y) == pytest.approx([math.log(p[0, 0]), math.log(p[1, 2])])
    # stable for huge margins (p_y = 1 - 1e-40 in float64 would give log(0))
    assert np.isfinite(A.scaled_logit(torch.tensor([[100.0, 0.0]]), torch.tensor([0]))).all()


def _memorisation_task(n=200, d=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3 * n, 1, 1, d, generator=g)
    y = torch.randint(0, 4, (3 * n,), generator=g)       # random labels: only memorisation fits them
    return [TensorDataset(x[i * n:(i + 1) * n], y[i * n:(i + 1) * n]) for i in range(3)]


def _mlp(d=20):
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 128), nn.ReLU(), nn.Linear(128, 4))


def test_audit_flags_memorising_model_and_not_an_unrelated_one():
    torch.manual_seed(0)
    members, nonmembers, reference = _memorisation_task()
    leaky = A.default_train(_mlp(), members, seed=0, epochs=60, lr=3e-3)
    r = A.audit_classifier(leaky, members, nonmembers, delta=1e-5, epsilon_spent=0.5, reference=reference,
                           build_model=_mlp, seed=0, ref_epochs=5, num_reference_models=2)
    assert r["mia_auc"] > 0.9 and r["tpr_at_1pct_fpr"] > 0.1
    assert r["epsilon_lower_bound"] > 1.5 and r["violates_claim"] is True
    assert r["epsilon_lower_bound"] <= r["bound"]["max_detectable_epsilon"] + 1e-9
    assert set(r["attacks"]) == {"loss", "lira"}
    # a model that never saw the members is perfectly private with respect to them
    torch.manual_seed(1)
    unrelated = A.default_train(_mlp(), reference, seed=1, epochs=30, lr=3e-3)
    r2 = A.audit_classifier(unrelated, members, nonmembers, delta=1e-5, epsilon_spent=0.5, reference=None,
                            seed=0)
    assert r2["epsilon_lower_bound"] < 0.5 and r2["violates_claim"] is False
    assert 0.4 < r2["mia_auc"] < 0.62 and set(r2["attacks"]) == {"loss"}


def test_audit_claim_semantics_and_bad_input():
    members, nonmembers, _ = _memorisation_task(n=40)
    m = _mlp()
    assert A.audit_classifier(m, members, nonmembers, delta=1e-5, epsilon_spent=None)["violates_claim"] is None
    # a non-private run (epsilon = inf) makes no claim that can be violated
    assert A.audit_classifier(m, members, nonmembers, delta=1e-5, epsilon_spent=math.inf)["violates_claim"] is False
    r = A.audit_classifier(m, members, nonmembers, delta=1e-5, epsilon_spent=1.0, max_records=10)
    assert r["members"] == 10 and r["nonmembers"] == 10
    with pytest.raises(ValueError):
        A.audit_classifier(m, TensorDataset(members.tensors[0][:2], members.tensors[1][:2]), nonmembers,
                           delta=1e-5, epsilon_spent=1.0)


def test_audit_is_deterministic_and_leaves_model_untouched():
    members, nonmembers, reference = _memorisation_task(n=60)
    torch.manual_seed(0)
    m = _mlp().train()
    before = [p.detach().clone() for p in m.parameters()]
    kw = dict(delta=1e-5, epsilon_spent=1.0, reference=reference, seed=3, ref_epochs=3, num_reference_models=2)
    r1 = A.audit_classifier(m, members, nonmembers, **kw)
    r2 = A.audit_classifier(m, members, nonmembers, **kw)
    assert r1 == r2
    assert m.training and all(torch.equal(a, b) for a, b in zip(before, m.parameters()))


def _splits(n=120):
    from types import SimpleNamespace
    members, nonmembers, reference = _memorisation_task(n=n)
    return SimpleNamespace(private=members, eval=nonmembers, public=TensorDataset(reference.tensors[0]),
                           public_labels=reference.tensors[1], num_classes=4)


@pytest.fixture(scope="module")
def leaky_on_splits():
    splits = _splits()
    torch.manual_seed(0)
    return A.default_train(_mlp(), splits.private, seed=0, epochs=60, lr=3e-3), splits


@pytest.mark.parametrize("method, unit", [("dp-sgd", "record"), ("student-real", "none"), ("rr", "label"),
                                          ("dp-fedavg", "client")])
def test_runner_entry_point(method, unit, monkeypatch, leaky_on_splits):
    """audit_result: what the runner stores; the claim is compared only for record-level DP."""
    monkeypatch.setenv("BENCHMARK_AUDIT_SETTINGS", "ref_steps=5,reference_models=2")
    leaky, splits = leaky_on_splits
    spent = None if unit == "none" else 0.1
    r = A.audit_result(config={"method": method, "delta": 1e-5, "seed": 0}, model=leaky, splits=splits,
                       epsilon_spent=spent, device="cpu")
    assert r["privacy_unit"] == unit and r["reference_models"] == 2 and r["settings"]["ref_steps"] == 5
    assert r["epsilon_lower_bound"] > 1.0
    assert r["violates_claim"] is (True if unit == "record" else None)
    json.dumps(r, allow_nan=False)  # storable as the store writes it


def test_runner_entry_point_survives_a_broken_audit_and_rejects_bad_settings(monkeypatch):
    splits = _splits(n=20)
    wrong = nn.Sequential(nn.Flatten(), nn.Linear(20, 7))  # 7 logits for a 4-class task
    r = A.audit_result(config={"method": "dp-sgd", "delta": 1e-5, "seed": 0}, model=wrong, splits=splits,
                       epsilon_spent=1.0, device="cpu")
    assert r["epsilon_lower_bound"] is None and r["violates_claim"] is None and "7 logits" in r["error"]
    monkeypatch.setenv("BENCHMARK_AUDIT_SETTINGS", "ref_stepz=5")
    with pytest.raises(ValueError, match="ref_stepz"):
        A.audit_settings()


def test_nan_scores_stay_json_safe():
    members, nonmembers, _ = _memorisation_task(n=30)

    class NaNModel(nn.Module):
        def forward(self, x):
            return torch.full((len(x), 4), float("nan"))

    r = A.audit_classifier(NaNModel(), members, nonmembers, delta=1e-5, epsilon_spent=1.0)
    json.dumps(r, allow_nan=False)
    assert r["epsilon_lower_bound"] == 0.0
