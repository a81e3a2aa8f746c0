"""Tests of the data-free synthesizer, its presets and DPDFD (tiny models, a few steps each)."""
import importlib.util
import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from benchmark.method import Context
from benchmark.models import Generator, build_classifier
from benchmark.privacy import ledger as L
from benchmark.privacy.ledger import PrivacyLedger
from benchmark.synthesis import losses as Lo
from benchmark.synthesis.synthesizer import Synthesizer

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (1, 8, 8)

#: each paper's generator-side loss terms (and nothing else)
EXPECTED_TERMS = {
    "dafl": {"oh", "act", "balance"},
    "zskt": {"adv"},
    "dfad": {"adv"},
    "deepinversion": {"oh", "bn", "adv", "tv", "l2"},
    "cmi": {"bn", "oh", "adv", "cr"},
}
EXPECTED_ADV = {"zskt": "kl", "dfad": "l1", "deepinversion": "js", "cmi": "masked_kl"}


def load_method(key):
    spec = importlib.util.spec_from_file_location(f"_t_{key}", ROOT / "methods" / f"{key}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from benchmark.method import Method
    return next(v for v in vars(mod).values()
                if isinstance(v, type) and issubclass(v, Method) and v.__module__ == mod.__name__)


def teacher_model():
    torch.manual_seed(0)
    t = build_classifier("cnn-bn", SHAPE, 10)
    with torch.no_grad():  # running statistics = the statistics of uniform-noise images
        for m in t.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None  # cumulative average
        t.train()
        for _ in range(3):
            t(torch.rand(64, *SHAPE))
    return t.eval().requires_grad_(False)


def make_ctx(cls, epsilon=math.inf, tmp_path=Path("/tmp"), **over):
    method = cls(**over)
    ctx = Context(dataset="digits", num_classes=10, input_shape=SHAPE, epsilon=epsilon, delta=1e-5, seed=0,
                  device=torch.device("cpu"), hparams=method.config, ledger=PrivacyLedger(epsilon, 1e-5),
                  artifacts_dir=tmp_path / "art", quiet=True, log=logging.getLogger("test"),
                  _resources={"teacher": teacher_model()}, _declared=frozenset(cls.needs))
    return method, ctx


@pytest.mark.parametrize("key", sorted(EXPECTED_TERMS))
def test_preset_turns_on_exactly_its_papers_terms(key):
    cls = load_method(key)
    method = cls()
    active = {t for t, w in method.loss_weights().items() if w != 0}
    assert active == EXPECTED_TERMS[key]
    assert cls.family == "data-free-kd" and cls.privacy_unit == "none" and set(cls.needs) == {"teacher"}
    if key in EXPECTED_ADV:
        assert cls.adv_kind == EXPECTED_ADV[key]
    # the synthesizer computes exactly those terms, no others
    t = teacher_model()
    s = build_classifier("cnn3", SHAPE, 10)
    gen = Generator(SHAPE, latent_dim=8, base_channels=8) if cls.mode != "inversion" else None
    synth = Synthesizer(teacher=t, student=s, input_shape=SHAPE, num_classes=10, weights=method.loss_weights(),
                        adv_kind=cls.adv_kind, mode=cls.mode, generator=gen, batch_size=8, g_steps=2,
                        n_neg=8, bank_size=32)
    if cls.mode == "generator":
        terms = synth.generator_step()
    else:
        x, y, terms = synth.synthesize()
        assert x.shape == (8, *SHAPE) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert set(terms) == EXPECTED_TERMS[key]


def test_zskt_student_uses_attention_transfer():
    cls = load_method("zskt")
    assert cls.at_weight_key == "at_beta" and cls().config["at_beta"] > 0  # AT term on (250 at 32x32, 16 at 8x8)


def test_bn_loss_zero_when_inputs_match_running_statistics():
    bn = nn.BatchNorm2d(3).eval()
    x = torch.randn(16, 3, 5, 5) * 2 + 1
    bn.running_mean.copy_(x.mean(dim=(0, 2, 3)))
    bn.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False))
    hooks = Lo.bn_hooks(nn.Sequential(bn))
    bn(x)
    assert float(Lo.bn_statistics_loss(hooks)) == pytest.approx(0.0, abs=1e-5)
    bn(x + 0.5)  # shifted inputs: mean distance 0.5 per channel -> ||.||_2 = 0.5 * sqrt(3)
    assert float(Lo.bn_statistics_loss(hooks)) == pytest.approx(0.5 * math.sqrt(3), rel=1e-4)


def test_bn_loss_drives_inversion_toward_running_statistics():
    t = teacher_model()
    synth = Synthesizer(teacher=t, student=build_classifier("cnn3", SHAPE, 10), input_shape=SHAPE,
                        num_classes=10, weights={"bn": 1.0}, mode="inversion", batch_size=16, g_steps=1,
                        lr_g=0.05, jitter_shift=0)
    torch.manual_seed(1)
    _, _, first = synth.synthesize()
    synth.g_steps = 60
    torch.manual_seed(1)
    _, _, last = synth.synthesize()
    assert last["bn"] < 0.7 * first["bn"]


def test_adversarial_losses():
    t = torch.tensor([[2.0, 0.0, -1.0]])
    assert float(Lo.adversarial_loss("l1", t, t)) == 0.0
    assert float(Lo.adversarial_loss("kl", t, t)) == pytest.approx(0.0, abs=1e-6)
    assert float(Lo.adversarial_loss("js", t, t)) == pytest.approx(1.0, abs=1e-6)
    s = torch.tensor([[0.0, 3.0, 0.0]])
    assert float(Lo.adversarial_loss("l1", t, s)) == pytest.approx(-(2 + 3 + 1) / 3)
    assert float(Lo.adversarial_loss("masked_kl", t, s)) == 0.0  # decisions differ: masked out
    assert float(Lo.balance_loss(torch.zeros(4, 10))) == pytest.approx(-math.log(10))
    with pytest.raises(ValueError):
        Lo.adversarial_loss("nope", t, s)


def test_dfad_end_to_end_learns_and_exports_grid(tmp_path):
    method, ctx = make_ctx(load_method("dfad"), tmp_path=tmp_path, iterations=3, batch_size=16, kd_steps=2)
    student, _ = method.execute(ctx)
    assert isinstance(student, nn.Module)
    assert (ctx.artifacts_dir / "samples.png").is_file()
    assert ctx.metrics["teacher_queries"] == 3 * 2 * 16
    assert ctx.ledger.events == []  # non-private: no releases


def test_dp_annotation_records_calibrated_gaussian_events(tmp_path):
    method, ctx = make_ctx(load_method("dafl"), epsilon=2.0, tmp_path=tmp_path, iterations=4, batch_size=16,
                           kd_steps=2, dp_annotation="gaussian")
    assert method.effective_privacy_unit() == "record"
    method.execute(ctx)
    sigma = ctx.metrics["noise_multiplier"]
    assert ctx.ledger.events == [L.gaussian(sigma, 8)]
    assert ctx.ledger.epsilon() <= 2.0 * (1 + 1e-6)
    assert ctx.ledger.epsilon() > 1.9  # calibrated, not over-noised
    with pytest.raises(ValueError):  # needs a finite epsilon
        m2, c2 = make_ctx(load_method("dafl"), tmp_path=tmp_path, iterations=1, dp_annotation="gaussian")
        m2.execute(c2)


def test_dpdfd_noise_is_calibrated(tmp_path):
    cls = load_method("dpdfd")
    assert cls.family == "dp-data-free" and cls.privacy_unit == "record"
    for eps in (1.0, 10.0):
        method, ctx = make_ctx(cls, epsilon=eps, tmp_path=tmp_path, iterations=3, kd_steps=2, batch_size=16)
        method.execute(ctx)
        sigma = ctx.metrics["noise_multiplier"]
        assert ctx.ledger.events == [L.gaussian(sigma, 6)]
        assert L.epsilon_from_events(ctx.ledger.events, 1e-5) == pytest.approx(eps, rel=1e-3)
        # the smallest noise that fits: 1% less noise would overspend
        assert L.epsilon_from_events([L.gaussian(sigma * 0.99, 6)], 1e-5) > eps
    assert (ctx.artifacts_dir / "samples.png").is_file()


# ------------------------------------------------------------------ DGD (Ge et al., TIP 2022)
def make_dgd_ctx(epsilon, tmp_path, **over):
    from torch.utils.data import TensorDataset
    cls = load_method("dgd")
    method, ctx = make_ctx(cls, epsilon=epsilon, tmp_path=tmp_path, **{**cls.tiny, **over})
    torch.manual_seed(0)
    private = TensorDataset(torch.rand(60, *SHAPE), torch.randint(0, 10, (60,)))
    trained = []

    def trainer(dataset, tag, min_steps):  # a fixed model per shard: the votes are all the same
        trained.append((len(dataset), tag))
        return teacher_model()

    ctx._resources["private_data"] = private
    ctx._declared = frozenset(cls.needs)
    ctx._teacher_trainer = trainer
    return method, ctx, trained


def test_dgd_declares_its_papers_resources_and_family():
    cls = load_method("dgd")
    assert cls.family == "dp-data-free" and cls.privacy_unit == "record"
    assert set(cls.needs) == {"private_data", "teacher"}


def test_dgd_records_one_gnmax_event_within_budget(tmp_path):
    method, ctx, trained = make_dgd_ctx(5.0, tmp_path, teachers=3, queries=16, sigma=3.0)
    student, _ = method.execute(ctx)
    assert isinstance(student, nn.Module)
    assert len(trained) == 3 and sum(n for n, _ in trained) == 60  # three disjoint shards of the 60 records
    (event,) = ctx.ledger.events
    assert event["mechanism"] == "pate_data_dependent" and event["aggregator"] == "GNMax"
    n = ctx.metrics["queries_answered"]
    assert event["queries_answered"] == n and 0 < n < 16  # the budget, not the query count, stops it
    assert ctx.ledger.epsilon() <= 5.0 * (1 + 1e-9)
    # the recorded curve is the sum of the per-query GNMax bounds (unanimous votes of 3 teachers)
    from benchmark.privacy import pate as P
    votes = [[3.0 if j == 0 else 0.0 for j in range(10)]] * n
    expected = P.gnmax_release_rdp(votes, 3.0, L.ORDERS).sum(0)
    assert L.epsilon_from_events([event], 1e-5) <= L.epsilon_from_rdp(P.rdp_gnmax_data_independent(3.0, L.ORDERS) * n, 1e-5) + 1e-9
    assert L.epsilon_from_events([event], 1e-5) == pytest.approx(L.epsilon_from_rdp(expected, 1e-5), rel=1e-6)


def test_dgd_answers_fewer_queries_under_a_smaller_budget(tmp_path):
    answered = []
    for eps in (3.0, 50.0):
        method, ctx, _ = make_dgd_ctx(eps, tmp_path, teachers=2, queries=30, sigma=3.0, student_steps=1)
        method.execute(ctx)
        answered.append(ctx.metrics["queries_answered"])
        assert ctx.ledger.epsilon() <= eps * (1 + 1e-9)
    assert answered[0] < answered[1] == 30


def test_tnar_directions_lie_in_tangent_and_normal_spaces():
    from benchmark.synthesis import manifold as Mf
    torch.manual_seed(0)
    vae = Mf.VAE(SHAPE, latent_dim=3, hidden=16).eval().requires_grad_(False)
    z = torch.randn(4, 3)
    q = Mf.tangent_basis(vae.decode, z)
    assert q.shape == (4, 64, 3)
    assert torch.allclose(q.transpose(1, 2) @ q, torch.eye(3).expand(4, 3, 3), atol=1e-4)
    # the basis spans the decoder's Jacobian: a small latent step moves the image inside the span
    dz = 1e-3 * torch.randn(4, 3)
    dx = (vae.decode(z + dz) - vae.decode(z)).flatten(1)
    inside = (q @ (q.transpose(1, 2) @ dx.unsqueeze(2))).squeeze(2)
    assert torch.allclose(inside, dx, atol=1e-6 + 1e-2 * float(dx.abs().max()))
    model = build_classifier("cnn3", SHAPE, 10)
    tar, nar = Mf.tangent_normal_adversarial_loss(model, vae.decode(z), q, 1.0, 1.0)
    assert float(tar) >= 0 and float(nar) >= 0
    tar0, nar0 = Mf.tangent_normal_adversarial_loss(model, vae.decode(z), q, 0.0, 0.0)
    assert float(tar0) == pytest.approx(0.0, abs=1e-6) and float(nar0) == pytest.approx(0.0, abs=1e-6)
