"""ScatterNet features for DP learning (Tramer & Boneh, "Differentially private learning needs
better features (or much more data)", ICLR 2021).

The scattering transform (Oyallon & Mallat) with J=2 scales and L=8 angles is a fixed,
data-independent feature extractor: it costs no privacy. Each input channel of an HxW image
becomes K = 1 + J L + L^2 J (J-1) / 2 = 81 channels of size H/4 x W/4. We use the Kymatio
library (Andreux et al., JMLR 2020), importing its 2-D torch frontend directly: ``kymatio.torch``
also imports the 3-D frontend, which needs ``scipy.special.sph_harm`` (removed in SciPy 1.15).

Features are normalised per channel before the (DP-SGD trained) head. Data normalisation
needs the features' mean and variance over the private data: :func:`dp_channel_stats`
releases them with the Gaussian mechanism (two releases, recorded by the caller); group
normalisation needs nothing private.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def scattering(input_shape: tuple[int, int, int], J: int = 2, L: int = 8) -> nn.Module:
    """A Kymatio Scattering2D module for images of ``input_shape`` (C, H, W)."""
    try:
        from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("dp-scatternet needs the 'kymatio' package (pip install kymatio)") from exc
    _, h, w = input_shape
    return ScatteringTorch2D(J=J, shape=(h, w), L=L)


class ScatterFeatures(nn.Module):
    """x (B, C, H, W) -> scattering coefficients (B, C*K, H/2^J, W/2^J)."""

    def __init__(self, input_shape: tuple[int, int, int], J: int = 2, L: int = 8):
        super().__init__()
        self.scat = scattering(input_shape, J, L)
        self.scat.requires_grad_(False)
        c, h, w = input_shape
        self.K = 1 + J * L + L * L * J * (J - 1) // 2
        self.out_shape = (c * self.K, math.ceil(h / 2**J), math.ceil(w / 2**J))

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.scat(x.contiguous())
        return y.reshape(len(x), *self.out_shape)


class ChannelNorm(nn.Module):
    """Fixed per-channel affine normalisation (x - mean) / sqrt(var + eps) with released statistics."""

    def __init__(self, mean: torch.Tensor, var: torch.Tensor, eps: float = 1e-5):
        super().__init__()
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1).float())
        self.register_buffer("std", (var.reshape(1, -1, 1, 1).float() + eps).sqrt())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def head(kind: str, feat_shape: tuple[int, int, int], num_classes: int, groups: int = 27,
         norm: nn.Module | None = None, width: int = 32) -> nn.Module:
    """The trainable part on top of scattering features.

    ``norm`` is a :class:`ChannelNorm` (data normalisation) or None for group normalisation
    (GroupNorm without affine parameters, as in the paper's "GN" option).
    ``kind``: "linear" (ScatterNet + linear) or "cnn" (ScatterNet + a small tanh CNN).
    """
    k, h, w = feat_shape
    layers: list[nn.Module] = [norm if norm is not None else nn.GroupNorm(groups, k, affine=False)]
    if kind == "linear":
        layers += [nn.Flatten(), nn.Linear(k * h * w, num_classes)]
    elif kind == "cnn":
        layers += [nn.Conv2d(k, width, 3, padding=1), nn.Tanh(), nn.Conv2d(width, width, 3, padding=1), nn.Tanh(),
                   nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * width, num_classes)]
    else:
        raise ValueError(f"unknown ScatterNet head {kind!r}; expected 'linear' or 'cnn'")
    return nn.Sequential(*layers)


class ScatterNetClassifier(nn.Module):
    """Images -> fixed scattering features -> trained head (logits)."""

    def __init__(self, features: ScatterFeatures, head_module: nn.Module):
        super().__init__()
        self.features = features
        self.head = head_module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _clip_rows(v: torch.Tensor, c: float) -> torch.Tensor:
    return v / torch.clamp(v.norm(dim=1, keepdim=True) / c, min=1.0)


@torch.no_grad()
def dp_channel_stats(feats: torch.Tensor, clip_mean: float, clip_sq: float, noise_multiplier: float,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Private per-channel mean and variance of features (B, K, H, W) (Tramer & Boneh, Sec. 3).

    Each example contributes its vector of channel means (clipped to L2 norm ``clip_mean``) and its
    vector of channel means of squares (clipped to ``clip_sq``); each sum gets Gaussian noise of std
    ``noise_multiplier * clip`` and is divided by the number of examples. That is two Gaussian
    mechanisms with L2 sensitivity = the clip norm (add/remove one example): the caller records
    ``gaussian(noise_multiplier, steps=2)``. var = max(E[x^2] - E[x]^2, 0).
    """
    n, k = feats.shape[:2]
    flat = feats.reshape(n, k, -1)
    m = _clip_rows(flat.mean(-1), clip_mean).sum(0)
    s = _clip_rows((flat**2).mean(-1), clip_sq).sum(0)
    m = (m + noise_multiplier * clip_mean * torch.randn(k, generator=generator)) / n
    s = (s + noise_multiplier * clip_sq * torch.randn(k, generator=generator)) / n
    return m, torch.clamp(s - m**2, min=0.0)
