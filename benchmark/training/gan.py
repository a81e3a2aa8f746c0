"""Shared pieces of the DP generative baselines (GANs, teacher-discriminator ensembles).

* data helpers: the private set as tensors, Poisson batches, disjoint shards, balanced labels,
  synthetic-set generation;
* ``PerSampleGrads``: per-example parameter gradients with Opacus' ``GradSampleModule``;
* ``dp_discriminator_step``: one DP-SGD step of a discriminator (DP-GAN: the real/fake
  pair's gradient clipped jointly; DP-CGAN: real and fake gradients clipped separately);
* WGAN-GP gradient penalty and non-private critic steps (GS-WGAN's discriminators);
* teacher-discriminator ensembles on disjoint shards (PATE-GAN).

Privacy accounting is never done here: callers record each release on the ledger.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.method import SyntheticData
from benchmark.privacy.sanitize import clip_and_noise_sum, clip_per_sample


# ---------------------------------------------------------------- data helpers
def private_tensors(dataset, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images float N x C x H x W, labels long N) of an (image, label) dataset, on ``device``."""
    from benchmark.training import dataset_tensors
    x, y = dataset_tensors(dataset)[:2]
    x, y = x.float(), y.long()
    return (x.to(device), y.to(device)) if device is not None else (x, y)


def poisson_indices(n: int, sample_rate: float, device=None) -> torch.Tensor:
    """Poisson subsampling (each record independently with probability ``sample_rate``),
    as assumed by the subsampled-Gaussian accountant."""
    return torch.nonzero(torch.rand(n, device=device) < sample_rate).flatten()


def disjoint_shards(n: int, num_shards: int, seed: int) -> list[torch.Tensor]:
    """Disjoint shards of range(n): each record goes to an independent uniform shard
    (``benchmark.privacy.pate.shard_assignment``), so adding or removing one record changes
    exactly one shard, the coupling the subset-based analyses need. Shards may be empty."""
    from benchmark.privacy.pate import shard_assignment
    assign = torch.as_tensor(shard_assignment(n, num_shards, seed))
    return [torch.nonzero(assign == k).flatten() for k in range(num_shards)]


def random_labels(n: int, num_classes: int, device=None) -> torch.Tensor:
    return torch.randint(0, num_classes, (n,), device=device)


def balanced_labels(n: int, num_classes: int, device=None) -> torch.Tensor:
    return (torch.arange(n, device=device) % num_classes).long()


@torch.no_grad()
def generate_synthetic(sample_fn, n: int, num_classes: int, device, batch_size: int = 500) -> SyntheticData:
    """Balanced labelled synthetic set: ``sample_fn(labels) -> images`` in [0, 1]."""
    labels = balanced_labels(n, num_classes, device)
    images = torch.cat([sample_fn(labels[i:i + batch_size]) for i in range(0, n, batch_size)])
    return SyntheticData(images.clamp(0, 1).float().cpu(), labels.cpu())


# ---------------------------------------------------------------- per-sample gradients (Opacus)
class PerSampleGrads:
    """Per-example gradients of a module's parameters via Opacus' ``GradSampleModule``.

    ``grads(per_sample_loss, *inputs)`` returns one tensor [n, *p.shape] per trainable
    parameter, the gradient of each example's own loss. Hooks are active only inside
    ``grads``; elsewhere the wrapped module behaves as the plain one (e.g. when a generator
    is trained through it).
    """

    def __init__(self, module: nn.Module):
        from opacus import GradSampleModule
        self.module = module
        self.gsm = GradSampleModule(module, batch_first=True, loss_reduction="sum")
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.gsm.disable_hooks()

    def __call__(self, *inputs):
        return self.module(*inputs)

    def _clear(self):
        for p in self.params:
            p.grad_sample = None
            p.grad = None

    def grads(self, per_sample_loss, *inputs) -> list[torch.Tensor]:
        n = inputs[0].shape[0]
        if n == 0:
            return [p.new_zeros((0, *p.shape)) for p in self.params]
        self._clear()
        self.gsm.enable_hooks()
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                losses = per_sample_loss(self.gsm(*inputs))
                if losses.shape[:1] != (n,):
                    raise ValueError("per_sample_loss must return one loss per example")
                losses.sum().backward()
            out = [p.grad_sample.detach().clone() for p in self.params]
        finally:
            self.gsm.disable_hooks()
            self._clear()
        return out

    def clipped_sum(self, per_sample_loss, *inputs, clip: float, group: int = 1, chunk_rows: int = 64):
        """sum_i clip(g_i, C) over examples, no noise: ``g_i`` is the mean gradient of example i's
        ``group`` consecutive rows (DPDM's noise multiplicity; 1: one row per example).

        Rows are processed ``chunk_rows`` at a time (whole examples per chunk), so Opacus' per-sample
        activations and gradients exist for one chunk only: the same sum as clipping one big batch,
        at a fraction of its peak memory. ``per_sample_loss(output, rows)`` gets the chunk's output
        and its row slice (to index per-row constants such as noise levels)."""
        n_rows = inputs[0].shape[0]
        if n_rows % group:
            raise ValueError(f"{n_rows} rows are not whole groups of {group}")
        step = max(group, chunk_rows - chunk_rows % group)
        total = [p.new_zeros(p.shape) for p in self.params]
        for lo in range(0, n_rows, step):
            rows = slice(lo, min(lo + step, n_rows))
            grads = self.grads(lambda out, rows=rows: per_sample_loss(out, rows), *(t[rows] for t in inputs))
            grads = [g.view(-1, group, *g.shape[1:]).mean(1) for g in grads]
            for acc, part in zip(total, clip_per_sample(grads, clip)):
                acc += part.sum(0)
        return total


def dp_discriminator_step(D: PerSampleGrads, optimizer: torch.optim.Optimizer,
                          real: tuple, fake: tuple, real_loss, fake_loss, clip: float,
                          noise_multiplier: float, expected_batch: float, separate: bool) -> None:
    """One DP-SGD step of a discriminator on a Poisson batch of real records.

    ``real = (x, y)`` (private), ``fake = (x, y)`` (generated, detached), ``real_loss`` /
    ``fake_loss`` map discriminator outputs to per-example losses.

    * ``separate=False`` (DP-GAN, Xie et al. 2018): example i's gradient is the gradient of
      real_loss(x_i) + fake_loss(G(z_i)) (one fake per real record), clipped to C as a
      whole; noise N(0, sigma^2 C^2) is added to the sum.
    * ``separate=True`` (DP-CGAN, Torkzadehmahani et al. 2019): the real and the fake
      gradients are clipped to C separately and each sum gets its own N(0, sigma^2 C^2)
      noise (two DP-optimiser passes, as in the paper); only the real part is private.

    The noisy sum is divided by the expected batch size q*N. Either way the L2
    sensitivity of the private sum to adding/removing a record is C, so the step is one
    subsampled-Gaussian release with noise multiplier sigma (the caller records it).
    """
    gr = D.grads(real_loss, *real)
    gf = D.grads(fake_loss, *fake)
    if separate:
        total = [a + b for a, b in zip(clip_and_noise_sum(gr, clip, noise_multiplier),
                                       clip_and_noise_sum(gf, clip, noise_multiplier))]
    else:
        if gr[0].shape[0] != gf[0].shape[0]:
            raise ValueError("joint clipping pairs each real record with one fake sample")
        total = clip_and_noise_sum([a + b for a, b in zip(gr, gf)], clip, noise_multiplier)
    optimizer.zero_grad(set_to_none=True)
    for p, g in zip(D.params, total):
        p.grad = g / expected_batch
    optimizer.step()


# ---------------------------------------------------------------- GAN losses
def wgan_critic_loss(out: torch.Tensor, real: bool) -> torch.Tensor:
    """Per-example WGAN critic loss: the critic maximises D(real) - D(fake)."""
    return -out if real else out


def bce_loss(out: torch.Tensor, real: bool) -> torch.Tensor:
    """Per-example non-saturating GAN loss on logits."""
    target = torch.ones_like(out) if real else torch.zeros_like(out)
    return F.binary_cross_entropy_with_logits(out, target, reduction="none")


def gradient_penalty(D: nn.Module, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E[(||grad_x D(x_hat)|| - 1)^2] on interpolates."""
    a = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    x_hat = (a * real + (1 - a) * fake).requires_grad_(True)
    out = D(x_hat, labels)
    (g,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()


def wgan_gp_critic_step(D: nn.Module, optimizer, real_x, real_y, fake_x, gp_weight: float = 10.0) -> float:
    """One non-private WGAN-GP critic step; fakes share the real batch's labels."""
    optimizer.zero_grad(set_to_none=True)
    loss = D(fake_x, real_y).mean() - D(real_x, real_y).mean() + gp_weight * gradient_penalty(D, real_x, fake_x, real_y)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


# ---------------------------------------------------------------- teacher-discriminator ensembles
class DiscriminatorEnsemble:
    """Teacher discriminators, each trained (non-privately; they are never released) on
    its own disjoint shard of the private data against generated samples. Only
    aggregated, privatised functions of their votes leave the ensemble.
    """

    def __init__(self, make_disc, shards_x: list[torch.Tensor], shards_y: list[torch.Tensor], lr: float,
                 betas=(0.5, 0.999)):
        self.discs = [make_disc() for _ in shards_x]
        self.opts = [torch.optim.Adam(d.parameters(), lr=lr, betas=betas) for d in self.discs]
        self.shards_x, self.shards_y = shards_x, shards_y

    def __len__(self):
        return len(self.discs)

    def train_step(self, sample_fake, batch_size: int) -> float:
        """One BCE real-vs-fake step of every teacher on a batch of its shard;
        ``sample_fake(labels) -> images`` (detached)."""
        total = 0.0
        for d, opt, xs, ys in zip(self.discs, self.opts, self.shards_x, self.shards_y):
            if len(xs) == 0:
                continue
            idx = torch.randint(0, len(xs), (min(batch_size, len(xs)),), device=xs.device)
            x, y = xs[idx], ys[idx]
            with torch.no_grad():
                fake = sample_fake(y)
            loss = bce_loss(d(x, y), True).mean() + bce_loss(d(fake, y), False).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss)
        return total / len(self.discs)

    @torch.no_grad()
    def votes(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[n] number of teachers that call each sample real (logit > 0)."""
        return sum((d(x, y) > 0).long() for d in self.discs)
