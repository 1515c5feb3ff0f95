"""Running under `torchrun`: process-group set-up from its environment and the data shard of each rank.

Only prototype collection is distributed (per-class sums and counts are all-reduced, see
methods/prototypes.py); the k x d linear algebra after it is tiny and runs on every rank identically.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset


def active() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def barrier() -> None:
    if active():
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. trains and caches a model); the other ranks run it after."""
    if rank() != 0:
        barrier()
    yield
    if rank() == 0:
        barrier()


def init_from_env(device: torch.device) -> bool:
    """Join the process group `torchrun` describes (WORLD_SIZE > 1): nccl for CUDA, gloo for CPU.

    Returns whether this is a distributed run. Each CUDA rank uses the GPU of its LOCAL_RANK.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return active()


def local_device(device: torch.device) -> torch.device:
    """This rank's device: cuda:LOCAL_RANK for a CUDA run under torchrun, else `device` unchanged."""
    if device.type == "cuda" and active():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def shard(data: Dataset | DataLoader) -> Dataset | DataLoader:
    """This rank's part of a Dataset: samples rank, rank + W, rank + 2W, ... (W = world size).

    Unlike `DistributedSampler`, no sample is repeated to even out the shards, so the all-reduced
    sums and counts are exactly those of one pass over the whole dataset. A DataLoader is taken to be
    this rank's shard already (the caller built it, e.g. with its own sampler) and is returned as is.
    """
    if not active() or isinstance(data, DataLoader):
        return data
    return Subset(data, range(dist.get_rank(), len(data), dist.get_world_size()))


def shutdown() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
