"""MoRE-G (gated MoRE): MoRE's remap, applied only to the samples the model itself calls a forget class.

    m_f = D_f z,  D = P⁺ (via SVD)                                     PO coordinates, as MoRE
    g(z) = 1[argmax head(z) ∈ F]                                       the model's own head as the gate
    ẑ = z + g(z) (P_t^(e) max(m_f, 1) − P_f m_f),  e ~ U{1..N_e}       MoRE's remap (eq. 6) where g = 1,
                                                                       with at least a whole target prototype

Why (measured, `bench/lookalike.py`, Fashion-MNIST, bench/results/lookalike_*.md): MoRE moves every sample
by (P_t − P_f) m_f. On look-alike classes many remain samples have a sizeable m_f (forget Shirt: m_f > 0.25
for 30–32 % of the T-shirt, Pullover and Coat test samples), so MoRE pushes them towards its remap targets
(forget Shirt: remain-test accuracy −3.5 points; Dress −8.2, Coat −8.0). With the gate, a remain sample the
Original classifies as a remain class is left exactly as it was, so no remain class can lose accuracy; a sample
the head calls a forget class gets MoRE's remap, so it leaves the forget class, and a probe trained on the
edited features still sees the forget class scattered over remain prototypes.

The lift (`lift=True`, the default): some samples the head calls a forget class have a small m_f (their
likeness to the class lies outside the prototype span), so MoRE's step m_f (P_t − P_f) barely moves them; on a
second model (seed 1), without the lift, 2.2 % of the T-shirt/top test samples stayed T-shirt/top. Adding at
least one whole target prototype moves them out. The erased part stays −P_f m_f: lifting it too (−P_f max(m_f,
1)) left a negative forget coordinate that a probe reads (KR up to 17.3 %, measured on that model).
On two models × 10 single-class requests: forget-test accuracy ≤ 0.5, no remain class below the Original,
KR (lr 0.1) forget-test accuracy ≤ 4.7.

Choices (also in docs/methods-lookalike.md):
- The gate is a frozen copy of the model's head (as MoRE-T's detector). A remain sample the Original already
  misclassified as a forget class is remapped too (it was wrong before; afterwards it may be right).
- Without a head (`fit` called directly without `head=`) the gate is soft on the forget coordinate,
  g = clamp((max_f m_f − τ_lo) / (τ_hi − τ_lo), 0, 1) with τ_lo = 0.25, τ_hi = 0.5; measured weaker (it
  still moves remain samples with a large m_f).
- A forget sample the head already calls a remain class is left as it is: its feature stays the Original's.
- Clipping or shrinking m_f, remap targets far from the look-alikes and PO under a covariance were measured
  too and are not used (bench/results/lookalike_ideas.md); the paper's MoRE is unchanged.
- The gate makes the edit non-linear: it cannot be absorbed into the head, even with one expert.
- `target="runner-up"` (an option, not the default): a gated sample's target prototype is the remain class
  the head ranks highest for it, instead of a random expert's. Deterministic, and a remain sample the Original
  wrongly called a forget class mostly lands on its own class, as after Retrain. Measured on Fashion-MNIST,
  forget Shirt, 3 seeds (bench/results/budget_fmnist_budget.md): forget-test 0.00, remain-test 94.76 (expert
  targets: 93.20), HM 97.70 (96.09), but KR lr 0.1 22.8 ± 5.3 (11.4 ± 4.5): the forget samples gather on the
  prototypes of their look-alikes, where a probe finds them more easily.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from unlearn.errors import UnlearnError
from unlearn.methods.more import MoRE, MoRELayer
from unlearn.models.split import frozen_copy


class GatedMoRELayer(nn.Module):
    """ẑ = z + g(z) (P_t^(e) m̃_f − P_f m_f): MoRE's remap layer `remap`, weighted per sample by the gate g.

    `detector` (a frozen head) gives g = 1 when it predicts a forget class, else 0; with `lift`, the target's
    coefficient for the predicted class is at least 1 (m̃_f = max(m_f, 1)), else m̃_f = m_f (MoRE's remap).
    Without a detector, g is the soft gate on the forget coordinate between `tau_low` and `tau_high`, and
    m̃_f = m_f.
    """

    def __init__(
        self,
        remap: MoRELayer,
        detector: nn.Module | None,
        tau_low: float = 0.25,
        tau_high: float = 0.5,
        lift: bool = True,
        target: str = "expert",
    ) -> None:
        super().__init__()
        if target == "runner-up" and detector is None:
            raise UnlearnError("MoRE-G's target='runner-up' needs the model's head (fit(..., head=...)).")
        self.remap, self.detector = remap, detector
        self.tau_low, self.tau_high, self.lift, self.target = tau_low, tau_high, lift, target

    @property
    def feature_dim(self) -> int:
        return self.remap.feature_dim

    @property
    def forget_classes(self) -> list[int]:
        return self.remap.forget_classes

    def gate(
        self, flat: torch.Tensor, logits: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """g(z) in [0, 1] (B), m_f and the target coefficients m̃_f (B x |F| each) per row of `flat` (B x d).
        `logits`: the detector's output for `flat`, when the caller already has it."""
        m_f = flat @ self.remap.coords.T.to(flat.dtype)  # B x |F|
        if self.detector is None:
            soft = ((m_f.max(dim=1).values - self.tau_low) / (self.tau_high - self.tau_low)).clamp(0, 1)
            return soft, m_f, m_f
        predicted = (self.detector(flat) if logits is None else logits).argmax(dim=1)
        hit = predicted[:, None] == self.remap.classes[self.remap.forget][None, :]  # B x |F|
        lifted = torch.where(hit, m_f.clamp_min(1.0), m_f) if self.lift else m_f
        return hit.any(dim=1).to(flat.dtype), m_f, lifted

    def target_columns(self, flat: torch.Tensor, logits: torch.Tensor | None) -> torch.Tensor:
        """B x |F| prototype columns each sample's forget coordinates go to: its expert's targets, or the
        column of the remain class the head ranks highest in `logits` (runner-up)."""
        if self.target == "expert":
            return self.remap.targets[self.remap.route(len(flat), flat.device)]
        ranked = logits[:, self.remap.classes]  # B x k, in prototype-column order (a copy: index by tensor)
        ranked[:, self.remap.forget] = -torch.inf
        return ranked.argmax(dim=1, keepdim=True).expand(-1, len(self.remap.forget))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        flat = z if z.dim() == 2 else z.reshape(-1, z.shape[-1])
        logits = None if self.detector is None else self.detector(flat)  # one head pass serves gate and target
        g, m_f, lifted = self.gate(flat, logits)
        rows = self.remap.prototype_rows.to(flat.dtype)  # k x d
        weights = flat.new_zeros(len(flat), len(rows))  # per-sample coefficients on the prototypes
        weights.index_add_(1, self.remap.forget, -m_f)  # − P_f m_f
        weights.scatter_add_(1, self.target_columns(flat, logits), lifted)  # + P_t m̃_f
        out = flat + g[:, None] * (weights @ rows)
        return out if z.dim() == 2 else out.reshape(z.shape)


class GatedMoRE(MoRE):
    """MoRE-G: MoRE (stochastic router, PO coordinates) gated by the model's own prediction of a forget class.

    >>> edit = GatedMoRE(seed=0).fit(features, train_loader, forget_classes=[6], head=model.fc)
    >>> unlearned = edit.apply(model)
    """

    name = "MoRE-G"
    uses_head = True  # the model's own head detects (gates) forget samples

    def __init__(
        self,
        num_experts: int = 8,
        tau_low: float = 0.25,
        tau_high: float = 0.5,
        lift: bool = True,
        target: str = "expert",
        orthogonal: bool = True,
        rtol: float = 1e-6,
        seed: int = 0,
        batch_size: int = 256,
        progress: bool = False,
        max_per_class: int | None = None,
        tol: float | None = None,
    ) -> None:
        """`lift`: a sample the head calls forget class f gets at least one whole target prototype, m̃_f = max(m_f, 1).
        `target`: "expert" (MoRE's random experts pick the target class) or "runner-up" (the head's best remain
        class for the sample; deterministic, needs the head).
        `tau_low`/`tau_high`: the soft gate on m_f, used only when no head is given to `fit`.
        `max_per_class` / `tol`: the sample budget of the prototypes (methods/budget.py)."""
        super().__init__(
            num_experts, "remap", orthogonal, rtol, seed, batch_size, progress, None, False, max_per_class, tol
        )
        if not tau_low < tau_high:
            raise UnlearnError(f"tau_low must be below tau_high, got {tau_low} and {tau_high}.")
        if target not in ("expert", "runner-up"):
            raise UnlearnError(f"MoRE-G's target must be 'expert' or 'runner-up', got {target!r}.")
        self.tau_low, self.tau_high, self.lift, self.target = tau_low, tau_high, lift, target
        self.head: nn.Module | None = None  # the gate `unlearn` takes from the model

    def fit(
        self,
        features: nn.Module,
        data: Dataset | DataLoader,
        forget_classes: list[int],
        num_classes: int | None = None,
        exclude: list[int] = (),
        head: nn.Module | None = None,
    ) -> GatedMoRE:
        """MoRE's fit (prototypes, PO coordinates, experts), then the gate: `head` (default: the one `unlearn`
        found) or, with neither, the soft gate on m_f."""
        super().fit(features, data, forget_classes, num_classes, exclude)
        head = head if head is not None else self.head
        detector = None if head is None else frozen_copy(head)
        self.layer = GatedMoRELayer(self.layer, detector, self.tau_low, self.tau_high, self.lift, self.target)
        return self

    def apply(self, model: nn.Module, head: str | None = None, absorb: bool = False) -> nn.Module:
        """The unlearned model; the gate is not linear, so `absorb=True` is an error."""
        if absorb:
            raise UnlearnError(
                "MoRE-G's gate depends on each sample, so the edit is not linear and cannot be absorbed."
            )
        return super().apply(model, head)
