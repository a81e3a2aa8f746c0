"""G-PATE and DataLens: the teacher ensemble, the compression / aggregation functions on known inputs,
their privacy costs, and one ledger event per aggregation step."""
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from benchmark import SyntheticData, registry
from benchmark.method import Context
from benchmark.models.generative import ConditionalDiscriminator
from benchmark.privacy import ledger as L
from benchmark.privacy import pate
from benchmark.training.gan import disjoint_shards
from benchmark.training.teacher_discriminators import (
    ConfidentGNMaxCost,
    TeacherDiscriminators,
    bin_centres,
    bin_votes,
    confident_gnmax,
    datalens_noise_multiplier,
    discretise,
    gaussian_random_projection,
    noisy_thresholded_sum,
    topk_stochastic_sign,
)

torch.set_num_threads(1)


# ---------------------------------------------------------------- the ensemble
def test_ensemble_matches_separate_discriminators_and_gives_per_teacher_image_gradients():
    torch.manual_seed(0)
    x, y = torch.rand(40, 1, 8, 8), torch.arange(40) % 10
    shards = disjoint_shards(40, 3, seed=0)
    made = []
    ens = TeacherDiscriminators(lambda: made.append(ConditionalDiscriminator((1, 8, 8), 10, 8)) or made[-1],
                                x, y, shards, lr=1e-3)
    q, qy = torch.rand(5, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4])
    grads = ens.image_gradients(q, qy)
    assert grads.shape == (3, 5, 64)
    for t, d in enumerate(made):
        xi = q.clone().requires_grad_(True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(d(xi, qy), torch.ones(5), reduction="sum")
        (g,) = torch.autograd.grad(loss, xi)
        torch.testing.assert_close(grads[t], -g.reshape(5, 64), atol=1e-6, rtol=1e-5)
    before = {k: v.clone() for k, v in ens.params.items()}
    ens.train_step(lambda labels: torch.rand(len(labels), 1, 8, 8), batch_size=4)
    assert all(not torch.equal(before[k], ens.params[k]) for k in before)


# ---------------------------------------------------------------- G-PATE's aggregator
def test_discretise_clips_and_bins_with_a_closed_last_bin():
    values = torch.tensor([-1.0, -0.05, 0.0, 0.049, 0.05, 0.1, 1.0])
    assert discretise(values, clip=0.1, nbins=4).tolist() == [0, 1, 2, 2, 3, 3, 3]
    torch.testing.assert_close(bin_centres(0.1, 4), torch.tensor([-0.075, -0.025, 0.025, 0.075]))


def test_bin_votes_counts_one_vote_per_teacher_and_query():
    bins = torch.tensor([[0, 2], [0, 1], [3, 1]])   # 3 teachers x 2 queries
    assert bin_votes(bins, 4).tolist() == [[2, 0, 0, 1], [0, 2, 1, 0]]


def test_confident_gnmax_without_noise_answers_only_consensus():
    votes = torch.tensor([[5, 1, 0], [2, 2, 2], [0, 4, 2]])
    answered, answer = confident_gnmax(votes, threshold=4, sigma1=0.0, sigma2=0.0)
    assert answered.tolist() == [True, False, True]
    assert answer[answered].tolist() == [0, 1]


def test_confident_gnmax_threshold_noise_is_gaussian_with_sigma1():
    torch.manual_seed(0)
    votes = torch.tensor([[10, 0]]).repeat(20000, 1)
    answered, _ = confident_gnmax(votes, threshold=12.0, sigma1=2.0, sigma2=1.0)
    assert answered.float().mean().item() == pytest.approx(1 - 0.8413, abs=0.01)   # Pr[N(0,1) >= 1]


def test_random_projection_is_scaled_to_preserve_norms_on_average():
    torch.manual_seed(0)
    P = gaussian_random_projection(200, 64, 10)
    v = torch.randn(64)
    ratio = (torch.einsum("d,bde->be", v, P).norm(dim=1) ** 2).mean() / v.norm() ** 2
    assert ratio.item() == pytest.approx(1.0, abs=0.1)


def test_confident_gnmax_cost_data_independent_and_data_dependent():
    orders = np.array([2.0, 8.0, 32.0])
    votes = torch.tensor([[40, 1, 0], [20, 10, 11], [35, 5, 1]])
    answered = torch.tensor([True, False, True])
    indep = ConfidentGNMaxCost(30, 4.0, 3.0, orders, data_dependent=False).rdp(votes, answered)
    np.testing.assert_allclose(indep, 3 * orders / (2 * 16) + 2 * orders / 9)
    dep = ConfidentGNMaxCost(30, 4.0, 3.0, orders).rdp(votes, answered)
    expected = sum(pate.rdp_threshold(float(v.max()), 30, 4.0, orders) for v in votes.numpy()) + \
        sum(pate.rdp_gnmax(v, 3.0, orders) for v in votes[answered].numpy())
    np.testing.assert_allclose(dep, expected)
    assert np.all(dep <= indep + 1e-12) and np.all(dep[:2] < indep[:2])   # consensus is cheaper at low orders


# ---------------------------------------------------------------- DataLens' compression and aggregator
def test_topk_stochastic_sign_keeps_exactly_the_top_k_coordinates():
    torch.manual_seed(0)
    g = torch.tensor([[0.1, -3.0, 0.2, 2.0, -0.5], [1.0, 0.0, 0.0, 0.0, -0.9]])
    v = topk_stochastic_sign(g, k=2)
    assert set(v.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert (v != 0).sum(1).tolist() == [2, 2]
    assert v[0].nonzero().flatten().tolist() == [1, 3] and v[1].nonzero().flatten().tolist() == [0, 4]
    # the largest |g_i| of a row equals b: its sign is deterministic
    assert v[0, 1].item() == -1.0 and v[1, 0].item() == 1.0


def test_topk_stochastic_sign_is_unbiased_for_g_over_b():
    torch.manual_seed(0)
    g = torch.tensor([[0.5, -1.0, 0.25, 0.0]]).repeat(40000, 1)
    mean = topk_stochastic_sign(g, k=3).mean(0)
    torch.testing.assert_close(mean[:3], torch.tensor([0.5, -1.0, 0.25]), atol=0.02, rtol=0)
    assert mean[3].item() == 0.0
    # with a cap c on b, coordinates beyond +-c are clipped: g = (2, -0.25), c = 0.5 -> (1, -0.5)
    capped = topk_stochastic_sign(torch.tensor([[2.0, -0.25]]).repeat(40000, 1), k=2, clip=0.5).mean(0)
    torch.testing.assert_close(capped, torch.tensor([1.0, -0.5]), atol=0.02, rtol=0)


def test_noisy_thresholded_sum_without_noise_and_its_sensitivity():
    votes = torch.tensor([[1, -1, 1, 0], [1, -1, 0, 0], [1, -1, 0, 1], [1, -1, 0, -1.0]])
    assert noisy_thresholded_sum(votes, sigma=0.0, beta=0.5).tolist() == [1.0, -1.0, 0.0, 0.0]
    # a teacher's k-sparse sign vector moves the sum by at most 2 sqrt(k): brute force on D = 4, k = 2
    vectors = [torch.tensor(s) * torch.tensor(m) for m in itertools.product([0.0, 1.0], repeat=4) if sum(m) == 2
               for s in itertools.product([-1.0, 1.0], repeat=4)]
    worst = max((a - b).norm().item() for a in vectors for b in vectors)
    assert worst == pytest.approx(2 * math.sqrt(2))
    assert datalens_noise_multiplier(8.0, 4) == pytest.approx(8.0 / (2 * 2))


# ---------------------------------------------------------------- the methods: ledger per aggregation
def make_ctx(name, eps, n=60, **hp):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % 10
    method = registry.load(name)(**{"num_synthetic": 20, **hp})
    return method, Context(dataset="tiny", num_classes=10, input_shape=(1, 8, 8), epsilon=eps, delta=1e-5, seed=0,
                           device=torch.device("cpu"), hparams=dict(method.config), ledger=L.PrivacyLedger(eps, 1e-5),
                           artifacts_dir=Path("/tmp"), quiet=True,
                           _resources={"private_data": TensorDataset(x, y)}, _declared=frozenset({"private_data"}))


def test_registered_as_dp_generative():
    found = registry.discover()
    for name in ("g-pate", "datalens"):
        assert found[name].family == "dp-generative" and set(found[name].needs) == {"private_data"}


def test_gpate_records_one_confident_gnmax_event_per_step_and_stops_at_the_budget():
    hp = {"num_teachers": 6, "iterations": 4, "batch_size": 3, "proj_dim": 2, "teacher_warmup": 1, "width": 8,
          "sigma_thresh": 3.0, "sigma": 2.0}
    method, ctx = make_ctx("g-pate", 50.0, **hp)
    out, _ = method.execute(ctx)
    assert isinstance(out, SyntheticData) and len(out.images) == 20
    events = ctx.ledger.events
    assert len(events) == ctx.metrics["generator_iterations"] > 0
    assert all(e["mechanism"] == "pate_data_dependent" and e["queries"] == 3 * 2 for e in events)
    assert ctx.metrics["teacher_queries"] == 6 * len(events)
    assert L.epsilon_from_events(events, 1e-5) <= 50.0
    method, ctx = make_ctx("g-pate", 1e-3, **hp)   # no step fits: nothing is released or spent
    method.execute(ctx)
    assert ctx.ledger.events == [] and ctx.metrics["teacher_queries"] == 0


def test_gpate_data_independent_accounting_records_gaussian_events():
    hp = {"num_teachers": 6, "iterations": 2, "batch_size": 3, "proj_dim": 2, "teacher_warmup": 1, "width": 8,
          "sigma_thresh": 3.0, "sigma": 2.0, "threshold": 0.0, "accounting": "data-independent"}
    method, ctx = make_ctx("g-pate", 100.0, **hp)
    method.execute(ctx)
    thr = [e for e in ctx.ledger.events if e["noise_multiplier"] == pytest.approx(3.0)]
    gnmax = [e for e in ctx.ledger.events if e["noise_multiplier"] == pytest.approx(2.0 / math.sqrt(2))]
    assert sum(e["steps"] for e in thr) == ctx.metrics["teacher_queries"] == 12
    assert sum(e["steps"] for e in gnmax) == ctx.metrics["queries_answered"]


def test_datalens_records_one_gaussian_per_sample_aggregation_and_spends_the_budget():
    hp = {"num_teachers": 6, "iterations": 3, "batch_size": 4, "topk": 4, "teacher_warmup": 1, "width": 8}
    method, ctx = make_ctx("datalens", 2.0, **hp)
    method.execute(ctx)
    (ev,) = ctx.ledger.events
    assert ev["mechanism"] == "gaussian" and ev["steps"] == 3 * 4
    assert ev["noise_multiplier"] == pytest.approx(ctx.metrics["vote_noise_std"] / (2 * math.sqrt(4)))
    assert 1.95 < L.epsilon_from_events(ctx.ledger.events, 1e-5) <= 2.0 + 1e-9
