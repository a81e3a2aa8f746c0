"""Table writers: Markdown, CSV and LaTeX (booktabs), all deterministic."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from .aggregate import GROUP_TITLES, GROUPS, UNIT_ABBR, UNIT_TEXT, family_rank

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "ε": r"$\varepsilon$", "δ": r"$\delta$", "∞": r"$\infty$", "±": r"$\pm$", "–": "--",
    "<": r"\textless{}", ">": r"\textgreater{}", "Δ": r"$\Delta$", "≤": r"$\le$", "≥": r"$\ge$",
    "→": r"$\to$", "×": r"$\times$", "†": r"$^{\dagger}$", "è": r"\`e", "é": r"\'e",
}


def latex_escape(s) -> str:
    """Escape text for LaTeX (special characters and the few Unicode symbols we emit)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(s))


def md_escape(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def isnan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt_eps(e, tex=False) -> str:
    if isnan(e):
        return "–"
    if math.isinf(e):
        return r"$\infty$" if tex else "∞"
    return f"{e:g}"


def fmt_acc(mean, std=None, pct=True) -> str:
    """``97.3 ± 0.4`` (percent); std omitted when undefined (one seed)."""
    if isnan(mean):
        return "–"
    k = 100.0 if pct else 1.0
    s = f"{mean * k:.1f}"
    if not isnan(std):
        s += f" ± {std * k:.1f}"
    return s


def fmt_num(x, digits=3) -> str:
    """Readable numbers: thousands separators from 100 up, else ``digits`` significant digits."""
    if isnan(x):
        return "–"
    x = float(x)
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def md_table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" * len(header)
    sep = {"l": "---", "r": "---:", "c": ":---:"}
    out = ["| " + " | ".join(md_escape(h) for h in header) + " |",
           "| " + " | ".join(sep[a] for a in align) + " |"]
    out += ["| " + " | ".join(md_escape(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False, float_format="%.6g", lineterminator="\n")
    return path


def write_text(text: str, path: Path) -> Path:
    if path.suffix == ".md":
        text = re.sub(r"\n{3,}", "\n\n", text).rstrip("\n") + "\n"
    path.write_text(text, encoding="utf-8", newline="\n")
    return path


def unit_footnote(units, tex=False) -> str:
    """A footnote explaining the units when private rows of different units share a column."""
    units = sorted(u for u in set(units) if u in UNIT_TEXT)
    if len(units) <= 1:
        return ""
    parts = [f"{UNIT_ABBR[u]} = {UNIT_TEXT[u]}" for u in units]
    text = ("Privacy units differ between rows: " + "; ".join(parts) + ". An ε of one unit is not the same "
            "guarantee as the same ε of another; ranks and bold marks compare across units only for reading "
            "convenience (see rank_in_unit in the CSV).")
    return latex_escape(text) if tex else text


def _notes(r) -> str:
    notes = []
    if r["n_failed"]:
        notes.append(f"{r['n_failed']} failed")
    if r["audit_violates"] is True:
        notes.append("AUDIT: lower bound exceeds claimed ε")
    if r.get("n_hparam_sets", 1) > 1:  # seeds of one row ran with different hyperparameters
        notes.append("mixed configs")
    return "; ".join(notes)


def leaderboard_markdown(lb: pd.DataFrame, mixed: pd.DataFrame) -> str:
    """Per dataset: a wide overview (methods x ε) and a detailed table per (dataset, ε)."""
    out = ["# Leaderboards", "",
           "Test accuracy (%) on the eval split, mean ± sample std over seeds (n = ok seeds). "
           "Rank among private methods of the same (dataset, ε) (1 = best); **bold** = best private result "
           "of the column. Unit: R record, L label, C client, – none. Failed seeds are counted, never dropped.",
           ""]
    for ds, d in lb.groupby("dataset", sort=True):
        out += [f"## {ds}", "", "### Overview", "", wide_markdown(d), ""]
        fn = unit_footnote(d.loc[d["group"] != "non-private", "privacy_unit"])
        if fn:
            out += ["Note: " + fn, ""]
        refs = d[d["group"] == "non-private"]
        priv_eps = sorted(set(d.loc[d["group"] != "non-private", "epsilon"]))
        for eps in priv_eps or [math.inf]:
            dd = pd.concat([d[(d["epsilon"] == eps) & (d["group"] != "non-private")], refs]) \
                if not math.isinf(eps) else refs
            deltas = sorted(set(dd.loc[dd["group"] != "non-private", "delta"].dropna()))
            dtxt = f", δ = {deltas[0]:g}" if len(deltas) == 1 else ""
            out += [f"### {ds}, ε = {fmt_eps(eps)}{dtxt}", ""]
            header = ["Method", "Family", "Unit", "ε spent (max)", "Accuracy (%)", "n", "Rank",
                      "Synthetic-data acc. (%)", "Teacher queries", "Notes"]
            rows = []
            recs = dd.to_dict("records")
            for grp in GROUPS:
                g = [r for r in recs if r["group"] == grp]
                if not g:
                    continue
                rows.append([f"**{GROUP_TITLES[grp]}**"] + [""] * (len(header) - 1))
                for r in g:
                    acc = fmt_acc(r["acc_mean"], r["acc_std"])
                    if r["n_seeds"] == 0:
                        acc = f"failed ({r['n_failed']}/{r['n_failed']})"
                    elif r["best"]:
                        acc = f"**{acc}**"
                    synth = fmt_acc(r["synth_acc_mean"], r["synth_acc_std"])
                    if r["synth_best"] and synth != "–":
                        synth = f"**{synth}**"
                    rows.append([r["method"], r["family"], UNIT_ABBR.get(r["privacy_unit"], r["privacy_unit"]),
                                 fmt_num(r["epsilon_spent_max"], 4), acc, str(r["n_seeds"]),
                                 fmt_num(r["rank"]), synth, fmt_num(r["teacher_queries_mean"]), _notes(r)])
            out += [md_table(header, rows, "llllrrrrrl"), ""]
            fn = unit_footnote(dd.loc[dd["group"] != "non-private", "privacy_unit"])
            if fn:
                out += ["Note: " + fn, ""]
    if len(mixed):
        out += ["## Cells with mixed config hashes", "",
                "These cells have results from more than one configuration; the newest (by finished_at) "
                "is used above.", ""]
        out += [md_table(["dataset", "ε", "method", "seed", "config hashes", "used"],
                         [[r["dataset"], fmt_eps(r["epsilon"]), r["method"], str(r["seed"]), r["config_hashes"],
                           r["chosen_hash"]] for _, r in mixed.iterrows()]), ""]
    return "\n".join(out)


def _wide(d: pd.DataFrame, tex=False):
    """Rows grouped as in the paper; one accuracy column per ε (∞ for references)."""
    eps_cols = sorted(set(d["epsilon"]))
    recs = d.to_dict("records")
    rows = []  # (group, [(method, unit, [cells])])
    for grp in GROUPS:
        g = [r for r in recs if r["group"] == grp]
        if not g:
            continue
        by_method: dict = {}
        for r in g:
            by_method.setdefault(r["method"], {})[r["epsilon"]] = r
        order = sorted(by_method, key=lambda m: (family_rank(next(iter(by_method[m].values()))["family"]),
                                                 next(iter(by_method[m].values()))["family"], m))
        block = []
        for method in order:
            cells = []
            for e in eps_cols:
                r = by_method[method].get(e)
                if r is None:
                    cells.append("")
                    continue
                if r["n_seeds"] == 0:
                    c = "failed"
                else:
                    c = fmt_acc(r["acc_mean"], r["acc_std"])
                    if tex:
                        c = c.replace(" ± ", r" $\pm$ ")
                    if r["best"]:
                        c = rf"\textbf{{{c}}}" if tex else f"**{c}**"
                if r["n_failed"] and r["n_seeds"]:
                    c += r"$^{\dagger}$" if tex else " †"
                if r["audit_violates"] is True:
                    c += r"$^{!}$" if tex else " (!)"
                cells.append(c)
            unit = next(iter(by_method[method].values()))["privacy_unit"]
            block.append((method, UNIT_ABBR.get(unit, "?"), cells))
        rows.append((grp, block))
    return eps_cols, rows


def wide_markdown(d: pd.DataFrame) -> str:
    eps_cols, groups = _wide(d)
    header = ["Method", "Unit"] + [f"ε = {fmt_eps(e)}" for e in eps_cols]
    rows = []
    for grp, block in groups:
        rows.append([f"*{GROUP_TITLES[grp]}*", ""] + [""] * len(eps_cols))
        rows += [[m, u] + c for m, u, c in block]
    text = md_table(header, rows, "ll" + "r" * len(eps_cols))
    marks = []
    if (d["n_failed"] > 0).any():
        marks.append("† some seeds failed (see the detailed table)")
    if (d["audit_violates"] == True).any():  # noqa: E712
        marks.append("(!) the membership-inference audit's lower bound exceeds the claimed ε")
    return text + ("\n" + "; ".join(marks) + "\n" if marks else "")


def leaderboard_latex(lb: pd.DataFrame) -> str:
    out = ["% Generated by `python -m benchmark report`; needs \\usepackage{booktabs}.", ""]
    for ds, d in lb.groupby("dataset", sort=True):
        eps_cols, groups = _wide(d, tex=True)
        ncol = 2 + len(eps_cols)
        out += [r"\begin{table}[t]", r"\centering",
                rf"\caption{{Test accuracy (\%) on {latex_escape(ds)}, mean $\pm$ std over seeds. "
                r"Bold: best private method per column.}",
                rf"\label{{tab:leaderboard-{re.sub('[^A-Za-z0-9-]+', '-', str(ds))}}}",
                r"\begin{tabular}{ll" + "r" * len(eps_cols) + "}", r"\toprule",
                "Method & Unit & " + " & ".join(rf"$\varepsilon={fmt_eps(e, tex=True)}$" if not math.isinf(e)
                                                 else r"$\varepsilon=\infty$" for e in eps_cols) + r" \\"]
        for grp, block in groups:
            out.append(r"\midrule")
            out.append(rf"\multicolumn{{{ncol}}}{{l}}{{\textit{{{latex_escape(GROUP_TITLES[grp])}}}}} \\")
            for m, u, cells in block:
                out.append(" & ".join([latex_escape(m), latex_escape(u)] + cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}"]
        notes = []
        fn = unit_footnote(d.loc[d["group"] != "non-private", "privacy_unit"], tex=True)
        if fn:
            notes.append(fn)
        if (d["n_failed"] > 0).any():
            notes.append(r"$^{\dagger}$ some seeds failed.")
        if (d["audit_violates"] == True).any():  # noqa: E712
            notes.append(r"$^{!}$ audit lower bound exceeds the claimed $\varepsilon$.")
        if notes:
            out += [r"\par\smallskip\footnotesize " + " ".join(notes)]
        out += [r"\end{table}", ""]
    return "\n".join(out)


def ranks_markdown(ar: pd.DataFrame) -> str:
    ds_cols = [c for c in ar.columns if c not in ("method", "family", "privacy_unit", "avg_rank", "n_cells")]
    header = ["Method", "Family", "Unit"] + ds_cols + ["Average rank", "Cells"]
    rows = [[r["method"], r["family"], UNIT_ABBR.get(r["privacy_unit"], "?")]
            + [("" if isnan(r[c]) else f"{r[c]:.2f}") for c in ds_cols]
            + [f"{r['avg_rank']:.2f}", str(r["n_cells"])] for _, r in ar.iterrows()]
    text = ("# Cross-dataset summary: average rank\n\nMean rank (1 = best) among private methods; per dataset "
            "over its ε values, and overall over every (dataset, ε) column the method appears in (Cells). "
            "A method with fewer cells was compared on fewer columns.\n\n")
    text += md_table(header, rows, "lll" + "r" * (len(ds_cols) + 2))
    fn = unit_footnote(ar["privacy_unit"])
    return text + ("\nNote: " + fn + "\n" if fn else "")


def ranks_latex(ar: pd.DataFrame) -> str:
    ds_cols = [c for c in ar.columns if c not in ("method", "family", "privacy_unit", "avg_rank", "n_cells")]
    out = [r"\begin{table}[t]", r"\centering", r"\caption{Average rank among private methods (1 = best).}",
           r"\label{tab:average-rank}", r"\begin{tabular}{ll" + "r" * (len(ds_cols) + 2) + "}", r"\toprule",
           " & ".join(["Method", "Unit"] + [latex_escape(c) for c in ds_cols] + ["Avg.", "Cells"]) + r" \\",
           r"\midrule"]
    for _, r in ar.iterrows():
        out.append(" & ".join([latex_escape(r["method"]), UNIT_ABBR.get(r["privacy_unit"], "?")]
                              + [("" if isnan(r[c]) else f"{r[c]:.2f}") for c in ds_cols]
                              + [f"{r['avg_rank']:.2f}", str(r["n_cells"])]) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    fn = unit_footnote(ar["privacy_unit"], tex=True)
    if fn:
        out.append(r"\par\smallskip\footnotesize " + fn)
    out += [r"\end{table}", ""]
    return "\n".join(out)


def cost_markdown(cost: pd.DataFrame) -> str:
    text = ("# Cost per method\n\nOver ok runs of each (dataset, method): mean wall time, mean CPU time, peak "
            "resident memory (max over runs) and mean teacher queries (methods that query a teacher).\n\n")
    if cost.empty:
        return text + "No finished runs.\n"
    rows = [[r["dataset"], r["method"], r["family"], str(r["n_runs"]), fmt_num(r["wall_time_s_mean"]),
             fmt_num(r["wall_time_s_max"]), fmt_num(r["cpu_time_s_mean"]), fmt_num(r["peak_memory_mb_max"]),
             fmt_num(r["teacher_queries_mean"])] for _, r in cost.iterrows()]
    return text + md_table(["Dataset", "Method", "Family", "Runs", "Wall time (s)", "Max wall time (s)",
                            "CPU time (s)", "Peak memory (MB)", "Teacher queries"], rows, "lllrrrrrr")


def audit_markdown(audit: pd.DataFrame) -> str:
    text = ("# Privacy audit\n\nClaimed ε (the ledger's epsilon_spent, max over seeds) against the empirical "
            "lower bound of the membership-inference audit (max over seeds). A row marked VIOLATES has a lower "
            "bound above its claim: the claim (or its accounting) is wrong for that unit.\n\n")
    if audit.empty:
        return text + "No audited runs in the results.\n"
    rows = []
    for _, r in audit.iterrows():
        flag = {True: "**VIOLATES**", False: "ok"}.get(r["violates_claim"], "–")
        rows.append([r["dataset"], fmt_eps(r["epsilon"]), r["method"], UNIT_ABBR.get(r["privacy_unit"], "?"),
                     str(r["n_audited"]), fmt_num(r["epsilon_claimed"], 4), fmt_num(r["epsilon_lower_bound_max"], 4),
                     fmt_num(r["mia_auc_mean"]), fmt_num(r["tpr_at_1pct_fpr_mean"]), flag])
    return text + md_table(["Dataset", "ε target", "Method", "Unit", "Audited seeds", "ε claimed",
                            "ε lower bound", "MIA AUC", "TPR @ 1% FPR", "Claim"], rows, "lrllrrrrrl")


def ablation_markdown(ab: pd.DataFrame) -> str:
    text = ("# Ablations\n\nRuns of one method that differ in hyperparameters (runs tagged as ablations, and "
            "all configurations of DPSD-family methods), grouped by the hyperparameters that differ.\n\n")
    if ab.empty:
        return text + "No ablation runs in the results.\n"
    out = [text]
    for (ds, m), g in ab.groupby(["dataset", "method"], sort=True):
        out.append(f"## {m} on {ds}\n")
        rows = [[r["variant"], fmt_eps(r["epsilon"]), fmt_acc(r["acc_mean"], r["acc_std"]), str(r["n_seeds"]),
                 fmt_acc(r["synth_acc_mean"]), r["ablation"], r["config_hashes"]] for _, r in g.iterrows()]
        out.append(md_table(["Variant", "ε", "Accuracy (%)", "n", "Synthetic-data acc. (%)", "Tag",
                             "Config"], rows, "lrrrrll"))
    return "\n".join(out)


def _rvr_rows(rvr: pd.DataFrame, tex=False):
    esc = latex_escape if tex else (lambda s: str(s))
    for _, r in rvr.iterrows():
        meas = fmt_acc(r["measured_mean"], r["measured_std"])
        if meas != "–":
            meas += f" (n={int(r['measured_n'])})"
        near = ""
        if not isnan(r["nearest_epsilon"]):
            near = f"{fmt_acc(r['nearest_mean'], r['nearest_std'])} at ε={fmt_eps(r['nearest_epsilon'])}"
        diff = "" if isnan(r["difference"]) else f"{r['difference']:+.1f}"
        yield [esc(r["method"]), esc(r["dataset"]), esc(fmt_eps(r["epsilon"])), esc(r["delta"]),
               f"{r['reported_accuracy']:.2f}".rstrip("0").rstrip("."), esc(meas), esc(diff), esc(near),
               esc(r["setting"]), esc(r["kind"]), esc(f"{r['paper']}, {r['where']}")]


RVR_HEADER = ["Method", "Dataset", "ε", "δ", "Reported (%)", "Measured (%)", "Δ", "Measured at nearest ε ≤",
              "Published setting", "Kind", "Cited from"]


def rvr_markdown(rvr: pd.DataFrame) -> str:
    text = ("# Reproduced vs. reported\n\nPublished accuracies (benchmark/report/reported_numbers.csv, each "
            "traced to its paper; kind P = the paper or its official repository, S = the paper's number as "
            "restated by a later paper) joined with our measurements at the same (method, dataset, ε). "
            "Where we did not run that ε, the nearest measured ε not above it is shown instead: that is a "
            "different budget, and published settings (architecture, data, δ) usually differ from ours, "
            "so read Δ as context, not as a pass/fail.\n\n")
    if rvr.empty:
        return text + "No reported numbers loaded.\n"
    n_same = int(rvr["measured_mean"].notna().sum())
    n_near = int(rvr["nearest_mean"].notna().sum())
    text += (f"{len(rvr)} published numbers; {n_same} have a measurement at the same ε, {n_near} only at a "
             "smaller ε.\n\n")
    return text + md_table(RVR_HEADER, list(_rvr_rows(rvr)), "llllrrrllll")


def rvr_latex(rvr: pd.DataFrame) -> str:
    """Only the published numbers we have a measurement for (the full list is in the CSV/Markdown)."""
    have = rvr[rvr["measured_mean"].notna() | rvr["nearest_mean"].notna()] if len(rvr) else rvr
    out = [r"\begin{table*}[t]", r"\centering\scriptsize",
           r"\caption{Reproduced vs.\ reported test accuracy (\%), for the published numbers we have a "
           r"measurement for. Kind: P = the paper or its official repository; S = restated by a later paper.}",
           r"\label{tab:reproduced-vs-reported}",
           r"\begin{tabular}{lllllrrp{2.2cm}p{3cm}lp{3.6cm}}", r"\toprule",
           " & ".join(latex_escape(h) for h in RVR_HEADER) + r" \\", r"\midrule"]
    out += [" & ".join(r) + r" \\" for r in _rvr_rows(have, tex=True)]
    if not len(have):
        out.append(rf"\multicolumn{{{len(RVR_HEADER)}}}{{l}}{{No measurement matches a published number.}} \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table*}", ""]
    return "\n".join(out)


def index_markdown(df, cells, lb, skipped, mixed, fails, figs, out_dir: Path, written) -> str:
    n_ok = int((df["status"] == "ok").sum()) if len(df) else 0
    newest = max(df["finished_at"]) if len(df) else "–"
    out = ["# Benchmark report", "",
           "Generated by `python -m benchmark report` from the results store alone.", "",
           f"- result files read: {len(df)} ({n_ok} ok, {len(df) - n_ok} failed attempts); "
           f"skipped (corrupt or foreign): {len(skipped)}",
           f"- cells (method x dataset x ε x seed, newest config): {len(cells)}, of which failed: {len(fails)}",
           f"- datasets: {', '.join(sorted(set(cells['dataset']))) or '–'}",
           f"- methods: {cells['method'].nunique() if len(cells) else 0}",
           f"- newest result finished at: {newest}", "",
           "## Tables", ""]
    desc = {
        "leaderboard": "per (dataset, ε) leaderboards, grouped by family, with units and ranks",
        "average_rank": "cross-dataset summary: average rank of private methods",
        "cost": "wall time, CPU time, peak memory and teacher queries per method",
        "audit": "claimed ε vs. empirical lower bound of the membership-inference audit",
        "ablation": "DPSD (and tagged) ablations grouped by differing hyperparameters",
        "reproduced_vs_reported": "our numbers next to the numbers published in the methods' papers",
        "failures": "failed cells (the newest attempt failed) with the exception line",
        "mixed_configs": "cells with results from more than one config hash (the newest is used)",
    }
    for stem, text in desc.items():
        links = [f"[{p.suffix[1:]}]({p.relative_to(out_dir).as_posix()})" for k, p in written.items()
                 if p.parent == out_dir and p.stem == stem]
        out.append(f"- {text}: {' '.join(sorted(links))}")
    out += ["", "## Figures", ""]
    if not figs:
        out.append("No figures (no finished results).")
    for name, paths in figs.items():
        png = [p for p in paths if p.suffix == ".png"][0]
        pdf = [p for p in paths if p.suffix == ".pdf"]
        rel = png.relative_to(out_dir).as_posix()
        out.append(f"### {name}\n\n![{name}]({rel})" + (f" ([pdf]({pdf[0].relative_to(out_dir).as_posix()}))"
                                                     if pdf else "") + "\n")
    out += ["", "## Data issues", ""]
    if skipped:
        out.append("Skipped files (not valid result files):\n")
        out.append(md_table(["file", "reason"], [[s, s.reason] for s in sorted(skipped)]))
    if len(fails):
        shown = fails.head(50)
        more = f"; the first {len(shown)} are listed, all in failures.csv" if len(fails) > len(shown) else ""
        out.append(f"Failed cells ({len(fails)}{more}):\n")
        out.append(md_table(["dataset", "ε", "method", "seed", "error"],
                            [[r["dataset"], fmt_eps(r["epsilon"]), r["method"], str(r["seed"]),
                              (r["error"] or "")[:160]] for _, r in shown.iterrows()]))
    if len(mixed):
        out.append(f"{len(mixed)} cells have results from several config hashes; the newest is used "
                   "(see mixed_configs.csv).\n")
    if not skipped and not len(fails) and not len(mixed):
        out.append("None.")
    return "\n".join(out) + "\n"
