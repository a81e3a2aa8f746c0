"""Fault tolerance and bad input (docs/trust.md has the table these tests check).

- a run SIGKILLed mid-way leaves no partial file and a rerun finishes normally;
- writers killed mid-write, or racing on one cell, never leave a partial or corrupt file;
- a read-only or full results directory gives one clear line and a non-zero exit;
- a corrupt (or malicious) teacher-cache entry is detected and rebuilt, never executed;
- nothing in the code loads files in a way that can execute their content;
- bad command-line input is rejected with one line on stderr, and the store is untouched.
"""
from __future__ import annotations

import ast
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CHEAP_AUDIT = "ref_steps=20,reference_models=2"


def _env(tmp_path: Path, **extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "BENCHMARK_TEACHER_CACHE": str(tmp_path / "teachers"), "BENCHMARK_AUDIT_SETTINGS": CHEAP_AUDIT,
           "BENCHMARK_METHODS_PATH": str(ROOT / "tests" / "plugins")}
    env.update(extra)
    return env


def cli(args, tmp_path, timeout=300, **popen):
    return subprocess.run([PY, "-m", "benchmark", *map(str, args)], cwd=ROOT, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=timeout, **popen)


def one_error_line(proc) -> str:
    """The command failed with exit 2 and exactly one line on stderr, starting 'error:'."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    return lines[0]


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def result_files(root: Path):
    return sorted(p for p in root.rglob("*.json") if "artifacts" not in p.parts)


FAST_RUN = ["run", "--method", "student-real", "--dataset", "digits", "--set", "epochs=1", "--set", "min_steps=40"]


# ------------------------------------------------------------------ killed runs and racing writers
def test_sigkill_mid_run_leaves_nothing_and_rerun_finishes(tmp_path):
    res = tmp_path / "res"
    slow = ["run", "--method", "student-real", "--dataset", "digits", "--set", "min_steps=100000", "--results", res]
    proc = subprocess.Popen([PY, "-m", "benchmark", *map(str, slow)], cwd=ROOT, env=_env(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for line in proc.stderr:  # wait until training has started
            if "running student-real" in line:
                break
        time.sleep(1.0)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert result_files(res) == [] and not list(res.rglob("*.tmp"))
    # the same cell, rerun with a short schedule, finishes normally
    done = cli([*FAST_RUN, "--results", res, "--quiet"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = result_files(res)
    assert json.loads(path.read_text())["status"] == "ok"


WRITER = textwrap.dedent("""
    import sys
    from benchmark.runner.store import ResultStore
    store, tag, n, same = ResultStore(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "same"
    for i in range(n):
        cfg = {"method": "m", "dataset": "d", "epsilon_target": 1.0, "seed": 0 if same else i}
        blob = [tag] * 200000                        # ~2 MB, so a kill often lands mid-write
        store.write({"config": cfg, "status": "ok", "writer": tag, "blob": blob})
        store.write({"config": cfg, "status": "failed", "writer": tag, "blob": blob[:1000]})
    print("done", flush=True)
""")


def _start_writer(tmp_path, res, tag, n, same):
    return subprocess.Popen([PY, "-c", WRITER, str(res), tag, str(n), same], cwd=ROOT, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_writer_killed_mid_write_never_leaves_partial_file(tmp_path):
    res = tmp_path / "res"
    for k in range(8):
        w = _start_writer(tmp_path, res, f"w{k}", 1000, "distinct")
        time.sleep(0.4 + 0.13 * k)  # python start-up ~0.1 s; then writes of ~2 MB each
        w.kill()
        w.wait()
    files = result_files(res)
    assert files, "no write completed before the kills: the test did not exercise anything"
    for path in files:
        data = json.loads(path.read_text())  # every file that exists is complete
        assert len(data["blob"]) == (200000 if data["status"] == "ok" else 1000)


def test_concurrent_writers_of_one_cell_never_corrupt_it(tmp_path):
    res = tmp_path / "res"
    writers = [_start_writer(tmp_path, res, f"w{k}", 15, "same") for k in range(4)]
    for w in writers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0 and "done" in out, err[-2000:]
    ok = [p for p in result_files(res) if not p.name.endswith(".failed.json")]
    assert len(ok) == 1
    data = json.loads(ok[0].read_text())
    assert data["status"] == "ok" and set(data["blob"]) == {data["writer"]}  # one writer's whole file
    assert not list(res.rglob("*.tmp")) and not [p for p in res.rglob(".*.json.*")]


def test_two_cli_runs_of_the_same_cell_race_safely(tmp_path):
    res = tmp_path / "res"
    args = [PY, "-m", "benchmark", *FAST_RUN, "--results", str(res), "--quiet"]
    procs = [subprocess.Popen(args, cwd=ROOT, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    (path,) = result_files(res)
    assert json.loads(path.read_text())["status"] == "ok"
    assert outs[0][0].strip() == outs[1][0].strip() == str(path)


# ------------------------------------------------------------------ unwritable results directory
def _mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_read_only_results_dir_gives_one_clear_line(tmp_path):
    res = tmp_path / "ro"
    res.mkdir()
    (res / "keep.json").write_text('{"kept": true}')
    if os.geteuid() != 0:
        res.chmod(0o555)
        undo = lambda: res.chmod(0o755)  # noqa: E731
    else:  # root ignores permission bits: a real read-only file system
        if not _mount_tmpfs(res, "ro,size=1m"):
            pytest.skip("needs a non-root user or permission to mount tmpfs")
        undo = lambda: _umount(res)  # noqa: E731
    try:
        line = one_error_line(cli([*FAST_RUN, "--results", res, "--quiet"], tmp_path))
        assert "read-only" in line.lower() or "permission denied" in line.lower()
        assert str(res) in line
    finally:
        undo()
    if os.geteuid() != 0:
        assert (res / "keep.json").read_text() == '{"kept": true}'


def test_full_disk_gives_one_clear_line(tmp_path):
    res = tmp_path / "full"
    if os.geteuid() != 0 or not _mount_tmpfs(res, "size=256k"):
        pytest.skip("needs permission to mount a small tmpfs")
    try:
        # fill it completely
        fd = os.open(res / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(fd)
        line = one_error_line(cli([*FAST_RUN, "--results", res, "--quiet"], tmp_path))
        assert "disk full" in line.lower() or "no space" in line.lower()
    finally:
        _umount(res)


def test_store_reports_full_disk_and_cleans_up(tmp_path, monkeypatch):
    """Portable variant of the full-disk case: the write itself fails with ENOSPC."""
    from benchmark.runner import store as S
    real_fdopen = os.fdopen

    class FullFile:
        def __init__(self, fd, *_a, **_k):
            self.f = real_fdopen(fd, "w")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, _text):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(S.os, "fdopen", FullFile)
    st = S.ResultStore(tmp_path)
    cfg = {"method": "m", "dataset": "d", "epsilon_target": 1.0, "seed": 0}
    with pytest.raises(S.StoreError, match="disk full"):
        st.write({"config": cfg, "status": "ok"})
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no temp file left behind


# ------------------------------------------------------------------ teacher cache and safe loading
def test_corrupt_teacher_cache_entry_is_detected_and_rebuilt(tmp_path, monkeypatch):
    import torch
    from torch import nn

    from benchmark.training import teachers as T

    monkeypatch.setenv("BENCHMARK_TEACHER_CACHE", str(tmp_path / "cache"))
    calls = []

    def train(model):
        calls.append(1)
        with torch.no_grad():
            model.weight.fill_(0.5)
        return model

    key = {"dataset": "toy", "tag": "t", "seed": 0}
    build = lambda: nn.Linear(3, 2)  # noqa: E731
    assert torch.all(T.cached_model(key, build, train).weight == 0.5) and len(calls) == 1
    assert torch.all(T.cached_model(key, build, train).weight == 0.5) and len(calls) == 1  # from the cache
    (entry,) = (tmp_path / "cache").glob("*.pt")
    raw = bytearray(entry.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte
    entry.write_bytes(bytes(raw))
    assert torch.all(T.cached_model(key, build, train).weight == 0.5) and len(calls) == 2  # detected, rebuilt
    assert T.cached_model(key, build, train) is not None and len(calls) == 2  # and the rebuilt entry is good

    # a malicious entry with a *valid* checksum is refused by torch.load(weights_only=True), never executed
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"weight": Evil()}, entry)
    from benchmark.data import sha256_file
    entry.with_suffix(".sha256").write_text(sha256_file(entry) + "\n")
    assert torch.all(T.cached_model(key, build, train).weight == 0.5) and len(calls) == 3
    assert not marker.exists()


UNSAFE_CALLS = {("pickle", "load"), ("pickle", "loads"), ("yaml", "load"), ("yaml", "unsafe_load"),
                ("yaml", "full_load"), ("dill", "load"), ("marshal", "loads"), ("torch", "jit.load")}


def _unsafe_loads(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{node.lineno}: {name}"
        if name == "torch.load" and kw.get("weights_only") != "True":
            found.append(where + " without weights_only=True")
        elif name in ("np.load", "numpy.load") and kw.get("allow_pickle") == "True":
            found.append(where + " with allow_pickle=True")
        elif name in ("eval", "exec"):
            found.append(where)
        elif "." in name and tuple(name.split(".", 1)) in UNSAFE_CALLS:
            found.append(where)
    return found


def test_no_code_path_executes_content_from_files():
    """torch.load only with weights_only=True, YAML only through safe_load, no pickle/eval."""
    files = [p for d in ("benchmark", "methods") for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 20
    bad = [hit for p in files for hit in _unsafe_loads(p)]
    assert not bad, "unsafe loading (see docs/requests/trust.md):\n" + "\n".join(bad)


def test_unsafe_load_scanner_catches_what_it_should(tmp_path):
    probe = tmp_path / "probe_unsafe.py"
    probe.write_text("import torch, yaml, pickle\n"
                     "torch.load('x')\ntorch.load('x', weights_only=False)\nyaml.load(s)\npickle.load(f)\n"
                     "torch.load('x', weights_only=True)\nyaml.safe_load(s)\n")
    assert len(_unsafe_loads(probe)) == 4


# ------------------------------------------------------------------ bad input: one clear line, store untouched
@pytest.fixture
def store_with_result(tmp_path):
    res = tmp_path / "res"
    cell = res / "digits" / "student-real"
    cell.mkdir(parents=True)
    (cell / "epsinf_seed9_00000000.json").write_text('{"status": "ok", "method": "student-real"}\n')
    return res


RUN = ["run", "--dataset", "digits", "--seed", "0"]
BAD_RUNS = {
    "unknown method": (["run", "--method", "no-such-method", "--dataset", "digits", "--epsilon", "1"],
                       "unknown method 'no-such-method'"),
    "unknown dataset": (["run", "--method", "dp-sgd", "--dataset", "no-such-data", "--epsilon", "1"],
                        "unknown dataset 'no-such-data'"),
    "epsilon zero": (["run", "--method", "dp-sgd", "--dataset", "digits", "--epsilon", "0"], "epsilon must be"),
    "epsilon negative": (["run", "--method", "dp-sgd", "--dataset", "digits", "--epsilon", "-1"], "epsilon must be"),
    "epsilon nan": (["run", "--method", "dp-sgd", "--dataset", "digits", "--epsilon", "nan"], "epsilon must be a positive number"),
    "epsilon missing": (["run", "--method", "dp-sgd", "--dataset", "digits"], "needs a finite epsilon"),
    "delta zero": (["run", "--method", "dp-sgd", "--dataset", "digits", "--epsilon", "1", "--delta", "0"],
                   "delta must be in (0, 1)"),
    "delta one": (["run", "--method", "dp-sgd", "--dataset", "digits", "--epsilon", "1", "--delta", "1"],
                  "delta must be in (0, 1)"),
    "delta > 1": (["run", "--method", "dp-sgd", "--dataset", "digits", "--epsilon", "1", "--delta", "1.5"],
                  "delta must be in (0, 1)"),
    "negative seed": (["run", "--method", "dp-sgd", "--dataset", "digits", "--epsilon", "1", "--seed", "-3"],
                      "seed must be"),
    "unknown --set key": (["run", "--method", "dp-sgd", "--dataset", "digits", "--epsilon", "1", "--set", "epochz=3"],
                          "unknown hyperparameter(s) for dp-sgd: epochz"),
    "--set without =": (["run", "--method", "dp-sgd", "--dataset", "digits", "--epsilon", "1", "--set", "epochs"],
                        "--set expects key=value"),
    "missing data root": (["run", "--method", "dp-sgd", "--dataset", "digits", "--epsilon", "1",
                           "--data-root", "/nonexistent/data"], "/nonexistent/data does not exist"),
    "missing data files": (["run", "--method", "dp-sgd", "--dataset", "cifar10", "--epsilon", "1",
                            "--data-root", "{empty}"], "cifar"),
}


@pytest.mark.parametrize("case", list(BAD_RUNS))
def test_bad_run_input_is_one_line_and_store_untouched(case, tmp_path, store_with_result, capsys, monkeypatch):
    """In-process through cli.main (same code path as the console, without 6 s of start-up each)."""
    from benchmark import cli as C
    args, expected = BAD_RUNS[case]
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("BENCHMARK_DATA_CACHE", str(empty))
    args = [a.replace("{empty}", str(empty)) for a in args]
    before = snapshot(store_with_result)
    rc = C.main([*args, "--results", str(store_with_result), "--quiet"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), (rc, err)
    assert expected.lower() in lines[0].lower()
    assert snapshot(store_with_result) == before


GRIDS = {
    "invalid YAML": ("methods: [dp-sgd\ndatasets: digits: x", "not valid YAML"),
    "not a mapping": ("- dp-sgd\n- digits\n", "must be a mapping"),
    "typo in a key": ("methods: [dp-sgd]\ndatasets: [digits]\nepsilon: [1]\nseeds: [0]\n", "unknown key(s) epsilon"),
    "missing key": ("methods: [dp-sgd]\ndatasets: [digits]\nepsilons: [1]\n", "missing key(s) seeds"),
    "empty list": ("methods: [dp-sgd]\ndatasets: []\nepsilons: [1]\nseeds: [0]\n", "`datasets` must be a non-empty"),
    "unknown method": ("methods: [dp-sdg]\ndatasets: [digits]\nepsilons: [1]\nseeds: [0]\n", "unknown method 'dp-sdg'"),
    "unknown dataset": ("methods: [dp-sgd]\ndatasets: [digitz]\nepsilons: [1]\nseeds: [0]\n", "unknown dataset"),
    "bad epsilon": ("methods: [dp-sgd]\ndatasets: [digits]\nepsilons: [0]\nseeds: [0]\n", "epsilon must be"),
    "bad delta": ("methods: [dp-sgd]\ndatasets: [digits]\nepsilons: [1]\nseeds: [0]\ndelta: 2\n", "delta must be"),
    "typo in override": ("methods: [dp-sgd]\ndatasets: [digits]\nepsilons: [1]\nseeds: [0]\n"
                         "overrides: {dp-sgd: {epochz: 2}}\n", "unknown hyperparameter(s) for dp-sgd: epochz"),
    "override of unknown method": ("methods: [dp-sgd]\ndatasets: [digits]\nepsilons: [1]\nseeds: [0]\n"
                                   "overrides: {dp-sdg: {epochs: 2}}\n", "overrides for unknown method 'dp-sdg'"),
    "missing grid file": (None, "does not exist"),
}


@pytest.mark.parametrize("case", list(GRIDS))
@pytest.mark.parametrize("command", ["sweep", "status"])
def test_malformed_grid_is_one_line_and_store_untouched(case, command, tmp_path, store_with_result, capsys):
    from benchmark import cli as C
    text, expected = GRIDS[case]
    grid = tmp_path / "grid.yaml"
    if text is not None:
        grid.write_text(text)
    before = snapshot(store_with_result)
    rc = C.main([command, str(grid), "--results", str(store_with_result), "--quiet"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), (rc, err)
    assert expected.lower() in lines[0].lower(), lines[0]
    assert snapshot(store_with_result) == before


def test_bad_input_through_the_real_console(tmp_path, store_with_result):
    """The same rejections from a real subprocess: exit code 2, one line, store untouched."""
    before = snapshot(store_with_result)
    line = one_error_line(cli([*BAD_RUNS["epsilon zero"][0], "--results", store_with_result], tmp_path))
    assert "epsilon must be" in line
    grid = tmp_path / "g.yaml"
    grid.write_text(GRIDS["typo in a key"][0])
    line = one_error_line(cli(["sweep", grid, "--results", store_with_result], tmp_path))
    assert "unknown key(s) epsilon" in line
    assert snapshot(store_with_result) == before


def test_report_skips_corrupt_result_file_and_names_it(tmp_path, store_with_result):
    bad = store_with_result / "digits" / "dp-sgd" / "eps1_seed0_deadbeef.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"status": "ok", "method": "dp-sg')  # truncated
    before = snapshot(store_with_result)
    proc = cli(["report", "--results", store_with_result, "--out", tmp_path / "report", "--quiet"], tmp_path)
    assert bad.name in proc.stderr, proc.stderr[-2000:]
    assert snapshot(store_with_result) == before


def test_run_refuses_to_hide_a_corrupt_result_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BENCHMARK_AUDIT_SETTINGS", CHEAP_AUDIT)
    from benchmark import cli as C
    from benchmark.runner.cells import resolve
    from benchmark.runner.store import ResultStore
    res = tmp_path / "res"
    args = ["run", "--method", "student-real", "--dataset", "digits", "--set", "epochs=1", "--set", "min_steps=40"]
    config = resolve("student-real", "digits", None, 0, hparams={"epochs": 1, "min_steps": 40})
    path = ResultStore(res).path_for(config)
    path.parent.mkdir(parents=True)
    path.write_text('{"status": "o')
    rc = C.main([*args, "--results", str(res), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "corrupt" in err and str(path) in err
    assert path.read_text() == '{"status": "o'
