"""End-to-end tests of ``sweep --executor slurm`` on a real single-node Slurm cluster
(``slurm/local-cluster.sh``; docs/slurm.md).

They start the cluster (installing its apt packages if needed) and skip only when not
root or without apt-get -- never under ``CI=true``, where a skip is a failure.
Test-only plug-in methods come from a temporary ``$BENCHMARK_METHODS_PATH`` directory:
``slurm-test-sgd`` (a small DP-SGD that checkpoints through ``ctx.checkpointer`` and can be
slowed down per step) and ``slurm-test-boom`` (raises in ``fit``).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "slurm" / "local-cluster.sh"
IN_CI = os.environ.get("CI", "").lower() == "true"
#: fields that legitimately differ between two runs of the same cell
VOLATILE = {"host", "started_at", "finished_at", "wall_time_s", "cpu_time_s", "peak_memory_mb"}
VOLATILE_METRICS = {"fit_time_s"}

PLUGINS = {
    "slurm_test_sgd.py": '''
        """Test plug-in: DP-SGD (Abadi et al., CCS 2016) on the student, Poisson sampling with a
        seeded generator, per-example clipping (torch.func), Gaussian noise; checkpoints through
        ctx.checkpointer at every step boundary it is due. ``step_sleep`` slows it for the tests."""
        import time

        import torch
        from torch.func import functional_call, grad, vmap

        from benchmark import Method
        from benchmark.privacy import ledger as L


        class SlurmTestSGD(Method):
            name = "slurm-test-sgd"
            family = "dp-training"
            needs = {"private_data"}
            privacy_unit = "record"
            adjacency = "add/remove one record"
            citation = "test plug-in (Abadi et al., CCS 2016)"
            hparams = {"steps": 30, "batch_size": 64, "lr": 0.5, "clip": 1.0, "step_sleep": 0.0}

            def fit(self, ctx):
                h = ctx.hparams
                x, y = ctx.private_data.tensors[:2]
                n, q = len(x), min(1.0, h["batch_size"] / len(x))
                sigma = L.calibrate_gaussian(ctx.epsilon, ctx.delta, h["steps"], q)
                model = ctx.build_student()
                opt = torch.optim.SGD(model.parameters(), lr=h["lr"], momentum=0.9)
                sampler = torch.Generator().manual_seed(ctx.seed)
                params = {k: v.detach() for k, v in model.named_parameters()}
                buffers = {k: v for k, v in model.named_buffers()}

                def loss(p, xi, yi):
                    out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
                    return torch.nn.functional.cross_entropy(out, yi.unsqueeze(0))

                per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
                ck, start = ctx.checkpointer, 0
                if ck is not None:
                    start = ck.resume(ledger=ctx.ledger, model=model, optimizer=opt, sampler=sampler) or 0
                    if start:
                        ctx.log.info("resumed from step %d", start)
                for step in range(start, h["steps"]):
                    if ck is not None:
                        ck.maybe_save(step, ledger=ctx.ledger, model=model, optimizer=opt, sampler=sampler)
                    idx = (torch.rand(n, generator=sampler) < q).nonzero().flatten()
                    params = {k: v.detach() for k, v in model.named_parameters()}
                    total = {k: torch.zeros_like(v) for k, v in params.items()}
                    if len(idx):
                        g = per_sample(params, x[idx], y[idx])
                        norms = torch.sqrt(sum(v.flatten(1).pow(2).sum(1) for v in g.values()))
                        scale = (h["clip"] / (norms + 1e-12)).clamp(max=1.0)
                        total = {k: (v * scale.view(-1, *[1] * (v.dim() - 1))).sum(0) for k, v in g.items()}
                    ctx.ledger.record(L.subsampled_gaussian(sigma, q, steps=1))
                    for k, p in model.named_parameters():
                        p.grad = (total[k] + torch.randn_like(p) * sigma * h["clip"]) / h["batch_size"]
                    opt.step()
                    if h["step_sleep"]:
                        time.sleep(h["step_sleep"])
                return model.eval()
    ''',
    "slurm_test_boom.py": '''
        """Test plug-in: a method whose fit raises (the sweep must record it and go on)."""
        from benchmark import Method


        class SlurmTestBoom(Method):
            name = "slurm-test-boom"
            family = "reference"
            needs = set()
            privacy_unit = "none"
            citation = "test plug-in"
            hparams = {"message": "boom from the test plug-in"}

            def fit(self, ctx):
                raise RuntimeError(ctx.hparams["message"])
    ''',
}


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "the local Slurm cluster needs root (it installs packages and starts daemons)"
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        return "apt-get is not available to install Slurm"
    return None


@pytest.fixture(scope="module")
def cluster():
    reason = _why_not()
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true but the Slurm cluster cannot run: {reason}")
        pytest.skip(reason)
    was_up = subprocess.run([str(SCRIPT), "status"], capture_output=True).returncode == 0
    proc = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=900)
    assert proc.returncode == 0, f"local-cluster.sh start failed:\n{proc.stdout}\n{proc.stderr}"
    yield
    if not was_up and IN_CI:
        subprocess.run([str(SCRIPT), "stop"], capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """Environment for the CLI and the jobs (sbatch exports it): plug-ins, a cheap audit, one thread."""
    plugins = tmp_path_factory.mktemp("slurm-plugins")
    for name, code in PLUGINS.items():
        (plugins / name).write_text(textwrap.dedent(code))
    e = dict(os.environ)
    e.update({"BENCHMARK_METHODS_PATH": str(plugins), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "BENCHMARK_AUDIT_SETTINGS": os.environ.get("BENCHMARK_AUDIT_SETTINGS", _cheap_audit()),
              "PYTHONPATH": str(ROOT)})
    old = {k: os.environ.get(k) for k in e}
    os.environ.update(e)  # the in-process local reference runs see the same plug-ins
    yield e
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def env(plugin_env, cluster):
    return plugin_env


def _cheap_audit() -> str:
    from benchmark.privacy.audit import AUDIT_SETTINGS
    small = {"ref_steps": 20, "reference_models": 1, "max_records": 300}
    return ",".join(f"{k}={v}" for k, v in small.items() if k in AUDIT_SETTINGS)


def cli(env, *args, check=True, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"benchmark {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def profile(tmp: Path, **over) -> Path:
    base = {"timeout_min": 20, "mem_gb": 1, "cpus_per_task": 1, "array_parallelism": 2, "checkpoint_interval_s": 0,
            "signal_delay_s": 30, "env": {"OMP_NUM_THREADS": "1"}}
    base.update(over)
    p = tmp / "profile.yaml"
    p.write_text(json.dumps(base))  # JSON is YAML
    return p


def states(env, grid: Path, results: Path) -> dict[tuple, tuple[str, str]]:
    """(method, eps, seed) -> (state, detail), from `status --all`."""
    out = cli(env, "status", str(grid), "--results", str(results), "--all").stdout
    table = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[3].startswith("eps=") and parts[4].startswith("seed="):
            detail = line.split(parts[4], 1)[1].strip()
            table[(parts[1], parts[3][4:], int(parts[4][5:]))] = (parts[0], detail)
    return table


def live_states(grid: Path, results: Path) -> dict[tuple, tuple[str, str]]:
    """As :func:`states`, in-process (cheap enough to poll)."""
    from benchmark.runner.cells import format_epsilon
    from benchmark.runner.slurm import cell_states
    from benchmark.runner.store import ResultStore
    cells = grid_cells(grid)
    return {(c["method"], format_epsilon(c["epsilon_target"]), c["seed"]): st
            for c, st in zip(cells, cell_states(cells, ResultStore(results)))}


def wait_until(pred, timeout: float, what: str, poll: float = 2.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = pred()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def result_files(results: Path) -> dict[str, dict]:
    return {str(p.relative_to(results)): json.loads(p.read_text())
            for p in results.rglob("*.json") if ".slurm" not in p.parts}


def _head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()


HEAD_AT_START = _head()


def stable(result: dict) -> dict:
    volatile = set(VOLATILE)
    if _head() != HEAD_AT_START:  # someone committed while the test ran: the recorded sha moved
        volatile.add("git_sha")
    r = {k: v for k, v in result.items() if k not in volatile}
    r["metrics"] = {k: v for k, v in result["metrics"].items() if k not in VOLATILE_METRICS}
    if isinstance(r.get("audit"), dict):
        r["audit"] = {k: v for k, v in r["audit"].items() if k != "audit_time_s"}
    return r


def local_reference(results: Path, cells: list[dict]) -> dict[str, dict]:
    import torch

    from benchmark.runner.execute import run_cell
    torch.set_num_threads(1)
    for config in cells:
        run_cell(config, results, quiet=True)
    return result_files(results)


def grid_cells(grid: Path) -> list[dict]:
    from benchmark.runner.grid import expand, load_grid
    return expand(load_grid(grid))


def job_of(results: Path, config: dict) -> str:
    from benchmark.runner.cells import config_hash
    return json.loads((results / ".slurm" / "jobs" / f"{config_hash(config)}.json").read_text())["job_id"]


# ---------------------------------------------------------------------------------------------
def test_sweep_matches_local_and_records_failures(env, tmp_path):
    grid = write(tmp_path / "grid.yaml", """
        methods: [slurm-test-sgd, slurm-test-boom]
        datasets: [digits]
        epsilons: [1, 10]
        seeds: [0, 1]
        overrides:
          slurm-test-sgd: {steps: 8}
    """)
    results = tmp_path / "slurm-results"
    prof = profile(tmp_path, array_parallelism=2)
    out = cli(env, "sweep", str(grid), "--executor", "slurm", "--profile", str(prof), "--results", str(results),
              "--quiet")
    assert "6 cells submitted in 1 array job(s)" in out.stdout, out.stdout
    # the array has 6 tasks and runs at most 2 at once
    array_id = out.stdout.split("[")[1].split("]")[0]
    sbatch = next((results / ".slurm" / "logs").glob(f"{array_id}*/*submission*.sh"), None) or \
        next((results / ".slurm" / "logs").rglob("*.sh"))
    assert "#SBATCH --array=0-5%2" in sbatch.read_text()
    wait_until(lambda: all(s in ("done", "failed") for s, _ in live_states(grid, results).values()), 600,
               "all cells to finish")
    table = states(env, grid, results)
    assert sorted(s for s, _ in table.values()) == ["done"] * 4 + ["failed"] * 2, table
    for (method, _, _), (state, detail) in table.items():
        if method == "slurm-test-boom":
            assert state == "failed" and "RuntimeError: boom from the test plug-in" in detail, detail
    failed = [r for r in result_files(results).values() if r["status"] == "failed"]
    assert len(failed) == 2
    for r in failed:  # the remote traceback is in the result
        assert "Traceback (most recent call last)" in r["error"] and "slurm_test_boom.py" in r["error"]
    # sacct agrees: the failing tasks are FAILED, the others COMPLETED
    sacct = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", array_id],
                           capture_output=True, text=True).stdout
    assert sorted(line.split("|")[1] for line in sacct.split()) == ["COMPLETED"] * 4 + ["FAILED"] * 2, sacct

    local = local_reference(tmp_path / "local-results", grid_cells(grid))
    remote = result_files(results)
    ok = {k for k, v in remote.items() if v["status"] == "ok"}
    assert len(ok) == 4 and ok <= set(local)
    for key in ok:
        assert stable(remote[key]) == stable(local[key]), key
    # a second sweep submits nothing: done cells are never recomputed, failed ones need --resume
    again = cli(env, "sweep", str(grid), "--executor", "slurm", "--profile", str(prof), "--results",
                str(results), "--quiet")
    assert "nothing to submit" in again.stdout, again.stdout


def test_scancel_is_reported_and_resume_redoes_it(env, tmp_path):
    grid = write(tmp_path / "grid.yaml", """
        methods: [slurm-test-sgd]
        datasets: [digits]
        epsilons: [1]
        seeds: [3]
        overrides:
          slurm-test-sgd: {steps: 30, step_sleep: 1.0}
    """)
    results = tmp_path / "results"
    prof = profile(tmp_path)
    cli(env, "sweep", str(grid), "--executor", "slurm", "--profile", str(prof), "--results", str(results), "--quiet")
    (config,) = grid_cells(grid)
    key = ("slurm-test-sgd", "1", 3)
    wait_until(lambda: live_states(grid, results)[key][0] == "running", 300, "the job to run")
    subprocess.run(["scancel", job_of(results, config)], check=True)
    wait_until(lambda: live_states(grid, results)[key][0] == "cancelled", 120, "the cancellation")
    state, detail = states(env, grid, results)[key]  # what the user sees
    assert state == "cancelled" and "cancelled" in detail, (state, detail)
    out = cli(env, "sweep", str(grid), "--executor", "slurm", "--profile", str(prof), "--results", str(results),
              "--resume", "--wait", "--quiet", timeout=900)
    assert "1 cells submitted" in out.stdout, out.stdout
    assert states(env, grid, results)[key][0] == "done"


#: method -> (its overrides, the steps it records): the test plug-in slowed down per step, and
#: the real dp-sgd (Opacus) with a schedule long enough to be signalled mid-training
PREEMPTED = {"slurm-test-sgd": ("{steps: 24, step_sleep: 0.5}", 24),
             "dp-sgd": ("{epochs: 40, batch_size: 256}", 40 * 5)}  # 5 steps per epoch on digits


@pytest.mark.parametrize("method", list(PREEMPTED))
def test_preempted_job_requeues_and_resumes_with_the_same_result(env, tmp_path, method):
    overrides, steps = PREEMPTED[method]
    grid = write(tmp_path / "grid.yaml", f"""
        methods: [{method}]
        datasets: [digits]
        epsilons: [1]
        seeds: [4]
        overrides:
          {method}: {overrides}
    """)
    results = tmp_path / "results"
    prof = profile(tmp_path)
    cli(env, "sweep", str(grid), "--executor", "slurm", "--profile", str(prof), "--results", str(results), "--quiet")
    (config,) = grid_cells(grid)
    from benchmark.runner.slurm import checkpoint_path
    from benchmark.runner.store import ResultStore
    ckpt = checkpoint_path(ResultStore(results), config)
    job = job_of(results, config)

    def saved_step():
        try:
            import torch
            return torch.load(ckpt, weights_only=False)["state"]["step"] >= 6
        except Exception:  # noqa: BLE001 - not written yet, or being replaced
            return False

    wait_until(saved_step, 300, "a mid-training checkpoint", poll=0.5)
    # submitit's preemption path: Slurm signals the job (USR2), submitit checkpoints and requeues it
    subprocess.run(["scancel", "--signal=USR2", job], check=True)

    def requeued():
        out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
        return "Restarts=1" in out and ("JobState=PENDING" in out or "JobState=RUNNING" in out) and out

    info = wait_until(requeued, 120, "the job to be requeued", poll=0.5)
    if "Reason=BeginTime" in info:  # Slurm holds requeued jobs ~2 min; a test need not wait for that
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    wait_until(lambda: live_states(grid, results)[(method, "1", 4)][0] == "done", 600, "the requeued job")
    log = "".join(p.read_text(errors="replace") for p in (results / ".slurm" / "logs").rglob(f"{job}_0_log.err"))
    assert "requeue" in log.lower(), log[-3000:]
    assert "resumed from step" in log, log[-3000:]
    assert not ckpt.exists()  # removed once the cell finished
    (remote,) = [r for r in result_files(results).values()]
    (local,) = local_reference(tmp_path / "local", [config]).values()
    assert remote["status"] == local["status"] == "ok"
    assert remote["metrics"]["test_accuracy"] == local["metrics"]["test_accuracy"]
    assert remote["ledger"] == local["ledger"] and remote["ledger"][-1]["steps"] == steps
    assert remote["epsilon_spent"] == local["epsilon_spent"]
    assert stable(remote) == stable(local)


def test_dry_run_of_the_paper_grid_is_fast_and_bounded(tmp_path, monkeypatch, capsys):
    """Submission cost of the full paper grid: everything but sbatch (job pickles and sbatch
    scripts are written). Needs no cluster. ``registry.discover`` is memoised here as requested
    in docs/requests/slurm.md (item 1); without it expanding the grid takes minutes."""
    import functools

    from benchmark import registry
    from benchmark.runner import slurm
    from benchmark.runner.grid import expand, load_grid
    from benchmark.runner.store import ResultStore
    monkeypatch.setattr(registry, "discover", functools.lru_cache(maxsize=1)(registry.discover))
    registry.discover()  # imports of the method modules are not the submission's cost
    for name in registry.discover():
        registry.load(name)
    t0 = time.perf_counter()
    grid = load_grid(ROOT / "grids" / "paper.yaml")
    cells = expand(grid)
    t_expand = time.perf_counter() - t0
    assert slurm.sweep(cells, tmp_path / "r", grid=grid, profile="gpu", dry_run=True) == 0
    seconds = time.perf_counter() - t0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "dry run" in ln)
    n, arrays = int(line.split()[0]), int(line.split(" in ")[1].split()[0])
    print(f"paper grid: {n} cells in {arrays} arrays; expand {t_expand:.1f} s, total {seconds:.1f} s")
    assert n == len(cells) > 1000
    # one array per distinct resource request (the grid's per-method/per-dataset limits), chunked
    groups = {json.dumps(slurm.resources_for(slurm.load_profile("gpu", grid), c), sort_keys=True) for c in cells}
    assert len(groups) <= arrays <= len(groups) + len(cells) // slurm.max_array_size(slurm.load_profile("gpu", grid))
    assert arrays <= 25
    assert seconds < 10, f"dry run of the paper grid took {seconds:.1f} s"
    assert not (ResultStore(tmp_path / "r").root / ".slurm" / "jobs").exists()  # a dry run records nothing


def test_arrays_are_chunked_to_max_array_size(plugin_env, tmp_path, capsys):
    from benchmark.runner import slurm
    from benchmark.runner.grid import expand, load_grid
    grid = load_grid(write(tmp_path / "grid.yaml", """
        methods: [slurm-test-sgd]
        datasets: [digits]
        epsilons: [0.5, 1, 2, 4, 8]
        seeds: [0, 1]
        slurm: {resources: {slurm-test-sgd@digits: {mem_gb: 2}}}
    """))
    cells = expand(grid)
    prof = {"max_array_size": 4, "array_parallelism": 3, "timeout_min": 7}
    assert slurm.sweep(cells, tmp_path / "r", grid=grid, profile=prof, dry_run=True) == 0
    out = capsys.readouterr().out
    assert "10 cells planned (dry run, nothing submitted) in 3 array job(s)" in out, out
    folder = Path(out.split("sbatch scripts and job pickles in ")[1].split()[0])
    scripts = sorted(p.read_text() for p in folder.rglob("*_submission.sh"))
    arrays = sorted(ln for sc in scripts for ln in sc.splitlines() if "--array" in ln)
    assert arrays == ["#SBATCH --array=0-1%2", "#SBATCH --array=0-3%3", "#SBATCH --array=0-3%3"], arrays
    assert all("--mem=2GB" in sc and "--time=7" in sc for sc in scripts)
    # the jobs get small configs, not data: each pickled task is a few kB
    assert max(p.stat().st_size for p in folder.rglob("*_submitted.pkl")) < 20_000


def test_profiles_load_and_reject_unknown_keys(tmp_path):
    from benchmark.runner import slurm
    from benchmark.runner.cells import ConfigError
    cpu, gpu = slurm.load_profile("cpu"), slurm.load_profile("gpu")
    assert cpu["gpus_per_task"] == 0 and gpu["gpus_per_task"] == 1
    merged = slurm.load_profile("gpu", {"slurm": {"timeout_min": 9, "resources": {"dp-sgd": {"mem_gb": 3}}}})
    assert merged["timeout_min"] == 9 and merged["resources"]["dp-sgd"] == {"mem_gb": 3}
    assert "dpdm" in merged["resources"]  # merged key by key, the profile's entries stay
    res = slurm.resources_for(merged, {"method": "dp-sgd", "dataset": "imagenet-subset"})
    assert res["mem_gb"] == 64 and res["timeout_min"] == 480  # the dataset entry comes after the method's
    assert slurm.resources_for(merged, {"method": "dp-sgd", "dataset": "mnist"})["timeout_min"] == 9
    params = slurm.submitit_parameters(res, "x")
    assert params["gpus_per_node"] == 1 and params["mem"] == "64GB" and params["partition"] == "gpu"
    with pytest.raises(ConfigError, match="unknown key"):
        slurm.load_profile({"timeout": 5})
    with pytest.raises(ConfigError, match="not found"):
        slurm.load_profile("no-such-profile")


def test_checkpointer_resume_is_exact(tmp_path):
    """A loop interrupted after a save and resumed ends with the same parameters, optimizer
    state and ledger as an uninterrupted one; the ledger counts each step once."""
    import torch

    from benchmark.privacy import ledger as L
    from benchmark.runner.checkpoint import Checkpointer

    def train(ck, stop_at=None):
        torch.manual_seed(0)
        model = torch.nn.Linear(5, 3)
        opt = torch.optim.Adam(model.parameters(), lr=0.1)
        gen = torch.Generator().manual_seed(1)
        ledger = L.PrivacyLedger(10.0, 1e-5)
        start = (ck.resume(ledger=ledger, model=model, optimizer=opt, sampler=gen) or 0) if ck else 0
        for step in range(start, 20):
            if ck:
                ck.maybe_save(step, ledger=ledger, model=model, optimizer=opt, sampler=gen)
            if step == stop_at:
                return None
            x = torch.randn(8, 5, generator=gen)
            loss = model(x).pow(2).mean() + 0.01 * torch.randn(()).item()
            ledger.record(L.subsampled_gaussian(2.0, 0.01, steps=1))
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model, opt, ledger

    ref_model, ref_opt, ref_ledger = train(None)
    ck = Checkpointer(tmp_path / "c.pt", interval_s=0)
    assert train(ck, stop_at=13) is None
    assert ck.load()["step"] == 13
    torch.manual_seed(123)  # a new process starts elsewhere
    model, opt, ledger = train(Checkpointer(tmp_path / "c.pt", interval_s=0))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), ref_model.parameters()))
    assert ledger.events == ref_ledger.events == [{**L.subsampled_gaussian(2.0, 0.01, steps=20)}]
    assert ledger.epsilon() == ref_ledger.epsilon()
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], ref_opt.state_dict()["state"][0]["exp_avg"])
    # interval: nothing is written until it has passed
    lazy = Checkpointer(tmp_path / "lazy.pt", interval_s=3600)
    assert not lazy.maybe_save(0, model=ref_model) and lazy.load() is None
