"""Single-class sweep of issue 16: forget each class in turn; the drop in remain-test accuracy per class and method.

    .venv/bin/python bench/sweep.py [--configs configs/fmnist_sweep.yaml]

Runs the config once per class (its forget_classes replaced by [k]; each class's run is resumable under
runs/sweep_<name>/class<k>/, and the Original is trained once and cached), then writes
bench/results/sweep_<name>.md and .json: per class and method the forget-test accuracy D_ft, the
remain-test accuracy D_rt minus the Original's, and D_ft under KR at the first probe lr. The goals of
issue 16 for a method are checked per method, reported, never asserted.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

from runner import Benchmark
from unlearn.config import ExperimentConfig
from unlearn.runners.vision import Experiment

DEFAULT_CONFIGS = ["configs/fmnist_sweep.yaml"]
FORGET_MAX, REMAIN_DROP_MAX, KR_ABOVE_CHANCE_MAX = 2.0, 1.0, 5.0
REFERENCES = ("Original", "Retrain")


def run_sweep(config: ExperimentConfig, progress: bool = False, resume: bool = True) -> dict:
    """One run per class; the per-class summaries (mean over seeds) of every row, keyed by class id."""

    def experiment(k: int) -> Experiment:
        single = copy.deepcopy(config)
        single.forget_classes = [k]
        single.output_dir = str(Path(config.output_dir) / f"class{k}")
        return Experiment(single, progress, resume)

    first = experiment(0)
    data = first.data
    per_class = {}
    for k in range(data.num_classes):
        metrics = (first if k == 0 else experiment(k)).run()
        per_class[str(k)] = {row: result["summary"] for row, result in metrics["methods"].items()}
    return {
        "name": config.name,
        "dataset": data.name,
        "model": config.model.name,
        "num_classes": data.num_classes,
        "class_names": data.class_names,
        "kr_lr": str(config.eval.kr_lrs[0]) if config.eval.kr_lrs else None,
        "seeds": config.seeds,
        "device": metrics["device"],
        "per_class": per_class,
    }


def _mean(summary: dict, metric: str, lr: str | None = None) -> float | None:
    block = summary.get("kr", {}).get(lr) if lr else summary
    return None if block is None or metric not in block else block[metric]["mean"]


def _cell(value: float | None, signed: bool = False) -> str:
    return "–" if value is None else (f"{value:+.2f}" if signed else f"{value:.2f}")


def rows(results: dict) -> list[str]:
    first = next(iter(results["per_class"].values()))
    return [row for row in first if row != "Original"]


def goals(results: dict) -> list[tuple[str, bool, str]]:
    """Issue 16's goals for a method, checked on every class."""
    chance, lr = 100 / results["num_classes"], results["kr_lr"]
    checks = []
    for row in rows(results):
        if row in REFERENCES:
            continue
        forget = {k: _mean(s[row], "D_ft") for k, s in results["per_class"].items()}
        drop = {k: _mean(s[row], "D_rt") - _mean(s["Original"], "D_rt") for k, s in results["per_class"].items()}
        worst_f, worst_d = max(forget, key=forget.get), min(drop, key=drop.get)
        checks.append(
            (
                f"{row}: forget-test accuracy <= {FORGET_MAX:.0f} for every class",
                forget[worst_f] <= FORGET_MAX,
                f"worst class {worst_f}: {forget[worst_f]:.2f}",
            )
        )
        checks.append(
            (
                f"{row}: remain-test accuracy within {REMAIN_DROP_MAX:.0f} point of Original for every class",
                drop[worst_d] >= -REMAIN_DROP_MAX,
                f"worst class {worst_d}: {drop[worst_d]:+.2f}",
            )
        )
        if lr is not None:
            kr = {k: _mean(s[row], "D_ft", lr) for k, s in results["per_class"].items()}
            worst_k = max(kr, key=kr.get)
            checks.append(
                (
                    f"{row}: KR at lr {lr} on the forget-test split <= chance + {KR_ABOVE_CHANCE_MAX:.0f} "
                    f"({chance + KR_ABOVE_CHANCE_MAX:.0f}) for every class",
                    kr[worst_k] <= chance + KR_ABOVE_CHANCE_MAX,
                    f"worst class {worst_k}: {kr[worst_k]:.2f}",
                )
            )
    return checks


def render(results: dict) -> str:
    """Three tables (class x row): D_ft, D_rt minus the Original's, and D_ft under KR."""
    names = results["class_names"]
    header = ["class", "Original D_rt", *rows(results)]
    lr = results["kr_lr"]

    def table(title: str, value) -> list[str]:
        lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        for k, summary in results["per_class"].items():
            label = f"{k} {names[int(k)]}" if len(names) > int(k) else k
            cells = [label, _cell(_mean(summary["Original"], "D_rt"))]
            cells += [value(summary, row) for row in rows(results)]
            lines.append("| " + " | ".join(cells) + " |")
        return [*lines, ""]

    lines = [
        f"# Single-class sweep: {results['dataset']} / {results['model']}, seeds {results['seeds']}",
        "",
        "Each class forgotten alone; numbers are test accuracies in percent (mean over seeds).",
        "",
        *table("Forget-test accuracy D_ft", lambda s, row: _cell(_mean(s[row], "D_ft"))),
        *table(
            "Remain-test accuracy D_rt minus the Original's",
            lambda s, row: _cell(_mean(s[row], "D_rt") - _mean(s["Original"], "D_rt"), signed=True),
        ),
    ]
    if lr is not None:
        lines += table(f"D_ft under KR (linear probe, lr {lr})", lambda s, row: _cell(_mean(s[row], "D_ft", lr)))
    return "\n".join(lines)


BENCHMARK = Benchmark(
    kind="sweep",
    title="Single-class sweep",
    checks=goals,
    check_header=("goal", "## Issue 16's goals for a method, checked on every class"),
    verdicts=("MET", "NOT MET"),
    default_configs=DEFAULT_CONFIGS,
    resume=True,
    plot_prefix="plots_sweep_",
    run=run_sweep,
    render=render,
    result_key="sweep",
)


if __name__ == "__main__":
    sys.exit(BENCHMARK.main(__doc__.splitlines()[0]))
