"""What every feature-level edit shares: a module inserted between h and g, optionally absorbed into g."""

from __future__ import annotations

import copy

import torch
from torch import nn

from unlearn.data.splits import validate_forget_classes
from unlearn.errors import UnlearnError
from unlearn.eval.cost import CostMeter
from unlearn.models.split import find_head, get_module, replace_module, with_edit


class LinearEdit(nn.Module):
    """ẑ = E z over the last dimension of the features, for a fixed d x d matrix E."""

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("matrix", matrix)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.matrix.T


def absorb_into_head(head: nn.Module, matrix: torch.Tensor) -> nn.Module:
    """A copy of `head` whose first Linear has weight W E, so g(E z) costs nothing extra."""
    head = copy.deepcopy(head)
    first = head if isinstance(head, nn.Linear) else next((m for m in head.modules() if isinstance(m, nn.Linear)), None)
    if first is None:
        raise UnlearnError(f"cannot absorb the edit: the head {type(head).__name__} has no nn.Linear.")
    if first.in_features != matrix.shape[0]:
        raise UnlearnError(f"cannot absorb a {matrix.shape[0]}-d edit into a Linear with {first.in_features} inputs.")
    with torch.no_grad():
        first.weight.copy_(first.weight @ matrix.to(first.weight))
    return head


class FeatureEdit:
    """Base of training-free feature edits: `fit` builds `self.layer`, `apply` inserts it into a model."""

    name = "edit"
    layer: nn.Module | None = None

    def __init__(self) -> None:
        self.cost = CostMeter()
        self.forget_classes: list[int] = []

    def _check_forget_classes(self, forget_classes, num_classes: int) -> list[int]:
        self.forget_classes = validate_forget_classes(forget_classes, num_classes)
        return self.forget_classes

    def linear_matrix(self) -> torch.Tensor | None:
        """The d x d matrix of a linear edit, or None when the edit is not linear."""
        return self.layer.matrix if isinstance(self.layer, LinearEdit) else None

    def apply(self, model: nn.Module, head: str | None = None, absorb: bool = False) -> nn.Module:
        """The unlearned model: same inputs and logits as `model`, which is left unchanged.

        absorb=True folds a linear edit into the head's first Linear (W' = W E) instead of adding a layer.
        """
        if self.layer is None:
            raise UnlearnError(f"{self.name}.apply was called before fit(); fit the edit first.")
        if not absorb:
            return with_edit(model, copy.deepcopy(self.layer), head)
        matrix = self.linear_matrix()
        if matrix is None:
            raise UnlearnError(
                f"{self.name} with stochastic experts is not linear and cannot be absorbed; "
                "use num_experts=1 (Remap/Erase) or absorb=False."
            )
        name = find_head(model, head)
        return replace_module(model, name, absorb_into_head(get_module(model, name), matrix))
