"""Mixed precision stays out of the privacy arithmetic (benchmark/training/precision.py).

Forced on the CPU with BENCHMARK_AMP=on (bfloat16 autocast works there), so these run without a GPU.
"""
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from benchmark.privacy import ledger as L
from benchmark.privacy import mechanisms as M
from benchmark.training import dp_sgd_train, precision, predict_logits, train_classifier


def _autocast_on() -> bool:
    return torch.is_autocast_enabled("cpu")


class Recorder(nn.Module):
    """A tiny classifier that records, per forward pass, whether autocast was on."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        self.seen: list[bool] = []

    def forward(self, x):
        self.seen.append(_autocast_on())
        return self.net(x)


def _data(n=48):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 1, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g))


def test_policy_defaults_off_on_cpu_and_rejects_unknown_values(monkeypatch):
    monkeypatch.delenv("BENCHMARK_AMP", raising=False)
    assert not precision.amp_enabled("cpu") and precision.describe("cpu") == "off"
    assert not precision.pin_memory("cpu") and precision.pin_memory("cuda")
    monkeypatch.setenv("BENCHMARK_AMP", "on")
    assert precision.amp_enabled("cpu") and precision.describe("cpu") == "bfloat16"
    monkeypatch.setenv("BENCHMARK_AMP", "off")
    assert precision.describe("cuda") == "off"
    monkeypatch.setenv("BENCHMARK_AMP", "fp8")
    with pytest.raises(ValueError, match="BENCHMARK_AMP"):
        precision.amp_enabled("cpu")


def test_non_private_loops_autocast_and_keep_float32_weights_and_outputs(monkeypatch):
    monkeypatch.setenv("BENCHMARK_AMP", "on")
    model = train_classifier(Recorder(), _data(), epochs=1, batch_size=16)
    assert model.seen and all(model.seen)  # every training forward pass ran under autocast
    assert all(p.dtype == torch.float32 for p in model.parameters())
    logits = predict_logits(model, _data().tensors[0])
    assert logits.dtype == torch.float32 and model.seen[-1]


def test_dp_sgd_never_runs_under_autocast(monkeypatch):
    monkeypatch.setenv("BENCHMARK_AMP", "on")
    model = Recorder()
    ledger = L.PrivacyLedger(target_epsilon=5.0, delta=1e-5)
    dp_sgd_train(model, _data(), ledger=ledger, epochs=1, batch_size=16, lr=0.1, max_grad_norm=1.0)
    assert model.seen and not any(model.seen)  # per-sample gradients, clipping and noise in float32


def test_annotation_mechanism_works_in_float32_on_bfloat16_teacher_outputs():
    signal = torch.tensor([[3.0, 1.0, -2.0, 0.5]], dtype=torch.bfloat16)
    support = torch.tensor([[0, 1, 3]])
    released = M.gaussian_annotation(signal, support, clip_norm=2.0, noise_multiplier=0.0)
    assert released.dtype == torch.float32
    assert torch.allclose(released.norm(dim=1), torch.tensor([2.0]), atol=1e-6)  # exact in float32
    assert M.clip_rows(torch.ones(2, 5, dtype=torch.bfloat16) * 3, 1.0).dtype == torch.float32
