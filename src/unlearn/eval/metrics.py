"""Output-level metrics: accuracy on D_f, D_r, D_ft, D_rt and the harmonic mean HM (EVAL.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from unlearn.data.splits import SPLIT_NAMES, ForgetSplits
from unlearn.models.inference import collect_outputs


def harmonic_mean(forget_acc: float, remain_acc: float) -> float:
    """HM = 2 (100 − acc_f) acc_r / ((100 − acc_f) + acc_r), in percent; 0 when both terms are 0."""
    forgotten = 100.0 - forget_acc
    total = forgotten + remain_acc
    return 0.0 if total == 0 else 2.0 * forgotten * remain_acc / total


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent (NaN for an empty split)."""
    if len(labels) == 0:
        return float("nan")
    return 100.0 * (logits.argmax(1) == labels).float().mean().item()


def logits_and_losses(model: nn.Module, dataset: Dataset, batch_size: int = 512) -> tuple[torch.Tensor, ...]:
    """Logits, labels and per-sample cross-entropy of `model` on `dataset`."""
    logits, labels = collect_outputs(model, dataset, batch_size)
    return logits, labels, F.cross_entropy(logits, labels, reduction="none")


def split_scores(accs: dict[str, float]) -> dict[str, float]:
    """HM on train splits and HM_t on test splits from the four accuracies."""
    return {"HM": harmonic_mean(accs["D_f"], accs["D_r"]), "HM_t": harmonic_mean(accs["D_ft"], accs["D_rt"])}


def evaluate_splits(model: nn.Module, splits: ForgetSplits, batch_size: int = 512) -> tuple[dict, dict]:
    """Accuracies and HM / HM_t of `model`, plus per-split per-sample losses (for the MIA)."""
    accs, losses = {}, {}
    for name in SPLIT_NAMES:
        logits, labels, loss = logits_and_losses(model, getattr(splits, name), batch_size)
        accs[name] = accuracy(logits, labels)
        losses[name] = loss
    return {"acc": accs, **split_scores(accs)}, losses
