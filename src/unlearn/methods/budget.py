"""A sample budget for prototype collection: fit time that stops growing with the size of the training set.

A class mean's standard error falls as σ/√n, so a few hundred samples per class estimate a prototype about
as well as thousands. `Budget(max_per_class, tol)` stops reading a class once it holds `max_per_class`
samples, or once its running mean has converged: the relative change ‖m_c(t) − m_c(t−1)‖ / ‖m_c(t)‖ after
each batch that contains class c stays below `tol` for `window` such batches in a row (and the class has at
least `min_per_class` samples). Collection ends when every class is done.

How the data is read:
- a Dataset with `.targets` (every dataset of unlearn.data has them) and a `max_per_class`: a seeded,
  class-stratified draw of at most `max_per_class` indices per class, so only those samples are read;
- any other Dataset: read in a seeded random order (never in stored order, which is often sorted by class),
  stopping early;
- a user's DataLoader: read in its own order, stopping early once every class is done. Early stopping needs
  to know the classes: with `num_classes=None` the loader is read to the end and only the per-class caps apply.
Under torchrun the budget is global: the stratified draw is the same on every rank before sharding; in the
streamed cases every rank stops at ⌈max_per_class / W⌉ per class (W = world size).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from unlearn import distributed
from unlearn.data.base import LabeledSubset
from unlearn.errors import UnlearnError
from unlearn.models.inference import stream_outputs


@dataclass(frozen=True)
class Budget:
    """How many samples per class prototype collection may read (None: no limit of that kind)."""

    max_per_class: int | None = None
    tol: float | None = None
    window: int = 3
    min_per_class: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_per_class is not None and (
            isinstance(self.max_per_class, bool) or not isinstance(self.max_per_class, int) or self.max_per_class < 1
        ):
            raise UnlearnError(f"max_per_class must be an integer >= 1 or None, got {self.max_per_class!r}.")
        if self.tol is not None and (
            isinstance(self.tol, bool) or not isinstance(self.tol, int | float) or not 0 < self.tol < 1
        ):
            raise UnlearnError(f"tol must be a number in (0, 1) or None, got {self.tol!r}.")
        for name in ("window", "min_per_class"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UnlearnError(f"{name} must be an integer >= 1, got {value!r}.")

    @property
    def active(self) -> bool:
        return self.max_per_class is not None or self.tol is not None


NO_BUDGET = Budget()


class ClassAccumulator:
    """Per-class sums (k x d, float64), counts (k) and sums of squared norms (k), grown as class ids appear.

    With a budget it also decides which samples to keep and when every class is done.
    """

    def __init__(self, budget: Budget = NO_BUDGET, num_classes: int | None = None, classes: list[int] | None = None):
        self.budget, self.num_classes = budget, num_classes
        self.classes = classes  # the classes the budget waits for (None: all num_classes)
        self.cap = None
        if budget.max_per_class is not None:
            self.cap = math.ceil(budget.max_per_class / distributed.world_size())
        self.sums: torch.Tensor | None = None
        self.counts = torch.zeros(num_classes or 0, dtype=torch.float64)
        self.squares = torch.zeros(num_classes or 0, dtype=torch.float64)
        self.streak = torch.zeros(num_classes or 0, dtype=torch.long)
        self.converged = torch.zeros(num_classes or 0, dtype=torch.bool)

    def _grow(self, needed: int, dim: int, like: torch.Tensor) -> None:
        size = max(needed, len(self.counts))
        if self.sums is None:
            self.sums = like.new_zeros(size, dim, dtype=torch.float64)
        elif len(self.sums) < size:
            self.sums = torch.cat([self.sums, self.sums.new_zeros(size - len(self.sums), dim)])
        extra = size - len(self.counts)
        if extra > 0:
            self.counts = torch.cat([self.counts, self.counts.new_zeros(extra)])
            self.squares = torch.cat([self.squares, self.squares.new_zeros(extra)])
            self.streak = torch.cat([self.streak, self.streak.new_zeros(extra)])
            self.converged = torch.cat([self.converged, self.converged.new_zeros(extra)])

    def keep(self, y: torch.Tensor) -> torch.Tensor:
        """Mask of the samples of `y` (host labels) that the budget still admits, in order."""
        keep = torch.ones(len(y), dtype=torch.bool)
        if not self.budget.active or len(y) == 0:
            return keep
        needed = int(y.max()) + 1
        counts = torch.cat([self.counts, self.counts.new_zeros(max(0, needed - len(self.counts)))])
        converged = torch.cat([self.converged, self.converged.new_zeros(max(0, needed - len(self.converged)))])
        keep &= ~converged[y]
        if self.cap is not None:  # rank of each sample within its class in this batch, plus what is held
            order = torch.zeros(len(y), dtype=torch.long)
            for c in torch.unique(y).tolist():
                at = torch.nonzero(y == c).flatten()
                order[at] = torch.arange(len(at))
            keep &= counts[y] + order < self.cap
        return keep

    def add(self, z: torch.Tensor, y: torch.Tensor) -> None:
        """Add features `z` (n x d, any dtype/device) of host labels `y` to the sums."""
        z = z.double()
        needed = int(y.max()) + 1 if len(y) else 0
        self._grow(needed, z.shape[1], z)
        if not len(y):
            return
        before = None
        present = torch.unique(y)
        had = self.counts[present] > 0
        if self.budget.tol is not None:
            before = self.sums[present] / self.counts[present, None].clamp_min(1).to(self.sums)
        self.sums.index_add_(0, y.to(z.device, non_blocking=True), z)
        self.counts += torch.bincount(y, minlength=len(self.counts)).double()
        self.squares.index_add_(0, y, (z * z).sum(dim=1).cpu())
        if before is not None:
            after = self.sums[present] / self.counts[present, None].to(self.sums)
            change = (after - before).norm(dim=1) / after.norm(dim=1).clamp_min(1e-12)
            small = (change.cpu() < self.budget.tol) & had
            self.streak[present] = torch.where(small, self.streak[present] + 1, torch.zeros_like(self.streak[present]))
            self.converged[present] |= (self.streak[present] >= self.budget.window) & (
                self.counts[present] >= self.budget.min_per_class
            )

    def done(self) -> bool:
        """Whether every class the budget waits for has its samples (never, without a budget or known classes)."""
        if not self.budget.active or (self.num_classes is None and self.classes is None):
            return False
        waits = self.classes if self.classes is not None else list(range(self.num_classes))
        if max(waits, default=-1) >= len(self.counts):
            return False
        full = self.converged.clone()
        if self.cap is not None:
            full |= self.counts >= self.cap
        return bool(full[waits].all())

    def standard_errors(self) -> torch.Tensor:
        """Standard error of each class mean, √(tr Σ_c / n_c) with tr Σ_c = E‖z‖² − ‖m_c‖² (NaN for n_c < 2)."""
        counts = self.counts.to(self.sums)
        means = self.sums / counts[:, None].clamp_min(1)
        variance = (self.squares.to(self.sums) / counts.clamp_min(1) - (means * means).sum(dim=1)).clamp_min(0)
        variance = variance * counts / (counts - 1).clamp_min(1)  # unbiased
        stderr = (variance / counts.clamp_min(1)).sqrt()
        return torch.where(counts > 1, stderr, torch.full_like(stderr, float("nan"))).cpu()


def budgeted_data(
    data: Dataset | DataLoader, budget: Budget, classes: list[int] | None = None
) -> tuple[Dataset | DataLoader, Budget]:
    """What to read, and the budget left for the stream: a stratified draw (a Dataset with targets and a cap;
    the cap is then met exactly, even across ranks, so only `tol` is left), a seeded shuffle (other Datasets
    with a budget), or `data` unchanged (a DataLoader, or no budget). `classes` limits the draw to them."""
    if not budget.active or isinstance(data, DataLoader):
        return data, budget
    generator = torch.Generator().manual_seed(budget.seed)
    targets = getattr(data, "targets", None)
    if targets is not None and budget.max_per_class is not None:
        targets = torch.as_tensor(targets).long()
        wanted = torch.unique(targets).tolist() if classes is None else classes
        picked = []
        for c in wanted:
            at = torch.nonzero(targets == c).flatten()
            picked.append(at[torch.randperm(len(at), generator=generator)[: budget.max_per_class]])
        indices = torch.cat(picked) if picked else torch.zeros(0, dtype=torch.long)
        indices = indices[torch.randperm(len(indices), generator=generator)]  # classes interleaved in batches
        return LabeledSubset(data, indices), replace(budget, max_per_class=None)
    order = torch.randperm(len(data), generator=generator)
    subset = LabeledSubset(data, order) if targets is not None else Subset(data, order.tolist())
    return subset, budget


def checked_labels(
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]], num_classes: int | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Pass (features, labels) batches through, raising on a label outside 0..num_classes-1."""
    for z, y in batches:
        y = y.cpu()
        if len(y) and (int(y.min()) < 0 or (num_classes is not None and int(y.max()) >= num_classes)):
            allowed = "0 or more" if num_classes is None else f"within 0..{num_classes - 1}"
            raise UnlearnError(f"labels {int(y.min())}..{int(y.max())} must be {allowed}; check num_classes.")
        yield z, y


def budgeted_stream(
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]], accumulator: ClassAccumulator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield the budget's part of each (features, labels) batch and add it to `accumulator`; stop once done."""
    for z, y in batches:
        y = y.cpu()
        keep = accumulator.keep(y)
        if not keep.all():
            z, y = z[keep.to(z.device)], y[keep]
        if len(y):
            accumulator.add(z.flatten(1), y)
            yield z, y
        if accumulator.done():
            return


def collect_budgeted(
    features: nn.Module,
    data: Dataset | DataLoader,
    budget: Budget,
    num_classes: int | None = None,
    batch_size: int = 256,
    desc: str | None = None,
    progress: bool = False,
    classes: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, ClassAccumulator]:
    """The features (n x d, float32, host) and labels of the samples a budget admits, and their class sums.

    `classes`: only these classes are drawn and waited for (e.g. ESC needs forget samples only); samples of
    other classes that a DataLoader yields are still returned.
    """
    data, budget = budgeted_data(data, budget, classes)
    accumulator = ClassAccumulator(budget, num_classes, classes)
    outputs, labels = [], []
    stream = stream_outputs(features, data, batch_size, desc=desc, progress=progress)
    for z, y in budgeted_stream(checked_labels(stream, num_classes), accumulator):
        outputs.append(z.flatten(1).float().cpu())
        labels.append(y)
    if not outputs:
        raise UnlearnError("the data given to fit is empty.")
    return torch.cat(outputs), torch.cat(labels), accumulator
