"""What every method shares: `unlearn(model, splits, head)` returns a new model and leaves the input unchanged.

The model contract (docs/contract.md): neither `fit` nor `apply`/`unlearn` changes the input model (its state,
requires_grad, the train/eval flag of every submodule, hooks, grads), and the returned model is a deep copy
that shares nothing with the input, unless `apply(..., share_weights=True)` asks to reuse its modules.

Two kinds: a `FeatureEdit` inserts a module between the feature extractor h and the head g (optionally
absorbed into g); a `TrainingUnlearner` trains a copy of the model with the one training loop.
"""

from __future__ import annotations

import copy
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import replace

import torch
from torch import nn

from unlearn.data.splits import ForgetSplits, validate_forget_classes
from unlearn.errors import Params, UnlearnError
from unlearn.eval.cost import CostMeter
from unlearn.methods.inner import ActivationAt, insert_inner_edit
from unlearn.models.split import (
    EditedHead,
    find_head,
    get_module,
    independent_copy,
    replace_module,
    split_model,
    with_edit,
)
from unlearn.models.train import LossFn, TrainConfig, cross_entropy, train
from unlearn.validate import checked_fit, checked_init


class LinearEdit(nn.Module):
    """ẑ = E z over the last dimension of the features, for a fixed d x d matrix E."""

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("matrix", matrix)

    @property
    def feature_dim(self) -> int:
        return self.matrix.shape[0]

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


@checked_init
class FeatureEdit(Params, ABC):
    """Base of training-free feature edits: `fit` builds `self.layer`, `apply` inserts it into a model."""

    name = "edit"
    layer: nn.Module | None = None
    uses_head = False  # True: `unlearn` hands the model's own head to `fit` (as `self.head`) as a detector or gate

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        checked_init(cls)  # every argument's type and range (unlearn.validate) before __init__ runs
        checked_fit(cls)

    def __init__(self, module: str | None = None, pool: bool = False) -> None:
        self.cost = CostMeter()
        self.forget_classes: list[int] = []
        self.module, self.pool = module, pool  # edit this module's output instead of the head's input

    @property
    def at_head(self) -> bool:
        """Whether the edit sits in front of the head (then the features before it are the Original's)."""
        return self.module is None

    def _check_forget_classes(self, forget_classes, num_classes: int) -> list[int]:
        self.forget_classes = validate_forget_classes(forget_classes, num_classes)
        return self.forget_classes

    @abstractmethod
    def fit(
        self, features: nn.Module, data, forget_classes, num_classes: int | None = None, exclude: list[int] = ()
    ) -> FeatureEdit:
        """Build `self.layer` from `features` over `data` (forget and remain samples)."""

    def unlearn(self, model: nn.Module, splits: ForgetSplits, head: str | None = None) -> nn.Module:
        """Fit on the training set D_f ∪ D_r as seen by the model's features, then insert the edit.

        On a model that an earlier edit already made forget some classes, the new edit is fit on the
        edited features with those classes left out of the prototypes, so forgetting a and later b
        matches forgetting {a, b} at once; a class that is already forgotten is skipped with a warning
        (and when nothing is left to do, the result is a copy of `model`).
        """
        done = forgotten_classes(model, head)
        again = [c for c in splits.forget_classes if c in done]
        if again:
            warnings.warn(
                f"classes {again} are already forgotten by an edit of this model; skipping them.", stacklevel=2
            )
        todo = [c for c in splits.forget_classes if c not in done]
        if not todo:
            return independent_copy(model)
        if not self.at_head:  # an inner layer (paper Table 7)
            self.fit(ActivationAt(model, self.module, self.pool), splits.train(), todo, splits.num_classes)
            return insert_inner_edit(model, self.module, copy.deepcopy(self.layer), self.pool)
        features, model_head = split_model(model, head)
        if self.uses_head:
            self.head = model_head
        self.fit(features, splits.train(), todo, splits.num_classes, exclude=done)
        return self.apply(model, head)

    def linear_matrix(self) -> torch.Tensor | None:
        """The d x d matrix of a linear edit, or None when the edit is not linear."""
        return None if self.layer is None else linear_matrix(self.layer)

    def apply(
        self, model: nn.Module, head: str | None = None, absorb: bool = False, share_weights: bool = False
    ) -> nn.Module:
        """The unlearned model: same inputs and logits as `model`, which is left unchanged.

        absorb=True folds a linear edit into the head's first Linear (W' = W E) instead of adding a layer.
        The result is a deep copy of `model` with the edit inserted; share_weights=True reuses `model`'s
        submodules instead (no second copy of the weights, but flags, hooks and weight updates are then shared).
        """
        if self.layer is None:
            raise UnlearnError(f"{self.name}.apply was called before fit(); fit the edit first.")
        return insert_edit(model, copy.deepcopy(self.layer), head, absorb, share_weights)


def forgotten_classes(model: nn.Module, head: str | None = None) -> list[int]:
    """Classes that the edits already inserted in `model` forget (MoRE layers record them)."""
    module = get_module(model, find_head(model, head))
    if not isinstance(module, EditedHead):
        return []
    return sorted({c for layer in module.edit.modules() for c in getattr(layer, "forget_classes", [])})


def linear_matrix(layer: nn.Module) -> torch.Tensor | None:
    """The d x d matrix of a linear edit layer (LinearEdit, or a single-expert MoRE layer), else None."""
    if isinstance(layer, LinearEdit):
        return layer.matrix
    if callable(getattr(layer, "experts", None)) and getattr(layer, "num_experts", 0) == 1:
        return layer.experts()[0]
    return None


def insert_edit(
    model: nn.Module, layer: nn.Module, head: str | None = None, absorb: bool = False, share_weights: bool = False
) -> nn.Module:
    """A copy of `model` with `layer` between its features and its head, or folded into the head when `absorb`.

    A deep copy unless `share_weights` (see `unlearn.models.split`). Errors clearly when the layer's feature
    size does not match the head's input, or when a stochastic (non-linear) edit is asked to be absorbed.
    """
    name = find_head(model, head)
    target = get_module(model, name)
    first = (
        target
        if isinstance(target, nn.Linear)
        else next((m for m in target.modules() if isinstance(m, nn.Linear)), None)
    )
    dim = getattr(layer, "feature_dim", None)
    if first is not None and dim is not None and first.in_features != dim:
        raise UnlearnError(f"the edit works on {dim}-d features but the head {name!r} takes {first.in_features}.")
    if not absorb:
        return with_edit(model, layer, head, share_weights)
    matrix = linear_matrix(layer)
    if matrix is None:
        raise UnlearnError(
            "an edit with stochastic experts is not linear and cannot be absorbed; "
            "use num_experts=1 (Remap/Erase) or absorb=False."
        )
    model = model if share_weights else independent_copy(model)
    return replace_module(model, name, absorb_into_head(get_module(model, name), matrix))


@checked_init
class TrainingUnlearner(Params, ABC):
    """Base of the training baselines: `unlearn` trains a copy of the model, the input model is never changed.

    Every baseline runs the one training loop (`unlearn.models.train.train`): SGD with momentum 0.9 and
    weight decay 5e-4 as in the OPTML-Group unlearning code, no warm-up, and a constant lr unless the
    method's `schedule` says cosine. Subclasses implement `update(student, original, splits, head)`.
    """

    name = "unlearner"

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        checked_init(cls)  # every argument's type and range (unlearn.validate) before __init__ runs

    def __init__(
        self,
        epochs: int,
        lr: float,
        batch_size: int = 128,
        weight_decay: float = 5e-4,
        schedule: str = "constant",
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        self.recipe = TrainConfig(
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            optimizer="sgd",
            weight_decay=weight_decay,
            schedule=schedule,
            warmup_epochs=0,
            seed=seed,
        )
        self.seed, self.progress = seed, progress
        self.cost = CostMeter()

    def unlearn(self, model: nn.Module, splits: ForgetSplits, head: str | None = None) -> nn.Module:
        """A trained copy of `model` that should no longer recognise `splits.forget_classes`."""
        if len(splits.D_f) == 0:
            raise UnlearnError(f"{self.name}: the forget set is empty; there is nothing to unlearn.")
        student = independent_copy(model)
        with self.cost.phase("unlearn"):
            self.update(student, model, splits, head)
        return student.eval()

    @abstractmethod
    def update(self, student: nn.Module, original: nn.Module, splits: ForgetSplits, head: str | None) -> None:
        """Train `student` (a copy of `original`) in place so that it forgets."""

    def fit_loop(
        self,
        model: nn.Module,
        dataset,
        loss_fn: LossFn = cross_entropy,
        params: Iterable[nn.Parameter] | None = None,
        **recipe_overrides,
    ) -> nn.Module:
        """The shared training loop with this method's recipe (fields of `TrainConfig` may be overridden)."""
        recipe = replace(self.recipe, **recipe_overrides)
        return train(model, dataset, recipe, loss_fn, params, self.progress, desc=self.name)
