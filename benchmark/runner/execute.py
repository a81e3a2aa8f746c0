"""Run one cell: build its Context, call the method, score the released classifier on eval,
audit it, and write the result file. This function is what every executor calls."""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import math
import os
import platform
import resource
import socket
import subprocess
import time
import traceback
from pathlib import Path
from typing import Any

from .cells import cell_label, config_hash
from .store import ResultStore

log = logging.getLogger("benchmark")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=1)
def git_sha() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    import numpy
    import opacus
    import sklearn
    import torch
    import torchvision

    import benchmark
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "opacus": opacus.__version__, "numpy": numpy.__version__, "scikit-learn": sklearn.__version__,
            "benchmark": benchmark.__version__}


class PeakMemory:
    """Peak resident memory of this process during a block (resets the kernel's high-water mark)."""

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.reset = True
        except OSError:
            self.reset = False
        return self

    def peak_mb(self) -> float:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def __exit__(self, *exc):
        return False


def _tensor_digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def make_teacher_trainer(config: dict, splits, device):
    """A function (dataset, tag) -> trained teacher-architecture model, through the teacher cache."""
    from ..models import build_classifier
    from ..training import train_classifier
    from ..training.teachers import TEACHER_RECIPE, cached_model

    def train_teacher(dataset, tag: str, min_steps: int | None = None):
        x, y = dataset.tensors if hasattr(dataset, "tensors") else (None, None)
        recipe = {**TEACHER_RECIPE, **({"min_steps": int(min_steps)} if min_steps is not None else {})}
        key = {"dataset": config["dataset"], "arch": config["teacher_arch"], "seed": config["teacher_seed"],
               "recipe": recipe, "tag": tag, "n": len(dataset),
               "data": _tensor_digest(x, y) if x is not None else "unknown"}

        def build():
            from ..method import seed_everything
            seed_everything(config["teacher_seed"])  # initial weights depend on the teacher seed only
            return build_classifier(config["teacher_arch"], splits.input_shape, splits.num_classes)

        def train(model):
            from ..method import seed_everything
            seed_everything(config["teacher_seed"])
            r = recipe
            return train_classifier(model, dataset, epochs=r["min_epochs"], min_steps=r["min_steps"],
                                    batch_size=r["batch_size"], lr=r["lr"], device=device,
                                    seed=config["teacher_seed"], desc=f"teacher {tag}").cpu()

        return cached_model(key, build, train)

    return train_teacher


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def configure_threads() -> int:
    """Intra-op threads for CPU work: ``$BENCHMARK_THREADS``, else every CPU this process may use (at
    most 8). Deliberately not adaptive: CPU results depend on the thread count (summation order), so
    the same cell must get the same count to be reproducible. It is stored in each result. On an
    oversubscribed machine set ``BENCHMARK_THREADS=1`` (waiting OpenMP threads can cost 10x)."""
    import torch
    threads = max(1, int(os.environ.get("BENCHMARK_THREADS") or min(available_cpus(), 8)))
    torch.set_num_threads(threads)
    return threads


def pick_device(requested: str | None = None):
    import torch
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _save_sample_grid(images, labels, path: Path, num_classes: int, per_class: int = 10) -> None:
    import torch
    from torchvision.utils import save_image
    rows = []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()[:per_class]
        row = images[idx]
        if len(row) < per_class:
            row = torch.cat([row, torch.zeros(per_class - len(row), *images.shape[1:])])
        rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.cat(rows), path, nrow=per_class, padding=1)


def _fidelity(output, splits, trainer, device) -> dict:
    """FID-style distance of synthetic images to eval images, in the feature space of a teacher-architecture
    network trained (once, cached) on the labelled public pool: never on private or eval data."""
    from torch.utils.data import TensorDataset

    from ..metrics.fidelity import fidelity_metrics
    feature_net = trainer(TensorDataset(splits.public.tensors[0], splits.public_labels), "fid-feature-net")
    return fidelity_metrics(output.images.detach().cpu(), splits.eval.tensors[0], feature_net.to(device).eval(),
                            device)


def _optional_audit(config, info, model, splits, epsilon_spent, device) -> dict | None:
    """The membership-inference audit (benchmark.privacy.audit) for methods that touched private data."""
    if not ({"private_data", "teacher"} & set(info.needs)):
        return None
    try:
        from ..privacy import audit
    except ImportError:
        return None
    return audit.audit_result(config=config, model=model, splits=splits, epsilon_spent=epsilon_spent, device=device)


def run_cell(config: dict[str, Any], results_dir: str | Path, *, device: str | None = None, quiet: bool = False,
             raise_errors: bool = False, checkpointer=None) -> dict:
    """Run one cell and write its result (ok or failed). Returns the result dict."""
    import torch
    from torch.utils.data import TensorDataset

    from .. import registry
    from ..data import get_dataset
    from ..method import Context, SyntheticData
    from ..privacy.ledger import ACCOUNTANT, PrivacyLedger
    from ..training import evaluate, train_on_synthetic

    store = ResultStore(results_dir)
    info = registry.discover()[config["method"]]
    started_at = dt.datetime.now(dt.timezone.utc)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    eps_target = config["epsilon_target"]
    ledger = PrivacyLedger(math.inf if eps_target is None else eps_target, config["delta"])
    result: dict[str, Any] = {
        "method": config["method"], "family": info.family, "dataset": config["dataset"],
        "epsilon_target": eps_target, "delta": config["delta"], "epsilon_spent": None, "accountant": ACCOUNTANT,
        "privacy_unit": config.get("privacy_unit", info.privacy_unit), "adjacency": info.adjacency, "needs": list(info.needs),
        "seed": config["seed"], "status": "failed", "metrics": {}, "config": config,
        "config_hash": config_hash(config), "git_sha": git_sha(), "versions": versions(), "ledger": [],
        "started_at": started_at.isoformat(timespec="seconds"), "host": socket.gethostname(), "error": None,
        "artifacts": {},
    }
    artifacts = store.artifacts_dir(config)
    with PeakMemory() as mem:
        try:
            dev = pick_device(device)
            result["threads"] = configure_threads()
            from ..training import precision
            result["amp"] = precision.describe(dev)  # bfloat16 autocast in the non-private loops, or off
            splits = get_dataset(config["dataset"], config.get("data_root"), config["public_size"])
            cls = registry.load(config["method"])
            method = cls(**config["hparams"])
            trainer = make_teacher_trainer(config, splits, dev)
            resources: dict[str, Any] = {"private_data": splits.private, "public_data": splits.public}
            teacher = None
            if "teacher" in info.needs:
                teacher = trainer(splits.private, "teacher").to(dev).eval()
                for p in teacher.parameters():
                    p.requires_grad_(False)
                resources["teacher"] = teacher
            ctx = Context(dataset=config["dataset"], num_classes=splits.num_classes, input_shape=splits.input_shape,
                          epsilon=ledger.target_epsilon, delta=config["delta"], seed=config["seed"], device=dev,
                          hparams=dict(method.config), ledger=ledger, artifacts_dir=artifacts,
                          student_arch=config["student_arch"], teacher_arch=config["teacher_arch"], quiet=quiet,
                          checkpointer=checkpointer, _resources=resources, _declared=frozenset(info.needs),
                          _teacher_trainer=trainer if "private_data" in info.needs else None)
            log.info("running %s", cell_label(config))
            output, fit_seconds = method.execute(ctx)
            result["metrics"].update(ctx.metrics)
            result["metrics"]["fit_time_s"] = round(fit_seconds, 3)
            if isinstance(output, SyntheticData):
                grid = artifacts / "samples.png"
                _save_sample_grid(output.images.detach().cpu(), output.labels.cpu(), grid, splits.num_classes)
                result["artifacts"]["samples"] = str(grid.relative_to(store.cell_dir(config)))
                result["metrics"]["synthetic_samples"] = len(output.images)
                classifier = train_on_synthetic(output.images.detach().cpu(), output.labels.cpu(), ctx.build_student,
                                                device=dev, seed=config["seed"], progress=ctx.progress)
                result["metrics"].update(_fidelity(output, splits, trainer, dev))
            else:
                classifier = output
            for name in sorted(os.listdir(artifacts)) if artifacts.exists() else []:
                result["artifacts"].setdefault(Path(name).stem, str((artifacts / name).relative_to(store.cell_dir(config))))
            classifier = classifier.to(dev).eval()
            result["metrics"]["test_accuracy"] = evaluate(classifier, splits.eval, dev)
            # Accuracy on the labelled public pool: the split defaults are chosen on (never eval).
            # For methods that train on the public pool's images it is a training-set accuracy.
            result["metrics"]["validation_accuracy"] = evaluate(
                classifier, TensorDataset(splits.public.tensors[0], splits.public_labels), dev)
            if ctx.synthetic_release is not None:  # e.g. DPSD's generator: private synthetic data
                released = ctx.synthetic_release
                grid = artifacts / "generator_samples.png"
                _save_sample_grid(released.images, released.labels, grid, splits.num_classes)
                result["artifacts"]["generator_samples"] = str(grid.relative_to(store.cell_dir(config)))
                downstream = train_on_synthetic(released.images, released.labels, ctx.build_student, device=dev,
                                                seed=config["seed"], progress=ctx.progress)
                result["metrics"]["synthetic_downstream_accuracy"] = evaluate(downstream, splits.eval, dev)
            if method.is_private():
                result["epsilon_spent"] = ledger.epsilon()
            result["ledger"] = ledger.events
            audit = _optional_audit(config, info, classifier, splits, result["epsilon_spent"], dev)
            if audit is not None:
                result["audit"] = audit
            result["status"] = "ok"
        except Exception as exc:  # noqa: BLE001 - every failure becomes a failed result
            result["error"] = traceback.format_exc()
            result["ledger"] = ledger.events
            log.error("%s failed: %s", cell_label(config), str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            if raise_errors:
                _finish(result, wall0, cpu0, mem)
                store.write(result)
                raise
        _finish(result, wall0, cpu0, mem)
    del torch
    store.write(result)
    return result


def _finish(result, wall0, cpu0, mem) -> None:
    result["wall_time_s"] = round(time.perf_counter() - wall0, 3)
    result["cpu_time_s"] = round(time.process_time() - cpu0, 3)
    result["peak_memory_mb"] = round(mem.peak_mb(), 1)
    result["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
