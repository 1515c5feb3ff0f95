"""LM losses, router probabilities, attribution and the UOE anchor against references computed here, by hand.

Each test recomputes its quantity from the definition (plain Python math or an explicit exp/sum softmax of
the router's own logits), so a change of the formula in the library (a missing β, softmax or weight, an
anchor on the wrong expert) fails here even when training still "forgets".
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

from unlearn.errors import UnlearnError
from unlearn.llm import SRMU, UOE
from unlearn.llm.losses import (
    ga_loss,
    graddiff_loss,
    masked_mse,
    nll,
    npo_loss,
    rmu_loss,
    router_anchor_loss,
    sequence_logprob,
    token_logprobs,
)
from unlearn.llm.moe import Attribution, expert_attribution, expert_slice, moe_layers, record_router, router_probs
from unlearn.llm.rmu import (
    RMU,
    activation_stats,
    default_alpha,
    default_layer,
    misdirection_direction,
    project_out_misdirection,
    random_unit_vector,
)
from unlearn.llm.srmu import importance_map, normalise, sign_vector

VOCAB, LENGTH, EXPERTS = 64, 10, 4


def tiny_moe(seed: int = 0, layers: int = 2, dense: tuple[int, ...] = ()) -> Qwen2MoeForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2MoeConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, moe_intermediate_size=32,
        shared_expert_intermediate_size=32, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        num_experts=EXPERTS, num_experts_per_tok=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=1,
        pad_token_id=2, mlp_only_layers=list(dense),
    )  # fmt: skip
    model = Qwen2MoeForCausalLM(config).eval()
    with torch.no_grad():  # random init gives near-uniform routing; larger router weights make it peaked
        for moe in moe_layers(model):
            moe.router.weight.normal_(0, 1.0)
    return model


def batch_of(ids: torch.Tensor, pad_from: list[int] | None = None) -> dict[str, torch.Tensor]:
    """A batch whose row b is padding from position pad_from[b] on (mask 0, label -100)."""
    mask = torch.ones_like(ids)
    for row, start in enumerate(pad_from or []):
        mask[row, start:] = 0
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": ids.masked_fill(mask == 0, -100),
    }


FORGET = batch_of(
    torch.randint(3, VOCAB, (3, LENGTH), generator=torch.Generator().manual_seed(1)),
    [LENGTH, 6, 3],
)


pytestmark = pytest.mark.usefixtures("one_thread")


def softmax_by_hand(logits: torch.Tensor) -> torch.Tensor:
    """exp(l − max) / Σ exp(l − max), in float64, without torch.softmax."""
    shifted = (logits.double() - logits.double().max(-1, keepdim=True).values).exp()
    return shifted / shifted.sum(-1, keepdim=True)


def router_inputs(model: torch.nn.Module, batch: dict) -> dict[int, torch.Tensor]:
    """The hidden states [B·T, H] entering each MoE layer's router, captured by a pre-hook."""
    inputs, handles = {}, []

    def keep(layer: int):
        def hook(_module, args) -> None:
            inputs[layer] = args[0].detach().reshape(-1, args[0].shape[-1])

        return hook

    for moe in moe_layers(model):
        handles.append(moe.router.register_forward_pre_hook(keep(moe.layer)))
    with torch.no_grad():
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    for handle in handles:
        handle.remove()
    return inputs


def reference_probs(model: torch.nn.Module, batch: dict) -> dict[int, torch.Tensor]:
    """g(x) = softmax(W x) per MoE layer, [B, T, E], from the router weight and its input."""
    weights = {moe.layer: moe.router.weight.detach().double() for moe in moe_layers(model)}
    shape = batch["input_ids"].shape
    return {
        layer: softmax_by_hand(x.double() @ weights[layer].T).view(*shape, -1)
        for layer, x in router_inputs(model, batch).items()
    }


# --- NPO, GA, GradDiff, NLL -------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.05, 0.5, 2.0])
def test_npo_loss_matches_its_equation_and_gradient(beta):
    logprob = torch.tensor([-3.0, -0.5, -7.25, -1.0], dtype=torch.float64, requires_grad=True)
    reference = torch.tensor([-2.0, -1.5, -4.0, -1.0], dtype=torch.float64)
    loss = npo_loss(logprob, reference, beta)
    deltas = [a - b for a, b in zip(logprob.tolist(), reference.tolist(), strict=True)]
    # L = −(2/β) mean log σ(−β Δ),  log σ(−βΔ) = −log(1 + e^{βΔ})
    expected = -(2 / beta) * sum(-math.log1p(math.exp(beta * d)) for d in deltas) / len(deltas)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    loss.backward()
    # dL/d log π_i = (2/n) σ(β Δ_i): bounded by 2/n, unlike GA's constant
    sigma = [1 / (1 + math.exp(-beta * d)) for d in deltas]
    assert logprob.grad.tolist() == pytest.approx([2 / len(deltas) * s for s in sigma], rel=1e-10)


def test_npo_at_the_reference_is_2_log2_over_beta_and_falls_as_the_model_forgets():
    same = torch.tensor([-2.0, -3.0])
    assert npo_loss(same, same, 0.1).item() == pytest.approx(2 / 0.1 * math.log(2), rel=1e-6)
    assert npo_loss(same - 5, same, 0.1) < npo_loss(same, same, 0.1) < npo_loss(same + 5, same, 0.1)


def test_token_logprobs_nll_and_sequence_logprob_by_hand():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, generator=generator, dtype=torch.float64)
    labels = torch.tensor([[1, 3, 0, 4], [2, 2, -100, -100]])
    logp, scored = token_logprobs(logits, labels)
    expected, expected_scored = (
        torch.zeros(2, 3, dtype=torch.float64),
        torch.zeros(2, 3, dtype=torch.bool),
    )
    for b in range(2):
        for t in range(3):  # position t predicts labels[b, t + 1]
            target = int(labels[b, t + 1])
            if target == -100:
                continue
            row = logits[b, t]
            expected[b, t] = row[target] - math.log(sum(math.exp(v) for v in row.tolist()))
            expected_scored[b, t] = True
    torch.testing.assert_close(logp.double(), expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(scored, expected_scored)
    torch.testing.assert_close(sequence_logprob(logits, labels).double(), expected.sum(1), rtol=1e-6, atol=1e-6)
    assert nll(logits, labels).item() == pytest.approx(-expected.sum().item() / 4, rel=1e-6)
    assert ga_loss(torch.tensor(2.5)).item() == -2.5
    assert graddiff_loss(torch.tensor(2.5), torch.tensor(1.5), 3.0).item() == pytest.approx(-2.5 + 4.5)


def test_masked_mse_and_rmu_loss_by_hand():
    generator = torch.Generator().manual_seed(1)
    hidden, target = (
        torch.randn(2, 3, 4, generator=generator),
        torch.randn(4, generator=generator),
    )
    frozen = torch.randn(2, 3, 4, generator=generator)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    kept = [(b, t) for b in range(2) for t in range(3) if mask[b, t]]
    by_hand = sum(((hidden[b, t] - target) ** 2).sum().item() for b, t in kept) / (len(kept) * 4)
    assert masked_mse(hidden, target.expand_as(hidden), mask).item() == pytest.approx(by_hand, rel=1e-6)
    retain_by_hand = sum(((hidden[b, t] - frozen[b, t]) ** 2).sum().item() for b, t in kept) / (len(kept) * 4)
    forget, retain = rmu_loss(hidden, target, hidden, frozen, 7.0, mask, mask)
    assert forget.item() == pytest.approx(by_hand, rel=1e-6)
    assert retain.item() == pytest.approx(7.0 * retain_by_hand, rel=1e-6)


# --- the UOE router anchor ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("experts", [[2], [1, 3]])
def test_router_anchor_loss_matches_its_equation(experts):
    generator = torch.Generator().manual_seed(2)
    probs = torch.softmax(torch.randn(2, 3, EXPERTS, generator=generator), -1)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    anchor = [1 / len(experts) if e in experts else 0.0 for e in range(EXPERTS)]
    kept = [(b, t) for b in range(2) for t in range(3) if mask[b, t]]
    by_hand = sum(sum((probs[b, t, e].item() - anchor[e]) ** 2 for e in range(EXPERTS)) for b, t in kept) / len(kept)
    assert router_anchor_loss(probs, experts, mask).item() == pytest.approx(by_hand, rel=1e-6)


def test_router_anchor_is_zero_on_the_target_one_hot_and_two_on_another_expert():
    mask = torch.ones(1, 2)
    on_target = torch.nn.functional.one_hot(torch.tensor([[3, 3]]), EXPERTS).float()
    elsewhere = torch.nn.functional.one_hot(torch.tensor([[0, 1]]), EXPERTS).float()
    assert router_anchor_loss(on_target, [3], mask).item() == 0.0
    assert router_anchor_loss(elsewhere, [3], mask).item() == pytest.approx(2.0)


# --- router probabilities and expert attribution ------------------------------------------------------------------


def test_record_router_gives_the_router_logits_whose_softmax_is_the_full_router_probability():
    model = tiny_moe()
    expected = reference_probs(model, FORGET)
    with torch.no_grad(), record_router(model) as records:
        model(input_ids=FORGET["input_ids"], attention_mask=FORGET["attention_mask"])
    assert set(records) >= {0, 1}
    for layer, probs in expected.items():
        torch.testing.assert_close(router_probs(records[layer][0]).double().view_as(probs), probs, rtol=1e-5, atol=1e-6)


def test_expert_attribution_is_the_mean_over_sequences_of_the_mean_router_probability():
    model = tiny_moe()
    probs = reference_probs(model, FORGET)
    mask = FORGET["attention_mask"].double()
    attribution = expert_attribution(model, [FORGET])
    for j, layer in enumerate(attribution.layers):
        per_sequence = [
            sum(probs[layer][b, t] for t in range(LENGTH) if mask[b, t]) / mask[b].sum() for b in range(len(mask))
        ]
        expected = sum(per_sequence) / len(per_sequence)
        torch.testing.assert_close(attribution.affinity[j].double(), expected, rtol=1e-5, atol=1e-6)
        assert attribution.affinity[j].sum().item() == pytest.approx(1.0, abs=1e-5)  # probabilities
    assert attribution.tokens == int(mask.sum())


def test_attribution_top_picks_the_largest_affinities_over_layers():
    affinity = torch.tensor([[0.1, 0.5, 0.2, 0.2], [0.05, 0.15, 0.7, 0.1]])
    attribution = Attribution([3, 5], affinity, tokens=10)
    assert attribution.top(1) == [(5, 2)]
    assert attribution.top(2) == [(5, 2), (3, 1)]
    assert len(attribution.top(8)) == 8  # every (layer, expert) pair
    with pytest.raises(UnlearnError, match="top_m"):
        attribution.top(9)


# --- UOE: the anchor term of the objective ------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [None, 3.0])
def test_uoe_first_step_anchor_is_the_weighted_distance_to_the_target_one_hot(weight):
    model = tiny_moe()
    given = {} if weight is None else {"anchor_weight": weight}
    method = UOE(inner="GA", inner_params={"steps": 1, "lr": 1e-3}, **given)
    weight = 1.0 if weight is None else weight  # the paper's α = 1 by default
    method.unlearn(model, [FORGET])
    (layer, expert), = method.report["target_experts"]  # fmt: skip
    attribution = expert_attribution(model, [FORGET])
    assert (layer, expert) == attribution.top(1)[0]
    probs = reference_probs(model, FORGET)[layer]
    mask = FORGET["attention_mask"].double()
    one_hot = torch.zeros(EXPERTS, dtype=torch.float64)
    one_hot[expert] = 1.0
    by_hand = ((probs - one_hot) ** 2).sum(-1).mul(mask).sum() / mask.sum()
    # step 1 is measured before any update, so it is the anchor of the input model
    assert method.report["loss_first"]["anchor"] == pytest.approx(weight * by_hand.item(), rel=1e-4)
    first = method.report["loss_first"]
    assert first["loss"] == pytest.approx(first["forget"] + first["anchor"], rel=1e-5)


def test_the_anchor_holds_the_router_on_the_target_expert():
    """The anchor moves the router towards the target expert, more than GA's own gradient on the router does.

    Measured on this fixture: the target's mean probability goes 0.28 → 0.37 with GA alone, → 0.45 with the anchor.
    """
    model = tiny_moe()
    params = {"steps": 20, "lr": 3e-2, "max_grad_norm": None}
    target_share = {}
    for weight in (0.0, 1.0):
        given = {"anchor_weight": 0.0} if weight == 0.0 else {}  # 1.0: the default
        method = UOE(inner="GA", inner_params=params, **given)
        unlearned = method.unlearn(model, [FORGET])
        (layer, expert), = method.report["target_experts"]  # fmt: skip
        target_share[weight] = reference_probs(unlearned, FORGET)[layer][..., expert].mean().item()
    before = reference_probs(model, FORGET)[layer][..., expert].mean().item()
    assert target_share[1.0] > before + 0.1
    assert target_share[1.0] > target_share[0.0] + 0.04


def test_losses_over_no_scored_token_are_zero_not_nan():
    logits = torch.randn(2, 4, 5)
    nothing = torch.full((2, 4), -100)
    assert nll(logits, nothing).item() == 0.0
    assert sequence_logprob(logits, nothing).tolist() == [0.0, 0.0]
    no_tokens = torch.zeros(2, 4)
    assert masked_mse(torch.randn(2, 4, 3), torch.randn(2, 4, 3), no_tokens).item() == 0.0
    assert router_anchor_loss(torch.softmax(torch.randn(2, 4, EXPERTS), -1), [1], no_tokens).item() == 0.0


def test_srmu_importance_maps_by_hand_where_retain_activations_are_zero():
    forget, retain = torch.tensor([2.0, 0.5, 0.0]), torch.tensor([0.0, 1.0, 3.0])
    ratio = importance_map(forget, retain, "ratio")
    assert ratio.tolist() == pytest.approx([math.log1p(2.0 / 1e-6), math.log1p(0.5 / (1 + 1e-6)), 0.0])
    difference = importance_map(forget, retain, "difference", lam=0.5)
    assert difference.tolist() == pytest.approx([2.0, 0.0, 0.0])
    mean_f, mean_r = 2.5 / 3, 4.0 / 3
    product = importance_map(forget, torch.tensor([0.0, 0.0, 1e-9]), "product")
    assert product.tolist() == pytest.approx([0.0, 0.0, 0.0])
    assert not torch.isnan(importance_map(torch.zeros(3), torch.zeros(3), "product")).any()  # 0 / (0 + ε)
    product = importance_map(forget, retain, "product")
    assert product.tolist() == pytest.approx([0.0, 0.5 / (mean_f * mean_r + 1e-6), 0.0])


def test_normalise_divides_by_the_max_plus_1e_8():
    assert normalise(torch.tensor([4.0, 1.0, 0.0])).tolist() == pytest.approx([1.0, 0.25, 0.0])
    assert normalise(torch.tensor([1e-8, 0.0], dtype=torch.float64)).tolist() == pytest.approx([0.5, 0.0])
    assert normalise(torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]  # an all-zero map stays zero, not NaN


def test_sign_vectors():
    assert sign_vector(3, 0, "plus").tolist() == [1.0, 1.0, 1.0]
    assert sign_vector(3, 0, "minus").tolist() == [-1.0, -1.0, -1.0]
    random = sign_vector(200, 4)
    assert set(random.tolist()) == {-1.0, 1.0} and torch.equal(random, sign_vector(200, 4))
    assert not torch.equal(random, sign_vector(200, 5))


def test_srmu_reports_the_fraction_of_features_its_target_moves():
    model = tiny_moe()
    retain = batch_of(torch.randint(3, VOCAB, (3, LENGTH), generator=torch.Generator().manual_seed(7)))
    method = SRMU(importance="difference", layer=1, steps=1, lr=1e-3)
    method.unlearn(model, [FORGET], [retain])
    fraction = (method.importance_normalised > 0).float().mean().item()
    assert 0 < fraction < 1
    assert method.report["importance_nonzero_fraction"] == pytest.approx(fraction)
    assert method.report["importance_mean"] == pytest.approx(method.importance_normalised.mean().item())


def test_attribution_skips_all_padding_sequences_and_averages_the_shared_gate():
    model = tiny_moe()
    ids = torch.randint(3, VOCAB, (3, LENGTH), generator=torch.Generator().manual_seed(8))
    batch = batch_of(ids, [LENGTH, 1, 0])  # one real token in the second sequence, none in the last
    probs, inputs = reference_probs(model, batch), router_inputs(model, batch)
    mask = batch["attention_mask"].double()
    attribution = expert_attribution(model, [batch])
    for j, moe in enumerate(moe_layers(model)):
        per_sequence = [(probs[moe.layer][b] * mask[b, :, None]).sum(0) / mask[b].sum() for b in range(2)]
        torch.testing.assert_close(attribution.affinity[j].double(), sum(per_sequence) / 2, rtol=1e-5, atol=1e-6)
        gate = torch.sigmoid(inputs[moe.layer].double() @ moe.shared_gate.weight.double().T).view(mask.shape)
        shared = sum((gate[b] * mask[b]).sum() / mask[b].sum() for b in range(2)) / 2
        assert attribution.shared_gate[moe.layer] == pytest.approx(shared.item(), abs=2e-6)
    assert attribution.tokens == LENGTH + 1


def test_attribution_refuses_layers_with_different_numbers_of_experts():
    model = tiny_moe()
    gate = moe_layers(model)[1].router
    gate.weight = torch.nn.Parameter(torch.zeros(EXPERTS + 1, gate.weight.shape[1]))
    with pytest.raises(UnlearnError, match="different numbers of experts"):
        expert_attribution(model, [FORGET])


def test_attribution_stops_once_the_token_budget_is_reached_and_rounds_its_report():
    model = tiny_moe()
    second = batch_of(torch.randint(3, VOCAB, (2, LENGTH), generator=torch.Generator().manual_seed(9)))
    tokens = int(FORGET["attention_mask"].sum())
    assert expert_attribution(model, [FORGET, second], max_tokens=tokens).tokens == tokens  # budget met: stop
    assert expert_attribution(model, [FORGET, second], max_tokens=tokens + 1).tokens == tokens + 2 * LENGTH
    report = Attribution([0], torch.tensor([[0.12345678, 0.87654322]]), tokens=3, shared_gate={0: 0.5}).as_dict()
    assert report == {"layers": [0], "affinity": [[0.123457, 0.876543]], "tokens": 3, "shared_gate": {0: 0.5}}


def layer_outputs(model: torch.nn.Module, batch: dict) -> list[torch.Tensor]:
    """Every decoder layer's output hidden states [B, T, H], from forward hooks on `model.model.layers`."""
    outputs, handles = [], []
    for layer in model.model.layers:
        hook = lambda _m, _args, out: outputs.append(out[0] if isinstance(out, tuple) else out)  # noqa: E731
        handles.append(layer.register_forward_hook(hook))
    with torch.no_grad():
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    for handle in handles:
        handle.remove()
    return outputs


def test_rmu_defaults_and_the_unit_control_vector():
    assert default_alpha(4096) == 1200.0 and default_alpha(64) == pytest.approx(18.75)
    assert default_layer(32) == 7 and default_layer(9) == 7 and default_layer(8) == 4 and default_layer(2) == 1
    u = random_unit_vector(64, seed=3)
    assert u.norm().item() == pytest.approx(1.0) and torch.all(u >= 0)
    raw = torch.rand(64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(u, raw / raw.norm())
    assert RMU(steering_coeff=6.5).coefficient(123.0) == 6.5
    assert RMU().coefficient(2.0) == 6.5  # the published c is the default
    norm_matched = RMU(steering_coeff=None, steering_ratio=5.0)
    assert norm_matched.coefficient(2.0) == pytest.approx(10.0)
    assert norm_matched.coefficient(2.0, direction_norm=4.0) == pytest.approx(2.5)
    assert norm_matched.coefficient(2.0, direction_norm=0.0) == pytest.approx(1e9)  # 10 / 1e-8


def test_activation_stats_by_hand_over_real_tokens():
    model = tiny_moe()
    hidden = layer_outputs(model, FORGET)[0].double()
    kept = hidden[FORGET["attention_mask"].bool()]
    mean_abs, mean_norm = activation_stats(model, [FORGET], layer=0)
    torch.testing.assert_close(mean_abs.double(), kept.abs().mean(0), rtol=1e-5, atol=1e-6)
    assert mean_norm == pytest.approx(kept.norm(dim=-1).mean().item(), rel=1e-5)
    tokens = int(FORGET["attention_mask"].sum())
    twice = activation_stats(model, [FORGET, FORGET, FORGET], layer=0, max_tokens=tokens + 1)[1]
    assert twice == pytest.approx(mean_norm, rel=1e-5)  # the same batch again: the same mean
    with pytest.raises(UnlearnError, match="no tokens"):
        activation_stats(model, [], layer=0)


def test_misdirection_direction_and_its_projection_by_hand():
    model, reference = tiny_moe(0), tiny_moe(1)
    retain = batch_of(torch.randint(3, VOCAB, (2, LENGTH), generator=torch.Generator().manual_seed(5)))
    mask_f, mask_r = FORGET["attention_mask"].bool(), retain["attention_mask"].bool()
    forget_mean = layer_outputs(model, FORGET)[1][mask_f].double().mean(0)
    against_retain = forget_mean - layer_outputs(model, retain)[1][mask_r].double().mean(0)
    against_reference = forget_mean - layer_outputs(reference, FORGET)[1][mask_f].double().mean(0)
    direction = misdirection_direction(model, 1, [FORGET], [retain])
    torch.testing.assert_close(direction.double(), against_retain / against_retain.norm(), rtol=1e-4, atol=1e-5)
    direction = misdirection_direction(model, 1, [FORGET], [retain], reference=reference)
    torch.testing.assert_close(direction.double(), against_reference / against_reference.norm(), rtol=1e-4, atol=1e-5)
    hidden = layer_outputs(model, FORGET)[1]
    with project_out_misdirection(model, 1, [FORGET], [retain]) as unit:
        projected = layer_outputs(model, FORGET)[1]
    expected = hidden - (hidden @ unit).unsqueeze(-1) * unit
    torch.testing.assert_close(projected, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer_outputs(model, FORGET)[1], hidden)  # the hook is gone after the block
    twice = misdirection_direction(model, 1, [FORGET, FORGET], [retain, retain])  # means over several batches
    torch.testing.assert_close(twice.double(), against_retain / against_retain.norm(), rtol=1e-4, atol=1e-5)
    with pytest.raises(UnlearnError, match="reference model or a retain loader"):
        misdirection_direction(model, 1, [FORGET])


def test_attribution_of_a_single_sequence_is_its_mean_router_probability():
    model = tiny_moe()
    one = {key: value[:1] for key, value in FORGET.items()}
    probs = reference_probs(model, one)
    attribution = expert_attribution(model, [one])
    for j, layer in enumerate(attribution.layers):
        torch.testing.assert_close(attribution.affinity[j].double(), probs[layer][0].mean(0), rtol=1e-5, atol=1e-6)
    with pytest.raises(UnlearnError, match="no tokens"):
        expert_attribution(model, [batch_of(one["input_ids"], [0])])  # only padding


def test_expert_slice_refuses_fused_parameters_it_cannot_cut_by_expert():
    model = tiny_moe()
    params, masks = expert_slice(model, layer=1, expert=3)
    assert set(params) == set(masks) and all(mask[3].all() and mask.sum() == mask[3].numel() for mask in masks.values())
    experts = moe_layers(model)[1].experts
    for shape in ((EXPERTS,), (EXPERTS + 1, 2)):  # 1-D, or a first dimension that is not the expert count
        experts.register_parameter("extra", torch.nn.Parameter(torch.zeros(shape)))
        with pytest.raises(UnlearnError, match="cannot slice expert parameter"):
            expert_slice(model, layer=1, expert=0)


def test_rmu_target_is_c_times_u_and_updates_the_two_layers_below():
    model = tiny_moe()
    method = RMU(layer=1, steps=1, lr=1e-3, steering_coeff=None)  # c norm-matched: 5 × mean ‖H_θ0(x_f)‖
    method.unlearn(model, [FORGET], [FORGET])
    c = 5.0 * method.report["forget_activation_norm"]
    torch.testing.assert_close(method.target, c * random_unit_vector(32, seed=0))
    assert method.report["target_norm"] == pytest.approx(c, rel=1e-5)
    assert RMU(layer=3).resolve_layers(tiny_moe(layers=4)) == (3, [1, 2, 3])
    assert RMU().resolve_layers(tiny_moe(layers=4)) == (2, [0, 1, 2])  # the middle layer of a small model


def test_attribution_on_a_model_with_one_moe_layer():
    model = tiny_moe(dense=(0,))  # layer 0 is a dense MLP
    attribution = expert_attribution(model, [FORGET])
    assert attribution.layers == [1] and attribution.affinity.shape == (1, EXPERTS)
    assert attribution.affinity.sum().item() == pytest.approx(1.0, abs=1e-5)
