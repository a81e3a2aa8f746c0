"""``prepare-data NAME``: fetch a dataset into the data root, or verify the files a user put there.

For each dataset a manifest lists the *targets* (the files the loader reads, with their MD5 where the
upstream publishes one) and the *sources* that produce them (an archive or a plain file, with its URL
and MD5). ``prepare`` first verifies the targets; for those missing or failing their checksum it takes
each needed source from, in order: a file of that name already under the data root (or in a local
directory given with ``--from``), or a download. Every source is downloaded and unpacked inside a
temporary directory under the data root, checked, and only then renamed into place target by
target, so an interrupted or failed run never leaves a half-written target. Offline (or with
``--no-download``) a missing file gives one line naming the file and where it must go.

Checksums are the ones torchvision and medmnist ship for the same files; MNIST's are the
well-known MD5s of the uncompressed idx files.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import PROJECT_ROOT, DataNotFound, data_cache, sha256_file
from . import vision as V


class ChecksumError(DataNotFound):
    """A file is present but its checksum does not match the published one."""


@dataclass(frozen=True)
class Source:
    """A downloadable file. ``kind``: ``file`` (is itself the target ``provides[0]``), ``gunzip``
    (decompresses to ``provides[0]``), ``tar`` or ``zip`` (unpacked into ``into``)."""
    filename: str
    md5: str | None
    provides: tuple[str, ...]
    kind: str = "file"
    urls: tuple[str, ...] = ()
    gdrive_id: str | None = None
    into: str = ""


@dataclass(frozen=True)
class Manifest:
    name: str
    targets: dict[str, str | None]          # path under the root -> MD5 (None: checked by ``validate``)
    sources: tuple[Source, ...]
    where: str                              # the folder under the root, for messages
    validate: Callable[[Path, str], str | None] | None = None  # (root, target) -> problem or None
    local_dirs: tuple[str, ...] = ()        # extra folders searched for source files (e.g. Debian's)
    note: str = ""
    aliases: tuple[str, ...] = field(default=())


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- validators
def _idx_ok(root: Path, target: str) -> str | None:
    p = root / target
    with open(p, "rb") as f:
        head = f.read(4)
    return None if len(head) == 4 and head[:3] == b"\x00\x00\x08" else f"{p} is not an idx file"


CELEBA_N_IMAGES = 202_599


def _celeba_images_ok(root: Path, target: str) -> str | None:
    d = root / target
    n = sum(1 for p in d.iterdir() if p.suffix.lower() == ".jpg")
    return None if n == CELEBA_N_IMAGES else f"{d} holds {n} .jpg images, expected {CELEBA_N_IMAGES:,}"


def _imagenet_manifest_path() -> Path:
    return data_cache() / "manifests" / "imagenet-subset.json"


def _imagenet_ok(root: Path, target: str) -> str | None:
    """Each class folder must hold images; the first successful check records a SHA-256 manifest of
    every file (ImageNet has no published per-file checksums) and later checks verify against it."""
    d = root / target
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in V.IMAGE_EXTENSIONS)
    if not files:
        return f"{d} holds no images"
    manifest_path = _imagenet_manifest_path()
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    key = str(d.resolve())
    current = {p.name: sha256_file(p) for p in files}
    if key in manifest:
        bad = sorted(n for n, h in manifest[key].items() if current.get(n) != h)
        if bad:
            return f"{d / bad[0]} changed since it was first verified ({len(bad)} file(s); manifest {manifest_path})"
        return None
    manifest[key] = current
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(manifest_path, json.dumps(manifest, sort_keys=True))
    return None


# --------------------------------------------------------------------------- manifests
_TORONTO = "https://www.cs.toronto.edu/~kriz/"
_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FMNIST_MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_MNIST_MD5 = ("6bbc9ace898e44ae57da46a324031adb", "a25bea736e30d166cdddb491f175f624",
              "2646ac647ad5339dbf082846283269ea", "27ae3e4e09519cfbb04c329615203637")
_MNIST_GZ_MD5 = ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                 "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")
_FMNIST_GZ_MD5 = ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                  "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310")
_CIFAR10_MD5 = {"data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
                "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
                "batches.meta": "5ff9c542aee3614f3951f8cda6e48888"}
_CIFAR100_MD5 = {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
                 "meta": "7973b15100ade9c7d40fb424638fde48"}
_CELEBA = V.CELEBA_DIR


def _build_manifests() -> dict[str, Manifest]:
    m: dict[str, Manifest] = {}
    mnist_raw, fmnist_raw = "MNIST/raw", "FashionMNIST/raw"
    m["mnist"] = Manifest(
        "mnist", {f"{mnist_raw}/{f}": md5 for f, md5 in zip(_IDX, _MNIST_MD5)},
        tuple(Source(f"{f}.gz", gz, (f"{mnist_raw}/{f}",), "gunzip", tuple(u + f"{f}.gz" for u in _MNIST_MIRRORS))
              for f, gz in zip(_IDX, _MNIST_GZ_MD5)),
        where=mnist_raw, local_dirs=(str(PROJECT_ROOT.parent / "shared" / "data" / "MNIST" / "raw"),))
    m["fashion-mnist"] = Manifest(
        "fashion-mnist", {f"{fmnist_raw}/{f}": None for f in _IDX},
        tuple(Source(f"{f}.gz", gz, (f"{fmnist_raw}/{f}",), "gunzip", (_FMNIST_MIRROR + f"{f}.gz",))
              for f, gz in zip(_IDX, _FMNIST_GZ_MD5)),
        where=fmnist_raw, validate=_idx_ok, local_dirs=("/usr/share/datasets/fashion-mnist",),
        note="Debian: apt-get install dataset-fashion-mnist")
    m["cifar10"] = Manifest(
        "cifar10", {f"{V.CIFAR10_DIR}/{f}": md5 for f, md5 in _CIFAR10_MD5.items()},
        (Source("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                tuple(f"{V.CIFAR10_DIR}/{f}" for f in _CIFAR10_MD5), "tar", (_TORONTO + "cifar-10-python.tar.gz",)),),
        where=V.CIFAR10_DIR)
    m["cifar100"] = Manifest(
        "cifar100", {f"{V.CIFAR100_DIR}/{f}": md5 for f, md5 in _CIFAR100_MD5.items()},
        (Source("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                tuple(f"{V.CIFAR100_DIR}/{f}" for f in _CIFAR100_MD5), "tar", (_TORONTO + "cifar-100-python.tar.gz",)),),
        where=V.CIFAR100_DIR)
    svhn_md5 = {"train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373", "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3"}
    m["svhn"] = Manifest(
        "svhn", {f"{V.SVHN_DIR}/{f}": md5 for f, md5 in svhn_md5.items()},
        tuple(Source(f, md5, (f"{V.SVHN_DIR}/{f}",), "file", (f"http://ufldl.stanford.edu/housenumbers/{f}",))
              for f, md5 in svhn_md5.items()),
        where=V.SVHN_DIR)
    celeba = Manifest(
        "celeba", {f"{_CELEBA}/{V.CELEBA_ATTR}": "75e246fa4810816ffd6ee81facbd244c",
                   f"{_CELEBA}/{V.CELEBA_PARTITION}": "d32c9cbf5e040fd4025c592c306e6668",
                   f"{_CELEBA}/{V.CELEBA_IMAGES}": None},
        (Source("img_align_celeba.zip", "00d2c5bc6d35e252742224ab0c1e8fcb", (f"{_CELEBA}/{V.CELEBA_IMAGES}",), "zip",
                gdrive_id="0B7EVK8r0v71pZjFTYXZWM3FlRnM", into=_CELEBA),
         Source(V.CELEBA_ATTR, "75e246fa4810816ffd6ee81facbd244c", (f"{_CELEBA}/{V.CELEBA_ATTR}",),
                gdrive_id="0B7EVK8r0v71pblRyaVFSWGxPY0U"),
         Source(V.CELEBA_PARTITION, "d32c9cbf5e040fd4025c592c306e6668", (f"{_CELEBA}/{V.CELEBA_PARTITION}",),
                gdrive_id="0B7EVK8r0v71pY0NSMzRuSXJEVkk")),
        where=_CELEBA, validate=_celeba_images_ok, note="Google Drive downloads need `pip install gdown`",
        aliases=("celeba-gender", "celeba-hair"))
    m["celeba"] = celeba
    m["pathmnist"] = Manifest(
        "pathmnist", {f"{V.MEDMNIST_DIR}/pathmnist.npz": "a8b06965200029087d5bd730944a56c1"},
        (Source("pathmnist.npz", "a8b06965200029087d5bd730944a56c1", (f"{V.MEDMNIST_DIR}/pathmnist.npz",), "file",
                ("https://zenodo.org/records/10519652/files/pathmnist.npz?download=1",)),),
        where=V.MEDMNIST_DIR)
    m["imagenet-subset"] = Manifest(
        "imagenet-subset",
        {f"{V.IMAGENET_DIR}/{s}/{w}": None for s in ("train", "val") for w, _ in V.IMAGENET_SUBSET_CLASSES},
        (), where=V.IMAGENET_DIR, validate=_imagenet_ok,
        note="no download (ImageNet's licence): use ImageFolder train/ and val/ folders, e.g. imagenette2")
    return m


MANIFESTS = _build_manifests()


def manifest_for(name: str) -> Manifest:
    for m in MANIFESTS.values():
        if name == m.name or name in m.aliases:
            return m
    raise KeyError(f"unknown dataset {name!r} for prepare-data; known: "
                   f"{', '.join(sorted(set(MANIFESTS) | {a for m in MANIFESTS.values() for a in m.aliases}))}")


# --------------------------------------------------------------------------- checking
def check_target(m: Manifest, root: Path, target: str) -> str | None:
    """None when ``root/target`` is present and passes its check, else the problem in words."""
    p = root / target
    if not p.exists():
        return "missing"
    md5 = m.targets[target]
    if md5 is not None:
        got = md5sum(p)
        return None if got == md5 else f"checksum mismatch (md5 {got}, expected {md5})"
    return m.validate(root, target) if m.validate else None


def verify(m: Manifest, root: Path) -> dict[str, str]:
    """Targets that fail, with their problem."""
    return {t: why for t in m.targets if (why := check_target(m, root, t)) is not None}


# --------------------------------------------------------------------------- fetching
def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _download(url: str, dest: Path, timeout: float) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": "dpsd-bench prepare-data"})
    with urllib.request.urlopen(req, timeout=timeout) as resp, open(dest, "wb") as out:
        shutil.copyfileobj(resp, out, 1 << 20)


def _fetch_source(src: Source, m: Manifest, root: Path, tmp: Path, local_dirs: list[Path],
                  download: bool, timeout: float) -> Path:
    """A verified copy of ``src`` inside ``tmp`` (or a verified file already under the root)."""
    for d in [root, root / m.where, *local_dirs]:
        cand = d / src.filename
        if cand.is_file():
            if src.md5 is None or md5sum(cand) == src.md5:
                return cand
            # A placed archive whose MD5 differs (e.g. recompressed) is still usable when every target
            # it provides carries its own published checksum: those decide after unpacking.
            if all(m.targets.get(t) for t in src.provides):
                return cand
            raise ChecksumError(f"{m.name}: {cand} fails its checksum (md5 {md5sum(cand)}, expected {src.md5})")
    if not download:
        raise DataNotFound("no download (offline: BENCHMARK_OFFLINE or --no-download)")
    dest = tmp / src.filename
    errors = []
    if src.gdrive_id:
        try:
            from torchvision.datasets.utils import download_file_from_google_drive
            download_file_from_google_drive(src.gdrive_id, str(tmp), src.filename, src.md5)
            return dest
        except Exception as exc:  # noqa: BLE001 - any failure becomes the one-line message
            errors.append(f"Google Drive: {type(exc).__name__}: {exc}")
    for url in src.urls:
        try:
            _download(url, dest, timeout)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{url}: {type(exc).__name__}: {getattr(exc, 'reason', exc)}")
            dest.unlink(missing_ok=True)
            continue
        if src.md5 and md5sum(dest) != src.md5:
            errors.append(f"{url}: checksum mismatch")
            dest.unlink()
            continue
        return dest
    raise DataNotFound("download failed (" + "; ".join(errors or ["no download source"]) + ")")


def _unpack(src: Source, archive: Path, stage: Path) -> None:
    if src.kind == "file":
        out = stage / src.provides[0]
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(archive, out)
    elif src.kind == "gunzip":
        out = stage / src.provides[0]
        out.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(archive, "rb") as f, open(out, "wb") as g:
            shutil.copyfileobj(f, g, 1 << 20)
    elif src.kind == "tar":
        dest = stage / src.into
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    elif src.kind == "zip":
        dest = stage / src.into
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():  # refuse absolute paths and '..' (zip slip)
                if info.filename.startswith("/") or ".." in Path(info.filename).parts:
                    raise ValueError(f"{archive}: unsafe member {info.filename!r}")
            z.extractall(dest)
    else:
        raise ValueError(f"unknown source kind {src.kind!r}")


def _install(stage: Path, root: Path, target: str, trash: Path) -> None:
    """Rename ``stage/target`` over ``root/target``; a previous (failing) copy is moved aside first."""
    final = root / target
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() or final.is_symlink():
        os.replace(final, trash / f"old-{len(list(trash.iterdir()))}")
    os.replace(stage / target, final)


def default_root(data_root: str | Path | None = None) -> Path:
    return Path(data_root or os.environ.get("BENCHMARK_DATA_ROOT") or data_cache())


def prepare(name: str, data_root: str | Path | None = None, *, download: bool | None = None,
            from_dir: str | Path | None = None, timeout: float = 60.0, log: Callable[[str], None] = print) -> Path:
    """Make ``name``'s files present and verified under the data root; returns the root.

    Raises ``DataNotFound`` (one-line message) when a file cannot be had, ``ChecksumError`` when a
    present file is corrupt and no good copy can be had, ``KeyError`` for an unknown dataset."""
    root = default_root(data_root)
    if name == "digits":
        log("digits ships with scikit-learn: nothing to prepare")
        return root
    m = manifest_for(name)
    if download is None:
        download = os.environ.get("BENCHMARK_OFFLINE", "") not in ("1", "true", "yes")
    failing = verify(m, root)
    if not failing:
        log(f"{name}: all {len(m.targets)} files present and verified under {root / m.where}")
        return root
    needed = [s for s in m.sources if any(t in failing for t in s.provides)]
    uncovered = [t for t in failing if not any(t in s.provides for s in m.sources)]
    if uncovered:
        t = uncovered[0]
        raise DataNotFound(f"{name}: {failing[t]}: {root / t}; put it there ({m.note}); see docs/datasets.md")
    root.mkdir(parents=True, exist_ok=True)
    local_dirs = [Path(from_dir)] if from_dir else []
    local_dirs += [Path(d) for d in m.local_dirs]
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".prepare-{m.name}-"))
    try:
        stage, trash = tmp / "stage", tmp / "trash"
        stage.mkdir()
        trash.mkdir()
        for src in needed:
            try:
                archive = _fetch_source(src, m, root, tmp, local_dirs, download, timeout)
            except ChecksumError:
                raise
            except DataNotFound as exc:
                t = next(t for t in src.provides if t in failing)
                more = sum(1 for x in failing if x != t)
                raise DataNotFound(
                    f"{name}: {failing[t]}: {root / t}" + (f" (and {more} more)" if more else "")
                    + f"; {exc}; put {src.filename}" + (f" (md5 {src.md5})" if src.md5 else "")
                    + f" under {root}, or the unpacked files under {root / m.where}"
                    + (f" ({m.note})" if m.note else "") + "; see docs/datasets.md") from None
            log(f"{name}: unpacking {src.filename}")
            _unpack(src, archive, stage)
            if archive.parent == tmp:
                archive.unlink()  # free the space before the next source
        # every failing target must now be good in the stage, or nothing is installed
        for t in failing:
            why = check_target(m, stage, t)
            if why is not None:
                raise ChecksumError(f"{name}: {t} from the fetched sources is bad: {why}")
        for t in failing:
            _install(stage, root, t, trash)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"{name}: prepared and verified under {root / m.where}")
    return root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="prepare-data", description=__doc__.split("\n\n")[0])
    ap.add_argument("name")
    ap.add_argument("--data-root", default=None, help="where datasets live (default: $BENCHMARK_DATA_ROOT or the data cache)")
    ap.add_argument("--from", dest="from_dir", default=None, help="a local folder holding the source files to use")
    ap.add_argument("--no-download", action="store_true", help="verify and unpack local files only")
    args = ap.parse_args(argv)
    try:
        prepare(args.name, args.data_root, download=False if args.no_download else None, from_dir=args.from_dir,
                log=lambda s: print(s, file=sys.stderr))
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    except (DataNotFound, OSError, ValueError) as exc:
        print(f"error: {exc}".replace("\n", " "), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
