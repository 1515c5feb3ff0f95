"""Issue 14: does evaluating one MoRE edit twice give one answer?  KR and output accuracy, twice each, per routing.

    .venv/bin/python bench/routing.py [--config configs/digits_audit.yaml] [--seeds 0 1 2]

Fits MoRE (8 experts) with routing="random" (the paper) and routing="hash" on the config's cached Original,
then evaluates each edit twice in one process (model output on D_ft / D_rt, and KR at lr 0.1 and 0.01, 10 epochs)
and writes bench/results/routing_<config>.json and .md with both evaluations side by side.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from unlearn.config import load_config
from unlearn.eval.kr import knowledge_retention
from unlearn.eval.metrics import evaluate_splits
from unlearn.io import atomic_write_json, atomic_write_text
from unlearn.methods import MoRE
from unlearn.report.markdown import markdown_table
from unlearn.runners.vision import Experiment

ROOT = Path(__file__).resolve().parents[1]
LRS = (0.1, 0.01)


def evaluate(model, splits, seed: int) -> dict[str, float]:
    """Output accuracy on D_ft / D_rt and KR D_ft at each lr, one evaluation."""
    output = evaluate_splits(model, splits)[0]["acc"]
    kr = knowledge_retention(model, splits, LRS, epochs=10, seed=seed)
    return {
        "output D_ft": output["D_ft"],
        "output D_rt": output["D_rt"],
        **{f"KR lr={lr:g} D_ft": kr[str(lr)]["acc"]["D_ft"] for lr in LRS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/digits_audit.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    start = time.perf_counter()
    config = load_config(args.config)
    experiment = Experiment(config, progress=False, resume=True)
    original = experiment.reference_models()["Original"][0]
    rows = []
    for routing in ("random", "hash"):
        for seed in args.seeds:
            model = MoRE(num_experts=8, seed=seed, routing=routing).unlearn(original, experiment.splits)
            first, second = evaluate(model, experiment.splits, seed), evaluate(model, experiment.splits, seed)
            rows.append({"routing": routing, "seed": seed, "first": first, "second": second})
    keys = list(rows[0]["first"])
    table = markdown_table(
        ["routing", "seed", *[f"{k} (1st / 2nd)" for k in keys]],
        [[r["routing"], str(r["seed"]), *[f"{r['first'][k]:.1f} / {r['second'][k]:.1f}" for k in keys]] for r in rows],
        text_columns=1,
    )
    stem = Path(args.config).stem
    wall = time.perf_counter() - start
    command = f".venv/bin/python bench/routing.py --config {args.config} --seeds {' '.join(map(str, args.seeds))}"
    result = {"command": command, "wall_s": wall, "machine": platform.platform(), "rows": rows}
    atomic_write_json(ROOT / "bench" / "results" / f"routing_{stem}.json", result)
    atomic_write_text(
        ROOT / "bench" / "results" / f"routing_{stem}.md",
        f"# MoRE routing: one edit evaluated twice ({config.name})\n\nCommand: `{command}`; wall time {wall:.0f} s.\n\n"
        "Each edit is fitted once, then evaluated twice in one process (output accuracy, KR at two lrs).\n\n"
        + table
        + "\n",
    )
    print(table)


if __name__ == "__main__":
    main()
