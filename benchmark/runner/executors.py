"""Executors: how a list of cells gets run. ``local`` runs them one after another in this
process (a failing cell is recorded as failed and the sweep goes on); ``debug`` does the same
but stops at the first failure with its traceback; ``slurm`` submits job arrays through
submitit (``benchmark/runner/slurm.py``)."""
from __future__ import annotations

import logging
from pathlib import Path

from .cells import cell_label
from .execute import available_cpus, run_cell
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


def _run_one(config: dict, results_dir: str | Path, device: str | None, quiet: bool, stop_on_error: bool) -> str:
    """One cell under the store's running-lock: 'ok', 'failed', 'skipped' or 'busy'."""
    store = ResultStore(results_dir)
    with store.running(config) as mine:
        if not mine:
            log.warning("%s is running in another process; skipping it", cell_label(config))
            return "busy"
        if store.is_done(config):  # finished by someone else meanwhile
            return "skipped"
        result = run_cell(config, results_dir, device=device, quiet=quiet, raise_errors=stop_on_error)
    return "ok" if result["status"] == "ok" else "failed"


def _worker_init(threads: int) -> None:
    import os
    import signal
    import sys
    os.environ["BENCHMARK_THREADS"] = str(threads)
    if sys.platform.startswith("linux"):  # a killed sweep takes its workers with it (no orphans)
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")


#: Imported once by the fork server, before any cell: every cell process is forked from it, so it
#: starts with torch, torchvision, Opacus and the runner already imported (about 5 s of CPU per cell
#: otherwise). Nothing in this list computes, starts threads or touches CUDA at import. The guard
#: comes first: it makes the server die with the sweep (see its docstring).
PRELOAD = ["benchmark.runner._forkserver_guard", "torch", "torchvision", "opacus", "sklearn",
           "benchmark.runner.execute", "benchmark.training", "benchmark.privacy.ledger", "benchmark.privacy.audit",
           "benchmark.privacy.mechanisms"]


def _cell_process_context():
    """A fresh process per cell, forked from a fork server that has :data:`PRELOAD` imported
    (``spawn`` where there is no fork server). A forked cell still starts clean: no cell has run in
    the server, each cell seeds everything itself, and its peak memory is measured from its own start."""
    import multiprocessing as mp
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def run_local(cells: list[dict], results_dir: str | Path, *, resume: bool = True, quiet: bool = False,
              stop_on_error: bool = False, device: str | None = None, jobs: int = 1) -> dict[str, int]:
    """Run cells on this machine. Finished cells (same config hash, status ok) are skipped.

    ``jobs == 1``: one after another in this process. ``jobs > 1``: that many worker processes
    (a fresh one per cell, so no state leaks between cells; see :func:`_cell_process_context`), each with CPUs // jobs threads unless
    ``$BENCHMARK_THREADS`` says otherwise; the thread count is recorded in every result."""
    import os

    from tqdm.auto import tqdm

    store = ResultStore(results_dir)
    counts = {"skipped": 0, "ok": 0, "failed": 0, "busy": 0}
    todo = [c for c in cells if not (resume and store.is_done(c))]
    counts["skipped"] = len(cells) - len(todo)
    if counts["skipped"]:
        log.info("%d of %d cells already done; skipping them", counts["skipped"], len(cells))
    bar = tqdm(total=len(todo), desc="cells", disable=quiet, dynamic_ncols=True)
    if jobs <= 1 or len(todo) <= 1:
        for config in todo:
            bar.set_postfix_str(cell_label(config))
            counts[_run_one(config, results_dir, device, quiet, stop_on_error)] += 1
            bar.update()
        bar.close()
        return counts
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    threads = int(os.environ.get("BENCHMARK_THREADS") or max(1, available_cpus() // jobs))
    # one fresh process per cell: nothing leaks between cells, and each cell's peak memory is its own
    with ProcessPoolExecutor(max_workers=jobs, mp_context=_cell_process_context(), initializer=_worker_init,
                             initargs=(threads,), max_tasks_per_child=1) as pool:
        pending = {pool.submit(_run_one, c, str(results_dir), device, True, stop_on_error): c for c in todo}
        while pending:
            done, _ = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                config = pending.pop(future)
                counts[future.result()] += 1  # re-raises a worker's exception (debug executor)
                bar.set_postfix_str(cell_label(config))
                bar.update()
    bar.close()
    return counts
