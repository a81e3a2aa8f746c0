"""The data-free distillation loop shared by the presets (DAFL, ZSKT, DFAD, DeepInversion, CMI).

One round = synthesis (``g_steps`` generator updates, or one batch optimised from
scratch into the pool) + ``kd_steps`` student updates on synthetic batches.

Optional DP annotation step (``dp_annotation: gaussian``): the teacher is then touched
*only* through DPSD's Gaussian annotation mechanism
(:func:`benchmark.privacy.mechanisms.gaussian_annotation`: each sample's centred teacher
logits normalised to L2 norm C, plus N(0, sigma^2 C^2) per coordinate, recorded as one
``gaussian`` event per release). The student learns from softmax(annotation / tau);
the generator's teacher-side terms are evaluated on the student instead (it acts as the
fixed discriminator), and its adversarial term pits the student against the released
annotations, so the samples are post-processing of released values. Releases:
generator presets annotate every student batch (``iterations * kd_steps`` releases);
pool presets annotate each synthesized batch once (``iterations`` releases). sigma is
calibrated with the ledger for that count at the cell's (epsilon, delta).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..privacy import ledger as L
from ..privacy import mechanisms as M
from . import losses as Lo
from .synthesizer import Synthesizer

#: hyperparameters every preset shares (the presets override some of them)
COMMON_HPARAMS = {
    "iterations": 150, "g_steps": 1, "kd_steps": 5, "batch_size": 64,
    "lr_s": 1e-3, "lr_g": 1e-3, "latent_dim": 64, "gen_channels": 32,
    "temperature": 1.0, "jitter_shift": 1, "flip": False,
    "dp_annotation": "none", "dp_clip": 5.0, "dp_temperature": 1.0,
}


def release_annotations(ctx, x: torch.Tensor, sigma: float, clip: float, tau: float) -> torch.Tensor:
    """One DP release of the teacher's view of batch ``x``: recorded, then drawn; returns soft labels."""
    ctx.ledger.record(M.gaussian_annotation_event(sigma))
    with torch.no_grad():
        t_logits = ctx.teacher(x)
        support = torch.arange(ctx.num_classes, device=x.device).expand(x.shape[0], -1)
        noisy = M.gaussian_annotation(t_logits, support, clip_norm=clip, noise_multiplier=sigma)
    return F.softmax(noisy / tau, dim=1)


def save_sample_grid(ctx, images: torch.Tensor, name: str = "samples.png", nrow: int = 8) -> str:
    """PNG grid of synthetic samples in ``ctx.artifacts_dir`` (the runner lists every file there under
    the result's ``artifacts``); returns its name."""
    from torchvision.utils import save_image
    ctx.artifacts_dir.mkdir(parents=True, exist_ok=True)
    save_image(images[: nrow * nrow].detach().cpu().clamp(0, 1), ctx.artifacts_dir / name, nrow=nrow)
    return name


def data_free_distill(ctx, *, weights: dict, adv_kind: str, mode: str, student_loss: str = "kl",
                      at_weight: float = 0.0):
    """Train ``ctx.build_student()`` from ``ctx.teacher`` with the synthesizer; returns the student."""
    from ..models import Generator

    hp = ctx.hparams
    dp = hp["dp_annotation"]
    if dp not in ("none", "gaussian"):
        raise ValueError(f"dp_annotation must be 'none' or 'gaussian', not {dp!r}")
    if dp == "gaussian" and not math.isfinite(ctx.epsilon):
        raise ValueError("dp_annotation=gaussian needs a finite epsilon for the cell")
    teacher, device = ctx.teacher, ctx.device
    teacher.eval().requires_grad_(False)
    student = ctx.build_student()
    if dp != "none" and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in student.modules()):
        # the student judges the samples under DP; without BatchNorm it has no statistics to match
        dropped = sorted(t for t in ("bn", "cr") if weights.get(t, 0.0) != 0.0)
        if dropped:
            weights = {k: (0.0 if k in dropped else v) for k, v in weights.items()}
            ctx.metrics["dp_dropped_terms"] = ",".join(dropped)
            ctx.log.warning("dp_annotation: the student has no BatchNorm; terms %s are off", dropped)
    generator = None
    if mode != "inversion":
        generator = Generator(ctx.input_shape, latent_dim=hp["latent_dim"], base_channels=hp["gen_channels"]).to(device)
    synth = Synthesizer(
        teacher=teacher, student=student, input_shape=ctx.input_shape, num_classes=ctx.num_classes,
        weights=weights, adv_kind=adv_kind, mode=mode, generator=generator, lr_g=hp["lr_g"],
        batch_size=hp["batch_size"], g_steps=hp["g_steps"], judge=student if dp != "none" else teacher,
        jitter_shift=hp["jitter_shift"], flip=hp["flip"], device=device,
        **{k: hp[k] for k in ("cr_temperature", "n_neg", "bank_size") if k in hp})
    opt_s = torch.optim.Adam(student.parameters(), lr=hp["lr_s"])
    T = hp["temperature"]
    at_hooks = (Lo.FeatureMapsHook(teacher), Lo.FeatureMapsHook(student)) if at_weight > 0 and dp == "none" else None

    releases = hp["iterations"] * (hp["kd_steps"] if mode == "generator" else 1)
    sigma = None
    if dp == "gaussian":
        sigma = L.calibrate_gaussian(ctx.epsilon, ctx.delta, steps=releases, prior_events=ctx.ledger.events)
        ctx.metrics["noise_multiplier"] = sigma
        ctx.log.info("dp_annotation: %d Gaussian releases, sigma=%.3f, C=%g", releases, sigma, hp["dp_clip"])
    queries = 0

    def student_step(x, targets=None):
        nonlocal queries
        student.train()
        if at_hooks:
            at_hooks[0].clear(), at_hooks[1].clear()
        s_out = student(x)
        if targets is not None:  # released DP soft labels
            loss = Lo.soft_target_loss(s_out, targets)
        else:
            with torch.no_grad():
                t_out = teacher(x)
            queries += x.shape[0]
            loss = Lo.kd_loss(s_out, t_out, student_loss, T)
            if at_hooks:
                loss = loss + at_weight * Lo.attention_transfer_loss(at_hooks[1].maps, at_hooks[0].maps)
        opt_s.zero_grad()
        loss.backward()
        opt_s.step()
        return float(loss.detach())

    pool_x, pool_y = [], []
    last = {}
    for _ in ctx.progress(range(hp["iterations"]), desc=f"data-free ({mode})"):
        if mode == "generator":
            if dp == "none":
                last = synth.generator_step()
            for _k in range(hp["kd_steps"]):
                x, z = synth.sample(hp["batch_size"])
                if dp == "none":
                    student_step(x)
                else:
                    y = release_annotations(ctx, x, sigma, hp["dp_clip"], hp["dp_temperature"])
                    queries += x.shape[0]
                    student_step(x, y)
            if dp != "none":  # generator after the releases: adversarial against the released labels
                last = synth.generator_step(adv_z=z, adv_reference=y)
        else:
            x, _targets, last = synth.synthesize()
            pool_x.append(x)
            if dp != "none":
                pool_y.append(release_annotations(ctx, x, sigma, hp["dp_clip"], hp["dp_temperature"]))
                queries += x.shape[0]
            xs = torch.cat(pool_x)
            ys = torch.cat(pool_y) if pool_y else None
            for _k in range(hp["kd_steps"]):
                idx = torch.randint(0, len(xs), (min(hp["batch_size"], len(xs)),), device=xs.device)
                student_step(xs[idx], ys[idx] if ys is not None else None)
    if at_hooks:
        at_hooks[0].remove(), at_hooks[1].remove()
    synth.remove_hooks()

    grid = synth.sample(64)[0] if mode == "generator" else torch.cat(pool_x)[-64:]
    save_sample_grid(ctx, grid)
    ctx.metrics["teacher_queries"] = queries
    ctx.metrics.update({f"synthesis_{k}": round(v, 6) for k, v in last.items()})
    student.eval()
    return student
