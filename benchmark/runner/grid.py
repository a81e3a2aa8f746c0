"""Grid files (protocol section 7) and their expansion into cells.

```yaml
methods: [dpsd, dp-sgd]        # registry keys, or "all"
datasets: [digits]
epsilons: [1, 10]
seeds: [0, 1, 2]
delta: 1.0e-5                  # optional
settings: {teacher_seed: 0}    # optional cell settings (teacher_arch, student_arch, teacher_seed, public_size)
overrides:                     # optional hyperparameters, per method or per method@dataset
  dpsd: {iterations: 200}
  dpsd@mnist: {batch_size: 1024}
variants:                      # optional: several configurations of one method (ablations)
  dpsd: [{}, {k: 3}, {noise_placement: gradient}]
ablation: my-ablation          # optional tag copied into each cell (not hashed; kept out of leaderboards)
```
Non-private methods (privacy unit ``none``) run once per dataset and seed, at epsilon infinity.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from .cells import DEFAULT_DELTA, ConfigError, check_budget, resolve

GRID_KEYS = {"methods", "datasets", "epsilons", "seeds", "delta", "overrides", "settings", "name", "description",
             "data_root", "slurm", "ablation", "variants"}
REQUIRED = ("methods", "datasets", "epsilons", "seeds")


_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)$")


def numbers_as_numbers(value: Any) -> Any:
    """YAML 1.1 (PyYAML) reads ``3e-3`` as a string (it wants ``3.0e-3``); read it as a float,
    in nested lists and mappings too, as a user writing a learning rate means."""
    if isinstance(value, str) and _FLOAT.match(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [numbers_as_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: numbers_as_numbers(v) for k, v in value.items()}
    return value


def load_grid(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        grid = numbers_as_numbers(yaml.safe_load(path.read_text()))
    except FileNotFoundError:
        raise ConfigError(f"grid file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"grid file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(grid, dict):
        raise ConfigError(f"grid file {path} must be a mapping with keys {', '.join(REQUIRED)}")
    unknown = set(grid) - GRID_KEYS
    if unknown:
        raise ConfigError(f"grid file {path}: unknown key(s) {', '.join(sorted(unknown))}; "
                          f"allowed: {', '.join(sorted(GRID_KEYS))}")
    missing = [k for k in REQUIRED if k not in grid]
    if missing:
        raise ConfigError(f"grid file {path}: missing key(s) {', '.join(missing)}")
    for key in ("datasets", "epsilons", "seeds"):
        if not isinstance(grid[key], list) or not grid[key]:
            raise ConfigError(f"grid file {path}: `{key}` must be a non-empty list")
    if grid["methods"] != "all" and (not isinstance(grid["methods"], list) or not grid["methods"]):
        raise ConfigError(f"grid file {path}: `methods` must be a non-empty list or \"all\"")
    if not isinstance(grid.get("overrides") or {}, dict) or not isinstance(grid.get("settings") or {}, dict):
        raise ConfigError(f"grid file {path}: `overrides` and `settings` must be mappings")
    return grid


def expand(grid: dict[str, Any], data_root: str | None = None) -> list[dict[str, Any]]:
    """All cells of a grid as resolved configs (validated), in a stable order."""
    from .. import registry

    with registry.frozen():  # one look at the method files for the whole grid
        return _expand(grid, data_root)


def _expand(grid: dict[str, Any], data_root: str | None) -> list[dict[str, Any]]:
    from .. import registry

    methods_info = registry.discover()
    methods = sorted(methods_info) if grid["methods"] == "all" else list(grid["methods"])
    delta = grid.get("delta", DEFAULT_DELTA)
    for eps in grid["epsilons"]:
        check_budget(eps, delta)
    overrides = grid.get("overrides") or {}
    for key in overrides:
        base = key.split("@")[0]
        if base not in methods_info:
            raise ConfigError(f"overrides for unknown method {base!r}")
    cells, seen = [], set()
    for dataset in grid["datasets"]:
        for method in methods:
            if method not in methods_info:
                raise ConfigError(f"unknown method {method!r} in grid; known: {', '.join(sorted(methods_info))}")
            base = {**(overrides.get(method) or {}), **(overrides.get(f"{method}@{dataset}") or {})}
            for variant in (grid.get("variants") or {}).get(method) or [{}]:
                hp = {**base, **variant}
                try:
                    private = registry.load(method)(**hp).is_private()
                except ValueError as exc:
                    raise ConfigError(str(exc)) from None
                cells.extend(_cells(grid, method, dataset, hp, private, delta, data_root, seen))
    return cells


def _cells(grid, method, dataset, hp, private, delta, data_root, seen) -> list[dict]:
    """The cells of one (method, dataset, hyperparameters): every epsilon (or infinity) and seed."""
    cells = []
    for eps in (grid["epsilons"] if private else [None]):
        for seed in grid["seeds"]:
            key = (method, dataset, eps, seed, json.dumps(hp, sort_keys=True))
            if key in seen:
                continue
            seen.add(key)
            cfg = resolve(method, dataset, eps, seed, delta=delta, hparams=hp, settings=grid.get("settings"),
                          data_root=data_root or grid.get("data_root"))
            if grid.get("ablation"):  # tagged runs stay out of the leaderboards (the tag is not hashed)
                cfg["ablation"] = grid.get("name", "ablation") if grid["ablation"] is True else str(grid["ablation"])
            cells.append(cfg)
    return cells
