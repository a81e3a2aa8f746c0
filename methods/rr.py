"""Randomized response on the labels (Warner, JASA 1965), the label-DP baseline of Ghazi et al.,
"Deep Learning with Label Differential Privacy", NeurIPS 2021.

Mechanism: every private label y is replaced once by k-ary randomized response over the K classes:
keep y with probability e^eps / (e^eps + K - 1), otherwise output one of the other K - 1 classes
uniformly. Each label is released once and labels are disjoint, so the whole noisy label vector is
eps-label-DP (replace-one-label adjacency; the images are public under label DP). The student is
trained non-privately on (public images, noisy labels): post-processing.
"""
import torch
from torch.utils.data import TensorDataset

from benchmark import Method
from benchmark.privacy import mechanisms as M
from benchmark.training import dataset_tensors, train_classifier


class RandomizedResponse(Method):
    """k-ary randomized response on each private label once; the student trains on the noisy labels."""

    name = "rr"
    family = "label-dp"
    needs = {"private_data"}
    privacy_unit = "label"
    adjacency = "replace-one label (features public)"
    citation = "Warner, JASA 1965; baseline in Ghazi et al., NeurIPS 2021"
    hparams = {"epochs": 20, "batch_size": 64, "lr": 1e-3, "min_steps": 600}
    tiny = {"epochs": 1, "min_steps": 5}

    def fit(self, ctx):
        h = ctx.hparams
        x, y = dataset_tensors(ctx.private_data)[:2]
        if ctx.private:
            ctx.ledger.record({**M.rr_event(ctx.epsilon),
                               "note": "k-ary RR, each private label released once (parallel composition)"})
            g = torch.Generator().manual_seed(ctx.seed)
            y = M.randomized_response(y, ctx.num_classes, ctx.epsilon, generator=g)
        ctx.metrics["label_noise_rate"] = float((y != dataset_tensors(ctx.private_data)[1]).float().mean())
        return train_classifier(ctx.build_student(), TensorDataset(x, y), epochs=h["epochs"],
                                batch_size=h["batch_size"], lr=h["lr"], min_steps=h["min_steps"],
                                device=ctx.device, seed=ctx.seed, progress=ctx.progress, desc="rr student")
