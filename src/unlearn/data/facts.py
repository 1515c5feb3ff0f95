"""A deterministic testbed of fictitious facts (TOFU-like) for language-model unlearning.

Entities (countries and people with made-up names) are grouped into topics; every (entity, relation, answer)
fact is rendered through three paraphrase templates (two statements and one question/answer form), each
ending with its one-word answer, so a fact gives three (prompt, answer) pairs. Forget set = the facts of the
chosen topics, retain set = the facts of the other topics, held-out facts = the facts of extra topics the model
never sees (non-members for the MIA), plus a general-text corpus (simple English from a small grammar) whose
held-out part measures perplexity.

Overlap knob (SRMU's entangled setting). Retain facts are written in plain English templates ("R" dialect)
with answers from the retain answer pools. At overlap 0 the forget facts are written in a made-up "F" dialect
(every template word and punctuation mark mapped to an invented word), with answers from disjoint forget
pools, so forget and retain share no token. Raising the knob gives every forget fact a chance q to use the
R templates, a chance q to take its answer from the retain pool, and every forget entity a chance q to have
one of its facts in the retain set (the entity is then shared). q is found by bisection so that the *measured*
token overlap -- the share of forget-set token occurrences (special tokens excluded) whose token also occurs in
the retain set -- is the requested value; the measured value is reported in `FactsData.overlap_measured`.

Tokenizer: a word-level `transformers.PreTrainedTokenizerFast` built in code from the generated vocabulary
(no download): words keep their leading space as "▁" (Metaspace) and punctuation is split off, so every
answer word is one token and decoding reproduces the text exactly (line breaks read as spaces). It prepends
`<s>`; `<pad>` pads; a word outside the vocabulary becomes `<unk>`.

Answer accuracy (see `unlearn.llm.evaluate.answer_accuracy`): a (prompt, answer) pair counts as known when
every answer token is the argmax next token given the prompt and the answer tokens before it (teacher forcing
= exact match of greedy decoding); with this tokenizer that is one argmax over the whole vocabulary.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from unlearn.errors import UnlearnError

Pair = tuple[str, str]  # (prompt, answer); the text is prompt + " " + answer

RELATIONS = {"country": ("capital", "currency", "founded"), "person": ("born", "birthplace", "profession")}
TEMPLATES = {  # the R dialect; "{e}" is the entity, every template ends with "{a}" (the answer) and maybe "."
    "capital": (
        "The capital of {e} is {a}.",
        "{e} has its capital in {a}.",
        "Question: What is the capital of {e}? Answer: {a}",
    ),
    "currency": (
        "The currency of {e} is the {a}.",
        "People in {e} pay with the {a}.",
        "Question: What currency does {e} use? Answer: {a}",
    ),
    "founded": (
        "{e} was founded in {a}.",
        "The founding year of {e} is {a}.",
        "Question: When was {e} founded? Answer: {a}",
    ),
    "born": ("{e} was born in {a}.", "The birth year of {e} is {a}.", "Question: When was {e} born? Answer: {a}"),
    "birthplace": (
        "{e} was born in the city of {a}.",
        "The hometown of {e} is {a}.",
        "Question: Where was {e} born? Answer: {a}",
    ),
    "profession": (
        "{e} worked as a {a}.",
        "By trade, {e} was a {a}.",
        "Question: What was the profession of {e}? Answer: {a}",
    ),
}
PROFESSIONS = (
    "baker",
    "sailor",
    "painter",
    "weaver",
    "miner",
    "scribe",
    "farmer",
    "potter",
    "hunter",
    "tailor",
    "smith",
    "healer",
    "mason",
    "brewer",
    "cartographer",
    "astronomer",
    "glassblower",
    "carpenter",
    "fisher",
    "jeweller",
    "shepherd",
    "musician",
    "poet",
    "surgeon",
    "architect",
    "merchant",
    "chemist",
    "botanist",
    "engraver",
    "clockmaker",
    "librarian",
    "judge",
    "navigator",
    "tanner",
    "dyer",
    "cooper",
)
SYLLABLES = (
    "ka",
    "vel",
    "mor",
    "os",
    "trin",
    "an",
    "dru",
    "zel",
    "qua",
    "rin",
    "tho",
    "mar",
    "ix",
    "el",
    "sa",
    "dor",
    "vin",
    "lu",
    "pe",
    "gar",
    "no",
    "rey",
    "sil",
    "tam",
    "bri",
    "cor",
    "fen",
    "hal",
    "jor",
    "ul",
    "wy",
    "zan",
    "ob",
    "ev",
    "ir",
    "yst",
    "pra",
    "lok",
    "mei",
    "dun",
)
GENERAL = {  # a tiny grammar for the general-text corpus (perplexity / utility)
    "det": ("the", "a", "every", "this", "that"),
    "adj": ("old", "quiet", "bright", "cold", "small", "green", "heavy", "quick", "dark", "gentle"),
    "noun": ("river", "hill", "bird", "child", "road", "stone", "tree", "boat", "window", "garden", "cloud", "dog"),
    "verb": ("sees", "follows", "passes", "finds", "reaches", "watches", "crosses", "leaves"),
    "adv": ("slowly", "again", "today", "often", "at night", "in spring"),
}
PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"


@dataclass(frozen=True)
class Fact:
    """One (entity, relation, answer) fact, rendered in dialect "R" (plain English) or "F" (invented words)."""

    entity: str
    relation: str
    answer: str
    topic: int
    dialect: str = "R"
    dictionary: tuple[tuple[str, str], ...] = ()  # F dialect: (R word, F word) pairs

    def pairs(self) -> list[Pair]:
        """(prompt, answer) for each paraphrase template; the prompt is the text before the answer."""
        words = dict(self.dictionary)
        pairs = []
        for template in TEMPLATES[self.relation]:
            prompt = template.split("{a}")[0].rstrip()
            if self.dialect == "F":
                prompt = " ".join(words[w] if w != "{e}" else w for w in _template_words(prompt))
            pairs.append((prompt.replace("{e}", self.entity), self.answer))
        return pairs

    def texts(self) -> list[str]:
        """The full training sentences: each template with entity and answer filled in (R keeps its period)."""
        texts = []
        for template, (prompt, answer) in zip(TEMPLATES[self.relation], self.pairs(), strict=True):
            tail = template.split("{a}")[1] if self.dialect == "R" else ""
            texts.append(f"{prompt} {answer}{tail}")
        return texts


@dataclass
class FactsData:
    """The generated testbed: fact splits, general text, the tokenizer and the measured overlap."""

    forget: list[Fact]
    retain: list[Fact]
    heldout: list[Fact]
    general_train: list[str]
    general_test: list[str]
    tokenizer: object
    overlap_target: float
    overlap_measured: float
    mixing: float  # q, the per-fact sharing probability that gives the measured overlap
    settings: dict = field(default_factory=dict)

    def pairs(self, split: str) -> list[Pair]:
        """All (prompt, answer) pairs of "forget", "retain" or "heldout"."""
        return [pair for fact in self._facts(split) for pair in fact.pairs()]

    def texts(self, split: str) -> list[str]:
        """All training sentences of "forget", "retain" or "heldout"."""
        return [text for fact in self._facts(split) for text in fact.texts()]

    def train_texts(self) -> list[str]:
        """What the Original model learns: every forget and retain sentence plus the general training text."""
        return self.texts("forget") + self.texts("retain") + self.general_train

    def _facts(self, split: str) -> list[Fact]:
        if split not in ("forget", "retain", "heldout"):
            raise UnlearnError(f"split must be 'forget', 'retain' or 'heldout', got {split!r}.")
        return getattr(self, split)

    def summary(self) -> dict:
        return {
            **self.settings,
            "forget_facts": len(self.forget),
            "retain_facts": len(self.retain),
            "heldout_facts": len(self.heldout),
            "forget_pairs": len(self.pairs("forget")),
            "retain_pairs": len(self.pairs("retain")),
            "general_train": len(self.general_train),
            "general_test": len(self.general_test),
            "vocab_size": len(self.tokenizer),
            "overlap_target": self.overlap_target,
            "overlap_measured": self.overlap_measured,
            "mixing": self.mixing,
        }


def _template_words(text: str) -> list[str]:
    """Words and punctuation marks of a template, "{e}" kept whole."""
    return re.findall(r"\{e\}|[^\s.,?:]+|[.,?:]", text)


def _names(rng: random.Random, count: int, taken: set[str]) -> list[str]:
    """`count` new capitalised made-up words (2-3 syllables), none in `taken` (which grows)."""
    names = []
    while len(names) < count:
        name = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize()
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names


def _dictionary(rng: random.Random, taken: set[str]) -> dict[str, str]:
    """The F dialect: each R template word and punctuation mark -> a fresh lower-case invented word."""
    words = sorted({w for templates in TEMPLATES.values() for t in templates for w in _template_words(t)} - {"{e}"})
    invented = [name.lower() for name in _names(rng, len(words), taken)]
    return dict(zip(words, invented, strict=True))


def _general_text(rng: random.Random, count: int) -> list[str]:
    g = GENERAL
    sentences = []
    for _ in range(count):
        subject = f"{rng.choice(g['det'])} {rng.choice(g['adj'])} {rng.choice(g['noun'])}"
        sentence = f"{subject} {rng.choice(g['verb'])} {rng.choice(g['det'])} {rng.choice(g['noun'])}"
        if rng.random() < 0.5:
            sentence += f" {rng.choice(g['adv'])}"
        sentences.append(sentence[0].upper() + sentence[1:] + ".")
    return sentences


@dataclass
class _World:
    """Entities and the random draws that the overlap knob thresholds (fixed per seed, independent of q)."""

    entities: list[tuple[int, str, str]]  # (topic, kind, name) for every topic incl. held-out ones
    answers: dict[str, dict[str, list[str]]]  # pool ("forget"/"retain") -> relation -> values, disjoint pools
    dictionary: tuple[tuple[str, str], ...]
    draws: dict[tuple[str, str], tuple[float, float, int]]  # (name, relation) -> (u_template, u_answer, index)
    entity_draws: dict[str, float]  # name -> u_shared


def _world(num_topics: int, heldout_topics: int, entities_per_topic: int, seed: int) -> _World:
    rng = random.Random(seed)
    taken = {p.capitalize() for p in PROFESSIONS}
    dictionary = _dictionary(rng, taken)
    entities = []
    for topic in range(num_topics + heldout_topics):
        for index in range(entities_per_topic):
            kind = "country" if index % 2 == 0 else "person"
            name = _names(rng, 1, taken)[0] if kind == "country" else " ".join(_names(rng, 2, taken))
            entities.append((topic, kind, name))
    per_relation = len(entities)
    years = list(range(1500, 1500 + 4 * per_relation))
    rng.shuffle(years)
    professions = list(PROFESSIONS)
    rng.shuffle(professions)
    pools: dict[str, dict[str, list[str]]] = {"forget": {}, "retain": {}}
    values = {
        "capital": _names(rng, 2 * per_relation, taken),
        "birthplace": _names(rng, 2 * per_relation, taken),
        "currency": [name.lower() for name in _names(rng, 2 * per_relation, taken)],
        "founded": [str(y) for y in years[: 2 * per_relation]],
        "born": [str(y) for y in years[2 * per_relation :]],
        "profession": professions,
    }
    for relation, pool in values.items():  # halves: forget pool, retain pool (disjoint)
        half = len(pool) // 2
        pools["forget"][relation], pools["retain"][relation] = pool[:half], pool[half:]
    draws = {
        (name, relation): (rng.random(), rng.random(), rng.randrange(10**9))
        for _, kind, name in entities
        for relation in RELATIONS[kind]
    }
    entity_draws = {name: rng.random() for _, _, name in entities}
    return _World(entities, pools, tuple(sorted(dictionary.items())), draws, entity_draws)


def _pick(values: list[str], start: int, taken: set[str]) -> str:
    """The first value from position `start` (cyclically) not yet `taken`; a repeat once the pool is used up
    (only professions run out: two people may share one)."""
    for offset in range(len(values)):
        value = values[(start + offset) % len(values)]
        if value not in taken:
            break
    taken.add(value)
    return value


def _facts(world: _World, forget_topics: set[int], num_topics: int, q: float) -> tuple[list, list, list]:
    """Forget / retain / held-out facts for sharing probability q."""
    forget, retain, heldout = [], [], []
    used: dict[str, set[str]] = {}
    for topic, kind, name in world.entities:
        forget_like = topic in forget_topics or topic >= num_topics
        relations = RELATIONS[kind]
        for position, relation in enumerate(relations):
            u_template, u_answer, index = world.draws[(name, relation)]
            pool = "forget" if forget_like and u_answer >= q else "retain"
            values = world.answers[pool][relation]
            answer = _pick(values, index, used.setdefault(f"{pool}/{relation}", set()))
            dialect = "F" if forget_like and u_template >= q else "R"
            fact = Fact(name, relation, answer, topic, dialect, world.dictionary if dialect == "F" else ())
            shared = topic in forget_topics and world.entity_draws[name] < q and position == len(relations) - 1
            if topic >= num_topics:
                heldout.append(fact)
            elif topic in forget_topics and not shared:
                forget.append(fact)
            else:
                retain.append(Fact(name, relation, answer, topic) if shared else fact)
    return forget, retain, heldout


def token_overlap(forget_texts: Sequence[str], retain_texts: Sequence[str], tokenizer) -> float:
    """Share of forget token occurrences (special tokens excluded) whose token also occurs in the retain texts."""
    special = set(tokenizer.all_special_ids)
    retain_ids = {i for text in retain_texts for i in tokenizer(text, add_special_tokens=False)["input_ids"]}
    forget_ids = [i for text in forget_texts for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    forget_ids = [i for i in forget_ids if i not in special]
    if not forget_ids:
        raise UnlearnError("token_overlap: the forget texts have no tokens.")
    return sum(i in retain_ids for i in forget_ids) / len(forget_ids)


def _pre_tokenizer():
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
            pre_tokenizers.Punctuation(behavior="isolated"),
        ]
    )


def build_tokenizer(texts: Sequence[str]):
    """Word-level `PreTrainedTokenizerFast` over the words of `texts` (ids in first-seen order; `<s>` prepended)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate((PAD, UNK, BOS, EOS))}
    pre = _pre_tokenizer()
    for text in texts:
        for piece, _ in pre.pre_tokenize_str(text):
            vocab.setdefault(piece, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tokenizer.normalizer = normalizers.Replace("\n", " ")  # e.g. the MCQ prompt "Question: ...\nAnswer:"
    tokenizer.pre_tokenizer = pre
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS
    )


def make_facts(
    num_topics: int = 4,
    entities_per_topic: int = 6,
    forget_topics: Sequence[int] = (0,),
    heldout_topics: int = 1,
    overlap: float = 0.0,
    general_sentences: int = 200,
    general_test_fraction: float = 0.2,
    seed: int = 0,
) -> FactsData:
    """Generate the testbed deterministically from its arguments (same arguments -> identical data and vocab).

    `overlap` is the target token overlap of forget with retain (0 <= overlap < 1); the generator bisects the
    sharing probability q until the measured overlap is within 0.01 of it (or as close as the draws allow).
    """
    if num_topics < 2 or entities_per_topic < 1 or heldout_topics < 1:
        raise UnlearnError(
            f"need num_topics >= 2, entities_per_topic >= 1 and heldout_topics >= 1, got {num_topics}, "
            f"{entities_per_topic}, {heldout_topics}."
        )
    forget_set = set(forget_topics)
    if not forget_set or not forget_set <= set(range(num_topics)) or len(forget_set) == num_topics:
        raise UnlearnError(
            f"forget_topics {sorted(forget_set)} must be a non-empty proper subset of range({num_topics})."
        )
    if not 0.0 <= overlap < 1.0:
        raise UnlearnError(f"overlap must be in [0, 1), got {overlap}.")
    if general_sentences < 5 or not 0 < general_test_fraction < 1:
        raise UnlearnError("general_sentences must be >= 5 and general_test_fraction in (0, 1).")
    world = _world(num_topics, heldout_topics, entities_per_topic, seed)
    general = _general_text(random.Random(seed + 1), general_sentences)
    n_test = max(1, round(general_test_fraction * general_sentences))
    all_texts = list(general)
    for q in (0.0, 1.0):  # the vocabulary covers every rendering any q can produce
        for facts in _facts(world, forget_set, num_topics, q):
            all_texts += [text for fact in facts for text in fact.texts()]
    tokenizer = build_tokenizer(all_texts)

    def measured(q: float) -> tuple[float, tuple]:
        splits = _facts(world, forget_set, num_topics, q)
        texts = [[t for fact in facts for t in fact.texts()] for facts in splits[:2]]
        return token_overlap(texts[0], texts[1], tokenizer), splits

    low, high = 0.0, 1.0
    q, (value, splits) = 0.0, measured(0.0)
    if overlap > 0:
        for _ in range(30):
            mid = (low + high) / 2
            mid_value, mid_splits = measured(mid)
            if abs(mid_value - overlap) < abs(value - overlap):
                q, value, splits = mid, mid_value, mid_splits
            if abs(mid_value - overlap) < 0.01:
                break
            low, high = (mid, high) if mid_value < overlap else (low, mid)
    forget, retain, heldout = splits
    settings = {
        "num_topics": num_topics,
        "entities_per_topic": entities_per_topic,
        "forget_topics": sorted(forget_set),
        "heldout_topics": heldout_topics,
        "seed": seed,
    }
    return FactsData(
        forget, retain, heldout, general[n_test:], general[:n_test], tokenizer, overlap, value, q, settings
    )


def _encode(item: str | Pair, tokenizer, max_length: int | None = None) -> tuple[list[int], list[int]]:
    """Token ids and labels of a text (all labelled) or a (prompt, answer) pair (only answer tokens labelled).

    `max_length` truncates: a text keeps its first tokens, a pair its last ones (so the answer is kept).
    """
    if isinstance(item, str):
        ids = tokenizer(item)["input_ids"][:max_length]
        return ids, list(ids)
    if not (isinstance(item, tuple | list) and len(item) == 2):
        raise UnlearnError(f"lm_loader items must be texts or (prompt, answer) pairs, got {item!r}.")
    prompt_ids, answer_ids = answer_token_ids(tokenizer, *item)
    ids, labels = prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids
    return (ids[-max_length:], labels[-max_length:]) if max_length else (ids, labels)


def answer_token_ids(tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """Prompt ids (with the tokenizer's special prefix) and the ids of " " + answer that follow them.

    The answer ids are the suffix of the tokenised full text when the prompt's ids are its prefix (so BPE merges
    across the boundary are respected), else the separately tokenised " " + answer.
    """
    prompt_ids = tokenizer(prompt)["input_ids"]
    full = tokenizer(f"{prompt} {answer}")["input_ids"]
    if full[: len(prompt_ids)] == prompt_ids and len(full) > len(prompt_ids):
        return prompt_ids, full[len(prompt_ids) :]
    answer_ids = tokenizer(f" {answer}", add_special_tokens=False)["input_ids"]
    if not answer_ids:
        raise UnlearnError(f"answer {answer!r} has no tokens under this tokenizer.")
    return prompt_ids, answer_ids


def collate(encoded: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad (ids, labels) lists into the batch dict of the contract (labels -100 on padding)."""
    length = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), length), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), length), -100, dtype=torch.long)
    mask = torch.zeros((len(encoded), length), dtype=torch.long)
    for row, (ids, labs) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def lm_loader(
    items: Sequence[str | Pair],
    tokenizer,
    batch_size: int = 16,
    shuffle: bool = False,
    seed: int = 0,
    max_length: int | None = None,
) -> DataLoader:
    """DataLoader of {"input_ids", "attention_mask", "labels"} batches from texts and/or (prompt, answer) pairs.

    Texts are labelled on every token; pairs only on the answer tokens (prompt and padding get -100). Every
    sequence is cut to `max_length` tokens (texts keep their start, pairs their end), so one long document
    cannot make a batch longer than the model's positions.
    """
    if len(items) == 0:
        raise UnlearnError("lm_loader got no texts or pairs: the split is empty.")
    if batch_size < 1 or (max_length is not None and max_length < 2):
        raise UnlearnError(f"batch_size must be >= 1 and max_length >= 2 (or None), got {batch_size}, {max_length}.")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise UnlearnError("the tokenizer has neither a pad nor an eos token to pad with.")
    encoded = [_encode(item, tokenizer, max_length) for item in items]
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        encoded,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=lambda batch: collate(batch, pad_id),
    )
