"""Tests of the report (benchmark/report) on the hand-made store in tests/data/results_fixture.

The fixture's expected values are documented in tests/data/results_fixture/_make_fixture.py.
"""

import logging
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from benchmark.report import aggregate as A
from benchmark.report import build_report, load_results
from benchmark.report import tables as T
from benchmark.report.bench import make_fake_results
from benchmark.report.load import select_cells
from benchmark.report.reported import load_reported, reproduced_vs_reported

FIXTURE = Path(__file__).parent / "data" / "results_fixture"


@pytest.fixture(scope="module")
def frames():
    df = load_results(FIXTURE)
    cells, mixed = select_cells(df)
    lb = A.leaderboard(cells)
    return df, cells, mixed, lb


def row(lb, ds, eps, method):
    r = lb[(lb["dataset"] == ds) & (lb["epsilon"] == eps) & (lb["method"] == method)]
    assert len(r) == 1, (ds, eps, method)
    return r.iloc[0]


def test_corrupt_and_foreign_files_skipped_with_named_warning(caplog):
    skipped = []
    from benchmark.report.load import load_results as raw_load
    with caplog.at_level(logging.WARNING, logger="benchmark.report"):
        df = raw_load(FIXTURE, skipped=skipped)
    assert sorted(skipped) == ["runs/corrupt.json", "runs/grid_manifest.json"]
    assert "corrupt.json" in caplog.text and "grid_manifest.json" in caplog.text
    assert len(df) == 25
    assert "ledger" not in df.columns and df["n_ledger_events"].max() == 1


def test_failed_attempts_are_kept_not_dropped(frames):
    df, cells, _, lb = frames
    assert (df["status"] == "failed").sum() == 3          # includes .failed.json names
    r = row(lb, "digits", 1, "rr")                          # every seed failed: still a row
    assert r["n_seeds"] == 0 and r["n_failed"] == 1 and math.isnan(r["acc_mean"]) and math.isnan(r["rank"])
    assert "PrivacyBudgetExceeded" in r["failed_errors"]
    r = row(lb, "digits", 10, "dp-sgd")
    assert (r["n_seeds"], r["n_failed"]) == (1, 1)


def test_mean_std_n_over_seeds(frames):
    _, _, _, lb = frames
    r = row(lb, "digits", 1, "dpsd")
    # seed 2 also has a newer failed attempt with the same config: the ok one counts
    assert r["n_seeds"] == 3 and r["n_failed"] == 0
    assert r["acc_mean"] == pytest.approx(0.82) and r["acc_std"] == pytest.approx(0.02)  # sample std, ddof=1
    assert r["teacher_queries_mean"] == pytest.approx(2000)
    r = row(lb, "digits", 10, "dpsd")
    assert r["acc_mean"] == pytest.approx(0.92) and r["acc_std"] == pytest.approx(0.0282843, rel=1e-5)
    assert math.isnan(row(lb, "digits", 10, "dp-sgd")["acc_std"])   # one seed: no std
    assert row(lb, "digits", math.inf, "teacher")["acc_mean"] == pytest.approx(0.97)


def test_mixed_config_hashes_newest_wins(frames):
    _, cells, mixed, lb = frames
    c = cells[(cells["method"] == "dp-sgd") & (cells["dataset"] == "digits") & (cells["epsilon"] == 1)
              & (cells["seed"] == 0)]
    assert len(c) == 1 and c.iloc[0]["test_accuracy"] == pytest.approx(0.70)
    assert len(mixed) == 1
    m = mixed.iloc[0]
    assert (m["method"], m["config_hashes"], m["chosen_hash"]) == ("dp-sgd", "00000000 11111111", "11111111")
    assert row(lb, "digits", 1, "dp-sgd")["acc_mean"] == pytest.approx(0.75)


def test_ranks_best_and_groups(frames):
    _, _, _, lb = frames
    d1 = lb[(lb["dataset"] == "digits") & (lb["epsilon"] == 1)].set_index("method")
    assert d1.loc["dp-fedavg", "rank"] == 1 and d1.loc["dpsd", "rank"] == 2 and d1.loc["dp-sgd", "rank"] == 3
    assert d1["best"].sum() == 1 and d1.loc["dp-fedavg", "best"]
    assert d1.loc["dpsd", "rank_in_unit"] == 1                        # best record-level method
    d10 = lb[(lb["dataset"] == "digits") & (lb["epsilon"] == 10)].set_index("method")
    assert list(d10.sort_values("rank").index) == ["dp-sgd", "dpsd", "rr", "dp-fedavg"]
    refs = lb[lb["group"] == "non-private"]
    assert set(refs["method"]) == {"teacher", "dafl"} and refs["rank"].isna().all() and not refs["best"].any()
    # order inside a table: data-sensitive, label, federated, references
    assert list(lb[lb["dataset"] == "digits"]["group"].drop_duplicates()) == list(A.GROUPS)
    assert d1.loc["rr", "group"] == "label-sensitive" and d1.loc["dp-fedavg", "group"] == "federated"
    # a data-free KD method run with a DP annotation step is a private, data-sensitive row
    assert A.group_of("data-free-kd", "record", 1.0) == "data-sensitive"
    assert A.group_of("dpsd", "label", 1.0) == "label-sensitive"
    assert A.group_of("dpsd", "record", math.inf) == "non-private"


def test_average_rank(frames):
    _, _, _, lb = frames
    ar = A.average_ranks(lb).set_index("method")
    assert list(ar.index) == ["dp-sgd", "dpsd", "dp-fedavg", "rr"]
    assert ar.loc["dp-sgd", "avg_rank"] == pytest.approx(1.5) and ar.loc["dp-sgd", "n_cells"] == 4
    assert ar.loc["dp-sgd", "digits"] == pytest.approx(2.0) and ar.loc["dp-sgd", "mnist"] == pytest.approx(1.0)
    assert ar.loc["dp-fedavg", "avg_rank"] == pytest.approx(2.5) and math.isnan(ar.loc["dp-fedavg", "mnist"])


def test_ablations_grouped_by_differing_hparams_and_kept_out_of_leaderboard(frames):
    df, cells, _, lb = frames
    assert cells["ablation"].isna().all()
    ab = A.ablations(df, cells)
    k1 = ab[(ab["variant"] == "top_k=1") & (ab["epsilon"] == 1)].iloc[0]
    assert k1["n_seeds"] == 2 and k1["acc_mean"] == pytest.approx(0.605) and k1["ablation"] == "dpsd-topk"
    assert set(ab["variant"]) == {"top_k=1", "top_k=3", "top_k=default"}
    assert row(lb, "digits", 1, "dpsd")["acc_mean"] == pytest.approx(0.82)   # unchanged by the ablation


def test_audit_and_cost(frames):
    _, cells, _, lb = frames
    au = A.audit_table(cells)
    assert len(au) == 1
    a = au.iloc[0]
    assert a["method"] == "dpsd" and a["violates_claim"] is True and a["epsilon_lower_bound_max"] == 12
    assert a["epsilon_claimed"] == pytest.approx(9.8)
    assert row(lb, "digits", 10, "dpsd")["audit_violates"] is True
    assert row(lb, "digits", 10, "dp-sgd")["audit_violates"] is None
    cost = A.cost_table(cells).set_index(["dataset", "method"])
    assert cost.loc[("digits", "dpsd"), "n_runs"] == 5
    assert cost.loc[("digits", "dpsd"), "wall_time_s_mean"] == pytest.approx((10 + 11 + 12 + 10 + 11) / 5)
    assert cost.loc[("digits", "dpsd"), "peak_memory_mb_max"] == 520


def test_latex_escaping():
    assert T.latex_escape("a_b&c%d$e#f{g}h~i^j\\k") == (
        r"a\_b\&c\%d\$e\#f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k")
    cells = pd.DataFrame([{
        "method": "my_method&co", "family": "dp-training", "dataset": "set_1%", "epsilon": 1.0, "seed": 0,
        "status": "ok", "privacy_unit": "record", "delta": 1e-5, "test_accuracy": 0.5, "epsilon_spent": 1.0,
        "synthetic_downstream_accuracy": math.nan, "teacher_queries": math.nan, "wall_time_s": 1.0,
        "audit_epsilon_lower_bound": math.nan, "audit_violates_claim": None, "config_hash": "a" * 64,
        "error": None}])
    tex = T.leaderboard_latex(A.leaderboard(cells))
    assert r"my\_method\&co" in tex and r"set\_1\%" in tex
    assert not re.search(r"(?<!\\)[_&%]", tex.split("\n", 1)[1].replace(" & ", " ")), tex
    assert r"\label{tab:leaderboard-set-1-}" in tex
    assert r"\toprule" in tex and r"\bottomrule" in tex


def test_units_footnote_only_where_units_mix(frames):
    _, _, mixed, lb = frames
    md = T.leaderboard_markdown(lb, mixed)
    digits, mnist = md.split("\n## mnist\n")
    assert "Privacy units differ" in digits and "C = client-level" in digits
    assert "Privacy units differ" not in mnist.split("## Cells with mixed")[0]
    tex = T.leaderboard_latex(lb)
    assert tex.count("Privacy units differ") == 1
    # every private row shows its unit
    assert "| dp-fedavg | federated | C |" in md and "| rr | label-dp | L |" in md


def test_reproduced_vs_reported(frames):
    _, _, _, lb = frames
    rvr = reproduced_vs_reported(lb)
    r8 = rvr[(rvr["method"] == "dp-sgd") & (rvr["dataset"] == "mnist") & (rvr["epsilon"] == 8)].iloc[0]
    assert r8["reported_accuracy"] == 97 and r8["measured_mean"] == pytest.approx(0.96)
    assert r8["difference"] == pytest.approx(-1.0)
    r2 = rvr[(rvr["method"] == "dp-sgd") & (rvr["dataset"] == "mnist") & (rvr["epsilon"] == 2)].iloc[0]
    assert math.isnan(r2["measured_mean"]) and r2["nearest_epsilon"] == 1 and r2["nearest_mean"] == 0.95


def test_reported_numbers_file_is_traceable():
    rep = load_reported()
    assert len(rep) >= 40
    assert set(rep["kind"]) <= {"P", "S"}
    for col in ("method", "dataset", "paper", "where", "source", "setting"):
        assert (rep[col].str.strip() != "").all(), col
    assert rep["accuracy"].between(0, 100).all()
    assert not rep.duplicated(["method", "dataset", "epsilon", "setting"]).any()


def test_build_report_is_byte_identical_and_complete(tmp_path):
    store = tmp_path / "store"
    shutil.copytree(FIXTURE, store)
    # a stale figure from an older run must not survive
    (store / "report" / "figures").mkdir(parents=True)
    (store / "report" / "figures" / "acc_vs_eps_gone.png").write_bytes(b"x")
    out1 = build_report(store, store / "report", quiet=True)        # out_dir inside the store: not read
    out3 = build_report(store, tmp_path / "other", quiet=True)
    assert not (store / "report" / "figures" / "acc_vs_eps_gone.png").exists()
    assert sorted(out3) == sorted(out1)
    for name in ("leaderboard_csv", "leaderboard_md", "leaderboard_tex", "average_rank_tex", "cost_md",
                 "audit_md", "reproduced_vs_reported_tex", "index_md", "fig_acc_vs_eps_digits_png",
                 "fig_acc_vs_eps_digits_pdf", "fig_avg_rank_heatmap_png", "fig_cost_pdf",
                 "fig_samples_digits_epsinf_png", "fig_ablation_digits_dpsd_png"):
        assert name in out1, name
    files1 = sorted(p.relative_to(store / "report") for p in (store / "report").rglob("*") if p.is_file())
    files3 = sorted(p.relative_to(tmp_path / "other") for p in (tmp_path / "other").rglob("*") if p.is_file())
    assert files1 == files3 == sorted(p.relative_to(store / "report") for p in out1.values())
    for rel in files1:
        assert (store / "report" / rel).read_bytes() == (tmp_path / "other" / rel).read_bytes(), rel
    for name, p in out1.items():
        if name.endswith("_tex"):
            assert p.read_text().isascii(), name          # pdflatex-safe: every symbol escaped
    index = out1["index_md"].read_text()
    assert "runs/corrupt.json" in index and "skipped (corrupt or foreign): 2" in index
    assert str(tmp_path) not in index


def test_make_fake_results_loads_cleanly(tmp_path):
    paths = make_fake_results(tmp_path, 60)
    assert len(paths) == 60 and all(p.exists() for p in paths)
    skipped = []
    from benchmark.report.load import load_results as raw_load
    df = raw_load(tmp_path, skipped=skipped)
    assert len(df) == 60 and not skipped
    lb = A.leaderboard(select_cells(df)[0])
    assert lb["n_seeds"].sum() + lb["n_failed"].sum() == 60


@pytest.mark.slow
def test_ten_thousand_results_under_30s_cpu_and_2gb(tmp_path):
    import resource
    import time
    make_fake_results(tmp_path / "store", 10_000)
    t = time.process_time()
    out = build_report(tmp_path / "store", tmp_path / "out", quiet=True)
    cpu = time.process_time() - t
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    assert cpu < 30, f"report took {cpu:.1f} s of CPU"
    assert rss_gb < 2, f"peak memory {rss_gb:.2f} GB"
    lb = pd.read_csv(out["leaderboard_csv"])
    assert lb["n_seeds"].sum() + lb["n_failed"].sum() == 10_000


def test_mixed_configs_note_needs_different_hyperparameters_not_different_seeds(frames):
    """Config hashes include the seed; a row whose seeds share hyperparameters is not 'mixed'."""
    _, _, _, lb = frames
    dpsd = row(lb, "digits", 1, "dpsd")
    assert dpsd["n_seeds"] == 3 and dpsd["n_hparam_sets"] == 1
    per_seed_hashes = dict(dpsd, config_hashes="0a1b2c3d 4e5f6a7b 8c9d0e1f")  # as real results have
    assert "mixed configs" not in T._notes(per_seed_hashes)
    mixed = dict(per_seed_hashes, n_hparam_sets=2)
    assert "mixed configs" in T._notes(mixed)
