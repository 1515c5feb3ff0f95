"""Unlearning losses for causal LMs, as pure functions of logits, log-probs and hidden states.

Conventions (HuggingFace): `labels[b, t]` is the token predicted from position t-1; -100 marks tokens that
are not scored (padding, prompt). `mask[b, t]` is 1 on tokens that count (the attention mask).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(y_t | y_<t) for every shifted position [B, T-1], and the mask of scored positions [B, T-1]."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    scored = labels != -100
    logp = torch.log_softmax(logits, dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return logp * scored, scored


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log π(y|x) = Σ_t log p(y_t | y_<t, x) over the scored tokens of each sequence, shape [B]."""
    logp, _ = token_logprobs(logits, labels)
    return logp.sum(dim=1)


def nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood per scored token (the usual LM loss)."""
    logp, scored = token_logprobs(logits, labels)
    return -logp.sum() / scored.sum().clamp(min=1)


def ga_loss(forget_nll: torch.Tensor) -> torch.Tensor:
    """GA: L = −NLL(D_f) (gradient ascent on the forget data; unbounded below)."""
    return -forget_nll


def graddiff_loss(forget_nll: torch.Tensor, retain_nll: torch.Tensor, retain_weight: float = 1.0) -> torch.Tensor:
    """GradDiff: L = −NLL(D_f) + λ NLL(D_r)."""
    return -forget_nll + retain_weight * retain_nll


def npo_loss(logprob: torch.Tensor, reference_logprob: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """NPO: L = −(2/β) E log σ(−β (log π_θ(y|x) − log π_ref(y|x))), per-sequence log-probs [B]."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (logprob - reference_logprob)).mean()


def masked_mse(hidden: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked tokens and the d dimensions of (H − T)², as `F.mse_loss` on the kept tokens."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    squared = (hidden.float() - target.float()).pow(2) * weights
    return squared.sum() / (weights.sum() * hidden.shape[-1]).clamp(min=1)


def rmu_loss(
    forget_hidden: torch.Tensor,
    target: torch.Tensor,
    retain_hidden: torch.Tensor,
    retain_hidden_frozen: torch.Tensor,
    alpha: float,
    forget_mask: torch.Tensor,
    retain_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RMU: (mean ‖H_θ(x_f) − T‖², α mean ‖H_θ(x_r) − H_θ0(x_r)‖²); T = c·u (RMU) or c·V⊙I_norm (SRMU)."""
    forget = masked_mse(forget_hidden, target.expand_as(forget_hidden), forget_mask)
    retain = masked_mse(retain_hidden, retain_hidden_frozen, retain_mask)
    return forget, alpha * retain


def router_anchor_loss(router_probs: torch.Tensor, experts: list[int], mask: torch.Tensor) -> torch.Tensor:
    """UOE anchor: L = mean over forget tokens of ‖g(x) − a‖², a = one-hot on the target expert, probs [B, T, E].

    With several target experts in one layer (top-M > 1), a spreads its mass evenly over them.
    """
    anchor = torch.zeros(router_probs.shape[-1], device=router_probs.device)
    anchor[experts] = 1.0 / len(experts)
    squared = (router_probs.float() - anchor).pow(2).sum(-1) * mask
    return squared.sum() / mask.sum().clamp(min=1)
