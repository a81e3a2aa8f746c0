"""``build_report``: every table and figure from the results store alone."""

from __future__ import annotations

import logging
import math
import re
import sys
import time
from pathlib import Path

from . import aggregate as A
from . import tables as T
from .load import load_results, select_cells

log = logging.getLogger("benchmark.report")

FIG_PREFIXES = ("acc_vs_eps_", "avg_rank_heatmap", "cost", "samples_", "ablation_")


def _safe(s) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(s)).strip("-") or "x"


def _eps_tag(e: float) -> str:
    return "inf" if math.isinf(e) else f"{e:g}"


def _clean_figures(figdir: Path) -> None:
    """Remove figures of a previous run (only files this module writes) so none goes stale."""
    if not figdir.is_dir():
        return
    for p in sorted(figdir.iterdir()):
        if p.suffix in (".png", ".pdf") and p.name.startswith(FIG_PREFIXES):
            p.unlink()


def build_report(results_dir: Path, out_dir: Path, quiet: bool = False) -> dict[str, Path]:
    """Read every result under ``results_dir`` and write the report into ``out_dir``.

    Returns ``{name: path}`` of every file written (sorted by name). Reads the
    store only; never runs a method. Output is byte-identical for identical
    inputs (same library versions).
    """
    t0 = time.perf_counter()
    results_dir, out_dir = Path(results_dir), Path(out_dir)

    def say(msg):
        if not quiet:
            print(f"[report {time.perf_counter() - t0:5.1f}s] {msg}", file=sys.stderr)

    skipped: list = []
    df = load_results(results_dir, exclude=out_dir, skipped=skipped)
    say(f"read {len(df)} result files ({len(skipped)} skipped) from {results_dir}")
    cells, mixed = select_cells(df)
    lb = A.leaderboard(cells)
    ar = A.average_ranks(lb)
    cost = A.cost_table(cells)
    audit = A.audit_table(cells)
    fails = A.failures(df, cells)
    abl = A.ablations(df, cells)
    from .reported import reproduced_vs_reported
    rvr = reproduced_vs_reported(lb)

    out_dir.mkdir(parents=True, exist_ok=True)
    figdir = out_dir / "figures"
    figdir.mkdir(exist_ok=True)
    _clean_figures(figdir)
    w: dict[str, Path] = {}

    # tables
    w["leaderboard_csv"] = T.write_csv(lb, out_dir / "leaderboard.csv")
    w["leaderboard_md"] = T.write_text(T.leaderboard_markdown(lb, mixed), out_dir / "leaderboard.md")
    w["leaderboard_tex"] = T.write_text(T.leaderboard_latex(lb), out_dir / "leaderboard.tex")
    w["average_rank_csv"] = T.write_csv(ar, out_dir / "average_rank.csv")
    w["average_rank_md"] = T.write_text(T.ranks_markdown(ar), out_dir / "average_rank.md")
    w["average_rank_tex"] = T.write_text(T.ranks_latex(ar), out_dir / "average_rank.tex")
    w["cost_csv"] = T.write_csv(cost, out_dir / "cost.csv")
    w["cost_md"] = T.write_text(T.cost_markdown(cost), out_dir / "cost.md")
    w["audit_csv"] = T.write_csv(audit, out_dir / "audit.csv")
    w["audit_md"] = T.write_text(T.audit_markdown(audit), out_dir / "audit.md")
    w["ablation_csv"] = T.write_csv(abl, out_dir / "ablation.csv")
    w["ablation_md"] = T.write_text(T.ablation_markdown(abl), out_dir / "ablation.md")
    w["failures_csv"] = T.write_csv(fails, out_dir / "failures.csv")
    w["mixed_configs_csv"] = T.write_csv(mixed, out_dir / "mixed_configs.csv")
    w["reproduced_vs_reported_csv"] = T.write_csv(rvr, out_dir / "reproduced_vs_reported.csv")
    w["reproduced_vs_reported_md"] = T.write_text(T.rvr_markdown(rvr), out_dir / "reproduced_vs_reported.md")
    w["reproduced_vs_reported_tex"] = T.write_text(T.rvr_latex(rvr), out_dir / "reproduced_vs_reported.tex")
    say("tables written")

    # figures
    from . import figures as F
    figs: dict[str, list[Path]] = {}
    for ds in sorted(set(lb["dataset"])):
        if lb.loc[lb["dataset"] == ds, "acc_mean"].notna().any():
            figs[f"acc_vs_eps_{_safe(ds)}"] = F.acc_vs_eps(lb, ds, figdir / f"acc_vs_eps_{_safe(ds)}")
    if len(ar):
        figs["avg_rank_heatmap"] = F.rank_heatmap(ar, figdir / "avg_rank_heatmap")
    if len(cost):
        figs["cost"] = F.cost(cost, figdir / "cost")
    cands = F.sample_grid_candidates(cells)
    for (ds, eps), _ in cands.groupby(["dataset", "epsilon"], sort=True):
        name = f"samples_{_safe(ds)}_eps{_eps_tag(eps)}"
        paths = F.sample_grid(cands, results_dir, ds, eps, figdir / name)
        if paths:
            figs[name] = paths
    for (ds, m), _ in abl.groupby(["dataset", "method"], sort=True):
        name = f"ablation_{_safe(ds)}_{_safe(m)}"
        figs[name] = F.ablation(abl, ds, m, figdir / name)
    for name, paths in figs.items():
        for p in paths:
            w[f"fig_{name}_{p.suffix[1:]}"] = p
    say(f"{sum(len(p) for p in figs.values())} figure files written")

    w["index_md"] = T.write_text(T.index_markdown(df, cells, lb, skipped, mixed, fails, figs, out_dir, w),
                                 out_dir / "README.md")
    say(f"report in {out_dir} ({len(w)} files)")
    return dict(sorted(w.items()))

