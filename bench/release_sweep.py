"""Issue 18, release mode: which distillation settings make the released model relearn no faster than Retrain?

    .venv/bin/python bench/release_sweep.py [--config configs/shapes_audit.yaml] [--seed 0]
        [--variants I ...] [--epochs E] [--redo] [--rerender]

Release mode distils a served MoRE-S edit into plain weights. In the audits it relearned the forgotten class much
faster than Retrain (shapes: 84.3 vs 0.0 after 15 steps on 50 forget samples). This sweep varies what it learns
from (D_f ∪ D_r or D_r only), the UNDO noise α, and the feature-matching weight β, and measures for each variant
the model output (D_ft, D_rt), relearning (k = 50 forget samples, 5 / 15 / 50 steps, as in the audit; also after
the attacker resets the head's forget rows, which undoes a suppressed forget logit) and its compute as sample
passes relative to Retrain's (student forward + backward = 3 per input and epoch, plus one feature pass that fits
the edit and gives the teacher's answers, against Retrain's 3 per input and epoch). Variants already in the JSON
(same config, seed, parameters) are read back. Writes bench/results/release_sweep_<config>.md and .json;
nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from unlearn.config import load_config
from unlearn.eval.audit import relearn_attack
from unlearn.eval.metrics import evaluate_splits
from unlearn.io import atomic_write_json, atomic_write_text
from unlearn.methods import Release
from unlearn.runners.vision import Experiment
from unlearn.runtime import seed_everything

ROOT = Path(__file__).resolve().parents[1]
RELEARN_SAMPLES = 50
# (on, α, β, forget suppressed): the audits' row before suppression first, then one change at a time
SETTINGS = [
    ("all", 0.5, 1.0, False),
    ("all", 1.0, 1.0, False),
    ("all", 0.5, 0.0, False),
    ("remain", 0.5, 1.0, False),
    ("remain", 1.0, 1.0, False),
    ("remain", 1.0, 0.0, False),
    ("all", 0.5, 1.0, True),
    ("remain", 0.5, 1.0, True),
    ("all", 0.0, 1.0, True),
]


def variant(on: str, noise: float, beta: float, suppress: bool, epochs: int | None = None) -> tuple[str, dict]:
    """(row label, the Release parameters it sets); `epochs` None keeps the config's."""
    label = f"{'D_f∪D_r' if on == 'all' else 'D_r only'}, α {noise:g}, β {beta:g}" + (", forget suppressed" * suppress)
    params = {"on": on, "noise": noise, "feature_weight": beta, "suppress_forget": suppress}
    if epochs is None:
        return label, params
    return f"{label}, {epochs} epoch{'s' * (epochs != 1)}", {**params, "epochs": epochs}


def measure(model, experiment: Experiment, seed: int) -> dict:
    """Output accuracy and the audit's relearning attack with k = RELEARN_SAMPLES forget samples, as is and
    after the attacker resets the head's forget rows (so a suppressed forget logit no longer helps)."""
    splits, settings, head = experiment.splits, experiment.config.audit, experiment.config.model.head
    output = evaluate_splits(model, splits)[0]["acc"]
    found = {}
    for key, reset in (("relearn", False), ("relearn_reset", True)):
        relearn = relearn_attack(model, splits, settings, seed, head, RELEARN_SAMPLES, reset_head=reset)
        found[key] = {name: result["D_ft"] for name, result in relearn.items()}
    return {"D_ft": output["D_ft"], "D_rt": output["D_rt"], **found}


def run(config_path: str, seed: int, earlier: dict, variants: list[tuple[str, dict]], redo: bool) -> dict:
    config = load_config(config_path)
    release_row = next(method for method in config.methods if method.name == "Release")
    experiment = Experiment(config, progress=False)
    references = experiment.reference_models()
    original, head = references["Original"][0], config.model.head
    splits = experiment.splits
    rows = {}
    for name in ("Original", "Retrain"):
        seed_everything(seed)
        rows[name] = measure(references[name][0], experiment, seed)
    retrain_passes = config.train.epochs * len(splits.D_r) * 3
    for label, params in variants:
        if not redo and earlier.get(label, {}).get("params") == params:
            rows[label] = earlier[label]
            continue
        seed_everything(seed)
        method = Release(**{**release_row.params, **params, "seed": seed})
        start = time.perf_counter()
        released = method.unlearn(original, splits, head=head)
        seconds = time.perf_counter() - start
        data = len(splits.train()) if params["on"] == "all" else len(splits.D_r)
        passes = method.recipe.epochs * data * 3 + len(splits.train())  # the student's epochs + one feature pass
        rows[label] = {
            **measure(released, experiment, seed),
            "params": params,
            "time_s": seconds,
            "compute_share": passes / retrain_passes,
        }
        print(label, json.dumps(rows[label]), flush=True)
    return {
        "config": config_path,
        "seed": seed,
        "edit_params": release_row.params,
        "relearn_samples": RELEARN_SAMPLES,
        "retrain_epochs": config.train.epochs,
        "rows": rows,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
    }


def markdown(result: dict, command: str) -> str:
    rows = result["rows"]
    steps = list(rows["Retrain"]["relearn"])
    lines = [
        f"# Release mode sweep: {Path(result['config']).stem}, seed {result['seed']}",
        "",
        f"Commands: `{command}` (a row made by an earlier call is read back); machine: "
        f"{result['machine']}. Base parameters (the config's Release row when the last call ran): "
        f"`{result['edit_params']}`; each variant sets the listed ones. D_ft and D_rt are output accuracy (%); "
        f"relearn columns are D_ft after finetuning the whole model on {result['relearn_samples']} forget + "
        f"{result['relearn_samples']} remain samples (the audit's attack); \"reset\" columns first set the head's "
        "forget rows to the mean of its remain rows (`reset_forget_rows`). Compute share: sample passes "
        "(3 per student input and epoch, and one feature pass over D_f ∪ D_r; rows made before the teacher's "
        "answers were computed once counted 1 teacher pass per input and epoch) over Retrain's "
        f"({result['retrain_epochs']} epochs × |D_r| × 3). "
        "Time: wall seconds in this one run, on a shared machine.",
        "",
        "| model | D_ft (↓) | D_rt (↑) | "
        + " | ".join([*(f"{step} (↓)" for step in steps), *(f"reset, {step} (↓)" for step in steps)])
        + " | compute | time (s) |",
        "| :--- | ---: | ---: | " + " | ".join("---:" for _ in range(2 * len(steps))) + " | ---: | ---: |",
    ]
    for label, row in rows.items():
        share = f"{row['compute_share']:.1%}" if "compute_share" in row else "100 %" if label == "Retrain" else "–"
        time_s = f"{row['time_s']:.0f}" if "time_s" in row else "–"
        reset = row.get("relearn_reset", {})
        cells = [f"{row['relearn'][step]:.1f}" for step in steps]
        cells += [f"{reset[step]:.1f}" if reset else "–" for step in steps]
        relearn = " | ".join(cells)
        lines.append(f"| {label} | {row['D_ft']:.1f} | {row['D_rt']:.2f} | {relearn} | {share} | {time_s} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/shapes_audit.yaml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", type=int, nargs="+", help="indices into SETTINGS (default: all)")
    parser.add_argument("--epochs", type=int, help="distillation epochs for every variant (default: the config's)")
    parser.add_argument("--redo", action="store_true", help="recompute the chosen variants even if saved")
    parser.add_argument("--rerender", action="store_true", help="rewrite the Markdown from the saved JSON")
    args = parser.parse_args(argv)
    out = ROOT / "bench" / "results" / f"release_sweep_{Path(args.config).stem}"
    if args.rerender:
        result = json.loads(out.with_suffix(".json").read_text())
    else:
        saved = out.with_suffix(".json")
        earlier = json.loads(saved.read_text()) if saved.is_file() else {}
        same = earlier.get("config") == args.config and earlier.get("seed") == args.seed
        chosen = [SETTINGS[index] for index in args.variants] if args.variants else SETTINGS
        variants = [variant(*setting, epochs=args.epochs) for setting in chosen]
        result = run(args.config, args.seed, earlier["rows"] if same else {}, variants, args.redo)
        arguments = sys.argv[1:] if argv is None else argv
        command = " ".join([".venv/bin/python bench/release_sweep.py", *arguments])
        if same:  # a partial call adds rows: keep the others and every command that made one
            result["rows"] = {**earlier["rows"], **result["rows"]}
            command = "; ".join(dict.fromkeys([*earlier["command"].split("; "), command]))
        result["command"] = command
        atomic_write_json(out.with_suffix(".json"), result)
    atomic_write_text(out.with_suffix(".md"), markdown(result, result["command"]))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
