"""Evaluation math against references written here: HM, accuracy, the average gap, and the KR probe.

The KR probe is checked against a plain DataLoader training loop (the definition in EVAL.md) written in
the test, which must give the same head and the same accuracies, number for number.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from unlearn import split_model
from unlearn.data.base import ClassificationData, LabeledTensors
from unlearn.data.splits import SPLIT_NAMES, split_by_class, split_random_samples
from unlearn.eval import kr
from unlearn.eval.kr import KR_LRS, dataloader_order, fresh_head, knowledge_retention, probe, split_features
from unlearn.eval.metrics import accuracy, average_gap, evaluate_splits, harmonic_mean, logits_and_losses, split_scores


@pytest.mark.parametrize(("forget", "remain"), [(0.0, 100.0), (10.79, 95.96), (60.0, 20.0), (100.0, 0.0), (3.5, 0.0)])
def test_harmonic_mean_by_hand(forget, remain):
    forgotten = 100 - forget
    expected = 0.0 if forgotten + remain == 0 else 2 * forgotten * remain / (forgotten + remain)
    assert harmonic_mean(forget, remain) == pytest.approx(expected)


def test_accuracy_by_hand_and_nan_when_empty():
    logits = torch.tensor([[0.1, 0.9, 0.0], [2.0, 1.0, 0.0], [0.0, 0.2, 0.3], [1.0, 0.0, 3.0]])
    labels = torch.tensor([1, 1, 2, 0])
    assert accuracy(logits, labels) == pytest.approx(50.0)  # rows 0 and 2 are right
    assert math.isnan(accuracy(torch.empty(0, 3), torch.empty(0, dtype=torch.long)))
    assert accuracy(logits[:1], labels[:1]) == 100.0  # one sample is a split, not an empty one


def test_split_scores_pair_the_train_and_test_splits():
    accs = {"D_f": 20.0, "D_r": 90.0, "D_ft": 30.0, "D_rt": 80.0}
    assert split_scores(accs) == {"HM": harmonic_mean(20.0, 90.0), "HM_t": harmonic_mean(30.0, 80.0)}
    assert split_scores({"D_f": 20.0, "D_r": 90.0, "D_rt": 80.0}) == {"HM": harmonic_mean(20.0, 90.0)}


def test_average_gap_is_the_mean_absolute_difference_over_present_metrics():
    record = {"acc": {"D_f": 10.0, "D_r": 95.0, "D_rt": 90.0, "D_ft": 1.0}, "MIA": 55.0}
    reference = {"D_f": 0.0, "D_r": 99.0, "D_rt": 92.0, "MIA": 50.0}
    assert average_gap(record, reference) == pytest.approx((10 + 4 + 2 + 5) / 4)
    assert average_gap({"acc": record["acc"]}, reference) == pytest.approx((10 + 4 + 2) / 3)


def inputs(subset) -> torch.Tensor:
    return subset.dataset.x[subset.indices]


def test_losses_are_per_sample_cross_entropy_and_splits_are_scored(blob_data, trained_mlp):
    splits = split_by_class(blob_data, [2])
    logits, labels, losses = logits_and_losses(trained_mlp, splits.D_f, batch_size=7)
    with torch.no_grad():
        expected = trained_mlp(inputs(splits.D_f))
    torch.testing.assert_close(logits, expected)
    by_hand = torch.logsumexp(expected, 1) - expected[torch.arange(len(labels)), labels]
    torch.testing.assert_close(losses, by_hand)
    scores, split_losses = evaluate_splits(trained_mlp, splits, batch_size=11)
    with torch.no_grad():
        accs = {
            name: accuracy(trained_mlp(inputs(getattr(splits, name))), getattr(splits, name).targets)
            for name in SPLIT_NAMES
        }
    assert scores == {
        "acc": accs,
        "HM": harmonic_mean(accs["D_f"], accs["D_r"]),
        "HM_t": harmonic_mean(accs["D_ft"], accs["D_rt"]),
    }
    assert all(len(split_losses[name]) == len(getattr(splits, name)) for name in SPLIT_NAMES)


def test_fresh_head_is_xavier_normal_with_zero_bias():
    head = fresh_head(400, 300, torch.Generator().manual_seed(0))
    assert head.weight.std().item() == pytest.approx(math.sqrt(2 / 700), rel=0.02)
    assert abs(head.weight.mean().item()) < 0.01 and torch.all(head.bias == 0)
    again = fresh_head(400, 300, torch.Generator().manual_seed(0))
    assert torch.equal(head.weight, again.weight)


def test_dataloader_order_draws_as_a_shuffling_dataloader():
    ours, theirs = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    loader = DataLoader(TensorDataset(torch.arange(50)), batch_size=8, shuffle=True, generator=theirs)
    for _ in range(2):  # two epochs: the generators must stay in step
        expected = torch.cat([batch for (batch,) in loader])
        assert torch.equal(dataloader_order(50, ours), expected)
    assert torch.equal(ours.get_state(), theirs.get_state())


def reference_probe(features, labels, num_classes, lr, epochs, batch_size, seed, heads=None):
    """KR by its definition: xavier-normal head, zero bias, SGD over a shuffling DataLoader of D_f ∪ D_r."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.cat([features["D_f"], features["D_r"]])
    y = torch.cat([labels["D_f"], labels["D_r"]])
    head = nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():
        head.weight.copy_(
            torch.randn(head.weight.shape, generator=generator) * math.sqrt(2 / (x.shape[1] + num_classes))
        )
        head.bias.zero_()
    optimizer = torch.optim.SGD(head.parameters(), lr=lr)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=generator)
    for _ in range(epochs):
        for xb, yb in loader:
            loss = F.cross_entropy(head(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    if heads is not None:
        heads.append(head)
    with torch.no_grad():
        accs = {name: accuracy(head(features[name]), labels[name]) for name in SPLIT_NAMES}
    return {"acc": accs, **split_scores(accs)}


@pytest.mark.parametrize(("lr", "epochs", "batch_size"), [(0.1, 3, 64), (0.01, 2, 50)])
def test_probe_equals_a_dataloader_training_loop(blob_data, trained_mlp, lr, epochs, batch_size):
    splits = split_by_class(blob_data, [2])
    features, labels = split_features(split_model(trained_mlp)[0], splits)
    ours = probe(features, labels, nn.Identity(), splits.num_classes, lr, epochs, batch_size, seed=4)
    expected = reference_probe(features, labels, splits.num_classes, lr, epochs, batch_size, seed=4)
    assert ours["acc"] == pytest.approx(expected["acc"], abs=1e-9)
    assert ours["HM"] == pytest.approx(expected["HM"]) and ours["HM_t"] == pytest.approx(expected["HM_t"])


def test_knowledge_retention_runs_the_probe_at_each_lr_on_the_edited_features(blob_data, trained_mlp):
    splits = split_by_class(blob_data, [2])
    features, labels = split_features(split_model(trained_mlp)[0], splits)
    kr = knowledge_retention(trained_mlp, splits, lrs=(0.05, 0.2), epochs=2, batch_size=32, seed=1)
    for lr in (0.05, 0.2):
        assert kr[str(lr)] == reference_probe(features, labels, splits.num_classes, lr, 2, 32, seed=1)
    assert features["D_f"].shape == (len(splits.D_f), 24)  # flattened body features, not logits


def test_probe_trains_the_same_head_weights_as_the_dataloader_loop(blob_data, trained_mlp, monkeypatch):
    splits = split_by_class(blob_data, [2])
    features, labels = split_features(split_model(trained_mlp)[0], splits)
    ours, theirs = [], []
    monkeypatch.setattr(kr, "fresh_head", lambda *args: ours.append(fresh_head(*args)) or ours[-1])
    probe(features, labels, nn.Identity(), splits.num_classes, 0.05, 2, 40, seed=6)
    reference_probe(features, labels, splits.num_classes, 0.05, 2, 40, seed=6, heads=theirs)
    torch.testing.assert_close(ours[0].weight, theirs[0].weight)
    torch.testing.assert_close(ours[0].bias, theirs[0].bias)


def test_kr_probes_at_the_spec_learning_rates():
    assert KR_LRS == (0.1, 0.01, 0.001)  # EVAL.md: SGD at lr 0.1, 0.01 and 0.001


def test_an_empty_split_is_skipped_and_a_one_sample_split_is_scored(blob_data, trained_mlp):
    scores, losses = evaluate_splits(trained_mlp, split_random_samples(blob_data, fraction=0.1, seed=0))
    assert "D_ft" not in scores["acc"] and "HM_t" not in scores and losses["D_ft"].shape == (0,)
    test = blob_data.test
    one_forget = (test.targets != 2) | (torch.arange(len(test.targets)) == int((test.targets == 2).nonzero()[0]))
    data = ClassificationData(
        "blobs", blob_data.train, LabeledTensors(test.x[one_forget], test.targets[one_forget]), 5, (16,)
    )
    scores, losses = evaluate_splits(trained_mlp, split_by_class(data, [2]))
    assert scores["acc"]["D_ft"] in (0.0, 100.0) and losses["D_ft"].shape == (1,) and "HM_t" in scores
