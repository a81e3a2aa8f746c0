"""Executors: how a list of cells gets run. ``local`` runs them one after another in this
process (a failing cell is recorded as failed and the sweep goes on); ``debug`` does the same
but stops at the first failure with its traceback; ``slurm`` submits job arrays through
submitit (``benchmark/runner/slurm.py``)."""
from __future__ import annotations

import logging
from pathlib import Path

from .cells import cell_label
from .execute import run_cell
from .store import ResultStore

log = logging.getLogger("benchmark")


def cell_status(store: ResultStore, config: dict) -> tuple[str, str]:
    """(state, detail) of a cell from the store alone: done, running, failed or missing."""
    if store.is_done(config):
        return "done", ""
    if store.is_running(config):
        return "running", ""
    failed = store.read(config, failed=True)
    if failed is not None:
        lines = [ln for ln in (failed.get("error") or "").strip().splitlines() if ln.strip()]
        return "failed", lines[-1].strip() if lines else "unknown error"
    return "missing", ""


def run_local(cells: list[dict], results_dir: str | Path, *, resume: bool = True, quiet: bool = False,
              stop_on_error: bool = False, device: str | None = None) -> dict[str, int]:
    """Run cells in this process. Finished cells (same config hash, status ok) are skipped."""
    from tqdm.auto import tqdm

    store = ResultStore(results_dir)
    counts = {"skipped": 0, "ok": 0, "failed": 0, "busy": 0}
    todo = [c for c in cells if not (resume and store.is_done(c))]
    counts["skipped"] = len(cells) - len(todo)
    if counts["skipped"]:
        log.info("%d of %d cells already done; skipping them", counts["skipped"], len(cells))
    bar = tqdm(todo, desc="cells", disable=quiet, dynamic_ncols=True)
    for config in bar:
        bar.set_postfix_str(cell_label(config))
        with store.running(config) as mine:
            if not mine:
                log.warning("%s is running in another process; skipping it", cell_label(config))
                counts["busy"] += 1
                continue
            if store.is_done(config):  # finished by someone else meanwhile
                counts["skipped"] += 1
                continue
            result = run_cell(config, results_dir, device=device, quiet=quiet, raise_errors=stop_on_error)
        counts["ok" if result["status"] == "ok" else "failed"] += 1
    return counts
