"""Issue 18, release mode: its compute against Retrain's, measured side by side in one process.

    .venv/bin/python bench/release_cost.py [--configs C ...] [--seed 0] [--retrain-epochs K]

The audits compare release mode's unlearn time with Retrain's training time from separate runs (Retrain is cached),
and on a shared machine the same work can take twice as long an hour later. Here both run in one process, one after
the other after a one-batch warm-up, and each is timed by wall clock and by the process's CPU time (with one torch
thread, CPU time hardly depends on what else the machine runs). Release mode is the config's Release row as the
audit runs it: one pass of the Original's features (the MoRE-S fit and the teacher's answers), then the student's
training. Retrain is the config's training recipe on D_r from a fresh network; with `--retrain-epochs K` at most K
of its epochs run and the time is scaled to the recipe's epochs (each epoch is the same work: same data, batch size
and augmentation; only the learning rate differs). Writes bench/results/release_cost.md and .json; nothing is
asserted.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import Subset

from unlearn.config import load_config
from unlearn.io import atomic_write_json, atomic_write_text
from unlearn.methods import Release
from unlearn.models.train import train
from unlearn.runners.vision import Experiment
from unlearn.runtime import seed_everything

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "release_cost"
DEFAULT_CONFIGS = ["configs/digits_audit.yaml", "configs/shapes_audit.yaml", "configs/fmnist_audit.yaml"]


class Clock:
    """Wall and CPU seconds of a block: `with Clock() as c: ...; c.wall, c.cpu`."""

    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_) -> None:
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu


def measure(config_path: str, seed: int, retrain_epochs: int | None) -> dict:
    config = load_config(config_path)
    row = next(method for method in config.methods if method.name == "Release")
    experiment = Experiment(config, progress=False)
    original, _ = experiment.original()
    splits, head = experiment.splits, config.model.head
    params = {**row.params, "seed": seed}
    # warm-up: torch imports some modules (sympy among them) at the process's first backward pass, 1.4 s that
    # would otherwise count against whichever of the two runs first
    train(
        experiment.build().to(experiment.device),
        Subset(splits.D_r, range(64)),
        replace(config.train, epochs=1),
        progress=False,
    )
    seed_everything(seed)
    with Clock() as whole:
        Release(**params).unlearn(original, splits, head=head)
    epochs = min(retrain_epochs or config.train.epochs, config.train.epochs)
    seed_everything(seed)
    with Clock() as retrain:
        fresh = experiment.build().to(experiment.device)
        train(fresh, splits.D_r, replace(config.train, epochs=epochs), progress=False)
    scale = config.train.epochs / epochs
    return {
        "config": config_path,
        "release_params": row.params,
        "retrain_epochs_run": epochs,
        "retrain_epochs": config.train.epochs,
        "release_wall_s": whole.wall,
        "release_cpu_s": whole.cpu,
        "retrain_wall_s": retrain.wall * scale,
        "retrain_cpu_s": retrain.cpu * scale,
    }


def markdown(result: dict) -> str:
    lines = [
        "# Release mode's compute against Retrain's, one process",
        "",
        f"Command: `{result['command']}`; machine: {result['machine']}; seed {result['seed']}. Release mode is the "
        "config's Release row (one feature pass for the MoRE-S fit and the teacher's answers, then the student's "
        "training). Retrain is the config's recipe on D_r; where fewer epochs ran than the recipe has, its time is the "
        "measured epochs scaled to the recipe (each epoch is the same work). CPU is the process's CPU time (one "
        "torch thread), which hardly depends on the machine's other load; wall time does.",
        "",
        "| config | release wall (s) | Retrain wall (s) | wall share | release CPU (s) "
        "| Retrain CPU (s) | CPU share | Retrain epochs run |",
        "| :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {Path(row['config']).stem} | {row['release_wall_s']:.1f} | {row['retrain_wall_s']:.1f} | "
            f"{row['release_wall_s'] / row['retrain_wall_s']:.1%} | "
            f"{row['release_cpu_s']:.1f} | {row['retrain_cpu_s']:.1f} | "
            f"{row['release_cpu_s'] / row['retrain_cpu_s']:.1%} | "
            f"{row['retrain_epochs_run']} of {row['retrain_epochs']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retrain-epochs", type=int, help="run at most K Retrain epochs; scale")
    args = parser.parse_args(argv)
    rows = [measure(path, args.seed, args.retrain_epochs) for path in args.configs]
    arguments = sys.argv[1:] if argv is None else argv
    result = {
        "command": " ".join([".venv/bin/python bench/release_cost.py", *arguments]),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "seed": args.seed,
        "rows": rows,
    }
    atomic_write_json(OUT.with_suffix(".json"), result)
    atomic_write_text(OUT.with_suffix(".md"), markdown(result))
    print(OUT.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
