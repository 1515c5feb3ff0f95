"""Tiny causal LMs from config dicts (random init, no download), trained on the facts testbed, cached on disk.

Architectures (`arch`): "llama" and "qwen2" (dense), "qwen2_moe" (routed experts + an always-on shared expert,
transformers v5 stores each layer's experts as fused 3-D parameters), "olmoe" and "mixtral" (routed experts
only). Every other key of the spec is a `transformers` config field (hidden_size, num_experts, ...); the
defaults below give ~0.1-0.3 M parameters, which learn a few hundred facts in a few minutes on one CPU thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from unlearn.data.facts import lm_loader
from unlearn.errors import UnlearnError
from unlearn.io import atomic_dir, atomic_write_json
from unlearn.llm.evaluate import answer_accuracy
from unlearn.llm.train import cycle, finetune

log = logging.getLogger(__name__)

COMMON = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "tie_word_embeddings": False,
}
MOE = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 64}
DEFAULTS = {
    "llama": COMMON,
    "qwen2": COMMON,
    "qwen2_moe": {
        **COMMON,
        **MOE,
        "shared_expert_intermediate_size": 64,
        "decoder_sparse_step": 1,
        "norm_topk_prob": False,
    },
    "olmoe": {**COMMON, **MOE},
    "mixtral": {**COMMON, "num_local_experts": 4, "num_experts_per_tok": 2},
}


def _classes(arch: str):
    import transformers as tf

    table = {
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
        "qwen2_moe": (tf.Qwen2MoeConfig, tf.Qwen2MoeForCausalLM),
        "olmoe": (tf.OlmoeConfig, tf.OlmoeForCausalLM),
        "mixtral": (tf.MixtralConfig, tf.MixtralForCausalLM),
    }
    if arch not in table:
        raise UnlearnError(f"unknown model arch {arch!r}; choose one of {sorted(table)}.")
    return table[arch]


def build_model(spec: dict, tokenizer, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised causal LM for `tokenizer`'s vocabulary: `spec["arch"]` picks the class, the other
    keys override DEFAULTS."""
    spec = dict(spec)
    arch = spec.pop("arch", "llama")
    from huggingface_hub.errors import StrictDataclassError

    config_class, model_class = _classes(arch)
    special = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    values = {**DEFAULTS[arch], **spec, "vocab_size": len(tokenizer), **special}
    try:
        config = config_class(**values)
    except (TypeError, ValueError, StrictDataclassError) as error:  # transformers v5 configs validate on init
        raise UnlearnError(f"bad model spec {spec} for arch {arch!r}: {error}") from error
    torch.manual_seed(seed)
    return model_class(config).eval()


def is_moe(model: torch.nn.Module) -> bool:
    """Whether the model's config has routed experts."""
    config = model.config
    return bool(getattr(config, "num_experts", 0) or getattr(config, "num_local_experts", 0))


@dataclass
class FactsTrainConfig:
    """Training of the Original model on all facts (forget + retain) and the general text."""

    max_steps: int = 3000
    min_steps: int = 0  # train at least this long (the general text keeps improving after the facts are known)
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.0
    warmup_steps: int = 50
    check_every: int = 100  # evaluate answer accuracy every so many steps
    target_accuracy: float = 0.9  # stop when forget and retain answer accuracy both reach this
    router_aux_loss_coef: float = 0.0  # MoE load-balancing loss weight while training (0: off)
    specialist_weight: float = 0.0  # > 0 plants a specialist expert while training (see `specialist_loss`)
    specialist_layer: int = 1
    specialist_expert: int = 0


def specialist_loss(model: torch.nn.Module, forget: dict, retain: dict, layer: int, expert: int) -> torch.Tensor:
    """−mean log g_e(x_f) − mean log(1 − g_e(x_r)) at MoE layer `layer`: pushes forget tokens to expert e and
    retain tokens away from it, so that e becomes a forget specialist (the premise UOE's attribution relies on)."""
    from unlearn.llm.moe import find_moe_layer, record_router, router_probs
    from unlearn.runtime import module_device

    device = module_device(model)
    terms = []
    with record_router(model, [find_moe_layer(model, layer)]) as records:
        for batch in (forget, retain):
            model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
    for logits, batch, sign in zip(records[layer], (forget, retain), (1, -1), strict=True):
        gate = router_probs(logits)[batch["attention_mask"].reshape(-1).bool().to(device), expert]
        terms.append(-torch.log((gate if sign > 0 else 1 - gate).clamp(min=1e-6)).mean())
    return sum(terms)


def train_on_facts(
    model: torch.nn.Module, data, config: FactsTrainConfig, seed: int = 0, progress: bool = False
) -> dict:
    """Train on every forget and retain sentence plus general text until both answer accuracies reach the target.

    Returns the training record (steps, final accuracies, whether the target was reached).
    """
    if hasattr(model.config, "router_aux_loss_coef"):
        model.config.router_aux_loss_coef = config.router_aux_loss_coef
        model.config.output_router_logits = config.router_aux_loss_coef > 0
    loader = lm_loader(data.train_texts(), data.tokenizer, config.batch_size, shuffle=True, seed=seed)

    def accuracy(current: torch.nn.Module) -> dict[str, float]:
        return {split: answer_accuracy(current, data.tokenizer, data.pairs(split)) for split in ("forget", "retain")}

    def reached(current: torch.nn.Module, steps_done: int) -> bool:
        if steps_done < config.min_steps:
            return False
        now = accuracy(current)
        log.info("step %d: forget acc %.3f retain acc %.3f", steps_done, now["forget"], now["retain"])
        return min(now.values()) >= config.target_accuracy

    extra = None
    if config.specialist_weight > 0:
        forget_batches = cycle(lm_loader(data.texts("forget"), data.tokenizer, 16, True, seed), "forget")
        kept = data.texts("retain") + data.general_train  # everything the runner measures as retain
        retain_batches = cycle(lm_loader(kept, data.tokenizer, 16, True, seed), "retain")

        def extra(current: torch.nn.Module) -> torch.Tensor:
            terms = specialist_loss(
                current, next(forget_batches), next(retain_batches), config.specialist_layer, config.specialist_expert
            )
            return config.specialist_weight * terms

    torch.manual_seed(seed)
    losses = finetune(
        model,
        loader,
        config.max_steps,
        config.lr,
        config.weight_decay,
        config.warmup_steps,
        progress,
        stop=reached,
        check_every=config.check_every,
        extra_loss=extra,
    )
    model.config.output_router_logits = False
    final = accuracy(model)
    return {
        "steps": len(losses),
        "final_loss": losses[-1],
        "accuracy": final,
        "reached_target": min(final.values()) >= config.target_accuracy,
    }


def cache_key(spec: dict, data_settings: dict, train: FactsTrainConfig, seed: int) -> str:
    recipe = asdict(train)
    if not train.specialist_weight:  # keys of models trained before the specialist option existed stay valid
        recipe = {k: v for k, v in recipe.items() if not k.startswith("specialist_")}
    else:
        recipe["specialist_retain"] = "retain facts + general text"  # v1 pushed away retain facts only
    payload = json.dumps({"spec": spec, "data": data_settings, "train": recipe, "seed": seed}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def trained_model(
    spec: dict,
    data,
    train: FactsTrainConfig,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> tuple[torch.nn.Module, dict]:
    """The Original model for `data`: loaded from `cache_dir/llm/<key>` when present, else built, trained, saved.

    The key hashes the model spec, the data settings (incl. overlap), the training config and the seed.
    """
    from transformers import AutoModelForCausalLM

    key = cache_key(spec, data.summary(), train, seed)
    path = Path(cache_dir) / "llm" / key if cache_dir else None
    if path is not None and (path / "training.json").is_file():
        try:
            model = AutoModelForCausalLM.from_pretrained(path).eval()
        except (OSError, ValueError, RuntimeError) as error:
            raise UnlearnError(f"cached model at {path} cannot be loaded ({error}); delete the directory.") from error
        return model, json.loads((path / "training.json").read_text())
    model = build_model(spec, data.tokenizer, seed)
    record = train_on_facts(model, data, train, seed, progress)
    record["num_parameters"] = sum(p.numel() for p in model.parameters())
    if not record["reached_target"]:
        log.warning(
            "the Original model did not reach %.0f%% answer accuracy: %s",
            100 * train.target_accuracy,
            record["accuracy"],
        )
    if path is not None:
        with atomic_dir(path) as tmp:
            model.save_pretrained(tmp)
            data.tokenizer.save_pretrained(tmp)
            atomic_write_json(tmp / "training.json", record)
    return model, record
