"""Empirical privacy audit: membership inference against a released classifier.

The runner calls :func:`audit_classifier` on every released classifier whose
method touched private data (directly, or through a teacher trained on it).
Members are records of the private ``train`` split (the teacher's training
data); non-members are records of the ``eval`` split. Two attacks score every
record (higher score = "member"):

* ``loss`` - the loss-threshold attack of Yeom et al. (CSF 2018): score is the
  negative cross-entropy of the record's true label.
* ``lira`` - offline LiRA (Carlini et al., "Membership Inference Attacks From
  First Principles", IEEE S&P 2022): ``K`` reference models of the released
  architecture are trained on random subsets of a *reference* pool that holds
  neither members nor non-members (the public pool); every record's scaled
  logit ``phi = log p_y - log(1 - p_y)`` under the released model is compared
  to the Gaussian fitted to its ``phi`` under the reference ("OUT") models
  (per-record mean, pooled standard deviation, as the paper recommends for few
  reference models); the score is the one-sided z-statistic. Its cost is
  bounded: ``K`` (default 4) trainings of ``ref_epochs`` epochs on the pool.

From scores to an epsilon lower bound. (epsilon, delta)-DP bounds every test
between "record in" and "record out": for any rejection region R,
``P_in(R) <= e^eps P_out(R) + delta`` and the same with in/out swapped, so
``eps >= log((TPR - delta) / FPR)`` and ``eps >= log((TNR - delta) / FNR)``.
The records are split at random into a *selection* half and an *evaluation*
half. On the selection half every attack, threshold and orientation is scored
by its Clopper-Pearson bound and the best one is fixed; on the evaluation half
that single pre-chosen test is evaluated once, with a one-sided Clopper-Pearson
lower bound on its TPR and upper bound on its FPR, each at confidence
1 - alpha/2 (Bonferroni), so the reported ``epsilon_lower_bound`` holds with
probability >= 1 - alpha (default 95%) jointly. ``violates_claim`` is true when
that bound exceeds the run's ``epsilon_spent``.

Caveat (stated in docs/trust.md): members and non-members are fixed splits,
not records whose inclusion was randomised independently, so the bound is a
statistical statement about the average record under the assumption that the
two splits are i.i.d. from one distribution (the usual MIA-audit practice, e.g.
Jagielski et al. NeurIPS 2020 use per-model trials instead); it is not a
formal audit in the sense of Steinke, Nasr & Jagielski (NeurIPS 2023). Its
power is capped by the number of records: :func:`max_detectable_epsilon` is
the bound a *perfect* attack would reach, reported with every audit.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.stats import beta, rankdata
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

ATTACKS = ("loss", "lira")


# ------------------------------------------------------------------ statistics
def cp_lower(k, n, alpha):
    """One-sided Clopper-Pearson lower bound on a binomial rate at confidence 1 - alpha."""
    k = np.asarray(k, dtype=float)
    n = np.broadcast_to(np.asarray(n, dtype=float), k.shape)
    out = np.zeros_like(k)
    m = k > 0
    out[m] = beta.ppf(alpha, k[m], n[m] - k[m] + 1)
    return out


def cp_upper(k, n, alpha):
    """One-sided Clopper-Pearson upper bound on a binomial rate at confidence 1 - alpha."""
    k = np.asarray(k, dtype=float)
    n = np.broadcast_to(np.asarray(n, dtype=float), k.shape)
    out = np.ones_like(k)
    m = k < n
    out[m] = beta.ppf(1 - alpha, k[m] + 1, n[m] - k[m])
    return out


def _log_ratio(num, den):
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where((num > 0) & (den > 0), np.log(np.maximum(num, 1e-300) / np.maximum(den, 1e-300)), -np.inf)
    return r


def epsilon_bound_from_counts(k_in, n_in, k_out, n_out, delta, alpha=0.05):
    """Lower bound on epsilon from a test that flags ``k_in`` of ``n_in`` members and
    ``k_out`` of ``n_out`` non-members, valid with probability >= 1 - alpha.

    Uses TPR_lo and FPR_hi (each one-sided Clopper-Pearson at 1 - alpha/2) in both
    DP inequalities ``TPR <= e^eps FPR + delta`` and ``TNR <= e^eps FNR + delta``.
    Returns the larger of the two (may be negative or -inf: no evidence).
    """
    tpr_lo = cp_lower(k_in, n_in, alpha / 2)
    fpr_hi = cp_upper(k_out, n_out, alpha / 2)
    b1 = _log_ratio(tpr_lo - delta, fpr_hi)
    b2 = _log_ratio((1.0 - fpr_hi) - delta, 1.0 - tpr_lo)
    return np.maximum(b1, b2)


def max_detectable_epsilon(n_in: int, n_out: int, delta: float, alpha: float = 0.05) -> float:
    """The bound a perfect attack (all members flagged, no non-member) reaches on
    ``n_in`` members and ``n_out`` non-members: the audit's ceiling."""
    return float(epsilon_bound_from_counts(n_in, n_in, 0, n_out, delta, alpha))


def roc_auc(s_in: np.ndarray, s_out: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count one half)."""
    ranks = rankdata(np.concatenate([s_in, s_out]))  # average ranks over ties
    n1, n0 = len(s_in), len(s_out)
    u = ranks[:n1].sum() - n1 * (n1 + 1) / 2.0
    return float(u / (n1 * n0))


def _counts_at_thresholds(s_in, s_out, thresholds):
    """Number of members / non-members with score >= t, for each threshold t."""
    si, so = np.sort(s_in), np.sort(s_out)
    k_in = len(si) - np.searchsorted(si, thresholds, side="left")
    k_out = len(so) - np.searchsorted(so, thresholds, side="left")
    return k_in, k_out


def tpr_at_fpr(s_in: np.ndarray, s_out: np.ndarray, fpr: float = 0.01) -> float:
    """Largest TPR of a threshold test (member iff score >= t) whose FPR <= ``fpr``."""
    t = np.concatenate([np.unique(np.concatenate([s_in, s_out])), [np.inf]])
    k_in, k_out = _counts_at_thresholds(s_in, s_out, t)
    ok = k_out / len(s_out) <= fpr + 1e-12
    return float((k_in[ok] / len(s_in)).max())


def _best_test(s_in, s_out, delta, alpha):
    """Best (threshold, orientation) by the confidence bound on these scores."""
    t = np.unique(np.concatenate([s_in, s_out]))
    k_in, k_out = _counts_at_thresholds(s_in, s_out, t)
    n_in, n_out = len(s_in), len(s_out)
    up = epsilon_bound_from_counts(k_in, n_in, k_out, n_out, delta, alpha)           # member iff s >= t
    down = epsilon_bound_from_counts(n_in - k_in, n_in, n_out - k_out, n_out, delta, alpha)  # member iff s < t
    iu, idn = int(np.argmax(up)), int(np.argmax(down))
    if up[iu] >= down[idn]:
        return float(up[iu]), float(t[iu]), +1
    return float(down[idn]), float(t[idn]), -1


def _apply_test(s_in, s_out, threshold, orientation):
    if orientation > 0:
        return int((s_in >= threshold).sum()), int((s_out >= threshold).sum())
    return int((s_in < threshold).sum()), int((s_out < threshold).sum())


def select_and_bound(scores: dict[str, tuple[np.ndarray, np.ndarray]], delta: float, *,
                     seed: int = 0, alpha: float = 0.05, select_fraction: float = 0.5) -> dict:
    """Choose attack, threshold and orientation on a random selection part of the
    records; evaluate that one test on the rest. Every attack's arrays must be
    aligned (same records in the same order)."""
    names = list(scores)
    n_in, n_out = len(scores[names[0]][0]), len(scores[names[0]][1])
    rng = np.random.default_rng(seed)
    perm_in, perm_out = rng.permutation(n_in), rng.permutation(n_out)
    c_in, c_out = int(round(n_in * select_fraction)), int(round(n_out * select_fraction))
    sel_in, ev_in = perm_in[:c_in], perm_in[c_in:]
    sel_out, ev_out = perm_out[:c_out], perm_out[c_out:]
    best = None
    for name in names:
        si, so = scores[name]
        b, thr, orient = _best_test(si[sel_in], so[sel_out], delta, alpha)
        if best is None or b > best[0]:
            best = (b, name, thr, orient)
    _, name, thr, orient = best
    si, so = scores[name]
    k_in, k_out = _apply_test(si[ev_in], so[ev_out], thr, orient)
    lb = float(epsilon_bound_from_counts(k_in, len(ev_in), k_out, len(ev_out), delta, alpha))
    return {"attack": name, "threshold": thr, "orientation": "member_if_above" if orient > 0 else "member_if_below",
            "eval_members": len(ev_in), "eval_nonmembers": len(ev_out),
            "eval_tpr": k_in / max(len(ev_in), 1), "eval_fpr": k_out / max(len(ev_out), 1),
            "epsilon_lower_bound": max(0.0, lb),
            "max_detectable_epsilon": max_detectable_epsilon(len(ev_in), len(ev_out), delta, alpha)}


# ------------------------------------------------------------------ model scoring
def _as_xy(ds: Dataset, label_model: nn.Module | None = None, device="cpu"):
    """Stack a dataset of (x, y) (or (x,) pseudo-labelled by ``label_model``) into tensors."""
    if isinstance(ds, TensorDataset):
        tensors = ds.tensors
    else:
        batches = list(DataLoader(ds, batch_size=1024, shuffle=False))
        tensors = tuple(torch.cat([b[i] for b in batches]) for i in range(len(batches[0])))
    x = tensors[0].float()
    if len(tensors) >= 2:
        return x, tensors[1].long()
    if label_model is None:
        raise ValueError("reference data has no labels and no model to label it")
    return x, _logits(label_model, x, device).argmax(1)


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, device, batch_size: int = 1024) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        out = [model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out)


def scaled_logit(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """LiRA's phi = log p_y - log(1 - p_y), computed stably from logits."""
    logp = torch.log_softmax(logits.double(), dim=1)
    lp_y = logp.gather(1, y[:, None]).squeeze(1)
    others = logp.clone()
    others.scatter_(1, y[:, None], -math.inf)
    return (lp_y - torch.logsumexp(others, dim=1)).numpy()


def loss_scores(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Yeom et al.: score = -cross-entropy of the true label."""
    return (-nn.functional.cross_entropy(logits.double(), y, reduction="none")).numpy()


def lira_offline_scores(phi_target: np.ndarray, phi_ref: np.ndarray) -> np.ndarray:
    """Offline LiRA z-score: phi_ref is (K, n) from OUT reference models; higher = member."""
    mu = phi_ref.mean(0)
    k = phi_ref.shape[0]
    sd = float(np.sqrt(phi_ref.var(0, ddof=1).mean())) if k > 1 else float(phi_ref.std())
    return (phi_target - mu) / max(sd, 1e-6)


def _finite(scores: np.ndarray) -> np.ndarray:
    """NaN (a diverged model) ranks lowest; infinities are clipped, so results stay valid JSON."""
    return np.nan_to_num(np.asarray(scores, dtype=float), nan=-1e300, posinf=1e300, neginf=-1e300)


def _fresh_copy(model: nn.Module) -> nn.Module:
    """Same architecture, fresh parameters, no hooks (e.g. ones Opacus left on a DP-SGD model)."""
    m = copy.deepcopy(model)
    for mod in m.modules():
        for hooks in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            if isinstance(getattr(mod, hooks, None), dict):
                getattr(mod, hooks).clear()
        if hasattr(mod, "reset_parameters"):
            mod.reset_parameters()
    for p in m.parameters():
        p.requires_grad_(True)
        for attr in ("grad_sample", "summed_grad"):
            if hasattr(p, attr):
                delattr(p, attr)
    return m


def default_train(model: nn.Module, dataset: Dataset, seed: int, *, epochs: int = 30,
                  lr: float = 1e-3, batch_size: int = 64, device="cpu") -> nn.Module:
    """Plain non-private training (Adam, cross-entropy) for reference models."""
    g = torch.Generator().manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=g)
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x.to(device)), y.to(device)).backward()
            opt.step()
    return model.eval()


# ------------------------------------------------------------------ the audit
def audit_classifier(model: nn.Module, members: Dataset, nonmembers: Dataset, *, delta: float,
                     epsilon_spent: float | None, reference: Dataset | None = None, device="cpu",
                     seed: int = 0, num_classes: int | None = None,
                     build_model: Callable[[], nn.Module] | None = None,
                     train_fn: Callable[[nn.Module, Dataset, int], nn.Module] | None = None,
                     max_records: int = 5000, num_reference_models: int = 4, ref_fraction: float = 0.8,
                     ref_epochs: int = 30, alpha: float = 0.05, select_fraction: float = 0.5) -> dict:
    """Membership-inference audit of a released classifier.

    members / nonmembers: datasets of (image, label); at most ``max_records`` of
    each are used (sampled with ``seed``). reference: a pool disjoint from both
    (the public pool; (image, label) or images only, then labelled by ``model``);
    without it only the loss attack runs. build_model: fresh instance of the
    released architecture (default: deep copy of ``model`` with parameters reset).
    train_fn(model, dataset, seed) -> trained model (default: :func:`default_train`).

    Returns ``{mia_auc, tpr_at_1pct_fpr, epsilon_lower_bound, violates_claim, ...}``:
    AUC and TPR@1%FPR are point estimates of the strongest attack (by AUC) on all
    records; ``epsilon_lower_bound`` is the (1 - alpha)-confidence bound of the
    test chosen on the selection split and evaluated on the other split.
    """
    device = torch.device(device)
    rng = np.random.default_rng(seed)
    x_in, y_in = _as_xy(members)
    x_out, y_out = _as_xy(nonmembers)
    if len(x_in) > max_records:
        idx = torch.as_tensor(rng.choice(len(x_in), max_records, replace=False))
        x_in, y_in = x_in[idx], y_in[idx]
    if len(x_out) > max_records:
        idx = torch.as_tensor(rng.choice(len(x_out), max_records, replace=False))
        x_out, y_out = x_out[idx], y_out[idx]
    if min(len(x_in), len(x_out)) < 4:
        raise ValueError(f"audit needs at least 4 members and non-members, got {len(x_in)} / {len(x_out)}")

    x_all, y_all = torch.cat([x_in, x_out]), torch.cat([y_in, y_out])
    n_in = len(x_in)
    logits = _logits(model, x_all, device)
    if num_classes is not None and logits.shape[1] != num_classes:
        raise ValueError(f"the model outputs {logits.shape[1]} logits, expected {num_classes} classes")
    s = _finite(loss_scores(logits, y_all))
    scores = {"loss": (s[:n_in], s[n_in:])}

    if reference is not None and num_reference_models > 0:
        xr, yr = _as_xy(reference, label_model=model, device=device)
        phi_t = scaled_logit(logits, y_all)
        phis = []
        for k in range(num_reference_models):
            torch.manual_seed(seed * 1000 + k)
            sub = rng.choice(len(xr), max(1, int(round(ref_fraction * len(xr)))), replace=False)
            ref_ds = TensorDataset(xr[sub], yr[sub])
            fresh = build_model() if build_model is not None else _fresh_copy(model)
            fresh = fresh.to(device)
            if train_fn is not None:
                trained = train_fn(fresh, ref_ds, seed * 1000 + k)
            else:
                trained = default_train(fresh, ref_ds, seed * 1000 + k, epochs=ref_epochs, device=device)
            phis.append(scaled_logit(_logits(trained, x_all, device), y_all))
        z = _finite(lira_offline_scores(phi_t, np.stack(phis)))
        scores["lira"] = (z[:n_in], z[n_in:])

    per_attack = {name: {"auc": roc_auc(si, so), "tpr_at_1pct_fpr": tpr_at_fpr(si, so, 0.01)}
                  for name, (si, so) in scores.items()}
    strongest = max(per_attack, key=lambda a: per_attack[a]["auc"])
    sel = select_and_bound(scores, delta, seed=seed, alpha=alpha, select_fraction=select_fraction)
    lb = sel["epsilon_lower_bound"]
    violates = None if epsilon_spent is None else bool(math.isfinite(epsilon_spent) and lb > epsilon_spent)
    return {
        "mia_auc": per_attack[strongest]["auc"],
        "tpr_at_1pct_fpr": per_attack[strongest]["tpr_at_1pct_fpr"],
        "epsilon_lower_bound": lb,
        "violates_claim": violates,
        "strongest_attack": strongest,
        "attacks": per_attack,
        "bound": sel,
        "members": n_in, "nonmembers": len(x_out), "delta": delta, "confidence": 1 - alpha,
        "reference_models": num_reference_models if "lira" in scores else 0,
    }


# ------------------------------------------------------------------ runner entry point
#: What the runner's audit costs, at most: records scored per side, reference models and
#: their optimiser steps (plain Adam on the public pool, batch 64).
AUDIT_SETTINGS = {"max_records": 5000, "reference_models": 4, "ref_fraction": 0.8, "ref_steps": 150,
                  "ref_batch_size": 64, "ref_lr": 1e-3, "confidence": 0.95}


def _privacy_unit(method: str) -> str | None:
    try:
        from .. import registry
        return registry.discover()[method].privacy_unit
    except Exception:  # noqa: BLE001 - a unit we cannot read is treated as a record-level claim
        return "record"


def audit_settings() -> dict:
    """:data:`AUDIT_SETTINGS`, with ``$BENCHMARK_AUDIT_SETTINGS`` ("key=value,key=value")
    applied; used by the tests to make the audit cheap. The settings used go into the result."""
    import os
    s = dict(AUDIT_SETTINGS)
    for pair in filter(None, os.environ.get("BENCHMARK_AUDIT_SETTINGS", "").split(",")):
        key, _, value = pair.partition("=")
        key = key.strip()
        if key not in s:
            raise ValueError(f"BENCHMARK_AUDIT_SETTINGS: unknown key {key!r}; known: {', '.join(s)}")
        s[key] = type(s[key])(value)
    return s


def audit_result(*, config: dict, model: nn.Module, splits, epsilon_spent: float | None, device) -> dict:
    """The audit the runner stores as ``result["audit"]``: members = ``splits.private``,
    non-members = ``splits.eval``, reference pool = the public pool with its labels
    (held by the auditor only). Reference models share the released model's architecture."""
    import logging
    import time
    import traceback

    s = audit_settings()
    started = time.perf_counter()
    try:
        out = _audit_result(config, model, splits, epsilon_spent, device, s)
    except Exception as exc:  # noqa: BLE001 - a broken audit must not throw away a finished run
        logging.getLogger("benchmark").warning("privacy audit failed: %s", exc)
        out = {"mia_auc": None, "tpr_at_1pct_fpr": None, "epsilon_lower_bound": None, "violates_claim": None,
               "error": traceback.format_exc()}
    out["settings"] = s
    out["audit_time_s"] = round(time.perf_counter() - started, 3)
    return out


def _audit_result(config, model, splits, epsilon_spent, device, s) -> dict:
    from ..training import train_classifier
    seed = int(config.get("seed", 0))
    reference = TensorDataset(splits.public.tensors[0], splits.public_labels)

    def train_fn(fresh, dataset, ref_seed):
        # Reference models depend on the architecture, the public pool and the seed only, never on
        # the audited method: they are cached, so a grid trains them once per architecture.
        import hashlib

        from ..training.teachers import cached_model
        x, y = dataset.tensors
        digest = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()[:16]
        key = {"kind": "audit-reference", "dataset": config.get("dataset"), "seed": ref_seed, "data": digest,
               "arch": hashlib.sha256(repr(fresh).encode()).hexdigest()[:16],
               "recipe": {k: s[k] for k in ("ref_steps", "ref_batch_size", "ref_lr")}}
        template = copy.deepcopy(fresh).cpu()
        return cached_model(key, lambda: copy.deepcopy(template), lambda m: train_classifier(
            m, dataset, epochs=1, min_steps=s["ref_steps"], batch_size=s["ref_batch_size"], lr=s["ref_lr"],
            device=device, seed=ref_seed, desc="audit reference").cpu()).to(device)

    out = audit_classifier(model, splits.private, splits.eval, delta=float(config["delta"]),
                           epsilon_spent=epsilon_spent, reference=reference, device=device, seed=seed,
                           num_classes=splits.num_classes, build_model=lambda: _fresh_copy(model), train_fn=train_fn,
                           max_records=s["max_records"], num_reference_models=s["reference_models"],
                           ref_fraction=s["ref_fraction"], alpha=1 - s["confidence"])
    unit = config.get("privacy_unit") or _privacy_unit(config["method"])
    out["privacy_unit"] = unit
    if unit != "record" and out["violates_claim"] is not None:
        # label-DP protects labels only (membership of the features is not claimed); client-level
        # guarantees are stated for whole clients. The bound is reported, not compared.
        out["violates_claim"] = None
    return out
