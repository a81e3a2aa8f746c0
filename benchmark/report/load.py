"""Reading the results store into one tidy DataFrame.

One JSON file per cell anywhere under ``results_dir`` (recursively); failed
attempts are ``*.failed.json``. Corrupt or foreign JSON files are skipped with
a warning that names them. Ledgers are not kept (only their length), so ten
thousand files fit easily in memory.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import pandas as pd

try:  # optional fast path; the standard library is the fallback
    import orjson as _orjson  # type: ignore

    def _loads(data: bytes):
        return _orjson.loads(data)
except ImportError:  # pragma: no cover - depends on the environment
    def _loads(data: bytes):
        return json.loads(data)

log = logging.getLogger("benchmark.report")

REQUIRED = ("method", "dataset", "status")
STATUSES = ("ok", "failed")
# metrics that get their own column; any other numeric metric becomes metric_<name>
KNOWN_METRICS = ("test_accuracy", "teacher_queries", "synthetic_downstream_accuracy")
AUDIT_FIELDS = ("mia_auc", "tpr_at_1pct_fpr", "epsilon_lower_bound", "violates_claim")

COLUMNS = [
    "path", "method", "family", "dataset", "epsilon", "epsilon_target", "delta", "epsilon_spent",
    "accountant", "privacy_unit", "adjacency", "seed", "status", "test_accuracy", "teacher_queries",
    "synthetic_downstream_accuracy", "wall_time_s", "cpu_time_s", "peak_memory_mb", "config_hash",
    "git_sha", "started_at", "finished_at", "host", "error", "ablation", "hparams", "artifacts",
    "n_ledger_events", "audit_mia_auc", "audit_tpr_at_1pct_fpr", "audit_epsilon_lower_bound",
    "audit_violates_claim",
]


class SkippedFile(str):
    """A relative path of a skipped file plus the reason (``.reason``)."""

    reason: str

    def __new__(cls, path: str, reason: str):
        obj = super().__new__(cls, path)
        obj.reason = reason
        return obj


def _num(x):
    """A finite or infinite float, or None for anything that is not a number."""
    if isinstance(x, bool) or x is None:
        return None
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            return None
    return None


def _ablation_tag(config: dict):
    """The ablation tag of a config, or None.

    Accepted spellings (whichever the runner writes): ``config["ablation"]``
    (a name, or True), ``"ablation"`` in ``config["tags"]``, or a grid name
    containing "ablation" (``config["grid"]``).
    """
    tag = config.get("ablation")
    if tag:
        return tag if isinstance(tag, str) else "ablation"
    tags = config.get("tags")
    if isinstance(tags, (list, tuple)) and any(isinstance(t, str) and "ablation" in t for t in tags):
        return next(t for t in tags if isinstance(t, str) and "ablation" in t)
    grid = config.get("grid")
    if isinstance(grid, str) and "ablation" in grid.lower():
        return Path(grid).stem
    return None


def _row(rec: dict, rel: str, failed_name: bool) -> dict:
    metrics = rec.get("metrics") or {}
    if not isinstance(metrics, dict):
        metrics = {}
    config = rec.get("config") or {}
    if not isinstance(config, dict):
        config = {}
    hparams = config.get("hparams")
    if not isinstance(hparams, dict):
        hparams = {}
    audit = rec.get("audit") or {}
    if not isinstance(audit, dict):
        audit = {}
    eps_t = _num(rec.get("epsilon_target"))
    status = "failed" if failed_name else rec.get("status")
    err = rec.get("error")
    if isinstance(err, str) and err.strip():
        err = err.strip().splitlines()[-1][:300]   # the exception line; the traceback stays in the file
    else:
        err = None
    artifacts = rec.get("artifacts") or {}
    if isinstance(artifacts, dict):
        base = os.path.dirname(rel)
        artifacts = {str(k): os.path.normpath(os.path.join(base, str(v))).replace(os.sep, "/")
                     for k, v in sorted(artifacts.items()) if isinstance(v, str)}
    else:
        artifacts = {}
    ledger = rec.get("ledger")
    seed = rec.get("seed")
    row = {
        "path": rel,
        "method": str(rec.get("method")),
        "family": str(rec.get("family") or "unknown"),
        "dataset": str(rec.get("dataset")),
        "epsilon": math.inf if eps_t is None else eps_t,
        "epsilon_target": eps_t,
        "delta": _num(rec.get("delta")),
        "epsilon_spent": _num(rec.get("epsilon_spent")),
        "accountant": rec.get("accountant"),
        "privacy_unit": str(rec.get("privacy_unit") or "none"),
        "adjacency": rec.get("adjacency"),
        "seed": int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else -1,
        "status": status,
        "wall_time_s": _num(rec.get("wall_time_s")),
        "cpu_time_s": _num(rec.get("cpu_time_s")),
        "peak_memory_mb": _num(rec.get("peak_memory_mb")),
        "config_hash": str(rec.get("config_hash") or ""),
        "git_sha": rec.get("git_sha"),
        "started_at": str(rec.get("started_at") or ""),
        "finished_at": str(rec.get("finished_at") or ""),
        "host": rec.get("host"),
        "error": err,
        "ablation": _ablation_tag(config),
        "hparams": json.dumps(hparams, sort_keys=True, default=str),
        "artifacts": json.dumps(artifacts, sort_keys=True),
        "n_ledger_events": len(ledger) if isinstance(ledger, list) else 0,
    }
    for m in KNOWN_METRICS:
        row[m] = _num(metrics.get(m))
    for k, v in metrics.items():
        if k not in KNOWN_METRICS and _num(v) is not None and not isinstance(v, str):
            row["metric_" + str(k)] = _num(v)
    for a in AUDIT_FIELDS:
        v = audit.get(a)
        row["audit_" + a] = (bool(v) if isinstance(v, bool) else None) if a == "violates_claim" else _num(v)
    return row


def _validate(rec) -> str | None:
    if not isinstance(rec, dict):
        return "not a JSON object"
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        return "not a result file (missing " + ", ".join(missing) + ")"
    if rec.get("status") not in STATUSES:
        return f"unknown status {rec.get('status')!r}"
    if not isinstance(rec.get("method"), str) or not isinstance(rec.get("dataset"), str):
        return "method/dataset are not strings"
    return None


def iter_result_files(results_dir: Path, exclude: Path | None = None) -> list[Path]:
    """All ``*.json`` under ``results_dir`` (sorted), minus the ``exclude`` subtree, hidden
    files and folders, and folders named ``artifacts``."""
    results_dir = Path(results_dir)
    excl = os.path.realpath(exclude) if exclude is not None else None
    out = []
    for root, dirs, files in os.walk(results_dir):
        if excl is not None and os.path.realpath(root) == excl:
            dirs[:] = []
            continue
        # hidden entries (locks, temp files) and the runner's per-cell artifact folders hold no results
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "artifacts")
        out.extend(Path(root) / f for f in files if f.endswith(".json") and not f.startswith("."))
    return sorted(out)


def load_results(results_dir, exclude=None, skipped: list | None = None) -> pd.DataFrame:
    """Every result attempt under ``results_dir`` as one row (failed ones too).

    ``epsilon`` is ``inf`` for non-private methods (``epsilon_target`` null).
    Corrupt or foreign files are skipped with a warning naming them; pass a
    list as ``skipped`` to get them back (``SkippedFile`` with ``.reason``).
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results directory not found: {results_dir}")
    rows = []
    for p in iter_result_files(results_dir, exclude):
        rel = p.relative_to(results_dir).as_posix()
        try:
            rec = _loads(p.read_bytes())
        except (ValueError, UnicodeDecodeError, OSError) as e:
            reason = f"unreadable JSON ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
            rec = None
        else:
            reason = _validate(rec)
        if reason is None:
            try:
                rows.append(_row(rec, rel, p.name.endswith(".failed.json")))
                continue
            except (TypeError, ValueError, AttributeError) as e:
                reason = f"malformed field ({type(e).__name__}: {e})"
        log.warning("skipping %s: %s", p, reason)
        if skipped is not None:
            skipped.append(SkippedFile(rel, reason))
    df = pd.DataFrame(rows)
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = pd.Series(dtype=object)
    extra = sorted(c for c in df.columns if c not in COLUMNS)
    df = df[COLUMNS + extra]
    for c in ("epsilon", "epsilon_target", "delta", "epsilon_spent", "test_accuracy", "teacher_queries",
              "synthetic_downstream_accuracy", "wall_time_s", "cpu_time_s", "peak_memory_mb",
              "audit_mia_auc", "audit_tpr_at_1pct_fpr", "audit_epsilon_lower_bound", *extra):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    df["seed"] = pd.to_numeric(df["seed"], errors="coerce").fillna(-1).astype(int)
    return df.sort_values(["dataset", "epsilon", "method", "seed", "finished_at", "path"],
                          kind="mergesort").reset_index(drop=True)


def select_cells(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per cell (method, dataset, epsilon, seed) of the main (non-ablation) runs.

    Newest config wins: the config hash of the newest attempt (by ``finished_at``)
    is the cell's; within it an ``ok`` attempt beats failed ones. Returns the
    chosen rows and a table of cells that had more than one config hash.
    """
    mixed_cols = ["dataset", "epsilon", "method", "seed", "config_hashes", "chosen_hash"]
    main = df[df["ablation"].isna()] if len(df) else df
    if main.empty:
        return main.copy(), pd.DataFrame(columns=mixed_cols)
    key = ["method", "dataset", "epsilon", "seed"]
    main = main.sort_values(["finished_at", "path"], kind="mergesort")
    newest = main.groupby(key, sort=False)["config_hash"].transform("last")
    same = main[main["config_hash"] == newest]
    same = same.assign(_ok=(same["status"] == "ok").astype(int)) \
        .sort_values(["_ok", "finished_at", "path"], kind="mergesort")
    cells = same.drop_duplicates(key, keep="last").drop(columns="_ok")
    cells = cells.sort_values(["dataset", "epsilon", "method", "seed"], kind="mergesort").reset_index(drop=True)
    nh = main.groupby(key, sort=True)["config_hash"].agg(lambda h: " ".join(sorted(set(x[:8] for x in h))))
    nh = nh[nh.str.contains(" ")]
    if nh.empty:
        return cells, pd.DataFrame(columns=mixed_cols)
    mixed = nh.rename("config_hashes").reset_index()
    chosen = cells.set_index(key)["config_hash"].str[:8].rename("chosen_hash")
    mixed = mixed.join(chosen, on=key)
    return cells, mixed.sort_values(["dataset", "epsilon", "method", "seed"], kind="mergesort")[mixed_cols] \
        .reset_index(drop=True)
