"""The one inference loop: stream a module's outputs over a dataset batch by batch, no grad."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from unlearn.data.base import batch_pair
from unlearn.errors import UnlearnError
from unlearn.runtime import eval_mode, module_device, module_dtype, to_module


def loader_of(data: Dataset | DataLoader, batch_size: int = 256) -> DataLoader:
    """A user's DataLoader as is; a Dataset wrapped in an ordered, unshuffled loader."""
    if isinstance(data, DataLoader):
        return data
    if not isinstance(data, Dataset) and isinstance(data, (list, tuple)) and data and _is_batch(data[0]):
        raise UnlearnError(
            "data is a list of batches; pass a DataLoader (e.g. DataLoader(batches, batch_size=None)) or a Dataset."
        )
    return DataLoader(data, batch_size=batch_size, shuffle=False)


def _is_batch(item) -> bool:
    """Whether a list item looks like a whole (inputs, labels) batch rather than one sample."""
    return isinstance(item, (tuple, list)) and len(item) == 2 and getattr(item[1], "dim", lambda: 0)() == 1


def check_input_dtype(x: torch.Tensor, module: nn.Module, dtype: torch.dtype) -> None:
    """Integer inputs into a floating model without an embedding table are refused (e.g. uint8/int64 images)."""
    if x.is_floating_point() or not dtype.is_floating_point:
        return
    if not any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in module.modules()):
        raise UnlearnError(
            f"inputs have dtype {x.dtype} but the model computes in {dtype}; convert them, e.g. x.float() / 255."
        )


@torch.no_grad()
def stream_outputs(
    module: nn.Module,
    data: Dataset | DataLoader,
    batch_size: int = 256,
    desc: str | None = None,
    progress: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (module(x), y) per batch with the module in eval mode; restores every submodule's mode afterwards.

    Only x moves to the module's device (and dtype, when floating); y stays where the loader put it.
    """
    device, dtype = module_device(module), module_dtype(module)
    with eval_mode(module):
        first = True
        for batch in tqdm(loader_of(data, batch_size), desc=desc, disable=not progress, leave=False):
            x, y = batch_pair(batch)
            check_input_dtype(x, module, dtype)
            if not first:
                yield module(to_module(x, device, dtype)), y
                continue
            try:  # a model that cannot take the data fails on the first batch: say so with the shapes
                out = module(to_module(x, device, dtype))
            except torch.OutOfMemoryError:
                raise
            except RuntimeError as error:
                raise UnlearnError(
                    f"{type(module).__name__} cannot run on inputs of shape {tuple(x.shape)} ({x.dtype}): {error}"
                ) from error
            first = False
            yield out, y


def collect_outputs(
    module: nn.Module,
    data: Dataset | DataLoader,
    batch_size: int = 256,
    desc: str | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All outputs and labels of a dataset, concatenated (for evaluation, not for prototypes)."""
    outputs, labels = [], []
    for out, y in stream_outputs(module, data, batch_size, desc, progress):
        outputs.append(out.float().cpu())
        labels.append(y.cpu())
    return torch.cat(outputs), torch.cat(labels)
