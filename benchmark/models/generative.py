"""Generators, discriminators and a small denoiser for the DP generative baselines.

All networks are class-conditional and work for 1x8x8 (digits), 1x28x28 (MNIST-like)
and 3x32x32 (CIFAR-like) inputs; other square sizes work when repeated halving
reaches a side of at most 7. Discriminators and the denoiser contain no
BatchNorm, so Opacus can compute per-sample gradients for them; the generator
may use BatchNorm because it never sees private data directly (only sanitised
gradients or post-processed privatised statistics reach it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _pyramid(side: int) -> tuple[int, int]:
    """(base side, number of 2x steps) with base * 2**steps == side and base <= 7."""
    base, steps = side, 0
    while base % 2 == 0 and base > 7:
        base //= 2
        steps += 1
    if base > 8:
        raise ValueError(f"unsupported image side {side}: halving does not reach a side <= 8")
    return base, steps


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(labels.long(), num_classes).float()


class ConditionalGenerator(nn.Module):
    """z (latent_dim) ++ one_hot(y) -> FC -> [upsample, conv3x3, BN, ReLU]* -> conv3x3 -> sigmoid.

    Output images lie in [0, 1] with shape ``out_shape`` (C, H, W).
    """

    def __init__(self, latent_dim: int, num_classes: int, out_shape, width: int = 32,
                 batchnorm: bool = True):
        super().__init__()
        c, h, w = out_shape
        if h != w:
            raise ValueError("square images only")
        self.latent_dim, self.num_classes, self.out_shape = latent_dim, num_classes, tuple(out_shape)
        base, steps = _pyramid(h)
        ch = width * 2 ** steps
        self.base, self.ch0 = base, ch
        self.fc = nn.Sequential(nn.Linear(latent_dim + num_classes, ch * base * base),
                                nn.BatchNorm1d(ch * base * base) if batchnorm else nn.Identity(),
                                nn.ReLU())
        blocks = []
        for _ in range(steps):
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(ch, ch // 2, 3, padding=1),
                       nn.BatchNorm2d(ch // 2) if batchnorm else nn.Identity(),
                       nn.ReLU()]
            ch //= 2
        blocks += [nn.Conv2d(ch, c, 3, padding=1)]
        self.body = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, one_hot(y, self.num_classes)], dim=1))
        h = h.view(-1, self.ch0, self.base, self.base)
        return torch.sigmoid(self.body(h))

    def sample(self, labels: torch.Tensor) -> torch.Tensor:
        z = torch.randn(len(labels), self.latent_dim, device=labels.device)
        return self(z, labels)


class ConditionalDiscriminator(nn.Module):
    """Image ++ one-hot label maps -> [conv4x4 stride 2, LeakyReLU]* -> linear -> ``out_dim``.

    No normalisation layers (per-sample gradients via Opacus, WGAN-GP penalties).
    ``out_dim`` = 1 gives a critic / real-vs-fake logit.
    """

    def __init__(self, in_shape, num_classes: int, width: int = 32, out_dim: int = 1):
        super().__init__()
        c, h, w = in_shape
        self.num_classes, self.in_shape = num_classes, tuple(in_shape)
        base, steps = _pyramid(h)
        layers = [nn.Conv2d(c + num_classes, width, 3, padding=1), nn.LeakyReLU(0.2)]
        ch = width
        for _ in range(steps):
            layers += [nn.Conv2d(ch, ch * 2, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            ch *= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(ch * base * base, out_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        maps = one_hot(y, self.num_classes)[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        h = self.features(torch.cat([x, maps], dim=1))
        return self.head(h.flatten(1)).squeeze(-1) if self.head.out_features == 1 else self.head(h.flatten(1))


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int = 8):
        super().__init__()
        self.n1 = nn.GroupNorm(min(groups, cin), cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.n2 = nn.GroupNorm(min(groups, cout), cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.c1(F.silu(self.n1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return h + self.skip(x)


class ConditionalDenoiser(nn.Module):
    """A small class-conditional U-Net F(x, c_noise, y) for diffusion models (DPDM).

    Two resolutions (full and half side), GroupNorm only (DP-SGD compatible).
    The noise level enters as Fourier features of ``c_noise`` (EDM: ln(sigma)/4);
    the class enters as a learned embedding added to the noise embedding.
    """

    def __init__(self, in_shape, num_classes: int, width: int = 32, emb_dim: int = 64):
        super().__init__()
        c, h, _ = in_shape
        self.in_shape, self.num_classes = tuple(in_shape), num_classes
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(1000.0), emb_dim // 4)))
        self.t_mlp = nn.Sequential(nn.Linear(emb_dim // 2, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.y_emb = nn.Linear(num_classes, emb_dim, bias=False)
        self.inp = nn.Conv2d(c, width, 3, padding=1)
        self.d1 = _ResBlock(width, width, emb_dim)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.d2 = _ResBlock(2 * width, 2 * width, emb_dim)
        self.mid = _ResBlock(2 * width, 2 * width, emb_dim)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.u1 = _ResBlock(3 * width, width, emb_dim)
        self.out = nn.Sequential(nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, c, 3, padding=1))
        self.odd = h % 2 == 1

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ang = c_noise.reshape(-1, 1) * self.freqs[None]
        emb = self.t_mlp(torch.cat([ang.sin(), ang.cos()], dim=1))
        emb = F.silu(emb + self.y_emb(one_hot(y, self.num_classes)))
        h0 = self.d1(self.inp(x), emb)
        h = self.mid(self.d2(self.down(h0), emb), emb)
        h = self.up(h)[:, :, : h0.shape[2], : h0.shape[3]]
        h = self.u1(torch.cat([h, h0], dim=1), emb)
        return self.out(h)
