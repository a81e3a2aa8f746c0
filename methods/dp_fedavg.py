"""DP-FedAvg: McMahan, Ramage, Talwar, Zhang, "Learning Differentially Private Recurrent Language
Models", ICLR 2018 (Algorithm 1, fixed-denominator estimator, flat clipping).

Each round the server Poisson-samples clients with probability q; a sampled client runs
``local_epochs`` epochs of minibatch SGD from the global model on its own data and uploads its
update; each update is clipped to L2 norm S; the server adds N(0, z^2 S^2 I) to the sum, divides
by q K and applies it (server learning rate, optional momentum). Accounting: user(client)-level DP,
one Poisson-subsampled Gaussian mechanism (z, q) per round, composed with RDP; z is calibrated so
``rounds`` rounds meet the target. The round loop is benchmark.federated.dp_fedavg.
"""
import torch

from benchmark import Method
from benchmark import federated as F


class DPFedAvg(Method):
    """Client-level DP-FedAvg: client sampling, local epochs, update clipping, Gaussian noise at the server."""

    name = "dp-fedavg"
    family = "federated"
    needs = {"private_data"}
    privacy_unit = "client"
    adjacency = "add/remove one client (all its records)"
    citation = "McMahan et al., ICLR 2018"
    hparams = {"clients": 300, "partition": "iid", "alpha": 0.5, "client_rate": 0.2, "rounds": 60,
               "local_epochs": 1, "local_batch_size": 4, "local_lr": 0.1, "clip_norm": 1.0,
               "server_lr": 1.0, "server_momentum": 0.9}
    tiny = {"clients": 10, "rounds": 2, "client_rate": 0.5}

    def fit(self, ctx):
        h = ctx.hparams
        g = torch.Generator().manual_seed(ctx.seed + 1)

        def local_train(model, x, y):
            return F.local_sgd(model, x, y, lr=h["local_lr"], batch_size=h["local_batch_size"],
                               epochs=h["local_epochs"], generator=g)

        return F.dp_fedavg(ctx, local_train, {**h, "desc": self.name})
