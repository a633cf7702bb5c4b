"""Data loaders: IDX parsing and validation, MNIST download/offline path, CIFAR, npz, synthetic."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from cnncalc.errors import DataError, TrainError
from cnncalc.train import data
from cnncalc.train.data import (
    MNIST_FILES,
    batch_indices,
    batches,
    load,
    load_cifar10,
    load_mnist,
    load_npz,
    read_idx,
    synthetic,
)


def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    arr = np.asarray(arr, np.uint8)
    magic = magic if magic is not None else 0x0800 + arr.ndim
    head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.tobytes()


def write_mnist(folder: Path, n_train=12, n_test=5, gz=True, rng=None):
    rng = rng or np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for stem, a in arrays.items():
        raw = idx_bytes(a)
        if gz:
            (folder / (stem + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_tiny(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    d = load_mnist(tmp_path, download=False)
    assert d.x_train.shape == (12, 1, 28, 28) and d.x_train.dtype == np.float32
    assert d.y_train.dtype == np.int64 and d.x_test.shape == (5, 1, 28, 28)
    np.testing.assert_allclose(d.x_train[:, 0] * 255, arrays["train-images-idx3-ubyte"],
                               atol=1e-3)
    np.testing.assert_array_equal(d.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert d.num_classes == 10 and d.input_shape == (1, 28, 28)
    assert load(f"mnist:{tmp_path}", download=False).x_train.shape == (12, 1, 28, 28)


def test_mnist_env_var(tmp_path, monkeypatch):
    write_mnist(tmp_path)
    monkeypatch.setenv("CNNCALC_MNIST_DIR", str(tmp_path))
    assert load("mnist", download=False).name == "mnist"


def test_idx_wrong_magic(tmp_path):
    write_mnist(tmp_path)
    # labels where images should be
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(12))))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: magic number 2049, "
                                        r"expected 2051"):
        load_mnist(tmp_path, download=False)


def test_idx_truncated(tmp_path):
    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(idx_bytes(np.zeros((3, 4, 4)))[:-5])
    with pytest.raises(DataError, match=r"header says shape \(3, 4, 4\) \(48 bytes of data\), "
                                        r"file has 43"):
        read_idx(p)
    p.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="too short"):
        read_idx(p)
    p.write_bytes(b"PK\x03\x04" + bytes(20))
    with pytest.raises(DataError, match="not an unsigned-byte IDX"):
        read_idx(p)
    p.write_bytes(b"\x1f\x8b" + bytes(20))
    with pytest.raises(DataError, match="cannot read"):
        read_idx(p)


def test_mnist_count_mismatch(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(4))))
    with pytest.raises(DataError, match="has 5 images but .*t10k-labels.* has 4 labels"):
        load_mnist(tmp_path, download=False)


def test_mnist_missing_offline(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    folder = tmp_path / "mnist"
    with pytest.raises(DataError) as e:
        load_mnist(folder)
    text = str(e.value)
    for stem in MNIST_FILES:
        assert stem + ".gz" in text
    assert str(folder) in text and "network unreachable" in text
    assert "CNNCALC_MNIST_DIR" in text


def test_mnist_download_verifies_checksum(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_mnist(src)
    blobs = {stem + ".gz": (src / (stem + ".gz")).read_bytes() for stem in MNIST_FILES}
    fake_md5 = {s: (hashlib.md5(blobs[s + ".gz"]).hexdigest(), m)
                for s, (_, m) in MNIST_FILES.items()}
    monkeypatch.setattr(data, "MNIST_FILES", fake_md5)
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append(url)
        name = url.rsplit("/", 1)[1]
        body = blobs[name]
        if "train-labels" in name and url.startswith(data.MNIST_MIRRORS[0]):
            body = body[:-1] + b"x"  # first mirror serves a damaged file
        return io.BytesIO(body)

    monkeypatch.setattr(data.urllib.request, "urlopen", fake_urlopen)
    dest = tmp_path / "dest"
    d = load_mnist(dest)
    assert d.x_train.shape == (12, 1, 28, 28)
    assert sorted(os.listdir(dest)) == sorted(blobs)  # no partial files left
    assert sum("train-labels" in u for u in calls) == 2  # retried on the second mirror


def test_cifar10_fake(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                 b"labels": list(rng.integers(0, 10, 4))}
        with open(tmp_path / name, "wb") as f:
            pickle.dump(batch, f)
    d = load(f"cifar10:{tmp_path}")
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_test.shape == (4, 3, 32, 32)
    assert d.x_train.max() <= 1 and d.classes[0] == "airplane"
    (tmp_path / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DataError, match="data_batch_3"):
        load_cifar10(tmp_path)
    os.remove(tmp_path / "test_batch")
    with pytest.raises(DataError):
        load_cifar10(tmp_path)


def test_cifar10_bad_shape(tmp_path):
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(tmp_path / name, "wb") as f:
            pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DataError, match=r"data_batch_1: data must be uint8 of shape \(N, 3072\)"):
        load_cifar10(tmp_path)


def test_npz_split_deterministic(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (60, 8, 8), dtype=np.uint8)
    y = np.arange(60) % 3
    p = tmp_path / "d.npz"
    np.savez(p, x=x, y=y)
    a, b = load(str(p), seed=1), load(f"npz:{p}", seed=1)
    assert a.x_train.shape == (50, 1, 8, 8) and a.x_test.shape == (10, 1, 8, 8)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    c = load_npz(p, seed=2)
    assert not np.array_equal(a.y_test, c.y_test) or not np.array_equal(a.x_test, c.x_test)
    assert a.x_train.max() <= 1.0 and a.classes == ["0", "1", "2"]


def test_npz_with_test_set_and_errors(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((6, 2, 4, 4), np.float32), y=np.arange(6),
             x_test=np.ones((2, 2, 4, 4)), y_test=np.array([0, 1]))
    d = load_npz(p)
    assert d.x_train.shape == (6, 2, 4, 4) and d.x_test.shape == (2, 2, 4, 4)
    np.savez(p, x=np.zeros((6, 4, 4)), y=np.arange(5))
    with pytest.raises(DataError, match=r"'y' must have shape \(6,\)"):
        load_npz(p)
    np.savez(p, images=np.zeros((6, 4, 4)))
    with pytest.raises(DataError, match="no array 'x'"):
        load_npz(p)
    p.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_npz(p)
    with pytest.raises(DataError, match="does not exist"):
        load_npz(tmp_path / "missing.npz")


def test_synthetic_deterministic_and_balanced():
    a, b = synthetic(200, 50, seed=3), synthetic(200, 50, seed=3)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.x_train.shape == (200, 1, 28, 28) and a.x_train.dtype == np.float32
    assert a.x_train.min() >= 0 and a.x_train.max() <= 1
    assert np.bincount(a.y_train).tolist() == [20] * 10
    c = synthetic(20, 10, seed=0, shape=(3, 16, 12), num_classes=4)
    assert c.x_train.shape == (20, 3, 16, 12) and c.num_classes == 4


def test_synthetic_is_learnable_by_nearest_class_mean():
    """Sanity check that classes differ: even a nearest-class-mean rule on pixels beats chance."""
    d = synthetic(1000, 300, seed=0)
    means = np.stack([d.x_train[d.y_train == k].mean(axis=0).ravel() for k in range(10)])
    dist = ((d.x_test.reshape(300, -1)[:, None] - means[None]) ** 2).sum(-1)
    assert (dist.argmin(1) == d.y_test).mean() > 0.3


def test_load_parsing():
    assert load("synthetic").x_train.shape[0] == 2000
    d = load("synthetic:400", seed=1)
    assert d.x_train.shape[0] == 400 and d.x_test.shape[0] == 100
    with pytest.raises(DataError, match="unknown data source 'imagenet'"):
        load("imagenet")
    with pytest.raises(DataError, match="integer N"):
        load("synthetic:lots")
    with pytest.raises(DataError, match="cifar10 needs a folder"):
        load("cifar10")


def test_batches_cover_epoch():
    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    y = np.arange(10)
    seen = []
    for xb, yb in batches(x, y, 4, np.random.default_rng(0)):
        np.testing.assert_array_equal(xb.ravel(), yb)
        seen.extend(yb.tolist())
    assert sorted(seen) == list(range(10)) and seen != list(range(10))
    sizes = [len(yb) for _, yb in batches(x, y, 4, shuffle=False)]
    assert sizes == [4, 4, 2]
    rng = np.random.default_rng(0)
    assert [len(i) for i in batch_indices(10, 4, rng, drop_last=True)] == [4, 4]


def test_batches_reuse_buffers():
    x = np.random.default_rng(0).normal(size=(9, 2, 3, 3)).astype(np.float32)
    y = np.arange(9)
    got, ids = [], set()
    for xb, yb in batches(x, y, 4, np.random.default_rng(1), reuse_buffers=True):
        np.testing.assert_array_equal(xb, x[yb])
        got.extend(yb.tolist())
        ids.add(xb.__array_interface__["data"][0])
    assert sorted(got) == list(range(9)) and len(ids) == 1


def test_batches_errors():
    with pytest.raises(TrainError, match="batch_size must be a positive integer"):
        list(batches(np.zeros((2, 1)), np.zeros(2), 0, np.random.default_rng(0)))
    with pytest.raises(TrainError, match="x has 2 examples but y has 3"):
        list(batches(np.zeros((2, 1)), np.zeros(3), 1, np.random.default_rng(0)))


@pytest.mark.mnist
def test_real_mnist():
    folder = os.environ.get("CNNCALC_MNIST_DIR")
    if not folder or not Path(folder).is_dir():
        pytest.skip("CNNCALC_MNIST_DIR unset or missing")
    d = load_mnist(folder, download=False)
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(d.y_train).min() > 5000
    assert d.y_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert 0.12 < d.x_train.mean() < 0.14
