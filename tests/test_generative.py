"""DP generative baselines: networks, gradient sanitisation, DP-MERF's release, method contracts, FID."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from benchmark import SyntheticData, registry
from benchmark.method import Context
from benchmark.metrics.fidelity import fidelity_metrics, frechet_distance, penultimate_features
from benchmark.models.generative import ConditionalDenoiser, ConditionalDiscriminator, ConditionalGenerator
from benchmark.privacy import ledger as L
from benchmark.privacy.sanitize import (
    clip_and_noise_sum,
    clip_per_sample,
    sanitize_per_sample,
    sanitize_whole,
    sanitized,
)
from benchmark.training.gan import PerSampleGrads, dp_discriminator_step, wgan_critic_loss

torch.set_num_threads(1)


# ---------------------------------------------------------------- networks
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_networks_shapes(shape):
    y = torch.tensor([0, 1, 2, 9])
    G = ConditionalGenerator(8, 10, shape, width=8)
    x = G.sample(y)
    assert x.shape == (4, *shape) and x.min() >= 0 and x.max() <= 1
    assert ConditionalDiscriminator(shape, 10, width=8)(x, y).shape == (4,)
    assert ConditionalDenoiser(shape, 10, width=8)(x, torch.zeros(4), y).shape == (4, *shape)


def test_per_sample_grads_match_a_loop():
    torch.manual_seed(0)
    D = ConditionalDiscriminator((1, 8, 8), 4, width=8)
    psg = PerSampleGrads(D)
    x, y = torch.rand(5, 1, 8, 8), torch.tensor([0, 1, 2, 3, 0])
    g = psg.grads(lambda o: o ** 2, x, y)
    for i in range(5):
        D.zero_grad()
        (D(x[i:i + 1], y[i:i + 1]) ** 2).sum().backward()
        for p, gi in zip(psg.params, g):
            torch.testing.assert_close(gi[i], p.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("chunk_rows", [3, 6, 64])
def test_chunked_clipped_sum_equals_clipping_the_whole_batch(chunk_rows):
    """DPDM's memory-bounded path: per-example gradients (the mean over each example's 3 replica
    rows) clipped and summed a few examples at a time give the one-batch sum exactly."""
    torch.manual_seed(0)
    net = ConditionalDenoiser((1, 8, 8), 4, width=8)
    psg = PerSampleGrads(net)
    x, c, y = torch.rand(12, 1, 8, 8), torch.rand(12), torch.tensor([0, 1, 2, 3] * 3)
    weight = torch.linspace(0.5, 3.0, 12)  # a per-row constant the loss must index by rows
    whole = psg.grads(lambda out: weight * out.pow(2).flatten(1).sum(1), x, c, y)
    per_example = [g.view(4, 3, *g.shape[1:]).mean(1) for g in whole]
    expected = clip_and_noise_sum(per_example, 0.05, 0.0)
    got = psg.clipped_sum(lambda out, rows: weight[rows] * out.pow(2).flatten(1).sum(1), x, c, y,
                          clip=0.05, group=3, chunk_rows=chunk_rows)
    norms = torch.cat([g.flatten(1) for g in per_example], 1).norm(dim=1)
    assert (norms > 0.05).all()  # every example is clipped: the test sees the clipping
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="whole groups"):
        psg.clipped_sum(lambda out, rows: out.sum((1, 2, 3)), x[:11], c[:11], y[:11], clip=1.0, group=3)


# ---------------------------------------------------------------- sanitisation
def test_clip_per_sample_known_norms():
    g = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    out = clip_per_sample(g, 1.0)
    torch.testing.assert_close(out, torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]))


def test_gs_wgan_sanitizer_clips_and_noises_the_generated_sample_gradient():
    """loss = mean_j <w_j, x_j>: the per-sample gradient of x_j is w_j (n x the incoming
    row). GS-WGAN clips it to C and adds N(0, (2 C sigma)^2); the generator receives /n."""
    n, d, C = 3, 4, 1.0
    w = torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.1, 0.0, 0.0, 0.0], [0.0, 0.0, 6.0, 8.0]])
    x = torch.zeros(n, d, requires_grad=True)
    (sanitized(x, C, 0.0) * w).sum(1).mean().backward()
    torch.testing.assert_close(x.grad * n, torch.tensor([[0.6, 0.8, 0, 0], [0.1, 0, 0, 0], [0, 0, 0.6, 0.8]]))
    # noise: std 2 * C * sigma per coordinate of each per-sample gradient
    big = torch.zeros(4000, 50, requires_grad=True)
    (sanitized(big, C, 0.5, generator=torch.Generator().manual_seed(1)) * 0).sum(1).mean().backward()
    assert abs((big.grad * 4000).std().item() - 2 * C * 0.5) < 0.01
    # direct form, loss reduction "sum"
    out = sanitize_per_sample(w, C, 0.0)
    assert torch.all(out.norm(dim=1) <= C + 1e-6)


def test_dp_sinkhorn_sanitizer_clips_the_whole_gradient():
    w = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    x = torch.zeros(2, 2, requires_grad=True)
    (sanitized(x, 1.0, 0.0, loss_reduction="sum", per_sample=False) * w).sum().backward()
    torch.testing.assert_close(x.grad, w / 5.0)
    noisy = sanitize_whole(torch.zeros(20000), 2.0, 0.25, generator=torch.Generator().manual_seed(0))
    assert abs(noisy.std().item() - 2 * 2.0 * 0.25) < 0.02


def test_clip_and_noise_sum_is_dp_sgd_aggregation():
    g = [torch.tensor([[3.0, 4.0], [0.3, 0.4]]), torch.tensor([[0.0], [0.0]])]
    s = clip_and_noise_sum(g, 1.0, 0.0)
    torch.testing.assert_close(s[0], torch.tensor([0.9, 1.2]))
    noise = clip_and_noise_sum([torch.zeros(1, 50000)], 2.0, 1.5, generator=torch.Generator().manual_seed(0))[0]
    assert abs(noise.std().item() - 3.0) < 0.05
    empty = clip_and_noise_sum([torch.zeros(0, 7)], 1.0, 1.0)[0]
    assert empty.shape == (7,) and empty.abs().sum() > 0


def test_dp_cgan_clips_real_and_fake_separately_dp_gan_jointly():
    """Linear critic f(x) = <w, x>: the WGAN real gradient is -x, the fake one +x. With
    identical real and fake inputs the DP-GAN pair gradient cancels (no update) while
    DP-CGAN clips each to C: -C u + C u = 0 as well, so use x_fake = 2 x_real: joint pair
    gradient x (norm 5 -> clipped to 1); separate: -x/5 + 2x/10 = 0."""
    class Lin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 1, bias=False)

        def forward(self, x, y):
            return self.fc(x).squeeze(-1)

    real = torch.tensor([[3.0, 4.0]])
    for separate, expected in [(False, torch.tensor([[0.6, 0.8]])), (True, torch.zeros(1, 2))]:
        D = Lin()
        psg = PerSampleGrads(D)
        opt = torch.optim.SGD(D.parameters(), lr=1.0)
        before = D.fc.weight.detach().clone()
        dp_discriminator_step(psg, opt, (real, torch.zeros(1)), (2 * real, torch.zeros(1)),
                              lambda o: wgan_critic_loss(o, True), lambda o: wgan_critic_loss(o, False),
                              clip=1.0, noise_multiplier=0.0, expected_batch=1.0, separate=separate)
        torch.testing.assert_close(before - D.fc.weight.detach(), expected)


# ---------------------------------------------------------------- DP-MERF
def test_dp_merf_embedding_sensitivity_and_single_calibrated_release():
    mod = __import__("importlib").import_module(registry.load("dp-merf").__module__)
    torch.manual_seed(0)
    w = torch.randn(64, 100)
    x, y = torch.rand(50, 1, 8, 8), torch.randint(0, 10, (50,))
    assert torch.allclose(mod.rff_features(x, w).norm(dim=1), torch.ones(50), atol=1e-5)
    mu = mod.mean_embedding(x, y, w, 10)
    x2, y2 = x.clone(), y.clone()
    x2[0], y2[0] = 1 - x[0], (y[0] + 1) % 10         # replace one record
    assert (mod.mean_embedding(x2, y2, w, 10) - mu).norm() <= mod.embedding_sensitivity(50) + 1e-6
    noise = mod.release_embedding(torch.zeros(200, 100), 50, 3.0)
    assert abs(noise.std().item() - 3.0 * 2 / 50) < 0.003
    method, ctx = make_ctx("dp-merf", 2.0, iterations=2, num_synthetic=20, num_features=100)
    out, _ = method.execute(ctx)
    assert len(ctx.ledger.events) == 1 and ctx.ledger.events[0]["mechanism"] == "gaussian"
    assert ctx.ledger.events[0]["steps"] == 1
    assert ctx.ledger.epsilon() == pytest.approx(2.0, rel=1e-3)
    assert ctx.ledger.events[0]["noise_multiplier"] == pytest.approx(L.calibrate_gaussian(2.0, 1e-5, 1), rel=1e-6)


# ---------------------------------------------------------------- method contracts
TINY = {
    "dp-merf": {"iterations": 2, "num_features": 50},
    "dp-cgan": {"iterations": 3, "batch_size": 8, "width": 8},
    "dp-gan": {"iterations": 2, "n_critic": 2, "batch_size": 8, "width": 8},
    "gs-wgan": {"iterations": 3, "num_discriminators": 4, "pretrain_steps": 1, "batch_size": 8, "width": 8},
    "dp-sinkhorn": {"iterations": 3, "batch_size": 8, "sinkhorn_iters": 5, "width": 8},
    "dpdm": {"iterations": 2, "batch_size": 8, "noise_multiplicity": 2, "width": 8, "sampling_steps": 3},
}


def make_ctx(name, eps, n=60, **hp):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.arange(n) % 10
    method = registry.load(name)(**{"num_synthetic": 20, **hp})
    return method, Context(dataset="tiny", num_classes=10, input_shape=(1, 8, 8), epsilon=eps, delta=1e-5, seed=0,
                           device=torch.device("cpu"), hparams=dict(method.config), ledger=L.PrivacyLedger(eps, 1e-5),
                           artifacts_dir=Path("/tmp"), quiet=True,
                           _resources={"private_data": TensorDataset(x, y)}, _declared=frozenset({"private_data"}))


@pytest.mark.parametrize("name", sorted(TINY))
def test_method_contract(name):
    info = registry.discover()[name]
    assert info.family == "dp-generative" and set(info.needs) == {"private_data"}
    method, ctx = make_ctx(name, 1.0, **TINY[name])
    out, _ = method.execute(ctx)
    assert isinstance(out, SyntheticData)
    assert out.images.shape == (20, 1, 8, 8) and out.images.dtype == torch.float32
    assert out.images.min() >= 0 and out.images.max() <= 1 and torch.isfinite(out.images).all()
    assert torch.bincount(out.labels, minlength=10).tolist() == [2] * 10
    spent = L.epsilon_from_events(ctx.ledger.events, 1e-5)
    assert 0 < spent <= 1.0 + 1e-9
    if name != "dp-merf":   # iterative methods: calibrated for the whole schedule, ending near the target
        assert spent > 0.9


def test_gs_wgan_records_one_subsampled_release_per_generator_step():
    method, ctx = make_ctx("gs-wgan", 1.0, **TINY["gs-wgan"])
    method.execute(ctx)
    (ev,) = ctx.ledger.events
    assert ev["mechanism"] == "subsampled_gaussian" and ev["steps"] == 3
    assert ev["sample_rate"] == pytest.approx(1 / 4)
    assert ev["noise_multiplier"] == pytest.approx(ctx.metrics["noise_multiplier"] / math.sqrt(8))


def test_pate_gan_records_data_dependent_lnmax_cost_and_stops_at_the_budget():
    hp = {"num_teachers": 5, "gamma": 0.3, "iterations": 4, "batch_size": 4, "width": 8}
    method, ctx = make_ctx("pate-gan", 10.0, **hp)
    out, _ = method.execute(ctx)
    assert isinstance(out, SyntheticData) and len(out.images) == 20
    events = ctx.ledger.events
    assert all(e["mechanism"] == "pate_data_dependent" and e["queries"] == 4 for e in events)
    steps = sum(e.get("steps", 1) for e in events)
    assert ctx.metrics["teacher_queries"] == 4 * steps == 4 * ctx.metrics["generator_iterations"]
    assert L.epsilon_from_events(events, 1e-5) <= 10.0
    # a budget too small for a single batch of queries: nothing is released, nothing is spent
    method, ctx = make_ctx("pate-gan", 0.01, **hp)
    method.execute(ctx)
    assert ctx.ledger.events == [] and ctx.metrics["teacher_queries"] == 0


# ---------------------------------------------------------------- fidelity
def test_frechet_distance_of_known_gaussians():
    # 1-D: (m1 - m2)^2 + s1^2 + s2^2 - 2 s1 s2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]])) == \
        pytest.approx(4 + 4 + 1 - 2 * 2, rel=1e-6)


def test_fidelity_metrics_orders_sets():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    ref = torch.rand(400, 1, 8, 8) * 0.5
    same = torch.rand(400, 1, 8, 8) * 0.5
    shifted = torch.rand(400, 1, 8, 8) * 0.5 + 0.5
    assert penultimate_features(net, ref, "cpu").shape == (400, 16)
    m_same = fidelity_metrics(same, ref, net, "cpu", inception=False)
    m_shift = fidelity_metrics(shifted, ref, net, "cpu", inception=False)
    assert m_same["fid_eval_net_dim"] == 16 and m_same["fid_images"] == 400
    assert m_same["fid_eval_net"] < 0.2 * m_shift["fid_eval_net"]
    assert fidelity_metrics(ref, ref, net, "cpu", inception=False)["fid_eval_net"] < 1e-6
