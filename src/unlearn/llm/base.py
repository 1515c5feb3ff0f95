"""What every LM unlearning method shares: `unlearn(model, forget_loader, retain_loader)` returns a new model.

A method is a batch loss (`loss`), the parameters it trains (`parameters_to_train`) and fixed quantities it
computes once from the frozen original model before training (`prepare`: RMU/SRMU targets). The input model
is never changed; it serves as the frozen original (NPO reference, RMU's H_θ0) in eval mode without gradients.

Memory: the model trained is a `shared_copy` of the input: only the parameters the method trains are copied,
every other parameter is the input's own tensor (never written, since it does not train). So a whole-model
method holds the input + one trainable copy (+ its gradients and AdamW state); RMU, which trains three
down-projections, holds the input + those three matrices; UOE the input + one layer's fused experts + router.
The model returned is independent of the input (the model contract, docs/contract.md): the untrained tensors
are cloned at the end, unless `unlearn(..., share_weights=True)` opts in to keeping them shared (no extra
memory; then never train or change the returned model in place, or the input changes too).

Sharding (`fsdp=True` under `torchrun`, whole-model methods GA, GradDiff, NPO): the trainable copy is sharded with
PyTorch's FSDP2 (`fully_shard` on every decoder layer, then the root), so each of W processes holds 1/W of its
weights, gradients and AdamW state; FSDP averages the gradients over ranks (the same mean as DDP's all-reduce),
and at the end every rank gathers the full weights into a plain, unsharded model. The frozen input (the NPO
reference) stays whole on every rank. In a single process `fsdp=True` changes nothing. Choices: only
whole-model methods shard, since RMU, SRMU and UOE train a few matrices whose state is already small (and
UOE's slice masks need whole tensors); the copy is built on the meta device and each rank loads only its shard
from the input, so no second whole model is ever held.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Iterable

import torch
from torch import nn

from unlearn import distributed
from unlearn.errors import Params, UnlearnError
from unlearn.eval.cost import CostMeter
from unlearn.llm.moe import count_parameters
from unlearn.llm.train import Batch, LMTrainConfig, decoder_layers, select_parameters, train_lm
from unlearn.runtime import module_device
from unlearn.validate import checked_init


def check_loader(loader: Iterable[Batch] | None, what: str) -> None:
    """A clear error for a missing or empty loader (an iterable of batch dicts with `input_ids`)."""
    if loader is None:
        raise UnlearnError(f"this method needs a {what} loader; pass one.")
    first = next(iter(loader), None)
    if first is None:
        raise UnlearnError(f"the {what} loader is empty; give it at least one batch.")
    if not isinstance(first, dict) or "input_ids" not in first:
        raise UnlearnError(f"{what} batches must be dicts with 'input_ids' (and 'attention_mask', 'labels').")


@checked_init
class LMUnlearner(Params, ABC):
    """Base of GA, GradDiff, NPO, RMU, SRMU: trains a copy of the model with the one loop (`train_lm`)."""

    name = "lm"
    uses_retain = True

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        checked_init(cls)  # every argument's type and range (unlearn.validate) before __init__ runs

    def __init__(
        self,
        steps: int | None = None,
        epochs: int = 5,
        lr: float = 1e-5,
        weight_decay: float = 0.01,
        max_grad_norm: float | None = 1.0,
        train_params: str | list[str] | None = None,
        seed: int = 0,
        progress: bool = False,
        grad_accum: int = 1,
        fsdp: bool = False,
    ) -> None:
        """`fsdp`: under `torchrun`, shard the trainable copy over the processes (FSDP2; whole-model methods)."""
        self.recipe = LMTrainConfig(steps, epochs, lr, weight_decay, max_grad_norm, seed, grad_accum)
        self.fsdp = fsdp
        self.train_params = train_params
        self.seed, self.progress = seed, progress
        self.original: nn.Module | None = None
        self.cost = CostMeter()
        self.report: dict = {}

    def prepare(self, student: nn.Module, original: nn.Module, forget_loader, retain_loader) -> None:
        """Remember the frozen original; subclasses also compute their fixed targets here."""
        self.original = original

    @abstractmethod
    def loss(self, model: nn.Module, forget: Batch, retain: Batch | None) -> dict[str, torch.Tensor]:
        """Named loss terms of one step (summed by the loop). The first forward of `model` is on `forget`."""

    def parameters_to_train(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """`train_params` regexes over parameter names; None trains every parameter (the whole model)."""
        return select_parameters(model, self.train_params)

    def unlearn(self, model: nn.Module, forget_loader, retain_loader=None, share_weights: bool = False) -> nn.Module:
        """A copy of `model` trained to forget `forget_loader` (and keep `retain_loader`); `model` is untouched.

        `share_weights=True`: the untrained parameters of the result stay the input's own tensors (opt-in)."""
        check_loader(forget_loader, "forget")
        if self.uses_retain:
            check_loader(retain_loader, "retain")
        shard = self.fsdp and distributed.active()
        student = sharded_copy(model) if shard else shared_copy(model, self.parameters_to_train(model))
        with self.cost.phase("unlearn"):
            self.prepare(student, model, forget_loader, retain_loader)
            params = self.parameters_to_train(student)
            history = self.fit(student, forget_loader, retain_loader, params)
        self.report = {"method": self.name, **self.report, **summary(history, params, {}, student)}
        self.report["cost"] = self.cost.phases
        if shard:
            return gathered(student, model)
        return student if share_weights else unshare(student, model)

    def fit(self, student: nn.Module, forget_loader, retain_loader, params, masks=None, loss_fn=None) -> list[dict]:
        return train_lm(
            student,
            loss_fn or self.loss,
            forget_loader,
            retain_loader if self.uses_retain else None,
            params,
            self.recipe,
            masks,
            self.progress,
            desc=self.name,
        )


def shared_copy(model: nn.Module, trained: Iterable[str]) -> nn.Module:
    """A copy of `model` in which the parameters named in `trained` are new tensors and all others are shared.

    Shared parameters are the input's own tensors (no memory); they must not be trained. A tensor tied under
    several names (e.g. embeddings and LM head) is copied when any of its names is trained.
    """
    trained = set(trained)
    named = list(model.named_parameters(remove_duplicate=False))
    copied = {id(param) for name, param in named if name in trained}
    memo = {id(param): param for _, param in named if id(param) not in copied}
    return copy.deepcopy(model, memo)


def sharded_copy(model: nn.Module) -> nn.Module:
    """A trainable copy of `model` sharded over the process group (FSDP2: each decoder layer, then the root).

    The copy is built on the meta device and sharded before any weight is materialised; each rank then loads only
    its own shard from `model`'s full weights, so no whole second copy is ever held. Buffers are copied as they
    are (non-persistent ones, e.g. rotary frequencies, are not in a state dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.fsdp import fully_shard

    student = copy.deepcopy(model, meta_parameters(model))
    for layer in decoder_layers(student):
        fully_shard(layer)
    fully_shard(student)
    buffers = dict(model.named_buffers())
    student.to_empty(device=module_device(model))
    with torch.no_grad():
        for name, buffer in student.named_buffers():
            buffer.copy_(buffers[name])
    set_model_state_dict(student, model.state_dict(), options=StateDictOptions(full_state_dict=True))
    return student


def gathered(sharded: nn.Module, like: nn.Module) -> nn.Module:
    """A plain model (the structure of `like`) holding the full weights of the FSDP-sharded `sharded`, on every
    rank; the gathered tensors become its parameters (no further copy)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(sharded, options=StateDictOptions(full_state_dict=True))
    plain = copy.deepcopy(like, meta_parameters(like))
    plain.load_state_dict(state, assign=True)  # keeps each parameter's requires_grad as in `like`
    if hasattr(plain, "tie_weights"):  # a transformers model: tied embeddings become one tensor again
        plain.tie_weights()
    return plain


def meta_parameters(model: nn.Module) -> dict[int, nn.Parameter]:
    """A deepcopy memo that gives a copy of `model` storage-free (meta) parameters, to be filled in afterwards."""
    return {id(p): nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad) for p in model.parameters()}


def unshare(student: nn.Module, model: nn.Module) -> nn.Module:
    """`student` with every parameter and buffer it shares with `model` replaced by a clone (ties kept)."""
    shared = {t.data_ptr() for t in [*model.parameters(), *model.buffers()]}
    clones: dict[int, nn.Parameter] = {}
    for module in student.modules():
        for name, param in list(module._parameters.items()):
            if param is not None and param.data_ptr() in shared:
                if id(param) not in clones:
                    clones[id(param)] = nn.Parameter(param.detach().clone(), requires_grad=param.requires_grad)
                module._parameters[name] = clones[id(param)]
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.data_ptr() in shared:
                module._buffers[name] = buffer.clone()
    return student


def summary(history: list[dict], params: dict, masks: dict, model: nn.Module) -> dict:
    """Steps, first and last loss terms, and how many parameters the run could change."""
    changed = count_parameters(params, masks)
    total = sum(p.numel() for p in model.parameters())
    return {
        "steps": len(history),
        "loss_first": history[0],
        "loss_last": history[-1],
        "loss_history": [round(step["loss"], 6) for step in history],
        "params_updated": changed,
        "params_total": total,
        "param_fraction": changed / total,
    }
