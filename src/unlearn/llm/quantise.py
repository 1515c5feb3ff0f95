"""The quantisation attack: evaluate a model with its weights fake-quantised to 8 or 4 bits.

Zhang et al. (ICLR 2025) find that quantising an unlearned model to 4 bits brings back much of what
utility-constrained unlearning (GA/NPO with a retain term) removed: the small weight changes fall under the
quantisation step, so the quantised model is close to the quantised original. Our quantiser is the simplest
weight-only one, round-to-nearest, symmetric, one scale per output channel:

    s_r = max_j |W[r, j]| / (2^(b−1) − 1),   Q(W)[r, j] = s_r · clamp(round(W[r, j] / s_r), −(2^(b−1) − 1), 2^(b−1) − 1)

over the last dimension of every ≥ 2-D parameter inside the decoder layers (attention and MLP projections,
fused expert tensors [E, out, in] per expert and output row, routers); embeddings, the LM head and norms stay
in full precision, as in GPTQ/AWQ-style weight-only quantisation. It is an RTN quantiser, not GPTQ/AWQ: the
paper's recovery figures were measured with those, so ours can differ. Weights are quantised on the fly
(`torch.nn.utils.parametrize`), so no copy of the model is made and the parameters themselves never change.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils import parametrize

from unlearn.errors import UnlearnError
from unlearn.llm.train import decoder_layers


def fake_quantise(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel (last dimension) symmetric round-to-nearest quantisation to `bits`, dequantised."""
    if not 2 <= bits <= 16:
        raise UnlearnError(f"bits must be in 2..16, got {bits}.")
    levels = 2 ** (bits - 1) - 1
    w = weight.float()
    scale = w.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / levels
    return ((w / scale).round().clamp(-levels, levels) * scale).to(weight.dtype)


class FakeQuantise(nn.Module):
    """Parametrization: the module sees Q(W) instead of W."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return fake_quantise(weight, self.bits)


def quantised_parameters(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, parameter name) of every ≥ 2-D parameter inside the decoder layers."""
    found = []
    for module in decoder_layers(model).modules():
        for name, param in module.named_parameters(recurse=False):
            if param.dim() >= 2:
                found.append((module, name))
    if not found:
        raise UnlearnError(f"{type(model).__name__} has no weight matrix inside its decoder layers to quantise.")
    return found


@contextmanager
def quantised(model: nn.Module, bits: int) -> Iterator[nn.Module]:
    """Inside the block, `model` computes with Q(W) for every decoder weight (see module doc); restored on exit."""
    targets = quantised_parameters(model)
    done = []
    try:
        with torch.no_grad():
            for module, name in targets:
                parametrize.register_parametrization(module, name, FakeQuantise(bits), unsafe=True)
                done.append((module, name))
        yield model
    finally:
        for module, name in reversed(done):
            parametrize.remove_parametrizations(module, name, leave_parametrized=False)
