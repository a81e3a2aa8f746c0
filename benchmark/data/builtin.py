"""The datasets available offline: digits (scikit-learn), MNIST and Fashion-MNIST (idx files)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from . import DataNotFound, DatasetSpec, RawData, register

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (LeCun's format), plain or gzip-compressed."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an idx file of unsigned bytes")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">i4", count=ndim, offset=4)
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: {arr.size} bytes of {int(np.prod(dims))}")
    return arr.reshape(tuple(int(d) for d in dims))


def _find_idx_dir(roots: list[Path], subdirs: list[str]) -> Path | None:
    for root in roots:
        for sub in subdirs:
            d = root / sub if sub else root
            if all((d / f).exists() or (d / f"{f}.gz").exists() for f in IDX_FILES.values()):
                return d
    return None


def idx_loader(name: str, subdirs: list[str], how_to_get: str):
    def load(roots: list[Path]) -> RawData:
        d = _find_idx_dir(roots, subdirs)
        if d is None:
            looked = ", ".join(str(r / s if s else r) for r in roots for s in subdirs)
            raise DataNotFound(f"{name}: idx files ({', '.join(IDX_FILES.values())}, optionally .gz) not found; "
                               f"looked in: {looked}. {how_to_get}")
        parts = {}
        for key, fname in IDX_FILES.items():
            path = d / fname if (d / fname).exists() else d / f"{fname}.gz"
            parts[key] = read_idx(path)
        return RawData(**parts)
    return load


def load_digits(_roots: list[Path]) -> RawData:
    """scikit-learn's 8x8 digits (1,797 images, values 0..16), split once with a fixed seed:
    1,197 train (private) and 600 test (300 public pool / 300 eval by default)."""
    from sklearn.datasets import load_digits as sk_load
    from sklearn.model_selection import train_test_split

    d = sk_load()
    images = (d.images / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(images, d.target, test_size=600, random_state=0, stratify=d.target)
    return RawData(x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64))


register(DatasetSpec(
    name="digits", num_classes=10, input_shape=(1, 8, 8), loader=load_digits, public_size=300,
    description="scikit-learn 8x8 digits: 1,197 train / 300 public / 300 eval",
    files="embedded in scikit-learn"))

register(DatasetSpec(
    name="mnist", num_classes=10, input_shape=(1, 28, 28), public_size=5000,
    loader=idx_loader("mnist", ["MNIST/raw", "mnist", ""],
                      "Put the four MNIST idx files under <data-root>/MNIST/raw/ (or pass --data-root), "
                      "or run `python -m benchmark prepare-data mnist` where the network allows."),
    description="MNIST 28x28: 60,000 train / 5,000 public / 5,000 eval",
    files="<data-root>/MNIST/raw/*-ubyte[.gz]"))

register(DatasetSpec(
    name="fashion-mnist", num_classes=10, input_shape=(1, 28, 28), public_size=5000,
    loader=idx_loader("fashion-mnist", ["FashionMNIST/raw", "fashion-mnist", ""],
                      "On Debian/Ubuntu: `apt-get install dataset-fashion-mnist` "
                      "(files under /usr/share/datasets/fashion-mnist), or put them under "
                      "<data-root>/FashionMNIST/raw/."),
    description="Fashion-MNIST 28x28: 60,000 train / 5,000 public / 5,000 eval",
    files="<data-root>/FashionMNIST/raw/ or /usr/share/datasets/fashion-mnist/",
    system_roots=("/usr/share/datasets/fashion-mnist",)))
