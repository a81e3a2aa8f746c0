"""DP annotation mechanisms shared by DPSD, the DP data-free baselines and label DP.

Each function performs the random release only; the caller records the
matching ledger event (returned by the ``*_event`` helpers next to it) *before*
using the output, so a release that would overspend never reaches the model.

- Gaussian annotation on normalised top-k signals (DPSD data-sensitive mode,
  placement "annotation"; DPDFD lineage): each sample's signal restricted to k
  coordinates chosen by the (already private) student, normalised to L2 norm C,
  plus N(0, sigma^2 C^2 I_k). One call = one Gaussian mechanism with noise
  multiplier sigma on the concatenation of the b normalised vectors.
- Per-sample normalisation + Gaussian noise on a sum (DP-SGD-style, placement
  "gradient"): :func:`noisy_normalised_sum`.
- Randomized response with a prior (Ghazi et al., NeurIPS 2021, RR-with-prior;
  "selective randomized response", Liu et al., MMSP 2022): k-ary RR restricted
  to a support set chosen by a prior; epsilon-label-DP per label.
"""
from __future__ import annotations

import math

import torch

from . import ledger as L


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 if it is half or bfloat16: norms, clipping and noise are never computed in
    reduced precision (a bfloat16 norm can be off by ~0.4%, enough to exceed the assumed sensitivity)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def normalise_rows(vectors: torch.Tensor, norm: float) -> torch.Tensor:
    """Scale each row to L2 norm ``norm`` (zero rows stay zero): bounds each row's contribution."""
    vectors = full_precision(vectors)
    flat = vectors.reshape(vectors.shape[0], -1)
    lengths = flat.norm(dim=1, keepdim=True)
    scale = torch.where(lengths > 0, norm / lengths.clamp_min(1e-12), torch.zeros_like(lengths))
    return (flat * scale).reshape(vectors.shape)


def clip_rows(vectors: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Scale each row to L2 norm at most ``max_norm`` (DP-SGD clipping)."""
    vectors = full_precision(vectors)
    flat = vectors.reshape(vectors.shape[0], -1)
    factor = (max_norm / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
    return (flat * factor).reshape(vectors.shape)


def topk_support(prior_logits: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (b x k) of the k largest entries of a prior (e.g. the private student's logits)."""
    k = min(int(k), prior_logits.shape[1])
    return prior_logits.topk(k, dim=1).indices


def prior_support(prior_logits: torch.Tensor, k: int, *, earned: bool) -> torch.Tensor:
    """The support of each sample's release: the prior's top-k once the prior is ``earned`` (the
    student is trained enough for its top-k to hold the teacher's class), else every class."""
    num_classes = prior_logits.shape[1]
    if earned and k < num_classes:
        return topk_support(prior_logits, k)
    return torch.arange(num_classes, device=prior_logits.device).expand(len(prior_logits), -1)


def gaussian_annotation(signal: torch.Tensor, support: torch.Tensor, *, clip_norm: float,
                        noise_multiplier: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Release each sample's signal on its support, normalised to ``clip_norm``, with Gaussian noise.

    ``signal``: b x K (e.g. teacher logits); ``support``: b x k indices. Each row's k entries are
    centred (logits are shift-invariant) and normalised to L2 norm C, then N(0, (sigma C)^2) is added
    to each of the k entries. Returns the noisy b x k annotation.
    Ledger: :func:`gaussian_annotation_event` (one Gaussian mechanism per call).
    """
    picked = full_precision(signal).gather(1, support)
    picked = picked - picked.mean(dim=1, keepdim=True) if picked.shape[1] > 1 else picked
    normalised = normalise_rows(picked, clip_norm)
    noise = torch.randn(normalised.shape, generator=generator, device=normalised.device, dtype=normalised.dtype)
    return normalised + noise_multiplier * clip_norm * noise


def gaussian_annotation_event(noise_multiplier: float, steps: int = 1) -> dict:
    """Each call changes at most one sample's normalised row (norm C): Gaussian, sensitivity C."""
    return L.gaussian(noise_multiplier, steps)


def noisy_normalised_sum(per_sample: torch.Tensor, *, clip_norm: float, noise_multiplier: float,
                         normalise: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sum of per-sample vectors normalised (or clipped) to ``clip_norm`` plus N(0, (sigma C)^2 I).

    ``per_sample``: b x ... . Returns the noisy sum (divide by b yourself). Ledger: one
    ``gaussian`` (sample rate 1) or ``subsampled_gaussian`` event per call, as the caller's sampling is.
    """
    bounded = normalise_rows(per_sample, clip_norm) if normalise else clip_rows(per_sample, clip_norm)
    total = bounded.sum(dim=0)
    noise = torch.randn(total.shape, generator=generator, device=total.device, dtype=total.dtype)
    return total + noise_multiplier * clip_norm * noise


def rr_keep_probability(epsilon: float, support_size: int) -> float:
    """Probability that k-ary randomized response returns the true label: e^eps / (e^eps + k - 1)."""
    if support_size <= 1:
        return 1.0
    return 1.0 / (1.0 + (support_size - 1) * math.exp(-epsilon))


def randomized_response(labels: torch.Tensor, num_classes: int, epsilon: float,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """k-ary randomized response over all classes (Warner 1965): epsilon-label-DP per label."""
    support = torch.arange(num_classes, device=labels.device).expand(labels.shape[0], num_classes)
    return rr_with_prior(labels, support, epsilon, generator=generator)


def rr_with_prior(labels: torch.Tensor, support: torch.Tensor, epsilon: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomized response restricted to a per-sample support (RR-with-prior, Ghazi et al. 2021).

    ``support``: b x k candidate labels chosen *without* the private label (e.g. a private
    model's top-k). If the true label is in the support, it is kept with probability
    e^eps/(e^eps + k - 1), otherwise one of the other k-1 candidates is returned uniformly;
    if it is not in the support, a candidate is returned uniformly. epsilon-label-DP per label.
    Ledger: ``randomized_response(epsilon)`` per release (a batch of labels in which one may
    differ under the adjacency used, or one per disjoint label: parallel composition).
    """
    b, k = support.shape
    device = labels.device
    in_support = support == labels.unsqueeze(1)
    has_true = in_support.any(dim=1)
    keep = torch.rand(b, generator=generator, device=device) < rr_keep_probability(epsilon, k)
    # a uniform draw among the candidates other than the true one (or among all if it is absent)
    weights = (~in_support).float()
    weights[~has_true] = 1.0
    if k == 1:
        return support[:, 0].clone()
    pick = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    other = support.gather(1, pick.unsqueeze(1)).squeeze(1)
    return torch.where(has_true & keep, labels, other)


def rr_event(epsilon: float, steps: int = 1) -> dict:
    return L.randomized_response(epsilon, steps)
