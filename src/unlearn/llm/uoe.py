"""UOE (Zhuang et al., "SEUF"): unlearn one expert of an MoE LM, with its router anchored to it.

    1. attribution  s_i = mean over forget sequences of (mean over tokens of g_{i,t}); target = argmax over
                    all MoE layers and routed experts (top-M, M = 1), shared experts excluded
    2. train only   the target expert's slice of the fused expert parameters + its layer's router weight
                (AdamW state covers the slice only: `train.SliceParameter`; every other parameter is shared
                with the input model, not copied: `base.shared_copy`)
    3. objective    ℓ_forget(D_f) + λ ℓ_retain(D_r) + α ‖g^(l)(x_f) − onehot(target)‖²,  α = 1

ℓ_forget + λ ℓ_retain is any inner method's loss (GA, GradDiff, NPO, RMU, SRMU), trained with the inner
method's recipe (steps, lr, weight decay, clipping), so "UOE+X" and "X on the whole model" differ only in
which parameters train and in the anchor. For RMU/SRMU without an explicit layer, the misdirected layer is
the target expert's layer. `expert_choice="random"` picks a random routed expert instead (baseline row);
`train_router=False` freezes the router (an ablation outside the paper: the anchor then has nothing to move).
"""

from __future__ import annotations

import torch
from torch import nn

from unlearn.errors import Params, UnlearnError, check_params
from unlearn.eval.cost import CostMeter
from unlearn.llm.base import LMUnlearner, check_loader, shared_copy, summary, unshare
from unlearn.llm.ga import GA, NPO, GradDiff
from unlearn.llm.losses import router_anchor_loss
from unlearn.llm.moe import (
    expert_attribution,
    expert_slice,
    find_moe_layer,
    record_router,
    require_moe,
    router_parameters,
    router_probs,
)
from unlearn.llm.rmu import RMU
from unlearn.llm.srmu import SRMU
from unlearn.llm.train import Batch, token_mask
from unlearn.validate import checked_init


@checked_init
class UOE(Params):
    """Wrap an inner LM method so that it trains one attributed expert (and its router) with a router anchor."""

    name = "UOE"

    def __init__(
        self,
        inner: str | LMUnlearner = "GA",
        inner_params: dict | None = None,
        top_m: int = 1,
        anchor_weight: float = 1.0,
        calibration_tokens: int = 100_000,
        expert_choice: str = "attribution",
        train_router: bool = True,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        if expert_choice not in ("attribution", "random"):
            raise UnlearnError(f"expert_choice must be 'attribution' or 'random', got {expert_choice!r}.")
        if top_m < 1 or anchor_weight < 0 or calibration_tokens < 1:
            raise UnlearnError(
                f"UOE needs top_m >= 1, anchor_weight >= 0, calibration_tokens >= 1; got {top_m}, "
                f"{anchor_weight}, {calibration_tokens}."
            )
        self.inner = build_inner(inner, inner_params or {}, progress, seed)
        if getattr(self.inner, "fsdp", False):
            raise UnlearnError(
                "UOE trains one expert's slice of a fused tensor, which FSDP cannot shard; drop fsdp (UOE's "
                "trained state is already small) and run it under torchrun as data parallel."
            )
        self.top_m, self.anchor_weight = top_m, anchor_weight
        self.calibration_tokens, self.expert_choice, self.seed = calibration_tokens, expert_choice, seed
        self.train_router = train_router
        self.name = f"UOE+{self.inner.name}"
        self.cost = CostMeter()
        self.report: dict = {}
        self.trained: tuple[dict, dict] = ({}, {})  # (parameters, slice masks) of the last run

    def choose_targets(self, model: nn.Module, forget_loader) -> tuple[list[tuple[int, int]], dict]:
        """The (layer, expert) pairs to unlearn and the attribution that chose them."""
        attribution = expert_attribution(model, forget_loader, self.calibration_tokens)
        if self.expert_choice == "attribution":
            return attribution.top(self.top_m), attribution.as_dict()
        width = attribution.affinity.shape[1]
        total = attribution.affinity.numel()
        if self.top_m > total:
            raise UnlearnError(f"top_m must be in 1..{total} (MoE layers x experts), got {self.top_m}.")
        picks = torch.randperm(total, generator=torch.Generator().manual_seed(self.seed))[: self.top_m].tolist()
        return [(attribution.layers[p // width], p % width) for p in picks], attribution.as_dict()

    def unlearn(self, model: nn.Module, forget_loader, retain_loader=None, share_weights: bool = False) -> nn.Module:
        """A copy of `model` in which only the target expert(s) and router(s) changed; `model` is untouched.

        `share_weights=True`: the untrained parameters stay the input's own tensors (opt-in, see llm/base.py)."""
        check_loader(forget_loader, "forget")
        if self.inner.uses_retain:
            check_loader(retain_loader, "retain")
        require_moe(model)
        with self.cost.phase("unlearn"):
            targets, attribution = self.choose_targets(model, forget_loader)
            layer_experts: dict[int, list[int]] = {}
            for layer, expert in targets:
                layer_experts.setdefault(layer, []).append(expert)
            preset_layer = getattr(self.inner, "layer", None)
            if isinstance(self.inner, RMU):
                rmu_layer = targets[0][0] if preset_layer is None else preset_layer
                if rmu_layer < max(layer_experts):
                    raise UnlearnError(
                        f"{self.inner.name} layer {rmu_layer} is before the target expert's layer "
                        f"{max(layer_experts)}: the expert would get no gradient; use layer >= {max(layer_experts)}."
                    )
                self.inner.layer = rmu_layer
            student = shared_copy(model, self.trained_parameters(model, layer_experts)[0])
            try:
                history = self.train_targets(student, model, forget_loader, retain_loader, layer_experts)
            finally:
                if isinstance(self.inner, RMU):
                    self.inner.layer = preset_layer  # the next model gets its own target layer
        self.report = {
            "method": self.name,
            "inner": self.inner.report,
            "expert_choice": self.expert_choice,
            "target_experts": [list(pair) for pair in targets],
            "attribution": attribution,
            **summary(history, *self.trained, student),
            "cost": self.cost.phases,
        }
        return student if share_weights else unshare(student, model)

    def trained_parameters(
        self, model: nn.Module, layer_experts: dict[int, list[int]]
    ) -> tuple[dict[str, nn.Parameter], dict[str, torch.Tensor]]:
        """The target experts' parameters with their slice masks, and the routers (when they train)."""
        params, masks = {}, {}
        for layer, experts in layer_experts.items():
            for expert in experts:
                slice_params, slice_masks = expert_slice(model, layer, expert)
                for name, mask in slice_masks.items():
                    masks[name] = masks[name] | mask if name in masks else mask
                params.update(slice_params)
            if self.train_router:
                params.update(router_parameters(model, layer))
        return params, masks

    def train_targets(
        self, student: nn.Module, original: nn.Module, forget_loader, retain_loader, layer_experts: dict[int, list[int]]
    ) -> list[dict]:
        """Train the target experts' slices and routers of `student` with the inner loss + the router anchor."""
        self.inner.prepare(student, original, forget_loader, retain_loader)
        self.trained = params, masks = self.trained_parameters(student, layer_experts)
        routers = [find_moe_layer(student, layer) for layer in layer_experts]

        def loss(model: nn.Module, forget: Batch, retain: Batch | None) -> dict[str, torch.Tensor]:
            with record_router(model, routers) as records:
                terms = self.inner.loss(model, forget, retain)
            mask = token_mask(forget).float()
            anchor = sum(
                router_anchor_loss(router_probs(records[layer][0]).view(*mask.shape, -1), experts, mask)
                for layer, experts in layer_experts.items()
            )
            return {**terms, "anchor": self.anchor_weight * anchor}

        return self.inner.fit(student, forget_loader, retain_loader, params, masks, loss)


def build_inner(inner: str | LMUnlearner, params: dict, progress: bool, seed: int) -> LMUnlearner:
    """The inner method by registry name (with `params`; UOE's seed and progress unless given), or an instance."""
    if isinstance(inner, LMUnlearner):
        return inner
    if inner not in INNER_METHODS:
        raise UnlearnError(f"unknown inner method {inner!r} for UOE; choose one of {sorted(INNER_METHODS)}.")
    check_params(INNER_METHODS[inner], params, f"UOE inner method {inner}")
    return INNER_METHODS[inner](**{"progress": progress, "seed": seed, **params})


INNER_METHODS: dict[str, type[LMUnlearner]] = {"GA": GA, "GradDiff": GradDiff, "NPO": NPO, "RMU": RMU, "SRMU": SRMU}
