"""LM unlearning methods on tiny transformers models built from configs (random init, no downloads)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    OlmoeConfig,
    OlmoeForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
)

from unlearn.errors import UnlearnError
from unlearn.llm import LM_METHODS, SRMU, UOE, build_lm_method, project_out_misdirection
from unlearn.llm.losses import nll
from unlearn.llm.moe import expert_attribution, expert_slice, moe_layers, record_router
from unlearn.llm.srmu import importance_map, normalise, sign_vector, srmu_target
from unlearn.llm.train import LMTrainConfig, SliceParameter, hidden_at, train_lm, true_runs

VOCAB, LENGTH = 64, 12


def tiny_llama() -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=1, pad_token_id=2,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def tiny_moe() -> Qwen2MoeForCausalLM:
    config = Qwen2MoeConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, moe_intermediate_size=32,
        shared_expert_intermediate_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        num_experts=4, num_experts_per_tok=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=1,
        pad_token_id=2,
    )  # fmt: skip
    return Qwen2MoeForCausalLM(config)


def batch_of(ids: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


# forget: tokens 3..33, retain: tokens 34..63, so the two sets are easy to tell apart
FORGET = batch_of(torch.randint(3, 34, (4, LENGTH), generator=torch.Generator().manual_seed(1)))
RETAIN = batch_of(torch.randint(34, VOCAB, (4, LENGTH), generator=torch.Generator().manual_seed(2)))


def memorise(model: torch.nn.Module, steps: int = 60) -> torch.nn.Module:
    """Fit the forget and retain sequences until the model reproduces them."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    both = {key: torch.cat([FORGET[key], RETAIN[key]]) for key in FORGET}
    for _ in range(steps):
        loss = model(**both).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: torch.nn.Module, batch: dict) -> float:
    """Next-token accuracy on a batch (teacher forcing)."""
    predictions = model(input_ids=batch["input_ids"]).logits[:, :-1].argmax(-1)
    return (predictions == batch["input_ids"][:, 1:]).float().mean().item()


@torch.no_grad()
def forget_nll(model: torch.nn.Module) -> float:
    return nll(model(input_ids=FORGET["input_ids"]).logits, FORGET["labels"]).item()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    model = memorise(tiny_llama())
    assert accuracy(model, FORGET) > 0.95 and accuracy(model, RETAIN) > 0.95
    return model


@pytest.fixture(scope="module")
def moe() -> Qwen2MoeForCausalLM:
    torch.manual_seed(0)
    model = memorise(tiny_moe())
    assert accuracy(model, FORGET) > 0.95
    return model


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def test_ga_lowers_forget_accuracy_and_leaves_the_input_model_untouched(llama):
    before = state(llama)
    method = build_lm_method("GA", steps=10, lr=3e-3)
    unlearned = method.unlearn(llama, [FORGET])
    assert all(torch.equal(before[name], tensor) for name, tensor in llama.state_dict().items())
    assert accuracy(llama, FORGET) > 0.95
    assert accuracy(unlearned, FORGET) < 0.5
    assert method.report["param_fraction"] == 1.0 and method.report["steps"] == 10


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("GradDiff", {"steps": 10, "lr": 3e-3}),
        ("NPO", {"steps": 10, "lr": 3e-3}),
        ("NPO", {"steps": 10, "lr": 3e-3, "retain_weight": 1.0}),
        ("RMU", {"steps": 20, "lr": 1e-2, "layer": 1, "alpha": 100.0}),
        ("SRMU", {"steps": 20, "lr": 1e-2, "layer": 1, "alpha": 100.0}),
    ],
)
def test_each_method_forgets_in_a_tiny_run(llama, name, params):
    method = build_lm_method(name, **params)
    unlearned = method.unlearn(llama, [FORGET], [RETAIN])
    report = method.report
    assert report["loss_last"]["forget"] < report["loss_first"]["forget"]  # its own forget objective went down
    assert forget_nll(unlearned) > forget_nll(llama) + 1.0  # and the forget sequences became unlikely
    assert accuracy(unlearned, FORGET) < accuracy(llama, FORGET) - 0.3
    if "retain" in report["loss_last"]:
        assert accuracy(unlearned, RETAIN) > 0.8  # the retain term held the retain sequences


def test_rmu_trains_only_the_down_projections_of_the_update_layers(llama):
    method = build_lm_method("RMU", steps=5, lr=3e-3, layer=1)
    unlearned = method.unlearn(llama, [FORGET], [RETAIN])
    changed = {name for name, p in unlearned.named_parameters() if not torch.equal(p, llama.state_dict()[name])}
    assert changed == {"model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"}
    assert method.report["update_layers"] == [0, 1] and method.report["layer"] == 1


def test_srmu_target_is_zero_where_the_importance_map_is_zero(llama):
    forget_abs, retain_abs = torch.tensor([3.0, 1.0, 0.5, 2.0]), torch.tensor([1.0, 1.0, 2.0, 0.0])
    importance = normalise(importance_map(forget_abs, retain_abs, "difference"))
    target = srmu_target(4.0, sign_vector(4, seed=0), importance)
    assert torch.equal(importance == 0, torch.tensor([False, True, True, False]))
    assert torch.all(target[importance == 0] == 0) and torch.all(target[importance > 0] != 0)
    assert torch.allclose(target.abs().max(), torch.tensor(4.0))  # c · max I_norm = c

    method = SRMU(importance="difference", layer=1, steps=1, lr=1e-3)
    method.unlearn(llama, [FORGET], [RETAIN])
    zero = method.importance_normalised == 0
    assert zero.any() and (~zero).any()
    assert torch.all(method.target[zero] == 0) and torch.all(method.target[~zero] != 0)
    assert method.target.norm().item() == pytest.approx(5.0 * method.report["forget_activation_norm"], rel=1e-4)


def test_srmu_importance_maps_follow_their_equations():
    forget_abs, retain_abs = torch.tensor([2.0, 1.0]), torch.tensor([1.0, 4.0])
    assert torch.allclose(
        importance_map(forget_abs, retain_abs, "ratio"), torch.log1p(forget_abs / (retain_abs + 1e-6))
    )
    assert torch.allclose(importance_map(forget_abs, retain_abs, "product"), torch.tensor([2.0, 4.0]) / 3.75)
    assert set(sign_vector(64, seed=3).tolist()) == {-1.0, 1.0}
    with pytest.raises(UnlearnError, match="importance map"):
        SRMU(importance="sum")


def plant_expert(model: Qwen2MoeForCausalLM, layer: int, expert: int) -> None:
    """Make `expert` of `layer` take forget tokens: its router row points along mean(forget) − mean(retain) inputs."""
    block = moe_layers(model)[layer].block
    inputs = []
    handle = block.gate.register_forward_hook(lambda _m, args, _out: inputs.append(args[0].detach()))
    with torch.no_grad():
        model(input_ids=FORGET["input_ids"])
        model(input_ids=RETAIN["input_ids"])
    handle.remove()
    direction = inputs[0].mean(0) - inputs[1].mean(0)
    with torch.no_grad():
        block.gate.weight[expert] = 20 * direction / direction.norm()


def test_attribution_picks_the_planted_expert():
    torch.manual_seed(0)
    model = tiny_moe().eval()
    plant_expert(model, layer=1, expert=2)
    attribution = expert_attribution(model, [FORGET])
    assert attribution.top(1) == [(1, 2)]
    assert attribution.affinity[1, 2] > 0.5 and attribution.tokens == FORGET["input_ids"].numel()
    assert set(attribution.shared_gate) == {0, 1}  # the shared expert is reported, never a candidate
    assert expert_attribution(model, [RETAIN]).affinity[1, 2] < attribution.affinity[1, 2]


def test_uoe_changes_only_the_target_expert_slice_and_its_router(moe):
    model = copy.deepcopy(moe)
    plant_expert(model, layer=1, expert=2)
    before = state(model)
    method = UOE(inner="GA", inner_params={"steps": 10, "lr": 3e-3, "weight_decay": 0.1})
    unlearned = method.unlearn(model, [FORGET])
    assert method.report["target_experts"] == [[1, 2]]
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    trained = {"model.layers.1.mlp.experts.gate_up_proj", "model.layers.1.mlp.experts.down_proj"}
    for name, tensor in unlearned.state_dict().items():
        if name in trained:
            others = [e for e in range(4) if e != 2]
            assert torch.equal(tensor[others], before[name][others]), name
            assert not torch.equal(tensor[2], before[name][2]), name
        elif name != "model.layers.1.mlp.gate.weight":
            assert torch.equal(tensor, before[name]), name
    slice_size = sum(before[name][2].numel() for name in trained) + before["model.layers.1.mlp.gate.weight"].numel()
    assert method.report["params_updated"] == slice_size
    assert 0 < method.report["param_fraction"] < 0.1
    assert accuracy(unlearned, FORGET) < accuracy(model, FORGET)
    with torch.no_grad(), record_router(unlearned) as records:  # the anchor kept the router on the target
        unlearned(input_ids=FORGET["input_ids"])
    assert records[1][0].argmax(-1).eq(2).float().mean() > 0.9


@pytest.mark.parametrize("inner", ["NPO", "RMU"])
def test_uoe_wraps_other_methods(moe, inner):
    method = build_lm_method("UOE", inner=inner, inner_params={"steps": 8, "lr": 3e-3})
    unlearned = method.unlearn(moe, [FORGET], [RETAIN])
    assert method.name == f"UOE+{inner}" and "anchor" in method.report["loss_last"]
    assert method.report["param_fraction"] < 0.1
    assert forget_nll(unlearned) > forget_nll(moe)


def test_uoe_with_a_frozen_router_trains_only_the_expert_slice(moe):
    method = UOE(inner="GA", inner_params={"steps": 2, "lr": 1e-2}, train_router=False)
    unlearned = method.unlearn(moe, [FORGET])
    layer, expert = method.report["target_experts"][0]
    gate = f"model.layers.{layer}.mlp.gate.weight"
    assert torch.equal(unlearned.state_dict()[gate], moe.state_dict()[gate])
    experts = [f"model.layers.{layer}.mlp.experts.{name}" for name in ("gate_up_proj", "down_proj")]
    assert method.report["params_updated"] == sum(moe.state_dict()[name][expert].numel() for name in experts)


def test_random_expert_choice_is_seeded(moe):
    picks = [
        UOE(inner_params={"steps": 1}, expert_choice="random", seed=seed).choose_targets(moe, [FORGET])[0]
        for seed in (0, 0, 1, 2, 3)
    ]
    assert picks[0] == picks[1] and len({tuple(p[0]) for p in picks}) > 1


@pytest.mark.parametrize(
    "build",
    [
        lambda **kw: OlmoeForCausalLM(OlmoeConfig(num_experts=4, **kw)),
        lambda **kw: MixtralForCausalLM(MixtralConfig(num_local_experts=4, **kw)),
    ],
    ids=["OLMoE", "Mixtral"],
)
def test_uoe_on_other_moe_architectures(build):
    torch.manual_seed(0)
    model = build(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_experts_per_tok=2, max_position_embeddings=64, pad_token_id=2, eos_token_id=1,
        bos_token_id=0,
    )  # fmt: skip
    method = UOE(inner="GA", inner_params={"steps": 2, "lr": 1e-2})
    unlearned = method.unlearn(model, [FORGET])
    layer, expert = method.report["target_experts"][0]
    for name, tensor in unlearned.state_dict().items():
        before = model.state_dict()[name]
        if name.startswith(f"model.layers.{layer}.mlp.experts."):
            others = [e for e in range(4) if e != expert]
            assert torch.equal(tensor[others], before[others]) and not torch.equal(tensor[expert], before[expert])
        elif name != f"model.layers.{layer}.mlp.gate.weight":
            assert torch.equal(tensor, before), name


def test_fused_slice_mask_keeps_other_slices_bit_identical(moe):
    model = copy.deepcopy(moe)
    params, masks = expert_slice(model, layer=0, expert=1)
    before = {name: p.detach().clone() for name, p in params.items()}

    def loss(m, forget, _retain):
        return {"forget": -nll(m(input_ids=forget["input_ids"]).logits, forget["labels"])}

    train_lm(model, loss, [FORGET], None, params, LMTrainConfig(steps=5, lr=1e-2, weight_decay=0.5), masks)
    for name, p in params.items():
        assert torch.equal(p[[0, 2, 3]], before[name][[0, 2, 3]])
        assert not torch.equal(p[1], before[name][1])


def test_slice_parameter_reads_and_writes_exactly_the_masked_entries():
    generator = torch.Generator().manual_seed(0)
    param = torch.nn.Parameter(torch.randn(3, 4, 5, generator=generator))
    mask = torch.rand(3, 4, 5, generator=generator) > 0.5
    mask[0] = True  # one long run next to scattered ones
    assert sum(stop - start for start, stop in true_runs(mask)) == int(mask.sum())
    piece = SliceParameter(param, mask)
    assert torch.equal(piece.leaf, param.detach()[mask])
    (param * torch.arange(60.0).view(3, 4, 5)).sum().backward()
    assert param.grad is None and torch.equal(piece.leaf.grad, torch.arange(60.0).view(3, 4, 5)[mask])
    before = param.detach().clone()
    with torch.no_grad():
        piece.leaf.add_(1.0)
    piece.write_back()
    assert torch.equal(param.detach()[mask], before[mask] + 1.0) and torch.equal(param.detach()[~mask], before[~mask])
    with pytest.raises(UnlearnError, match="contiguous"):
        SliceParameter(torch.nn.Parameter(torch.randn(4, 5).t()), torch.ones(5, 4, dtype=torch.bool))
    with pytest.raises(UnlearnError, match="selects no entry"):
        SliceParameter(param, torch.zeros_like(mask))


def test_projecting_out_the_misdirection_direction(llama):
    method = build_lm_method("RMU", steps=20, lr=1e-2, layer=1, alpha=100.0)
    unlearned = method.unlearn(llama, [FORGET], [RETAIN])
    plain = forget_nll(unlearned)
    with project_out_misdirection(unlearned, 1, [FORGET], reference=llama) as direction, torch.no_grad():
        hidden = hidden_at(unlearned, FORGET, 1)
        attacked = forget_nll(unlearned)
    assert direction.norm().item() == pytest.approx(1.0)
    assert (hidden @ direction).abs().max() < 1e-4
    assert attacked < plain  # the attack brings some of the forget data back
    assert forget_nll(unlearned) == pytest.approx(plain)  # the hook is gone after the block


def test_clear_errors(llama, moe):
    with pytest.raises(UnlearnError, match="no MoE layers"):
        UOE(inner_params={"steps": 1}).unlearn(llama, [FORGET])
    with pytest.raises(UnlearnError, match="layer 5 does not exist"):
        build_lm_method("RMU", layer=5, steps=1).unlearn(llama, [FORGET], [RETAIN])
    with pytest.raises(UnlearnError, match="forget loader is empty"):
        build_lm_method("GA", steps=1).unlearn(llama, [])
    with pytest.raises(UnlearnError, match="retain loader"):
        build_lm_method("GradDiff", steps=1).unlearn(llama, [FORGET], None)
    with pytest.raises(UnlearnError, match="unknown LM method"):
        build_lm_method("Gradient")
    with pytest.raises(UnlearnError, match="unknown param"):
        build_lm_method("NPO", temperature=1.0)
    with pytest.raises(UnlearnError, match="unknown inner method"):
        UOE(inner="UOE")
    with pytest.raises(UnlearnError, match="FSDP cannot shard"):
        UOE(inner="GA", inner_params={"fsdp": True})
    with pytest.raises(UnlearnError, match="unknown param"):
        build_lm_method("RMU", fsdp=True)  # RMU trains three matrices: data parallel only
    with pytest.raises(UnlearnError, match="expert 7 does not exist"):
        expert_slice(moe, layer=0, expert=7)
    planted = copy.deepcopy(moe)
    plant_expert(planted, layer=1, expert=2)
    with pytest.raises(UnlearnError, match="before the target expert's layer 1"):
        UOE(inner="RMU", inner_params={"layer": 0, "steps": 1}).unlearn(planted, [FORGET], [RETAIN])
    assert set(LM_METHODS) == {"GA", "GradDiff", "NPO", "RMU", "SRMU", "UOE"}
