"""SRMU (Chen et al. 2025): RMU whose target misdirects only the features that carry the forget knowledge.

    v_f = mean_{x_f} |H_θ0|,  v_r = mean_{x_r} |H_θ0|                     (per dimension, layer l)
    ratio       I = log(1 + v_f / (v_r + ε))          (default)
    difference  I = ReLU(v_f − λ v_r)
    product     I = (v_f ⊙ v_r) / (mean(v_f) · mean(v_r) + ε)
    I_norm = I / (max I + 1e-8),  V ∈ {−1, +1}^d random and fixed,  T = c · V ⊙ I_norm
    L = mean ‖H_θ(x_f) − T‖² + α mean ‖H_θ(x_r) − H_θ0(x_r)‖²

Choices where the summary is open: v_f, v_r average magnitudes |H| over all non-padding tokens of the frozen
original model (so the ratio is defined and a feature with large negative activations counts as active);
ε = 1e-6, λ = 1; the map and V are computed once before training. c: SRMU's default is `steering_coeff=None`
(unlike RMU's published 6.5), chosen so that ‖T‖ = steering_ratio × mean ‖H_θ0(x_f)‖, the same target norm as
our norm-matched RMU, so the two differ only in where the target points (the literal T = c·V⊙I_norm with a 7B
model's c = 6.5 per feature would be far larger than RMU's ‖c·u‖ = c). Layer, trained parameters and α are
RMU's (see `unlearn.llm.rmu`).
`signs="plus"` / `"minus"` give the all +1 / all −1 ablation of V.

Sign-only control: `importance="uniform"` sets I = 1 everywhere, so T = c·V is the same random-sign target
without any feature selection. Whatever SRMU does and this control also does is not the importance map's doing.
An importance map that is zero everywhere (e.g. `difference` when no feature is more active on x_f than
λ·v_r) would make T = 0 and is an error, not a silent no-op.
"""

from __future__ import annotations

import torch
from torch import nn

from unlearn.errors import UnlearnError
from unlearn.llm.rmu import RMU, activation_stats

IMPORTANCE_MAPS = ("ratio", "difference", "product", "uniform")


def importance_map(
    forget_abs: torch.Tensor, retain_abs: torch.Tensor, kind: str = "ratio", lam: float = 1.0, eps: float = 1e-6
) -> torch.Tensor:
    """I over the d features from mean magnitudes v_f, v_r (ratio, difference or product, see module doc)."""
    if kind == "ratio":
        return torch.log1p(forget_abs / (retain_abs + eps))
    if kind == "difference":
        return torch.relu(forget_abs - lam * retain_abs)
    if kind == "product":
        return forget_abs * retain_abs / (forget_abs.mean() * retain_abs.mean() + eps)
    if kind == "uniform":  # the sign-only control: no feature selection
        return torch.ones_like(forget_abs)
    raise UnlearnError(f"unknown importance map {kind!r}; choose one of {IMPORTANCE_MAPS}.")


def normalise(importance: torch.Tensor) -> torch.Tensor:
    """I_norm = I / (max I + 1e-8), in [0, 1]."""
    return importance / (importance.max() + 1e-8)


def sign_vector(dim: int, seed: int, signs: str = "random") -> torch.Tensor:
    """V ∈ {−1, +1}^d: random signs (fixed by `seed`), or all +1 / all −1 for the ablation."""
    if signs == "plus":
        return torch.ones(dim)
    if signs == "minus":
        return -torch.ones(dim)
    if signs != "random":
        raise UnlearnError(f"signs must be 'random', 'plus' or 'minus', got {signs!r}.")
    return torch.randint(0, 2, (dim,), generator=torch.Generator().manual_seed(seed)).float() * 2 - 1


def srmu_target(coefficient: float, signs: torch.Tensor, importance_normalised: torch.Tensor) -> torch.Tensor:
    """T = c · V ⊙ I_norm: zero wherever the importance map is zero."""
    return coefficient * signs * importance_normalised


class SRMU(RMU):
    """RMU with the feature-selective target T = c · V ⊙ I_norm."""

    name = "SRMU"

    def __init__(self, importance: str = "ratio", lam: float = 1.0, signs: str = "random", **rmu_params) -> None:
        """`rmu_params`: RMU's settings (layer, update_layers, steering, alpha and the training recipe)."""
        if importance not in IMPORTANCE_MAPS:
            raise UnlearnError(f"unknown importance map {importance!r}; choose one of {IMPORTANCE_MAPS}.")
        sign_vector(1, rmu_params.get("seed", 0), signs)  # validates `signs` at construction
        super().__init__(**{"steering_coeff": None, **rmu_params})
        self.importance, self.lam, self.signs = importance, lam, signs
        self.importance_normalised: torch.Tensor | None = None

    def make_target(self, original: nn.Module, forget_abs: torch.Tensor, forget_norm: float, retain_loader):
        retain_abs, _ = activation_stats(original, retain_loader, self.hidden_layer)
        importance = importance_map(forget_abs, retain_abs, self.importance, self.lam)
        if not bool((importance > 0).any()):
            raise UnlearnError(
                f"the SRMU importance map ({self.importance}, lambda {self.lam}) is zero on every feature of layer "
                f"{self.hidden_layer}: the target would be 0 and nothing would be forgotten. Use importance 'ratio', "
                "a smaller lam, or another layer."
            )
        self.importance_normalised = normalise(importance)
        signs = sign_vector(forget_abs.numel(), self.seed, self.signs)
        direction = signs * self.importance_normalised
        target = srmu_target(self.coefficient(forget_norm, direction.norm().item()), signs, self.importance_normalised)
        self.report_importance = {
            "importance": self.importance,
            "importance_nonzero_fraction": (self.importance_normalised > 0).float().mean().item(),
            "importance_mean": self.importance_normalised.mean().item(),  # 1 would make T a flat ±c sign vector
        }
        return target

    def prepare(self, student: nn.Module, original: nn.Module, forget_loader, retain_loader) -> None:
        super().prepare(student, original, forget_loader, retain_loader)
        self.report.update(self.report_importance)
