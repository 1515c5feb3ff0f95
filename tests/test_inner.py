"""Edits at inner layers (paper Table 7): activations of a named module, pooled or flattened, edited in place."""

from __future__ import annotations

import pytest
import torch

from unlearn.data.splits import split_by_class
from unlearn.errors import UnlearnError
from unlearn.eval.metrics import evaluate_splits
from unlearn.methods import Erase, MoRE, Remap
from unlearn.methods.base import LinearEdit
from unlearn.methods.inner import ActivationAt, InnerEdit
from unlearn.models.small_cnn import DigitsCNN


@pytest.mark.parametrize(
    "method", [Erase(module="body.1"), Remap(module="body.1"), MoRE(num_experts=4, module="body.1")]
)
def test_an_inner_layer_edit_forgets_and_keeps_the_rest(trained_mlp, blob_data, method):
    splits = split_by_class(blob_data, [1])
    state = {k: v.clone() for k, v in trained_mlp.state_dict().items()}
    unlearned = method.unlearn(trained_mlp, splits)
    acc = evaluate_splits(unlearned, splits)[0]["acc"]
    assert acc["D_f"] < 10 and acc["D_rt"] > 90
    assert isinstance(unlearned.body[1][1], InnerEdit) and not method.at_head
    assert all(torch.equal(state[k], v) for k, v in trained_mlp.state_dict().items())
    assert not trained_mlp.training  # nor its mode


def test_activation_is_pooled_or_flattened_and_stops_at_the_module():
    model = DigitsCNN(width=4, feature_dim=8).eval()
    calls = []
    model.fc.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 1, 8, 8)
    assert ActivationAt(model, "trunk.3", pool=True)(x).shape == (2, 8)
    assert ActivationAt(model, "trunk.3", pool=False)(x).shape == (2, 8 * 4 * 4)
    assert not calls  # the layers after the module never ran
    with pytest.raises(UnlearnError, match="not found"):
        ActivationAt(model, "trunk.99")


def test_a_linear_edit_per_position_commutes_with_pooling():
    matrix = torch.randn(6, 6)
    a = torch.randn(3, 6, 4, 4)
    edited = InnerEdit(LinearEdit(matrix), pool=True)(a)
    assert torch.allclose(edited.mean(dim=(2, 3)), a.mean(dim=(2, 3)) @ matrix.T, atol=1e-5)
    flat = InnerEdit(LinearEdit(torch.eye(96)), pool=False)(a)
    assert torch.equal(flat, a)
