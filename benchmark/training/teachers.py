"""The teacher cache: each (dataset, architecture, seed, recipe, tag) teacher is trained once;
and the feature cache (:func:`cached_features`) for fixed, privacy-free feature transforms.

Entries are ``state_dict`` files written atomically, with a SHA-256 checksum beside them;
a corrupt entry is detected and rebuilt. Loading uses ``torch.load(weights_only=True)``.
Two processes that want the same teacher at once serialise on a file lock: one trains,
the other waits and then loads.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..data import data_cache, sha256_file

log = logging.getLogger("benchmark")

#: Teacher recipe: Adam, cross-entropy, at least ``min_steps`` steps and ``min_epochs`` epochs.
TEACHER_RECIPE = {"optimizer": "adam", "lr": 1e-3, "batch_size": 64, "min_epochs": 2, "min_steps": 600}


def cache_dir() -> Path:
    return Path(os.environ.get("BENCHMARK_TEACHER_CACHE", data_cache() / "teachers"))


def teacher_key(**fields) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _atomic_save(state: dict, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        digest = sha256_file(Path(tmp))
        os.replace(tmp, path)
        sha_tmp = f"{tmp}.sha"
        Path(sha_tmp).write_text(digest + "\n")
        os.replace(sha_tmp, path.with_suffix(".sha256"))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load_verified(path: Path, model: nn.Module) -> bool:
    sha = path.with_suffix(".sha256")
    if not path.exists() or not sha.exists():
        return False
    if sha256_file(path) != sha.read_text().strip():
        log.warning("teacher cache entry %s fails its checksum; rebuilding it", path)
        return False
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # noqa: BLE001 - any unreadable entry is rebuilt
        log.warning("teacher cache entry %s is unreadable (%s); rebuilding it", path, exc)
        return False
    return True


def cached_model(key_fields: dict, build: Callable[[], nn.Module], train: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """Load the model for ``key_fields`` from the cache, or build, train and store it (under a lock)."""
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    key = teacher_key(**key_fields)
    path = directory / f"{key}.pt"
    model = build()
    if _load_verified(path, model):
        return model.eval()
    with open(directory / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _load_verified(path, model):  # another process trained it while we waited
                return model.eval()
            log.info("training %s (cache key %s)", key_fields.get("tag", "teacher"), key)
            model = train(build())
            _atomic_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
            (directory / f"{key}.json").write_text(json.dumps(key_fields, sort_keys=True, default=str, indent=1))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return model.eval()


def source_digest(module) -> str:
    """A digest of a module's source file: part of a feature cache key, so editing the transform's
    code invalidates its cached features."""
    return hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()[:16]


def cached_features(kind: str, params: dict, images: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor],
                    ) -> torch.Tensor:
    """Privacy-free features of ``images`` (a fixed, data-independent transform such as HOG or the
    scattering transform), computed once per (kind, params, images) and cached like teachers: keyed
    by a digest of the images' bytes, written atomically with a checksum, shared between cells (the
    epsilon-1 and epsilon-10 cells of a dataset compute them once)."""
    x = images.detach().cpu().contiguous()
    digest = hashlib.sha256(x.numpy().tobytes()).hexdigest()[:20]
    key = {"kind": "features", "features": kind, "params": params, "data": digest, "shape": list(x.shape)}
    return cached_model(key, _TensorHolder, lambda holder: holder.set(compute(x))).value


class _TensorHolder(nn.Module):
    """One tensor of any shape as a module, so that :func:`cached_model` stores and verifies it."""

    def __init__(self):
        super().__init__()
        self.value: torch.Tensor | None = None

    def set(self, value: torch.Tensor) -> _TensorHolder:
        self.value = value.detach().cpu().contiguous()
        return self

    def state_dict(self, *args, **kwargs):  # noqa: D102 - a one-tensor state
        return {"value": self.value}

    def load_state_dict(self, state, strict=True, assign=False):  # noqa: D102
        self.value = state["value"]
