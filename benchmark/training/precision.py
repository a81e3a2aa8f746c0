"""Mixed precision, only where no privacy mechanism computes.

Autocast (bfloat16) wraps the forward passes of the non-private supervised loops
(:func:`benchmark.training.train_classifier`: the teacher, PATE's shard teachers, ``student-real``,
the common student trained on synthetic data, the audit's reference models) and of teacher
inference (:func:`benchmark.training.predict_logits`, whose outputs are cast back to float32
before any top-k, normalisation, clipping or noise is applied to them). Everything a privacy
proof depends on stays in float32: Opacus' per-sample gradients, their clipping and noise, the
gradient sanitisers, the DP annotation mechanisms and the ledger never run under autocast, so
the sensitivity bounds the ledger assumes hold in the arithmetic that is actually done.

Policy (``$BENCHMARK_AMP``): ``auto`` (default) turns autocast on for CUDA devices that support
bfloat16 and off on CPU (bfloat16 on most CPUs is slower than float32); ``off`` disables it;
``on`` forces it on any device, CPU included (the tests use this). float16 is not used: it would
need loss scaling, and bfloat16 does not. The setting used is stored in each result (``amp``).
"""
from __future__ import annotations

import contextlib
import os

import torch

_POLICIES = ("auto", "on", "off")


def policy() -> str:
    value = os.environ.get("BENCHMARK_AMP", "auto").strip().lower() or "auto"
    if value not in _POLICIES:
        raise ValueError(f"BENCHMARK_AMP must be one of {', '.join(_POLICIES)}, got {value!r}")
    return value


def amp_enabled(device) -> bool:
    """Whether the non-private loops on ``device`` run under bfloat16 autocast."""
    device = torch.device(device)
    p = policy()
    if p == "off":
        return False
    if p == "on":
        return True
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def autocast(device):
    """A bfloat16 autocast context for ``device`` if :func:`amp_enabled`, else a no-op context."""
    device = torch.device(device)
    if not amp_enabled(device):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def describe(device) -> str:
    """What goes into a result's ``amp`` field: ``bfloat16`` or ``off``."""
    return "bfloat16" if amp_enabled(device) else "off"


def pin_memory(device) -> bool:
    """Page-locked host batches (with ``non_blocking`` copies) when the device is a GPU."""
    return torch.device(device).type == "cuda"
