"""LAU as the MoRE paper describes it (Appendix B.2): retrain the classification head, backbone frozen.

    z = h_ψ₀(x) (frozen),   min_φ  E_{(x, y) ∈ D_r} CE(g_φ(z), y),   φ re-initialised when `reinit`

A head that never sees D_f during retraining stops predicting the forget classes, while the features
h_ψ₀ keep all of their information (the residual knowledge that KR probes recover).

This is the MoRE paper's one-line description, not the full Layer Attack Unlearning of Kim et al.
(AAAI 2024, with a layer-level adversarial attack and distillation). The backbone is run once in eval
mode to cache the head's inputs on D_r (so BatchNorm statistics of the backbone stay fixed too), then
the head alone is trained on them with the shared training loop.
Chosen (no author values exist for this variant): lr 0.01 and 10 epochs, the FT recipe of the
OPTML-Group code; SGD momentum 0.9, weight decay 5e-4; the head's nn.Linear layers are re-initialised
with PyTorch's default init, seeded by the method's seed.
"""

from __future__ import annotations

import torch
from torch import nn

from unlearn.data.base import LabeledTensors
from unlearn.data.splits import ForgetSplits
from unlearn.methods.base import TrainingUnlearner
from unlearn.models.inference import collect_outputs
from unlearn.models.split import split_model


def reset_linear_layers(head: nn.Module, seed: int) -> None:
    """Re-draw the weights of every nn.Linear in `head` with PyTorch's default init."""
    torch.manual_seed(seed)
    for module in head.modules():
        if isinstance(module, nn.Linear):
            module.reset_parameters()


class LAU(TrainingUnlearner):
    """Train only the head on D_r on top of frozen features; the head starts fresh when `reinit`."""

    name = "LAU"

    def __init__(
        self,
        epochs: int = 10,
        lr: float = 0.01,
        reinit: bool = True,
        batch_size: int = 128,
        weight_decay: float = 5e-4,
        schedule: str = "constant",
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        super().__init__(epochs, lr, batch_size, weight_decay, schedule, seed, progress)
        self.reinit = reinit

    def update(self, student: nn.Module, original: nn.Module, splits: ForgetSplits, head: str | None) -> None:
        features, head_module = split_model(student, head)  # both share the student's weights
        z, y = collect_outputs(features, splits.D_r, desc="LAU features", progress=self.progress)
        if self.reinit:
            reset_linear_layers(head_module, self.seed)
        self.fit_loop(head_module, LabeledTensors(z, y))
