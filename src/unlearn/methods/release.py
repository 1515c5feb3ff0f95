"""Release mode: turn a served edit into plain weights, so that no module can be removed from the published model.

    teacher  t(x) = g(E(h(x)))                       the edited model (MoRE-T, MoRE-S, ...), served features E(h(x))
    student  θ₀ = (1 − α) θ_original + α θ_random    a copy of the network, noised towards a fresh init (UNDO)
    min_θ  E_{x ∈ D_f ∪ D_r} [ τ² KL(softmax(t(x)/τ) ‖ softmax(s_θ(x)/τ)) + β |h_θ(x) − E(h(x))|² / d ]

Distillation into a noised copy follows "Distillation robustifies unlearning" (Lee et al. 2025, UNDO): the
student learns the unlearned behaviour, and the noise (α) destroys what the old weights knew so the student
cannot simply keep it. The feature term (β) makes the student's penultimate features match the served ones,
so a probe on the head's input sees what the served edit gave out. The result is a plain network of the
original architecture (no EditedHead): dropping an edit is no longer possible, and every block was retrained.

The forgotten classes are suppressed in the teacher (`suppress_forget`, default on): their teacher probability
is set to 0 before the KL term, so the student keeps pushing their logits down, as Retrain's cross-entropy on D_r
does. Without it the student copies the teacher's moderately low forget logit, and 15 finetuning steps on 50
forget samples give the class back (shapes, seed 0: 81 % of forget-test images, against Retrain's 0 %; with it,
0 %; bench/results/release_sweep_shapes_audit.md). The served model seldom predicts those classes (that is what
it forgot), so the student still copies the served answers.

Choices: SGD (momentum 0.9, weight decay 5e-4, cosine) through the one training loop, on the training inputs
D_f ∪ D_r (the inputs the edit's owner already holds; the forget inputs are needed to teach their new
answers; `on="remain"` distils on D_r only, which no longer copies the edit's answers on forget inputs);
θ_random from the architecture's own `reset_parameters` (seeded); BatchNorm statistics restart from the
Original's and are re-estimated in training. The teacher's answers are computed once, before training (there is
no augmentation, so each epoch would ask the same questions), and `Release` fits the edit on the same one pass of
the Original's features: release mode costs one inference pass plus the student's training
(bench/results/release_cost.md measures it against Retrain in one process).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from unlearn.data.base import LabeledTensors, Relabeled
from unlearn.data.splits import ForgetSplits
from unlearn.errors import UnlearnError
from unlearn.methods.base import FeatureEdit, TrainingUnlearner
from unlearn.methods.esc import ESC
from unlearn.methods.more import MoRE
from unlearn.methods.smooth_transplant import SmoothTransplant
from unlearn.methods.transplant import Transplant
from unlearn.models.inference import collect_outputs
from unlearn.models.split import find_head, get_module, split_for_probe, split_model
from unlearn.models.train import TrainConfig, train
from unlearn.runtime import module_device

SUPPRESSED = -1e4  # a teacher logit whose softmax is exactly 0 in float32 at any temperature used here
EDITS: dict[str, type[FeatureEdit]] = {"MoRE": MoRE, "MoRE-T": Transplant, "MoRE-S": SmoothTransplant, "ESC": ESC}


def noised_copy(model: nn.Module, alpha: float, seed: int) -> nn.Module:
    """A copy of `model` with every parameter θ replaced by (1 − α) θ + α θ_random (a seeded fresh init)."""
    student = copy.deepcopy(model)
    if alpha == 0:
        return student
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    with torch.no_grad():
        for (_, mine), (_, new) in zip(student.named_parameters(), fresh.named_parameters(), strict=True):
            mine.mul_(1 - alpha).add_(new, alpha=alpha)
    return student


def distillation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    features: torch.Tensor,
    target_features: torch.Tensor,
    temperature: float,
    feature_weight: float,
) -> torch.Tensor:
    """τ² KL(softmax(target/τ) ‖ softmax(logits/τ)), averaged over the batch, + β · mean (h − E(h(x)))²."""
    loss = temperature**2 * F.kl_div(
        F.log_softmax(logits / temperature, dim=1),
        F.log_softmax(target / temperature, dim=1),
        log_target=True,
        reduction="batchmean",
    )
    if feature_weight:
        loss = loss + feature_weight * F.mse_loss(features, target_features)
    return loss


@dataclass(frozen=True)
class Targets:
    """The teacher's answers for each distillation input, in the data's order: its logits and served features."""

    logits: torch.Tensor  # N x classes, the suppressed classes at SUPPRESSED
    features: torch.Tensor  # N x d, what the edit gives the head


def head_targets(head: nn.Module, served: torch.Tensor, suppress: list[int] | None, batch_size: int = 1024) -> Targets:
    """The head's logits on the served features (the `suppress` classes' set to SUPPRESSED) with those features."""
    device = module_device(head)
    with torch.no_grad():
        logits = torch.cat([head(chunk.to(device)).float().cpu() for chunk in served.split(batch_size)])
    if suppress:
        logits[:, suppress] = SUPPRESSED
    return Targets(logits, served)


def teacher_targets(
    edited: nn.Module, data: Dataset, head: str | None = None, suppress: list[int] | None = None
) -> Targets:
    """One pass of the edited model over `data`: the features its edit serves to its head, and its logits."""
    base, edit, teacher_head = split_for_probe(edited, head)
    served, _ = collect_outputs(nn.Sequential(base, edit), data)
    return head_targets(teacher_head, served.flatten(1), suppress)


def distil(
    model: nn.Module,
    data: Dataset,
    targets: Targets,
    recipe: TrainConfig,
    noise: float = 0.5,
    feature_weight: float = 1.0,
    temperature: float = 2.0,
    head: str | None = None,
    progress: bool = False,
) -> nn.Module:
    """A copy of `model` noised by `noise` (seeded by `recipe.seed`), trained by `recipe` to give `targets` on `data`.

    The teacher's answers are computed once, not once per epoch: release mode trains without augmentation, so
    every epoch would ask the teacher the same questions. They take N × (classes + d) floats of memory.
    """
    if not 0 <= noise <= 1 or feature_weight < 0 or temperature <= 0:
        raise UnlearnError(
            f"release needs 0 <= noise <= 1, feature_weight >= 0, temperature > 0; got {noise}, "
            f"{feature_weight}, {temperature}."
        )
    if len(targets.logits) != len(data):
        raise UnlearnError(f"{len(targets.logits)} teacher answers for {len(data)} distillation inputs.")
    if recipe.augment:
        raise UnlearnError("release asks the teacher once per input, so its recipe cannot augment the inputs.")
    student = noised_copy(model, noise, recipe.seed)
    student_head = get_module(student, find_head(student, head))
    seen: list[torch.Tensor] = []
    hook = student_head.register_forward_pre_hook(lambda _module, inputs: seen.append(inputs[0]))

    def loss_fn(net: nn.Module, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        seen.clear()
        logits = net(x)
        rows = index.cpu()
        target, target_z = targets.logits[rows].to(logits.device), targets.features[rows].to(logits.device)
        return distillation_loss(logits, target, seen[0].flatten(1), target_z, temperature, feature_weight)

    try:  # the loop's labels are each input's row in `targets`
        train(student, Relabeled(data, torch.arange(len(data))), recipe, loss_fn, progress=progress, desc="release")
    finally:
        hook.remove()
    return student.eval()


def release(
    edited: nn.Module,
    model: nn.Module,
    data: Dataset,
    epochs: int = 8,
    lr: float = 0.05,
    batch_size: int = 64,
    noise: float = 0.5,
    feature_weight: float = 1.0,
    temperature: float = 2.0,
    seed: int = 0,
    head: str | None = None,
    progress: bool = False,
    suppress: list[int] | None = None,
    weight_decay: float = 5e-4,
) -> nn.Module:
    """A plain copy of `model`'s network distilled from `edited` (its served logits and features) on `data`.

    `suppress` lists classes whose teacher probability is set to 0 (their logits to a large negative number)
    before the KL term, so the student learns never to predict them. Neither `edited` nor `model` is modified.
    """
    recipe = TrainConfig(
        epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay, warmup_epochs=0, seed=seed
    )  # SGD with cosine decay, no warm-up and no augmentation, as `Release.recipe`
    return distil(
        model,
        data,
        teacher_targets(edited, data, head, suppress),
        recipe,
        noise,
        feature_weight,
        temperature,
        head,
        progress,
    )


class Release(TrainingUnlearner):
    """Fit a feature edit (`edit`, with `edit_params`), then `release` it into plain weights ("MoRE-S+release").

    One pass of the Original's features over D_f ∪ D_r serves both: the edit is fit on those features, and the
    teacher's answers are the edit and head applied to them, so release mode costs one inference pass plus the
    student's training.
    """

    name = "Release"

    def __init__(
        self,
        edit: str = "MoRE-S",
        edit_params: dict | None = None,
        epochs: int = 8,
        lr: float = 0.05,
        batch_size: int = 64,
        noise: float = 0.5,
        feature_weight: float = 1.0,
        temperature: float = 2.0,
        on: str = "all",
        suppress_forget: bool = True,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        super().__init__(epochs, lr, batch_size, 5e-4, "cosine", seed, progress)
        if edit not in EDITS:
            raise UnlearnError(f"release takes a feature edit, one of {sorted(EDITS)}; got {edit!r}.")
        if on not in ("all", "remain"):
            raise UnlearnError(f"release `on` must be 'all' (D_f and D_r) or 'remain' (D_r only); got {on!r}.")
        self.edit_name, self.edit_params = edit, dict(edit_params or {})
        self.noise, self.feature_weight, self.temperature, self.on = noise, feature_weight, temperature, on
        self.suppress_forget = suppress_forget
        self.name = f"{edit}+release"

    def update(self, student: nn.Module, original: nn.Module, splits: ForgetSplits, head: str | None) -> None:
        features, model_head = split_model(original, head)
        z, y = collect_outputs(features, splits.train())  # D_f first, then D_r
        edit = EDITS[self.edit_name](seed=self.seed, **self.edit_params)
        if edit.uses_head:
            edit.head = model_head
        edit.fit(nn.Identity(), LabeledTensors(z, y), splits.forget_classes, splits.num_classes)
        device = module_device(model_head)
        layer = edit.layer.to(device)
        with torch.no_grad():
            served = torch.cat([layer(chunk.to(device)).cpu() for chunk in z.split(1024)])
        targets = head_targets(model_head, served.flatten(1), splits.forget_classes if self.suppress_forget else None)
        data = splits.train()
        if self.on == "remain":
            rest = slice(len(splits.D_f), None)
            data, targets = splits.D_r, Targets(targets.logits[rest], targets.features[rest])
        released = distil(
            original, data, targets, self.recipe, self.noise, self.feature_weight, self.temperature, head, self.progress
        )
        student.load_state_dict(released.state_dict())
