"""Cells: one (method, dataset, epsilon, seed) with its full, resolved config and its hash."""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any

SCHEMA_VERSION = 1
DEFAULT_DELTA = 1e-5
#: Config keys that are settings of the cell rather than hyperparameters of the method.
CELL_SETTINGS = ("teacher_arch", "student_arch", "teacher_seed", "public_size")
#: Keys left out of the hash: where things are, not what is computed.
UNHASHED = ("data_root", "ablation")


class ConfigError(ValueError):
    """Bad user input in a cell or grid."""


def format_epsilon(eps: float | None) -> str:
    return "inf" if eps is None or not math.isfinite(eps) else f"{eps:g}"


def check_budget(epsilon: float, delta: float) -> None:
    if not (isinstance(epsilon, (int, float)) and not isinstance(epsilon, bool)) or math.isnan(epsilon) or epsilon <= 0:
        raise ConfigError(f"epsilon must be a positive number (got {epsilon!r})")
    if not (isinstance(delta, (int, float)) and 0 < delta < 1):
        raise ConfigError(f"delta must be in (0, 1) (got {delta!r})")


def resolve(method: str, dataset: str, epsilon: float | None, seed: int, *, delta: float = DEFAULT_DELTA,
            hparams: dict[str, Any] | None = None, settings: dict[str, Any] | None = None,
            data_root: str | None = None) -> dict[str, Any]:
    """The full config of one cell: method defaults overlaid by ``hparams``; validated."""
    from .. import registry
    from ..data import REGISTRY, _ensure_registered
    from ..models import default_student_arch, default_teacher_arch

    methods = registry.discover()
    if method not in methods:
        raise ConfigError(f"unknown method {method!r}; run `python -m benchmark list` (known: "
                          f"{', '.join(sorted(methods))})")
    _ensure_registered()
    if dataset not in REGISTRY:
        raise ConfigError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(REGISTRY))}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer (got {seed!r})")
    cls = registry.load(method)
    try:
        instance = cls(**(hparams or {}))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    private = instance.is_private()
    if private:
        if epsilon is None:
            raise ConfigError(f"{method} is a private method: it needs a finite epsilon (--epsilon)")
        check_budget(epsilon, delta)
        if not math.isfinite(epsilon):
            raise ConfigError(f"{method} is a private method: it needs a finite epsilon (got {epsilon})")
        if float(epsilon).is_integer():  # `--epsilon 10` and a grid's `10` are one cell with one hash
            epsilon = int(epsilon)
    else:
        epsilon = None  # non-private references run at epsilon = infinity
        check_budget(1.0, delta)
    settings = dict(settings or {})
    unknown = set(settings) - set(CELL_SETTINGS)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(CELL_SETTINGS)}")
    spec = REGISTRY[dataset]
    resolved_hparams = instance.config
    config = {
        "schema_version": SCHEMA_VERSION,
        "method": method, "privacy_unit": instance.effective_privacy_unit(), "dataset": dataset,
        "epsilon_target": epsilon, "delta": float(delta), "seed": seed,
        "hparams": resolved_hparams,
        "teacher_arch": settings.get("teacher_arch", default_teacher_arch(spec.input_shape)),
        "student_arch": settings.get("student_arch", default_student_arch(spec.input_shape)),
        "teacher_seed": int(settings.get("teacher_seed", 0)),
        "public_size": int(settings.get("public_size", spec.public_size)),
    }
    if data_root:
        config["data_root"] = str(data_root)
    json.dumps(config)  # configs must be plain JSON
    return config


def config_hash(config: dict[str, Any]) -> str:
    hashed = {k: v for k, v in config.items() if k not in UNHASHED}
    return hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:16]


def cell_stem(config: dict[str, Any]) -> str:
    return f"eps{format_epsilon(config['epsilon_target'])}_seed{config['seed']}_{config_hash(config)[:8]}"


def cell_label(config: dict[str, Any]) -> str:
    return f"{config['method']} / {config['dataset']} / eps={format_epsilon(config['epsilon_target'])} / seed={config['seed']}"
