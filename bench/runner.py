"""What every quality benchmark shares: run configs, check the results, write bench/results/<kind>_<config>.md/.json.

A benchmark script gives its kind, its checks (metrics -> [(statement, holds, measured)]) and how a check
reads when it holds or not; `main` runs each config end to end (or re-renders the saved JSON), copies the
run's plots next to the Markdown, and prints every check. Checks are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from unlearn.config import load_config
from unlearn.io import atomic_write_text
from unlearn.report.tables import markdown_report
from unlearn.runners.vision import run_experiment

ROOT = Path(__file__).resolve().parents[1]
Check = tuple[str, bool, str]


def select(config, seeds: list[int] | None, rows: list[str] | None, references: list[str] | None = None) -> str:
    """Narrow `config` to some seeds, method rows and references (a partial run of a long benchmark); the
    command-line tail that says so in the results."""
    tail = ""
    if references:
        if "Original" not in references or not set(references) <= set(config.references):
            raise SystemExit(f"--references: {references} must hold Original and be among {config.references}")
        config.references = references
        tail += " --references " + " ".join(references)
    if seeds:
        config.seeds = seeds
        tail += " --seeds " + " ".join(map(str, seeds))
    if rows:
        unknown = sorted(set(rows) - {method.row for method in config.methods})
        if unknown:
            raise SystemExit(f"--methods: {unknown} are not rows of {config.name}")
        config.methods = [method for method in config.methods if method.row in rows]
        tail += " --methods " + " ".join(f"'{row}'" if " " in row else row for row in rows)
    return tail


@dataclass
class Benchmark:
    kind: str  # file prefix: bench/results/<kind>_<config>.md
    title: str
    checks: Callable[[dict], list[Check]]
    check_header: tuple[str, str]  # (column name of a check, its title)
    verdicts: tuple[str, str]  # how a check reads when it holds / does not
    default_configs: list[str]
    resume: bool = False  # read back finished (method, seed) cells of the run directory runs/<kind>_<config>/
    plot_prefix: str = "plots_"
    extra_plots: Callable[[dict, Path], list[Path]] | None = None  # (metrics, run's plot dir) -> new PNGs
    run: Callable[..., dict] = run_experiment  # (config, progress=, resume=) -> the results the checks read
    render: Callable[[dict], str] = markdown_report  # results -> the report under the checks
    result_key: str = "metrics"  # where the results sit in the saved JSON

    def command_of(self, path: str, subset: str = "") -> str:
        return f".venv/bin/python bench/{self.kind}.py --configs {path}{subset}"

    def write_markdown(
        self, out: Path, stem: str, metrics: dict, wall: float, machine: str, command: str
    ) -> list[Check]:
        """The checks as a table, then the full report with its plots copied next to it (`stem`: the file name)."""
        checks = self.checks(metrics)
        name, heading = self.check_header
        lines = [
            f"# {self.title}: {metrics['name']}",
            "",
            f"Command: `{command}`; machine: {machine}; wall time {wall:.0f} s"
            + (" (cells finished by an earlier call are read back, not recomputed)." if self.resume else "."),
            "",
            heading,
            "",
            f"| {name} | result | measured |",
            "|---|---|---|",
            *[f"| {text} | {self.verdicts[not ok]} | {measured} |" for text, ok, measured in checks],
            "",
            self.render(metrics).replace("](plots/", f"]({self.plot_prefix}{stem}/"),
        ]
        atomic_write_text(out / f"{self.kind}_{stem}.md", "\n".join(lines))
        return checks

    def main(self, description: str) -> int:
        parser = argparse.ArgumentParser(description=description)
        parser.add_argument("--configs", nargs="+", default=self.default_configs)
        parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
        parser.add_argument("--rerender", action="store_true", help="rewrite the .md from the saved .json, run nothing")
        parser.add_argument("--seeds", nargs="+", type=int, help="run these seeds instead of the config's")
        parser.add_argument("--methods", nargs="+", help="run only these rows (method labels) of the config")
        parser.add_argument("--references", nargs="+", help="run only these references (Original, Retrain)")
        parser.add_argument("--tag", help="name the results <kind>_<config>_<tag> (the run directory stays shared)")
        args = parser.parse_args()
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for path in args.configs:
            stem = Path(path).stem
            name = f"{stem}_{args.tag}" if args.tag else stem
            saved_path = out / f"{self.kind}_{name}.json"
            if args.rerender:
                saved = json.loads(saved_path.read_text())
                metrics, command = saved[self.result_key], saved["command"]
                self.write_markdown(out, name, metrics, saved["wall_s"], saved["machine"], command)
                continue
            config = load_config(ROOT / path, {"output_dir": f"runs/{self.kind}_{stem}"})
            subset = select(config, args.seeds, args.methods, args.references)
            subset += f" --tag {args.tag}" if args.tag else ""
            start = time.perf_counter()
            metrics = self.run(config, progress=False, resume=self.resume)
            wall = time.perf_counter() - start
            run_plots = Path(config.output_dir) / "plots"
            run_plots.mkdir(parents=True, exist_ok=True)
            if self.extra_plots is not None:
                metrics["plots"] += [f"plots/{path.name}" for path in self.extra_plots(metrics, run_plots)]
            plot_dir = out / f"{self.plot_prefix}{name}"
            shutil.rmtree(plot_dir, ignore_errors=True)
            shutil.copytree(run_plots, plot_dir)
            machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, device {metrics['device']}"
            checks = self.write_markdown(out, name, metrics, wall, machine, self.command_of(path, subset))
            record = {"command": self.command_of(path, subset), "wall_s": wall, "machine": machine, "checks": checks}
            atomic_write_text(saved_path, json.dumps({**record, self.result_key: metrics}, indent=2, default=str))
            for text, ok, measured in checks:
                print(f"[{metrics['name']}] {self.verdicts[not ok]} {text}: {measured}")
        return 0
