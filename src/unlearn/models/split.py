"""Split any classifier into feature extractor h and head g, and insert an edit between them.

The head is a named submodule that the model calls once on its features (``fc``, ``head``,
``classifier`` or, failing those, the last ``nn.Linear``).

The model contract (docs/contract.md): the caller's model is never modified.
- `split_model` shares weights (fitting needs no copy): ``features`` is a structural copy of the model whose
  head is replaced by ``nn.Identity``, so it returns exactly the head's input. The copied modules on the path
  to the head (the root, and the parents of the head) start with no hooks, so a hook the user put on the
  model never fires with feature tensors in place of logits; their own submodules are the user's.
- `with_edit` (what `apply` returns) deep-copies the model by default, so the result shares no module,
  parameter, flag or hook dict with the input. `share_weights=True` is the memory-saving opt-in: only the
  path to the head is copied (with its own hook dicts, holding the input's hooks), every other submodule is
  the input's own, so train/eval flags, hooks and in-place weight updates of those are shared.
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


# hooks that see a module's output or its gradient: on a copy whose head is replaced, those are features
OUTPUT_HOOKS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def _path_copy(module: nn.Module, keep_hooks: bool) -> nn.Module:
    """A shallow copy of `module` with its own dicts of submodules, parameters, buffers and hooks.

    Registering a hook, parameter or submodule on the copy never reaches `module`. `keep_hooks=False` leaves
    the copy without the user's output and backward hooks (`OUTPUT_HOOKS`), which would otherwise see the
    features in place of the module's real output; pre-hooks see the same inputs as ever and are kept.
    """
    clone = copy.copy(module)
    for key, value in vars(module).items():
        if isinstance(value, dict) and (key in ("_modules", "_parameters", "_buffers") or "hooks" in key):
            clone.__dict__[key] = type(value)() if not keep_hooks and key in OUTPUT_HOOKS else type(value)(value)
        elif isinstance(value, set):  # e.g. _non_persistent_buffers_set
            clone.__dict__[key] = set(value)
    return clone


def replace_module(model: nn.Module, name: str, new: nn.Module, keep_hooks: bool = True) -> nn.Module:
    """A copy of `model` with submodule `name` replaced by `new`; all other submodules are shared, not copied.

    Only the root and the parents of `name` are copied (see `_path_copy`); `keep_hooks=False` leaves the
    copies without the user's hooks.
    """
    root = _path_copy(model, keep_hooks)
    parent = root
    *path, leaf = name.split(".")
    for part in path:
        child = _path_copy(parent._modules[part], keep_hooks)
        parent._modules[part] = child
        parent = child
    parent._modules[leaf] = new
    return root


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of `module` in eval mode, without gradients and without the user's output/backward hooks.

    For methods that run the model's head on edited features (ESC-T's mask, the ConditionalMoRE router,
    MoRE-T's detector): the user's head keeps its flags, and its hooks never see those features.
    """
    clone = independent_copy(module).eval().requires_grad_(False)
    for sub in clone.modules():
        for key in OUTPUT_HOOKS:
            if isinstance(getattr(sub, key, None), dict):
                sub.__dict__[key] = type(sub.__dict__[key])()
    return clone


def independent_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` (modules, parameters, buffers, flags and hook dicts), with a clear error if it fails."""
    try:
        return copy.deepcopy(model)
    except (RuntimeError, TypeError) as error:
        raise UnlearnError(
            f"cannot deep-copy {type(model).__name__} ({error}); pass share_weights=True to reuse its modules."
        ) from error


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
        features = replace_module(model, name, head_module.edit, keep_hooks=False)
        return features, head_module.head
    return replace_module(model, name, nn.Identity(), keep_hooks=False), head_module


def split_for_probe(model: nn.Module, head: str | None = None) -> tuple[nn.Module, nn.Module, nn.Module]:
    """Return (base features, post edit, head): deterministic base features can be cached once,
    while the (possibly stochastic) edit must run again at every probe epoch."""
    name = find_head(model, head)
    head_module = get_module(model, name)
    base = replace_module(model, name, nn.Identity(), keep_hooks=False)
    if isinstance(head_module, EditedHead):
        return base, head_module.edit, head_module.head
    return base, nn.Identity(), head_module


def with_edit(model: nn.Module, edit: nn.Module, head: str | None = None, share_weights: bool = False) -> nn.Module:
    """The unlearned model: same inputs and logits, with `edit` inserted between h and g.

    A deep copy of `model` unless `share_weights` (see the module docstring); `model` is never changed.
    On an already edited model the new edit runs after the earlier one, since it was fit on the
    features that `split_model` gives for that model (which include the earlier edit).
    """
    name = find_head(model, head)
    model = model if share_weights else independent_copy(model)
    current = get_module(model, name)
    if isinstance(current, EditedHead):
        return replace_module(model, name, EditedHead(nn.Sequential(current.edit, edit), current.head))
    return replace_module(model, name, EditedHead(edit, current))
