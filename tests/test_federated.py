"""Tests of the federated simulation core (benchmark/federated) and, once the core is ready,
the federated methods end to end on tiny data."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from benchmark import federated as F

torch.set_num_threads(1)


def _labels(n=600, k=10, seed=0):
    return np.random.RandomState(seed).randint(0, k, size=n)


def test_iid_partition_is_a_balanced_disjoint_cover():
    parts = F.partition_iid(103, 10, seed=1)
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(103))
    assert {len(p) for p in parts} == {10, 11}
    assert not all((a == b).all() for a, b in zip(parts, F.partition_iid(103, 10, seed=2)))


def test_dirichlet_partition_covers_and_skews_with_small_alpha():
    y = _labels(2000)
    for alpha in (0.1, 100.0):
        parts = F.partition_dirichlet(y, 10, alpha, seed=0)
        assert sorted(np.concatenate(parts).tolist()) == list(range(len(y)))
        assert min(len(p) for p in parts) >= 1
    # label skew: mean over clients of the largest class share
    def skew(alpha):
        parts = F.partition_dirichlet(y, 10, alpha, seed=0)
        return np.mean([np.bincount(y[p], minlength=10).max() / len(p) for p in parts])
    assert skew(0.1) > 0.5 > 0.2 > skew(100.0)


def test_dirichlet_rejects_bad_alpha_and_is_seeded():
    y = _labels(300)
    with pytest.raises(ValueError):
        F.partition_dirichlet(y, 5, 0.0, seed=0)
    a = F.partition(y, 5, "dirichlet", 0.5, seed=3)
    b = F.partition(y, 5, "dirichlet", 0.5, seed=3)
    assert all((p == q).all() for p, q in zip(a, b))
    with pytest.raises(ValueError):
        F.partition(y, 5, "shards", 0.5, seed=3)


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))


def _tiny_clients(sizes=(7, 13, 20), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 1, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g)) for n in sizes]


def test_round_without_noise_or_clipping_equals_plain_fedavg():
    model, clients = _tiny_model(), _tiny_clients()
    # reference FedAvg (McMahan et al. 2017): each client runs E full-batch GD steps from the global
    # model; the server averages the client models weighted by n_k.
    ref_states, sizes = [], []
    for x, y in clients:
        m = copy.deepcopy(model)
        opt = torch.optim.SGD(m.parameters(), lr=0.3)
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
        ref_states.append(m.state_dict())
        sizes.append(len(x))
    ref = {k: sum(n * s[k] for n, s in zip(sizes, ref_states)) / sum(sizes) for k in ref_states[0]}

    g = torch.Generator().manual_seed(0)
    F.fedavg_round(model, clients, [0, 1, 2],
                   local_train=lambda m, x, y: F.local_sgd(m, x, y, lr=0.3, batch_size=1000, epochs=3, generator=g),
                   weighting="size", clip_norm=None, noise_multiplier=0.0)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ref[k], rtol=1e-5, atol=1e-6)


def test_aggregate_clips_each_update_and_adds_calibrated_noise():
    ups = [torch.tensor([3.0, 4.0]), torch.tensor([0.3, 0.4])]
    out = F.aggregate(ups, clip_norm=1.0, denominator=2.0)
    torch.testing.assert_close(out, (torch.tensor([0.6, 0.8]) + torch.tensor([0.3, 0.4])) / 2)
    g = torch.Generator().manual_seed(0)
    noisy = torch.stack([F.aggregate([torch.zeros(1000)], clip_norm=0.5, noise_multiplier=2.0, denominator=1.0,
                                     generator=g) for _ in range(4)])
    assert abs(noisy.std().item() - 1.0) < 0.03  # sigma * S = 2 * 0.5
    with pytest.raises(ValueError):
        F.aggregate(ups, noise_multiplier=1.0)
    # an empty Poisson round still releases noise of the right size
    assert F.aggregate([], clip_norm=1.0, noise_multiplier=1.0, denominator=1.0, dim=5, generator=g).shape == (5,)


def test_per_example_grads_match_a_loop():
    model, (x, y) = _tiny_model(), _tiny_clients((5,))[0]
    pg = F.per_example_grads(model, x, y)
    for i in range(5):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        torch.testing.assert_close(pg[i], F.flat_grads(model), rtol=1e-4, atol=1e-6)


def test_poisson_client_sampling_rate():
    g = torch.Generator().manual_seed(0)
    counts = sum(len(F.sample_clients(100, 0.2, g)) for _ in range(200))
    assert abs(counts / (200 * 100) - 0.2) < 0.01
    assert F.sample_clients(7, 1.0, g) == list(range(7))


# ---------------------------------------------------------------- the federated methods
import math  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from torch.utils.data import TensorDataset  # noqa: E402

from benchmark import registry  # noqa: E402
from benchmark.method import Context  # noqa: E402
from benchmark.privacy import ledger as L  # noqa: E402


def test_ldp_fl_mechanism_is_unbiased_two_point_and_eps_ldp():
    mod = sys.modules[registry.load("ldp-fl").__module__]
    eps, c, r = 0.5, 0.1, 0.2
    g = torch.Generator().manual_seed(0)
    w = torch.tensor([c - r, c - 0.05, c + 0.13, c + r]).repeat(100_000, 1)
    out = mod.ldp_fl_perturb(w, eps, c, r, g)
    spread = r * (math.exp(eps) + 1) / (math.exp(eps) - 1)
    assert set(torch.unique(out).tolist()) == pytest.approx([c - spread, c + spread])
    se = spread / math.sqrt(100_000)
    assert (out.mean(0) - w[0]).abs().max() < 5 * se  # unbiased
    p_hi = (out == out.max()).float().mean(0)
    ratio = (p_hi[3] / p_hi[0]).item()  # extremes: e^eps/(e^eps+1) vs 1/(e^eps+1)
    assert ratio == pytest.approx(math.exp(eps), rel=0.05)


def _fed_ctx(name, eps, n=200, **hp):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.3
    x[torch.arange(n), 0, 2 * y, 2 * y] = 1.0
    method = registry.load(name)(**hp)
    return method, Context(dataset="tiny", num_classes=4, input_shape=(1, 8, 8), epsilon=eps, delta=1e-5, seed=0,
                           device=torch.device("cpu"), hparams=dict(method.config), ledger=L.PrivacyLedger(eps, 1e-5),
                           artifacts_dir=Path("/tmp"), quiet=True, _resources={"private_data": TensorDataset(x, y)},
                           _declared=frozenset({"private_data"}))


# sampling rates of 1 keep the calibration (a bisection over the RDP curve) fast in tests
@pytest.mark.parametrize("name,hp,mech,per_round", [
    ("dp-fedavg", {"clients": 20, "rounds": 4, "client_rate": 1.0}, "subsampled_gaussian", 1),
    ("dp-fedsgd", {"clients": 20, "rounds": 4, "client_rate": 1.0}, "subsampled_gaussian", 1),
    ("dp-scaffold", {"clients": 4, "rounds": 3, "local_steps": 2, "record_rate": 1.0}, "subsampled_gaussian", 2),
    ("ldp-fl", {"clients": 4, "rounds": 3, "local_epochs": 1}, "randomized_response", None),
])
def test_federated_methods_record_every_round_and_stay_in_budget(name, hp, mech, per_round):
    method, ctx = _fed_ctx(name, 3.0, **hp)
    model, _ = method.execute(ctx)
    assert isinstance(model, nn.Module)
    ev = ctx.ledger.events
    assert len(ev) == 1 and ev[0]["mechanism"] == mech
    d = F.flat_params(model).numel()
    assert ev[0]["steps"] == hp["rounds"] * (per_round or d)
    assert 2.9 < ctx.ledger.epsilon() <= 3.0 * (1 + 1e-9)  # calibrated to use (almost) all of the budget
    assert ctx.metrics["clients"] == hp["clients"]


def test_dp_fedavg_non_iid_partition_is_used():
    method, ctx = _fed_ctx("dp-fedavg", 3.0, clients=10, rounds=1, client_rate=1.0, partition="dirichlet", alpha=0.1)
    method.execute(ctx)
    assert ctx.metrics["partition"] == "dirichlet" and ctx.metrics["dirichlet_alpha"] == 0.1
    assert ctx.metrics["client_size_max"] > 2 * ctx.metrics["client_size_min"]


def test_fed_gs_wgan_releases_synthetic_data_with_one_client_per_step():
    from benchmark import SyntheticData
    method, ctx = _fed_ctx("fed-gs-wgan", 3.0, clients=5, iterations=4, pretrain_steps=1, n_critic=1,
                           batch_size=8, num_synthetic=40, width=8)
    out, _ = method.execute(ctx)
    assert isinstance(out, SyntheticData) and out.images.shape == (40, 1, 8, 8)
    ev = ctx.ledger.events
    assert len(ev) == 1 and ev[0]["mechanism"] == "subsampled_gaussian"
    assert ev[0]["sample_rate"] == pytest.approx(1 / 5) and ev[0]["steps"] == 4
    assert ctx.ledger.epsilon() <= 3.0 * (1 + 1e-9)
    assert ctx.metrics["noise_multiplier"] == pytest.approx(ev[0]["noise_multiplier"] * 8 ** 0.5)
