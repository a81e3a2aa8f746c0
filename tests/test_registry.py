"""Discovery: a new file with one Method subclass appears in `list` and runs, with no other edit."""
import subprocess
import sys
import textwrap

from conftest import ROOT, cli

PLUGIN = textwrap.dedent('''
    """A test-only plug-in: the student trained on a handful of private images."""
    from benchmark import Method
    from benchmark.training import train_classifier


    class TinyPlugin(Method):
        name = "tiny-plugin"
        family = "reference"
        needs = {"private_data"}
        privacy_unit = "none"
        citation = "test plug-in"
        hparams = {"epochs": 1}

        def fit(self, ctx):
            return train_classifier(ctx.build_student(), ctx.private_data, epochs=ctx.hparams["epochs"],
                                    device=ctx.device, seed=ctx.seed)
''')


def test_new_method_file_is_discovered_and_runs(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "tiny_plugin.py").write_text(PLUGIN)
    env = {"BENCHMARK_METHODS_PATH": str(plugins)}
    listing = cli("list", env=env)
    assert listing.returncode == 0 and "tiny-plugin" in listing.stdout
    run = cli("run", "--method", "tiny-plugin", "--dataset", "digits", "--results", tmp_path / "r", "--quiet", env=env)
    assert run.returncode == 0, run.stderr
    assert list((tmp_path / "r" / "digits" / "tiny-plugin").glob("epsinf_seed0_*.json"))


def test_list_does_not_import_torch():
    code = "import sys; from benchmark import registry; registry.discover(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_core_methods_declare_contract():
    from benchmark import registry
    from benchmark.method import FAMILIES, PRIVACY_UNITS, RESOURCES
    methods = registry.discover()
    for key in ("teacher", "student-real", "dp-sgd", "dpsd"):
        assert key in methods
    for info in methods.values():
        assert info.family in FAMILIES, info
        assert info.privacy_unit in PRIVACY_UNITS, info
        assert set(info.needs) <= set(RESOURCES), info
        assert info.citation, info
        assert info.name == info.name.lower() and " " not in info.name
