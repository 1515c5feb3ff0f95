"""MNIST-format (idx) datasets: MNIST, Fashion-MNIST, KMNIST, EMNIST, from their four files on disk.

An idx file is a big-endian header -- two zero bytes, a type code, the number of dimensions, then one
uint32 per dimension -- followed by the array itself. The files may be gzipped (`.gz`) or raw; either is
read, told apart by the gzip magic bytes. Nothing is ever downloaded: Fashion-MNIST comes from Debian's
`dataset-fashion-mnist` package or from a folder the user names.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch

from unlearn.data.base import ClassificationData, LabeledTensors
from unlearn.errors import UnlearnError

# idx type code -> big-endian numpy dtype
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"
TEST_NAMES = ("t10k", "test")  # MNIST/Fashion-MNIST/KMNIST call the test split t10k, EMNIST calls it test

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_HOWTO = (
    f"install Debian's package (`apt-get install -y {FASHION_MNIST_PACKAGE}` as root; it puts the four "
    f"idx .gz files in {FASHION_MNIST_DEBIAN_ROOT}), or download train-images-idx3-ubyte.gz, "
    "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from "
    "https://github.com/zalandoresearch/fashion-mnist into a folder and set data.params.root to it."
)


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in one idx file (gzipped or raw), with its header checked against its size."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise UnlearnError(f"idx file {path} cannot be read ({error}); download it again.") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise UnlearnError(
            f"{path} is not an idx file: its magic number is {raw[:4].hex() or 'empty'}, expected 0000TTNN "
            f"(TT a type code in {sorted(f'{t:02x}' for t in IDX_TYPES)}, NN the number of dimensions)."
        )
    dtype, ndim = np.dtype(IDX_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UnlearnError(f"idx file {path} is truncated inside its header ({len(raw)} bytes); download it again.")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise UnlearnError(
            f"idx file {path} declares shape {dims} ({expected} bytes of data) but holds {len(raw) - header} "
            "bytes; it is truncated or corrupt. Download it again."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_file(root: Path, prefix: str, split: str, kind: str, ndim: int) -> Path:
    """`root/<prefix><split>-<kind>-idx<ndim>-ubyte`, gzipped or raw (the test split as t10k or test)."""
    splits = TEST_NAMES if split == "test" else (split,)
    names = [f"{prefix}{s}-{kind}-idx{ndim}-ubyte{suffix}" for s in splits for suffix in (".gz", "")]
    for name in names:
        if (root / name).is_file():
            return root / name
    raise UnlearnError(f"idx folder {root} has none of {names}; point data.params.root at the folder that holds them.")


def _read_split(root: Path, prefix: str, split: str, transpose: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) and labels (N,) of one split, with their shapes checked against each other."""
    images_path = _find_file(root, prefix, split, "images", 3)
    labels_path = _find_file(root, prefix, split, "labels", 1)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise UnlearnError(f"{images_path} holds an array of shape {images.shape}; images must be (N, H, W).")
    if labels.ndim != 1:
        raise UnlearnError(f"{labels_path} holds an array of shape {labels.shape}; labels must be (N,).")
    if len(images) != len(labels):
        raise UnlearnError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels; "
            "the files do not belong together."
        )
    return (images.transpose(0, 2, 1) if transpose else images), labels.astype(np.int64)


def _subset(x: torch.Tensor, y: torch.Tensor, size: int | None, seed: int, what: str):
    """A random subset of `size` samples (all of them when None), the same for the same seed."""
    if size is None:
        return x, y
    if not 0 < size <= len(y):
        raise UnlearnError(f"{what} must lie in 1..{len(y)} (the split's size), got {size}.")
    keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    return x[keep], y[keep]


def load_idx(
    root: str | Path,
    prefix: str = "",
    name: str = "idx",
    class_names: list[str] | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    normalize: bool = True,
    transpose: bool = False,
) -> ClassificationData:
    """An MNIST-format dataset from `root`, as (N, 1, H, W) floats.

    Files: `<prefix>train-images-idx3-ubyte`, `<prefix>train-labels-idx1-ubyte` and the same with `t10k`
    (or `test`) for the test split, each gzipped (`.gz`) or raw; EMNIST's files need e.g.
    `prefix: emnist-balanced-` and `transpose: true` (its images are stored transposed).
    Pixels are scaled to [0, 1] and, with `normalize`, standardised by the full training set's mean and std.
    `train_size` / `test_size` keep a random subset (chosen by `seed`) of each split.
    """
    root = Path(root)
    if not root.is_dir():
        raise UnlearnError(f"idx root {root} is not a folder; point data.params.root at the folder with the files.")
    train_images, train_labels = _read_split(root, prefix, "train", transpose)
    test_images, test_labels = _read_split(root, prefix, "test", transpose)
    if train_images.shape[1:] != test_images.shape[1:]:
        raise UnlearnError(
            f"train images in {root} are {train_images.shape[1:]} but test images are {test_images.shape[1:]}; "
            "the files do not belong together."
        )
    num_classes = len(class_names) if class_names else int(max(train_labels.max(), test_labels.max())) + 1
    for split, labels in (("train", train_labels), ("test", test_labels)):
        bad = np.unique(labels[(labels < 0) | (labels >= num_classes)])
        if len(bad):
            raise UnlearnError(f"{split} labels {bad.tolist()} in {root} are outside 0..{num_classes - 1}.")
    scale = np.iinfo(train_images.dtype).max if train_images.dtype.kind in "iu" else 1.0
    x_train = torch.from_numpy(train_images.astype(np.float32) / scale).unsqueeze(1)
    x_test = torch.from_numpy(test_images.astype(np.float32) / scale).unsqueeze(1)
    if normalize:
        mean, std = x_train.mean(), x_train.std().clamp_min(1e-8)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    x_train, y_train = _subset(x_train, torch.from_numpy(train_labels), train_size, seed, "train_size")
    x_test, y_test = _subset(x_test, torch.from_numpy(test_labels), test_size, seed, "test_size")
    return ClassificationData(
        name=name,
        train=LabeledTensors(x_train, y_train),
        test=LabeledTensors(x_test, y_test),
        num_classes=num_classes,
        input_shape=tuple(x_train.shape[1:]),
        class_names=list(class_names or []),
    )


def fashion_mnist_root() -> Path:
    """The folder of the installed `dataset-fashion-mnist` package's idx files, or an error saying how to get them."""
    candidates = [FASHION_MNIST_DEBIAN_ROOT]
    if shutil.which("dpkg"):
        listing = subprocess.run(["dpkg", "-L", FASHION_MNIST_PACKAGE], capture_output=True, text=True, check=False)
        candidates += [Path(line).parent for line in listing.stdout.splitlines() if line.endswith("-ubyte.gz")]
    for folder in candidates:
        if (folder / "train-images-idx3-ubyte.gz").is_file():
            return folder
    raise UnlearnError(f"Fashion-MNIST is not installed: {FASHION_MNIST_HOWTO}")


def load_fashion_mnist(
    root: str | Path | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    normalize: bool = True,
) -> ClassificationData:
    """Fashion-MNIST (60 000 train / 10 000 test, 28x28, 10 clothing classes) from `root` or the Debian package."""
    if root is None:
        root = fashion_mnist_root()
    elif not Path(root).is_dir():
        raise UnlearnError(f"Fashion-MNIST root {root} is not a folder; {FASHION_MNIST_HOWTO}")
    return load_idx(
        root,
        name="fashion_mnist",
        class_names=FASHION_MNIST_CLASSES,
        train_size=train_size,
        test_size=test_size,
        seed=seed,
        normalize=normalize,
    )
