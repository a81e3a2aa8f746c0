"""DP-FedSGD: McMahan, Ramage, Talwar, Zhang, "Learning Differentially Private Recurrent Language
Models", ICLR 2018 (the FedSGD variant of Algorithm 1).

As DP-FedAvg, but a sampled client takes exactly one gradient step on its whole local data set
(its update is -eta * grad of its local loss); updates are clipped to S, summed with
N(0, z^2 S^2 I), divided by q K at the server. Client-level DP: one Poisson-subsampled Gaussian
mechanism (z, q) per round, RDP composition over rounds, z calibrated to the target.
"""
import torch

from benchmark import Method
from benchmark import federated as F


class DPFedSGD(Method):
    """Client-level DP-FedSGD: one local full-batch gradient step per sampled client and round."""

    name = "dp-fedsgd"
    family = "federated"
    needs = {"private_data"}
    privacy_unit = "client"
    adjacency = "add/remove one client (all its records)"
    citation = "McMahan et al., ICLR 2018"
    hparams = {"clients": 300, "partition": "iid", "alpha": 0.5, "client_rate": 0.2, "rounds": 150,
               "local_lr": 1.0, "clip_norm": 1.0, "server_lr": 1.0, "server_momentum": 0.9}
    tiny = {"clients": 10, "rounds": 2, "client_rate": 0.5}

    def fit(self, ctx):
        h = ctx.hparams
        g = torch.Generator().manual_seed(ctx.seed + 1)

        def local_train(model, x, y):
            return F.local_sgd(model, x, y, lr=h["local_lr"], batch_size=len(x), steps=1, generator=g)

        return F.dp_fedavg(ctx, local_train, {**h, "desc": self.name})
