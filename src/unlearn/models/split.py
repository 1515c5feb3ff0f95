"""Split any classifier into feature extractor h and head g without copying weights.

The head is a named submodule that the model calls once on its features (``fc``, ``head``,
``classifier`` or, failing those, the last ``nn.Linear``). Both returned modules share the
original parameters: ``features`` is a structural copy of the model whose head is replaced by
``nn.Identity``, so it returns exactly the head's input. The caller's model is never modified.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from unlearn.errors import UnlearnError

HEAD_NAMES = ("fc", "head", "classifier")


class EditedHead(nn.Module):
    """Head preceded by a feature edit: g(edit(z)). What `apply` inserts between h and g."""

    def __init__(self, edit: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.edit = edit
        self.head = head

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.edit(z))


def find_head(model: nn.Module, head: str | None = None) -> str:
    """Qualified name of the classification head: the given name, a conventional one, or the last Linear."""
    modules = dict(model.named_modules())
    edited = [name for name, module in modules.items() if isinstance(module, EditedHead)]
    if head is None and edited:
        return edited[0]
    if head is not None:
        if head not in modules or head == "":
            names = [n for n in modules if n][:20]
            raise UnlearnError(f"the model has no submodule named {head!r}; some of its submodules: {names}")
        return head
    for name in HEAD_NAMES:
        if name in modules and _has_linear(modules[name]):
            return name
    # name "" is the model itself: a bare Linear has no feature extractor to split off.
    linears = [name for name, module in modules.items() if name and isinstance(module, nn.Linear)]
    if not linears:
        raise UnlearnError(
            f"cannot find the classification head of {type(model).__name__}: it has no submodule named "
            f"{' / '.join(HEAD_NAMES)} and no nn.Linear submodule. Pass head='<submodule name>'."
        )
    return _last_linear_head(model, modules, linears)


def _last_linear_head(model: nn.Module, modules: dict[str, nn.Module], linears: list[str]) -> str:
    """The last-registered Linear, when it plausibly is the head: the last module with parameters and the
    narrowest Linear. Otherwise (e.g. a head registered before the body) a clear error asking for head=."""
    last = linears[-1]
    with_params = [n for n, m in modules.items() if n and not m._modules and any(True for _ in m.parameters(False))]
    narrowest = min(modules[n].out_features for n in linears)
    if with_params[-1] == last and modules[last].out_features == narrowest:
        return last
    raise UnlearnError(
        f"cannot tell which nn.Linear of {type(model).__name__} is its classification head (it has no submodule "
        f"named {' / '.join(HEAD_NAMES)}, and the last registered Linear {last!r} is not its last layer with "
        f"weights, or not its narrowest Linear). Pass head='<submodule name>', one of {linears}."
    )


def _has_linear(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Linear) for m in module.modules())


def replace_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """A copy of `model` with submodule `name` replaced by `new`; all other weights are shared, not copied."""
    root = copy.copy(model)
    root._modules = dict(model._modules)
    parent = root
    *path, leaf = name.split(".")
    for part in path:
        child = copy.copy(parent._modules[part])
        child._modules = dict(child._modules)
        parent._modules[part] = child
        parent = child
    parent._modules[leaf] = new
    return root


def get_module(model: nn.Module, name: str) -> nn.Module:
    return dict(model.named_modules())[name]


def split_model(model: nn.Module, head: str | None = None) -> tuple[nn.Module, nn.Module]:
    """Return (features, head) sharing the model's weights; features(x) is the head's input.

    An already unlearned model (head is an `EditedHead`) splits into features that include the
    edit, so that probes see the unlearned representation.
    """
    name = find_head(model, head)
    head_module = get_module(model, name)
    if isinstance(head_module, EditedHead):
        features = replace_module(model, name, head_module.edit)
        return features, head_module.head
    return replace_module(model, name, nn.Identity()), head_module


def split_for_probe(model: nn.Module, head: str | None = None) -> tuple[nn.Module, nn.Module, nn.Module]:
    """Return (base features, post edit, head): deterministic base features can be cached once,
    while the (possibly stochastic) edit must run again at every probe epoch."""
    name = find_head(model, head)
    head_module = get_module(model, name)
    base = replace_module(model, name, nn.Identity())
    if isinstance(head_module, EditedHead):
        return base, head_module.edit, head_module.head
    return base, nn.Identity(), head_module


def with_edit(model: nn.Module, edit: nn.Module, head: str | None = None) -> nn.Module:
    """The unlearned model: same inputs and logits, with `edit` inserted between h and g.

    On an already edited model the new edit runs after the earlier one, since it was fit on the
    features that `split_model` gives for that model (which include the earlier edit).
    """
    name = find_head(model, head)
    current = get_module(model, name)
    if isinstance(current, EditedHead):
        return replace_module(model, name, EditedHead(nn.Sequential(current.edit, edit), current.head))
    return replace_module(model, name, EditedHead(edit, current))
