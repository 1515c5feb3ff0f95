"""`unlearn llm CONFIG.yaml`: data + Original model -> every configured LM method -> evaluation -> report.

Two data modes. `data.kind: facts` (default) generates the fictitious-facts testbed (`make_facts` arguments
under `data`) and trains (or loads from the cache) a tiny model from `model` (see `llm.models`).
`data.kind: files` unlearns a real local checkpoint (`model.checkpoint`: a transformers directory with its
tokenizer) on forget / retain corpora (`data.forget_file`, `data.retain_file`: .txt one text per line, or
.jsonl with a "text" field; optional `data.general_file` for perplexity and `data.heldout_file` as MIA
non-members); answer-accuracy metrics then need `data.forget_qa` / `data.retain_qa` (.jsonl with "prompt",
"answer"), and MCQ files (`eval.mcq: {name: path}`, WMDP/MMLU format) give multiple-choice accuracies.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unlearn.config import MethodConfig, _build, read_yaml
from unlearn.errors import UnlearnError, check_params
from unlearn.llm import evaluate as ev
from unlearn.llm.models import FactsTrainConfig, is_moe, trained_model
from unlearn.runtime import resolve_device, seed_everything
from unlearn.validate import check_args, check_device, check_output_dir

log = logging.getLogger(__name__)


@dataclass
class LLMEvalConfig:
    relearn_steps: int = 20  # relearning attack: finetuning steps on half the forget facts (0: skip)
    relearn_lr: float = 1e-3
    mia: bool = True
    selection_shift: bool = True  # MoE only
    mcq: dict[str, str] = field(default_factory=dict)  # name -> WMDP/MMLU-style JSONL
    projection_attack: bool = True  # RMU/SRMU rows: "RMU is shallow", project out the misdirection direction
    batch_size: int = 64
    plots: bool = True


@dataclass
class LLMConfig:
    name: str = "llm"
    output_dir: str = "runs/llm"
    cache_dir: str | None = ".cache/unlearn"
    device: str = "auto"
    seed: int = 0
    data: dict[str, Any] = field(default_factory=dict)  # kind: facts (make_facts args) | files
    model: dict[str, Any] = field(default_factory=lambda: {"arch": "llama"})  # spec, or {checkpoint: DIR}
    train: FactsTrainConfig = field(default_factory=FactsTrainConfig)
    forget_format: str = "texts"  # what the methods' forget loader holds: "texts" (whole sentences) or "pairs"
    batch_size: int = 16  # of the forget / retain loaders given to the methods
    methods: list[MethodConfig] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)  # run every method at each lr (a trade-off curve); [] = as given
    eval: LLMEvalConfig = field(default_factory=LLMEvalConfig)

    def __post_init__(self) -> None:
        if self.forget_format not in ("texts", "pairs"):
            raise UnlearnError(f"forget_format must be 'texts' or 'pairs', got {self.forget_format!r}.")
        if not self.methods:
            raise UnlearnError("methods is empty: list at least one LM method, e.g. - {name: GA}.")
        kind = self.data.get("kind", "facts")
        if kind not in ("facts", "files"):
            raise UnlearnError(f"data.kind must be 'facts' or 'files', got {kind!r}.")
        if kind == "files" and "checkpoint" not in self.model:
            raise UnlearnError("data.kind 'files' unlearns a local checkpoint: set model.checkpoint to its directory.")


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


def _read_texts(path: str | Path, field_name: str = "text") -> list:
    path = Path(path)
    if not path.is_file():
        raise UnlearnError(f"data file {path} does not exist.")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix != ".jsonl":
        return lines
    try:
        rows = [json.loads(line) for line in lines]
        return [row[field_name] if field_name != "qa" else (row["prompt"], row["answer"]) for row in rows]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise UnlearnError(f"{path}: every line must be a JSON object with {field_name!r} ({error}).") from error


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
    info: dict = field(default_factory=dict)


def build_setting(config: LLMConfig, progress: bool = True) -> Setting:
    """The Original model and the data of the config (facts testbed or local files)."""
    data_args = {k: v for k, v in config.data.items() if k != "kind"}
    if config.data.get("kind", "facts") == "files":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        directory = Path(config.model["checkpoint"])
        if not directory.is_dir():
            raise UnlearnError(f"model.checkpoint {directory} is not a directory with a transformers checkpoint.")
        try:
            tokenizer = AutoTokenizer.from_pretrained(directory)
            model = AutoModelForCausalLM.from_pretrained(directory).eval()
        except (OSError, ValueError) as error:
            raise UnlearnError(f"cannot load a causal LM and tokenizer from {directory}: {error}") from error
        check_params(_files_args, data_args, "data (kind files)")
        files = _files_args(**data_args)
        forget = files["forget"]
        return Setting(
            model=model,
            tokenizer=tokenizer,
            forget_items=forget,
            retain_items=files["retain"],
            forget_pairs=files["forget_qa"],
            retain_pairs=files["retain_qa"],
            general_test=files["general"],
            heldout_texts=files["heldout"],
            forget_texts=forget,
            info={"checkpoint": str(directory), "forget_texts": len(forget)},
        )
    from unlearn.data.facts import make_facts

    check_params(make_facts, data_args, "data (kind facts)")
    data = make_facts(**data_args)
    model, record = trained_model(config.model, data, config.train, config.seed, config.cache_dir, progress)
    forget_items = data.texts("forget") if config.forget_format == "texts" else data.pairs("forget")
    return Setting(
        model=model,
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
    forget_file: str,
    retain_file: str,
    forget_qa: str | None = None,
    retain_qa: str | None = None,
    heldout_file: str | None = None,
    general_file: str | None = None,
) -> dict:
    return {
        "forget": _read_texts(forget_file),
        "retain": _read_texts(retain_file),
        "forget_qa": _read_texts(forget_qa, "qa") if forget_qa else [],
        "retain_qa": _read_texts(retain_qa, "qa") if retain_qa else [],
        "heldout": _read_texts(heldout_file) if heldout_file else [],
        "general": _read_texts(general_file) if general_file else [],
    }


def evaluate_model(model, original, setting: Setting, config: LLMConfig, target: tuple[int, int] | None) -> dict:
    """Every metric of the issue that the setting allows, for one (unlearned or original) model."""
    from unlearn.data.facts import lm_loader

    tok, size = setting.tokenizer, config.eval.batch_size
    out: dict[str, Any] = {}
    for split, pairs in (("forget", setting.forget_pairs), ("retain", setting.retain_pairs)):
        if pairs:
            out[f"{split}_acc"] = ev.answer_accuracy(model, tok, pairs, size)
            out[f"{split}_logprob"] = ev.answer_logprob(model, tok, pairs, size)
    if setting.general_test:
        out["ppl"] = ev.perplexity(model, lm_loader(setting.general_test, tok, size))
    if config.eval.mia and setting.heldout_texts:
        out["mia_auc"] = ev.mia_auc(model, tok, setting.forget_texts, setting.heldout_texts)
    out["params"] = ev.params_changed(original, model)
    if target is not None and config.eval.selection_shift:
        top_k = getattr(model.config, "num_experts_per_tok", 2)
        for split, items in (("forget", setting.forget_items), ("retain", setting.retain_items)):
            loader = lm_loader([i if isinstance(i, str) else f"{i[0]} {i[1]}" for i in items], tok, size)
            out[f"shift_{split}"] = ev.selection_shift(original, model, loader, target, top_k)
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
    for name, path in config.eval.mcq.items():
        out[f"mcq_{name}"] = ev.mcq_accuracy(model, tok, path, size)["accuracy"]
    return out


def projection_attack(model, original, report: dict, setting: Setting, config: LLMConfig) -> dict:
    """Forget / retain answer accuracy after removing the mean misdirection direction from the layer RMU/SRMU
    misdirected (helper: `rmu.project_out_misdirection`, direction = mean forget-activation shift vs the original)."""
    from unlearn.data.facts import lm_loader
    from unlearn.llm.rmu import project_out_misdirection

    tok, size = setting.tokenizer, config.eval.batch_size
    forget = lm_loader(setting.forget_items, tok, size)
    retain = lm_loader(setting.retain_items, tok, size)
    attacked, _ = project_out_misdirection(model, report["layer"], forget, retain, reference=original)
    return {
        "forget_acc": ev.answer_accuracy(attacked, tok, setting.forget_pairs, size),
        "retain_acc": ev.answer_accuracy(attacked, tok, setting.retain_pairs, size),
    }


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


def _target_expert(original, setting: Setting, config: LLMConfig) -> tuple[int, int] | None:
    """The expert UOE's attribution picks on the Original model (reference for every method's selection shift)."""
    if not is_moe(original):
        return None
    from unlearn.data.facts import lm_loader
    from unlearn.llm.moe import expert_attribution

    loader = lm_loader(setting.forget_items, setting.tokenizer, config.batch_size)
    layer, expert = expert_attribution(original, loader).top(1)[0]
    return int(layer), int(expert)


def run_llm_experiment(config: LLMConfig, progress: bool = True) -> dict:
    """Run the config end to end; write metrics.json, report.md and plots to `config.output_dir`."""
    from unlearn.data.facts import lm_loader
    from unlearn.llm import build_lm_method
    from unlearn.report.llm import write_llm_report

    device = resolve_device(config.device)
    seed_everything(config.seed)
    setting = build_setting(config, progress)
    original = setting.model.to(device)
    target = _target_expert(original, setting, config)
    forget_loader = lm_loader(
        setting.forget_items, setting.tokenizer, config.batch_size, shuffle=True, seed=config.seed
    )
    retain_loader = lm_loader(
        setting.retain_items, setting.tokenizer, config.batch_size, shuffle=True, seed=config.seed + 1
    )
    metrics: dict[str, Any] = {
        "name": config.name,
        "config": dataclasses.asdict(config),
        "device": str(device),
        "model": config.model,
        "num_parameters": sum(p.numel() for p in original.parameters()),
        "moe": is_moe(original),
        "target_expert": target,
        "mia_definition": ev.MIA_DEFINITION,
        **setting.info,
        "methods": {},
    }
    log.info("evaluating Original")
    metrics["methods"]["Original"] = {"eval": evaluate_model(original, original, setting, config, target)}
    for entry in expand_lrs(config.methods, config.lrs):
        params = {"seed": config.seed, **entry.params}
        if progress:
            params.setdefault("progress", True)
        log.info("running %s", entry.row)
        method = build_lm_method(entry.name, **params)
        start = time.perf_counter()
        unlearned = method.unlearn(original, forget_loader, retain_loader)
        seconds = time.perf_counter() - start
        result = evaluate_model(unlearned, original, setting, config, target)
        if config.eval.projection_attack and "target_norm" in method.report and setting.forget_pairs:
            result["projection_attack"] = projection_attack(unlearned, original, method.report, setting, config)
        report = {k: v for k, v in method.report.items() if k not in ("loss_history", "attribution")}
        metrics["methods"][entry.row] = {"eval": result, "time_s": seconds, "report": report}
        del unlearned
    write_llm_report(metrics, config.output_dir, plots=config.eval.plots)
    return metrics
