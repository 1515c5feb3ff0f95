"""MoRE, Remap, Erase and ESC: the equations, the forward pass, the errors, on a user's own module."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from unlearn import ESC, Erase, MoRE, Remap, UnlearnError, split_model
from unlearn.data.base import LabeledTensors
from unlearn.methods.more import erase_matrix, forget_coordinates, pinv_svd, remap_matrix
from unlearn.methods.prototypes import collect_prototypes


def accuracies(model, data, forget):
    with torch.no_grad():
        pred = model(data.x).argmax(1)
    is_forget = torch.isin(data.targets, torch.tensor(forget))
    correct = pred == data.targets
    return correct[is_forget].float().mean().item(), correct[~is_forget].float().mean().item()


def test_pinv_svd_matches_definition_and_reports_rank():
    p = torch.randn(20, 6, dtype=torch.float64)
    pinv, rank = pinv_svd(p)
    assert rank == 6
    torch.testing.assert_close(pinv @ p, torch.eye(6, dtype=torch.float64))
    deficient = torch.cat([p, p[:, :1] + p[:, 1:2]], dim=1)
    assert pinv_svd(deficient)[1] == 6


def test_erase_removes_forget_prototype_and_keeps_remain_ones():
    p = torch.randn(12, 4, dtype=torch.float64) + 1.0  # correlated columns
    coords, _ = forget_coordinates(p, [1])
    e = erase_matrix(p, coords, [1])
    after = e @ p
    torch.testing.assert_close(after[:, 1], torch.zeros(12, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(after[:, [0, 2, 3]], p[:, [0, 2, 3]])


def test_remap_sends_forget_prototype_onto_target():
    p = torch.randn(12, 4, dtype=torch.float64) + 1.0
    coords, _ = forget_coordinates(p, [1])
    after = remap_matrix(p, coords, [1], [3]) @ p
    torch.testing.assert_close(after[:, 1], p[:, 3])
    torch.testing.assert_close(after[:, [0, 2, 3]], p[:, [0, 2, 3]])


def test_without_po_the_erase_disturbs_correlated_remain_prototypes():
    p = torch.randn(12, 4, dtype=torch.float64) + 2.0
    coords, _ = forget_coordinates(p, [1], orthogonal=False)
    after = erase_matrix(p, coords, [1]) @ p
    assert after[:, 1].abs().max() < 1e-9
    assert (after[:, [0, 2, 3]] - p[:, [0, 2, 3]]).abs().max() > 0.1


def test_streaming_prototypes_equal_class_means(blob_data, trained_mlp):
    features, _ = split_model(trained_mlp)
    protos = collect_prototypes(features, blob_data.train, [2], batch_size=7)
    with torch.no_grad():
        z = features(blob_data.train.x)
    for c in range(5):
        torch.testing.assert_close(protos.matrix[:, c], z[blob_data.train.targets == c].mean(0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", [MoRE(num_experts=4), Remap(), Erase(), ESC(), MoRE(orthogonal=False)])
def test_every_edit_forgets_and_keeps_the_rest(blob_data, trained_mlp, method):
    features, _ = split_model(trained_mlp)
    unlearned = method.fit(features, blob_data.train, forget_classes=[2]).apply(trained_mlp)
    forget_acc, remain_acc = accuracies(unlearned, blob_data.test, [2])
    assert forget_acc <= 0.05
    assert remain_acc >= 0.95
    assert unlearned(blob_data.test.x).shape == trained_mlp(blob_data.test.x).shape
    assert accuracies(trained_mlp, blob_data.test, [2])[0] > 0.95  # the original is untouched


def test_stochastic_router_scatters_forget_samples_over_remain_classes(blob_data, trained_mlp):
    features, _ = split_model(trained_mlp)
    edit = MoRE(num_experts=8, seed=3).fit(features, blob_data.train, forget_classes=[2])
    unlearned = edit.apply(trained_mlp)
    x = blob_data.train.x[blob_data.train.targets == 2]
    with torch.no_grad():
        first, second = unlearned(x).argmax(1), unlearned(x).argmax(1)
    assert len(set(first.tolist())) >= 3  # one forget class spread over several remain classes
    assert (first != second).any()  # routing is redrawn at every forward pass
    assert 2 not in first.tolist()


def test_batched_layer_matches_expert_matrices(blob_data, trained_mlp):
    features, _ = split_model(trained_mlp)
    layer = MoRE(num_experts=5, seed=1).fit(features, blob_data.train, [0, 3]).layer
    z = torch.randn(64, layer.prototype_rows.shape[1])
    state = layer.generator.get_state()
    experts = layer.route(len(z), z.device)
    layer.generator.set_state(state)
    expected = torch.einsum("bij,bj->bi", layer.experts()[experts], z)
    torch.testing.assert_close(layer(z), expected, atol=1e-4, rtol=1e-4)


def test_same_seed_same_edit(blob_data, trained_mlp):
    features, _ = split_model(trained_mlp)
    a = MoRE(seed=7).fit(features, blob_data.train, [1]).apply(trained_mlp)
    b = MoRE(seed=7).fit(features, blob_data.train, [1]).apply(trained_mlp)
    torch.testing.assert_close(a(blob_data.test.x), b(blob_data.test.x))


def test_single_expert_absorbs_into_head_exactly(blob_data, trained_mlp):
    features, _ = split_model(trained_mlp)
    for method in (Remap(), Erase(), ESC()):
        method.fit(features, blob_data.train, [4])
        layered, absorbed = method.apply(trained_mlp), method.apply(trained_mlp, absorb=True)
        assert isinstance(absorbed.fc, nn.Linear)  # no extra layer at inference
        torch.testing.assert_close(layered(blob_data.test.x), absorbed(blob_data.test.x), atol=1e-4, rtol=1e-4)
    with pytest.raises(UnlearnError, match="cannot be absorbed"):
        MoRE(num_experts=4).fit(features, blob_data.train, [4]).apply(trained_mlp, absorb=True)


def test_unlearned_model_saves_and_loads(blob_data, trained_mlp, tmp_path):
    features, _ = split_model(trained_mlp)
    unlearned = Remap().fit(features, blob_data.train, [4]).apply(trained_mlp)
    torch.save(unlearned.state_dict(), tmp_path / "m.pt")
    fresh = Remap().fit(features, blob_data.train, [0]).apply(trained_mlp)  # different edit, same shapes
    fresh.load_state_dict(torch.load(tmp_path / "m.pt"))
    torch.testing.assert_close(fresh(blob_data.test.x), unlearned(blob_data.test.x))


def test_fit_accepts_a_user_dataloader(blob_data, trained_mlp):
    features, _ = split_model(trained_mlp)
    loader = torch.utils.data.DataLoader(blob_data.train, batch_size=32, shuffle=True)
    edit = MoRE(seed=0).fit(features, loader, [2])
    assert edit.prototypes.matrix.shape == (24, 5)


@pytest.mark.parametrize(
    ("forget", "message"),
    [([], "empty"), ([7], "not class ids"), ([0, 1, 2, 3, 4], "all 5 classes"), ([-1], "not class ids")],
)
def test_bad_forget_classes_are_clear_errors(blob_data, trained_mlp, forget, message):
    features, _ = split_model(trained_mlp)
    for method in (MoRE(), ESC()):
        with pytest.raises(UnlearnError, match=message):
            method.fit(features, blob_data.train, forget, num_classes=5)


def test_forget_class_without_samples_is_an_error_and_empty_remain_class_a_warning(blob_data, trained_mlp):
    features, _ = split_model(trained_mlp)
    keep = blob_data.train.targets != 3
    partial = LabeledTensors(blob_data.train.x[keep], blob_data.train.targets[keep])
    with pytest.raises(UnlearnError, match="no samples"):
        MoRE().fit(features, partial, [3], num_classes=5)
    with pytest.warns(UserWarning, match=r"classes \[3\] have no samples"):
        edit = MoRE().fit(features, partial, [1], num_classes=5)
    assert edit.prototypes.classes == [0, 1, 2, 4]


def test_nan_features_are_rejected(blob_data, trained_mlp):
    broken = LabeledTensors(blob_data.train.x.clone(), blob_data.train.targets)
    broken.x[0, 0] = float("nan")
    features, _ = split_model(trained_mlp)
    for method in (MoRE(), ESC()):
        with pytest.raises(UnlearnError, match="NaN or inf"):
            method.fit(features, broken, [broken.targets[0].item()])


def test_rank_deficient_prototypes_warn_with_the_rank():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]).repeat(10, 1)
    y = torch.tensor([0, 1, 2]).repeat(10)
    with pytest.warns(UserWarning, match="rank 2 < 3"):
        MoRE().fit(nn.Identity(), LabeledTensors(x, y), [2])


def test_apply_before_fit_and_bad_parameters():
    with pytest.raises(UnlearnError, match="before fit"):
        MoRE().apply(nn.Linear(3, 2))
    with pytest.raises(UnlearnError, match="num_experts"):
        MoRE(num_experts=0)
    with pytest.raises(UnlearnError, match="explained_variance"):
        ESC(explained_variance=1.5)


def test_esc_rank_rules(blob_data, trained_mlp):
    features, _ = split_model(trained_mlp)
    assert ESC().fit(features, blob_data.train, [2]).rank == 1  # int(24 * 1.5 / 100) = 0 -> at least 1
    assert ESC(k=3).fit(features, blob_data.train, [2]).rank == 3
    assert ESC(explained_variance=0.999999).fit(features, blob_data.train, [2]).rank > 1


def test_cost_phases_are_recorded(blob_data, trained_mlp):
    features, _ = split_model(trained_mlp)
    edit = MoRE().fit(features, blob_data.train, [2])
    cost = edit.cost.summary()
    assert set(cost["phases"]) == {"prototypes", "svd", "experts"}
    assert cost["time_s"] > 0 and cost["peak_mem_mb"] >= 0


def test_no_warning_on_healthy_data(blob_data, trained_mlp):
    features, _ = split_model(trained_mlp)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MoRE().fit(features, blob_data.train, [2])


def test_a_second_edit_runs_after_the_first(blob_data, trained_mlp):
    first_edit = MoRE(seed=0).fit(split_model(trained_mlp)[0], blob_data.train, [1])
    first = first_edit.apply(trained_mlp)
    features, _ = split_model(first)  # features now include the first edit
    keep = blob_data.train.targets != 1  # the class already forgotten is no longer a prototype
    rest = LabeledTensors(blob_data.train.x[keep], blob_data.train.targets[keep])
    with pytest.warns(UserWarning, match=r"classes \[1\] have no samples"):
        second = Remap().fit(features, rest, [3], num_classes=5).apply(first)
    first_layer, second_layer = second.fc.edit
    assert len(first_layer.targets) == 8 and len(second_layer.targets) == 1  # the new edit runs last
    x3 = blob_data.test.x[blob_data.test.targets == 3]
    assert (second(x3).argmax(1) != 3).all()


def test_unlearned_model_round_trips_through_safetensors(blob_data, trained_mlp, tmp_path):
    from safetensors.torch import load_file, save_file

    features, _ = split_model(trained_mlp)
    unlearned = MoRE(num_experts=1, seed=0).fit(features, blob_data.train, [4]).apply(trained_mlp)
    save_file(unlearned.state_dict(), tmp_path / "m.safetensors")
    fresh = MoRE(num_experts=1, seed=1).fit(features, blob_data.train, [0]).apply(trained_mlp)
    fresh.load_state_dict(load_file(tmp_path / "m.safetensors"))
    torch.testing.assert_close(fresh(blob_data.test.x), unlearned(blob_data.test.x))


def test_remap_to_a_fixed_target_class(trained_mlp, blob_data):
    from unlearn.data.splits import split_by_class
    from unlearn.eval.metrics import evaluate_splits

    splits = split_by_class(blob_data, [1])
    unlearned = Remap(target_class=3).unlearn(trained_mlp, splits)
    with torch.no_grad():
        predicted = unlearned(splits.D_f.dataset.x[splits.D_f.indices]).argmax(1)
    assert (predicted == 3).float().mean() > 0.9  # the forget class now looks like class 3
    assert evaluate_splits(unlearned, splits)[0]["acc"]["D_rt"] > 95
    for bad in (1, 7):  # the forget class itself, and a class that does not exist
        with pytest.raises(UnlearnError, match="not a remain class"):
            Remap(target_class=bad).unlearn(trained_mlp, splits)


def test_more_layer_refuses_every_malformed_tensor():
    from unlearn.methods.more import MoRELayer

    prototypes, coords, targets = torch.eye(4, 3), torch.zeros(1, 4), torch.tensor([[1]])
    MoRELayer(prototypes, coords, [0], targets)  # well formed
    bad = {
        "matrices": (torch.ones(4), coords, [0], targets),  # 1-D prototypes, 2-D coords
        "coords must be": (prototypes, torch.zeros(4), [0], targets),
        "outside": (prototypes, coords, [3], targets),  # column 3 of 3: one past the end
        "targets": (prototypes, coords, [0], torch.tensor([1])),  # 1-D targets
    }
    for message, args in bad.items():
        with pytest.raises(UnlearnError, match=message):
            MoRELayer(*args)
    for wrong in (torch.tensor([[3]]), torch.zeros(0, 1, dtype=torch.long), torch.tensor([[1, 2]])):
        with pytest.raises(UnlearnError):  # a target one past the columns, no experts, one target too many
            MoRELayer(prototypes, coords, [0], wrong)


def test_hash_routing_is_robust_to_float_noise_on_signed_features():
    from unlearn.methods.more import MoRELayer, hash_experts

    gen = torch.Generator().manual_seed(0)
    prototypes = torch.randn(16, 4, generator=gen)  # signed features: their plain mean is near 0
    layer = MoRELayer(prototypes, torch.randn(1, 16, generator=gen), [0], torch.tensor([[1], [2], [3]]), routing="hash")
    z = torch.randn(500, 16, generator=gen)
    noisy = z * (1 + 1e-6 * torch.randn(z.shape, generator=gen))
    experts = hash_experts(z, layer.quantum, layer.hash_multipliers, 3)
    assert (experts == hash_experts(noisy, layer.quantum, layer.hash_multipliers, 3)).float().mean() >= 0.95
    assert len(experts.unique()) == 3


def test_remap_as_linear_is_the_layer_and_a_multi_expert_more_is_not_linear():
    data = LabeledTensors(torch.randn(60, 5, generator=torch.Generator().manual_seed(3)), torch.arange(60) % 3)
    remap = Remap(target_class=2).fit(nn.Identity(), data, [1])
    z = torch.randn(7, 5)
    torch.testing.assert_close(remap.as_linear()(z), remap.layer(z))
    with pytest.raises(UnlearnError, match="single-expert"):
        MoRE(num_experts=3).fit(nn.Identity(), data, [1]).as_linear()
    with pytest.raises(UnlearnError, match=r"choose from \[0, 2\]"):  # the remain classes, not the forget one
        Remap(target_class=1).fit(nn.Identity(), data, [1])
