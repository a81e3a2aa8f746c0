"""DPSD (Liu et al., TPAMI 2026): its mechanisms, ledger events, variants and checkpoints.

The method contract on tiny data is in test_methods_contract.py; here: what each privacy
switch releases and records, and that a preempted run resumes exactly."""
from __future__ import annotations

import math

import pytest
import torch

from benchmark.privacy import ledger as L
from benchmark.privacy.mechanisms import gaussian_annotation, noisy_normalised_sum, topk_support
from benchmark.runner.cells import resolve
from benchmark.runner.checkpoint import Checkpointer
from benchmark.runner.execute import run_cell
from benchmark.training.distill import (
    AnnotationMemory,
    annotation_regression_loss,
    centred,
    generator_loss,
    synthesize_and_query,
    train_student_on_memory,
)
from benchmark.training.persample import flatten_per_sample, per_sample_gradients

TINY = {"iterations": 3, "batch_size": 64, "student_steps": 3, "generator_steps": 1, "downstream_samples": 100}


@pytest.fixture(autouse=True)
def cheap_audit(monkeypatch):
    monkeypatch.setenv("BENCHMARK_AUDIT_SETTINGS", "reference_models=0")


def test_annotation_without_noise_is_the_normalised_centred_teacher_signal_on_the_support():
    logits = torch.tensor([[4.0, 1.0, 0.0, -2.0], [0.0, 0.0, 3.0, 1.0]])
    support = topk_support(torch.tensor([[0.0, 5.0, 4.0, 0.0], [1.0, 0.0, 0.0, 2.0]]), 2)
    assert support.tolist() == [[1, 2], [3, 0]]
    out = gaussian_annotation(logits, support, clip_norm=3.0, noise_multiplier=0.0)
    picked = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    expected = 3.0 * centred(picked) / centred(picked).norm(dim=1, keepdim=True)
    assert torch.allclose(out, expected)
    assert torch.allclose(out.norm(dim=1), torch.full((2,), 3.0))


def test_annotation_noise_has_standard_deviation_sigma_times_c():
    logits = torch.zeros(20000, 10)
    support = torch.arange(10).expand(20000, -1)
    out = gaussian_annotation(logits, support, clip_norm=2.0, noise_multiplier=1.5,
                              generator=torch.Generator().manual_seed(0))
    assert abs(out.std().item() - 3.0) < 0.05 and abs(out.mean().item()) < 0.05


def test_noisy_normalised_sum_bounds_each_sample_by_c():
    grads = torch.tensor([[3.0, 4.0], [0.0, 10.0], [0.0, 0.0]])
    total = noisy_normalised_sum(grads, clip_norm=1.0, noise_multiplier=0.0)
    assert torch.allclose(total, torch.tensor([0.6, 1.8]))


def test_vectorised_per_sample_gradients_match_a_loop():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    x, target = torch.randn(6, 1, 4, 4), torch.randn(6, 3)

    def loss_fn(out, tgt):
        return ((out - tgt) ** 2).sum(1).mean()

    batched = flatten_per_sample(per_sample_gradients(model, loss_fn, x, target))
    for i in range(6):
        model.zero_grad()
        loss_fn(model(x[i:i + 1]), target[i:i + 1]).backward()
        single = torch.cat([p.grad.flatten() for p in model.parameters()])
        assert torch.allclose(batched[i], single, atol=1e-6)


def test_generator_entropy_term_rewards_uncertain_student_outputs():
    sure, unsure = torch.tensor([[10.0, 0.0, 0.0]]), torch.zeros(1, 3)
    kw = dict(disagreement=None, w_adv=0.0, w_onehot=0.0, w_balance=0.0, w_entropy=1.0)
    assert generator_loss(unsure, **kw)[0] < generator_loss(sure, **kw)[0]


def test_random_blobs_blurred_in_chunks_equal_one_whole_batch_blur():
    from benchmark.models import random_blobs
    n, shape = 9000, (1, 8, 8)  # more than one chunk of 8,192
    g = torch.Generator().manual_seed(3)
    noise = torch.rand(n, 1, 8, 8, generator=g)
    smooth = torch.nn.functional.conv2d(noise, torch.full((1, 1, 3, 3), 1 / 9), padding=1)
    intensity = 0.5 + 0.5 * torch.rand(n, 1, 1, 1, generator=g)
    expected = (smooth > 0.55).float() * intensity
    assert torch.equal(random_blobs(n, shape, generator=torch.Generator().manual_seed(3)), expected)


@pytest.mark.parametrize("n", [5, 7, 8, 1])
def test_a_release_queried_in_chunks_equals_one_whole_batch(n):
    """synthesize_and_query writes each chunk into one preallocated output (models.map_in_chunks):
    the images and every model's logits equal one pass over the whole batch, for batch sizes that
    are, are not and are less than a multiple of the chunk."""
    from benchmark.models import PriorGenerator, build_classifier
    torch.manual_seed(0)
    gen, student = PriorGenerator((1, 8, 8), base_channels=4), build_classifier("cnn3", (1, 8, 8), 10).eval()
    torch.nn.init.normal_(gen.net[-1].weight)  # a trained-looking residual, not the zero start
    torch.manual_seed(1)
    z, images, (logits,) = synthesize_and_query(gen, [student], n, "cpu", chunk=4)
    assert images.shape == (n, 1, 8, 8) and logits.shape == (n, 10)
    with torch.no_grad():
        torch.testing.assert_close(images, gen(z), rtol=0, atol=1e-6)
        torch.testing.assert_close(logits, student(images), rtol=0, atol=1e-6)


def test_prior_generator_starts_at_its_data_independent_blobs_and_learns_away_from_them():
    from benchmark.models import PriorGenerator, random_blobs
    from benchmark.training.distill import train_generator_against_student
    torch.manual_seed(0)
    for shape in [(1, 8, 8), (1, 28, 28), (3, 32, 32)]:
        blobs = random_blobs(16, shape, generator=torch.Generator().manual_seed(1))
        assert blobs.shape == (16, *shape) and torch.equal(blobs, random_blobs(16, shape, generator=torch.Generator().manual_seed(1)))
        assert set(torch.unique(blobs > 0).tolist()) == {False, True} and blobs.max() <= 1.0
    gen = PriorGenerator((1, 8, 8), base_channels=8)
    z = gen.sample_latent(32)
    assert torch.equal(gen(z), z[:, :1])  # the residual starts at zero: training starts at the prior
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    drawn = []

    def fresh():
        drawn.append(1)
        return gen.sample_latent(32)

    train_generator_against_student(gen, student, torch.optim.Adam(gen.parameters(), 1e-2), fresh, None, steps=3,
                                    w_adv=0.0, w_onehot=0.0, w_balance=5.0)
    assert len(drawn) == 3 and not torch.equal(gen(z), z[:, :1])
    assert all(p.requires_grad for p in student.parameters())


def test_final_consolidation_anneals_the_learning_rate_to_zero_on_released_annotations():
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    memory = AnnotationMemory(100)
    memory.add(torch.randn(20, 1, 2, 2), torch.arange(3).expand(20, -1), torch.randn(20, 3))
    before = [p.detach().clone() for p in student.parameters()]
    rates = []  # the learning rate each step is taken with

    def loss(logits, support, targets):
        rates.append(opt.param_groups[0]["lr"])
        return annotation_regression_loss(logits, support, targets)

    train_student_on_memory(student, opt, memory, loss, steps=4, batch_size=8, anneal=True)
    assert rates[0] == pytest.approx(1e-2) and rates == sorted(rates, reverse=True) and len(set(rates)) == 4
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))


def _run(method, tmp_path, epsilon=2.0, **hparams):
    config = resolve(method, "digits", epsilon, 0, hparams={**TINY, **hparams})
    result = run_cell(config, tmp_path / "results", quiet=True)
    assert result["status"] == "ok", result["error"]
    return config, result


@pytest.mark.parametrize("placement, releases", [("annotation", 3), ("gradient", 9)])
def test_dpsd_records_one_gaussian_release_per_iteration_or_student_step(tmp_path, placement, releases):
    _, result = _run("dpsd", tmp_path, noise_placement=placement, final_steps=2)  # consolidation releases nothing
    sigma = L.calibrate_gaussian(2.0, 1e-5, releases)
    assert result["ledger"] == [L.gaussian(sigma, releases)]
    assert result["epsilon_spent"] <= 2.0 and result["epsilon_spent"] > 1.9
    m = result["metrics"]
    assert m["releases"] == releases and math.isclose(m["noise_multiplier"], sigma)
    assert m["teacher_queries"] == 3 * 64 and m["iterations"] == 3
    assert 0.0 <= m["synthetic_downstream_accuracy"] <= 1.0 and "generator_samples" in result["artifacts"]


def test_dpsd_label_records_randomized_response_per_iteration(tmp_path):
    _, result = _run("dpsd-label", tmp_path, full_support_iterations=1, final_steps=2)  # consolidation releases nothing
    (event,) = result["ledger"]
    assert event["mechanism"] == "randomized_response" and event["steps"] == 3
    assert result["epsilon_spent"] <= 2.0
    assert result["privacy_unit"] == "label"


def _record_support_widths(monkeypatch, method: str, name: str, mechanism) -> list[int]:
    """Wrap ``mechanism`` (imported by ``method``'s module as ``name``; its second argument is the
    b x k support) so that each call appends its support width to the returned list."""
    import inspect

    from benchmark import registry
    seen: list[int] = []

    def recording(signal, support, *args, **kwargs):
        seen.append(support.shape[1])
        return mechanism(signal, support, *args, **kwargs)

    monkeypatch.setattr(inspect.getmodule(registry.load(method)), name, recording)
    return seen


@pytest.mark.parametrize("hparams, widths", [({}, [10, 10, 10]),  # the digits default: no prior
                                              ({"student_prior": True, "k": 3}, [10, 3, 3])])
def test_dpsd_label_randomizes_over_the_student_top_k_only_with_the_prior_on(tmp_path, monkeypatch, hparams, widths):
    from benchmark.privacy.mechanisms import rr_with_prior
    seen = _record_support_widths(monkeypatch, "dpsd-label", "rr_with_prior", rr_with_prior)
    _run("dpsd-label", tmp_path, final_steps=2, **hparams)
    assert seen == widths


def test_dpsd_ensemble_is_record_level_and_charges_every_annotated_sample(tmp_path):
    _, result = _run("dpsd-ensemble", tmp_path, epsilon=10.0)
    assert result["privacy_unit"] == "record"
    assert sum(e["steps"] for e in result["ledger"]) == 3 * 64  # each sample's aggregate can move
    assert result["epsilon_spent"] <= 10.0


class Preempted(BaseException):
    """Stands for the signal that kills a job (run_cell must not catch it)."""


class KillAfterSave(Checkpointer):
    def __init__(self, path, save_at):
        super().__init__(path, interval_s=0)
        self.save_at = save_at

    def maybe_save(self, step, **state):
        if step == self.save_at + 1:
            raise Preempted(step)
        if step == self.save_at:
            self.save_step(step, **state)
        return step == self.save_at


def test_preempted_dpsd_resumes_to_the_uninterrupted_result(tmp_path):
    config, reference = _run("dpsd", tmp_path / "ref", iterations=4, final_steps=2)
    ckpt = tmp_path / "ck" / "cell.pt"
    with pytest.raises(Preempted):
        run_cell(config, tmp_path / "run", quiet=True, checkpointer=KillAfterSave(ckpt, save_at=2))
    resumed = run_cell(config, tmp_path / "run", quiet=True, checkpointer=Checkpointer(ckpt, interval_s=3600))
    assert resumed["status"] == "ok", resumed["error"]
    assert resumed["ledger"] == reference["ledger"] and resumed["epsilon_spent"] == reference["epsilon_spent"]
    for key in ("test_accuracy", "teacher_queries", "synthetic_downstream_accuracy"):
        assert resumed["metrics"][key] == reference["metrics"][key], key


def test_memory_pads_narrower_supports_and_the_loss_leaves_the_padding_out():
    """The full class set in the first release, the student's top-k later: one memory, and each
    sample's loss is the loss over its own released support."""
    torch.manual_seed(0)
    logits = torch.randn(4, 5)
    full, full_targets = torch.arange(5).expand(2, -1), torch.randn(2, 5)
    top2, top2_targets = torch.tensor([[3, 1], [0, 4]]), torch.randn(2, 2)
    memory = AnnotationMemory(10)
    memory.add(torch.zeros(2, 1), full, full_targets)
    memory.add(torch.zeros(2, 1), top2, top2_targets)
    assert memory.support.shape == (4, 5) and memory.support[2:, 2:].eq(-1).all()
    for kind in ("mse", "kl"):
        mixed = annotation_regression_loss(logits, memory.support, memory.targets, kind)
        separate = (annotation_regression_loss(logits[:2], full, full_targets, kind)
                    + annotation_regression_loss(logits[2:], top2, top2_targets, kind)) / 2
        assert torch.isclose(mixed, separate), kind


@pytest.mark.parametrize("full_support_iterations, widths", [(1, [10, 2, 2]), (0, [2, 2, 2])])
def test_dpsd_releases_over_all_classes_until_the_student_prior_is_earned(tmp_path, monkeypatch,
                                                                          full_support_iterations, widths):
    seen = _record_support_widths(monkeypatch, "dpsd", "gaussian_annotation", gaussian_annotation)
    _run("dpsd", tmp_path, k=2, full_support_iterations=full_support_iterations, final_steps=2)
    assert seen == widths
