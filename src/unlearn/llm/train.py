"""The one training loop of LM unlearning (AdamW, steps or epochs over D_f, grad clipping, gradient accumulation,
trained slices of parameters, data parallelism over processes).

Every method (GA, GradDiff, NPO, RMU, SRMU, and UOE around any of them) differs only in its batch loss and in
which parameters train; this module also knows where a causal LM keeps its decoder layers and how to read
one layer's output with a forward hook.

Several processes (`torchrun`): every rank draws the same batches and trains on its contiguous share of the rows
of each batch; gradients are averaged over ranks (all-reduce) before clipping, so the optimizer sees the
gradient of the global batch. With equal token counts per rank (e.g. equal-length texts) this is the same
update as one process up to float summation order; with unequal counts each rank's mean is weighted equally.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from unlearn.errors import UnlearnError
from unlearn.runtime import eval_mode as modes_kept
from unlearn.runtime import module_device

Batch = dict[str, torch.Tensor]
BatchLoss = Callable[[nn.Module, Batch, Batch | None], dict[str, torch.Tensor]]


@dataclass
class LMTrainConfig:
    """Recipe of one unlearning run: `steps` optimizer steps, or `epochs` passes over the forget loader."""

    steps: int | None = None
    epochs: int = 1
    lr: float = 1e-5
    weight_decay: float = 0.01  # AdamW, decoupled; never applied to masked-out slices
    max_grad_norm: float | None = 1.0
    seed: int = 0
    grad_accum: int = 1  # micro-batches (forget, retain) per optimizer step; the loss is their mean

    def __post_init__(self) -> None:
        bad_steps = self.steps is not None and self.steps < 1
        if bad_steps or self.epochs < 1 or self.lr <= 0 or self.weight_decay < 0 or self.grad_accum < 1:
            raise UnlearnError(
                f"LM training needs steps >= 1 (or None), epochs >= 1, lr > 0, weight_decay >= 0, grad_accum >= 1: "
                f"{self}"
            )


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a transformers causal LM (`model.model.layers` for Llama, Qwen2(-MoE), OLMoE, Mixtral)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.split(".")[-1] in ("layers", "h", "blocks") and len(module):
            return module
    raise UnlearnError(f"cannot find the decoder layers of {type(model).__name__} (no ModuleList named 'layers').")


def check_layer(model: nn.Module, layer: int) -> int:
    """`layer` if it indexes a decoder layer of `model`, else a clear error naming the valid range."""
    count = len(decoder_layers(model))
    if not isinstance(layer, int) or not 0 <= layer < count:
        raise UnlearnError(f"layer {layer!r} does not exist: {type(model).__name__} has decoder layers 0..{count - 1}.")
    return layer


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` in eval mode without gradients, then give every submodule back the mode it had."""
    with modes_kept(model), torch.no_grad():
        yield model


def forward(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Logits of a batch; the loss is computed by the method (no labels passed, so no MoE aux loss is added)."""
    return model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False).logits


class _StopForward(Exception):
    """Raised by a hook once the layer we need has run, so later layers and the LM head are skipped."""


def hidden_at(model: nn.Module, batch: Batch, layer: int) -> torch.Tensor:
    """Output of decoder layer `layer` for a batch (later layers are not run), with gradients where parameters train."""
    outputs: list[torch.Tensor] = []

    def hook(_module, _inputs, output) -> None:
        outputs.append(output[0] if isinstance(output, tuple) else output)
        raise _StopForward

    handle = decoder_layers(model)[check_layer(model, layer)].register_forward_hook(hook)
    try:
        model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False)
    except _StopForward:
        pass
    finally:
        handle.remove()
    return outputs[0]


def token_mask(batch: Batch) -> torch.Tensor:
    """1 on real (non-padding) tokens."""
    mask = batch.get("attention_mask")
    return torch.ones_like(batch["input_ids"]) if mask is None else mask


def labels_of(batch: Batch) -> torch.Tensor:
    """The batch's labels; plain text without labels scores every non-padding token."""
    if "labels" in batch:
        return batch["labels"]
    return batch["input_ids"].masked_fill(token_mask(batch) == 0, -100)


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}


def select_parameters(
    model: nn.Module, patterns: str | Iterable[str] | None = None, layers: Iterable[int] | None = None
) -> dict[str, nn.Parameter]:
    """Parameters whose name matches one of the regex `patterns` (None: all), restricted to decoder `layers`."""
    patterns = [patterns] if isinstance(patterns, str) else patterns
    prefixes = None
    if layers is not None:
        blocks = decoder_layers(model)
        prefixes = {
            name for name, module in model.named_modules() for i in layers if module is blocks[check_layer(model, i)]
        }
    chosen = {}
    for name, param in model.named_parameters():
        if prefixes is not None and not any(name.startswith(prefix + ".") for prefix in prefixes):
            continue
        if patterns is None or any(re.search(pattern, name) for pattern in patterns):
            chosen[name] = param
    if not chosen:
        raise UnlearnError(f"no parameter of {type(model).__name__} matches {patterns!r} in layers {layers}.")
    return chosen


def cycle(loader: Iterable[Batch], what: str) -> Iterator[Batch]:
    """Endless batches from `loader`; an empty loader is an error, not an endless loop."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise UnlearnError(f"the {what} loader is empty; give it at least one batch.")


def count_steps(forget_loader: Iterable[Batch], config: LMTrainConfig) -> int:
    if config.steps is not None:
        return config.steps
    try:
        per_epoch = len(forget_loader)  # type: ignore[arg-type]
    except TypeError as error:
        raise UnlearnError("the forget loader has no len(); give `steps` instead of `epochs`.") from error
    if per_epoch == 0:
        raise UnlearnError("the forget loader is empty; give it at least one batch.")
    return config.epochs * per_epoch


def rank_rows(batch: Batch) -> Batch:
    """This process's contiguous share of a batch's rows (the whole batch in a single process)."""
    from unlearn import distributed

    world, rank = distributed.world_size(), distributed.rank()
    if world == 1:
        return batch
    rows = batch["input_ids"].shape[0]
    if rows < world:
        raise UnlearnError(f"a batch of {rows} rows cannot be shared by {world} processes; raise batch_size.")
    bounds = [rows * r // world for r in range(world + 1)]
    return {k: v[bounds[rank] : bounds[rank + 1]] if torch.is_tensor(v) else v for k, v in batch.items()}


def average_gradients(tensors: list[torch.Tensor]) -> None:
    """Mean of every tensor's .grad over the processes (no-op in a single process).

    FSDP-sharded parameters (DTensors) are skipped: FSDP has already averaged their gradients over the ranks."""
    from unlearn import distributed

    if distributed.world_size() == 1:
        return
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    for tensor in tensors:
        if isinstance(tensor, DTensor):
            continue
        if tensor.grad is None:
            tensor.grad = torch.zeros_like(tensor)
        dist.all_reduce(tensor.grad)
        tensor.grad /= distributed.world_size()


def true_runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    """The [start, stop) ranges of the True entries of `mask`, flattened in row-major order (an expert's slice of a
    fused (E, ...) tensor is one range)."""
    flat = mask.reshape(-1)
    changes = (flat[1:] != flat[:-1]).nonzero().flatten().add(1).tolist()
    bounds = [0, *changes, flat.numel()]
    return [(start, stop) for start, stop in zip(bounds[:-1], bounds[1:], strict=True) if flat[start]]


class SliceParameter:
    """The trained entries `param[mask]` of a partly trained parameter as their own small leaf tensor.

    AdamW keeps state for `leaf` only (mask.sum() entries, not the whole fused parameter); after each backward
    the slice of the parameter's gradient moves to `leaf.grad` and the full gradient is freed at once; after each
    optimizer step `leaf` is written back into `param[mask]`, so the entries outside the mask never change.
    The slice is read and written as contiguous ranges of the flat parameter (views), not by boolean indexing,
    whose int64 index tensors cost 3× the slice's entries × 8 bytes (50 MB for one expert of a 200M OLMoE layer).
    """

    def __init__(self, param: nn.Parameter, mask: torch.Tensor) -> None:
        if not param.is_contiguous():
            raise UnlearnError(
                f"a masked parameter must be contiguous to train a slice of it; got strides "
                f"{param.stride()} for shape {tuple(param.shape)}."
            )
        self.param, self.runs = param, true_runs(mask)
        if not self.runs:
            raise UnlearnError(f"the gradient mask of shape {tuple(mask.shape)} selects no entry to train.")
        self.leaf = nn.Parameter(self.gather(param.detach()))
        self.handle = param.register_post_accumulate_grad_hook(self.take_grad)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """A new 1-D tensor of the masked entries of `tensor`, in row-major order."""
        flat = tensor.reshape(-1)
        return torch.cat([flat[start:stop] for start, stop in self.runs])

    def take_grad(self, param: torch.Tensor) -> None:
        piece = self.gather(param.grad)
        self.leaf.grad = piece if self.leaf.grad is None else self.leaf.grad + piece
        param.grad = None

    def write_back(self) -> None:
        flat, offset = self.param.detach().view(-1), 0
        with torch.no_grad():
            for start, stop in self.runs:
                flat[start:stop] = self.leaf[offset : offset + stop - start]
                offset += stop - start


def train_lm(
    model: nn.Module,
    loss_fn: BatchLoss,
    forget_loader: Iterable[Batch],
    retain_loader: Iterable[Batch] | None,
    params: dict[str, nn.Parameter],
    config: LMTrainConfig,
    masks: dict[str, torch.Tensor] | None = None,
    progress: bool = False,
    desc: str = "unlearn",
) -> list[dict[str, float]]:
    """Minimise Σ loss_fn(model, forget batch, retain batch) with AdamW over `params`; returns per-step losses.

    `loss_fn` returns named loss terms; their sum is minimised, averaged over `config.grad_accum` micro-batches
    per step. `masks[name]` (bool, shaped like the parameter) trains only the True entries of a parameter, through
    a `SliceParameter`: optimizer state and weight decay cover the slice only, the rest stays bit-identical.
    All other parameters of `model` are frozen while it trains; their requires_grad flags are restored after.
    Under `torchrun` each rank trains on its share of every batch and gradients are averaged (module doc).
    """
    masks = masks or {}
    unknown = sorted(set(masks) - set(params))
    if unknown:
        raise UnlearnError(f"gradient masks for parameters that do not train: {unknown}.")
    torch.manual_seed(config.seed)
    device = module_device(model)
    was_trainable = {param: param.requires_grad for param in model.parameters()}
    for param in model.parameters():
        param.requires_grad_(False)
    for param in params.values():
        param.requires_grad_(True)
    plain = [param for name, param in params.items() if name not in masks]
    slices = [SliceParameter(params[name], mask.to(device=device, dtype=torch.bool)) for name, mask in masks.items()]
    trainable = plain + [piece.leaf for piece in slices]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    steps = count_steps(forget_loader, config)
    forget_batches = cycle(forget_loader, "forget")
    retain_batches = cycle(retain_loader, "retain") if retain_loader is not None else None
    history: list[dict[str, float]] = []
    model.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    try:
        for _ in bar:
            optimizer.zero_grad(set_to_none=True)
            totals: dict[str, float] = {}
            for _ in range(config.grad_accum):
                forget = to_device(rank_rows(next(forget_batches)), device)
                retain = to_device(rank_rows(next(retain_batches)), device) if retain_batches is not None else None
                terms = loss_fn(model, forget, retain)
                loss = sum(terms.values())
                if not torch.isfinite(loss):
                    raise UnlearnError(f"unlearning diverged (loss {loss.item()}) at lr {config.lr}; lower the lr.")
                (loss / config.grad_accum).backward()
                for key, value in {"loss": loss, **terms}.items():
                    totals[key] = totals.get(key, 0.0) + value.item() / config.grad_accum
            average_gradients(trainable)
            if config.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            for piece in slices:
                piece.write_back()
            history.append(totals)
            bar.set_postfix(loss=f"{totals['loss']:.3f}", refresh=False)
    finally:
        for piece in slices:
            piece.handle.remove()
        optimizer.zero_grad(set_to_none=True)  # the trained model does not carry its last gradients
        model.eval()
        for param, flag in was_trainable.items():
            param.requires_grad_(flag)
    return history


def lm_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Mean next-token NLL over labelled tokens (the model's own shifted loss)."""
    device = module_device(model)
    return model(
        input_ids=batch["input_ids"].to(device),
        attention_mask=batch["attention_mask"].to(device),
        labels=batch["labels"].to(device),
    ).loss


def finetune(
    model: torch.nn.Module,
    loader,
    steps: int,
    lr: float,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    progress: bool = False,
    stop=None,
    check_every: int = 0,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
) -> list[float]:
    """AdamW on `lm_loss` (+ `extra_loss(model)` when given) for `steps` steps (cycling the loader), linear warmup,
    grad-norm clip 1.

    `stop(model, steps_done) -> bool` is called every `check_every` steps and ends training early when it returns True.
    Returns the loss of every step. Used to train the Original model and for the relearning attack.
    """
    if steps < 1:
        raise UnlearnError(f"steps must be >= 1, got {steps}.")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(warmup_steps, 1)))
    losses: list[float] = []
    batches = iter(loader)
    model.train()
    for step in tqdm(range(steps), desc="finetune", disable=not progress, leave=False):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        loss = lm_loss(model, batch)
        if extra_loss is not None:
            loss = loss + extra_loss(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if stop is not None and check_every and (step + 1) % check_every == 0:
            model.eval()
            if stop(model, step + 1):
                break
            model.train()
    model.eval()
    return losses
