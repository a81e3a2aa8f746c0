"""The paper's datasets, read from tiny files written here in each real on-disk format
(CIFAR python pickles, SVHN .mat, CelebA attribute/partition files + JPEG folder, MedMNIST .npz,
ImageFolder), through the real loaders and the protocol's splits; and ``prepare-data``'s
checksums, offline failure and all-or-nothing installs."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.data import DataNotFound, get_dataset
from benchmark.data import prepare as P
from benchmark.data import vision as V

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.RandomState(0)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Processed-image caches and manifests go to a per-test folder; nothing comes from the real roots."""
    monkeypatch.setenv("BENCHMARK_DATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BENCHMARK_DATA_ROOT", raising=False)


# --------------------------------------------------------------------------- writers of the real formats
def write_cifar10(root: Path, n_train_per_batch: int = 6, n_test: int = 12) -> dict:
    d = root / V.CIFAR10_DIR
    d.mkdir(parents=True)
    out = {"train": [], "test": None}
    for i in range(1, 6):
        data = RNG.randint(0, 256, (n_train_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in RNG.randint(0, 10, n_train_per_batch)]
        with open(d / f"data_batch_{i}", "wb") as f:
            pickle.dump({"batch_label": f"training batch {i} of 5", "data": data, "labels": labels,
                         "filenames": [f"img{i}_{k}.png" for k in range(n_train_per_batch)]}, f, protocol=2)
        out["train"].append((data, labels))
    data = RNG.randint(0, 256, (n_test, 3072), dtype=np.uint8)
    labels = [k % 10 for k in range(n_test)]
    with open(d / "test_batch", "wb") as f:
        pickle.dump({"batch_label": "testing batch 1 of 1", "data": data, "labels": labels}, f, protocol=2)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{k}" for k in range(10)], "num_cases_per_batch": n_train_per_batch}, f)
    out["test"] = (data, labels)
    return out


def write_cifar100(root: Path, n_train: int = 20, n_test: int = 10) -> None:
    d = root / V.CIFAR100_DIR
    d.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        fine = [int(v) for v in RNG.randint(0, 100, n)]
        fine[0] = 99
        with open(d / split, "wb") as f:
            pickle.dump({"data": RNG.randint(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": fine,
                         "coarse_labels": [v // 5 for v in fine]}, f, protocol=2)


def write_svhn(root: Path, n_train: int = 15, n_test: int = 9) -> None:
    from scipy.io import savemat

    d = root / V.SVHN_DIR
    d.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)  # 1..10, 10 = digit 0
        savemat(d / f"{split}_32x32.mat", {"X": RNG.randint(0, 256, (32, 32, 3, n), dtype=np.uint8), "y": y})


CELEBA_ATTR_NAMES = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
                     "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
                     "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
                     "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
                     "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()


def write_celeba(root: Path, n: int = 24) -> dict:
    """``n`` aligned-face JPEGs (small, 18x22 like CelebA's 178x218 aspect), the attribute file with the
    real 40 names and spacing, and the partition file (0 train, 1 valid, 2 test)."""
    from PIL import Image

    d = root / V.CELEBA_DIR
    (d / V.CELEBA_IMAGES).mkdir(parents=True)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    attrs = np.where(RNG.rand(n, 40) < 0.5, 1, -1)
    hair = [CELEBA_ATTR_NAMES.index(a) for a in V.CELEBA_HAIR_ATTRS]
    for i in range(n):  # a known hair pattern: exactly one colour, except every 4th image (none or two)
        attrs[i, hair] = -1
        if i % 4 == 3:
            if i % 8 == 7:
                attrs[i, hair[0]] = attrs[i, hair[2]] = 1
        else:
            attrs[i, hair[i % 3]] = 1
    partition = [0 if i < n // 2 else (1 if i < 2 * n // 3 else 2) for i in range(n)]
    with open(d / V.CELEBA_ATTR, "w") as f:
        f.write(f"{n}\n" + " ".join(CELEBA_ATTR_NAMES) + " \n")
        for name, row in zip(names, attrs):
            f.write(name + " " + " ".join(f"{v:2d}" for v in row) + "\n")
    with open(d / V.CELEBA_PARTITION, "w") as f:
        for name, p in zip(names, partition):
            f.write(f"{name} {p}\n")
    for name in names:
        Image.fromarray(RNG.randint(0, 256, (22, 18, 3), dtype=np.uint8)).save(d / V.CELEBA_IMAGES / name, quality=90)
    return {"attrs": attrs, "partition": np.asarray(partition)}


def write_medmnist(root: Path, n=(14, 4, 10)) -> Path:
    d = root / V.MEDMNIST_DIR
    d.mkdir(parents=True)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = RNG.randint(0, 256, (k, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(k) % 9).reshape(k, 1).astype(np.uint8)
    np.savez_compressed(d / "pathmnist.npz", **arrays)
    return d / "pathmnist.npz"


def write_image_folder(root: Path, n_train: int = 2, n_val: int = 1) -> None:
    from PIL import Image

    for split, k in (("train", n_train), ("val", n_val)):
        for wnid, _ in V.IMAGENET_SUBSET_CLASSES:
            d = root / V.IMAGENET_DIR / split / wnid
            d.mkdir(parents=True)
            for j in range(k):
                Image.fromarray(RNG.randint(0, 256, (30, 40, 3), dtype=np.uint8)).save(d / f"{wnid}_{j}.JPEG")
    # a non-subset class must be ignored
    (root / V.IMAGENET_DIR / "train" / "n99999999").mkdir()


# --------------------------------------------------------------------------- readers through get_dataset
def _check_splits(s, n_private: int, n_public: int, n_eval: int, shape, num_classes: int):
    assert s.input_shape == shape and s.num_classes == num_classes
    assert len(s.private) == n_private and len(s.public) == n_public and len(s.eval) == n_eval
    x, y = s.private.tensors
    assert tuple(x.shape[1:]) == shape and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert y.dtype == torch.long and 0 <= int(y.min()) and int(y.max()) < num_classes
    assert len(s.public.tensors) == 1  # images only
    assert 0 <= int(s.eval.tensors[1].min()) and int(s.eval.tensors[1].max()) < num_classes


def test_cifar10_pickle_batches(tmp_path):
    written = write_cifar10(tmp_path)
    s = get_dataset("cifar10", data_root=tmp_path, public_size=5)
    _check_splits(s, 30, 5, 7, (3, 32, 32), 10)
    # channel-major rows become the right pixels and labels keep batch order
    data, labels = written["train"][0]
    x, y = s.private.tensors
    assert torch.equal(y[:6], torch.tensor(labels))
    expected = torch.from_numpy(data[1].reshape(3, 32, 32).astype(np.float32) / 255)
    assert torch.allclose(x[1], expected)
    # the public pool and eval partition the test split, disjointly
    test = torch.from_numpy(written["test"][0].reshape(-1, 3, 32, 32).astype(np.float32) / 255)
    got = torch.cat([s.public.tensors[0], s.eval.tensors[0]])
    assert sorted(got.flatten(1).sum(1).tolist()) == pytest.approx(sorted(test.flatten(1).sum(1).tolist()))


def test_cifar100_fine_labels(tmp_path):
    write_cifar100(tmp_path)
    s = get_dataset("cifar100", data_root=tmp_path, public_size=4)
    _check_splits(s, 20, 4, 6, (3, 32, 32), 100)
    assert int(s.private.tensors[1][0]) == 99


def test_svhn_mat_label_ten_is_zero(tmp_path):
    write_svhn(tmp_path)
    raw = V.read_svhn_mat(tmp_path / V.SVHN_DIR / "train_32x32.mat")
    assert raw[0].shape == (15, 32, 32, 3) and raw[1].tolist()[:10] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    s = get_dataset("svhn", data_root=tmp_path, public_size=3)
    _check_splits(s, 15, 3, 6, (3, 32, 32), 10)


def test_celeba_gender_and_hair(tmp_path):
    meta = write_celeba(tmp_path)
    male = meta["attrs"][:, CELEBA_ATTR_NAMES.index("Male")] > 0
    private = meta["partition"] < 2
    g = get_dataset("celeba-gender", data_root=tmp_path, public_size=3)
    _check_splits(g, int(private.sum()), 3, int((~private).sum()) - 3, (3, 64, 64), 2)
    assert g.private.tensors[1].tolist() == male[private].astype(int).tolist()

    h = get_dataset("celeba-hair", data_root=tmp_path, public_size=2)
    keep = np.array([i % 4 != 3 for i in range(24)])
    expected = np.array([i % 3 for i in range(24)])  # black, blond, brown in turn
    assert h.private.tensors[1].tolist() == expected[keep & private].tolist()
    _check_splits(h, int((keep & private).sum()), 2, int((keep & ~private).sum()) - 2, (3, 64, 64), 3)
    # the decoded images were cached; a second read (fresh process memo) gives identical pixels
    cache = list((tmp_path / "cache" / "processed").glob("celeba-hair-64-*.npz"))
    assert len(cache) == 1
    again = V.read_celeba(tmp_path / V.CELEBA_DIR, "hair")
    assert np.array_equal(again.train_images, (h.private.tensors[0].permute(0, 2, 3, 1) * 255).round().byte().numpy())


def test_celeba_missing_image_names_file(tmp_path):
    write_celeba(tmp_path, n=8)
    os.unlink(tmp_path / V.CELEBA_DIR / V.CELEBA_IMAGES / "000005.jpg")
    with pytest.raises(DataNotFound, match=r"000005\.jpg"):
        V.read_celeba(tmp_path / V.CELEBA_DIR, "gender")


def test_medmnist_npz_without_medmnist_package(tmp_path):
    path = write_medmnist(tmp_path)
    raw = V.read_medmnist(path)
    assert raw.train_images.shape == (18, 28, 28, 3) and raw.train_labels.shape == (18,)
    s = get_dataset("pathmnist", data_root=tmp_path, public_size=5)
    _check_splits(s, 18, 5, 5, (3, 28, 28), 9)
    assert "medmnist" not in sys.modules


def test_imagenet_subset_image_folder(tmp_path):
    write_image_folder(tmp_path)
    s = get_dataset("imagenet-subset", data_root=tmp_path, public_size=4)
    _check_splits(s, 20, 4, 6, (3, 64, 64), 10)
    assert sorted(s.private.tensors[1].tolist()) == sorted(list(range(10)) * 2)


@pytest.mark.parametrize("name, path_part", [
    ("cifar10", "cifar-10-batches-py/data_batch_1"), ("cifar100", "cifar-100-python/train"),
    ("svhn", "svhn/train_32x32.mat"), ("celeba-hair", "celeba/list_attr_celeba.txt"),
    ("pathmnist", "medmnist/pathmnist.npz"), ("imagenet-subset", "imagenet/train/n01440764")])
def test_missing_files_one_line(tmp_path, name, path_part):
    with pytest.raises(DataNotFound) as info:
        get_dataset(name, data_root=tmp_path / "empty", public_size=2)
    msg = str(info.value)
    assert "\n" not in msg and str(tmp_path / "empty" / path_part) in msg


def test_truncated_cifar_batch_is_an_error(tmp_path):
    write_cifar10(tmp_path)
    p = tmp_path / V.CIFAR10_DIR / "test_batch"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises((pickle.UnpicklingError, EOFError, ValueError)):
        V.read_cifar(tmp_path / V.CIFAR10_DIR)


# --------------------------------------------------------------------------- prepare-data
def test_prepare_cifar10_offline_cli_one_line_nothing_written(tmp_path):
    root = tmp_path / "root"
    env = {**os.environ, "BENCHMARK_OFFLINE": "1", "BENCHMARK_DATA_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "benchmark", "prepare-data", "cifar10", "--data-root", str(root)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "cifar10" in lines[0] and str(root / "cifar-10-batches-py" / "data_batch_1") in lines[0]
    assert "cifar-10-python.tar.gz" in lines[0]
    assert not root.exists() or list(root.iterdir()) == []


def test_prepare_network_failure_leaves_nothing(tmp_path, monkeypatch):
    def no_network(*a, **k):
        raise urllib.error.URLError("Name or service not known")
    monkeypatch.setattr(P.urllib.request, "urlopen", no_network)
    with pytest.raises(DataNotFound, match="Name or service not known"):
        P.prepare("svhn", tmp_path, download=True, log=lambda s: None)
    assert list(tmp_path.iterdir()) == []


def _tiny_cifar_archive(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    src = tmp_path / "src"
    write_cifar10(src)
    md5s = {f.name: P.md5sum(f) for f in (src / V.CIFAR10_DIR).iterdir()}
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / V.CIFAR10_DIR, arcname=V.CIFAR10_DIR)
    return archive, md5s


def _tiny_manifest(archive: Path, md5s: dict[str, str], url: str) -> P.Manifest:
    return P.Manifest("cifar10", {f"{V.CIFAR10_DIR}/{k}": v for k, v in md5s.items()},
                      (P.Source(archive.name, P.md5sum(archive), tuple(f"{V.CIFAR10_DIR}/{k}" for k in md5s),
                                "tar", (url,)),), where=V.CIFAR10_DIR)


def test_prepare_downloads_verifies_and_installs(tmp_path, monkeypatch):
    archive, md5s = _tiny_cifar_archive(tmp_path)
    monkeypatch.setitem(P.MANIFESTS, "cifar10", _tiny_manifest(archive, md5s, archive.as_uri()))
    root = tmp_path / "root"
    logs = []
    P.prepare("cifar10", root, download=True, log=logs.append)
    assert sorted(p.name for p in root.iterdir()) == [V.CIFAR10_DIR]  # no temp folder, no archive left
    assert get_dataset("cifar10", data_root=root, public_size=5).private.tensors[0].shape == (30, 3, 32, 32)
    # second run: verified in place, nothing fetched
    P.prepare("cifar10", root, download=False, log=logs.append)
    assert "verified" in logs[-1]
    # a corrupted file is detected and replaced from the source, atomically
    (root / V.CIFAR10_DIR / "data_batch_3").write_bytes(b"garbage")
    assert "checksum mismatch" in P.verify(P.MANIFESTS["cifar10"], root)[f"{V.CIFAR10_DIR}/data_batch_3"]
    P.prepare("cifar10", root, download=True, log=logs.append)
    assert P.verify(P.MANIFESTS["cifar10"], root) == {}
    assert sorted(p.name for p in root.iterdir()) == [V.CIFAR10_DIR]


def test_prepare_uses_a_placed_archive_offline(tmp_path, monkeypatch):
    archive, md5s = _tiny_cifar_archive(tmp_path)
    monkeypatch.setitem(P.MANIFESTS, "cifar10", _tiny_manifest(archive, md5s, "http://unreachable.invalid/x"))
    root = tmp_path / "root"
    root.mkdir()
    (root / archive.name).write_bytes(archive.read_bytes())
    P.prepare("cifar10", root, download=False, log=lambda s: None)
    assert P.verify(P.MANIFESTS["cifar10"], root) == {}


def test_prepare_bad_download_checksum_installs_nothing(tmp_path, monkeypatch):
    archive, md5s = _tiny_cifar_archive(tmp_path)
    bad = _tiny_manifest(archive, md5s, archive.as_uri())
    bad = P.Manifest(bad.name, bad.targets, (P.Source(archive.name, "0" * 32, bad.sources[0].provides, "tar",
                                                      bad.sources[0].urls),), where=bad.where)
    monkeypatch.setitem(P.MANIFESTS, "cifar10", bad)
    root = tmp_path / "root"
    with pytest.raises(DataNotFound, match="checksum mismatch"):
        P.prepare("cifar10", root, download=True, log=lambda s: None)
    assert list(root.iterdir()) == []


def test_prepare_interrupted_download_leaves_nothing(tmp_path, monkeypatch):
    archive, md5s = _tiny_cifar_archive(tmp_path)
    monkeypatch.setitem(P.MANIFESTS, "cifar10", _tiny_manifest(archive, md5s, archive.as_uri()))

    def half_then_die(url, dest, timeout):
        dest.write_bytes(archive.read_bytes()[:500])
        raise KeyboardInterrupt
    monkeypatch.setattr(P, "_download", half_then_die)
    root = tmp_path / "root"
    with pytest.raises(KeyboardInterrupt):
        P.prepare("cifar10", root, download=True, log=lambda s: None)
    assert list(root.iterdir()) == []


def test_prepare_mnist_from_gz_checks_uncompressed_md5(tmp_path):
    """A placed .gz whose own MD5 differs (recompressed) is accepted only if the unpacked idx file
    has the published MD5: a fake 'MNIST' is refused and nothing is installed."""
    src = tmp_path / "src"
    src.mkdir()
    for f in P._IDX:
        with gzip.open(src / f"{f}.gz", "wb") as g:
            g.write(b"\x00\x00\x08\x01" + (4).to_bytes(4, "big") + bytes(4))
    root = tmp_path / "root"
    with pytest.raises(P.ChecksumError, match="bad"):
        P.prepare("mnist", root, download=False, from_dir=src, log=lambda s: None)
    assert list(root.iterdir()) == []


def test_prepare_imagenet_manifest_detects_changes(tmp_path):
    write_image_folder(tmp_path)
    P.prepare("imagenet-subset", tmp_path, download=False, log=lambda s: None)
    f = next((tmp_path / V.IMAGENET_DIR / "val" / "n03888605").iterdir())
    buf = io.BytesIO()
    from PIL import Image
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(buf, format="JPEG")
    f.write_bytes(buf.getvalue())
    problems = P.verify(P.MANIFESTS["imagenet-subset"], tmp_path)
    assert list(problems) == [f"{V.IMAGENET_DIR}/val/n03888605"] and "changed" in problems[f"{V.IMAGENET_DIR}/val/n03888605"]


def test_manifest_checksums_match_torchvision():
    """Our published MD5s are the ones torchvision ships for the same files."""
    from torchvision.datasets import CIFAR10, CIFAR100, SVHN, CelebA

    m = P.MANIFESTS
    assert m["cifar10"].sources[0].md5 == CIFAR10.tgz_md5 and m["cifar100"].sources[0].md5 == CIFAR100.tgz_md5
    for fname, md5 in CIFAR10.train_list + CIFAR10.test_list:
        assert m["cifar10"].targets[f"{V.CIFAR10_DIR}/{fname}"] == md5
    for fname, md5 in CIFAR100.train_list + CIFAR100.test_list:
        assert m["cifar100"].targets[f"{V.CIFAR100_DIR}/{fname}"] == md5
    for split in ("train", "test"):
        _, fname, md5 = SVHN.split_list[split]
        assert m["svhn"].targets[f"{V.SVHN_DIR}/{fname}"] == md5
    celeba = {fname: md5 for _, md5, fname in CelebA.file_list}
    assert m["celeba"].targets[f"celeba/{V.CELEBA_ATTR}"] == celeba[V.CELEBA_ATTR]
    assert m["celeba"].sources[0].md5 == celeba["img_align_celeba.zip"]
    assert hashlib.md5(b"").hexdigest() not in {s.md5 for s in m["pathmnist"].sources}


def test_parallel_decoding_keeps_order(tmp_path, monkeypatch):
    from PIL import Image

    paths = []
    for i in range(12):
        p = tmp_path / f"{i:02d}.jpg"
        Image.fromarray(np.full((20, 30, 3), 20 * i, dtype=np.uint8)).save(p, quality=95)
        paths.append(p)
    monkeypatch.setenv("BENCHMARK_DECODE_WORKERS", "2")
    parallel = V.decode_images(paths, 8, chunk=5)
    monkeypatch.setenv("BENCHMARK_DECODE_WORKERS", "1")
    serial = V.decode_images(paths, 8, chunk=5)
    assert parallel.shape == (12, 8, 8, 3) and np.array_equal(parallel, serial)
    assert np.abs(parallel.reshape(12, -1).mean(1) - 20 * np.arange(12)).max() < 3  # image i stays at i
