"""`unlearn run` and `unlearn compare`: one experiment config end to end."""

from __future__ import annotations

import argparse
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from unlearn.config import load_config
    from unlearn.runners.vision import run_experiment

    overrides = {}
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    if args.seeds:
        overrides["seeds"] = args.seeds
    if args.device:
        overrides["device"] = args.device
    if args.forget_classes:
        overrides["forget_classes"] = args.forget_classes
    if args.no_cache:
        overrides["cache_dir"] = None
    config = load_config(args.config, overrides)
    if args.no_plots:
        config.eval.plots = False
    resume = args.resume if args.command == "run" else not args.fresh
    metrics = run_experiment(config, progress=not args.quiet, resume=resume)
    out = Path(config.output_dir)
    print(f"wrote {out / 'report.md'} and {out / 'metrics.json'}")
    for name, result in metrics["methods"].items():
        s = result["summary"]
        print(f"  {name:<16} D_f {s['D_f']['mean']:6.2f}  D_rt {s['D_rt']['mean']:6.2f}  HM {s['HM']['mean']:6.2f}")
    return 0


def experiment_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("config", help="YAML experiment config (see configs/ for examples)")
    command.add_argument("--output-dir", help="where to write the run (overrides output_dir of the config)")
    command.add_argument("--seeds", type=int, nargs="+", help="seeds of the method and probe runs, e.g. --seeds 0 1 2")
    command.add_argument("--forget-classes", type=int, nargs="+", help="class ids to forget (overrides the config)")
    command.add_argument("--device", help="cpu, cuda, cuda:1 or auto (default: the config's, auto = CUDA if present)")
    command.add_argument("--no-cache", action="store_true", help="always retrain; do not read or write checkpoints")
    command.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    command.add_argument("--quiet", action="store_true", help="no progress bars or log lines")


def add_parser(commands) -> None:
    """Register `unlearn run` and `unlearn compare`."""
    run = commands.add_parser(
        "run",
        help="train or load a model, unlearn, evaluate and write a report",
        description="Run one experiment config end to end: train (or load the cached) Original and Retrain "
        "models, apply every method of the config for every seed, evaluate accuracy on D_f/D_r/D_ft/D_rt, HM, "
        "MIA and KR, and write metrics.json, report.md and PNG plots to the output directory.",
    )
    experiment_options(run)
    run.add_argument("--resume", action="store_true", help="reuse finished (method, seed) cells of an earlier run")
    run.set_defaults(func=_run)
    compare = commands.add_parser(
        "compare",
        help="methods x seeds on one dataset/model in the paper's Table 1 layout; resumes an interrupted run",
        description="Like `run`, but resumable: every finished (method, seed) cell is stored under "
        "OUTPUT_DIR/cells/ and read back on the next call with the same config instead of being recomputed "
        "(a changed method, seed, dataset, model, recipe or evaluation setting recomputes its cells). Writes the "
        "Table 1 layout (output level, then one block per KR lr; mean ± std; best HM in bold; MIA, time and "
        "memory), the HM vs HM-under-KR plot and metrics.json. --fresh ignores stored cells.",
    )
    experiment_options(compare)
    compare.add_argument("--fresh", action="store_true", help="recompute every cell instead of resuming")
    compare.set_defaults(func=_run)
