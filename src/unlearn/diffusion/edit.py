"""MoRE in cross-attention: W_k' = W_k E, W_v' = W_v E for every `attn2` of a diffusers UNet (MoRE paper §4.1).

    E = I − P_f D (+ P_t diag(s) D),   D = P⁺ of the concept prototypes P (d_text x k)        eq. 5 / eq. 6

Keys and values of the cross-attention are linear in the text encoder's hidden states, so an edit E of those
hidden states is folded into the projections once (W' = W E) and generation costs nothing extra. The matrices
come from `unlearn.methods.more` (pinv via SVD, erase / remap); UCE's comes from `uce.py`.

Choices the paper leaves open:
- Every cross-attention layer is edited, keys and values alike (so where a token attends and what it writes
  both follow the remapped concept); queries, self-attention and the text encoder are untouched.
- `remap` sends every forget concept to one remain concept (`target`, else drawn with the seed).
- `more` cannot route per token at run time without giving up the absorbed weights, so its N_e experts
  (each a seeded uniform draw of a remain concept per forget concept, as on the vision side) are spread over
  the layers instead: layer l uses expert l mod N_e. A forget concept is thus written as different remain
  concepts in different layers, all still absorbed.
- `uce` uses the same prototypes, the same targets as `remap`, and the remain concepts as its preserve set.
- `anchors` are extra remain columns (e.g. the prompt context of concepts.context_prototypes): kept, and
  preserved by UCE, but never remap targets.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from unlearn.diffusion.uce import uce_matrix
from unlearn.errors import UnlearnError
from unlearn.methods.more import draw_targets, erase_matrix, forget_coordinates, remap_matrix
from unlearn.models.split import independent_copy

METHODS = ("erase", "remap", "more", "uce")


def cross_attention_layers(unet: nn.Module) -> dict[str, nn.Module]:
    """Every cross-attention module (`...attn2`) with linear `to_k` / `to_v`, by qualified name."""
    layers = {
        name: module
        for name, module in unet.named_modules()
        if name.split(".")[-1] == "attn2" and isinstance(getattr(module, "to_k", None), nn.Linear)
    }
    if not layers:
        raise UnlearnError(
            f"{type(unet).__name__} has no cross-attention layer named 'attn2' with linear to_k/to_v; pass a "
            "diffusers UNet2DConditionModel with cross_attention_dim set (a text-conditioned UNet)."
        )
    widths = {module.to_k.in_features for module in layers.values()} | {m.to_v.in_features for m in layers.values()}
    if len(widths) != 1:
        raise UnlearnError(f"the cross-attention layers read text features of different widths {sorted(widths)}.")
    return layers


@dataclass
class ConceptEdit:
    """One d_text x d_text matrix per cross-attention layer, and which concept each forget concept became there."""

    method: str
    concepts: list[str]
    forget: list[str]
    matrices: dict[str, torch.Tensor]
    targets: dict[str, dict[str, str]] = field(default_factory=dict)  # layer -> {forget concept: target}
    rank: int | None = None


def _check_concepts(concepts: Sequence[str], forget: Sequence[str]) -> list[int]:
    """Columns of the forget concepts; they must be named concepts, and some remain concept must be left."""
    unknown = [name for name in forget if name not in concepts]
    if unknown:
        raise UnlearnError(f"forget concept(s) {unknown} are not among the concepts {list(concepts)}.")
    if not forget:
        raise UnlearnError("forget is empty: name at least one concept to forget.")
    if len(set(concepts)) != len(concepts):
        raise UnlearnError(f"concepts must be distinct, got {list(concepts)}.")
    if len(set(forget)) == len(concepts):
        raise UnlearnError("every concept is a forget concept: add remain concepts to keep and remap to.")
    return [list(concepts).index(name) for name in forget]


def build_edit(
    prototypes: torch.Tensor,
    concepts: Sequence[str],
    forget: Sequence[str],
    layer_names: Sequence[str],
    method: str = "more",
    num_experts: int = 8,
    target: str | None = None,
    seed: int = 0,
    orthogonal: bool = True,
    rtol: float = 1e-6,
    uce_lambda: float = 0.1,
    anchors: Sequence[str] = (),
) -> ConceptEdit:
    """The per-layer edit matrices for forgetting `forget` among `concepts` (columns of `prototypes`, d x k)."""
    if method not in METHODS:
        raise UnlearnError(f"method must be one of {METHODS}, got {method!r}.")
    if prototypes.ndim != 2 or prototypes.shape[1] != len(concepts):
        raise UnlearnError(f"prototypes must be d x {len(concepts)} (one column per concept), got {prototypes.shape}.")
    if num_experts < 1:
        raise UnlearnError(f"num_experts must be >= 1, got {num_experts}.")
    forget_cols = _check_concepts(concepts, forget)
    if set(anchors) & set(forget) or not set(anchors) <= set(concepts):
        raise UnlearnError(f"anchors {list(anchors)} must be concepts that are not forgotten.")
    remain_cols = [i for i in range(len(concepts)) if i not in forget_cols]
    target_cols = [i for i in remain_cols if concepts[i] not in anchors]
    if not target_cols and method != "erase":
        raise UnlearnError("no remain concept to remap to (anchors are never targets); add a remain concept.")
    concepts, forget = list(concepts), list(forget)
    if method == "erase":
        coords, rank = forget_coordinates(prototypes, forget_cols, orthogonal, rtol)
        matrix = erase_matrix(prototypes.double(), coords, forget_cols)
        return ConceptEdit(method, concepts, forget, {name: matrix for name in layer_names}, {}, rank)
    experts = _draw_experts(
        concepts, target_cols, len(forget_cols), num_experts if method == "more" else 1, target, seed
    )
    if method == "more" and num_experts > len(layer_names):
        warnings.warn(
            f"num_experts={num_experts} > {len(layer_names)} cross-attention layers: only the first "
            f"{len(layer_names)} experts are used.",
            stacklevel=2,
        )
    if method == "uce":
        p = prototypes.double()
        matrix = uce_matrix(p[:, forget_cols], p[:, experts[0]], p[:, remain_cols], uce_lambda)
        matrices, rank, assigned = {name: matrix for name in layer_names}, None, [experts[0]] * len(layer_names)
    else:
        coords, rank = forget_coordinates(prototypes, forget_cols, orthogonal, rtol)
        per_expert = [remap_matrix(prototypes.double(), coords, forget_cols, columns) for columns in experts]
        assigned = [experts[i % len(experts)] for i in range(len(layer_names))]
        matrices = {name: per_expert[i % len(experts)] for i, name in enumerate(layer_names)}
    targets = {
        name: {concept: concepts[column] for concept, column in zip(forget, columns, strict=True)}
        for name, columns in zip(layer_names, assigned, strict=True)
    }
    return ConceptEdit(method, concepts, forget, matrices, targets, rank)


def _draw_experts(
    concepts: list[str], target_cols: list[int], num_forget: int, num_experts: int, target: str | None, seed: int
) -> list[list[int]]:
    """Target column of every forget concept, per expert: the fixed `target`, else seeded uniform draws."""
    if target is not None:
        if target not in concepts or concepts.index(target) not in target_cols:
            raise UnlearnError(
                f"target {target!r} is not a remain concept; choose from {[concepts[i] for i in target_cols]}."
            )
        return [[concepts.index(target)] * num_forget]
    generator = torch.Generator().manual_seed(seed)
    return draw_targets(num_forget, target_cols, num_experts, generator).tolist()


@torch.no_grad()
def absorb(unet: nn.Module, edit: ConceptEdit, inplace: bool = False) -> nn.Module:
    """The UNet with W ← W E for `to_k` and `to_v` of every edited cross-attention layer (biases unchanged).

    A deep copy of `unet` by default, which is left unchanged (the model contract, docs/contract.md);
    `inplace=True` edits `unet` itself and returns it (no second copy of a large UNet).
    """
    layers = cross_attention_layers(unet)
    missing = sorted(set(edit.matrices) - set(layers))
    if missing:
        raise UnlearnError(f"the edit names cross-attention layers {missing} that this UNet does not have.")
    if not inplace:
        unet = independent_copy(unet)
        layers = cross_attention_layers(unet)
    for name, matrix in edit.matrices.items():
        for projection in (layers[name].to_k, layers[name].to_v):
            if projection.in_features != matrix.shape[0]:
                raise UnlearnError(
                    f"{name} reads {projection.in_features}-d text features but the edit is {tuple(matrix.shape)}: "
                    "the prototypes come from a different text encoder."
                )
            weight = projection.weight
            projection.weight.copy_((weight.double() @ matrix.to(weight.device)).to(weight.dtype))
    return unet
