"""Concept prototypes from a CLIP text encoder: p_c = mean over templates t and the concept's tokens of h(t(c)).

The cross-attention layers of a diffusers UNet read the text encoder's last hidden state (B x L x d_text), one
row per token. A concept (an artist's name, an object) is one or more tokens of a prompt, so its prototype is a
vector in that same d_text space, the analogue of a class-mean feature on the vision side.

Choices the paper leaves open ("tokenized input prompts to construct prototypes", §4.1):
- p_c is the mean of the last hidden state over the positions of the concept's own tokens (its sub-word
  tokens, found as a sub-sequence of the prompt's ids), averaged over several prompt templates so that it
  does not depend on one wording. BOS, template words, EOS and padding are not part of any prototype.
- CLIP's text encoder is causal, so tokens *after* the concept (EOS, padding) also carry some of it; the
  edit still acts on them through E, but they are not what the prototype is fitted to (see the report's
  per-prompt numbers for how much the whole prompt's keys and values move).
- E = I − P_f D + ... acts on every token, and the hidden states of BOS, template words and EOS/padding
  share much of their direction with the concept prototypes, so D gives them forget coordinates too and
  they would move. `context_prototypes` gives three more columns for them (BOS, which is the same in every
  prompt because the encoder is causal, the mean template word, and the mean EOS/padding state); kept as
  remain columns that are never remap targets, they are held fixed by the edit (D P = I), which is what
  keeps prompts without a forget concept unchanged. The report measures both settings (`keep_context`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from unlearn.errors import UnlearnError

CONTEXT = ("[bos]", "[template words]", "[eos+padding]")
PROTOTYPE_TEMPLATES = (
    "{}",
    "a painting in the style of {}",
    "an artwork by {}",
    "a picture by {}",
    "art by {}",
)


def token_ids(tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    """Token ids (B x L) padded to the tokenizer's max length, as a Stable Diffusion pipeline feeds them."""
    return tokenizer(
        list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


@torch.no_grad()
def encode(text_encoder: nn.Module, tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    """The encoder hidden states the UNet's cross-attention reads: last_hidden_state (B x L x d_text)."""
    device = next(text_encoder.parameters()).device
    return text_encoder(token_ids(tokenizer, prompts).to(device)).last_hidden_state


def concept_positions(ids: Sequence[int], concept_ids: Sequence[int], prompt: str) -> list[int]:
    """Positions of the first occurrence of `concept_ids` as a contiguous run inside `ids`."""
    ids, concept_ids = list(ids), list(concept_ids)
    for start in range(len(ids) - len(concept_ids) + 1):
        if ids[start : start + len(concept_ids)] == concept_ids:
            return list(range(start, start + len(concept_ids)))
    raise UnlearnError(
        f"the concept's tokens {concept_ids} do not appear in the tokenised prompt {prompt!r} (truncated to "
        f"{len(ids)} tokens?); use a shorter template or concept name."
    )


@torch.no_grad()
def concept_prototypes(
    text_encoder: nn.Module,
    tokenizer,
    concepts: Sequence[str],
    templates: Sequence[str] = PROTOTYPE_TEMPLATES,
) -> torch.Tensor:
    """P (d_text x k, float64): column c is the mean hidden state over concept c's tokens in every template."""
    if not concepts:
        raise UnlearnError("no concepts given: name at least one forget and one remain concept.")
    if not templates or any("{}" not in template for template in templates):
        raise UnlearnError(f"every prompt template needs a '{{}}' where the concept goes, got {list(templates)}.")
    columns = []
    for concept in concepts:
        concept_ids = tokenizer(concept, add_special_tokens=False).input_ids
        if not concept.strip() or not concept_ids:
            raise UnlearnError(f"concept {concept!r} has no tokens; give a non-empty name.")
        prompts = [template.format(concept) for template in templates]
        ids = token_ids(tokenizer, prompts)
        hidden = encode(text_encoder, tokenizer, prompts).double()
        per_prompt = [
            hidden[row, concept_positions(ids[row].tolist(), concept_ids, prompt)].mean(0)
            for row, prompt in enumerate(prompts)
        ]
        columns.append(torch.stack(per_prompt).mean(0))
    matrix = torch.stack(columns, dim=1)
    if not torch.isfinite(matrix).all():
        raise UnlearnError("the text encoder gave NaN or inf hidden states; check its weights.")
    return matrix


@torch.no_grad()
def context_prototypes(
    text_encoder: nn.Module,
    tokenizer,
    concepts: Sequence[str],
    templates: Sequence[str] = PROTOTYPE_TEMPLATES,
) -> torch.Tensor:
    """d_text x 3 (float64): mean hidden state of BOS, of the template words and of EOS + padding (names: CONTEXT),
    over every template filled with every concept."""
    groups: list[list[torch.Tensor]] = [[], [], []]
    for concept in concepts:
        concept_ids = tokenizer(concept, add_special_tokens=False).input_ids
        prompts = [template.format(concept) for template in templates]
        ids = token_ids(tokenizer, prompts)
        hidden = encode(text_encoder, tokenizer, prompts).double()
        for row, prompt in enumerate(prompts):
            row_ids = ids[row].tolist()
            end = row_ids.index(tokenizer.eos_token_id, 1) if tokenizer.eos_token_id in row_ids[1:] else len(row_ids)
            concept_at = set(concept_positions(row_ids, concept_ids, prompt))
            words = [i for i in range(1, end) if i not in concept_at]
            groups[0].append(hidden[row, :1])
            groups[1].append(hidden[row, words])
            groups[2].append(hidden[row, end:])
    columns = [torch.cat(group).mean(0) for group in groups if sum(len(part) for part in group)]
    if len(columns) < 3:
        raise UnlearnError(
            "the templates leave no template words or no EOS/padding; use templates with words around '{}'."
        )
    return torch.stack(columns, dim=1)
