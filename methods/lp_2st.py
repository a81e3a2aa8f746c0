"""LP-2ST: two-stage label-private training with RR-with-prior (Ghazi, Golowich, Kumar, Manurangsi,
Zhang, "Deep Learning with Label Differential Privacy", NeurIPS 2021, Algorithms 2-3 with T = 2).

Algorithm:
1. Split the private set at random into disjoint S1, S2 (fractions ``stage1_fraction``, rest).
2. Stage 1: the prior is uniform, so RRWithPrior is plain K-ary RR; release S1's labels with it
   and train model M1 on (S1, noisy labels).
3. Stage 2: for x in S2 the prior is p = softmax(M1(x)). RRWithPrior picks
   k* = argmax_k [e^eps / (e^eps + k - 1)] * (mass of p's top k) and runs randomized response
   restricted to p's top-k* classes (keep y with probability e^eps/(e^eps + k* - 1) if it is in the
   set, else a uniform member of the set). Train M2 (from M1) on S1 and S2 with their noisy labels.
Privacy: each label is released exactly once by an eps-DP randomized response whose support depends
only on public features and on earlier releases of *other* labels, so by (adaptive) parallel
composition the whole run is eps-label-DP: one ``randomized_response(eps)`` event.
"""
import math

import torch
from torch.utils.data import TensorDataset

from benchmark import Method
from benchmark.privacy import mechanisms as M
from benchmark.training import dataset_tensors, predict_logits, train_classifier


def rr_with_prior_k(prior: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Ghazi et al.'s choice of support size per sample: argmax_k e^eps/(e^eps+k-1) * top-k mass of prior."""
    k = torch.arange(1, prior.shape[1] + 1, dtype=prior.dtype)
    mass = prior.sort(dim=1, descending=True).values.cumsum(dim=1)
    keep = 1.0 / (1.0 + (k - 1) * math.exp(-epsilon))
    return (mass * keep).argmax(dim=1) + 1


def release_with_prior(labels: torch.Tensor, prior: torch.Tensor, epsilon: float, generator) -> torch.Tensor:
    """RRWithPrior on each label: top-k* support of its prior, then RR restricted to it (mechanisms.py)."""
    ks = rr_with_prior_k(prior, epsilon)
    out = torch.empty_like(labels)
    for k in ks.unique().tolist():
        rows = (ks == k).nonzero().flatten()
        support = M.topk_support(prior[rows], k)
        out[rows] = M.rr_with_prior(labels[rows], support, epsilon, generator=generator)
    return out


class LP2ST(Method):
    """Two-stage RR-with-prior: stage-1 model's posterior sets the RR support for stage-2 labels."""

    name = "lp-2st"
    family = "label-dp"
    needs = {"private_data"}
    privacy_unit = "label"
    adjacency = "replace-one label (features public)"
    citation = "Ghazi et al., NeurIPS 2021"
    hparams = {"stage1_fraction": 0.4, "epochs": 20, "batch_size": 64, "lr": 1e-3, "min_steps": 400,
               "warm_start": True}
    tiny = {"epochs": 1, "min_steps": 5}

    def fit(self, ctx):
        h = ctx.hparams
        x, y = dataset_tensors(ctx.private_data)[:2]
        g = torch.Generator().manual_seed(ctx.seed)
        perm = torch.randperm(len(y), generator=g)
        n1 = int(round(h["stage1_fraction"] * len(y)))
        s1, s2 = perm[:n1], perm[n1:]
        train = dict(epochs=h["epochs"], batch_size=h["batch_size"], lr=h["lr"], min_steps=h["min_steps"],
                     device=ctx.device, seed=ctx.seed, progress=ctx.progress)
        noisy = y.clone()
        if ctx.private:
            ctx.ledger.record({**M.rr_event(ctx.epsilon),
                               "note": "RR-with-prior, each label released once over 2 stages on disjoint "
                                       "subsets (parallel composition)"})
            noisy[s1] = M.randomized_response(y[s1], ctx.num_classes, ctx.epsilon, generator=g)
        model = train_classifier(ctx.build_student(), TensorDataset(x[s1], noisy[s1]), desc="lp-2st stage 1", **train)
        if ctx.private:
            prior = predict_logits(model, x[s2], ctx.device).softmax(dim=1)
            noisy[s2] = release_with_prior(y[s2], prior, ctx.epsilon, g)
            ctx.metrics["stage2_mean_k"] = float(rr_with_prior_k(prior, ctx.epsilon).float().mean())
        if not h["warm_start"]:
            model = ctx.build_student()
        return train_classifier(model, TensorDataset(x, noisy), desc="lp-2st stage 2", **train)
