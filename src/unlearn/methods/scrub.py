"""SCRUB (Kurmanji et al., NeurIPS 2023): a student that stays close to its teacher on D_r and moves away on D_f.

    KL_T(x) = T² · KL( softmax(f_teacher(x)/T) ‖ softmax(f_student(x)/T) )
    max-step (epoch e < max_step_epochs, on D_f):  min_θ  − E_{D_f} KL_T
    min-step (every epoch, on D_r):               min_θ  α · E_{D_r} KL_T + γ · E_{D_r} CE(f_student(x), y)

The teacher is a frozen copy of the original model in eval mode; the student starts as another copy.
Each epoch runs its max-step pass (while e < max_step_epochs) and then its min-step pass, each pass one
call of the shared training loop: SGD (momentum 0.9, Nesterov) and its momentum restart at every pass,
where the official code keeps one optimizer across passes. Each pass reshuffles with seed + epoch.

Defaults are the CIFAR-10 class-wise ("large scale") SCRUB setting of the official code
(meghdadk/SCRUB, large_scale_unlearning.ipynb): sgda_epochs 3, msteps 2 (max-steps in epochs 1-2),
kd_T 4, alpha 0.001, gamma 0.99, beta 0, sgda_learning_rate 5e-4 (its decay epochs [3, 5, 9] never
trigger within 3 epochs, so the lr is constant), weight decay 5e-4, momentum 0.9; the notebook's
loaders use batch 512 on D_f and 256 on D_r (its `sgda_batch_size` 128 / `del_batch_size` 32 are unused
there). On a small forget set this lr makes only a handful of max-steps: raise lr / max_step_epochs per
dataset in the config.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from unlearn.data.splits import ForgetSplits
from unlearn.errors import UnlearnError
from unlearn.methods.base import TrainingUnlearner


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(p_teacher ‖ p_student) at temperature T, averaged over the batch (RepDistiller's DistillKL)."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    teacher = F.softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_student, teacher, reduction="batchmean") * temperature**2


class SCRUB(TrainingUnlearner):
    """Alternate max-steps on D_f and min-steps on D_r against the frozen original model."""

    name = "SCRUB"

    def __init__(
        self,
        epochs: int = 3,
        max_step_epochs: int = 2,
        lr: float = 5e-4,
        alpha: float = 0.001,
        gamma: float = 0.99,
        temperature: float = 4.0,
        batch_size: int = 256,
        forget_batch_size: int = 512,
        weight_decay: float = 5e-4,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        if epochs < 1 or not 0 <= max_step_epochs <= epochs:
            raise UnlearnError(
                f"SCRUB needs epochs >= 1 and 0 <= max_step_epochs <= epochs, got {epochs} and {max_step_epochs}."
            )
        if temperature <= 0:
            raise UnlearnError(f"SCRUB temperature must be > 0, got {temperature}.")
        if alpha < 0 or gamma < 0 or alpha + gamma == 0:
            raise UnlearnError(f"SCRUB needs alpha, gamma >= 0, not both 0; got alpha={alpha}, gamma={gamma}.")
        if lr <= 0 or batch_size < 1 or forget_batch_size < 1:
            raise UnlearnError(
                f"SCRUB needs lr > 0 and batch sizes >= 1, got lr={lr}, batch_size={batch_size}, "
                f"forget_batch_size={forget_batch_size}."
            )
        super().__init__(1, lr, batch_size, weight_decay, "constant", seed, progress)
        self.epochs, self.max_step_epochs = epochs, max_step_epochs
        self.alpha, self.gamma, self.temperature = alpha, gamma, temperature
        self.forget_batch_size = forget_batch_size

    def update(self, student: nn.Module, original: nn.Module, splits: ForgetSplits, head: str | None) -> None:
        teacher = copy.deepcopy(original).eval().requires_grad_(False)

        def teacher_logits(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return teacher(x)

        def max_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return -distill_kl(model(x), teacher_logits(x), self.temperature)

        def min_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            logits = model(x)
            kl = distill_kl(logits, teacher_logits(x), self.temperature)
            return self.alpha * kl + self.gamma * F.cross_entropy(logits, y)

        for epoch in range(self.epochs):
            seed = self.seed + epoch
            if epoch < self.max_step_epochs:
                self.fit_loop(student, splits.D_f, max_step, batch_size=self.forget_batch_size, seed=seed)
            self.fit_loop(student, splits.D_r, min_step, seed=seed)
