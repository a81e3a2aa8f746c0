"""Gradient sanitisation: per-sample L2 clipping plus Gaussian noise.

Two uses in the DP generative baselines:

* DP-SGD style (DP-GAN, DP-CGAN, DPDM): per-example parameter gradients are clipped to
  norm C, summed, and N(0, sigma^2 C^2 I) is added to the sum (``clip_and_noise_sum``).
* Gradient sanitisation on generated samples (GS-WGAN, DP-Sinkhorn): the gradient of the
  generator loss *with respect to each generated sample* is clipped and noised before it
  flows into the generator (``sanitize_per_sample`` / ``sanitized``). Only this gradient
  depends on private data, so the generator is DP by post-processing.

``noise_multiplier`` is always the ratio (noise std) / (L2 sensitivity), the quantity the
ledger's Gaussian events take. Under replacement of one record a clipped vector can move
by 2C, so GS-WGAN uses std = 2 C sigma (``sensitivity_factor=2``); a clipped vector that
is added or removed moves by C (``sensitivity_factor=1``).
"""

from __future__ import annotations

import torch


def per_sample_norms(rows) -> torch.Tensor:
    """L2 norm of each sample; ``rows`` is a tensor [n, ...] or a list of such tensors
    (e.g. per-sample gradients of several parameters), whose norms are combined."""
    if isinstance(rows, torch.Tensor):
        rows = [rows]
    sq = sum(r.flatten(1).pow(2).sum(dim=1) if r.dim() > 1 else r.pow(2) for r in rows)
    return sq.sqrt()


def clip_factors(norms: torch.Tensor, clip: float) -> torch.Tensor:
    """min(1, C / ||g_i||) for each sample."""
    return (clip / (norms + 1e-12)).clamp(max=1.0)


def clip_per_sample(rows, clip: float):
    """Scale every sample (row) so that its L2 norm is at most ``clip``. Accepts a tensor
    or a list of tensors sharing the leading dimension (clipped jointly)."""
    single = isinstance(rows, torch.Tensor)
    lst = [rows] if single else list(rows)
    f = clip_factors(per_sample_norms(lst), clip)
    out = [r * f.view(-1, *([1] * (r.dim() - 1))) for r in lst]
    return out[0] if single else out


def gaussian_noise_like(t: torch.Tensor, std: float, generator: torch.Generator | None = None):
    if std == 0:
        return torch.zeros_like(t)
    return torch.randn(t.shape, generator=generator, device=t.device, dtype=t.dtype) * std


def clip_and_noise_sum(per_sample, clip: float, noise_multiplier: float, sensitivity_factor: float = 1.0,
                       generator: torch.Generator | None = None):
    """DP-SGD aggregation: sum_i clip(g_i, C) + N(0, (sensitivity_factor * C * sigma)^2 I).

    ``per_sample``: list of tensors [n, *param_shape] (one per parameter), clipped jointly
    per sample. Returns a list of summed, noised tensors of shape param_shape. With n = 0
    the result is pure noise (a Poisson batch may be empty).
    """
    clipped = clip_per_sample(list(per_sample), clip)
    std = sensitivity_factor * clip * noise_multiplier
    return [c.sum(dim=0) + gaussian_noise_like(c[0] if c.shape[0] else c.new_zeros(c.shape[1:]), std, generator)
            for c in clipped]


def sanitize_per_sample(grad: torch.Tensor, clip: float, noise_multiplier: float,
                        sensitivity_factor: float = 2.0, generator: torch.Generator | None = None):
    """GS-WGAN sanitisation of a batch of per-sample gradients [n, ...]: each row is
    clipped to norm C and gets its own N(0, (sensitivity_factor * C * sigma)^2 I) noise."""
    clipped = clip_per_sample(grad, clip)
    return clipped + gaussian_noise_like(clipped, sensitivity_factor * clip * noise_multiplier, generator)


def sanitize_whole(grad: torch.Tensor, clip: float, noise_multiplier: float, sensitivity_factor: float = 2.0,
                   generator: torch.Generator | None = None):
    """DP-Sinkhorn sanitisation: the whole gradient tensor (all generated samples of the
    batch together) is clipped to norm C and gets N(0, (sensitivity_factor * C * sigma)^2 I)."""
    f = clip_factors(grad.norm().reshape(1), clip)
    clipped = grad * f
    return clipped + gaussian_noise_like(clipped, sensitivity_factor * clip * noise_multiplier, generator)


class _Sanitize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, clip, noise_multiplier, sensitivity_factor, scale, per_sample, generator):
        ctx.params = (clip, noise_multiplier, sensitivity_factor, scale, per_sample, generator)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        clip, sigma, sens, scale, per_sample, generator = ctx.params
        # ``scale`` undoes the loss reduction (e.g. batch size for a mean) so that clipping
        # acts on each sample's own gradient; it is re-applied after noising.
        fn = sanitize_per_sample if per_sample else sanitize_whole
        g = fn(grad * scale, clip, sigma, sens, generator) / scale
        return g, None, None, None, None, None, None


def sanitized(x: torch.Tensor, clip: float, noise_multiplier: float, sensitivity_factor: float = 2.0,
              loss_reduction: str = "mean", per_sample: bool = True,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Identity in the forward pass; in the backward pass the gradient w.r.t. ``x`` is
    clipped to C and noised with std sensitivity_factor * C * sigma: each sample (row)
    separately when ``per_sample`` (GS-WGAN), the whole tensor at once otherwise (DP-Sinkhorn).

    Use as ``loss_G = -D(sanitized(G(z), C, sigma)).mean()`` (GS-WGAN): everything
    upstream of ``x`` (the generator) only ever sees sanitised gradients.
    ``loss_reduction="mean"``: the loss averages over the batch, so the per-sample
    gradient is ``n`` times the incoming row (as GS-WGAN's clip bound C / batch size);
    ``"sum"``: the incoming gradient is used as it is.
    """
    scale = float(x.shape[0]) if loss_reduction == "mean" else 1.0
    return _Sanitize.apply(x, clip, noise_multiplier, sensitivity_factor, scale, per_sample, generator)
