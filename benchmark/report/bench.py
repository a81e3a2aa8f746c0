"""Synthetic result stores for benchmarking and testing the report.

``make_fake_results(dir, n)`` writes ``n`` result files in the store layout
(``runs/<dataset>/<method>/eps<E>_seed<S>_<hash8>.json``) with plausible
values, a few failed attempts, ledgers and audits. Deterministic in ``seed``.

``python -m benchmark.report.bench N DIR`` writes N files and times a report.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from pathlib import Path

# (method, family, privacy unit, accuracy at eps=1 on an easy dataset)
FAKE_METHODS = [
    ("dpsd", "dpsd", "record", 0.93), ("dpsd-label", "dpsd", "label", 0.95), ("dp-sgd", "dp-training", "record", 0.90),
    ("dp-sgd-tanh", "dp-training", "record", 0.91), ("pate", "dp-training", "record", 0.88),
    ("pate-gnmax", "dp-training", "record", 0.89), ("dp-gan", "dp-generative", "record", 0.55),
    ("dp-merf", "dp-generative", "record", 0.75), ("gs-wgan", "dp-generative", "record", 0.70),
    ("dpdfd", "dp-data-free", "record", 0.85), ("rr", "label-dp", "label", 0.80),
    ("lp-2st", "label-dp", "label", 0.86), ("dp-fedavg", "federated", "client", 0.82),
    ("dp-fedsgd", "federated", "client", 0.78), ("ldp-fl", "federated", "record", 0.40),
    ("teacher", "reference", "none", 0.98), ("student-real", "reference", "none", 0.97),
    ("dafl", "data-free-kd", "none", 0.94), ("dfad", "data-free-kd", "none", 0.95),
]
FAKE_DATASETS = [("digits", 0.0), ("mnist", 0.01), ("fashion-mnist", 0.1), ("cifar10", 0.3), ("cifar100", 0.55),
                 ("celeba-gender", 0.05), ("celeba-hair", 0.15), ("pathmnist", 0.12)]
FAKE_EPSILONS = [0.2, 1.0, 10.0]


def _cells():
    for ds, hard in FAKE_DATASETS:
        for m, fam, unit, acc in FAKE_METHODS:
            for eps in ([None] if unit == "none" else FAKE_EPSILONS):
                yield ds, hard, m, fam, unit, acc, eps


def fake_result(ds, hard, m, fam, unit, acc, eps, seed, rng: random.Random, failed=False, when=0) -> dict:
    shift = 0.0 if eps is None else {0.2: -0.08, 1.0: 0.0, 10.0: 0.04}[eps]
    a = max(0.05, min(0.999, acc * (1 - hard) + shift + rng.gauss(0, 0.01)))
    config = {"method": m, "dataset": ds, "epsilon": eps, "seed": seed, "hparams": {"epochs": 5, "lr": 0.1}}
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    wall = rng.uniform(5, 60) * (10 if ds != "digits" else 1)
    started = f"2026-01-{1 + when // 86400 % 28:02d}T{when // 3600 % 24:02d}:{when // 60 % 60:02d}:{when % 60:02d}Z"
    rec = {
        "method": m, "family": fam, "dataset": ds, "epsilon_target": eps, "delta": 1e-5,
        "epsilon_spent": None if eps is None else round(eps * rng.uniform(0.9, 1.0), 4),
        "accountant": None if eps is None else "rdp", "privacy_unit": unit,
        "adjacency": "add/remove", "seed": seed, "status": "failed" if failed else "ok",
        "metrics": {} if failed else {"test_accuracy": round(a, 4)},
        "wall_time_s": round(wall, 2), "cpu_time_s": round(wall * 0.97, 2),
        "peak_memory_mb": round(rng.uniform(300, 3000), 1), "config": config, "config_hash": h,
        "git_sha": "0" * 40, "versions": {"python": "3.11", "torch": "2.14.1", "opacus": "1.6.0"},
        "ledger": [] if eps is None else [{"mechanism": "subsampled_gaussian", "noise_multiplier": 1.1,
                                           "sample_rate": 0.01, "steps": 1000}],
        "started_at": started, "finished_at": started, "host": "fake", "artifacts": {},
        "error": "Traceback (most recent call last):\nRuntimeError: fake failure" if failed else None,
    }
    if not failed and fam in ("dpsd", "dp-data-free", "data-free-kd"):
        rec["metrics"]["teacher_queries"] = int(rng.uniform(1e4, 1e6))
    if not failed and fam in ("dp-generative", "dpsd"):
        rec["metrics"]["synthetic_downstream_accuracy"] = round(a * 0.9, 4)
    if not failed and eps is not None and rng.random() < 0.3:
        lb = round(eps * rng.uniform(0.0, 0.5), 3)
        rec["audit"] = {"mia_auc": round(rng.uniform(0.5, 0.6), 3), "tpr_at_1pct_fpr": round(rng.uniform(0, 0.05), 3),
                        "epsilon_lower_bound": lb, "violates_claim": lb > (rec["epsilon_spent"] or 0)}
    return rec


def make_fake_results(dir, n: int, seed: int = 0) -> list[Path]:
    """Write ``n`` fake result files under ``dir`` (about 3% failed); returns their paths."""
    rng = random.Random(seed)
    cells = list(_cells())
    root = Path(dir)
    paths = []
    for i in range(n):
        ds, hard, m, fam, unit, acc, eps = cells[i % len(cells)]
        s = i // len(cells)
        failed = rng.random() < 0.03
        rec = fake_result(ds, hard, m, fam, unit, acc, eps, s, rng, failed=failed, when=i * 7)
        name = f"{'epsinf' if eps is None else f'eps{eps:g}'}_seed{s}_{rec['config_hash'][:8]}"
        p = root / "runs" / ds / m / (name + (".failed.json" if failed else ".json"))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(rec, indent=1))
        paths.append(p)
    return paths


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    n, d = int(argv[0]), Path(argv[1])
    make_fake_results(d, n)
    from . import build_report
    t = time.perf_counter()
    build_report(d, d / "report", quiet=True)
    print(f"report over {n} files: {time.perf_counter() - t:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
