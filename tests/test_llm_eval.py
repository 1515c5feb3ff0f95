"""LM evaluation on known cases, a tiny Original trained to the accuracy threshold, and `unlearn llm` end to end."""

from __future__ import annotations

import copy
import json
import math
from types import SimpleNamespace

import pytest
import torch
import yaml

from unlearn.cli import main
from unlearn.config import MethodConfig
from unlearn.data.facts import lm_loader, make_facts
from unlearn.data.lm_files import read_mcq
from unlearn.errors import UnlearnError
from unlearn.llm import evaluate as ev
from unlearn.llm.models import FactsTrainConfig, build_model, is_moe, trained_model
from unlearn.runners.llm import expand_lrs

DATA = {"num_topics": 3, "entities_per_topic": 2, "general_sentences": 30, "overlap": 0.0}
MODEL = {"arch": "llama", "hidden_size": 32, "intermediate_size": 64}
TRAIN = {"lr": 0.005, "check_every": 50}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def facts():
    return make_facts(**DATA)


@pytest.fixture(scope="module")
def trained(facts, tmp_path_factory):
    """The tiny dense Original, trained once and cached in a directory the CLI test reuses."""
    cache = tmp_path_factory.mktemp("llm_cache")
    model, record = trained_model(MODEL, facts, FactsTrainConfig(**TRAIN), seed=0, cache_dir=cache)
    return model, record, cache


class Lookup(torch.nn.Module):
    """A fake causal LM: after token i it puts logit `scale` on `table[i]` (0 elsewhere), or uniform logits."""

    def __init__(self, vocab: int, table: dict[int, int] | None = None, scale: float = 10.0) -> None:
        super().__init__()
        self.vocab, self.table, self.scale = vocab, table or {}, scale
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, **_):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        for (b, t), token in zip(
            torch.cartesian_prod(*map(torch.arange, input_ids.shape)).tolist(),
            input_ids.flatten().tolist(),
            strict=True,
        ):
            if token in self.table:
                logits[b, t, self.table[token]] = self.scale
        return SimpleNamespace(logits=logits)


def test_answer_accuracy_and_logprob_on_a_known_model(facts):
    tok = facts.tokenizer
    pairs = facts.pairs("retain")[:4]
    ids = [tok(prompt)["input_ids"][-1] for prompt, _ in pairs]
    answers = [tok(f" {answer}", add_special_tokens=False)["input_ids"][0] for _, answer in pairs]
    table = {ids[0]: answers[0], ids[1]: answers[1]}  # knows the first two answers only
    if ids[2] not in table:
        table[ids[2]] = tok.unk_token_id
    model = Lookup(len(tok), table)
    known = sum(table.get(i) == a for i, a in zip(ids, answers, strict=True))
    assert ev.answer_accuracy(model, tok, pairs) == pytest.approx(known / 4)
    hit = 10 - math.log(math.exp(10) + len(tok) - 1)
    assert ev.answer_logprob(model, tok, pairs[:1]) == pytest.approx(hit, abs=1e-4)


def test_perplexity_of_uniform_model_is_vocab_size_and_mia_is_chance(facts):
    tok = facts.tokenizer
    uniform = Lookup(len(tok))
    assert ev.perplexity(uniform, lm_loader(facts.general_test, tok, 4)) == pytest.approx(len(tok), rel=1e-4)
    assert ev.mia_auc(uniform, tok, facts.texts("forget")[:5], facts.texts("heldout")[:5]) == pytest.approx(0.5)


def test_tiny_model_learns_the_facts_and_leaks_membership(trained, facts):
    model, record, _ = trained
    assert record["reached_target"] and record["steps"] <= FactsTrainConfig().max_steps
    assert ev.answer_accuracy(model, facts.tokenizer, facts.pairs("forget")) >= 0.9
    assert ev.answer_accuracy(model, facts.tokenizer, facts.pairs("retain")) >= 0.9
    assert ev.answer_accuracy(model, facts.tokenizer, facts.pairs("heldout")) < 0.5  # never seen
    assert ev.mia_auc(model, facts.tokenizer, facts.texts("forget"), facts.texts("heldout")) > 0.9


def test_params_changed_counts_elements(trained, facts):
    model = trained[0]
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.lm_head.weight[0, :3] += 1.0
    changed = ev.params_changed(model, other)
    assert changed["changed"] == 3 and changed["fraction"] == pytest.approx(3 / changed["total"])
    with pytest.raises(UnlearnError):
        ev.params_changed(model, build_model({**MODEL, "hidden_size": 16}, facts.tokenizer))


def test_selection_shift_sees_a_router_pinned_to_one_expert(facts):
    model = build_model({"arch": "qwen2_moe", "hidden_size": 32}, facts.tokenizer, seed=0)
    loader = lm_loader(facts.texts("forget"), facts.tokenizer, 8)
    reference = ev.reference_routing(model, loader, top_k=2)
    same = ev.selection_shift(reference, copy.deepcopy(model), loader, target=(1, 2))
    assert same["topk_overlap_all_layers"] == 1.0 and same["target_share_before"] == same["target_share_after"]
    pinned = copy.deepcopy(model)
    gate = pinned.model.layers[1].mlp.gate
    with torch.no_grad():  # router input pinned to ones and only expert 2's row non-zero: expert 2 always wins
        gate.weight.zero_()
        gate.weight[2] = 1.0
    gate.register_forward_pre_hook(lambda _module, args: (torch.ones_like(args[0]),))
    shift = ev.selection_shift(reference, pinned, loader, target=(1, 2))
    assert shift["target_share_after"] == 1.0 > shift["target_share_before"]
    assert shift["topk_overlap_target_layer"] < 1.0
    with pytest.raises(UnlearnError, match="not an MoE layer"):
        ev.selection_shift(reference, pinned, loader, target=(7, 0))
    capped = ev.reference_routing(model, loader, top_k=2, max_tokens=10)  # stops after the first batch
    assert capped["layers"][1].shape[0] == int(next(iter(loader))["attention_mask"].sum())
    assert ev.selection_shift(capped, pinned, loader, target=(1, 2))["tokens"] == capped["layers"][1].shape[0]


def test_relearn_reports_both_halves(trained, facts):
    model = trained[0]
    texts, pairs = [f.texts() for f in facts.forget], [f.pairs() for f in facts.forget]
    result = ev.relearn(model, facts.tokenizer, texts, pairs, steps=2, lr=1e-4)
    assert result["heldout_half_before"] >= 0.75 and 0.0 <= result["heldout_half_after"] <= 1.0
    assert result["train_facts"] + result["eval_facts"] == len(facts.forget)
    fresh = build_model(MODEL, facts.tokenizer, seed=1)  # knows nothing: learning half the facts does not
    assert ev.relearn(fresh, facts.tokenizer, texts, pairs, steps=30, lr=5e-3)["heldout_half_after"] < 0.5
    with pytest.raises(UnlearnError):
        ev.relearn(model, facts.tokenizer, texts[:1], pairs[:1])


def _mcq_file(path, facts, wrong_answer_first: bool = False):
    capitals = [f for f in facts.retain if f.relation == "capital"]
    lines = []
    for index, fact in enumerate(capitals):
        wrong = [other.answer for other in capitals if other.answer != fact.answer][:2]
        choices = [*wrong, fact.answer] if wrong_answer_first else [fact.answer, *wrong]
        answer = len(wrong) if wrong_answer_first else 0
        lines.append(
            json.dumps(
                {
                    "question": f"What is the capital of {fact.entity}?",
                    "choices": choices,
                    "answer": answer,
                    "id": index,
                }
            )
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def test_mcq_by_choice_log_likelihood(trained, facts, tmp_path):
    model = trained[0]
    result = ev.mcq_accuracy(model, facts.tokenizer, _mcq_file(tmp_path / "mcq.jsonl", facts, True), style="cloze")
    assert result["questions"] >= 2 and result["acc"] == 1.0
    uniform = ev.mcq_accuracy(Lookup(len(facts.tokenizer)), facts.tokenizer, tmp_path / "mcq.jsonl", style="cloze")
    assert uniform["acc"] == 0.0  # ties go to the first choice, which is wrong in this file


@pytest.mark.parametrize(
    "line",
    [
        '{"question": "q", "choices": ["a", "b"], "answer": 2}',
        '{"question": "q", "choices": ["a"], "answer": 0}',
        '{"question": "q", "choices": "ab", "answer": 0}',
        "not json",
    ],
)
def test_bad_mcq_files_raise(line, facts, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(UnlearnError, match="bad.jsonl"):
        read_mcq(path)
    with pytest.raises(UnlearnError, match="does not exist"):
        read_mcq(tmp_path / "missing.jsonl")
    with pytest.raises(UnlearnError, match="empty"):
        ev.answer_accuracy(Lookup(4), facts.tokenizer, [])


def test_unlearn_llm_cli_end_to_end(trained, facts, tmp_path, capsys):
    mcq = _mcq_file(tmp_path / "capitals.jsonl", facts)
    config = {
        "name": "tiny",
        "output_dir": str(tmp_path / "run"),
        "cache_dir": str(trained[2]),  # the Original of the fixture is read back, not retrained
        "device": "cpu",
        "data": DATA,
        "model": MODEL,
        "train": TRAIN,
        "eval": {"relearn_steps": 3, "mcq": {"capitals": {"path": str(mcq), "style": "cloze"}}},
        "methods": [{"name": "GA", "params": {"steps": 10, "lr": 2e-3}}],
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["llm", str(path), "--quiet"]) == 0
    assert "GA" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    original, ga = metrics["methods"]["Original"]["eval"], metrics["methods"]["GA"]["eval"]
    assert original["forget_acc"] >= 0.9 and ga["forget_acc"] < original["forget_acc"]
    assert ga["params"]["fraction"] > 0.5 and original["params"]["changed"] == 0
    assert {"ppl", "mia_auc", "relearn", "mcq_capitals", "retain_logprob"} <= set(ga)
    assert (tmp_path / "run" / "report.md").read_text().count("| GA |") == 1
    assert (tmp_path / "run" / "plots" / "forget_vs_retain.png").is_file()
    zero_map = {"importance": "difference", "lam": 1e6, "steps": 1, "layer": 1}  # zero everywhere: SRMU refuses
    failing = {"name": "SRMU", "label": "SRMU (difference)", "params": zero_map}
    path.write_text(yaml.safe_dump({**config, "methods": [failing, *config["methods"]]}))
    assert main(["llm", str(path), "--quiet", "--no-plots"]) == 1  # the failure is reported, the other rows kept
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "zero on every feature" in metrics["failed"]["SRMU (difference)"] and "GA" in metrics["methods"]
    assert "SRMU (difference)" not in metrics["methods"]
    assert "- **SRMU (difference)**: the SRMU importance map" in (tmp_path / "run" / "report.md").read_text()
    path.write_text(yaml.safe_dump({**config, "methods": [{"name": "GA", "params": {"stepz": 1}}]}))
    assert main(["llm", str(path), "--quiet"]) == 2
    path.write_text(yaml.safe_dump({**config, "typo": 1}))
    assert main(["llm", str(path), "--quiet"]) == 2


def test_unlearn_llm_on_a_local_checkpoint_with_text_files(trained, facts, tmp_path):
    """The real-model path: a transformers directory, forget/retain text files, Q/A JSONL and an MCQ file."""
    checkpoint = next((trained[2] / "llm").iterdir())  # save_pretrained dir with the tokenizer
    (tmp_path / "forget.txt").write_text("\n".join(facts.texts("forget")))
    (tmp_path / "retain.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in facts.texts("retain")))
    (tmp_path / "forget_qa.jsonl").write_text(
        "\n".join(json.dumps({"prompt": p, "answer": a}) for p, a in facts.pairs("forget"))
    )
    config = {
        "name": "local",
        "output_dir": str(tmp_path / "run"),
        "device": "cpu",
        "data": {
            "kind": "files",
            "forget_file": str(tmp_path / "forget.txt"),
            "retain_file": str(tmp_path / "retain.jsonl"),
            "forget_qa": str(tmp_path / "forget_qa.jsonl"),
        },
        "model": {"checkpoint": str(checkpoint)},
        "eval": {"mcq": {"capitals": str(_mcq_file(tmp_path / "mcq.jsonl", facts))}, "mcq_style": "cloze"},
        "methods": [{"name": "GA", "params": {"steps": 10, "lr": 2e-3}}],
    }
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["llm", str(path), "--quiet", "--no-plots"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    original, ga = metrics["methods"]["Original"]["eval"], metrics["methods"]["GA"]["eval"]
    assert original["mcq_capitals"]["acc"] == 1.0 and ga["forget_acc"] < original["forget_acc"] >= 0.9
    assert "retain_acc" not in ga and "ppl" not in ga  # no retain Q/A or general text given
    path.write_text(yaml.safe_dump({**config, "model": {"checkpoint": str(tmp_path / "nowhere")}}))
    assert main(["llm", str(path), "--quiet"]) == 2


def test_lr_sweep_labels_rows_and_sets_the_inner_lr_of_uoe():
    methods = [MethodConfig("GA", params={"steps": 3}), MethodConfig("UOE", "UOE+GA", {"inner": "GA"})]
    rows = expand_lrs(methods, [1e-3, 2e-3])
    assert [row.row for row in rows] == ["GA lr=0.001", "GA lr=0.002", "UOE+GA lr=0.001", "UOE+GA lr=0.002"]
    assert rows[1].params == {"steps": 3, "lr": 2e-3} and rows[3].params == {
        "inner": "GA",
        "inner_params": {"lr": 2e-3},
    }
    assert methods[1].params == {"inner": "GA"}  # the config's entries are not modified
    assert expand_lrs(methods, []) == methods


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen2_moe", "olmoe", "mixtral"])
def test_every_arch_builds_from_a_config_dict(arch, facts):
    model = build_model({"arch": arch, "hidden_size": 32, "intermediate_size": 32}, facts.tokenizer, seed=0)
    batch = next(iter(lm_loader(facts.texts("forget")[:2], facts.tokenizer, 2)))
    assert model(**batch).loss.isfinite()
    assert is_moe(model) == (arch in ("qwen2_moe", "olmoe", "mixtral"))
    assert model.config.vocab_size == len(facts.tokenizer)


def test_bad_model_specs_raise(facts):
    with pytest.raises(UnlearnError, match="unknown model arch"):
        build_model({"arch": "gpt9"}, facts.tokenizer)
    with pytest.raises(UnlearnError, match="bad model spec"):
        build_model({"arch": "llama", "hidden_size": 30, "num_attention_heads": 4}, facts.tokenizer)
