"""DPDM: differentially private diffusion models.

Dockhorn, Cao, Vahdat & Kreis, "Differentially Private Diffusion Models", TMLR 2023.

Mechanism: a class-conditional denoiser D(x; sigma, y) with EDM preconditioning (Karras
et al. 2022) is trained with DP-SGD. Noise multiplicity: each private example's loss is
the average of the denoising loss over K independent noise draws (sigma ~ logN(P_mean,
P_std), n ~ N(0, sigma^2 I)), so its clipped per-example gradient (norm <= C) has lower
variance at no privacy cost. Per-example gradients (Opacus) are clipped to C, summed,
N(0, sigma_dp^2 C^2 I) is added; Poisson sampling q = B/N; one subsampled Gaussian
release per step (RDP accountant). Synthetic data are sampled class-conditionally with
the deterministic 2nd-order (Heun) EDM sampler from an EMA of the weights.
"""
import copy

import torch

from benchmark import Method
from benchmark.models.generative import ConditionalDenoiser
from benchmark.privacy import ledger as L
from benchmark.privacy.sanitize import gaussian_noise_like
from benchmark.training.gan import PerSampleGrads, generate_synthetic, poisson_indices, private_tensors

SIGMA_DATA = 0.5


def precond(F, x, sigma, y):
    """EDM preconditioned denoiser D(x; sigma) = c_skip x + c_out F(c_in x, c_noise, y)."""
    s = sigma.view(-1, 1, 1, 1)
    c_skip = SIGMA_DATA ** 2 / (s ** 2 + SIGMA_DATA ** 2)
    c_out = s * SIGMA_DATA / (s ** 2 + SIGMA_DATA ** 2).sqrt()
    c_in = 1 / (s ** 2 + SIGMA_DATA ** 2).sqrt()
    return c_skip * x + c_out * F(c_in * x, sigma.log() / 4, y)


@torch.no_grad()
def heun_sample(F, labels, shape, steps, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """EDM deterministic sampler (Karras et al. 2022, Algorithm 1); returns images in [0, 1]."""
    dev = labels.device
    i = torch.arange(steps, device=dev, dtype=torch.float32)
    t = (sigma_max ** (1 / rho) + i / (steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    t = torch.cat([t, torch.zeros(1, device=dev)])
    x = torch.randn(len(labels), *shape, device=dev) * t[0]
    for j in range(steps):
        s = t[j].expand(len(labels))
        d = (x - precond(F, x, s, labels)) / t[j]
        x_next = x + (t[j + 1] - t[j]) * d
        if t[j + 1] > 0:
            d2 = (x_next - precond(F, x_next, t[j + 1].expand(len(labels)), labels)) / t[j + 1]
            x_next = x + (t[j + 1] - t[j]) * (d + d2) / 2
        x = x_next
    return ((x + 1) / 2).clamp(0, 1)


class DPDM(Method):
    """DPDM (Dockhorn et al., TMLR 2023): EDM diffusion model trained with DP-SGD and noise multiplicity."""
    name = "dpdm"
    family = "dp-generative"
    needs = {"private_data"}
    privacy_unit = "record"
    adjacency = "add/remove one record"
    citation = "Dockhorn, Cao, Vahdat & Kreis, TMLR 2023"
    hparams = {
        "iterations": 200,        # DP-SGD steps
        "batch_size": 128,        # expected Poisson batch B
        "noise_multiplicity": 4,  # K noise draws per example
        "clip": 1.0,
        "lr": 2e-3,
        "ema": 0.99,
        "p_mean": -1.2,
        "p_std": 1.2,
        "width": 16,
        "sampling_steps": 12,
        "num_synthetic": 2000,
    }
    tiny = {"iterations": 2, "batch_size": 8, "noise_multiplicity": 2, "width": 8, "sampling_steps": 3, "num_synthetic": 200}

    def fit(self, ctx):
        hp, dev, K = ctx.hparams, ctx.device, ctx.num_classes
        x_all, y_all = private_tensors(ctx.private_data, dev)
        x_all = x_all * 2 - 1                                  # DPDM works on [-1, 1]
        n, B, T, M = len(x_all), hp["batch_size"], hp["iterations"], hp["noise_multiplicity"]
        q = min(1.0, B / n)
        sigma_dp = L.calibrate_gaussian(ctx.epsilon, ctx.delta, steps=T, sample_rate=q) if ctx.private else 0.0
        ctx.metrics["noise_multiplier"] = sigma_dp

        net = ConditionalDenoiser(ctx.input_shape, K, hp["width"]).to(dev)
        ema = copy.deepcopy(net).eval()
        psg = PerSampleGrads(net)
        opt = torch.optim.Adam(psg.params, lr=hp["lr"])

        for _ in ctx.progress(range(T), desc="dpdm"):
            idx = poisson_indices(n, q, dev)
            x, y = x_all[idx].repeat_interleave(M, 0), y_all[idx].repeat_interleave(M, 0)
            sig = (torch.randn(len(x), device=dev) * hp["p_std"] + hp["p_mean"]).exp()
            noisy = x + torch.randn_like(x) * sig.view(-1, 1, 1, 1)
            weight = (sig ** 2 + SIGMA_DATA ** 2) / (sig * SIGMA_DATA) ** 2

            def per_replica_loss(f_out, rows, x=x, noisy=noisy, sig=sig, weight=weight):
                s = sig[rows].view(-1, 1, 1, 1)
                c_skip = SIGMA_DATA ** 2 / (s ** 2 + SIGMA_DATA ** 2)
                c_out = s * SIGMA_DATA / (s ** 2 + SIGMA_DATA ** 2).sqrt()
                denoised = c_skip * noisy[rows] + c_out * f_out
                return weight[rows] * (denoised - x[rows]).pow(2).flatten(1).mean(1)

            c_in = 1 / (sig ** 2 + SIGMA_DATA ** 2).sqrt()
            if ctx.private:
                ctx.ledger.record(L.subsampled_gaussian(sigma_dp, q, steps=1))
            # noise multiplicity: each example's K replicas are averaged before clipping; examples are
            # processed a few at a time (the same clipped sum, a fraction of the memory)
            clipped = psg.clipped_sum(per_replica_loss, c_in.view(-1, 1, 1, 1) * noisy, sig.log() / 4, y,
                                      clip=hp["clip"], group=M)
            total = [c + gaussian_noise_like(c, hp["clip"] * sigma_dp) for c in clipped]
            opt.zero_grad(set_to_none=True)
            for p, gi in zip(psg.params, total):
                p.grad = gi / (q * n)
            opt.step()
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), net.parameters()):
                    pe.lerp_(p, 1 - hp["ema"])
        return generate_synthetic(lambda lab: heun_sample(ema, lab, ctx.input_shape, hp["sampling_steps"]),
                                  hp["num_synthetic"], K, dev)
