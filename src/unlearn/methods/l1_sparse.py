"""ℓ1-sparse unlearning (Jia et al., NeurIPS 2023): finetune on D_r with a decaying ℓ1 penalty.

    min_θ  E_{(x, y) ∈ D_r} CE(f_θ(x), y) + α_t ‖θ‖₁,    α_t = α · (1 − t / T)  for epoch t = 0..T−1

‖θ‖₁ sums |θ| over every parameter of the model (BatchNorm and biases included), as in the OPTML-Group
"Unlearn-Sparse" code (`FT_l1`: current_alpha = alpha · (1 − epoch / (unlearn_epochs − no_l1_epochs)),
with no_l1_epochs = 0 by default). Sparsity pushes weights that only D_f needed towards zero.

Defaults: lr 0.01 and 10 epochs are their l1-sparse command (`--unlearn FT_prune --unlearn_lr 0.01
--unlearn_epochs 10`); SGD momentum 0.9, weight decay 5e-4. α = 5e-4 is the value we were given for
their CIFAR-10 class-wise runs: their README leaves `--alpha ${alpha}` open, their arg_parser's 0.2 is a
shared default of the Fisher methods, and third-party reruns of this code use 1e-4.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from unlearn.data.splits import ForgetSplits
from unlearn.errors import UnlearnError
from unlearn.methods.base import TrainingUnlearner
from unlearn.models.train import cross_entropy


def l1_norm(model: nn.Module) -> torch.Tensor:
    """‖θ‖₁ over all parameters of the model."""
    return sum(p.abs().sum() for p in model.parameters())


class DecayingL1Loss:
    """CE + α_t ‖θ‖₁ with α_t decaying linearly per epoch; counts the loop's steps to know the epoch."""

    def __init__(self, alpha: float, epochs: int, steps_per_epoch: int) -> None:
        self.alpha, self.epochs, self.steps_per_epoch = alpha, epochs, steps_per_epoch
        self.step = 0

    def current_alpha(self) -> float:
        epoch = self.step // self.steps_per_epoch
        return self.alpha * (1 - epoch / self.epochs)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        alpha = self.current_alpha()
        self.step += 1
        return cross_entropy(model, x, y) + alpha * l1_norm(model)


class L1Sparse(TrainingUnlearner):
    """Finetune on D_r with an ℓ1 penalty on the weights whose strength decays linearly to 0."""

    name = "l1-sparse"

    def __init__(
        self,
        epochs: int = 10,
        lr: float = 0.01,
        alpha: float = 5e-4,
        batch_size: int = 128,
        weight_decay: float = 5e-4,
        schedule: str = "constant",
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        if not alpha >= 0:
            raise UnlearnError(f"l1-sparse needs alpha >= 0 (the initial ℓ1 weight, e.g. 5e-4), got {alpha}.")
        super().__init__(epochs, lr, batch_size, weight_decay, schedule, seed, progress)
        self.alpha = alpha

    def update(self, student: nn.Module, original: nn.Module, splits: ForgetSplits, head: str | None) -> None:
        steps_per_epoch = math.ceil(len(splits.D_r) / self.recipe.batch_size)
        self.fit_loop(student, splits.D_r, DecayingL1Loss(self.alpha, self.recipe.epochs, steps_per_epoch))
