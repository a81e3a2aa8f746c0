"""DP-SGD on ScatterNet features: Tramer & Boneh, "Differentially private learning needs better
features (or much more data)", ICLR 2021.

Algorithm:
  1. features S(x): the scattering transform (J = 2, L = 8; Kymatio), fixed and data-independent;
  2. normalisation of the K channels of S(x):
       "data" (the paper's DN): per-channel mean and variance released with the Gaussian mechanism
         (each example's channel-mean vector clipped to ``norm_clip_mean``, its channel-mean-of-squares
         vector to ``norm_clip_sq``, noise multiplier ``norm_noise``): two Gaussian releases, recorded;
       "group" (the paper's GN): GroupNorm without parameters, no privacy cost;
  3. a linear model (or a small tanh CNN) on the normalised features, trained with DP-SGD
     (Poisson sampling, clipping, Gaussian noise), its noise calibrated to the budget left after (2).
Accounting: gaussian(norm_noise, steps=2) + subsampled Gaussian steps, composed with RDP.
"""
import torch

from benchmark import Method
from benchmark.models import scatter as S
from benchmark.privacy import ledger as L
from benchmark.training import dataset_tensors, dp_sgd_train
from benchmark.training.teachers import cached_features, source_digest


class DPScatterNet(Method):
    """ScatterNet (J=2, L=8) features + DP-SGD linear/CNN head with DP data normalisation."""

    name = "dp-scatternet"
    family = "dp-training"
    needs = {"private_data"}
    privacy_unit = "record"
    adjacency = "add/remove one record"
    citation = "Tramer & Boneh, ICLR 2021"
    hparams = {"J": 2, "L": 8, "head": "linear", "norm": "data", "norm_noise": 16.0, "norm_clip_mean": 0.4,
               "norm_clip_sq": 0.12, "groups": 27, "epochs": 30, "batch_size": 128, "lr": 2.0, "momentum": 0.9,
               "max_grad_norm": 0.1, "optimizer": "sgd"}
    tiny = {"epochs": 1}

    def fit(self, ctx):
        h = ctx.hparams
        x, y = dataset_tensors(ctx.private_data)[:2]
        feats_fn = S.ScatterFeatures(ctx.input_shape, h["J"], h["L"])
        feats = cached_features("scattering", {"J": h["J"], "L": h["L"], "code": source_digest(S)}, x,
                                lambda imgs: torch.cat([feats_fn(imgs[i:i + 512]) for i in range(0, len(imgs), 512)]))

        norm = None
        if h["norm"] == "data":
            ctx.ledger.record(L.gaussian(h["norm_noise"], steps=2))
            gen = torch.Generator().manual_seed(ctx.seed)
            mean, var = S.dp_channel_stats(feats, h["norm_clip_mean"], h["norm_clip_sq"], h["norm_noise"], gen)
            norm = S.ChannelNorm(mean, var)
        elif h["norm"] != "group":
            raise ValueError(f"norm must be 'data' or 'group', got {h['norm']!r}")

        head = S.head(h["head"], feats_fn.out_shape, ctx.num_classes, groups=h["groups"], norm=norm)
        head = dp_sgd_train(head, torch.utils.data.TensorDataset(feats, y), ledger=ctx.ledger, epochs=h["epochs"],
                            batch_size=h["batch_size"], lr=h["lr"], momentum=h["momentum"],
                            max_grad_norm=h["max_grad_norm"], optimizer=h["optimizer"], device=ctx.device,
                            seed=ctx.seed, progress=ctx.progress, checkpointer=ctx.checkpointer)
        return S.ScatterNetClassifier(feats_fn, head.cpu()).to(ctx.device)
