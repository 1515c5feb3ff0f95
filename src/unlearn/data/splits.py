"""Forget/remain partition by class: D_f, D_r (train) and D_ft, D_rt (test)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from unlearn.data.base import ClassificationData, LabeledConcat, LabeledSubset, targets_of
from unlearn.errors import UnlearnError, check_classes

SPLIT_NAMES = ("D_f", "D_r", "D_ft", "D_rt")


@dataclass
class ForgetSplits:
    """The four evaluation splits of an unlearning task.

    Class-wise: D_f / D_ft are the forget classes' train / test samples. Sample-wise
    (`split_random_samples`): `forget_classes` is empty, D_f is a random subset of the training set,
    D_ft is empty and D_rt is the whole test set D_t.
    """

    forget_classes: list[int]
    num_classes: int
    D_f: LabeledSubset
    D_r: LabeledSubset
    D_ft: LabeledSubset
    D_rt: LabeledSubset

    def named(self) -> dict[str, LabeledSubset]:
        return {name: getattr(self, name) for name in SPLIT_NAMES}

    @property
    def remain_classes(self) -> list[int]:
        return [c for c in range(self.num_classes) if c not in self.forget_classes]

    def train(self) -> Dataset:
        """D_f ∪ D_r, the whole training set."""
        return LabeledConcat([self.D_f, self.D_r])

    def test(self) -> Dataset:
        """D_ft ∪ D_rt, the whole test set (the held-out D_t of the MIA)."""
        return LabeledConcat([self.D_ft, self.D_rt])


def validate_forget_classes(forget_classes: Iterable[int], num_classes: int) -> list[int]:
    """Sorted unique forget classes; errors on an empty list, unknown ids, or all classes."""
    classes = sorted(set(check_classes(forget_classes)))
    if not classes:
        raise UnlearnError("forget_classes is empty: name at least one class id to forget.")
    unknown = [c for c in classes if not 0 <= c < num_classes]
    if unknown:
        raise UnlearnError(
            f"forget_classes {unknown} are not class ids of this {num_classes}-class task "
            f"(valid ids are 0..{num_classes - 1})."
        )
    if len(classes) == num_classes:
        raise UnlearnError(
            f"forget_classes names all {num_classes} classes: nothing would remain to keep. "
            "Forget a strict subset of the classes."
        )
    return classes


def split_by_class(data: ClassificationData, forget_classes: Iterable[int]) -> ForgetSplits:
    """Partition train and test sets into forget and remain parts by class label."""
    classes = validate_forget_classes(forget_classes, data.num_classes)
    parts = {}
    for split, dataset in (("train", data.train), ("test", data.test)):
        targets = targets_of(dataset)
        is_forget = torch.isin(targets, torch.tensor(classes))
        parts[split] = (
            LabeledSubset(dataset, torch.nonzero(is_forget).flatten()),
            LabeledSubset(dataset, torch.nonzero(~is_forget).flatten()),
        )
    if len(parts["train"][0]) == 0:
        raise UnlearnError(f"the training set has no samples of forget_classes {classes}: there is nothing to forget.")
    return ForgetSplits(classes, data.num_classes, *parts["train"], *parts["test"])


def split_random_samples(data: ClassificationData, fraction: float = 0.1, seed: int = 0) -> ForgetSplits:
    """Sample-wise task (paper Table 4): forget a seeded random `fraction` of the training samples."""
    if not 0 < fraction < 1:
        raise UnlearnError(f"forget_fraction must be in (0, 1), got {fraction}.")
    n = len(data.train)
    count = int(round(fraction * n))
    if count == 0 or count == n:
        raise UnlearnError(f"forget_fraction {fraction} of {n} training samples leaves no forget or no remain sample.")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    forget, remain = order[:count].sort().values, order[count:].sort().values
    test = torch.arange(len(data.test))
    return ForgetSplits(
        [],
        data.num_classes,
        LabeledSubset(data.train, forget),
        LabeledSubset(data.train, remain),
        LabeledSubset(data.test, test[:0]),
        LabeledSubset(data.test, test),
    )
