"""MoE introspection for transformers causal LMs: MoE layers, router probabilities, expert attribution, slice masks.

Works on any model whose sparse blocks have a router `gate` (weight [E, H]; transformers v5 `TopKRouter` returns
(logits, scores, indices), an older `nn.Linear` gate returns logits) and `experts`, either fused 3-D parameters
[E, ...] (v5: `gate_up_proj` [E, 2I, H], `down_proj` [E, H, I]) or a ModuleList of per-expert MLPs: Qwen2-MoE,
OLMoE, Mixtral. Router probabilities come from forward hooks on the gate, not from `output_router_logits`,
so no auxiliary loss is mixed into anything. Shared (always-on) experts, e.g. Qwen2-MoE's `shared_expert`,
sit outside the router and are never attribution candidates; their sigmoid gate is reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from unlearn.errors import UnlearnError
from unlearn.llm.train import Batch, decoder_layers, eval_mode, to_device, token_mask
from unlearn.runtime import module_device


@dataclass
class MoELayer:
    """One sparse block: its decoder-layer index, router, experts and (optional) shared-expert gate."""

    layer: int
    block: nn.Module
    router: nn.Module
    experts: nn.Module
    num_experts: int
    shared_gate: nn.Module | None = None


def moe_layers(model: nn.Module) -> list[MoELayer]:
    """The sparse MoE blocks of `model`, in layer order (dense layers of a mixed model are skipped)."""
    found = []
    for index, block_layer in enumerate(decoder_layers(model)):
        for block in block_layer.modules():
            router, experts = getattr(block, "gate", None), getattr(block, "experts", None)
            weight = getattr(router, "weight", None)
            if not isinstance(router, nn.Module) or experts is None or weight is None or weight.dim() != 2:
                continue
            found.append(
                MoELayer(index, block, router, experts, weight.shape[0], getattr(block, "shared_expert_gate", None))
            )
            break
    return found


def require_moe(model: nn.Module) -> list[MoELayer]:
    layers = moe_layers(model)
    if not layers:
        raise UnlearnError(
            f"{type(model).__name__} has no MoE layers (no block with a router `gate` and `experts`); "
            "UOE needs a Mixture-of-Experts model such as Qwen2-MoE, OLMoE or Mixtral."
        )
    return layers


def router_probs(logits: torch.Tensor) -> torch.Tensor:
    """The full softmax over experts, in fp32, of router logits recorded by `record_router`."""
    return torch.softmax(logits.float(), dim=-1)


@contextmanager
def record_router(model: nn.Module, layers: Iterable[MoELayer] | None = None) -> Iterator[dict[int, list]]:
    """Collect the router logits [B·T, E] per MoE layer index, one tensor per forward pass (`router_probs` turns
    them into probabilities).

    Also records the shared-expert gate's logit w·x [B·T, 1] under key ("shared", layer) when the block has one.
    The hooks store the modules' outputs and compute nothing: under activation checkpointing a layer is run again
    in the backward pass, after the hooks are gone, and any tensor an op in a hook saved for backward would be
    missing from that recomputation (torch raises a CheckpointError).
    """
    records: dict = {}
    handles = []

    def router_hook(index: int):
        def hook(_module, _inputs, output) -> None:
            logits = output[0] if isinstance(output, tuple) else output
            records.setdefault(index, []).append(logits)

        return hook

    def shared_hook(index: int):
        def hook(_module, _inputs, output) -> None:
            records.setdefault(("shared", index), []).append(output)

        return hook

    for moe in require_moe(model) if layers is None else layers:
        handles.append(moe.router.register_forward_hook(router_hook(moe.layer)))
        if moe.shared_gate is not None:
            handles.append(moe.shared_gate.register_forward_hook(shared_hook(moe.layer)))
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class Attribution:
    """UOE step 1: affinity[j, i] = mean over sequences of (mean over tokens of g_i) in MoE layer `layers[j]`."""

    layers: list[int]
    affinity: torch.Tensor  # [num MoE layers, E]
    tokens: int
    shared_gate: dict[int, float] = field(default_factory=dict)  # mean σ of the shared expert's gate per layer

    def top(self, top_m: int = 1) -> list[tuple[int, int]]:
        """The `top_m` (layer, expert) pairs with the highest affinity over all layers."""
        flat = self.affinity.flatten()
        if not 1 <= top_m <= flat.numel():
            raise UnlearnError(f"top_m must be in 1..{flat.numel()} (MoE layers x experts), got {top_m}.")
        picks = torch.topk(flat, top_m).indices.tolist()
        width = self.affinity.shape[1]
        return [(self.layers[p // width], p % width) for p in picks]

    def as_dict(self) -> dict:
        return {
            "layers": self.layers,
            "affinity": [[round(v, 6) for v in row] for row in self.affinity.tolist()],
            "tokens": self.tokens,
            "shared_gate": self.shared_gate,
        }


def expert_attribution(model: nn.Module, loader: Iterable[Batch], max_tokens: int = 100_000) -> Attribution:
    """Affinity of every routed expert to the data of `loader` (up to `max_tokens` non-padding tokens).

    s_i = mean over sequences of (mean over the sequence's tokens of the full-softmax router probability g_{i,t}).
    """
    layers = require_moe(model)
    device = module_device(model)
    sums = torch.zeros(len(layers), layers[0].num_experts if len({m.num_experts for m in layers}) == 1 else 0)
    if sums.shape[1] == 0:
        raise UnlearnError("MoE layers with different numbers of experts are not supported by expert attribution.")
    shared_sums = {moe.layer: 0.0 for moe in layers if moe.shared_gate is not None}
    sequences = tokens = 0
    with eval_mode(model), record_router(model, layers) as records:
        for batch in loader:
            if tokens >= max_tokens:
                break
            batch = to_device(batch, device)
            records.clear()
            model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False)
            mask = token_mask(batch).float()
            keep = (mask.sum(1) > 0).float()
            for j, moe in enumerate(layers):
                probs = router_probs(records[moe.layer][0]).view(*mask.shape, -1)
                per_sequence = (probs * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
                sums[j] += (per_sequence * keep[:, None]).sum(0).cpu()
                if moe.shared_gate is not None:
                    gate = torch.sigmoid(records[("shared", moe.layer)][0].float()).view(mask.shape)
                    shared_sums[moe.layer] += ((gate * mask).sum(1) / mask.sum(1).clamp(min=1) * keep).sum().item()
            sequences += int(keep.sum().item())
            tokens += int(mask.sum().item())
    if sequences == 0:
        raise UnlearnError("expert attribution got no tokens: the forget loader is empty.")
    shared = {layer: round(total / sequences, 6) for layer, total in shared_sums.items()}
    return Attribution([moe.layer for moe in layers], sums / sequences, tokens, shared)


def find_moe_layer(model: nn.Module, layer: int) -> MoELayer:
    for moe in require_moe(model):
        if moe.layer == layer:
            return moe
    raise UnlearnError(
        f"decoder layer {layer} is not an MoE layer; MoE layers: {[m.layer for m in moe_layers(model)]}."
    )


def expert_slice(model: nn.Module, layer: int, expert: int) -> tuple[dict[str, nn.Parameter], dict[str, torch.Tensor]]:
    """Parameters holding expert `expert` of MoE layer `layer`, and bool masks selecting its slice of fused ones.

    Fused v5 experts: every parameter of `experts` whose first dimension is E gets a mask that is True only on
    [expert]; a ModuleList of experts gives that expert's own parameters, unmasked.
    """
    moe = find_moe_layer(model, layer)
    if not 0 <= expert < moe.num_experts:
        raise UnlearnError(f"expert {expert} does not exist: layer {layer} has experts 0..{moe.num_experts - 1}.")
    names = {param: name for name, param in model.named_parameters()}
    if isinstance(moe.experts, nn.ModuleList):
        return {names[p]: p for p in moe.experts[expert].parameters()}, {}
    params, masks = {}, {}
    for param in moe.experts.parameters():
        if param.dim() < 2 or param.shape[0] != moe.num_experts:
            raise UnlearnError(f"cannot slice expert parameter {names[param]} of shape {tuple(param.shape)} by expert.")
        chosen = torch.zeros(moe.num_experts, dtype=torch.bool, device=param.device)
        chosen[expert] = True
        mask = chosen.view(-1, *[1] * (param.dim() - 1)).expand_as(param)  # a view: no memory of its own
        params[names[param]], masks[names[param]] = param, mask
    return params, masks


def router_parameters(model: nn.Module, layer: int) -> dict[str, nn.Parameter]:
    """The router weight (and bias, if any) of MoE layer `layer`."""
    names = {param: name for name, param in model.named_parameters()}
    return {names[p]: p for p in find_moe_layer(model, layer).router.parameters()}


def count_parameters(params: dict[str, nn.Parameter], masks: dict[str, torch.Tensor]) -> int:
    """Number of scalars that can change: the masked slice of a masked parameter, all of an unmasked one."""
    return sum(int(masks[name].count_nonzero()) if name in masks else param.numel() for name, param in params.items())
