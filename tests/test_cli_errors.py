"""Bad input: one clear line on stderr and a non-zero exit, nothing written."""
import pytest
from conftest import cli


def _one_line_error(proc, *needles):
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:")
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("args, needles", [
    (["--method", "no-such-method", "--dataset", "digits", "--epsilon", "1"], ["unknown method", "no-such-method"]),
    (["--method", "dp-sgd", "--dataset", "no-such-data", "--epsilon", "1"], ["unknown dataset", "no-such-data"]),
    (["--method", "dp-sgd", "--dataset", "digits", "--epsilon", "0"], ["epsilon must be a positive"]),
    (["--method", "dp-sgd", "--dataset", "digits", "--epsilon", "-1"], ["epsilon must be a positive"]),
    (["--method", "dp-sgd", "--dataset", "digits", "--epsilon", "nan"], ["epsilon must be a positive"]),
    (["--method", "dp-sgd", "--dataset", "digits", "--epsilon", "1", "--delta", "1"], ["delta must be in (0, 1)"]),
    (["--method", "dp-sgd", "--dataset", "digits", "--epsilon", "1", "--delta", "0"], ["delta must be in (0, 1)"]),
    (["--method", "dp-sgd", "--dataset", "digits"], ["needs a finite epsilon"]),
    (["--method", "dp-sgd", "--dataset", "digits", "--epsilon", "1", "--set", "no_such_knob=3"],
     ["unknown hyperparameter", "no_such_knob"]),
    (["--method", "dp-sgd", "--dataset", "mnist", "--epsilon", "1", "--data-root", "/nonexistent/dir"],
     ["/nonexistent/dir"]),
])
def test_run_rejects_bad_input(args, needles, tmp_path):
    proc = cli("run", *args, "--results", tmp_path / "r", "--quiet")
    _one_line_error(proc, *needles)
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("*.json"))


def test_missing_dataset_files_say_where_they_were_looked_for(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = cli("run", "--method", "dp-sgd", "--dataset", "mnist", "--epsilon", "1", "--data-root", empty,
               "--results", tmp_path / "r", "--quiet", env={"BENCHMARK_DATA_CACHE": str(tmp_path / "cache")})
    _one_line_error(proc, "not found", str(empty), "MNIST/raw")


@pytest.mark.parametrize("text, needle", [
    ("methods: [dp-sgd]\ndatasets: [digits]\nepsilon: [1]\nseeds: [0]\n", "unknown key(s) epsilon"),
    ("methods: [dp-sdg]\ndatasets: [digits]\nepsilons: [1]\nseeds: [0]\n", "unknown method 'dp-sdg'"),
    ("methods: [dp-sgd]\ndatasets: [digit]\nepsilons: [1]\nseeds: [0]\n", "unknown dataset 'digit'"),
    ("methods: [dp-sgd]\ndatasets: [digits]\nepsilons: [0]\nseeds: [0]\n", "epsilon must be a positive"),
    ("methods: [dp-sgd\n", "not valid YAML"),
    ("- just a list\n", "must be a mapping"),
    ("methods: [dp-sgd]\ndatasets: [digits]\nepsilons: [1]\nseeds: [0]\noverrides: {dp-sgd: {epoch: 3}}\n",
     "unknown hyperparameter"),
])
def test_bad_grid_files(text, needle, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(text)
    for command in ("sweep", "status"):
        _one_line_error(cli(command, grid, "--results", tmp_path / "r", "--quiet"), needle)


def test_missing_grid_file(tmp_path):
    _one_line_error(cli("sweep", tmp_path / "nope.yaml", "--quiet"), "does not exist")


def test_report_on_missing_results_dir(tmp_path):
    _one_line_error(cli("report", "--results", tmp_path / "nothing", "--out", tmp_path / "o"), "does not exist")


def test_list_is_fast_and_complete():
    import time
    start = time.perf_counter()
    proc = cli("list")
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    for name in ("teacher", "student-real", "dp-sgd", "dpsd", "digits", "mnist", "fashion-mnist"):
        assert name in proc.stdout
    assert "Abadi et al., CCS 2016" in proc.stdout
    assert elapsed < 60  # generous; `list` does not import torch (see test_registry)


def test_set_reads_exponent_notation_as_a_number():
    """PyYAML reads ``3e-3`` as a string; --set and grid files read it as 0.003."""
    from benchmark.cli import _parse_value
    from benchmark.runner.grid import numbers_as_numbers
    assert _parse_value("3e-3") == 0.003 and _parse_value("2") == 2 and _parse_value("adam") == "adam"
    assert numbers_as_numbers({"dpsd": {"lr_student": "1e-3", "mode": "e5"}}) == {"dpsd": {"lr_student": 0.001,
                                                                                         "mode": "e5"}}
