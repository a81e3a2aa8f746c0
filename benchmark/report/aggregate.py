"""Aggregation over seeds: leaderboards, ranks, average ranks, cost, audit, ablations.

All functions take the per-cell frame of ``load.select_cells`` (or, for
ablations, the full attempt frame) and return sorted DataFrames, so every
writer downstream is deterministic.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

# The paper's three groups, then the non-private references.
GROUPS = ("data-sensitive", "label-sensitive", "federated", "non-private")
GROUP_TITLES = {
    "data-sensitive": "Data-sensitive (record-level DP)",
    "label-sensitive": "Label-sensitive (label DP)",
    "federated": "Federated",
    "non-private": "Non-private references (ε = ∞)",
}
FAMILY_ORDER = ("dpsd", "dp-training", "dp-generative", "dp-data-free", "label-dp", "federated",
                "reference", "data-free-kd")
NON_PRIVATE_FAMILIES = ("reference", "data-free-kd")
UNIT_ABBR = {"record": "R", "label": "L", "client": "C", "none": "–"}
UNIT_TEXT = {
    "record": "record-level (ε, δ)-DP: neighbouring datasets differ in one example",
    "label": "label-level DP: only the labels are protected, features are treated as public",
    "client": "client-level DP: neighbouring datasets differ in all data of one client",
}


def group_of(family: str, unit: str, epsilon: float) -> str:
    """The paper's group of a row. Private = a finite ε and a privacy unit; so a data-free KD
    method run with a DP annotation step (finite ε, unit record) is a data-sensitive row."""
    if unit == "none" or math.isinf(epsilon):
        return "non-private"
    if family == "label-dp" or unit == "label":
        return "label-sensitive"
    if family == "federated":
        return "federated"
    return "data-sensitive"


def family_rank(family: str) -> int:
    return FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER)


def _std(x: pd.Series) -> float:
    x = x.dropna()
    return float(x.std(ddof=1)) if len(x) > 1 else float("nan")


def _mean(x: pd.Series) -> float:
    x = x.dropna()
    return float(x.mean()) if len(x) else float("nan")


def _max(x: pd.Series) -> float:
    x = x.dropna()
    return float(x.max()) if len(x) else float("nan")


LEADER_COLS = [
    "dataset", "epsilon", "group", "family", "method", "privacy_unit", "delta", "n_seeds", "n_failed",
    "acc_mean", "acc_std", "rank", "rank_in_unit", "best", "epsilon_spent_max", "synth_acc_mean",
    "synth_acc_std", "synth_best", "teacher_queries_mean", "wall_time_s_mean", "audit_epsilon_lb_max",
    "audit_violates", "seeds", "config_hashes", "n_hparam_sets", "failed_errors",
]


def leaderboard(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, epsilon, method): mean and sample std (ddof=1) over ok seeds.

    ``n_seeds`` counts ok seeds, ``n_failed`` failed ones. ``rank`` is the rank
    (1 = best, ties share the lower rank) of ``acc_mean`` among the private
    methods of the same (dataset, epsilon), whatever their privacy unit;
    ``rank_in_unit`` ranks only among methods with the same unit. ``best``
    marks the top private accuracy (ties all marked).
    """
    if cells.empty:
        return pd.DataFrame(columns=LEADER_COLS)
    key = ["dataset", "epsilon", "method"]
    c = cells.assign(_ok=cells["status"] == "ok")
    if "hparams" not in c:
        c = c.assign(hparams="")
    ok = c[c["_ok"]]
    g_all = c.groupby(key, sort=True)
    lb = g_all.agg(family=("family", "last"), privacy_unit=("privacy_unit", "last"),
                   n_attempts=("seed", "size"), n_seeds=("_ok", "sum"),
                   delta=("delta", "max"),
                   seeds=("seed", lambda x: " ".join(str(v) for v in sorted(x))),
                   config_hashes=("config_hash", lambda x: " ".join(sorted(set(h[:8] for h in x)))),
                   n_hparam_sets=("hparams", "nunique"))  # config hashes differ by seed; hparams must not
    lb["n_seeds"] = lb["n_seeds"].astype(int)
    lb["n_failed"] = lb["n_attempts"] - lb["n_seeds"]
    okv = ok[key + ["test_accuracy", "epsilon_spent", "synthetic_downstream_accuracy", "teacher_queries",
                    "wall_time_s", "audit_epsilon_lower_bound"]]
    okv = okv.assign(_viol=ok["audit_violates_claim"].map({True: 1.0, False: 0.0}))
    stats = okv.groupby(key, sort=True).agg(
        acc_mean=("test_accuracy", "mean"), acc_std=("test_accuracy", "std"),
        epsilon_spent_max=("epsilon_spent", "max"),
        synth_acc_mean=("synthetic_downstream_accuracy", "mean"),
        synth_acc_std=("synthetic_downstream_accuracy", "std"),
        teacher_queries_mean=("teacher_queries", "mean"), wall_time_s_mean=("wall_time_s", "mean"),
        audit_epsilon_lb_max=("audit_epsilon_lower_bound", "max"), _viol=("_viol", "max"))
    lb = lb.join(stats)
    lb["audit_violates"] = lb["_viol"].map(lambda v: None if pd.isna(v) else bool(v > 0)).astype(object)
    fe = c[~c["_ok"]].groupby(key, sort=True)["error"].agg(
        lambda x: " | ".join(sorted(set(e for e in x if isinstance(e, str)))))
    lb["failed_errors"] = fe.reindex(lb.index).fillna("")
    lb = lb.reset_index()
    lb["group"] = [group_of(f, u, e) for f, u, e in zip(lb["family"], lb["privacy_unit"], lb["epsilon"])]
    lb["rank"] = np.nan
    lb["rank_in_unit"] = np.nan
    priv = (lb["group"] != "non-private") & lb["acc_mean"].notna()
    pv = lb[priv]
    lb.loc[priv, "rank"] = pv.groupby(["dataset", "epsilon"])["acc_mean"].rank(ascending=False, method="min")
    lb.loc[priv, "rank_in_unit"] = pv.groupby(["dataset", "epsilon", "privacy_unit"])["acc_mean"] \
        .rank(ascending=False, method="min")
    lb["best"] = lb["rank"] == 1
    spriv = (lb["group"] != "non-private") & lb["synth_acc_mean"].notna()
    top = lb[spriv].groupby(["dataset", "epsilon"])["synth_acc_mean"].transform("max")
    lb["synth_best"] = False
    lb.loc[spriv, "synth_best"] = lb.loc[spriv, "synth_acc_mean"] == top
    return sort_leaderboard(lb)[LEADER_COLS]


def sort_leaderboard(lb: pd.DataFrame) -> pd.DataFrame:
    lb = lb.copy()
    lb["_g"] = lb["group"].map(GROUPS.index)
    lb["_f"] = lb["family"].map(family_rank)
    lb = lb.sort_values(["dataset", "epsilon", "_g", "_f", "family", "method"], kind="mergesort")
    return lb.drop(columns=["_g", "_f"]).reset_index(drop=True)


def average_ranks(lb: pd.DataFrame) -> pd.DataFrame:
    """Per private method: mean rank per dataset (over its epsilons) and overall.

    The overall value averages over every (dataset, epsilon) column in which the
    method has a ranked result; ``n_cells`` says how many, so that coverage is
    visible (a method run on fewer cells is not comparable one to one).
    """
    r = lb[lb["rank"].notna()]
    cols = ["method", "family", "privacy_unit"]
    if r.empty:
        return pd.DataFrame(columns=cols + ["avg_rank", "n_cells"])
    per_ds = r.pivot_table(index="method", columns="dataset", values="rank", aggfunc="mean")
    per_ds = per_ds.reindex(sorted(per_ds.columns), axis=1)
    overall = r.groupby("method")["rank"].agg(["mean", "count"])
    meta = r.groupby("method")[["family", "privacy_unit"]].last()
    out = meta.join(per_ds).join(overall.rename(columns={"mean": "avg_rank", "count": "n_cells"}))
    out = out.reset_index().sort_values(["avg_rank", "method"], kind="mergesort").reset_index(drop=True)
    out["n_cells"] = out["n_cells"].astype(int)
    return out


def cost_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, method), over ok runs: wall time, CPU time, peak memory, teacher queries."""
    ok = cells[cells["status"] == "ok"]
    cols = ["dataset", "family", "method", "n_runs", "wall_time_s_mean", "wall_time_s_max",
            "cpu_time_s_mean", "peak_memory_mb_max", "teacher_queries_mean"]
    if ok.empty:
        return pd.DataFrame(columns=cols)
    out = ok.groupby(["dataset", "method"], sort=True).agg(
        family=("family", "last"), n_runs=("seed", "size"), wall_time_s_mean=("wall_time_s", "mean"),
        wall_time_s_max=("wall_time_s", "max"), cpu_time_s_mean=("cpu_time_s", "mean"),
        peak_memory_mb_max=("peak_memory_mb", "max"), teacher_queries_mean=("teacher_queries", "mean"))
    return out.reset_index()[cols]


def audit_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Claimed epsilon vs. the empirical lower bound, per (dataset, epsilon, method), where audited."""
    cols = ["dataset", "epsilon", "method", "privacy_unit", "n_audited", "epsilon_claimed",
            "epsilon_lower_bound_max", "mia_auc_mean", "tpr_at_1pct_fpr_mean", "violates_claim"]
    ok = cells[(cells["status"] == "ok")]
    audited = ok[ok[["audit_mia_auc", "audit_epsilon_lower_bound", "audit_tpr_at_1pct_fpr"]].notna().any(axis=1)
                 | ok["audit_violates_claim"].notna()]
    if audited.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for (ds, eps, m), g in audited.groupby(["dataset", "epsilon", "method"], sort=True):
        claimed = _max(g["epsilon_spent"])
        if math.isnan(claimed):
            claimed = eps
        v = g["audit_violates_claim"].dropna()
        rows.append({"dataset": ds, "epsilon": eps, "method": m, "privacy_unit": g["privacy_unit"].iloc[-1],
                     "n_audited": len(g), "epsilon_claimed": claimed,
                     "epsilon_lower_bound_max": _max(g["audit_epsilon_lower_bound"]),
                     "mia_auc_mean": _mean(g["audit_mia_auc"]),
                     "tpr_at_1pct_fpr_mean": _mean(g["audit_tpr_at_1pct_fpr"]),
                     "violates_claim": bool(v.astype(bool).any()) if len(v) else None})
    out = pd.DataFrame(rows, columns=cols)
    out["violates_claim"] = out["violates_claim"].astype(object)
    return out


def failures(df: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Cells whose chosen attempt failed (shown, never dropped)."""
    f = cells[cells["status"] != "ok"]
    return f[["dataset", "epsilon", "method", "seed", "config_hash", "finished_at", "error", "path"]] \
        .reset_index(drop=True)


def ablations(df: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Variants of one method that differ in hyperparameters, grouped by the differing ones.

    Considered: every ok attempt with an ablation tag, and every ok attempt of a
    ``dpsd``-family method (all config hashes, newest attempt per hash and seed).
    For each (dataset, method) the hyperparameters whose values differ between
    these attempts define the variant label; a (dataset, method) with a single
    variant is not an ablation and is left out.
    """
    cols = ["dataset", "method", "ablation", "variant", "epsilon", "n_seeds", "acc_mean", "acc_std",
            "synth_acc_mean", "config_hashes"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    pool = df[(df["status"] == "ok") & (df["ablation"].notna() | (df["family"] == "dpsd"))]
    pool = pool.sort_values(["finished_at", "path"], kind="mergesort") \
        .drop_duplicates(["dataset", "method", "config_hash", "epsilon", "seed"], keep="last")
    rows = []
    for (ds, m), g in pool.groupby(["dataset", "method"], sort=True):
        hps = {h: json.loads(h) for h in set(g["hparams"])}
        keys = sorted(set().union(*[set(v) for v in hps.values()])) if hps else []
        varying = [k for k in keys if len({json.dumps(v.get(k), sort_keys=True) for v in hps.values()}) > 1]
        if not varying:
            continue

        def label(h, varying=varying, hps=hps):
            return ", ".join(f"{k}={_fmt_val(hps[h].get(k))}" for k in varying)
        g = g.assign(variant=g["hparams"].map(label), ablation=g["ablation"].fillna("(main runs)"))
        for (var, eps), gg in g.groupby(["variant", "epsilon"], sort=True):
            rows.append({"dataset": ds, "method": m, "ablation": " ".join(sorted(set(gg["ablation"]))),
                         "variant": var, "epsilon": eps, "n_seeds": int(gg["seed"].nunique()),
                         "acc_mean": _mean(gg["test_accuracy"]), "acc_std": _std(gg["test_accuracy"]),
                         "synth_acc_mean": _mean(gg["synthetic_downstream_accuracy"]),
                         "config_hashes": " ".join(sorted(set(h[:8] for h in gg["config_hash"])))})
    return pd.DataFrame(rows, columns=cols)


def _fmt_val(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if v is None:
        return "default"
    if isinstance(v, (list, dict)):
        return json.dumps(v, sort_keys=True)
    return str(v)
