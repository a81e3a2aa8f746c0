"""Figures (matplotlib, Agg, PNG and PDF), byte-reproducible.

No pyplot: each figure is a ``matplotlib.figure.Figure`` rendered by the Agg
(PNG) and PDF backends, inside an ``rc_context`` reset to matplotlib's
defaults, so a user's matplotlibrc cannot change the output. Metadata that
carries dates or versions is dropped.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from .aggregate import FAMILY_ORDER, NON_PRIVATE_FAMILIES, UNIT_ABBR, family_rank

log = logging.getLogger("benchmark.report")

FAMILY_COLORS = {
    "dpsd": "#d62728", "dp-training": "#1f77b4", "dp-generative": "#2ca02c", "dp-data-free": "#9467bd",
    "label-dp": "#ff7f0e", "federated": "#8c564b", "reference": "#222222", "data-free-kd": "#7f7f7f",
}
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">", "h", "p")
LINESTYLES = ("-", "--", "-.", ":")
RC = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 7.5,
      "svg.hashsalt": "benchmark-report", "pdf.compression": 6, "path.simplify": True}
GENERATIVE_FAMILIES = ("dp-generative", "dp-data-free", "dpsd", "data-free-kd", "federated")


def family_color(f: str) -> str:
    return FAMILY_COLORS.get(f, "#bcbd22")


def method_styles(pairs) -> dict:
    """(family, method) -> (color, marker, linestyle): colour by family, marker/style within it."""
    out, count = {}, {}
    for fam, m in sorted(set(pairs), key=lambda fm: (family_rank(fm[0]), fm[0], fm[1])):
        i = count.get(fam, 0)
        count[fam] = i + 1
        out[m] = (family_color(fam), MARKERS[i % len(MARKERS)], LINESTYLES[(i // len(MARKERS)) % 4])
    return out


def save(fig: Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` without dates or version strings."""
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    fig.savefig(png, dpi=150, metadata={"Software": None})
    fig.savefig(pdf, metadata={"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None})
    return [png, pdf]


class _rc:
    def __enter__(self):
        self._ctx = matplotlib.rc_context()
        self._ctx.__enter__()
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(RC)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


CHAR_IN = 0.062  # approximate width of one legend/tick character at the fonts above, in inches


def _frame(fig: Figure, left: float, right: float, bottom: float, top: float) -> None:
    """Fixed margins in inches (no tight bbox: one draw per file, and a stable layout)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h)


def _legend_width(labels, ncol=1) -> float:
    longest = max((len(str(s)) for s in labels), default=0)
    return ncol * (0.55 + CHAR_IN * 0.85 * longest)


def _legend_outside(fig: Figure, ax, axes_w: float, axes_h: float, left=0.75, bottom=0.6, top=0.4):
    """Size the figure so that the legend sits right of the axes, never on the data."""
    handles, labels = ax.get_legend_handles_labels()
    ncol = 1 if len(handles) <= 22 else 2
    lw = _legend_width(labels, ncol) if handles else 0.2
    rows = math.ceil(len(handles) / ncol)
    h = max(axes_h + bottom + top, 0.2 * rows + 0.6)
    fig.set_size_inches(left + axes_w + 0.15 + lw, h)
    _frame(fig, left, 0.15 + lw, bottom + (h - axes_h - bottom - top) / 2, top + (h - axes_h - bottom - top) / 2)
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                  frameon=False, ncol=ncol)


def acc_vs_eps(lb: pd.DataFrame, dataset: str, stem: Path) -> list[Path]:
    d = lb[lb["dataset"] == dataset]
    priv = d[(d["group"] != "non-private") & d["acc_mean"].notna()]
    refs = d[(d["group"] == "non-private") & d["acc_mean"].notna()]
    styles = method_styles(zip(d["family"], d["method"]))
    with _rc():
        fig = Figure(figsize=(7.0, 4.2))
        ax = fig.add_subplot()
        order = sorted(set(zip(priv["family"], priv["method"])), key=lambda fm: (family_rank(fm[0]), fm[0], fm[1]))
        for fam, m in order:
            g = priv[priv["method"] == m].sort_values("epsilon")
            c, mk, ls = styles[m]
            ax.errorbar(g["epsilon"], 100 * g["acc_mean"], yerr=100 * g["acc_std"].fillna(0.0), color=c,
                        marker=mk, linestyle=ls, markersize=4, linewidth=1.2, capsize=2,
                        label=f"{m} ({fam}, {UNIT_ABBR.get(g['privacy_unit'].iloc[0], '?')})")
        for fam, m in sorted(set(zip(refs["family"], refs["method"])), key=lambda fm: (family_rank(fm[0]), fm[1])):
            r = refs[refs["method"] == m].iloc[0]
            c, _, _ = styles[m]
            y = 100 * r["acc_mean"]
            ax.axhline(y, color=c, linestyle=(0, (4, 2)) if fam == "reference" else (0, (1, 1.5)), linewidth=1.0,
                       label=f"{m} (non-private, {y:.1f}%)")
        if len(priv):
            ax.set_xscale("log")
            eps = sorted(set(priv["epsilon"]))
            ax.set_xticks(eps)
            ax.set_xticklabels([f"{e:g}" for e in eps])
            ax.minorticks_off()
        ax.set_xlabel("privacy budget ε (log scale); unit in the legend: R record, L label, C client")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{dataset}: accuracy vs. ε (mean ± std over seeds)")
        ax.grid(True, alpha=0.3, linewidth=0.5)
        _legend_outside(fig, ax, 4.6, 3.2)
        return save(fig, stem)


def rank_heatmap(ar: pd.DataFrame, stem: Path) -> list[Path]:
    ds_cols = [c for c in ar.columns if c not in ("method", "family", "privacy_unit", "avg_rank", "n_cells")]
    mat = ar[ds_cols].to_numpy(dtype=float) if ds_cols else np.zeros((len(ar), 0))
    with _rc():
        ylab = max((len(m) + 4 for m in ar["method"]), default=4)
        xlab = max((len(c) for c in ds_cols), default=4)
        left, bottom = 0.85 + CHAR_IN * 0.85 * ylab, 0.55 + CHAR_IN * 0.6 * xlab
        # at least wide enough for the title and tall enough for the axis label, however few cells
        fig = Figure(figsize=(max(left + 0.7 * max(1, len(ds_cols)) + 1.1, 6.0),
                              max(bottom + 0.45 + 0.24 * max(1, len(ar)), 3.0)))
        _frame(fig, left, 1.1, bottom, 0.45)
        ax = fig.add_subplot()
        im = ax.imshow(np.ma.masked_invalid(mat), cmap="viridis_r", aspect="auto")
        ax.set_xticks(range(len(ds_cols)))
        ax.set_xticklabels(ds_cols, rotation=30, ha="right")
        ax.set_yticks(range(len(ar)))
        ax.set_yticklabels([f"{m} [{u[:1].upper()}]" for m, u in zip(ar["method"], ar["privacy_unit"])])
        for lbl, fam in zip(ax.get_yticklabels(), ar["family"]):
            lbl.set_color(family_color(fam))
        finite = mat[np.isfinite(mat)]
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0
        for i in range(mat.shape[0]):
            for j in range(mat.shape[1]):
                if np.isfinite(mat[i, j]):
                    ax.text(j, i, f"{mat[i, j]:.1f}", ha="center", va="center", fontsize=7,
                            color="white" if mat[i, j] > mid else "black")
        ax.set_xlabel("dataset")
        ax.set_ylabel("method [privacy unit]")
        ax.set_title("Average rank among private methods (1 = best; sorted by it)")
        cax = fig.add_axes((1 - 0.95 / fig.get_size_inches()[0], bottom / fig.get_size_inches()[1],
                            0.12 / fig.get_size_inches()[0], 1 - (bottom + 0.45) / fig.get_size_inches()[1]))
        cb = fig.colorbar(im, cax=cax)
        cb.set_label("average rank over ε")
        return save(fig, stem)


def cost(cost_df: pd.DataFrame, stem: Path) -> list[Path]:
    """Wall time and teacher queries per method (one marker per dataset)."""
    methods = sorted(set(zip(cost_df["family"], cost_df["method"])), key=lambda fm: (family_rank(fm[0]), fm[0], fm[1]))
    names = [m for _, m in methods]
    datasets = sorted(set(cost_df["dataset"]))
    dmark = {ds: MARKERS[i % len(MARKERS)] for i, ds in enumerate(datasets)}
    with _rc():
        left = 0.55 + CHAR_IN * 0.85 * max((len(n) for n in names), default=4)
        right = 0.3 + _legend_width(datasets)
        fig = Figure(figsize=(left + 5.6 + right, 1.1 + 0.22 * max(4, len(names))))
        _frame(fig, left, right, 0.55, 0.5)
        axes = fig.subplots(1, 2, sharey=True, gridspec_kw={"wspace": 0.08})
        ypos = {m: i for i, m in enumerate(names)}
        for col, ax, title in (("wall_time_s_mean", axes[0], "wall time per run (s)"),
                               ("teacher_queries_mean", axes[1], "teacher queries per run")):
            any_point = False
            for ds in datasets:
                g = cost_df[(cost_df["dataset"] == ds) & cost_df[col].notna() & (cost_df[col] > 0)]
                if g.empty:
                    continue
                any_point = True
                ax.scatter(g[col], [ypos[m] for m in g["method"]], marker=dmark[ds], s=18,
                           c=[family_color(f) for f in g["family"]], label=ds, edgecolors="none")
            vals = cost_df[col][cost_df[col] > 0].dropna()
            if any_point and vals.max() / vals.min() > 30:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
            elif any_point:
                ax.set_xlim(0, vals.max() * 1.08)
                ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
            else:
                ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="gray")
            ax.set_xlabel(title + (" (log scale)" if ax.get_xscale() == "log" else ""))
            ax.grid(True, axis="x", alpha=0.3, linewidth=0.5)
        axes[0].set_yticks(range(len(names)))
        axes[0].set_yticklabels(names)
        for lbl, (fam, _) in zip(axes[0].get_yticklabels(), methods):
            lbl.set_color(family_color(fam))
        axes[0].invert_yaxis()
        axes[0].set_ylabel("method (colour = family)")
        fig.suptitle("Cost per method: marker shape = dataset")
        from matplotlib.lines import Line2D
        handles = [Line2D([], [], marker=dmark[ds], linestyle="", color="black", label=ds) for ds in datasets]
        if handles:
            axes[1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
                           title="dataset")
        return save(fig, stem)


def _pick_artifact(artifacts_json: str) -> str | None:
    arts = json.loads(artifacts_json) if isinstance(artifacts_json, str) else {}
    pngs = {k: v for k, v in arts.items() if str(v).lower().endswith(".png")}
    if not pngs:
        return None
    for k in sorted(pngs):
        if any(w in k.lower() for w in ("sample", "grid", "synthetic")):
            return pngs[k]
    return pngs[sorted(pngs)[0]]


def sample_grid_candidates(cells: pd.DataFrame) -> pd.DataFrame:
    """One artifact per (dataset, epsilon, method): the lowest ok seed that exported a PNG."""
    ok = cells[(cells["status"] == "ok") & cells["family"].isin(GENERATIVE_FAMILIES + NON_PRIVATE_FAMILIES)]
    ok = ok.assign(artifact=ok["artifacts"].map(_pick_artifact))
    ok = ok[ok["artifact"].notna()].sort_values(["dataset", "epsilon", "method", "seed"], kind="mergesort")
    return ok.drop_duplicates(["dataset", "epsilon", "method"], keep="first")


def sample_grid(cands: pd.DataFrame, results_dir: Path, dataset: str, eps: float, stem: Path) -> list[Path]:
    from matplotlib.image import imread
    g = cands[(cands["dataset"] == dataset) & (cands["epsilon"] == eps)]
    g = g.assign(_f=g["family"].map(family_rank)).sort_values(["_f", "family", "method"], kind="mergesort")
    images = []
    for _, r in g.iterrows():
        p = Path(results_dir) / r["artifact"]
        try:
            images.append((r, imread(p)))
        except (OSError, ValueError, SyntaxError) as e:
            log.warning("skipping sample image %s: %s", p, e)
    if not images:
        return []
    ncol = min(5, len(images))
    nrow = math.ceil(len(images) / ncol)
    with _rc():
        fig = Figure(figsize=(max(2.2 * ncol, 4.4), 2.3 * nrow + 0.6))
        _frame(fig, 0.05, 0.05, 0.05, 0.75)
        axes = np.atleast_1d(fig.subplots(nrow, ncol, gridspec_kw={"hspace": 0.25, "wspace": 0.08})).ravel()
        for ax in axes:
            ax.axis("off")
        for ax, (r, img) in zip(axes, images):
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
            ax.set_title(f"{r['method']} (seed {r['seed']})", color=family_color(r["family"]), fontsize=8)
        fig.suptitle(f"{dataset}, ε = {'∞' if math.isinf(eps) else f'{eps:g}'}: synthetic samples\n"
                     "(title colour = family)", fontsize=9)
        return save(fig, stem)


def ablation(ab: pd.DataFrame, dataset: str, method: str, stem: Path) -> list[Path]:
    g = ab[(ab["dataset"] == dataset) & (ab["method"] == method)]
    variants = sorted(set(g["variant"]))
    eps = sorted(set(g["epsilon"]))
    with _rc():
        fig = Figure(figsize=(7.0, 4.2))
        ax = fig.add_subplot()
        cmap = matplotlib.colormaps["tab10" if len(variants) <= 10 else "tab20"]
        if len(eps) == 1 or any(math.isinf(e) for e in eps):
            # one bar per (variant, epsilon)
            labels, vals, errs, cols = [], [], [], []
            for i, v in enumerate(variants):
                for e in eps:
                    r = g[(g["variant"] == v) & (g["epsilon"] == e)]
                    if r.empty:
                        continue
                    r = r.iloc[0]
                    labels.append(v if len(eps) == 1 else f"{v}, ε={'∞' if math.isinf(e) else f'{e:g}'}")
                    vals.append(100 * r["acc_mean"])
                    errs.append(0.0 if np.isnan(r["acc_std"]) else 100 * r["acc_std"])
                    cols.append(cmap(i % cmap.N))
            left = 0.9 + CHAR_IN * 0.75 * max((len(lb) for lb in labels), default=4)
            fig.set_size_inches(left + 4.5 + 0.3, 1.1 + 0.25 * max(4, len(vals)))
            _frame(fig, left, 0.3, 0.55, 0.45)
            ax.barh(range(len(vals)), vals, xerr=errs, color=cols, capsize=2)
            ax.set_yticks(range(len(vals)))
            ax.set_yticklabels(labels, fontsize=7)
            ax.invert_yaxis()
            ax.set_xlabel("test accuracy (%)")
            ax.set_ylabel("variant (differing hyperparameters)")
        else:
            for i, v in enumerate(variants):
                r = g[g["variant"] == v].sort_values("epsilon")
                ax.errorbar(r["epsilon"], 100 * r["acc_mean"], yerr=100 * r["acc_std"].fillna(0.0),
                            color=cmap(i % cmap.N), marker=MARKERS[i % len(MARKERS)], capsize=2, linewidth=1.2,
                            markersize=4, label=v)
            ax.set_xscale("log")
            ax.set_xticks(eps)
            ax.set_xticklabels([f"{e:g}" for e in eps])
            ax.minorticks_off()
            ax.set_xlabel("privacy budget ε (log scale)")
            ax.set_ylabel("test accuracy (%)")
            _legend_outside(fig, ax, 4.6, 3.2)
        ax.grid(True, alpha=0.3, linewidth=0.5)
        ax.set_title(f"{method} ablation on {dataset} (mean ± std over seeds)")
        return save(fig, stem)


__all__ = ["FAMILY_COLORS", "FAMILY_ORDER", "acc_vs_eps", "rank_heatmap", "cost", "sample_grid",
           "sample_grid_candidates", "ablation"]
