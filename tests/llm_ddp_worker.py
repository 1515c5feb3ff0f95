"""Worker of tests/test_llm_distributed.py: unlearn tiny models under `torchrun` and save rank 0's weights.

torchrun --standalone --nproc_per_node 2 tests/llm_ddp_worker.py OUT.pt   (gloo on CPU)
Data parallel (the default) and FSDP (`fsdp=True`) runs both go through it.
"""

from __future__ import annotations

import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM

from unlearn import distributed
from unlearn.llm import build_lm_method
from unlearn.llm.base import sharded_copy

SIZES = {"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 32, "pad_token_id": 2}  # fmt: skip


def batches(seed: int, count: int = 2) -> list[dict[str, torch.Tensor]]:
    """Equal-length, unpadded batches of 4 rows: each of 2 ranks gets 2 rows with the same token count."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        ids = torch.randint(3, 64, (4, 10), generator=generator)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    return out


def unlearn_all() -> dict[str, torch.Tensor]:
    """GradDiff on a tiny Llama and UOE+NPO on a tiny Qwen2-MoE, 3 steps each, then GradDiff and NPO with the
    trainable copy sharded (fsdp=True; in one process it is not sharded); all resulting weights."""
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(intermediate_size=64, **SIZES)).eval()
    moe = Qwen2MoeForCausalLM(
        Qwen2MoeConfig(intermediate_size=64, moe_intermediate_size=32, shared_expert_intermediate_size=32,
                       num_experts=4, num_experts_per_tok=2, **SIZES)
    ).eval()  # fmt: skip
    forget, retain = batches(1), batches(2)
    weights = {}
    graddiff = build_lm_method("GradDiff", steps=3, lr=1e-3)
    for name, value in graddiff.unlearn(llama, forget, retain).state_dict().items():
        weights[f"graddiff.{name}"] = value
    uoe = build_lm_method("UOE", inner="NPO", inner_params={"steps": 3, "lr": 1e-3, "retain_weight": 1.0})
    for name, value in uoe.unlearn(moe, forget, retain).state_dict().items():
        weights[f"uoe.{name}"] = value
    for method in ("GradDiff", "NPO"):
        sharded = build_lm_method(method, steps=3, lr=1e-3, fsdp=True, retain_weight=1.0)
        for name, value in sharded.unlearn(llama, forget, retain).state_dict().items():
            weights[f"fsdp.{method}.{name}"] = value
    return weights


def shard_fraction() -> float:
    """Share of a tiny Llama's parameter entries this rank holds once `sharded_copy` has sharded it."""
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(intermediate_size=64, **SIZES))
    local = sum(p.to_local().numel() for p in sharded_copy(llama).parameters())
    return local / sum(p.numel() for p in llama.parameters())


if __name__ == "__main__":
    torch.set_num_threads(1)
    distributed.init_from_env(torch.device("cpu"))
    result = unlearn_all()
    fraction = shard_fraction()
    if distributed.rank() == 0:
        torch.save({"world_size": distributed.world_size(), "weights": result, "shard": fraction}, sys.argv[1])
    distributed.shutdown()
