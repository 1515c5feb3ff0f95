"""`unlearn apply`: insert a saved edit into a checkpoint and write the unlearned model."""

from __future__ import annotations

import argparse


def _apply(args: argparse.Namespace) -> int:
    from unlearn.config import load_config
    from unlearn.methods.saved import load_edit, save_model
    from unlearn.models.train import load_checkpoint
    from unlearn.runners.vision import Experiment

    config = load_config(args.config)
    model = load_checkpoint(Experiment(config, progress=False).build(), args.checkpoint)
    edit = load_edit(args.edit)
    unlearned = edit.apply(model, config.model.head, absorb=args.absorb)
    source = {"checkpoint": args.checkpoint, "edit_dir": str(args.edit), "absorbed": args.absorb}
    path = save_model(unlearned, args.output, **source, edit_manifest=edit.manifest)
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0


def add_parser(commands) -> None:
    """Register `unlearn apply`."""
    apply = commands.add_parser(
        "apply",
        help="apply a saved edit to a checkpoint and write the unlearned model (safetensors + JSON manifest)",
        description="Build the model named by CONFIG, load --checkpoint (a state_dict), insert the edit saved in "
        "--edit (a directory with edit.safetensors and edit.json, as `unlearn run` writes under RUN_DIR/edits/) "
        "in front of the head, or fold it into the head with --absorb (single-expert edits only), and write "
        "--output as safetensors with a JSON manifest (source checkpoint, edit, its manifest).",
    )
    apply.add_argument("config", help="YAML experiment config that names the model (and the data it was built for)")
    apply.add_argument("--checkpoint", required=True, help="state_dict of the model to unlearn (.pt)")
    apply.add_argument("--edit", required=True, help="directory with edit.safetensors and edit.json")
    apply.add_argument("--output", required=True, help="where to write the unlearned model (.safetensors + .json)")
    apply.add_argument("--absorb", action="store_true", help="fold a linear edit into the head's first Linear")
    apply.set_defaults(func=_apply)
