"""The one place that knows devices, dtypes and seeds."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from unlearn.errors import UnlearnError


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`None`/"auto" picks CUDA when present, else CPU; anything else is passed to `torch.device`."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise UnlearnError(f"device {device!r} is not a torch device; use cpu, cuda, cuda:N or auto.") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UnlearnError(f"device {device!r} was asked for but CUDA is not available here; use cpu or auto.")
    return resolved


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, and return a CPU generator for explicit sampling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    return torch.Generator().manual_seed(seed)


def module_device(module: torch.nn.Module) -> torch.device:
    """Device of a module's first parameter or buffer (CPU for a module with neither)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def module_dtype(module: torch.nn.Module) -> torch.dtype:
    """Floating dtype of a module's first floating parameter (float32 for a module with none)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)


def to_module(x: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """An input batch on the module's device; floating inputs also in its dtype (bf16/fp16 models)."""
    return x.to(device, dtype if x.is_floating_point() else None, non_blocking=True)


@contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run a block with `module` in eval mode, then give every submodule back its own train/eval flag.

    `module.train(was_training)` would not do: it sets one flag on every submodule, so a BatchNorm the user
    keeps in eval inside a training model (or a dropout left on for MC-dropout) would come back changed.
    """
    flags = [(sub, sub.training) for sub in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for sub, flag in flags:
            sub.training = flag


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run a block with `count` intra-op CPU threads: loops of tiny ops lose more to thread sync than they gain."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
