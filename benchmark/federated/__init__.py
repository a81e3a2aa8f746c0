"""Federated learning simulation shared by the federated baselines (one process simulates the clients).

- Partitioning of the private split into K clients: IID (a seeded random split into near-equal
  shards) or non-IID by label with a Dirichlet(alpha) prior per class (Hsu et al., arXiv 2019):
  for every class, the proportions of its examples given to the K clients are drawn from
  Dir(alpha * 1_K); small alpha = each client sees few classes.
- Client sampling (Poisson, rate q, as assumed by the subsampled-Gaussian accountant).
- Model <-> flat-vector helpers, plain local SGD on a client, per-example gradients (torch.func)
  for record-level DP-SGD inside clients.
- Server aggregation of client updates: optional L2 clipping of each update to S, optional
  Gaussian noise N(0, (sigma S)^2 I) on the sum, and the weighting/denominator of the estimator
  (size-weighted average = plain FedAvg of McMahan et al., AISTATS 2017; fixed denominator q*K
  = the DP-FedAvg estimator of McMahan et al., ICLR 2018, whose sensitivity to one client is S).

Privacy accounting is *not* done here: each method records its own ledger event for each noisy
release (see methods/dp_fedavg.py and friends).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from torch.utils.data import Dataset, Subset

PARTITIONS = ("iid", "dirichlet")


# ---------------------------------------------------------------- partitioning
def partition_iid(n: int, num_clients: int, seed: int) -> list[np.ndarray]:
    """A seeded random split of range(n) into ``num_clients`` shards whose sizes differ by at most one."""
    if not 1 <= num_clients <= n:
        raise ValueError(f"need 1 <= clients <= {n}, got {num_clients}")
    perm = np.random.RandomState(seed).permutation(n)
    return [np.sort(s) for s in np.array_split(perm, num_clients)]


def partition_dirichlet(labels: Sequence[int] | np.ndarray | torch.Tensor, num_clients: int, alpha: float,
                        seed: int, min_size: int = 1, max_tries: int = 1000) -> list[np.ndarray]:
    """Label-skewed split: for each class c, p_c ~ Dir(alpha 1_K) and class c's examples are cut into
    K consecutive pieces with proportions p_c. Redrawn (same seeded stream) until every client holds
    at least ``min_size`` examples."""
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if alpha <= 0:
        raise ValueError(f"dirichlet alpha must be > 0, got {alpha}")
    if not 1 <= num_clients <= len(y) // max(1, min_size):
        raise ValueError(f"cannot give {num_clients} clients at least {min_size} of {len(y)} examples")
    rng = np.random.RandomState(seed)
    classes = np.unique(y)
    for _ in range(max_tries):
        shards: list[list[int]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            p = rng.dirichlet(alpha * np.ones(num_clients))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
            for k, piece in enumerate(np.split(idx, cuts)):
                shards[k].extend(piece.tolist())
        if min(len(s) for s in shards) >= min_size:
            return [np.sort(np.asarray(s, dtype=np.int64)) for s in shards]
    raise RuntimeError(f"no Dirichlet({alpha}) split with >= {min_size} examples per client in {max_tries} draws")


def partition(labels, num_clients: int, scheme: str = "iid", alpha: float = 0.5, seed: int = 0,
              min_size: int = 1) -> list[np.ndarray]:
    """Indices of each client's examples under ``scheme`` ('iid' or 'dirichlet')."""
    if scheme == "iid":
        return partition_iid(len(labels), num_clients, seed)
    if scheme == "dirichlet":
        return partition_dirichlet(labels, num_clients, alpha, seed, min_size=min_size)
    raise ValueError(f"unknown partition {scheme!r}; expected one of {', '.join(PARTITIONS)}")


def client_datasets(dataset: Dataset, labels, num_clients: int, scheme: str = "iid", alpha: float = 0.5,
                    seed: int = 0, min_size: int = 1) -> list[Subset]:
    return [Subset(dataset, idx.tolist()) for idx in partition(labels, num_clients, scheme, alpha, seed, min_size)]


def client_tensors(images: torch.Tensor, labels: torch.Tensor, num_clients: int, scheme: str = "iid",
                   alpha: float = 0.5, seed: int = 0, min_size: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each client's (images, labels) tensors (the fast path for small data sets)."""
    parts = partition(labels, num_clients, scheme, alpha, seed, min_size)
    return [(images[torch.as_tensor(p)], labels[torch.as_tensor(p)]) for p in parts]


# ---------------------------------------------------------------- client sampling
def sample_clients(num_clients: int, rate: float, generator: torch.Generator) -> list[int]:
    """Poisson sampling: each client independently with probability ``rate`` (may be empty)."""
    if rate >= 1.0:
        return list(range(num_clients))
    return torch.nonzero(torch.rand(num_clients, generator=generator) < rate).flatten().tolist()


# ---------------------------------------------------------------- flat parameters
def flat_params(model: nn.Module) -> torch.Tensor:
    return parameters_to_vector([p.detach() for p in model.parameters()]).clone()


def set_flat_params(model: nn.Module, flat: torch.Tensor) -> None:
    with torch.no_grad():
        vector_to_parameters(flat.to(next(model.parameters()).device), list(model.parameters()))


def flat_grads(model: nn.Module) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in model.parameters()])


# ---------------------------------------------------------------- local training
def minibatches(n: int, batch_size: int, generator: torch.Generator, epochs: int = 1, steps: int | None = None):
    """Index batches: ``epochs`` shuffled passes over range(n), or exactly ``steps`` batches."""
    done = 0
    while True:
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n, batch_size):
            if steps is not None and done >= steps:
                return
            yield perm[i:i + batch_size]
            done += 1
        epochs -= 1
        if steps is None and epochs <= 0:
            return


def local_sgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, lr: float, batch_size: int,
              generator: torch.Generator, epochs: int = 1, steps: int | None = None,
              loss_fn: Callable = nn.functional.cross_entropy,
              grad_hook: Callable[[nn.Module], None] | None = None) -> nn.Module:
    """Plain SGD on one client's data (in place). ``grad_hook(model)`` may edit ``p.grad`` before each
    step (SCAFFOLD's correction uses it)."""
    model.train()
    device = next(model.parameters()).device
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for idx in minibatches(len(x), batch_size, generator, epochs, steps):
        xb, yb = x[idx].to(device), y[idx].to(device)
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xb), yb).backward()
        if grad_hook is not None:
            grad_hook(model)
        opt.step()
    return model


def per_example_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      loss_fn: Callable = nn.functional.cross_entropy) -> torch.Tensor:
    """Per-example gradients (n x d, flattened in ``model.parameters()`` order) with torch.func.
    The model must have no batch-coupled layers (GroupNorm is fine; BatchNorm is not)."""
    from torch.func import functional_call, grad, vmap
    names = [n for n, _ in model.named_parameters()]
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def loss_one(p, xi, yi):
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return loss_fn(out, yi.unsqueeze(0))

    g = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)
    return torch.cat([g[n].reshape(len(x), -1) for n in names], dim=1)


# ---------------------------------------------------------------- server aggregation
def clip_update(update: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """Scale ``update`` to L2 norm at most ``max_norm`` (None: unchanged)."""
    if max_norm is None:
        return update
    return update * min(1.0, float(max_norm) / (float(update.norm()) + 1e-12))


def aggregate(updates: Sequence[torch.Tensor], *, weights: Sequence[float] | None = None,
              denominator: float | None = None, clip_norm: float | None = None, noise_multiplier: float = 0.0,
              generator: torch.Generator | None = None, dim: int | None = None) -> torch.Tensor:
    """(sum_k w_k clip(Delta_k, S) + N(0, (sigma S)^2 I)) / denominator.

    ``weights`` default to 1; ``denominator`` defaults to sum of weights (a weighted average).
    With weights = client sizes, no clipping and no noise this is plain FedAvg. For DP-FedAvg use
    unit weights and the fixed denominator q K, so that one client moves the sum by at most S.
    ``dim`` is needed only when ``updates`` is empty (a Poisson round without clients: pure noise).
    """
    if noise_multiplier > 0 and clip_norm is None:
        raise ValueError("noise needs a clip norm (the sensitivity)")
    weights = [1.0] * len(updates) if weights is None else list(weights)
    if updates:
        total = torch.stack([w * clip_update(u, clip_norm) for w, u in zip(weights, updates)]).sum(0)
    else:
        if dim is None:
            raise ValueError("no updates and no dim")
        total = torch.zeros(dim)
    if noise_multiplier > 0:
        total = total + noise_multiplier * clip_norm * torch.randn(total.shape, generator=generator).to(total)
    den = float(sum(weights)) if denominator is None else float(denominator)
    return total / den if den > 0 else total


def fedavg_round(global_model: nn.Module, clients: Sequence[tuple[torch.Tensor, torch.Tensor]],
                 selected: Sequence[int], *, local_train: Callable[[nn.Module, torch.Tensor, torch.Tensor], nn.Module],
                 weighting: str = "size", denominator: float | None = None, clip_norm: float | None = None,
                 noise_multiplier: float = 0.0, server_lr: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """One round: every selected client starts from the global model, runs ``local_train`` on its data,
    uploads Delta_k = theta_k - theta; the server aggregates (see :func:`aggregate`) and applies
    theta <- theta + server_lr * Delta. ``weighting``: 'size' (n_k) or 'uniform'. Returns the applied
    aggregate. The caller records the ledger event for a noisy round *before* calling this."""
    import copy
    theta = flat_params(global_model)
    updates, weights = [], []
    for k in selected:
        x, y = clients[k]
        local = copy.deepcopy(global_model)
        local_train(local, x, y)
        updates.append(flat_params(local) - theta)
        weights.append(float(len(x)) if weighting == "size" else 1.0)
    delta = aggregate(updates, weights=weights, denominator=denominator, clip_norm=clip_norm,
                      noise_multiplier=noise_multiplier, generator=generator, dim=theta.numel())
    set_flat_params(global_model, theta + server_lr * delta.to(theta))
    return delta


# ---------------------------------------------------------------- the DP-FedAvg loop (McMahan et al., ICLR 2018)
def ctx_clients(ctx, h: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The private split cut into ``h['clients']`` clients by ``h['partition']`` ('iid' | 'dirichlet',
    with ``h['alpha']``), seeded by the run's seed; also records K and the sizes in ``ctx.metrics``."""
    from ..training import dataset_tensors
    x, y = dataset_tensors(ctx.private_data)[:2]
    clients = client_tensors(x, y, int(h["clients"]), h["partition"], float(h.get("alpha", 0.5)), seed=ctx.seed)
    sizes = [len(c[1]) for c in clients]
    ctx.metrics.update({"clients": len(clients), "partition": h["partition"],
                        "client_size_min": min(sizes), "client_size_max": max(sizes)})
    if h["partition"] == "dirichlet":
        ctx.metrics["dirichlet_alpha"] = float(h["alpha"])
    return clients


def dp_fedavg(ctx, local_train: Callable[[nn.Module, torch.Tensor, torch.Tensor], nn.Module], h: dict) -> nn.Module:
    """DP-FedAvg with the fixed-denominator estimator (McMahan, Ramage, Talwar, Zhang, ICLR 2018, Alg. 1).

    Each round: Poisson-sample clients with rate q; each runs ``local_train`` from the global model and
    uploads Delta_k; the server adds N(0, (z S)^2 I) to sum_k clip(Delta_k, S) and divides by q K (the
    expected number of clients), then theta <- theta + server_lr * Delta (with optional server momentum).
    One client changes the clipped sum by at most S under add/remove-one-client, so each round is one
    Poisson-subsampled Gaussian mechanism with noise multiplier z and rate q (client-level DP);
    ``rounds`` of them compose in RDP. z is calibrated on the ledger so the planned rounds fit the budget.
    hparams used: clients, partition, alpha, client_rate, rounds, clip_norm, server_lr, server_momentum.
    """
    from ..privacy import ledger as L
    clients = ctx_clients(ctx, h)
    K, q, rounds, S = len(clients), float(h["client_rate"]), int(h["rounds"]), float(h["clip_norm"])
    z = L.calibrate_gaussian(ctx.epsilon, ctx.delta, rounds, q, prior_events=ctx.ledger.events) if ctx.private else 0.0
    ctx.metrics.update({"rounds": rounds, "client_rate": q, "noise_multiplier": z})
    model = ctx.build_student()
    g = torch.Generator().manual_seed(ctx.seed)
    velocity = torch.zeros_like(flat_params(model))
    for _ in ctx.progress(range(rounds), desc=f"{h.get('desc', 'dp-fedavg')} rounds"):
        selected = sample_clients(K, q, g)
        if ctx.private:
            ctx.ledger.record(L.subsampled_gaussian(z, q, steps=1))
        theta = flat_params(model)
        delta = fedavg_round(model, clients, selected, local_train=local_train, weighting="uniform",
                             denominator=q * K, clip_norm=S, noise_multiplier=z, server_lr=1.0, generator=g)
        velocity = float(h.get("server_momentum", 0.0)) * velocity + delta
        set_flat_params(model, theta + float(h.get("server_lr", 1.0)) * velocity)
    return model.eval()
