"""Class prototypes P[:, c] = mean of h(x) over class c, in one streaming pass (MORE.md §1), or over a
sample budget per class (methods/budget.py).

Only per-class sums (k x d) and counts (k) are kept: memory O(k·d), time O(N·d). Under
`torch.distributed` the sums and counts are all-reduced, so every process gets the global means.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from unlearn import distributed
from unlearn.distributed import shard
from unlearn.errors import UnlearnError
from unlearn.methods.budget import NO_BUDGET, Budget, ClassAccumulator, budgeted_data, budgeted_stream, checked_labels
from unlearn.models.inference import stream_outputs


@dataclass
class Prototypes:
    """Prototype matrix P (d x k, one column per kept class), the class id of each column, the number of
    samples behind each column and the standard error of each column's mean (NaN when unknown)."""

    matrix: torch.Tensor
    classes: list[int]
    counts: torch.Tensor
    stderr: torch.Tensor | None = None

    def columns(self, class_ids: list[int]) -> list[int]:
        """Column indices of the given class ids."""
        return [self.classes.index(c) for c in class_ids]

    def summary(self) -> dict:
        """Samples used and the relative standard error ‖SE‖ / ‖mean‖ per class (JSON-ready)."""
        norms = self.matrix.double().norm(dim=0).cpu()
        relative = (self.stderr / norms.clamp_min(1e-12)).tolist() if self.stderr is not None else None
        return {
            "classes": self.classes,
            "samples": [int(n) for n in self.counts.tolist()],
            "total_samples": int(self.counts.sum()),
            "relative_stderr": relative,
        }


class ClassSums(NamedTuple):
    """Per-class sums (k x d, float64), counts (k), and standard errors of the class means (k)."""

    sums: torch.Tensor
    counts: torch.Tensor
    stderr: torch.Tensor


@torch.no_grad()
def class_sums(
    features: nn.Module,
    data: Dataset | DataLoader,
    num_classes: int | None = None,
    batch_size: int = 256,
    progress: bool = False,
    budget: Budget = NO_BUDGET,
) -> ClassSums:
    """Per-class feature sums (float64, on the features' device), counts and standard errors.

    Features keep the model's dtype in the forward pass and are summed in float64. Labels stay on the
    host (checks and counts need no device sync); only the input batch goes to the device. Under
    `torch.distributed`, a Dataset is sharded across ranks and the sums and counts are all-reduced.
    `budget` caps the samples read per class (see methods/budget.py).
    """
    data, budget = budgeted_data(data, budget)
    accumulator = ClassAccumulator(budget, num_classes)
    stream = stream_outputs(features, shard(data), batch_size, desc="prototypes", progress=progress)
    norms = [z.flatten(1).norm(dim=1) for z, _ in budgeted_stream(checked_labels(stream, num_classes), accumulator)]
    if accumulator.sums is None:
        raise UnlearnError("the data given to collect prototypes is empty.")
    warn_outliers(torch.cat(norms).float().cpu())
    sums, counts, squares = accumulator.sums, accumulator.counts, accumulator.squares
    if distributed.active():
        sums, counts, squares = all_reduce_sums(sums, counts, squares)
        accumulator.sums, accumulator.counts, accumulator.squares = sums, counts, squares
    return ClassSums(sums, counts, accumulator.standard_errors())


OUTLIER_FACTOR = 100.0


def warn_outliers(norms: torch.Tensor, factor: float = OUTLIER_FACTOR) -> None:
    """Warn when some samples' features are `factor` times longer than the median: one corrupt input (e.g. a
    pixel at 1e6) drags its class prototype far away and the edit then damages the remain classes."""
    finite = norms[torch.isfinite(norms)]
    if len(finite) < 2:
        return
    median = float(finite.median())
    far = int((finite > factor * median).sum()) if median > 0 else 0
    if far:
        warnings.warn(
            f"{far} sample(s) have features over {factor:g}x the median feature norm ({median:.3g}): the "
            "inputs are far outside the training range and distort the prototypes; check or drop them.",
            stacklevel=4,
        )


def all_reduce_sums(
    sums: torch.Tensor, counts: torch.Tensor, squares: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Global per-class sums, counts and squared norms: ranks may have seen different largest class ids."""
    size = torch.tensor([len(sums)], device=sums.device)
    dist.all_reduce(size, op=dist.ReduceOp.MAX)
    missing = int(size) - len(sums)
    sums = torch.cat([sums, sums.new_zeros(missing, sums.shape[1])])
    counts = torch.cat([counts, counts.new_zeros(missing)]).to(sums.device)
    squares = torch.cat([squares, squares.new_zeros(missing)]).to(sums.device)
    for tensor in (sums, counts, squares):
        dist.all_reduce(tensor)
    return sums, counts.cpu(), squares.cpu()


def prototypes_from_sums(
    sums: torch.Tensor,
    counts: torch.Tensor,
    forget_classes: list[int],
    exclude: list[int] = (),
    stderr: torch.Tensor | None = None,
) -> Prototypes:
    """Divide sums by counts; forget classes without samples are an error, empty remain classes are dropped.

    `exclude` names classes to leave out (e.g. classes an earlier edit already forgot: they are neither
    kept nor remap targets).
    """
    finite = torch.isfinite(sums).all(dim=1)
    if not finite.all():
        bad = torch.nonzero(~finite).flatten().tolist()
        raise UnlearnError(
            f"features of classes {bad} contain NaN or inf; check the model's weights and inputs before unlearning."
        )
    missing_forget = [c for c in forget_classes if c >= len(counts) or counts[c] == 0]
    if missing_forget:
        raise UnlearnError(
            f"forget classes {missing_forget} have no samples in the data given to fit: "
            "pass data that contains the classes to forget."
        )
    present = [c for c in range(len(counts)) if counts[c] > 0 and c not in exclude]
    empty = [c for c in range(len(counts)) if counts[c] == 0 and c not in exclude]
    if empty:
        warnings.warn(f"classes {empty} have no samples and are left out of the prototypes.", stacklevel=3)
    if len(present) == len(forget_classes):
        raise UnlearnError("no remain class has samples: nothing to keep; pass data with remain classes too.")
    matrix = (sums[present] / counts[present, None].to(sums)).T.float()
    return Prototypes(
        matrix.contiguous(), present, counts[present].cpu(), None if stderr is None else stderr[present].cpu()
    )


def collect_prototypes(
    features: nn.Module,
    data: Dataset | DataLoader,
    forget_classes: list[int],
    num_classes: int | None = None,
    batch_size: int = 256,
    progress: bool = False,
    budget: Budget = NO_BUDGET,
) -> Prototypes:
    """Class-mean prototypes of `features` over `data` (one forward pass, or less with a `budget`)."""
    stats = class_sums(features, data, num_classes, batch_size, progress, budget)
    return prototypes_from_sums(stats.sums, stats.counts, forget_classes, stderr=stats.stderr)
