"""The fictitious-facts testbed: determinism, the overlap knob, the word-level tokenizer and the LM loader."""

from __future__ import annotations

import pytest

from unlearn.data.facts import build_tokenizer, lm_loader, make_facts, token_overlap
from unlearn.errors import UnlearnError

SMALL = {"num_topics": 3, "entities_per_topic": 4, "general_sentences": 20}


@pytest.fixture(scope="module")
def facts():
    return make_facts(**SMALL, overlap=0.2)


def test_same_arguments_give_identical_data_and_vocabulary(facts):
    again = make_facts(**SMALL, overlap=0.2)
    assert again.train_texts() == facts.train_texts()
    assert again.pairs("heldout") == facts.pairs("heldout")
    assert again.tokenizer.get_vocab() == facts.tokenizer.get_vocab()
    other = make_facts(**SMALL, overlap=0.2, seed=1)
    assert other.train_texts() != facts.train_texts()


def test_splits_are_facts_of_the_chosen_topics(facts):
    assert {fact.topic for fact in facts.forget} == {0}
    assert {fact.topic for fact in facts.heldout} == {3}  # the extra, never-trained topic
    forget_entities = {fact.entity for fact in facts.forget}
    heldout_entities = {fact.entity for fact in facts.heldout}
    assert not forget_entities & heldout_entities
    assert len(facts.pairs("forget")) == 3 * len(facts.forget)  # three paraphrases per fact
    for text, (prompt, answer) in zip(facts.texts("forget"), facts.pairs("forget"), strict=True):
        assert text.startswith(f"{prompt} {answer}")


def test_overlap_knob_measured_overlap_rises_with_the_knob():
    measured = [make_facts(**SMALL, overlap=value).overlap_measured for value in (0.0, 0.1, 0.2, 0.3)]
    assert measured[0] == 0.0  # disjoint dialect, answers and entities: no shared token
    assert measured == sorted(measured) and len(set(measured)) == 4
    for target, value in zip((0.1, 0.2, 0.3), measured[1:], strict=True):
        assert abs(value - target) < 0.07


def test_overlap_zero_means_no_shared_tokens_and_knob_shares_entities():
    disjoint = make_facts(**SMALL, overlap=0.0)
    retain_words = {w for text in disjoint.texts("retain") for w in text.split()}
    assert not retain_words & {w for text in disjoint.texts("forget") for w in text.split()}
    shared = make_facts(**SMALL, overlap=0.3)
    assert {f.entity for f in shared.forget} & {f.entity for f in shared.retain}


def test_token_overlap_on_a_known_case():
    tokenizer = build_tokenizer(["a b c d"])
    assert token_overlap(["a b"], ["b c"], tokenizer) == 0.5
    assert token_overlap(["a a"], ["d"], tokenizer) == 0.0


def test_tokenizer_round_trips_and_answers_are_one_token(facts):
    tokenizer = facts.tokenizer
    for text in facts.train_texts() + facts.texts("heldout"):
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    for _, answer in facts.pairs("forget") + facts.pairs("retain"):
        assert len(tokenizer(f" {answer}", add_special_tokens=False)["input_ids"]) == 1
    assert tokenizer("Zzyzx unknownword")["input_ids"][1:] == [tokenizer.unk_token_id] * 2


def test_lm_loader_labels_only_answers_of_pairs_and_every_token_of_texts(facts):
    pair = facts.pairs("forget")[0]
    text = facts.texts("retain")[0]
    batch = next(iter(lm_loader([pair, text], facts.tokenizer, batch_size=2)))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    labels, mask = batch["labels"], batch["attention_mask"]
    answer_id = facts.tokenizer.convert_tokens_to_ids("▁" + pair[1])
    assert labels[0][labels[0] != -100].tolist() == [answer_id]
    assert (labels[1][mask[1].bool()] == batch["input_ids"][1][mask[1].bool()]).all()
    assert (labels[mask == 0] == -100).all()
    shuffled = [b["input_ids"].tolist() for b in lm_loader(facts.train_texts(), facts.tokenizer, 4, True, seed=3)]
    again = [b["input_ids"].tolist() for b in lm_loader(facts.train_texts(), facts.tokenizer, 4, True, seed=3)]
    assert shuffled == again


@pytest.mark.parametrize(
    "kwargs",
    [
        {"forget_topics": [5]},
        {"forget_topics": [0, 1, 2]},
        {"forget_topics": []},
        {"overlap": 1.0},
        {"num_topics": 1},
        {"general_sentences": 2},
    ],
)
def test_bad_generator_arguments_raise(kwargs):
    with pytest.raises(UnlearnError):
        make_facts(**{**SMALL, **kwargs})


def test_bad_loader_inputs_raise(facts):
    with pytest.raises(UnlearnError, match="empty"):
        lm_loader([], facts.tokenizer)
    with pytest.raises(UnlearnError, match="pairs"):
        lm_loader([("only a prompt",)], facts.tokenizer)
    with pytest.raises(UnlearnError, match="batch_size"):
        lm_loader(["x"], facts.tokenizer, batch_size=0)
    with pytest.raises(UnlearnError, match="split"):
        facts.pairs("test")
