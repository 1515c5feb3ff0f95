"""The sample budget: stratified draws that read only what they need, early stops, convergence, global caps."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader

from unlearn.data.base import LabeledTensors
from unlearn.data.splits import split_by_class
from unlearn.errors import UnlearnError
from unlearn.eval.metrics import evaluate_splits
from unlearn.methods import ESC, Erase, MoRE, Remap, Transplant
from unlearn.methods.budget import Budget, ClassAccumulator
from unlearn.methods.prototypes import class_sums, collect_prototypes
from unlearn.models.split import split_model


class Counted(LabeledTensors):
    """LabeledTensors that records which indices were read."""

    def __init__(self, x: torch.Tensor, targets: torch.Tensor) -> None:
        super().__init__(x, targets)
        self.read: list[int] = []

    def __getitem__(self, index: int):
        self.read.append(int(index))
        return super().__getitem__(index)


def sorted_blobs(per_class: int = 200, classes: int = 4, dim: int = 6, seed: int = 0) -> Counted:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)  # stored sorted by class, as many datasets are
    centers = torch.randn(classes, dim, generator=generator) * 3
    return Counted(centers[labels] + torch.randn(len(labels), dim, generator=generator), labels)


def test_stratified_draw_reads_only_the_budget_and_is_seeded():
    data = sorted_blobs()
    protos = collect_prototypes(nn.Identity(), data, [0], 4, batch_size=16, budget=Budget(max_per_class=25, seed=3))
    assert protos.counts.tolist() == [25.0] * 4
    assert len(data.read) == 100  # never the other 700 samples
    first = sorted(data.read)
    data.read.clear()
    collect_prototypes(nn.Identity(), data, [0], 4, batch_size=16, budget=Budget(max_per_class=25, seed=3))
    assert sorted(data.read) == first
    data.read.clear()
    collect_prototypes(nn.Identity(), data, [0], 4, batch_size=16, budget=Budget(max_per_class=25, seed=4))
    assert sorted(data.read) != first


def test_budgeted_means_are_the_means_of_the_samples_read():
    data = sorted_blobs()
    budget = Budget(max_per_class=30, seed=1)
    stats = class_sums(nn.Identity(), data, 4, 16, budget=budget)
    read = torch.tensor(sorted(set(data.read)))
    x, y = data.x[read].double(), data.targets[read]
    for c in range(4):
        torch.testing.assert_close(stats.sums[c] / stats.counts[c], x[y == c].mean(0))
        # standard error of the mean: sqrt(trace of the unbiased covariance / n)
        expected = (x[y == c].var(0, unbiased=True).sum() / (y == c).sum()).sqrt()
        torch.testing.assert_close(stats.stderr[c], expected)


def test_a_dataloader_stops_early_once_every_class_is_full():
    data = sorted_blobs()
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    loader = DataLoader(torch.utils.data.Subset(data, order.tolist()), batch_size=20)
    stats = class_sums(nn.Identity(), loader, num_classes=4, budget=Budget(max_per_class=10))
    assert stats.counts.tolist() == [10.0] * 4
    assert len(data.read) < 200  # 40 needed; stops within a few batches, not after 800
    data.read.clear()
    stats = class_sums(nn.Identity(), loader, num_classes=None, budget=Budget(max_per_class=10))
    assert stats.counts.tolist() == [10.0] * 4 and len(data.read) == 800  # unknown classes: read to the end


def test_tol_stops_a_class_once_its_mean_has_converged():
    labels = torch.arange(2).repeat(500)
    x = torch.where(labels[:, None] == 0, torch.ones(1000, 3), torch.randn(1000, 3, generator=torch.Generator()))
    data = Counted(x, labels)
    accumulator = ClassAccumulator(Budget(tol=1e-3, window=3, min_per_class=10), num_classes=2)
    for start in range(0, 120, 40):
        accumulator.add(x[start : start + 40], labels[start : start + 40])
    assert accumulator.converged.tolist() == [False, False]  # a streak starts at the second batch of a class
    accumulator.add(x[120:160], labels[120:160])
    assert accumulator.converged.tolist() == [True, False]  # constant features: 3 batches without change
    assert not accumulator.done()
    stats = class_sums(nn.Identity(), data, 2, 10, budget=Budget(tol=0.05, window=2, seed=0))
    assert stats.counts.sum() < 1000


def test_budget_arguments_are_checked():
    for bad in (
        {"max_per_class": 0},
        {"max_per_class": 2.5},
        {"max_per_class": True},
        {"tol": 0},
        {"tol": 1.5},
        {"tol": "0.1"},
        {"window": 0},
    ):
        with pytest.raises(UnlearnError):
            Budget(**bad)
    with pytest.raises(UnlearnError):
        MoRE(max_per_class=-1)
    with pytest.raises(UnlearnError):
        ESC(tol=2.0)


@pytest.mark.parametrize("method", [MoRE(seed=0, max_per_class=20), Remap(max_per_class=20), Erase(max_per_class=20)])
def test_more_family_forgets_from_a_budget(method, blob_data, trained_mlp):
    splits = split_by_class(blob_data, [2])
    unlearned = method.unlearn(trained_mlp, splits)
    acc = evaluate_splits(unlearned, splits)[0]["acc"]
    assert acc["D_ft"] <= 10 and acc["D_rt"] >= 90
    assert method.samples["samples"] == [20] * 5 and method.samples["total_samples"] == 100
    assert all(0 < r < 1 for r in method.samples["relative_stderr"])


def test_esc_reads_only_forget_samples_under_a_budget(trained_mlp):
    data = sorted_blobs(per_class=50, classes=5, dim=16)
    features, _ = split_model(trained_mlp)
    edit = ESC(max_per_class=15, seed=0).fit(features, data, [3])
    assert edit.samples == {"forget_samples": 15}
    assert all(150 <= i < 200 for i in data.read)


def test_transplant_bank_and_prototypes_come_from_the_budget(blob_data, trained_mlp):
    splits = split_by_class(blob_data, [1])
    edit = Transplant(seed=0, max_per_class=12)
    unlearned = edit.unlearn(trained_mlp, splits)
    assert edit.samples["samples"] == [12] * 5
    assert len(edit.layer.bank) == 48
    assert evaluate_splits(unlearned, splits)[0]["acc"]["D_ft"] <= 10


def _budget_rank(rank: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    data = sorted_blobs(per_class=40, classes=3)
    stratified = class_sums(nn.Identity(), data, 3, 8, budget=Budget(max_per_class=11, seed=0)).counts
    loader = DataLoader(data, batch_size=8)
    streamed = class_sums(nn.Identity(), loader, 3, budget=Budget(max_per_class=11)).counts
    if rank == 0:
        torch.save((stratified, streamed), out)
    dist.destroy_process_group()


def test_the_budget_is_global_under_torch_distributed(tmp_path):
    out = tmp_path / "counts.pt"
    mp.start_processes(_budget_rank, args=(str(tmp_path / "init"), str(out)), nprocs=2, start_method="fork")
    stratified, streamed = torch.load(out)
    assert stratified.tolist() == [11.0] * 3  # one draw, shared by the ranks: exactly the global cap
    assert streamed.tolist() == [12.0] * 3  # each loader stops at ceil(11 / 2) = 6 per class


@pytest.mark.parametrize(
    ("norms", "warns"),
    [
        ([1.0] * 99 + [100.5], True),  # just over 100x the median
        ([1.0, 1.0, 1.0, 100.0], False),  # exactly 100x is not over
        ([1.0, 1000.0], True),  # two samples are enough to compare
        ([0.0, 0.0, 0.0, 5.0], False),  # a zero median compares nothing
        ([7.0], False),
    ],
)
def test_feature_outliers_warn_only_past_the_factor(norms, warns):
    import warnings

    from unlearn.methods.prototypes import warn_outliers

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_outliers(torch.tensor(norms))
    assert any("median feature norm" in str(w.message) for w in caught) == warns


def test_more_layer_refuses_out_of_range_forget_columns_and_non_finite_coords():
    from unlearn.methods.more import MoRELayer

    prototypes, coords = torch.eye(4, 3), torch.zeros(1, 4)
    with pytest.raises(UnlearnError, match="outside"):
        MoRELayer(prototypes, coords, [-1], None)
    with pytest.raises(UnlearnError, match="NaN"):
        MoRELayer(prototypes, torch.full((1, 4), float("nan")), [0], None)


def test_esc_reads_the_class_count_from_labels_when_the_data_has_no_targets():
    from torch.utils.data import TensorDataset

    x = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
    data = TensorDataset(x, torch.arange(30) % 3)  # no `.targets`: classes 0..2 come from the labels read
    assert ESC(k=1).fit(nn.Identity(), data, [2]).forget_classes == [2]
    with pytest.raises(UnlearnError):
        ESC(k=1).fit(nn.Identity(), data, [3])


@pytest.mark.parametrize(("cls", "params"), [(ESC, {"k": 0}), (Transplant, {"bank_size": 0})])
def test_zero_counts_are_refused(cls, params):
    with pytest.raises(UnlearnError, match=">= 1"):
        cls(**params)


def test_prototype_summary_divides_by_each_column_norm_even_below_one():
    from unlearn.methods.prototypes import Prototypes

    matrix = torch.tensor([[0.03, 0.0], [0.04, 0.0]])  # column norms 0.05 and 0
    protos = Prototypes(matrix, [0, 1], torch.tensor([4, 4]), torch.tensor([0.01, 0.0]))
    relative = protos.summary()["relative_stderr"]
    assert relative[0] == pytest.approx(0.2)  # 0.01 / 0.05
    assert relative[1] == 0.0  # a zero prototype with zero error: 0, not NaN


def test_one_outlier_sample_in_a_batch_warns():
    data = LabeledTensors(torch.ones(40, 3), torch.arange(40) % 2)
    data.x[7] *= 1000.0
    with pytest.warns(UserWarning, match="median feature norm"):
        collect_prototypes(nn.Identity(), data, [], 2, batch_size=64)


def test_transplant_ablation_jitter_moves_the_bank_by_its_scale():
    from unlearn.methods.transplant import nearest_others

    gen = torch.Generator().manual_seed(1)
    data = LabeledTensors(torch.randn(60, 5, generator=gen), torch.arange(60) % 3)
    raw = Transplant(seed=0, jitter=0.0).fit(nn.Identity(), data, [0]).layer.bank
    moved = Transplant(seed=0, jitter=0.5, jitter_mode="reflect").fit(nn.Identity(), data, [0]).layer.bank
    nearest = nearest_others(raw.double(), 1)[1][:, 0]
    torch.testing.assert_close(moved, raw + 0.5 * (raw - raw[nearest]))  # b_j + ε (b_j − b_n1), ε = 0.5 < 1
