"""Boundary Shrinking (BS, Chen et al. CVPR 2023): relabel each forget sample as its nearest wrong class.

    x' = x + ε · sign(∇_x CE(f_θ₀(x), y))                    one FGSM step against the frozen original θ₀
    y_nb = argmax_{c ≠ y} f_θ₀(x')_c                          the "nearest but incorrect" class
    min_θ  E_{(x, y) ∈ D_f} CE(f_θ(x), y_nb)                  finetune on the clean x

The decision boundary of the forget class shrinks onto its neighbours, which is where a retrained model
would send those samples. Neighbour labels depend only on the frozen original, so they are computed once
(the authors recompute the same labels every batch).

Choices: the true class is masked out of the argmax; the authors' code takes the plain argmax, so a
sample whose FGSM step did not cross a boundary keeps its own label and is trained to stay correct.
No clamping of x' to [0, 1] and no 1/255 discretisation (inputs here are not always 8-bit images).
The original is used in eval mode (BatchNorm with running statistics), as in their code.
Defaults: ε = `bound` = 0.1 (L∞), lr 1e-5, 10 epochs, SGD momentum 0.9 are the Boundary Unlearning
code's values (also "hard coding in the paper" in OPTML-Group's port; the paper: "a learning rate of
1e-5 for 10 epochs"). Weight decay 0 as in their code (OPTML-Group's port adds 5e-4). This lr is tiny:
on small forget sets (few batches per epoch) the model hardly moves; raise it per dataset in the config.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from unlearn.data.base import Relabeled
from unlearn.data.splits import ForgetSplits
from unlearn.errors import UnlearnError
from unlearn.methods.base import TrainingUnlearner
from unlearn.runtime import eval_mode, module_device


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bound: float) -> torch.Tensor:
    """One L∞ step of size `bound` up the cross-entropy of the true label (gradients w.r.t. x only)."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return (x + bound * grad.sign()).detach()


def nearest_wrong_labels(original: nn.Module, data: Dataset, bound: float, batch_size: int = 256) -> torch.Tensor:
    """For every sample, the original's top class other than the true one at its FGSM point."""
    device = module_device(original)
    labels = []
    with eval_mode(original), torch.enable_grad():
        for x, y in DataLoader(data, batch_size=batch_size, shuffle=False):
            x, y = x.to(device), y.to(device)
            x_adv = fgsm(original, x, y, bound)
            with torch.no_grad():
                logits = original(x_adv)
            logits[torch.arange(len(y), device=device), y] = -torch.inf
            labels.append(logits.argmax(1).cpu())
    return torch.cat(labels)


class BS(TrainingUnlearner):
    """Finetune on D_f relabelled with each sample's nearest wrong class under an FGSM step."""

    name = "BS"

    def __init__(
        self,
        epochs: int = 10,
        lr: float = 1e-5,
        bound: float = 0.1,
        batch_size: int = 128,
        weight_decay: float = 0.0,
        schedule: str = "constant",
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        if not bound > 0:
            raise UnlearnError(f"BS needs bound > 0 (the L∞ size of the FGSM step, e.g. 0.1), got {bound}.")
        super().__init__(epochs, lr, batch_size, weight_decay, schedule, seed, progress)
        self.bound = bound

    def neighbour_labels(self, original: nn.Module, splits: ForgetSplits) -> torch.Tensor:
        return nearest_wrong_labels(original, splits.D_f, self.bound)

    def update(self, student: nn.Module, original: nn.Module, splits: ForgetSplits, head: str | None) -> None:
        self.fit_loop(student, Relabeled(splits.D_f, self.neighbour_labels(original, splits)))
