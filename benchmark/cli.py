"""Command line: ``python -m benchmark <command>`` (alias ``dpsd-bench``).

Parsing and one-line error messages only; the work is in runner, report and registry.
Logs and progress go to stderr; result files are the output.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

DEFAULT_RESULTS = "results/runs"
EXIT_USAGE = 2
EXIT_FAILED = 1
#: glibc malloc setting measured to cut system time ~20x in training loops (shared/notes/environment.md)
GLIBC_TUNABLE = "glibc.malloc.mmap_threshold=4294967296"


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


def _parse_value(text: str):
    import yaml

    from .runner.grid import numbers_as_numbers
    try:
        return numbers_as_numbers(yaml.safe_load(text))
    except yaml.YAMLError:
        return text


def _parse_sets(pairs: list[str]) -> tuple[dict, dict]:
    from .runner.cells import CELL_SETTINGS
    hparams, settings = {}, {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UserError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        (settings if key in CELL_SETTINGS else hparams)[key.strip()] = _parse_value(value)
    return hparams, settings


def _check_data(cells: list[dict]) -> None:
    """Fail fast, before any work, if a dataset's files are missing."""
    from .data import get_dataset
    for root in sorted({c.get("data_root") for c in cells if c.get("data_root")}):
        if not Path(root).is_dir():
            raise UserError(f"--data-root {root} does not exist or is not a directory")
    for name, root, public_size in sorted({(c["dataset"], c.get("data_root"), c["public_size"]) for c in cells},
                                          key=str):
        get_dataset(name, root, public_size)


def cmd_list(args) -> int:
    from . import registry
    from .data import list_datasets
    methods = registry.discover()
    rows = [(m.name, m.family, ",".join(m.needs) or "-", m.privacy_unit, m.citation) for m in methods.values()]
    rows.sort(key=lambda r: (r[1], r[0]))
    widths = [max(len(str(r[i])) for r in rows + [("method", "family", "needs", "unit", "")]) for i in range(4)]
    print("METHODS")
    print("  " + "  ".join(h.ljust(w) for h, w in zip(("method", "family", "needs", "unit"), widths)) + "  citation")
    for r in rows:
        print("  " + "  ".join(str(v).ljust(w) for v, w in zip(r[:4], widths)) + f"  {r[4]}")
    print("\nDATASETS")
    for d in list_datasets():
        shape = "x".join(map(str, d.input_shape))
        print(f"  {d.name:<16} {d.num_classes:>4} classes  {shape:<9} {d.description}  [files: {d.files}]")
    return 0


def cmd_run(args) -> int:
    from .runner.cells import resolve
    from .runner.execute import run_cell
    from .runner.store import ResultStore
    hparams, settings = _parse_sets(args.set)
    config = resolve(args.method, args.dataset, args.epsilon, args.seed, delta=args.delta, hparams=hparams,
                     settings=settings, data_root=args.data_root)
    _check_data([config])
    store = ResultStore(args.results)
    store.check_not_corrupt(config)
    store.check_writable(config)
    if store.is_done(config) and not args.force_new:
        print(store.path_for(config))
        logging.getLogger("benchmark").info("already done (same config hash): %s", store.path_for(config))
        return 0
    result = run_cell(config, args.results, device=args.device, quiet=args.quiet)
    if result["status"] != "ok":
        last = [ln for ln in (result["error"] or "").splitlines() if ln.strip()][-1:]
        print(f"error: the run failed: {last[0].strip() if last else 'unknown'} "
              f"(traceback in {store.failed_path_for(config)})", file=sys.stderr)
        return EXIT_FAILED
    print(store.path_for(config))
    return 0


def _grid_cells(args):
    from .runner.grid import expand, load_grid
    grid = load_grid(args.grid)
    cells = expand(grid, data_root=args.data_root)
    return grid, cells


def cmd_sweep(args) -> int:
    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1 (got {args.jobs})")
    grid, cells = _grid_cells(args)
    if not args.dry_run:  # a dry run may be made away from the data
        _check_data(cells)
    log = logging.getLogger("benchmark")
    log.info("%d cells in %s", len(cells), args.grid)
    if args.dry_run and args.executor != "slurm":
        return _local_dry_run(cells, args.results)
    if args.executor == "slurm":
        from .runner import slurm
        return slurm.sweep(cells, args.results, grid=grid, profile=args.profile, resume=args.resume,
                           dry_run=args.dry_run, quiet=args.quiet, wait=args.wait)
    from .runner.executors import run_local
    counts = run_local(cells, args.results, resume=True, quiet=args.quiet, stop_on_error=args.executor == "debug",
                       device=args.device, jobs=args.jobs)
    print(f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} already done, "
          f"{counts['busy']} running elsewhere; results in {args.results}")
    return EXIT_FAILED if counts["failed"] else 0


def _local_dry_run(cells: list[dict], results) -> int:
    """List the cells a local sweep would run (those not finished in ``results``); run nothing."""
    from .runner.cells import cell_label
    from .runner.store import ResultStore
    store = ResultStore(results)
    todo = [c for c in cells if not store.is_done(c)]
    for config in todo:
        print(cell_label(config))
    print(f"{len(todo)} cells to run, {len(cells) - len(todo)} already done (dry run, nothing run); "
          f"results in {results}")
    return 0


def cmd_status(args) -> int:
    from .runner.executors import cell_status
    from .runner.store import ResultStore
    _, cells = _grid_cells(args)
    store = ResultStore(args.results)
    try:
        from .runner import slurm
        states = slurm.cell_states(cells, store)
    except ImportError:
        states = [cell_status(store, c) for c in cells]
    from collections import Counter

    from .runner.cells import format_epsilon
    counts = Counter(s for s, _ in states)
    for config, (state, detail) in zip(cells, states):
        if args.all or state != "done":
            line = f"{state:<9} {config['method']:<16} {config['dataset']:<14} eps={format_epsilon(config['epsilon_target']):<5} seed={config['seed']}"
            print(line + (f"  {detail}" if detail else ""))
    print(", ".join(f"{counts.get(k, 0)} {k}" for k in ("done", "queued", "running", "failed", "cancelled", "missing")
                    if counts.get(k, 0) or k in ("done", "missing")) + f" (of {len(cells)})")
    return 0


def cmd_report(args) -> int:
    from .report import build_report
    results = Path(args.results)
    if not results.is_dir():
        raise UserError(f"results directory {results} does not exist")
    written = build_report(results, Path(args.out), quiet=args.quiet)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


def cmd_prepare_data(args) -> int:
    from .data.prepare import prepare
    path = prepare(args.dataset, args.data_root)
    print(path)
    return 0


def cmd_bench(args) -> int:
    from . import bench
    if args.repeats is not None and args.repeats < 1:
        raise UserError(f"--repeats must be at least 1 (got {args.repeats})")
    log = logging.getLogger("benchmark")
    table = bench.run(bench.sizes_for(args.quick, args.repeats), progress=lambda what: log.info("bench: %s", what))
    print(bench.format_table(table))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, results=True):
        if results:
            sp.add_argument("--results", default=DEFAULT_RESULTS, help=f"results store (default {DEFAULT_RESULTS})")
        sp.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
        sp.add_argument("--data-root", default=None, help="folder with dataset files (searched first)")

    sp = sub.add_parser("list", help="methods and datasets")
    sp.set_defaults(func=cmd_list)

    sp = sub.add_parser("run", help="run one cell")
    sp.add_argument("--method", required=True)
    sp.add_argument("--dataset", required=True)
    sp.add_argument("--epsilon", type=float, default=None, help="target epsilon (omit for non-private methods)")
    sp.add_argument("--delta", type=float, default=1e-5)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="hyperparameter override (repeatable)")
    sp.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    sp.add_argument("--force-new", action="store_true", help=argparse.SUPPRESS)
    common(sp)
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("sweep", help="run a grid")
    sp.add_argument("grid")
    sp.add_argument("--executor", choices=["local", "debug", "slurm"], default="local")
    sp.add_argument("--resume", action="store_true", help="(slurm) resubmit only missing and failed cells; "
                    "local sweeps always skip finished cells")
    sp.add_argument("--profile", default="cpu", help="slurm profile: a name in slurm/ or a YAML path")
    sp.add_argument("--dry-run", action="store_true", help="list the cells to run and run nothing "
                    "(slurm: also build the job arrays, submit nothing)")
    sp.add_argument("--wait", action="store_true", help="(slurm) wait for the jobs to finish")
    sp.add_argument("--device", default=None)
    sp.add_argument("--jobs", type=int, default=1, help="(local) cells run at once in worker processes, each with "
                    "CPUs/jobs threads (default 1)")
    common(sp)
    sp.set_defaults(func=cmd_sweep)

    sp = sub.add_parser("status", help="done / queued / running / failed / missing cells of a grid")
    sp.add_argument("grid")
    sp.add_argument("--all", action="store_true", help="also list finished cells")
    common(sp)
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("report", help="leaderboards and figures from the results store")
    sp.add_argument("--out", default="results/report")
    common(sp)
    sp.set_defaults(func=cmd_report)

    sp = sub.add_parser("prepare-data", help="fetch or verify a dataset in the data cache")
    sp.add_argument("dataset")
    common(sp, results=False)
    sp.set_defaults(func=cmd_prepare_data)

    sp = sub.add_parser("bench", help="time the hot paths: DPSD's privacy overhead, baseline steps, ledger, store, report")
    sp.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test; the numbers mean little)")
    sp.add_argument("--repeats", type=int, default=None, help="timed repetitions per quantity (median reported)")
    common(sp, results=False)
    sp.set_defaults(func=cmd_bench)
    return p


def _maybe_reexec(argv: list[str]) -> None:
    """Re-run with the glibc malloc setting when about to train (it must be set before start-up)."""
    if (sys.platform.startswith("linux") and "GLIBC_TUNABLES" not in os.environ
            and os.environ.get("BENCHMARK_NO_REEXEC") != "1" and argv and argv[0] in ("run", "sweep", "bench")):
        env = {**os.environ, "GLIBC_TUNABLES": GLIBC_TUNABLE}
        try:
            os.execve(sys.executable, [sys.executable, "-m", "benchmark", *argv], env)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # from the command line
        argv = sys.argv[1:]
        _maybe_reexec(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(levelname)s %(message)s", stream=sys.stderr)
    from .errors import DataNotFound
    from .runner.cells import ConfigError
    from .runner.store import StoreError
    try:
        return args.func(args)
    except (UserError, ConfigError, DataNotFound, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyError as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `list | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
