"""DP-Sinkhorn: differentially private generator trained with the Sinkhorn divergence.

Cao, Bie, Vahdat, Fidler & Kreis, "Don't Generate Me: Training Differentially Private
Generative Models with Sinkhorn Divergence", NeurIPS 2021.

Mechanism: each step Poisson-samples a batch of private records (q = B/N) and minimises
the semi-debiased Sinkhorn loss OT_eps(real, fake) - 1/2 OT_eps(fake, fake) between the
batch and generated samples. Class conditioning: the transport cost acts on images
concatenated with scaled one-hot labels. Only the gradient of OT_eps(real, fake) w.r.t.
the generated images depends on private data; that whole gradient (all generated images
of the step together) is clipped to norm C and perturbed with N(0, (2 C sigma)^2 I)
before it reaches the generator (sensitivity 2C). Each step is one subsampled Gaussian
release with noise multiplier sigma (RDP accountant).
"""
import torch

from benchmark import Method
from benchmark.models.generative import ConditionalGenerator, one_hot
from benchmark.privacy import ledger as L
from benchmark.privacy.sanitize import sanitized
from benchmark.training.gan import generate_synthetic, poisson_indices, private_tensors, random_labels


def sinkhorn_plan(cost: torch.Tensor, blur: float, iters: int) -> torch.Tensor:
    """Entropic OT plan between uniform measures for a cost matrix (log-domain Sinkhorn)."""
    n, m = cost.shape
    log_a = torch.full((n,), -torch.log(torch.tensor(float(n))).item(), device=cost.device)
    log_b = torch.full((m,), -torch.log(torch.tensor(float(m))).item(), device=cost.device)
    f, g = torch.zeros(n, device=cost.device), torch.zeros(m, device=cost.device)
    for _ in range(iters):
        f = -blur * torch.logsumexp(log_b[None, :] + (g[None, :] - cost) / blur, dim=1)
        g = -blur * torch.logsumexp(log_a[:, None] + (f[:, None] - cost) / blur, dim=0)
    return torch.exp(log_a[:, None] + log_b[None, :] + (f[:, None] + g[None, :] - cost) / blur)


def ot_loss(x: torch.Tensor, y: torch.Tensor, blur: float, iters: int) -> torch.Tensor:
    """Entropic OT with squared-Euclidean cost; its gradient is the envelope gradient
    sum_ij pi_ij grad c(x_i, y_j) (the plan is held fixed)."""
    cost = torch.cdist(x, y).pow(2) / x.shape[1]
    with torch.no_grad():
        plan = sinkhorn_plan(cost.detach(), blur, iters)
    return (plan * cost).sum()


class DPSinkhorn(Method):
    """DP-Sinkhorn (Cao et al., NeurIPS 2021): Sinkhorn-divergence generator with sanitised image gradients."""
    name = "dp-sinkhorn"
    family = "dp-generative"
    needs = {"private_data"}
    privacy_unit = "record"
    adjacency = "add/remove one record"
    citation = "Cao, Bie, Vahdat, Fidler & Kreis, NeurIPS 2021"
    hparams = {
        "iterations": 400,
        "batch_size": 128,        # expected Poisson batch B; also the number of generated samples
        "clip": 0.005,            # C on the whole image gradient of the private term (its typical norm on digits)
        "blur": 0.05,             # entropic regularisation eps (cost = squared distance / dim)
        "sinkhorn_iters": 30,
        "label_weight": 1.0,      # scale of the one-hot label block in the cost
        "lr": 1e-3,
        "latent_dim": 16,
        "width": 32,
        "num_synthetic": 2000,
    }
    tiny = {"iterations": 3, "batch_size": 8, "sinkhorn_iters": 5, "width": 8, "num_synthetic": 200}

    def fit(self, ctx):
        hp, dev, K = ctx.hparams, ctx.device, ctx.num_classes
        x_all, y_all = private_tensors(ctx.private_data, dev)
        n, B, T = len(x_all), hp["batch_size"], hp["iterations"]
        q = min(1.0, B / n)
        sigma = L.calibrate_gaussian(ctx.epsilon, ctx.delta, steps=T, sample_rate=q) if ctx.private else 0.0
        ctx.metrics["noise_multiplier"] = sigma
        d = x_all[0].numel()
        lw = hp["label_weight"] * (d / K) ** 0.5   # label block weighted comparably to the image block

        def embed(images, labels):
            return torch.cat([images.flatten(1), lw * one_hot(labels, K)], dim=1)

        G = ConditionalGenerator(hp["latent_dim"], K, ctx.input_shape, hp["width"]).to(dev)
        opt = torch.optim.Adam(G.parameters(), lr=hp["lr"])
        for _ in ctx.progress(range(T), desc="dp-sinkhorn"):
            idx = poisson_indices(n, q, dev)
            labels = random_labels(B, K, dev)
            fake = G.sample(labels)
            if ctx.private:
                ctx.ledger.record(L.subsampled_gaussian(sigma, q, steps=1))
            loss = -0.5 * ot_loss(embed(fake, labels), embed(fake, labels), hp["blur"], hp["sinkhorn_iters"])
            if len(idx) > 0:
                priv = sanitized(fake, hp["clip"], sigma, sensitivity_factor=2.0, loss_reduction="sum",
                                 per_sample=False)
                loss = loss + ot_loss(embed(x_all[idx], y_all[idx]), embed(priv, labels), hp["blur"],
                                      hp["sinkhorn_iters"])
            elif ctx.private:
                # an empty Poisson batch still releases pure noise for the private term
                loss = loss + (fake * torch.randn_like(fake) * 2 * hp["clip"] * sigma).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        G.eval()
        return generate_synthetic(G.sample, hp["num_synthetic"], K, dev)
