"""DP-MERF: differentially private mean embeddings with random features.

Harder, Adamczewski & Park, "DP-MERF: Differentially Private Mean Embeddings with Random
Features for Practical Privacy-Preserving Data Generation", AISTATS 2021.

Mechanism: the kernel mean embedding of the labelled private data with random Fourier
features of a Gaussian kernel, mu = 1/N sum_i phi(x_i) (x) onehot(y_i), with
phi(x) = sqrt(2/D) [cos(W x), sin(W x)], W ~ N(0, I / l^2), is released ONCE with the
Gaussian mechanism. ||phi(x) (x) onehot(y)|| = 1, so replacing one record moves mu by at
most 2/N (the paper's sensitivity, replace-one adjacency with N public). The generator is
then fit to the noisy embedding (MMD with the approximate kernel): post-processing.
"""
import math

import torch

from benchmark import Method
from benchmark.models.generative import ConditionalGenerator, one_hot
from benchmark.privacy import ledger as L
from benchmark.training.gan import generate_synthetic, private_tensors, random_labels


def rff_features(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """phi(x) = sqrt(2/D) [cos(x W), sin(x W)] with D = 2 * w.shape[1]; ||phi(x)|| = 1."""
    proj = x.flatten(1) @ w
    return torch.cat([proj.cos(), proj.sin()], dim=1) * math.sqrt(1.0 / w.shape[1])


def mean_embedding(x, y, w, num_classes, chunk: int = 2000) -> torch.Tensor:
    """1/N sum_i phi(x_i) outer onehot(y_i): a (D, num_classes) matrix."""
    total = 0
    for i in range(0, len(x), chunk):
        total = total + rff_features(x[i:i + chunk], w).T @ one_hot(y[i:i + chunk], num_classes)
    return total / len(x)


def embedding_sensitivity(n: int) -> float:
    """L2 sensitivity of the mean embedding to replacing one of n records: 2/n."""
    return 2.0 / n


def release_embedding(mu: torch.Tensor, n: int, noise_multiplier: float) -> torch.Tensor:
    """Gaussian mechanism: mu + N(0, (noise_multiplier * 2/n)^2 I)."""
    return mu + torch.randn_like(mu) * noise_multiplier * embedding_sensitivity(n)


class DPMERF(Method):
    """DP-MERF (Harder et al., AISTATS 2021): one Gaussian release of a random-feature mean embedding."""
    name = "dp-merf"
    family = "dp-generative"
    needs = {"private_data"}
    privacy_unit = "record"
    adjacency = "replace-one record (N public), as in the paper"
    citation = "Harder, Adamczewski & Park, AISTATS 2021"
    hparams = {
        "num_features": 2000,       # D = 2 x number of frequencies
        "kernel_length": 0.4,       # Gaussian-kernel length scale l, relative to sqrt(input dim)
        "iterations": 800,
        "batch_size": 200,
        "lr": 1e-3,
        "latent_dim": 16,
        "width": 32,
        "num_synthetic": 2000,
    }
    tiny = {"iterations": 2, "num_features": 50, "num_synthetic": 200}

    def fit(self, ctx):
        hp, dev, K = ctx.hparams, ctx.device, ctx.num_classes
        x, y = private_tensors(ctx.private_data, dev)
        n, d = len(x), x[0].numel()
        # 1. random features (data-independent)
        length = hp["kernel_length"] * math.sqrt(d)
        w = torch.randn(d, hp["num_features"] // 2, device=dev) / length
        # 2. release the mean embedding once with the Gaussian mechanism
        mu = mean_embedding(x, y, w, K)
        if ctx.private:
            sigma = L.calibrate_gaussian(ctx.epsilon, ctx.delta, steps=1)
            ctx.ledger.record(L.gaussian(noise_multiplier=sigma, steps=1))
            mu = release_embedding(mu, n, sigma)
            ctx.metrics["noise_multiplier"] = sigma
        del x, y
        # 3. fit the generator to the released embedding (post-processing)
        G = ConditionalGenerator(hp["latent_dim"], K, ctx.input_shape, hp["width"]).to(dev)
        opt = torch.optim.Adam(G.parameters(), lr=hp["lr"])
        for _ in ctx.progress(range(hp["iterations"]), desc="dp-merf generator"):
            labels = random_labels(hp["batch_size"], K, dev)
            fake = G.sample(labels)
            # embedding of the synthetic batch (labels uniform: the classes are near balanced)
            mu_g = rff_features(fake, w).T @ one_hot(labels, K) / hp["batch_size"]
            loss = (mu - mu_g).pow(2).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        ctx.metrics["final_mmd2"] = float(loss.detach())
        G.eval()
        return generate_synthetic(G.sample, hp["num_synthetic"], K, dev)
