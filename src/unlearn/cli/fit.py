"""`unlearn fit`: fit one feature edit and save it; runs under torchrun."""

from __future__ import annotations

import argparse


def _fit(args: argparse.Namespace) -> int:
    from unlearn import distributed
    from unlearn.config import load_config
    from unlearn.runners.vision import fit_edit

    overrides = {"device": args.device} if args.device else {}
    if args.forget_classes:
        overrides["forget_classes"] = args.forget_classes
    try:
        summary = fit_edit(
            load_config(args.config, overrides), args.output, args.method, args.checkpoint, not args.quiet
        )
    finally:
        distributed.shutdown()
    if summary["rank"] == 0:
        print(
            f"wrote {args.output}: {summary['method']} fit in {summary['time_s']:.2f} s on {summary['world_size']} "
            f"process(es), device {summary['device']}"
        )
    return 0


def add_parser(commands) -> None:
    """Register `unlearn fit`."""
    fit = commands.add_parser(
        "fit",
        help="fit one feature edit (MoRE, Remap, Erase, ...) of a config on a model and save it; runs under torchrun",
        description="Fit the config's first feature-level method (or --method LABEL) on the training data seen "
        "through --checkpoint (default: the config's Original, trained and cached if needed) and save the edit "
        "(edit.safetensors + edit.json) to --output, for `unlearn apply`. Launched as "
        "`torchrun --nproc_per_node N -m unlearn fit ...`, every process collects prototypes over its shard of "
        "the data and the per-class sums are all-reduced (gloo on CPU, nccl on CUDA); process 0 writes.",
    )
    fit.add_argument("config", help="YAML experiment config (data, model, forget classes, methods)")
    fit.add_argument("--output", required=True, help="directory to write edit.safetensors and edit.json to")
    fit.add_argument("--method", help="row label of the config's method to fit (default: its first feature edit)")
    fit.add_argument("--checkpoint", help="state_dict of the model to unlearn (default: the config's Original)")
    fit.add_argument("--forget-classes", type=int, nargs="+", help="class ids to forget (overrides the config)")
    fit.add_argument("--device", help="cpu, cuda or auto (default: the config's); under torchrun cuda:LOCAL_RANK")
    fit.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    fit.set_defaults(func=_fit)
