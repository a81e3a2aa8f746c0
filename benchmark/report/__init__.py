"""Reports from the results store: leaderboards, tables, figures.

Entry points: ``build_report(results_dir, out_dir, quiet=False) -> {name: path}``
and ``load_results(results_dir) -> pandas.DataFrame``. Reads result files
only; never runs a method and never imports torch.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["build_report", "load_results"]


def load_results(results_dir):
    """Every result attempt (ok and failed) under ``results_dir`` as one DataFrame row."""
    from .load import load_results as _load
    return _load(Path(results_dir))


def build_report(results_dir: Path, out_dir: Path, quiet: bool = False) -> dict[str, Path]:
    """Write all tables and figures for ``results_dir`` into ``out_dir``; returns {name: path}."""
    from .build import build_report as _build
    return _build(Path(results_dir), Path(out_dir), quiet=quiet)
