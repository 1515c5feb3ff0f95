"""`unlearn llm CONFIG.yaml`: unlearn a causal LM (tiny facts testbed or a local checkpoint) and report."""

from __future__ import annotations

import argparse
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from unlearn.runners.llm import load_llm_config, run_llm_experiment

    overrides: dict = {}
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.device:
        overrides["device"] = args.device
    if args.overlap is not None:
        overrides["data.overlap"] = args.overlap
    if args.no_cache:
        overrides["cache_dir"] = None
    config = load_llm_config(args.config, overrides)
    if args.no_plots:
        config.eval.plots = False
    metrics = run_llm_experiment(config, progress=not args.quiet)
    if metrics["rank"] != 0:  # under torchrun only rank 0 evaluates and writes
        return 0
    out = Path(config.output_dir)
    print(f"wrote {out / 'report.md'} and {out / 'metrics.json'}")
    for name, entry in metrics["methods"].items():
        e = entry["eval"]
        fields = [f"{key} {100 * e[key]:6.1f}" for key in ("forget_acc", "retain_acc") if key in e]
        fields += [f"ppl {e['ppl']:.2f}"] if "ppl" in e else []
        print(f"  {name:<16} " + "  ".join(fields) + f"  params changed {100 * e['params']['fraction']:.3f} %")
    for name, why in metrics["failed"].items():
        print(f"  {name:<16} FAILED: {why}")
    return 1 if metrics["failed"] else 0


def add_parser(commands) -> None:
    """Register `unlearn llm` on the main parser's subcommands."""
    llm = commands.add_parser(
        "llm",
        help="unlearn a causal LM (facts testbed or a local checkpoint) with GA/GradDiff/NPO/RMU/SRMU/UOE",
        description="Build the fictitious-facts testbed and train (or load the cached) tiny dense or MoE LM, or "
        "load a local transformers checkpoint with forget/retain text files; run every method of the config; "
        "evaluate forget/retain answer accuracy and log-probability, general-text perplexity, loss MIA, fraction "
        "of parameters changed, MoE expert-selection shift, relearning / projection / quantisation attacks and "
        "WMDP/MMLU multiple-choice files scored as lm-eval-harness does; write metrics.json, report.md and a PNG to "
        "the output directory. Runs under torchrun (data parallel, gloo on CPU, nccl on GPUs).",
    )
    llm.add_argument("config", help="YAML config (see configs/llm_moe.yaml, configs/llm_dense_overlap.yaml)")
    llm.add_argument("--output-dir", help="where to write the run (overrides output_dir of the config)")
    llm.add_argument("--seed", type=int, help="seed of the data, the Original model and the methods")
    llm.add_argument("--overlap", type=float, help="forget/retain token overlap of the facts testbed, e.g. 0.2")
    llm.add_argument("--device", help="cpu, cuda, cuda:1 or auto")
    llm.add_argument("--no-cache", action="store_true", help="always retrain the Original; do not read or write it")
    llm.add_argument("--no-plots", action="store_true", help="skip the PNG plot")
    llm.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    llm.set_defaults(func=_run)
