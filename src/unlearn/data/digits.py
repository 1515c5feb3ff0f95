"""scikit-learn's bundled 8x8 handwritten digits: a ten-class image task that needs no download."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits as sklearn_digits
from sklearn.model_selection import train_test_split

from unlearn.data.base import ClassificationData, LabeledTensors
from unlearn.errors import UnlearnError


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> ClassificationData:
    """The 1,797 digits as (N, 1, 8, 8) floats in [0, 1], split stratified by class.

    The split depends only on `seed`, so every run of an experiment sees the same train/test sets.
    """
    if not 0 < test_fraction < 1:
        raise UnlearnError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}.")
    bunch = sklearn_digits()
    images = bunch.images.astype(np.float32) / 16.0  # pixel values are counts 0..16
    labels = bunch.target.astype(np.int64)
    try:
        train_idx, test_idx = train_test_split(
            np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=seed
        )
    except ValueError as error:  # too few samples on one side to hold every class
        raise UnlearnError(
            f"test_fraction {test_fraction} leaves a split too small to hold all 10 digits ({error}); "
            "use a value between about 0.05 and 0.95."
        ) from error
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(labels)
    return ClassificationData(
        name="digits",
        train=LabeledTensors(x[train_idx], y[train_idx]),
        test=LabeledTensors(x[test_idx], y[test_idx]),
        num_classes=10,
        input_shape=(1, 8, 8),
        class_names=[str(d) for d in range(10)],
    )
