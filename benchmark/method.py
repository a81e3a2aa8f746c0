"""The Method base class and the Context a method runs in (protocol section 3).

A method is one class in one file under ``methods/``: it declares what it is (name,
family, needs, privacy unit, citation, default hyperparameters) and implements
``fit(ctx)``, which returns a classifier (``torch.nn.Module`` producing logits) or,
for generative methods, a :class:`SyntheticData` set on which the runner trains the
common student. ``execute`` is the template every method runs through: seeding,
timing, and the ledger's final budget check.
"""
from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .privacy.ledger import PrivacyBudgetExceeded, PrivacyLedger

FAMILIES = ("reference", "dp-training", "dp-generative", "dp-data-free", "label-dp", "federated",
            "data-free-kd", "dpsd")
RESOURCES = ("private_data", "teacher", "public_data")
PRIVACY_UNITS = ("record", "label", "client", "none")


class ResourceNotDeclared(AttributeError):
    """A method touched a resource it did not declare in ``needs``."""


@dataclass
class SyntheticData:
    """Labelled synthetic data released by a generative method (images N x C x H x W in [0, 1])."""
    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if self.images.ndim != 4 or len(self.images) != len(self.labels):
            raise ValueError("SyntheticData needs images N x C x H x W and N labels")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Context:
    """What a method may see: the task, its budget, its declared resources and helpers."""
    dataset: str
    num_classes: int
    input_shape: tuple[int, int, int]
    epsilon: float
    delta: float
    seed: int
    device: torch.device
    hparams: dict[str, Any]
    ledger: PrivacyLedger
    artifacts_dir: Path
    student_arch: str = "cnn3"
    teacher_arch: str = "cnn-bn"
    quiet: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("benchmark"))
    checkpointer: Any = None  # benchmark.runner.checkpoint.Checkpointer (preemption), when the runner gives one
    #: Private synthetic data a classifier-releasing method also releases (e.g. DPSD's generator samples
    #: labelled by the private student); the runner scores it downstream and saves a sample grid.
    synthetic_release: SyntheticData | None = None
    _resources: dict[str, Any] = field(default_factory=dict, repr=False)
    _declared: frozenset = field(default_factory=frozenset, repr=False)
    _teacher_trainer: Callable | None = field(default=None, repr=False)

    def _resource(self, name: str):
        if name not in self._declared:
            raise ResourceNotDeclared(f"this method did not declare {name!r} in `needs`, so it gets none")
        return self._resources[name]

    @property
    def private_data(self):
        return self._resource("private_data")

    @property
    def public_data(self):
        return self._resource("public_data")

    @property
    def teacher(self):
        return self._resource("teacher")

    @property
    def private(self) -> bool:
        return math.isfinite(self.epsilon)

    def progress(self, iterable=None, total: int | None = None, desc: str | None = None, **kw):
        from tqdm.auto import tqdm
        return tqdm(iterable, total=total, desc=desc, disable=self.quiet, leave=False, dynamic_ncols=True, **kw)

    def build_student(self, **kwargs) -> torch.nn.Module:
        from .models import build_classifier
        return build_classifier(self.student_arch, self.input_shape, self.num_classes, **kwargs).to(self.device)

    def build_teacher_model(self) -> torch.nn.Module:
        from .models import build_classifier
        return build_classifier(self.teacher_arch, self.input_shape, self.num_classes).to(self.device)

    def train_teacher(self, dataset, tag: str, min_steps: int | None = None) -> torch.nn.Module:
        """Train (or load from the cache) a teacher-architecture model on ``dataset``.

        Only methods that declared ``private_data`` can pass private data here; ``tag``
        (e.g. ``"shard-3-of-10"``) names the model in the cache key together with the dataset,
        architecture, seed and recipe; ``min_steps`` overrides the recipe's step count (small shards).
        """
        if self._teacher_trainer is None:
            raise RuntimeError("no teacher trainer in this context")
        return self._teacher_trainer(dataset, tag, min_steps).to(self.device).eval()


class Method:
    """Base class of every method. Subclasses set the class attributes and implement ``fit``."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = "reference"
    needs: ClassVar[frozenset | set] = frozenset()
    privacy_unit: ClassVar[str] = "record"
    adjacency: ClassVar[str] = "add/remove one record"
    citation: ClassVar[str] = ""
    hparams: ClassVar[dict[str, Any]] = {}
    #: Overrides that make a run take seconds on digits, for the contract tests (not for results).
    tiny: ClassVar[dict[str, Any]] = {}

    def __init__(self, **overrides):
        unknown = set(overrides) - set(self.default_hparams())
        if unknown:
            raise ValueError(f"unknown hyperparameter(s) for {self.name}: {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(sorted(self.default_hparams())) or 'none'}")
        self.config = {**self.default_hparams(), **overrides}

    @classmethod
    def default_hparams(cls) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            merged.update(getattr(klass, "hparams", {}) or {})
        return merged

    def effective_privacy_unit(self) -> str:
        """The privacy unit of this configuration; a method whose hyperparameters switch a DP
        mechanism on (e.g. a data-free preset with ``dp_annotation``) overrides this."""
        return self.privacy_unit

    def is_private(self) -> bool:
        return self.effective_privacy_unit() != "none"

    def fit(self, ctx: Context):  # pragma: no cover - the one thing each method writes
        raise NotImplementedError(f"{type(self).__name__} must implement fit(ctx)")

    def execute(self, ctx: Context):
        """Template around ``fit``: seed, time, and check the budget. Returns (output, seconds)."""
        seed_everything(ctx.seed)
        started = time.perf_counter()
        output = self.fit(ctx)
        seconds = time.perf_counter() - started
        if not isinstance(output, (torch.nn.Module, SyntheticData)):
            raise TypeError(f"{self.name}.fit returned {type(output).__name__}; expected nn.Module or SyntheticData")
        if ctx.private:
            spent = ctx.ledger.epsilon()
            if spent > ctx.epsilon * (1 + 1e-9):
                raise PrivacyBudgetExceeded(f"{self.name} spent epsilon {spent:.4g} > target {ctx.epsilon:g}")
        return output, seconds
