"""KR probe speed, side by side in one process: the probe of an earlier revision against the current one.

    .venv/bin/python bench/kr_speed.py [--rev d371545] [--configs configs/digits_more.yaml configs/shapes_compare.yaml]

The profile (bench/profile_fit.py) showed the KR probes spending their time in the DataLoader's per-sample
collation and in one MoRE-layer call per 64-sample batch; the probe now runs the edit once per epoch over the
DataLoader's own sample order and steps single-threaded. This script loads `src/unlearn/eval/kr.py` as it
was at --rev, runs both versions on the same MoRE-edited model (8 experts, seed 0, the config's KR lrs and
epochs), checks that every accuracy is identical, and writes the times and their ratio to
bench/results/kr_speed.md and .json.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from unlearn.config import load_config
from unlearn.eval import kr
from unlearn.io import atomic_write_json, atomic_write_text
from unlearn.methods import MoRE
from unlearn.models.split import split_for_probe, split_model
from unlearn.runners.vision import Experiment

ROOT = Path(__file__).resolve().parents[1]


def module_at(rev: str, path: str, name: str):
    """The module `path` as it was at git revision `rev`."""
    source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True)
    file = Path(tempfile.mkdtemp()) / f"{name}.py"
    atomic_write_text(file, source.stdout)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compare(config_path: str, old_kr) -> dict:
    config = load_config(ROOT / config_path)
    experiment = Experiment(config, progress=False)
    original = experiment.reference_models()["Original"][0]
    splits = experiment.splits
    features, _ = split_model(original, config.model.head)

    def unlearned():  # a fresh edit per version: both start from the same router generator state
        edit = MoRE(num_experts=8, seed=0).fit(features, splits.train(), config.forget_classes, splits.num_classes)
        return edit.apply(original, config.model.head)

    base = kr.split_features(split_for_probe(unlearned(), config.model.head)[0], splits)
    lrs, epochs = tuple(config.eval.kr_lrs), config.eval.kr_epochs
    found = {}
    for name, module in (("before", old_kr), ("after", kr)):
        model = unlearned()
        start = time.perf_counter()
        result = module.knowledge_retention(model, splits, lrs, epochs, config.eval.kr_batch_size, 0, None, base)
        found[name] = {"time_s": time.perf_counter() - start, "acc": {lr: r["acc"] for lr, r in result.items()}}
    return {
        "config": config_path,
        "before_s": found["before"]["time_s"],
        "after_s": found["after"]["time_s"],
        "speedup": found["before"]["time_s"] / found["after"]["time_s"],
        "identical": found["before"]["acc"] == found["after"]["acc"],
        "acc": found["after"]["acc"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="d371545", help="git revision of the probe to compare against")
    parser.add_argument("--configs", nargs="+", default=["configs/digits_more.yaml", "configs/shapes_compare.yaml"])
    args = parser.parse_args()
    old_kr = module_at(args.rev, "src/unlearn/eval/kr.py", "kr_before")
    rows = [compare(path, old_kr) for path in args.configs]
    command = f"{' '.join(['.venv/bin/python', 'bench/kr_speed.py', *sys.argv[1:]])}"
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    out = ROOT / "bench" / "results"
    atomic_write_json(out / "kr_speed.json", {"command": command, "machine": machine, "rows": rows})
    lines = [
        f"# KR probe: revision {args.rev} vs now, same process, same edited model",
        "",
        f"`{command}` — {machine}",
        "",
        "| config | before s | after s | speed-up | every accuracy identical |",
        "|---|---:|---:|---:|---|",
        *[
            f"| {r['config']} | {r['before_s']:.2f} | {r['after_s']:.2f} | {r['speedup']:.1f}x | {r['identical']} |"
            for r in rows
        ],
    ]
    atomic_write_text(out / "kr_speed.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
