"""Repeated requests: forgetting a, then b, on an edited model matches forgetting {a, b} at once."""

from __future__ import annotations

import pytest
import torch

from unlearn.data.splits import split_by_class
from unlearn.eval.metrics import evaluate_splits
from unlearn.methods import ESC, Erase, MoRE
from unlearn.methods.base import forgotten_classes
from unlearn.methods.prototypes import collect_prototypes
from unlearn.methods.saved import load_model, save_model
from unlearn.models.split import split_model

A, B = 1, 3


def edited_prototypes(model, data) -> torch.Tensor:
    features, _ = split_model(model)
    return collect_prototypes(features, data.train, [A], data.num_classes).matrix


def test_erase_a_then_b_gives_the_prototypes_of_erasing_both_at_once(trained_mlp, blob_data):
    once = Erase().unlearn(trained_mlp, split_by_class(blob_data, [A, B]))
    first = Erase().unlearn(trained_mlp, split_by_class(blob_data, [A]))
    assert forgotten_classes(first) == [A]
    second = Erase().unlearn(first, split_by_class(blob_data, [B]))
    assert forgotten_classes(second) == [A, B]
    together, in_turn = edited_prototypes(once, blob_data), edited_prototypes(second, blob_data)
    scale = together.abs().max()
    assert torch.allclose(in_turn, together, atol=1e-5 * scale)
    assert together[:, [A, B]].abs().max() < 1e-4 * scale  # both forget prototypes are erased
    x = blob_data.test.x
    with torch.no_grad():
        assert (once(x).argmax(1) == second(x).argmax(1)).float().mean() > 0.99


def test_more_a_then_b_forgets_both_and_keeps_the_rest_like_one_request(trained_mlp, blob_data):
    both = split_by_class(blob_data, [A, B])
    once = evaluate_splits(MoRE(num_experts=4, seed=0).unlearn(trained_mlp, both), both)[0]["acc"]
    first = MoRE(num_experts=4, seed=0).unlearn(trained_mlp, split_by_class(blob_data, [A]))
    second = MoRE(num_experts=4, seed=1).unlearn(first, split_by_class(blob_data, [B]))
    in_turn = evaluate_splits(second, both)[0]["acc"]
    assert in_turn["D_f"] == once["D_f"] == 0 and in_turn["D_ft"] == once["D_ft"] == 0
    assert abs(in_turn["D_rt"] - once["D_rt"]) <= 1 and in_turn["D_rt"] > 95
    # the second request never remaps B onto the already forgotten A
    layer = second.fc.edit[1]
    assert layer.forget_classes == [B] and A not in layer.classes[layer.targets].flatten().tolist()


def test_forgetting_an_already_forgotten_class_is_a_no_op_with_a_warning(trained_mlp, blob_data):
    splits = split_by_class(blob_data, [A])
    first = MoRE(num_experts=4).unlearn(trained_mlp, splits)
    with pytest.warns(UserWarning, match=r"classes \[1\] are already forgotten"):
        again = MoRE(num_experts=4).unlearn(first, splits)
    assert again is not first
    assert all(torch.equal(p, q) for p, q in zip(again.state_dict().values(), first.state_dict().values(), strict=True))
    assert forgotten_classes(again) == [A]


def test_a_model_edited_twice_saves_and_loads(trained_mlp, blob_data, tmp_path):
    from conftest import TinyMLP

    first = Erase().unlearn(trained_mlp, split_by_class(blob_data, [A]))
    second = MoRE(num_experts=2).unlearn(first, split_by_class(blob_data, [B]))
    loaded = load_model(TinyMLP(), save_model(second, tmp_path / "twice"))
    with torch.no_grad():
        assert torch.equal(loaded(blob_data.test.x), second(blob_data.test.x))


def test_esc_after_more_fits_on_the_edited_features(trained_mlp, blob_data):
    first = MoRE(num_experts=2).unlearn(trained_mlp, split_by_class(blob_data, [A]))
    second = ESC().unlearn(first, split_by_class(blob_data, [B]))
    assert evaluate_splits(second, split_by_class(blob_data, [A]))[0]["acc"]["D_f"] == 0
