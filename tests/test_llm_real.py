"""LM unlearning as a user with a real checkpoint meets it: loading options, data formats, lm-eval-harness MCQ
scoring, bounded memory (shared copies, slice optimizer state), gradient accumulation, the quantisation attack,
SRMU's sign-only control and the published presets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from unlearn.cli import main
from unlearn.data.facts import lm_loader, make_facts
from unlearn.data.lm_files import read_corpus, read_mcq, read_qa
from unlearn.errors import UnlearnError
from unlearn.llm import UOE, build_lm_method
from unlearn.llm import evaluate as ev
from unlearn.llm.base import shared_copy
from unlearn.llm.models import build_model
from unlearn.llm.quantise import fake_quantise, quantised
from unlearn.llm.train import LMTrainConfig, train_lm
from unlearn.runners.llm import llm_config, load_llm_config

ROOT = Path(__file__).resolve().parents[1]
MODEL = {"arch": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def facts():
    return make_facts(num_topics=3, entities_per_topic=2, general_sentences=30)


@pytest.fixture(scope="module")
def checkpoint(facts, tmp_path_factory):
    """A tiny untrained Llama saved as a user's checkpoint (save_pretrained + its tokenizer)."""
    directory = tmp_path_factory.mktemp("ckpt")
    build_model(MODEL, facts.tokenizer, seed=0).save_pretrained(directory)
    facts.tokenizer.save_pretrained(directory)
    return directory


def batch_of(ids: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def tiny_qwen_moe() -> torch.nn.Module:
    """A 2-layer Qwen2-MoE causal LM: 4 fused experts (top-2) and a shared expert per layer, random weights."""
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    config = Qwen2MoeConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, moe_intermediate_size=32,
        shared_expert_intermediate_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        num_experts=4, num_experts_per_tok=2, max_position_embeddings=64, pad_token_id=2,
    )  # fmt: skip
    return Qwen2MoeForCausalLM(config)


def test_a_checkpoint_without_files_mode_is_an_error_not_a_tiny_model():
    with pytest.raises(UnlearnError, match="would ignore the checkpoint"):
        llm_config({"model": {"checkpoint": "somewhere"}, "methods": [{"name": "GA"}]})
    with pytest.raises(UnlearnError, match="dtype"):
        llm_config(
            {
                "data": {"kind": "files", "forget_file": "f.txt"},
                "model": {"checkpoint": "c", "dtype": "int3"},
                "methods": [{"name": "GA"}],
            }
        )


def test_files_mode_without_retain_qa_runs_srmu_and_says_what_is_missing(facts, checkpoint, tmp_path):
    """D1: no retain Q/A, no general text, no held-out texts: RMU/SRMU run, attacks score what exists."""
    (tmp_path / "forget.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in facts.texts("forget")))
    (tmp_path / "retain.txt").write_text("\n".join(facts.texts("retain") + ["short"]))
    qa = [{"question": p, "answer": a, "perturbed_answer": ["Kavel", "Trinos"]} for p, a in facts.pairs("forget")]
    (tmp_path / "forget_qa.json").write_text(json.dumps(qa))
    config = {
        "name": "d1",
        "output_dir": str(tmp_path / "run"),
        "device": "cpu",
        "max_length": 16,
        "data": {
            "kind": "files",
            "forget_file": str(tmp_path / "forget.jsonl"),
            "retain_file": str(tmp_path / "retain.txt"),
            "forget_qa": str(tmp_path / "forget_qa.json"),
            "min_chars": 10,
        },
        "model": {"checkpoint": str(checkpoint), "dtype": "bfloat16"},
        "eval": {"quantisation": [4]},
        "methods": [
            {"name": "SRMU", "params": {"steps": 2, "lr": 1e-3, "layer": 1}},
        ],
    }
    path = tmp_path / "d1.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["llm", str(path), "--quiet", "--no-plots"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["dtype"] == "torch.bfloat16" and metrics["retain_texts"] == len(facts.texts("retain"))
    rmu = metrics["methods"]["SRMU"]["eval"]
    assert "retain_acc" not in rmu and set(rmu["projection_attack"]) == {"forget_acc"}
    assert set(rmu["quantised"]["4"]) == {"forget_acc"} and 0 <= rmu["forget_truth_preference"] <= 1
    report = (tmp_path / "run" / "report.md").read_text()
    assert "no retain Q/A given" in report and "4-bit" in report


def test_loaders_cut_long_documents_and_drop_short_ones(facts, tmp_path):
    long = " ".join(["The capital"] * 200)
    batch = next(iter(lm_loader([long, "The capital"], facts.tokenizer, 2, max_length=32)))
    assert batch["input_ids"].shape == (2, 32)
    pair = next(iter(lm_loader([(long, "Kavel")], facts.tokenizer, 1, max_length=8)))
    assert pair["input_ids"].shape == (1, 8) and (pair["labels"] != -100).sum() == 1  # the answer survives
    (tmp_path / "c.txt").write_text("a long enough document\nshort\n\n")
    assert read_corpus(tmp_path / "c.txt", min_chars=10) == ["a long enough document"]
    with pytest.raises(UnlearnError, match="no document"):
        read_corpus(tmp_path / "c.txt", min_chars=100)


def test_corpus_qa_and_mcq_formats(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    (tmp_path / "b.json").write_text(json.dumps([{"text": "one"}, "two"]))
    assert read_corpus(tmp_path / "a.jsonl") == read_corpus(tmp_path / "b.json") == ["one", "two"]
    rows = [{"question": "Who?", "answer": "Ann", "paraphrased_answer": "It is Ann", "perturbed_answer": ["Bo"]}]
    (tmp_path / "tofu.json").write_text(json.dumps(rows[0]) + "\n" + json.dumps({"question": "Q", "answer": "A"}))
    items = read_qa(tmp_path / "tofu.json", "[INST] {question} [/INST]")  # TOFU ships JSON lines as .json
    assert items[0].pair == ("[INST] Who? [/INST]", "Ann") and items[0].perturbed == ["Bo"]
    assert items[0].paraphrased == "It is Ann" and items[1].perturbed == []
    mcq = [{"question": "q", "choices": ["a", "b", "c", "d"], "answer": "C", "subject": "virology"}]
    (tmp_path / "m.jsonl").write_text(json.dumps(mcq[0]))
    assert read_mcq(tmp_path / "m.jsonl")[0]["answer"] == 2
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{**mcq[0], "answer": 1}]), tmp_path / "m.parquet")
    assert read_mcq(tmp_path / "m.parquet") == [{**mcq[0], "answer": 1}]
    (tmp_path / "bad.jsonl").write_text(json.dumps({**mcq[0], "answer": "E"}))
    with pytest.raises(UnlearnError, match="bad.jsonl"):
        read_mcq(tmp_path / "bad.jsonl")


def test_mmlu_prompt_is_lm_eval_harness_exactly():
    """lm_eval/tasks/mmlu/default: description + doc_to_text, continuations " A".." D" (target delimiter " ")."""
    item = {
        "question": "  Find the degree for the given field extension Q(sqrt(2)) over Q. ",
        "choices": ["0", "4", "2", "6"],
        "answer": 2,
        "subject": "abstract_algebra",
    }
    context, continuations = ev.mcq_prompt(item)
    assert context == (
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
        "Find the degree for the given field extension Q(sqrt(2)) over Q.\nA. 0\nB. 4\nC. 2\nD. 6\nAnswer:"
    )
    assert continuations == ["A", "B", "C", "D"]
    wmdp, _ = ev.mcq_prompt({**item, "subject": None}, subject="biology")
    assert wmdp.startswith("The following are multiple choice questions (with answers) about biology.\n\nFind")


def test_mcq_acc_norm_divides_by_the_continuation_length(monkeypatch, facts):
    items = [{"question": "q", "choices": ["a", "bbbb"], "answer": 1}]
    monkeypatch.setattr(ev, "_score_pairs", lambda *args: (np.zeros(2), np.array([-2.0, -4.0])))
    result = ev.mcq_accuracy(None, facts.tokenizer, items, style="cloze")
    assert result["acc"] == 0.0 and result["acc_norm"] == 1.0  # -2/1 < -4/4
    assert ev.mcq_accuracy(None, facts.tokenizer, items)["acc_norm"] == 0.0  # letters: equal lengths


def test_only_trained_parameters_are_copied(facts):
    model = build_model(MODEL, facts.tokenizer)
    student = shared_copy(model, ["model.layers.1.mlp.down_proj.weight"])
    same = {n for n, p in student.named_parameters() if p is dict(model.named_parameters())[n]}
    assert set(dict(model.named_parameters())) - same == {"model.layers.1.mlp.down_proj.weight"}
    tied = build_model({**MODEL, "tie_word_embeddings": True}, facts.tokenizer)
    copy = shared_copy(tied, ["lm_head.weight"])
    assert copy.model.embed_tokens.weight is copy.lm_head.weight is not tied.lm_head.weight


def test_uoe_keeps_optimizer_state_for_the_slice_only(monkeypatch):
    model = tiny_qwen_moe().eval()
    states: list[int] = []
    original_step = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        result = original_step(self, *args, **kwargs)
        states.append(sum(s["exp_avg"].numel() for s in self.state.values()))
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    batch = batch_of(torch.randint(3, 64, (2, 8), generator=torch.Generator().manual_seed(0)))
    method = UOE(inner="GA", inner_params={"steps": 1, "lr": 1e-3})
    unlearned = method.unlearn(model, [batch], share_weights=True)
    layer, expert = method.report["target_experts"][0]
    moe = unlearned.model.layers[layer].mlp
    slice_size = sum(p[expert].numel() for p in moe.experts.parameters()) + moe.gate.weight.numel()
    assert states == [slice_size] and method.report["params_updated"] == slice_size
    untouched = dict(model.named_parameters())
    shared = [n for n, p in unlearned.named_parameters() if p is untouched[n]]
    assert len(shared) == len(untouched) - 3  # all but the layer's two fused expert tensors and its router
    independent = UOE(inner="GA", inner_params={"steps": 1, "lr": 1e-3}).unlearn(model, [batch])  # the default
    assert not any(p.data_ptr() in {q.data_ptr() for q in model.parameters()} for p in independent.parameters())


def test_uoe_trains_under_activation_checkpointing_as_without_it():
    """`model.gradient_checkpointing: true` re-runs each layer in backward; UOE's router records must not differ."""
    torch.manual_seed(0)
    model = tiny_qwen_moe().eval()
    batch = batch_of(torch.randint(3, 64, (2, 8), generator=torch.Generator().manual_seed(0)))
    results = []
    for checkpointing in (False, True):
        if checkpointing:
            model.activation_checkpointing_enable({"use_reentrant": False})
        unlearned = UOE(inner="GA", inner_params={"steps": 2, "lr": 1e-3}).unlearn(model, [batch])
        results.append(torch.cat([p.detach().flatten() for p in unlearned.parameters()]))
    assert model.is_activation_checkpointing and not torch.equal(results[0], torch.cat(
        [p.detach().flatten() for p in model.parameters()]))  # fmt: skip
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-6)


def test_gradient_accumulation_equals_one_batch_of_the_same_size(facts):
    model = build_model(MODEL, facts.tokenizer)
    ids = torch.randint(4, len(facts.tokenizer), (4, 6), generator=torch.Generator().manual_seed(0))
    halves = [batch_of(ids[:2]), batch_of(ids[2:])]
    results = []
    for loader, accumulate in (([batch_of(ids)], 1), (halves, 2)):
        student = shared_copy(model, dict(model.named_parameters()))
        method = build_lm_method("GA", steps=2, lr=1e-3, grad_accum=accumulate)
        train_lm(student, method.loss, loader, None, dict(student.named_parameters()), method.recipe)
        results.append(torch.cat([p.flatten() for p in student.parameters()]))
    assert torch.allclose(results[0], results[1], atol=1e-6)
    with pytest.raises(UnlearnError, match="grad_accum"):
        LMTrainConfig(grad_accum=0)


def test_fake_quantisation_is_per_channel_round_to_nearest_and_leaves_the_weights(facts):
    weight = torch.tensor([[1.0, -0.45, 0.26], [0.02, 0.0, -0.01]])
    four = fake_quantise(weight, 4)  # 7 levels per side: steps of 1/7 and 0.02/7
    assert torch.allclose(four[0], torch.tensor([1.0, -3 / 7, 2 / 7])) and four[1, 0] == pytest.approx(0.02)
    assert (fake_quantise(weight, 8) - weight).abs().max() <= 1 / 254 + 1e-7
    model = build_model(MODEL, facts.tokenizer)
    before = {n: (p, p.detach().clone()) for n, p in model.named_parameters()}
    ids = torch.randint(4, len(facts.tokenizer), (1, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with quantised(model, 4):
            attacked = model(input_ids=ids).logits
            assert torch.equal(model.model.layers[0].mlp.down_proj.weight, fake_quantise(before[
                "model.layers.0.mlp.down_proj.weight"][1], 4))  # fmt: skip
        assert not torch.allclose(plain, attacked) and torch.equal(model(input_ids=ids).logits, plain)
    after = dict(model.named_parameters())
    assert all(after[n] is p and torch.equal(p, value) for n, (p, value) in before.items())


def test_srmu_sign_only_control_and_an_all_zero_importance_map(facts):
    model = build_model(MODEL, facts.tokenizer)
    forget = [batch_of(torch.randint(4, 40, (2, 6), generator=torch.Generator().manual_seed(1)))]
    retain = [batch_of(torch.randint(40, 80, (2, 6), generator=torch.Generator().manual_seed(2)))]
    control = build_lm_method("SRMU", importance="uniform", steps=1, layer=1)
    control.unlearn(model, forget, retain)
    assert torch.equal(control.importance_normalised, torch.ones(32))
    assert torch.allclose(control.target.abs(), control.target.abs()[0].expand(32))  # a flat ±c sign vector
    with pytest.raises(UnlearnError, match="zero on every feature"):
        build_lm_method("SRMU", importance="difference", lam=1e6, steps=1, layer=1).unlearn(model, forget, retain)


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "llm_presets").glob("*.yaml")), ids=lambda p: p.stem)
def test_published_presets_validate(path):
    config = load_llm_config(path)
    assert config.data["kind"] == "files" and config.max_length == 512
    for entry in config.methods:
        build_lm_method(entry.name, **entry.params)


def test_specialist_loss_makes_an_expert_take_forget_tokens_and_leave_retain_tokens():
    from unlearn.llm.models import specialist_loss
    from unlearn.llm.moe import record_router

    torch.manual_seed(0)
    model = tiny_qwen_moe()
    forget = batch_of(torch.randint(3, 34, (4, 8), generator=torch.Generator().manual_seed(1)))
    retain = batch_of(torch.randint(34, 64, (4, 8), generator=torch.Generator().manual_seed(2)))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(10):
        optimizer.zero_grad()
        specialist_loss(model, forget, retain, layer=1, expert=3).backward()
        optimizer.step()
    with torch.no_grad(), record_router(model) as records:
        model(**{k: v for k, v in forget.items() if k != "labels"})
        model(**{k: v for k, v in retain.items() if k != "labels"})
    shares = [(probs.topk(2, dim=-1).indices == 3).any(-1).float().mean().item() for probs in records[1]]
    assert shares[0] >= 0.9 and shares[1] <= 0.1


def test_activation_checkpointing_gives_the_same_update(facts):
    """RMU stops the forward at its layer with an exception; recomputation in the backward must not break that."""
    model = build_model(MODEL, facts.tokenizer)
    batch = batch_of(torch.randint(4, 60, (2, 8), generator=torch.Generator().manual_seed(0)))
    results = []
    for checkpointing in (False, True):
        if checkpointing:
            model.activation_checkpointing_enable({"use_reentrant": False})
        for name in ("RMU", "NPO"):
            method = build_lm_method(name, steps=2, lr=1e-3, **({"layer": 1} if name == "RMU" else {}))
            results.append(torch.cat([p.flatten() for p in method.unlearn(model, [batch], [batch]).parameters()]))
    assert torch.equal(results[0], results[2]) and torch.equal(results[1], results[3])
