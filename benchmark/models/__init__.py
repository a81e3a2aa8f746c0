"""Networks: classifiers (teacher and student per input size) and the image generator.

- ``cnn-bn``: the default teacher for small inputs (three conv blocks with BatchNorm, so
  data-free methods can match its BatchNorm statistics).
- ``cnn3``: the common student, the paper's "three-layer CNN" (two conv layers and a
  linear layer) with GroupNorm, which DP-SGD (Opacus) and per-sample gradients support;
  ``activation="tanh"`` gives the tempered-sigmoid variant.
Larger architectures (ResNets for 32x32 inputs) register themselves from
``benchmark/models/resnet.py``.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def register_arch(name: str):
    def deco(fn):
        ARCHITECTURES[name] = fn
        return fn
    return deco


def _activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU(), "tanh": nn.Tanh(), "elu": nn.ELU()}[name]


@register_arch("cnn-bn")
def cnn_bn(input_shape, num_classes, width: int = 32) -> nn.Module:
    c, h, _ = input_shape
    pool_first = h >= 16
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.MaxPool2d(2) if pool_first else nn.Identity(),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.BatchNorm2d(4 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes))


@register_arch("cnn3")
def cnn3(input_shape, num_classes, width: int = 32, activation: str = "relu", groups: int = 8) -> nn.Module:
    c, h, w = input_shape
    pool_first = h >= 16
    h2 = (h // 2 if pool_first else h) // 2
    w2 = (w // 2 if pool_first else w) // 2
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1), nn.GroupNorm(min(groups, width), width), _activation(activation),
        nn.MaxPool2d(2) if pool_first else nn.Identity(),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.GroupNorm(min(groups, 2 * width), 2 * width),
        _activation(activation), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * width * h2 * w2, num_classes))


def default_teacher_arch(input_shape) -> str:
    return "cnn-bn" if input_shape[1] <= 28 else "resnet34"


def default_student_arch(input_shape) -> str:
    return "cnn3"


def build_classifier(arch: str, input_shape, num_classes: int, **kwargs) -> nn.Module:
    _ensure_registered()
    if arch not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[arch](tuple(input_shape), num_classes, **kwargs)


def _ensure_registered() -> None:
    try:
        from . import resnet  # noqa: F401
    except ImportError as exc:  # pragma: no cover - only while resnet.py is absent
        if "resnet" not in str(exc):
            raise


class Generator(nn.Module):
    """DCGAN-style generator z (+ optional class code) -> image in [0, 1] (Radford et al., ICLR 2016).

    Two nearest-neighbour upsampling blocks from a (H/4 x W/4) seed; used by DPSD, the data-free
    methods and (conditionally, ``num_classes`` set) the generative baselines.
    """

    def __init__(self, output_shape, latent_dim: int = 64, base_channels: int = 64, num_classes: int | None = None):
        super().__init__()
        c, h, w = output_shape
        self.output_shape = tuple(output_shape)
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.seed_h, self.seed_w = math.ceil(h / 4), math.ceil(w / 4)
        in_dim = latent_dim + (num_classes or 0)
        ch = 2 * base_channels
        self.fc = nn.Linear(in_dim, ch * self.seed_h * self.seed_w)
        self.body = nn.Sequential(
            nn.BatchNorm2d(ch),
            nn.Upsample(scale_factor=2), nn.Conv2d(ch, ch, 3, padding=1), nn.BatchNorm2d(ch), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2), nn.Conv2d(ch, base_channels, 3, padding=1), nn.BatchNorm2d(base_channels),
            nn.LeakyReLU(0.2), nn.Conv2d(base_channels, c, 3, padding=1), nn.Sigmoid())
        self._ch = ch

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            if labels is None:
                raise ValueError("a conditional generator needs labels")
            z = torch.cat([z, nn.functional.one_hot(labels, self.num_classes).to(z.dtype)], dim=1)
        x = self.fc(z).view(z.shape[0], self._ch, self.seed_h, self.seed_w)
        x = self.body(x)
        _, h, w = self.output_shape
        return x[:, :, :h, :w]

    def sample_latent(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, device=device, generator=generator)


def map_in_chunks(fn, inputs: torch.Tensor, chunk: int) -> torch.Tensor:
    """``fn`` over ``inputs`` chunk by chunk (along dim 0), written into one preallocated output.
    ``torch.cat`` of a list of chunk outputs would interleave the kept outputs with each chunk's freed
    activations on the C heap, which then can be neither reused nor returned to the OS: a release of
    200,000 digits samples grew the resident set by 1.6 GB that way (docs/dpsd.md, peak memory)."""
    first = fn(inputs[:chunk])
    out = first.new_empty((len(inputs), *first.shape[1:]))
    out[:len(first)] = first
    for lo in range(chunk, len(inputs), chunk):
        out[lo:lo + chunk] = fn(inputs[lo:lo + chunk])
    return out


def random_blobs(n: int, shape, *, grid: int = 8, threshold: float = 0.55, device=None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """A data-independent image prior: uniform noise on a ``grid`` x ``grid`` lattice, 3x3 box blur,
    bilinear upsampling to the image size, thresholded into blobs of random intensity in [0.5, 1].
    Uses no data of any kind (the same for every dataset of a given shape)."""
    c, h, w = shape
    noise = torch.rand(n * c, 1, grid, grid, device=device, generator=generator)
    box = torch.full((1, 1, 3, 3), 1 / 9, device=device)
    # in chunks: a convolution over a release-sized batch (100,000+ images) at once builds an
    # unfold buffer of ~4 KB per image on the CPU; per-image results are identical either way
    smooth = map_in_chunks(lambda part: nn.functional.conv2d(part, box, padding=1), noise, 8192)
    smooth = smooth.view(n, c, grid, grid)
    if (h, w) != (grid, grid):
        smooth = nn.functional.interpolate(smooth, size=(h, w), mode="bilinear", align_corners=False)
    intensity = 0.5 + 0.5 * torch.rand(n, c, 1, 1, device=device, generator=generator)
    return (smooth > threshold).to(smooth.dtype) * intensity


class PriorGenerator(nn.Module):
    """Generator whose latent code is a structured-noise image (:func:`random_blobs`) plus a Gaussian
    noise channel per image channel; a small convolutional network adds a residual to the blobs.
    The last layer starts at zero, so training starts at the prior and moves away from it only as
    the generator's loss asks. Same interface as :class:`Generator` (``sample_latent``, ``forward``).
    Used by DPSD (``latent="prior"``): unlike a DCGAN generator trained against a student only, it
    cannot drift into featureless images the student happens to be confident on."""

    def __init__(self, output_shape, base_channels: int = 32):
        super().__init__()
        c, h, w = output_shape
        self.output_shape = tuple(output_shape)
        self.latent_dim = 2 * c  # channels of the latent image
        self.net = nn.Sequential(nn.Conv2d(2 * c, base_channels, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(base_channels, base_channels, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(base_channels, c, 3, padding=1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        c = self.output_shape[0]
        return (z[:, :c] + self.net(z)).clamp(0, 1)

    def sample_latent(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        blobs = random_blobs(n, self.output_shape, device=device, generator=generator)
        return torch.cat([blobs, torch.randn(blobs.shape, device=device, generator=generator)], dim=1)
