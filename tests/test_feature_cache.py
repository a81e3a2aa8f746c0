"""The feature cache: a fixed transform of the same images is computed once, then loaded."""
import torch

from benchmark.training import teachers


def test_features_are_computed_once_per_images_and_rebuilt_when_corrupt(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHMARK_TEACHER_CACHE", str(tmp_path))
    calls = []

    def square(x):
        calls.append(len(x))
        return x ** 2

    images = torch.arange(12.0).reshape(3, 1, 2, 2)
    first = teachers.cached_features("square", {"p": 1}, images, square)
    again = teachers.cached_features("square", {"p": 1}, images, square)
    assert torch.equal(first, images ** 2) and torch.equal(again, first) and calls == [3]

    teachers.cached_features("square", {"p": 1}, images + 1, square)  # other images: another entry
    teachers.cached_features("square", {"p": 2}, images, square)      # other parameters: another entry
    assert calls == [3, 3, 3]

    for entry in tmp_path.glob("*.pt"):  # a corrupt entry fails its checksum and is recomputed
        entry.write_bytes(b"garbage")
    assert torch.equal(teachers.cached_features("square", {"p": 1}, images, square), images ** 2)
    assert calls == [3, 3, 3, 3]


def test_feature_cache_key_follows_the_transform_source():
    from benchmark.privacy import knn
    assert teachers.source_digest(knn) == teachers.source_digest(knn) and len(teachers.source_digest(knn)) == 16
