"""Datasets: a registry of dataset specs and the protocol's splits (protocol section 2).

Every dataset yields three parts:
- ``private``: the dataset's training split (images and labels): the private data and
  the teacher's training data;
- ``public``: unlabeled images, the first ``public_size`` images of a fixed, seeded
  permutation of the dataset's test split (the "public pool");
- ``eval``: the rest of the test split; every method is scored on it and nothing trains on it.

Images are float tensors N x C x H x W in [0, 1]; labels are int64.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SPLIT_SEED = 0


from ..errors import DataNotFound  # noqa: E402,F401  (re-exported: raised by the loaders)


@dataclass
class RawData:
    train_images: np.ndarray  # N x H x W (grey) or N x H x W x C, uint8 (0..255) or float in [0, 1]
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


@dataclass
class DatasetSpec:
    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    loader: Callable[[list[Path]], RawData]  # given the candidate roots, in search order
    public_size: int
    description: str = ""
    files: str = ""  # where the files are expected, for `list` and error messages
    system_roots: tuple[str, ...] = ()  # extra places searched after the project cache


@dataclass
class DatasetSplits:
    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    private: TensorDataset
    public: TensorDataset  # images only (one-tuples)
    eval: TensorDataset
    public_labels: torch.Tensor = field(repr=False)  # for the auditor only; never given to a method


REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    if spec.name in REGISTRY:
        raise ValueError(f"dataset {spec.name!r} registered twice")
    REGISTRY[spec.name] = spec
    return spec


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (dataset checksums, the teacher cache)."""
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_cache() -> Path:
    """The project's data cache (``$BENCHMARK_DATA_CACHE`` or ``datasets/cache``)."""
    return Path(os.environ.get("BENCHMARK_DATA_CACHE", PROJECT_ROOT / "datasets" / "cache"))


def search_roots(spec: DatasetSpec, data_root: str | Path | None) -> list[Path]:
    """Search order: explicit --data-root (or $BENCHMARK_DATA_ROOT), the project cache, system folders."""
    roots = []
    explicit = data_root or os.environ.get("BENCHMARK_DATA_ROOT")
    if explicit:
        roots.append(Path(explicit))
    roots.append(data_cache())
    roots.extend(Path(p) for p in spec.system_roots)
    return roots


def _to_tensor(images: np.ndarray, shape: tuple[int, int, int]) -> torch.Tensor:
    arr = np.asarray(images)
    scale = 255.0 if arr.dtype == np.uint8 else 1.0
    x = torch.from_numpy(arr.astype(np.float32) / scale)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    elif x.ndim == 4 and x.shape[-1] == shape[0] and x.shape[1] != shape[0]:
        x = x.permute(0, 3, 1, 2)
    return x.contiguous().clamp_(0, 1)


_MEMO: dict[tuple, DatasetSplits] = {}


def get_dataset(name: str, data_root: str | Path | None = None, public_size: int | None = None) -> DatasetSplits:
    """Load a dataset and split it as the protocol says (memoised per process)."""
    _ensure_registered()
    if name not in REGISTRY:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(REGISTRY))}")
    spec = REGISTRY[name]
    key = (name, str(data_root), public_size)
    if key in _MEMO:
        return _MEMO[key]
    raw = spec.loader(search_roots(spec, data_root))
    x_train = _to_tensor(raw.train_images, spec.input_shape)
    x_test = _to_tensor(raw.test_images, spec.input_shape)
    y_train = torch.as_tensor(np.array(raw.train_labels), dtype=torch.long)  # a copy: mmap arrays are read-only
    y_test = torch.as_tensor(np.array(raw.test_labels), dtype=torch.long)
    if tuple(x_train.shape[1:]) != tuple(spec.input_shape):
        raise ValueError(f"dataset {name}: images have shape {tuple(x_train.shape[1:])}, expected {spec.input_shape}")
    n_public = spec.public_size if public_size is None else int(public_size)
    if not 0 < n_public < len(x_test):
        raise ValueError(f"dataset {name}: public_size must be in (0, {len(x_test)}), got {n_public}")
    perm = torch.from_numpy(np.random.RandomState(SPLIT_SEED).permutation(len(x_test)))
    pub, ev = perm[:n_public], perm[n_public:]
    splits = DatasetSplits(
        name=name, num_classes=spec.num_classes, input_shape=spec.input_shape,
        private=TensorDataset(x_train, y_train), public=TensorDataset(x_test[pub]),
        eval=TensorDataset(x_test[ev], y_test[ev]), public_labels=y_test[pub])
    _MEMO[key] = splits
    return splits


def _ensure_registered() -> None:
    from . import builtin  # noqa: F401  (registers digits, mnist, fashion-mnist)
    try:
        from . import vision  # noqa: F401  (CIFAR, SVHN, CelebA, MedMNIST, ImageNet subset)
    except ImportError as exc:  # pragma: no cover - only while vision.py is absent
        if "vision" not in str(exc):
            raise


def list_datasets() -> list[DatasetSpec]:
    _ensure_registered()
    return [REGISTRY[k] for k in sorted(REGISTRY)]
