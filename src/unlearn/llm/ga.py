"""Gradient-based LM unlearning: GA, GradDiff and NPO (reference = the frozen original model).

    GA        L = −NLL_θ(D_f)
    GradDiff  L = −NLL_θ(D_f) + λ NLL_θ(D_r)
    NPO       L = −(2/β) E_{D_f} log σ(−β (log π_θ(y|x) − log π_ref(y|x)))  [+ λ NLL_θ(D_r)]

Defaults follow the TOFU / NPO recipes (AdamW, lr 1e-5, weight decay 0.01, 5 epochs over D_f, β = 0.1) with
gradient clipping at norm 1; tiny models need a larger lr (set it in the config). Every parameter trains unless
`train_params` (regexes over parameter names) narrows it. NPO's λ defaults to 0 (the plain NPO loss of
Zhang et al. 2024); λ > 0 is "NPO + retain" as in the UOE objective ℓ_f + λ ℓ_r.
"""

from __future__ import annotations

import torch
from torch import nn

from unlearn.llm.base import LMUnlearner
from unlearn.llm.losses import ga_loss, nll, npo_loss, sequence_logprob
from unlearn.llm.train import Batch, eval_mode, forward, labels_of


class GA(LMUnlearner):
    """Gradient ascent on the forget NLL: L = −NLL_θ(D_f)."""

    name = "GA"
    uses_retain = False

    def loss(self, model: nn.Module, forget: Batch, retain: Batch | None) -> dict[str, torch.Tensor]:
        return {"forget": ga_loss(nll(forward(model, forget), labels_of(forget)))}


class GradDiff(LMUnlearner):
    """GA plus the retain NLL: L = −NLL_θ(D_f) + λ NLL_θ(D_r), λ = `retain_weight`."""

    name = "GradDiff"

    def __init__(self, retain_weight: float = 1.0, **recipe) -> None:
        """`recipe`: the training settings of `LMUnlearner` (steps, epochs, lr, ...)."""
        super().__init__(**recipe)
        self.retain_weight = retain_weight

    def loss(self, model: nn.Module, forget: Batch, retain: Batch | None) -> dict[str, torch.Tensor]:
        forget_term = ga_loss(nll(forward(model, forget), labels_of(forget)))
        return {"forget": forget_term, "retain": self.retain_weight * nll(forward(model, retain), labels_of(retain))}


class NPO(LMUnlearner):
    """Negative preference optimisation against the frozen original model (β = `beta`), plus λ NLL_θ(D_r)."""

    name = "NPO"

    def __init__(self, beta: float = 0.1, retain_weight: float = 0.0, **recipe) -> None:
        """`recipe`: the training settings of `LMUnlearner` (steps, epochs, lr, ...)."""
        super().__init__(**recipe)
        self.beta, self.retain_weight = beta, retain_weight
        self.uses_retain = retain_weight > 0

    def loss(self, model: nn.Module, forget: Batch, retain: Batch | None) -> dict[str, torch.Tensor]:
        labels = labels_of(forget)
        logprob = sequence_logprob(forward(model, forget), labels)
        with eval_mode(self.original) as reference:
            reference_logprob = sequence_logprob(forward(reference, forget), labels)
        terms = {"forget": npo_loss(logprob, reference_logprob, self.beta)}
        if self.uses_retain:
            terms["retain"] = self.retain_weight * nll(forward(model, retain), labels_of(retain))
        return terms
