"""Feature edits at an inner layer (paper Table 7; MORE.md §6): prototypes of a named module's output.

    a = f_L(x)  (the output of module L, e.g. a conv block: B x C x H x W)
    pool=False:  prototypes over flatten(a) (d = C·H·W); the edit acts on flatten(a), reshaped back (default)
    pool=True:   prototypes over the spatial mean of a (d = C); the edit acts on the channel vector at
                 every position, a[:, :, i, j] ← edit(a[:, :, i, j])  (stochastic experts: one draw per position)

Measured on digits (bench/layers.py): the flattened edit forgets at the 2nd- and 3rd-last conv blocks
with output HM_t 99.3 / 94.9; the pooled one does not (spatial patterns still carry the class), hence the
default.

For a single (linear) expert the two views agree on what is removed: the mean over positions of E a_ij
is E applied to the pooled vector. The edited module is replaced by Sequential(module, InnerEdit), so the
rest of the network runs unchanged and the model keeps its interface.
"""

from __future__ import annotations

import torch
from torch import nn

from unlearn.errors import UnlearnError
from unlearn.models.split import get_module, independent_copy, replace_module


class _Reached(Exception):
    """Raised by the hook to stop the forward pass once the module's output is captured."""


class ActivationAt(nn.Module):
    """x -> the output of `model`'s module `name`, pooled over spatial dims or flattened (no later layer runs)."""

    def __init__(self, model: nn.Module, name: str, pool: bool = False) -> None:
        super().__init__()
        modules = dict(model.named_modules())
        if name not in modules or name == "":
            raise UnlearnError(f"module {name!r} not found; named modules: {[n for n in modules if n][:20]} ...")
        self.model, self.name, self.pool = model, name, pool
        self.train(model.training)  # a fresh Module is in train mode; never switch the user's model to it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def hook(_module, _inputs, output):
            captured.append(output)
            raise _Reached

        handle = get_module(self.model, self.name).register_forward_hook(hook)
        try:
            self.model(x)
        except _Reached:
            pass
        finally:
            handle.remove()
        if not captured:
            raise UnlearnError(f"module {self.name!r} did not run in the model's forward pass.")
        a = captured[0]
        if self.pool and a.dim() > 2:
            return a.flatten(2).mean(dim=2)
        return a.flatten(1)


class InnerEdit(nn.Module):
    """Apply a feature edit to an activation: on the channel vector at every position, or on the flattened map."""

    def __init__(self, edit: nn.Module, pool: bool = False) -> None:
        super().__init__()
        self.edit, self.pool = edit, pool

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if a.dim() <= 2:
            return self.edit(a)
        if self.pool:
            return self.edit(a.movedim(1, -1)).movedim(-1, 1)
        return self.edit(a.flatten(1)).reshape(a.shape)


def insert_inner_edit(
    model: nn.Module, name: str, edit: nn.Module, pool: bool = False, share_weights: bool = False
) -> nn.Module:
    """A copy of `model` (deep, unless `share_weights`) whose module `name` is followed by the edit."""
    model = model if share_weights else independent_copy(model)
    return replace_module(model, name, nn.Sequential(get_module(model, name), InnerEdit(edit, pool)))
