"""Numbers published in the methods' papers, joined with our measurements.

The data file ``reported_numbers.csv`` (next to this module) holds one row per
published number: method (our registry key), dataset (our dataset key), epsilon
(``inf`` for non-private), delta as published, accuracy in percent, the
published setting, kind (P = the paper or its official repository, S = the
paper's number restated by a later paper), the paper, where in it, the source
read and the quoted text. Only numbers traceable to the paper are in it.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

DATA_FILE = Path(__file__).with_name("reported_numbers.csv")
FIELDS = ["method", "dataset", "epsilon", "delta", "accuracy", "setting", "kind", "paper", "where", "source",
          "quote"]
OUT_COLS = ["method", "dataset", "epsilon", "delta", "reported_accuracy", "measured_mean", "measured_std",
            "measured_n", "difference", "nearest_epsilon", "nearest_mean", "nearest_std", "setting", "kind",
            "paper", "where", "source"]


def load_reported(path: Path | None = None) -> pd.DataFrame:
    df = pd.read_csv(path or DATA_FILE, dtype=str, keep_default_na=False)
    missing = [f for f in FIELDS if f not in df.columns]
    if missing:
        raise ValueError(f"{path or DATA_FILE}: missing columns {missing}")
    bad = df[~df["kind"].isin(["P", "S"])]
    if len(bad):
        raise ValueError(f"{path or DATA_FILE}: kind must be P or S (rows {list(bad.index)})")
    df["epsilon"] = df["epsilon"].map(lambda s: math.inf if s.strip().lower() in ("inf", "∞") else float(s))
    df["accuracy"] = df["accuracy"].astype(float)
    return df


def reproduced_vs_reported(lb: pd.DataFrame, path: Path | None = None) -> pd.DataFrame:
    """Every reported number with our mean at the same (method, dataset, epsilon).

    Where we did not run that epsilon, the nearest epsilon we ran that is not
    larger (a budget at most as generous) is given in the ``nearest_*`` columns.
    Accuracies in percent; ``difference`` = measured - reported.
    """
    rep = load_reported(path)
    ok = lb[lb["acc_mean"].notna()] if len(lb) else lb
    rows = []
    for _, r in rep.iterrows():
        mine = ok[(ok["method"] == r["method"]) & (ok["dataset"] == r["dataset"])] if len(ok) else ok
        same = mine[mine["epsilon"] == r["epsilon"]] if len(mine) else mine
        row = {"method": r["method"], "dataset": r["dataset"], "epsilon": r["epsilon"], "delta": r["delta"],
               "reported_accuracy": r["accuracy"], "measured_mean": math.nan, "measured_std": math.nan,
               "measured_n": math.nan, "difference": math.nan, "nearest_epsilon": math.nan,
               "nearest_mean": math.nan, "nearest_std": math.nan,
               **{k: r[k] for k in ("setting", "kind", "paper", "where", "source")}}
        if len(same):
            s = same.iloc[0]
            row.update(measured_mean=s["acc_mean"], measured_std=s["acc_std"], measured_n=s["n_seeds"],
                       difference=100 * s["acc_mean"] - r["accuracy"])
        elif len(mine):
            below = mine[mine["epsilon"] < r["epsilon"]].sort_values("epsilon")
            if len(below):
                s = below.iloc[-1]
                row.update(nearest_epsilon=s["epsilon"], nearest_mean=s["acc_mean"], nearest_std=s["acc_std"])
        rows.append(row)
    return pd.DataFrame(rows, columns=OUT_COLS)
