"""Training and Fisher's diagonal in channels-last memory format against the default format, in one process.

    .venv/bin/python bench/train_speed.py [--configs C ...] [--samples N] [--repeats R]

For each config: its model and training recipe, one epoch on the first N training images, run R times in each
format, alternating (default, channels-last, default, ...), so that both see the same machine load. Reports the
median seconds per epoch of each, their ratio, and how far the two trained models' parameters end apart
(the formats give the same maths in another summation order, so the difference is rounding); then the same for
Fisher forgetting's diagonal (`expected_fisher_diagonal`, ten backward passes per batch) on the first N/4 images.
The result decides which of our CNNs set `prefers_channels_last` (unlearn.models.train). Writes
bench/results/train_speed.md and .json; nothing is asserted.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import Subset

from unlearn.config import load_config
from unlearn.data import load_dataset
from unlearn.io import atomic_write_json, atomic_write_text
from unlearn.methods.fisher import expected_fisher_diagonal
from unlearn.models import build_model
from unlearn.models.train import train

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "train_speed"
DEFAULT_CONFIGS = ["configs/digits_compare.yaml", "configs/shapes_compare.yaml", "configs/fmnist_compare_shirt.yaml"]


def measure(config_path: str, samples: int, repeats: int) -> dict:
    config = load_config(config_path)
    data = load_dataset(config.data.name, **config.data.params)
    subset = Subset(data.train, range(min(samples, len(data.train))))
    recipe = replace(config.train, epochs=1, warmup_epochs=0)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    models: dict[bool, torch.nn.Module] = {}
    for _ in range(repeats):
        for fast in (False, True):
            torch.manual_seed(0)
            model = build_model(config.model.name, data.num_classes, data.input_shape, **config.model.params)
            start = time.perf_counter()
            train(model, subset, recipe, progress=False, channels_last=fast)
            seconds[fast].append(time.perf_counter() - start)
            models[fast] = model
    drift = max(
        float((a - b).abs().max())
        for a, b in zip(models[False].state_dict().values(), models[True].state_dict().values(), strict=True)
        if a.is_floating_point()
    )
    default, fast = statistics.median(seconds[False]), statistics.median(seconds[True])
    fisher_data = Subset(data.train, range(min(samples // 4, len(data.train))))
    fisher: dict[bool, list[float]] = {False: [], True: []}
    model = models[False]
    for _ in range(repeats):
        for fast_format in (False, True):
            start = time.perf_counter()
            expected_fisher_diagonal(model, fisher_data, list(model.parameters()), channels_last=fast_format)
            fisher[fast_format].append(time.perf_counter() - start)
    return {
        "config": config_path,
        "model": config.model.name,
        "samples": len(subset),
        "batch_size": recipe.batch_size,
        "augment": recipe.augment,
        "default_s": seconds[False],
        "channels_last_s": seconds[True],
        "speedup": default / fast,
        "max_parameter_difference": drift,
        "fisher_samples": len(fisher_data),
        "fisher_default_s": fisher[False],
        "fisher_channels_last_s": fisher[True],
        "fisher_speedup": statistics.median(fisher[False]) / statistics.median(fisher[True]),
    }


def markdown(result: dict) -> str:
    lines = [
        "# Training in channels-last memory format, one process",
        "",
        f"Command: `{result['command']}`; machine: {result['machine']}. One epoch of each config's recipe on its "
        "first training images, the two formats alternating; seconds are the median over the repeats. The last "
        "column is the largest difference between the two trained models' parameters (rounding only: the maths is "
        "the same). Fisher: `expected_fisher_diagonal` of the default-format model on the first N/4 images, the two "
        "formats alternating the same way.",
        "",
        "| config | model | images | batch | default (s) | channels-last (s) | speed-up | max parameter difference "
        "| Fisher images | Fisher default (s) | Fisher channels-last (s) | Fisher speed-up |",
        "| :--- | :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {Path(row['config']).stem} | {row['model']} | {row['samples']} | {row['batch_size']} | "
            f"{statistics.median(row['default_s']):.2f} | {statistics.median(row['channels_last_s']):.2f} | "
            f"{row['speedup']:.2f}× | {row['max_parameter_difference']:.1e} | {row['fisher_samples']} | "
            f"{statistics.median(row['fisher_default_s']):.2f} | "
            f"{statistics.median(row['fisher_channels_last_s']):.2f} | {row['fisher_speedup']:.2f}× |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    arguments = sys.argv[1:] if argv is None else argv
    result = {
        "command": " ".join([".venv/bin/python bench/train_speed.py", *arguments]),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "rows": [measure(path, args.samples, args.repeats) for path in args.configs],
    }
    atomic_write_json(OUT.with_suffix(".json"), result)
    atomic_write_text(OUT.with_suffix(".md"), markdown(result))
    print(OUT.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
