"""Federated GS-WGAN: Chen, Orekondy & Fritz, "GS-WGAN: A Gradient-Sanitized Approach for Learning
Differentially Private Generators", NeurIPS 2020 (Sec. 3.4 / 4.4, the federated setting).

The private split is partitioned into K clients (IID or Dirichlet non-IID). Client k keeps a
WGAN-GP critic D_k trained only on its own data (never leaves the client; warm-started locally).
The server holds the conditional generator G. Per generator step the server picks one client
uniformly at random and sends it B generated samples (with their labels); the client runs
``n_critic`` local critic steps, then returns g_j = d(-D_k(x_j))/d x_j for each sample, *sanitised on
the client*: clipped to norm C and perturbed with N(0, (2 C sigma)^2 I). The server back-propagates
the sanitised gradients into G. Only sanitised gradients cross the client boundary, so any change to
one client's data (replace-one client) changes one sanitised release of sensitivity 2C per row.
Accounting (as methods/gs_wgan.py): one subsampled-Gaussian release per generator step with q = 1/K
and per-step noise multiplier sigma/sqrt(B) (the B rows come from the same critic); steps compose
in RDP. Sampling amplification protects against observers of G; the server knows which client it
asked. G's samples are returned as SyntheticData; the runner trains the common student on them.
"""
import math

import torch

from benchmark import Method
from benchmark import federated as F
from benchmark.models.generative import ConditionalDiscriminator, ConditionalGenerator
from benchmark.privacy import ledger as L
from benchmark.privacy.sanitize import sanitized
from benchmark.training.gan import generate_synthetic, random_labels, wgan_gp_critic_step


class FedGSWGAN(Method):
    """GS-WGAN with one critic per client; client-side gradient sanitisation; server-side generator."""

    name = "fed-gs-wgan"
    family = "federated"
    needs = {"private_data"}
    privacy_unit = "client"
    adjacency = "replace one client's data (hence any of its records)"
    citation = "Chen et al., NeurIPS 2020"
    hparams = {"clients": 10, "partition": "iid", "alpha": 0.5, "pretrain_steps": 40, "iterations": 300,
               "n_critic": 2, "batch_size": 32, "clip": 1.0, "gp_weight": 10.0, "lr_d": 1e-3, "lr_g": 1e-3,
               "latent_dim": 16, "width": 32, "num_synthetic": 2000}
    tiny = {"clients": 2, "pretrain_steps": 2, "iterations": 3, "num_synthetic": 200}

    def fit(self, ctx):
        h, dev, C = ctx.hparams, ctx.device, ctx.num_classes
        clients = [(x.to(dev), y.to(dev)) for x, y in F.ctx_clients(ctx, h)]
        K, B, T = len(clients), int(h["batch_size"]), int(h["iterations"])
        q = 1.0 / K
        sigma_step = L.calibrate_gaussian(ctx.epsilon, ctx.delta, steps=T, sample_rate=q,
                                          prior_events=ctx.ledger.events) if ctx.private else 0.0
        sigma = sigma_step * math.sqrt(B)  # per-row noise multiplier
        ctx.metrics.update(iterations=T, noise_multiplier=sigma, noise_multiplier_per_step=sigma_step)

        G = ConditionalGenerator(h["latent_dim"], C, ctx.input_shape, h["width"]).to(dev)
        opt_g = torch.optim.Adam(G.parameters(), lr=h["lr_g"], betas=(0.5, 0.9))
        critics = [ConditionalDiscriminator(ctx.input_shape, C, h["width"]).to(dev) for _ in clients]
        opts = [torch.optim.Adam(d.parameters(), lr=h["lr_d"], betas=(0.5, 0.9)) for d in critics]

        def client_critic_steps(k, steps):  # local, non-private: D_k never leaves client k
            xs, ys = clients[k]
            for _ in range(steps):
                idx = torch.randint(0, len(xs), (min(B, len(xs)),), device=dev)
                with torch.no_grad():
                    fake = G.sample(ys[idx])  # samples the server sent
                wgan_gp_critic_step(critics[k], opts[k], xs[idx], ys[idx], fake, h["gp_weight"])

        for k in ctx.progress(range(K), desc="fed-gs-wgan local warm start"):
            client_critic_steps(k, h["pretrain_steps"])
        g = torch.Generator().manual_seed(ctx.seed)
        for _ in ctx.progress(range(T), desc="fed-gs-wgan"):
            k = int(torch.randint(0, K, (1,), generator=g))
            client_critic_steps(k, h["n_critic"])
            if ctx.private:
                ctx.ledger.record(L.subsampled_gaussian(sigma_step, q, steps=1))
            labels = random_labels(B, C, dev)
            fake = sanitized(G.sample(labels), h["clip"], sigma, sensitivity_factor=2.0, loss_reduction="mean")
            for p in critics[k].parameters():
                p.requires_grad_(False)
            loss_g = -critics[k](fake, labels).mean()  # backward: client k sanitises d loss / d fake
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            for p in critics[k].parameters():
                p.requires_grad_(True)
        G.eval()
        return generate_synthetic(G.sample, h["num_synthetic"], C, dev)
