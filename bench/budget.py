"""Issue 17: quality and fit time against the sample budget (samples per class read to build prototypes).

    .venv/bin/python bench/budget.py quality --config configs/fmnist_budget.yaml
    .venv/bin/python bench/budget.py quality --config configs/shapes_budget.yaml
    .venv/bin/python bench/budget.py time --config configs/fmnist_budget.yaml --sizes 10000 60000 250000 1000000
    .venv/bin/python bench/budget.py speedup --method 'MoRE-G runner-up' --budget 100
    .venv/bin/python bench/budget.py render

`quality`: for each method (MoRE, MoRE-T, ESC; more with --methods) and budget (10, 30, 100, 300, 1000 per
class, and all samples) fit on the config's Original for 3 seeds; output accuracies and HM for every seed, KR
at the config's lrs, the fit time, and the samples read. Every
(method, budget, seed) cell is stored under runs/budget_<config>/cells/ and read back on the next call.
Also one Finetune run (seed 0) for the wall-time comparison at equal HM.

`time`: fit time against N, the training set replicated up to N, on the same model: a plain inference pass
over N, MoRE with all samples (up to --full-max), and every method with the default budget. All timings of
one call are taken in one process, side by side.

`speedup`: one edit at one budget and Finetune, each end to end (data read and passed through the model) and
timed side by side in one process, with their HM: issue 17's "at equal HM, at least 100× less wall time".

`render`: bench/results/budget_*.md and budget_quality.png from the saved JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import Dataset

from unlearn.config import load_config
from unlearn.data.base import LabeledTensors, targets_of
from unlearn.data.splits import SPLIT_NAMES
from unlearn.eval.kr import knowledge_retention, split_features
from unlearn.eval.metrics import accuracy, evaluate_splits, split_scores
from unlearn.io import atomic_path, atomic_write_json, atomic_write_text
from unlearn.methods import build_method
from unlearn.models.inference import collect_outputs, stream_outputs
from unlearn.models.split import split_for_probe, split_model
from unlearn.report.markdown import markdown_table
from unlearn.runners.vision import Experiment
from unlearn.runtime import seed_everything

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BUDGETS = [10, 30, 100, 300, 1000, None]
METHODS = ["MoRE", "MoRE-T", "ESC", "MoRE-G", "MoRE-G runner-up"]
VARIANTS = {"MoRE-G runner-up": ("MoRE-G", {"target": "runner-up"})}  # label -> (method, params)
HEAD_GATED = ("MoRE-T", "MoRE-G")  # methods whose fit takes the model's head
SEEDS = [0, 1, 2]
FINETUNE = {"epochs": 2, "lr": 0.05}  # the 10-epoch default takes ~20 min on the shared 2-core machine


def machine() -> str:
    return f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def label(budget: int | None) -> str:
    return "all" if budget is None else str(budget)


class Replicated(Dataset):
    """`data` repeated to `size` samples (index i reads sample i mod len(data)), with aligned `.targets`."""

    def __init__(self, data: Dataset, size: int) -> None:
        self.data, self.size = data, size
        base = targets_of(data)
        self.targets = base.repeat(size // len(base) + 1)[:size]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        return self.data[index % len(self.data)]


def fit_cell(
    experiment: Experiment, original, base, train_features: Dataset, name: str, budget: int | None, seed: int, kr: bool
) -> dict:
    """Unlearn with one method, budget and seed; accuracies, HM, KR (optional), fit time, samples read.

    Feature edits are fit on the Original's precomputed training features (`train_features`: the same
    numbers a pass would give, computed once), so `fit_s` is the fit on features, without the forward
    passes; `time` measures fits with their passes. Finetune runs on the model as usual.
    """
    config = experiment.config
    seed_everything(seed)
    start = time.perf_counter()
    if name == "Finetune":
        method = build_method(name, seed=seed, **FINETUNE)
        unlearned = method.unlearn(original, experiment.splits)
    else:
        base_name, params = VARIANTS.get(name, (name, {}))
        method = build_method(base_name, seed=seed, max_per_class=budget, **params)
        forget, num_classes = experiment.splits.forget_classes, experiment.data.num_classes
        extra = {"head": split_model(original)[1]} if base_name in HEAD_GATED else {}
        method.fit(nn.Identity(), train_features, forget, num_classes, **extra)
        unlearned = method.apply(original)
    fit_s = time.perf_counter() - start
    if name == "Finetune":
        record, _ = evaluate_splits(unlearned, experiment.splits)
        acc = record["acc"]
    else:  # an edit in front of the head: the unlearned logits are (edit + head)(Original's features)
        edit, head = split_for_probe(unlearned, None)[1].eval(), split_model(original)[1]
        with torch.no_grad():
            acc = {split: accuracy(head(edit(base[0][split])), base[1][split]) for split in SPLIT_NAMES}
    cell = {**split_scores(acc), "acc": acc, "fit_s": fit_s, "samples": getattr(method, "samples", None)}
    if kr:
        cell["kr"] = knowledge_retention(
            unlearned, experiment.splits, tuple(config.eval.kr_lrs), config.eval.kr_epochs, 64, seed, None, base
        )
    return cell


def quality(config_path: str, methods: list[str], budgets: list[int | None], seeds: list[int]) -> dict:
    config = load_config(config_path)
    experiment = Experiment(config, progress=True)
    original, _ = experiment.original()
    original.eval()
    base = split_features(split_for_probe(original, None)[0], experiment.splits)
    train_features = LabeledTensors(*collect_outputs(split_model(original)[0], experiment.splits.train(), 512))
    cells_dir = ROOT / "runs" / f"budget_{config.name}" / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    record, _ = evaluate_splits(original, experiment.splits)
    results = {
        "config": config_path,
        "name": config.name,
        "train_size": len(experiment.data.train),
        "num_classes": experiment.data.num_classes,
        "forget_classes": config.forget_classes,
        "kr_lrs": [str(lr) for lr in config.eval.kr_lrs],
        "machine": machine(),
        "original": {"acc": record["acc"], "HM": record["HM"]},
        "cells": {},
    }
    previous = RESULTS / f"budget_{config.name}.json"
    if previous.is_file():  # a run of some methods keeps the other methods' cells in the results
        results["cells"] = json.loads(previous.read_text()).get("cells", {})
    jobs = [(m, b, s) for m in methods for b in budgets for s in seeds] + [("Finetune", None, 0)]
    for name, budget, seed in jobs:
        key = f"{name}|{label(budget)}|{seed}"
        path = cells_dir / (key.replace("|", "_") + ".json")
        cell = json.loads(path.read_text()) if path.is_file() else None
        if cell is None or ("kr" not in cell and name != "Finetune"):  # KR for every seed of every edit
            print(f"{key} ...", flush=True)
            cell = fit_cell(experiment, original, base, train_features, name, budget, seed, kr=name != "Finetune")
            atomic_write_json(path, cell)
        results["cells"][key] = cell
        atomic_write_json(RESULTS / f"budget_{config.name}.json", results)
    return results


def timing(config_path: str, sizes: list[int], full_max: int, budget: int, methods: list[str]) -> dict:
    """Fit time against N in one process: inference pass, MoRE on all samples, every method on the budget."""
    config = load_config(config_path)
    experiment = Experiment(config, progress=False)
    original, _ = experiment.original()
    original.eval()
    features, _ = split_model(original)
    forget = config.forget_classes
    rows = []
    for size in sizes:
        data = Replicated(experiment.splits.train(), size)
        row = {"N": size}
        if size <= full_max:
            start = time.perf_counter()
            for _ in stream_outputs(features, data, 256):
                pass
            row["inference_s"] = time.perf_counter() - start
            start = time.perf_counter()
            build_method("MoRE", seed=0).fit(features, data, forget, experiment.data.num_classes)
            row["MoRE_all_s"] = time.perf_counter() - start
        for name in methods:
            start = time.perf_counter()
            build_method(name, seed=0, max_per_class=budget).fit(features, data, forget, experiment.data.num_classes)
            row[f"{name}_{budget}_s"] = time.perf_counter() - start
        print(row, flush=True)
        rows.append(row)
    results = {"config": config_path, "budget": budget, "machine": machine(), "rows": rows}
    atomic_write_json(RESULTS / f"budget_time_{config.name}.json", results)
    return results


def _stats(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.pstdev(values):.2f}"


def speedup(config_path: str, name: str, budget: int, seed: int) -> dict:
    """One process, side by side: `name` at `budget` per class end to end (it reads and passes its own samples
    through the model) and Finetune, each timed and evaluated on the same splits; writes budget_speedup_*."""
    config = load_config(config_path)
    experiment = Experiment(config, progress=False)
    original, _ = experiment.original()
    original.eval()
    base_name, params = VARIANTS.get(name, (name, {}))
    rows = {}
    edit = (name, base_name, {"max_per_class": budget, **params})
    # the edit is timed before and after Finetune (median of 3), so a change of load during the run shows
    for label_, method_name, kwargs in (edit, ("Finetune", "Finetune", FINETUNE), edit, edit):
        seed_everything(seed)
        start = time.perf_counter()
        unlearned = build_method(method_name, seed=seed, **kwargs).unlearn(original, experiment.splits)
        seconds = time.perf_counter() - start
        record, _ = evaluate_splits(unlearned, experiment.splits)
        row = rows.setdefault(label_, {"HM": record["HM"], "acc": record["acc"], "runs_s": []})
        row["runs_s"].append(seconds)
        row["wall_s"] = statistics.median(row["runs_s"])
        print(label_, row, flush=True)
    results = {
        "config": config_path,
        "name": config.name,
        "method": name,
        "budget": budget,
        "seed": seed,
        "finetune": FINETUNE,
        "machine": machine(),
        "rows": rows,
    }
    atomic_write_json(RESULTS / f"budget_speedup_{config.name}.json", results)
    return results


def speedup_text(results: dict) -> str:
    rows, name = results["rows"], results["method"]
    table = markdown_table(
        ["method", "D_ft", "D_rt", "HM", "wall time (s)", "runs (s)"],
        [
            [
                label_,
                f"{r['acc']['D_ft']:.2f}",
                f"{r['acc']['D_rt']:.2f}",
                f"{r['HM']:.2f}",
                f"{r['wall_s']:.2f}",
                ", ".join(f"{t:.2f}" for t in r["runs_s"]),
            ]
            for label_, r in rows.items()
        ],
        text_columns=1,
    )
    ours, finetune = rows[name], rows["Finetune"]
    verdict = "at least equal" if ours["HM"] >= finetune["HM"] else "LOWER"
    return (
        f"# {name} against Finetune at equal HM: {results['name']}\n\n"
        f"Command: `.venv/bin/python bench/budget.py speedup --config {results['config']} --method '{name}' "
        f"--budget {results['budget']} --seeds {results['seed']}`; machine: {results['machine']}. Both run in one "
        f"process, one after the other, end to end from the model and the data: {name} reads "
        f"{results['budget']} samples per class and passes them through the model, timed before and after "
        "Finetune (the median is compared; the runs column shows each); Finetune "
        f"({results['finetune']}) trains on the remain set. Seed {results['seed']}.\n\n{table}\n\n"
        f"{name}'s HM is {verdict} to Finetune's ({ours['HM']:.2f} vs {finetune['HM']:.2f}), in "
        f"{finetune['wall_s'] / ours['wall_s']:.0f}× less wall time.\n"
    )


def quality_metrics(lrs: list[str]) -> list:
    """The numbers a budget must match: output HM and KR forget-test accuracy at every probe lr."""
    return [lambda r: r["HM"], *(lambda r, lr=lr: r["kr"][lr]["acc"]["D_ft"] for lr in lrs)]


def equal(runs: list[dict], reference: list[dict], metric) -> bool:
    """Equal within the seed std: |mean − reference mean| ≤ max(std of either, 0.5 points)."""
    ours, theirs = [metric(r) for r in runs], [metric(r) for r in reference]
    tolerance = max(statistics.pstdev(ours), statistics.pstdev(theirs), 0.5)
    return abs(statistics.mean(ours) - statistics.mean(theirs)) <= tolerance


def quality_table(results: dict) -> tuple[str, dict]:
    """Markdown table (method x budget) and the chosen default budget per method."""
    cells, seeds = results["cells"], sorted({int(k.split("|")[2]) for k in results["cells"]})
    methods = sorted({k.split("|")[0] for k in cells} - {"Finetune"}, key=METHODS.index)
    lrs = results["kr_lrs"]
    header = ["method", "per class", "samples read", "D_ft", "D_rt", "HM", *(f"KR D_ft lr {lr}" for lr in lrs)]
    header += ["fit (s)"]
    rows, choice = [], {}
    for name in methods:
        for budget in BUDGETS:
            runs = [cells.get(f"{name}|{label(budget)}|{s}") for s in seeds]
            runs = [r for r in runs if r]
            if not runs:
                continue
            samples = runs[0]["samples"] or {}
            read = samples.get("total_samples", samples.get("forget_samples", "–"))
            kr = [r["kr"] for r in runs if "kr" in r]
            rows.append(
                [
                    name,
                    label(budget),
                    str(read),
                    _stats([r["acc"]["D_ft"] for r in runs]),
                    _stats([r["acc"]["D_rt"] for r in runs]),
                    _stats([r["HM"] for r in runs]),
                    *(_stats([k[lr]["acc"]["D_ft"] for k in kr]) if kr else "–" for lr in lrs),
                    _stats([r["fit_s"] for r in runs]),
                ]
            )
            if budget is not None and name not in choice and all(f"{name}|all|{s}" in cells for s in seeds):
                everything = [cells[f"{name}|all|{s}"] for s in seeds]
                complete = len(runs) == len(seeds) and all("kr" in r for r in runs + everything)
                if complete and all(equal(runs, everything, metric) for metric in quality_metrics(lrs)):
                    choice[name] = budget
    return markdown_table(header, rows, text_columns=2), choice


def render() -> None:
    for path in sorted(RESULTS.glob("budget_*.json")):
        results = json.loads(path.read_text())
        if path.stem.startswith("budget_speedup_"):
            atomic_write_text(path.with_suffix(".md"), speedup_text(results))
            continue
        if path.stem.startswith("budget_time_"):
            rows = results["rows"]
            keys = [k for k in rows[-1] if k != "N"]
            keys = sorted({k for row in rows for k in row if k != "N"}, key=lambda k: (k not in keys, k))
            table = markdown_table(
                ["N", *(k.removesuffix("_s") + " (s)" for k in keys)],
                [[f"{row['N']:,}", *(f"{row[k]:.2f}" if k in row else "–" for k in keys)] for row in rows],
            )
            suffix = f"_{results['budget']}_s"
            methods = sorted({k.removesuffix(suffix) for k in keys if k.endswith(suffix)})
            full_max = max((r["N"] for r in rows if "MoRE_all_s" in r), default=0)
            text = (
                f"# Fit time against N ({results['config']})\n\nCommand: `.venv/bin/python bench/budget.py time "
                f"--config {results['config']} --methods {' '.join(methods)} --sizes "
                f"{' '.join(str(r['N']) for r in rows)} --full-max {full_max} --budget {results['budget']}`; machine: "
                f"{results['machine']}. The training set replicated to N; all timings of one call in one process.\n\n"
                f"{table}\n"
            )
            atomic_write_text(path.with_suffix(".md"), text)
            continue
        table, choice = quality_table(results)
        finetune = results["cells"].get("Finetune|all|0")
        original = results["original"]
        lines = [
            f"# Quality against the sample budget: {results['name']}",
            "",
            f"Command: `.venv/bin/python bench/budget.py quality --config {results['config']}`; machine: "
            f"{results['machine']}. Training set: {results['train_size']:,} samples, {results['num_classes']} "
            f"classes; forget {results['forget_classes']}. Mean ± std over seeds for D_ft, D_rt, HM and the fit "
            "time, and KR (a linear probe trained on the edited features, forget-test accuracy). Feature edits are "
            "fit on the Original's training features computed once, so their fit time here leaves out the forward "
            "passes (see budget_time_*.md for fits with their passes).",
            "",
            f"Original: D_ft {original['acc']['D_ft']:.2f}, D_rt {original['acc']['D_rt']:.2f}.",
            "",
            table,
            "",
            "Smallest budget whose output HM and KR forget-test accuracy at every lr are equal to the all-samples "
            "ones within the seed std (|Δmean| ≤ max(std of either, 0.5 points)): "
            + (", ".join(f"{m} {b}/class" for m, b in choice.items()) or "none"),
            "",
        ]
        if finetune:
            lines.append(
                f"Finetune ({FINETUNE}, seed 0): HM {finetune['HM']:.2f}, D_ft {finetune['acc']['D_ft']:.2f}, "
                f"D_rt {finetune['acc']['D_rt']:.2f}, wall time {finetune['fit_s']:.1f} s."
            )
            lines.append("")
        atomic_write_text(path.with_suffix(".md"), "\n".join(lines))
        plot(results, path.with_suffix(".png"))


def plot(results: dict, path: Path) -> None:
    """HM and KR D_ft (first lr) against samples per class, one line per method; 'all' drawn at the right."""
    cells, seeds = results["cells"], sorted({int(k.split("|")[2]) for k in results["cells"]})
    fig = Figure(figsize=(9, 3.6))
    axes = fig.subplots(1, 2)
    positions = {b: i for i, b in enumerate(BUDGETS)}
    lr = results["kr_lrs"][0]
    for name in sorted({k.split("|")[0] for k in cells} - {"Finetune"}, key=METHODS.index):
        xs, hm, kr = [], [], []
        for budget in BUDGETS:
            runs = [cells.get(f"{name}|{label(budget)}|{s}") for s in seeds]
            runs = [r for r in runs if r]
            if runs:
                xs.append(positions[budget])
                hm.append(statistics.mean(r["HM"] for r in runs))
                kr.append(statistics.mean(r["kr"][lr]["acc"]["D_ft"] for r in runs if "kr" in r))
        axes[0].plot(xs, hm, marker="o", label=name)
        axes[1].plot(xs, kr, marker="o", label=name)
    for ax, title in zip(axes, ("output HM (mean over seeds)", f"KR forget-test acc, lr {lr}"), strict=True):
        ax.set_xticks(range(len(BUDGETS)), [label(b) for b in BUDGETS])
        ax.set_xlabel("samples per class")
        ax.set_title(f"{results['name']}: {title}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["quality", "time", "speedup", "render"])
    parser.add_argument("--config", default="configs/fmnist_budget.yaml")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 60_000, 250_000, 1_000_000])
    parser.add_argument("--full-max", type=int, default=250_000, help="largest N for the all-samples MoRE fit")
    parser.add_argument("--budget", type=int, default=300, help="samples per class of the `time` and `speedup` runs")
    parser.add_argument("--method", default="MoRE-G runner-up", help="the edit the `speedup` run times")
    args = parser.parse_args()
    if args.what == "quality":
        quality(args.config, args.methods, BUDGETS, args.seeds)
    elif args.what == "time":
        timing(args.config, args.sizes, args.full_max, args.budget, args.methods)
    elif args.what == "speedup":
        speedup(args.config, args.method, args.budget, args.seeds[0])
    render()


if __name__ == "__main__":
    main()
