"""The paper's larger datasets: CIFAR-10/100, SVHN, CelebA (gender, hair colour), PathMNIST, an ImageNet subset.

Each reader parses the dataset's own on-disk format (the one torchvision / medmnist write) with
numpy, pickle, scipy and PIL only, and returns a ``RawData`` of uint8 images N x H x W x C and int64
labels. No file is trusted for its checksum here (``prepare-data`` verifies checksums once); a
missing file raises ``DataNotFound`` with one line saying what is missing and where it must go.

Splits follow the protocol: the dataset's training split (CelebA and PathMNIST: their official
train + validation splits) is the private data; the test split is divided once, with the project's
fixed seed, into the public pool (first ``public_size`` of the permutation) and eval (the rest).

Normalisation: every image is served in [0, 1]; no per-dataset mean/std is applied. The ResNets
map [0, 1] to [-1, 1] with a fixed, data-independent affine map, so normalisation costs no privacy
(the usual CIFAR channel means are statistics of the private training split).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import DataNotFound, DatasetSpec, RawData, data_cache, register

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")

# --------------------------------------------------------------------------- layouts on disk
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR10_TEST = ["test_batch"]
CIFAR100_DIR = "cifar-100-python"
SVHN_DIR = "svhn"
SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
CELEBA_DIR = "celeba"
CELEBA_IMAGES = "img_align_celeba"
CELEBA_ATTR = "list_attr_celeba.txt"
CELEBA_PARTITION = "list_eval_partition.txt"
#: CelebA-Hair classes, in label order (G-PATE, NeurIPS 2021; DataLens, CCS 2021: 3-class hair colour).
CELEBA_HAIR_ATTRS = ("Black_Hair", "Blond_Hair", "Brown_Hair")
MEDMNIST_DIR = "medmnist"
IMAGENET_DIR = "imagenet"
#: The ImageNet subset: the ten Imagenette classes (fast.ai, J. Howard 2019), in label order.
IMAGENET_SUBSET_CLASSES = (
    ("n01440764", "tench"), ("n02102040", "English springer"), ("n02979186", "cassette player"),
    ("n03000684", "chain saw"), ("n03028079", "church"), ("n03394916", "French horn"),
    ("n03417042", "garbage truck"), ("n03425413", "gas pump"), ("n03445777", "golf ball"),
    ("n03888605", "parachute"))
IMAGENET_SUBSET_SIZE = 64
CELEBA_SIZE = 64


def _missing(name: str, what: Path | str, where_hint: str) -> DataNotFound:
    return DataNotFound(f"{name}: missing {what}; {where_hint} "
                        f"(or run `python -m benchmark prepare-data {name}`; see docs/datasets.md)")


def _first_root_with(roots: list[Path], rel: str) -> Path | None:
    for root in roots:
        if (root / rel).exists():
            return root / rel
    return None


# --------------------------------------------------------------------------- CIFAR (python pickles)
class _CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches only: plain containers and numpy arrays, nothing callable."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch: a pickled dict with ``data`` (N x 3072 uint8, channel-major) and labels."""
    with open(path, "rb") as f:
        entry = _CifarUnpickler(f, encoding="latin1").load()
    data = np.asarray(entry["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' has shape {data.shape}, expected N x 3072")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if len(labels) != len(images):
        raise ValueError(f"{path}: {len(images)} images but {len(labels)} labels")
    return np.ascontiguousarray(images), labels


def read_cifar(directory: Path, variant: str = "cifar10") -> RawData:
    """CIFAR-10 (``data_batch_1..5``, ``test_batch``; key ``labels``) or CIFAR-100 (``train``, ``test``;
    key ``fine_labels``: the 100-class task)."""
    train_files, test_files, key = ((CIFAR10_TRAIN, CIFAR10_TEST, "labels") if variant == "cifar10"
                                    else (["train"], ["test"], "fine_labels"))
    parts = []
    for files in (train_files, test_files):
        xs, ys = zip(*(read_cifar_batch(directory / f, key) for f in files))
        parts += [np.concatenate(xs), np.concatenate(ys)]
    return RawData(*parts)


def _cifar_loader(variant: str) -> Callable[[list[Path]], RawData]:
    sub, files = ((CIFAR10_DIR, CIFAR10_TRAIN + CIFAR10_TEST) if variant == "cifar10"
                  else (CIFAR100_DIR, ["train", "test"]))

    def load(roots: list[Path]) -> RawData:
        for root in roots:
            if all((root / sub / f).exists() for f in files):
                return read_cifar(root / sub, variant)
        first = roots[0] / sub
        absent = next(f for f in files if not (first / f).exists())
        raise _missing(variant, first / absent, f"put the python-version batches under {first}/")
    return load


# --------------------------------------------------------------------------- SVHN (.mat)
def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """SVHN cropped digits (format 2): ``X`` is 32 x 32 x 3 x N uint8, ``y`` is N x 1 in 1..10 (10 = digit 0)."""
    from scipy.io import loadmat

    mat = loadmat(path)
    x = np.asarray(mat["X"], dtype=np.uint8)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise ValueError(f"{path}: 'X' has shape {x.shape}, expected 32 x 32 x 3 x N")
    y = np.asarray(mat["y"], dtype=np.int64).reshape(-1)
    if len(y) != x.shape[3]:
        raise ValueError(f"{path}: {x.shape[3]} images but {len(y)} labels")
    if y.size and (y.min() < 1 or y.max() > 10):
        raise ValueError(f"{path}: labels outside 1..10")
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), y % 10


def load_svhn(roots: list[Path]) -> RawData:
    for root in roots:
        for d in (root / SVHN_DIR, root):  # ours, or torchvision's SVHN(root=...) layout
            if all((d / f).exists() for f in SVHN_FILES.values()):
                return RawData(*read_svhn_mat(d / SVHN_FILES["train"]), *read_svhn_mat(d / SVHN_FILES["test"]))
    d = roots[0] / SVHN_DIR
    absent = next(f for f in SVHN_FILES.values() if not (d / f).exists())
    raise _missing("svhn", d / absent, f"put train_32x32.mat and test_32x32.mat under {d}/")


# --------------------------------------------------------------------------- image decoding and cache
def decode_image(path: Path, size: int, crop: str = "center-square") -> np.ndarray:
    """Decode one image to uint8 size x size x 3: centre square crop (side = shorter side), then
    resize with Lanczos (anti-aliased) filtering."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s)).resize((size, size), Image.LANCZOS)
        return np.asarray(img, dtype=np.uint8)


def _decode_chunk(args: tuple[list[Path], int]) -> np.ndarray:
    paths, size = args
    return np.stack([decode_image(p, size) for p in paths]) if paths else np.empty((0, size, size, 3), np.uint8)


def decode_workers() -> int:
    """Processes for JPEG decoding: ``$BENCHMARK_DECODE_WORKERS``, else up to 8 of the machine's cores."""
    env = os.environ.get("BENCHMARK_DECODE_WORKERS")
    return max(1, int(env)) if env else max(1, min(8, os.cpu_count() or 1))


def decode_images(paths: list[Path], size: int, chunk: int = 2000) -> np.ndarray:
    """Decode many images (in worker processes when there are more than ``chunk``; order is kept)."""
    workers = decode_workers()
    if workers == 1 or len(paths) <= chunk:
        return _decode_chunk((paths, size)).reshape(len(paths), size, size, 3)
    from concurrent.futures import ProcessPoolExecutor

    jobs = [(paths[i:i + chunk], size) for i in range(0, len(paths), chunk)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return np.concatenate(list(pool.map(_decode_chunk, jobs)))


def _processed_cache(name: str, fingerprint: dict, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Decoded arrays cached as ``<data cache>/processed/<name>-<hash>.npz`` (written atomically).

    The hash covers the source files' names, sizes and modification times and the decoding settings,
    so a changed source is decoded again. An unwritable cache only costs the decoding time."""
    key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
    path = data_cache() / "processed" / f"{name}-{key}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError):
            pass  # unreadable: rebuild below
    arrays = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.npz")
        os.close(fd)
        try:
            np.savez(tmp, **arrays)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass
    return arrays


def _stat(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, int(st.st_mtime)]


# --------------------------------------------------------------------------- CelebA (attributes + images)
def read_celeba_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """``list_attr_celeba.txt``: a count line, the 40 attribute names, then ``file v1 .. v40`` with +-1."""
    with open(path) as f:
        lines = f.read().splitlines()
    n = int(lines[0].strip())
    names = lines[1].split()
    files, values = [], []
    for line in lines[2:2 + n]:
        parts = line.split()
        if len(parts) != len(names) + 1:
            raise ValueError(f"{path}: line {line[:40]!r} has {len(parts) - 1} values, expected {len(names)}")
        files.append(parts[0])
        values.append([int(v) for v in parts[1:]])
    if len(files) != n:
        raise ValueError(f"{path}: header says {n} rows, found {len(files)}")
    return names, files, np.asarray(values, dtype=np.int8).reshape(n, len(names))


def read_celeba_partition(path: Path) -> dict[str, int]:
    """``list_eval_partition.txt``: ``file split`` with 0 = train, 1 = valid, 2 = test."""
    out = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if parts:
                out[parts[0]] = int(parts[1])
    return out


def celeba_labels(task: str, names: list[str], attrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keep mask, labels) for a CelebA task.

    - ``gender``: the ``Male`` attribute (0 = female, 1 = male); every image is kept.
    - ``hair``: 3-class hair colour as in G-PATE (Long et al., NeurIPS 2021) and DataLens (Wang et al.,
      CCS 2021): black / blond / brown, from the ``Black_Hair``, ``Blond_Hair``, ``Brown_Hair`` attributes;
      an image is kept only when exactly one of the three is set (no label is guessed).
    """
    if task == "gender":
        male = attrs[:, names.index("Male")] > 0
        return np.ones(len(attrs), dtype=bool), male.astype(np.int64)
    if task == "hair":
        onehot = np.stack([attrs[:, names.index(a)] > 0 for a in CELEBA_HAIR_ATTRS], axis=1)
        keep = onehot.sum(1) == 1
        return keep, onehot.argmax(1).astype(np.int64)
    raise ValueError(f"unknown CelebA task {task!r}")


def read_celeba(directory: Path, task: str, size: int = CELEBA_SIZE,
                private_partitions: tuple[int, ...] = (0, 1)) -> RawData:
    """CelebA in torchvision's layout (``img_align_celeba/``, ``list_attr_celeba.txt``,
    ``list_eval_partition.txt``). Private = official train + valid partitions (as G-PATE / DataLens
    train on both), test = the official test partition."""
    names, files, attrs = read_celeba_attributes(directory / CELEBA_ATTR)
    part = read_celeba_partition(directory / CELEBA_PARTITION)
    missing_part = [f for f in files if f not in part]
    if missing_part:
        raise ValueError(f"{directory / CELEBA_PARTITION}: no partition for {missing_part[0]}")
    keep, labels = celeba_labels(task, names, attrs)
    split = np.asarray([part[f] for f in files])
    img_dir = directory / CELEBA_IMAGES
    idx = np.flatnonzero(keep)
    for i in idx:
        if not (img_dir / files[i]).exists():
            raise _missing(f"celeba-{task}", img_dir / files[i], f"extract img_align_celeba.zip under {directory}/")

    def build() -> dict[str, np.ndarray]:
        return {"images": decode_images([img_dir / files[i] for i in idx], size)}

    fingerprint = {"attr": _stat(directory / CELEBA_ATTR), "part": _stat(directory / CELEBA_PARTITION),
                   "dir": str(img_dir.resolve()), "n": len(idx), "task": task, "size": size, "v": 1}
    images = _processed_cache(f"celeba-{task}-{size}", fingerprint, build)["images"]
    s = split[idx]
    train = np.isin(s, private_partitions)
    test = s == 2
    return RawData(images[train], labels[idx][train], images[test], labels[idx][test])


def _celeba_loader(task: str) -> Callable[[list[Path]], RawData]:
    def load(roots: list[Path]) -> RawData:
        need = [CELEBA_ATTR, CELEBA_PARTITION, CELEBA_IMAGES]
        for root in roots:
            if all((root / CELEBA_DIR / f).exists() for f in need):
                return read_celeba(root / CELEBA_DIR, task)
        d = roots[0] / CELEBA_DIR
        absent = next(f for f in need if not (d / f).exists())
        raise _missing(f"celeba-{task}", d / absent,
                       f"put {CELEBA_ATTR}, {CELEBA_PARTITION} and the extracted {CELEBA_IMAGES}/ under {d}/")
    return load


# --------------------------------------------------------------------------- MedMNIST (.npz)
def read_medmnist(path: Path, private_splits: tuple[str, ...] = ("train", "val")) -> RawData:
    """A MedMNIST ``<flag>[_<size>].npz``: ``{train,val,test}_images`` (N x H x W [x 3] uint8) and
    ``{train,val,test}_labels`` (N x 1). Read with numpy alone (the medmnist package is not needed)."""
    with np.load(path, allow_pickle=False) as z:
        def part(split):
            x = np.asarray(z[f"{split}_images"], dtype=np.uint8)
            y = np.asarray(z[f"{split}_labels"], dtype=np.int64)
            if y.ndim == 2 and y.shape[1] != 1:
                raise ValueError(f"{path}: multi-label '{split}_labels' {y.shape}; only single-label tasks are supported")
            y = y.reshape(-1)
            if len(y) != len(x):
                raise ValueError(f"{path}: {len(x)} {split} images but {len(y)} labels")
            return x, y
        train = [part(s) for s in private_splits]
        x_test, y_test = part("test")
    return RawData(np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]), x_test, y_test)


def _medmnist_loader(flag: str, size: int) -> Callable[[list[Path]], RawData]:
    fname = f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"

    def load(roots: list[Path]) -> RawData:
        for root in roots:
            for d in (root / MEDMNIST_DIR, root):
                if (d / fname).exists():
                    return read_medmnist(d / fname)
        d = roots[0] / MEDMNIST_DIR
        raise _missing(flag, d / fname, f"put {fname} (from the MedMNIST Zenodo record) under {d}/")
    return load


# --------------------------------------------------------------------------- ImageFolder (ImageNet subset)
def list_image_folder(split_dir: Path, classes: tuple[str, ...]) -> tuple[list[Path], np.ndarray]:
    """Files of ``split_dir/<class>/*`` for the given classes (label = position in ``classes``)."""
    paths, labels = [], []
    for label, cls in enumerate(classes):
        d = split_dir / cls
        if not d.is_dir():
            raise DataNotFound(f"missing class folder {d}")
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataNotFound(f"class folder {d} holds no images")
        paths += files
        labels += [label] * len(files)
    return paths, np.asarray(labels, dtype=np.int64)


def read_image_folder(root: Path, classes: tuple[str, ...], size: int, name: str = "imagefolder") -> RawData:
    """An ImageFolder root with ``train/<wnid>/`` and ``val/<wnid>/`` (torchvision's ImageNet layout,
    also the layout of imagenette2); images centre-cropped to a square and resized to ``size``."""
    tr_paths, tr_y = list_image_folder(root / "train", classes)
    te_paths, te_y = list_image_folder(root / "val", classes)
    fingerprint = {"root": str(root.resolve()), "size": size, "classes": list(classes), "v": 1,
                   "files": hashlib.sha256("\n".join(f"{p.relative_to(root)}:{p.stat().st_size}"
                                                     for p in tr_paths + te_paths).encode()).hexdigest()}
    arrays = _processed_cache(f"{name}-{size}", fingerprint,
                              lambda: {"train": decode_images(tr_paths, size), "test": decode_images(te_paths, size)})
    return RawData(arrays["train"], tr_y, arrays["test"], te_y)


def load_imagenet_subset(roots: list[Path]) -> RawData:
    wnids = tuple(w for w, _ in IMAGENET_SUBSET_CLASSES)
    for root in roots:
        d = root / IMAGENET_DIR
        if all((d / s / w).is_dir() for s in ("train", "val") for w in wnids):
            return read_image_folder(d, wnids, IMAGENET_SUBSET_SIZE, name="imagenet-subset")
    d = roots[0] / IMAGENET_DIR
    absent = next(d / s / w for s in ("train", "val") for w in wnids if not (d / s / w).is_dir())
    raise _missing("imagenet-subset", absent,
                   f"put ImageNet (or imagenette2) in ImageFolder layout under {d}/{{train,val}}/<wnid>/")


# --------------------------------------------------------------------------- registry entries
register(DatasetSpec(
    name="cifar10", num_classes=10, input_shape=(3, 32, 32), loader=_cifar_loader("cifar10"), public_size=5000,
    description="CIFAR-10 32x32: 50,000 train / 5,000 public / 5,000 eval",
    files=f"<data-root>/{CIFAR10_DIR}/ (data_batch_1..5, test_batch)"))

register(DatasetSpec(
    name="cifar100", num_classes=100, input_shape=(3, 32, 32), loader=_cifar_loader("cifar100"), public_size=5000,
    description="CIFAR-100 fine labels 32x32: 50,000 train / 5,000 public / 5,000 eval",
    files=f"<data-root>/{CIFAR100_DIR}/ (train, test)"))

register(DatasetSpec(
    name="svhn", num_classes=10, input_shape=(3, 32, 32), loader=load_svhn, public_size=5000,
    description="SVHN digits 32x32: 73,257 train / 5,000 public / 21,032 eval",
    files=f"<data-root>/{SVHN_DIR}/ (train_32x32.mat, test_32x32.mat)"))

register(DatasetSpec(
    name="celeba-gender", num_classes=2, input_shape=(3, CELEBA_SIZE, CELEBA_SIZE), loader=_celeba_loader("gender"),
    public_size=5000,
    description="CelebA Male attribute, 64x64: 182,637 train+valid / 5,000 public / 14,962 eval",
    files=f"<data-root>/{CELEBA_DIR}/ ({CELEBA_IMAGES}/, {CELEBA_ATTR}, {CELEBA_PARTITION})"))

register(DatasetSpec(
    name="celeba-hair", num_classes=3, input_shape=(3, CELEBA_SIZE, CELEBA_SIZE), loader=_celeba_loader("hair"),
    public_size=5000,
    description="CelebA black/blond/brown hair (G-PATE/DataLens), 64x64: train+valid / 5,000 public / rest",
    files=f"<data-root>/{CELEBA_DIR}/ ({CELEBA_IMAGES}/, {CELEBA_ATTR}, {CELEBA_PARTITION})"))

register(DatasetSpec(
    name="pathmnist", num_classes=9, input_shape=(3, 28, 28), loader=_medmnist_loader("pathmnist", 28),
    public_size=3590,
    description="MedMNIST PathMNIST 28x28: 100,000 train+val / 3,590 public / 3,590 eval",
    files=f"<data-root>/{MEDMNIST_DIR}/pathmnist.npz"))

register(DatasetSpec(
    name="imagenet-subset", num_classes=len(IMAGENET_SUBSET_CLASSES),
    input_shape=(3, IMAGENET_SUBSET_SIZE, IMAGENET_SUBSET_SIZE), loader=load_imagenet_subset, public_size=250,
    description="ImageNet, 10 Imagenette classes, 64x64: train / 250 public / rest of val",
    files=f"<data-root>/{IMAGENET_DIR}/{{train,val}}/<wnid>/ (ImageFolder)"))
