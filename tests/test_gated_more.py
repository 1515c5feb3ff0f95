"""MoRE-G: MoRE's remap gated by the model's own head, so a look-alike remain class keeps its accuracy.

The synthetic case (features = inputs, 3-d): class A (0) and the forget class F (2) look alike (P_F = P_A + 2 e₃)
and half of A's samples sit at m_f = 0.7 on F's prototype coordinate, still classified A by the head; class B (1)
is far. Plain MoRE moves those A samples by 0.7 (P_t − P_f), which lands the ones routed to B in class B.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from unlearn.data.base import ClassificationData, LabeledTensors
from unlearn.data.splits import split_by_class
from unlearn.errors import UnlearnError
from unlearn.methods import METHODS, GatedMoRE, MoRE, build_method
from unlearn.methods.more import pinv_svd

A, B, F = 0, 1, 2


def lookalike_samples(per_class: int, seed: int) -> LabeledTensors:
    """A at (4, 0, ±1.4) (half each), B at (0, 4, 0), F at (4, 0, 2), each with noise of std 0.1."""
    generator = torch.Generator().manual_seed(seed)
    half = per_class // 2
    centers = torch.tensor([[4.0, 0, 1.4]] * half + [[4.0, 0, -1.4]] * half + [[0, 4.0, 0]] * per_class)
    centers = torch.cat([centers, torch.tensor([[4.0, 0, 2.0]]).repeat(per_class, 1)])
    labels = torch.tensor([A] * per_class + [B] * per_class + [F] * per_class)
    return LabeledTensors(centers + 0.1 * torch.randn(centers.shape, generator=generator), labels)


class FeatureModel(nn.Module):
    """Identity features and a fixed head: A by default, B when z₂ > 2, F when z₃ > 1.7."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Identity()
        self.fc = nn.Linear(3, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[0.0, 0, 0], [0, 10, 0], [0, 0, 10]]))
            self.fc.bias.copy_(torch.tensor([0.0, -20, -17]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


@pytest.fixture(scope="module")
def lookalike():
    data = ClassificationData("lookalike", lookalike_samples(200, 0), lookalike_samples(100, 1), 3, (3,))
    return FeatureModel().eval(), split_by_class(data, [F])


def class_accuracy(model: nn.Module, dataset: LabeledTensors, label: int) -> float:
    with torch.no_grad():
        pred = model(dataset.x).argmax(1)
    return 100.0 * float((pred[dataset.targets == label] == label).float().mean())


def test_gate_keeps_the_lookalike_class_that_more_hurts(lookalike):
    model, splits = lookalike
    test = splits.test().datasets[0].dataset
    before = {c: class_accuracy(model, test, c) for c in (A, B, F)}
    assert before == {A: 100.0, B: 100.0, F: 100.0}
    more = MoRE(num_experts=8, seed=0).unlearn(model, splits, head="fc")
    gated = GatedMoRE(num_experts=8, seed=0).unlearn(model, splits, head="fc")
    assert class_accuracy(more, test, A) < 90.0  # MoRE sends A's look-alike half towards B
    assert class_accuracy(gated, test, A) == 100.0
    assert class_accuracy(gated, test, B) == 100.0
    assert class_accuracy(gated, test, F) <= 2.0
    assert class_accuracy(more, test, F) <= 2.0


def test_samples_the_head_keeps_are_untouched_and_forget_ones_are_remapped(lookalike):
    model, splits = lookalike
    x, y = splits.test().datasets[0].dataset.x, splits.test().datasets[0].dataset.targets
    plain = MoRE(num_experts=8, seed=0).fit(nn.Identity(), splits.train(), [F], 3).layer(x)
    unlifted = GatedMoRE(seed=0, lift=False).fit(nn.Identity(), splits.train(), [F], 3, head=model.fc).layer(x)
    assert torch.equal(unlifted[y != F], x[y != F])
    assert torch.allclose(unlifted[y == F], plain[y == F], atol=1e-5)  # same seed, same expert draws
    edit = GatedMoRE(seed=0).fit(nn.Identity(), splits.train(), [F], 3, head=model.fc)
    out = edit.layer(x)
    assert torch.equal(out[y != F], x[y != F])
    coords = pinv_svd(edit.layer.remap.prototype_rows.T)[0].float()  # m = P⁺ z: the prototype coordinates
    before, after = x[y == F] @ coords.T, out[y == F] @ coords.T
    assert (before[:, F] < 1).any() and (before[:, F] > 1).any()
    assert after[:, F].abs().max() < 1e-4  # the forget coordinate is erased, as by MoRE
    gained = (after - before).sum(dim=1) + before[:, F]  # what the targets (A or B) received: max(m_f, 1)
    assert torch.allclose(gained, before[:, F].clamp_min(1), atol=1e-4)


def test_soft_gate_on_the_forget_coordinate_without_a_head(lookalike):
    _, splits = lookalike
    edit = GatedMoRE(seed=0).fit(nn.Identity(), splits.train(), [F], 3)
    coords = edit.layer.remap.coords[0]  # m_f = coords · z
    z = torch.stack([m * coords / coords.dot(coords) for m in (0.1, 0.375, 0.9)])
    assert torch.allclose(edit.layer.gate(z)[0], torch.tensor([0.0, 0.5, 1.0]), atol=1e-5)


def test_registered_validated_and_model_unchanged(lookalike):
    model, splits = lookalike
    assert METHODS["MoRE-G"] is GatedMoRE
    assert isinstance(build_method("MoRE-G", seed=1), GatedMoRE)
    with pytest.raises(UnlearnError, match="tau_low"):
        GatedMoRE(tau_low=0.5, tau_high=0.5)
    state = copy.deepcopy(model.state_dict())
    edit = GatedMoRE(seed=0)
    unlearned = edit.unlearn(model, splits, head="fc")
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with pytest.raises(UnlearnError, match="not linear"):
        edit.apply(model, "fc", absorb=True)
    reloaded = copy.deepcopy(unlearned)
    reloaded.load_state_dict(unlearned.state_dict())
    assert edit.layer.forget_classes == [F]


def test_runner_up_target_sends_forget_samples_to_the_heads_best_remain_class(lookalike):
    model, splits = lookalike
    x, y = splits.test().datasets[0].dataset.x, splits.test().datasets[0].dataset.targets
    edit = GatedMoRE(seed=0, target="runner-up").fit(nn.Identity(), splits.train(), [F], 3, head=model.fc)
    out = edit.layer(x)
    assert torch.equal(out[y != F], x[y != F])
    with torch.no_grad():
        assert (model.fc(out[y == F]).argmax(1) == A).all()  # F's runner-up is A (B's logit is far lower)
    expert = GatedMoRE(seed=0).fit(nn.Identity(), splits.train(), [F], 3, head=model.fc).layer(x)
    with torch.no_grad():
        assert (model.fc(expert[y == F]).argmax(1) == B).any()  # MoRE's random experts also pick B
    assert torch.equal(edit.layer(x), out)  # deterministic: no router draw
    with pytest.raises(UnlearnError, match="needs the model's head"):
        GatedMoRE(seed=0, target="runner-up").fit(nn.Identity(), splits.train(), [F], 3)
    with pytest.raises(UnlearnError, match="'expert' or 'runner-up'"):
        GatedMoRE(target="nearest")
