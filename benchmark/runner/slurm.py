"""The Slurm executor: grid cells -> submitit job arrays (protocol section 6, ``--executor slurm``).

* Cells that are not done (and not already queued or running in Slurm) are grouped by the
  resources their profile asks for; each group becomes job arrays of at most the cluster's
  ``MaxArraySize`` tasks (read from ``scontrol show config``), run ``array_parallelism`` at a
  time. A job receives only its cell's small config dict and the results path, never a model
  or a dataset: it loads the data on the node and writes its result into the store itself.
* Each task is a :class:`CellJob` (``submitit.helpers.Checkpointable``). On preemption or
  time-out Slurm sends the signal submitit handles; submitit requeues the task, and the new
  run resumes from the cell's last checkpoint (model, optimizer, RNG and privacy ledger,
  written by the method through ``ctx.checkpointer`` at step boundaries).
* Which Slurm job runs which cell is recorded under ``<results>/.slurm/jobs/<hash>.json``, so
  ``status`` can say queued / running / cancelled, and ``sweep --resume`` resubmits only the
  missing, failed and cancelled cells.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from .cells import ConfigError, cell_label, cell_stem, config_hash
from .execute import PROJECT_ROOT
from .store import ResultStore

log = logging.getLogger("benchmark")
PROFILE_DIR = PROJECT_ROOT / "slurm"
EXIT_FAILED = 1  # as benchmark.cli: some cell failed

PROFILE_DEFAULTS: dict[str, Any] = {
    "partition": None, "account": None, "qos": None, "timeout_min": 60, "mem_gb": 4, "cpus_per_task": 1,
    "gpus_per_task": 0, "array_parallelism": 32, "max_array_size": None, "max_num_timeout": 3,
    "checkpoint_interval_s": 300, "signal_delay_s": 120, "env": {}, "setup": [], "additional_parameters": {},
    "resources": {},
}
#: keys that may differ per method / dataset (``resources:`` section of a profile)
RESOURCE_KEYS = ("partition", "account", "qos", "timeout_min", "mem_gb", "cpus_per_task", "gpus_per_task",
                 "array_parallelism", "max_num_timeout", "checkpoint_interval_s", "signal_delay_s",
                 "additional_parameters", "setup", "env")
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "RESIZING", "SUSPENDED",
          "SPECIAL_EXIT"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}


# ------------------------------------------------------------------ profiles
def load_profile(profile: str | os.PathLike | dict | None = "cpu", grid: dict | None = None) -> dict[str, Any]:
    """A profile: a name in ``slurm/`` (``cpu``, ``gpu``) or a YAML path, with the grid's
    ``slurm:`` mapping merged over it."""
    if isinstance(profile, dict):
        data = dict(profile)
    else:
        name = str(profile or "cpu")
        path = Path(name)
        if not path.exists():
            path = PROFILE_DIR / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))
            raise ConfigError(f"slurm profile {name!r} not found (a YAML path, or one of: {known})")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"slurm profile {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"slurm profile {path} must be a mapping")
    extra = (grid or {}).get("slurm") or {}
    if not isinstance(extra, dict):
        raise ConfigError("the grid's `slurm:` key must be a mapping of profile settings")
    merged = {**PROFILE_DEFAULTS, **data}
    for key, value in extra.items():
        if key in ("resources", "env", "additional_parameters") and isinstance(value, dict):
            merged[key] = {**(merged.get(key) or {}), **value}
        else:
            merged[key] = value
    unknown = set(merged) - set(PROFILE_DEFAULTS)
    if unknown:
        raise ConfigError(f"slurm profile: unknown key(s) {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(sorted(PROFILE_DEFAULTS))}")
    for key, res in (merged.get("resources") or {}).items():
        bad = set(res or {}) - set(RESOURCE_KEYS)
        if bad:
            raise ConfigError(f"slurm profile: resources for {key!r}: unknown key(s) {', '.join(sorted(bad))}")
    return merged


def resources_for(profile: dict, config: dict) -> dict[str, Any]:
    """The profile's settings for one cell: base, then method, dataset and method@dataset entries."""
    out = {k: profile[k] for k in RESOURCE_KEYS}
    res = profile.get("resources") or {}
    for key in (config["method"], config["dataset"], f"{config['method']}@{config['dataset']}"):
        for k, v in (res.get(key) or {}).items():
            out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def submitit_parameters(res: dict, name: str) -> dict[str, Any]:
    env = {**(res.get("env") or {})}
    # jobs import this checkout's `benchmark` package, wherever sbatch was called from
    setup = [f"export PYTHONPATH={_shell_quote(str(PROJECT_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"]
    setup += [f"export {k}={_shell_quote(str(v))}" for k, v in sorted(env.items())] + list(res.get("setup") or [])
    params: dict[str, Any] = {
        "job_name": name, "time": int(res["timeout_min"]), "mem": _mem(res["mem_gb"]),
        "cpus_per_task": int(res["cpus_per_task"]), "signal_delay_s": int(res["signal_delay_s"]),
        "array_parallelism": int(res["array_parallelism"]), "setup": setup,
        "additional_parameters": dict(res.get("additional_parameters") or {}),
    }
    if res.get("gpus_per_task"):
        params["gpus_per_node"] = int(res["gpus_per_task"])
    for key in ("partition", "account", "qos"):
        if res.get(key):
            params[key] = res[key]
    return params


def _mem(mem_gb) -> str:
    return f"{int(mem_gb)}GB" if float(mem_gb) == int(mem_gb) else f"{int(float(mem_gb) * 1024)}MB"


def _shell_quote(s: str) -> str:
    import shlex
    return shlex.quote(s)


def max_array_size(profile: dict) -> int:
    """The cluster's MaxArraySize (array indices run 0..MaxArraySize-1), or the profile's value."""
    if profile.get("max_array_size"):
        return int(profile["max_array_size"])
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
        m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.M)
        if m:
            return max(1, int(m.group(1)))
    except (OSError, subprocess.SubprocessError):
        pass
    return 1001  # Slurm's default


# ------------------------------------------------------------------ the job
class CellJob:
    """One cell, as submitit runs it on a node. Checkpointable: on preemption or time-out
    submitit calls :meth:`checkpoint` and requeues this same small object; the rerun picks the
    cell's training state up from its checkpoint file."""

    def __init__(self, config: dict, results_dir: str, checkpoint_interval_s: float = 300.0, quiet: bool = True):
        self.config = config
        self.results_dir = str(results_dir)
        self.checkpoint_interval_s = float(checkpoint_interval_s)
        self.quiet = quiet
        self.attempt = 0

    def __call__(self) -> dict:
        from .checkpoint import Checkpointer
        from .execute import run_cell
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
        self.attempt += 1
        store = ResultStore(self.results_dir)
        label = cell_label(self.config)
        if store.is_done(self.config):
            log.info("%s is already done; nothing to do", label)
            return {"status": "ok", "skipped": True}
        ckpt = Checkpointer(checkpoint_path(store, self.config), interval_s=self.checkpoint_interval_s)
        log.info("%s: attempt %d on %s (checkpoint %s)", label, self.attempt, os.uname().nodename, ckpt.path)
        with store.running(self.config) as mine:
            if not mine:
                raise RuntimeError(f"{label} is running in another process")
            result = run_cell(self.config, self.results_dir, quiet=self.quiet, checkpointer=ckpt)
        if result["status"] != "ok":
            raise CellFailed(f"{label} failed (result in {store.failed_path_for(self.config)}):\n{result['error']}")
        ckpt.clear()
        return {"status": "ok", "test_accuracy": result["metrics"].get("test_accuracy"),
                "epsilon_spent": result.get("epsilon_spent")}

    def checkpoint(self, *args, **kwargs):
        """Called by submitit's signal handler before it requeues the task. The training state
        itself is on disk already (saved by the method at its last step boundary); requeue this
        same callable, which resumes from that file."""
        from submitit.helpers import DelayedSubmission
        log.warning("%s: preempted or timed out; requeueing (resumes from its checkpoint)", cell_label(self.config))
        return DelayedSubmission(self, *args, **kwargs)


class CellFailed(RuntimeError):
    """The cell ran and failed; its failed result (with the traceback) is in the store."""


def checkpoint_path(store: ResultStore, config: dict) -> Path:
    return store.root / ".slurm" / "checkpoints" / config["dataset"] / config["method"] / f"{cell_stem(config)}.pt"


# ------------------------------------------------------------------ job records
def _records_dir(store: ResultStore) -> Path:
    return store.root / ".slurm" / "jobs"


def _write_record(store: ResultStore, config: dict, record: dict) -> None:
    d = _records_dir(store)
    d.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".rec.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, d / f"{config_hash(config)}.json")


def _read_record(store: ResultStore, config: dict) -> dict | None:
    try:
        return json.loads((_records_dir(store) / f"{config_hash(config)}.json").read_text())
    except (OSError, ValueError):
        return None


def slurm_states(job_ids: list[str], since: str | None = None) -> dict[str, str]:
    """Slurm state (``PENDING``, ``RUNNING``, ``COMPLETED``, ``CANCELLED``, ...) of each job id
    (``<array>_<task>`` or plain), from squeue for live jobs and sacct for finished ones."""
    wanted = set(job_ids)
    states: dict[str, str] = {}
    if not wanted or shutil.which("squeue") is None:
        return states
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-u", _user()], capture_output=True, text=True,
                             timeout=60).stdout
        for line in out.splitlines():
            jid, _, state = line.strip().partition("|")
            if jid in wanted:
                states[jid] = state.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    rest = wanted - set(states)
    if rest and shutil.which("sacct"):
        mains = sorted({j.split("_")[0] for j in rest})
        cmd = ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(mains)]
        if since:
            cmd += ["-S", since[:19]]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        for line in out.splitlines():
            jid, _, state = line.strip().partition("|")
            state = state.split()[0] if state.strip() else "UNKNOWN"  # "CANCELLED by 0" -> CANCELLED
            for j in _expand_ids(jid):
                if j in rest:
                    states[j] = state
    return states


def _expand_ids(jid: str) -> list[str]:
    m = re.fullmatch(r"(\d+)_\[([\d,\-]+)(?:%\d+)?\]", jid)
    if not m:
        return [jid]
    out = []
    for part in m.group(2).split(","):
        lo, _, hi = part.partition("-")
        out += [f"{m.group(1)}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def _user() -> str:
    import getpass
    return getpass.getuser()


def _log_tail(record: dict) -> str:
    """Last meaningful line of the job's stderr log (for jobs that died without a result)."""
    path = Path(record.get("log_dir", "")) / f"{record['job_id']}_0_log.err"
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", ln) or "error:" in ln.lower()]
    return (errors or lines or [""])[-1][:300]


def cell_states(cells: list[dict], store: ResultStore) -> list[tuple[str, str]]:
    """(state, detail) per cell: done, queued, running, failed, cancelled or missing.

    The store decides ``done`` and ``failed`` (with the traceback's last line); cells with a
    Slurm job record are ``queued`` / ``running`` while Slurm says so, ``cancelled`` when the
    job was cancelled (scancel) before writing a result, ``failed`` when it died otherwise
    (time-out, out of memory, node failure)."""
    from .executors import cell_status
    dirs: dict[Path, bool] = {}

    def status(config):  # a cell whose folder does not exist is missing: skip the file checks
        d = store.cell_dir(config)
        if d not in dirs:
            dirs[d] = d.is_dir()
        return cell_status(store, config) if dirs[d] else ("missing", "")

    base = [status(c) for c in cells]
    rec_dir = _records_dir(store)
    known = {p.stem for p in rec_dir.glob("*.json")} if rec_dir.is_dir() else set()
    records = {i: _read_record(store, c) for i, (c, (s, _)) in enumerate(zip(cells, base))
               if s != "done" and config_hash(c) in known}
    records = {i: r for i, r in records.items() if r}
    if not records:
        return base
    since = min(r.get("submitted_at", "") for r in records.values()) or None
    states = slurm_states([r["job_id"] for r in records.values()], since=since)
    out = list(base)
    for i, rec in records.items():
        state, detail = base[i]
        sstate = states.get(rec["job_id"])
        if sstate in QUEUED:
            out[i] = ("queued", f"job {rec['job_id']} {sstate.lower()}")
        elif sstate in RUNNING:
            out[i] = ("running", f"job {rec['job_id']}")
        elif state == "failed":
            out[i] = (state, detail)
        elif sstate == "CANCELLED":
            out[i] = ("cancelled", f"job {rec['job_id']} cancelled (scancel)")
        elif sstate in {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}:
            tail = _log_tail(rec)
            out[i] = ("failed", f"job {rec['job_id']} {sstate}" + (f": {tail}" if tail else ""))
    return out


# ------------------------------------------------------------------ sweep
_DRY_RUN_IDS: list[int] = []


class _DryRunExecutor:
    """A submitit SlurmExecutor that does everything (pickles, sbatch scripts) but call sbatch."""

    def __new__(cls, folder, max_num_timeout):
        from submitit.slurm.slurm import SlurmExecutor

        class DryRun(SlurmExecutor):
            @classmethod
            def affinity(cls) -> int:
                return 2

            def _make_submission_command(self, submission_file_path):
                _DRY_RUN_IDS.append(len(_DRY_RUN_IDS) + 1)
                return ["echo", f"Submitted batch job {_DRY_RUN_IDS[-1]} (dry run: {submission_file_path})"]

        return DryRun(folder, max_num_timeout=max_num_timeout)


@contextlib.contextmanager
def _dry_run_patch(ex):
    """submitit submits an array through a fresh ``SlurmExecutor``; during a dry run make that
    one a dry-run executor too."""
    if ex is None:
        yield
        return
    import submitit.slurm.slurm as sl
    original = sl.SlurmExecutor
    sl.SlurmExecutor = type(ex)
    try:
        yield
    finally:
        sl.SlurmExecutor = original


def plan(cells: list[dict], store: ResultStore, profile: dict, resume: bool = True) -> tuple[list[list[dict]], dict]:
    """The arrays to submit (lists of cells with identical resources, each at most MaxArraySize)
    and the counts of cells left alone."""
    states = cell_states(cells, store)
    # a first sweep submits the cells never tried; --resume also retries failed and cancelled ones
    skip = {"done", "queued", "running"} | (set() if resume else {"failed", "cancelled"})
    counts = defaultdict(int)
    groups: dict[str, list[dict]] = defaultdict(list)
    for config, (state, _) in zip(cells, states):
        if state in skip:
            counts[state] += 1
            continue
        counts["submit_" + state] += 1
        key = json.dumps(resources_for(profile, config), sort_keys=True)
        groups[key].append(config)
    size = max_array_size(profile)
    arrays = [grp[i:i + size] for grp in groups.values() for i in range(0, len(grp), size)]
    return arrays, dict(counts)


def sweep(cells: list[dict], results_dir: str | Path, *, grid: dict | None = None, profile: str | dict = "cpu",
          resume: bool = False, dry_run: bool = False, quiet: bool = False, wait: bool = False,
          poll_s: float = 5.0) -> int:
    """Submit the grid's cells that are not done, queued or running as Slurm job arrays."""
    t0 = time.perf_counter()
    prof = load_profile(profile, grid)
    store = ResultStore(results_dir)
    arrays, counts = plan(cells, store, prof, resume=resume)
    n_submit = sum(len(a) for a in arrays)
    left = counts.get("failed", 0) + counts.get("cancelled", 0)
    if left:
        log.warning("%d failed or cancelled cell(s) left alone; `sweep --resume` resubmits them", left)
    log.info("%d cells: %d done, %d queued, %d running; submitting %d in %d array(s)", len(cells),
             counts.get("done", 0), counts.get("queued", 0), counts.get("running", 0), n_submit, len(arrays))
    if not arrays:
        print(f"nothing to submit: {counts.get('done', 0)} done, {counts.get('queued', 0)} queued, "
              f"{counts.get('running', 0)} running (of {len(cells)})")
        return _wait(cells, store, poll_s, quiet) if wait else 0
    import submitit
    from submitit.slurm.slurm import SlurmExecutor
    if dry_run:
        folder = Path(tempfile.mkdtemp(prefix="benchmark-slurm-dryrun-")) / "%j"
    else:
        if shutil.which("sbatch") is None:
            raise ConfigError("--executor slurm needs Slurm's sbatch on PATH (start a test cluster with "
                              "slurm/local-cluster.sh start, or use --executor local)")
        folder = store.root.resolve() / ".slurm" / "logs" / "%j"
    submitted_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    job_ids = []
    for array in arrays:
        res = resources_for(prof, array[0])
        ex = (_DryRunExecutor(folder, res["max_num_timeout"]) if dry_run
              else SlurmExecutor(folder, max_num_timeout=int(res["max_num_timeout"])))
        names = sorted({c["dataset"] for c in array})
        ex.update_parameters(**submitit_parameters(res, "bench-" + (names[0] if len(names) == 1 else "grid")))
        jobs_fn = [CellJob(c, str(store.root.resolve()), res["checkpoint_interval_s"], quiet=True) for c in array]
        with _dry_run_patch(ex if dry_run else None), ex.batch():
            jobs = [ex.submit(fn) for fn in jobs_fn]
        for config, job in zip(array, jobs):
            if not dry_run:
                _write_record(store, config, {"job_id": job.job_id, "submitted_at": submitted_at,
                                              "label": cell_label(config), "log_dir": str(job.paths.folder)})
        job_ids.append(jobs[0].job_id.split("_")[0])
    seconds = time.perf_counter() - t0
    what = "planned (dry run, nothing submitted)" if dry_run else "submitted"
    print(f"{n_submit} cells {what} in {len(arrays)} array job(s) [{', '.join(job_ids)}] "
          f"({seconds:.1f} s); profile partition={prof['partition'] or 'default'}")
    if dry_run:
        print(f"sbatch scripts and job pickles in {folder.parent}")
        return 0
    del submitit
    return _wait(cells, store, poll_s, quiet) if wait else 0


def _wait(cells: list[dict], store: ResultStore, poll_s: float, quiet: bool) -> int:
    while True:
        states = cell_states(cells, store)
        active = sum(s in ("queued", "running") for s, _ in states)
        if not active:
            break
        if not quiet:
            log.info("%d cells queued or running", active)
        time.sleep(poll_s)
    counts = defaultdict(int)
    for s, _ in states:
        counts[s] += 1
    print(", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + f" (of {len(cells)})")
    return EXIT_FAILED if any(s in ("failed", "cancelled", "missing") for s, _ in states) else 0
