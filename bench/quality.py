"""Quality benchmark of issue 3: MoRE vs ESC (and Remap/Erase) on digits and on generated shapes.

    .venv/bin/python bench/quality.py [--configs configs/digits_more.yaml configs/shapes_allcnn.yaml]

Runs each config end to end (3 seeds), then checks the bars below and writes
bench/results/quality_<name>.md and .json. Bars are reported as PASS/FAIL, never asserted:
- output level: MoRE HM >= 99 and |D_rt(MoRE) − D_rt(Original)| <= 1;
- KR at every probe lr: MoRE's D_f and D_ft < 15 %;
- KR at lr 0.1: ESC's D_f clearly higher than MoRE's (by >= 20 points).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from unlearn.config import load_config
from unlearn.experiment import run_experiment
from unlearn.report.tables import markdown_report

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = ["configs/digits_more.yaml", "configs/shapes_allcnn.yaml"]


def bars(metrics: dict) -> list[tuple[str, bool, str]]:
    """(bar, passed, measured) for the quality bars of issue 3."""
    summary = {name: result["summary"] for name, result in metrics["methods"].items()}
    more, original = summary["MoRE"], summary["Original"]
    checks = [
        ("MoRE HM >= 99", more["HM"]["mean"] >= 99, f"HM {more['HM']['mean']:.2f}"),
        (
            "MoRE D_rt within 1 point of Original",
            abs(more["D_rt"]["mean"] - original["D_rt"]["mean"]) <= 1,
            f"D_rt {more['D_rt']['mean']:.2f} vs {original['D_rt']['mean']:.2f}",
        ),
    ]
    for lr, kr in more["kr"].items():
        d_f, d_ft = kr["D_f"]["mean"], kr["D_ft"]["mean"]
        checks.append(
            (f"KR lr {lr}: MoRE D_f and D_ft < 15", d_f < 15 and d_ft < 15, f"D_f {d_f:.2f}, D_ft {d_ft:.2f}")
        )
    if "ESC" in summary:
        esc = summary["ESC"]["kr"]["0.1"]["D_f"]["mean"]
        ours = more["kr"]["0.1"]["D_f"]["mean"]
        checks.append(("KR lr 0.1: ESC D_f >= MoRE D_f + 20", esc >= ours + 20, f"ESC {esc:.2f} vs MoRE {ours:.2f}"))
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--rerender", action="store_true", help="rewrite the .md from the saved .json, run nothing")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in args.configs:
        stem = Path(path).stem
        if args.rerender:
            saved = json.loads((out / f"quality_{stem}.json").read_text())
            write_markdown(out, path, saved["metrics"], saved["wall_s"], saved["machine"])
            continue
        config = load_config(ROOT / path, {"output_dir": f"runs/bench_{stem}"})
        start = time.perf_counter()
        metrics = run_experiment(config, progress=False)
        wall = time.perf_counter() - start
        plot_dir = out / f"plots_{stem}"
        shutil.rmtree(plot_dir, ignore_errors=True)
        shutil.copytree(Path(config.output_dir) / "plots", plot_dir)
        machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, device {metrics['device']}"
        checks = write_markdown(out, path, metrics, wall, machine)
        (out / f"quality_{stem}.json").write_text(
            json.dumps(
                {"command": command_of(path), "wall_s": wall, "machine": machine, "bars": checks, "metrics": metrics},
                indent=2,
                default=str,
            )
        )
        for name, ok, measured in checks:
            print(f"[{config.name}] {'PASS' if ok else 'FAIL'} {name}: {measured}")
    return 0


def command_of(path: str) -> str:
    return f".venv/bin/python bench/quality.py --configs {path}"


def write_markdown(out: Path, path: str, metrics: dict, wall: float, machine: str) -> list:
    """bench/results/quality_<config>.md: the bars, then the full report with plots copied next to it."""
    checks = bars(metrics)
    lines = [
        f"# Quality benchmark: {metrics['name']}",
        "",
        f"Command: `{command_of(path)}`; machine: {machine}; whole run {wall:.0f} s.",
        "",
        "| bar | result | measured |",
        "|---|---|---|",
        *[f"| {name} | {'PASS' if ok else 'FAIL'} | {measured} |" for name, ok, measured in checks],
        "",
        markdown_report(metrics).replace("](plots/", f"](plots_{Path(path).stem}/"),
    ]
    (out / f"quality_{Path(path).stem}.md").write_text("\n".join(lines))
    return checks


if __name__ == "__main__":
    sys.exit(main())
