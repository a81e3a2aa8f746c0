"""Micro-benchmarks of the hot paths: ``python -m benchmark bench [--quick]`` (issue #11).

Prints one table: the cost of DPSD's privacy mechanism per iteration (each noise placement
against the same loop with the mechanism off, timed alternately in one process), the step
time of the heaviest baselines (Opacus DP-SGD, a DP GAN discriminator, the data-free
synthesizer), teacher throughput, the ledger, the result store and ``report`` over many
synthetic result files. Inputs are random tensors of the chosen image shape: the numbers
are costs, not accuracies. ``benchmarks/test_benchmarks.py`` times the same callables
with pytest-benchmark.
"""
from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn


@dataclass(frozen=True)
class Sizes:
    image_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    batch: int = 256                 # DP-SGD lot, GAN real batch, synthesizer batch
    # One DPSD iteration is the method's default iteration scaled down 100x in every count, so the
    # shares of its parts stay those of a real run: 100,000 samples, 1,000 student steps and 200
    # generator steps per iteration become 1,000, 10 and 2 (student batch 256, generator batch 512).
    dpsd_batch: int = 1000           # synthetic samples queried and annotated per iteration
    dpsd_student_steps: int = 10     # student steps per iteration (one release each in the gradient placement)
    dpsd_generator_steps: int = 2    # generator steps per iteration
    dpsd_student_batch: int = 256
    query_batch: int = 1024
    repeats: int = 5                 # timed repetitions per quantity; the median is reported
    ledger_events: int = 10_000
    store_files: int = 200
    report_files: int = 10_000


FULL = Sizes()
QUICK = Sizes(image_shape=(1, 8, 8), batch=16, dpsd_batch=32, dpsd_student_steps=2, dpsd_generator_steps=1,
              dpsd_student_batch=16,
              query_batch=64, repeats=2, ledger_events=50, store_files=5, report_files=60)


@dataclass
class Row:
    quantity: str
    value: float
    unit: str
    detail: str = ""


# ------------------------------------------------------------------ timing
def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def alternating_seconds(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median time of each callable, run in turn (A B A B ...) so that load changes hit all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


# ------------------------------------------------------------------ models and data
def _images(sizes: Sizes, n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, *sizes.image_shape, generator=torch.Generator().manual_seed(seed))


def _labels(sizes: Sizes, n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, sizes.num_classes, (n,), generator=torch.Generator().manual_seed(seed))


def _student(sizes: Sizes) -> nn.Module:
    from .models import build_classifier, default_student_arch
    return build_classifier(default_student_arch(sizes.image_shape), sizes.image_shape, sizes.num_classes)


def _teacher(sizes: Sizes) -> nn.Module:
    """The default teacher architecture for the shape, untrained (its cost does not depend on training)."""
    from .models import build_classifier, default_teacher_arch
    t = build_classifier(default_teacher_arch(sizes.image_shape), sizes.image_shape, sizes.num_classes).eval()
    return t.requires_grad_(False)


# ------------------------------------------------------------------ DPSD
class DPSDLoop:
    """One DPSD iteration (methods/dpsd.py, ``DPSD.fit``), built from its own pieces, with the
    privacy mechanism on (``private=True``: the Gaussian annotation, or per-sample normalised
    noisy student gradients, and the ledger) or off (the raw centred teacher logits on the same
    support; plain minibatch student gradients)."""

    def __init__(self, sizes: Sizes, placement: str, private: bool, seed: int = 0):
        from . import registry
        from .privacy.ledger import PrivacyLedger
        from .training.distill import AnnotationMemory, make_generator_and_optimisers
        torch.manual_seed(seed)
        self.dpsd = registry.load("dpsd")
        self.h = {**self.dpsd.hparams, "noise_placement": placement, "batch_size": sizes.dpsd_batch,
                  "student_steps": sizes.dpsd_student_steps, "student_batch": sizes.dpsd_student_batch,
                  "generator_steps": sizes.dpsd_generator_steps}
        self.placement, self.private = placement, private
        self.ctx = SimpleNamespace(input_shape=sizes.image_shape, device=torch.device("cpu"),
                                   ledger=PrivacyLedger(math.inf, 1e-5))
        self.student, self.teacher = _student(sizes), _teacher(sizes)
        self.gen, self.opt_s, self.opt_g = make_generator_and_optimisers(self.ctx, self.student, self.h)
        self.k = min(self.h["k"], sizes.num_classes)
        self.sigma = 1.0
        self.memory = AnnotationMemory(self.h["memory"])
        self.rng = torch.Generator().manual_seed(seed)

    def _loss(self, logits, support, target):
        from .training.distill import annotation_regression_loss
        return annotation_regression_loss(logits, support, target, self.h["student_loss"])

    def _query(self):
        """A synthetic batch, the teacher's logits on it and the student's top-k support, as in
        ``DPSD.fit`` (``synthesize_and_query``)."""
        from .privacy.mechanisms import topk_support
        from .training.distill import synthesize_and_query
        z, x, (s_logits, t_logits) = synthesize_and_query(self.gen, [self.student, self.teacher],
                                                          self.h["batch_size"], self.ctx.device)
        return z, x, topk_support(s_logits, self.k), t_logits

    def _gradient_update(self, x, support, t_logits) -> Callable[[], None]:
        """The gradient placement's student update (``student_steps`` steps) on one annotated batch:
        per-sample normalised noisy gradients when private, else plain minibatch gradients."""
        from .privacy.mechanisms import gaussian_annotation
        clean = gaussian_annotation(t_logits, support, clip_norm=self.h["clip_norm"], noise_multiplier=0.0)
        if self.private:
            return lambda: self.dpsd._student_dp_gradient(self.ctx, self.student, self.opt_s, x, support, clean,
                                                          self.h, self.sigma)
        return lambda: self._student_plain_gradient(x, support, clean)

    def iteration(self) -> None:
        from .privacy import ledger as L
        from .privacy.mechanisms import gaussian_annotation
        from .training.distill import centred, train_generator_against_student, train_student_on_memory
        h = self.h
        z, x, support, t_logits = self._query()
        disagreement = None
        if self.placement == "annotation":
            if self.private:
                self.ctx.ledger.record(L.gaussian(self.sigma))
                annotation = gaussian_annotation(t_logits, support, clip_norm=h["clip_norm"],
                                                 noise_multiplier=self.sigma)
            else:
                annotation = centred(t_logits.gather(1, support))
            self.memory.add(x, support, annotation)
            train_student_on_memory(self.student, self.opt_s, self.memory, self._loss, steps=h["student_steps"],
                                    batch_size=h["student_batch"], rng=self.rng)

            def disagreement(logits, support=support, released=annotation):
                return ((centred(logits.gather(1, support)) - released) ** 2).sum(1).mean()
        else:
            self._gradient_update(x, support, t_logits)()
        train_generator_against_student(self.gen, self.student, self.opt_g, z, disagreement,
                                        steps=h["generator_steps"], w_adv=h["w_adv"], w_onehot=h["w_onehot"],
                                        w_balance=h["w_balance"], w_entropy=h["w_entropy"],
                                        fresh_batch=h["generator_batch"])

    def student_update(self) -> Callable[[], None]:
        """The gradient placement's student update alone, on one fixed annotated synthetic batch."""
        _, x, support, t_logits = self._query()
        return self._gradient_update(x, support, t_logits)

    def _student_plain_gradient(self, x, support, target) -> None:
        self.student.train()
        for _ in range(self.h["student_steps"]):
            idx = torch.randint(0, len(x), (min(self.h["student_batch"], len(x)),))
            loss = self._loss(self.student(x[idx]), support[idx], target[idx])
            self.opt_s.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_s.step()


def bench_dpsd(sizes: Sizes, placement: str) -> list[Row]:
    on, off = DPSDLoop(sizes, placement, private=True), DPSDLoop(sizes, placement, private=False)
    t = alternating_seconds({"on": on.iteration, "off": off.iteration}, sizes.repeats)
    rows = [Row(f"dpsd {placement} placement: private / off", t["on"] / t["off"], "x",
                f"{_ms(t['on'])} vs {_ms(t['off'])} per iteration (b={sizes.dpsd_batch}, "
                f"{sizes.dpsd_student_steps} student and {sizes.dpsd_generator_steps} generator steps)")]
    if placement == "annotation":  # the mechanism alone is far below the noise of two whole iterations
        mechanism = annotation_mechanism_seconds(sizes)
        rows.append(Row("dpsd annotation mechanism: share of an iteration", 100 * mechanism / t["on"], "%",
                        f"{_ms(mechanism)} (ledger record + noisy top-k annotation of {sizes.dpsd_batch} samples)"))
    else:  # the student update alone: vectorised per-sample gradients against plain minibatch gradients
        s = alternating_seconds({"on": on.student_update(), "off": off.student_update()}, sizes.repeats)
        rows.append(Row("dpsd gradient placement: student update private / off", s["on"] / s["off"], "x",
                        f"{_ms(s['on'])} vs {_ms(s['off'])} for {sizes.dpsd_student_steps} steps of "
                        f"{sizes.dpsd_student_batch} (torch.func per-sample gradients)"))
    return rows


def annotation_mechanism_seconds(sizes: Sizes) -> float:
    """Median time of the annotation placement's privacy work in one iteration: the ledger's
    guard-and-record of one Gaussian release and the noisy normalised top-k annotation."""
    from .privacy import ledger as L
    from .privacy.mechanisms import gaussian_annotation, topk_support
    g = torch.Generator().manual_seed(0)
    teacher_logits = torch.randn(sizes.dpsd_batch, sizes.num_classes, generator=g)
    student_logits = torch.randn(sizes.dpsd_batch, sizes.num_classes, generator=g)
    ledger = L.PrivacyLedger(1e9, 1e-5)

    def mechanism():
        support = topk_support(student_logits, sizes.num_classes)
        ledger.record(L.gaussian(1.0))
        gaussian_annotation(teacher_logits, support, clip_norm=5.0, noise_multiplier=1.0)
    return median_seconds(mechanism, repeats=max(20, 10 * sizes.repeats))


# ------------------------------------------------------------------ baselines
def opacus_sgd_step(sizes: Sizes) -> Callable[[], None]:
    """One DP-SGD step as ``dp_sgd_train`` takes it: Opacus per-example clipping and noise."""
    import warnings

    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset
    x, y = _images(sizes, sizes.batch), _labels(sizes, sizes.batch)
    model = _student(sizes)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, opt, _ = PrivacyEngine(accountant="rdp").make_private(
            module=model, optimizer=opt, data_loader=DataLoader(TensorDataset(x, y), batch_size=sizes.batch),
            noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=False)

    def step():
        opt.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def plain_sgd_step(sizes: Sizes) -> Callable[[], None]:
    x, y = _images(sizes, sizes.batch), _labels(sizes, sizes.batch)
    model = _student(sizes)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def dp_discriminator_step(sizes: Sizes) -> Callable[[], None]:
    """One DP-GAN critic step (methods/dp_gan.py): per-example gradients, joint clipping, noise."""
    from .models.generative import ConditionalDiscriminator, ConditionalGenerator
    from .training.gan import PerSampleGrads, wgan_critic_loss
    from .training.gan import dp_discriminator_step as step_fn
    x, y = _images(sizes, sizes.batch), _labels(sizes, sizes.batch)
    G = ConditionalGenerator(16, sizes.num_classes, sizes.image_shape, 32)
    D = PerSampleGrads(ConditionalDiscriminator(sizes.image_shape, sizes.num_classes, 32))
    opt = torch.optim.RMSprop(D.params, lr=2e-3)

    def step():
        with torch.no_grad():
            fake = G.sample(y)
        step_fn(D, opt, (x, y), (fake, y), real_loss=lambda o: wgan_critic_loss(o, True),
                fake_loss=lambda o: wgan_critic_loss(o, False), clip=1.0, noise_multiplier=1.0,
                expected_batch=float(sizes.batch), separate=False)
    return step


def synthesizer_step(sizes: Sizes) -> Callable[[], None]:
    """One generator step of the data-free synthesizer with DAFL's loss (methods/dafl.py)."""
    from .models import Generator
    from .synthesis.synthesizer import Synthesizer
    synth = Synthesizer(teacher=_teacher(sizes), student=_student(sizes), input_shape=sizes.image_shape,
                        num_classes=sizes.num_classes, weights={"oh": 1.0, "act": 0.1, "balance": 5.0},
                        mode="generator", generator=Generator(sizes.image_shape, latent_dim=64, base_channels=32),
                        batch_size=sizes.batch, g_steps=1, device=torch.device("cpu"))
    return synth.generator_step


def teacher_queries(sizes: Sizes) -> Callable[[], None]:
    teacher, x = _teacher(sizes), _images(sizes, sizes.query_batch)

    def query():
        with torch.no_grad():
            teacher(x)
    return query


def bench_baselines(sizes: Sizes) -> list[Row]:
    t = alternating_seconds({"dp": opacus_sgd_step(sizes), "plain": plain_sgd_step(sizes)}, sizes.repeats)
    rows = [Row("dp-sgd step (Opacus)", t["dp"] * 1e3, "ms",
                f"B={sizes.batch}; {t['dp'] / t['plain']:.1f}x a plain SGD step ({_ms(t['plain'])})")]
    rows.append(Row("dp-gan critic step (DP)", median_seconds(dp_discriminator_step(sizes), sizes.repeats) * 1e3,
                    "ms", f"B={sizes.batch} real + {sizes.batch} fake"))
    rows.append(Row("data-free synthesizer step", median_seconds(synthesizer_step(sizes), sizes.repeats) * 1e3,
                    "ms", f"DAFL loss, b={sizes.batch}"))
    seconds = median_seconds(teacher_queries(sizes), sizes.repeats)
    rows.append(Row("teacher queries", sizes.query_batch / seconds, "images/s",
                    f"batches of {sizes.query_batch}, shape {'x'.join(map(str, sizes.image_shape))}"))
    return rows


# ------------------------------------------------------------------ ledger, store, report
def ledger_events(n: int) -> list[dict]:
    """``n`` events that do not merge (consecutive events differ)."""
    from .privacy import ledger as L
    return [L.subsampled_gaussian(1.0 + 0.1 * (i % 2), 0.01, steps=1) for i in range(n)]


def filled_ledger(n: int):
    from .privacy.ledger import PrivacyLedger
    ledger = PrivacyLedger(math.inf, 1e-5)
    for ev in ledger_events(n):
        ledger.record(ev)
    return ledger


def bench_ledger(sizes: Sizes) -> list[Row]:
    from .privacy.ledger import epsilon_from_events
    n = sizes.ledger_events
    t0 = time.perf_counter()
    ledger = filled_ledger(n)
    record = time.perf_counter() - t0
    recompute = median_seconds(lambda: epsilon_from_events(ledger.events, 1e-5), sizes.repeats)
    return [Row(f"ledger record(), {n:,} events", record / n * 1e6, "us/event", f"{record:.2f} s in all"),
            Row(f"ledger epsilon(), {n:,} events", median_seconds(ledger.epsilon, sizes.repeats) * 1e3, "ms",
                "from the running RDP sums"),
            Row(f"epsilon_from_events, {n:,} events", recompute, "s",
                "recomputed from the stored events, as the report and audits do")]


def fake_store_results(n: int) -> list[dict]:
    """``n`` results with the runner's schema and real resolved configs (dp-sgd on digits)."""
    import random

    from .report.bench import fake_result
    from .runner.cells import config_hash, resolve
    rng = random.Random(0)
    out = []
    for seed in range(n):
        config = resolve("dp-sgd", "digits", 1.0, seed)
        rec = fake_result("digits", 0.0, "dp-sgd", "dp-training", "record", 0.9, 1.0, seed, rng)
        rec.update(config=config, config_hash=config_hash(config))
        out.append(rec)
    return out


def bench_store(sizes: Sizes) -> Row:
    from .runner.store import ResultStore
    results = fake_store_results(sizes.store_files)
    with tempfile.TemporaryDirectory() as d:
        store = ResultStore(d)
        t = time.perf_counter()
        for r in results:
            store.write(r)
        seconds = time.perf_counter() - t
    return Row("result store write", seconds / len(results) * 1e3, "ms/file",
               f"{len(results)} files, atomic (fsync + link)")


def bench_report(sizes: Sizes) -> Row:
    from .report import build_report
    from .report.bench import make_fake_results
    with tempfile.TemporaryDirectory() as d:
        make_fake_results(d, sizes.report_files)
        t = time.perf_counter()
        build_report(Path(d), Path(d) / "report", quiet=True)
        seconds = time.perf_counter() - t
    return Row(f"report over {sizes.report_files:,} result files", seconds, "s", "tables and figures")


# ------------------------------------------------------------------ the table
def run(sizes: Sizes = FULL, progress: Callable[[str], None] = lambda _: None):
    """All measurements as a pandas DataFrame (quantity, value, unit, detail)."""
    import pandas as pd

    from .runner.execute import configure_threads
    threads = configure_threads()
    progress(f"{threads} thread(s)")
    rows: list[Row] = []
    for placement in ("annotation", "gradient"):
        progress(f"dpsd {placement}")
        rows += bench_dpsd(sizes, placement)
    progress("baselines")
    rows += bench_baselines(sizes)
    progress("ledger")
    rows += bench_ledger(sizes)
    progress("store")
    rows.append(bench_store(sizes))
    progress("report")
    rows.append(bench_report(sizes))
    return pd.DataFrame([vars(r) for r in rows], columns=["quantity", "value", "unit", "detail"])


def format_table(table) -> str:
    shown = table.assign(value=[f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}" for v in table["value"]])
    return shown.to_string(index=False, justify="left")


def sizes_for(quick: bool, repeats: int | None = None) -> Sizes:
    sizes = QUICK if quick else FULL
    return replace(sizes, repeats=repeats) if repeats else sizes
