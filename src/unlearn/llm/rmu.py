"""RMU (Li et al. 2024, WMDP): misdirect forget activations at layer l to c·u, keep retain activations.

    L = mean ‖H_θ(x_f) − c·u‖² + α mean ‖H_θ(x_r) − H_θ0(x_r)‖²,   u ~ U[0,1)^d, ‖u‖ = 1, fixed

H is the output of decoder layer l (forward hook), over all non-padding tokens; θ0 is the frozen original.
Reference settings (Zephyr-7B, 32 layers): layer 7, train only the MLP down-projections of layers 5–7,
AdamW lr 5e-5, 150 steps, c = 6.5, α = 1200. Our defaults and how they scale to small models:

- `layer=None` takes 7 when the model has more than 8 decoder layers, else the middle layer (L // 2);
  `update_layers=None` is (l−2, l−1, l) clipped at 0; `train_params="down_proj"` matches dense
  `mlp.down_proj`, fused MoE `mlp.experts.down_proj` and `shared_expert.down_proj` alike.
- c: the published c = 6.5 by default (`steering_coeff=6.5`, Li et al. 2024, Zephyr-7B). With
  `steering_coeff=None`, c = `steering_ratio` × (mean per-token ‖H_θ0(x_f)‖ at layer l) instead, so the
  target's norm is a fixed multiple of the activations it replaces, whatever the hidden size (Adaptive RMU,
  Dang et al. 2025, ties c to that norm the same way); `steering_ratio` = 5. Our tiny testbed configs use
  this norm-matched c (`steering_coeff: null`): their activations are far from a 7B model's scale.
- α: with `alpha=None`, α = 1200 · d / 4096 (linear in the hidden size d, equal to the reference 1200 at Zephyr's
  d = 4096; 18.75 at d = 64). Both terms are per-element mean squared errors, so no unit forces this; it is
  measured (`bench/llm_methods.py --alpha`: d = 64 facts testbed, overlap 0.3, lr 1e-3, 150 steps): α = 1200
  leaves forget answer accuracy at 93 % (no forgetting), 400 at 85 %, 100 at 27 %, 18.75 at 5 %, with retain
  accuracy 98–99 %. A number for `alpha` is used as given.

`project_out_misdirection` is the "RMU is shallow" attack: it removes one direction from layer l's output.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from unlearn.errors import UnlearnError
from unlearn.llm.base import LMUnlearner
from unlearn.llm.losses import rmu_loss
from unlearn.llm.train import (
    Batch,
    check_layer,
    decoder_layers,
    eval_mode,
    hidden_at,
    select_parameters,
    to_device,
    token_mask,
)
from unlearn.runtime import module_device

REFERENCE_LAYER = 7
REFERENCE_ALPHA, REFERENCE_HIDDEN = 1200.0, 4096  # Zephyr-7B


def default_alpha(hidden_size: int) -> float:
    """α = 1200 · d / 4096: the reference α at a 7B model's width, scaled linearly with the hidden size d."""
    return REFERENCE_ALPHA * hidden_size / REFERENCE_HIDDEN


def default_layer(num_layers: int) -> int:
    """The reference layer 7 on a deep model, the middle layer on a small one."""
    return REFERENCE_LAYER if num_layers > REFERENCE_LAYER + 1 else num_layers // 2


def activation_stats(
    model: nn.Module, loader: Iterable[Batch], layer: int, max_tokens: int = 50_000
) -> tuple[torch.Tensor, float]:
    """Per-dimension mean |H| [d] and mean per-token ‖H‖ of layer `layer`'s output over non-padding tokens."""
    device = module_device(model)
    total_abs, total_norm, count = None, 0.0, 0
    with eval_mode(model):
        for batch in loader:
            if count >= max_tokens:
                break
            batch = to_device(batch, device)
            hidden = hidden_at(model, batch, layer).float()
            kept = hidden[token_mask(batch).bool()]  # [tokens, d]
            total_abs = kept.abs().sum(0) if total_abs is None else total_abs + kept.abs().sum(0)
            total_norm += kept.norm(dim=-1).sum().item()
            count += kept.shape[0]
    if not count:
        raise UnlearnError("no tokens to measure activations on: the loader is empty or all padding.")
    return total_abs / count, total_norm / count


def random_unit_vector(dim: int, seed: int) -> torch.Tensor:
    """u ~ U[0,1)^d normalised to ‖u‖ = 1 (RMU's control vector before scaling by c)."""
    u = torch.rand(dim, generator=torch.Generator().manual_seed(seed))
    return u / u.norm()


class RMU(LMUnlearner):
    """Representation misdirection: push layer-l forget activations to a fixed target, pin retain ones."""

    name = "RMU"

    def __init__(
        self,
        layer: int | None = None,
        update_layers: list[int] | None = None,
        train_params: str | list[str] | None = "down_proj",
        steering_coeff: float | None = 6.5,
        steering_ratio: float = 5.0,
        alpha: float | None = None,
        steps: int | None = 150,
        epochs: int = 1,
        lr: float = 5e-5,
        weight_decay: float = 0.01,
        max_grad_norm: float | None = 1.0,
        seed: int = 0,
        progress: bool = False,
        grad_accum: int = 1,
    ) -> None:
        super().__init__(steps, epochs, lr, weight_decay, max_grad_norm, train_params, seed, progress, grad_accum)
        self.layer, self.update_layers = layer, update_layers
        self.steering_coeff, self.steering_ratio, self.alpha = steering_coeff, steering_ratio, alpha
        self.hidden_layer: int | None = None
        self.target: torch.Tensor | None = None
        self.retain_weight = alpha  # α as resolved in `prepare`

    def resolve_layers(self, model: nn.Module) -> tuple[int, list[int]]:
        layer = default_layer(len(decoder_layers(model))) if self.layer is None else check_layer(model, self.layer)
        updates = list(range(max(layer - 2, 0), layer + 1)) if self.update_layers is None else self.update_layers
        for index in updates:
            check_layer(model, index)
        return layer, updates

    def parameters_to_train(self, model: nn.Module) -> dict[str, nn.Parameter]:
        return select_parameters(model, self.train_params, self.resolve_layers(model)[1])

    def prepare(self, student: nn.Module, original: nn.Module, forget_loader, retain_loader) -> None:
        super().prepare(student, original, forget_loader, retain_loader)
        self.hidden_layer, updates = self.resolve_layers(original)
        forget_abs, forget_norm = activation_stats(original, forget_loader, self.hidden_layer)
        self.target = self.make_target(original, forget_abs, forget_norm, retain_loader).to(module_device(student))
        self.retain_weight = default_alpha(forget_abs.numel()) if self.alpha is None else self.alpha
        self.report = {
            "layer": self.hidden_layer,
            "update_layers": updates,
            "alpha": self.retain_weight,
            "forget_activation_norm": forget_norm,
            "target_norm": self.target.norm().item(),
        }

    def coefficient(self, forget_norm: float, direction_norm: float = 1.0) -> float:
        """c as given, or chosen so that ‖c · direction‖ = steering_ratio × mean ‖H_θ0(x_f)‖."""
        if self.steering_coeff is not None:
            return self.steering_coeff
        return self.steering_ratio * forget_norm / max(direction_norm, 1e-8)

    def make_target(self, original: nn.Module, forget_abs: torch.Tensor, forget_norm: float, retain_loader):
        """T = c·u."""
        return self.coefficient(forget_norm) * random_unit_vector(forget_abs.numel(), self.seed)

    def loss(self, model: nn.Module, forget: Batch, retain: Batch | None) -> dict[str, torch.Tensor]:
        forget_hidden = hidden_at(model, forget, self.hidden_layer)
        retain_hidden = hidden_at(model, retain, self.hidden_layer)
        with eval_mode(self.original) as original:
            retain_frozen = hidden_at(original, retain, self.hidden_layer)
        forget_term, retain_term = rmu_loss(
            forget_hidden,
            self.target,
            retain_hidden,
            retain_frozen,
            self.retain_weight,
            token_mask(forget),
            token_mask(retain),
        )
        return {"forget": forget_term, "retain": retain_term}


def misdirection_direction(
    model: nn.Module,
    layer: int,
    forget_loader: Iterable[Batch],
    retain_loader: Iterable[Batch] | None = None,
    reference: nn.Module | None = None,
) -> torch.Tensor:
    """Unit direction d of the misdirection at layer l's output.

    With `reference` (the original model): d ∝ mean H_θ(x_f) − mean H_ref(x_f) (difference of means on the forget
    data, as in directional-ablation attacks). Without it, an attacker who only holds the unlearned model and
    some ordinary text uses d ∝ mean H_θ(x_f) − mean H_θ(x_r).
    """
    if reference is None and retain_loader is None:
        raise UnlearnError("misdirection_direction needs a reference model or a retain loader to contrast with.")
    forget_mean = mean_hidden(model, forget_loader, layer)
    other = (
        mean_hidden(reference, forget_loader, layer)
        if reference is not None
        else mean_hidden(model, retain_loader, layer)
    )
    direction = forget_mean - other
    return direction / direction.norm().clamp(min=1e-8)


def mean_hidden(model: nn.Module, loader: Iterable[Batch], layer: int) -> torch.Tensor:
    device, total, count = module_device(model), None, 0
    with eval_mode(model):
        for batch in loader:
            batch = to_device(batch, device)
            kept = hidden_at(model, batch, layer).float()[token_mask(batch).bool()]
            total = kept.sum(0) if total is None else total + kept.sum(0)
            count += kept.shape[0]
    if not count:
        raise UnlearnError("no tokens to average activations over: the loader is empty.")
    return total / count


@contextmanager
def project_out_misdirection(
    model: nn.Module,
    layer: int,
    forget_loader: Iterable[Batch],
    retain_loader: Iterable[Batch] | None = None,
    reference: nn.Module | None = None,
) -> Iterator[torch.Tensor]:
    """ "RMU is shallow" attack: inside the block, `model`'s layer-l output is h ← h − (h·d) d; yields d.

    The projection is a forward hook on `model`'s decoder layer `layer`, removed on exit, so no copy of the
    model is made and the model evaluates like any causal LM while the block runs.
    """
    check_layer(model, layer)
    direction = misdirection_direction(model, layer, forget_loader, retain_loader, reference)
    unit = direction.to(module_device(model))

    def project(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        projected = hidden - (hidden @ unit.to(hidden.dtype)).unsqueeze(-1) * unit.to(hidden.dtype)
        return (projected, *output[1:]) if isinstance(output, tuple) else projected

    handle = decoder_layers(model)[layer].register_forward_hook(project)
    try:
        yield direction
    finally:
        handle.remove()
