"""ALIBI: Additive Laplace with Iterative Bayesian Inference (Malek, Mironov, Prasad, Shilov, Tramer,
"Antipodean Robustness to Label Privacy" / "Label Differential Privacy via ALIBI", NeurIPS 2021).

Mechanism: each private label y becomes the noisy vector o = onehot(y) + Lap(b)^K with b = 2/eps
(changing one label moves its one-hot vector by 2 in L1), released once: eps-label-DP; one
``laplace(scale_over_sensitivity = b/2 = 1/eps)`` event.
Inference (post-processing): the soft label is the posterior of y given o under a prior p (uniform
at first, then the current model's softmax, refreshed every ``update_every`` epochs):
    P(y = k | o) ∝ p_k * exp(-(|o_k - 1| - |o_k|) / b)
(the Laplace likelihood of o given y = k; the other coordinates cancel). The student is trained
with cross-entropy against the soft labels.
"""
import torch
from torch import nn
from torch.utils.data import TensorDataset

from benchmark import Method
from benchmark.privacy import ledger as L
from benchmark.training import dataset_tensors, predict_logits, seeded_loader


def laplace_one_hot(labels: torch.Tensor, num_classes: int, scale: float, generator=None) -> torch.Tensor:
    """onehot(labels) + i.i.d. Laplace(0, scale) noise (inverse-CDF sampling with ``generator``)."""
    u = torch.rand(len(labels), num_classes, generator=generator) - 0.5
    noise = -scale * u.sign() * torch.log1p(-2 * u.abs())
    return nn.functional.one_hot(labels, num_classes).float() + noise


def alibi_posterior(noisy: torch.Tensor, prior: torch.Tensor, scale: float) -> torch.Tensor:
    """Posterior over the true label given a Laplace-noised one-hot vector and a prior (rows sum to 1)."""
    log_post = prior.clamp_min(1e-30).log() - ((noisy - 1).abs() - noisy.abs()) / scale
    return log_post.softmax(dim=1)


class ALIBI(Method):
    """Laplace noise on one-hot labels, Bayesian soft labels with the model as the prior."""

    name = "alibi"
    family = "label-dp"
    needs = {"private_data"}
    privacy_unit = "label"
    adjacency = "replace-one label (features public)"
    citation = "Malek et al., NeurIPS 2021"
    hparams = {"epochs": 30, "batch_size": 64, "lr": 1e-3, "update_every": 5}
    tiny = {"epochs": 2, "update_every": 1}

    def fit(self, ctx):
        h = ctx.hparams
        x, y = dataset_tensors(ctx.private_data)[:2]
        K = ctx.num_classes
        if ctx.private:
            scale = 2.0 / ctx.epsilon
            ctx.ledger.record({**L.laplace(scale / 2.0),
                               "note": "Laplace on each one-hot label, released once (parallel composition)"})
            noisy = laplace_one_hot(y, K, scale, torch.Generator().manual_seed(ctx.seed))
            soft = alibi_posterior(noisy, torch.full((len(y), K), 1.0 / K), scale)
        else:
            soft = nn.functional.one_hot(y, K).float()
        model = ctx.build_student()
        opt = torch.optim.Adam(model.parameters(), lr=h["lr"])
        for epoch in ctx.progress(range(h["epochs"]), desc="alibi"):
            if ctx.private and epoch > 0 and epoch % h["update_every"] == 0:
                soft = alibi_posterior(noisy, predict_logits(model, x, ctx.device).softmax(dim=1), scale)
            model.train()
            for xb, sb in seeded_loader(TensorDataset(x, soft), h["batch_size"], ctx.seed + epoch):
                xb, sb = xb.to(ctx.device), sb.to(ctx.device)
                loss = -(sb * model(xb).log_softmax(dim=1)).sum(dim=1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return model.eval()
