"""DP-SCAFFOLD: Noble, Bellet, Dieuleveut, "Differentially Private Federated Learning on
Heterogeneous Data", AISTATS 2022 (Algorithm 1: SCAFFOLD of Karimireddy et al. 2020 with DP-SGD
inside the clients, control variates option II).

Per round the server picks a fraction l of the M clients (without replacement). Client i starts
y <- x and takes K local steps, each on a Poisson sample of its records (rate s): per-example
gradients clipped to C, summed, plus N(0, sigma^2 C^2 I), divided by the expected batch s n_i,
giving g~; step y <- y - eta_l (g~ - c_i + c). Then c_i+ = c_i - c + (x - y)/(K eta_l); it uploads
Delta y = y - x and Delta c = c_i+ - c_i. Server: x <- x + eta_g mean(Delta y),
c <- c + (|S|/M) mean(Delta c).
Privacy (record-level, also towards the honest-but-curious server): each local step is a
Poisson-subsampled Gaussian mechanism (sigma, s) on the client's records; everything uploaded is
post-processing of those noisy gradients. Records of different clients are disjoint (parallel
composition), so a round costs K steps for any record. The server knows which clients it picked,
so we claim no amplification by client sampling (the paper's bound uses rate l*s): every round is
charged K steps at rate s, and sigma is calibrated for rounds * K such steps.
"""
import copy

import torch

from benchmark import Method
from benchmark import federated as F
from benchmark.privacy import ledger as L
from benchmark.privacy.sanitize import clip_and_noise_sum


class DPScaffold(Method):
    """SCAFFOLD control variates with record-level DP-SGD inside each client."""

    name = "dp-scaffold"
    family = "federated"
    needs = {"private_data"}
    privacy_unit = "record"
    adjacency = "add/remove one record (of any client)"
    citation = "Noble et al., AISTATS 2022"
    hparams = {"clients": 10, "partition": "dirichlet", "alpha": 0.5, "client_fraction": 0.5, "rounds": 20,
               "local_steps": 5, "record_rate": 0.2, "clip_norm": 1.0, "local_lr": 0.5, "server_lr": 1.0}
    tiny = {"clients": 4, "rounds": 2, "local_steps": 2}

    def fit(self, ctx):
        h = ctx.hparams
        clients = F.ctx_clients(ctx, h)
        M, K, s, C, lr = len(clients), int(h["local_steps"]), float(h["record_rate"]), float(h["clip_norm"]), float(h["local_lr"])
        rounds, per_round = int(h["rounds"]), max(1, round(h["client_fraction"] * len(clients)))
        sigma = L.calibrate_gaussian(ctx.epsilon, ctx.delta, rounds * K, s, prior_events=ctx.ledger.events) \
            if ctx.private else 0.0
        ctx.metrics.update({"rounds": rounds, "local_steps": K, "noise_multiplier": sigma})
        g = torch.Generator().manual_seed(ctx.seed)
        model = ctx.build_student()
        x_glob = F.flat_params(model)
        c = torch.zeros_like(x_glob)
        c_i = [torch.zeros_like(x_glob) for _ in clients]
        for _ in ctx.progress(range(rounds), desc="dp-scaffold rounds"):
            chosen = torch.randperm(M, generator=g)[:per_round].tolist()
            if ctx.private:  # every chosen client runs K DP-SGD steps on its own disjoint records
                ctx.ledger.record(L.subsampled_gaussian(sigma, s, steps=K))
            dys, dcs = [], []
            for i in chosen:
                xi, yi = clients[i]
                local = copy.deepcopy(model)
                y_loc = x_glob.clone()
                for _ in range(K):
                    batch = torch.rand(len(yi), generator=g) < s
                    F.set_flat_params(local, y_loc)
                    grads = F.per_example_grads(local, xi[batch].to(ctx.device), yi[batch].to(ctx.device)) \
                        if batch.any() else torch.zeros(0, y_loc.numel())
                    noisy = clip_and_noise_sum([grads.cpu()], C, sigma, generator=g)[0] if ctx.private \
                        else grads.cpu().sum(0)
                    g_tilde = noisy / (s * len(yi) if ctx.private else max(1, int(batch.sum())))
                    y_loc = y_loc - lr * (g_tilde - c_i[i] + c)
                c_new = c_i[i] - c + (x_glob - y_loc) / (K * lr)
                dys.append(y_loc - x_glob)
                dcs.append(c_new - c_i[i])
                c_i[i] = c_new
            x_glob = x_glob + float(h["server_lr"]) * torch.stack(dys).mean(0)
            c = c + (len(chosen) / M) * torch.stack(dcs).mean(0)
            F.set_flat_params(model, x_glob)
        return model.eval()
