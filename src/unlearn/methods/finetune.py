"""Finetune (FT, Warnecke et al. 2021): keep training the model on the remain data only.

    min_θ  E_{(x, y) ∈ D_r} CE(f_θ(x), y)

Forgetting comes only from the drift away from D_f while D_r is refit ("catastrophic forgetting"),
so it needs a large enough lr: with too small a step D_f stays recognised.

Defaults: lr 0.01 and 10 epochs are the CIFAR-10 class-wise FT command of the OPTML-Group code
(Unlearn-Sparse / Unlearn-Saliency README: `--unlearn FT --unlearn_lr 0.01 --unlearn_epochs 10`);
SGD momentum 0.9 and weight decay 5e-4 as in their arg_parser. Batch size 128 as in the Unlearn-Sparse
paper's Table A1 (their arg_parser says 256). Constant lr (chosen: their MultiStepLR milestones
91,136 are never reached in 10 epochs, so their lr is constant too).
"""

from __future__ import annotations

from torch import nn

from unlearn.data.splits import ForgetSplits
from unlearn.methods.base import TrainingUnlearner


class Finetune(TrainingUnlearner):
    """Cross-entropy on D_r only, starting from the original weights."""

    name = "Finetune"

    def __init__(
        self,
        epochs: int = 10,
        lr: float = 0.01,
        batch_size: int = 128,
        weight_decay: float = 5e-4,
        schedule: str = "constant",
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        super().__init__(epochs, lr, batch_size, weight_decay, schedule, seed, progress)

    def update(self, student: nn.Module, original: nn.Module, splits: ForgetSplits, head: str | None) -> None:
        self.fit_loop(student, splits.D_r)
