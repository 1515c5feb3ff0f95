"""The one inference loop: stream a module's outputs over a dataset batch by batch, no grad."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from unlearn.runtime import eval_mode, module_device, module_dtype, to_module


def loader_of(data: Dataset | DataLoader, batch_size: int = 256) -> DataLoader:
    """A user's DataLoader as is; a Dataset wrapped in an ordered, unshuffled loader."""
    if isinstance(data, DataLoader):
        return data
    return DataLoader(data, batch_size=batch_size, shuffle=False)


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
        for x, y in tqdm(loader_of(data, batch_size), desc=desc, disable=not progress, leave=False):
            yield module(to_module(x, device, dtype)), y


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
