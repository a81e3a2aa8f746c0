"""FixMatch (Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with Consistency and
Confidence", NeurIPS 2020), the semi-supervised learner of PATE-FM (Malek et al., NeurIPS 2021).

Per step: a labelled batch (B, weakly augmented) gets cross-entropy; an unlabelled batch (mu B)
is augmented weakly and strongly; where the model's prediction on the weak view is confident
(max prob >= tau) its argmax is the pseudo-label for the strong view:
    loss = CE(f(weak(x_l)), y_l) + lambda_u * mean_b[ 1{max p_b >= tau} CE(f(strong(u_b)), argmax p_b) ].
Augmentations are batched, per-sample random affine warps (grid_sample) so they run fast on CPU:
weak = translation (up to 1/8 of the side; no flips, digits are not flip-invariant); strong =
RandAugment-like: rotation, shear, scale and translation, brightness/contrast jitter, then Cutout
(a square of up to half the side set to 0.5).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as Fn


def _rand(n: int, lo: float, hi: float, generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def affine_warp(x: torch.Tensor, angle: torch.Tensor, shear: torch.Tensor, scale: torch.Tensor,
                tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """Per-sample affine warp (angles in radians, translations in [-1, 1] units), zero padding."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    a = torch.stack([torch.stack([cos / scale, (-sin + shear) / scale, tx], 1),
                     torch.stack([sin / scale, cos / scale, ty], 1)], 1).to(x)
    grid = Fn.affine_grid(a, list(x.shape), align_corners=False)
    return Fn.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def weak_augment(x: torch.Tensor, generator=None, max_shift: float = 0.125) -> torch.Tensor:
    n = len(x)
    z = torch.zeros(n)
    return affine_warp(x, z, z, torch.ones(n), _rand(n, -2 * max_shift, 2 * max_shift, generator),
                       _rand(n, -2 * max_shift, 2 * max_shift, generator))


def strong_augment(x: torch.Tensor, generator=None) -> torch.Tensor:
    n, _, h, w = x.shape
    out = affine_warp(x, _rand(n, -math.radians(25), math.radians(25), generator), _rand(n, -0.3, 0.3, generator),
                      _rand(n, 0.85, 1.15, generator), _rand(n, -0.25, 0.25, generator),
                      _rand(n, -0.25, 0.25, generator))
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    contrast = _rand(n, 0.6, 1.4, generator).view(n, 1, 1, 1)
    bright = _rand(n, -0.2, 0.2, generator).view(n, 1, 1, 1)
    out = ((out - mean) * contrast + mean + bright).clamp(0, 1)
    # Cutout
    size = max(1, h // 2)
    cy = torch.randint(0, h, (n,), generator=generator).view(n, 1, 1)
    cx = torch.randint(0, w, (n,), generator=generator).view(n, 1, 1)
    ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    hole = ((ys - cy).abs() <= size // 2) & ((xs - cx).abs() <= size // 2)
    return torch.where(hole.unsqueeze(1).to(out.device), torch.full_like(out, 0.5), out)


def fixmatch_loss(model: nn.Module, xl: torch.Tensor, yl: torch.Tensor, xu: torch.Tensor, *, tau: float,
                  lambda_u: float, generator=None) -> tuple[torch.Tensor, float]:
    """The FixMatch objective on one labelled and one unlabelled batch; also the mask rate."""
    weak_l = weak_augment(xl, generator)
    weak_u, strong_u = weak_augment(xu, generator), strong_augment(xu, generator)
    logits = model(torch.cat([weak_l, weak_u, strong_u]))
    lo_l, lo_wu, lo_su = logits[:len(xl)], logits[len(xl):len(xl) + len(xu)], logits[len(xl) + len(xu):]
    sup = Fn.cross_entropy(lo_l, yl)
    probs = lo_wu.detach().softmax(dim=1)
    conf, pseudo = probs.max(dim=1)
    mask = (conf >= tau).float()
    unsup = (Fn.cross_entropy(lo_su, pseudo, reduction="none") * mask).mean()
    return sup + lambda_u * unsup, float(mask.mean())


def fixmatch_train(model: nn.Module, labeled_x: torch.Tensor, labeled_y: torch.Tensor, unlabeled_x: torch.Tensor, *,
                   steps: int, batch_size: int = 32, mu: int = 3, tau: float = 0.95, lambda_u: float = 1.0,
                   lr: float = 0.03, momentum: float = 0.9, weight_decay: float = 5e-4, device="cpu", seed: int = 0,
                   progress: Callable = lambda it, **_: it, desc: str = "fixmatch") -> nn.Module:
    """FixMatch with the paper's optimiser: SGD, Nesterov momentum, cosine decay lr * cos(7 pi k / 16 K)."""
    g = torch.Generator().manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: math.cos(7 * math.pi * k / (16 * max(1, steps))))
    nl, nu = len(labeled_x), len(unlabeled_x)
    for _ in progress(range(steps), desc=desc):
        il = torch.randint(0, nl, (min(batch_size, nl),), generator=g)
        iu = torch.randint(0, nu, (mu * batch_size,), generator=g)
        loss, _ = fixmatch_loss(model, labeled_x[il].to(device), labeled_y[il].to(device), unlabeled_x[iu].to(device),
                                tau=tau, lambda_u=lambda_u, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()
