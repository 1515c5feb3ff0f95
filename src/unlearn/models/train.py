"""The one training loop (Original, Retrain and every training baseline) and its checkpoint cache."""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from unlearn.data.base import batch_pair
from unlearn.errors import UnlearnError
from unlearn.io import atomic_path
from unlearn.models.inference import check_input_dtype
from unlearn.runtime import module_device, module_dtype

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrainConfig:
    """Recipe of a training run; its fields (with the data and model) key the checkpoint cache."""

    epochs: int = 20
    lr: float = 0.05
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd (momentum 0.9, nesterov) or adam
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine or constant
    augment: bool = False  # random crop (pad 2) + horizontal flip, images only
    warmup_epochs: float = 1.0  # linear lr warm-up; without it AllCNN sometimes sits at chance loss for epochs
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adam"):
            raise UnlearnError(f"train.optimizer must be 'sgd' or 'adam', got {self.optimizer!r}.")
        if self.schedule not in ("cosine", "constant"):
            raise UnlearnError(f"train.schedule must be 'cosine' or 'constant', got {self.schedule!r}.")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or not 0 <= self.warmup_epochs <= self.epochs:
            raise UnlearnError(
                f"train needs epochs >= 1, batch_size >= 1, lr > 0 and 0 <= warmup_epochs <= epochs, got {self}."
            )


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop with 2-pixel padding and random horizontal flip, per sample."""
    n, _, h, w = x.shape
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    dy = torch.randint(0, 5, (n,), generator=generator)
    dx = torch.randint(0, 5, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)
    cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    out = padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def lr_factor(step: int, config: TrainConfig, steps: int) -> float:
    """Multiplier of the base lr at `step`: linear warm-up, then cosine decay to 0 or constant."""
    warmup = int(config.warmup_epochs * steps / config.epochs)
    if step < warmup:
        return (step + 1) / warmup
    if config.schedule == "constant":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))


def make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)


def prefers_channels_last(model: nn.Module) -> bool:
    """Whether `train` runs `model` in channels-last memory format: on the CPU, for classes that opt in.

    oneDNN's channels-last convolutions and pools are faster on the CPU (bench/results/train_speed.md). Our own
    CNNs opt in with the class attribute `prefers_channels_last = True`; any other model keeps its format, since
    common code such as `x.view(len(x), -1)` fails on a channels-last map. Set the attribute on your own class to
    opt in.
    """
    return bool(getattr(type(model), "prefers_channels_last", False)) and module_device(model).type == "cpu"


@contextmanager
def channels_last_format(model: nn.Module, enabled: bool | None = None) -> Iterator[bool]:
    """Hold `model`'s 4-D parameters in channels-last format inside the block, the default format after it.

    `enabled=None` means `prefers_channels_last(model)`; the block receives whether the format was switched.
    """
    fast = prefers_channels_last(model) if enabled is None else enabled
    if not fast:
        yield False
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield True
    finally:
        model.to(memory_format=torch.contiguous_format)


def train(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    loss_fn: LossFn = cross_entropy,
    params=None,
    progress: bool = True,
    desc: str = "train",
    channels_last: bool | None = None,
) -> nn.Module:
    """Minimise `loss_fn` over `dataset` for `config.epochs` epochs; trains `params` (default: all).

    `channels_last` (None: `prefers_channels_last(model)`) trains in channels-last memory format; the model comes
    back in the default format either way, with the same parameter objects.
    """
    if len(dataset) == 0:
        raise UnlearnError("cannot train on an empty dataset.")
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    device = module_device(model)
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, generator=generator)
    optimizer = make_optimizer(list(model.parameters()) if params is None else list(params), config)
    steps = config.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, config=config, steps=steps))
    model.train()
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False)
    with channels_last_format(model, channels_last) as fast:
        for _ in range(config.epochs):
            for batch in loader:
                x, y = batch_pair(batch)
                check_input_dtype(x, model, module_dtype(model))
                x, y = x.to(device), y.to(device)
                if config.augment and x.dim() == 4:
                    x = augment_batch(x, generator)
                if fast and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                loss = loss_fn(model, x, y)
                if not torch.isfinite(loss):
                    raise UnlearnError(f"training diverged (loss {loss.item()}) at lr {config.lr}; lower the lr.")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    model.eval()
    return model


def cache_key(**parts) -> str:
    """Stable short hash of everything that determines a trained checkpoint."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def checkpoint_path(cache_dir: str | Path, desc: str, config: TrainConfig, key_parts: dict) -> Path:
    """Where `train_cached` keeps the checkpoint of this recipe."""
    return Path(cache_dir) / f"{desc}-{cache_key(train=asdict(config), **key_parts)}.pt"


def train_cached(
    build: Callable[[], nn.Module],
    dataset: Dataset,
    config: TrainConfig,
    cache_dir: str | Path | None,
    key_parts: dict,
    device: torch.device,
    desc: str = "train",
    progress: bool = True,
) -> tuple[nn.Module, bool]:
    """Train `build()` on `dataset`, or load it from `cache_dir` if this exact recipe ran before.

    Returns (model in eval mode, whether it came from the cache). A corrupt cache file is
    reported with a warning and retrained, never silently used.
    """

    def fresh() -> nn.Module:
        torch.manual_seed(config.seed)  # the initial weights are part of the recipe the cache key names
        return build().to(device)

    model = fresh()
    path = None
    if cache_dir is not None:
        path = checkpoint_path(cache_dir, desc, config, key_parts)
        if path.exists():
            try:
                model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
                return model.eval(), True
            except Exception as error:  # noqa: BLE001 - any unreadable file means: retrain
                warnings.warn(f"checkpoint cache {path} is unreadable ({error}); retraining.", stacklevel=2)
                model = fresh()  # a failed load_state_dict may already have copied some tensors in
    train(model, dataset, config, progress=progress, desc=desc)
    if path is not None:
        with atomic_path(path) as tmp:
            torch.save(model.state_dict(), tmp)
    return model, False


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a user checkpoint (a state_dict) with a clear error when it is missing, corrupt or mismatched."""
    path = Path(path)
    if not path.is_file():
        raise UnlearnError(f"checkpoint {path} does not exist.")
    try:
        state = torch.load(path, map_location=module_device(model), weights_only=True)
    except Exception as error:  # noqa: BLE001
        raise UnlearnError(f"checkpoint {path} is not a readable torch file ({error}).") from error
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as error:
        raise UnlearnError(f"checkpoint {path} does not fit {type(model).__name__}: {error}") from error
    return model.eval()
