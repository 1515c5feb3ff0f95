"""Evaluation of an unlearned causal LM: answer accuracy / log-prob, perplexity, loss MIA, MoE selection shift,
parameter fraction, relearning, and multiple-choice JSONL (WMDP/MMLU format) by choice log-likelihood.

Every function takes any `transformers` causal LM and tokenizer (the facts tokenizer or a real model's).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from unlearn.data.facts import Pair, answer_token_ids, collate, lm_loader
from unlearn.errors import UnlearnError
from unlearn.llm.moe import record_router
from unlearn.llm.train import finetune
from unlearn.runtime import module_device

MIA_DEFINITION = (
    "MIA AUC: ROC AUC of the score -loss (mean next-token NLL of a whole sentence) separating forget sentences "
    "(members, trained on) from held-out fact sentences (same renderings, never trained on); 0.5 = "
    "indistinguishable, 1 = every forget sentence has lower loss than every held-out one (< 0.5: the forget "
    "set now has the *higher* loss, which also leaks membership)."
)


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return 0 if pad is None else pad


def _logits(model, batch: dict, device: torch.device) -> torch.Tensor:
    return model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits


@torch.no_grad()
def _score_pairs(model, tokenizer, pairs: Sequence[Pair], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: whether every answer token is the argmax (teacher forcing), and sum log p(answer | prompt)."""
    if len(pairs) == 0:
        raise UnlearnError("no (prompt, answer) pairs to evaluate: the split is empty.")
    device = module_device(model)
    correct, logprob = [], []
    was_training = model.training
    model.eval()
    for start in range(0, len(pairs), batch_size):
        encoded = []
        for prompt, answer in pairs[start : start + batch_size]:
            prompt_ids, answer_ids = answer_token_ids(tokenizer, prompt, answer)
            encoded.append((prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids))
        batch = collate(encoded, _pad_id(tokenizer))
        logits = _logits(model, batch, device)
        labels = batch["labels"][:, 1:].to(device)
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        scored = labels != -100
        safe = labels.clamp_min(0)
        token_logp = logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
        hit = (logp.argmax(-1) == safe) | ~scored
        correct.append(hit.all(dim=1).cpu())
        logprob.append((token_logp * scored).sum(dim=1).cpu())
    model.train(was_training)
    return torch.cat(correct).numpy(), torch.cat(logprob).double().numpy()


def answer_accuracy(model, tokenizer, pairs: Sequence[Pair], batch_size: int = 64) -> float:
    """Share of (prompt, answer) pairs whose answer greedy decoding reproduces exactly (every answer token argmax)."""
    return float(_score_pairs(model, tokenizer, pairs, batch_size)[0].mean())


def answer_logprob(model, tokenizer, pairs: Sequence[Pair], batch_size: int = 64) -> float:
    """Mean over pairs of log p(answer | prompt) (natural log, summed over the answer's tokens)."""
    return float(_score_pairs(model, tokenizer, pairs, batch_size)[1].mean())


@torch.no_grad()
def sequence_losses(model, loader: Iterable[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Per sequence: summed next-token NLL over labelled tokens and the number of those tokens."""
    device = module_device(model)
    was_training = model.training
    model.eval()
    sums, counts = [], []
    for batch in loader:
        logits = _logits(model, batch, device)
        labels = batch["labels"][:, 1:].to(device)
        scored = labels != -100
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), labels.clamp_min(0), reduction="none"
        )
        sums.append((nll * scored).sum(dim=1).cpu())
        counts.append(scored.sum(dim=1).cpu())
    model.train(was_training)
    if not sums:
        raise UnlearnError("the loader gave no batches to evaluate.")
    return torch.cat(sums).double().numpy(), torch.cat(counts).numpy()


def perplexity(model, loader: Iterable[dict]) -> float:
    """exp(total NLL / total labelled tokens) over the loader (token-weighted, not a mean of per-text values)."""
    sums, counts = sequence_losses(model, loader)
    if counts.sum() == 0:
        raise UnlearnError("perplexity: the loader has no labelled tokens.")
    return float(np.exp(sums.sum() / counts.sum()))


def mia_auc(model, tokenizer, members: Sequence[str], nonmembers: Sequence[str]) -> float:
    """Loss-based membership inference: ROC AUC of -mean NLL, members (label 1) vs non-members (label 0)."""
    if len(members) == 0 or len(nonmembers) == 0:
        raise UnlearnError("mia_auc needs at least one member and one non-member text.")
    scores = []
    for texts in (members, nonmembers):
        sums, counts = sequence_losses(model, lm_loader(list(texts), tokenizer, batch_size=64))
        scores.append(-sums / np.maximum(counts, 1))
    labels = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    return float(roc_auc_score(labels, np.r_[scores[0], scores[1]]))


@torch.no_grad()
def routing(model, loader: Iterable[dict]) -> dict[int, torch.Tensor]:
    """Router probabilities [N, E] of every non-padding token, per MoE decoder-layer index (via moe.record_router)."""
    device = module_device(model)
    was_training = model.training
    model.eval()
    probs: dict[int, list[torch.Tensor]] = {}
    with record_router(model) as records:
        for batch in loader:
            mask = batch["attention_mask"].to(device).reshape(-1).bool()
            model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
            for key, values in records.items():
                if isinstance(key, int):
                    probs.setdefault(key, []).append(values[-1][mask].cpu())
            records.clear()
    model.train(was_training)
    return {layer: torch.cat(values) for layer, values in probs.items()}


def selection_shift(before, after, loader: Iterable[dict], target: tuple[int, int], top_k: int) -> dict:
    """How unlearning moved expert selection on the loader's tokens.

    target_share_{before,after}: share of tokens whose top-k experts at the target layer include the target
    expert; topk_overlap_target_layer / topk_overlap_all_layers: mean |top-k before ∩ top-k after| / k per token
    (1 = the same experts are chosen).
    """
    layer, expert = target
    routed_before, routed_after = routing(before, loader), routing(after, loader)
    if layer not in routed_before:
        raise UnlearnError(f"target layer {layer} is not an MoE layer; MoE layers: {sorted(routed_before)}.")
    num_experts = routed_before[layer].shape[1]
    if not 0 <= expert < num_experts or not 1 <= top_k <= num_experts:
        raise UnlearnError(f"target expert {expert} / top_k {top_k} out of range for {num_experts} experts.")

    def top(probs: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(probs.topk(top_k, dim=-1).indices, num_experts).sum(1).bool()

    overlaps = {
        index: (top(routed_before[index]) & top(routed_after[index])).sum(-1).double().mean().item() / top_k
        for index in routed_before
    }
    return {
        "target_share_before": top(routed_before[layer])[:, expert].double().mean().item(),
        "target_share_after": top(routed_after[layer])[:, expert].double().mean().item(),
        "topk_overlap_target_layer": overlaps[layer],
        "topk_overlap_all_layers": float(np.mean(list(overlaps.values()))),
    }


def params_changed(before: torch.nn.Module, after: torch.nn.Module) -> dict:
    """Elements of the parameters that differ between two models of the same architecture (count and fraction)."""
    old, new = dict(before.named_parameters()), dict(after.named_parameters())
    if old.keys() != new.keys() or any(old[k].shape != new[k].shape for k in old):
        raise UnlearnError("params_changed needs two models with the same parameter names and shapes.")
    changed = sum(int((old[k].detach().cpu() != new[k].detach().cpu()).sum()) for k in old)
    total = sum(p.numel() for p in old.values())
    return {"changed": changed, "total": total, "fraction": changed / total}


def relearn(
    model,
    tokenizer,
    facts_texts: Sequence[Sequence[str]],
    facts_pairs: Sequence[Sequence[Pair]],
    steps: int = 20,
    lr: float = 1e-3,
    batch_size: int = 16,
    seed: int = 0,
) -> dict:
    """Relearning attack: finetune a copy on the sentences of half of the forget facts (even indices), measure
    answer accuracy on the other half (odd indices) before and after. Returns the two accuracies."""
    if len(facts_texts) != len(facts_pairs) or len(facts_texts) < 2:
        raise UnlearnError("relearn needs the sentences and pairs of at least two forget facts, one list per fact.")
    train = [text for texts in facts_texts[0::2] for text in texts]
    held = [pair for pairs in facts_pairs[1::2] for pair in pairs]
    before = answer_accuracy(model, tokenizer, held)
    attacked = copy.deepcopy(model)
    for param in attacked.parameters():
        param.requires_grad_(True)
    torch.manual_seed(seed)
    finetune(attacked, lm_loader(train, tokenizer, batch_size, shuffle=True, seed=seed), steps, lr)
    return {
        "heldout_half_before": before,
        "heldout_half_after": answer_accuracy(attacked, tokenizer, held),
        "steps": steps,
        "lr": lr,
        "train_facts": len(facts_texts[0::2]),
        "eval_facts": len(facts_texts[1::2]),
    }


def read_mcq(path: str | Path) -> list[dict]:
    """WMDP/MMLU-style JSONL: one {"question": str, "choices": [str, ...], "answer": int} object per line."""
    path = Path(path)
    if not path.is_file():
        raise UnlearnError(f"MCQ file {path} does not exist.")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise UnlearnError(f"{path}:{number} is not valid JSON: {error}") from error
        ok = (
            isinstance(item, dict)
            and isinstance(item.get("question"), str)
            and isinstance(item.get("choices"), list)
            and len(item["choices"]) >= 2
            and all(isinstance(c, str) for c in item["choices"])
            and isinstance(item.get("answer"), int)
            and 0 <= item["answer"] < len(item["choices"])
        )
        if not ok:
            raise UnlearnError(
                f'{path}:{number} must be {{"question": str, "choices": [>= 2 str], "answer": int index}}, got {line!r}'
            )
        items.append(item)
    if not items:
        raise UnlearnError(f"MCQ file {path} has no questions.")
    return items


def mcq_accuracy(model, tokenizer, path: str | Path, batch_size: int = 64) -> dict:
    """Multiple choice by log-likelihood: prompt "Question: {question}\\nAnswer:", pick the choice with the highest
    sum log p(" " + choice | prompt) (unnormalised, as lm-eval-harness `acc`). Returns accuracy and count."""
    items = read_mcq(path)
    pairs = [(f"Question: {item['question']}\nAnswer:", choice) for item in items for choice in item["choices"]]
    logprob = _score_pairs(model, tokenizer, pairs, batch_size)[1]
    correct, offset = 0, 0
    for item in items:
        scores = logprob[offset : offset + len(item["choices"])]
        correct += int(np.argmax(scores) == item["answer"])
        offset += len(item["choices"])
    return {"accuracy": correct / len(items), "questions": len(items)}
