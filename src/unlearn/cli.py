"""The command line: `unlearn run|compare|fit|apply|report|audit|diffusion|llm` (see `unlearn --help`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from unlearn.errors import UnlearnError


def _run(args: argparse.Namespace) -> int:
    from unlearn.config import load_config
    from unlearn.experiment import run_experiment

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


def _apply(args: argparse.Namespace) -> int:
    from unlearn.config import load_config
    from unlearn.experiment import Experiment
    from unlearn.methods.base import insert_edit
    from unlearn.methods.saved import load_edit, save_model
    from unlearn.models.train import load_checkpoint

    config = load_config(args.config)
    model = load_checkpoint(Experiment(config, progress=False).build(), args.checkpoint)
    layer, manifest = load_edit(args.edit)
    unlearned = insert_edit(model, layer, config.model.head, absorb=args.absorb)
    source = {"checkpoint": args.checkpoint, "edit_dir": str(args.edit), "absorbed": args.absorb}
    path = save_model(unlearned, args.output, **source, edit_manifest=manifest)
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0


def _fit(args: argparse.Namespace) -> int:
    from unlearn import distributed
    from unlearn.config import load_config
    from unlearn.experiment import fit_edit

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


def _report(args: argparse.Namespace) -> int:
    from unlearn.report.tables import write_report

    path = Path(args.run_dir) / "metrics.json"
    if not path.is_file():
        raise UnlearnError(f"{path} does not exist: pass a run directory written by `unlearn run`.")
    write_report(json.loads(path.read_text()), args.run_dir)
    print(f"wrote {Path(args.run_dir) / 'report.md'}")
    return 0


def _experiment_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("config", help="YAML experiment config (see configs/ for examples)")
    command.add_argument("--output-dir", help="where to write the run (overrides output_dir of the config)")
    command.add_argument("--seeds", type=int, nargs="+", help="seeds of the method and probe runs, e.g. --seeds 0 1 2")
    command.add_argument("--forget-classes", type=int, nargs="+", help="class ids to forget (overrides the config)")
    command.add_argument("--device", help="cpu, cuda, cuda:1 or auto (default: the config's, auto = CUDA if present)")
    command.add_argument("--no-cache", action="store_true", help="always retrain; do not read or write checkpoints")
    command.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    command.add_argument("--quiet", action="store_true", help="no progress bars or log lines")


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="unlearn", description="Make a trained model forget, and prove it.")
    commands = main.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="train or load a model, unlearn, evaluate and write a report",
        description="Run one experiment config end to end: train (or load the cached) Original and Retrain "
        "models, apply every method of the config for every seed, evaluate accuracy on D_f/D_r/D_ft/D_rt, HM, "
        "MIA and KR, and write metrics.json, report.md and PNG plots to the output directory.",
    )
    _experiment_options(run)
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
    _experiment_options(compare)
    compare.add_argument("--fresh", action="store_true", help="recompute every cell instead of resuming")
    compare.set_defaults(func=_run)
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
    report = commands.add_parser("report", help="rewrite report.md from a run directory's metrics.json")
    report.add_argument("run_dir", help="a directory written by `unlearn run`")
    report.set_defaults(func=_report)
    from unlearn.audit_cli import add_parser as add_audit
    from unlearn.diffusion.run import add_parser as add_diffusion
    from unlearn.llm.cli import add_parser as add_llm

    add_audit(commands)
    add_diffusion(commands)
    add_llm(commands)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return args.func(args)
    except UnlearnError as error:
        print(f"unlearn: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
