"""CIFAR-10 and CIFAR-100 from the official python-pickle release, already on disk (never downloaded)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unlearn.data.base import ClassificationData, LabeledTensors
from unlearn.errors import UnlearnError


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its files and labels, and its channel statistics."""

    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: bytes
    names_key: bytes
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


VARIANTS = {
    "cifar10": CifarLayout(
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch",
        meta_file="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": CifarLayout(
        folder="cifar-100-python",
        train_files=("train",),
        test_file="test",
        meta_file="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}
# The only globals a CIFAR pickle needs (to rebuild its numpy `data` array, whose raw bytes a
# Python 3 pickle wraps in `_codecs.encode`); anything else is refused.
SAFE_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only, so a stray file cannot run code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR file")
        return super().find_class(module, name)


def _read_pickle(path: Path) -> dict:
    if not path.is_file():
        raise UnlearnError(f"CIFAR file {path} is missing; extract the official python archive so it exists.")
    try:
        with path.open("rb") as handle:
            content = _CifarUnpickler(handle, encoding="bytes").load()
    except Exception as error:  # noqa: BLE001 - any unreadable file is the same user error
        raise UnlearnError(f"CIFAR file {path} is corrupt or not a CIFAR pickle ({error}); re-extract it.") from error
    if not isinstance(content, dict):
        raise UnlearnError(f"CIFAR file {path} holds a {type(content).__name__}, not a dict; re-extract it.")
    return content


def _read_batch(path: Path, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) of one pickle batch."""
    batch = _read_pickle(path)
    missing = [key for key in (b"data", layout.label_key) if key not in batch]
    if missing:
        raise UnlearnError(f"CIFAR file {path} lacks keys {missing}; is it the right variant and file?")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[layout.label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise UnlearnError(
            f"CIFAR file {path} has data of shape {data.shape} and {len(labels)} labels; "
            "expected (N, 3072) with N labels. Re-extract it."
        )
    return data.reshape(-1, 3, 32, 32), labels


def _find_folder(root: Path, layout: CifarLayout) -> Path:
    """`root` itself when it holds the files, else its `layout.folder` subfolder."""
    if not root.exists():
        raise UnlearnError(f"CIFAR root {root} does not exist; point it at {layout.folder} or its parent.")
    return root if (root / layout.meta_file).exists() else root / layout.folder


def load_cifar(root: str | Path, variant: str = "cifar10") -> ClassificationData:
    """CIFAR-10 or CIFAR-100 (fine labels) as float tensors normalised by the standard channel mean/std.

    `root` is the extracted folder (`cifar-10-batches-py`, `cifar-100-python`) or its parent.
    The pickles are read with an unpickler that admits numpy arrays only.
    """
    if variant not in VARIANTS:
        raise UnlearnError(f"unknown CIFAR variant {variant!r}; valid variants: {sorted(VARIANTS)}.")
    layout = VARIANTS[variant]
    folder = _find_folder(Path(root), layout)
    names = _read_pickle(folder / layout.meta_file).get(layout.names_key)
    if not names:
        raise UnlearnError(f"CIFAR file {folder / layout.meta_file} has no {layout.names_key!r}; re-extract it.")
    class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    mean = torch.tensor(layout.mean).view(1, 3, 1, 1)
    std = torch.tensor(layout.std).view(1, 3, 1, 1)

    def split(files: tuple[str, ...]) -> LabeledTensors:
        batches = [_read_batch(folder / name, layout) for name in files]
        images = torch.from_numpy(np.concatenate([b[0] for b in batches]))
        labels = torch.from_numpy(np.concatenate([b[1] for b in batches]))
        bad = labels[(labels < 0) | (labels >= len(class_names))]
        if len(bad):
            raise UnlearnError(
                f"CIFAR labels {bad.unique().tolist()} in {folder} are outside 0..{len(class_names) - 1}; "
                "the files do not belong together."
            )
        return LabeledTensors((images.float() / 255 - mean) / std, labels)

    return ClassificationData(
        name=variant,
        train=split(layout.train_files),
        test=split((layout.test_file,)),
        num_classes=len(class_names),
        input_shape=(3, 32, 32),
        class_names=class_names,
    )
