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
Original's and are re-estimated in training.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from unlearn.data.splits import ForgetSplits
from unlearn.errors import UnlearnError
from unlearn.methods.base import FeatureEdit, TrainingUnlearner
from unlearn.methods.esc import ESC
from unlearn.methods.more import MoRE
from unlearn.methods.smooth_transplant import SmoothTransplant
from unlearn.methods.transplant import Transplant
from unlearn.models.split import find_head, get_module, split_for_probe
from unlearn.models.train import TrainConfig, train

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
    if not 0 <= noise <= 1 or feature_weight < 0 or temperature <= 0:
        raise UnlearnError(
            f"release needs 0 <= noise <= 1, feature_weight >= 0, temperature > 0; got {noise}, "
            f"{feature_weight}, {temperature}."
        )
    base, edit, teacher_head = split_for_probe(edited, head)
    teacher = nn.Sequential(base, edit).eval()
    student = noised_copy(model, noise, seed)
    student_head = get_module(student, find_head(student, head))
    seen: list[torch.Tensor] = []
    hook = student_head.register_forward_pre_hook(lambda _module, inputs: seen.append(inputs[0]))

    def loss_fn(net: nn.Module, x: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_z = teacher(x).flatten(1)
            target = teacher_head(target_z)
            if suppress:
                target[:, suppress] = SUPPRESSED
        seen.clear()
        logits = net(x)
        return distillation_loss(logits, target, seen[0].flatten(1), target_z, temperature, feature_weight)

    recipe = TrainConfig(
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        weight_decay=weight_decay,
        schedule="cosine",
        warmup_epochs=0,
        seed=seed,
    )
    try:
        train(student, data, recipe, loss_fn, progress=progress, desc="release")
    finally:
        hook.remove()
    return student.eval()


class Release(TrainingUnlearner):
    """Fit a feature edit (`edit`, with `edit_params`), then `release` it into plain weights ("MoRE-S+release")."""

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
        edited = EDITS[self.edit_name](seed=self.seed, **self.edit_params).unlearn(original, splits, head)
        released = release(
            edited,
            original,
            splits.train() if self.on == "all" else splits.D_r,
            self.recipe.epochs,
            self.recipe.lr,
            self.recipe.batch_size,
            self.noise,
            self.feature_weight,
            self.temperature,
            self.seed,
            head,
            self.progress,
            splits.forget_classes if self.suppress_forget else None,
            self.recipe.weight_decay,
        )
        student.load_state_dict(released.state_dict())
