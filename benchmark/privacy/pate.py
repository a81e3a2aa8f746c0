"""PATE's privacy analysis: noisy-max aggregators and their (data-dependent) Renyi DP.

Implements, with numpy/scipy only, the accounting of

* **LNMax** (Papernot et al., "Semi-supervised knowledge transfer for deep learning from
  private training data", ICLR 2017): Laplace noise ``Lap(1/gamma)`` on each vote count,
  then argmax. One query is ``2*gamma``-DP (changing one teacher moves one vote: L1
  sensitivity 2). Data-dependent bound: the moments-accountant Theorem 3 with the
  Laplace tail bound on ``q`` (Lemma 4), converted to RDP by ``rdp(l + 1) = alpha(l) / l``.
* **GNMax** and **Confident-GNMax** (Papernot et al., "Scalable private learning with
  PATE", ICLR 2018): Gaussian noise ``N(0, sigma^2)`` on each count, then argmax,
  ``(lambda, lambda / sigma^2)``-RDP data-independently (Prop. 8); data-dependent via
  Theorem 6 with ``q`` from the union bound of Prop. 7. Confident-GNMax first checks
  ``max_j n_j + N(0, sigma1^2) >= T`` (a Gaussian mechanism on a sensitivity-1 statistic,
  ``lambda / (2 sigma1^2)``-RDP) and answers with GNMax(sigma2) only if it passes; the
  threshold step's data-dependent cost uses Theorem 6 with the exact probability of the
  less likely outcome (answer / no answer).

Every per-query bound is the minimum of the data-dependent and data-independent bounds,
each valid on its own (the data-dependent one only where the theorem's conditions hold).
Per-query RDP curves add up over queries (RDP composition).

The data-dependent epsilon is a function of the private votes and is **not itself
differentially private**; as in both PATE papers we report it without the smooth-
sensitivity sanitisation of Papernot et al. 2018, App. C (not implemented here). Every
event built from these curves says so in its ``note``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special, stats

NOT_PRIVATE_NOTE = ("data-dependent RDP computed from the private vote histograms; the reported epsilon "
                    "is not itself differentially private (no smooth-sensitivity sanitisation, as in "
                    "Papernot et al. 2017/2018)")


def _orders(orders: Sequence[float]) -> np.ndarray:
    o = np.asarray(orders, dtype=float)
    if np.any(o <= 1):
        raise ValueError("Renyi orders must be > 1")
    return o


def _log1mexp(x: float) -> float:
    """log(1 - exp(x)) for x <= 0, numerically stable."""
    if x > 0:
        raise ValueError("log1mexp needs x <= 0")
    if x == 0:
        return -math.inf
    return math.log1p(-math.exp(x)) if x < -math.log(2) else math.log(-math.expm1(x))


# ------------------------------------------------------------------ aggregators (the mechanisms)
def lnmax(votes: np.ndarray, gamma: float, rng: np.random.Generator) -> np.ndarray:
    """LNMax labels: argmax_j (n_j + Lap(1/gamma)) for each row of a (Q, C) vote histogram."""
    votes = np.asarray(votes, dtype=float)
    return np.argmax(votes + rng.laplace(0.0, 1.0 / gamma, size=votes.shape), axis=1)


def gnmax(votes: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """GNMax labels: argmax_j (n_j + N(0, sigma^2)) for each row."""
    votes = np.asarray(votes, dtype=float)
    return np.argmax(votes + rng.normal(0.0, sigma, size=votes.shape), axis=1)


def confident_screen(votes: np.ndarray, threshold: float, sigma1: float, rng: np.random.Generator) -> np.ndarray:
    """Confident-GNMax's noisy threshold check: max_j n_j + N(0, sigma1^2) >= T (boolean per row)."""
    votes = np.asarray(votes, dtype=float)
    return votes.max(axis=1) + rng.normal(0.0, sigma1, size=len(votes)) >= threshold


# ------------------------------------------------------------------ data-independent bounds
def rdp_gnmax_data_independent(sigma: float, orders: Sequence[float]) -> np.ndarray:
    """GNMax, one query: lambda / sigma^2 (Papernot et al. 2018, Prop. 8)."""
    return _orders(orders) / sigma**2


def rdp_threshold_data_independent(sigma1: float, orders: Sequence[float]) -> np.ndarray:
    """Noisy threshold on max vote (sensitivity 1), one query: lambda / (2 sigma1^2)."""
    return _orders(orders) / (2 * sigma1**2)


def rdp_pure_dp(eps: float, orders: Sequence[float]) -> np.ndarray:
    """Any eps-DP mechanism: min(eps, lambda eps^2 / 2) (moments accountant Thm 2 / Bun & Steinke)."""
    o = _orders(orders)
    return np.minimum(eps, 0.5 * o * eps**2)


# ------------------------------------------------------------------ bounds on q = Pr[M(D) != argmax]
def logq_gnmax(votes: Sequence[float], sigma: float) -> float:
    """log of Prop. 7's bound: q <= sum_{i != i*} Pr[N(0, 2 sigma^2) > n_i* - n_i] = 1/2 sum erfc(gap / 2 sigma)."""
    v = np.asarray(votes, dtype=float)
    top = int(np.argmax(v))
    gaps = v[top] - np.delete(v, top)
    return float(special.logsumexp(stats.norm.logsf(gaps, scale=math.sqrt(2.0) * sigma)))


def logq_lnmax(votes: Sequence[float], gamma: float) -> float:
    """log of PATE 2017's bound: q <= sum_{i != i*} (2 + gamma gap_i) / (4 exp(gamma gap_i))."""
    v = np.asarray(votes, dtype=float)
    top = int(np.argmax(v))
    g = gamma * (v[top] - np.delete(v, top))
    return float(special.logsumexp(np.log(2.0 + g) - math.log(4.0) - g))


def log_pr_answered(max_vote: float, threshold: float, sigma1: float) -> float:
    """log Pr[max vote + N(0, sigma1^2) >= T]."""
    return float(stats.norm.logsf(threshold - max_vote, scale=sigma1))


# ------------------------------------------------------------------ data-dependent bounds
def rdp_theorem6(logq: float, rdp_slope: float, orders: Sequence[float]) -> np.ndarray:
    """Papernot et al. 2018, Theorem 6, for a mechanism that is (mu, rdp_slope * mu)-RDP at every mu.

    Given q~ >= Pr[M(D) != i*] and orders mu1 >= lambda, mu2 > 1 with
    q~ <= exp((mu2 - 1) eps2) / (mu1/(mu1-1) * mu2/(mu2-1))^mu2 (and q~ exp(eps2) < 1):
        D_lambda <= 1/(lambda-1) log((1-q~) A^(lambda-1) + q~ B^(lambda-1)),
        A = (1-q~) / (1 - (q~ e^eps2)^((mu2-1)/mu2)),   B = e^eps1 / q~^(1/(mu1-1)).
    mu2 = sqrt(log(1/q~) / rdp_slope) (the paper's choice, Prop. 10; sigma sqrt(log 1/q~) for GNMax) and
    mu1 in {mu2 + 1, lambda}; the smallest valid value is returned, the data-independent
    ``rdp_slope * lambda`` where no choice satisfies the conditions.
    """
    o = _orders(orders)
    indep = rdp_slope * o
    if logq == -math.inf:
        return np.zeros_like(o)  # the output is fixed: no privacy loss
    if logq >= 0:
        return indep
    best = indep.copy()
    mu2 = math.sqrt(-logq / rdp_slope)
    if mu2 <= 1:
        return best
    eps2 = rdp_slope * mu2
    if logq + eps2 >= 0:  # A would not be positive
        return best
    log1q = _log1mexp(logq)
    log_a = log1q - _log1mexp((logq + eps2) * (1 - 1 / mu2))
    for mu1 in (np.full_like(o, mu2 + 1.0), np.maximum(o, mu2 + 1.0)):
        eps1 = rdp_slope * mu1
        cond = logq <= (mu2 - 1) * eps2 - mu2 * (np.log1p(1 / (mu1 - 1)) + math.log1p(1 / (mu2 - 1)))
        ok = cond & (o <= mu1)
        log_b = eps1 - logq / (mu1 - 1)
        val = np.logaddexp(log1q + (o - 1) * log_a, logq + (o - 1) * log_b) / (o - 1)
        best = np.where(ok, np.minimum(best, val), best)
    return best


def rdp_gnmax(votes: Sequence[float], sigma: float, orders: Sequence[float]) -> np.ndarray:
    """One GNMax query: min(Theorem 6 with Prop. 7's q, lambda / sigma^2)."""
    return rdp_theorem6(logq_gnmax(votes, sigma), 1.0 / sigma**2, orders)


def rdp_threshold(max_vote: float, threshold: float, sigma1: float, orders: Sequence[float]) -> np.ndarray:
    """Confident-GNMax threshold step: Theorem 6 on the binary outcome (answer or not), with q the
    exact probability of the less likely outcome, min with lambda / (2 sigma1^2)."""
    lp = log_pr_answered(max_vote, threshold, sigma1)
    logq = min(lp, _log1mexp(lp)) if lp < 0 else -math.inf
    return rdp_theorem6(logq, 1.0 / (2 * sigma1**2), orders)


def rdp_lnmax(votes: Sequence[float], gamma: float, orders: Sequence[float]) -> np.ndarray:
    """One LNMax query (PATE 2017): moments accountant Theorem 3 converted to RDP, min data-independent.

    The mechanism is eps = 2 gamma pure DP; with q from :func:`logq_lnmax` and q < 1/(e^eps + 1),
        alpha(l) <= log((1-q) ((1-q)/(1 - e^eps q))^l + q e^(eps l)),   RDP(l + 1) = alpha(l) / l.
    The theorem is for integer moments l, so an order lambda uses l = ceil(lambda) - 1 (RDP is
    non-decreasing in the order). Data-independent: min(eps, lambda eps^2 / 2).
    """
    o = _orders(orders)
    eps = 2.0 * gamma
    best = rdp_pure_dp(eps, o)
    logq = logq_lnmax(votes, gamma)
    if logq >= -math.log1p(math.exp(eps)):  # q >= 1/(e^eps + 1): Theorem 3 not applicable
        return best
    lm = np.ceil(o - 1e-12) - 1.0  # integer moment l >= 1
    log1q = _log1mexp(logq)
    t1 = log1q + lm * (log1q - _log1mexp(eps + logq))
    t2 = logq + eps * lm
    return np.minimum(best, np.logaddexp(t1, t2) / lm)


# ------------------------------------------------------------------ whole releases
def lnmax_release_rdp(votes: np.ndarray, gamma: float, orders: Sequence[float]) -> np.ndarray:
    """Per-query RDP curves (Q, len(orders)) of LNMax on each row of ``votes``."""
    return np.stack([rdp_lnmax(v, gamma, orders) for v in np.asarray(votes)])


def gnmax_release_rdp(votes: np.ndarray, sigma: float, orders: Sequence[float]) -> np.ndarray:
    """Per-query RDP curves (Q, len(orders)) of GNMax on each row of ``votes``."""
    return np.stack([rdp_gnmax(v, sigma, orders) for v in np.asarray(votes)])


def confident_gnmax_release_rdp(votes: np.ndarray, answered: np.ndarray, threshold: float, sigma1: float,
                                sigma2: float, orders: Sequence[float]) -> np.ndarray:
    """Per-query RDP curves of Confident-GNMax: every query pays its threshold step, answered
    queries also pay GNMax(sigma2)."""
    votes = np.asarray(votes)
    out = np.stack([rdp_threshold(float(v.max()), threshold, sigma1, orders) for v in votes])
    for i in np.flatnonzero(np.asarray(answered)):
        out[i] += rdp_gnmax(votes[i], sigma2, orders)
    return out


def largest_affordable_prefix(per_query_rdp: np.ndarray, fits) -> int:
    """Largest n such that ``fits(per_query_rdp[:n].sum(0))`` holds (``fits`` is monotone:
    more queries never cost less). Binary search; ``fits`` is called O(log Q) times."""
    cum = np.cumsum(per_query_rdp, axis=0)
    lo, hi = 0, len(per_query_rdp)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(cum[mid - 1]):
            lo = mid
        else:
            hi = mid - 1
    return lo


# ------------------------------------------------------------------ shared by the PATE-family methods
def shard_assignment(n: int, num_teachers: int, seed: int) -> np.ndarray:
    """Teacher index of each private record: independent uniform draws (seeded). With independent
    assignment, adding or removing one record changes the data of exactly one teacher (the
    coupling that PATE's sensitivity argument needs under add/remove adjacency)."""
    if num_teachers < 1:
        raise ValueError("need at least one teacher")
    return np.random.default_rng([seed, num_teachers, 0x9A7E]).integers(0, num_teachers, size=n)


def teacher_votes(ctx, num_teachers: int, queries, min_steps: int | None = None, batch_size: int = 1024) -> np.ndarray:
    """Train ``num_teachers`` teacher-architecture models on disjoint shards of ``ctx.private_data``
    (through the teacher cache; ``min_steps`` overrides the teacher recipe's step count, which is
    sized for one teacher on the whole private set) and return their vote histograms (Q, C) on ``queries``."""
    import torch
    from torch.utils.data import TensorDataset

    from ..training import dataset_tensors, predict_logits

    x, y = dataset_tensors(ctx.private_data)[:2]
    shard = torch.as_tensor(shard_assignment(len(x), num_teachers, ctx.seed))
    votes = np.zeros((len(queries), ctx.num_classes), dtype=np.int64)
    rows = np.arange(len(queries))
    for t in ctx.progress(range(num_teachers), desc="teachers"):
        idx = torch.nonzero(shard == t).flatten()
        if len(idx) == 0:
            continue  # an empty shard gives no teacher; its vote is simply absent
        teacher = ctx.train_teacher(TensorDataset(x[idx], y[idx]), tag=f"pate-shard-{t}-of-{num_teachers}",
                                    min_steps=min_steps)
        pred = predict_logits(teacher, queries, ctx.device, batch_size).argmax(1).numpy()
        np.add.at(votes, (rows, pred), 1)
    return votes


def train_student(ctx, images, labels, epochs: int, lr: float, batch_size: int, min_steps: int = 0):
    """The common student trained (supervised, Adam) on the labelled public queries."""
    import torch
    from torch.utils.data import TensorDataset

    from ..training import train_classifier

    student = ctx.build_student()
    if len(labels) == 0:
        ctx.log.warning("no public query was answered within the budget: the student stays untrained")
        return student.eval()
    data = TensorDataset(images, torch.as_tensor(labels, dtype=torch.long))
    return train_classifier(student, data, epochs=epochs, batch_size=batch_size, lr=lr, min_steps=min_steps,
                            device=ctx.device, seed=ctx.seed, progress=ctx.progress, desc="student")
