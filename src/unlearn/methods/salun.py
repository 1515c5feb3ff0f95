"""SalUn (Fan et al., ICLR 2024): Random Labels, but only on the weights most salient for the forget data.

    saliency  s = | Σ_batches ∇_θ CE(f_θ(x_f), y_f) |            (the NG loss gradient over D_f, model in eval mode)
    mask      m = 1[s among the top `threshold` fraction of all weights]   (one global hard threshold)
    update    min_θ  E_{D_f} CE(f_θ(x), ỹ) + E_{D_r} CE(f_θ(x), y),   θ ← θ − lr · m ⊙ (SGD step)

ỹ is a random label other than the true one, drawn once per sample with the method's seed (`rl.py`).
Only masked weights move: a tensor hook multiplies each gradient by its mask, and weight decay is added
to the loss as (wd / 2)·‖θ‖² (so it is masked too) instead of inside SGD, whose decoupled
`weight_decay` would still shrink a weight whose gradient is zero. Unmasked weights, and whole tensors
without any salient entry, stay bit-identical (the official code restores them after every step).

Defaults (OPTML-Group/Unlearn-Saliency, Classification): threshold 0.5 (README's `mask/with_0.5.pt`,
sweep 0.1-1.0), 10 epochs and lr 0.013 (README example, ResNet-18 CIFAR-10; an older README version
says lr 0.1), batch 256 (arg_parser), SGD momentum 0.9, weight decay 5e-4, constant lr (their decay
milestones 91, 136 never trigger in 10 epochs). Chosen: the relabelled D_f and D_r are shuffled together
(their CIFAR-100 branch; their CIFAR-10 branch runs the forget batches, then the remain batches).
"""

from __future__ import annotations

import torch
from torch import nn

from unlearn.data.base import LabeledConcat, Relabeled, targets_of
from unlearn.data.splits import ForgetSplits
from unlearn.errors import UnlearnError
from unlearn.methods.base import TrainingUnlearner
from unlearn.methods.rl import random_other_labels
from unlearn.models.inference import loader_of
from unlearn.models.train import cross_entropy
from unlearn.runtime import eval_mode, module_device


def forget_gradients(model: nn.Module, forget, batch_size: int) -> dict[str, torch.Tensor]:
    """Σ over batches of ∇_θ CE on the forget data (batch means, model in eval mode), per named parameter."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    sums = {name: torch.zeros_like(p) for name, p in params.items()}
    device = module_device(model)
    with eval_mode(model):
        for x, y in loader_of(forget, batch_size):
            loss = cross_entropy(model, x.to(device), y.to(device))
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for name, grad in zip(params, grads, strict=True):
                if grad is not None:
                    sums[name] += grad
    return sums


def saliency_masks(gradients: dict[str, torch.Tensor], threshold: float) -> dict[str, torch.Tensor]:
    """Boolean masks keeping the `threshold` fraction of weights with the largest |gradient| (global ranking)."""
    saliency = torch.cat([g.abs().flatten() for g in gradients.values()])
    keep = torch.zeros(len(saliency), dtype=torch.bool, device=saliency.device)
    keep[torch.topk(saliency, int(len(saliency) * threshold), sorted=False).indices] = True
    masks, start = {}, 0
    for name, grad in gradients.items():
        masks[name] = keep[start : start + grad.numel()].view_as(grad)
        start += grad.numel()
    return masks


class SalUn(TrainingUnlearner):
    """Saliency-masked Random Labels: RL updates restricted to the top `threshold` fraction of weights."""

    name = "SalUn"

    def __init__(
        self,
        epochs: int = 10,
        lr: float = 0.013,
        threshold: float = 0.5,
        batch_size: int = 256,
        weight_decay: float = 5e-4,
        schedule: str = "constant",
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        if not 0 < threshold <= 1:
            raise UnlearnError(f"SalUn threshold is the fraction of weights to update, in (0, 1]; got {threshold}.")
        if weight_decay < 0:
            raise UnlearnError(f"SalUn weight_decay must be >= 0, got {weight_decay}.")
        super().__init__(epochs, lr, batch_size, weight_decay, schedule, seed, progress)
        self.threshold = threshold
        self.masks: dict[str, torch.Tensor] = {}

    def relabeled_forget(self, splits: ForgetSplits) -> Relabeled:
        generator = torch.Generator().manual_seed(self.seed)
        return Relabeled(splits.D_f, random_other_labels(targets_of(splits.D_f), splits.num_classes, generator))

    def update(self, student: nn.Module, original: nn.Module, splits: ForgetSplits, head: str | None) -> None:
        with self.cost.phase("saliency"):
            self.masks = saliency_masks(forget_gradients(student, splits.D_f, self.recipe.batch_size), self.threshold)
        if not any(mask.any() for mask in self.masks.values()):
            raise UnlearnError(f"SalUn threshold {self.threshold} selects no weight; raise it.")
        named = dict(student.named_parameters())
        trained = {name: named[name] for name, mask in self.masks.items() if mask.any()}
        hooks = [
            param.register_hook(lambda grad, mask=self.masks[name]: torch.where(mask, grad, torch.zeros_like(grad)))
            for name, param in trained.items()
        ]
        weight_decay = self.recipe.weight_decay

        def masked_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            loss = cross_entropy(model, x, y)
            if weight_decay:
                loss = loss + 0.5 * weight_decay * sum(p.pow(2).sum() for p in trained.values())
            return loss

        try:
            data = LabeledConcat([self.relabeled_forget(splits), splits.D_r])
            self.fit_loop(student, data, masked_loss, params=trained.values(), weight_decay=0.0)
        finally:
            for hook in hooks:
                hook.remove()
