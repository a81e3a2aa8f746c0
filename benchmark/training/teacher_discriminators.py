"""Teacher-discriminator ensembles and the private aggregation of their image gradients.

Shared by G-PATE (Long et al., NeurIPS 2021) and DataLens (Wang et al., CCS 2021):

* ``TeacherDiscriminators``: one conditional discriminator per disjoint shard of the private
  data, trained non-privately (teachers are never released). The N teachers run as one batched
  computation (``torch.func.stack_module_state`` + ``vmap``); Adam on the stacked parameters is
  exactly N independent Adams (it is elementwise). ``image_gradients`` returns, per teacher and
  per generated sample, the direction ``-d loss_G / d x`` that would lower that teacher's
  generator loss: the only teacher output either method lets out, and only through an aggregator.
* G-PATE's aggregator: Gaussian random projection of each sample's gradient, clipping to
  [-c, c], discretisation into equal bins, per-dimension teacher votes, Confident-GNMax
  (Papernot et al., ICLR 2018); ``ConfidentGNMaxCost`` gives its RDP (data-dependent, cached).
* DataLens' compression and aggregator: top-k stochastic sign of each teacher's gradient,
  Gaussian noise on the vote sum, threshold beta * N.

Privacy accounting is never done here; callers record each release on the ledger.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from benchmark.privacy import pate


# ---------------------------------------------------------------- the ensemble
class TeacherDiscriminators:
    """N teacher discriminators, teacher t trained on ``x[shards[t]]`` against generated samples."""

    def __init__(self, make_disc, x: torch.Tensor, y: torch.Tensor, shards: list[torch.Tensor], lr: float,
                 betas=(0.5, 0.999)):
        discs = [make_disc() for _ in shards]
        self.params, self.buffers = stack_module_state(discs)
        self.base = copy.deepcopy(discs[0]).to("meta")
        self.opt = torch.optim.Adam(self.params.values(), lr=lr, betas=betas)
        self.x, self.y = x, y
        self.sizes = torch.tensor([len(s) for s in shards], device=x.device)
        width = max(1, int(self.sizes.max()))
        self.index = torch.stack([torch.cat([s, s.new_zeros(width - len(s))]) for s in shards]).to(x.device)

    def __len__(self):
        return len(self.index)

    def logits(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[N, b] logits; teacher t sees ``x[t]`` [b, C, H, W] with labels ``y[t]`` [b]."""
        call = lambda p, b, xx, yy: functional_call(self.base, (p, b), (xx, yy))  # noqa: E731
        return vmap(call)(self.params, self.buffers, x, y)

    def train_step(self, sample_fake, batch_size: int) -> float:
        """One real-vs-fake BCE step of every teacher on ``batch_size`` records of its shard (drawn
        with replacement) and as many generated samples with the same labels; an empty shard's
        teacher sees fakes only. ``sample_fake(labels) -> images``."""
        n = len(self)
        pos = (torch.rand(n, batch_size, device=self.x.device) * self.sizes.clamp(min=1)[:, None]).long()
        idx = self.index.gather(1, pos)
        xr, yr = self.x[idx], self.y[idx]
        with torch.no_grad():
            fake = sample_fake(yr.flatten()).view_as(xr)
        real_loss = F.binary_cross_entropy_with_logits(self.logits(xr, yr), torch.ones(n, batch_size,
                                                       device=xr.device), reduction="none").mean(1)
        fake_loss = F.binary_cross_entropy_with_logits(self.logits(fake, yr), torch.zeros(n, batch_size,
                                                       device=xr.device), reduction="none").mean(1)
        loss = ((self.sizes > 0).float() * real_loss + fake_loss).sum()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach()) / n

    def image_gradients(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """[N, b, D]: for teacher t and sample j, ``-d BCE(D_t(x_j, y_j), real) / d x_j`` (the
        change of x_j that lowers teacher t's non-saturating generator loss), flattened."""
        n, b = len(self), images.shape[0]
        x = images.detach().unsqueeze(0).expand(n, *images.shape).clone().requires_grad_(True)
        out = self.logits(x, labels.unsqueeze(0).expand(n, b))
        loss = F.binary_cross_entropy_with_logits(out, torch.ones_like(out), reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
        return -g.reshape(n, b, -1)


# ---------------------------------------------------------------- G-PATE: projection, bins, Confident-GNMax
def gaussian_random_projection(num: int, dim: int, proj_dim: int, device=None, generator=None) -> torch.Tensor:
    """[num, dim, proj_dim] matrices with i.i.d. N(0, 1/proj_dim) entries (data-independent)."""
    return torch.randn(num, dim, proj_dim, device=device, generator=generator) / math.sqrt(proj_dim)


def bin_edges(clip: float, nbins: int) -> torch.Tensor:
    return torch.linspace(-clip, clip, nbins + 1)


def bin_centres(clip: float, nbins: int) -> torch.Tensor:
    e = bin_edges(clip, nbins)
    return (e[:-1] + e[1:]) / 2


def discretise(values: torch.Tensor, clip: float, nbins: int) -> torch.Tensor:
    """Bin index of each value after clipping to [-c, c]; nbins equal bins, the last one closed."""
    v = values.clamp(-clip, clip)
    return ((v + clip) / (2 * clip) * nbins).floor().long().clamp(0, nbins - 1)


def bin_votes(bins: torch.Tensor, nbins: int) -> torch.Tensor:
    """[Q, nbins] histograms from ``bins`` [N teachers, Q queries]: each teacher votes once per query."""
    return F.one_hot(bins, nbins).sum(0)


def confident_gnmax(votes: torch.Tensor, threshold: float, sigma1: float, sigma2: float,
                    generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Confident-GNMax on each row of ``votes`` [Q, K]: answered iff max + N(0, sigma1^2) >= T;
    the answer is argmax(votes + N(0, sigma2^2)). Returns (answered bool [Q], answer long [Q])."""
    v = votes.float()
    noise1 = torch.randn(len(v), device=v.device, generator=generator)
    answered = v.max(1).values + sigma1 * noise1 >= threshold
    noise2 = torch.randn(v.shape, device=v.device, generator=generator)
    return answered, (v + sigma2 * noise2).argmax(1)


class ConfidentGNMaxCost:
    """RDP (on ``orders``) of a batch of Confident-GNMax queries, memoised: the threshold step's cost
    depends only on the top vote, GNMax's only on the sorted histogram (``benchmark.privacy.pate``).

    ``data_dependent=False`` gives the data-independent bounds instead: lambda / (2 sigma1^2) per
    query (a Gaussian on the sensitivity-1 top count) plus lambda / sigma2^2 per answered query
    (a Gaussian on the histogram, L2 sensitivity sqrt 2); see ``events`` for these as ledger events.
    """

    def __init__(self, threshold: float, sigma1: float, sigma2: float, orders, data_dependent: bool = True):
        self.t, self.s1, self.s2, self.orders = threshold, sigma1, sigma2, np.asarray(orders, float)
        self.data_dependent = data_dependent
        self._thr: dict = {}
        self._gnmax: dict = {}

    def _threshold_rdp(self, top: int) -> np.ndarray:
        if top not in self._thr:
            self._thr[top] = (pate.rdp_threshold(top, self.t, self.s1, self.orders) if self.data_dependent
                              else self.orders / (2 * self.s1**2))
        return self._thr[top]

    def _gnmax_rdp(self, row: tuple) -> np.ndarray:
        if row not in self._gnmax:
            self._gnmax[row] = (pate.rdp_gnmax(np.asarray(row, float), self.s2, self.orders) if self.data_dependent
                                else self.orders / self.s2**2)
        return self._gnmax[row]

    def rdp(self, votes: torch.Tensor, answered: torch.Tensor) -> np.ndarray:
        votes, answered = votes.cpu().numpy(), answered.cpu().numpy()
        total = np.zeros(len(self.orders))
        for top, count in zip(*np.unique(votes.max(1), return_counts=True)):
            total += count * self._threshold_rdp(int(top))
        for row in votes[answered]:
            total += self._gnmax_rdp(tuple(sorted(row.tolist(), reverse=True)))
        return total


# ---------------------------------------------------------------- DataLens: top-k stochastic sign, noisy threshold
def topk_stochastic_sign(grads: torch.Tensor, k: int, clip: float | None = None, generator=None) -> torch.Tensor:
    """DataLens' compression of each row of ``grads`` [N, D] into a vector in {-1, 0, +1}^D with
    exactly k non-zeros: the k coordinates of largest |g| keep a stochastic sign, +1 with
    probability 1/2 + g_i / (2 b) (unbiased for g_i / b), where b = max_i |g_i| of the row, at most
    ``clip`` (coordinates beyond +-b are clipped to +-b first); the other coordinates are 0."""
    k = min(int(k), grads.shape[1])
    b = grads.abs().amax(1, keepdim=True)
    if clip is not None:
        b = b.clamp(max=clip)
    b = b.clamp(min=1e-30)
    g = torch.maximum(torch.minimum(grads, b), -b)
    plus = torch.rand(grads.shape, device=grads.device, generator=generator) < 0.5 + g / (2 * b)
    signs = plus.float() * 2 - 1
    mask = torch.zeros_like(grads).scatter_(1, grads.abs().topk(k, dim=1).indices, 1.0)
    return signs * mask


def noisy_thresholded_sum(votes: torch.Tensor, sigma: float, beta: float, generator=None) -> torch.Tensor:
    """DataLens' aggregation of ``votes`` [N, D] (one compressed vector per teacher):
    s = sum_t v_t + N(0, sigma^2 I); output +1 where s > beta N, -1 where s < -beta N, else 0.
    One Gaussian mechanism: a teacher's k-sparse sign vector moves the sum by at most 2 sqrt(k) in
    L2, so the noise multiplier is sigma / (2 sqrt(k)); the threshold is post-processing."""
    n = votes.shape[0]
    s = votes.sum(0) + sigma * torch.randn(votes.shape[1:], device=votes.device, generator=generator)
    return (s > beta * n).float() - (s < -beta * n).float()


def datalens_noise_multiplier(sigma: float, k: int) -> float:
    """Sensitivity-normalised noise multiplier of ``noisy_thresholded_sum`` with k-sparse sign votes."""
    return sigma / (2 * math.sqrt(k))
