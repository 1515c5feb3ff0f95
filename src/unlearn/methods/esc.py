"""ESC (Lee et al., 2025): prune the top-k left singular vectors of the forget features.

    Z_f = [h(x) for x in D_f] (d x N_f, not centred),  Z_f = U Σ Vᵀ,  ẑ = (I − U_k U_kᵀ) z

k defaults to the official code's rule k = max(1, int(d · percent / 100)) with percent = 1.5;
alternatively `explained_variance=τ` picks the smallest k whose singular values carry a fraction
τ of Σσ², or `k` fixes it. Features come from the model in eval mode on clean (unaugmented)
inputs; the official code uses train-mode BatchNorm and augmented inputs (not offered here).
Unlike MoRE, ESC stores all forget features: its memory grows with N_f.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from unlearn.data.splits import ForgetSplits
from unlearn.errors import UnlearnError
from unlearn.methods.base import FeatureEdit, LinearEdit
from unlearn.methods.budget import NO_BUDGET, Budget, collect_budgeted
from unlearn.models.inference import collect_outputs
from unlearn.models.split import split_model
from unlearn.validate import class_ids


def forget_features(
    features: nn.Module,
    data: Dataset | DataLoader,
    forget_classes: list[int],
    batch_size: int = 256,
    progress: bool = False,
    budget: Budget = NO_BUDGET,
) -> tuple[torch.Tensor, int]:
    """Features of forget-class samples (N_f x d; at most the budget's cap per class) and the number of
    classes seen (from the dataset's targets when it has them, else from the labels read)."""
    z, y, _ = collect_budgeted(
        features, data, budget, None, batch_size, "ESC features", progress, classes=list(forget_classes)
    )
    targets = getattr(data, "targets", None)
    num_seen = int(torch.as_tensor(targets).max()) + 1 if targets is not None and len(targets) else int(y.max()) + 1
    return z[torch.isin(y, torch.tensor(forget_classes))].double(), num_seen


def choose_rank(sigma: torch.Tensor, dim: int, percent: float, explained_variance: float | None, k: int | None) -> int:
    """Number of directions to prune: fixed k, explained-variance threshold, or d · percent / 100."""
    if k is not None:
        return min(k, len(sigma))
    if explained_variance is not None:
        energy = torch.cumsum(sigma**2, 0) / (sigma**2).sum()
        return int(torch.searchsorted(energy, torch.tensor(explained_variance, dtype=energy.dtype))) + 1
    return max(1, int(dim * percent / 100))


class ESC(FeatureEdit):
    """Erase the principal subspace of the forget features (training-free baseline)."""

    name = "ESC"

    def __init__(
        self,
        percent: float = 1.5,
        explained_variance: float | None = None,
        k: int | None = None,
        batch_size: int = 256,
        progress: bool = False,
        max_per_class: int | None = None,
        tol: float | None = None,
        seed: int = 0,
    ) -> None:
        """`max_per_class` / `tol`: the sample budget for the forget features (methods/budget.py); `seed` draws it."""
        super().__init__()
        self.max_per_class, self.tol, self.seed = max_per_class, tol, seed
        self.budget = Budget(max_per_class, tol, seed=seed)
        self.percent, self.explained_variance, self.k = percent, explained_variance, k
        self.batch_size, self.progress = batch_size, progress
        self.rank = 0
        self.samples: dict | None = None  # forget samples read under the budget

    def fit(
        self,
        features: nn.Module,
        data: Dataset | DataLoader,
        forget_classes: list[int],
        num_classes: int | None = None,
        exclude: list[int] = (),
    ) -> ESC:
        """Collect forget features, take their SVD and build the pruning projector.

        `exclude` (classes an earlier edit forgot) changes nothing here: ESC looks at forget features only.
        """
        forget_classes = class_ids(forget_classes)  # before they index anything
        with self.cost.phase("features"):
            z_f, num_seen = forget_features(features, data, forget_classes, self.batch_size, self.progress, self.budget)
        self._check_forget_classes(forget_classes, num_classes or num_seen)
        if len(z_f) == 0:
            raise UnlearnError(f"no samples of forget classes {self.forget_classes} in the data given to ESC.fit.")
        self.samples = {"forget_samples": len(z_f)}
        return self._prune(z_f)

    def unlearn(self, model: nn.Module, splits: ForgetSplits, head: str | None = None) -> nn.Module:
        """Class-wise as `FeatureEdit.unlearn`; on a sample-wise split the forget features are those of D_f."""
        if splits.forget_classes:
            return super().unlearn(model, splits, head)
        features, _ = split_model(model, head)
        with self.cost.phase("features"):
            z_f = collect_outputs(features, splits.D_f, self.batch_size)[0].flatten(1).double()
        return self._prune(z_f).apply(model, head)

    def _prune(self, z_f: torch.Tensor) -> ESC:
        """SVD of the forget features (N_f x d) and the projector that removes their top-k directions."""
        if not torch.isfinite(z_f).all():
            raise UnlearnError("forget features contain NaN or inf; check the model before unlearning.")
        with self.cost.phase("svd"):
            u, sigma, _ = torch.linalg.svd(z_f.T, full_matrices=False)
            self.rank = choose_rank(sigma, z_f.shape[1], self.percent, self.explained_variance, self.k)
            u_k = u[:, : self.rank]
            projector = torch.eye(z_f.shape[1], dtype=u.dtype, device=u.device) - u_k @ u_k.T
        self.layer = LinearEdit(projector.float())
        return self
