"""Profile of MoRE's fit and of the KR evaluation (issue 7, item 4): where does the time go?

    .venv/bin/python bench/profile_fit.py [--config configs/shapes_compare.yaml] [--tag after]

Loads the config's cached Original model (trains it when missing), then runs under cProfile, one after
the other: MoRE fit (prototype pass + SVD), applying the edit, the feature pass KR needs, and KR at the
config's probe lrs. Writes bench/results/profile_<tag>.md and .json: wall time per phase and the
functions with the largest own time in each, so a change can be judged by the before/after ratio.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import platform
import pstats
import time
from pathlib import Path

import torch

from unlearn.config import load_config
from unlearn.eval.kr import knowledge_retention, split_features
from unlearn.io import atomic_write_text
from unlearn.methods import MoRE
from unlearn.models.split import split_for_probe, split_model
from unlearn.runners.vision import Experiment

ROOT = Path(__file__).resolve().parents[1]
TOP = 12


def profiled(function) -> tuple[object, float, list[dict]]:
    """Run `function()` under cProfile: (its result, wall seconds, the TOP functions by own time)."""
    profiler = cProfile.Profile()
    start = time.perf_counter()
    result = profiler.runcall(function)
    wall = time.perf_counter() - start
    stats = pstats.Stats(profiler).sort_stats("tottime")
    rows = []
    for (file, line, name), (_, calls, own, cumulative, _) in list(stats.stats.items()):
        where = f"{Path(file).name}:{line}({name})"
        rows.append({"function": where, "calls": calls, "own_s": own, "cum_s": cumulative})
    rows.sort(key=lambda row: -row["own_s"])
    return result, wall, rows[:TOP]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/shapes_compare.yaml")
    parser.add_argument("--tag", default="after", help="result file suffix, e.g. before / after")
    args = parser.parse_args()
    config = load_config(ROOT / args.config)
    experiment = Experiment(config, progress=False)
    original = experiment.reference_models()["Original"][0]
    splits = experiment.splits
    features, _ = split_model(original, config.model.head)
    edit = MoRE(num_experts=8, seed=0)
    phases = {}
    _, phases["MoRE fit"], top_fit = profiled(
        lambda: edit.fit(features, splits.train(), config.forget_classes, splits.num_classes)
    )
    unlearned = edit.apply(original, config.model.head)
    base_module = split_for_probe(unlearned, config.model.head)[0]
    base, phases["KR feature pass"], top_features = profiled(lambda: split_features(base_module, splits))
    lrs = tuple(config.eval.kr_lrs)
    _, phases["KR probes"], top_kr = profiled(
        lambda: knowledge_retention(
            unlearned, splits, lrs, config.eval.kr_epochs, config.eval.kr_batch_size, 0, config.model.head, base
        )
    )
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    command = f".venv/bin/python bench/profile_fit.py --config {args.config} --tag {args.tag}"
    record = {
        "command": command,
        "machine": machine,
        "config": args.config,
        "wall_s": phases,
        "top": {"MoRE fit": top_fit, "KR feature pass": top_features, "KR probes": top_kr},
    }
    out = ROOT / "bench" / "results"
    atomic_write_text(out / f"profile_{args.tag}.json", json.dumps(record, indent=2))
    lines = [
        f"# Profile of MoRE fit and KR ({args.tag})",
        "",
        f"`{command}` — {machine}",
        "",
        "| phase | wall s |",
        "|---|---:|",
        *[f"| {name} | {wall:.2f} |" for name, wall in phases.items()],
    ]
    for name, rows in record["top"].items():
        lines += [
            "",
            f"## {name}: top {TOP} functions by own time",
            "",
            "| function | calls | own s | cum s |",
            "|---|---:|---:|---:|",
            *[f"| `{r['function']}` | {r['calls']} | {r['own_s']:.3f} | {r['cum_s']:.3f} |" for r in rows],
        ]
    atomic_write_text(out / f"profile_{args.tag}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
