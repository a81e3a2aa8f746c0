"""A VAE of the synthetic data and the tangent-normal adversarial regulariser that uses it (DGD).

- :class:`VAE`: Kingma & Welling's variational autoencoder (MLP encoder/decoder, Bernoulli
  likelihood on [0, 1] pixels, standard normal prior); :func:`train_vae` fits it.
- :func:`tangent_basis`: an orthonormal basis of the decoder's tangent space at z, the columns of
  the Jacobian dG/dz (computed with ``torch.func.jacfwd``) orthonormalised by QR.
- :func:`tangent_normal_adversarial_loss`: TNAR (Yu, Wu & Zhu, "Tangent-normal adversarial
  regularization for semi-supervised learning", CVPR 2019): virtual adversarial training
  (Miyato et al., TPAMI 2019) restricted to the tangent space of the data manifold (TAR, local
  invariance along the manifold) and to its orthogonal complement (NAR, robustness to
  off-manifold noise). One power iteration each, KL(p(x) || p(x + r)) as the divergence.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class VAE(nn.Module):
    def __init__(self, input_shape, latent_dim: int = 8, hidden: int = 256):
        super().__init__()
        self.input_shape = tuple(input_shape)
        d = math.prod(self.input_shape)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, d), nn.Sigmoid())
        self.latent_dim = latent_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(z.shape[0], *self.input_shape)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Negative ELBO per sample (reconstruction BCE summed over pixels + KL to N(0, I))."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        rec = F.binary_cross_entropy(self.decode(z), x, reduction="sum")
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum()
        return (rec + kl) / x.shape[0]


def train_vae(vae: VAE, images: torch.Tensor, steps: int, batch_size: int = 128, lr: float = 1e-3) -> VAE:
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    vae.train()
    for _ in range(steps):
        idx = torch.randint(0, len(images), (min(batch_size, len(images)),), device=images.device)
        loss = vae.loss(images[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return vae.eval().requires_grad_(False)


def tangent_basis(decode, z: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis (b x D x d) of the span of dG/dz at each row of z (D pixels, d latents)."""
    from torch.func import jacfwd, vmap

    jac = vmap(jacfwd(lambda v: decode(v.unsqueeze(0)).flatten()))(z)  # b x D x d
    q, _ = torch.linalg.qr(jac)
    return q


def _kl_from(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(p) || softmax(q)), batch mean."""
    log_p = F.log_softmax(p_logits, dim=1)
    return (log_p.exp() * (log_p - F.log_softmax(q_logits, dim=1))).sum(dim=1).mean()


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))


def tangent_normal_adversarial_loss(model: nn.Module, x: torch.Tensor, basis: torch.Tensor, eps_tangent: float,
                                    eps_normal: float, xi: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(TAR, NAR) on on-manifold points ``x`` (b x C x H x W) with tangent ``basis`` (b x D x d).

    TAR: r = Q eta (eta in latent coordinates), the direction found by one power iteration of
    max_r KL(p(x) || p(x + r)) within the tangent space, scaled to ``eps_tangent``.
    NAR: the same within the normal space (r - Q Q^T r), scaled to ``eps_normal``.
    """
    b, shape = x.shape[0], x.shape
    with torch.no_grad():
        clean = model(x)

    def tangent(v):  # Q Q^T v, v: b x D
        return (basis @ (basis.transpose(1, 2) @ v.unsqueeze(2))).squeeze(2)

    def adversarial_direction(project):
        r = _unit(project(torch.randn(b, basis.shape[1], device=x.device))).requires_grad_()
        dist = _kl_from(clean, model(x + xi * r.view(shape)))
        grad, = torch.autograd.grad(dist, r)
        return _unit(project(grad.detach()))

    r_tan = adversarial_direction(tangent)
    r_nor = adversarial_direction(lambda v: v - tangent(v))
    tar = _kl_from(clean, model(x + eps_tangent * r_tan.view(shape)))
    nar = _kl_from(clean, model(x + eps_normal * r_nor.view(shape)))
    return tar, nar
