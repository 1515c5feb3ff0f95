"""`unlearn diffusion`: erase concepts from a local text-to-image model's cross-attention."""

from __future__ import annotations

import argparse
from pathlib import Path


def _command(args: argparse.Namespace) -> int:
    from unlearn.runners.diffusion import load_diffusion_config, run_diffusion

    config = load_diffusion_config(args.config, {"output_dir": args.output_dir, "device": args.device})
    metrics = run_diffusion(config, progress=not args.quiet)
    out = Path(config.output_dir)
    print(f"wrote {out / 'report.md'}, {out / 'metrics.json'} and the edited UNets under {out}/<method>/unet")
    for method, entry in metrics["methods"].items():
        errors = entry["kv_max_rel_error"]
        worst_forget = max(errors[c] for c in config.forget)
        worst_remain = max(errors[c] for c in config.remain)
        print(f"  {method:<6} K/V max rel. error: forget {worst_forget:.2e}  remain {worst_remain:.2e}")
    return 0


def add_parser(subparsers) -> None:
    """Register `unlearn diffusion CONFIG.yaml`."""
    command = subparsers.add_parser(
        "diffusion",
        help="erase concepts from a local text-to-image model's cross-attention (MoRE / Remap / Erase / UCE)",
        description="Load a local diffusers checkpoint (tokenizer/, text_encoder/, unet/; vae/ and scheduler/ for "
        "images), build concept prototypes from the text encoder, fold the edit into every cross-attention "
        "to_k/to_v (W' = W E), save each edited UNet, and write report.md, metrics.json and PNGs. Nothing is "
        "downloaded. Example: configs/diffusion/tiny.yaml.",
    )
    command.add_argument("config", help="YAML diffusion config (model_dir, forget, remain, methods, output_dir, ...)")
    command.add_argument("--output-dir", help="where to write the run (overrides output_dir of the config)")
    command.add_argument("--device", help="cpu, cuda, cuda:1 or auto")
    command.add_argument("--quiet", action="store_true", help="no progress bars")
    command.set_defaults(func=_command)
