"""Tests of the label-DP baselines (rr, lp-2st, alibi, pate-fm) and the mechanisms they use."""
import math

import pytest
import torch
from torch.utils.data import TensorDataset

from benchmark import registry
from benchmark.method import Context
from benchmark.privacy import ledger as L
from benchmark.privacy import mechanisms as M

torch.set_num_threads(1)


def _module(name):
    return __import__("sys").modules[registry.load(name).__module__]


def test_rr_keeps_true_label_with_the_right_probability_and_spreads_uniformly():
    n, k, eps = 200_000, 10, 1.0
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, k, (n,), generator=g)
    out = M.randomized_response(y, k, eps, generator=g)
    p = math.exp(eps) / (math.exp(eps) + k - 1)
    kept = (out == y).float().mean().item()
    assert abs(kept - p) < 5 * math.sqrt(p * (1 - p) / n)  # ~0.0047
    # a flipped label is uniform over the other k - 1 classes
    flipped = out[(out != y) & (y == 3)]
    counts = torch.bincount(flipped, minlength=k).float()
    assert counts[3] == 0
    share = counts[torch.arange(k) != 3] / counts.sum()
    assert (share - 1 / (k - 1)).abs().max() < 0.01


def test_rr_with_prior_restricts_the_support():
    g = torch.Generator().manual_seed(1)
    n, eps = 60_000, 2.0
    y = torch.full((n,), 4)
    inside = torch.tensor([[4, 1, 7]]).expand(n, 3)
    out = M.rr_with_prior(y, inside, eps, generator=g)
    assert set(out.unique().tolist()) <= {1, 4, 7}
    p = math.exp(eps) / (math.exp(eps) + 2)
    assert abs((out == 4).float().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)
    outside = torch.tensor([[0, 1, 2]]).expand(n, 3)  # the true label is not a candidate: uniform on the set
    out2 = M.rr_with_prior(y, outside, eps, generator=g)
    shares = torch.bincount(out2, minlength=10).float() / n
    assert shares[3:].sum() == 0 and (shares[:3] - 1 / 3).abs().max() < 0.01


def test_lp2st_support_size_and_release_follow_rr_with_prior():
    lp = _module("lp-2st")
    prior = torch.tensor([[0.6, 0.3, 0.05, 0.05], [0.25, 0.25, 0.25, 0.25], [0.97, 0.01, 0.01, 0.01]])
    eps = 1.0
    # hand computation: k* = argmax_k e^eps/(e^eps+k-1) * topk mass
    e = math.e
    row0 = [e / (e + 0) * 0.6, e / (e + 1) * 0.9, e / (e + 2) * 0.95, e / (e + 3) * 1.0]
    assert lp.rr_with_prior_k(prior, eps).tolist() == [max(range(4), key=row0.__getitem__) + 1, 4, 1]
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([3, 2, 1]).repeat(2000)
    pri = prior.repeat(2000, 1)
    out = lp.release_with_prior(labels, pri, eps, g)
    k = lp.rr_with_prior_k(pri, eps)
    top = pri.argsort(dim=1, descending=True)
    for i in range(0, 30):
        assert out[i] in top[i, :k[i]].tolist()
    assert (out[2::3] == 0).all()  # k* = 1 on a confident prior: the top class, whatever the label


def test_alibi_posterior_sums_to_one_and_matches_hand_computation():
    al = _module("alibi")
    o = torch.tensor([[0.8, -0.3, 0.5]])
    b = 1.0
    post = al.alibi_posterior(o, torch.full((1, 3), 1 / 3), b)
    # by hand: full Laplace likelihood prod_j exp(-|o_j - e_k,j| / b) for k = 0, 1, 2
    lik = torch.tensor([math.exp(-(0.2 + 0.3 + 0.5)), math.exp(-(0.8 + 1.3 + 0.5)), math.exp(-(0.8 + 0.3 + 0.5))])
    torch.testing.assert_close(post[0], lik / lik.sum())
    prior = torch.tensor([[0.1, 0.7, 0.2]])
    torch.testing.assert_close(al.alibi_posterior(o, prior, b)[0], lik * prior[0] / (lik * prior[0]).sum())
    g = torch.Generator().manual_seed(0)
    noisy = al.laplace_one_hot(torch.randint(0, 10, (5000,), generator=g), 10, 0.7, g)
    p = al.alibi_posterior(noisy, torch.softmax(torch.randn(5000, 10, generator=g), 1), 0.7)
    torch.testing.assert_close(p.sum(1), torch.ones(5000))
    # the noise is Laplace(0.7): mean |noise| = b, mean 0
    noise = al.laplace_one_hot(torch.zeros(100_000, dtype=torch.long), 1, 0.7, g) - 1
    assert abs(noise.abs().mean().item() - 0.7) < 0.01 and abs(noise.mean().item()) < 0.01


def _ctx(name, eps, n=240, **hp):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    x[torch.arange(n), 0, y, y] = 3.0  # a learnable signal
    x = x.clamp(0, 1)
    cls = registry.load(name)
    method = cls(**hp)
    return method, Context(dataset="tiny", num_classes=4, input_shape=(1, 8, 8), epsilon=eps, delta=1e-5, seed=0,
                           device=torch.device("cpu"), hparams=dict(method.config), ledger=L.PrivacyLedger(eps, 1e-5),
                           artifacts_dir=__import__("pathlib").Path("/tmp"), quiet=True,
                           _resources={"private_data": TensorDataset(x, y)}, _declared=frozenset({"private_data"}))


@pytest.mark.parametrize("name,hp", [("rr", {"epochs": 2, "min_steps": 0}),
                                     ("lp-2st", {"epochs": 2, "min_steps": 0}),
                                     ("alibi", {"epochs": 3, "update_every": 1})])
def test_label_dp_methods_spend_exactly_one_labelwise_release(name, hp):
    method, ctx = _ctx(name, 2.0, **hp)
    model, _ = method.execute(ctx)
    assert isinstance(model, torch.nn.Module)
    assert len(ctx.ledger.events) == 1 and ctx.ledger.events[0]["steps"] == 1
    assert ctx.ledger.epsilon() == pytest.approx(2.0, rel=1e-6)  # pure eps-label-DP, all of the budget
    assert method.privacy_unit == "label"
