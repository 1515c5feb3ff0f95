"""Datasets by name, the dataset contract, and the forget/remain splits.

`load_dataset("shapes", seed=1)` checks the params against the loader's signature, so a typo in
a config fails with the list of valid keys instead of a TypeError deep inside a loader.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from unlearn.data.base import ClassificationData, LabeledTensors
from unlearn.data.cifar import load_cifar
from unlearn.data.digits import load_digits
from unlearn.data.generated import load_shapes
from unlearn.data.idx import load_fashion_mnist, load_idx
from unlearn.data.imagefolder import load_imagefolder
from unlearn.data.splits import SPLIT_NAMES, ForgetSplits, split_by_class
from unlearn.errors import UnlearnError, check_params

# name -> (loader, params fixed by the name itself)
DATASETS: dict[str, tuple[Callable[..., ClassificationData], dict[str, Any]]] = {
    "digits": (load_digits, {}),
    "shapes": (load_shapes, {}),
    "cifar10": (load_cifar, {"variant": "cifar10"}),
    "cifar100": (load_cifar, {"variant": "cifar100"}),
    "imagefolder": (load_imagefolder, {}),
    "idx": (load_idx, {}),  # MNIST, KMNIST, EMNIST, ... from a root of idx files
    "fashion_mnist": (load_fashion_mnist, {}),
}


def load_dataset(name: str, **params: Any) -> ClassificationData:
    """The dataset registered as `name`, built with `params` (e.g. `root` for CIFAR, ImageFolder and idx)."""
    if name not in DATASETS:
        raise UnlearnError(f"unknown dataset {name!r}; valid names: {sorted(DATASETS)}.")
    loader, fixed = DATASETS[name]
    signature = inspect.signature(loader).parameters
    valid = check_params(loader, params, f"dataset {name!r}", exclude=tuple(fixed))
    missing = [key for key in valid if signature[key].default is inspect.Parameter.empty and key not in params]
    if missing:
        raise UnlearnError(f"dataset {name!r} needs params {missing}; add them to the data params.")
    return loader(**fixed, **params)


__all__ = [
    "DATASETS",
    "SPLIT_NAMES",
    "ClassificationData",
    "ForgetSplits",
    "LabeledTensors",
    "load_dataset",
    "split_by_class",
]
