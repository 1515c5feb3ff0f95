"""idx (MNIST-format) loaders on tiny files written here, gzipped and raw, so CI needs no dataset package."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearn.data import idx, load_dataset
from unlearn.data.idx import FASHION_MNIST_CLASSES, load_fashion_mnist, load_idx, read_idx
from unlearn.errors import UnlearnError


def idx_bytes(array: np.ndarray) -> bytes:
    """An idx file's bytes for a uint8 array: 00 00 08 ndim, big-endian dims, data."""
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_set(
    root: Path, n_train: int = 40, n_test: int = 20, size: int = 6, gz: bool = True, prefix: str = "", test="t10k"
) -> dict[str, np.ndarray]:
    """Four idx files of a 10-class task of noisy per-class patterns; pixel [0, 0] is 20 * label exactly."""
    rng = np.random.default_rng(0)
    templates = rng.integers(0, 2, size=(10, size, size))
    arrays = {}
    for split, n in (("train", n_train), (test, n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        noise = rng.integers(0, 60, size=(n, size, size))
        images = (templates[labels] * 180 + noise).astype(np.uint8)  # learnable: one pattern per class
        images[:, 0, 0] = labels * 20
        arrays[split] = images
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            data = idx_bytes(array)
            name = f"{prefix}{split}-{kind}-ubyte"
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (root / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trips_gzipped_and_raw(tmp_path, gz):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    data = idx_bytes(array)
    path = tmp_path / "a-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if gz else data)
    np.testing.assert_array_equal(read_idx(path), array)


@pytest.mark.parametrize("gz", [True, False])
def test_load_idx_gives_images_labels_and_names(tmp_path, gz):
    arrays = write_idx_set(tmp_path, gz=gz)
    data = load_idx(tmp_path, normalize=False)
    assert data.input_shape == (1, 6, 6) and data.num_classes == 10
    assert len(data.train) == 40 and len(data.test) == 20
    assert data.train.targets.tolist() == [i % 10 for i in range(40)]
    np.testing.assert_allclose(data.train.x[:, 0].numpy(), arrays["train"] / 255, rtol=1e-6)
    assert torch.allclose(data.test.x[:, 0, 0, 0] * 255, data.test.targets.float() * 20)


def test_normalize_uses_training_statistics(tmp_path):
    write_idx_set(tmp_path)
    x = load_idx(tmp_path).train.x
    assert abs(x.mean().item()) < 1e-5 and abs(x.std().item() - 1) < 1e-4


def test_subsets_follow_the_seed(tmp_path):
    write_idx_set(tmp_path)
    a = load_idx(tmp_path, train_size=15, test_size=5, seed=3)
    b = load_idx(tmp_path, train_size=15, test_size=5, seed=3)
    c = load_idx(tmp_path, train_size=15, seed=4)
    assert len(a.train) == 15 and len(a.test) == 5 and len(c.test) == 20
    assert torch.equal(a.train.x, b.train.x) and not torch.equal(a.train.x, c.train.x)
    with pytest.raises(UnlearnError, match="train_size must lie in 1..40"):
        load_idx(tmp_path, train_size=41)


def test_emnist_layout_prefix_test_split_and_transpose(tmp_path):
    arrays = write_idx_set(tmp_path, gz=False, prefix="emnist-letters-", test="test")
    data = load_idx(tmp_path, prefix="emnist-letters-", transpose=True, normalize=False)
    np.testing.assert_allclose(data.test.x[:, 0].numpy(), arrays["test"].transpose(0, 2, 1) / 255, rtol=1e-6)


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(UnlearnError, match="not a folder"):
        load_idx(tmp_path / "nowhere")
    with pytest.raises(UnlearnError, match="train-images-idx3-ubyte.gz"):
        load_idx(tmp_path)
    bad = tmp_path / "bad"
    bad.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(UnlearnError, match="not an idx file: its magic number is 504b0304"):
        read_idx(bad)
    truncated = tmp_path / "short"
    truncated.write_bytes(idx_bytes(np.zeros((3, 4, 4), dtype=np.uint8))[:-5])
    with pytest.raises(UnlearnError, match=r"declares shape \(3, 4, 4\).*truncated"):
        read_idx(truncated)
    (tmp_path / "corrupt.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(UnlearnError, match="cannot be read"):
        read_idx(tmp_path / "corrupt.gz")


def test_mismatched_files_are_refused(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(7, dtype=np.uint8))))
    with pytest.raises(UnlearnError, match="20 images but .* 7 labels"):
        load_idx(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((20, 2), dtype=np.uint8))))
    with pytest.raises(UnlearnError, match=r"labels must be \(N,\)"):
        load_idx(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.full(20, 12, dtype=np.uint8))))
    with pytest.raises(UnlearnError, match=r"test labels \[12\] .* outside 0..9"):
        load_idx(tmp_path, class_names=[str(c) for c in range(10)])


def test_fashion_mnist_from_a_root_through_the_registry(tmp_path):
    write_idx_set(tmp_path)
    data = load_dataset("fashion_mnist", root=str(tmp_path), train_size=30, seed=1)
    assert data.name == "fashion_mnist" and data.class_names == FASHION_MNIST_CLASSES and len(data.train) == 30
    assert len(load_dataset("idx", root=str(tmp_path)).train) == 40


def test_missing_fashion_mnist_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(idx, "FASHION_MNIST_DEBIAN_ROOT", tmp_path / "absent")
    monkeypatch.setattr(idx.shutil, "which", lambda _: None)
    with pytest.raises(UnlearnError, match="apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist()
    with pytest.raises(UnlearnError, match="apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist(root=tmp_path / "absent")
