"""Conditional router (MoRE-P / -T / -T-B / -R): Alg. 4 initialisation, top-1 routing, router-only finetuning."""

from __future__ import annotations

import pytest
import torch

from unlearn.data.splits import split_by_class
from unlearn.errors import UnlearnError
from unlearn.eval.metrics import evaluate_splits
from unlearn.methods import ConditionalMoRE, build_method
from unlearn.methods.more import load_cv, pinv_svd
from unlearn.methods.router import pinv_router

FORGET = [1]


@pytest.fixture(scope="module")
def splits(blob_data):
    return split_by_class(blob_data, FORGET)


def snapshot(model):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return state, {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


def test_pinv_router_takes_the_first_rows_of_the_remain_pseudo_inverse_and_pads_beyond_k():
    remain = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    assert torch.allclose(pinv_router(remain, 3, generator), pinv_svd(remain)[0].float()[:3])
    padded = pinv_router(remain, 6, generator)
    assert padded.shape == (6, 12) and torch.allclose(padded[:4], pinv_svd(remain)[0].float())
    assert torch.allclose(padded[4:].norm(dim=1), padded[:4].norm(dim=1).mean().expand(2), rtol=1e-4)


def test_load_cv_is_zero_when_balanced_and_grows_with_imbalance():
    assert load_cv(torch.tensor([0, 1, 2, 3]), 4) == 0
    assert load_cv(torch.tensor([0, 0, 0, 1]), 4) > load_cv(torch.tensor([0, 0, 1, 1]), 4) > 0


@pytest.mark.parametrize(
    ("params", "label"),
    [
        ({"init": "pinv"}, "MoRE-P"),
        ({"init": "pinv", "epochs": 5, "lr": 1e-2, "batch_size": 64, "lambda_flb": 0.0}, "MoRE-P-T"),
        ({"init": "pinv", "epochs": 5, "lr": 1e-2, "batch_size": 64}, "MoRE-P-T-B"),
        ({"init": "random", "epochs": 5, "lr": 1e-2, "batch_size": 64}, "MoRE-R"),
    ],
)
def test_conditional_more_forgets_keeps_remain_and_leaves_the_input_untouched(trained_mlp, splits, params, label):
    before = snapshot(trained_mlp)
    method = ConditionalMoRE(num_experts=3, seed=0, **params)
    unlearned = method.unlearn(trained_mlp, splits)
    acc = evaluate_splits(unlearned, splits)[0]["acc"]
    assert acc["D_f"] == 0 and acc["D_ft"] == 0 and acc["D_rt"] > 95, label
    assert method.load_cv is not None and method.load_cv >= 0
    after = snapshot(trained_mlp)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    grads = zip(before[1].values(), after[1].values(), strict=True)
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in grads)


def test_routing_is_deterministic_top1_and_finetuning_moves_only_the_router(trained_mlp, splits, blob_data):
    fixed = ConditionalMoRE(num_experts=3, seed=0)
    fixed.unlearn(trained_mlp, splits)
    tuned = ConditionalMoRE(num_experts=3, seed=0, epochs=5, lr=1e-2, batch_size=64)
    tuned.unlearn(trained_mlp, splits)
    a, b = fixed.layer, tuned.layer
    assert not torch.equal(a.router.weight, b.router.weight)  # the straight-through gate passes a gradient
    for name in ("prototype_rows", "coords", "targets", "forget", "classes"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    z = torch.randn(32, a.feature_dim)
    with torch.no_grad():
        out = a(z)
        assert torch.equal(out, a(z))
        chosen, _ = a.gate(z)
        experts = a.experts()
        expected = torch.stack([experts[e] @ z[i] for i, e in enumerate(chosen.tolist())])
    assert torch.allclose(out, expected, atol=1e-4)


def test_bad_router_parameters_are_clear_errors():
    with pytest.raises(UnlearnError, match="init"):
        build_method("ConditionalMoRE", init="zeros")
    with pytest.raises(UnlearnError, match="lr must be > 0"):
        ConditionalMoRE(lr=0)
