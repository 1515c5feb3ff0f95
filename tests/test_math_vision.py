"""MoRE, prototypes, ESC and MoRE-T math against references computed here from the equations.

Each reference is written independently of the library: pseudo-inverses from torch.linalg.pinv, singular
vectors from an eigendecomposition of the Gram matrix, nearest neighbours and hashes by brute force.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from unlearn.data.base import LabeledTensors
from unlearn.errors import UnlearnError
from unlearn.methods.esc import ESC, choose_rank, forget_features
from unlearn.methods.more import (
    MoRE,
    MoRELayer,
    Remap,
    draw_targets,
    erase_matrix,
    forget_coordinates,
    load_cv,
    pinv_svd,
    remap_matrix,
)
from unlearn.methods.prototypes import Prototypes, class_sums, prototypes_from_sums
from unlearn.methods.transplant import (
    HASH_MODULUS,
    Transplant,
    TransplantLayer,
    jittered,
    nearest_others,
)


def gaussian(rows: int, cols: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- MoRE -----------------------------------------------------------------------------------------------------


def test_pinv_svd_equals_torch_pinv_and_drops_small_singular_values():
    p = gaussian(9, 4, 0)
    pinv, rank = pinv_svd(p)
    torch.testing.assert_close(pinv, torch.linalg.pinv(p))
    assert rank == 4
    u, _, vh = torch.linalg.svd(p, full_matrices=False)
    scaled = u @ torch.diag(torch.tensor([4.0, 2.0, 1.0, 1e-3], dtype=torch.float64)) @ vh  # σ = 4, 2, 1, 0.001
    pinv, rank = pinv_svd(scaled, rtol=0.01)  # drops 0.001 < 0.01 · 4
    assert rank == 3
    torch.testing.assert_close(pinv, torch.linalg.pinv(scaled, rtol=0.01))
    assert pinv_svd(scaled, rtol=1e-6)[1] == 4
    # the cut is relative to σ_max, and a σ exactly at rtol·σ_max counts as zero (torch's matrix_rank agrees)
    for sigma, rank in (([4.0, 2.0, 1.0, 0.01], 3), ([4.0, 2.0, 1.0, 0.04], 3), ([4.0, 2.0, 1.0, 0.0401], 4)):
        diagonal = torch.diag(torch.tensor(sigma, dtype=torch.float64))
        assert pinv_svd(diagonal, rtol=0.01)[1] == rank == int(torch.linalg.matrix_rank(diagonal, rtol=0.01))


def test_forget_coordinates_with_and_without_po():
    p = gaussian(10, 5, 1)
    coords, rank = forget_coordinates(p, [1, 3])
    torch.testing.assert_close(coords, torch.linalg.pinv(p)[[1, 3]])
    assert rank == 5
    coords, rank = forget_coordinates(p, [1, 3], orthogonal=False)
    torch.testing.assert_close(coords, torch.linalg.pinv(p[:, [1, 3]]))
    assert rank == 2


def test_erase_and_remap_matrices_by_their_equations():
    p = gaussian(6, 4, 2)
    d = torch.linalg.pinv(p)
    forget, targets = [0, 2], [3, 1]
    erase = torch.eye(6, dtype=torch.float64) - p[:, forget] @ d[forget]
    torch.testing.assert_close(erase_matrix(p, d[forget], forget), erase)
    torch.testing.assert_close(remap_matrix(p, d[forget], forget, targets), erase + p[:, targets] @ d[forget])


def test_load_cv_is_the_population_std_over_the_mean_of_expert_counts():
    choices = torch.tensor([0, 0, 0, 1, 2, 2, 0, 1])  # counts 4, 2, 2, 0 over four experts
    mean = 2.0
    std = math.sqrt(((4 - mean) ** 2 + 0 + 0 + (0 - mean) ** 2) / 4)
    assert load_cv(choices, 4) == pytest.approx(std / mean)


def test_draw_targets_are_seeded_uniform_remain_classes():
    remain = [0, 2, 5, 7]
    targets = draw_targets(3, remain, 200, torch.Generator().manual_seed(0))
    assert targets.shape == (200, 3)
    assert set(targets.flatten().tolist()) == set(remain)  # every remain class is drawn, nothing else
    again = draw_targets(3, remain, 200, torch.Generator().manual_seed(0))
    assert torch.equal(targets, again)
    picks = torch.randint(4, (200, 3), generator=torch.Generator().manual_seed(0))
    assert torch.equal(targets, torch.tensor(remain)[picks])


def test_more_layer_adds_target_minus_forget_prototype_times_the_forget_coordinate():
    p = gaussian(6, 4, 3).float()
    forget = [1, 2]
    coords = torch.linalg.pinv(p.double())[forget].float()
    targets = torch.tensor([[0, 3], [3, 0], [0, 0]])
    layer = MoRELayer(p, coords, forget, targets, seed=5, classes=[10, 11, 12, 13])
    assert layer.forget_classes == [11, 12] and layer.num_experts == 3 and layer.feature_dim == 6
    z = gaussian(7, 6, 4).float()
    experts = torch.randint(3, (7,), generator=torch.Generator().manual_seed(5))
    out = layer(z)
    for b in range(7):
        m_f = coords @ z[b]  # |F|
        expected = z[b].clone()
        for i, column in enumerate(forget):
            expected += (p[:, targets[experts[b], i]] - p[:, column]) * m_f[i]
        torch.testing.assert_close(out[b], expected, atol=1e-5, rtol=1e-5)
    erase = MoRELayer(p, coords, forget, None)
    assert erase.num_experts == 1
    torch.testing.assert_close(erase(z), z - (z @ coords.T) @ p[:, forget].T, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(erase.experts()[0].double(), erase_matrix(p.double(), coords.double(), forget))


def test_more_layer_keeps_the_shape_of_feature_maps():
    p = gaussian(3, 3, 5).float()
    coords = torch.linalg.pinv(p.double())[[0]].float()
    layer = MoRELayer(p, coords, [0], None)
    z = gaussian(8, 3, 6).float().reshape(2, 4, 3)
    torch.testing.assert_close(layer(z), layer(z.reshape(-1, 3)).reshape(2, 4, 3))


def points(seed: int = 0) -> LabeledTensors:
    """Three well separated classes in 4-d, 20 samples each."""
    centers = torch.tensor([[4.0, 0, 0, 1], [0, 4.0, 0, 1], [0, 0, 4.0, 1]])
    y = torch.arange(3).repeat_interleave(20)
    return LabeledTensors(
        centers[y] + 0.3 * torch.randn(60, 4, generator=torch.Generator().manual_seed(seed)),
        y,
    )


def test_more_fit_builds_the_layer_from_class_means():
    data = points()
    edit = MoRE(num_experts=4, seed=2).fit(nn.Identity(), data, [1])
    means = torch.stack([data.x[data.targets == c].mean(0) for c in range(3)], 1)
    torch.testing.assert_close(edit.prototypes.matrix, means)
    torch.testing.assert_close(
        edit.layer.coords.double(),
        torch.linalg.pinv(means.double())[[1]],
        atol=1e-5,
        rtol=1e-5,
    )
    expected_targets = draw_targets(1, [0, 2], 4, torch.Generator().manual_seed(2))
    assert torch.equal(edit.layer.targets, expected_targets) and edit.rank == 3
    draws = torch.randint(4, (20,), generator=torch.Generator().manual_seed(2))
    assert edit.load_cv == pytest.approx(load_cv(draws, 4))
    fixed = Remap(target_class=2).fit(nn.Identity(), data, [1])
    assert fixed.layer.targets.tolist() == [[2]] and fixed.load_cv is None
    with pytest.raises(UnlearnError, match="num_experts"):
        MoRE(num_experts=2, mode="erase")
    with pytest.raises(UnlearnError, match="mode"):
        MoRE(mode="swap")


# --- prototypes -----------------------------------------------------------------------------------------------


def test_class_sums_grow_to_the_largest_label_seen_and_count_every_sample():
    x = gaussian(7, 3, 7).float()
    y = torch.tensor([0, 0, 1, 1, 3, 0, 4])  # the batch of 3 first sees labels <= 1, later 3 and 4
    sums, counts, _ = class_sums(nn.Identity(), LabeledTensors(x, y), batch_size=3)
    assert sums.shape == (5, 3) and counts.tolist() == [3.0, 2.0, 0.0, 1.0, 1.0]
    for c in range(5):
        torch.testing.assert_close(sums[c], x[y == c].double().sum(0))
    sums, counts, _ = class_sums(nn.Identity(), LabeledTensors(x, y), num_classes=6, batch_size=4)
    assert sums.shape == (6, 3) and counts.tolist() == [3.0, 2.0, 0.0, 1.0, 1.0, 0.0]
    for bad, num_classes in ((torch.tensor([0, -1]), None), (torch.tensor([0, 6]), 6)):
        with pytest.raises(UnlearnError, match="labels"):
            class_sums(nn.Identity(), LabeledTensors(x[:2], bad), num_classes=num_classes)
    with pytest.raises(UnlearnError, match="empty"):
        class_sums(nn.Identity(), LabeledTensors(x[:0], y[:0]))


def test_prototypes_from_sums_divide_drop_empty_and_excluded_classes():
    sums = torch.tensor([[2.0, 4.0], [0.0, 0.0], [9.0, 3.0], [1.0, 1.0]], dtype=torch.float64)
    counts = torch.tensor([2.0, 0.0, 3.0, 1.0], dtype=torch.float64)
    with pytest.warns(UserWarning, match=r"classes \[1\]"):
        protos = prototypes_from_sums(sums, counts, [2], exclude=[3])
    assert protos.classes == [0, 2] and protos.counts.tolist() == [2.0, 3.0]
    torch.testing.assert_close(protos.matrix, torch.tensor([[1.0, 3.0], [2.0, 1.0]]))
    assert Prototypes(protos.matrix, [4, 0, 2], protos.counts).columns([2, 4]) == [2, 0]
    with pytest.raises(UnlearnError, match="no samples"):
        prototypes_from_sums(sums, counts, [1])
    with pytest.raises(UnlearnError, match="no samples"):
        prototypes_from_sums(sums, counts, [9])
    with pytest.raises(UnlearnError, match="no remain class"):
        prototypes_from_sums(sums[[0, 2]], counts[[0, 2]], [0, 1])
    bad = sums.clone()
    bad[2, 0] = float("inf")
    with pytest.raises(UnlearnError, match=r"classes \[2\]"):
        prototypes_from_sums(bad, counts, [0])


# --- ESC ------------------------------------------------------------------------------------------------------


def test_choose_rank_rules_by_hand():
    sigma = torch.tensor([3.0, 2.0, 1.0, 1.0], dtype=torch.float64)  # energy 9, 4, 1, 1 of 15
    assert choose_rank(sigma, 200, 1.5, None, None) == 3  # int(200 · 1.5 / 100)
    assert choose_rank(sigma, 24, 1.5, None, None) == 1  # int(0.36) = 0 -> at least 1
    assert choose_rank(sigma, 24, 1.5, None, 2) == 2 and choose_rank(sigma, 24, 1.5, None, 9) == 4
    assert choose_rank(sigma, 24, 1.5, 9 / 15, None) == 1  # the first value reaches 60 % exactly
    assert choose_rank(sigma, 24, 1.5, 0.61, None) == 2
    assert choose_rank(sigma, 24, 1.5, 14 / 15, None) == 3
    assert choose_rank(sigma, 24, 1.5, 1.0, None) == 4


def test_esc_projector_removes_the_top_eigenvectors_of_the_forget_gram_matrix():
    data = points(1)
    edit = ESC(k=2).fit(nn.Identity(), data, [0, 2])
    z_f = data.x[(data.targets == 0) | (data.targets == 2)].double()
    _, vectors = torch.linalg.eigh(z_f.T @ z_f)  # ascending eigenvalues: the last two are U_k
    u_k = vectors[:, -2:]
    expected = torch.eye(4, dtype=torch.float64) - u_k @ u_k.T
    torch.testing.assert_close(edit.layer.matrix.double(), expected, atol=1e-5, rtol=1e-5)
    assert edit.rank == 2
    rows, seen = forget_features(nn.Identity(), data, [2], batch_size=7)
    torch.testing.assert_close(rows, data.x[data.targets == 2].double())
    assert seen == 3


# --- MoRE-T ---------------------------------------------------------------------------------------------------


def test_nearest_others_by_brute_force_across_chunks():
    bank = gaussian(11, 3, 8)
    distances, indices = nearest_others(bank, count=3, chunk=4)
    for i in range(11):
        others = sorted((torch.dist(bank[i], bank[j]).item(), j) for j in range(11) if j != i)[:3]
        assert indices[i].tolist() == [j for _, j in others]
        assert distances[i].tolist() == pytest.approx([d for d, _ in others], rel=1e-6)


def test_reflect_jitter_steps_away_from_the_nearest_entry_and_isotropic_has_its_length():
    bank = gaussian(6, 3, 9)
    _, nearest = nearest_others(bank, 1)
    out = jittered(bank, 0.5, "reflect", torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, bank + 0.5 * (bank - bank[nearest[:, 0]]))
    distance, _ = nearest_others(bank, 1)
    out = jittered(bank, 0.5, "isotropic", torch.Generator().manual_seed(0))
    torch.testing.assert_close((out - bank).norm(dim=1), 0.5 * distance[:, 0])
    positive = bank.abs() * (bank > 0)  # ReLU-like: zeros stay zeros, nothing goes negative
    out = jittered(positive, 3.0, "isotropic", torch.Generator().manual_seed(0))
    assert torch.all(out >= 0) and torch.all(out[positive == 0] == 0)
    small = (positive > 0) & (positive <= 1)
    assert small.any() and (out != positive)[small].any()  # every non-zero coordinate moves, small ones too


def transplant_layer(detector=None, neighbours=None, step=0.0, tau=0.5):
    generator = torch.Generator().manual_seed(10)
    d = 4
    forget_rows = torch.randn(1, d, generator=generator)
    coords = torch.linalg.pinv(forget_rows.T)  # 1 x d: D_f P_f = 1
    bank = torch.randn(6, d, generator=generator)
    projection = torch.randn(3, d, generator=generator)
    widths = torch.tensor([0.5, 0.7, 0.9])
    multipliers = torch.tensor([3, 11, 101])
    args = (
        forget_rows,
        coords,
        bank,
        projection,
        widths,
        multipliers,
        [2],
        tau,
        detector,
        neighbours,
        step,
    )
    return TransplantLayer(*args), args


def test_transplant_route_is_the_hash_of_the_quantised_projection():
    layer, (_, _, _, projection, widths, multipliers, *_) = transplant_layer()
    z = gaussian(5, 4, 11).float()
    for salt in (0, 1):
        cells = torch.floor(z.double() @ projection.double().T / widths.double()).long()
        expected = [
            sum(int(c) * int(m + salt) for c, m in zip(row, multipliers, strict=True)) % HASH_MODULUS for row in cells
        ]
        assert layer.route(z, salt).tolist() == expected


def test_transplant_forward_erases_remain_rows_and_moves_detected_ones():
    layer, (forget_rows, coords, bank, *_rest) = transplant_layer(tau=0.5)
    z = gaussian(8, 4, 12).float()
    m_f = (z @ coords.T)[:, 0]
    out = layer(z)
    for b in range(8):
        if m_f[b] > 0.5:  # detected: its bank entry, then erased
            entry = bank[layer.route(z[b : b + 1]).item() % len(bank)]
            expected = entry - (entry @ coords.T) @ forget_rows
        else:
            expected = z[b] - m_f[b] * forget_rows[0]
        torch.testing.assert_close(out[b], expected.reshape(-1), atol=1e-5, rtol=1e-5)
    assert (m_f > 0.5).any() and (m_f <= 0.5).any()


def test_transplant_threshold_is_strict_and_any_leading_shape_works():
    _, args = transplant_layer(tau=0.5)
    unit = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    layer = TransplantLayer(unit, unit, *args[2:])  # P_f = D_f = e1: m_f is the first coordinate
    z = torch.tensor([[0.5, 0.3, 0.2, 0.1], [0.51, 0.3, 0.2, 0.1]])
    out = layer(z)
    torch.testing.assert_close(out[0], torch.tensor([0.0, 0.3, 0.2, 0.1]))  # m_f = τ exactly: erased, not moved
    assert not torch.allclose(out[1], torch.tensor([0.0, 0.3, 0.2, 0.1]))  # m_f > τ: a bank entry instead
    batch = gaussian(6, 4, 15).float()
    torch.testing.assert_close(layer(batch.reshape(2, 3, 4)), layer(batch).reshape(2, 3, 4))  # B x T x d works


def test_transplant_erases_every_forget_coordinate_of_two_classes():
    gen = torch.Generator().manual_seed(4)
    means = torch.randn(4, 6, generator=gen) * 3
    labels = torch.arange(200) % 4
    data = LabeledTensors(means[labels] + torch.randn(200, 6, generator=gen), labels)
    layer = Transplant(seed=0, tau=0.3).fit(nn.Identity(), data, [0, 1]).layer
    out = layer(data.x)
    assert (out @ layer.coords.T).abs().max() < 1e-4  # m_f = 0 for both forget classes, moved or erased
    assert torch.isfinite(out).all()


def test_transplant_degenerate_inputs_stay_finite():
    same = LabeledTensors(torch.cat([torch.ones(10, 3), torch.randn(20, 3).abs()]), torch.tensor([0] * 10 + [1] * 20))
    layer = Transplant(seed=0, tau=0.3).fit(nn.Identity(), same, [0]).layer  # identical forget features: zero spread
    assert (layer.widths > 0).all() and torch.isfinite(layer(same.x)).all()  # bins of positive width all the same
    bank = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 2.0], [0.5, 3.0, 0.0]])  # a ReLU feature that is all zero
    out = jittered(bank, 0.5, "isotropic", torch.Generator().manual_seed(0))
    assert torch.isfinite(out).all() and torch.equal(out[0], bank[0])


def test_transplant_step_is_between_two_different_neighbours_of_the_entry():
    neighbours = torch.tensor([[1, 2, 3], [0, 2, 4], [0, 1, 5], [0, 4, 5], [1, 3, 5], [2, 3, 4]])
    detector = nn.Linear(4, 3)  # a "head": rows with argmax 2 are the forget class
    with torch.no_grad():
        detector.weight.copy_(torch.eye(3, 4))
        detector.bias.zero_()
    layer, (forget_rows, coords, bank, *_rest) = transplant_layer(detector, neighbours, step=0.7)
    z = gaussian(40, 4, 13).float()
    out = layer(z)
    detected = z[:, :3].argmax(1) == 2
    for b in range(40):
        if not detected[b]:
            torch.testing.assert_close(out[b], z[b] - (z[b] @ coords.T) @ forget_rows, atol=1e-5, rtol=1e-5)
            continue
        entry = layer.route(z[b : b + 1]).item() % 6
        pair = layer.route(z[b : b + 1], salt=1).item() % 6  # k (k - 1) ordered pairs, k = 3
        first, second = pair // 2, pair % 2
        second += second >= first
        moved = bank[entry] + 0.7 * (bank[neighbours[entry, first]] - bank[neighbours[entry, second]])
        torch.testing.assert_close(out[b], moved - (moved @ coords.T) @ forget_rows, atol=1e-5, rtol=1e-5)
    assert detected.sum() >= 5 and (~detected).sum() >= 5


def test_transplant_fit_widths_bank_and_detector():
    data = points(2)
    edit = Transplant(seed=3, bank_size=15, num_hashes=5).fit(nn.Identity(), data, [1])
    layer = edit.layer
    assert layer.bank.shape == (15, 4) and layer.projection.shape == (5, 4) and layer.detector is None
    remain = data.x[data.targets != 1].double()
    assert all(any(torch.allclose(row, r) for r in remain.float()) for row in layer.bank)  # real remain samples
    expected_widths = (data.x[data.targets == 1].double() @ layer.projection.double().T).std(dim=0) / 4
    torch.testing.assert_close(layer.widths.double(), expected_widths, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(
        layer.coords.double(),
        torch.linalg.pinv(edit_means(data).double())[[1]],
        atol=1e-5,
        rtol=1e-5,
    )
    assert layer.neighbours.shape == (15, 4) and layer.step == 0.7
    whole = Transplant(seed=3, jitter=0.0).fit(nn.Identity(), data, [1], head=nn.Linear(4, 3))
    assert whole.layer.bank.shape == (40, 4) and whole.layer.neighbours is None and whole.layer.detector is not None
    for bad in (
        {"jitter": -1},
        {"bank_size": 0},
        {"num_hashes": 0},
        {"jitter_mode": "wobble"},
    ):
        with pytest.raises(UnlearnError):
            Transplant(**bad)


def edit_means(data: LabeledTensors) -> torch.Tensor:
    return torch.stack([data.x[data.targets == c].mean(0) for c in range(3)], 1)


def test_esc_parameter_ranges_and_a_single_forget_sample():
    for good in ({"explained_variance": 1.0}, {"k": 1}):
        ESC(**good)
    for bad in ({"explained_variance": 0.0}, {"explained_variance": 1.01}, {"k": 0}):
        with pytest.raises(UnlearnError):
            ESC(**bad)
    data = points(3)
    one = LabeledTensors(
        torch.cat([data.x[:1], data.x[20:]]),
        torch.cat([data.targets[:1], data.targets[20:]]),
    )
    edit = ESC(k=1).fit(nn.Identity(), one, [0])  # one forget sample: its own direction is pruned
    z = one.x[0].double()
    torch.testing.assert_close(
        edit.layer.matrix.double() @ z,
        torch.zeros(4, dtype=torch.float64),
        atol=1e-5,
        rtol=0,
    )
    with pytest.raises(UnlearnError, match="no samples"):
        ESC().fit(
            nn.Identity(),
            LabeledTensors(data.x[20:], data.targets[20:]),
            [0],
            num_classes=3,
        )


def test_esc_on_a_sample_wise_split_prunes_the_forget_samples_directions(blob_data, trained_mlp):
    from unlearn.data.splits import split_random_samples
    from unlearn.models.split import split_model

    splits = split_random_samples(blob_data, fraction=0.1, seed=0)
    unlearned = ESC(k=2).unlearn(trained_mlp, splits)
    features, _ = split_model(trained_mlp)
    with torch.no_grad():
        z_f = features(blob_data.train.x[splits.D_f.indices]).double()
    _, vectors = torch.linalg.eigh(z_f.T @ z_f)
    expected = torch.eye(z_f.shape[1], dtype=torch.float64) - vectors[:, -2:] @ vectors[:, -2:].T
    torch.testing.assert_close(unlearned.fc.edit.matrix.double(), expected, atol=1e-4, rtol=1e-4)


def test_esc_percent_rule_counts_feature_dimensions_not_samples():
    data = points(4)
    assert ESC(percent=50).fit(nn.Identity(), data, [0]).rank == 2  # d = 4 features, 20 forget samples


def test_more_layer_runs_in_the_features_dtype():
    p = gaussian(5, 3, 14).float()
    coords = torch.linalg.pinv(p.double())[[2]].float()
    layer = MoRELayer(p, coords, [2], None)
    z = gaussian(6, 5, 15)
    expected = z - (z @ coords.double().T) @ p[:, [2]].double().T
    out = layer(z)  # float64 features, float32 buffers
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert layer(z.bfloat16()).dtype == torch.bfloat16


def test_all_reduce_sums_pads_to_the_largest_class_count_of_all_ranks():
    import torch.distributed as dist

    from unlearn.methods.prototypes import all_reduce_sums

    sums, counts = gaussian(3, 2, 16), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    squares = torch.tensor([4.0, 5.0, 6.0], dtype=torch.float64)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:  # one process: the all-reduce is the identity, and nothing is padded
        reduced = all_reduce_sums(sums.clone(), counts.clone(), squares.clone())
    finally:
        dist.destroy_process_group()
    for got, expected in zip(reduced, (sums, counts, squares), strict=True):
        torch.testing.assert_close(got, expected)


def test_a_class_with_one_sample_is_kept_and_a_forget_id_past_the_counts_is_an_error():
    sums = torch.tensor([[2.0], [5.0], [6.0]], dtype=torch.float64)
    counts = torch.tensor([2.0, 1.0, 3.0], dtype=torch.float64)
    protos = prototypes_from_sums(sums, counts, [0])
    assert protos.classes == [0, 1, 2]
    torch.testing.assert_close(protos.matrix, torch.tensor([[1.0, 5.0, 2.0]]))
    with pytest.raises(UnlearnError, match="no samples"):
        prototypes_from_sums(sums, counts, [3])  # one past the last class


def test_transplanted_rows_of_a_relu_bank_stay_non_negative():
    layer, (forget_rows, coords, bank, projection, widths, multipliers, *_) = transplant_layer()
    relu_bank = bank.clamp_min(0)
    assert (relu_bank == 0).any()
    neighbours = nearest_others(relu_bank.double(), 3)[1]
    args = (forget_rows, coords, relu_bank, projection, widths, multipliers, [2], 0.5, None, neighbours, 2.0)
    relu_layer = TransplantLayer(*args)
    assert relu_layer.forget_classes == [2] and relu_layer.feature_dim == 4
    moved = relu_layer.transplant(gaussian(50, 4, 17).float())
    assert torch.all(moved >= 0)
    unclamped = TransplantLayer(
        forget_rows, coords, bank, projection, widths, multipliers, [2], 0.5, None, neighbours, 2.0
    )
    assert (unclamped.transplant(gaussian(50, 4, 17).float()) < 0).any()  # a signed bank is not clamped


def test_transplant_with_a_bank_of_three_uses_both_other_entries_as_neighbours():
    data = points(5)
    edit = Transplant(seed=0, bank_size=3).fit(nn.Identity(), data, [0])
    assert edit.layer.neighbours.shape == (3, 2)
    assert edit.layer(data.x).shape == data.x.shape


@pytest.mark.parametrize(("mode", "needed"), [("tangent", 3), ("reflect", 2), ("isotropic", 2)])
def test_a_bank_too_small_for_the_jitter_is_a_clear_error(mode, needed):
    data = points(6)
    for size in range(1, needed):  # used to fail with ZeroDivisionError (tangent) or NaN features (isotropic)
        with pytest.raises(UnlearnError, match=f"at least {needed} remain samples"):
            Transplant(seed=0, bank_size=size, jitter_mode=mode).fit(nn.Identity(), data, [0])
    edit = Transplant(seed=0, bank_size=needed, jitter_mode=mode).fit(nn.Identity(), data, [0])
    assert torch.isfinite(edit.layer(data.x)).all()
    single = Transplant(seed=0, bank_size=1, jitter=0.0).fit(nn.Identity(), data, [0])  # no jitter: one entry is enough
    assert torch.isfinite(single.layer(data.x)).all()


def test_one_remain_sample_is_a_bank_without_jitter():
    data = points(7)
    keep = (data.targets == 0) | (torch.arange(60) == 25)  # all of class 0 and one sample of class 1
    one = LabeledTensors(data.x[keep], data.targets[keep])
    edit = Transplant(seed=0, jitter=0.0).fit(nn.Identity(), one, [0])
    assert edit.layer.bank.shape == (1, 4)
    torch.testing.assert_close(edit.layer.bank, data.x[25:26])


def test_esc_prunes_no_more_directions_than_the_forget_features_span():
    data = points(8)
    keep = (data.targets != 0) | (torch.arange(60) == 3)  # one forget sample
    one = LabeledTensors(data.x[keep], data.targets[keep])
    matrix = ESC(percent=50).fit(nn.Identity(), one, [0]).layer.matrix.double()  # asks for 2 of 4 directions
    assert torch.trace(matrix).item() == pytest.approx(3.0, abs=1e-5)  # one sample spans one direction
