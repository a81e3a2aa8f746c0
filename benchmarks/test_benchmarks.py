"""pytest-benchmark timings of what ``python -m benchmark bench`` prints (benchmark/bench.py).

Not collected by the test run (``testpaths = ["tests"]`` in pyproject.toml). Run, save and compare::

    pytest benchmarks/ --benchmark-autosave            # full sizes (bench.FULL), several minutes
    pytest benchmarks/ --benchmark-compare             # against the last saved run
    BENCH_QUICK=1 pytest benchmarks/                   # tiny sizes (bench.QUICK), a smoke test

Groups put the private and the non-private variant of a loop side by side.
"""
import os

import pytest

from benchmark import bench

SIZES = bench.QUICK if os.environ.get("BENCH_QUICK") else bench.FULL


@pytest.fixture(scope="module", autouse=True)
def threads():
    from benchmark.runner.execute import configure_threads
    configure_threads()


@pytest.mark.parametrize("private", [True, False], ids=["private", "off"])
@pytest.mark.parametrize("placement", ["annotation", "gradient"])
def test_dpsd_iteration(benchmark, placement, private):
    benchmark.group = f"dpsd {placement} placement, per iteration"
    loop = bench.DPSDLoop(SIZES, placement, private=private)
    benchmark.pedantic(loop.iteration, rounds=SIZES.repeats, warmup_rounds=1)


@pytest.mark.parametrize("make", [bench.opacus_sgd_step, bench.plain_sgd_step], ids=["opacus", "plain"])
def test_sgd_step(benchmark, make):
    benchmark.group = "dp-sgd step"
    benchmark(make(SIZES))


def test_dp_gan_critic_step(benchmark):
    benchmark.group = "baseline steps"
    benchmark(bench.dp_discriminator_step(SIZES))


def test_synthesizer_step(benchmark):
    benchmark.group = "baseline steps"
    benchmark(bench.synthesizer_step(SIZES))


def test_teacher_queries(benchmark):
    benchmark.group = "teacher"
    benchmark.extra_info["images_per_call"] = SIZES.query_batch
    benchmark(bench.teacher_queries(SIZES))


def test_ledger_record(benchmark):
    benchmark.group = "ledger"
    benchmark.extra_info["events"] = SIZES.ledger_events
    ledger = benchmark.pedantic(bench.filled_ledger, args=(SIZES.ledger_events,), rounds=1)
    assert len(ledger.events) == SIZES.ledger_events


def test_ledger_epsilon(benchmark):
    benchmark.group = "ledger"
    ledger = bench.filled_ledger(SIZES.ledger_events)
    benchmark.extra_info["events"] = len(ledger.events)
    assert benchmark(ledger.epsilon) > 0


def test_epsilon_from_events(benchmark):
    """Recomputed from all ``SIZES.ledger_events`` stored events, as the report and audits do."""
    from benchmark.privacy.ledger import epsilon_from_events
    benchmark.group = "ledger"
    events = bench.filled_ledger(SIZES.ledger_events).events
    benchmark.extra_info["events"] = len(events)
    assert benchmark.pedantic(epsilon_from_events, args=(events, 1e-5), rounds=SIZES.repeats) > 0


def test_store_write(benchmark, tmp_path):
    from benchmark.runner.store import ResultStore
    benchmark.group = "store and report"
    results = iter(bench.fake_store_results(SIZES.store_files))
    store = ResultStore(tmp_path)
    benchmark.pedantic(lambda: store.write(next(results)), rounds=SIZES.store_files)


def test_report(benchmark, tmp_path):
    from benchmark.report import build_report
    from benchmark.report.bench import make_fake_results
    benchmark.group = "store and report"
    benchmark.extra_info["result_files"] = SIZES.report_files
    make_fake_results(tmp_path, SIZES.report_files)
    written = benchmark.pedantic(build_report, args=(tmp_path, tmp_path / "report"), kwargs={"quiet": True},
                                 rounds=1)
    assert "leaderboard_csv" in written
