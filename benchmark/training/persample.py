"""Vectorised per-sample gradients (torch.func: vmap over grad), for normalise-and-noise updates
that are not plain DP-SGD on private records (DPSD's gradient placement, DPDFD)."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap


def per_sample_gradients(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                         inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """{param name: b x param shape} gradients of ``loss_fn(model(x_i), target_i)`` for each sample i.

    The model must not use batch statistics (GroupNorm, not BatchNorm, in training mode).
    """
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(p, x, y):
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return loss_fn(out, y.unsqueeze(0))

    return vmap(grad(loss_one), in_dims=(None, 0, 0), randomness="different")(params, inputs, targets)


def flatten_per_sample(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(g.shape[0], -1) for g in grads.values()], dim=1)


def assign_flat_gradient(model: nn.Module, flat: torch.Tensor) -> None:
    """Write a flat gradient vector into ``param.grad`` of the model's trainable parameters."""
    offset = 0
    for p in model.parameters():
        if not p.requires_grad:
            continue
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n
