"""The data-free synthesizer: one component, its loss terms switched by weights.

Three ways to parametrise the synthetic batch (``mode``):

- ``generator``: a persistent generator G(z), updated a few steps per round
  (DAFL, ZSKT, DFAD); samples for the student come fresh from G.
- ``inversion``: the pixels themselves are optimised from noise for ``g_steps``
  steps per batch, with random jitter (DeepInversion); the best batch joins a pool.
- ``reset_generator``: a generator re-initialised for every batch and optimised
  jointly with its latent codes for ``g_steps`` steps (CMI); the best batch joins a pool.

The loss is ``sum_term weight[term] * term`` over :data:`benchmark.synthesis.losses.TERMS`;
a term with weight 0 is never computed. The "teacher side" of the terms (BatchNorm
statistics, one-hot, activation, balance, contrastive features) is read from
``judge``: the teacher for the non-private presets; the student when a DP
annotation step is on (then the raw teacher must not shape the samples).
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import losses as Lo


def reset_parameters(model: nn.Module) -> None:
    """DCGAN initialisation (N(0, 0.02) weights, BatchNorm gamma ~ N(1, 0.02)), as CMI resets G."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def jitter(x: torch.Tensor, max_shift: int, flip: bool) -> torch.Tensor:
    """DeepInversion's augmentation: a random circular shift (and optional horizontal flip)."""
    if max_shift > 0:
        dx, dy = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,)))
        x = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
    if flip and bool(torch.rand(()) < 0.5):
        x = torch.flip(x, dims=(3,))
    return x


def random_crop_view(x: torch.Tensor, min_scale: float, max_shift: float, flip: bool) -> torch.Tensor:
    """A differentiable random resized crop per sample (CMI's global/local views), via grid_sample."""
    b = x.shape[0]
    scale = torch.empty(b, device=x.device).uniform_(min_scale, 1.0).sqrt()  # side of an area fraction
    room = (1 - scale) + max_shift
    tx = (torch.rand(b, device=x.device) * 2 - 1) * room
    ty = (torch.rand(b, device=x.device) * 2 - 1) * room
    sign = torch.where(torch.rand(b, device=x.device) < 0.5, -1.0, 1.0) if flip else torch.ones(b, device=x.device)
    sx = scale * sign
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = sx, scale, tx, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


class Synthesizer:
    def __init__(self, *, teacher: nn.Module, student: nn.Module, input_shape, num_classes: int,
                 weights: dict, adv_kind: str = "l1", mode: str = "generator", generator: nn.Module | None = None,
                 lr_g: float = 1e-3, batch_size: int = 128, g_steps: int = 1, judge: nn.Module | None = None,
                 jitter_shift: int = 1, flip: bool = False, cr_temperature: float = 0.1, n_neg: int = 512,
                 bank_size: int = 2048, head_dim: int = 64, device=None):
        unknown = set(weights) - set(Lo.TERMS)
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)}; known: {Lo.TERMS}")
        if mode not in ("generator", "inversion", "reset_generator"):
            raise ValueError(f"unknown synthesis mode {mode!r}")
        if mode != "inversion" and generator is None:
            raise ValueError(f"mode {mode!r} needs a generator")
        self.teacher, self.student = teacher, student
        self.judge = judge if judge is not None else teacher
        self.weights = {k: float(v) for k, v in weights.items() if float(v) != 0.0}
        self.adv_kind, self.mode = adv_kind, mode
        self.input_shape, self.num_classes = tuple(input_shape), num_classes
        self.batch_size, self.g_steps, self.lr_g = batch_size, g_steps, lr_g
        self.jitter_shift, self.flip = jitter_shift, flip
        self.device = device or next(teacher.parameters()).device
        self.generator = generator
        if mode == "generator":
            self.opt_g = torch.optim.Adam(generator.parameters(), lr=lr_g, betas=(0.5, 0.999))
        self.bn = Lo.bn_hooks(self.judge) if ("bn" in self.weights or "cr" in self.weights) else []
        if "bn" in self.weights and not self.bn:
            raise ValueError("the 'bn' term needs BatchNorm layers in the model that judges the samples")
        self.penultimate = Lo.PenultimateHook(self.judge) if "act" in self.weights else None
        if "cr" in self.weights:
            with torch.no_grad():
                self.judge(torch.zeros(2, *self.input_shape, device=self.device))
            dim = sum(h.instance_mean.shape[1] for h in self.bn)
            self.head = Lo.ProjectionHead(dim, head_dim).to(self.device)
            self.opt_head = torch.optim.Adam(self.head.parameters(), lr=lr_g)
            self.bank = Lo.MemoryBank(bank_size, 2 * dim)
            self.cr_temperature, self.n_neg = cr_temperature, n_neg

    # ------------------------------------------------------------ the loss
    def loss_terms(self, x: torch.Tensor, targets: torch.Tensor | None = None,
                   adv_reference: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The active (non-zero-weight) terms on batch ``x``. ``adv_reference``: released target
        probabilities replacing the teacher in the adversarial term (DP annotation mode)."""
        w, terms = self.weights, {}
        view = jitter(x, self.jitter_shift, self.flip) if self.mode != "generator" else x
        if "cr" in w:
            view = random_crop_view(x, 1.0, 0.125, self.flip)  # CMI's global view
        j_out = self.judge(view)
        if "bn" in w:
            terms["bn"] = Lo.bn_statistics_loss(self.bn)
        if "cr" in w:
            global_feat = torch.cat([h.instance_mean for h in self.bn], dim=1)
        if "oh" in w:
            terms["oh"] = Lo.one_hot_loss(j_out, targets)
        if "act" in w:
            terms["act"] = Lo.activation_loss(self.penultimate.features)
        if "balance" in w:
            terms["balance"] = Lo.balance_loss(j_out)
        if "adv" in w:
            s_out = self.student(view)
            if adv_reference is not None:
                terms["adv"] = -Lo.soft_target_loss(s_out, adv_reference)
            else:
                terms["adv"] = Lo.adversarial_loss(self.adv_kind, j_out, s_out)
        if "cr" in w:
            self.judge(random_crop_view(x, 0.25, 0.0, self.flip))  # CMI's local view
            local_feat = torch.cat([h.instance_mean for h in self.bn], dim=1)
            terms["cr"] = Lo.contrastive_loss(self.head, local_feat, global_feat, self.bank,
                                              self.n_neg, self.cr_temperature)
            self._last_feat = torch.cat([local_feat, global_feat], dim=1).detach()
        if "tv" in w:
            terms["tv"] = Lo.total_variation_loss(x)
        if "l2" in w:
            terms["l2"] = Lo.l2_prior_loss(x)
        return terms

    def total(self, terms: dict) -> torch.Tensor:
        return sum(self.weights[k] * v for k, v in terms.items())

    # ------------------------------------------------------------ synthesis
    def _frozen(self):
        for m in (self.teacher, self.student, self.judge):
            m.requires_grad_(False)

    def _unfreeze_student(self):
        self.student.requires_grad_(True)

    def generator_step(self, adv_z: torch.Tensor | None = None, adv_reference: torch.Tensor | None = None):
        """``g_steps`` updates of the persistent generator; returns the last loss terms (floats)."""
        self._frozen()
        was_training = self.student.training
        self.student.eval()
        for _ in range(self.g_steps):
            z = adv_z if adv_z is not None else self.generator.sample_latent(self.batch_size, self.device)
            x = self.generator(z)
            terms = self.loss_terms(x, adv_reference=adv_reference)
            self.opt_g.zero_grad()
            self.total(terms).backward()
            self.opt_g.step()
        self.student.train(was_training)
        self._unfreeze_student()
        return {k: float(v.detach()) for k, v in terms.items()}

    @torch.no_grad()
    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.generator.sample_latent(n, self.device)
        return self.generator(z), z

    def synthesize(self) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Optimise one batch from scratch (inversion / reset_generator); returns the best batch
        (lowest total loss), its target classes and its final loss terms."""
        self._frozen()
        was_training = self.student.training
        self.student.eval()
        b = self.batch_size
        targets = torch.randint(0, self.num_classes, (b,), device=self.device).sort().values
        if self.mode == "inversion":
            pixels = (0.5 + 0.2 * torch.randn(b, *self.input_shape, device=self.device)).clamp(0, 1)
            params = [pixels.requires_grad_()]
            make = lambda: pixels  # noqa: E731
            opt = torch.optim.Adam(params, lr=self.lr_g, betas=(0.5, 0.99))
        else:
            reset_parameters(self.generator)
            self.generator.train()
            z = self.generator.sample_latent(b, self.device).requires_grad_()
            make = lambda: self.generator(z)  # noqa: E731
            opt = torch.optim.Adam([{"params": self.generator.parameters()}, {"params": [z]}],
                                   lr=self.lr_g, betas=(0.5, 0.999))
        best, best_cost, best_feat = None, math.inf, None
        for _ in range(self.g_steps):
            x = make()
            terms = self.loss_terms(x, targets)
            loss = self.total(terms)
            if loss.item() < best_cost or best is None:
                best_cost, best = loss.item(), x.detach().clone()
                best_feat = getattr(self, "_last_feat", None)
            opt.zero_grad()
            if "cr" in self.weights:
                self.opt_head.zero_grad()
            loss.backward()
            opt.step()
            if "cr" in self.weights:
                self.opt_head.step()
            if self.mode == "inversion":
                with torch.no_grad():
                    pixels.clamp_(0, 1)
        if "cr" in self.weights and best_feat is not None:
            self.bank.add(best_feat)
        self.student.train(was_training)
        self._unfreeze_student()
        return best, targets, {k: float(v.detach()) for k, v in terms.items()}

    def remove_hooks(self):
        for h in self.bn:
            h.remove()
        if self.penultimate is not None:
            self.penultimate.remove()


def clone_frozen(model: nn.Module) -> nn.Module:
    m = copy.deepcopy(model)
    m.eval().requires_grad_(False)
    return m
