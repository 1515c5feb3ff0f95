"""Dataset contract shared by every loader: tensors or lazy items, always with `.targets`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils.data import ConcatDataset, Dataset

from unlearn.errors import UnlearnError


class LabeledTensors(Dataset):
    """In-memory images `x` (N, C, H, W float) with integer `targets` (N,)."""

    def __init__(self, x: torch.Tensor, targets: torch.Tensor) -> None:
        if len(x) != len(targets):
            raise UnlearnError(f"{len(x)} inputs but {len(targets)} labels; they must match one to one.")
        self.x = x
        self.targets = targets.long()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.x[index], int(self.targets[index])


class LabeledSubset(Dataset):
    """A view on some indices of a labelled dataset that keeps `.targets` aligned."""

    def __init__(self, dataset: Dataset, indices: torch.Tensor) -> None:
        self.dataset = dataset
        self.indices = indices.long()
        self.targets = targets_of(dataset)[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.dataset[int(self.indices[index])]


class LabeledConcat(ConcatDataset):
    """Several labelled datasets one after another, with their `.targets` concatenated."""

    def __init__(self, datasets: list[Dataset]) -> None:
        super().__init__(datasets)
        self.targets = torch.cat([targets_of(dataset) for dataset in datasets])


class Relabeled(Dataset):
    """The inputs of `dataset` with other labels `targets` (e.g. random labels for the forget set)."""

    def __init__(self, dataset: Dataset, targets: torch.Tensor) -> None:
        if len(dataset) != len(targets):
            raise UnlearnError(f"{len(dataset)} samples but {len(targets)} new labels; they must match one to one.")
        self.dataset = dataset
        self.targets = torch.as_tensor(targets, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.dataset[index][0], int(self.targets[index])


class Transformed(Dataset):
    """Apply `transform` to the input of every item (used for train-time augmentation)."""

    def __init__(self, dataset: Dataset, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.dataset = dataset
        self.transform = transform
        self.targets = targets_of(dataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        x, y = self.dataset[index]
        return self.transform(x), y


def batch_pair(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) of one loader batch, checked: a pair of tensors, labels a 1-D integer class-id tensor.

    A loader that yields dicts or (x, y, extra) tuples, or float, bool or one-hot labels, is one clear
    error here instead of a shape or dtype error deep in a method. Integer labels of any width become int64.
    """
    if isinstance(batch, dict) or not isinstance(batch, (tuple, list)) or len(batch) != 2:
        kind = f"a dict with keys {sorted(batch)}" if isinstance(batch, dict) else f"{type(batch).__name__}"
        if isinstance(batch, (tuple, list)):
            kind = f"a {type(batch).__name__} of {len(batch)} items"
        raise UnlearnError(f"the data must yield (inputs, labels) pairs, got {kind}; wrap it to return (x, y).")
    x, y = batch
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise UnlearnError(f"a batch must be (tensor, tensor), got ({type(x).__name__}, {type(y).__name__}).")
    if y.dim() != 1:
        hint = " (one-hot labels: pass y.argmax(1))" if y.dim() == 2 else ""
        raise UnlearnError(f"labels must be a 1-D tensor of class ids, got shape {tuple(y.shape)}{hint}.")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise UnlearnError(f"labels must be integer class ids, got dtype {y.dtype}; convert them with y.long().")
    if len(x) != len(y):
        raise UnlearnError(f"a batch has {len(x)} inputs but {len(y)} labels.")
    return x, y.long()


def targets_of(dataset: Dataset) -> torch.Tensor:
    """Integer labels of a dataset: its `.targets` when present, else read item by item."""
    targets = getattr(dataset, "targets", None)
    if targets is None:
        targets = [int(dataset[i][1]) for i in range(len(dataset))]
    return torch.as_tensor(targets, dtype=torch.long)


@dataclass
class ClassificationData:
    """A train/test pair of labelled datasets and what a model needs to know about them."""

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.class_names:
            self.class_names = [str(c) for c in range(self.num_classes)]
