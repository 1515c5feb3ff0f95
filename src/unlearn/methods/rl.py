"""Random Labels (RL, Golatkar et al. 2020; as in SalUn's code): fit the forget data to wrong labels.

    min_θ  E_{x ∈ D_f} CE(f_θ(x), ỹ)  [+ E_{(x, y) ∈ D_r} CE(f_θ(x), y)   if use_remain]
    ỹ ~ Uniform({0..K−1} \\ {y}), drawn once per sample with the method's seed

`use_remain=True` (default) trains on the shuffled union of the relabelled D_f and D_r, as SalUn's RL does
to keep remain accuracy (their CIFAR-10 branch runs the relabelled forget batches, then the remain
batches, each epoch; their CIFAR-100 branch shuffles the union like here). `use_remain=False` is the
"forget data only" RL the MoRE paper calls the usual practice.

Choices: ỹ never equals the true label (SalUn draws from all K classes, so ~1/K of its "random" labels
are correct) and is drawn once rather than per epoch, so a run is reproducible from its seed.
Defaults: 10 epochs and lr 0.01 are the `unlearn_epochs` / `unlearn_lr` defaults of SalUn's arg_parser
(OPTML-Group/Unlearn-Saliency); their README's lr 0.1 is for SalUn, which updates only the salient half
of the weights. SGD momentum 0.9, weight decay 5e-4.
"""

from __future__ import annotations

import torch
from torch import nn

from unlearn.data.base import LabeledConcat, Relabeled, targets_of
from unlearn.data.splits import ForgetSplits
from unlearn.methods.base import TrainingUnlearner


def random_other_labels(targets: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A label drawn uniformly from the K − 1 classes other than each sample's own."""
    offsets = torch.randint(0, num_classes - 1, targets.shape, generator=generator)
    return offsets + (offsets >= targets).long()


class RL(TrainingUnlearner):
    """Cross-entropy on D_f with random wrong labels, optionally together with D_r."""

    name = "RL"

    def __init__(
        self,
        epochs: int = 10,
        lr: float = 0.01,
        use_remain: bool = True,
        batch_size: int = 128,
        weight_decay: float = 5e-4,
        schedule: str = "constant",
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        super().__init__(epochs, lr, batch_size, weight_decay, schedule, seed, progress)
        self.use_remain = use_remain

    def relabeled_forget(self, splits: ForgetSplits) -> Relabeled:
        """D_f with one random wrong label per sample (deterministic given the seed)."""
        generator = torch.Generator().manual_seed(self.seed)
        labels = random_other_labels(targets_of(splits.D_f), splits.num_classes, generator)
        return Relabeled(splits.D_f, labels)

    def update(self, student: nn.Module, original: nn.Module, splits: ForgetSplits, head: str | None) -> None:
        forget = self.relabeled_forget(splits)
        self.fit_loop(student, LabeledConcat([forget, splits.D_r]) if self.use_remain else forget)
