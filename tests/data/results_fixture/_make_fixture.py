"""Regenerates the hand-designed result files of this fixture (run from the repo root).

The expected values asserted in tests/test_report.py are written next to each
record below; change both together.
"""

import json
import struct
import zlib
from pathlib import Path

ROOT = Path(__file__).parent
H = {c: c * 64 for c in "0123456789abcdef"}  # fake config hashes


def png(path: Path, w=24, h=24):
    """A tiny deterministic grayscale PNG (checkerboard), written without any library."""
    raw = b"".join(b"\x00" + bytes(255 * ((x // 3 + y // 3) % 2) for x in range(w)) for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


FAM = {"dpsd": ("dpsd", "record"), "dp-sgd": ("dp-training", "record"), "dp-fedavg": ("federated", "client"),
       "rr": ("label-dp", "label"), "teacher": ("reference", "none"), "dafl": ("data-free-kd", "none")}


def rec(method, dataset, eps, seed, acc, h="1", day=1, status="ok", hparams=None, ablation=None, audit=None,
        artifacts=None, extra=None):
    fam, unit = FAM[method]
    config = {"method": method, "dataset": dataset, "epsilon": eps, "seed": seed,
              "hparams": hparams or {"epochs": 5}}
    if ablation:
        config["ablation"] = ablation
    r = {"method": method, "family": fam, "dataset": dataset, "epsilon_target": eps,
         "delta": None if eps is None else 1e-5, "epsilon_spent": None if eps is None else round(0.98 * eps, 4),
         "accountant": None if eps is None else "rdp", "privacy_unit": unit, "adjacency": "add/remove",
         "seed": seed, "status": status, "metrics": {} if status != "ok" else {"test_accuracy": acc},
         "wall_time_s": 10.0 + seed, "cpu_time_s": 9.0 + seed, "peak_memory_mb": 500.0 + 10 * seed,
         "config": config, "config_hash": H[h], "git_sha": "f" * 40,
         "versions": {"python": "3.11", "torch": "2.14.1", "opacus": "1.6.0"},
         "ledger": [] if eps is None else [{"mechanism": "gaussian", "noise_multiplier": 2.0, "steps": 10}],
         "started_at": f"2026-01-{day:02d}T10:00:00Z", "finished_at": f"2026-01-{day:02d}T11:{seed:02d}:00Z",
         "host": "fixture", "error": None if status == "ok" else "Traceback (most recent call last):\n"
                                                               "PrivacyBudgetExceeded: would spend 1.2 > 1",
         "artifacts": artifacts or {}}
    if audit:
        r["audit"] = audit
    if extra:
        r["metrics"].update(extra)
    return r


def write(rel, r):
    p = ROOT / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(r, indent=1, sort_keys=True) + "\n")


def main():
    d = "runs/digits"
    # dpsd eps1: 0.80 0.82 0.84 -> mean 0.82, std 0.02; a newer failed attempt of seed 2 with the same hash
    for s, a in enumerate([0.80, 0.82, 0.84]):
        write(f"{d}/dpsd/eps1_seed{s}_11111111.json", rec("dpsd", "digits", 1, s, a,
                                                         extra={"teacher_queries": 1000 * (s + 1)}))
    write(f"{d}/dpsd/eps1_seed2_11111111.failed.json", rec("dpsd", "digits", 1, 2, None, day=5, status="failed"))
    # dpsd eps10: 0.90 0.94 -> mean 0.92; seed 0 audited and violating its claim
    write(f"{d}/dpsd/eps10_seed0_11111111.json", rec("dpsd", "digits", 10, 0, 0.90, audit={
        "mia_auc": 0.7, "tpr_at_1pct_fpr": 0.2, "epsilon_lower_bound": 12.0, "violates_claim": True}))
    write(f"{d}/dpsd/eps10_seed1_11111111.json", rec("dpsd", "digits", 10, 1, 0.94, audit={
        "mia_auc": 0.55, "tpr_at_1pct_fpr": 0.02, "epsilon_lower_bound": 0.5, "violates_claim": False}))
    # dpsd ablation (tagged): k = 1 / 3 at eps 1, not in the leaderboard
    for k, a in ((1, 0.60), (3, 0.78)):
        for s in (0, 1):
            write(f"ablation/digits/dpsd/eps1_seed{s}_k{k}.json",
                  rec("dpsd", "digits", 1, s, a + 0.01 * s, h=str(k + 1), ablation="dpsd-topk",
                      hparams={"epochs": 5, "top_k": k}))
    # dp-sgd eps1: seed 0 has an old config (acc 0.10, hash 0) and a newer one (0.70, hash 1): newest wins
    write(f"{d}/dp-sgd/eps1_seed0_00000000.json", rec("dp-sgd", "digits", 1, 0, 0.10, h="0", day=1))
    for s, a in enumerate([0.70, 0.75, 0.80]):
        write(f"{d}/dp-sgd/eps1_seed{s}_11111111.json", rec("dp-sgd", "digits", 1, s, a, day=2))
    # dp-sgd eps10: seed 0 ok 0.95, seed 1 failed -> n = 1, n_failed = 1
    write(f"{d}/dp-sgd/eps10_seed0_11111111.json", rec("dp-sgd", "digits", 10, 0, 0.95))
    write(f"{d}/dp-sgd/eps10_seed1_11111111.failed.json", rec("dp-sgd", "digits", 10, 1, None, status="failed"))
    # dp-fedavg (client level): best at eps 1
    write(f"{d}/dp-fedavg/eps1_seed0_11111111.json", rec("dp-fedavg", "digits", 1, 0, 0.85))
    write(f"{d}/dp-fedavg/eps10_seed0_11111111.json", rec("dp-fedavg", "digits", 10, 0, 0.88))
    # rr (label level): all of eps 1 failed; eps 10 ok
    write(f"{d}/rr/eps1_seed0_11111111.failed.json", rec("rr", "digits", 1, 0, None, status="failed"))
    write(f"{d}/rr/eps10_seed0_11111111.json", rec("rr", "digits", 10, 0, 0.91))
    # non-private references
    write(f"{d}/teacher/epsinf_seed0_11111111.json", rec("teacher", "digits", None, 0, 0.97))
    png(ROOT / d / "dafl" / "epsinf_seed0_11111111" / "samples.png")
    write(f"{d}/dafl/epsinf_seed0_11111111.json", rec("dafl", "digits", None, 0, 0.93,
                                                     artifacts={"samples": "epsinf_seed0_11111111/samples.png"},
                                                     extra={"teacher_queries": 5000}))
    # mnist: dpsd 0.90, dp-sgd 0.95 at eps 1; dp-sgd 0.96 at eps 8 (reported 97 in Abadi et al.)
    write("runs/mnist/dpsd/eps1_seed0_11111111.json", rec("dpsd", "mnist", 1, 0, 0.90))
    write("runs/mnist/dp-sgd/eps1_seed0_11111111.json", rec("dp-sgd", "mnist", 1, 0, 0.95))
    write("runs/mnist/dp-sgd/eps8_seed0_11111111.json", rec("dp-sgd", "mnist", 8, 0, 0.96))
    # broken and foreign files
    (ROOT / "runs" / "corrupt.json").write_text('{"method": "dpsd", "dataset": "dig')
    (ROOT / "runs" / "grid_manifest.json").write_text(json.dumps({"grid": "quick", "cells": 12}) + "\n")


if __name__ == "__main__":
    main()
