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
    """HM on train splits and HM_t on test splits from the accuracies present (a sample-wise task has no D_ft)."""
    pairs = {"HM": ("D_f", "D_r"), "HM_t": ("D_ft", "D_rt")}
    return {name: harmonic_mean(accs[f], accs[r]) for name, (f, r) in pairs.items() if f in accs and r in accs}


def evaluate_splits(model: nn.Module, splits: ForgetSplits, batch_size: int = 512) -> tuple[dict, dict]:
    """Accuracies and HM / HM_t of `model`, plus per-split per-sample losses (for the MIA)."""
    accs, losses = {}, {}
    for name in SPLIT_NAMES:
        if len(getattr(splits, name)) == 0:  # the empty D_ft of a sample-wise task
            losses[name] = torch.empty(0)
            continue
        logits, labels, loss = logits_and_losses(model, getattr(splits, name), batch_size)
        accs[name] = accuracy(logits, labels)
        losses[name] = loss
    return {"acc": accs, **split_scores(accs)}, losses


GAP_METRICS = ("D_f", "D_r", "D_rt", "MIA")  # paper Table 4: D_f, D_r, D_t (our D_rt) and MIA


def average_gap(record: dict, reference: dict[str, float]) -> float:
    """Mean absolute difference to the reference (Retrain) over accuracies on D_f, D_r, D_t and the MIA."""
    values = {**record.get("acc", {}), "MIA": record.get("MIA")}
    gaps = [abs(values[name] - reference[name]) for name in GAP_METRICS if values.get(name) is not None]
    return sum(gaps) / len(gaps)
