"""GS-WGAN: gradient-sanitised Wasserstein GAN.

Chen, Orekondy & Fritz, "GS-WGAN: A Gradient-Sanitized Approach for Learning
Differentially Private Generators", NeurIPS 2020.

Mechanism: the private data are split into K disjoint subsets, each with its own WGAN-GP
critic D_k (trained non-privately on its subset; critics are never released and are
warm-started by pre-training). At every generator step one critic D_k is picked uniformly
at random; the generator's gradient flows through D_k only via g_j = d loss / d x_j, the
gradient w.r.t. each generated sample x_j, and that gradient is sanitised: clipped to
norm C and perturbed with N(0, (2 C sigma)^2 I) (sensitivity 2C: a changed record
changes D_k arbitrarily within the clip). Picking D_k is subsampling with q = 1/K.

Accounting: the paper composes B (batch size) subsampled Gaussian mechanisms per step
(q = 1/K, noise multiplier sigma). The B rows of one step share the same critic, so a
record is sampled for all B rows or for none; we therefore record one subsampled
Gaussian release per step whose noise multiplier is sigma / sqrt(B) (B Gaussian rows of
sensitivity 2C each = one Gaussian of sensitivity 2C sqrt(B)), a valid bound that
coincides with the paper's to first order in q.
"""
import math

import torch

from benchmark import Method
from benchmark.models.generative import ConditionalDiscriminator, ConditionalGenerator
from benchmark.privacy import ledger as L
from benchmark.privacy.sanitize import sanitized
from benchmark.training.gan import (
    disjoint_shards,
    generate_synthetic,
    private_tensors,
    random_labels,
    wgan_gp_critic_step,
)


class GSWGAN(Method):
    """GS-WGAN (Chen et al., NeurIPS 2020): K subset critics, sanitised gradients w.r.t. generated samples."""
    name = "gs-wgan"
    family = "dp-generative"
    needs = {"private_data"}
    privacy_unit = "record"
    adjacency = "add/remove one record"
    citation = "Chen, Orekondy & Fritz, NeurIPS 2020"
    hparams = {
        "num_discriminators": 50,   # K (paper: 1000 on MNIST); q = 1/K
        "pretrain_steps": 10,       # warm-start critic steps per discriminator
        "iterations": 300,          # generator steps
        "n_critic": 2,              # critic steps of the picked D_k per generator step
        "batch_size": 32,           # B
        "clip": 1.0,                # C
        "gp_weight": 10.0,
        "lr_d": 1e-3,
        "lr_g": 1e-3,
        "latent_dim": 16,
        "width": 32,
        "num_synthetic": 2000,
    }
    tiny = {"iterations": 3, "num_discriminators": 4, "pretrain_steps": 1, "batch_size": 8, "width": 8, "num_synthetic": 200}

    def fit(self, ctx):
        hp, dev, K = ctx.hparams, ctx.device, ctx.num_classes
        x_all, y_all = private_tensors(ctx.private_data, dev)
        n_disc, B, T = hp["num_discriminators"], hp["batch_size"], hp["iterations"]
        q = 1.0 / n_disc
        if ctx.private:
            sigma_step = L.calibrate_gaussian(ctx.epsilon, ctx.delta, steps=T, sample_rate=q)
            sigma = sigma_step * math.sqrt(B)   # per-row noise multiplier
        else:
            sigma_step = sigma = 0.0
        ctx.metrics.update(noise_multiplier=sigma, noise_multiplier_per_step=sigma_step)

        G = ConditionalGenerator(hp["latent_dim"], K, ctx.input_shape, hp["width"]).to(dev)
        opt_g = torch.optim.Adam(G.parameters(), lr=hp["lr_g"], betas=(0.5, 0.9))
        shards = [s.to(dev) for s in disjoint_shards(len(x_all), n_disc, ctx.seed)]
        discs = [ConditionalDiscriminator(ctx.input_shape, K, hp["width"]).to(dev) for _ in range(n_disc)]
        opts = [torch.optim.Adam(d.parameters(), lr=hp["lr_d"], betas=(0.5, 0.9)) for d in discs]

        def critic_steps(k, steps):
            xs, ys = x_all[shards[k]], y_all[shards[k]]
            for _ in range(steps if len(xs) else 0):
                idx = torch.randint(0, len(xs), (min(B, len(xs)),), device=dev)
                with torch.no_grad():
                    fake = G.sample(ys[idx])
                wgan_gp_critic_step(discs[k], opts[k], xs[idx], ys[idx], fake, hp["gp_weight"])

        for k in ctx.progress(range(n_disc), desc="gs-wgan warm start"):
            critic_steps(k, hp["pretrain_steps"])
        for _ in ctx.progress(range(T), desc="gs-wgan"):
            k = int(torch.randint(0, n_disc, (1,)))
            critic_steps(k, hp["n_critic"])
            if ctx.private:
                ctx.ledger.record(L.subsampled_gaussian(sigma_step, q, steps=1))
            labels = random_labels(B, K, dev)
            fake = sanitized(G.sample(labels), hp["clip"], sigma, sensitivity_factor=2.0, loss_reduction="mean")
            for p in discs[k].parameters():
                p.requires_grad_(False)
            loss_g = -discs[k](fake, labels).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            for p in discs[k].parameters():
                p.requires_grad_(True)
        G.eval()
        return generate_synthetic(G.sample, hp["num_synthetic"], K, dev)
