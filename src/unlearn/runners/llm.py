"""`unlearn llm CONFIG.yaml`: data + Original model -> every configured LM method -> evaluation -> report.

Two data modes. `data.kind: facts` (default) generates the fictitious-facts testbed (`make_facts` arguments
under `data`) and trains (or loads from the cache) a tiny model from `model` (see `llm.models`).
`data.kind: files` unlearns a real local checkpoint (`model.checkpoint`: a transformers directory with its
tokenizer; `model.dtype`, `model.device_map`, `model.gradient_checkpointing`) on local corpora
(`data.forget_file`, `data.retain_file`: .txt, .jsonl or .json, see `data.lm_files`; `data.min_chars` drops
short documents; optional `data.general_file` for perplexity and `data.heldout_file` as MIA non-members);
answer metrics need `data.forget_qa` / `data.retain_qa` (TOFU-style Q/A), and MCQ files (`eval.mcq`,
WMDP/MMLU JSONL or parquet) give lm-eval-harness-style multiple-choice accuracies. A metric whose data is
absent is skipped and the report says so. `model.checkpoint` without `data.kind: files` is an error.

Under `torchrun`, every rank trains its share of each batch (gradients averaged, `llm.train`), and rank 0
evaluates and writes the report.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unlearn import distributed
from unlearn.config import MethodConfig, _build, read_yaml
from unlearn.errors import UnlearnError, check_params
from unlearn.llm import evaluate as ev
from unlearn.llm.models import FactsTrainConfig, is_moe, trained_model
from unlearn.runtime import resolve_device, seed_everything
from unlearn.validate import check_args, check_device, check_output_dir

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LOAD_OPTIONS = ("checkpoint", "dtype", "device_map", "gradient_checkpointing")


@dataclass
class LLMEvalConfig:
    relearn_steps: int = 20  # relearning attack: finetuning steps on half the forget facts (0: skip)
    relearn_lr: float = 1e-3
    mia: bool = True
    selection_shift: bool = True  # MoE only
    mcq: dict[str, Any] = field(default_factory=dict)  # name -> path, or {path, subject, style}
    mcq_style: str = "letters"  # lm-eval-harness's lettered zero-shot prompt, or "cloze"
    projection_attack: bool = True  # RMU/SRMU rows: "RMU is shallow", project out the misdirection direction
    quantisation: list[int] = field(default_factory=lambda: [8, 4])  # fake-quantised re-evaluation ([]: skip)
    max_tokens: int = 100_000  # token budget of perplexity, each side of the MIA, and the selection shift
    batch_size: int = 64
    plots: bool = True

    def __post_init__(self) -> None:
        if self.mcq_style not in ("letters", "cloze") or self.max_tokens < 1:
            raise UnlearnError(f"eval.mcq_style must be 'letters' or 'cloze' and max_tokens >= 1: {self}")
        if any(not isinstance(bits, int) or not 2 <= bits <= 16 for bits in self.quantisation):
            raise UnlearnError(f"eval.quantisation lists bit widths in 2..16, got {self.quantisation}.")


@dataclass
class LLMConfig:
    name: str = "llm"
    output_dir: str = "runs/llm"
    cache_dir: str | None = ".cache/unlearn"
    device: str = "auto"
    seed: int = 0
    data: dict[str, Any] = field(default_factory=dict)  # kind: facts (make_facts args) | files
    model: dict[str, Any] = field(default_factory=lambda: {"arch": "llama"})  # spec, or {checkpoint: DIR, ...}
    train: FactsTrainConfig = field(default_factory=FactsTrainConfig)
    forget_format: str = "texts"  # what the methods' forget loader holds: "texts" (whole sentences) or "pairs"
    batch_size: int = 16  # of the forget / retain loaders given to the methods (the global batch under torchrun)
    max_length: int = 512  # tokens per sequence (longer documents are cut), as the official RMU code
    methods: list[MethodConfig] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)  # run every method at each lr (a trade-off curve); [] = as given
    eval: LLMEvalConfig = field(default_factory=LLMEvalConfig)

    def __post_init__(self) -> None:
        if self.forget_format not in ("texts", "pairs"):
            raise UnlearnError(f"forget_format must be 'texts' or 'pairs', got {self.forget_format!r}.")
        if not self.methods:
            raise UnlearnError("methods is empty: list at least one LM method, e.g. - {name: GA}.")
        if self.max_length < 2 or self.batch_size < 1:
            raise UnlearnError(
                f"max_length must be >= 2 and batch_size >= 1, got {self.max_length}, {self.batch_size}."
            )
        kind = self.data.get("kind", "facts")
        if kind not in ("facts", "files"):
            raise UnlearnError(f"data.kind must be 'facts' or 'files', got {kind!r}.")
        if kind == "files":
            if "checkpoint" not in self.model:
                raise UnlearnError(
                    "data.kind 'files' unlearns a local checkpoint: set model.checkpoint to its directory."
                )
            unknown = sorted(set(self.model) - set(LOAD_OPTIONS))
            if unknown:
                raise UnlearnError(f"unknown model option(s) {unknown} for a checkpoint; valid: {list(LOAD_OPTIONS)}.")
            dtype = self.model.get("dtype", "auto")
            if dtype != "auto" and dtype not in DTYPES:
                raise UnlearnError(f"model.dtype must be 'auto' or one of {sorted(DTYPES)}, got {dtype!r}.")
        elif "checkpoint" in self.model:
            raise UnlearnError(
                "model.checkpoint is set but data.kind is 'facts', which trains a tiny model from scratch and would "
                "ignore the checkpoint: set data.kind: files with forget_file/retain_file to unlearn the checkpoint."
            )


def llm_config(values: dict) -> LLMConfig:
    """Validated config from a mapping: the strict builder of `unlearn.config` (unknown keys, types, ranges),
    then every method is built once, so a bad name or parameter fails before the Original model trains."""
    from unlearn.data.facts import make_facts
    from unlearn.llm import build_lm_method

    config = _build(LLMConfig, values, "")
    if config.data.get("kind", "facts") == "facts":
        data_args = {key: value for key, value in config.data.items() if key != "kind"}
        check_params(make_facts, data_args, "data (kind facts)")
        check_args(make_facts, data_args, "data")
    for index, method in enumerate(config.methods):
        try:
            build_lm_method(method.name, **method.params)
        except UnlearnError as error:
            raise UnlearnError(f"methods[{index}] ({method.row}): {error}") from error
    check_output_dir(config.output_dir)
    check_device(config.device)
    return config


def load_llm_config(path: str | Path, overrides: dict | None = None) -> LLMConfig:
    """Read and validate an `unlearn llm` YAML config; `data.KEY` overrides set a key of the data section."""
    values = read_yaml(path)
    for key, value in (overrides or {}).items():
        if key.startswith("data."):
            values.setdefault("data", {})[key[5:]] = value
        else:
            values[key] = value
    return llm_config(values)


@dataclass
class Setting:
    """Everything the methods and the evaluation need, whichever data mode built it."""

    model: torch.nn.Module
    tokenizer: Any
    forget_items: list
    retain_items: list
    forget_pairs: list = field(default_factory=list)
    retain_pairs: list = field(default_factory=list)
    general_test: list = field(default_factory=list)
    heldout_texts: list = field(default_factory=list)
    forget_texts: list = field(default_factory=list)  # MIA members
    forget_facts: list = field(default_factory=list)  # Fact objects, for the relearning split
    forget_qa_items: list = field(default_factory=list)  # QAItems with paraphrased / perturbed answers (files)
    info: dict = field(default_factory=dict)


def load_checkpoint(options: dict, device: torch.device):
    """(model, tokenizer) from a local transformers directory with the load options of the config's `model`.

    dtype "auto": bfloat16 on an accelerator, float32 on CPU. `device_map` (e.g. "auto") is handed to
    transformers (the model is then not moved); `gradient_checkpointing: true` enables it (used while training).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = Path(options["checkpoint"])
    if not directory.is_dir():
        raise UnlearnError(f"model.checkpoint {directory} is not a directory with a transformers checkpoint.")
    dtype = options.get("dtype", "auto")
    dtype = (torch.bfloat16 if device.type != "cpu" else torch.float32) if dtype == "auto" else DTYPES[dtype]
    kwargs: dict[str, Any] = {"dtype": dtype}
    if options.get("device_map") is not None:
        kwargs["device_map"] = options["device_map"]
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = AutoModelForCausalLM.from_pretrained(directory, **kwargs).eval()
    except (OSError, ValueError) as error:
        raise UnlearnError(f"cannot load a causal LM and tokenizer from {directory}: {error}") from error
    if options.get("gradient_checkpointing"):
        model.activation_checkpointing_enable({"use_reentrant": False})
    if "device_map" not in kwargs:
        model = model.to(device)
    return model, tokenizer


def build_setting(config: LLMConfig, device: torch.device, progress: bool = True) -> Setting:
    """The Original model (on `device`) and the data of the config (facts testbed or local files)."""
    data_args = {k: v for k, v in config.data.items() if k != "kind"}
    if config.data.get("kind", "facts") == "files":
        check_params(_files_args, data_args, "data (kind files)")
        files = _files_args(**data_args)
        if config.forget_format == "pairs" and not files["forget_qa"]:
            raise UnlearnError("forget_format 'pairs' unlearns the forget Q/A: set data.forget_qa.")
        if config.forget_format == "texts" and not files["forget"]:
            raise UnlearnError("data.forget_file is missing: give a forget corpus (or forget_format: pairs).")
        model, tokenizer = load_checkpoint(config.model, device)
        forget_pairs = [item.pair for item in files["forget_qa"]]
        return Setting(
            model=model,
            tokenizer=tokenizer,
            forget_items=files["forget"] if config.forget_format == "texts" else forget_pairs,
            retain_items=files["retain"],
            forget_pairs=forget_pairs,
            retain_pairs=[item.pair for item in files["retain_qa"]],
            general_test=files["general"],
            heldout_texts=files["heldout"],
            forget_texts=files["forget"] or [f"{prompt} {answer}" for prompt, answer in forget_pairs],
            forget_qa_items=files["forget_qa"],
            info={
                "checkpoint": str(config.model["checkpoint"]),
                "dtype": str(next(model.parameters()).dtype),
                "forget_texts": len(files["forget"]),
                "retain_texts": len(files["retain"]),
            },
        )
    from unlearn.data.facts import make_facts

    check_params(make_facts, data_args, "data (kind facts)")
    data = make_facts(**data_args)
    with distributed.main_first():  # rank 0 trains and caches the Original, the others read it
        model, record = trained_model(config.model, data, config.train, config.seed, config.cache_dir, progress)
    if config.model.get("gradient_checkpointing"):
        model.activation_checkpointing_enable({"use_reentrant": False})
    forget_items = data.texts("forget") if config.forget_format == "texts" else data.pairs("forget")
    return Setting(
        model=model.to(device),
        tokenizer=data.tokenizer,
        forget_items=forget_items,
        retain_items=data.texts("retain") + data.general_train,
        forget_pairs=data.pairs("forget"),
        retain_pairs=data.pairs("retain"),
        general_test=data.general_test,
        heldout_texts=data.texts("heldout"),
        forget_texts=data.texts("forget"),
        forget_facts=data.forget,
        info={"data": data.summary(), "training": record},
    )


def _files_args(
    forget_file: str | None = None,
    retain_file: str | None = None,
    forget_qa: str | None = None,
    retain_qa: str | None = None,
    heldout_file: str | None = None,
    general_file: str | None = None,
    min_chars: int = 0,
    qa_prompt: str = "{question}",
) -> dict:
    from unlearn.data.lm_files import read_corpus, read_qa

    return {
        "forget": read_corpus(forget_file, min_chars) if forget_file else [],
        "retain": read_corpus(retain_file, min_chars) if retain_file else [],
        "forget_qa": read_qa(forget_qa, qa_prompt) if forget_qa else [],
        "retain_qa": read_qa(retain_qa, qa_prompt) if retain_qa else [],
        "heldout": read_corpus(heldout_file) if heldout_file else [],
        "general": read_corpus(general_file) if general_file else [],
    }


def skipped(setting: Setting, config: LLMConfig, is_moe_model: bool) -> list[str]:
    """What the report cannot show for this setting, and why (absent splits are skipped, never a crash)."""
    notes = []
    if not setting.forget_pairs:
        notes.append("forget answer accuracy / log p: no forget Q/A given (data.forget_qa).")
    if not setting.retain_pairs:
        notes.append("retain answer accuracy / log p: no retain Q/A given (data.retain_qa).")
    if not setting.general_test:
        notes.append("general perplexity: no general text given (data.general_file).")
    if config.eval.mia and not setting.heldout_texts:
        notes.append("MIA: no non-member texts given (data.heldout_file).")
    if config.eval.relearn_steps and len(setting.forget_facts) < 2:
        notes.append("relearning attack: needs the facts testbed (at least two forget facts).")
    if config.eval.projection_attack and not setting.forget_pairs:
        notes.append("projection attack: no forget Q/A to score it on.")
    if config.eval.quantisation and not (setting.forget_pairs or config.eval.mcq):
        notes.append("quantisation attack: no forget Q/A or MCQ file to score it on.")
    if not setting.retain_items:
        notes.append("no retain corpus (data.retain_file): methods that need one (GradDiff, RMU, SRMU) will stop.")
    if not is_moe_model and config.eval.selection_shift:
        notes.append("expert selection shift: the model is dense.")
    return notes


def _mcq_specs(config: LLMConfig) -> dict[str, dict]:
    """eval.mcq entries as {name: {"items", "subject", "style"}} (files read once)."""
    from unlearn.data.lm_files import read_mcq

    specs = {}
    for name, entry in config.eval.mcq.items():
        entry = {"path": entry} if isinstance(entry, str) else dict(entry)
        unknown = sorted(set(entry) - {"path", "subject", "style"})
        if "path" not in entry or unknown:
            raise UnlearnError(f"eval.mcq.{name} must be a path or {{path, subject, style}}, got {entry}.")
        style = entry.get("style", config.eval.mcq_style)
        specs[name] = {"items": read_mcq(entry["path"]), "subject": entry.get("subject"), "style": style}
    return specs


def attack_scores(model, setting: Setting, config: LLMConfig, mcq: dict) -> dict:
    """The scores an attack is judged on: forget / retain answer accuracy and MCQ acc, where the data exists."""
    tok, size, length = setting.tokenizer, config.eval.batch_size, config.max_length
    out = {}
    if setting.forget_pairs:
        out["forget_acc"] = ev.answer_accuracy(model, tok, setting.forget_pairs, size, length)
    if setting.retain_pairs:
        out["retain_acc"] = ev.answer_accuracy(model, tok, setting.retain_pairs, size, length)
    for name, spec in mcq.items():
        out[f"mcq_{name}"] = ev.mcq_accuracy(model, tok, spec["items"], size, spec["style"], spec["subject"], length)
    return out


def evaluate_model(model, original, setting: Setting, config: LLMConfig, routing: dict | None, mcq: dict) -> dict:
    """Every metric the setting allows, for one (unlearned or original) model; `routing`: the Original's
    reference routing (MoE) with its target expert, computed once per run."""
    from unlearn.data.facts import lm_loader
    from unlearn.llm.quantise import quantised

    tok, size, length, budget = setting.tokenizer, config.eval.batch_size, config.max_length, config.eval.max_tokens
    out: dict[str, Any] = {}
    for split, pairs in (("forget", setting.forget_pairs), ("retain", setting.retain_pairs)):
        if pairs:
            out[f"{split}_acc"] = ev.answer_accuracy(model, tok, pairs, size, length)
            out[f"{split}_logprob"] = ev.answer_logprob(model, tok, pairs, size, length)
    paraphrased = [(item.prompt, item.paraphrased) for item in setting.forget_qa_items if item.paraphrased]
    if paraphrased:
        out["forget_paraphrased_acc"] = ev.answer_accuracy(model, tok, paraphrased, size, length)
    if any(item.perturbed for item in setting.forget_qa_items):
        out["forget_truth_preference"] = ev.truth_preference(model, tok, setting.forget_qa_items, size, length)
    if setting.general_test:
        out["ppl"] = ev.perplexity(model, lm_loader(setting.general_test, tok, size, max_length=length), budget)
    if config.eval.mia and setting.heldout_texts:
        out["mia_auc"] = ev.mia_auc(model, tok, setting.forget_texts, setting.heldout_texts, budget, length)
    out["params"] = ev.params_changed(original, model)
    if routing is not None:
        for split in ("forget", "retain"):
            reference = routing[split]
            out[f"shift_{split}"] = ev.selection_shift(reference, model, reference["loader"], routing["target"])
    for name, spec in mcq.items():
        out[f"mcq_{name}"] = ev.mcq_accuracy(model, tok, spec["items"], size, spec["style"], spec["subject"], length)
    for bits in config.eval.quantisation:
        if setting.forget_pairs or mcq:
            with quantised(model, bits):
                out.setdefault("quantised", {})[str(bits)] = attack_scores(model, setting, config, mcq)
    if config.eval.relearn_steps and len(setting.forget_facts) >= 2:
        facts = setting.forget_facts
        out["relearn"] = ev.relearn(
            model,
            tok,
            [f.texts() for f in facts],
            [f.pairs() for f in facts],
            config.eval.relearn_steps,
            config.eval.relearn_lr,
            seed=config.seed,
        )
    return out


def projection_attack(model, original, report: dict, setting: Setting, config: LLMConfig, mcq: dict) -> dict:
    """Forget / retain answer accuracy (and MCQ acc) while the mean misdirection direction is projected out of the
    layer RMU/SRMU misdirected (`rmu.project_out_misdirection`, a hook on `model`: no copy)."""
    from unlearn.data.facts import lm_loader
    from unlearn.llm.rmu import project_out_misdirection

    forget = lm_loader(setting.forget_items, setting.tokenizer, config.eval.batch_size, max_length=config.max_length)
    with project_out_misdirection(model, report["layer"], forget, reference=original):
        return attack_scores(model, setting, config, mcq)


def expand_lrs(methods: list[MethodConfig], lrs: list[float]) -> list[MethodConfig]:
    """Each method once per lr, labelled "<row> lr=<lr>"; the lr goes to `inner_params` for UOE, else `params`."""
    if not lrs:
        return list(methods)
    expanded = []
    for entry in methods:
        for lr in lrs:
            params = copy.deepcopy(entry.params)
            slot = params.setdefault("inner_params", {}) if entry.name == "UOE" else params
            slot["lr"] = lr
            expanded.append(MethodConfig(entry.name, f"{entry.row} lr={lr:g}", params))
    return expanded


def original_routing(original, setting: Setting, config: LLMConfig) -> dict | None:
    """For an MoE Original: the expert UOE's attribution picks (reference for every method's selection shift)
    and the Original's top-k routing on the forget and retain texts, within the token budget. None when dense."""
    if not is_moe(original) or not config.eval.selection_shift:
        return None
    from unlearn.data.facts import lm_loader
    from unlearn.llm.moe import expert_attribution

    tok, length = setting.tokenizer, config.max_length
    loader = lm_loader(setting.forget_items, tok, config.batch_size, max_length=length)
    layer, expert = expert_attribution(original, loader, config.eval.max_tokens).top(1)[0]
    top_k = getattr(original.config, "num_experts_per_tok", 2)
    routing: dict[str, Any] = {"target": (int(layer), int(expert))}
    for split, items in (("forget", setting.forget_items), ("retain", setting.retain_items)):
        if not items:
            continue
        texts = [i if isinstance(i, str) else f"{i[0]} {i[1]}" for i in items]
        split_loader = lm_loader(texts, tok, config.eval.batch_size, max_length=length)
        routing[split] = ev.reference_routing(original, split_loader, top_k, config.eval.max_tokens)
        routing[split]["loader"] = split_loader
    return routing


def run_llm_experiment(config: LLMConfig, progress: bool = True) -> dict:
    """Run the config end to end; write metrics.json, report.md and plots to `config.output_dir` (rank 0)."""
    from unlearn.data.facts import lm_loader
    from unlearn.llm import build_lm_method
    from unlearn.report.llm import write_llm_report

    device = resolve_device(config.device)
    joined = distributed.init_from_env(device)
    device = distributed.local_device(device)
    main_rank = distributed.rank() == 0
    seed_everything(config.seed)
    setting = build_setting(config, device, progress and main_rank)
    original = setting.model
    routing = original_routing(original, setting, config) if main_rank else None
    mcq = _mcq_specs(config)
    forget_loader = lm_loader(
        setting.forget_items, setting.tokenizer, config.batch_size, True, config.seed, config.max_length
    )
    retain_loader = (
        lm_loader(setting.retain_items, setting.tokenizer, config.batch_size, True, config.seed + 1, config.max_length)
        if setting.retain_items
        else None
    )
    metrics: dict[str, Any] = {
        "name": config.name,
        "config": dataclasses.asdict(config),
        "device": str(device),
        "world_size": distributed.world_size(),
        "rank": distributed.rank(),
        "model": config.model,
        "num_parameters": sum(p.numel() for p in original.parameters()),
        "moe": is_moe(original),
        "target_expert": routing["target"] if routing else None,
        "mia_definition": ev.MIA_DEFINITION,
        "notes": skipped(setting, config, is_moe(original)),
        **setting.info,
        "methods": {},
        "failed": {},
    }
    if main_rank:
        log.info("evaluating Original")
        metrics["methods"]["Original"] = {"eval": evaluate_model(original, original, setting, config, routing, mcq)}
    for entry in expand_lrs(config.methods, config.lrs):
        params = {"seed": config.seed, **entry.params}
        if progress and main_rank:
            params.setdefault("progress", True)
        log.info("running %s", entry.row)
        method = build_lm_method(entry.name, **params)
        start = time.perf_counter()
        try:
            unlearned = method.unlearn(original, forget_loader, retain_loader)
        except UnlearnError as error:  # e.g. an all-zero SRMU map, a fact about the data found only at run time:
            log.error("%s failed: %s", entry.row, error)  # the other rows still run, and the report names this one
            metrics["failed"][entry.row] = str(error)
            continue
        seconds = time.perf_counter() - start
        if not main_rank:
            continue
        result = evaluate_model(unlearned, original, setting, config, routing, mcq)
        if config.eval.projection_attack and "target_norm" in method.report and setting.forget_pairs:
            result["projection_attack"] = projection_attack(unlearned, original, method.report, setting, config, mcq)
        report = {k: v for k, v in method.report.items() if k not in ("loss_history", "attribution")}
        metrics["methods"][entry.row] = {"eval": result, "time_s": seconds, "report": report}
        del unlearned
    if main_rank:
        write_llm_report(metrics, config.output_dir, plots=config.eval.plots)
    distributed.barrier()
    if joined:
        distributed.shutdown()
    return metrics
