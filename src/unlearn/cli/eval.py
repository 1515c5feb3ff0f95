"""`unlearn eval`: the four accuracies and HM (KR optional) of a saved model on a config's data."""

from __future__ import annotations

import argparse
from pathlib import Path


def _eval(args: argparse.Namespace) -> int:
    from unlearn.config import load_config
    from unlearn.io import atomic_write_json
    from unlearn.runners.vision import evaluate_saved

    overrides = {"device": args.device} if args.device else {}
    if args.forget_classes:
        overrides["forget_classes"] = args.forget_classes
    result = evaluate_saved(load_config(args.config, overrides), args.model, kr=args.kr, seed=args.seed)
    output = Path(args.output) if args.output else Path(args.model).with_suffix(".eval.json")
    atomic_write_json(output, result)
    acc = result["acc"]
    print(f"{args.model} on {result['dataset']}, forget {result['forget_classes']}:")
    print("  " + "  ".join(f"{name} {value:6.2f}" for name, value in acc.items()) + f"  HM {result['HM']:6.2f}")
    for lr, probe in result.get("kr", {}).items():
        print(f"  KR lr {lr}: " + "  ".join(f"{name} {value:6.2f}" for name, value in probe["acc"].items()))
    print(f"wrote {output}")
    return 0


def add_parser(commands) -> None:
    """Register `unlearn eval`."""
    command = commands.add_parser(
        "eval",
        help="evaluate a saved model (from `unlearn apply`, or a state_dict) on a config's data: D_f/D_r/D_ft/D_rt, HM",
        description="Build the model of CONFIG, load --model (a .safetensors + .json manifest written by "
        "`unlearn apply`, whose edit is rebuilt, or a plain .pt state_dict such as the Original), and measure "
        "accuracy on the forget and remain splits of the config's data and forget request (train: D_f, D_r; "
        "test: D_ft, D_rt), HM and HM_t; with --kr also knowledge retention (a linear probe retrained on the "
        "model's features at each eval.kr_lrs). Prints the numbers and writes them as JSON.",
    )
    command.add_argument("config", help="YAML experiment config: data, model (name or class), forget request")
    command.add_argument("--model", required=True, help="the model to evaluate (.safetensors from apply, or .pt)")
    command.add_argument("--kr", action="store_true", help="also measure KR at the config's eval.kr_lrs")
    command.add_argument("--seed", type=int, help="seed of the KR probe (default: the config's first seed)")
    command.add_argument("--forget-classes", type=int, nargs="+", help="class ids to forget (overrides the config)")
    command.add_argument("--device", help="cpu, cuda or auto (default: the config's)")
    command.add_argument("--output", help="JSON file to write (default: MODEL with suffix .eval.json)")
    command.set_defaults(func=_eval)
