"""Negative Gradient (NG / GA, Thudi et al. 2022): gradient ascent on the forget data.

    min_θ  − E_{(x, y) ∈ D_f} CE(f_θ(x), y)

The loss is unbounded below: too many steps or too large an lr blow the weights up (the training loop
then stops with an error naming the lr), and nothing holds D_r in place, so remain accuracy can fall.

Defaults: lr 1e-4 and 5 epochs are the CIFAR-10 GA command of the OPTML-Group code (Unlearn-Sparse /
Unlearn-Saliency README: `--unlearn GA --unlearn_lr 0.0001 --unlearn_epochs 5`), SGD momentum 0.9,
weight decay 5e-4. On a small forget set (few batches per epoch) this lr barely moves the model;
raise it per dataset in the config.
"""

from __future__ import annotations

import torch
from torch import nn

from unlearn.data.splits import ForgetSplits
from unlearn.methods.base import TrainingUnlearner
from unlearn.models.train import cross_entropy


def negative_cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -cross_entropy(model, x, y)


class NG(TrainingUnlearner):
    """Maximise the cross-entropy of D_f (minimise its negative)."""

    name = "NG"

    def __init__(
        self,
        epochs: int = 5,
        lr: float = 1e-4,
        batch_size: int = 128,
        weight_decay: float = 5e-4,
        schedule: str = "constant",
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        super().__init__(epochs, lr, batch_size, weight_decay, schedule, seed, progress)

    def update(self, student: nn.Module, original: nn.Module, splits: ForgetSplits, head: str | None) -> None:
        self.fit_loop(student, splits.D_f, negative_cross_entropy)
