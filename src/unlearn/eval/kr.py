"""Knowledge Retention (EVAL.md; MoRE paper §B.3): can a fresh linear head recover the forget classes?

The unlearned feature extractor is frozen, including its MoRE layer, whose stochastic routing stays
active: the deterministic part h(x) is computed once per sample and the edit runs again on every
probe batch. A new Linear head (xavier-normal weights, zero bias, as in ESC's code) is trained with
plain SGD, batch 64, `epochs` epochs, on D_f ∪ D_r with true labels; then D_f, D_r, D_ft, D_rt are scored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unlearn.data.splits import SPLIT_NAMES, ForgetSplits
from unlearn.eval.metrics import accuracy, split_scores
from unlearn.models.inference import collect_outputs
from unlearn.models.split import split_for_probe
from unlearn.runtime import module_device, torch_threads

KR_LRS = (0.1, 0.01, 0.001)
EDIT_CHUNK = 1024  # rows per edit call; bounds the memory of an edit that runs on inner feature maps


def fresh_head(in_features: int, num_classes: int, generator: torch.Generator) -> nn.Linear:
    head = nn.Linear(in_features, num_classes)
    with torch.no_grad():
        std = (2.0 / (in_features + num_classes)) ** 0.5
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * std)
        head.bias.zero_()
    return head


def dataloader_order(n: int, generator: torch.Generator) -> torch.Tensor:
    """One epoch's sample order of `DataLoader(shuffle=True, generator=generator)`, with the same draws.

    The loader draws a base seed, the permutation, and at the end of the epoch a second permutation it
    does not use; making them all keeps a loop over this order equal, draw for draw, to the loader's.
    """
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    order = torch.randperm(n, generator=generator)
    torch.randperm(n, generator=generator)
    return order


def probe(
    base_features: dict[str, torch.Tensor],
    labels: dict[str, torch.Tensor],
    edit: nn.Module,
    num_classes: int,
    lr: float,
    epochs: int = 10,
    batch_size: int = 64,
    seed: int = 0,
) -> dict:
    """Train a linear probe on edit(h(x)) of D_f ∪ D_r and score it on the four splits.

    Each epoch takes the sample order of a shuffling DataLoader with this generator, runs the edit once
    over the permuted features in large chunks — a stochastic edit thus draws the same experts in the
    same order as batch by batch — and then steps the head over slices of that tensor: the numbers of a
    DataLoader loop, without its per-sample collation or an edit call per batch (measured in
    bench/results/profile_*.md).
    """
    generator = torch.Generator().manual_seed(seed)
    device = module_device(edit)
    train_x = torch.cat([base_features["D_f"], base_features["D_r"]]).to(device)
    train_y = torch.cat([labels["D_f"], labels["D_r"]]).to(device)
    head = fresh_head(train_x.shape[1], num_classes, generator).to(device)
    optimizer = torch.optim.SGD(head.parameters(), lr=lr)
    edit.eval()
    for _ in range(epochs):
        order = dataloader_order(len(train_x), generator).to(device)
        with torch.no_grad():
            inputs = torch.cat([edit(chunk) for chunk in train_x[order].split(EDIT_CHUNK)])
        targets = train_y[order]
        with torch_threads(1):  # steps on 64 x d batches: one CPU thread is faster than several
            for start in range(0, len(inputs), batch_size):
                loss = F.cross_entropy(head(inputs[start : start + batch_size]), targets[start : start + batch_size])
                if not torch.isfinite(loss):  # a diverged probe: keep the last finite head
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    accs = {}
    with torch.no_grad():
        for name in SPLIT_NAMES:
            chunks = base_features[name].split(EDIT_CHUNK)
            logits = torch.cat([head(edit(chunk.to(device))).cpu() for chunk in chunks])
            accs[name] = accuracy(logits, labels[name])
    return {"acc": accs, **split_scores(accs)}


FeatureSet = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]


def split_features(features: nn.Module, splits: ForgetSplits) -> FeatureSet:
    """Flattened features and labels of every split, computed once (the frozen, deterministic part)."""
    values, labels = {}, {}
    for name in SPLIT_NAMES:
        values[name], labels[name] = collect_outputs(features, getattr(splits, name), 512)
        values[name] = values[name].flatten(1)
    return values, labels


def knowledge_retention(
    model: nn.Module,
    splits: ForgetSplits,
    lrs: tuple[float, ...] = KR_LRS,
    epochs: int = 10,
    batch_size: int = 64,
    seed: int = 0,
    head: str | None = None,
    base: FeatureSet | None = None,
) -> dict[str, dict]:
    """KR at each probe learning rate: {str(lr): {"acc": {...}, "HM", "HM_t"}}.

    `base` may pass precomputed features of the model's extractor before its edit (they are the
    same for every feature edit of one original model), saving a pass over the data.
    """
    base_module, edit, _ = split_for_probe(model, head)
    features, labels = base if base is not None else split_features(base_module, splits)
    return {str(lr): probe(features, labels, edit, splits.num_classes, lr, epochs, batch_size, seed) for lr in lrs}
