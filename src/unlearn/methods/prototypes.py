"""Class prototypes P[:, c] = mean of h(x) over class c, in one streaming pass (MORE.md §1).

Only per-class sums (k x d) and counts (k) are kept: memory O(k·d), time O(N·d). Under
`torch.distributed` the sums and counts are all-reduced, so every process gets the global means.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from unlearn import distributed
from unlearn.distributed import shard
from unlearn.errors import UnlearnError
from unlearn.models.inference import stream_outputs


@dataclass
class Prototypes:
    """Prototype matrix P (d x k, one column per kept class) and the class id of each column."""

    matrix: torch.Tensor
    classes: list[int]
    counts: torch.Tensor

    def columns(self, class_ids: list[int]) -> list[int]:
        """Column indices of the given class ids."""
        return [self.classes.index(c) for c in class_ids]


@torch.no_grad()
def class_sums(
    features: nn.Module,
    data: Dataset | DataLoader,
    num_classes: int | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class feature sums (k x d, float64, on the features' device) and counts (k, float64).

    Features keep the model's dtype in the forward pass and are summed in float64. Labels stay on the
    host (checks and counts need no device sync); only the input batch and its labels go to the device.
    Under `torch.distributed`, a Dataset is sharded across ranks and the sums and counts are all-reduced.
    """
    sums = counts = None
    norms = []
    for z, y in stream_outputs(features, shard(data), batch_size, desc="prototypes", progress=progress):
        z = z.flatten(1).double()
        y = y.cpu()
        norms.append(z.norm(dim=1))  # stays on the device: no sync per batch
        if len(y) and (int(y.min()) < 0 or (num_classes is not None and int(y.max()) >= num_classes)):
            allowed = "0 or more" if num_classes is None else f"within 0..{num_classes - 1}"
            raise UnlearnError(f"labels {int(y.min())}..{int(y.max())} must be {allowed}; check num_classes.")
        needed = int(y.max()) + 1 if num_classes is None else num_classes
        if sums is None:
            sums = z.new_zeros(needed, z.shape[1])
            counts = torch.zeros(needed, dtype=torch.float64)
        elif needed > len(sums):  # labels seen so far did not reach the largest class id
            sums = torch.cat([sums, sums.new_zeros(needed - len(sums), sums.shape[1])])
            counts = torch.cat([counts, counts.new_zeros(needed - len(counts))])
        sums.index_add_(0, y.to(z.device, non_blocking=True), z)
        counts += torch.bincount(y, minlength=len(counts)).double()
    if sums is None:
        raise UnlearnError("the data given to collect prototypes is empty.")
    warn_outliers(torch.cat(norms).float().cpu())
    if distributed.active():
        sums, counts = all_reduce_sums(sums, counts)
    return sums, counts


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


def all_reduce_sums(sums: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Global per-class sums and counts: ranks may have seen different largest class ids, so pad first."""
    size = torch.tensor([len(sums)], device=sums.device)
    dist.all_reduce(size, op=dist.ReduceOp.MAX)
    missing = int(size) - len(sums)
    sums = torch.cat([sums, sums.new_zeros(missing, sums.shape[1])])
    counts = torch.cat([counts, counts.new_zeros(missing)]).to(sums.device)
    dist.all_reduce(sums)
    dist.all_reduce(counts)
    return sums, counts.cpu()


def prototypes_from_sums(
    sums: torch.Tensor, counts: torch.Tensor, forget_classes: list[int], exclude: list[int] = ()
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
    return Prototypes(matrix.contiguous(), present, counts[present].cpu())


def collect_prototypes(
    features: nn.Module,
    data: Dataset | DataLoader,
    forget_classes: list[int],
    num_classes: int | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> Prototypes:
    """Class-mean prototypes of `features` over `data` (one forward pass)."""
    sums, counts = class_sums(features, data, num_classes, batch_size, progress)
    return prototypes_from_sums(sums, counts, forget_classes)
